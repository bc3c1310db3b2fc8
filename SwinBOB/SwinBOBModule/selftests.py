"""Test bodies shared by the pytest suite (slicer-core) and SwinBOBTest (inside Slicer).

Each ``check_*`` function takes a :class:`TestContext` and raises AssertionError on failure. pytest
builds the context on a scene from ``Testing/Python/slicer_harness.py`` with the real MR sample;
SwinBOBTest builds it on ``slicer.mrmlScene`` with a synthetic phantom (no download needed). Both
use a tiny model written by :func:`make_tiny_checkpoint`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import slicer

from SwinBOBLib import io as swinbob_io
from SwinBOBLib.labels import get_scheme

from . import nodes
from .samples import VERDICT_NOT_COMPARABLE
from .logic import DIMMED_OPACITY, VERDICT_INACCURATE, VERDICT_NO_BOUNDS, VERDICT_OK, VERDICT_ONE_OUT, SwinBOBLogic
from .parameters import SegmentationOptions

VERDICTS = {VERDICT_OK, VERDICT_ONE_OUT, VERDICT_INACCURATE, VERDICT_NO_BOUNDS, VERDICT_NOT_COMPARABLE}


@dataclass
class TestContext:
    scene: object
    logic: SwinBOBLogic
    inputNode: object
    checkpointPath: str
    tmpdir: Path
    #: Called while a check waits for a background job: inside Slicer ``slicer.app.processEvents``,
    #: so the application stays responsive (and its timers run) during the wait.
    processEvents: Callable[[], object] = field(default=lambda: None)


def unattended() -> bool:
    """Whether Slicer runs the self-test unattended: ctest starts it with ``--testing``
    (``slicer_add_python_unittest``). Nothing is then downloaded, and no dialog would be answered."""
    app = getattr(slicer, "app", None)
    return bool(app is not None and app.testingEnabled())


def make_tiny_checkpoint(path) -> str:
    """A 12-feature Swin-BOB with random weights that runs on a 15 mm grid (1-3 windows on a CPU)."""
    import torch

    from SwinBOBLib.models.loading import save_checkpoint
    from SwinBOBLib.models.metadata import CheckpointMetadata
    from SwinBOBLib.models.networks import build_model

    torch.manual_seed(0)  # the same weights every time, so results and pictures are reproducible
    model = build_model(feature_size=12, in_channels=1)
    save_checkpoint(path, model, CheckpointMetadata(feature_size=12, roi_size=32, target_spacing_mm=(15.0, 15.0, 15.0)))
    return str(path)


def make_bounds(path, labelmaps, spacing, epsilon: float = 2.0) -> str:
    """SOLF bounds fitted on label maps (e.g. phantoms), saved to ``path``."""
    from SwinBOBLib.solf import fit_bounds, organ_features, save_bounds

    cohort = {f"s{i}": organ_features(labels, spacing) for i, labels in enumerate(labelmaps)}
    save_bounds(fit_bounds(cohort, epsilon=epsilon, scheme="ukbob"), path)
    return str(path)


def phantom_volume(scene, seed: int = 0, name: str = "phantom"):
    """A synthetic neck-to-knee phantom (water contrast, 10 mm voxels) as a volume node, and its
    true label map as an Image."""
    from SwinBOBLib.phantom import make_phantom

    phantom = make_phantom("tiny", seed)
    water = swinbob_io.Image(np.ascontiguousarray(phantom.image[..., 0]), phantom.affine)
    return nodes.volumeNodeFromImage(water, scene, name), swinbob_io.Image(phantom.labels, phantom.affine)


# ----------------------------------------------------------------------------- geometry


def check_volume_roundtrip(ctx: TestContext) -> None:
    """Volume node -> Image -> volume node keeps voxels, IJKToRAS and dimensions exactly."""
    image = nodes.imageFromVolumeNode(ctx.inputNode)
    kji = slicer.util.arrayFromVolume(ctx.inputNode)
    assert image.array.shape == kji.shape[::-1], (image.array.shape, kji.shape)
    i, j, k = (n // 3 for n in image.spatial_shape)
    assert image.array[i, j, k] == kji[k, j, i]
    copy = nodes.volumeNodeFromImage(image, ctx.scene, "roundtrip")
    np.testing.assert_array_equal(nodes.volumeAffine(copy), nodes.volumeAffine(ctx.inputNode))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(copy), kji)
    nodes.removeNode(ctx.scene, copy)


def check_label_lands_at_its_ras_point(ctx: TestContext) -> None:
    """A left-kidney blob placed at a RAS point on the patient's left (x < 0) is found there after
    segmentation node import and label-map export: left stays left."""
    image = nodes.imageFromVolumeNode(ctx.inputNode)
    affine = image.affine
    shape = np.array(image.spatial_shape)
    nodes.labelColorNode(ctx.scene)  # made once per scene, kept
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctx.scene)  # the scene's singleton
    before = {ctx.scene.GetNthNode(i).GetID() for i in range(ctx.scene.GetNumberOfNodes())}
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    ras = (affine @ corners.T).T[:, :3]
    target = np.array([ras[:, 0].min() * 0.5 + ras[:, 0].max() * 0.5 - 0.25 * np.ptp(ras[:, 0]),
                       ras[:, 1].mean(), ras[:, 2].mean()])
    assert target[0] < ras[:, 0].mean()  # towards the patient's left of the volume's centre
    ijk = np.rint(np.linalg.inv(affine) @ np.append(target, 1.0))[:3].astype(int)
    labels = np.zeros(image.spatial_shape, np.uint8)
    left_kidney = get_scheme("ukbob").lookup("kidney_left")
    labels[tuple(slice(max(c - 1, 0), c + 2) for c in ijk)] = left_kidney
    segmentation = nodes.segmentationFromLabelmap(image.with_array(labels), ctx.scene, "blob", ctx.inputNode)
    exported = nodes.labelmapFromSegmentation(segmentation, ctx.inputNode, ctx.scene)
    np.testing.assert_array_equal(exported.affine, affine)
    np.testing.assert_array_equal(exported.array, labels)
    back = np.rint(nodes.rasToIjk(ctx.inputNode, affine[:3, :3] @ ijk + affine[:3, 3])).astype(int)
    assert exported.array[tuple(back)] == left_kidney
    center = np.array(segmentation.GetSegmentCenterRAS(nodes.segmentIdOfStructure(segmentation, "left kidney")))
    np.testing.assert_allclose(center, affine[:3, :3] @ ijk + affine[:3, 3], atol=1e-3)
    nodes.removeNode(ctx.scene, segmentation)
    left = {ctx.scene.GetNthNode(i).GetID() for i in range(ctx.scene.GetNumberOfNodes())} - before
    assert not left, f"temporary nodes left in the scene: {sorted(left)}"


# ----------------------------------------------------------------------------- results


def segment(ctx: TestContext, **options):
    return ctx.logic.segment(ctx.inputNode, SegmentationOptions(checkpointPath=ctx.checkpointPath, **options))


def check_segmentation_node(ctx: TestContext, result) -> None:
    """One segment per present structure with UKBOB names, colours and terminology; reference
    geometry = input; the exported label map equals the result on the input's grid."""
    scheme = get_scheme("ukbob")
    segmentation = result.segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() > 0
    names = set()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        structure = scheme[scheme.lookup(segment.GetName())]
        assert segment.GetName() == structure.name
        np.testing.assert_allclose(segment.GetColor(), [c / 255 for c in structure.color], atol=1e-6)
        terminology = segment.GetTerminology()
        assert f"{nodes.CODING_SCHEME}^{structure.name}^{structure.display_name}" in terminology, terminology
        assert "SCT^123037004^Anatomical Structure" in terminology
        names.add(structure.name)
    exported = nodes.labelmapFromSegmentation(result.segmentationNode, ctx.inputNode, ctx.scene)
    np.testing.assert_array_equal(exported.affine, nodes.volumeAffine(ctx.inputNode))
    present = {scheme.name_of(v) for v in np.unique(exported.array) if v}
    assert present == names, (present ^ names)
    reference = result.segmentationNode.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    assert reference is ctx.inputNode
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctx.scene)
    parent = shNode.GetItemParent(shNode.GetItemByDataNode(ctx.inputNode))
    for node in (result.segmentationNode, result.entropyNode, result.tableNode):
        assert shNode.GetItemParent(shNode.GetItemByDataNode(node)) == parent, node.GetName()
    display = result.segmentationNode.GetDisplayNode()
    assert display.GetVisibility() and display.GetVisibility2DFill()


def check_entropy_volume(ctx: TestContext, result) -> None:
    """Entropy on the input's grid (IJKToRAS, dimensions), values in [0, 1], coloured, shown as the
    foreground overlay of every slice view, with a legend."""
    entropy = result.entropyNode
    np.testing.assert_array_equal(nodes.volumeAffine(entropy), nodes.volumeAffine(ctx.inputNode))
    assert entropy.GetImageData().GetDimensions() == ctx.inputNode.GetImageData().GetDimensions()
    values = slicer.util.arrayFromVolume(entropy)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1 + 1e-5
    assert abs(float(values.mean()) - result.meanEntropy) < 1e-3
    assert entropy.GetDisplayNode().GetColorNode().GetName() == nodes.ENTROPY_COLOR_NODE_NAME
    composites = ctx.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        assert composite.GetForegroundVolumeID() == entropy.GetID()
        assert composite.GetBackgroundVolumeID() == ctx.inputNode.GetID()
        assert 0 < composite.GetForegroundOpacity() < 1
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(entropy)
    assert legend is not None and legend.GetVisibility()
    assert result.entropySummary().startswith("Mean entropy")


def check_organ_table(ctx: TestContext, result) -> None:
    """One row per present structure, volumes that add up, verdicts from the known set."""
    rows = nodes.tableRows(result.tableNode)
    segmentation = result.segmentationNode.GetSegmentation()
    assert sorted(r["name"] for r in rows) == sorted(
        segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    image = nodes.imageFromVolumeNode(ctx.inputNode)
    exported = nodes.labelmapFromSegmentation(result.segmentationNode, ctx.inputNode, ctx.scene)
    voxel_ml = float(np.prod(image.spacing)) / 1000
    for row in rows:
        expected = np.count_nonzero(exported.array == row["index"]) * voxel_ml
        assert abs(row["volume_ml"] - expected) <= 1e-3 * max(1.0, expected), row
        assert row["verdict"] in VERDICTS, row
        assert 0 <= row["mean_entropy"] <= 1
    assert result.tableNode.GetColumnUnitLabel("Volume") == "ml"


def check_solf_verdicts(ctx: TestContext, result, boundsPath: str) -> None:
    """Bounds that every structure fails give 'inaccurate' and list the features out of range."""
    from SwinBOBLib.solf import SOLF_FEATURES, Bounds, save_bounds

    rows = nodes.tableRows(result.tableNode)
    labels = [r["index"] for r in rows]
    impossible = Bounds({label: {f: (-2.0, -1.0) for f in SOLF_FEATURES} for label in labels}, scheme="ukbob",
                        n_samples=1, presence={label: 1.0 for label in labels})  # a complete bounds file
    path = str(ctx.tmpdir / "impossible_bounds.json")
    save_bounds(impossible, path)
    table = ctx.scene.AddNewNodeByClass("vtkMRMLTableNode")
    raw = [{**r, "voxels": 1} for r in rows]
    ctx.logic.fillOrganTable(table, raw, path)
    for row in nodes.tableRows(table):
        assert row["verdict"] == VERDICT_INACCURATE, row
        assert set(row["out_of_range"].split(",")) == set(SOLF_FEATURES)
    ctx.logic.fillOrganTable(table, raw, boundsPath)
    assert {r["verdict"] for r in nodes.tableRows(table)} <= VERDICTS
    messages = ctx.logic.fillOrganTable(table, raw, None)
    assert {r["verdict"] for r in nodes.tableRows(table)} == {VERDICT_NO_BOUNDS}
    assert "No SOLF bounds" in messages[0]
    nodes.removeNode(ctx.scene, table)


def check_slab_verdicts_match_solf_csv(ctx: TestContext, boundsPath: str) -> None:
    """A 60 mm slab of a phantom against whole-body bounds: the panel's table says what the demo's
    solf.csv says (structures the slab cuts 'not comparable', with the reason; none missing)."""
    from SwinBOBLib.outputs.organs import organ_rows
    from SwinBOBLib.phantom import make_labels
    from SwinBOBLib.solf.bounds import load_bounds
    from SwinBOBLib.workflows.demo import solf_rows

    labelmap, affine, _ = make_labels(size="small", seed=987)
    slab = swinbob_io.Image(np.ascontiguousarray(labelmap[:, :, 60:72]), affine)
    rows = organ_rows(slab.array, np.zeros(slab.array.shape, np.float32), slab.spacing, "ukbob")
    table = ctx.scene.AddNewNodeByClass("vtkMRMLTableNode")
    stats = {}
    ctx.logic.fillOrganTable(table, rows, boundsPath, stats, labels=slab)
    panel = {int(r["index"]): r["verdict"] for r in nodes.tableRows(table)}
    csv_rows = {r["index"]: r["verdict"] for r in solf_rows(slab.array, slab.spacing, load_bounds(boundsPath))}
    assert VERDICT_NOT_COMPARABLE in panel.values() and not stats["missing_structures"]
    for label, verdict in panel.items():
        assert (verdict == VERDICT_NOT_COMPARABLE) == (csv_rows[label] == "not comparable"), (label, verdict)
    reasons = [r["out_of_range"] for r in nodes.tableRows(table) if r["verdict"] == VERDICT_NOT_COMPARABLE]
    assert all("cut by the edge" in reason or "covers" in reason for reason in reasons)
    nodes.removeNode(ctx.scene, table)


def check_centre_on_structure(ctx: TestContext, result) -> None:
    """Selecting a structure centres the slice views on it and dims the other segments."""
    rows = nodes.tableRows(result.tableNode)
    name = max(rows, key=lambda r: r["volume_ml"])["name"]
    center = ctx.logic.centreOnStructure(result.segmentationNode, name)
    sliceNodes = ctx.scene.GetNodesByClass("vtkMRMLSliceNode")
    assert sliceNodes.GetNumberOfItems() > 0
    for i in range(sliceNodes.GetNumberOfItems()):
        sliceToRAS = sliceNodes.GetItemAsObject(i).GetSliceToRAS()
        origin = [sliceToRAS.GetElement(r, 3) for r in range(3)]
        np.testing.assert_allclose(origin, center, atol=1e-3)
    display = result.segmentationNode.GetDisplayNode()
    chosen = nodes.segmentIdOfStructure(result.segmentationNode, name)
    segmentation = result.segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        other = segmentation.GetNthSegmentID(index)
        assert display.GetSegmentOpacity2DFill(other) == (1.0 if other == chosen else DIMMED_OPACITY)
    ctx.logic.highlightStructure(result.segmentationNode, None)
    assert display.GetSegmentOpacity2DFill(segmentation.GetNthSegmentID(0)) == 1.0


def check_storage_roundtrip(ctx: TestContext, result) -> None:
    """The result nodes survive Slicer's own writers and readers (.seg.nrrd, .nrrd, .csv) with
    names, colours, terminology, geometry and values."""
    scene = ctx.scene
    written = {}
    for node, filename in ((result.segmentationNode, "result.seg.nrrd"), (result.entropyNode, "entropy.nrrd"),
                           (result.tableNode, "organs.csv")):
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(ctx.tmpdir / filename))
        assert storage.WriteData(node), f"writing {filename} failed"
        written[filename] = storage.GetClassName()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reread")
    storage = segmentation.CreateDefaultStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(ctx.tmpdir / "result.seg.nrrd"))
    assert storage.ReadData(segmentation)
    original = result.segmentationNode.GetSegmentation()
    reread = segmentation.GetSegmentation()
    assert reread.GetNumberOfSegments() == original.GetNumberOfSegments()
    for index in range(original.GetNumberOfSegments()):
        a, b = original.GetNthSegment(index), reread.GetNthSegment(index)
        assert (a.GetName(), a.GetTerminology()) == (b.GetName(), b.GetTerminology())
        np.testing.assert_allclose(a.GetColor(), b.GetColor(), atol=1e-6)
    entropy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reread entropy")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(ctx.tmpdir / "entropy.nrrd"))
    assert storage.ReadData(entropy)
    np.testing.assert_allclose(nodes.volumeAffine(entropy), nodes.volumeAffine(result.entropyNode), atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(entropy), slicer.util.arrayFromVolume(result.entropyNode))
    on_disk = swinbob_io.load_image(ctx.tmpdir / "entropy.nrrd")
    np.testing.assert_allclose(on_disk.affine, nodes.volumeAffine(ctx.inputNode), atol=1e-5)
    header = (ctx.tmpdir / "organs.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "Structure" in header and "SOLF verdict" in header
    for node in (segmentation, entropy):
        nodes.removeNode(scene, node)


def check_background_run(ctx: TestContext, timeout: float = 300.0) -> None:
    """The same run in a background ``swinbob segment`` process, loaded into nodes afterwards."""
    from . import jobs

    run = ctx.logic.startSegmentation(ctx.inputNode, SegmentationOptions(checkpointPath=ctx.checkpointPath),
                                      workdir=ctx.tmpdir / "background")
    status = run.job.wait(timeout, whileWaiting=ctx.processEvents)
    assert status.state == jobs.SUCCEEDED, f"{status.state}: {status.message}\n{os.linesep.join(run.job.stderr)}"
    assert any(e["event"] == "progress" for e in run.job.events)
    assert run.job.events[-1]["event"] == "done"
    result = ctx.logic.finishSegmentation(run)
    check_segmentation_node(ctx, result)
    check_entropy_volume(ctx, result)
    check_organ_table(ctx, result)


# ----------------------------------------------------------------------------- the real panel (application only)

#: The MR sample of a source checkout (Testing/Data is not installed with the extension).
SAMPLE = ("Testing", "Data", "totalsegmentator-samples", "example_mr_sm.nii.gz")


def load_sample_volume(scene, name: str = "example_mr_sm"):
    """The MR sample as a scalar volume node (Slicer's reader), or None outside a source checkout."""
    from . import RESOURCE_ROOTS

    for root in RESOURCE_ROOTS:
        path = Path(root, *SAMPLE)
        if path.is_file():
            return read_volume(scene, path, name)
    return None


def read_volume(scene, path, name: str):
    """A scalar volume node named ``name`` read from ``path`` through its storage node (Slicer's
    volume reader, as File > Add Data uses); OSError when the reader fails."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise OSError(f"{path}: Slicer's volume reader failed")
    node.CreateDefaultDisplayNodes()
    return node


def wait_for(condition, timeout: float, what: str, processEvents=None, interval: float = 0.1) -> None:
    """Let the application run (its timers poll the job) until ``condition()``; AssertionError
    after ``timeout`` seconds."""
    import time

    processEvents = processEvents or slicer.app.processEvents
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        processEvents()
        time.sleep(interval)


def check_panel_binds(panel) -> None:
    """The panel is bound to the module's parameter node, with no dependency installed: its
    selectors list what they should, and Segment waits for an input volume."""
    ui, parameters = panel.ui, panel.parameters
    assert parameters is not None and panel.guiTag is not None, "the panel is not bound to the parameter node"
    assert not ui.entropyVolumeSelector.showChildNodeTypes, "the entropy selector lists vector and tensor volumes"
    assert not ui.inputVolumeSelector.showChildNodeTypes, "the input selector lists label maps and tensor volumes"
    ui.inputVolumeSelector.setCurrentNode(None)
    slicer.app.processEvents()
    assert not ui.applyButton.enabled, "Segment is enabled without an input volume"
    volume = nodes.volumeNodeFromImage(swinbob_io.Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
                                       slicer.mrmlScene, "bind check")
    ui.inputVolumeSelector.setCurrentNode(volume)
    slicer.app.processEvents()
    assert parameters.inputVolume is volume, "the input selector is not bound to the parameter node"
    assert ui.applyButton.enabled, "Segment stays disabled with an input volume selected"


def check_panel_segments(panel, volume, timeout: float = 900.0, checkpointPath: str = "") -> None:
    """Drive the real panel: select ``volume``, press Segment (the bundled model, or
    ``checkpointPath``), wait, check the nodes it made, the table it shows, and that the working
    folder is gone."""
    from . import jobs

    ui, parameters = panel.ui, panel.parameters
    ui.inputVolumeSelector.setCurrentNode(volume)
    slicer.app.processEvents()
    assert parameters.inputVolume is volume, "the input selector is not bound to the parameter node"
    assert ui.applyButton.enabled, "Segment stays disabled with an input volume selected"
    parameters.checkpointPath = checkpointPath
    ui.applyButton.click()
    assert panel.run is not None, f"Segment started nothing: {ui.statusLabel.text}"
    run = panel.run
    wait_for(lambda: run.job.finished and not panel.timer.isActive(), timeout, "the segmentation")
    assert run.job.status.state == jobs.SUCCEEDED, f"{run.job.status.message} / {ui.statusLabel.text}"
    assert parameters.segmentation is not None and parameters.entropyVolume is not None, ui.statusLabel.text
    assert parameters.segmentation.GetSegmentation().GetNumberOfSegments() > 0
    assert ui.organTableWidget.rowCount == len(nodes.tableRows(parameters.organTable))
    assert ui.modelSummaryLabel.text, "no model summary shown"
    assert not run.workdir.exists(), f"working folder left: {run.workdir}"
    assert ui.applyButton.enabled and not ui.cancelButton.enabled


def check_panel_cancels(panel, timeout: float = 120.0) -> None:
    """A second run (slowed by many ETTA steps) cancelled from the panel ends with every process
    of its tree gone and its working folder removed."""
    from . import jobs

    ui, parameters = panel.ui, panel.parameters
    saved = (parameters.etta, parameters.ettaSteps)
    parameters.etta, parameters.ettaSteps = True, 100
    try:
        ui.applyButton.click()
        run = panel.run
        assert run is not None and not run.job.finished, ui.statusLabel.text
        wait_for(lambda: run.job.events or run.job.finished, timeout, "the job to start")
        processes = run.job._tree()
        assert ui.cancelButton.enabled
        ui.cancelButton.click()
        wait_for(lambda: run.job.finished and not panel.timer.isActive(), jobs.CANCEL_GRACE_S + timeout,
                 "the cancelled job to end")
    finally:
        parameters.etta, parameters.ettaSteps = saved
    assert run.job.status.state == jobs.CANCELLED, run.job.status.message
    assert not [p.pid for p in processes if jobs._alive(p)], "processes of the cancelled job are left"
    assert not run.workdir.exists(), f"working folder left: {run.workdir}"
    assert ui.applyButton.enabled and not ui.cancelButton.enabled
