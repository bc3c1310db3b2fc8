"""DICOM series in (io.dicom, io.dicom_scan) and out (io.dicom_write, `swinbob convert`): series that
dciodvfy accepts, geometry round trips (LPS, RAS, oblique), and every bad folder refused naming the
file. Real sample scans from Testing/Data."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tiny  # Testing/Python: the tiny model and scan the command-line tests share

from SwinBOBLib import io, labels
from SwinBOBLib.cli import main

MR = "example_mr_sm.nii.gz"  # LPS-stored
CT = "example_ct_sm.nii.gz"  # RAS-stored


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for one file (skips when dicom3tools is missing)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is missing: apt-get install dicom3tools")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def oblique_affine() -> np.ndarray:
    """2 x 2.5 x 3 mm voxels rotated 20 degrees about z and 10 about x, off the origin."""
    a, b = np.radians(20), np.radians(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([2.0, 2.5, 3.0])
    affine[:3, 3] = [-40.0, 25.0, 110.0]
    return affine


@pytest.mark.parametrize("name", [MR, CT])
def test_convert_writes_a_series_dciodvfy_accepts_and_segment_reads(samples, tmp_path, name, capsys):
    assert main(["convert", str(samples / name), str(tmp_path / "series")]) == 0
    files = sorted((tmp_path / "series").glob("*.dcm"))
    source = io.load_image(samples / name)
    assert len(files) == source.spatial_shape[2]
    first = pydicom.dcmread(files[0])
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and first.Manufacturer == "SwinBOB"
    for path in (files[0], files[-1]):
        assert dciodvfy_errors(path) == []
    back = io.load_image(tmp_path / "series")
    assert np.array_equal(back.array, source.array)
    assert np.allclose(back.affine, source.affine, atol=1e-4)  # LPS and RAS sources alike
    assert back.metadata["dicom_files"] == [str(f) for f in files]


def test_an_oblique_float_volume_round_trips_within_its_rescale(tmp_path):
    image = io.Image(tiny.body_array((14, 12, 9)) * 7.3, oblique_affine())
    io.save_image(image, tmp_path / "oblique")
    assert dciodvfy_errors(tmp_path / "oblique" / "slice_0004.dcm") == []
    back = io.load_image(tmp_path / "oblique")
    step = (image.array.max() - image.array.min()) / 65000
    assert np.max(np.abs(back.array - image.array)) <= step
    assert np.allclose(back.affine, image.affine, atol=1e-4)


# ----------------------------------------------------------------------------- bad folders


def _series(folder: Path, image=None, **tags) -> Path:
    io.save_image(image or tiny.body(), folder)
    for path in folder.glob("*.dcm"):
        if tags:
            ds = pydicom.dcmread(path)
            for key, value in tags.items():
                setattr(ds, key, value)
            ds.save_as(path)
    return folder


def test_two_series_are_listed_and_one_is_chosen_by_uid(tmp_path):
    one = _series(tmp_path / "a", SeriesDescription="water")
    two = _series(tmp_path / "b", io.Image(tiny.body_array((10, 9, 8)), np.diag([2.0, 2, 3, 1])),
                  SeriesDescription="fat")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in [*one.iterdir(), *two.iterdir()]:
        shutil.copy(path, mixed / f"{path.parent.name}_{path.name}")
    uid = pydicom.dcmread(next(two.iterdir())).SeriesInstanceUID
    with pytest.raises(io.ImageFormatError, match=r"holds 2 DICOM series: .*'water' MR, 16 slice\(s\) 18x20 .*"
                                                  r"'fat' MR, 8 slice\(s\) 9x10 .*--series UID"):
        io.load_image(mixed)
    assert io.load_image(mixed, series_uid=uid).spatial_shape == (10, 9, 8)
    with pytest.raises(io.ImageFormatError, match="no DICOM series 1.2.3; found"):
        io.load_image(mixed, series_uid="1.2.3")


def test_a_structured_report_in_the_folder_is_named(tmp_path):
    folder = _series(tmp_path / "series")
    report = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    report.SOPInstanceUID = pydicom.uid.generate_uid()
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID
    report.save_as(folder / "report.dcm")
    with pytest.raises(io.ImageFormatError, match=r"report.dcm is not an image \(Enhanced SR"):
        io.load_image(folder)
    report.SeriesInstanceUID = pydicom.uid.generate_uid()
    report.save_as(folder / "report.dcm")
    with pytest.raises(io.ImageFormatError, match=r"holds 2 DICOM series: .*not an image .*\(report.dcm\)"):
        io.load_image(folder)


def test_a_truncated_file_is_named(tmp_path):
    folder = _series(tmp_path / "series")
    path = folder / "slice_0005.dcm"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(io.ImageFormatError, match=r"slice_0005.dcm: the file is truncated"):
        io.load_image(folder)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(io.ImageFormatError, match=r"slice_0005.dcm: cannot read this DICOM file"):
        io.load_image(folder)


def test_a_missing_slice_is_refused_with_the_slice_numbers(tmp_path):
    folder = _series(tmp_path / "series")
    (folder / "slice_0007.dcm").unlink()
    with pytest.raises(io.ImageFormatError, match=r"slices 7 and 8 of 15 \(slice_0006.dcm and slice_0008.dcm\)"):
        io.load_image(folder)


def test_mixed_orientations_are_refused_naming_the_slice(tmp_path):
    folder = _series(tmp_path / "series")
    ds = pydicom.dcmread(folder / "slice_0004.dcm")
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.save_as(folder / "slice_0004.dcm")
    with pytest.raises(io.ImageFormatError, match=r"mixed orientations: slice 5 \(slice_0004.dcm\)"):
        io.load_image(folder)


def test_mixed_slice_sizes_are_refused_naming_the_slice(tmp_path):
    folder = _series(tmp_path / "series")
    small = _series(tmp_path / "small", io.Image(tiny.body_array((10, 9, 16)), np.diag([-2.0, -2, 3, 1])))
    ds = pydicom.dcmread(small / "slice_0009.dcm")
    ds.SeriesInstanceUID = pydicom.dcmread(folder / "slice_0009.dcm").SeriesInstanceUID
    ds.save_as(folder / "slice_0009.dcm")
    with pytest.raises(io.ImageFormatError, match=r"mixed slice sizes: slice 10 \(slice_0009.dcm\) is 9x10 where "
                                                  r"slice 1 \(slice_0000.dcm\) is 18x20"):
        io.load_image(folder)


def test_a_gantry_tilt_is_refused(tmp_path):
    folder = _series(tmp_path / "series")
    for k, path in enumerate(sorted(folder.glob("*.dcm"))):  # each slice shifted along y: a stack tilted 15 degrees
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, 3.0 * np.tan(np.radians(15)) * k, 3.0 * k]
        ds.save_as(path)
    with pytest.raises(io.ImageFormatError, match=r"gantry tilt of 15 degrees: slices 1 to 16 \(slice_0000.dcm to "
                                                  r"slice_0015.dcm\)"):
        io.load_image(folder)


def test_labels_show_the_snomed_codes_of_each_structure(capsys):
    kidney = labels.get_scheme("ukbob")[labels.get_scheme("ukbob").lookup("kidney_left")]
    assert (kidney.category.value, kidney.type.value, kidney.modifier.value) == ("123037004", "64033007", "7771000")
    assert main(["labels", "ukbob"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("2\t"))
    assert line.split("\t")[5:] == ["SCT:123037004:Anatomical Structure", "SCT:64033007:Kidney", "SCT:24028007:Right"]
    scheme = labels.get_scheme("ukbob")
    assert all(s.type != labels.GENERIC_TYPE for s in scheme.structures.values()), "every UKBOB structure is coded"
    with pytest.raises(ValueError, match="'Kidney' is not a code"):
        labels.Code.parse("Kidney", "test")
