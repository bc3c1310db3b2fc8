"""The module panel (Qt, runs only inside Slicer): binds Resources/UI/SwinBOB.ui to the parameter
node, runs segmentations in the background with a progress bar and Cancel, shows errors in the
panel, and shows the organ table with out-of-range cells highlighted.

Everything it does goes through :class:`~.logic.SwinBOBLogic`; the .ui's widget names and
``SlicerParameterName`` bindings are checked by Testing/Python/test_slicer_ui.py.
"""

from __future__ import annotations

import logging
import traceback

import qt
import slicer

from . import jobs, nodes
from .dependencies import DependencyError, DependencyInstaller
from .parameters import SegmentationOptions

POLL_INTERVAL_MS = 200
#: Cell backgrounds of the organ table.
OUT_OF_RANGE_COLOR = "#f4b6b6"
VERDICT_COLORS = {"inaccurate": "#e06666", "1 out of range": "#f6c26b", "ok": "#b6d7a8"}


class SwinBOBPanel:
    """The panel's behaviour; ``ui`` holds the .ui's child widgets by object name."""

    def __init__(self, ui, logic, parameterNode):
        self.ui = ui
        self.logic = logic
        self.parameters = parameterNode
        self.run = None
        self.runParameters = None  # the parameter node the running job reports to
        self.installer = DependencyInstaller(confirm=lambda text: slicer.util.confirmOkCancelDisplay(text, "SwinBOB"),
                                             log=self.showStatus)
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPoll)
        self.guiTag = None
        self.devicesListed = False
        self._fillDevices()
        ui.applyButton.connect("clicked(bool)", self.onApply)
        ui.cancelButton.connect("clicked(bool)", self.onCancel)
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        ui.checkpointPathLineEdit.connect("currentPathChanged(QString)",
                                          lambda path: self.setParameter("checkpointPath", path))
        ui.boundsPathLineEdit.connect("currentPathChanged(QString)",
                                      lambda path: self.setParameter("boundsPath", path))
        ui.organTableWidget.connect("itemSelectionChanged()", self.onRowSelected)
        ui.organTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self.showTable())
        from .workflowpanels import WorkflowPanels  # QC review, correction, training/benchmark jobs

        self.workflows = WorkflowPanels(ui, self.showStatus, self.showError,
                                        setCheckpoint=lambda path: self.setParameter("checkpointPath", path))

    # ----------------------------------------------------------------- binding

    def connect(self) -> None:
        """Bind the .ui to the parameter node (widgets named by ``SlicerParameterName``)."""
        if not hasattr(self.parameters, "connectGui"):
            raise RuntimeError("SwinBOB's panel needs slicer.parameterNodeWrapper (Slicer 5.4 or newer)")
        self.guiTag = self.parameters.connectGui(self.ui)
        self.updateFromParameters()

    def disconnect(self) -> None:
        if self.guiTag is not None:
            self.parameters.disconnectGui(self.guiTag)
            self.guiTag = None

    def updateFromParameters(self, *_) -> None:
        """Widgets bound by hand (device, paths) and button states, from the parameter node."""
        p, ui = self.parameters, self.ui
        index = ui.deviceComboBox.findData(p.device)
        ui.deviceComboBox.setCurrentIndex(index if index >= 0 else 0)
        if ui.checkpointPathLineEdit.currentPath != p.checkpointPath:
            ui.checkpointPathLineEdit.currentPath = p.checkpointPath
        if ui.boundsPathLineEdit.currentPath != p.boundsPath:
            ui.boundsPathLineEdit.currentPath = p.boundsPath
        running = self.run is not None and not self.run.job.finished
        ui.applyButton.enabled = p.inputVolume is not None and not running
        ui.cancelButton.enabled = running
        ui.ettaStepsSpinBox.enabled = ui.ettaLearningRateSpinBox.enabled = p.etta

    def _fillDevices(self) -> None:
        """Device list from torch (GPUs with name and memory); a plain list until torch is installed."""
        combo = self.ui.deviceComboBox
        try:
            devices = self.logic.availableDevices()
            self.devicesListed = True
        except ImportError:  # torch not installed yet: listed again after installation
            devices = [("auto", "Auto"), ("cuda", "GPU"), ("cpu", "CPU")]
            self.devicesListed = False
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for value, text in devices:
            combo.addItem(text, value)
        if self.parameters is not None:
            combo.setCurrentIndex(max(0, combo.findData(self.parameters.device)))
        combo.blockSignals(wasBlocked)

    def setParameter(self, name: str, value) -> None:
        """A widget bound by hand changed (no parameter node while the module is not shown)."""
        if self.parameters is not None:
            setattr(self.parameters, name, value)

    def onDeviceChanged(self, index: int) -> None:
        if index >= 0:
            self.setParameter("device", self.ui.deviceComboBox.itemData(index))

    # ----------------------------------------------------------------- running

    def onApply(self) -> None:
        self.showStatus("")
        try:
            self.installer.ensure()
            if not self.devicesListed:
                self._fillDevices()
            options = SegmentationOptions.fromParameters(self.parameters)
            self.run = self.logic.startSegmentation(self.parameters.inputVolume, options)
            self.runParameters = self.parameters
        except (DependencyError, ValueError, FileNotFoundError, RuntimeError, OSError) as error:
            self.showError(str(error))
            return
        self.ui.progressBar.visible = True
        self.ui.progressBar.setValue(0)
        self.showStatus("Starting...")
        self.timer.start()
        self.updateFromParameters()

    def onPoll(self) -> None:
        status = self.run.job.poll()
        self.ui.progressBar.setValue(int(round(100 * status.fraction)))
        self.showStatus(status.text)
        if not self.run.job.finished:
            return
        self.timer.stop()
        self.ui.progressBar.visible = False
        if status.state == jobs.SUCCEEDED:
            self._load()
        elif status.state == jobs.CANCELLED:
            self.showStatus("Cancelled.")
        else:
            self.showError(f"Segmentation failed: {status.message}")
            logging.error("SwinBOB segment failed:\n" + "\n".join(self.run.job.stderr))
        if self.parameters is not None:
            self.updateFromParameters()

    def _load(self) -> None:
        try:
            result = self.logic.finishSegmentation(self.run)
        except Exception as error:  # shown in the panel, details in the log
            logging.error(traceback.format_exc())
            self.showError(f"Loading the results failed: {error}")
            return
        self.runParameters.segmentation = result.segmentationNode
        self.runParameters.entropyVolume = result.entropyNode
        self.runParameters.organTable = result.tableNode
        self.ui.entropySummaryLabel.text = result.entropySummary()
        self.showStatus(" ".join([self.run.job.status.message, *result.messages]))
        self.showTable()

    def onCancel(self) -> None:
        if self.run is not None:
            self.run.job.requestCancel()
            self.showStatus("Cancelling...")

    def cleanup(self) -> None:
        """Stop polling and the child process (module reload, application exit)."""
        self.timer.stop()
        if self.run is not None and not self.run.job.finished:
            self.run.job.cancel(grace=2)
        self.workflows.cleanup()
        self.disconnect()

    # ----------------------------------------------------------------- messages

    def showStatus(self, text: str) -> None:
        self.ui.statusLabel.setStyleSheet("")
        self.ui.statusLabel.text = text
        slicer.app.processEvents()

    def showError(self, text: str) -> None:
        self.ui.statusLabel.setStyleSheet("color: #c00000")
        self.ui.statusLabel.text = text
        logging.error(text)

    # ----------------------------------------------------------------- organ table

    def showTable(self) -> None:
        """The organ table node in the QTableWidget, out-of-range cells and verdicts coloured."""
        if self.parameters is None:
            return
        tableNode = self.parameters.organTable
        widget = self.ui.organTableWidget
        widget.setSortingEnabled(False)
        widget.clear()
        if tableNode is None:
            widget.setRowCount(0)
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
        items = self.ui.organTableWidget.selectedItems()
        segmentation = self.parameters.segmentation if self.parameters is not None else None
        if not items or segmentation is None:
            return
        name = self.ui.organTableWidget.item(items[0].row(), 1).text()
        try:
            self.logic.centreOnStructure(segmentation, name)
        except ValueError as error:
            self.showError(str(error))
