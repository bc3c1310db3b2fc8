"""Recorded label corruptions for measuring a label filter: truncation, swaps, merges, dilation,
erosion, dropped slices, holes and spurious blobs, each with what was done and where.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from SwinBOBLib.phantom.anatomy import BODY_COMPOSITION
from SwinBOBLib.phantom.shapes import _ids, _scheme, partner_of

CORRUPTION_KINDS = ("truncation", "swap", "merge", "dilation", "erosion", "dropped_slices", "holes",
                    "spurious_blob")


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask``'s voxels, grown by ``margin`` (clipped)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _fill_removed(labels: np.ndarray, removed: np.ndarray) -> None:
    """Give removed voxels the label of the nearest body-composition voxel (65-67), in place.

    Removed voxels thus become the surrounding subcutaneous fat, muscle or inner fat rather than
    background; without any body-composition voxel nearby they become inner fat.
    """
    if not removed.any():
        return
    box = _bounding_box(removed, margin=6)
    view, hole = labels[box], removed[box]
    tissue = np.isin(view, _ids(*BODY_COMPOSITION)) & ~hole
    if not tissue.any():
        view[hole] = _scheme().lookup("inner_fat")
        return
    indices = ndimage.distance_transform_edt(~tissue, return_distances=False, return_indices=True)
    nearest = view[tuple(indices)]
    view[hole] = nearest[hole]


def _truncation(labels, label, rng):
    """Cut the part of the structure beyond a plane normal to one array axis."""
    mask = labels == label
    box = _bounding_box(mask)
    coordinates = [c + b.start for c, b in zip(np.nonzero(mask[box]), box)]
    axes = [a for a in range(3) if coordinates[a].min() < coordinates[a].max()]
    axis = int(rng.choice(axes))
    values = coordinates[axis]
    fraction = float(rng.uniform(0.25, 0.5))
    side = "high" if rng.random() < 0.5 else "low"
    if side == "high":
        cut = int(np.clip(np.ceil(np.quantile(values, 1.0 - fraction)), values.min() + 1, values.max()))
        removed_index = np.arange(labels.shape[axis]) >= cut
    else:
        cut = int(np.clip(np.floor(np.quantile(values, fraction)), values.min(), values.max() - 1))
        removed_index = np.arange(labels.shape[axis]) <= cut
    shape = [1, 1, 1]
    shape[axis] = -1
    _fill_removed(labels, mask & removed_index.reshape(shape))
    return {"axis": axis, "side": side, "cut_index": cut, "fraction": round(fraction, 3)}


def _swap(labels, label, rng):
    """Exchange the labels of a structure and its other-side partner."""
    partner = partner_of(label)
    mask, partner_mask = labels == label, labels == partner
    labels[mask], labels[partner_mask] = partner, label
    return {"partner": int(partner), "partner_name": _scheme().name_of(partner)}


def _neighbour(labels: np.ndarray, label: int) -> int | None:
    """Most frequent label touching the structure, organs before body composition; None if none."""
    mask = labels == label
    box = _bounding_box(mask, margin=1)
    shell = ndimage.binary_dilation(mask[box]) & ~mask[box]
    values, counts = np.unique(labels[box][shell], return_counts=True)
    keep = values != 0
    values, counts = values[keep], counts[keep]
    if values.size == 0:
        return None
    tissue = np.isin(values, _ids(*BODY_COMPOSITION))
    if (~tissue).any():
        values, counts = values[~tissue], counts[~tissue]
    return int(values[np.argmax(counts)])


def _merge(labels, label, rng):
    """Relabel the whole structure as the neighbour it touches most."""
    into = _neighbour(labels, label)
    labels[labels == label] = into
    return {"into": into, "into_name": _scheme().name_of(into)}


def _dilation(labels, label, rng):
    """Grow the structure by 1-2 voxels into its surroundings (never out of the body)."""
    iterations = int(rng.integers(1, 3))
    mask = labels == label
    box = _bounding_box(mask, margin=iterations)
    grown = ndimage.binary_dilation(mask[box], iterations=iterations) & (labels[box] != 0)
    labels[box][grown] = label
    return {"iterations": iterations}


def _erosion(labels, label, rng):
    """Shrink the structure by 1-2 voxels (1 where 2 would remove it)."""
    mask = labels == label
    box = _bounding_box(mask, margin=1)
    iterations = int(rng.integers(1, 3))
    eroded = ndimage.binary_erosion(mask[box], iterations=iterations)
    if not eroded.any():
        iterations = 1
        eroded = ndimage.binary_erosion(mask[box], iterations=1)
    removed = np.zeros_like(mask)
    removed[box] = mask[box] & ~eroded
    _fill_removed(labels, removed)
    return {"iterations": iterations}


def _dropped_slices(labels, label, rng):
    """Remove the structure from a random 15-35 % of the axial slices (axis 2) it occupies."""
    mask = labels == label
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    count = int(np.clip(round(rng.uniform(0.15, 0.35) * slices.size), 1, slices.size - 1))
    dropped = np.sort(rng.choice(slices, size=count, replace=False))
    removed = np.zeros_like(mask)
    removed[:, :, dropped] = mask[:, :, dropped]
    _fill_removed(labels, removed)
    return {"axis": 2, "slices": [int(k) for k in dropped]}


def _ball_at(shape, center, radius: int):
    """(box, mask) of the voxels within ``radius`` voxels of ``center``, clipped to ``shape``."""
    box = tuple(slice(max(c - radius, 0), min(c + radius + 1, n)) for c, n in zip(center, shape))
    offsets = np.ogrid[box]
    return box, sum((o - c) ** 2 for o, c in zip(offsets, center)) <= radius * radius


def _holes(labels, label, rng):
    """Punch 1-3 balls (radius 1-2 voxels) out of the structure's interior."""
    mask = labels == label
    radius = int(rng.integers(1, 3))
    box = _bounding_box(mask, margin=1)
    interior = ndimage.binary_erosion(mask[box], iterations=radius)
    if not interior.any():
        radius, interior = 1, ndimage.binary_erosion(mask[box])
    points = np.argwhere(interior) + [b.start for b in box]
    centers = points[rng.choice(len(points), size=min(int(rng.integers(1, 4)), len(points)), replace=False)]
    removed = np.zeros_like(mask)
    for center in centers:
        box, ball = _ball_at(mask.shape, center, radius)
        removed[box] |= ball
    removed &= mask
    _fill_removed(labels, removed)
    return {"centers": centers.tolist(), "radius_vox": radius}


def _spurious_blob(labels, label, rng):
    """Add a disconnected ball (radius 1-3 voxels) of the label in body tissue away from the structure."""
    radius = int(rng.integers(1, 4))
    mask = labels == label
    keep_out = np.zeros_like(mask)
    keep_out[_bounding_box(mask, margin=radius + 2)] = True
    tissue = np.isin(labels, _ids("muscle", "inner_fat")) & ~keep_out
    if not tissue.any():
        tissue = np.isin(labels, _ids(*BODY_COMPOSITION)) & ~keep_out
    center = [int(c) for c in np.unravel_index(rng.choice(np.flatnonzero(tissue)), labels.shape)]
    box, ball = _ball_at(labels.shape, center, radius)
    blob = ball & np.isin(labels[box], _ids(*BODY_COMPOSITION))
    labels[box][blob] = label
    return {"center": [int(c) for c in center], "radius_vox": radius, "voxels_added": int(blob.sum())}


_CORRUPTORS: dict[str, Callable] = {
    "truncation": _truncation, "swap": _swap, "merge": _merge, "dilation": _dilation,
    "erosion": _erosion, "dropped_slices": _dropped_slices, "holes": _holes, "spurious_blob": _spurious_blob,
}


def _padded(box: tuple[slice, ...], shape, margin: int = 1) -> tuple[slice, ...]:
    return tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n)) for b, n in zip(box, shape))


def _eligible(labels: np.ndarray, label: int, kind: str, used: set[int], box) -> bool:
    """Whether ``kind`` can be applied to ``label`` (whose bounding box is ``box``, None if absent)."""
    if box is None:
        return False
    mask = labels[_padded(box, labels.shape)] == label
    if int(mask.sum()) < 2:
        return False
    if kind == "swap":
        partner = partner_of(label)
        return partner is not None and partner not in used and bool((labels == partner).any())
    if kind == "merge":
        return _neighbour(labels, label) is not None
    if kind == "truncation":
        return any(b.stop - b.start > 1 for b in box)
    if kind == "dropped_slices":
        return box[2].stop - box[2].start >= 2
    if kind in ("erosion", "holes"):
        return bool(ndimage.binary_erosion(mask).any())
    return True


def _check_corruption_args(labels, n_corruptions, kinds, structures) -> tuple[np.ndarray, tuple, list[int]]:
    array = np.asarray(labels)
    if array.ndim != 3:
        raise ValueError(f"labels must be a 3D (X, Y, Z) label map, got shape {array.shape}")
    _scheme().validate_labelmap(array, source="labels")
    if isinstance(n_corruptions, bool) or not isinstance(n_corruptions, (int, np.integer)) or n_corruptions < 0:
        raise ValueError(f"n_corruptions must be an integer >= 0, got {n_corruptions!r}")
    kinds = CORRUPTION_KINDS if kinds is None else tuple([kinds] if isinstance(kinds, str) else kinds)
    unknown = [k for k in kinds if k not in CORRUPTION_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown corruption kinds {unknown or kinds!r}; choose from {', '.join(CORRUPTION_KINDS)}")
    if structures is None:
        excluded = set(_ids(*BODY_COMPOSITION))
        candidates = [i for i in _scheme().indices if i not in excluded]
    else:
        candidates = sorted({_scheme().lookup(s) for s in ([structures] if isinstance(structures, (str, int)) else structures)})
    return array, kinds, candidates


def corrupt_labels(labels: np.ndarray, seed: int = 0, n_corruptions: int = 1, kinds: Sequence[str] | None = None,
                   structures: Sequence[str | int] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Plant controlled, recorded errors in a copy of a UKBOB label map.

    Each corruption picks a kind (uniformly from ``kinds``) and a structure present in the map that
    the kind applies to (swap needs a present left/right partner, erosion and holes an interior),
    never the same structure twice. Voxels a structure loses become the nearest body-composition
    label (subcutaneous fat, muscle or inner fat), not background.

    Args:
        labels: (X, Y, Z) integer label map in UKBOB numbering; not modified.
        seed: seeds the choices.
        n_corruptions: how many corruptions (>= 0).
        kinds: subset of :data:`CORRUPTION_KINDS` (default: all).
        structures: names or label values to choose from (default: every structure except the
            body-composition classes 65-67).

    Returns:
        (corrupted copy with the input's dtype, records). A record is ``{"label", "name", "kind",
        "params", "voxels_before", "voxels_after", "damaged"}``, the counts being voxels of
        ``label`` just before and after that corruption, ``damaged`` the other structures it
        made wrong (:func:`damaged_structures`: Dice below :data:`DAMAGE_DICE`, e.g. the
        neighbours a dilation overwrote). Kind parameters: truncation ``axis``, ``side``,
        ``cut_index``, ``fraction``; swap ``partner``, ``partner_name``; merge ``into``,
        ``into_name``; dilation/erosion ``iterations``; dropped_slices ``axis`` (2), ``slices``;
        holes ``centers`` (voxel indices), ``radius_vox``; spurious_blob ``center``,
        ``radius_vox``, ``voxels_added``.

    Raises:
        ValueError: not a 3D UKBOB label map, bad count, unknown kinds or structures, or fewer
            eligible structures than corruptions asked for.
    """
    array, kinds, candidates = _check_corruption_args(labels, n_corruptions, kinds, structures)
    rng = np.random.default_rng(seed)
    out, records, used = array.copy(), [], set()
    for _ in range(int(n_corruptions)):
        kind = kinds[int(rng.integers(len(kinds)))]
        boxes = ndimage.find_objects(out)
        box_of = lambda c: boxes[c - 1] if c - 1 < len(boxes) else None  # noqa: E731
        eligible = [c for c in candidates if c not in used and _eligible(out, c, kind, used, box_of(c))]
        if not eligible:
            raise ValueError(f"no structure left for a '{kind}' corruption (asked for {n_corruptions}; "
                             f"{len(used)} structures already corrupted)")
        label = int(eligible[int(rng.integers(len(eligible)))])
        before = int((out == label).sum())
        previous = out.copy()
        params = _CORRUPTORS[kind](out, label, rng)
        used.add(label)
        if kind == "swap":
            used.add(params["partner"])
        named = {label, params.get("partner")}
        records.append({"label": label, "name": _scheme().name_of(label), "kind": kind, "params": params,
                        "voxels_before": before, "voxels_after": int((out == label).sum()),
                        "damaged": [d for d in damaged_structures(previous, out) if d["label"] not in named]})
    return out, records


#: A structure a corruption changed is *damaged* (its label is wrong) below this Dice against the
#: map before the corruption: a dilation overwrites its neighbours, a blob or a merge covers parts
#: of others. The ablation counts damaged structures as corrupted (they are wrong labels).
DAMAGE_DICE = 0.9


def damaged_structures(before: np.ndarray, after: np.ndarray, max_dice: float = DAMAGE_DICE) -> list[dict]:
    """Structures (body-composition classes included) whose mask ``after`` has a Dice below
    ``max_dice`` against ``before``: ``[{"label", "name", "dice"}]``, by label."""
    changed = before != after
    values = np.unique(np.concatenate([before[changed], after[changed]]))
    damaged = []
    for value in (int(v) for v in values if v != 0):
        a, b = before == value, after == value
        dice = 2.0 * float(np.logical_and(a, b).sum()) / max(1.0, float(a.sum() + b.sum()))
        if dice < max_dice:
            damaged.append({"label": value, "name": _scheme().name_of(value), "dice": round(dice, 4)})
    return damaged
