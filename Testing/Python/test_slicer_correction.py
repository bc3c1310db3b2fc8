"""Manual correction (SwinBOB/SwinBOBModule/correction.py): a segmentation node edited like the
Segment Editor does (a segment removed, one painted, the order changed) saved as a UKBOB label map
in a dataset folder, voxel for voxel, on the source image's grid, with provenance and agreement."""

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)
from SwinBOBModule import correction, nodes  # noqa: E402

from SwinBOBLib import io as swinbob_io  # noqa: E402
from SwinBOBLib.io.datasets import load_dataset  # noqa: E402
from SwinBOBLib.labels import get_scheme  # noqa: E402


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from SwinBOBLib.phantom import write_cohort

    root = tmp_path_factory.mktemp("correction")
    write_cohort(root / "auto", n=1, size="tiny", seed=3)
    return root / "auto" / "imagesTr" / "case_0000.nii.gz", root / "auto" / "labelsTr" / "case_0000.nii.gz"


def _scene_from(core, image_path, label_path):
    image = swinbob_io.load_image(image_path)
    volume = nodes.volumeNodeFromImage(swinbob_io.Image(image.array[..., 0], image.affine), core.scene, "scan")
    labels = swinbob_io.load_labelmap(label_path)
    return volume, labels, nodes.segmentationFromLabelmap(labels, core.scene, "auto", volume)


def _paint(scene, segmentationNode, segmentId, mask, affine):
    """Replace a segment's voxels by ``mask`` (I, J, K), as the Segment Editor's effects do."""
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    node = nodes.volumeNodeFromImage(swinbob_io.Image(mask, affine), scene, "paint", "vtkMRMLLabelMapVolumeNode")
    try:
        oriented = logic.CreateOrientedImageDataFromVolumeNode(node)
        assert logic.SetBinaryLabelmapToSegment(oriented, segmentationNode, segmentId, logic.MODE_REPLACE,
                                                oriented.GetExtent())
    finally:
        nodes.removeNode(scene, node)


def test_a_corrected_segmentation_is_saved_voxel_for_voxel_in_ukbob_numbering(core, case, tmp_path):
    image_path, label_path = case
    volume, labels, segmentation = _scene_from(core, image_path, label_path)
    automatic = np.asarray(labels.array)
    scheme = get_scheme("ukbob")
    present = sorted(set(np.unique(automatic).tolist()) - {0})
    removed, painted = present[1], present[-1]
    expected = automatic.copy()
    expected[expected == removed] = 0
    box = np.zeros(expected.shape, bool)
    box[2:8, 2:8, 2:8] = True
    box &= expected == 0
    assert box.any()
    expected[box] = painted

    seg = segmentation.GetSegmentation()
    seg.RemoveSegment(nodes.segmentIdOfStructure(segmentation, removed))
    paintedId = nodes.segmentIdOfStructure(segmentation, painted)
    mask = (expected == painted).astype(np.uint8)
    _paint(core.scene, segmentation, paintedId, mask, labels.affine)
    seg.SetSegmentIndex(paintedId, 0)  # segment order no longer follows label values
    renamed = seg.GetNthSegment(3)  # a segment known only by its name (no tag), as if made by hand
    renamed.RemoveTag(nodes.LABEL_VALUE_TAG)

    dataset = tmp_path / "ukbob_manual"
    record = correction.saveCorrectionFromSegmentation(segmentation, volume, core.scene, dataset, "case_0000",
                                                       image_path, label_path, reviewer="tester")
    saved = swinbob_io.load_labelmap(dataset / "labelsTr" / "case_0000.nii.gz")
    source = swinbob_io.load_image(image_path)
    assert np.array_equal(saved.array, expected)
    assert np.allclose(saved.affine, source.affine, atol=1e-5)
    assert (dataset / "imagesTr" / "case_0000.nii.gz").read_bytes() == image_path.read_bytes()

    assert record["source_label_sha256"] == correction.sha256(label_path)
    assert record["reviewer"] == "tester" and record["time"]
    assert record["edited_structures"] == sorted([scheme.name_of(removed), scheme.name_of(painted)],
                                                 key=lambda n: scheme.lookup(n))
    rows = {row["label"]: row for row in record["agreement"]}
    assert rows[removed]["dice"] == 0.0 and rows[removed]["voxels_corrected"] == 0
    assert 0.0 < rows[painted]["dice"] < 1.0
    assert all(rows[v]["dice"] == 1.0 and rows[v]["hd95_mm"] == 0.0 for v in present if v not in (removed, painted))
    assert json.loads((dataset / "provenance" / "case_0000.json").read_text()) == record

    loaded = load_dataset(dataset)  # what swinbob train / benchmark read
    assert loaded.scheme == "ukbob" and len(loaded.cases) == 1
    assert loaded.cases[0].label.name == "case_0000.nii.gz"


def test_saving_again_replaces_the_case_and_keeps_others(case, tmp_path):
    image_path, label_path = case
    labels = swinbob_io.load_labelmap(label_path)
    dataset = tmp_path / "ds"
    for case_id in ("a", "b", "a"):
        record = correction.saveCorrection(labels, dataset, case_id, image_path)
    assert record["edited_structures"] == [] and record["agreement"] == [] and record["source_label"] == ""
    data = json.loads((dataset / "dataset.json").read_text())
    assert [e["label"] for e in data["training"]] == ["./labelsTr/b.nii.gz", "./labelsTr/a.nii.gz"]
    assert data["scheme"] == "ukbob" and data["numTraining"] == 2
    assert len(load_dataset(dataset).cases) == 2


def test_a_segment_that_is_no_ukbob_structure_is_refused(core, case, tmp_path):
    image_path, label_path = case
    volume, _labels, segmentation = _scene_from(core, image_path, label_path)
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    segment.RemoveTag(nodes.LABEL_VALUE_TAG)
    segment.SetName("my scribble")
    with pytest.raises(ValueError, match="my scribble"):
        correction.ukbobLabelmapFromSegmentation(segmentation, volume, core.scene)


def test_bad_inputs_are_refused(case, tmp_path):
    image_path, label_path = case
    labels = swinbob_io.load_labelmap(label_path)
    with pytest.raises(ValueError, match="case id"):
        correction.saveCorrection(labels, tmp_path, "../x", image_path)
    moved = labels.affine.copy()
    moved[0, 3] += 5.0
    shifted = swinbob_io.Image(labels.array, moved)
    with pytest.raises(ValueError, match="geometry"):
        correction.saveCorrection(shifted, tmp_path, "x", image_path)
    with pytest.raises(ValueError, match="grid"):
        correction.saveCorrection(swinbob_io.Image(labels.array[:-1], labels.affine), tmp_path, "x", image_path)


def test_agreement_of_known_shapes():
    a = np.zeros((10, 10, 10), np.uint8)
    b = a.copy()
    a[2:6, 2:6, 2:6] = 1
    b[2:6, 2:6, 3:7] = 1
    row, = correction.agreementRows(a, b, (1.0, 1.0, 2.0))
    assert row["dice"] == pytest.approx(2 * 48 / 128)
    assert row["hd95_mm"] == pytest.approx(2.0)
