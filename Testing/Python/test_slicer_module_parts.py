"""The Slicer module's parts that need no scene: the background job runner (against fake child
processes that print the documented JSON-lines events), the parameter node and its mapping onto
the library's configuration and command line, and the dependency installer's decisions."""

import argparse
import os
import sys
import time

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)
from SwinBOBModule import dependencies, jobs, parameters  # noqa: E402
from SwinBOBModule.parameters import SegmentationOptions  # noqa: E402


def _child(tmp_path, body: str):
    script = tmp_path / "child.py"
    script.write_text("import json, sys, time\ndef emit(**e):\n    print(json.dumps(e), flush=True)\n" + body)
    return [sys.executable, str(script)]


# ----------------------------------------------------------------------------- jobs


def test_job_reports_progress_and_success(tmp_path):
    command = _child(tmp_path, """
emit(event="start", cases=1)
print("a line that is not JSON", flush=True)
emit(event="progress", stage="etta", done=1, total=3, case="a")
emit(event="progress", stage="sliding_window", done=4, total=8, case="a")
emit(event="case_done", case="a", outdir="/out/a")
emit(event="done")
""")
    seen = []
    job = jobs.BackgroundJob(command, onEvent=seen.append)
    status = job.wait(30)
    assert status.state == jobs.SUCCEEDED and job.returncode == 0
    assert [e["event"] for e in seen] == ["start", "progress", "progress", "case_done", "done"]
    assert (status.stage, status.done, status.total, status.fraction) == ("sliding_window", 4, 8, 0.5)
    assert status.outdirs == ["/out/a"] and status.cases == 1
    assert list(job.log) == ["a line that is not JSON"]
    assert status.text.startswith("Finished in")


def test_job_status_text_while_running():
    status = jobs.JobStatus(stage="etta", done=2, total=3)
    assert status.text == "Adapting (ETTA) 2/3"
    assert jobs.JobStatus(stage="sliding_window", done=1, total=4).text == "Segmenting 1/4"
    assert jobs.JobStatus().text == "Starting..."


def test_job_error_event_fails_with_its_message(tmp_path):
    command = _child(tmp_path, """
emit(event="start", cases=1)
emit(event="error", message="scan.nii: 12 voxels are NaN")
sys.exit(1)
""")
    status = jobs.BackgroundJob(command).wait(30)
    assert status.state == jobs.FAILED and status.message == "scan.nii: 12 voxels are NaN"


def test_job_crash_fails_with_the_last_stderr_error(tmp_path):
    command = _child(tmp_path, 'raise ValueError("checkpoint.pt: not a Swin-BOB checkpoint")\n')
    job = jobs.BackgroundJob(command)
    status = job.wait(30)
    assert status.state == jobs.FAILED and job.returncode != 0
    assert status.message == "ValueError: checkpoint.pt: not a Swin-BOB checkpoint"


def test_cancel_terminates_and_poll_never_blocks(tmp_path):
    command = _child(tmp_path, """
emit(event="start", cases=1)
for i in range(600):
    emit(event="progress", stage="sliding_window", done=i, total=600, case="a")
    time.sleep(0.1)
""")
    job = jobs.BackgroundJob(command)
    started = time.monotonic()
    while not job.events:
        job.poll()
        assert time.monotonic() - started < 20
        time.sleep(0.02)
    t0 = time.monotonic()
    job.poll()
    assert time.monotonic() - t0 < 0.5 and job.status.state == jobs.RUNNING
    status = job.cancel(grace=5)
    assert status.state == jobs.CANCELLED and job.process.poll() is not None
    assert time.monotonic() - started < 20


def test_cancel_kills_a_child_that_ignores_terminate(tmp_path):
    command = _child(tmp_path, """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
emit(event="start", cases=1)
time.sleep(60)
""")
    job = jobs.BackgroundJob(command)
    while not job.events:
        job.poll()
        time.sleep(0.02)
    t0 = time.monotonic()
    assert job.cancel(grace=0.5).state == jobs.CANCELLED
    assert time.monotonic() - t0 < 10


def test_segment_command_and_environment(tmp_path):
    command = jobs.segmentCommand(tmp_path / "in.nii", tmp_path / "out", "model.pt", ["--fast"], python="py")
    assert command[:4] == ["py", "-m", "SwinBOBLib", "segment"]
    assert command[command.index("--progress-json") + 1] == "-"
    assert command[command.index("--checkpoint") + 1] == "model.pt" and command[-1] == "--fast"
    env = jobs.libraryEnvironment("/lib/root")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/lib/root" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONIOENCODING"] == "utf-8"
    assert jobs.pythonExecutable() == sys.executable


# ----------------------------------------------------------------------------- parameters


def test_plain_parameter_node_stores_typed_values():
    import slicer

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    params = parameters.PlainParameterNode(node)
    assert params.device == "auto" and params.ettaSteps == parameters.ETTA_STEPS and params.etta is False
    assert params.inputVolume is None
    params.etta, params.ettaSteps, params.ettaLearningRate, params.structures = True, 5, 5e-4, "liver"
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    params.inputVolume = volume
    again = parameters.PlainParameterNode(node)
    assert (again.etta, again.ettaSteps, again.ettaLearningRate, again.structures) == (True, 5, 5e-4, "liver")
    assert again.inputVolume is volume
    with pytest.raises(AttributeError, match="no SwinBOB parameter 'colour'"):
        again.colour = 1
    with pytest.raises(ValueError, match="expected a vtkMRMLTableNode"):
        again.organTable = volume
    options = SegmentationOptions.fromParameters(again)
    assert options.etta and options.ettaSteps == 5 and options.structures == "liver"
    assert parameters.wrapParameterNode(node).__class__ is parameters.PlainParameterNode  # no parameterNodeWrapper here


def test_options_map_onto_the_library_configs():
    from SwinBOBLib.inference import InferenceConfig
    from SwinBOBLib.inference.etta import EttaConfig

    options = SegmentationOptions(device="CUDA:1", fast=True, structures=" liver,spleen ", contrast="water",
                                  etta=True, ettaSteps=7, ettaLearningRate=0.01)
    config = options.inferenceConfig()
    assert (config.device, config.fast, config.etta, config.structures, config.contrast) == \
        ("cuda:1", True, True, "liver,spleen", "water")
    assert options.ettaConfig() == EttaConfig(steps=7, lr=0.01)
    defaults = SegmentationOptions()
    assert defaults.inferenceConfig().structures is None and defaults.inferenceConfig().contrast is None
    assert (defaults.ettaSteps, defaults.ettaLearningRate) == (EttaConfig.steps, EttaConfig.lr)
    assert (defaults.fast, defaults.etta) == (InferenceConfig.fast, InferenceConfig.etta)
    spec = {p.name: p.default for p in parameters.PARAMETERS}
    assert (spec["fast"], spec["etta"], spec["ettaSteps"], spec["ettaLearningRate"]) == \
        (InferenceConfig.fast, InferenceConfig.etta, EttaConfig.steps, EttaConfig.lr)


def test_module_code_imports_without_torch():
    """The widget binds parameters and checks dependencies before torch and MONAI are installed."""
    import subprocess

    code = ("import sys; sys.modules.update({m: None for m in ('torch', 'monai')}); "
            "sys.path.insert(0, 'SwinBOB'); "
            "import SwinBOBModule.parameters, SwinBOBModule.dependencies, SwinBOBModule.logic, "
            "SwinBOBModule.nodes, SwinBOBModule.jobs; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=slicer_harness.REPO)
    assert result.stdout.strip() == "ok", result.stderr


def test_command_line_options_parse_with_swinbob_segment():
    """Every option the module passes is one `swinbob segment` accepts, with the same meaning."""
    from SwinBOBLib.cli import segment

    parser = argparse.ArgumentParser()
    segment.register(parser.add_subparsers())
    known = {a for action in parser._subparsers._group_actions[0].choices["segment"]._actions
             for a in action.option_strings}
    options = SegmentationOptions(device="cpu", fast=True, structures="liver", contrast="0", etta=True,
                                  ettaSteps=2, ettaLearningRate=0.002)
    command = jobs.segmentCommand("in.nii", "out", "m.pt", options.commandLineOptions(), python="py")[3:]
    if "--progress-json" not in known:  # added by the CLI's progress option (see docs/slicer.md)
        at = command.index("--progress-json")
        del command[at:at + 2]
    args = parser.parse_args(command)
    inference, etta = segment._config_from_args(args)
    assert inference.device == "cpu" and inference.fast and inference.etta
    assert inference.structures == "liver" and inference.contrast == "0"
    assert (etta.steps, etta.lr) == (2, 0.002)
    assert args.no_preview and args.quiet


def test_every_option_field_is_a_parameter():
    from dataclasses import fields

    assert {f.name for f in fields(SegmentationOptions)} - {"seed"} <= set(parameters.PARAMETER_NAMES)
    assert len(set(parameters.PARAMETER_NAMES)) == len(parameters.PARAMETERS)
    with pytest.raises(ValueError, match="ETTA learning rate must be positive"):
        SegmentationOptions(etta=True, ettaLearningRate=0).validate()


# ----------------------------------------------------------------------------- dependencies


class FakeTorchLogic:
    def __init__(self, installed):
        self.installed, self.calls = installed, []

    def installTorch(self, askConfirmation, torchVersionRequirement):
        self.calls.append((askConfirmation, torchVersionRequirement))
        self.installed.add("torch")
        return object()


def _installer(installed, answer=True, torchLogic=None):
    questions, pip = [], []

    def pip_install(arguments):
        pip.append(arguments)
        installed.update(n for n, r in dependencies.PIP_REQUIREMENTS if r in arguments)

    installer = dependencies.DependencyInstaller(
        confirm=lambda q: questions.append(q) or answer, pipInstall=pip_install,
        torchLogicFactory=lambda: torchLogic, isImportable=lambda name: name in installed, log=lambda m: None)
    return installer, questions, pip


def test_nothing_is_asked_when_everything_is_there():
    installed = {"torch", *(n for n, _ in dependencies.PIP_REQUIREMENTS)}
    installer, questions, pip = _installer(installed)
    assert installer.ready() and installer.ensure() and not questions and not pip


def test_missing_packages_are_installed_after_one_question():
    installed = {"scipy", "yaml", "tqdm"}
    torch = FakeTorchLogic(installed)
    installer, questions, pip = _installer(installed, torchLogic=torch)
    assert installer.ensure()
    assert len(questions) == 1
    assert "torch (through the PyTorch extension)" in questions[0] and "monai>=1.4" in questions[0]
    assert torch.calls == [(False, dependencies.TORCH_REQUIREMENT)]
    assert len(pip) == 1 and pip[0][:-2] == ["monai>=1.4", "einops>=0.7", "connected-components-3d>=3.12",
                                             "nibabel>=5.0", "isal>=1.6", "numba>=0.59", "matplotlib>=3.7",
                                             "pillow>=10.1", "psutil>=5.9"]
    assert pip[0][-2] == "-c"  # torch held at the installed version (a constraints file, removed after)
    assert installer.ready()


def test_declining_or_no_pytorch_extension_raises_a_clear_error():
    installer, _, pip = _installer({"torch"}, answer=False)
    with pytest.raises(dependencies.DependencyError, match="declined.*monai"):
        installer.ensure()
    assert not pip
    installer, questions, _ = _installer(set(), torchLogic=None)
    with pytest.raises(dependencies.DependencyError, match="Install the 'PyTorch' extension"):
        installer.ensure()
    assert not questions


def test_pip_requirements_follow_pyproject(repo_root):
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    project = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    bundled_with_slicer = {"torch", "numpy", "simpleitk"}
    expected = dependencies.requirementNames(project["dependencies"]) - bundled_with_slicer
    assert dependencies.requirementNames([r for _, r in dependencies.PIP_REQUIREMENTS]) == expected


# ----------------------------------------------------------------------------- application conditions


def test_every_node_parameter_type_instantiates():
    """Slicer's node-combobox connector instantiates each annotated class to read its name
    (parameterNodeWrapper/util.py getNodeTypes); an abstract one raises and the panel never binds."""
    import slicer

    with pytest.raises(TypeError):
        slicer.vtkMRMLVolumeNode()  # what inputVolume was declared as: abstract
    nodeParameters = [p for p in parameters.PARAMETERS if p.isNode]
    assert {"inputVolume", "segmentation", "entropyVolume", "organTable"} <= {p.name for p in nodeParameters}
    for p in nodeParameters:
        names = (p.type,) if isinstance(p.type, str) else p.type
        assert names == p.nodeTypes
        for name in names:
            assert getattr(slicer, name)().GetClassName() == name, p.name
    assert set(parameters.PARAMETERS[0].nodeTypes) == {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"}


def test_plain_parameter_node_takes_vector_volumes_and_refuses_out_of_range_numbers():
    import slicer

    scene = slicer.vtkMRMLScene()
    params = parameters.PlainParameterNode(scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode")
    params.inputVolume = vector
    assert params.inputVolume is vector
    with pytest.raises(ValueError, match=r"expected a vtkMRMLScalarVolumeNode or vtkMRMLVectorVolumeNode"):
        params.inputVolume = scene.AddNewNodeByClass("vtkMRMLTableNode")
    with pytest.raises(ValueError, match=r"ettaSteps: expected a value in \[1, 100\], got 0"):
        params.ettaSteps = 0
    with pytest.raises(ValueError, match="entropyOpacity"):
        params.entropyOpacity = 1.5


def _failing_pip(arguments):
    import subprocess

    raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install", *arguments])


def test_a_failed_pip_install_is_a_message_not_a_traceback():
    installer = dependencies.DependencyInstaller(confirm=lambda q: True, pipInstall=_failing_pip,
                                                 isImportable=lambda name: name == "torch", log=lambda m: None,
                                                 torchVersion=lambda: "2.5.1")
    with pytest.raises(dependencies.DependencyError, match=r"Installing monai>=1.4 .* failed \(exit status 1 of "
                                                           r"`PythonSlicer -m pip install monai"):
        installer.ensure()


def test_a_failed_torch_install_is_a_message_not_a_traceback():
    import subprocess

    class Failing:
        def installTorch(self, askConfirmation, torchVersionRequirement):
            raise subprocess.CalledProcessError(2, "light_the_torch install torch>=2.3")

    installed = {n for n, _ in dependencies.PIP_REQUIREMENTS}
    installer = dependencies.DependencyInstaller(confirm=lambda q: True, torchLogicFactory=Failing,
                                                 isImportable=lambda name: name in installed, log=lambda m: None)
    with pytest.raises(dependencies.DependencyError, match="Installing torch>=2.3 failed .exit status 2"):
        installer.ensure()


def test_a_too_old_torch_is_offered_an_upgrade():
    installed = {"torch", *(n for n, _ in dependencies.PIP_REQUIREMENTS)}
    version = ["2.1.2+cu118"]

    class Upgrading:
        calls = []

        def installTorch(self, askConfirmation, torchVersionRequirement):
            self.calls.append(torchVersionRequirement)
            version[0] = "2.5.0"
            return object()

    questions = []
    installer = dependencies.DependencyInstaller(
        confirm=lambda q: questions.append(q) or True, pipInstall=lambda t: None, torchLogicFactory=Upgrading,
        isImportable=lambda name: name in installed, log=lambda m: None, torchVersion=lambda: version[0],
        torchLoaded=lambda: False)  # not imported yet in this session (else: test_slicer_lifecycle's torch_upgrade)
    assert installer.torchTooOld() == "2.1.2+cu118" and not installer.ready()
    assert installer.ensure()
    assert "upgrade from 2.1.2+cu118" in questions[0] and Upgrading.calls == [dependencies.TORCH_REQUIREMENT]
    assert installer.ready()
    assert dependencies.versionTuple("2.13.0") > dependencies.versionTuple("2.3")
    assert dependencies.TORCH_REQUIREMENT == ">=" + ".".join(map(str, dependencies.TORCH_MINIMUM))


def test_slicer_versions_before_5_10_are_refused_with_a_message():
    assert dependencies.slicerVersionProblem(5, 10) is None and dependencies.slicerVersionProblem(6, 0) is None
    message = dependencies.slicerVersionProblem(5, 8)
    assert "Slicer 5.10 or newer" in message and "5.8" in message
