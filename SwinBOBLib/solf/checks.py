"""Per-structure label checks beyond the paper's SOLF: what the 2-of-3 rule on volume, sphericity
and eccentricity cannot see (a left/right swap keeps both shapes, a hole or a dropped slice barely
moves them, a spurious blob far away adds few voxels, a planar cut leaves a normal-sized organ).

    values = structure_checks(labelmap, affine, body_mask=None, entropy=None, image=None, partners=None)
    # {label: {"lateral_offset_mm", "components", "largest_component_fraction",
    #          "filled_volume_ratio", "slice_gap_fraction", "cut_face", "detached_mm", "pits",
    #          "cavity_fraction", "closing_gain", and with their inputs "mean_entropy",
    #          "image_inside", "image_outside", "image_enclosed", "partner_log_ratio"}}

Each entry of :data:`CHECKS` is one documented check: the values it reads, how a structure is
judged (against its own cohort bounds, or a fixed rule) and the corruptions it is meant for.
:func:`check_flags` applies them to one sample given bounds fitted on the cohort
(:func:`~SwinBOBLib.solf.bounds.fit_bounds` with ``features=CHECK_FEATURES``).

Axes: the superior-inferior axis is the array axis whose direction is closest to world z; the
patient's left is world -x (RAS, as :mod:`SwinBOBLib.io` returns affines). The body midline is the
world x of the body's centroid (the body mask, or every labelled voxel).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.solf.bounds import check_epsilon
from SwinBOBLib.solf.morphology import surface_values


@dataclass(frozen=True)
class Check:
    """One per-structure check.

    Attributes:
        name: the check's name (a column of the ablation tables).
        values: the per-structure values it reads (keys of :func:`structure_checks`).
        rule: "upper": flagged above the cohort's P(100 - eps/2) of each value; "lower": below
            P(eps/2); "outside": either; "side": a ``*_left`` structure's centroid right of the
            midline or a ``*_right`` one's left of it (no cohort bound; needs the scheme's names);
            "components": more pieces or a smaller largest piece than the cohort.
        description: what it measures and why.
        catches: corruption kinds (:data:`SwinBOBLib.phantom.CORRUPTION_KINDS`) it targets.
        needs: "" (every label map has its values) or what they need: "image" (the sample's
            image), "entropy" (an entropy map), "scheme" (a label scheme naming the left/right
            pairs). A check whose values a cohort lacks is left out, not failed.
    """

    name: str
    values: tuple[str, ...]
    rule: str
    description: str
    catches: tuple[str, ...]
    needs: str = ""


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
    Check("cut_face", ("cut_face",), "upper",
          "a planar cut: the largest end-slice area over the structure's largest slice, along each array "
          "axis (ends on the image border excluded, where the field of view cuts every structure)",
          ("truncation",)),
    Check("detached", ("detached_mm",), "upper",
          "distance (mm) of the farthest detached piece from the largest piece; 0 for one piece",
          ("spurious_blob",)),
    Check("pits", ("pits",), "upper",
          "one-voxel pits: voxels outside the structure with at least 5 of their 6 face neighbours in it",
          ("holes",)),
    Check("cavities", ("cavity_fraction",), "upper",
          "3D-enclosed cavities as a share of the volume", ("holes",)),
    Check("closing", ("closing_gain",), "upper",
          "what a morphological closing (two 6-connected iterations) adds, as a share of the volume: "
          "dents and notches", ("holes",)),
    Check("partner", ("partner_log_ratio",), "outside",
          "log volume ratio to the same structure on the other side, outside the cohort's "
          "[P(eps/2), P(100 - eps/2)] (paired structures of a named scheme only)",
          ("truncation", "erosion"), needs="scheme"),
    Check("image_inside", ("image_inside",), "upper",
          "share of the structure's voxels whose intensity fits a touching structure better than its own "
          "(it holds its neighbour's tissue); needs the image", ("dilation", "spurious_blob"), needs="image"),
    Check("image_outside", ("image_outside",), "upper",
          "touching voxels labelled otherwise whose intensity fits this structure better, relative to "
          "its volume (its tissue labelled as something else); needs the image",
          ("holes", "erosion", "truncation"), needs="image"),
    Check("image_enclosed", ("image_enclosed",), "upper",
          "voxels labelled otherwise, enclosed by the structure (at least 16 of 26 directions meet it within "
          "4 voxels), whose intensity fits it better than their own label: a hole refilled with the "
          "surrounding tissue's label while the image still shows the organ; needs the image",
          ("holes", "dropped_slices"), needs="image"),
    Check("entropy", ("mean_entropy",), "upper",
          "the prediction's mean normalised entropy over the structure (only where an entropy map is "
          "given, e.g. segment's entropy output)", (), needs="entropy"),
)}


#: Every value the checks read, in column order.
CHECK_FEATURES = tuple(v for c in CHECKS.values() for v in c.values)


#: Checks bounded by the cohort (all but the fixed side rule), and the values they bound.
BOUNDED_FEATURES = tuple(v for c in CHECKS.values() if c.rule != "side" for v in c.values)


#: Checks every label map has values for (the others need an image, an entropy map or a scheme).
STRUCTURAL_CHECKS = tuple(name for name, c in CHECKS.items() if not c.needs)


def bounded_features(cohort: Mapping[str, Mapping[int, Mapping[str, float]]]) -> tuple[str, ...]:
    """The :data:`BOUNDED_FEATURES` the cohort has: those of the structural checks, which every
    structure has, and each optional value (``mean_entropy``, the image checks, the partner ratio)
    that at least one structure has. :func:`~.bounds.fit_bounds` bounds a structure on the samples
    that have the value; one that never has it (an unpaired structure's partner ratio) is unbounded."""
    entries = [values for sample in cohort.values() for values in sample.values()]
    return tuple(f for f in BOUNDED_FEATURES if any(f in values for values in entries))


def superior_axis(affine: np.ndarray) -> int:
    """Array axis whose direction is closest to world z (superior-inferior)."""
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    return int(np.argmax(np.abs(directions[2]) / np.linalg.norm(directions, axis=0)))


def _world_x(affine: np.ndarray, voxel_centroid: np.ndarray) -> float:
    return float(np.asarray(affine, dtype=np.float64)[0] @ np.append(voxel_centroid, 1.0))


def _centroid(mask: np.ndarray, box) -> np.ndarray:
    return np.array([c.mean() + b.start for c, b in zip(np.nonzero(mask), box)])


def mass_centre(mask: np.ndarray) -> np.ndarray:
    """Voxel centroid of a 3D mask from its three axis profiles (as ``ndimage.center_of_mass``,
    without a pass over every voxel's coordinates: 0.3 s on a UK Biobank-size grid)."""
    mask = np.asarray(mask, dtype=bool)
    total = float(np.count_nonzero(mask))
    return np.array([np.arange(n) @ mask.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.int64) / total
                     for axis, n in enumerate(mask.shape)])


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The mask's 26-connected pieces (labelled array, count)."""
    pieces, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    return pieces, int(count)


def _components(sizes: np.ndarray | None, count: int) -> tuple[int, float]:
    """``(count, largest piece's share)`` from the pieces' ``sizes`` (``np.bincount`` of the labelled
    array; None for a single piece)."""
    if count <= 1:
        return count, 1.0
    return int(count), float(sizes[1:].max() / sizes[1:].sum())


def _slice_holes(padded: np.ndarray, axis: int) -> np.ndarray:
    """Background voxels of a zero-padded mask enclosed within their slice across ``axis``
    (4-connected in the slice, as 2D fill_holes), in one labelling pass: the slices stacked into
    one 2D image, where every slice's zero frame touches the next one's and all join the piece
    holding pixel (0, 0); every other background piece is a hole of its slice."""
    background = np.ascontiguousarray(np.moveaxis(~padded, axis, 0))
    flat = background.reshape(-1, background.shape[2])
    pieces = cc3d.connected_components(flat, connectivity=4)
    holes = (pieces != pieces[0, 0]) & flat
    return np.moveaxis(holes.reshape(background.shape), 0, axis)


def _hole_values(mask: np.ndarray) -> dict[str, float]:
    """``filled_volume_ratio``: the volume with the holes of every slice filled, in all three
    orientations, over the volume; ``cavity_fraction``: 3D-enclosed background over the volume.

    Slice-wise, not 3D, for the first: a hole of a voxel or two in a thin structure touches its
    surface along some axis, so it is no 3D cavity, but it is enclosed in the slices that cut
    through it. A 3D cavity is enclosed in every slice through it (a slice's 4-connected piece of
    background lies within the 3D 6-connected one), so the cavities are looked for only where
    some voxel is a hole in all three orientations.
    """
    padded = np.pad(mask, 1)
    holes = [_slice_holes(padded, axis) for axis in range(3)]
    voxels = float(np.count_nonzero(mask))
    everywhere = holes[0] & holes[1] & holes[2]
    cavities = _cavity_voxels(padded) if everywhere.any() else 0.0
    return {"filled_volume_ratio": (voxels + np.count_nonzero(holes[0] | holes[1] | holes[2])) / voxels,
            "cavity_fraction": cavities / voxels}


def _slice_areas(mask: np.ndarray) -> list[np.ndarray]:
    """The structure's area in each slice across each array axis (its box spans first to last)."""
    return [mask.sum(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]


def _gap_fraction(areas: np.ndarray) -> float:
    return float(np.mean(areas == 0))  # the box spans the first to the last occupied slice


def _cut_face(slice_areas: list[np.ndarray], box, shape) -> float:
    """Largest end-slice area over the largest slice along any axis, ends on the image border excluded."""
    ends = []
    for axis, areas in enumerate(slice_areas):
        if areas.size < 2:
            continue
        if box[axis].start > 0:
            ends.append(areas[0] / areas.max())
        if box[axis].stop < shape[axis]:
            ends.append(areas[-1] / areas.max())
    return float(max(ends)) if ends else 0.0


#: Voxels around each other piece within which :func:`_detached_mm` first looks for the largest one.
DETACHED_MARGIN = 8


def _detached_mm(pieces: np.ndarray, count: int, spacing: np.ndarray, sizes: np.ndarray | None = None) -> float:
    """Distance (mm) from the largest 26-connected piece to the farthest other piece (0: one piece).

    Each other piece's distance is that between its voxel nearest to the largest piece and that
    voxel's nearest voxel of the largest piece (centre to centre, in mm). Both voxels of a nearest
    pair lie on their pieces' surfaces (from an inner voxel, one step toward the other voxel is
    still in the piece and nearer), so only surface voxels are compared, in a k-d tree.

    A piece is first measured in its own box widened by :data:`DETACHED_MARGIN` voxels (where that
    box is under an eighth of the structure's): a voxel of the largest piece outside it lies at
    least ``(margin + 1) x spacing`` away along a widened side, so a distance found within that
    reach is exact. The pieces left (far, large, or with none of the largest piece nearby) are
    measured against the whole largest piece's surface, each query bounded by the distance of the
    piece's voxel nearest the largest piece's centre (far points are then dismissed at once).
    """
    if count <= 1:
        return 0.0
    sizes = np.bincount(pieces.ravel()) if sizes is None else sizes
    largest = int(np.argmax(sizes[1:])) + 1
    shape, farthest, left = np.array(pieces.shape), 0.0, []
    for label, box in enumerate(ndimage.find_objects(pieces), start=1):
        if box is None or label == largest:
            continue
        low = np.maximum([b.start - DETACHED_MARGIN for b in box], 0)
        high = np.minimum([b.stop + DETACHED_MARGIN for b in box], shape)
        distance = None
        if np.prod(high - low) * 8 <= pieces.size:
            distance = _local_distance(pieces, label, largest, low, high, spacing)
        if distance is None:
            left.append(label)
        else:
            farthest = max(farthest, distance)
    if left:
        farthest = max(farthest, _farthest_from_largest(pieces, largest, left, spacing))
    return farthest


def _surface_points(mask: np.ndarray, spacing) -> np.ndarray:
    """``(N, 3)`` millimetre coordinates of the voxels of ``mask`` with a face neighbour outside it
    (or on the array's edge)."""
    return np.argwhere(mask & ~_erode_faces(mask)) * spacing


def _local_distance(pieces: np.ndarray, label: int, largest: int, low, high, spacing) -> float | None:
    """Piece ``label``'s distance to the ``largest`` one within ``pieces[low:high]``, or None when
    the box holds none of it or the distance found exceeds the reach that makes it exact. The
    largest piece's voxels on the box's edge count as surface: a superset, so the nearest is among
    them (a step toward the piece from an inner voxel stays inside the box)."""
    part = pieces[tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))]
    target = part == largest
    if not target.any():
        return None
    widened = [a for a in range(3) if low[a] > 0 or high[a] < pieces.shape[a]]  # sides with voxels beyond
    reach = (DETACHED_MARGIN + 1) * min((spacing[a] for a in widened), default=np.inf)
    nearest = float(cKDTree(_surface_points(target, spacing)).query(_surface_points(part == label, spacing))[0].min())
    return nearest if nearest <= reach else None


def _farthest_from_largest(pieces: np.ndarray, largest: int, labels, spacing) -> float:
    """The largest of the distances of the pieces ``labels`` to the ``largest`` piece, over its whole surface."""
    mask = pieces != 0
    surface = np.argwhere(mask & ~_erode_faces(mask))  # 26-connected pieces never touch: each one's surface
    named = pieces[tuple(surface.T)]
    tree = cKDTree(surface[named == largest] * spacing)
    centre, wanted = tree.data.mean(axis=0), np.isin(named, labels)
    surface, named = surface[wanted] * spacing, named[wanted]
    order = np.argsort(named, kind="stable")
    farthest = 0.0
    for piece in np.split(surface[order], np.flatnonzero(np.diff(named[order])) + 1):
        seed = piece[np.argmin(((piece - centre) ** 2).sum(axis=1))]
        bound = float(tree.query(seed)[0])  # the seed's distance: the piece's is at most this
        farthest = max(farthest, float(tree.query(piece, distance_upper_bound=bound * (1 + 1e-9) + 1e-9)[0].min()))
    return farthest


def _shifted(axis: int, step: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index pairs ``(to, from)`` that move an array's values one voxel by ``step`` along ``axis``."""
    to, source = [slice(None)] * 3, [slice(None)] * 3
    to[axis], source[axis] = (slice(1, None), slice(None, -1)) if step > 0 else (slice(None, -1), slice(1, None))
    return tuple(to), tuple(source)


_FACE_SHIFTS = [_shifted(axis, step) for axis in range(3) for step in (1, -1)]


def _erode_faces(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by the 6-connected cross (outside the array: background, so the array's
    outer voxels erode), as ``ndimage.binary_erosion(mask)``."""
    out = mask.copy()
    for to, source in _FACE_SHIFTS:
        out[to] &= mask[source]
    for axis in range(3):
        np.moveaxis(out, axis, 0)[[0, -1]] = False
    return out


def _cavity_voxels(padded: np.ndarray) -> float:
    """Background voxels of a zero-padded mask enclosed in 3D (6-connected, as fill_holes), in one
    labelling pass: the padding is one piece, every other background piece is a cavity."""
    pieces = cc3d.connected_components(~padded, connectivity=6)
    return float(np.count_nonzero(pieces)) - float(np.count_nonzero(pieces == pieces.flat[0]))


def _structure_values(mask, box, affine, spacing, midline_x: float, axis: int, entropy, shape) -> dict[str, float]:
    pieces, count = _pieces(mask)
    sizes = np.bincount(pieces.ravel()) if count > 1 else None
    count, largest = _components(sizes, count)
    areas = _slice_areas(mask)
    holes, surface = _hole_values(mask), surface_values(mask)
    values = {"lateral_offset_mm": midline_x - _world_x(affine, _centroid(mask, box)),
              "components": count, "largest_component_fraction": largest,
              "filled_volume_ratio": holes["filled_volume_ratio"], "slice_gap_fraction": _gap_fraction(areas[axis]),
              "cut_face": _cut_face(areas, box, shape), "detached_mm": _detached_mm(pieces, count, spacing, sizes),
              "pits": surface["pits"], "cavity_fraction": holes["cavity_fraction"],
              "closing_gain": surface["closing_gain"]}
    if entropy is not None:
        values["mean_entropy"] = float(np.asarray(entropy[box])[mask].mean())
    return values


#: Label-image disagreement: two structures' median signals must differ by this much (after scaling
#: each channel to [0, 1]) for their voxels to tell them apart, and a voxel must lie this much nearer
#: the other's median than its own to count as the other's tissue.
IMAGE_DISTINCT, IMAGE_MARGIN = 0.15, 0.05


#: Width (voxels) of the Gaussian that smooths the bias field divided out first.
IMAGE_BIAS_SIGMA = 4.0


#: ``image_enclosed``: a voxel is enclosed by a structure when at least ENCLOSED_DIRECTIONS of the
#: 26 grid directions meet the structure within ENCLOSED_REACH voxels (a voxel outside a flat face
#: meets it in 9 directions, a one-voxel dent in the face in 17, a hole's voxels in nearly all 26).
ENCLOSED_DIRECTIONS, ENCLOSED_REACH = 16, 4


#: ``image_enclosed`` compares every channel (a Dixon image's in- and opposed-phase too: a hole's few
#: voxels are told apart from a similar tissue by the channel that separates them most), so pairs of
#: labels count as distinct from this median distance on.
ENCLOSED_DISTINCT = 0.1


_DIRECTIONS = np.array([d for d in itertools.product((-1, 0, 1), repeat=3) if any(d)])


def _scaled_channels(labelmap: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``(X, Y, Z, C)`` float32, each channel's [P1, P99] over the labelled voxels mapped to [0, 1]
    (every channel of a Dixon image, water and fat first; a single-channel MR or CT as one)."""
    x = np.asarray(image, np.float32)
    x = x if x.ndim == 4 else x[..., None]
    labelled = labelmap > 0
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        low, high = np.percentile(x[..., c][labelled], [1, 99])
        out[..., c] = np.clip((x[..., c] - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return out


def _enclosure(mask: np.ndarray, points: np.ndarray, reach: int = ENCLOSED_REACH) -> np.ndarray:
    """For each voxel of ``points`` (``(N, 3)`` indices into ``mask``), how many of the 26 grid
    directions meet ``mask`` within ``reach`` voxels (0..26)."""
    count = np.zeros(len(points), np.int64)
    shape = np.array(mask.shape)
    for direction in _DIRECTIONS:
        hit = np.zeros(len(points), bool)
        for step in range(1, reach + 1):
            q = points + step * direction
            inside = np.all((q >= 0) & (q < shape), axis=1)
            hit[inside] |= mask[tuple(q[inside].T)]
        count += hit
    return count


def _enclosed_disagreement(labelmap: np.ndarray, x: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Per label, the voxels labelled as another structure that it encloses (:func:`_enclosure`)
    and whose intensity ``x`` fits its median better than their own label's (pairs whose medians
    differ by :data:`ENCLOSED_DISTINCT` only)."""
    counts = np.zeros(len(med), np.int64)
    # ||x - m||^2 = ||x||^2 - 2 x.m + ||m||^2: one product per voxel and label instead of a difference
    # image; a voxel fits label X better than its own when ||x - m_X|| < ||x - m_own|| - margin.
    norm2 = np.einsum("...c,...c->...", x, x)
    own = norm2 + np.einsum("lc,lc->l", med, med)[labelmap]
    for c in range(x.shape[-1]):  # channel by channel: no (X, Y, Z, C) copy of the medians
        own -= 2.0 * x[..., c] * med[:, c][labelmap]
    limit = np.sqrt(np.maximum(own, 0.0)) - IMAGE_MARGIN
    limit = np.where(limit > 0, limit * limit, -1.0).astype(np.float32)  # no fit possible: -1
    distinct = np.linalg.norm(med[:, None] - med[None], axis=-1) > ENCLOSED_DISTINCT
    distinct[:, 0] = False  # background is never a hole's label
    for label, box in enumerate(ndimage.find_objects(labelmap), start=1):
        if box is None:
            continue
        box = tuple(slice(max(b.start - ENCLOSED_REACH, 0), min(b.stop + ENCLOSED_REACH, n))
                    for b, n in zip(box, labelmap.shape))
        sub = labelmap[box]
        candidates = distinct[label][sub] & (limit[box] > 0)
        points = np.argwhere(candidates)
        if not len(points):
            continue
        index = tuple(points.T + np.array([b.start for b in box])[:, None])
        m = med[label]
        fits = norm2[index] - 2.0 * (x[index] @ m) + float(m @ m) < limit[index]
        points = points[fits]
        if len(points):
            counts[label] = int((_enclosure(sub == label, points) >= ENCLOSED_DIRECTIONS).sum())
    return counts


def image_disagreement(labelmap: np.ndarray, image: np.ndarray) -> dict[int, dict[str, float]]:
    """Per structure, where the image disagrees with the label map at its boundary.

    ``image_inside``: the share of its voxels touching another structure whose intensity fits that
    structure better than its own (it holds the neighbour's tissue, as after a dilation or a blob);
    ``image_outside``: touching voxels labelled otherwise whose intensity fits it better, relative
    to its volume (its tissue labelled as something else, as after a hole, an erosion or a cut);
    ``image_enclosed``: how many voxels labelled otherwise it encloses whose intensity fits it
    better (a hole refilled with another label while the image still shows the structure: a
    count, since a hole is a few voxels whatever the structure's size).
    A smooth multiplicative bias field (the image over its labels' medians, smoothed) is divided out
    first. Only pairs whose median signals differ by :data:`IMAGE_DISTINCT` are compared: a muscle's
    hole filled with another muscle is invisible.

    Args:
        labelmap: ``(X, Y, Z)`` labels.
        image: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` on the same grid (the first two channels for
            ``image_inside`` / ``image_outside``, every channel for ``image_enclosed``).
    """
    every = _scaled_channels(labelmap, image)  # each channel scaled alone: water, fat first
    n = int(labelmap.max()) + 1
    medians = _label_medians(labelmap, n)
    every = every / np.maximum(_bias_field(labelmap, every[..., :2], medians), 0.3)[..., None]
    every_med = medians(every)
    inside, outside = _boundary_disagreement(labelmap, every[..., :2], every_med[:, :2])
    voxels = np.bincount(labelmap.ravel(), minlength=n)
    held = np.bincount(labelmap[inside], minlength=n)
    lent = np.bincount(np.array([t for _, t in outside], np.int64), minlength=n)
    enclosed = _enclosed_disagreement(labelmap, every, every_med)
    return {int(l): {"image_inside": float(held[l] / voxels[l]), "image_outside": float(lent[l] / voxels[l]),
                     "image_enclosed": float(enclosed[l])}
            for l in range(1, n) if voxels[l]}


def _label_medians(labelmap: np.ndarray, n: int):
    """``medians(values)``: ``(n, C)`` per-label medians of ``values`` ``(X, Y, Z, C)``, with the
    voxels grouped by label once (one stable sort, radix for small integers)."""
    flat = labelmap.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(n + 1))

    def medians(values):
        grouped = values.reshape(-1, values.shape[-1])[order]
        med = np.zeros((n, values.shape[-1]), np.float32)
        for label in range(n):
            if starts[label + 1] > starts[label]:
                med[label] = np.median(grouped[starts[label]:starts[label + 1]], axis=0)
        return med

    return medians


def _bias_field(labelmap: np.ndarray, x: np.ndarray, medians) -> np.ndarray:
    """The smooth multiplicative bias field ``(X, Y, Z)``: the image over its labels' medians,
    smoothed (outside the labels and where the reference is dark, weighted out)."""
    reference = medians(x)[labelmap].sum(-1)
    weight = ((labelmap > 0) & (reference > 0.05)).astype(np.float32)
    ratio = np.where(weight > 0, x.sum(-1) / np.maximum(reference, 1e-3), 0.0)
    return (ndimage.gaussian_filter(ratio * weight, IMAGE_BIAS_SIGMA)
            / np.maximum(ndimage.gaussian_filter(weight, IMAGE_BIAS_SIGMA), 1e-3))


def _boundary_disagreement(labelmap: np.ndarray, x: np.ndarray, med: np.ndarray):
    """``(inside, outside)``: the voxels touching another structure whose intensity fits that
    neighbour better than their own label (bool ``(X, Y, Z)``), and ``{(flat index, neighbour)}``."""
    inside = np.zeros(labelmap.shape, bool)
    outside = set()
    for axis in range(3):
        for shift in (1, -1):
            other = np.roll(labelmap, shift, axis)
            edge = [slice(None)] * 3
            edge[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
            touching = (other != labelmap) & (labelmap > 0) & (other > 0)
            touching[tuple(edge)] = False  # np.roll wraps around: the far face is no neighbour
            own, theirs, values = labelmap[touching], other[touching], x[touching]
            fits_theirs = ((np.linalg.norm(med[own] - med[theirs], axis=1) > IMAGE_DISTINCT)
                           & (np.linalg.norm(values - med[theirs], axis=1)
                              < np.linalg.norm(values - med[own], axis=1) - IMAGE_MARGIN))
            where = np.flatnonzero(touching)[fits_theirs]
            inside.ravel()[where] = True
            outside.update(zip(where.tolist(), theirs[fits_theirs].tolist()))
    return inside, outside


@functools.lru_cache(maxsize=None)
def partner_labels(scheme: str | None) -> dict[int, int]:
    """``{label: its other-side partner}`` of a scheme (``{}`` without one)."""
    if scheme is None:
        return {}
    return get_scheme(scheme).lateral_partners()


def structure_checks(labelmap: np.ndarray, affine: np.ndarray, body_mask: np.ndarray | None = None,
                     entropy: np.ndarray | None = None, labels=None, image: np.ndarray | None = None,
                     partners: Mapping[int, int] | None = None) -> dict[int, dict[str, float]]:
    """The values of every check of :data:`CHECKS` for each structure of a label map.

    Args:
        labelmap: ``(X, Y, Z)`` non-negative integer labels, 0 = background.
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix of the label map.
        body_mask: optional ``(X, Y, Z)`` body mask for the midline (default: the labelled voxels).
        entropy: optional ``(X, Y, Z)`` per-voxel entropy in [0, 1] of the prediction that made
            ``labelmap`` (else there is no ``mean_entropy``).
        labels: label values to report (default all present).
        image: optional ``(X, Y, Z)`` or ``(X, Y, Z, C)`` image the map labels (else there are no
            ``image_inside`` / ``image_outside``; :func:`image_disagreement`).
        partners: optional ``{label: other-side label}`` (:func:`partner_labels`); a paired
            structure whose partner is present gets ``partner_log_ratio``.

    Returns:
        ``{label: {"lateral_offset_mm": mm (+ = left of the midline), "components": int,
        "largest_component_fraction": 0..1, "filled_volume_ratio": >= 1,
        "slice_gap_fraction": 0..1, "cut_face": 0..1, "detached_mm": mm, "pits": int,
        "cavity_fraction": >= 0, "closing_gain": >= 0, and where their inputs are given
        "mean_entropy": 0..1, "image_inside", "image_outside", "image_enclosed": >= 0,
        "partner_log_ratio"}}``;
        ``{}`` for an empty map.

    Raises:
        ValueError: arrays of different shapes, or an affine that is not 4x4.
    """
    # C order: each structure's mask then lies as cc3d and the shifted views read fastest (the
    # Fortran-ordered arrays NIfTI files load as took twice as long); integers for find_objects
    labelmap = np.ascontiguousarray(labelmap if np.issubdtype(np.asarray(labelmap).dtype, np.integer)
                                    else np.asarray(labelmap).astype(np.int64))
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    for name, other in (("body mask", body_mask), ("entropy map", entropy), ("image", image)):
        if other is not None and np.shape(other)[:3] != labelmap.shape:
            raise ValueError(f"{name} shape {np.shape(other)} differs from the label map's {labelmap.shape}")
    body = body_mask if body_mask is not None else labelmap != 0
    if not np.any(body):
        return {}
    midline_x = _world_x(affine, mass_centre(body))
    axis = superior_axis(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    wanted = None if labels is None else {int(v) for v in labels}
    disagreement = image_disagreement(labelmap.astype(np.int64), image) if image is not None else {}
    voxels = np.bincount(labelmap.ravel())
    result = {}
    for index, box in enumerate(ndimage.find_objects(labelmap), start=1):
        if box is None or (wanted is not None and index not in wanted):
            continue
        mask = labelmap[box] == index
        result[index] = _structure_values(mask, box, affine, spacing, midline_x, axis, entropy, labelmap.shape)
        result[index].update(disagreement.get(index, {}))
        partner = (partners or {}).get(index)
        if partner is not None and partner < voxels.size and voxels[partner]:
            result[index]["partner_log_ratio"] = math.log(voxels[index] / voxels[partner])
    return result


def _side_of(name: str | None) -> int:
    """+1 for a ``*_left`` structure, -1 for ``*_right``, 0 otherwise (or without a name)."""
    name = name or ""
    return 1 if name.endswith("_left") else -1 if name.endswith("_right") else 0


def _outside(value: float, low: float, high: float, rule: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False  # not measured (e.g. no entropy map): not judged
    if rule == "outside":
        return not low <= value <= high
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
#: paper's principle, a real anomaly deviates in several independent ways at once, over every
#: feature and check), or on the side rule or the missing rule. Three, not the paper's two: with
#: sixteen signals, two out of range by chance is common (measured in docs/solf.md: on 1,000
#: phantoms at 5 mm precision 0.28 with two, 0.61 with three, at recall 0.92 and 0.87).
COMBINED_MIN_SIGNALS = 3


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
