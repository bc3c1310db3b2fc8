"""Dixon series of a DICOM folder as the channels of a multi-channel model (io.dicom_channels):
real DICOM series written with the project's writer from a phantom's four Dixon contrasts, told
apart by Image Type (Siemens, Philips, GE values), by UK Biobank's Series Descriptions and by the
echo times of a two-echo series; missing, ambiguous, off-grid and cross-study contrasts refused
naming the series; `swinbob segment --output-type dicom` end to end with a tiny four-channel model."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import tiny  # Testing/Python: the tiny model and scan the command-line tests share
from test_dicom_io import dciodvfy_errors

from SwinBOBLib import io
from SwinBOBLib.cli import main
from SwinBOBLib.io.dicom_channels import description_contrast, echo_phase, image_type_contrast
from SwinBOBLib.io.dicom_write import SeriesHeader
from SwinBOBLib.models.loading import save_checkpoint
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import build_model
from SwinBOBLib.outputs.dicom_seg import read_seg_labels
from SwinBOBLib.phantom import make_phantom

DIXON = io.DIXON_CHANNELS  # water, fat, in_phase, opposed_phase
SIEMENS = {"water": "WATER", "fat": "FAT", "in_phase": "IN_PHASE", "opposed_phase": "OPP_PHASE"}
UKB = {"water": "Dixon_BH_17s_W", "fat": "Dixon_BH_17s_F", "in_phase": "Dixon_BH_17s_in",
       "opposed_phase": "Dixon_BH_17s_opp"}
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def phantom():
    """A phantom's four Dixon contrasts, ``(24, 20, 40, 4)`` float32 at 20 x 20 x 24 mm, RAS affine."""
    return make_phantom((24, 20, 40), seed=3)


class Exam:
    """One study (and frame of reference) whose series are written into one folder, as a scanner
    export puts them; each series' files are first written alone, then copied in with a prefix."""

    def __init__(self, root: Path):
        self.root, self.folder = root, root / "dicom"
        self.folder.mkdir(parents=True)
        self.study, self.frame = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()

    def add(self, name: str, array, affine, description: str, series_uid: str = "", **extra) -> str:
        """Write ``array`` as a series (attributes ``extra`` by keyword) into the folder; its UID."""
        uid = series_uid or pydicom.uid.generate_uid()
        io.write_dicom_series(array, affine, self.root / name,
                              SeriesHeader(description, self.study, uid, self.frame, extra=extra))
        for path in sorted((self.root / name).iterdir()):
            shutil.copy(path, self.folder / f"{name}_{path.name}")
        return uid

    def dixon(self, phantom, descriptions=None, image_types=None, prefix="", affine=None) -> dict[str, str]:
        """The phantom's four contrasts as four series; ``{contrast: series UID}``."""
        uids = {}
        for c, contrast in enumerate(DIXON):
            extra = {"ImageType": ["DERIVED", "PRIMARY", *image_types[contrast]]} if image_types else {}
            description = descriptions[contrast] if descriptions else f"series {c + 1}"
            uids[contrast] = self.add(f"{prefix}{contrast}", phantom.image[..., c],
                                      phantom.affine if affine is None else affine, description, **extra)
        return uids


def _step(array) -> float:
    """How far a float volume may come back from the writer (its uint16 rescale step)."""
    return float(array.max() - array.min()) / 65000 + 1e-6


def _assert_channels(image, phantom, order=DIXON):
    assert image.array.shape == (*phantom.shape, len(order))
    for c, contrast in enumerate(order):
        truth = phantom.image[..., DIXON.index(contrast)]
        assert np.max(np.abs(image.array[..., c] - truth)) <= _step(truth), contrast
    assert np.allclose(image.affine, phantom.affine, atol=1e-4)


# ----------------------------------------------------------------------------- the rules, as tables


@pytest.mark.parametrize("values, contrast", [
    (("DERIVED", "PRIMARY", "DIXON", "WATER"), "water"),
    (("DERIVED", "PRIMARY", "DIXON", "OPP_PHASE"), "opposed_phase"),
    (("ORIGINAL", "PRIMARY", "DIXON", "IN_PHASE"), "in_phase"), (("DERIVED", "PRIMARY", "W", "W"), "water"),
    (("DERIVED", "PRIMARY", "F", "F"), "fat"), (("ORIGINAL", "PRIMARY", "IP", "IP"), "in_phase"),
    (("ORIGINAL", "PRIMARY", "OP", "OP"), "opposed_phase"), (("DERIVED", "PRIMARY", "out phase"), "opposed_phase"),
    (("DERIVED", "PRIMARY", "DIXON", "FAT_FRACTION"), None), (("ORIGINAL", "PRIMARY", "M", "FFE"), None),
    (("DERIVED", "PRIMARY", "W", "F"), None), ((), None)])
def test_image_type_values_name_a_contrast(values, contrast):
    assert image_type_contrast(values) == contrast


@pytest.mark.parametrize("description, contrast", [
    ("Dixon_BH_17s_W", "water"), ("Dixon_noBH_F", "fat"), ("Dixon_BH_17s_in", "in_phase"),
    ("Dixon_noBH_opp", "opposed_phase"), ("t1_vibe_dixon_tra_opp", "opposed_phase"), ("WATER: Ax LAVA-Flex", "water"),
    ("InPhase: Ax LAVA-Flex", "in_phase"), ("OutPhase: Ax LAVA-Flex", "opposed_phase"), ("mDIXON IP", "in_phase"),
    ("T1 opposed phase", "opposed_phase"), ("out-of-phase", "opposed_phase"),
    ("Fat Fraction", None), ("Dixon_PDFF", None), ("R2* map", None), ("t1_vibe_dixon_tra", None),
    ("water and fat", None), ("localizer", None), ("", None)])
def test_series_description_words_name_a_contrast(description, contrast):
    assert description_contrast(description) == contrast


@pytest.mark.parametrize("echo_ms, tesla, contrast", [
    (2.39, 1.5, "opposed_phase"), (4.77, 1.5, "in_phase"), (1.23, 3.0, "opposed_phase"), (2.46, 3.0, "in_phase"),
    (3.69, 3.0, "opposed_phase"), (3.5, 1.5, None)])
def test_the_phase_of_an_echo_follows_its_time_and_the_field(echo_ms, tesla, contrast):
    found, cycles = echo_phase(echo_ms, tesla)
    assert found == contrast
    assert cycles == pytest.approx(echo_ms * 1e-3 * 3.4 * 42.577 * tesla)


def test_a_model_contrast_that_no_dicom_attribute_names_is_refused(tmp_path, phantom):
    exam = Exam(tmp_path)
    exam.dixon(phantom, image_types={c: [v] for c, v in SIEMENS.items()})
    with pytest.raises(ValueError, match=r"channel 't1' is not a Dixon contrast .*known: water, fat, in_phase"):
        io.load_image(exam.folder, contrasts=("water", "t1"))


# ----------------------------------------------------------------------------- matched folders


@pytest.mark.parametrize("vendor, image_types", [
    ("Siemens", {c: ["DIXON", v] for c, v in SIEMENS.items()}),
    ("Philips", {"water": ["W", "W"], "fat": ["F", "F"], "in_phase": ["IP", "IP"], "opposed_phase": ["OP", "OP"]}),
    ("GE", {"water": ["WATER"], "fat": ["FAT"], "in_phase": ["IN_PHASE"], "opposed_phase": ["OUT_PHASE"]})])
def test_four_dixon_series_are_matched_by_image_type(tmp_path, phantom, vendor, image_types):
    exam = Exam(tmp_path)
    uids = exam.dixon(phantom, image_types=image_types)
    image = io.load_image(exam.folder, contrasts=DIXON)
    _assert_channels(image, phantom)
    assert image.channel_names == DIXON
    records = image.metadata["dicom_channels"]
    assert [r["series_uid"] for r in records] == [uids[c] for c in DIXON]
    assert records[3]["matched_by"] == "Image Type DERIVED\\PRIMARY\\" + "\\".join(image_types["opposed_phase"])
    # the source instances of a DICOM SEG: the first channel's files, in slice order
    water = [str(p) for p in sorted(exam.folder.glob("water_*.dcm"))]
    assert image.metadata["dicom_files"] == water and image.metadata["series_uid"] == uids["water"]
    assert image.metadata["dicom_channel_files"][0] == water
    assert all(len(files) == phantom.shape[2] for files in image.metadata["dicom_channel_files"])


def test_uk_biobank_series_are_matched_by_description_in_the_model_order(tmp_path, phantom):
    exam = Exam(tmp_path)
    exam.dixon(phantom, descriptions=UKB)  # the writer's Image Type: DERIVED\SECONDARY\OTHER
    image = io.load_image(exam.folder, contrasts=("in-phase", "opp", "W", "F"))  # aliases, in another order
    _assert_channels(image, phantom, order=("in_phase", "opposed_phase", "water", "fat"))
    assert image.channel_names == ("in-phase", "opp", "W", "F")
    assert [r["matched_by"] for r in image.metadata["dicom_channels"]] == [
        "Series Description 'Dixon_BH_17s_in'", "Series Description 'Dixon_BH_17s_opp'",
        "Series Description 'Dixon_BH_17s_W'", "Series Description 'Dixon_BH_17s_F'"]
    assert image.metadata["dicom_files"] == [str(p) for p in sorted(exam.folder.glob("in_phase_*.dcm"))]


@pytest.mark.parametrize("tesla, opposed_ms, in_ms", [(1.5, 2.39, 4.77), (3.0, 1.23, 2.46), (None, 2.39, 4.77)])
def test_a_two_echo_series_is_split_by_echo_time(tmp_path, phantom, tesla, opposed_ms, in_ms):
    """One series holding both echoes at every position (the in-phase echo written first), and a
    water series beside it; without a field strength the shorter echo is opposed phase, with a warning."""
    exam = Exam(tmp_path)
    field = {"MagneticFieldStrength": tesla} if tesla else {}
    uid = exam.add("echo2", phantom.image[..., 2], phantom.affine, "t1_dixon_2echo", EchoTime=in_ms, EchoNumbers=2,
                   **field)
    exam.add("echo1", phantom.image[..., 3], phantom.affine, "t1_dixon_2echo", series_uid=uid, EchoTime=opposed_ms,
             EchoNumbers=1, **field)
    exam.add("water", phantom.image[..., 0], phantom.affine, "Dixon_W")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = io.load_image(exam.folder, contrasts=("water", "in_phase", "opposed_phase"))
    _assert_channels(image, phantom, order=("water", "in_phase", "opposed_phase"))
    in_phase, opposed = image.metadata["dicom_channels"][1:]
    assert in_phase["series_uid"] == opposed["series_uid"] == uid
    assert (in_phase["part"], opposed["part"]) == (f"echo 2 ({in_ms:g} ms)", f"echo 1 ({opposed_ms:g} ms)")
    assumed = [str(w.message) for w in caught if "shorter echo is taken as opposed phase" in str(w.message)]
    if tesla:
        assert in_phase["matched_by"].startswith(f"Echo Time {in_ms:g} ms at {tesla:g} T") and not assumed
    else:
        assert len(assumed) == 2 and uid in assumed[0]  # one per channel it concerns
    assert image.metadata["dicom_channel_files"][1] == [str(p) for p in sorted(exam.folder.glob("echo2_*.dcm"))]


def test_one_series_holding_all_four_contrasts_is_split_by_image_type(tmp_path, phantom):
    exam = Exam(tmp_path)
    uid = pydicom.uid.generate_uid()
    for c, contrast in enumerate(DIXON):
        exam.add(contrast, phantom.image[..., c], phantom.affine, "mDIXON", series_uid=uid,
                 ImageType=["DERIVED", "PRIMARY", SIEMENS[contrast]])
    image = io.load_image(exam.folder, contrasts=DIXON)
    _assert_channels(image, phantom)
    assert image.metadata["dicom_channels"][1]["part"] == f"(its {phantom.shape[2]} fat files)"


# ----------------------------------------------------------------------------- refused folders


def test_missing_contrasts_are_named_with_the_series_present(tmp_path, phantom):
    exam = Exam(tmp_path)
    water = exam.add("water", phantom.image[..., 0], phantom.affine, "Dixon_W",
                     ImageType=["DERIVED", "PRIMARY", "WATER"])
    exam.add("fat", phantom.image[..., 1], phantom.affine, "Dixon_F")
    other = exam.add("other", phantom.image[..., 2], phantom.affine, "localizer")
    with pytest.raises(io.ImageFormatError, match=rf"series {other} 'localizer' .* holds no Dixon contrast: neither"):
        io.load_image(exam.folder, contrasts=DIXON, series_uid=other)
    with pytest.raises(io.ImageFormatError) as refused:
        io.load_image(exam.folder, contrasts=DIXON)
    message = str(refused.value)
    assert message.startswith(f"DICOM folder {exam.folder}: the model wants water, fat, in_phase, opposed_phase; "
                              f"found water (series {water} 'Dixon_W', by Image Type DERIVED\\PRIMARY\\WATER), fat (")
    assert "; missing in_phase, opposed_phase. Series present: " in message
    assert "'localizer' MR, 40 slice(s) 20x24 (other_slice_0000.dcm) -> neither Image Type" in message
    assert "'Dixon_F' MR, 40 slice(s) 20x24 (fat_slice_0000.dcm) -> fat by Series Description 'Dixon_F'" in message


def test_two_stations_are_ambiguous_until_series_picks_one(tmp_path, phantom):
    """UK Biobank's exam holds each contrast once per station, all described alike."""
    exam = Exam(tmp_path)
    lower = phantom.affine.copy()
    lower[2, 3] -= phantom.shape[2] * phantom.spacing[2]
    upper = exam.dixon(phantom, descriptions=UKB, prefix="s1_")
    below = exam.dixon(phantom, descriptions=UKB, prefix="s2_", affine=lower)
    with pytest.raises(io.ImageFormatError, match=rf"2 series hold water: series ({upper['water']}|{below['water']}) "
                                                  r"'Dixon_BH_17s_W' MR, 40 slice\(s\) 20x24 "
                                                  r"\(s[12]_water_slice_0000.dcm\) \(by Series Description "
                                                  r"'Dixon_BH_17s_W'\) and series .*Choose one with --series UID"):
        io.load_image(exam.folder, contrasts=DIXON)
    image = io.load_image(exam.folder, contrasts=DIXON, series_uid=below["fat"])  # any series of the station
    assert [r["series_uid"] for r in image.metadata["dicom_channels"]] == [below[c] for c in DIXON]
    assert np.allclose(image.affine, lower, atol=1e-4)
    with pytest.raises(io.ImageFormatError, match="no DICOM series 1.2.3; found"):
        io.load_image(exam.folder, contrasts=DIXON, series_uid="1.2.3")


def test_channels_on_different_grids_or_studies_are_refused_naming_both(tmp_path, phantom):
    exam = Exam(tmp_path)
    water = exam.add("water", phantom.image[..., 0], phantom.affine, "Dixon_W")
    fat = exam.add("fat", phantom.image[:, :, :30, 1], phantom.affine, "Dixon_F")
    with pytest.raises(io.ImageFormatError, match=rf"water \(series {water} 'Dixon_W'\) and fat \(series {fat} "
                                                  r"'Dixon_F'\) are not on one grid \(shape \(24, 20, 40\) vs "
                                                  r"\(24, 20, 30\)\)"):
        io.load_image(exam.folder, contrasts=("water", "fat"))
    other = Exam(tmp_path / "other")
    shutil.rmtree(exam.root / "fat")
    for path in exam.folder.glob("fat_*"):
        path.unlink()
    elsewhere = other.add("fat", phantom.image[..., 1], phantom.affine, "Dixon_F")
    for path in other.folder.iterdir():
        shutil.copy(path, exam.folder / path.name)
    with pytest.raises(io.ImageFormatError, match=rf"and fat \(series {elsewhere} 'Dixon_F'\) belong to different "
                                                  rf"studies \({exam.study} and {other.study}\)"):
        io.load_image(exam.folder, contrasts=("water", "fat"))


# ----------------------------------------------------------------------------- swinbob segment


@pytest.fixture(scope="module")
def dixon_checkpoint(tmp_path_factory):
    """A seeded tiny Swin-BOB checkpoint taking UK Biobank's four Dixon contrasts."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_dixon.pt"
    save_checkpoint(path, build_model(feature_size=12, in_channels=4),
                    CheckpointMetadata(feature_size=12, roi_size=32, in_channels=4, contrasts=DIXON))
    return path


def _segment(*args) -> int:
    return main(["segment", *map(str, args), "--device", "cpu", "--quiet", "--no-preview"])


def test_segment_a_dixon_folder_with_a_four_channel_model_into_dicom(tmp_path, phantom, dixon_checkpoint):
    exam = Exam(tmp_path)
    exam.dixon(phantom, descriptions=UKB)
    out = tmp_path / "out"
    assert _segment(exam.folder, "-o", out, "--output-type", "dicom", "--checkpoint", dixon_checkpoint) == 0
    labels = io.load_labelmap(out / "labels.nii.gz")
    assert labels.spatial_shape == phantom.shape and np.allclose(labels.affine, phantom.affine, atol=1e-4)
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["channels"] == list(DIXON)
    assert [c["matched_by"] for c in report["input"]["dicom_channels"]] == [
        f"Series Description '{UKB[c]}'" for c in DIXON]
    for name in ("labels_seg.dcm", "entropy_pmap.dcm", "organs_sr.dcm"):
        assert dciodvfy_errors(out / name) == [], name
    # the SEG references the water series' instances, and holds the label map voxel for voxel
    water = sorted(exam.folder.glob("water_*.dcm"))
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in water]
    seg = pydicom.dcmread(out / "labels_seg.dcm", stop_before_pixels=True)
    assert seg.SOPClassUID == SEG and seg.StudyInstanceUID == exam.study
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= set(uids)
    assert np.array_equal(read_seg_labels(out / "labels_seg.dcm", uids), labels.array)


def test_a_one_channel_model_on_a_dixon_folder_still_asks_for_the_series(tmp_path, phantom, capsys):
    exam = Exam(tmp_path)
    uids = exam.dixon(phantom, image_types={c: ["DIXON", v] for c, v in SIEMENS.items()})
    checkpoint = tiny.checkpoint(tmp_path / "tiny.pt")  # one channel (in_phase)
    assert _segment(exam.folder, "-o", tmp_path / "out", "--checkpoint", checkpoint) == 1
    assert f"{exam.folder}: holds 4 DICOM series: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert _segment(exam.folder, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--series", uids["in_phase"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "dicom_channels" not in report["input"]
