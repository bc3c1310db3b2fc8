"""Resources/UI/SwinBOB.ui, checked with Qt (PySide6, offscreen): it loads, every widget the module
code refers to exists with a usable class, and every parameter binding names a real parameter.

Slicer's own widget classes (qMRMLNodeComboBox, ctkCollapsibleButton, ...) do not exist outside the
application; they are registered as placeholder widgets of the same name, and their Slicer-side
properties are checked against the XML.
"""

import ast
import os
import re
import xml.etree.ElementTree as ET

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Qt's process-wide state (one QApplication) never meets slicer-core's VTK: a child pytest of its own (conftest).
pytestmark = pytest.mark.own_process
QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)

UI = slicer_harness.REPO / "Resources" / "UI" / "SwinBOB.ui"
MODULE_CODE = [slicer_harness.REPO / "SwinBOB" / "SwinBOB.py",
               slicer_harness.REPO / "SwinBOB" / "SwinBOBModule" / "widget.py"]
#: Slicer/CTK classes the .ui may use, with the Qt class their placeholder derives from.
SLICER_CLASSES = slicer_harness.SLICER_WIDGET_CLASSES
#: What the widget code calls on each widget's class (a typo in the .ui class breaks these).
REQUIRED_CLASSES = {"applyButton": "QPushButton", "cancelButton": "QPushButton", "progressBar": "QProgressBar",
                    "statusLabel": "QLabel", "deviceComboBox": "QComboBox", "organTableWidget": "QTableWidget",
                    "entropySummaryLabel": "QLabel", "checkpointPathLineEdit": "ctkPathLineEdit",
                    "boundsPathLineEdit": "ctkPathLineEdit", "organTableSelector": "qMRMLNodeComboBox",
                    "ettaStepsSpinBox": "QSpinBox", "ettaLearningRateSpinBox": "QDoubleSpinBox",
                    "modelSummaryLabel": "QLabel", "boundsSummaryLabel": "QLabel",
                    "segmentFillOpacitySliderWidget": "ctkSliderWidget", "entropyOpacitySliderWidget": "ctkSliderWidget"}


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture(scope="module")
def tree():
    return ET.parse(UI)


@pytest.fixture(scope="module")
def loaded(app):
    return slicer_harness.load_ui(UI)[1]


def _widgets(tree):
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def _referenced_names():
    """``ui.<name>`` / ``self.ui.<name>`` attributes used by the module code."""
    names = set()
    for path in MODULE_CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
                owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                if owner == "ui":
                    names.add(node.attr)
    return names


def test_ui_loads_with_qt(loaded):
    assert loaded.objectName() == "SwinBOB"
    assert loaded.findChild(QtWidgets.QPushButton, "applyButton").text() == "Segment"
    assert loaded.findChild(QtWidgets.QPushButton, "cancelButton") is not None
    assert loaded.findChild(QtWidgets.QTableWidget, "organTableWidget").selectionBehavior() == \
        QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows


def test_every_widget_the_code_uses_exists(tree, loaded):
    names = _referenced_names()
    assert {"applyButton", "cancelButton", "organTableWidget"} <= names  # the scan finds the code's uses
    widgets = _widgets(tree)
    missing = sorted(n for n in names if n not in widgets)
    assert not missing, f"module code uses widgets the .ui lacks: {missing}"
    for name in names:
        assert loaded.findChild(QtWidgets.QWidget, name) is not None, name
    for name, cls in REQUIRED_CLASSES.items():
        assert widgets.get(name) == cls, f"{name}: class {widgets.get(name)}, the code needs {cls}"


def test_parameter_bindings_name_real_parameters(tree, loaded):
    from SwinBOBModule.parameters import PARAMETERS

    spec = {p.name: p for p in PARAMETERS}
    bound = {}
    for widget in tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    assert bound, "no widget is bound to the parameter node"
    unknown = {w: p for w, p in bound.items() if p not in spec}
    assert not unknown, f"bindings to parameters that do not exist: {unknown}"
    assert len(set(bound.values())) == len(bound), "a parameter is bound to two widgets"
    widgets = _widgets(tree)
    kinds = {bool: {"QCheckBox"}, int: {"QSpinBox"}, float: {"QDoubleSpinBox", "ctkSliderWidget"},
             str: {"QLineEdit", "QComboBox"}}
    for widget, name in bound.items():
        p = spec[name]
        allowed = {"qMRMLNodeComboBox"} if p.isNode else kinds[p.type]
        assert widgets[widget] in allowed, f"{widget} ({widgets[widget]}) cannot hold {name} ({p.type})"
        assert loaded.findChild(QtWidgets.QWidget, widget).property("SlicerParameterName") == name
    # the parameters the panel binds by hand (device list with descriptions, path pickers)
    by_hand = {"device", "checkpointPath", "boundsPath"}
    assert set(spec) - set(bound.values()) == by_hand
    code = MODULE_CODE[1].read_text(encoding="utf-8")
    for name in by_hand:
        assert re.search(rf'"{name}"|\.{name}\b', code), f"widget.py never sets {name}"


def test_node_selectors_accept_the_right_node_types(tree):
    from SwinBOBModule.parameters import PARAMETERS

    spec = {p.name: p for p in PARAMETERS}
    for widget in tree.iter("widget"):
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        props = {p.get("name"): p for p in widget.findall("property")}
        types = [s.text for s in props["nodeTypes"].iter("string")]
        parameter = spec[props["SlicerParameterName"].find("string").text]
        assert types and all(t.startswith("vtkMRML") for t in types)
        assert types == list(parameter.nodeTypes), (widget.get("name"), types)
        # widget.py sets showChildNodeTypes from the parameter; a value in the .ui must not contradict it
        if "showChildNodeTypes" in props:
            shown = props["showChildNodeTypes"].find("bool").text == "true"
            assert shown == parameter.childTypes, widget.get("name")
    receivers = {c.find("receiver").text for c in tree.iter("connection")
                 if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {w.get("name") for w in tree.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert receivers == selectors, "every node selector must receive the scene"


def test_custom_classes_are_declared(tree):
    declared = {c.find("class").text for c in tree.iter("customwidget")}
    used = {w.get("class") for w in tree.iter("widget")} - {n for n in dir(QtWidgets) if n.startswith("Q")}
    assert used <= declared <= set(SLICER_CLASSES), (used, declared)


def _numbers(widget):
    values = {}
    for prop in widget.findall("property"):
        child = prop.find("number") if prop.find("number") is not None else prop.find("double")
        if child is not None:
            values[prop.get("name")] = float(child.text)
    return values


def test_number_limits_of_the_ui_are_declared_on_the_parameters(tree, loaded):
    """Slicer's spin-box and slider connectors replace a widget's limits with the parameter's
    (``Minimum``/``Maximum``/``WithinRange``; unbounded without them, and a ctkSliderWidget bound
    to an unbounded float is refused), so every number parameter declares the .ui's limits."""
    from SwinBOBModule.parameters import PARAMETERS

    spec = {p.name: p for p in PARAMETERS}
    checked = 0
    for widget in tree.iter("widget"):
        props = {p.get("name"): p for p in widget.findall("property")}
        if "SlicerParameterName" not in props:
            continue
        parameter = spec[props["SlicerParameterName"].find("string").text]
        if parameter.type not in (int, float):
            continue
        numbers = _numbers(widget)
        assert parameter.minimum is not None and parameter.maximum is not None, parameter.name
        assert (numbers["minimum"], numbers["maximum"]) == (parameter.minimum, parameter.maximum), parameter.name
        assert parameter.minimum <= parameter.default <= parameter.maximum, parameter.name
        if parameter.type is float:
            assert numbers.get("decimals") == parameter.decimals, parameter.name
            assert 10 ** -parameter.decimals <= max(abs(parameter.minimum), 10 ** -parameter.decimals)
        if widget.get("class") in ("QSpinBox", "QDoubleSpinBox"):
            qwidget = loaded.findChild(getattr(QtWidgets, widget.get("class")), widget.get("name"))
            assert (qwidget.minimum(), qwidget.maximum()) == pytest.approx((parameter.minimum, parameter.maximum))
        checked += 1
    assert checked >= 4


def test_typed_wrapper_annotations_are_what_slicer_binds(monkeypatch):
    """The annotations handed to ``@parameterNodeWrapper``: node parameters are concrete classes,
    a union ends in None (what ``isNodeOrUnionOfNodes`` and the union serializer need), bounded
    numbers carry their range."""
    import typing

    import slicer
    from SwinBOBModule import parameters

    class Range:
        def __init__(self, low, high):
            self.low, self.high = low, high

    wrapper = type("wrapper", (), {"WithinRange": Range})
    for p in parameters.PARAMETERS:
        annotation = parameters.annotationOf(p, slicer, wrapper)
        if p.isNode:
            classes = typing.get_args(annotation) or (annotation,)
            if len(p.nodeTypes) > 1:
                assert typing.get_origin(annotation) is typing.Union and classes[-1] is type(None), p.name
                classes = classes[:-1]
            assert [c().GetClassName() for c in classes] == list(p.nodeTypes), p.name
        elif p.minimum is not None:
            base, *extras = typing.get_args(annotation)
            assert base is p.type and len(extras) == 1, p.name  # GUI-only annotations would be logged as unused
            assert isinstance(extras[0], Range) and (extras[0].low, extras[0].high) == (p.minimum, p.maximum)
        else:
            assert annotation is p.type
