"""The Slicer module's Logic on a real MRML scene (slicer-core): the real MR sample in, a
segmentation node, an entropy volume and an organ table out; Slicer's own file readers and writers.

The test bodies live in SwinBOB/SwinBOBModule/selftests.py and also run inside Slicer (SwinBOBTest).
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)
from SwinBOBModule import jobs, nodes, selftests  # noqa: E402
from SwinBOBModule.logic import SwinBOBLogic  # noqa: E402
from SwinBOBModule.parameters import SegmentationOptions  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("slicer")


@pytest.fixture(scope="module")
def checkpoint(workdir):
    return selftests.make_tiny_checkpoint(workdir / "tiny.pt")


@pytest.fixture(scope="module")
def bounds(workdir):
    from SwinBOBLib.phantom import make_phantom

    phantoms = [make_phantom("tiny", seed) for seed in range(3)]
    return selftests.make_bounds(workdir / "bounds.json", [p.labels for p in phantoms], phantoms[0].spacing)


@pytest.fixture(scope="module")
def ctx(core, samples, checkpoint, workdir):
    volume = slicer_harness.load_volume(core.scene, samples / "example_mr_sm.nii.gz", "example_mr_sm")
    return selftests.TestContext(core.scene, SwinBOBLogic(), volume, checkpoint, workdir)


@pytest.fixture(scope="module")
def result(ctx, bounds):
    return ctx.logic.segment(ctx.inputNode, SegmentationOptions(checkpointPath=ctx.checkpointPath, boundsPath=bounds))


@pytest.fixture(autouse=True)
def views_restored(core):
    """Each test leaves the slice views as it found them: a test that loads another result (ETTA,
    the background run) would otherwise change what the views show for the tests after it, in
    whatever order they run."""
    composites = [core.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetItemAsObject(i)
                  for i in range(core.scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetNumberOfItems())]
    saved = [(c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), c.GetLabelVolumeID(), c.GetForegroundOpacity())
             for c in composites]
    yield
    for composite, (background, foreground, label, opacity) in zip(composites, saved):
        composite.SetBackgroundVolumeID(background)
        composite.SetForegroundVolumeID(foreground)
        composite.SetLabelVolumeID(label)
        composite.SetForegroundOpacity(opacity)


# ----------------------------------------------------------------------------- geometry


def test_volume_node_matches_the_file_read_by_the_library(ctx, samples):
    from SwinBOBLib import io

    image = nodes.imageFromVolumeNode(ctx.inputNode)
    reference = io.load_image(samples / "example_mr_sm.nii.gz")
    assert reference.orientation == image.orientation == "LPS"
    np.testing.assert_array_equal(image.array, reference.array)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)


def test_volume_roundtrip(ctx):
    selftests.check_volume_roundtrip(ctx)


def test_label_lands_at_its_ras_point(ctx):
    selftests.check_label_lands_at_its_ras_point(ctx)


def test_stacked_contrasts_must_share_a_grid(core):
    water = nodes.volumeNodeFromImage(_image(np.zeros((4, 5, 6), np.float32)), core.scene, "water")
    fat = nodes.volumeNodeFromImage(_image(np.ones((4, 5, 6), np.float32)), core.scene, "fat")
    stacked = nodes.imageFromVolumeNodes([water, fat])
    assert stacked.array.shape == (4, 5, 6, 2) and stacked.channel_names == ("water", "fat")
    other = nodes.volumeNodeFromImage(_image(np.ones((4, 5, 7), np.float32)), core.scene, "other")
    with pytest.raises(ValueError, match="not on the grid"):
        nodes.imageFromVolumeNodes([water, other])


def test_vector_volume_gets_dixon_channel_names(core):
    node = nodes.volumeNodeFromImage(_image(np.random.rand(4, 5, 6, 4).astype(np.float32)), core.scene, "dixon",
                                     "vtkMRMLVectorVolumeNode")
    image = nodes.imageFromVolumeNode(node)
    assert image.array.shape == (4, 5, 6, 4) and image.channel_names[0] == "water"
    node.SetAttribute(nodes.CHANNEL_NAMES_ATTRIBUTE, "a,b")
    with pytest.raises(ValueError, match="names 2 channels"):
        nodes.imageFromVolumeNode(node)


def _image(array):
    from SwinBOBLib.io import Image

    return Image(array, np.diag([2.0, 3.0, 4.0, 1.0]))


# ----------------------------------------------------------------------------- in-process segmentation


def test_segmentation_node(ctx, result):
    selftests.check_segmentation_node(ctx, result)


def test_entropy_volume(ctx, result):
    selftests.check_entropy_volume(ctx, result)


def test_organ_table(ctx, result):
    selftests.check_organ_table(ctx, result)


def test_solf_verdicts(ctx, result, bounds):
    selftests.check_solf_verdicts(ctx, result, bounds)


def test_slab_verdicts_match_solf_csv(ctx):
    from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS

    selftests.check_slab_verdicts_match_solf_csv(ctx, str(DEFAULT_BOUNDS))


def test_centre_on_structure(ctx, result):
    selftests.check_centre_on_structure(ctx, result)


def test_storage_roundtrip(ctx, result):
    selftests.check_storage_roundtrip(ctx, result)


def test_etta_reports_entropy_before_and_after(ctx):
    from SwinBOBLib.inference.etta import EttaConfig

    options = SegmentationOptions(checkpointPath=ctx.checkpointPath, etta=True, ettaSteps=1,
                                  structures="liver,spleen,kidney_left")
    cheap = EttaConfig(steps=1, patches=1, candidates=1)  # one patch: a few seconds on a CPU
    seen = []
    result = ctx.logic.segment(ctx.inputNode, options, ettaConfig=cheap, progress=lambda *event: seen.append(event))
    assert {stage for stage, _, _ in seen} == {"etta", "sliding_window"}
    assert seen[-1][0] == "sliding_window" and seen[-1][1] == seen[-1][2]
    assert result.stats["etta_before"] is not None and result.stats["etta_after"] is not None
    assert "ETTA" in result.entropySummary()
    names = {r["name"] for r in nodes.tableRows(result.tableNode)}
    assert names <= {"liver", "spleen", "kidney_left"}


# ----------------------------------------------------------------------------- errors the user sees


def test_missing_bundled_model_says_what_to_do(ctx, monkeypatch):
    import SwinBOBModule.logic as logic_module

    def missing(*parts):
        raise FileNotFoundError(parts)

    monkeypatch.setattr(logic_module, "resource_path", missing)
    with pytest.raises(FileNotFoundError, match="demo model .*Resources/Models/swinbob_demo.pt.*Choose a"):
        ctx.logic.segment(ctx.inputNode, SegmentationOptions())
    assert ctx.logic.boundsPath("") is None


@pytest.mark.parametrize("options, message", [
    (dict(checkpointPath="/no/such.pt"), "Checkpoint file not found: /no/such.pt"),
    (dict(device="tpu"), "device 'tpu'"),
    (dict(etta=True, ettaSteps=0), "ETTA steps must be at least 1"),
    (dict(boundsPath="/no/bounds.json"), "SOLF bounds file not found"),
])
def test_bad_options_are_refused_before_running(ctx, checkpoint, options, message):
    options = {"checkpointPath": checkpoint, **options}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ctx.logic.startSegmentation(ctx.inputNode, SegmentationOptions(**options), workdir=ctx.tmpdir / "refused")


def test_result_on_another_grid_is_refused(ctx):
    image = nodes.imageFromVolumeNode(ctx.inputNode)
    from SwinBOBLib.io import Image

    wrong = Image(np.zeros((3, 3, 3), np.uint8), image.affine)
    with pytest.raises(ValueError, match="does not match the input volume"):
        ctx.logic.loadResult(ctx.inputNode, wrong, wrong, {}, None)


def test_available_devices_name_the_gpu_and_its_memory():
    class Props:
        name, total_memory = "NVIDIA H100 80GB HBM3", 80 * 2**30

    class Cuda:
        is_available = staticmethod(lambda: True)
        device_count = staticmethod(lambda: 1)
        get_device_properties = staticmethod(lambda index: Props)

    class Torch:
        cuda = Cuda

    devices = SwinBOBLogic(torchModule=Torch).availableDevices()
    assert devices[0] == ("auto", "Auto (GPU 0: NVIDIA H100 80GB HBM3 (80.0 GB))")
    assert devices[1] == ("cuda:0", "GPU 0: NVIDIA H100 80GB HBM3 (80.0 GB)")
    assert devices[-1] == ("cpu", "CPU")
    assert SwinBOBLogic().availableDevices()[-1] == ("cpu", "CPU")


# ----------------------------------------------------------------------------- background process


def _segment_supports_progress_json() -> bool:
    result = subprocess.run([sys.executable, "-m", "SwinBOBLib", "segment", "--help"], capture_output=True, text=True)
    return result.returncode == 0 and "--progress-json" in result.stdout


def test_background_run_with_a_fake_child_loads_its_outputs(ctx, checkpoint, tmp_path):
    """The runner and the loader against a child that prints the documented events and writes the
    documented files (what `swinbob segment --progress-json -` does)."""
    script = tmp_path / "fake_segment.py"
    script.write_text(FAKE_SEGMENT)

    def factory(command, env=None):
        assert command[1:4] == ["-m", "SwinBOBLib", "segment"] and "--progress-json" in command
        return jobs.BackgroundJob([sys.executable, str(script), *command[4:]], env=env)

    logic = SwinBOBLogic(jobFactory=factory)
    run = logic.startSegmentation(ctx.inputNode, SegmentationOptions(checkpointPath=checkpoint),
                                  workdir=tmp_path / "run")
    status = run.job.wait(60)
    assert status.state == jobs.SUCCEEDED, (status, list(run.job.stderr))
    assert [e["event"] for e in run.job.events] == ["start", "progress", "progress", "case_done", "done"]
    result = logic.finishSegmentation(run, show=False)
    assert [r["name"] for r in nodes.tableRows(result.tableNode)] == ["liver"]
    assert result.stats["mean_entropy"] == pytest.approx(0.25)
    np.testing.assert_array_equal(nodes.volumeAffine(result.entropyNode), nodes.volumeAffine(ctx.inputNode))


FAKE_SEGMENT = r'''
import csv, json, sys
from pathlib import Path
import numpy as np
from SwinBOBLib import io
image, outdir = sys.argv[1], Path(sys.argv[sys.argv.index("-o") + 1])
def emit(**event):
    print(json.dumps(event), flush=True)
emit(event="start", cases=1)
picture = io.load_image(image)
labels = np.zeros(picture.spatial_shape, np.uint8); labels[10:20, 10:20, 5:10] = 5
emit(event="progress", stage="sliding_window", done=1, total=2, case="input")
io.save_labelmap(labels, picture, outdir / "labels.nii")
io.save_image(picture.with_array(np.full(picture.spatial_shape, 0.25, np.float32)), outdir / "entropy.nii")
with open(outdir / "organs.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ["index", "name", "voxels", "volume_ml", "mean_entropy", "normalized_volume",
                           "sphericity", "eccentricity"])
    w.writeheader(); w.writerow(dict(index=5, name="liver", voxels=500, volume_ml=13.5, mean_entropy=0.25,
                                     normalized_volume=0.01, sphericity=0.5, eccentricity=0.5))
    w.writerow(dict(index=1, name="spleen", voxels=0, volume_ml=0, mean_entropy="", normalized_volume="",
                    sphericity="", eccentricity=""))
(outdir / "report.json").write_text(json.dumps({"entropy": {"mean": 0.25}, "device": "cpu"}))
emit(event="progress", stage="sliding_window", done=2, total=2, case="input")
emit(event="case_done", case="input", outdir=str(outdir))
emit(event="done")
'''


SEGMENT_WITHOUT_PROGRESS_FLAG = r'''
import argparse, json, sys
from SwinBOBLib import segment
argv = sys.argv[1:]
at = argv.index("--progress-json"); del argv[at:at + 2]
parser = argparse.ArgumentParser(); segment.register(parser.add_subparsers())
print(json.dumps({"event": "start", "cases": 1}), flush=True)
status = segment.cmd_segment(parser.parse_args(["segment", *argv]))
print(json.dumps({"event": "done"}), flush=True)
sys.exit(status)
'''


@pytest.mark.skipif(_segment_supports_progress_json(), reason="covered by the real `swinbob segment` run below")
def test_background_run_loads_what_swinbob_segment_writes(ctx, tmp_path):
    """The loader against the files the library's own `segment` command writes (run in a child
    process through its argument parser; only the progress events are added by the wrapper)."""
    script = tmp_path / "segment_wrapper.py"
    script.write_text(SEGMENT_WITHOUT_PROGRESS_FLAG)

    def factory(command, env=None):
        return jobs.BackgroundJob([sys.executable, str(script), *command[4:]], env=env)

    run = SwinBOBLogic(jobFactory=factory).startSegmentation(
        ctx.inputNode, SegmentationOptions(checkpointPath=ctx.checkpointPath, structures="liver,spleen,kidney_left"),
        workdir=tmp_path / "run")
    status = run.job.wait(120)
    assert status.state == jobs.SUCCEEDED, (status, list(run.job.stderr))
    assert sorted(p.name for p in run.outdir.iterdir()) == ["entropy.nii", "labels.nii", "organs.csv", "report.json"]
    result = SwinBOBLogic().finishSegmentation(run, show=False)
    selftests.check_segmentation_node(ctx, result)
    selftests.check_organ_table(ctx, result)
    assert {r["name"] for r in nodes.tableRows(result.tableNode)} <= {"liver", "spleen", "kidney_left"}
    assert 0 < result.stats["mean_entropy"] <= 1 and result.stats["device"] == "cpu"
    np.testing.assert_array_equal(nodes.volumeAffine(result.entropyNode), nodes.volumeAffine(ctx.inputNode))


@pytest.mark.skipif(not _segment_supports_progress_json(),
                    reason="`swinbob segment` has no --progress-json option yet (the background path needs it)")
def test_background_run_of_swinbob_segment(ctx):
    """The self-test's background step; inside Slicer its wait processes the application's events
    (otherwise Slicer freezes until the job ends)."""
    ticks = []
    selftests.check_background_run(dataclasses.replace(ctx, processEvents=lambda: ticks.append(1)))
    assert ticks, "the wait for the job never let the application process its events"
