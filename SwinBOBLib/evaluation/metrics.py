"""Segmentation metrics in millimetres: Dice, Hausdorff distance (and HD95), normalised surface
distance, per class over label maps, and bootstrap confidence intervals over cases.

The distance metrics are MONAI's (``compute_hausdorff_distance``, ``compute_surface_dice``), which
measure between the surface voxels of the two masks with the voxel spacing applied. Empty masks get
documented values instead of NaN:

===================  ======  ==========================  =====
case                 Dice    Hausdorff / HD95            NSD
===================  ======  ==========================  =====
both empty           1.0     0.0                         1.0
one of them empty    0.0     the image diagonal in mm    0.0
===================  ======  ==========================  =====

The image diagonal is the largest distance two voxels of the image can have, so a missed or
hallucinated structure counts as the worst possible boundary error rather than disappearing from a
mean (TotalVibeSegmentator and MRSegmentator report such cases the same way in spirit).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: NSD tolerance in mm when none is given (SAT and the MSD challenge use small organ-specific values).
DEFAULT_NSD_TOLERANCE_MM = 2.0


def _masks(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {pred.ndim}D of shape {pred.shape}")
    return pred.astype(bool), ref.astype(bool)


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * ndim))
    if len(values) != ndim or any(not np.isfinite(s) or s <= 0 for s in values):
        raise ValueError(f"spacing {spacing} must be {ndim} positive numbers (mm per voxel along each axis)")
    return values


def _diagonal_mm(shape, spacing) -> float:
    return float(np.linalg.norm([(n - 1) * s for n, s in zip(shape, spacing)]))


def _as_batch(mask: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()


def dice(pred, ref) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    pred, ref = _masks(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def surface_distances(pred, ref, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (units of ``spacing``) from each surface voxel of ``pred`` to the surface of ``ref``
    and back, computed with MONAI's ``get_mask_edges`` and ``get_surface_distance`` (Euclidean).

    Both masks must be non-empty. The Hausdorff distance, HD95 and NSD are all functions of these
    two arrays, so per-class evaluation computes them once.
    """
    from monai.metrics.utils import get_mask_edges, get_surface_distance

    pred, ref = _masks(pred, ref)
    spacing = _spacing(spacing, pred.ndim)
    edges_pred, edges_ref = get_mask_edges(pred, ref, crop=True, spacing=None)
    forward = np.asarray(get_surface_distance(edges_pred, edges_ref, "euclidean", spacing))
    backward = np.asarray(get_surface_distance(edges_ref, edges_pred, "euclidean", spacing))
    return forward, backward


def _hausdorff_from(distances, percentile: float | None) -> float:
    pick = (lambda d: np.max(d)) if percentile is None else (lambda d: np.percentile(d, percentile))
    return float(max(pick(d) for d in distances))


def _nsd_from(distances, tolerance_mm: float) -> float:
    forward, backward = distances
    return float((np.sum(forward <= tolerance_mm) + np.sum(backward <= tolerance_mm)) / (forward.size + backward.size))


def hausdorff(pred, ref, spacing=None, percentile: float | None = None) -> float:
    """Symmetric Hausdorff distance between the masks' surfaces, in the units of ``spacing``.

    Args:
        pred, ref: boolean masks of one shape, 2D or 3D.
        spacing: voxel size per axis (mm); default 1.
        percentile: e.g. 95 for HD95 (the larger of the two directed 95th percentiles); None for
            the maximum.

    Returns:
        The distance; 0 when both masks are empty, the image diagonal when one is.
    """
    pred, ref = _masks(pred, ref)
    spacing = _spacing(spacing, pred.ndim)
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile {percentile} must be within 0..100")
    empty_pred, empty_ref = not pred.any(), not ref.any()
    if empty_pred and empty_ref:
        return 0.0
    if empty_pred or empty_ref:
        return _diagonal_mm(pred.shape, spacing)
    return _hausdorff_from(surface_distances(pred, ref, spacing), percentile)


def surface_dice(pred, ref, spacing=None, tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> float:
    """Normalised surface distance (surface Dice) at ``tolerance_mm``: the fraction of both surfaces
    within the tolerance of the other (MONAI's definition). 1.0 when both masks are empty, 0.0 when
    one is."""
    pred, ref = _masks(pred, ref)
    spacing = _spacing(spacing, pred.ndim)
    if tolerance_mm < 0:
        raise ValueError(f"tolerance {tolerance_mm} mm must not be negative")
    empty_pred, empty_ref = not pred.any(), not ref.any()
    if empty_pred or empty_ref:
        return float(empty_pred and empty_ref)
    return _nsd_from(surface_distances(pred, ref, spacing), tolerance_mm)


def per_class_metrics(pred_labels, ref_labels, classes: Iterable[int], spacing=None,
                      tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, distances: bool = True) -> list[dict]:
    """Dice, HD, HD95 and NSD for each class of two label maps.

    Args:
        pred_labels, ref_labels: integer label maps of one shape in the same scheme.
        classes: label values to evaluate (e.g. the structures shared with a dataset).
        spacing: voxel size in mm, array axis order.
        distances: False to compute Dice only (fast).

    Returns:
        One dict per class: ``label``, ``dice``, ``hd``, ``hd95``, ``nsd``, ``pred_voxels``, ``ref_voxels``
        (distance keys absent when ``distances`` is False). A class present in exactly one of the
        two maps has ``hd`` = ``hd95`` = the diagonal of the whole image in mm (not of a crop), so a
        missed organ never scores better than a misplaced one; absent from both: 0.
    """
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from reference shape {ref_labels.shape}")
    spacing = _spacing(spacing, pred_labels.ndim)
    diagonal = _diagonal_mm(pred_labels.shape, spacing)  # of the whole image, never of a crop
    rows = []
    for label in classes:
        pred, ref = pred_labels == label, ref_labels == label
        row = {"label": int(label), "dice": dice(pred, ref),
               "pred_voxels": int(pred.sum()), "ref_voxels": int(ref.sum())}
        if distances:
            row.update(_distance_metrics(pred, ref, spacing, tolerance_mm, diagonal))
        rows.append(row)
    return rows


def _distance_metrics(pred: np.ndarray, ref: np.ndarray, spacing, tolerance_mm: float, diagonal: float) -> dict:
    """HD, HD95 and NSD from one pair of surface-distance computations; a structure missing from
    one map scores ``diagonal`` (the whole image's), one missing from both 0."""
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return {"hd": 0.0, "hd95": 0.0, "nsd": 1.0}
    if not has_pred or not has_ref:
        return {"hd": diagonal, "hd95": diagonal, "nsd": 0.0}
    box = _bounding_box(pred | ref)  # distances do not change inside the box around both masks
    distances = surface_distances(pred[box], ref[box], spacing)
    return {"hd": _hausdorff_from(distances, None), "hd95": _hausdorff_from(distances, 95),
            "nsd": _nsd_from(distances, tolerance_mm)}


def _bounding_box(mask: np.ndarray):
    """Slices of the box around ``mask``'s voxels, one voxel wider on each side."""
    where = np.argwhere(mask)
    low, high = np.maximum(where.min(axis=0) - 1, 0), where.max(axis=0) + 2
    return tuple(slice(a, b) for a, b in zip(low, high))


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile-bootstrap confidence interval.

    Each value must be one independent unit (one case, e.g. a case's mean Dice over its
    structures, or one structure's value in one case): the resampling draws values, so pooled
    (case, structure) rows of several cases would understate the spread between cases.

    Returns:
        ``(mean, low, high)``; NaN values are dropped first; an empty input gives three NaNs and a
        single value ``(v, nan, nan)``: one case has no confidence interval.
    """
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be within (0, 1)")
    if data.size == 0:
        return float("nan"), float("nan"), float("nan")
    if data.size == 1:
        return float(data[0]), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(data.mean()), float(low), float(high)
