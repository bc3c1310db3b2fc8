"""A Slicer application's core, without the application: scene, application logic, module logics,
and the three slice views, as Slicer sets them up at startup (see docs/slicer.md); and
:class:`StandInApplication`, the few things only the application provides (PythonQt's ``qt``, the
.ui's widgets, the module manager), so that tests can drive the module's real widget.

Used by the Slicer module's pytest suite under ``slicer-core``; inside the real application the
same test bodies (SwinBOB/SwinBOBModule/selftests.py) run on ``slicer.mrmlScene`` instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import sys
import time
import traceback
import types
import unittest
import weakref
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SwinBOB"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

#: Slice views of Slicer's default layout: (layout name, orientation).
SLICE_VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))


@dataclass
class SlicerCore:
    """What the test bodies need of a running Slicer."""

    scene: object
    applicationLogic: object
    colorLogic: object
    sliceLogics: dict = field(default_factory=dict)

    def close(self) -> None:
        import slicer

        for logic in self.sliceLogics.values():
            logic.SetMRMLScene(None)
        self.colorLogic.SetMRMLScene(None)
        self.applicationLogic.SetMRMLScene(None)
        self.scene.Clear(1)
        if getattr(slicer, "mrmlScene", None) is self.scene:
            slicer.mrmlScene = None


def start_slicer_core() -> SlicerCore:
    """A fresh scene wired like the application's: ``slicer.mrmlScene`` points at it."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(scene)  # registers the colour nodes and the colour legend display node class
    core = SlicerCore(scene, app, colors)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in SLICE_VIEWS:
        sliceNode = scene.CreateNodeByClass("vtkMRMLSliceNode")
        sliceNode.SetName(name)
        sliceNode.SetLayoutName(name)
        sliceNode.SetSingletonTag(name)
        assert sliceNode.SetOrientation(orientation), orientation
        sliceNode.SetDimensions(256, 256, 1)
        scene.AddNode(sliceNode)
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(sliceNode)  # creates the slice composite node of this view
        core.sliceLogics[name] = logic
    return core


def load_volume(scene, path, name: str | None = None):
    """A scalar volume node read from a file through its storage node (Slicer's reader)."""
    from SwinBOBModule.selftests import read_volume

    return read_volume(scene, path, name or Path(path).name.split(".")[0])


# ----------------------------------------------------------------------------- rendered views

#: Orientations of the rendered views, left to right.
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
SAMPLE = REPO / "Testing" / "Data" / "totalsegmentator-samples" / "example_mr_sm.nii.gz"


def render_result_views(core: SlicerCore, tmp: Path, size: int = 360) -> dict:
    """The MR sample segmented by the tiny seeded test model, rendered through Slicer's slice
    pipeline in three orientations and four layer sets (scan, +entropy, +labels, all).

    Returns ``{"views": {orientation: {layers: (H, W, 4) uint8}}, "legend", "window", "summary",
    "snapshot", "scene", "result"}``; files are written under ``tmp`` only.
    """
    from SwinBOBModule import nodes, rendering, selftests
    from SwinBOBModule.logic import SwinBOBLogic
    from SwinBOBModule.parameters import SegmentationOptions

    volume = load_volume(core.scene, SAMPLE, "example_mr_sm")
    checkpoint = selftests.make_tiny_checkpoint(Path(tmp) / "tiny.pt")
    result = SwinBOBLogic().segment(volume, SegmentationOptions(checkpointPath=checkpoint))
    rows = nodes.tableRows(result.tableNode)
    largest = max(rows, key=lambda r: r["volume_ml"])["name"]
    center = SwinBOBLogic().centreOnStructure(result.segmentationNode, largest)
    views = {}
    for orientation in ORIENTATIONS:
        views[orientation] = {
            layers: rendering.sliceImage(core.scene, volume, *args, orientation=orientation, size=(size, size),
                                         center=center, applicationLogic=core.applicationLogic)
            for layers, args in (("scan", ()), ("entropy", (result.entropyNode,)),
                                 ("labels", (None, result.segmentationNode)),
                                 ("all", (result.entropyNode, result.segmentationNode)))}
    snapshot = SwinBOBLogic().snapshot(result, Path(tmp) / "snapshot_axial.png", "Axial", (256, 256))
    display = result.entropyNode.GetDisplayNode()
    return {"views": views, "legend": rendering.colorLookup(display.GetColorNode()),
            "window": (display.GetWindowLevelMin(), display.GetWindowLevelMax()),
            "summary": result.entropySummary(), "snapshot": snapshot, "scene": core.scene, "result": result}


def render_figure(rendered: dict, path) -> Path:
    """The three blended views side by side with the entropy colour legend, as a PNG (matplotlib
    adds the titles and the legend; the pixels are Slicer's). The docs picture is this figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, Normalize

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), dpi=100)
    for row, (layer, title) in enumerate((("labels", "MR + labels"), ("entropy", "MR + entropy overlay"))):
        for ax, orientation in zip(axes[row], ORIENTATIONS):
            ax.imshow(rendered["views"][orientation][layer][60:300])
            ax.set_title(f"{orientation}: {title}", fontsize=10)
            ax.axis("off")
    low, high = rendered["window"]
    mappable = plt.cm.ScalarMappable(Normalize(low, high), ListedColormap(rendered["legend"]))
    fig.colorbar(mappable, ax=axes[1], fraction=0.02, pad=0.01, label="entropy (normalised)")
    fig.suptitle("SwinBOB result rendered by Slicer's slice pipeline (vtkMRMLSliceLogic, offscreen)\n"
                 f"example_mr_sm, tiny untrained test model: {rendered['summary']}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the .ui under Qt

#: Slicer/CTK classes the .ui may use, with the Qt class their placeholder derives from.
SLICER_WIDGET_CLASSES = {"qMRMLWidget": "QWidget", "ctkCollapsibleButton": "QWidget", "qMRMLNodeComboBox": "QWidget",
                         "ctkPathLineEdit": "QWidget", "ctkSliderWidget": "QWidget"}
#: The placeholder classes, made once and kept for the process: QUiLoader.registerCustomWidget does
#: not hold a reference, and a class collected before ``load`` is a segmentation fault in Qt.
_PLACEHOLDERS: dict = {}


def load_ui(path):
    """``(QApplication, widget)``: a .ui file loaded with PySide6 (set QT_QPA_PLATFORM=offscreen
    first), Slicer's own widget classes registered as placeholder widgets of the same name."""
    from PySide6 import QtWidgets
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    if not _PLACEHOLDERS:
        _PLACEHOLDERS.update({name: type(name, (getattr(QtWidgets, base),), {})
                              for name, base in SLICER_WIDGET_CLASSES.items()})
    loader = QUiLoader()
    for placeholder in _PLACEHOLDERS.values():
        loader.registerCustomWidget(placeholder)
    handle = QFile(str(path))
    assert handle.open(QFile.ReadOnly), f"cannot open {path}"
    widget = loader.load(handle)
    handle.close()
    assert widget is not None, loader.errorString()
    return app, widget


# ----------------------------------------------------------------------------- the application, stood in
#
# What only the Slicer application provides, for tests that drive the module's real widget
# (SwinBOB.py, SwinBOBModule/widget.py) on a slicer-core scene: PythonQt's `qt` (timers, table
# items), the .ui's widgets (made from Resources/UI/SwinBOB.ui: its names, classes, properties and
# scene connections), `slicer.ScriptedLoadableModule`, `slicer.parameterNodeWrapper` (node
# selectors bound as its qMRMLNodeComboBoxToNodeConnector binds them), `slicer.app`, the module
# manager (enter / exit on a module switch, cleanup on unload, Reload) and the `slicer.util`
# helpers that need the GUI. Each behaves as Slicer v5.10's source does, as far as the module uses it.

UI_FILE = REPO / "Resources" / "UI" / "SwinBOB.ui"


def _call(slot, args):
    """Call a slot with as many of the signal's arguments as it takes (PythonQt drops the rest)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return slot(*args)
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return slot(*args)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return slot(*args[:len(positional)])


class _Emitter:
    """PythonQt's ``object.connect("signal(types)", slot)``. A slot's exception does not reach the
    emitter: Qt prints it to the console; here it is kept in :data:`SLOT_ERRORS`."""

    def __init__(self):
        self._slots: dict = {}
        self._blocked = False

    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)

    def disconnect(self, signal, slot):
        self._slots.get(signal, []).remove(slot)

    def blockSignals(self, block):
        previous, self._blocked = self._blocked, bool(block)
        return previous

    def emit(self, signal, *args):
        if self._blocked:
            return
        for slot in list(self._slots.get(signal, [])):
            try:
                _call(slot, args)
            except Exception:  # noqa: BLE001  (as Qt: printed, the emitter goes on)
                SLOT_ERRORS.append(traceback.format_exc())


#: Tracebacks of exceptions raised in slots (the application prints them to the Python console).
SLOT_ERRORS: list = []
#: Live timers; the stand-in application's processEvents() fires those that are due.
_TIMERS: "weakref.WeakSet" = weakref.WeakSet()


class StandInTimer(_Emitter):
    """qt.QTimer: ``timeout()`` when due, during processEvents; never re-entered from its own slot
    (Qt does not deliver a timer's event again while its slot runs)."""

    def __init__(self):
        super().__init__()
        self._interval, self._active, self._due, self._firing = 0, False, 0.0, False
        _TIMERS.add(self)

    def setInterval(self, milliseconds):
        self._interval = milliseconds

    def start(self):
        self._active, self._due = True, time.monotonic() + self._interval / 1000

    def stop(self):
        self._active = False

    def isActive(self):
        return self._active

    def fireIfDue(self, now):
        if self._active and not self._firing and now >= self._due:
            self._firing, self._due = True, now + self._interval / 1000
            try:
                self.emit("timeout()")
            finally:
                self._firing = False


class StandInTableItem:
    """qt.QTableWidgetItem: data by role, tool tip, background; row() once in a table."""

    def __init__(self, text=""):
        self._data, self._row, self.background, self.toolTip = {0: text}, -1, None, ""

    def setData(self, role, value):
        self._data[role] = value

    def data(self, role):
        return self._data.get(role)

    def text(self):
        return str(self._data.get(0, ""))

    def setToolTip(self, text):
        self.toolTip = text

    def setBackground(self, brush):
        self.background = brush

    def row(self):
        return self._row


def standInQt():
    """A stand-in ``qt`` module with what the module's code uses of PythonQt's."""
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QTableWidgetItem = StandInTimer, StandInTableItem
    qt.Qt = types.SimpleNamespace(DisplayRole=0, ToolTipRole=3)
    qt.QColor = qt.QBrush = qt.QIcon = qt.QPixmap = lambda *args: args
    qt.QLabel = lambda text="": StandInWidget("", "QLabel", {"text": text})
    qt.QFileDialog = types.SimpleNamespace(getSaveFileName=lambda *args: "")
    return qt


class StandInWidget(_Emitter):
    """A widget of the .ui: its name, class and Designer properties (``property(name)``, as
    QObject::property reads dynamic ones such as ``SlicerParameterName``), and the PythonQt
    attributes the module sets and reads."""

    def __init__(self, name, className, properties):
        super().__init__()
        self.name, self.className, self._properties = name, className, dict(properties)
        self.enabled = properties.get("enabled", True)
        self.visible, self.toolTip, self.styleSheet = True, properties.get("toolTip", ""), ""
        self.text = properties.get("text", "")
        self.checked = properties.get("checked", False)
        self.value = properties.get("value", 0)
        self.currentPath, self.pixmap, self.scene = "", None, None

    def property(self, name):
        return self._properties.get(name)

    def setStyleSheet(self, text):
        self.styleSheet = text

    def setValue(self, value):
        self.value = value

    def setPixmap(self, pixmap):
        self.pixmap = pixmap

    def click(self):
        """QAbstractButton.click(): ``clicked(bool)`` when enabled."""
        if self.enabled:
            self.emit("clicked(bool)", False)

    def setMRMLScene(self, scene):
        self.scene = scene
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)


class StandInComboBox(StandInWidget):
    """QComboBox: items with data, ``currentIndexChanged(int)`` as Qt emits it."""

    def __init__(self, name, className, properties, items=()):
        super().__init__(name, className, properties)
        self._items = [(text, None) for text in items]
        self.currentIndex = 0 if self._items else -1

    @property
    def count(self):
        return len(self._items)

    @property
    def currentText(self):
        return self._items[self.currentIndex][0] if self.currentIndex >= 0 else ""

    def addItem(self, text, data=None):
        self._items.append((text, data))
        if self.currentIndex < 0:
            self.setCurrentIndex(0)

    def clear(self):
        self._items = []
        self.setCurrentIndex(-1)

    def findData(self, data):
        return next((i for i, (_text, value) in enumerate(self._items) if value == data), -1)

    def itemData(self, index):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def setCurrentIndex(self, index):
        if index != self.currentIndex:
            self.currentIndex = index
            self.emit("currentIndexChanged(int)", index)


class StandInNodeComboBox(StandInWidget):
    """qMRMLNodeComboBox: lists the scene's nodes through the filter of
    ``qMRMLSortFilterProxyModel::filterAcceptsNode`` (node types, ``showChildNodeTypes``,
    ``hideChildNodeTypes``, attributes, hidden nodes); a node it does not list cannot be current."""

    def __init__(self, name, className, properties):
        super().__init__(name, className, properties)
        self.nodeTypes = list(properties.get("nodeTypes", []))
        self.showChildNodeTypes = properties.get("showChildNodeTypes", True)
        self.hideChildNodeTypes = list(properties.get("hideChildNodeTypes", []))
        self.attributes, self._node = {}, None

    def addAttribute(self, nodeType, name, value=None):
        self.attributes[nodeType] = (name, value)

    def accepts(self, node) -> bool:
        if node.GetHideFromEditors():
            return False
        for nodeType in self.nodeTypes:
            if not node.IsA(nodeType) or (not self.showChildNodeTypes and node.GetClassName() != nodeType):
                continue
            if self.showChildNodeTypes and any(node.IsA(hidden) for hidden in self.hideChildNodeTypes):
                return False
            if nodeType in self.attributes:
                name, value = self.attributes[nodeType]
                if node.GetAttribute(name) is None or (value is not None and node.GetAttribute(name) != str(value)):
                    return False
            return True
        return False

    def nodes(self) -> list:
        """The nodes the selector lists, in scene order."""
        if self.scene is None:
            return []
        collection = self.scene.GetNodes()
        found = (collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems()))
        return [node for node in found if self.accepts(node)]

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        node = node if node is not None and self.accepts(node) and node.GetScene() is self.scene else None
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class StandInTableWidget(StandInWidget):
    """QTableWidget: cells, row selection (``itemSelectionChanged()``), ``rowCount`` read as a property."""

    def __init__(self, name, className, properties):
        super().__init__(name, className, properties)
        self.rowCount, self.columnCount, self._cells, self._selected = 0, 0, {}, None

    def setSortingEnabled(self, enabled):
        pass

    def resizeColumnsToContents(self):
        pass

    def setHorizontalHeaderLabels(self, labels):
        self.headers = list(labels)

    def clear(self):  # items and headers go, the row count stays (QTableWidget::clear)
        self._cells, self.headers = {}, []
        self.clearSelection()

    def setRowCount(self, rows):
        self.rowCount = rows
        self._cells = {key: item for key, item in self._cells.items() if key[0] < rows}
        if self._selected is not None and self._selected >= rows:
            self.clearSelection()

    def setColumnCount(self, columns):
        self.columnCount = columns

    def setItem(self, row, column, item):
        item._row = row
        self._cells[(row, column)] = item

    def item(self, row, column):
        return self._cells.get((row, column))

    def selectRow(self, row):
        if row != self._selected:
            self._selected = row
            self.emit("itemSelectionChanged()")

    def clearSelection(self):
        if self._selected is not None:
            self._selected = None
            self.emit("itemSelectionChanged()")

    def selectedItems(self):
        return [item for (row, _column), item in sorted(self._cells.items()) if row == self._selected]


class StandInTextEdit(StandInWidget):
    """QPlainTextEdit: appended lines."""

    def __init__(self, name, className, properties):
        super().__init__(name, className, properties)
        self.lines = []

    def appendPlainText(self, text):
        self.lines.append(text)

    def clear(self):
        self.lines = []


_WIDGET_CLASSES = {"QComboBox": StandInComboBox, "qMRMLNodeComboBox": StandInNodeComboBox,
                   "QTableWidget": StandInTableWidget, "QPlainTextEdit": StandInTextEdit}


def _propertyValue(element):
    value = next(iter(element), None)
    if value is None:
        return None
    if value.tag == "bool":
        return value.text == "true"
    if value.tag in ("number", "double"):
        return float(value.text) if value.tag == "double" else int(value.text)
    if value.tag == "stringlist":
        return [s.text for s in value.findall("string")]
    return value.text if value.tag == "string" else None


def loadStandInUi(path=UI_FILE):
    """``(root, {name: widget})``: the .ui's widgets with their Designer properties, combo-box
    items, and the .ui's ``mrmlSceneChanged`` -> ``setMRMLScene`` connections."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(path)
    widgets = {}
    for element in tree.iter("widget"):
        properties = {p.get("name"): _propertyValue(p) for p in element.findall("property")}
        cls = _WIDGET_CLASSES.get(element.get("class"), StandInWidget)
        extra = {}
        if cls is StandInComboBox:
            extra["items"] = [_propertyValue(item.find("property")) for item in element.findall("item")]
        widgets[element.get("name")] = cls(element.get("name"), element.get("class"), properties, **extra)
    for connection in tree.iter("connection"):
        sender, receiver = widgets[connection.find("sender").text], widgets[connection.find("receiver").text]
        slot = connection.find("slot").text.split("(")[0]
        sender.connect(connection.find("signal").text, getattr(receiver, slot))
    root = widgets[tree.getroot().find("widget").get("name")]
    root.children = widgets
    return root, widgets


# ----------------------------------------------------------------------------- slicer.ScriptedLoadableModule


class StandInModuleParent:
    """The module's widget representation (qSlicerScriptedLoadableModuleWidget): a layout, the
    ``isEntered`` flag its enter()/exit() set before calling Python's, and ``self()``."""

    def __init__(self):
        self.isEntered, self.widgets, self._self = False, [], None

    def layout(self):
        return self

    def addWidget(self, widget):
        self.widgets.append(widget)

    def addStretch(self, stretch=0):
        pass

    def self(self):
        return self._self


def standInScriptedLoadableModule():
    """``slicer.ScriptedLoadableModule`` (Base/Python/slicer/ScriptedLoadableModule.py, v5.10)."""
    import slicer

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = type(self).__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__.removesuffix("Widget")
            self.developerMode = False
            self.parent = parent
            self.layout = parent.layout()

        def setup(self):
            pass

        def cleanup(self):
            pass

        def onReload(self):
            slicer.util.reloadScriptedModule(self.moduleName)

    class ScriptedLoadableModuleLogic:
        isSingletonParameterNode = True

        def __init__(self, parent=None):
            self.moduleName = type(self).__name__.removesuffix("Logic")

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is not None:
                node.SetAttribute("ModuleName", self.moduleName)  # a scene close removes it
                return node
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return slicer.mrmlScene.AddNode(node)

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):
            self.messages = getattr(self, "messages", []) + [message]

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


def standInParameterNodeWrapper():
    """``slicer.parameterNodeWrapper``: the decorator gives typed access to the node's values (the
    module's PlainParameterNode does that here) and ``connectGui``/``disconnectGui``, binding each
    node selector whose ``SlicerParameterName`` names a parameter as
    ``qMRMLNodeComboBoxToNodeConnector`` does (its ``nodeTypes`` from the annotation, current node
    written both ways)."""
    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.WithinRange = lambda minimum, maximum: ("WithinRange", minimum, maximum)

    def parameterNodeWrapper(_annotated):
        from SwinBOBModule.parameters import PARAMETERS, PlainParameterNode

        specs = {p.name: p for p in PARAMETERS}

        class Wrapped(PlainParameterNode):
            def connectGui(self, ui):
                bound = []
                for widget in vars(ui).values():
                    if not isinstance(widget, StandInNodeComboBox):
                        continue
                    spec = specs.get(widget.property("SlicerParameterName"))
                    if spec is None:
                        continue
                    widget.nodeTypes = list(spec.nodeTypes)
                    widget.setCurrentNode(getattr(self, spec.name))
                    slot = functools.partial(setattr, self, spec.name)
                    widget.connect("currentNodeChanged(vtkMRMLNode*)", slot)
                    bound.append((widget, slot))
                return bound

            def disconnectGui(self, tag):
                for widget, slot in tag:
                    widget.disconnect("currentNodeChanged(vtkMRMLNode*)", slot)

        return Wrapped

    module.parameterNodeWrapper = parameterNodeWrapper
    return module


# ----------------------------------------------------------------------------- slicer.app and the module manager


class StandInApplication:
    """``slicer.app``, the module manager and the GUI helpers of ``slicer.util``, around a
    :class:`SlicerCore`; :meth:`install` puts every stand-in in place, :meth:`uninstall` restores
    what was there (the module's own modules included, so other tests keep theirs).

    ``answers``: what ``confirmOkCancelDisplay`` answers, in order (then OK, as in testing mode);
    ``questions`` holds what it was asked. ``testing``: ``slicer.app.testingEnabled()`` (ctest's
    ``--testing``).
    """

    majorVersion, minorVersion, applicationName = 5, 10, "Slicer"

    def __init__(self, core: SlicerCore, testing: bool = False):
        self.core, self._testing = core, testing
        self.questions, self.answers, self.selected = [], [], []
        self.parent, self.widget, self.module = StandInModuleParent(), None, None
        self._saved, self._modules, self._rules = [], {}, []

    # -- what the module calls

    def processEvents(self):
        now = time.monotonic()
        for timer in list(_TIMERS):
            timer.fireIfDue(now)

    def testingEnabled(self):
        return self._testing

    def applicationLogic(self):
        return self.core.applicationLogic

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs):
        self.questions.append(text)
        return self.answers.pop(0) if self.answers else True

    def selectModule(self, name):
        """slicer.util.selectModule: the module manager exits the shown module, enters the other."""
        self.selected.append(name)
        if name == "SwinBOB":
            self.enterModule()
        elif self.parent.isEntered:
            self.exitModule()

    # -- the module manager

    def loadModule(self):
        """Import SwinBOB.py as Slicer does (from its file) and build its widget (setup())."""
        self.module = self._execModule()
        self._newWidget()
        return self.widget

    def enterModule(self):
        if self.widget is None:
            self.loadModule()
        if not self.parent.isEntered:
            self.parent.isEntered = True
            self.widget.enter()

    def exitModule(self):
        """A module switch: qSlicerScriptedLoadableModuleWidget::exit() clears isEntered, then calls exit()."""
        self.parent.isEntered = False
        self.widget.exit()

    def unloadModule(self):
        """moduleAboutToBeUnloaded (Slicer exits): the widget's cleanup()."""
        self.widget.cleanup()

    def reloadScriptedModule(self, moduleName):
        """slicer.util.reloadScriptedModule (v5.10): execute the module file anew, clean up the old
        widget, and let the representation make and set up a new one from the new code."""
        assert moduleName == "SwinBOB", moduleName
        self.module = self._execModule()
        self.widget.cleanup()
        self._newWidget()
        return self.module

    def runUntil(self, condition, timeout: float, what: str):
        """Let the application run (its timers fire) until ``condition()``."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            self.processEvents()
            time.sleep(0.05)

    def _execModule(self):
        spec = importlib.util.spec_from_file_location("SwinBOB", MODULE_DIR / "SwinBOB.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["SwinBOB"] = module
        spec.loader.exec_module(module)
        return module

    def _newWidget(self):
        import slicer

        self.widget = self.module.SwinBOBWidget(self.parent)
        self.widget.setup()
        self.parent._self = self.widget
        slicer.modules.SwinBOBWidget = self.widget
        if self.parent.isEntered:
            self.widget.enter()

    # -- install / uninstall

    def install(self) -> "StandInApplication":
        import slicer

        SLOT_ERRORS.clear()
        self._modules = {name: module for name, module in sys.modules.items()
                         if name == "SwinBOB" or name.split(".")[0] == "SwinBOBModule"}
        util = {"loadUI": lambda path: loadStandInUi(path)[0],
                "childWidgetVariables": lambda root: types.SimpleNamespace(**root.children),
                "confirmOkCancelDisplay": self.confirmOkCancelDisplay, "selectModule": self.selectModule,
                "reloadScriptedModule": self.reloadScriptedModule, "WaitCursor": contextlib.nullcontext}
        for name, value in util.items():
            self._patch(slicer.util, name, value)
        modules = types.SimpleNamespace(swinbob=types.SimpleNamespace(widgetRepresentation=lambda: self.parent))
        for name, value in (("app", self), ("modules", modules),
                            ("parameterNodeWrapper", standInParameterNodeWrapper()),
                            ("ScriptedLoadableModule", standInScriptedLoadableModule())):
            self._patch(slicer, name, value)
        for name, value in (("qt", standInQt()), ("slicer.parameterNodeWrapper", slicer.parameterNodeWrapper),
                            ("slicer.ScriptedLoadableModule", slicer.ScriptedLoadableModule)):
            self._patch(sys.modules, name, value)
        self._clearWrapperCache()
        self._registerConverterRules()
        return self

    def uninstall(self) -> None:
        while self._saved:
            target, name, value = self._saved.pop()
            setter = target.__setitem__ if isinstance(target, dict) else functools.partial(setattr, target)
            deleter = target.pop if isinstance(target, dict) else functools.partial(delattr, target)
            setter(name, value) if value is not _MISSING else deleter(name)
        for name in [n for n in sys.modules if n == "SwinBOB" or n.split(".")[0] == "SwinBOBModule"]:
            del sys.modules[name]
        sys.modules.update(self._modules)
        import slicer

        for rule in self._rules:
            slicer.vtkSegmentationConverterFactory.GetInstance().UnregisterConverterRule(rule)
        package = self._modules.get("SwinBOBModule")
        for name, value in list(vars(package).items()) if package is not None else ():
            if getattr(value, "__name__", None) == f"SwinBOBModule.{name}" and value.__name__ not in self._modules:
                delattr(package, name)  # built on the stand-in qt: a later import must load it anew
        self._clearWrapperCache()

    #: What the Segmentations module registers at startup (vtkSlicerSegmentationsModuleLogic::RegisterNodes):
    #: without them a segmentation has no closed surfaces for the 3D view.
    CONVERTER_RULES = ("vtkBinaryLabelmapToClosedSurfaceConversionRule",
                       "vtkClosedSurfaceToBinaryLabelmapConversionRule",
                       "vtkClosedSurfaceToFractionalLabelmapConversionRule",
                       "vtkFractionalLabelmapToClosedSurfaceConversionRule")

    def _registerConverterRules(self):
        import slicer

        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        self._rules = [] if factory.GetConverterRules() else [getattr(slicer, name)() for name in self.CONVERTER_RULES]
        for rule in self._rules:
            factory.RegisterConverterRule(rule)

    def _patch(self, target, name, value):
        if isinstance(target, dict):
            self._saved.append((target, name, target.get(name, _MISSING)))
            target[name] = value
        else:
            self._saved.append((target, name, getattr(target, name, _MISSING)))
            setattr(target, name, value)

    @staticmethod
    def _clearWrapperCache():
        parameters = sys.modules.get("SwinBOBModule.parameters")
        if parameters is not None:  # it remembers whether slicer.parameterNodeWrapper exists
            parameters.parameterNodeWrapperClass.cache_clear()


_MISSING = object()


@contextlib.contextmanager
def standInApplication(core: SlicerCore, testing: bool = False):
    """The stand-in application around ``core`` while the block runs."""
    app = StandInApplication(core, testing).install()
    try:
        yield app
    finally:
        app.uninstall()
