"""DICOM series in and out: reading a series folder (slices sorted by position, gaps refused with
the slice numbers), and writing an image as a series (for `swinbob convert`).
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from SwinBOBLib.io.files import apply_umask
from SwinBOBLib.io.image import Image, ImageFormatError
from SwinBOBLib.io.itk import itk_affine, itk_array, to_itk
from SwinBOBLib.io.memory import InsufficientMemoryError


def read_dicom_series(folder: Path, series_uid: str | None) -> Image:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        raise ImageFormatError(f"{folder}: no DICOM series found in this folder")
    if series_uid is None:
        files = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series}
        series_uid = max(files, key=lambda uid: len(files[uid]))
        if len(series) > 1:
            warnings.warn(f"{folder}: {len(series)} DICOM series; reading the largest, {series_uid} "
                          f"({len(files[series_uid])} files). Others: "
                          f"{', '.join(u for u in series if u != series_uid)}", stacklevel=3)
    elif series_uid not in series:
        raise ImageFormatError(f"{folder}: no DICOM series {series_uid}; found {', '.join(series)}")
    names = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader.SetFileNames(names)
    try:
        img = reader.Execute()
    except MemoryError:
        raise InsufficientMemoryError(f"not enough memory to read {folder} (DICOM series {series_uid}, "
                                      f"{len(names)} slices)") from None
    except RuntimeError as error:
        raise ImageFormatError(f"{folder}: cannot read DICOM series {series_uid}: {error}") from error
    if img.GetDimension() < 3 or img.GetSize()[2] < 2:
        raise ImageFormatError(f"{folder}: DICOM series {series_uid} has a single slice; need a 3D volume")
    check_slice_spacing(_slice_positions(names), img.GetDirection(), names,
                        f"{folder}: DICOM series {series_uid}")
    return Image(itk_array(img), itk_affine(img), folder, metadata={"series_uid": series_uid})


def _slice_positions(names: Sequence[str]) -> np.ndarray | None:
    """``(N, 3)`` origin of each slice file (LPS mm), read from its header, or None when one is unreadable.

    Each file's own header is read (GDCM finds Image Position (Patient) at the top level of a
    classic image and in the per-frame functional groups of an enhanced one); the series reader's
    metadata dictionaries are not used: they hold only top-level tags, and not reliably.
    """
    import SimpleITK as sitk

    positions = []
    for name in names:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
        if len(reader.GetOrigin()) < 3:
            return None
        positions.append(reader.GetOrigin()[:3])
    return np.asarray(positions, dtype=np.float64)


#: Slice gaps may differ from the series' median by this fraction before the series is refused.
SLICE_SPACING_TOLERANCE = 0.05


def check_slice_spacing(positions: np.ndarray | None, direction: Sequence[float], names: Sequence[str],
                        source: str) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or broken slice).

    ITK reads such a series as N-1 slices with an averaged spacing, which puts every slice after
    the gap at the wrong position; this check finds the gap before anything is computed.

    Args:
        positions: ``(N, 3)`` slice origins in mm in reading order, or None (check skipped).
        direction: the volume's 3x3 direction matrix, row-major (its third column is the slice normal).
        names: the slice files in the same order, for the message.
        source: folder and series, for the message.

    Raises:
        ImageFormatError: a gap differs from the median gap by more than
            :data:`SLICE_SPACING_TOLERANCE` of it (or 0.01 mm).
    """
    if positions is None or len(positions) < 3:
        return
    normal = np.asarray(direction, dtype=np.float64).reshape(3, 3)[:, 2]
    gaps = np.diff(positions @ normal)
    median = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - median) > max(0.01, SLICE_SPACING_TOLERANCE * abs(median)))
    if bad.size:
        i = int(bad[0])
        raise ImageFormatError(
            f"{source}: uneven slice spacing: slices {i + 1} and {i + 2} of {len(positions)} "
            f"({Path(names[i]).name} and {Path(names[i + 1]).name}) are {abs(gaps[i]):.4g} mm apart where "
            f"the series' spacing is {abs(median):.4g} mm ({bad.size} such gap(s)); a slice is missing or "
            "broken, and the geometry after it would be wrong. Re-export the complete series.")


def write_dicom_series(array: np.ndarray, affine: np.ndarray, folder: Path) -> None:
    """Write a scalar volume as a DICOM series (one file per k-slice), atomically as a folder."""
    if array.ndim != 3:
        raise ValueError(f"{folder}: DICOM output takes a single-channel volume, got shape {array.shape}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: exists and is not an empty folder; refusing to mix DICOM series")
    slope, intercept, stored = _dicom_scaling(array)
    img = to_itk(stored, affine, str(folder))
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        apply_umask(tmp)
        _write_dicom_slices(img, tmp, slope, intercept)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()


def _dicom_scaling(array: np.ndarray):
    """Stored integers plus rescale slope/intercept that reproduce ``array``.

    Integers that fit int16 are stored as they are; anything else is stored as uint16 with an
    integer intercept (GDCM requires one) and a slope spreading the range over 0..65000; GDCM
    applies the rescale itself when given float64 voxels with these tags.
    """
    if array.dtype.kind in "biu" and array.min() >= -32768 and array.max() <= 32767:
        return 1.0, 0.0, array.astype(np.int16)
    intercept = float(np.floor(array.min()))
    slope = (float(array.max()) - intercept) / 65000.0 or 1.0
    return slope, intercept, array.astype(np.float64)


def _write_dicom_slices(img, folder: Path, slope: float, intercept: float) -> None:
    import time

    import SimpleITK as sitk

    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid_root = "1.2.826.0.1.3680043.2.1125." + str(uuid.uuid4().int)[:20]
    date, clock = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    direction = img.GetDirection()
    shared = [("0008|0031", clock), ("0008|0021", date), ("0008|0008", "DERIVED\\SECONDARY"),
              ("0020|000d", uid_root + ".1"), ("0020|000e", uid_root + ".2"),
              ("0020|0052", uid_root + ".3"), ("0008|0060", "MR"), ("0008|103e", "SwinBOB export"),
              ("0020|0037", "\\".join(f"{v:.10g}" for v in (*direction[0:7:3], *direction[1:8:3]))),
              ("0028|1052", f"{intercept:.10g}"), ("0028|1053", f"{slope:.10g}"), ("0028|1054", "US")]
    if img.GetPixelID() == sitk.sitkFloat64:  # stored as uint16, rescaled by GDCM
        shared += [("0028|0100", "16"), ("0028|0101", "16"), ("0028|0102", "15"), ("0028|0103", "0")]
    for k in range(img.GetDepth()):
        slice_image = img[:, :, k]
        for tag, value in shared:
            slice_image.SetMetaData(tag, value)
        position = img.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{p:.10g}" for p in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", f"{uid_root}.4.{k + 1}")
        slice_image.SetMetaData("0018|0050", f"{img.GetSpacing()[2]:.10g}")
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(slice_image)
