"""DICOM SEG, entropy Parametric Map and TID 1500 report (outputs.dicom_*): valid for dciodvfy, read
back voxel for voxel on the source grid (LPS- and RAS-stored sources, an oblique series), the entropy
within its quantisation, the report's values equal to the organ table; `swinbob segment
--output-type dicom` end to end with the tiny model and with the bundled demo model."""

import math

import numpy as np
import pydicom
import pytest
import tiny  # Testing/Python: the tiny model and scan the command-line tests share
from test_dicom_io import dciodvfy_errors, oblique_affine

from SwinBOBLib import io, labels
from SwinBOBLib.cli import main
from SwinBOBLib.outputs.dicom_common import NoDicomSourceError
from SwinBOBLib.outputs.dicom_pmap import build_parametric_map, read_entropy_nats
from SwinBOBLib.outputs.dicom_seg import build_segmentation, read_seg_labels
from SwinBOBLib.outputs.dicom_sr import build_report, read_report_table
from SwinBOBLib.outputs.organs import organ_rows
from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS
from SwinBOBLib.solf.bounds import load_bounds

REPORT = {"model": {"name": "unit-test model", "demo": False},
          "checkpoint": {"sha256": "0123456789abcdef" * 4, "metadata": {"out_channels": 72, "activation": "softmax"}}}
SEG, PMAP = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"
SR = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _source_uids(image) -> list[str]:
    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in image.metadata["dicom_files"]]


def _series_of(samples, tmp_path, scan: str, seg: str, scheme: str):
    """The sample ``scan`` as a DICOM series and its real label map in the UKBOB scheme."""
    io.save_image(io.load_image(samples / scan), tmp_path / "series")
    image = io.load_image(tmp_path / "series")
    ukbob = labels.remap(io.load_labelmap(samples / seg, scheme=scheme).array, scheme, "ukbob").astype(np.uint8)
    return image, ukbob


@pytest.mark.parametrize("scan, seg, scheme", [("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "total_mr"),
                                                ("example_ct_sm.nii.gz", "example_seg.nii.gz", "total")])
def test_seg_of_a_real_label_map_reads_back_voxel_for_voxel(samples, tmp_path, scan, seg, scheme):
    image, ukbob = _series_of(samples, tmp_path, scan, seg, scheme)
    dataset, present = build_segmentation(ukbob, image, "ukbob", REPORT)
    assert present == sorted(set(np.unique(ukbob).tolist()) - {0}) and len(present) > 5
    path = tmp_path / "seg.dcm"
    dataset.save_as(path)
    assert dciodvfy_errors(path) == []
    assert np.array_equal(read_seg_labels(path, _source_uids(image)), ukbob)
    back = pydicom.dcmread(path)
    liver = next(s for s in back.SegmentSequence if s.TrackingID == "liver")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentAlgorithmType == "AUTOMATIC" and liver.SegmentAlgorithmName == "unit-test model"
    assert liver.RecommendedDisplayCIELabValue
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == image.metadata["series_uid"]


def test_seg_and_parametric_map_of_an_oblique_series(tmp_path):
    io.save_image(io.Image(tiny.body_array((14, 12, 9)), oblique_affine()), tmp_path / "series")
    image = io.load_image(tmp_path / "series")
    labels_array = np.zeros(image.spatial_shape, np.uint8)
    labels_array[2:7, 3:9, 1:5], labels_array[8:12, 2:6, 4:8] = 5, 3  # liver, left kidney (left: modifier)
    entropy = np.random.default_rng(0).random(image.spatial_shape).astype(np.float32)
    seg, _ = build_segmentation(labels_array, image, "ukbob", REPORT)
    seg.save_as(tmp_path / "seg.dcm")
    pmap = build_parametric_map(entropy, image, REPORT)
    pmap.save_as(tmp_path / "pmap.dcm")
    for name in ("seg.dcm", "pmap.dcm"):
        assert dciodvfy_errors(tmp_path / name) == []
    assert np.array_equal(read_seg_labels(tmp_path / "seg.dcm", _source_uids(image)), labels_array)
    nats = read_entropy_nats(tmp_path / "pmap.dcm", _source_uids(image))
    assert np.max(np.abs(nats - entropy.astype(np.float64) * math.log(72))) <= math.log(72) / 65535 / 2 + 1e-12
    mapping = pydicom.dcmread(tmp_path / "pmap.dcm").SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "{nat}"
    assert float(mapping.RealWorldValueLastValueMapped) * float(mapping.RealWorldValueSlope) == pytest.approx(math.log(72))
    kidney = next(s for s in pydicom.dcmread(tmp_path / "seg.dcm").SegmentSequence if s.TrackingID == "kidney_left")
    assert kidney.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"


def test_report_gives_the_organ_table_and_solf_verdicts(samples, tmp_path):
    image, ukbob = _series_of(samples, tmp_path, "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "total_mr")
    entropy = np.random.default_rng(1).random(image.spatial_shape).astype(np.float32)
    seg, present = build_segmentation(ukbob, image, "ukbob", REPORT)
    rows = organ_rows(ukbob, entropy, image.spacing, "ukbob", present)
    sr = build_report(rows, seg, present, image, "ukbob", REPORT, load_bounds(DEFAULT_BOUNDS), "default_bounds.json",
                      ukbob)
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    table = read_report_table(tmp_path / "sr.dcm")
    assert list(table) == [r["name"] for r in rows]
    for number, row in enumerate(rows, start=1):
        back = table[row["name"]]
        assert back["segment_number"] == number
        for column in ("volume_ml", "mean_entropy", "normalized_volume", "sphericity", "eccentricity"):
            assert back[column] == pytest.approx(float(row[column]))
        assert back["verdict"] in ("plausible", "inaccurate", "not comparable", "not_judged")
    # A 60 mm slab against whole-body bounds: judged only on what compares, as solf.csv says.
    assert any(back["verdict"] == "not comparable" for back in table.values())
    texts = set(_text_values(pydicom.dcmread(tmp_path / "sr.dcm").ContentSequence))
    assert {"bounds default_bounds.json", "cohort N=60", "unit-test model"} <= texts  # which bounds, which model


def _text_values(sequence):
    for item in sequence:
        if "TextValue" in item:
            yield str(item.TextValue)
        yield from _text_values(item.get("ContentSequence") or [])


def test_a_nifti_image_has_no_source_instances(samples):
    image = io.load_image(samples / "example_mr_sm.nii.gz")
    with pytest.raises(NoDicomSourceError, match="needs a DICOM series as input"):
        build_segmentation(np.ones(image.spatial_shape, np.uint8), image, "ukbob", REPORT)


def _segment(*args) -> int:
    return main(["segment", *map(str, args), "--device", "cpu", "--quiet", "--no-preview"])


def test_segment_writes_seg_pmap_and_sr_that_dciodvfy_accepts(checkpoint, tmp_path):
    io.save_image(tiny.body(), tmp_path / "series")
    out = tmp_path / "out"
    assert _segment(tmp_path / "series", "-o", out, "--output-type", "dicom", "--checkpoint", checkpoint) == 0
    classes = {pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID: p for p in out.glob("*.dcm")}
    assert {SEG, PMAP} <= set(classes) and set(classes) & set(SR)
    for path in classes.values():
        assert dciodvfy_errors(path) == []
    seg = pydicom.dcmread(classes[SEG])
    assert seg.StudyInstanceUID == pydicom.dcmread(next((tmp_path / "series").iterdir())).StudyInstanceUID
    image = io.load_image(tmp_path / "series")
    assert np.array_equal(read_seg_labels(classes[SEG], _source_uids(image)),
                          io.load_labelmap(out / "labels.nii.gz").array)
    assert (out / "labels.nii.gz").exists() and (out / "report.json").exists()
    # a re-run replaces its own outputs, the DICOM objects included
    assert _segment(tmp_path / "series", "-o", out, "--output-type", "dicom", "--checkpoint", checkpoint) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["labels.nii.gz", "entropy.nii.gz", "organs.csv", "report.json", "labels_seg.dcm", "entropy_pmap.dcm",
         "organs_sr.dcm"])


def test_the_demo_model_says_demo_in_the_pacs_list(tmp_path):
    io.save_image(tiny.body(), tmp_path / "series")
    assert _segment(tmp_path / "series", "-o", tmp_path / "out", "--output-type", "dicom") == 0
    for name in ("labels_seg.dcm", "entropy_pmap.dcm", "organs_sr.dcm"):
        ds = pydicom.dcmread(tmp_path / "out" / name, stop_before_pixels=True)
        assert "DEMO" in ds.SeriesDescription, name
    seg = pydicom.dcmread(tmp_path / "out" / "labels_seg.dcm", stop_before_pixels=True)
    algorithm = seg.SegmentSequence[0]
    assert algorithm.SegmentAlgorithmName.startswith("DEMO ") and "sha256:" in str(seg.SegmentSequence[0])


def test_a_nifti_input_with_dicom_output_is_refused_before_anything(samples, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(samples / "example_mr_sm.nii.gz", "-o", out, "--output-type", "dicom",
                    "--checkpoint", checkpoint) == 1
    error = capsys.readouterr().err
    assert "example_mr_sm.nii.gz: --output-type dicom needs a DICOM series" in error and "swinbob convert" in error
    assert not out.exists()


def test_store_without_dicomweb_is_refused(tmp_path, capsys):
    io.save_image(tiny.body(), tmp_path / "series")
    assert _segment(tmp_path / "series", "-o", tmp_path / "out", "--output-type", "dicom", "--store") == 1
    assert "--store sends the results to the --dicomweb server" in capsys.readouterr().err
