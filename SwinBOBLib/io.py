"""Reading and writing images with their full geometry, and reorienting them voxel for voxel.

Conventions, used throughout SwinBOB:

* ``Image.array`` is in the file's voxel order: ``array[i, j, k]`` is the voxel whose index is
  ``(i, j, k)`` in the file (nibabel's convention; SimpleITK's z-y-x arrays are transposed on
  reading). Multi-channel images (UK Biobank Dixon: water, fat, in-phase, opposed-phase) keep the
  channels last: ``(X, Y, Z, C)``.
* ``Image.affine`` is a 4x4 matrix mapping a voxel index to RAS+ millimetres (+x towards the
  patient's Right, +y Anterior, +z Superior), as NIfTI and nibabel define it. DICOM, NRRD and MHA
  store LPS; their geometry is converted on reading and writing.

NIfTI is read and written with nibabel; NRRD (including Slicer's ``.seg.nrrd``), MHA/MHD and DICOM
series folders with SimpleITK. Every write goes to a temporary file beside the target that is then
renamed into place, so an interrupted write never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES

# Voxel spacings outside this range (mm) are almost certainly a header error.
PLAUSIBLE_SPACING_MM = (0.05, 30.0)
# Below this (mm) a spacing is refused: a 1e-6 mm voxel is a broken header, not a microscope.
MIN_SPACING_MM = 1e-3

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Default channel names of a four-channel UK Biobank Dixon stack, in UK Biobank's order.
DIXON_CHANNELS = ("water", "fat", "in_phase", "opposed_phase")


class ImageFormatError(ValueError):
    """A file that cannot be read as an image SwinBOB can use; the message names file and problem."""


class GeometryWarning(UserWarning):
    """Suspicious geometry: an identity affine, or a voxel spacing no scanner produces."""


class InsufficientMemoryError(MemoryError):
    """An image whose declared size does not fit this machine's memory; the message names the file."""


def _mm(values) -> str:
    """Spacings or positions as plain numbers, ``(3, 3, 1e-06)``: no ``np.float64(...)`` reprs."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000.0
    return f"{count:.1f} PB"


def physical_memory_bytes() -> int | None:
    """Total physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_declared_size(source, shape: Sequence[int], itemsize: int) -> int:
    """Refuse an image whose header declares more voxels than this machine's memory can hold.

    Args:
        source: the file, for the message.
        shape: declared array shape (any number of axes).
        itemsize: bytes per value.

    Returns:
        The declared size in bytes.

    Raises:
        InsufficientMemoryError: the declared size exceeds the physical memory.
    """
    declared = int(np.prod([int(n) for n in shape], dtype=np.float64)) * int(itemsize)
    total = physical_memory_bytes()
    if total is not None and declared > total:
        raise InsufficientMemoryError(
            f"not enough memory to read {source} (declared size {_bytes(declared)}, shape "
            f"{tuple(int(n) for n in shape)}; this machine has {_bytes(total)}); the header is broken "
            "or the image must be cropped first")
    return declared


def _out_of_memory(source, shape: Sequence[int], itemsize: int) -> InsufficientMemoryError:
    declared = float(np.prod([int(n) for n in shape], dtype=np.float64)) * int(itemsize)
    return InsufficientMemoryError(f"not enough memory to read {source} (declared size {_bytes(declared)}, "
                                   f"shape {tuple(int(n) for n in shape)})")


@dataclass
class Image:
    """A 3D image (optionally multi-channel) with its geometry.

    Attributes:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` numpy array in the file's voxel order.
        affine: ``(4, 4)`` float64, voxel index -> RAS+ millimetres.
        path: the file it came from, if any.
        channel_names: one name per channel for multi-channel images (e.g. Dixon contrasts).
        metadata: free-form extras (e.g. ``segments`` read from a ``.seg.nrrd``).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    channel_names: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[:3])

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array's three axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"``: where each array axis points."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray, channel_names: tuple[str, ...] | None = None) -> "Image":
        """A new image on the same grid holding ``array`` (spatial shape must match)."""
        array = np.asarray(array)
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"array of shape {array.shape} does not fit the grid {self.spatial_shape}")
        return replace(self, array=array, channel_names=channel_names, metadata={})

    def channel(self, which: int | str) -> "Image":
        """One channel as a 3D image, by index or by name (see :func:`select_channels`)."""
        return select_channels(self, [which])


def _source(path) -> str:
    return str(path) if path is not None else "image"


def _check_array(array: np.ndarray, source: str) -> np.ndarray:
    """Enforce 3D or 3D+channels, finite values; squeeze a single trailing channel."""
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim < 3:
        raise ImageFormatError(f"{source}: image is {array.ndim}D (shape {array.shape}); "
                               "SwinBOB needs a 3D volume")
    if array.ndim > 4:
        raise ImageFormatError(f"{source}: image is {array.ndim}D (shape {array.shape}); SwinBOB reads 3D "
                               "volumes and 3D multi-channel volumes (X, Y, Z, C) only")
    if min(array.shape[:3]) < 2:
        raise ImageFormatError(f"{source}: image of shape {array.shape} is a single slice (2D); "
                               "SwinBOB needs a 3D volume")
    if array.dtype.kind not in "biuf":
        raise ImageFormatError(f"{source}: voxel type {array.dtype} is not a real number type")
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ImageFormatError(f"{source}: {bad} voxels are NaN or infinite; fix or mask them first")
    return array


def check_geometry(affine: np.ndarray, source: str = "image") -> None:
    """Raise on a singular affine; warn (GeometryWarning) on an identity affine or absurd spacing."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ImageFormatError(f"{source}: affine must be a finite 4x4 matrix, got {affine!r}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing == 0):
        raise ImageFormatError(f"{source}: voxel spacing {_mm(spacing)} mm has a zero axis "
                               "(singular affine); the header is broken")
    if np.any(spacing < MIN_SPACING_MM):
        raise ImageFormatError(f"{source}: voxel spacing {_mm(spacing)} mm is below {MIN_SPACING_MM} mm "
                               "along an axis; no scanner makes such voxels, the header is broken")
    if abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-6:
        raise ImageFormatError(f"{source}: the voxel axes of the affine are parallel (spacing {_mm(spacing)} "
                               "mm, singular direction matrix); the header is broken")
    if np.allclose(affine, np.eye(4)):
        warnings.warn(f"{source}: identity affine (1 mm voxels at the origin, no orientation). This is a "
                      "known failure of some UK Biobank exports; left and right cannot be trusted.",
                      GeometryWarning, stacklevel=3)
    low, high = PLAUSIBLE_SPACING_MM
    if np.any(spacing < low) or np.any(spacing > high):
        warnings.warn(f"{source}: voxel spacing {_mm(spacing)} mm is outside the plausible "
                      f"range {low}..{high} mm; check the header", GeometryWarning, stacklevel=3)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def load_image(path: str | os.PathLike | Sequence[str | os.PathLike], *,
               channel_names: Sequence[str] | None = None, series_uid: str | None = None) -> Image:
    """Read an image file, a DICOM series folder, or several same-grid files as channels.

    Args:
        path: a ``.nii``/``.nii.gz``/``.nrrd``/``.seg.nrrd``/``.mha``/``.mhd`` file, a folder of
            DICOM files, or a list of such paths to stack as channels (e.g. the Dixon contrasts
            of a UK Biobank scan shipped as separate files).
        channel_names: names for the channels (default: file stems for a list; the Dixon names for
            an unnamed four-channel file).
        series_uid: which series to read from a DICOM folder holding several.

    Returns:
        :class:`Image` with ``array`` ``(X, Y, Z)`` or ``(X, Y, Z, C)`` and ``affine`` to RAS mm.

    Raises:
        FileNotFoundError: the path does not exist.
        ImageFormatError: unreadable or truncated file, 2D or 5D data, NaN/Inf voxels, broken affine.
    """
    if isinstance(path, (list, tuple)):
        return _load_stack(path, channel_names)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        image = _read_dicom_series(path, series_uid)
    elif path.stat().st_size == 0:
        raise ImageFormatError(f"{path}: the file is empty")
    elif _suffix(path) in NIFTI_SUFFIXES:
        image = _read_nifti(path)
    elif _suffix(path) in ITK_SUFFIXES or _suffix(path) == ".dcm":
        image = _read_itk(path)
    else:
        raise ImageFormatError(f"{path}: unknown image format '{path.suffix}'; expected one of "
                               f"{', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
    image.array = _check_array(image.array, str(path))
    check_geometry(image.affine, str(path))
    if image.num_channels > 1:
        if channel_names is not None:
            image.channel_names = _checked_names(channel_names, image.num_channels, str(path))
        elif image.channel_names is None and image.num_channels == len(DIXON_CHANNELS):
            image.channel_names = DIXON_CHANNELS
    return image


def _checked_names(names: Sequence[str], count: int, source: str) -> tuple[str, ...]:
    names = tuple(str(n) for n in names)
    if len(names) != count:
        raise ValueError(f"{source}: {len(names)} channel names {names} for {count} channels")
    return names


def _load_stack(paths: Sequence, channel_names: Sequence[str] | None) -> Image:
    if not paths:
        raise ValueError("no image paths given")
    images = [load_image(p) for p in paths]
    first = images[0]
    for other in images[1:]:
        if other.spatial_shape != first.spatial_shape or not np.allclose(other.affine, first.affine, atol=1e-4):
            raise ImageFormatError(f"{other.path}: grid {other.spatial_shape} / affine differ from "
                                   f"{first.path}; channels must share one grid")
        if other.num_channels != 1:
            raise ImageFormatError(f"{other.path}: has {other.num_channels} channels; stack single-channel files")
    names = channel_names or [_stem(Path(p)) for p in paths]
    array = np.stack([im.array for im in images], axis=-1)
    return Image(array, first.affine, first.path, _checked_names(names, len(images), str(first.path)))


def _stem(path: Path) -> str:
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.stem


def _read_nifti(path: Path) -> Image:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for broken files
        raise ImageFormatError(f"{path}: cannot read as NIfTI ({type(error).__name__}: {error}); "
                               "the file is truncated or not a NIfTI image") from error
    shape, itemsize = img.header.get_data_shape(), img.get_data_dtype().itemsize
    check_declared_size(path, shape, itemsize)
    try:
        array = np.asarray(img.dataobj)
    except MemoryError:
        raise _out_of_memory(path, shape, itemsize) from None
    except Exception as error:
        raise ImageFormatError(f"{path}: cannot read as NIfTI ({type(error).__name__}: {error}); "
                               "the file is truncated or not a NIfTI image") from error
    return Image(array, np.asarray(img.affine, dtype=np.float64), path)


def _itk_affine(img) -> np.ndarray:
    """Voxel (i, j, k) -> RAS mm for a SimpleITK image (which stores LPS)."""
    dim = img.GetDimension()
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(img.GetSpacing()[:3])
    affine[:3, 3] = img.GetOrigin()[:3]
    return _LPS_TO_RAS @ affine


def _itk_array(img) -> np.ndarray:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(img)
    dim = img.GetDimension()
    spatial = tuple(reversed(range(dim)))  # z,y,x -> x,y,z (and t,z,y,x -> x,y,z,t)
    if img.GetNumberOfComponentsPerPixel() > 1:
        return np.transpose(array, spatial + (dim,))
    return np.transpose(array, spatial)


def _read_itk(path: Path) -> Image:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        shape = (*reader.GetSize(), reader.GetNumberOfComponents())
        itemsize = _itk_itemsize(reader.GetPixelID())
        check_declared_size(path, shape, itemsize)
        img = reader.Execute()
    except InsufficientMemoryError:
        raise
    except MemoryError:
        raise _out_of_memory(path, shape, itemsize) from None
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise ImageFormatError(f"{path}: cannot read the image ({first_line}); the file is truncated "
                               "or not in the format its name says") from error
    if img.GetDimension() < 3:
        raise ImageFormatError(f"{path}: image is {img.GetDimension()}D; SwinBOB needs a 3D volume")
    image = Image(_itk_array(img), _itk_affine(img), path)
    if _suffix(path) == ".seg.nrrd":
        image.metadata["segments"] = _read_segment_metadata(img, path)
    return image


def _itk_itemsize(pixel_id: int) -> int:
    """Bytes per component of a SimpleITK pixel type ("16-bit signed integer" -> 2)."""
    import SimpleITK as sitk

    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(pixel_id))
    return int(bits.group(1)) // 8 if bits else 8


def _metadata_int(img, key: str, default: int, source) -> int:
    """An integer header field; a non-integer names the file, the key and the value."""
    text = img.GetMetaData(key).strip() if img.HasMetaDataKey(key) else ""
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ImageFormatError(f"{source}: header field '{key}' is '{text}', expected an integer") from None


def _read_segment_metadata(img, source="segmentation") -> list[dict]:
    """Segment names, label values and colours from a Slicer ``.seg.nrrd`` header."""
    segments, index = [], 0
    while img.HasMetaDataKey(f"Segment{index}_ID"):
        get = lambda key: img.GetMetaData(f"Segment{index}_{key}") if img.HasMetaDataKey(f"Segment{index}_{key}") else ""
        try:
            color = [float(c) for c in get("Color").split()] if get("Color") else []
        except ValueError:
            raise ImageFormatError(f"{source}: header field 'Segment{index}_Color' is '{get('Color')}', "
                                   "expected three numbers 0..1") from None
        segments.append({"id": get("ID"), "name": get("Name"),
                         "label_value": _metadata_int(img, f"Segment{index}_LabelValue", index + 1, source),
                         "layer": _metadata_int(img, f"Segment{index}_Layer", 0, source),
                         "color": tuple(int(round(c * 255)) for c in color)})
        index += 1
    return segments


def _read_dicom_series(folder: Path, series_uid: str | None) -> Image:
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
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice positions, for the gap check below
    try:
        img = reader.Execute()
    except MemoryError:
        raise InsufficientMemoryError(f"not enough memory to read {folder} (DICOM series {series_uid}, "
                                      f"{len(names)} slices)") from None
    except RuntimeError as error:
        raise ImageFormatError(f"{folder}: cannot read DICOM series {series_uid}: {error}") from error
    if img.GetDimension() < 3 or img.GetSize()[2] < 2:
        raise ImageFormatError(f"{folder}: DICOM series {series_uid} has a single slice; need a 3D volume")
    check_slice_spacing(_slice_positions(reader, len(names)), img.GetDirection(), names,
                        f"{folder}: DICOM series {series_uid}")
    return Image(_itk_array(img), _itk_affine(img), folder, metadata={"series_uid": series_uid})


def _slice_positions(reader, count: int) -> np.ndarray | None:
    """``(N, 3)`` ImagePositionPatient of each slice (LPS mm), or None when a slice lacks it."""
    positions = []
    for index in range(count):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return None
        try:
            positions.append([float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")[:3]])
        except ValueError:
            return None
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


def load_labelmap(path: str | os.PathLike, scheme: str | None = "ukbob") -> Image:
    """Read a label map and check its values against ``scheme`` (None: only check integrality).

    Returns an :class:`Image` whose array is an unsigned integer type (uint8 when values fit).
    A ``.seg.nrrd`` written by Slicer is read as a label map of its label values.

    Raises:
        ImageFormatError: as :func:`load_image`, or a multi-channel file.
        ValueError: non-integer values, or values outside ``scheme``.
    """
    image = load_image(path)
    if image.num_channels != 1:
        raise ImageFormatError(f"{path}: label map has {image.num_channels} channels (overlapping "
                               "segments?); export it as a single label map")
    image.array = as_label_array(image.array, str(path))
    if scheme is not None:
        from .labels import get_scheme

        get_scheme(scheme).validate_labelmap(image.array, source=str(path))
    return image


def as_label_array(array: np.ndarray, source: str = "label map") -> np.ndarray:
    """Integer label array (uint8 when values fit, else uint16/int32); non-integers raise."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if np.any(array != np.round(array)):
            raise ValueError(f"{source}: label map holds non-integer values (dtype {array.dtype})")
    elif array.dtype.kind not in "biu":
        raise ValueError(f"{source}: label map dtype {array.dtype} is not numeric")
    if array.size and array.min() < 0:
        raise ValueError(f"{source}: label map holds negative values (min {array.min()})")
    high = int(array.max()) if array.size else 0
    dtype = np.uint8 if high < 256 else np.uint16 if high < 65536 else np.int32
    return array.astype(dtype, copy=False)


def select_channels(image: Image, channels: Iterable[int | str] | None) -> Image:
    """Keep the given channels (indices or names, in the given order); None keeps all.

    A single channel gives a 3D image. Unknown names raise ValueError listing the channels.
    """
    if channels is None:
        return image
    wanted = list(channels)
    names = image.channel_names or tuple(str(i) for i in range(image.num_channels))
    indices = []
    for which in wanted:
        if isinstance(which, (int, np.integer)) or str(which).isdigit():
            index = int(which)
        elif str(which).lower() in [n.lower() for n in names]:
            index = [n.lower() for n in names].index(str(which).lower())
        else:
            raise ValueError(f"{_source(image.path)}: no channel '{which}'; channels are {', '.join(names)}")
        if not 0 <= index < image.num_channels:
            raise ValueError(f"{_source(image.path)}: channel {index} out of range "
                             f"(image has {image.num_channels})")
        indices.append(index)
    array = image.array if image.array.ndim == 4 else image.array[..., None]
    picked = array[..., indices]
    if len(indices) == 1:
        return replace(image, array=picked[..., 0], channel_names=None)
    return replace(image, array=picked, channel_names=tuple(names[i] for i in indices))


# ----------------------------------------------------------------------------- writing


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the permissions any
    tool would create it with (0666 or 0777 less the umask), so colleagues can read the results."""
    mode = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path`` and rename it into place.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        apply_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str],
                     float_format: str | None = None) -> Path:
    """Write ``rows`` as CSV with the header ``columns`` (keys not in it are ignored), atomically.

    ``float_format`` (e.g. ``".6g"``) formats float values; None writes them as Python prints them.
    """
    import csv
    import io as stdio

    buffer = stdio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format(v, float_format) if float_format and isinstance(v, float) else v
                         for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def output_format(path: str | os.PathLike) -> str:
    """The format a target's name asks for: "nifti", "itk" (NRRD/MHA) or "dicom" (no suffix, or a
    numeric one such as a series UID's, is a DICOM series folder).

    Raises:
        ValueError: a suffix SwinBOB does not write (``.png``, ``.txt``, ``.dcm``...), instead of
            silently making a DICOM folder with that name.
    """
    suffix = _suffix(Path(path))
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if re.fullmatch(r"\.[a-z][a-z0-9_]*", suffix):
        raise ValueError(f"{path}: unknown image format '{suffix}'; write one of {', '.join(IMAGE_SUFFIXES)}, "
                         "or a name without a suffix for a DICOM series folder")
    return "dicom"


def save_image(image: Image, path: str | os.PathLike, *, scheme: str | None = None,
               dtype=None) -> Path:
    """Write ``image`` atomically (temporary file, then rename) in the format the suffix names.

    Args:
        image: the image; its ``affine`` is written as the file's geometry.
        path: target; ``.nii``/``.nii.gz``/``.nrrd``/``.seg.nrrd``/``.mha``/``.mhd``, or a path
            without one of these suffixes for a DICOM series folder.
        scheme: for ``.seg.nrrd`` label maps, the label scheme whose names and colours become the
            Slicer segment metadata (default ``ukbob``).
        dtype: cast the voxels to this type first.

    Returns:
        The path written.
    """
    path = Path(path)
    array = np.asarray(image.array if dtype is None else image.array.astype(dtype))
    array = _check_array(array, str(path))
    check_geometry(image.affine, str(path))
    suffix = _suffix(path)
    output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix not in IMAGE_SUFFIXES:  # no suffix, or a numeric one such as a series UID's
        _write_dicom_series(array, image.affine, path)
        return path
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(array, image.affine, tmp)
        else:
            _write_itk(array, image.affine, tmp, seg_scheme=(scheme or "ukbob") if suffix == ".seg.nrrd" else None)
        os.replace(tmp, path)
    except RuntimeError as error:  # SimpleITK's writer; its message names the temporary file
        raise OSError(f"{path}: cannot write the image ({_last_line(error)})") from error
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _last_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1].strip() if text else type(error).__name__


def save_labelmap(labelmap: np.ndarray, reference: Image, path: str | os.PathLike,
                  scheme: str = "ukbob") -> Path:
    """Write a label map on ``reference``'s grid (uint8/uint16), with segment names for .seg.nrrd."""
    array = as_label_array(labelmap, str(path))
    return save_image(Image(array, reference.affine), path, scheme=scheme)


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _itk_geometry(affine: np.ndarray, source: str):
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise ValueError(f"{source}: the affine is sheared; NRRD/MHA/DICOM need orthogonal axes "
                         "(write NIfTI instead)")
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), tuple(direction.ravel().tolist())


def _to_itk(array: np.ndarray, affine: np.ndarray, source: str):
    import SimpleITK as sitk

    vector = array.ndim == 4
    zyx = np.ascontiguousarray(np.transpose(array, (2, 1, 0, 3) if vector else (2, 1, 0)))
    if zyx.dtype == np.bool_:
        zyx = zyx.astype(np.uint8)
    img = sitk.GetImageFromArray(zyx, isVector=vector)
    spacing, origin, direction = _itk_geometry(affine, source)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _write_itk(array: np.ndarray, affine: np.ndarray, path: Path, seg_scheme: str | None) -> None:
    import SimpleITK as sitk

    img = _to_itk(array, affine, str(path))
    if seg_scheme is not None:
        _add_segment_metadata(img, as_label_array(array, str(path)), seg_scheme)
    sitk.WriteImage(img, str(path), useCompression=True)


def _add_segment_metadata(img, labels: np.ndarray, scheme_name: str) -> None:
    """Slicer segmentation header fields so Slicer shows names and colours of each label."""
    from .labels import get_scheme

    scheme = get_scheme(scheme_name)
    present = [int(v) for v in np.unique(labels) if v != 0]
    img.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    img.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    extent = " ".join(f"0 {n - 1}" for n in reversed(img.GetSize()[::-1]))
    for number, value in enumerate(present):
        structure = scheme.structures.get(value)
        name = structure.name if structure else f"label_{value}"
        color = structure.color if structure else (128, 128, 128)
        prefix = f"Segment{number}_"
        for key, text in (("ID", name), ("Name", name), ("NameAutoGenerated", "0"),
                          ("Color", " ".join(f"{c / 255:.6f}" for c in color)), ("ColorAutoGenerated", "0"),
                          ("LabelValue", str(value)), ("Layer", "0"), ("Extent", extent),
                          ("Tags", f"SwinBOBScheme:{scheme.name}|")):
            img.SetMetaData(prefix + key, text)


def _write_dicom_series(array: np.ndarray, affine: np.ndarray, folder: Path) -> None:
    """Write a scalar volume as a DICOM series (one file per k-slice), atomically as a folder."""
    if array.ndim != 3:
        raise ValueError(f"{folder}: DICOM output takes a single-channel volume, got shape {array.shape}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: exists and is not an empty folder; refusing to mix DICOM series")
    slope, intercept, stored = _dicom_scaling(array)
    img = _to_itk(stored, affine, str(folder))
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


# ----------------------------------------------------------------------------- output folders

#: Prefix of the hidden folders a case is written into before it is moved into place.
STAGING_PREFIX = ".swinbob-staging-"
_UNSAFE_NAME = re.compile(r"[/\\:\x00-\x1f]")


def safe_name(name: str, source: str = "name") -> str:
    """``name`` if it can be used as one folder name inside an output folder, else ValueError.

    Refused: empty names, ``.`` and ``..``, names starting with a dot (hidden, and the staging
    folders' prefix), path separators, drive colons and control characters, so ``OUTDIR/<name>``
    never points outside OUTDIR.
    """
    text = str(name).strip()
    if not text or text.startswith(".") or _UNSAFE_NAME.search(text) or len(text) > 200:
        raise ValueError(f"{source}: '{name}' cannot be used as a folder name (no path separators, no "
                         "leading dot, no '..', at most 200 characters); choose a plain name such as case_001")
    return text


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` (resolved, symbolic links followed) lies in ``folder`` or is ``folder``."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_writable(folder: str | os.PathLike) -> Path:
    """Raise PermissionError now, not after an hour of inference, when ``folder`` cannot be written.

    ``folder`` need not exist: its nearest existing parent must then let us create it. Nothing is
    left behind (a probe file is created and removed).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing}: is a file, so the output folder {folder} cannot be made there")
    try:
        handle, probe = tempfile.mkstemp(prefix=".swinbob-write-test-", dir=existing)
    except OSError as error:
        raise PermissionError(f"{folder}: cannot write the output folder here ({existing}: "
                              f"{error.strerror or error})") from None
    os.close(handle)
    os.unlink(probe)
    return folder


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_staging(parent: str | os.PathLike) -> list[Path]:
    """Remove staging folders that a killed run left in ``parent``; returns what was removed.

    Only folders named ``.swinbob-staging-<pid>-...`` whose process no longer runs are touched, so
    a run writing into the same folder at the same time keeps its own.
    """
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = re.match(re.escape(STAGING_PREFIX) + r"(\d+)-", entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Write a set of files into a hidden staging folder, then move it into place as ``target``.

    A run killed or failing while writing leaves ``target`` as it was (the next run removes the
    stale staging folder, see :func:`clean_stale_staging`); a finished run replaces ``target`` whole,
    so old and new outputs never mix. The caller decides whether an existing ``target`` may be
    replaced: everything in it is removed.

    Yields:
        The staging folder (on the same file system as ``target``), created with the umask's
        permissions.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=target.parent))
    try:
        apply_umask(staging)
        yield staging
        _move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
        return
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder; refusing to replace it")
    old = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def grid_difference(image: Image, other: Image, atol: float = 1e-3) -> str | None:
    """What differs between two images' grids, in words (None when they share one grid).

    Compares the shape, then spacing (mm), origin (mm) and direction cosines, so a message can say
    "origin (0, 0, 0) vs (50, 0, 0) mm" instead of "grid (48, 40, 96) differs from (48, 40, 96)".
    """
    if image.spatial_shape != other.spatial_shape:
        return f"shape {image.spatial_shape} vs {other.spatial_shape}"
    a, b = np.asarray(image.affine, np.float64), np.asarray(other.affine, np.float64)
    parts = []
    if not np.allclose(image.spacing, other.spacing, atol=atol):
        parts.append(f"spacing {_mm(image.spacing)} vs {_mm(other.spacing)} mm")
    if not np.allclose(a[:3, 3], b[:3, 3], atol=max(atol, 1e-3)):
        parts.append(f"origin {_mm(a[:3, 3])} vs {_mm(b[:3, 3])} mm")
    da, db = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0), b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(da, db, atol=1e-4):
        parts.append(f"direction {image.orientation} vs {other.orientation}"
                     + ("" if image.orientation != other.orientation else " (rotated)"))
    return "; ".join(parts) or None


# ----------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Reorientation:
    """Record of a reorientation, so :func:`undo_reorientation` restores the input exactly."""

    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    transform: np.ndarray  # nibabel orientation transform applied to the array


def reorient(image: Image, axcodes: str = "RAS") -> tuple[Image, Reorientation]:
    """Flip and permute the voxel axes so they point along ``axcodes`` (no resampling).

    Returns the reoriented image (a view-free copy) and the record that undoes it voxel for voxel.
    The model's canonical orientation is RAS (MONAI's ``Orientation`` default).
    """
    import nibabel.orientations as nio

    current = nio.io_orientation(image.affine)
    target = nio.axcodes2ornt(tuple(axcodes))
    transform = nio.ornt_transform(current, target)
    array = np.ascontiguousarray(nio.apply_orientation(image.array, transform))
    affine = image.affine @ nio.inv_ornt_aff(transform, image.spatial_shape)
    record = Reorientation(image.affine.copy(), image.spatial_shape, transform)
    return replace(image, array=array, affine=affine, metadata=dict(image.metadata)), record


def undo_reorientation(image: Image, record: Reorientation) -> Image:
    """Bring an image on the reoriented grid (e.g. a predicted label map) back to the original grid.

    The array is flipped/permuted back and the original affine restored bit for bit.
    """
    import nibabel.orientations as nio

    inverse = nio.ornt_transform(nio.io_orientation(image.affine), nio.io_orientation(record.original_affine))
    array = np.ascontiguousarray(nio.apply_orientation(image.array, inverse))
    if array.shape[:3] != record.original_shape:
        raise ValueError(f"image of shape {image.array.shape} does not come from a grid of shape "
                         f"{record.original_shape}")
    restored = image.affine @ nio.inv_ornt_aff(inverse, image.spatial_shape)
    if not np.allclose(restored, record.original_affine, atol=1e-4):
        raise ValueError("image geometry does not match the recorded reorientation")
    return replace(image, array=array, affine=record.original_affine.copy())
