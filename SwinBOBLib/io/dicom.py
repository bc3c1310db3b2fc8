"""DICOM series in and out: reading a series folder (the series chosen by its UID, slices sorted
by position; other series, non-image objects, truncated files, mixed orientations or sizes, gantry
tilt and gaps refused naming the files), and writing an image as a classic MR series (for
`swinbob convert`, valid for `dciodvfy`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from SwinBOBLib.io.dicom_scan import Series, choose_series, scan_dicom_folder
from SwinBOBLib.io.dicom_write import SeriesHeader, write_series_files
from SwinBOBLib.io.files import apply_umask
from SwinBOBLib.io.image import Image, ImageFormatError
from SwinBOBLib.io.itk import itk_affine, itk_array
from SwinBOBLib.io.memory import InsufficientMemoryError


def read_dicom_series(folder: Path, series_uid: str | None) -> Image:
    """Read the image series of a DICOM folder (files directly in it; subfolders are not read).

    The folder's files are read header first (:func:`scan_dicom_folder`): a folder holding several
    series is refused with the list of them unless ``series_uid`` picks one; an unreadable or
    truncated file, a non-image object in the series, mixed orientations or slice sizes, a gantry
    tilt and a missing slice are refused naming the files. The chosen files are then read with
    SimpleITK (GDCM) in slice order.

    Returns:
        :class:`Image`; ``metadata`` holds ``series_uid``, ``study_uid`` and ``dicom_files`` (the
        series' files in slice order: the source instances a DICOM SEG references).
    """
    return read_series_files(choose_series(scan_dicom_folder(folder), folder, series_uid), folder)


def read_series_files(series: Series, folder: Path) -> Image:
    """Read the voxels of a series already checked by :func:`check_volume` (files in slice order)
    with SimpleITK (GDCM); ``series`` may be a part of a DICOM series (one echo of a multi-echo one).

    Raises:
        ImageFormatError: GDCM cannot read the files, a single slice, or uneven slice spacing.
        InsufficientMemoryError: the volume does not fit in memory.
    """
    import SimpleITK as sitk

    names = [str(f) for f in series.files]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    try:
        img = reader.Execute()
    except MemoryError:
        raise InsufficientMemoryError(f"not enough memory to read {folder} (DICOM series {series.uid}, "
                                      f"{len(names)} slices)") from None
    except RuntimeError as error:
        raise ImageFormatError(f"{folder}: cannot read DICOM series {series.uid}: {error}") from error
    if img.GetDimension() < 3 or img.GetSize()[2] < 2:
        raise ImageFormatError(f"{folder}: DICOM series {series.uid} has a single slice; need a 3D volume")
    check_slice_spacing(_slice_positions(names), img.GetDirection(), names,
                        f"{folder}: DICOM series {series.uid}")
    return Image(itk_array(img), itk_affine(img), folder,
                 metadata={"series_uid": series.uid, "study_uid": series.study_uid, "dicom_files": names})


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


def write_dicom_series(array: np.ndarray, affine: np.ndarray, folder: Path,
                       header: SeriesHeader | None = None) -> None:
    """Write a scalar volume as a classic MR Image series (one file per k-slice), atomically as a
    folder: the files are written into a hidden folder beside it, which is then renamed.

    See :mod:`SwinBOBLib.io.dicom_write` for the attributes and the geometry.
    """
    if array.ndim != 3:
        raise ValueError(f"{folder}: DICOM output takes a single-channel volume, got shape {array.shape}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: exists and is not an empty folder; refusing to mix DICOM series")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        apply_umask(tmp)
        write_series_files(array, affine, tmp, header)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
