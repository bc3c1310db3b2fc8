"""Which SOLF features of one scan can be judged against cohort bounds, and the verdict per structure.

Bounds describe a cohort of one coverage and voxel size (``Bounds.cohort``: median spacing and
extent). A scan of another kind cannot be judged on every feature:

- **normalised volume** is the structure's share of the body in the field of view, so it compares
  only when the scan covers what the cohort's scans cover (extent within
  :data:`~.bounds.GEOMETRY_TOLERANCE` of the cohort's on every axis); a 60 mm slab against
  neck-to-knee scans is not comparable;
- **sphericity** (surface area from voxel faces) depends on the voxel size, and on the whole
  structure being seen: the spacing must be within the tolerance and the structure wholly inside
  the field of view (not cut by the scan's edge);
- **eccentricity** (principal axes) needs the whole structure inside the field of view.

A structure is judged by the paper's rule on its comparable features only: ``inaccurate`` when at
least :data:`~.bounds.MIN_OUT_OF_RANGE` (2) of them are out of range, ``plausible`` otherwise; with
fewer comparable features than that the rule cannot fire, and the verdict is ``not comparable``
with the reasons. ``missing`` (a structure most of the cohort has, absent here) is judged only
when the coverage compares. Bounds that do not record their cohort's geometry are judged on every
feature, as before they recorded it (with the warning of :func:`~.bounds.geometry_warnings`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from SwinBOBLib.solf.bounds import (
    GEOMETRY_TOLERANCE,
    MIN_OUT_OF_RANGE,
    MISSING_PRESENCE,
    SOLF_FEATURES,
    Bounds,
    geometry_ratio,
    mm_text,
    out_of_range,
)

#: The verdicts a structure can get (``solf.csv`` column ``verdict``, the Slicer panel's table).
VERDICTS = ("plausible", "inaccurate", "missing", "not comparable")


def scan_reasons(bounds: Bounds, spacing: Sequence[float], shape: Sequence[int]) -> dict[str, str]:
    """Why the scan's geometry keeps features from being judged: ``{"coverage": reason,
    "spacing": reason}``, each only when it applies; empty when the cohort's geometry is unknown."""
    cohort = bounds.cohort or {}
    reasons = {}
    extent = [float(n) * float(s) for n, s in zip(list(shape)[:3], list(spacing)[:3])]
    if cohort.get("extent_mm") and geometry_ratio(extent, cohort["extent_mm"]) > GEOMETRY_TOLERANCE:
        reasons["coverage"] = (f"the scan covers {mm_text(extent)} and the cohort's scans {mm_text(cohort['extent_mm'])} "
                               f"({geometry_ratio(extent, cohort['extent_mm']):.1f}x apart): normalised volume is a share "
                               "of the body in view")
    if cohort.get("spacing_mm") and geometry_ratio(list(spacing)[:3], cohort["spacing_mm"]) > GEOMETRY_TOLERANCE:
        reasons["spacing"] = (f"voxels of {mm_text(list(spacing)[:3])} against the cohort's {mm_text(cohort['spacing_mm'])}: "
                              "sphericity depends on the voxel size")
    return reasons


def cut_by_edge(labelmap: np.ndarray) -> set[int]:
    """Labels whose voxels reach the first or last slice of any axis (the scan cuts them)."""
    codes = np.asarray(labelmap)
    cut = set()
    for label, box in enumerate(ndimage.find_objects(codes.astype(np.int32, copy=False)), start=1):
        if box is not None and any(s.start == 0 or s.stop == n for s, n in zip(box, codes.shape)):
            cut.add(label)
    return cut


def feature_reasons(scan: Mapping[str, str], cut: bool) -> dict[str, str]:
    """``{feature: why it is not judged}`` for one structure (comparable features are absent)."""
    edge = "the structure is cut by the edge of the field of view"
    reasons = {}
    if "coverage" in scan:
        reasons["normalized_volume"] = scan["coverage"]
    if cut or "spacing" in scan:
        reasons["sphericity"] = edge if cut else scan["spacing"]
    if cut:
        reasons["eccentricity"] = edge
    return reasons


def judge(features: Mapping[int, Mapping[str, float]], bounds: Bounds, labelmap: np.ndarray,
          spacing: Sequence[float], min_out_of_range: int = MIN_OUT_OF_RANGE,
          missing_presence: float = MISSING_PRESENCE) -> dict[int, dict]:
    """Verdict per structure of one scan against ``bounds``, on its comparable features only.

    Args:
        features: the scan's :func:`~.features.organ_features`.
        bounds: cohort bounds (with ``cohort`` geometry where recorded).
        labelmap: the scan's label map (which structures the field of view cuts).
        spacing: its voxel size in mm.

    Returns:
        ``{label: {"verdict": one of VERDICTS, "judged": [features], "out_of_range": [judged
        features out of range], "not_judged": {feature: reason}}}`` for every structure with
        bounds, plus missing structures when the coverage compares.
    """
    scan = scan_reasons(bounds, spacing, np.shape(labelmap))
    cut = cut_by_edge(labelmap)
    result = {}
    for label in sorted(features):
        if label not in bounds:
            continue
        skipped = feature_reasons(scan, label in cut)
        judged = [f for f in SOLF_FEATURES if f not in skipped and f in bounds[label]]
        out = out_of_range(features[label], {f: bounds[label][f] for f in judged})
        verdict = ("not comparable" if len(judged) < min_out_of_range else
                   "inaccurate" if len(out) >= min_out_of_range else "plausible")
        result[int(label)] = {"verdict": verdict, "judged": judged, "out_of_range": out, "not_judged": skipped}
    if "coverage" not in scan:
        for label, share in getattr(bounds, "presence", {}).items():
            if label not in features and share >= missing_presence:
                result[int(label)] = {"verdict": "missing", "judged": [], "out_of_range": [], "not_judged": {}}
    return dict(sorted(result.items()))


def reason_text(entry: Mapping) -> str:
    """One line for a table: what was out of range, or why the structure was not judged."""
    if entry["verdict"] == "missing":
        return "absent, and most of the cohort has it"
    if entry["verdict"] == "not comparable":
        return "; ".join(sorted(set(entry["not_judged"].values())))
    if entry["out_of_range"]:
        return "out of range: " + ", ".join(entry["out_of_range"])
    return ""
