"""SwinBOB/SwinBOB.py imported under slicer-core, with the stand-ins of slicer_harness for what only
the application provides (slicer.ScriptedLoadableModule, slicer.app, ...): the module's Logic is the
SwinBOBModule logic with Slicer's parameter node, and SwinBOBTest's workflow (a phantom, shared test
bodies) runs here just as it does in the application."""

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402


@pytest.fixture()
def module():
    core = slicer_harness.start_slicer_core()
    with slicer_harness.standInApplication(core) as app:
        yield app._execModule()
    core.close()


def test_module_logic_is_the_public_logic_with_a_parameter_node(module):
    from SwinBOBModule import logic, parameters

    instance = module.SwinBOBLogic()
    assert isinstance(instance, logic.SwinBOBLogic)
    assert isinstance(instance, slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic)
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
