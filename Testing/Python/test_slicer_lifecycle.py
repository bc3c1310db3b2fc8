"""The module panel through what users do during a long run (issue 29): leaving the module,
closing the scene, exiting Slicer, cancelling, installing into a running torch.

The real widget (SwinBOB.py, SwinBOBModule/widget.py) runs on a slicer-core scene with real
`swinbob segment` background processes; what only the application provides (PythonQt's `qt`, the
.ui's widgets, the module manager's enter / exit / cleanup / Reload, the PyTorch extension,
confirmation dialogs) is stood in by `slicer_harness.StandInApplication`, as Slicer v5.10 behaves.
docs/slicer.md's "What happens when" table names these tests.
"""

import json
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)
from SwinBOBModule import dependencies, jobs, nodes, parameters, selftests  # noqa: E402

ERROR_STYLE = "color: #c00000"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return selftests.make_tiny_checkpoint(tmp_path_factory.mktemp("lifecycle") / "tiny.pt")


@pytest.fixture()
def app(core):
    """The stand-in application with SwinBOB loaded and shown, on an emptied scene; unloaded after
    the test (as at Slicer's exit), which ends any job still running."""
    core.scene.Clear(0)
    with slicer_harness.standInApplication(core) as app:
        app.enterModule()
        try:
            yield app
        finally:
            app.unloadModule()
    core.scene.Clear(0)


def _start(app, checkpoint, **settings):
    """Select the phantom and press Segment; returns the run the panel started."""
    widget = app.widget
    volume = selftests.phantom_volume(slicer.mrmlScene)[0]
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    for name, value in {"checkpointPath": checkpoint, **settings}.items():
        setattr(widget.panel.parameters, name, value)
    widget.ui.applyButton.click()
    run = widget.panel.run
    assert run is not None and not run.job.finished, widget.ui.statusLabel.text
    return run


def _wait(app, run, timeout=300.0):
    panel = app.widget.panel
    app.runUntil(lambda: run.job.finished and not panel.timer.isActive(), timeout, "the run to end")


def _count(scene, className):
    return scene.GetNodesByClass(className).GetNumberOfItems()


# ----------------------------------------------------------------------------- 1. module switch


def test_module_switch_during_a_run_still_loads_its_results(app, checkpoint, tmp_path):
    """Slicer calls exit() on every module switch; the run goes on and its results load fully:
    nodes, 3D surfaces, entropy summary, and a result that Save correction can save."""
    widget, ui = app.widget, app.widget.ui
    run = _start(app, checkpoint, show3D=True)
    slicer.util.selectModule("SegmentEditor")  # e.g. to look at another module while it runs
    assert widget.panel.parameters is None and not app.parent.isEntered
    _wait(app, run)
    assert not slicer_harness.SLOT_ERRORS, slicer_harness.SLOT_ERRORS[-1]
    assert ui.statusLabel.styleSheet != ERROR_STYLE, ui.statusLabel.text
    stored = parameters.wrapParameterNode(widget.logic.getParameterNode())
    result = widget.panel.result
    assert result is not None and stored.segmentation is result.segmentationNode
    closedSurface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    assert result.segmentationNode.GetSegmentation().ContainsRepresentation(closedSurface)
    assert ui.entropySummaryLabel.text.startswith("Mean entropy")
    assert not run.workdir.exists()
    ui.correctionDatasetPathLineEdit.currentPath = str(tmp_path / "ukbob_manual")
    ui.correctionCaseLineEdit.text = "case_0001"
    ui.correctionSaveButton.click()
    assert (tmp_path / "ukbob_manual" / "labelsTr" / "case_0001.nii.gz").is_file(), ui.statusLabel.text
    slicer.util.selectModule("SwinBOB")  # back: the panel shows the result it loaded meanwhile
    assert ui.organTableWidget.rowCount == len(nodes.tableRows(stored.organTable))


# ----------------------------------------------------------------------------- 2. scene close


def test_scene_close_during_a_run_cancels_it_and_loads_nothing(app, checkpoint):
    """File > Close Scene (the scene's StartCloseEvent) during a run: the job's processes end, its
    folder goes, and nothing is loaded into the new scene beside an input that is gone."""
    ui = app.widget.ui
    run = _start(app, checkpoint)
    app.runUntil(lambda: run.job.events or run.job.finished, 120, "the job to start")
    processes = run.job._tree()
    slicer.mrmlScene.Clear(0)  # what closing the scene does: StartCloseEvent, nodes removed, EndCloseEvent
    _wait(app, run, jobs.CANCEL_GRACE_S + 60)
    assert run.job.status.state == jobs.CANCELLED, run.job.status.message
    assert not [p.pid for p in processes if jobs._alive(p)], "processes of the job are left"
    assert not run.workdir.exists()
    for className in ("vtkMRMLSegmentationNode", "vtkMRMLTableNode", "vtkMRMLScalarVolumeNode"):
        assert _count(slicer.mrmlScene, className) == 0, f"a {className} was loaded into the new scene"
    assert "scene was closed" in ui.statusLabel.text and ui.statusLabel.styleSheet != ERROR_STYLE
    assert app.widget.panel.parameters is not None and app.widget.panel.parameters.segmentation is None
    assert not slicer_harness.SLOT_ERRORS, slicer_harness.SLOT_ERRORS[-1]


# ----------------------------------------------------------------------------- Slicer exit, Cancel


def test_slicer_exit_during_a_run_ends_its_processes(app, checkpoint):
    """Slicer's exit unloads the module (cleanup()): the job's whole process tree and its folder go."""
    run = _start(app, checkpoint, etta=True, ettaSteps=100)
    app.runUntil(lambda: run.job.events or run.job.finished, 120, "the job to start")
    processes = run.job._tree()
    app.unloadModule()
    assert run.job.status.state == jobs.CANCELLED
    assert not [p.pid for p in processes if jobs._alive(p)] and not run.workdir.exists()


def test_cancel_ends_the_run_and_the_panel_can_segment_again(app, checkpoint):
    ui = app.widget.ui
    run = _start(app, checkpoint, etta=True, ettaSteps=100)
    app.runUntil(lambda: run.job.events or run.job.finished, 120, "the job to start")
    ui.cancelButton.click()
    _wait(app, run, jobs.CANCEL_GRACE_S + 60)
    assert run.job.status.state == jobs.CANCELLED and ui.statusLabel.text == "Cancelled."
    assert ui.applyButton.enabled and not ui.cancelButton.enabled and not run.workdir.exists()


# ----------------------------------------------------------------------------- 3. torch upgrade


def _old_torch_metadata(folder):
    """An installed torch 2.1.2 as pip leaves it (a dist-info folder); its code stays the real one."""
    info = folder / "torch-2.1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.1.2\n", encoding="utf-8")
    return folder


class StandInPyTorchLogic:
    """PyTorchUtils.PyTorchUtilsLogic: installTorch ends with ``import torch`` (fepegar/SlicerPyTorch)."""

    calls: list = []

    def __init__(self, failure=None):
        self.failure = failure

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                     torchvisionVersionRequirement=None):
        self.calls.append(torchVersionRequirement)
        if self.failure is not None:
            raise self.failure
        import torch

        return torch


def test_torch_upgrade_is_refused_while_an_old_torch_is_loaded(tmp_path, monkeypatch):
    """A torch older than 2.3 that this process has imported is not replaced (its DLLs are locked on
    Windows): a message says to restart, and nothing is asked or installed."""
    import torch  # noqa: F401  (loaded, as by the panel's device list before this fix, or another module)

    monkeypatch.syspath_prepend(str(_old_torch_metadata(tmp_path)))
    assert dependencies.installedTorchVersion() == "2.1.2"
    questions, logic = [], StandInPyTorchLogic()
    logic.calls.clear()
    installer = dependencies.DependencyInstaller(confirm=lambda q: questions.append(q) or True,
                                                 torchLogicFactory=lambda: logic, log=lambda m: None)
    assert installer.torchTooOld() == "2.1.2" and not installer.torchUsable()
    with pytest.raises(dependencies.DependencyError, match="already loaded in this Slicer session.*Restart Slicer"):
        installer.ensure()
    assert not questions and not logic.calls


_PANEL_WITH_OLD_TORCH = """
import json, sys, types
sys.path[:0] = [{metadata!r}, {harness!r}]
import slicer, slicer_harness
calls = []
class Logic:
    def installTorch(self, **kwargs):
        calls.append(kwargs)
sys.modules["PyTorchUtils"] = types.SimpleNamespace(PyTorchUtilsLogic=Logic)
core = slicer_harness.start_slicer_core()
with slicer_harness.standInApplication(core) as app:
    app.enterModule()
    ui, out = app.widget.ui, {{"torch_after_build": "torch" in sys.modules}}
    out["devices"] = [ui.deviceComboBox.itemData(i) for i in range(ui.deviceComboBox.count)]
    import torch  # another module uses it now
    from SwinBOBModule import selftests
    ui.inputVolumeSelector.setCurrentNode(selftests.phantom_volume(slicer.mrmlScene)[0])
    ui.applyButton.click()
    out.update(status=ui.statusLabel.text, style=ui.statusLabel.styleSheet, installs=calls,
               questions=app.questions, run=app.widget.panel.run is not None, errors=slicer_harness.SLOT_ERRORS)
    app.unloadModule()
print("RESULT " + json.dumps(out))
"""


def test_torch_upgrade_panel_does_not_import_an_old_torch(tmp_path):
    """With torch 2.1.2 installed the panel is built without importing it (so Segment can still
    upgrade it), and once something else has loaded it Segment refuses with the message in the panel."""
    script = tmp_path / "panel.py"
    script.write_text(textwrap.dedent(_PANEL_WITH_OLD_TORCH).format(
        metadata=str(_old_torch_metadata(tmp_path / "site")), harness=str(slicer_harness.REPO / "Testing" / "Python")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=slicer_harness.REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["torch_after_build"] is False, "building the panel imported the old torch"
    assert out["devices"] == ["auto", "cuda", "cpu"]
    assert "already loaded in this Slicer session" in out["status"] and out["style"] == ERROR_STYLE
    assert not out["installs"] and not out["questions"] and not out["run"] and not out["errors"]


# ----------------------------------------------------------------------------- 4. pip keeps torch


def _wheel(folder, name, version, requires=()):
    """A minimal wheel (what pip reads of one: METADATA, WHEEL, RECORD)."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(f"{info}/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _pip(index):
    """slicer.util.pip_install as v5.10 runs it (a string split as a shell does, or a list of
    arguments; ``python -m pip install ARGS``; CalledProcessError on failure), against a local index
    and as a dry run: pip resolves for real and installs nothing."""
    def install(arguments):
        arguments = shlex.split(arguments) if isinstance(arguments, str) else list(arguments)
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(index),
                   "--disable-pip-version-check", *arguments]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        install.outputs.append(done.stdout + done.stderr)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    install.outputs = []
    return install


def test_pip_install_keeps_the_torch_the_pytorch_extension_chose(tmp_path, monkeypatch):
    """A package that caps torch (as MONAI 1.5.0 did at 2.6) would make pip replace the installed
    torch; held by a constraints file, pip refuses instead and the user reads why."""
    import torch

    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "swinbob_capped", "1.0", ["torch<=2.6"])
    _wheel(index, "torch", "2.6.0")
    pip = _pip(index)
    pip(["swinbob_capped"])  # what `pip_install("monai>=1.4 ...")` did: torch would be replaced
    assert "Would install swinbob_capped-1.0 torch-2.6.0" in pip.outputs[-1], pip.outputs[-1]
    monkeypatch.setattr(dependencies, "PIP_REQUIREMENTS", (("swinbob_capped", "swinbob_capped>=1.0"),))
    installer = dependencies.DependencyInstaller(confirm=lambda q: True, pipInstall=pip, log=lambda m: None)
    assert installer.torchVersion() == torch.__version__
    with pytest.raises(dependencies.DependencyError, match=rf"torch was held at {re.escape(torch.__version__)}"):
        installer.ensure()
    assert "Would install" not in pip.outputs[-1], pip.outputs[-1]


# ----------------------------------------------------------------------------- 5. jobs check dependencies


def _fresh_slicer_installer(app, torchLogic=None):
    """The panel's installer as on a fresh Slicer: torch and MONAI not installed."""
    return dependencies.DependencyInstaller(confirm=app.confirmOkCancelDisplay, log=app.widget.panel.showStatus,
                                            isImportable=lambda name: name not in ("torch", "monai"),
                                            torchLogicFactory=lambda: torchLogic)


@pytest.mark.parametrize("kind", [0, 1], ids=["train", "benchmark"])
def test_job_start_checks_the_dependencies_like_segment(app, kind, tmp_path):
    ui = app.widget.ui
    app.widget.panel.installer = _fresh_slicer_installer(app, StandInPyTorchLogic())
    app.answers.append(False)  # the user declines the installation
    ui.jobKindComboBox.setCurrentIndex(kind)
    ui.jobDatasetPathLineEdit.currentPath = str(tmp_path)
    ui.jobStartButton.click()
    assert len(app.questions) == 1 and "torch (through the PyTorch extension)" in app.questions[0]
    assert "declined" in ui.statusLabel.text and ui.statusLabel.styleSheet == ERROR_STYLE
    assert app.widget.panel.workflows.job is None, "the job started without torch"


# ----------------------------------------------------------------------------- 6. selectors


def test_selectors_offer_scans_and_entropy_maps_only(app, checkpoint):
    """Vector, tensor and label-map volumes derive from the scalar volume class: the entropy selector
    lists only the module's entropy maps, and the default input is a scan the input selector shows."""
    scene, ui = slicer.mrmlScene, app.widget.ui
    tensor = scene.AddNewNodeByClass("vtkMRMLDiffusionTensorVolumeNode", "dti")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    scan = selftests.phantom_volume(scene, name="scan")[0]
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "dixon")
    entropy = nodes.entropyVolumeFromImage(nodes.imageFromVolumeNode(scan), scene, "scan entropy")
    assert app.widget.logic.defaultInputVolume() is scan
    assert ui.entropyVolumeSelector.nodes() == [entropy]
    assert parameters.selectableNodes(scene, parameters.parameterNamed("entropyVolume")) == [entropy]
    assert tensor not in ui.inputVolumeSelector.nodes() and labelmap not in ui.inputVolumeSelector.nodes()
    assert {scan, vector} <= set(ui.inputVolumeSelector.nodes())
    with pytest.raises(ValueError, match="entropyVolume"):
        parameters.PlainParameterNode(app.widget.logic.getParameterNode()).entropyVolume = scan


# ----------------------------------------------------------------------------- 7. self-test


def test_waiting_for_a_job_lets_the_application_run(tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import time\ntime.sleep(0.5)\n")
    ticks = []
    status = jobs.BackgroundJob([sys.executable, str(script)]).wait(30, whileWaiting=lambda: ticks.append(1))
    assert status.state == jobs.SUCCEEDED and len(ticks) >= 3


def test_unattended_self_test_runs_cheap_tests_first_and_downloads_nothing(core, monkeypatch):
    """ctest runs SwinBOBTest through slicer.testing.runUnitTest (unittest's loader, `--testing`):
    on a build machine without torch & co. it installs nothing and skips what needs them."""
    import unittest

    installs = []
    monkeypatch.setattr(dependencies, "PIP_REQUIREMENTS", (*dependencies.PIP_REQUIREMENTS,
                                                           ("swinbob_not_installed", "swinbob_not_installed>=1")))
    core.scene.Clear(0)
    with slicer_harness.standInApplication(core, testing=True) as app:
        monkeypatch.setattr(slicer.util, "pip_install", installs.append)
        app._execModule()
        suite = unittest.TestLoader().loadTestsFromName("SwinBOB")
        names = [test._testMethodName for test in suite]
        result = unittest.TestResult()
        suite.run(result)
        if app.widget is not None:
            app.unloadModule()
    assert names == ["test_color_table", "test_module_panel", "test_segmentation_workflow", "test_panel"]
    assert not result.errors and not result.failures, (result.errors + result.failures)[0][1]
    assert [test._testMethodName for test, _reason in result.skipped] == ["test_segmentation_workflow", "test_panel"]
    assert not installs and not app.questions


# ----------------------------------------------------------------------------- 8. smaller


def test_reload_loads_the_edited_swinbobmodule(app):
    """Developer mode's Reload re-executes SwinBOB.py; the SwinBOBModule/ code must be new too."""
    old = {name: sys.modules[name] for name in ("SwinBOBModule.logic", "SwinBOBModule.widget")}
    app.widget.onReload()
    assert sys.modules["SwinBOBModule.logic"] is not old["SwinBOBModule.logic"]
    assert type(app.widget.panel) is sys.modules["SwinBOBModule.widget"].SwinBOBPanel
    assert type(app.widget.panel) is not old["SwinBOBModule.widget"].SwinBOBPanel
    assert app.widget.panel.parameters is not None  # the new widget is entered and bound


def test_import_error_after_installing_pytorch_is_shown_in_the_panel(app):
    """PyTorchUtils' installTorch ends with `import torch`; a DLL that fails to load is a message."""
    ui, panel = app.widget.ui, app.widget.panel
    failure = ImportError("DLL load failed while importing _C: The specified module could not be found.")
    panel.installer = _fresh_slicer_installer(app, StandInPyTorchLogic(failure))
    ui.inputVolumeSelector.setCurrentNode(selftests.phantom_volume(slicer.mrmlScene)[0])
    ui.applyButton.click()
    assert not slicer_harness.SLOT_ERRORS, slicer_harness.SLOT_ERRORS[-1]
    assert "DLL load failed" in ui.statusLabel.text and "Restart Slicer" in ui.statusLabel.text
    assert ui.statusLabel.styleSheet == ERROR_STYLE and panel.run is None


def _opacities(segmentation):
    display, segments = segmentation.GetDisplayNode(), segmentation.GetSegmentation()
    ids = [segments.GetNthSegmentID(i) for i in range(segments.GetNumberOfSegments())]
    return {display.GetSegmentOpacity2DFill(segmentId) for segmentId in ids}


def test_row_highlight_is_undone(app, checkpoint):
    """A row click dims the other segments; deselecting the row (Ctrl+click), another table, or
    leaving the module shows them all again."""
    from SwinBOBModule.logic import DIMMED_OPACITY

    widget, ui = app.widget, app.widget.ui
    volume = selftests.phantom_volume(slicer.mrmlScene)[0]
    result = widget.logic.segment(volume, parameters.SegmentationOptions(checkpointPath=checkpoint))
    widget.panel.parameters.segmentation = result.segmentationNode
    widget.panel.showTable(result.tableNode)
    for undo in (ui.organTableWidget.clearSelection, lambda: widget.panel.showTable(result.tableNode),
                 lambda: slicer.util.selectModule("Data")):
        slicer.util.selectModule("SwinBOB")
        widget.panel.parameters.segmentation = result.segmentationNode
        ui.organTableWidget.selectRow(0)
        assert _opacities(result.segmentationNode) == {1.0, DIMMED_OPACITY}, ui.statusLabel.text
        assert "Ctrl+click" in ui.statusLabel.text
        undo()
        assert _opacities(result.segmentationNode) == {1.0}
