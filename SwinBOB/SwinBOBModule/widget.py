"""The module panel (Qt, runs only inside Slicer): binds Resources/UI/SwinBOB.ui to the parameter
node, runs segmentations in the background with a progress bar and Cancel, shows errors in the
panel, says which model and bounds are loaded, and shows the organ table with out-of-range cells
highlighted.

Everything it does goes through :class:`~.logic.SwinBOBLogic` (no Qt, tested under slicer-core);
the .ui's widget names and ``SlicerParameterName`` bindings are checked by
Testing/Python/test_slicer_ui.py. The Slicer APIs used here are listed in docs/slicer.md.
"""

from __future__ import annotations

import logging
import traceback

import qt
import slicer

from . import jobs, nodes
from .dependencies import DependencyError, DependencyInstaller
from .parameters import PARAMETERS, SegmentationOptions

POLL_INTERVAL_MS = 200
#: Cell backgrounds of the organ table.
OUT_OF_RANGE_COLOR = "#f4b6b6"
VERDICT_COLORS = {"inaccurate": "#e06666", "1 out of range": "#f6c26b", "ok": "#b6d7a8", "not comparable": "#d9d9d9"}
#: What the device list offers before torch is installed (listed again after installation).
PLAIN_DEVICES = [("auto", "Auto"), ("cuda", "GPU"), ("cpu", "CPU")]
DEMO_STYLE = "color: #a04000"
ERROR_STYLE = "color: #c00000"


class SwinBOBPanel:
    """The panel's behaviour; ``ui`` holds the .ui's child widgets by object name."""

    def __init__(self, ui, logic, parameterNode):
        self.ui = ui
        self.logic = logic
        self.parameters = parameterNode
        self.run = None
        self.runParameters = None  # the parameter node the run was started from (kept across exit())
        self.runDiscarded = False  # the scene closed during the run: its results are never loaded
        self._highlighted = None  # the segmentation whose other segments a row click dimmed
        self.result = None  # the last SegmentationResult loaded (correction starts from it)
        self.installer = DependencyInstaller(confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, "SwinBOB"),
                                             log=self.showStatus)
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPoll)
        self.guiTag = None
        self.devicesListed = False
        self._summaries = {}  # (what, path) -> text shown
        self._displayState = None
        from .workflowpanels import WorkflowPanels  # QC review, correction, training/benchmark jobs

        self.workflows = WorkflowPanels(ui, self.showStatus, self.showError,
                                        setCheckpoint=lambda path: self.setParameter("checkpointPath", path),
                                        currentResult=lambda: self.result,
                                        ensureDependencies=self.ensureDependencies)
        configureNodeSelectors(ui)
        self._fillDevices()
        ui.applyButton.connect("clicked(bool)", self.onApply)
        ui.cancelButton.connect("clicked(bool)", self.onCancel)
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        ui.checkpointPathLineEdit.connect("currentPathChanged(QString)",
                                          lambda path: self.setParameter("checkpointPath", path))
        ui.boundsPathLineEdit.connect("currentPathChanged(QString)",
                                      lambda path: self.setParameter("boundsPath", path))
        ui.organTableWidget.connect("itemSelectionChanged()", self.onRowSelected)
        # The node comes with the signal: this slot runs before the wrapper's own connector has
        # written the choice into the parameter node, which would still hold the previous table.
        ui.organTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOrganTableSelected)

    # ----------------------------------------------------------------- binding

    def connect(self) -> None:
        """Bind the .ui to the parameter node (widgets named by ``SlicerParameterName``)."""
        if not hasattr(self.parameters, "connectGui"):
            raise RuntimeError("SwinBOB's panel needs slicer.parameterNodeWrapper (Slicer 5.10 or newer)")
        self.guiTag = self.parameters.connectGui(self.ui)
        self.updateFromParameters()

    def disconnect(self) -> None:
        if self.guiTag is not None:
            self.parameters.disconnectGui(self.guiTag)
            self.guiTag = None

    def updateFromParameters(self, *_) -> None:
        """Widgets bound by hand (device, paths), summaries, display and button states."""
        p, ui = self.parameters, self.ui
        if p is None:
            return
        index = ui.deviceComboBox.findData(p.device)
        ui.deviceComboBox.setCurrentIndex(index if index >= 0 else 0)
        if ui.checkpointPathLineEdit.currentPath != p.checkpointPath:
            ui.checkpointPathLineEdit.currentPath = p.checkpointPath
        if ui.boundsPathLineEdit.currentPath != p.boundsPath:
            ui.boundsPathLineEdit.currentPath = p.boundsPath
        running = self.run is not None and not self.run.job.finished
        ui.applyButton.enabled = p.inputVolume is not None and not running
        ui.applyButton.toolTip = ("Segment the input volume in a background process." if p.inputVolume is not None
                                  else "Select an input volume first.")
        ui.cancelButton.enabled = running
        ui.ettaStepsSpinBox.enabled = ui.ettaLearningRateSpinBox.enabled = p.etta
        ui.segmentFillOpacitySliderWidget.enabled = p.showSegmentFill
        ui.entropyOpacitySliderWidget.enabled = p.showEntropy
        self.updateSummaries()
        self.applyDisplay()

    def _fillDevices(self) -> None:
        """Device list from torch (GPUs with name and memory), for segmentation and the jobs alike;
        a plain list while torch is missing, too old or broken (listed again after installation).
        A too old torch is not imported here: once imported it cannot be upgraded in this session."""
        combo = self.ui.deviceComboBox
        devices, self.devicesListed = PLAIN_DEVICES, False
        if self.installer.torchUsable():
            try:
                devices = self.logic.availableDevices()
                self.devicesListed = True
            except Exception as error:  # ImportError, or OSError/RuntimeError from a broken torch (DLL)
                logging.warning(f"SwinBOB: torch could not list devices: {error}")
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for value, text in devices:
            combo.addItem(text, value)
        if self.parameters is not None:
            combo.setCurrentIndex(max(0, combo.findData(self.parameters.device)))
        combo.blockSignals(wasBlocked)
        self.workflows.setDevices(devices)

    def setParameter(self, name: str, value) -> None:
        """A widget bound by hand changed (no parameter node while the module is not shown)."""
        if self.parameters is not None:
            setattr(self.parameters, name, value)

    def onDeviceChanged(self, index: int) -> None:
        if index >= 0:
            self.setParameter("device", self.ui.deviceComboBox.itemData(index))

    # ----------------------------------------------------------------- what is loaded

    def updateSummaries(self) -> None:
        """Which model and which SOLF bounds the run will use, in plain words (cached per path)."""
        p = self.parameters
        for label, what, path, describe in (
                (self.ui.modelSummaryLabel, "model", p.checkpointPath, self._modelSummary),
                (self.ui.boundsSummaryLabel, "bounds", p.boundsPath,
                 lambda path: (self.logic.boundsSummary(path)["text"], ""))):
            text, style = self._summary(what, path, describe)
            label.text = text
            label.setStyleSheet(style)

    def _summary(self, what: str, path: str, describe):
        key = (what, path)
        if key not in self._summaries:
            try:
                self._summaries[key] = describe(path)
            except Exception as error:  # a bad file: shown where the summary goes
                self._summaries[key] = (str(error), ERROR_STYLE)
        return self._summaries[key]

    def _modelSummary(self, path: str):
        if not self.installer.ready():  # reading a checkpoint needs torch
            name = path or "the bundled demo model (trained on synthetic data; it is not Swin-BOB)"
            return f"Model: {name}; details once the dependencies are installed.", DEMO_STYLE if not path else ""
        summary = self.logic.modelSummary(path)
        return summary["text"], DEMO_STYLE if summary.get("demo") else ""

    # ----------------------------------------------------------------- running

    def ensureDependencies(self) -> None:
        """Install what is missing after asking (Segment, and Start of a training or benchmark),
        then list the GPUs. Raises DependencyError with the message to show."""
        try:
            self.installer.ensure()
        except DependencyError:
            raise
        except Exception as error:  # whatever an installer raises must reach the panel, not only the console
            logging.error(traceback.format_exc())
            raise DependencyError(f"Checking SwinBOB's dependencies failed: {error}") from error
        if not self.devicesListed:
            self._fillDevices()
            self._summaries.clear()
            if self.parameters is not None:
                self.updateSummaries()

    def onApply(self) -> None:
        self.showStatus("")
        try:
            self.ensureDependencies()
            options = SegmentationOptions.fromParameters(self.parameters)
            self.run = self.logic.startSegmentation(self.parameters.inputVolume, options)
            self.runParameters, self.runDiscarded = self.parameters, False
        except (DependencyError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
            self.showError(str(error))
            return
        self.ui.progressBar.visible = True
        self.ui.progressBar.setValue(0)
        self.showStatus("Starting...")
        self.timer.start()
        self.updateFromParameters()

    def onPoll(self) -> None:
        """The timer's tick: progress, and once the job has ended its outcome. Runs whichever module
        is shown (the panel's own parameters are None while another one is)."""
        run = self.run
        status = run.job.poll()
        self.ui.progressBar.setValue(int(round(100 * status.fraction)))
        self.showStatus(status.text)
        if not run.job.finished:
            return
        self.timer.stop()
        self.ui.progressBar.visible = False
        if status.state == jobs.SUCCEEDED and not self.runDiscarded:
            self._load(run, self.runParameters)
        else:
            self.logic.discardRun(run)  # the working folder holds a full copy of the input
            if self.runDiscarded:
                self.showStatus("The scene was closed during the segmentation: the run was cancelled and its "
                                "results discarded.")
            elif status.state == jobs.CANCELLED:
                self.showStatus("Cancelled.")
            else:
                self.showError(f"Segmentation failed: {status.message}")
                logging.error("SwinBOB segment failed:\n" + "\n".join(run.job.stderr))
        if self.parameters is not None:
            self.updateFromParameters()

    def _load(self, run, parameters) -> None:
        """Load a finished run with the settings of the parameter node it was started from, which
        outlives the panel's binding: the user may have switched modules since."""
        try:
            result = self.logic.finishSegmentation(run, show=False)
            self.logic.showResult(result, show3D=False)
            parameters.segmentation, parameters.entropyVolume, parameters.organTable = (
                result.segmentationNode, result.entropyNode, result.tableNode)
            self._displayState = None
            self.applyDisplay(parameters)
            if parameters.show3D:
                with slicer.util.WaitCursor():
                    self.logic.showSurfaces(result.segmentationNode, self.showStatus)
        except Exception as error:  # shown in the panel, details in the log
            logging.error(traceback.format_exc())
            self.showError(f"Loading the results failed: {error}")
            return
        self.result = result
        self.workflows.useResult(result)
        self.ui.entropySummaryLabel.text = result.entropySummary()
        self.showStatus(" ".join([run.job.status.message, *result.messages]))
        self.showTable(result.tableNode)

    def onSceneStartClose(self) -> None:
        """The scene is closing: a run still going is cancelled (the stop request now, the timer
        kills what is left after the grace period) and its results are never loaded, since its
        input is gone; the last result belonged to the old scene."""
        if self.run is not None and self.timer.isActive():
            self.runDiscarded = True
            self.runParameters = None
            self.run.job.requestCancel()
        self.result = None
        self._highlighted = None

    def onCancel(self) -> None:
        if self.run is not None and not self.run.job.finished:
            self.run.job.requestCancel()  # stop file and SIGTERM now; poll() kills the process tree later
            self.showStatus("Cancelling (ending the job's processes)...")

    def cleanup(self) -> None:
        """Stop polling and the job's processes (module reload, application exit)."""
        self.timer.stop()
        if self.run is not None:
            self.logic.discardRun(self.run)
        self.workflows.cleanup()
        self.disconnect()

    # ----------------------------------------------------------------- display

    def applyDisplay(self, parameters=None) -> None:
        """Segment fill and entropy overlay as ``parameters`` (default: the panel's) say, only when
        those change, so a layer the user picked in the views is not reset by unrelated edits."""
        p = parameters if parameters is not None else self.parameters
        if p is None:
            return
        state = (p.segmentation, p.showSegmentFill, p.segmentFillOpacity, p.entropyVolume, p.showEntropy,
                 p.entropyOpacity)
        if state == self._displayState:
            return
        self._displayState = state
        try:
            if p.segmentation is not None and p.segmentation.GetDisplayNode() is not None:
                self.logic.setSegmentFill(p.segmentation, p.showSegmentFill, p.segmentFillOpacity)
            if p.entropyVolume is not None:
                self.logic.setEntropyOverlay(p.entropyVolume, p.showEntropy, p.entropyOpacity)
        except ValueError as error:
            self.showError(str(error))

    # ----------------------------------------------------------------- messages

    def showStatus(self, text: str) -> None:
        self.ui.statusLabel.setStyleSheet("")
        self.ui.statusLabel.text = text
        slicer.app.processEvents()

    def showError(self, text: str) -> None:
        self.ui.statusLabel.setStyleSheet(ERROR_STYLE)
        self.ui.statusLabel.text = text
        logging.error(text)

    # ----------------------------------------------------------------- organ table

    def onOrganTableSelected(self, node) -> None:
        """The user picked a table: show it, or refuse one that is not an organ table."""
        if node is not None and not nodes.isOrganTable(node):
            self.showError(f"'{node.GetName()}' is not a SwinBOB organ table; choose the 'organs' table of a "
                           "segmentation result.")
            self._clearTable()
            return
        self.showTable(node)

    def _clearTable(self) -> None:
        widget = self.ui.organTableWidget
        widget.clear()
        widget.setRowCount(0)

    def showTable(self, tableNode=None) -> None:
        """An organ table node (default: the parameter node's) in the QTableWidget, out-of-range
        cells and verdicts coloured; any other table is refused with a message, not a traceback."""
        if tableNode is None:
            tableNode = self.parameters.organTable if self.parameters is not None else None
        widget = self.ui.organTableWidget
        widget.setSortingEnabled(False)
        self._clearTable()
        self.restoreSegments()  # no row of the new table is selected
        if tableNode is None:
            return
        if not nodes.isOrganTable(tableNode):
            self.showError(f"'{tableNode.GetName()}' is not a SwinBOB organ table; it is not shown.")
            return
        rows = nodes.tableRows(tableNode)
        titles = [c[1] + (f" ({c[2]})" if c[2] else "") for c in nodes.TABLE_COLUMNS]
        widget.setColumnCount(len(titles))
        widget.setHorizontalHeaderLabels(titles)
        widget.setRowCount(len(rows))
        for r, row in enumerate(rows):
            out = set(filter(None, row["out_of_range"].split(",")))
            for c, (key, _title, _unit, description, kind) in enumerate(nodes.TABLE_COLUMNS):
                value = row[key]
                item = qt.QTableWidgetItem()
                item.setData(qt.Qt.DisplayRole, value if kind != "double" else round(value, 4))
                item.setToolTip(description)
                if key in out:
                    item.setBackground(qt.QBrush(qt.QColor(OUT_OF_RANGE_COLOR)))
                if key == "verdict" and value in VERDICT_COLORS:
                    item.setBackground(qt.QBrush(qt.QColor(VERDICT_COLORS[value])))
                widget.setItem(r, c, item)
        widget.setSortingEnabled(True)
        widget.resizeColumnsToContents()

    def onRowSelected(self) -> None:
        """A row selected: centre on its structure and dim the others; no row selected (Ctrl+click
        on the selected row): every segment shown again."""
        items = self.ui.organTableWidget.selectedItems()
        segmentation = self.parameters.segmentation if self.parameters is not None else None
        if not items or segmentation is None:
            self.restoreSegments()
            return
        row = items[0].row()
        label = self.ui.organTableWidget.item(row, 0).data(qt.Qt.DisplayRole)
        try:  # by label value, in the scheme the segments were built with (any checkpoint's)
            self.restoreSegments()
            self.logic.centreOnStructure(segmentation, int(label))
        except (ValueError, TypeError) as error:
            self.showError(str(error))
            return
        self._highlighted = segmentation
        name = self.ui.organTableWidget.item(row, 1).data(qt.Qt.DisplayRole)
        self.showStatus(f"Centred on {name}; the other segments are dimmed. Ctrl+click the row to show all again.")

    def restoreSegments(self) -> None:
        """Undo a row's highlight: every segment at full opacity again (also when the module is left)."""
        segmentation, self._highlighted = self._highlighted, None
        if segmentation is not None and segmentation.GetScene() is not None and segmentation.GetDisplayNode():
            self.logic.highlightStructure(segmentation, None)


def configureNodeSelectors(ui) -> None:
    """What each node selector lists, from its parameter's declaration (:data:`PARAMETERS`).

    Slicer's parameter-node binding sets a selector's ``nodeTypes`` only; a scalar-volume selector
    would then also list vector, tensor and label-map volumes (they derive from the scalar class),
    so child types and attribute filters (an entropy map's role) are set here.
    """
    specs = {p.name: p for p in PARAMETERS if p.isNode}
    for widget in vars(ui).values():
        spec = specs.get(widget.property("SlicerParameterName")) if hasattr(widget, "property") else None
        if spec is None:
            continue
        widget.showChildNodeTypes = spec.childTypes
        if spec.attribute is not None:
            for nodeType in spec.nodeTypes:
                widget.addAttribute(nodeType, *spec.attribute)
