"""Reading images and label maps: NIfTI with nibabel; NRRD (with Slicer's ``.seg.nrrd`` segment
names), MHA/MHD and DICOM series folders with SimpleITK; a folder of single-channel files as one
multi-channel image, and the Dixon series of a DICOM folder as the channels a model wants.
Geometry is converted to RAS on reading (see :mod:`SwinBOBLib.io.image`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from SwinBOBLib.io.dicom import read_dicom_series
from SwinBOBLib.io.dicom_channels import read_dicom_channels
from SwinBOBLib.io.image import (
    DIXON_CHANNELS,
    IMAGE_SUFFIXES,
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    GeometryWarning,
    Image,
    ImageFormatError,
    as_label_array,
    check_array,
    check_geometry,
    image_stem,
    image_suffix,
)
from SwinBOBLib.io.itk import itk_affine, itk_array, itk_itemsize
from SwinBOBLib.io.memory import InsufficientMemoryError, check_declared_size, format_mm, out_of_memory_error
from SwinBOBLib.labels.schemes import get_scheme


def load_image(path: str | os.PathLike | Sequence[str | os.PathLike], *,
               channel_names: Sequence[str] | None = None, series_uid: str | None = None,
               contrasts: Sequence[str] | None = None) -> Image:
    """Read an image file, a DICOM series folder, or several same-grid files as channels.

    Args:
        path: a ``.nii``/``.nii.gz``/``.nrrd``/``.seg.nrrd``/``.mha``/``.mhd`` file, a folder of
            DICOM files, or a list of such paths to stack as channels (e.g. the Dixon contrasts
            of a UK Biobank scan shipped as separate files).
        channel_names: names for the channels (default: file stems for a list; the Dixon names for
            an unnamed four-channel file).
        series_uid: which series to read from a DICOM folder holding several; with ``contrasts``,
            the series whose grid settles a contrast found more than once.
        contrasts: for a DICOM folder, the Dixon contrasts to find among its series by their DICOM
            attributes and stack as channels in this order (e.g. a four-channel model's
            ``water, fat, in_phase, opposed_phase``; :func:`~SwinBOBLib.io.dicom_channels.read_dicom_channels`);
            ignored for files.

    Returns:
        :class:`Image` with ``array`` ``(X, Y, Z)`` or ``(X, Y, Z, C)`` and ``affine`` to RAS mm.

    Raises:
        FileNotFoundError: the path does not exist.
        ImageFormatError: unreadable or truncated file, 2D or 5D data, NaN/Inf voxels, broken affine;
            for ``contrasts``, a contrast missing or found more than once, or channels on different grids.
    """
    if isinstance(path, (list, tuple)):
        return _load_stack(path, channel_names)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir() and contrasts:
        image = read_dicom_channels(path, contrasts, series_uid)
    elif path.is_dir():
        image = read_dicom_series(path, series_uid)
    elif path.stat().st_size == 0:
        raise ImageFormatError(f"{path}: the file is empty")
    elif image_suffix(path) in NIFTI_SUFFIXES:
        image = _read_nifti(path)
    elif image_suffix(path) in ITK_SUFFIXES or image_suffix(path) == ".dcm":
        image = _read_itk(path)
    else:
        raise ImageFormatError(f"{path}: unknown image format '{path.suffix}'; expected one of "
                               f"{', '.join(IMAGE_SUFFIXES)} or a DICOM folder")
    image.array = check_array(image.array, str(path))
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
    names = channel_names or [image_stem(Path(p)) for p in paths]
    array = np.stack([im.array for im in images], axis=-1)
    return Image(array, first.affine, first.path, _checked_names(names, len(images), str(first.path)))




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
        raise out_of_memory_error(path, shape, itemsize) from None
    except Exception as error:
        raise ImageFormatError(f"{path}: cannot read as NIfTI ({type(error).__name__}: {error}); "
                               "the file is truncated or not a NIfTI image") from error
    return Image(array, _nifti_affine(img, path), path)


def _nifti_affine(img, path: Path) -> np.ndarray:
    """The voxel -> RAS affine of a NIfTI image; with qform_code = sform_code = 0 (no orientation
    stored) the geometry SimpleITK and Slicer read, not nibabel's guess (LAS, centred origin), so
    outputs stamped with it lie where Slicer shows the input."""
    header = img.header
    if int(header["qform_code"]) != 0 or int(header["sform_code"]) != 0:
        return np.asarray(img.affine, dtype=np.float64)
    zooms = [float(z) if np.isfinite(z) and z > 0 else 1.0 for z in header.get_zooms()[:3]]
    warnings.warn(f"{path}: the NIfTI header stores no orientation (qform_code = sform_code = 0); read as "
                  f"Slicer and SimpleITK read it (LPS axes, origin 0, voxels {format_mm(zooms)} mm) and the "
                  "outputs are written with that geometry; left and right cannot be trusted",
                  GeometryWarning, stacklevel=4)
    return np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])


def _read_itk(path: Path) -> Image:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        shape = (*reader.GetSize(), reader.GetNumberOfComponents())
        itemsize = itk_itemsize(reader.GetPixelID())
        check_declared_size(path, shape, itemsize)
        img = reader.Execute()
    except InsufficientMemoryError:
        raise
    except MemoryError:
        raise out_of_memory_error(path, shape, itemsize) from None
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise ImageFormatError(f"{path}: cannot read the image ({first_line}); the file is truncated "
                               "or not in the format its name says") from error
    if img.GetDimension() < 3:
        raise ImageFormatError(f"{path}: image is {img.GetDimension()}D; SwinBOB needs a 3D volume")
    image = Image(itk_array(img), itk_affine(img), path)
    if image_suffix(path) == ".seg.nrrd":
        image.metadata["segments"] = _read_segment_metadata(img, path)
    return image


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
        get_scheme(scheme).validate_labelmap(image.array, source=str(path))
    return image
