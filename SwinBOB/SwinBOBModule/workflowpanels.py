"""The review sections of the module panel (Qt, runs only inside Slicer): QC review of the samples
SOLF filtered out, manual correction (UKBOB-manual), and training / benchmark jobs.

All the work is done by :mod:`.review`, :mod:`.correction` and :mod:`.launcher` (no Qt, tested
under slicer-core); this file only moves values between the .ui's widgets and them.
"""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
import traceback

import qt
import slicer

from . import correction, jobs, launcher, review, samples
from .dependencies import DependencyError

POLL_INTERVAL_MS = 500
STATE_COLORS = {review.ACCEPT: "#b6d7a8", review.REJECT: "#e06666", review.CORRECT: "#f6c26b"}


class WorkflowPanels:
    """Behaviour of the QC review, correction and jobs sections; ``ui`` holds the .ui's widgets."""

    def __init__(self, ui, showStatus, showError, setCheckpoint=None, currentResult=None, ensureDependencies=None):
        self.ui = ui
        self.showStatus, self.showError = showStatus, showError
        self.setCheckpoint = setCheckpoint  # called with a trained checkpoint's path ("Open result")
        # Installs torch & co. after asking (the panel's check); a job needs them as Segment does.
        self.ensureDependencies = ensureDependencies or (lambda: None)
        self.session = None
        self.loaded = None  # (item, volumeNode, segmentationNode, entropyNode) of the QC sample on screen
        self.correctFrom = None  # "qc" or "result": what Save correction saves (the last one loaded)
        self.currentResult = currentResult or (lambda: None)  # the panel's last SegmentationResult
        self.job = None
        self.plotPath = os.path.join(tempfile.gettempdir(), f"swinbob_review_{os.getpid()}.png")
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPollJob)
        ui.reviewerLineEdit.text = getpass.getuser()
        ui.reviewOpenButton.connect("clicked(bool)", self.onOpenQcList)
        for combo in (ui.reviewStructureFilterComboBox, ui.reviewFeatureFilterComboBox,
                      ui.reviewStateFilterComboBox, ui.reviewSortComboBox):
            combo.connect("currentIndexChanged(int)", self.onFilterChanged)
        ui.reviewItemsTableWidget.connect("cellClicked(int,int)", self.onItemClicked)
        ui.reviewPreviousButton.connect("clicked(bool)", lambda: self.step(-1))
        ui.reviewNextButton.connect("clicked(bool)", lambda: self.step(1))
        ui.reviewAcceptButton.connect("clicked(bool)", lambda: self.onDecide(review.ACCEPT))
        ui.reviewRejectButton.connect("clicked(bool)", lambda: self.onDecide(review.REJECT))
        ui.reviewCorrectButton.connect("clicked(bool)", lambda: self.onDecide(review.CORRECT))
        ui.reviewExportButton.connect("clicked(bool)", self.onExportSummary)
        ui.correctionEditButton.connect("clicked(bool)", self.onEditLabels)
        ui.correctionSaveButton.connect("clicked(bool)", self.onSaveCorrection)
        ui.jobStartButton.connect("clicked(bool)", self.onStartJob)
        ui.jobStopButton.connect("clicked(bool)", self.onStopJob)
        ui.jobResultButton.connect("clicked(bool)", self.onOpenResult)
        for widget, signal in ((ui.jobConfigPathLineEdit, "currentPathChanged(QString)"),
                               (ui.jobEpochsSpinBox, "valueChanged(int)"), (ui.jobMaxStepsSpinBox, "valueChanged(int)"),
                               (ui.jobKindComboBox, "currentIndexChanged(int)")):
            widget.connect(signal, self.showPlan)

    def setDevices(self, devices) -> None:
        """The job's device list: the same ``[(device, description)]`` as the segmentation's."""
        combo = self.ui.jobDeviceComboBox
        current = combo.itemData(combo.currentIndex) if combo.count else None
        combo.clear()
        for value, text in devices:
            combo.addItem(text, value)
        combo.setCurrentIndex(max(0, combo.findData(current)) if current else 0)

    def useResult(self, result) -> None:
        """A segmentation result was loaded: Save correction now saves it (its scan and edited segments)."""
        self.correctFrom = "result"
        if result is not None and not self.ui.correctionCaseLineEdit.text.strip():
            name = result.inputNode.GetName()
            self.ui.correctionCaseLineEdit.text = "".join(c if c.isalnum() or c in "_-." else "_" for c in name)

    # ----------------------------------------------------------------- QC review

    def onOpenQcList(self) -> None:
        try:
            self.session = review.ReviewSession(self.ui.reviewQcListPathLineEdit.currentPath,
                                                reviewer=self.ui.reviewerLineEdit.text)
        except (OSError, ValueError) as error:
            self.showError(str(error))
            return
        combo = self.ui.reviewStructureFilterComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        combo.addItem("any structure")
        for name in self.session.structures():
            combo.addItem(name)
        combo.blockSignals(wasBlocked)
        self.showList()
        self.showCurrent()

    def onFilterChanged(self, *_) -> None:
        if self.session is None:
            return
        ui = self.ui
        pick = lambda combo: combo.currentText if combo.currentIndex > 0 else None  # noqa: E731
        self.session.setFilter(structure=pick(ui.reviewStructureFilterComboBox),
                               feature=pick(ui.reviewFeatureFilterComboBox),
                               state=pick(ui.reviewStateFilterComboBox), sortBy=ui.reviewSortComboBox.currentText)
        self.showList()
        self.showCurrent()

    def showList(self) -> None:
        widget, session = self.ui.reviewItemsTableWidget, self.session
        widget.clear()
        widget.setColumnCount(5)
        widget.setHorizontalHeaderLabels(["Rank", "Sample", "Structure", "Out of range", "Decision"])
        widget.setRowCount(len(session.view))
        for row, index in enumerate(session.view):
            item = session.items[index]
            state = session.state(item)
            values = [str(item.rank), item.sample, item.structure,
                      "missing" if item.kind == "missing" else ", ".join(item.out_of_range), state]
            for column, value in enumerate(values):
                cell = qt.QTableWidgetItem(value)
                if column == 4 and state in STATE_COLORS:
                    cell.setBackground(qt.QBrush(qt.QColor(STATE_COLORS[state])))
                widget.setItem(row, column, cell)
        widget.resizeColumnsToContents()
        self.ui.reviewProgressLabel.text = session.progressText()

    def onItemClicked(self, row: int, _column: int) -> None:
        self.session.goTo(row)
        self.showCurrent()

    def step(self, direction: int) -> None:
        if self.session is not None:
            self.session.next() if direction > 0 else self.session.previous()
            self.showCurrent()

    def showCurrent(self) -> None:
        """Load the current item's sample (once per sample), jump to the structure, say why it was flagged."""
        item = self.session.current if self.session is not None else None
        if item is None:
            self.ui.reviewWhyLabel.text = "Nothing to review with this filter."
            return
        self.ui.reviewItemsTableWidget.selectRow(self.session.position)
        try:
            if self.loaded is None or self.loaded[0].sample != item.sample:
                self._loadSample(item)
            self.loaded = (item, *self.loaded[1:])
            segmentationNode = self.loaded[2]
            samples.centreOnItem(slicer.mrmlScene, segmentationNode, item.label)
            context = self.session.featureContext(item)
            review.plotFeatureContext(context, self.plotPath, title=f"{item.sample}: {item.structure}")
            self.ui.reviewFeaturePlotLabel.setPixmap(qt.QPixmap(self.plotPath))
        except Exception as error:  # shown in the panel, details in the log
            logging.error(traceback.format_exc())
            self.showError(f"Loading {item.sample} failed: {error}")
            return
        lines = [f"<b>{item.sample}</b> (rank {item.rank}): <b>{item.structure}</b> {item.kind}"]
        for feature, entry in context.items():
            value = "n/a" if entry["value"] is None else f"{entry['value']:.4g}"
            bounds = "no bounds" if entry["low"] is None else f"[{entry['low']:.4g}, {entry['high']:.4g}]"
            mark = " <span style='color:#c00000'>out of range</span>" if entry["out_of_range"] else ""
            lines.append(f"{feature}: {value} vs {bounds}{mark}")
        record = self.session.decisions.get(item.key)
        if record:
            lines.append(f"Decision: {record['decision']} by {record['reviewer']} ({record['time']})")
        self.ui.reviewWhyLabel.text = "<br>".join(lines)
        self.ui.reviewProgressLabel.text = self.session.progressText()
        self.ui.correctionCaseLineEdit.text = item.sample

    def _loadSample(self, item) -> None:
        if self.loaded is not None:
            for node in self.loaded[1:]:
                if node is not None and node.GetScene() is not None:
                    slicer.mrmlScene.RemoveNode(node)
        dialog = slicer.util.createProgressDialog(parent=None, value=0, maximum=3, labelText=f"Loading {item.sample}")
        try:
            def progress(done, total, text):
                dialog.setValue(done)
                dialog.setLabelText(text)
                slicer.app.processEvents()

            volumeNode, segmentationNode = samples.loadSampleNodes(slicer.mrmlScene, item, progress)
            entropyNode = samples.loadSampleEntropy(slicer.mrmlScene, item)
        finally:
            dialog.close()
        # This sample's scan and its own entropy map, or no overlay: never the previous scan's.
        samples.showSampleLayers(slicer.mrmlScene, volumeNode, entropyNode)
        if volumeNode is not None:
            slicer.util.setSliceViewerLayers(fit=True)
        self.loaded = (item, volumeNode, segmentationNode, entropyNode)
        self.correctFrom = "qc"

    def onDecide(self, decision: str) -> None:
        if self.session is None or self.session.current is None:
            return
        try:
            self.session.reviewer = self.ui.reviewerLineEdit.text
            self.session.decide(decision, comment=self.ui.reviewCommentLineEdit.text)
        except (OSError, ValueError) as error:
            self.showError(str(error))
            return
        self.ui.reviewCommentLineEdit.text = ""
        self.showList()
        self.showCurrent()

    def onExportSummary(self) -> None:
        if self.session is None:
            return
        path = qt.QFileDialog.getSaveFileName(None, "Export review summary", "", "CSV (*.csv)")
        if path:
            self.showStatus(f"Review summary written to {self.session.exportSummary(path)}")

    # ----------------------------------------------------------------- correction

    def _correctionSource(self):
        """(item or None, volumeNode, segmentationNode, image path, label path or automatic labels)
        of the labels to correct: the QC sample on screen, or the last Segment result."""
        result = self.currentResult()
        if self.correctFrom == "result" and result is not None:
            if result.segmentationNode.GetScene() is None or result.inputNode.GetScene() is None:
                raise ValueError("the segmentation result was removed from the scene; segment the volume again")
            return None, result.inputNode, result.segmentationNode, None, result.labels
        if self.loaded is None:
            raise ValueError("load a sample in QC review, or segment a volume above, first")
        item, volumeNode, segmentationNode = self.loaded[:3]
        if not item.image or volumeNode is None:
            raise ValueError(f"QC item {item.sample} names no image in the QC list, and a correction needs the "
                             "scan; rerun `swinbob solf run` with the images (an `image` column)")
        return item, volumeNode, segmentationNode, item.image, item.labelmap

    def onEditLabels(self) -> None:
        try:
            _item, volumeNode, segmentationNode, _image, _labels = self._correctionSource()
        except ValueError as error:
            self.showError(str(error))
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)

    def onSaveCorrection(self) -> None:
        try:
            dataset = correction.datasetFolder(self.ui.correctionDatasetPathLineEdit.currentPath)
            case, reviewer = self.ui.correctionCaseLineEdit.text.strip(), self.ui.reviewerLineEdit.text
            item, volumeNode, segmentationNode, image, labels = self._correctionSource()
            if item is None:  # the Segment result: the scan is written from its node
                record = correction.saveCorrectionFromResult(segmentationNode, volumeNode, slicer.mrmlScene, dataset,
                                                             case, reviewer=reviewer, automatic=labels)
            else:
                record = correction.saveCorrectionFromSegmentation(segmentationNode, volumeNode, slicer.mrmlScene,
                                                                   dataset, case, image, labels, reviewer=reviewer)
        except (OSError, ValueError, RuntimeError) as error:
            self.showError(str(error))
            return
        self.showAgreement(record["agreement"])
        edited = ", ".join(record["edited_structures"]) or "none"
        self.showStatus(f"Saved {record['label']} (edited: {edited})")

    def showAgreement(self, rows) -> None:
        widget = self.ui.correctionAgreementTableWidget
        widget.clear()
        widget.setColumnCount(len(correction.AGREEMENT_COLUMNS))
        widget.setHorizontalHeaderLabels(["Label", "Structure", "Voxels (auto)", "Voxels (corrected)", "Dice",
                                          "HD95 (mm)"])
        widget.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(correction.AGREEMENT_COLUMNS):
                value = row[key]
                widget.setItem(r, c, qt.QTableWidgetItem(f"{value:.3f}" if isinstance(value, float) else str(value)))
        widget.resizeColumnsToContents()

    # ----------------------------------------------------------------- jobs

    def trainingOptions(self) -> launcher.TrainingOptions:
        """The training form as options; 0 epochs or steps means the config file's, else the default."""
        ui = self.ui
        return launcher.TrainingOptions(
            ui.jobDatasetPathLineEdit.currentPath, ui.jobOutputPathLineEdit.currentPath,
            ui.jobCheckpointPathLineEdit.currentPath, config=ui.jobConfigPathLineEdit.currentPath,
            epochs=ui.jobEpochsSpinBox.value or None, maxSteps=ui.jobMaxStepsSpinBox.value or None,
            device=self._jobDevice())

    def _jobDevice(self) -> str:
        combo = self.ui.jobDeviceComboBox
        return combo.itemData(combo.currentIndex) or combo.currentText or "auto"

    def showPlan(self, *_) -> None:
        """What the training will run (epochs and steps, and where each comes from)."""
        if self.ui.jobKindComboBox.currentIndex != 0:
            self.ui.jobPlanLabel.text = ""
            return
        try:
            self.ui.jobPlanLabel.text = launcher.plannedTraining(self.trainingOptions())
        except ImportError:
            self.ui.jobPlanLabel.text = "(what will run is shown once the dependencies are installed)"
        except (OSError, ValueError) as error:
            self.ui.jobPlanLabel.text = str(error)

    def onStartJob(self) -> None:
        ui = self.ui
        try:
            self.ensureDependencies()  # the job's own Python imports torch: on a fresh Slicer it is not there yet
        except DependencyError as error:
            self.showError(str(error))
            return
        device = self._jobDevice()
        try:
            if ui.jobKindComboBox.currentIndex == 0:
                self.job = launcher.startTraining(self.trainingOptions())
            else:
                self.job = launcher.startBenchmark(launcher.BenchmarkOptions(
                    ui.jobDatasetPathLineEdit.currentPath, ui.jobCheckpointPathLineEdit.currentPath,
                    ui.jobOutputPathLineEdit.currentPath, device=device))
        except (OSError, ValueError) as error:
            self.showError(str(error))
            return
        ui.jobLogTextEdit.clear()
        ui.jobProgressBar.setValue(0)
        ui.jobStartButton.enabled, ui.jobStopButton.enabled, ui.jobResultButton.enabled = False, True, False
        self.logged = 0
        self.timer.start()

    def onPollJob(self) -> None:
        status = self.job.poll()
        self.ui.jobProgressBar.setValue(int(round(100 * status.fraction)))
        for line in self.job.logLines[self.logged:]:
            self.ui.jobLogTextEdit.appendPlainText(line)
        self.logged = len(self.job.logLines)
        if not self.job.finished:
            return
        self.timer.stop()
        self.ui.jobLogTextEdit.appendPlainText(status.message or status.state)
        self.ui.jobStartButton.enabled, self.ui.jobStopButton.enabled = True, False
        self.ui.jobResultButton.enabled = bool(self.job.results())
        if status.state == jobs.FAILED:
            self.showError(f"{self.job.kind} failed: {status.message}")

    def onStopJob(self) -> None:
        if self.job is not None and not self.job.finished:
            self.job.requestCancel()  # stop file and SIGTERM; poll() kills the process tree after the grace period
            self.ui.jobLogTextEdit.appendPlainText("Stopping (finishing the current step, then writing last.pt)...")

    def onOpenResult(self) -> None:
        results = self.job.results() if self.job is not None else {}
        checkpoint = results.get("best_checkpoint") or results.get("last_checkpoint")
        if checkpoint and self.setCheckpoint is not None:
            self.setCheckpoint(checkpoint)
            self.showStatus(f"Checkpoint for segmentation: {checkpoint}")
        elif "per_class_csv" in results:
            table = slicer.util.loadTable(results["per_class_csv"])
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
            self.showStatus(f"Benchmark summary: {results.get('summary_md', '')}")

    def cleanup(self) -> None:
        self.timer.stop()
        if self.job is not None and not self.job.finished:
            self.job.cancel(grace=10)
