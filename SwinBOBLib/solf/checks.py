"""Per-structure label checks beyond the paper's SOLF: what the 2-of-3 rule on volume, sphericity
and eccentricity cannot see (a left/right swap keeps both shapes, a hole or a dropped slice barely
moves them, a spurious blob far away adds few voxels).

    values = structure_checks(labelmap, affine, body_mask=None, entropy=None)
    # {label: {"lateral_offset_mm", "components", "largest_component_fraction",
    #          "filled_volume_ratio", "slice_gap_fraction", "mean_entropy"}}

Each entry of :data:`CHECKS` is one documented check: the values it reads, how a structure is
judged (against its own cohort bounds, or a fixed rule) and the corruptions it is meant for.
:func:`check_flags` applies them to one sample given bounds fitted on the cohort
(:func:`~SwinBOBLib.solf.bounds.fit_bounds` with ``features=CHECK_FEATURES``).

Axes: the superior-inferior axis is the array axis whose direction is closest to world z; the
patient's left is world -x (RAS, as :mod:`SwinBOBLib.io` returns affines). The body midline is the
world x of the body's centroid (the body mask, or every labelled voxel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy import ndimage

from .bounds import check_epsilon


@dataclass(frozen=True)
class Check:
    """One per-structure check.

    Attributes:
        name: the check's name (a column of the ablation tables).
        values: the per-structure values it reads (keys of :func:`structure_checks`).
        rule: "upper": flagged above the cohort's P(100 - eps/2) of each value; "lower": below
            P(eps/2); "side": a ``*_left`` structure's centroid right of the midline or a
            ``*_right`` one's left of it (no cohort bound; needs the scheme's names).
        description: what it measures and why.
        catches: corruption kinds (:data:`SwinBOBLib.phantom.CORRUPTION_KINDS`) it targets.
    """

    name: str
    values: tuple[str, ...]
    rule: str
    description: str
    catches: tuple[str, ...]


#: The checks, in report order. Adding one is one entry here plus its value in _structure_values.
CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("laterality", ("lateral_offset_mm",), "side",
          "centroid's world x relative to the body midline (mm, + toward the patient's left); a *_left "
          "structure must lie left of the midline, a *_right one right of it", ("swap",)),
    Check("components", ("components", "largest_component_fraction"), "components",
          "26-connected pieces: more pieces than the cohort's P(100 - eps/2), or a largest piece holding "
          "less of the structure than the cohort's P(eps/2)", ("spurious_blob", "dropped_slices")),
    Check("holes", ("filled_volume_ratio",), "upper",
          "volume with the holes of every slice filled (axial, coronal and sagittal slices) over the "
          "volume: 1 for a solid structure",
          ("holes",)),
    Check("continuity", ("slice_gap_fraction",), "upper",
          "share of the axial slices between the structure's first and last that hold none of it",
          ("dropped_slices",)),
    Check("entropy", ("mean_entropy",), "upper",
          "the prediction's mean normalised entropy over the structure (only where an entropy map is "
          "given, e.g. segment's entropy output)", ()),
)}

#: Every value the checks read, in column order.
CHECK_FEATURES = tuple(v for c in CHECKS.values() for v in c.values)

#: Checks bounded by the cohort (all but the fixed side rule), and the values they bound.
BOUNDED_FEATURES = tuple(v for c in CHECKS.values() if c.rule != "side" for v in c.values)


def bounded_features(cohort: Mapping[str, Mapping[int, Mapping[str, float]]]) -> tuple[str, ...]:
    """The :data:`BOUNDED_FEATURES` every structure of the cohort has (``mean_entropy`` only when
    every sample came with an entropy map)."""
    entries = [values for sample in cohort.values() for values in sample.values()]
    return tuple(f for f in BOUNDED_FEATURES if all(f in values for values in entries))


def superior_axis(affine: np.ndarray) -> int:
    """Array axis whose direction is closest to world z (superior-inferior)."""
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    return int(np.argmax(np.abs(directions[2]) / np.linalg.norm(directions, axis=0)))


def _world_x(affine: np.ndarray, voxel_centroid: np.ndarray) -> float:
    return float(np.asarray(affine, dtype=np.float64)[0] @ np.append(voxel_centroid, 1.0))


def _centroid(mask: np.ndarray, box) -> np.ndarray:
    return np.array([c.mean() + b.start for c, b in zip(np.nonzero(mask), box)])


def _components(mask: np.ndarray) -> tuple[int, float]:
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return count, 1.0
    sizes = np.bincount(labelled.ravel())[1:]
    return int(count), float(sizes.max() / sizes.sum())


def _filled_ratio(mask: np.ndarray) -> float:
    """Volume with the holes of every slice filled, in all three orientations, over the volume.

    Slice-wise, not 3D: a hole of a voxel or two in a thin structure touches its surface along
    some axis, so it is no 3D cavity, but it is enclosed in the slices that cut through it.
    """
    padded = np.pad(mask, 1)
    filled = padded.copy()
    for axis in range(3):
        planes = np.moveaxis(padded, axis, 0)
        filled |= np.moveaxis(np.stack([ndimage.binary_fill_holes(p) for p in planes]), 0, axis)
    return float(filled.sum() / mask.sum())


def _gap_fraction(mask: np.ndarray, axis: int) -> float:
    areas = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    return float(np.mean(areas == 0))  # the box spans the first to the last occupied slice


def _structure_values(mask, box, affine, midline_x: float, axis: int, entropy) -> dict[str, float]:
    count, largest = _components(mask)
    values = {"lateral_offset_mm": midline_x - _world_x(affine, _centroid(mask, box)),
              "components": count, "largest_component_fraction": largest,
              "filled_volume_ratio": _filled_ratio(mask), "slice_gap_fraction": _gap_fraction(mask, axis)}
    if entropy is not None:
        values["mean_entropy"] = float(np.asarray(entropy[box])[mask].mean())
    return values


def structure_checks(labelmap: np.ndarray, affine: np.ndarray, body_mask: np.ndarray | None = None,
                     entropy: np.ndarray | None = None, labels=None) -> dict[int, dict[str, float]]:
    """The values of every check of :data:`CHECKS` for each structure of a label map.

    Args:
        labelmap: ``(X, Y, Z)`` non-negative integer labels, 0 = background.
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix of the label map.
        body_mask: optional ``(X, Y, Z)`` body mask for the midline (default: the labelled voxels).
        entropy: optional ``(X, Y, Z)`` per-voxel entropy in [0, 1] of the prediction that made
            ``labelmap`` (else there is no ``mean_entropy``).
        labels: label values to report (default all present).

    Returns:
        ``{label: {"lateral_offset_mm": mm (+ = left of the midline), "components": int,
        "largest_component_fraction": 0..1, "filled_volume_ratio": >= 1,
        "slice_gap_fraction": 0..1, "mean_entropy": 0..1 (only with ``entropy``)}}``; ``{}`` for an
        empty map.

    Raises:
        ValueError: arrays of different shapes, or an affine that is not 4x4.
    """
    labelmap = np.asarray(labelmap)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    for name, other in (("body mask", body_mask), ("entropy map", entropy)):
        if other is not None and np.shape(other)[:3] != labelmap.shape:
            raise ValueError(f"{name} shape {np.shape(other)} differs from the label map's {labelmap.shape}")
    body = body_mask if body_mask is not None else labelmap != 0
    if not np.any(body):
        return {}
    midline_x = _world_x(affine, np.array(ndimage.center_of_mass(body)))
    axis = superior_axis(affine)
    wanted = None if labels is None else {int(v) for v in labels}
    result = {}
    for index, box in enumerate(ndimage.find_objects(labelmap.astype(np.int64, copy=False)), start=1):
        if box is None or (wanted is not None and index not in wanted):
            continue
        mask = labelmap[box] == index
        result[index] = _structure_values(mask, box, affine, midline_x, axis, entropy)
    return result


def _side_of(name: str | None) -> int:
    """+1 for a ``*_left`` structure, -1 for ``*_right``, 0 otherwise (or without a name)."""
    name = name or ""
    return 1 if name.endswith("_left") else -1 if name.endswith("_right") else 0


def _outside(value: float, low: float, high: float, rule: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False  # not measured (e.g. no entropy map): not judged
    return value > high if rule == "upper" else value < low


def _judge(check: Check, values: Mapping[str, float], ranges: Mapping, name: str) -> bool:
    if check.rule == "side":
        side = _side_of(name)
        return side != 0 and side * values["lateral_offset_mm"] < 0
    if check.rule == "components":
        low, high = ranges.get("components", (-math.inf, math.inf))
        fraction_low, _ = ranges.get("largest_component_fraction", (-math.inf, math.inf))
        return values["components"] > high or values["largest_component_fraction"] < fraction_low
    return any(_outside(values.get(v, math.nan), *ranges.get(v, (-math.inf, math.inf)), check.rule)
               for v in check.values)


def check_flags(values: Mapping[int, Mapping[str, float]], bounds: Mapping[int, Mapping],
                name_of: Callable[[int], str], checks=None) -> dict[int, list[str]]:
    """Checks each structure of one sample fails.

    Args:
        values: the sample's :func:`structure_checks` result.
        bounds: ``{label: {value: (low, high)}}`` fitted on the cohort over :data:`BOUNDED_FEATURES`
            (structures without bounds are judged by the side rule only).
        name_of: label -> structure name (for the side rule).
        checks: names of :data:`CHECKS` to apply (default all).

    Returns:
        ``{label: [failed check names]}`` for every structure of ``values``.
    """
    chosen = [CHECKS[c] for c in (checks or CHECKS)]
    return {label: [c.name for c in chosen if _judge(c, entry, bounds.get(label, {}), name_of(label))]
            for label, entry in values.items()}


def out_of_range_signals(values: Mapping[str, float], solf_ranges: Mapping, check_ranges: Mapping,
                         name: str) -> set[str]:
    """Everything about one structure that is out of range: the SOLF features outside their eq. 1
    ranges and the checks of :data:`CHECKS` it fails (the side rule included)."""
    signals = {f for f, (low, high) in solf_ranges.items() if not low <= values[f] <= high}
    return signals | {c.name for c in CHECKS.values() if _judge(c, values, check_ranges, name)}


#: The combined filter flags a structure when at least this many signals are out of range (the
#: paper's 2-of-3 principle over every feature and check), or on the side rule or the missing rule.
COMBINED_MIN_SIGNALS = 2


def combined_verdict(signals: set[str]) -> bool:
    """Whether one structure's out-of-range signals make it wrong for the combined filter: on the
    wrong side (a fixed rule, no cohort tail), or at least :data:`COMBINED_MIN_SIGNALS` others."""
    return "laterality" in signals or len(signals - {"laterality"}) >= COMBINED_MIN_SIGNALS


def minimum_cohort(epsilon: float) -> int:
    """Smallest cohort in which the eps/2 tail of eq. 1 holds at least one sample: ceil(200 / eps)."""
    epsilon = check_epsilon(epsilon)
    return 0 if epsilon == 0 else math.ceil(200.0 / epsilon - 1e-9)


def cohort_size_warning(n_samples: int, epsilon: float) -> str | None:
    """A warning when ``n_samples`` is too small for ``epsilon`` (its eps/2 tails hold under one
    sample, so the bounds are interpolations between the extreme samples); None when large enough."""
    needed = minimum_cohort(epsilon)
    if epsilon == 0 or n_samples >= needed:
        return None
    return (f"cohort of {n_samples} samples is too small for epsilon {epsilon:g}%: its {epsilon / 2:g}% tails "
            f"hold {n_samples * epsilon / 200:.2f} samples, so the bounds lie between the most extreme samples "
            f"and barely change with epsilon; at least {needed} samples are needed")
