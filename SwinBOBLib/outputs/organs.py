"""The per-structure table of a segmentation (``organs.csv``, the Slicer table): voxels, volume,
mean and max entropy, SOLF shape features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from SwinBOBLib import io
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.solf.features import organ_features

ORGAN_COLUMNS = ("index", "name", "voxels", "volume_ml", "mean_entropy", "max_entropy", "volume_mm3",
                 "normalized_volume", "surface_mm2", "sphericity", "eccentricity")


_SOLF_KEYS = ORGAN_COLUMNS[6:]


def organ_rows(labels: np.ndarray, entropy: np.ndarray, spacing, scheme: str = "ukbob",
               structures=None, whole_labels: np.ndarray | None = None) -> list[dict]:
    """One row per structure (all of the scheme's, or ``structures``): see :data:`ORGAN_COLUMNS`.

    Absent structures have 0 voxels and empty entropy and shape cells. SOLF columns are empty
    when :mod:`SwinBOBLib.solf` is unavailable. ``whole_labels`` (same shape) is the prediction
    before a ``structures`` subset was cut out of it: SOLF's body (V_body of the normalised
    volume) is taken from it, so a subset reports the same features as the whole map.
    """
    s = get_scheme(scheme)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts, sums, maxima = _entropy_by_label(labels, entropy, s.max_index + 1)
    features = _solf_features(labels, spacing, whole_labels)
    rows = []
    for index in (structures if structures is not None else s.indices):
        n = int(counts[index])
        row = {"index": index, "name": s.name_of(index), "voxels": n, "volume_ml": round(n * voxel_ml, 4),
               "mean_entropy": round(sums[index] / n, 5) if n else "",
               "max_entropy": round(float(maxima[index]), 5) if n else ""}
        found = features.get(index, {}) if features is not None else {}
        row.update({k: (round(float(found[k]), 6) if k in found else "") for k in _SOLF_KEYS})
        rows.append(row)
    return rows


def _entropy_by_label(labels: np.ndarray, entropy: np.ndarray, size: int):
    """``(voxels, entropy sum, entropy max)``, each ``(size,)`` by label (0 where absent), taken in
    each label's box (ndimage.find_objects): one masked read per structure instead of three passes
    over the grid (bincounts and ``ndimage.maximum``: 1.4 s against 0.4 s on a UK Biobank-size map)."""
    counts, sums, maxima = np.zeros(size, np.int64), np.zeros(size), np.zeros(size)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None and index < size:
            values = entropy[box][labels[box] == index]
            counts[index], sums[index], maxima[index] = values.size, values.sum(dtype=np.float64), values.max()
    return counts, sums, maxima


def _solf_features(labels: np.ndarray, spacing, whole_labels: np.ndarray | None = None) -> dict | None:
    if not np.any(labels):
        return {}
    body = whole_labels if whole_labels is not None and np.any(whole_labels) else None
    return organ_features(labels, spacing=spacing, body_mask=body)


def write_organs_csv(rows: list[dict], path: Path) -> None:
    io.write_csv_atomic(path, rows, ORGAN_COLUMNS)
