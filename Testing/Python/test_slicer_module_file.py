"""SwinBOB/SwinBOB.py imported under slicer-core, with stand-ins for the few application classes
slicer-core lacks (slicer.ScriptedLoadableModule): the module's Logic is the SwinBOBModule logic
with Slicer's parameter node, and SwinBOBTest's workflow (a phantom, shared test bodies) runs here
just as it does in the application."""

import importlib
import sys
import types
import unittest

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402


class _Logic:
    """What SwinBOB uses of Slicer's ScriptedLoadableModuleLogic: a singleton parameter node."""

    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.replace("Logic", "")

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
        return node


class _Test(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        self.messages = getattr(self, "messages", []) + [message]


@pytest.fixture()
def module(monkeypatch):
    stand_in = types.ModuleType("slicer.ScriptedLoadableModule")
    stand_in.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {"__init__": lambda self, parent: None})
    stand_in.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    stand_in.ScriptedLoadableModuleLogic = _Logic
    stand_in.ScriptedLoadableModuleTest = _Test
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", stand_in)
    monkeypatch.syspath_prepend(str(slicer_harness.MODULE_DIR))
    core = slicer_harness.start_slicer_core()
    sys.modules.pop("SwinBOB", None)
    yield importlib.import_module("SwinBOB")
    sys.modules.pop("SwinBOB", None)
    core.close()


def test_module_logic_is_the_public_logic_with_a_parameter_node(module):
    from SwinBOBModule import logic, parameters

    instance = module.SwinBOBLogic()
    assert isinstance(instance, logic.SwinBOBLogic) and isinstance(instance, _Logic)
    params = parameters.wrapParameterNode(instance.getParameterNode())
    params.ettaSteps = 4
    assert parameters.wrapParameterNode(module.SwinBOBLogic().getParameterNode()).ettaSteps == 4
    assert module.resource_path("UI", "SwinBOB.ui").endswith("SwinBOB.ui")


def test_self_test_workflow_runs_on_the_phantom(module, monkeypatch):
    """SwinBOBTest.test_segmentation_workflow; its background step (a `swinbob segment` process,
    several seconds) is left to test_slicer_logic, which runs the same body on the MR sample."""
    from SwinBOBModule import selftests

    background = []
    monkeypatch.setattr(selftests, "check_background_run", background.append)
    test = module.SwinBOBTest()
    test.test_color_table()
    test.test_segmentation_workflow()
    assert test.messages[-1] == "Test passed"
    assert len(background) == 1 and background[0].inputNode.GetName() == "phantom"
