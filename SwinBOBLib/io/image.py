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

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from SwinBOBLib.io.memory import format_mm

NIFTI_SUFFIXES = (".nii.gz", ".nii")


ITK_SUFFIXES = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")


IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


# Voxel spacings outside this range (mm) are almost certainly a header error.
PLAUSIBLE_SPACING_MM = (0.05, 30.0)


# Below this (mm) a spacing is refused: a 1e-6 mm voxel is a broken header, not a microscope.
MIN_SPACING_MM = 1e-3


#: Default channel names of a four-channel UK Biobank Dixon stack, in UK Biobank's order.
DIXON_CHANNELS = ("water", "fat", "in_phase", "opposed_phase")


class ImageFormatError(ValueError):
    """A file that cannot be read as an image SwinBOB can use; the message names file and problem."""


class GeometryWarning(UserWarning):
    """Suspicious geometry: an identity affine, or a voxel spacing no scanner produces."""


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


def source_name(path) -> str:
    """How messages name an image: its path, or "image" for one made in memory."""
    return str(path) if path is not None else "image"


def check_array(array: np.ndarray, source: str) -> np.ndarray:
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
        raise ImageFormatError(f"{source}: voxel spacing {format_mm(spacing)} mm has a zero axis "
                               "(singular affine); the header is broken")
    if np.any(spacing < MIN_SPACING_MM):
        raise ImageFormatError(f"{source}: voxel spacing {format_mm(spacing)} mm is below {MIN_SPACING_MM} mm "
                               "along an axis; no scanner makes such voxels, the header is broken")
    if abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-6:
        raise ImageFormatError(f"{source}: the voxel axes of the affine are parallel (spacing {format_mm(spacing)} "
                               "mm, singular direction matrix); the header is broken")
    if np.allclose(affine, np.eye(4)):
        warnings.warn(f"{source}: identity affine (1 mm voxels at the origin, no orientation). This is a "
                      "known failure of some UK Biobank exports; left and right cannot be trusted.",
                      GeometryWarning, stacklevel=3)
    low, high = PLAUSIBLE_SPACING_MM
    if np.any(spacing < low) or np.any(spacing > high):
        warnings.warn(f"{source}: voxel spacing {format_mm(spacing)} mm is outside the plausible "
                      f"range {low}..{high} mm; check the header", GeometryWarning, stacklevel=3)


def image_suffix(path: Path) -> str:
    """The image suffix of a file name, lower case (``.nii.gz``, ``.seg.nrrd``; else its last suffix)."""
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def image_stem(path: Path) -> str:
    """A file name without its image suffix (``scan.nii.gz`` -> ``scan``)."""
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.stem


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
            raise ValueError(f"{source_name(image.path)}: no channel '{which}'; channels are {', '.join(names)}")
        if not 0 <= index < image.num_channels:
            raise ValueError(f"{source_name(image.path)}: channel {index} out of range "
                             f"(image has {image.num_channels})")
        indices.append(index)
    array = image.array if image.array.ndim == 4 else image.array[..., None]
    picked = array[..., indices]
    if len(indices) == 1:
        return replace(image, array=picked[..., 0], channel_names=None)
    return replace(image, array=picked, channel_names=tuple(names[i] for i in indices))
