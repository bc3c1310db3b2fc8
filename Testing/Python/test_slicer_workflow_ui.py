"""The QC review, correction and jobs sections of Resources/UI/SwinBOB.ui against the code that
drives them (SwinBOB/SwinBOBModule/workflowpanels.py): every widget it uses exists with the class
whose methods it calls, and the sections load with Qt (PySide6, offscreen)."""

import ast
import os
import xml.etree.ElementTree as ET

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Qt's process-wide state (one QApplication) never meets slicer-core's VTK: a child pytest of its own (conftest).
pytestmark = pytest.mark.own_process
QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed")

import slicer_harness  # noqa: E402

UI = slicer_harness.REPO / "Resources" / "UI" / "SwinBOB.ui"
CODE = slicer_harness.REPO / "SwinBOB" / "SwinBOBModule" / "workflowpanels.py"
#: Widget class each prefix of name needs (by what the code calls on it).
CLASS_BY_SUFFIX = {"Button": "QPushButton", "ComboBox": "QComboBox", "PathLineEdit": "ctkPathLineEdit",
                   "TableWidget": "QTableWidget", "ProgressBar": "QProgressBar", "SpinBox": "QSpinBox",
                   "TextEdit": "QPlainTextEdit", "Label": "QLabel"}


def _used_names():
    names = set()
    for node in ast.walk(ast.parse(CODE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            names.add(node.attr)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ui":
            names.add(node.attr)
    return names


def test_every_widget_the_sections_use_exists_with_its_class():
    widgets = {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}
    names = _used_names()
    assert {"reviewOpenButton", "correctionSaveButton", "jobStopButton"} <= names
    missing = sorted(n for n in names if n not in widgets)
    assert not missing, f"workflowpanels.py uses widgets the .ui lacks: {missing}"
    for name in names:
        if name == "reviewCollapsibleButton":
            continue
        suffix = next((s for s in CLASS_BY_SUFFIX if name.endswith(s)), None)
        if suffix == "LineEdit" or suffix is None:
            assert widgets[name] in ("QLineEdit", "ctkPathLineEdit"), name
        else:
            assert widgets[name] == CLASS_BY_SUFFIX[suffix], f"{name}: {widgets[name]}"


def test_the_sections_load_with_qt():
    app, widget = slicer_harness.load_ui(UI)
    assert app is not None
    assert [widget.findChild(QtWidgets.QComboBox, "reviewStateFilterComboBox").itemText(i) for i in range(5)] == \
        ["any state", "pending", "accept", "reject", "correct"]
    assert widget.findChild(QtWidgets.QComboBox, "reviewSortComboBox").itemText(3) == "state"
    assert not widget.findChild(QtWidgets.QPushButton, "jobStopButton").isEnabled()
    assert widget.findChild(QtWidgets.QPlainTextEdit, "jobLogTextEdit").isReadOnly()
    # 0 = "from the config file / default", so the form can leave epochs and steps to the config
    for name in ("jobEpochsSpinBox", "jobMaxStepsSpinBox"):
        box = widget.findChild(QtWidgets.QSpinBox, name)
        assert box.minimum() == 0 and box.value() == 0 and box.specialValueText(), name
    assert widget.findChild(QtWidgets.QComboBox, "jobDeviceComboBox").count() == 0  # filled with the device list
