"""SwinBOB: 3D Slicer scripted module for whole-body MRI segmentation, ETTA and SOLF.

This file holds the module metadata, the widget shell and the test entry point; computing lives
in SwinBOBLib (installed beside this file by the module's CMakeLists). The segmentation panel,
background jobs and review workflows are added module by module (see docs/).
"""

import os
import sys

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

_HERE = os.path.dirname(os.path.abspath(__file__))
# Installed extension: SwinBOBLib sits beside this file. Source checkout: one folder up.
for _candidate in (_HERE, os.path.dirname(_HERE)):
    if os.path.isdir(os.path.join(_candidate, "SwinBOBLib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)
        break


def resource_path(*parts):
    """Path of a file under Resources/ in an installed extension or a source checkout."""
    for root in (_HERE, os.path.dirname(_HERE)):
        candidate = os.path.join(root, "Resources", *parts)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"SwinBOB resource not found: {os.path.join('Resources', *parts)}")


class SwinBOB(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SwinBOB"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SwinBOB developers"]
        self.parent.helpText = (
            "Segments 71 structures of neck-to-knee MRI (UKBOB / TotalVibeSegmentator labels) with "
            "Swin-BOB, shows where the model is unsure (entropy map), adapts the model to the scan "
            "(ETTA), and checks each organ's shape against cohort statistics (SOLF).")
        self.parent.acknowledgementText = (
            "Implements 'UKBOB: One Billion MRI Labeled Masks for Generalizable 3D Medical Image "
            "Segmentation'. Sample data: TotalSegmentator test references (Apache-2.0).")
        try:
            self.parent.icon = slicer.qt.QIcon(resource_path("Icons", "SwinBOB.png"))
        except (AttributeError, FileNotFoundError):
            pass


class SwinBOBWidget(ScriptedLoadableModuleWidget):
    """Widget shell: lists the UKBOB structures with their colours."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        from SwinBOBLib import __version__, labels

        info = qt.QLabel(f"SwinBOBLib {__version__}: UKBOB label scheme, {len(labels.get_scheme('ukbob'))} structures")
        self.layout.addWidget(info)
        table = qt.QTableWidget(0, 3)
        table.setHorizontalHeaderLabels(["Index", "Structure", "Group"])
        for index, name, display, group, _ in labels.scheme_rows("ukbob"):
            row = table.rowCount
            table.insertRow(row)
            for column, text in enumerate((str(index), display, group)):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        self.layout.addWidget(table)
        self.layout.addStretch(1)


class SwinBOBLogic(ScriptedLoadableModuleLogic):
    """Public API for other modules and scripts; holds no GUI state."""

    def ukbobColorTableNode(self):
        """The UKBOB colour table as a node in the scene (loaded once from Resources)."""
        existing = slicer.mrmlScene.GetFirstNodeByName("SwinBOB_UKBOB")
        if existing is not None:
            return existing
        return slicer.util.loadColorTable(resource_path("ColorTables", "SwinBOB_UKBOB.ctbl"))


class SwinBOBTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer (Developer mode > Reload and Test)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_color_table()

    def test_color_table(self):
        node = SwinBOBLogic().ukbobColorTableNode()
        self.assertEqual(node.GetNumberOfColors(), 73)
        self.assertIn("kidney", node.GetColorName(3))
