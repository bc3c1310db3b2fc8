"""What the panel does in the application, through the Logic it calls (slicer-core, real nodes):
foreign tables refused, correction from the Segment result, results under the input's transform,
centred QC jumps and a replaced entropy overlay, structures looked up in the segmentation's own
scheme, working folders removed after failed or cancelled runs, what the panel says about the
model and the bounds, the display toggles, the training form's config and plan."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer  # noqa: E402
import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)
from SwinBOBModule import correction, jobs, launcher, nodes, review, selftests  # noqa: E402
from SwinBOBModule.logic import SwinBOBLogic  # noqa: E402
from SwinBOBModule.parameters import SegmentationOptions  # noqa: E402

from SwinBOBLib import io as swinbob_io  # noqa: E402
from SwinBOBLib.labels import get_scheme  # noqa: E402


@pytest.fixture(scope="module")
def volume(core, samples):
    return slicer_harness.load_volume(core.scene, samples / "example_mr_sm.nii.gz", "example_mr_sm")


def _blobs(volume, labels):
    """A label map on ``volume``'s grid with a 3-voxel cube per ``{label: (i, j, k)}``."""
    image = nodes.imageFromVolumeNode(volume)
    array = np.zeros(image.spatial_shape, np.uint8)
    for label, ijk in labels.items():
        array[tuple(slice(c - 1, c + 2) for c in ijk)] = label
    return image.with_array(array)


def _result(volume, labels=None, scheme="ukbob", boundsPath=None):
    """A result loaded as the panel loads one, without running a model."""
    image = nodes.imageFromVolumeNode(volume)
    shape = np.array(image.spatial_shape)
    labels = labels or {5: tuple(shape // 2), 1: tuple(shape // 3)}
    entropy = image.with_array(np.random.default_rng(0).random(image.spatial_shape).astype(np.float32) * 0.2)
    return SwinBOBLogic().loadResult(volume, _blobs(volume, labels), entropy, {}, boundsPath, scheme=scheme,
                                     show=False)


def _ras(volume, ijk):
    return (nodes.volumeAffine(volume) @ np.append(np.asarray(ijk, float), 1.0))[:3]


# ----------------------------------------------------------------------------- organ tables


def test_a_table_that_is_no_organ_table_is_refused_with_its_name(core, volume):
    result = _result(volume)
    assert nodes.isOrganTable(result.tableNode)
    benchmark = core.scene.AddNewNodeByClass("vtkMRMLTableNode", "per_class")
    import vtk

    column = vtk.vtkStringArray()
    column.SetName("mode")
    column.InsertNextValue("plain")
    benchmark.AddColumn(column)
    assert not nodes.isOrganTable(benchmark) and not nodes.isOrganTable(None)
    with pytest.raises(ValueError, match="table 'per_class' is not a SwinBOB organ table"):
        nodes.tableRows(benchmark)
    # an organ table saved as CSV and read back loses its attribute but keeps its columns
    copy = core.scene.AddNewNodeByClass("vtkMRMLTableNode", "reloaded")
    copy.Copy(result.tableNode)
    copy.RemoveAttribute(nodes.ROLE_ATTRIBUTE)
    assert nodes.isOrganTable(copy) and len(nodes.tableRows(copy)) == 2


# ----------------------------------------------------------------------------- transforms


def test_results_go_under_the_inputs_transform(core, volume):
    transform = core.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = nodes.arrayToMatrix(np.array([[1, 0, 0, 30.0], [0, 1, 0, -12.0], [0, 0, 1, 5.0], [0, 0, 0, 1]]))
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    try:
        result = _result(volume)
        assert result.segmentationNode.GetTransformNodeID() == transform.GetID()
        assert result.entropyNode.GetTransformNodeID() == transform.GetID()
        # the structure is shown where the input voxel it came from is shown (world RAS)
        shape = np.array(nodes.imageFromVolumeNode(volume).spatial_shape)
        world = [0.0, 0.0, 0.0]
        volume.TransformPointToWorld(_ras(volume, shape // 2), world)
        np.testing.assert_allclose(world, _ras(volume, shape // 2) + [30.0, -12.0, 5.0], atol=1e-3)
        centre = SwinBOBLogic().centreOnStructure(result.segmentationNode, "liver")
        np.testing.assert_allclose(centre, world, atol=1e-3)
    finally:
        volume.SetAndObserveTransformNodeID(None)
    assert _result(volume).segmentationNode.GetTransformNodeID() is None


# ----------------------------------------------------------------------------- schemes


def test_row_clicks_find_structures_in_the_segmentations_own_scheme(core, volume):
    """total_mr's esophagus is label 12 and its colon 15; in UKBOB esophagus is 15. A lookup in
    UKBOB would centre the views on the colon."""
    total_mr, ukbob = get_scheme("total_mr"), get_scheme("ukbob")
    assert total_mr.lookup("esophagus") == 12 and ukbob.lookup("esophagus") == 15
    shape = np.array(nodes.imageFromVolumeNode(volume).spatial_shape)
    at_12, at_15 = tuple(shape // 2), tuple(shape // 3)
    result = _result(volume, {12: at_12, 15: at_15}, scheme="total_mr")
    assert result.scheme == "total_mr" and nodes.segmentationScheme(result.segmentationNode) == "total_mr"
    names = sorted(r["name"] for r in nodes.tableRows(result.tableNode))
    assert names == ["colon", "esophagus"]
    centre = SwinBOBLogic().centreOnStructure(result.segmentationNode, "esophagus")
    np.testing.assert_allclose(centre, _ras(volume, at_12), atol=1e-3)
    centre = SwinBOBLogic().centreOnStructure(result.segmentationNode, 15)  # the panel clicks by label value
    np.testing.assert_allclose(centre, _ras(volume, at_15), atol=1e-3)


def test_bounds_of_another_scheme_give_no_verdicts(core, volume, repo_root):
    bounds = repo_root / "Resources" / "SOLF" / "default_bounds.json"
    assert json.loads(bounds.read_text())["scheme"] == "ukbob"
    shape = np.array(nodes.imageFromVolumeNode(volume).spatial_shape)
    result = _result(volume, {12: tuple(shape // 2)}, scheme="total_mr", boundsPath=str(bounds))
    assert {r["verdict"] for r in nodes.tableRows(result.tableNode)} == {"no bounds"}
    assert any("are for ukbob labels" in m and "total_mr" in m for m in result.messages)


# ----------------------------------------------------------------------------- correction


def test_a_segment_result_is_corrected_and_saved_without_a_source_file(core, volume, tmp_path):
    result = _result(volume)
    segmentation = result.segmentationNode.GetSegmentation()
    segmentation.RemoveSegment(nodes.segmentIdOfStructure(result.segmentationNode, "spleen"))  # the edit
    record = correction.saveCorrectionFromResult(result.segmentationNode, volume, core.scene, tmp_path / "manual",
                                                 "example_mr_sm", reviewer="ab", automatic=result.labels)
    image = swinbob_io.load_image(tmp_path / "manual" / record["image"])
    source = nodes.imageFromVolumeNode(volume)
    np.testing.assert_array_equal(image.array, source.array)
    np.testing.assert_allclose(image.affine, source.affine, atol=1e-4)
    labels = swinbob_io.load_labelmap(tmp_path / "manual" / record["label"]).array
    assert set(np.unique(labels)) == {0, 5}
    assert record["edited_structures"] == ["spleen"]
    assert {r["structure"]: r["dice"] for r in record["agreement"]} == {"spleen": 0.0, "liver": 1.0}
    assert json.loads((tmp_path / "manual" / "dataset.json").read_text())["numTraining"] == 1


@pytest.mark.parametrize("folder", ["", "  ", "."])
def test_an_empty_dataset_folder_is_refused(core, volume, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty folder would have written
    result = _result(volume)
    with pytest.raises(ValueError, match="choose a dataset folder"):
        correction.saveCorrectionFromResult(result.segmentationNode, volume, core.scene, folder, "case")
    with pytest.raises(ValueError, match="choose a dataset folder"):
        correction.datasetFolder(folder)
    assert not list(tmp_path.iterdir()), "something was written into the working folder"


def test_the_panel_refuses_a_relative_dataset_folder():
    with pytest.raises(ValueError, match="choose a full path"):
        correction.datasetFolder("manual")
    assert correction.datasetFolder("/data/manual") == correction.Path("/data/manual")


# ----------------------------------------------------------------------------- QC review


def test_qc_jumps_are_centred_and_the_overlay_is_replaced(core, volume, tmp_path):
    shape = np.array(nodes.imageFromVolumeNode(volume).spatial_shape)
    corner = (2, 2, 2)  # far from the views' centre
    labels = _blobs(volume, {3: corner})
    folder = tmp_path / "case_1"
    folder.mkdir()
    swinbob_io.save_labelmap(labels.array, labels, folder / "labels.nii.gz")
    entropy = labels.with_array(np.full(labels.spatial_shape, 0.3, np.float32))
    swinbob_io.save_image(entropy, folder / "entropy.nii.gz")
    previous = _result(volume)
    logic = SwinBOBLogic()
    logic.setEntropyOverlay(previous.entropyNode, True, 0.45)  # the last scan's overlay on top
    item = review.ReviewItem("case_1", 3, "kidney_left", "inaccurate", labelmap=str(folder / "labels.nii.gz"))
    _volume, segmentation = review.loadSampleNodes(core.scene, item)
    sampleEntropy = review.loadSampleEntropy(core.scene, item)
    assert sampleEntropy is not None and sampleEntropy.GetName() == "case_1 entropy"
    review.showSampleLayers(core.scene, volume, sampleEntropy)
    composites = core.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        assert composites.GetItemAsObject(i).GetForegroundVolumeID() == sampleEntropy.GetID()
    review.showSampleLayers(core.scene, volume, None)  # a sample without an entropy map: no overlay
    for i in range(composites.GetNumberOfItems()):
        assert composites.GetItemAsObject(i).GetForegroundVolumeID() is None
    centre = review.jumpToStructure(core.scene, segmentation, 3)
    np.testing.assert_allclose(centre, _ras(volume, corner), atol=1e-3)
    sliceNodes = core.scene.GetNodesByClass("vtkMRMLSliceNode")
    for i in range(sliceNodes.GetNumberOfItems()):
        sliceToRAS = sliceNodes.GetItemAsObject(i).GetSliceToRAS()
        origin = [sliceToRAS.GetElement(r, 3) for r in range(3)]
        np.testing.assert_allclose(origin, centre, atol=1e-3)  # the structure is in the middle of every view
    assert shape.min() > 6


def test_a_qc_item_without_a_label_map_says_so(core):
    item = review.ReviewItem("case_9", 3, "kidney_left", "inaccurate")
    with pytest.raises(ValueError, match="QC item case_9 .* names no label map"):
        review.loadSampleNodes(core.scene, item)
    assert review.loadSampleEntropy(core.scene, item) is None


# ----------------------------------------------------------------------------- working folders


def _failing(command, env=None):
    return jobs.BackgroundJob([sys.executable, "-c", "import sys; sys.exit('no GPU memory')"], env=env)


def _slow(command, env=None):
    return jobs.BackgroundJob([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def test_failed_and_cancelled_runs_remove_their_working_folder(core, volume, tmp_path):
    checkpoint = selftests.make_tiny_checkpoint(tmp_path / "tiny.pt")
    options = SegmentationOptions(checkpointPath=checkpoint)
    run = SwinBOBLogic(jobFactory=_failing).startSegmentation(volume, options)
    assert (run.workdir / "input.nii").exists()  # a full copy of the input
    run.job.wait(30)
    with pytest.raises(RuntimeError, match="Segmentation failed: no GPU memory"):
        SwinBOBLogic().finishSegmentation(run)
    assert not run.workdir.exists()
    logic = SwinBOBLogic(jobFactory=_slow)
    run = logic.startSegmentation(volume, options)
    with pytest.raises(RuntimeError, match="Segmentation running"):
        logic.finishSegmentation(run)  # still running: left alone
    assert run.workdir.exists() and not run.job.finished
    logic.discardRun(run)  # the panel's Cancel / cleanup
    assert run.job.status.state == jobs.CANCELLED and not run.workdir.exists()
    kept = SwinBOBLogic(jobFactory=_failing).startSegmentation(volume, options, workdir=tmp_path / "mine")
    kept.job.wait(30)
    SwinBOBLogic().discardRun(kept)
    assert (tmp_path / "mine" / "input.nii").exists()  # a folder the caller chose is kept


def test_a_job_that_cannot_start_leaves_no_working_folder(core, volume, tmp_path, monkeypatch):
    import tempfile

    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real(**kw)) or made[-1])

    def broken(command, env=None):
        raise OSError("PythonSlicer: permission denied")

    checkpoint = selftests.make_tiny_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(OSError, match="permission denied"):
        SwinBOBLogic(jobFactory=broken).startSegmentation(volume, SegmentationOptions(checkpointPath=checkpoint))
    assert made and not any(Path(p).exists() for p in made)


# ----------------------------------------------------------------------------- what is loaded


def _demo_checkpoint(path):
    import torch

    from SwinBOBLib.models.loading import save_checkpoint
    from SwinBOBLib.models.metadata import CheckpointMetadata
    from SwinBOBLib.models.networks import build_model

    torch.manual_seed(0)
    save_checkpoint(path, build_model(feature_size=12, in_channels=1),
                    CheckpointMetadata(feature_size=12, roi_size=32, name="tiny demo", demo=True,
                                       description="A test model trained on nothing."))
    return str(path)


def test_the_model_summary_says_a_demo_model_is_not_swin_bob(tmp_path, monkeypatch):
    from SwinBOBLib.inference import provenance as model

    path = _demo_checkpoint(tmp_path / "demo.pt")
    monkeypatch.delattr(model, "describe_checkpoint", raising=False)  # the metadata fallback
    summary = SwinBOBLogic().modelSummary(path)
    assert summary["demo"] and summary["name"] == "tiny demo"
    assert "Model: tiny demo" in summary["text"] and "DEMO MODEL" in summary["text"]
    assert "not Swin-BOB" in summary["text"] and "A test model trained on nothing." in summary["text"]
    calls = []

    def describe(checkpoint, **overrides):
        calls.append(checkpoint)
        return {"network": "swinunetr", "variant": "v2", "name": "described", "demo": False, "scheme": "ukbob"}

    monkeypatch.setattr(model, "describe_checkpoint", describe, raising=False)
    summary = SwinBOBLogic().modelSummary(path)
    assert calls == [path] and "Model: described" in summary["text"] and "DEMO" not in summary["text"]
    assert "swinunetr, v2, ukbob labels" in summary["text"]


def test_the_bounds_summary_names_the_cohort(tmp_path, repo_root):
    bounds = json.loads((repo_root / "Resources" / "SOLF" / "default_bounds.json").read_text())
    bounds["cohort"] = {"name": "synthetic phantoms", "n_samples": 60, "spacing_mm": [6.0, 6.0, 6.0],
                        "synthetic": True}
    (tmp_path / "with.json").write_text(json.dumps(bounds))
    text = SwinBOBLogic().boundsSummary(str(tmp_path / "with.json"))["text"]
    assert "synthetic phantoms, 60 samples, spacing 6 x 6 x 6 mm" in text and "synthetic cohort" in text
    bundled = SwinBOBLogic().boundsSummary("")
    assert bundled["path"].endswith("default_bounds.json") and "ukbob labels" in bundled["text"]
    assert f"{bounds['n_samples']} samples" in bundled["text"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not readable as JSON"):
        SwinBOBLogic().boundsSummary(str(tmp_path / "bad.json"))


def test_the_default_input_is_a_scan_not_a_label_map_or_an_entropy_map(core, volume):
    scene = slicer.vtkMRMLScene()
    logic = SwinBOBLogic(scene=scene)
    assert logic.defaultInputVolume() is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    entropy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "entropy")
    entropy.SetAttribute(nodes.ROLE_ATTRIBUTE, "entropy")
    assert logic.defaultInputVolume() is None
    dixon = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "dixon")
    assert logic.defaultInputVolume() is dixon
    scan = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "scan")
    assert logic.defaultInputVolume() is dixon  # the first scan in the scene
    scene.RemoveNode(dixon)
    assert logic.defaultInputVolume() is scan


# ----------------------------------------------------------------------------- display toggles


def test_fill_and_entropy_overlay_toggle_and_take_opacities(core, volume):
    result = _result(volume)
    logic = SwinBOBLogic()
    logic.setSegmentFill(result.segmentationNode, False, 0.3)
    display = result.segmentationNode.GetDisplayNode()
    assert not display.GetVisibility2DFill() and display.GetOpacity2DFill() == pytest.approx(0.3)
    assert display.GetVisibility()  # outlines stay
    logic.setEntropyOverlay(result.entropyNode, True, 0.8)
    composites = core.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        assert composite.GetForegroundVolumeID() == result.entropyNode.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.8)
    logic.setEntropyOverlay(result.entropyNode, False)
    for i in range(composites.GetNumberOfItems()):
        assert composites.GetItemAsObject(i).GetForegroundVolumeID() is None
    with pytest.raises(ValueError, match="opacity 1.5"):
        logic.setEntropyOverlay(result.entropyNode, True, 1.5)
    progress = []
    logic.showSurfaces(result.segmentationNode, progress.append)
    assert progress == ["Building 3D surfaces of 2 structures..."]  # told before the GUI is busy


# ----------------------------------------------------------------------------- training form


def test_the_training_form_passes_a_config_and_says_what_will_run(tmp_path, repo_root):
    dataset = tmp_path / "data"
    dataset.mkdir()
    config = repo_root / "Resources" / "Models" / "swinbob_demo.yaml"
    options = launcher.TrainingOptions(str(dataset), str(tmp_path / "run"), config=str(config))
    command = launcher.trainCommand(options, python="py")
    assert command[command.index("--config") + 1] == str(config)
    import yaml

    planned = yaml.safe_load(config.read_text())
    text = launcher.plannedTraining(options)
    assert f"{planned['epochs']} epochs (swinbob_demo.yaml)" in text
    assert f"{planned['max_steps']} steps at most (swinbob_demo.yaml)" in text
    text = launcher.plannedTraining(launcher.TrainingOptions(str(dataset), "r", config=str(config), epochs=5))
    assert "5 epochs (this form)" in text
    from SwinBOBLib.training import TrainConfig

    assert launcher.plannedTraining(launcher.TrainingOptions(str(dataset), "r")) == \
        f"Will run {TrainConfig.epochs} epochs (swinbob train's default)"
    with pytest.raises(ValueError, match="training config file not found"):
        launcher.trainCommand(launcher.TrainingOptions(str(dataset), "r", config=str(tmp_path / "none.yaml")))
