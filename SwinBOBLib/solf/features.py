"""Per-organ shape features of a label map in one pass over the voxels (UKBOB SOLF, section 3.2).

For every label ``c`` present in a label map (background 0 excluded) :func:`organ_features` gives

=====================  =====  ===============================================================
key                    unit   definition
=====================  =====  ===============================================================
``voxels``             -      voxel count V_c
``volume_mm3``         mm^3   V_c times the voxel volume
``normalized_volume``  -      V_c / V_body (body voxels: non-zero labels, or ``body_mask``)
``surface_mm2``        mm^2   exposed voxel faces (to another label or the image border),
                              each weighted by its physical area
``sphericity``         -      pi^(1/3) (6 V)^(2/3) / A, V in mm^3, A in mm^2
``eccentricity``       -      sqrt(1 - l_min / l_max) of the covariance of the voxel-centre
                              coordinates in mm (population covariance); 0 for one voxel
=====================  =====  ===============================================================

With unit spacing these are the paper's voxel-count and face-count definitions.

Speed: a numba kernel walks the array once for all labels together. Along the contiguous axis it
works on *runs* of equal labels (a run adds its count and its coordinate moments in closed form and
always exposes exactly two faces along that axis); along the two other axes it compares each voxel
with its +1 neighbour. Coordinate moments are accumulated as exact int64 sums of voxel indices and
the covariance is formed in Python integers, so there is no cancellation however far an organ lies
from the origin. Every feature is invariant to permuting the axes, which lets a Fortran-ordered
array (as nibabel returns) be read through its C-ordered transpose without a copy.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from SwinBOBLib.runtime.jit import compiled

#: Feature name -> (unit, description). The order is the column order of feature tables.
FEATURES: dict[str, tuple[str, str]] = {
    "voxels": ("", "voxel count V_c"),
    "volume_mm3": ("mm3", "V_c times the voxel volume"),
    "normalized_volume": ("", "V_c / V_body, V_body the body voxel count"),
    "surface_mm2": ("mm2", "area of the exposed voxel faces"),
    "sphericity": ("", "pi^(1/3) (6 V)^(2/3) / A"),
    "eccentricity": ("", "sqrt(1 - l_min / l_max) of the coordinate covariance in mm"),
}


# Above this label value, labels are renumbered first (np.unique) to keep the per-label tables small.
_MAX_DIRECT_LABEL = 1 << 20


def _accumulate_python(labels, num_labels):  # pragma: no cover - compiled
    """One pass over a C-ordered (X, Y, Z) label array.

    Returns:
        counts (L,), moments (L, 9) int64 sums of i, j, k, ii, jj, kk, ij, ik, jk over the voxel
        indices, faces (L, 3) exposed faces normal to each axis.
    """
    nx, ny, nz = labels.shape
    counts = np.zeros(num_labels, np.int64)
    moments = np.zeros((num_labels, 9), np.int64)
    faces = np.zeros((num_labels, 3), np.int64)
    for i in range(nx):
        for j in range(ny):
            row = labels[i, j]
            k = 0
            while k < nz:  # runs of one label along the contiguous axis
                value = row[k]
                start = k
                k += 1
                while k < nz and row[k] == value:
                    k += 1
                n = k - start
                sum_k = (start + k - 1) * n // 2
                last, first = k - 1, start - 1
                sum_kk = (last * (last + 1) * (2 * last + 1) - first * (first + 1) * (2 * first + 1)) // 6
                counts[value] += n
                moments[value, 0] += n * i
                moments[value, 1] += n * j
                moments[value, 2] += sum_k
                moments[value, 3] += n * i * i
                moments[value, 4] += n * j * j
                moments[value, 5] += sum_kk
                moments[value, 6] += n * i * j
                moments[value, 7] += i * sum_k
                moments[value, 8] += j * sum_k
                faces[value, 2] += 2  # a maximal run ends at another label or the border
            if i + 1 < nx:
                below = labels[i + 1, j]
                for k in range(nz):
                    if row[k] != below[k]:
                        faces[row[k], 0] += 1
                        faces[below[k], 0] += 1
            if j + 1 < ny:
                beside = labels[i, j + 1]
                for k in range(nz):
                    if row[k] != beside[k]:
                        faces[row[k], 1] += 1
                        faces[beside[k], 1] += 1
    for j in range(ny):  # faces on the image border
        for k in range(nz):
            faces[labels[0, j, k], 0] += 1
            faces[labels[nx - 1, j, k], 0] += 1
    for i in range(nx):
        for k in range(nz):
            faces[labels[i, 0, k], 1] += 1
            faces[labels[i, ny - 1, k], 1] += 1
    return counts, moments, faces


_accumulate = compiled(_accumulate_python)


def check_spacing(spacing: Sequence[float], source: str = "label map") -> np.ndarray:
    """Voxel spacing as a (3,) float64 array in mm; raise ValueError unless three finite values > 0."""
    try:
        values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: spacing {spacing!r} is not three numbers (mm)") from None
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{source}: spacing {tuple(np.atleast_1d(spacing))} must be three finite "
                         "voxel sizes > 0 mm, in the array's axis order")
    return values


def _as_label_codes(labelmap: np.ndarray, source: str) -> np.ndarray:
    """The label map as uint8/uint16/uint32 (no copy where the bits allow); raise on bad values."""
    array = np.asarray(labelmap)
    if array.ndim != 3:
        raise ValueError(f"{source}: label map must be 3D (X, Y, Z), got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "b":
        return array.view(np.uint8)
    if kind not in "iuf":
        raise ValueError(f"{source}: label map dtype {array.dtype} is not an integer type")
    if array.size == 0:
        return array.astype(np.uint8)
    if kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{source}: label map holds non-integer values (dtype {array.dtype}); "
                             "labels must be whole numbers")
    if kind in "if" and array.min() < 0:
        raise ValueError(f"{source}: label map holds negative values (min {array.min()})")
    if kind == "f" or array.dtype.itemsize > 4:
        high = int(array.max())
        dtype = np.uint8 if high < 1 << 8 else np.uint16 if high < 1 << 16 else np.uint32
        if high >= 1 << 32:
            raise ValueError(f"{source}: label value {high} is too large (max 2**32 - 1)")
        return array.astype(dtype)
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))  # non-negative: same bits


def _body_voxels(codes: np.ndarray, counts: np.ndarray, body_mask, source: str) -> int:
    if body_mask is None:
        return int(codes.size - counts[0])
    voxels = int(np.count_nonzero(body_mask))  # its shape was checked by organ_features
    if voxels == 0:
        raise ValueError(f"{source}: body mask is empty; cannot normalise volumes")
    return voxels


def _eccentricities(counts: np.ndarray, moments: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """(L,) eccentricity from exact index moments; covariance formed in Python integers."""
    pairs = [(0, 0, 3), (1, 1, 4), (2, 2, 5), (0, 1, 6), (0, 2, 7), (1, 2, 8)]
    cov = np.zeros((len(counts), 3, 3))
    for row, (n, m) in enumerate(zip(counts.tolist(), moments.tolist())):
        for a, b, ab in pairs:  # n^2 cov_ab = n S_ab - S_a S_b, exact in Python ints
            cov[row, a, b] = cov[row, b, a] = (n * m[ab] - m[a] * m[b]) / (n * n)
    cov *= np.outer(spacing, spacing)
    eig = np.linalg.eigvalsh(cov) if len(counts) else np.zeros((0, 3))
    low, high = np.clip(eig[:, 0], 0, None), eig[:, 2]
    ratio = np.divide(low, high, out=np.ones_like(high), where=high > 0)
    return np.sqrt(np.clip(1.0 - ratio, 0.0, 1.0))


def _renumber(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, inverse = np.unique(codes, return_inverse=True)
    if values[0] != 0:  # keep 0 as the background code
        values = np.concatenate([[0], values])
        inverse = inverse + 1
    return inverse.reshape(codes.shape).astype(np.uint32), values


def organ_features(labelmap: np.ndarray, spacing: Sequence[float] = (1, 1, 1),
                   body_mask: np.ndarray | None = None, labels: Iterable[int] | None = None, *,
                   source: str = "label map") -> dict[int, dict[str, float]]:
    """Shape features of every structure of a label map (see the module docstring for definitions).

    Args:
        labelmap: ``(X, Y, Z)`` integer label array (any integer dtype, bool, or float holding whole
            numbers), 0 = background.
        spacing: voxel size in mm along the array's three axes.
        body_mask: optional ``(X, Y, Z)`` array, non-zero inside the body; V_body is its voxel count.
            Default: the non-zero voxels of ``labelmap`` (right for UKBOB maps, where every body voxel
            is labelled; label maps of organs only need a mask, e.g. :func:`body_mask_from_image`).
        labels: label values to report; default all present. Requested labels that are absent
            are left out.
        source: name used in error messages (e.g. the file path).

    Returns:
        ``{label: {"voxels": int, "volume_mm3", "normalized_volume", "surface_mm2", "sphericity",
        "eccentricity": float}}`` ordered by label; ``{}`` for an empty label map.

    Raises:
        ValueError: not 3D, non-integer or negative labels, bad spacing, a body mask of another
            shape or an empty body mask.
    """
    spacing = check_spacing(spacing, source)
    codes = _as_label_codes(labelmap, source)
    if body_mask is not None and np.shape(body_mask) != codes.shape:
        raise ValueError(f"{source}: body mask shape {np.shape(body_mask)} differs from the label "
                         f"map's {codes.shape}")
    if codes.size == 0:
        return {}
    values, high = None, int(codes.max())
    if high >= _MAX_DIRECT_LABEL:
        codes, values = _renumber(codes)
        high = len(values) - 1
    scan, scan_spacing = codes, spacing
    if not codes.flags.c_contiguous:
        if codes.flags.f_contiguous:  # features are invariant to axis order: read the transpose
            scan, scan_spacing = codes.T, spacing[::-1]
        else:
            scan = np.ascontiguousarray(codes)
    counts, moments, faces = _accumulate(scan, high + 1)
    body = _body_voxels(codes, counts, body_mask, source)
    present = np.flatnonzero(counts)
    present = present[present > 0]
    if labels is not None:
        label_of = values if values is not None else np.arange(high + 1)
        present = present[np.isin(label_of[present], [int(v) for v in labels])]
    return _feature_table(present, counts, moments, faces, scan_spacing, body, values)


def _feature_table(present, counts, moments, faces, spacing, body, values) -> dict[int, dict[str, float]]:
    voxel_volume = float(np.prod(spacing))
    face_areas = np.array([spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]])
    n = counts[present]
    volume = n * voxel_volume
    surface = faces[present] @ face_areas
    sphericity = math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / surface
    eccentricity = _eccentricities(n, moments[present], spacing)
    table = {}
    for row, code in enumerate(present.tolist()):
        label = int(values[code]) if values is not None else int(code)
        table[label] = {
            "voxels": int(n[row]),
            "volume_mm3": float(volume[row]),
            "normalized_volume": float(n[row] / body),
            "surface_mm2": float(surface[row]),
            "sphericity": float(sphericity[row]),
            "eccentricity": float(eccentricity[row]),
        }
    return dict(sorted(table.items()))
