"""Exact reorientation (flips and axis permutations only, no resampling) and its undo, bit for bit,
and a readable comparison of two voxel grids.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from SwinBOBLib.io.image import Image
from SwinBOBLib.io.memory import format_mm


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
        parts.append(f"spacing {format_mm(image.spacing)} vs {format_mm(other.spacing)} mm")
    if not np.allclose(a[:3, 3], b[:3, 3], atol=max(atol, 1e-3)):
        parts.append(f"origin {format_mm(a[:3, 3])} vs {format_mm(b[:3, 3])} mm")
    da, db = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0), b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(da, db, atol=1e-4):
        parts.append(f"direction {image.orientation} vs {other.orientation}"
                     + ("" if image.orientation != other.orientation else " (rotated)"))
    return "; ".join(parts) or None


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

    transform, affine = orientation_transform(image.affine, image.spatial_shape, axcodes)
    array = np.ascontiguousarray(nio.apply_orientation(image.array, transform))
    record = Reorientation(image.affine.copy(), image.spatial_shape, transform)
    return replace(image, array=array, affine=affine, metadata=dict(image.metadata)), record


def orientation_transform(affine: np.ndarray, shape, axcodes: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """``(transform, reoriented affine)``: the nibabel orientation transform that :func:`reorient`
    applies to a grid of ``shape`` with ``affine`` to make its axes point along ``axcodes``, and the
    affine after it. ``nibabel.orientations.apply_orientation(array, transform)`` gives the
    reoriented array as a view (flips and a transpose), where only part of it is read."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(axcodes)))
    return transform, affine @ nio.inv_ornt_aff(transform, tuple(shape)[:3])


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
