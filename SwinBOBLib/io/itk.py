"""SimpleITK images <-> RAS arrays and affines: ITK stores z-y-x arrays and LPS geometry, SwinBOB
uses file voxel order and RAS (see :mod:`SwinBOBLib.io.image`).
"""

from __future__ import annotations

import re

import numpy as np

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def itk_affine(img) -> np.ndarray:
    """Voxel (i, j, k) -> RAS mm for a SimpleITK image (which stores LPS)."""
    dim = img.GetDimension()
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(img.GetSpacing()[:3])
    affine[:3, 3] = img.GetOrigin()[:3]
    return _LPS_TO_RAS @ affine


def itk_array(img) -> np.ndarray:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(img)
    dim = img.GetDimension()
    spatial = tuple(reversed(range(dim)))  # z,y,x -> x,y,z (and t,z,y,x -> x,y,z,t)
    if img.GetNumberOfComponentsPerPixel() > 1:
        return np.transpose(array, spatial + (dim,))
    return np.transpose(array, spatial)


def itk_itemsize(pixel_id: int) -> int:
    """Bytes per component of a SimpleITK pixel type ("16-bit signed integer" -> 2)."""
    import SimpleITK as sitk

    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(pixel_id))
    return int(bits.group(1)) // 8 if bits else 8


def itk_geometry(affine: np.ndarray, source: str):
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise ValueError(f"{source}: the affine is sheared; NRRD/MHA/DICOM need orthogonal axes "
                         "(write NIfTI instead)")
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), tuple(direction.ravel().tolist())


def to_itk(array: np.ndarray, affine: np.ndarray, source: str):
    import SimpleITK as sitk

    vector = array.ndim == 4
    zyx = np.ascontiguousarray(np.transpose(array, (2, 1, 0, 3) if vector else (2, 1, 0)))
    if zyx.dtype == np.bool_:
        zyx = zyx.astype(np.uint8)
    img = sitk.GetImageFromArray(zyx, isVector=vector)
    spacing, origin, direction = itk_geometry(affine, source)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img
