"""SwinBOB: 3D Slicer scripted module for whole-body MRI segmentation, ETTA and SOLF.

This file holds the module metadata, the widget shell and the test entry point. The Slicer-side
code lives in SwinBOBModule/ (logic, MRML conversion, background jobs, parameters, dependencies,
panel, shared test bodies) and all computing in SwinBOBLib; both are installed beside this file
by the module's CMakeLists. See docs/slicer.md.
"""

import logging
import os
import sys
import unittest

import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_HERE = os.path.dirname(os.path.abspath(__file__))
# Installed extension: SwinBOBLib sits beside this file. Source checkout: one folder up.
for _candidate in (_HERE, os.path.dirname(_HERE)):
    if os.path.isdir(os.path.join(_candidate, "SwinBOBLib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)
        break

from SwinBOBModule import logic as _logic  # noqa: E402
from SwinBOBModule import resource_path  # noqa: E402,F401  (part of this file's API)
from SwinBOBModule.dependencies import slicerVersionProblem  # noqa: E402


def versionProblem():
    """Why this Slicer cannot run the module (older than 5.10), or None."""
    app = getattr(slicer, "app", None)
    if app is None:  # slicer-core without the application: nothing to check
        return None
    return slicerVersionProblem(app.majorVersion, app.minorVersion)


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
        problem = versionProblem()
        if problem:
            logging.error(problem)
            self.parent.helpText = f"<b>{problem}</b><br>" + self.parent.helpText
        try:
            import qt  # the application's PythonQt (absent under slicer-core, where no icon is needed)

            self.parent.icon = qt.QIcon(resource_path("Icons", "SwinBOB.png"))
        except (ImportError, FileNotFoundError):
            pass


class SwinBOBWidget(ScriptedLoadableModuleWidget):
    """Widget shell: loads the .ui, keeps the parameter node, hands the rest to the panel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.observations = VTKObservationMixin()
        self.logic = None
        self.panel = None
        self._parameterNode = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        problem = versionProblem()
        if problem:  # the panel relies on 5.10 APIs: say so instead of failing half-way
            import qt

            label = qt.QLabel(problem)
            label.wordWrap = True
            label.setStyleSheet("color: #c00000")
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        from SwinBOBModule.widget import SwinBOBPanel

        uiWidget = slicer.util.loadUI(resource_path("UI", "SwinBOB.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SwinBOBLogic()
        self.observations.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.observations.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.panel = SwinBOBPanel(self.ui, self.logic, None)
        self.initializeParameterNode()

    def cleanup(self):
        """Module unloaded (Slicer exits, or Reload): the job's processes and files go with it."""
        if self.panel is not None:
            self.panel.cleanup()
        self.observations.removeObservers()

    def enter(self):
        if self.panel is not None:
            self.initializeParameterNode()

    def exit(self):
        """Slicer calls this on every module switch. A run keeps going and still loads its results
        (the panel keeps the parameter node it was started from); only the binding is dropped."""
        if self.panel is not None:
            self.panel.restoreSegments()
            self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        if self.panel is not None:
            self.setParameterNode(None)
            self.panel.onSceneStartClose()  # a run's results would load beside an input that is gone

    def onSceneEndClose(self, caller, event):
        if self.panel is not None and self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self):
        """Developer mode's Reload: Slicer re-executes this file only, and its imports would get the
        SwinBOBModule/ already loaded; forgetting those makes the new widget use the edited code.
        (SwinBOBLib is not reloaded: torch and MONAI cannot be, and the job processes load it anew.)"""
        for name in [name for name in sys.modules if name == "SwinBOBModule" or name.startswith("SwinBOBModule.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self):
        from SwinBOBModule.parameters import wrapParameterNode

        parameters = wrapParameterNode(self.logic.getParameterNode())
        if parameters.inputVolume is None:
            parameters.inputVolume = self.logic.defaultInputVolume()
        self.setParameterNode(parameters)

    def setParameterNode(self, parameters):
        if self._parameterNode is not None:
            self.panel.disconnect()
            self.observations.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self.panel.updateFromParameters)
        self._parameterNode = parameters
        self.panel.parameters = parameters
        if parameters is not None:
            self.panel.connect()
            self.observations.addObserver(parameters.parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self.panel.updateFromParameters)
            self.panel.showTable()


class SwinBOBLogic(ScriptedLoadableModuleLogic, _logic.SwinBOBLogic):
    """Public API for other modules and scripts (see SwinBOBModule/logic.py); holds no GUI state.

        logic = slicer.util.getModuleLogic("SwinBOB")
        result = logic.segment(volumeNode)                  # bundled demo model
        logic.centreOnStructure(result.segmentationNode, "liver")
    """

    def __init__(self, **kwargs):
        ScriptedLoadableModuleLogic.__init__(self)
        _logic.SwinBOBLogic.__init__(self, **kwargs)

    def ukbobColorTableNode(self):
        """The UKBOB colour table as a node in the scene (loaded once from Resources)."""
        scene = slicer.mrmlScene
        existing = scene.GetFirstNodeByName("SwinBOB_UKBOB")
        if existing is not None:
            return existing
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "SwinBOB_UKBOB")
        storage = node.CreateDefaultStorageNode()  # Slicer's reader, also without the application
        scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(resource_path("ColorTables", "SwinBOB_UKBOB.ctbl"))
        if not storage.ReadData(node):
            raise OSError(f"cannot read the colour table {storage.GetFileName()}")
        node.SetName("SwinBOB_UKBOB")
        return node


class SwinBOBTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer (Developer mode > Reload and Test, or ctest: the CMakeLists
    registers it with slicer_add_python_unittest). The Logic bodies are shared with the pytest suite
    (SwinBOBModule/selftests.py) and run on a synthetic phantom; the panel tests drive the real widget.

    Unattended (ctest starts Slicer with ``--testing``) nothing is downloaded: the tests that need
    torch & co. are skipped when those are not installed, and the panel test segments the phantom
    with a tiny model (seconds). Reload and Test installs them after asking and segments the MR
    sample with the bundled model.
    """

    #: Cheap tests first; ``load_tests`` below gives unittest (ctest) the same order.
    ORDER = ("test_color_table", "test_module_panel", "test_segmentation_workflow", "test_panel")

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in self.ORDER:
            self.setUp()
            try:
                getattr(self, name)()
            except unittest.SkipTest as reason:  # runTest is not unittest's runner: say so, go on
                self.delayDisplay(f"{name} skipped: {reason}")

    def requireDependencies(self):
        """Install torch & co. after asking, or skip when unattended and they are missing."""
        from SwinBOBModule import selftests
        from SwinBOBModule.dependencies import DependencyInstaller

        installer = DependencyInstaller(confirm=slicer.util.confirmOkCancelDisplay)
        if not selftests.unattended():
            installer.ensure()
        elif not installer.ready():
            self.skipTest("torch, MONAI & co. are not installed, and an unattended run (ctest) downloads nothing")

    def test_color_table(self):
        node = SwinBOBLogic().ukbobColorTableNode()
        self.assertEqual(node.GetNumberOfColors(), 73)
        self.assertIn("kidney", node.GetColorName(3))

    def test_module_panel(self):
        """The panel builds and binds before anything is installed (a fresh Slicer)."""
        from SwinBOBModule import selftests

        selftests.check_panel_binds(self._panel())

    def test_segmentation_workflow(self):
        import pathlib
        import tempfile

        from SwinBOBModule import selftests

        self.requireDependencies()
        tmpdir = pathlib.Path(tempfile.mkdtemp(prefix="SwinBOBTest-"))
        volume, labels = selftests.phantom_volume(slicer.mrmlScene)
        ctx = selftests.TestContext(slicer.mrmlScene, SwinBOBLogic(), volume,
                                    selftests.make_tiny_checkpoint(tmpdir / "tiny.pt"), tmpdir,
                                    processEvents=slicer.app.processEvents)
        bounds = selftests.make_bounds(tmpdir / "bounds.json", [labels.array], labels.spacing)
        self.delayDisplay("Geometry")
        selftests.check_volume_roundtrip(ctx)
        selftests.check_label_lands_at_its_ras_point(ctx)
        self.delayDisplay("Segmenting in this process")
        result = selftests.segment(ctx, boundsPath=bounds)
        for check in (selftests.check_segmentation_node, selftests.check_entropy_volume,
                      selftests.check_organ_table, selftests.check_centre_on_structure,
                      selftests.check_storage_roundtrip):
            check(ctx, result)
        selftests.check_solf_verdicts(ctx, result, bounds)
        defaultBounds = os.path.join(os.path.dirname(__file__), "Resources", "SOLF", "default_bounds.json")
        if os.path.exists(defaultBounds):
            selftests.check_slab_verdicts_match_solf_csv(ctx, defaultBounds)
        self.delayDisplay("Segmenting in a background process")
        selftests.check_background_run(ctx)
        self.delayDisplay("Test passed")

    def test_panel(self):
        """The real panel: select a volume, Segment, wait, check the nodes, then Cancel a second run
        and check that its processes and working folder are gone."""
        import tempfile

        from SwinBOBModule import selftests

        self.requireDependencies()
        panel = self._panel()
        volume, checkpoint, timeout = None, "", 900.0
        if selftests.unattended():  # the phantom and a tiny model: seconds, not the demo model's minutes
            folder = tempfile.mkdtemp(prefix="SwinBOBTest-")
            checkpoint = selftests.make_tiny_checkpoint(os.path.join(folder, "tiny.pt"))
            timeout = 300.0
        else:
            volume = selftests.load_sample_volume(slicer.mrmlScene)
        if volume is None:  # an installed extension has no Testing/Data
            volume = selftests.phantom_volume(slicer.mrmlScene)[0]
        self.delayDisplay(f"Panel: Segment {volume.GetName()} with {checkpoint or 'the bundled model'}")
        selftests.check_panel_segments(panel, volume, timeout, checkpoint)
        self.delayDisplay("Panel: Cancel a second run")
        selftests.check_panel_cancels(panel)
        self.delayDisplay("Panel test passed")

    def _panel(self):
        slicer.util.selectModule("SwinBOB")
        widget = slicer.modules.swinbob.widgetRepresentation().self()
        self.assertIsNotNone(widget.panel, versionProblem())
        return widget.panel


def load_tests(loader, tests, pattern):
    """unittest's hook: ``slicer.testing.runUnitTest`` (ctest) loads this module by name and would
    otherwise run the test methods alphabetically, the long panel test before the cheap ones."""
    return unittest.TestSuite(SwinBOBTest(name) for name in SwinBOBTest.ORDER)
