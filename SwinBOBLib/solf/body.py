"""Body masks from images, for label maps that label organs only (V_body of the normalised volume).

UKBOB label maps label every body voxel (body-composition classes), so their body is simply the
non-zero labels. TotalSegmentator-style organ maps do not; for those the body is segmented from the
image: Otsu threshold, holes filled slice by slice (the lungs and bowel gas are dark but inside the
body, and they open to the outside in 3D through the airways), largest connected component kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D array of intensities (any unit); the midpoint when all are equal."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    hist, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(hist * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def body_mask_from_image(image: np.ndarray, axial_axis: int = 2) -> np.ndarray:
    """Boolean body mask of a scan.

    Args:
        image: ``(X, Y, Z)`` intensities, or ``(X, Y, Z, C)`` multi-channel (e.g. Dixon water, fat,
            in-phase, opposed-phase: the channels' absolute values are summed).
        axial_axis: array axis running head-feet; holes are filled in the slices normal to it.

    Returns:
        ``(X, Y, Z)`` bool array; all False for a constant image.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 4:
        array = np.abs(array).sum(axis=3)
    if array.ndim != 3:
        raise ValueError(f"image must be (X, Y, Z) or (X, Y, Z, C), got shape {array.shape}")
    if axial_axis not in (0, 1, 2):
        raise ValueError(f"axial_axis {axial_axis} must be 0, 1 or 2")
    if array.max() <= array.min():
        return np.zeros(array.shape, dtype=bool)
    mask = array > otsu_threshold(array[::2, ::2, ::2])
    mask = np.moveaxis(mask, axial_axis, 0)
    for index in range(mask.shape[0]):
        mask[index] = ndimage.binary_fill_holes(mask[index])
    mask = np.moveaxis(mask, 0, axial_axis)
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == int(np.argmax(sizes))
    return mask
