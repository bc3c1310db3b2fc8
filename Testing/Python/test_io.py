"""Image I/O with exact geometry: formats, reorientation round trips, bad input, atomic writes."""

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from SwinBOBLib import io
from SwinBOBLib.io import writers

MR, MR_SEG = "example_mr_sm.nii.gz", "example_seg_mr.nii.gz"
CT, CT_SEG = "example_ct_sm.nii.gz", "example_seg.nii.gz"


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def test_load_keeps_file_voxel_order_and_ras_affine(samples):
    image = io.load_image(samples / MR)
    raw = nib.load(str(samples / MR))
    assert image.array.shape == raw.shape and np.array_equal(image.array, np.asarray(raw.dataobj))
    assert np.array_equal(image.affine, raw.affine)
    assert image.orientation == "LPS" and image.spacing == (3.0, 3.0, 3.0)
    assert io.load_image(samples / CT).orientation == "RAS"


@pytest.mark.parametrize("name", [MR, MR_SEG, CT, CT_SEG])
def test_reorientation_round_trip_is_exact(samples, name):
    image = io.load_image(samples / name)
    for axcodes in ("RAS", "LPS", "PIL", "SRA"):
        moved, record = io.reorient(image, axcodes)
        assert moved.orientation == axcodes
        back = io.undo_reorientation(moved, record)
        assert np.array_equal(back.array, image.array)
        assert np.array_equal(back.affine, image.affine)


def test_reorientation_keeps_world_positions(samples):
    """Left stays left: every voxel keeps its world coordinate after reorienting."""
    image = io.load_labelmap(samples / MR_SEG, scheme="total_mr")
    ras, _ = io.reorient(image, "RAS")
    for value in (2, 3):  # kidney_right, kidney_left
        before = image.affine @ np.r_[np.argwhere(image.array == value).mean(axis=0), 1]
        after = ras.affine @ np.r_[np.argwhere(ras.array == value).mean(axis=0), 1]
        assert np.allclose(before, after)
    right = ras.affine @ np.r_[np.argwhere(ras.array == 2).mean(axis=0), 1]
    left = ras.affine @ np.r_[np.argwhere(ras.array == 3).mean(axis=0), 1]
    assert right[0] > left[0], "in RAS+ the right kidney lies at larger x than the left kidney"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".seg.nrrd"])
@pytest.mark.parametrize("name", [MR_SEG, CT_SEG])
def test_format_round_trip(samples, tmp_path, suffix, name):
    image = io.load_image(samples / name)
    scheme = "total_mr" if name == MR_SEG else "total"
    path = io.save_image(image, tmp_path / f"out{suffix}", scheme=scheme)
    back = io.load_image(path)
    assert back.array.dtype == image.array.dtype
    assert np.array_equal(back.array, image.array)
    assert np.allclose(back.affine, image.affine, atol=1e-6)
    assert back.orientation == image.orientation
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary file left behind"


def test_seg_nrrd_carries_segment_names_and_colours(samples, tmp_path):
    image = io.load_labelmap(samples / MR_SEG, scheme="total_mr")
    from SwinBOBLib import labels

    ukbob = labels.remap(image.array, "total_mr", "ukbob")
    path = io.save_labelmap(ukbob, image, tmp_path / "labels.seg.nrrd")
    back = io.load_labelmap(path)
    segments = {s["label_value"]: s for s in back.metadata["segments"]}
    assert set(segments) == set(np.unique(ukbob)) - {0}
    assert segments[5]["name"] == "liver" and segments[5]["color"] == labels.get_scheme("ukbob")[5].color


@pytest.mark.parametrize("name", [MR, CT])
def test_dicom_series_round_trip(samples, tmp_path, name):
    image = io.load_image(samples / name)
    folder = io.save_image(image, tmp_path / "series")
    assert len(list(folder.glob("*.dcm"))) == image.array.shape[2]
    back = io.load_image(folder)
    assert np.array_equal(back.array, image.array)
    assert np.allclose(back.affine, image.affine, atol=1e-4)
    with pytest.raises(FileExistsError):
        io.save_image(image, folder)


def test_float_dicom_round_trip_within_rescale_precision(tmp_path):
    rng = np.random.default_rng(0)
    image = io.Image(rng.normal(100, 20, (12, 10, 6)).astype(np.float32), np.diag([1.5, 1.5, 4.0, 1.0]))
    back = io.load_image(io.save_image(image, tmp_path / "float_series"))
    step = (image.array.max() - image.array.min()) / 65000
    assert np.max(np.abs(back.array - image.array)) <= step


def test_multichannel_dixon_channels_last_and_selectable(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.random((6, 5, 4, 4)).astype(np.float32)
    path = _nifti(tmp_path / "dixon.nii.gz", array)
    image = io.load_image(path)
    assert image.array.shape == (6, 5, 4, 4) and image.channel_names == io.DIXON_CHANNELS
    water_fat = io.select_channels(image, ["water", "fat"])
    assert water_fat.array.shape == (6, 5, 4, 2) and np.array_equal(water_fat.array[..., 1], array[..., 1])
    opp = image.channel("opposed_phase")
    assert opp.array.shape == (6, 5, 4) and np.array_equal(opp.array, array[..., 3])
    with pytest.raises(ValueError, match="no channel 'T2'"):
        io.select_channels(image, ["T2"])
    for suffix in (".nrrd", ".mha"):
        back = io.load_image(io.save_image(image, tmp_path / f"dixon{suffix}"))
        assert np.array_equal(back.array, array)


def test_separate_contrast_files_stack_as_channels(tmp_path):
    water = _nifti(tmp_path / "water.nii.gz", np.ones((5, 5, 5), np.float32))
    fat = _nifti(tmp_path / "fat.nii.gz", np.zeros((5, 5, 5), np.float32))
    image = io.load_image([water, fat])
    assert image.channel_names == ("water", "fat") and image.array.shape == (5, 5, 5, 2)
    shifted = _nifti(tmp_path / "shifted.nii.gz", np.zeros((5, 5, 5), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(io.ImageFormatError, match="share one grid"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            io.load_image([water, shifted])


# ---------------------------------------------------------------- bad input, each with a clear error


def test_2d_image_is_refused(tmp_path):
    path = _nifti(tmp_path / "slice.nii.gz", np.zeros((10, 10), np.float32), np.eye(4) * [2, 2, 1, 1])
    with pytest.raises(io.ImageFormatError, match=r"slice\.nii\.gz.*2D"):
        io.load_image(path)
    single = _nifti(tmp_path / "single.nii.gz", np.zeros((10, 10, 1), np.float32))
    with pytest.raises(io.ImageFormatError, match="single slice"):
        io.load_image(single)


def test_5d_image_is_refused(tmp_path):
    path = _nifti(tmp_path / "five.nii.gz", np.zeros((4, 4, 4, 2, 2), np.float32))
    with pytest.raises(io.ImageFormatError, match=r"five\.nii\.gz.*5D"):
        io.load_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_voxels_are_refused(tmp_path, bad):
    array = np.ones((4, 4, 4), np.float32)
    array[1, 2, 3] = bad
    path = _nifti(tmp_path / "bad.nii.gz", array)
    with pytest.raises(io.ImageFormatError, match=r"bad\.nii\.gz: 1 voxels are NaN or infinite"):
        io.load_image(path)


def test_truncated_and_garbage_files_are_refused(samples, tmp_path):
    data = (samples / MR).read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.ImageFormatError, match="truncated.nii.gz"):
        io.load_image(truncated)
    raw = gzip.decompress(data)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[:2000])
    with pytest.raises(io.ImageFormatError, match="cut.nii"):
        io.load_image(cut)
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(io.ImageFormatError, match="garbage.nrrd"):
        io.load_image(garbage)
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(io.ImageFormatError, match="empty.nii.gz: the file is empty"):
        io.load_image(empty)
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        io.load_image(tmp_path / "missing.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(io.ImageFormatError, match="notes.txt: unknown image format"):
        io.load_image(text)


def test_empty_folder_is_not_a_dicom_series(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.ImageFormatError, match="no DICOM series"):
        io.load_image(tmp_path / "empty")


def test_labelmap_values_outside_the_scheme_are_refused(samples, tmp_path):
    with pytest.raises(ValueError, match=r"example_seg_mr\.nii\.gz.*not labels of scheme 'btcv'"):
        io.load_labelmap(samples / MR_SEG, scheme="btcv")
    unused = _nifti(tmp_path / "unused.nii.gz", np.full((3, 3, 3), 20, np.uint8))
    with pytest.raises(ValueError, match=r"\[20\]"):
        io.load_labelmap(unused, scheme="ukbob")
    fractional = _nifti(tmp_path / "fractional.nii.gz", np.full((3, 3, 3), 1.5, np.float32))
    with pytest.raises(ValueError, match="non-integer"):
        io.load_labelmap(fractional, scheme=None)
    integral = _nifti(tmp_path / "integral.nii.gz", np.full((3, 3, 3), 5.0, np.float32))
    assert io.load_labelmap(integral).array.dtype == np.uint8


def test_identity_affine_and_absurd_spacing_warn(tmp_path):
    identity = _nifti(tmp_path / "identity.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.warns(io.GeometryWarning, match="identity affine"):
        io.load_image(identity)
    huge = _nifti(tmp_path / "huge.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 120.0, 1.0]))
    with pytest.warns(io.GeometryWarning, match="plausible"):
        io.load_image(huge)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.load_image(_nifti(tmp_path / "fine.nii.gz", np.zeros((4, 4, 4), np.float32)))


def test_zero_spacing_is_refused(tmp_path):
    image = io.Image(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(io.ImageFormatError, match="zero axis"):
        io.save_image(image, tmp_path / "zero.nii.gz")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    image = io.Image(np.zeros((4, 4, 4), np.float32), np.diag([1.5, 1.5, 2.0, 1.0]))
    target = tmp_path / "out.nii.gz"

    def crash(array, affine, path):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(writers, "_write_nifti", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_image(image, target)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_the_whole_file(tmp_path):
    target = tmp_path / "out.nrrd"
    io.save_image(io.Image(np.zeros((30, 30, 30), np.int16), np.diag([1.0, 1.0, 1.5, 1.0])), target)
    io.save_image(io.Image(np.ones((3, 3, 3), np.int16), np.diag([2.0, 2.0, 2.0, 1.0])), target)
    back = io.load_image(target)
    assert back.array.shape == (3, 3, 3) and back.spacing == (2.0, 2.0, 2.0)


def test_sheared_affine_cannot_be_written_as_nrrd(tmp_path):
    affine = np.array([[1.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    image = io.Image(np.zeros((4, 4, 4), np.float32), affine)
    with pytest.raises(ValueError, match="sheared"):
        io.save_image(image, tmp_path / "sheared.nrrd")
    back = io.load_image(io.save_image(image, tmp_path / "sheared.nii.gz"))
    assert np.allclose(back.affine, affine)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16])
def test_a_gzipped_nifti_is_nibabels_file_compressed_the_same_way_every_time(tmp_path, dtype):
    """.nii.gz outputs are compressed by ISA-L's gzip: the stream holds exactly the bytes nibabel
    writes for a .nii, with no file name or time in its header (a rerun writes the same bytes), and
    nibabel, gzip and SimpleITK read it back."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    array = (rng.random((23, 17, 9)) * 200).astype(dtype)
    affine = np.array([[-1.5, 0, 0, 10], [0, 1.5, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    gz = io.save_image(io.Image(array, affine), tmp_path / "scan.nii.gz")
    plain = io.save_image(io.Image(array, affine), tmp_path / "scan.nii")
    data = gz.read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0" and not data[3] & 0x08  # time 0, no name
    assert gzip.decompress(data) == plain.read_bytes()
    again = io.save_image(io.Image(array, affine), tmp_path / "again.nii.gz")
    assert again.read_bytes() == data
    loaded = nib.load(gz)
    assert np.array_equal(np.asanyarray(loaded.dataobj), array) and np.allclose(loaded.affine, affine)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(gz))).shape == array.shape[::-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.nii.gz", "scan.nii", "scan.nii.gz"]
