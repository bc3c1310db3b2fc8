"""The argmax of the probabilities interpolated onto the input grid, interpolating only where the
answer is not already known: a compiled walk over the model grid's cells.

An input voxel lies in one cell of the model grid (the box of its 8 nearest model-grid voxels) and
its interpolated probabilities are a convex combination of those 8 corners', the same weights for
every channel. So:

* where the 8 corners have the same argmax ``a``, the voxel's argmax is ``a`` (``a`` beats every
  channel at every corner, strictly those before it, so it beats them in any convex combination):
  nothing is interpolated; on the MR sample three voxels in four lie in such cells;
* elsewhere a channel ``k`` can win only if its largest corner value reaches the winner's least
  possible value, at least ``min over corners of p_a`` for each corner's argmax ``a``: only those
  channels are interpolated (trilinear, corner-aligned, in float64), usually two or three of 72.

The dense path (:func:`~SwinBOBLib.inference.postprocess.probability_slabs`: every channel that can
win in a slab interpolated at every voxel of it, in float32) gives the same labels but at voxels
whose two largest interpolated probabilities tie within float32 rounding (tested). This walk takes
a tenth of its time on one CPU core; it reads the probabilities where they lie (no copy), so it
serves probabilities in CPU memory; on a GPU the dense path runs there.
"""

from __future__ import annotations

import numpy as np

from SwinBOBLib.runtime.jit import compiled

#: A channel whose largest corner value falls short of the winner's least possible value by less
#: than this is interpolated anyway (rounding of the float32 probabilities).
MARGIN = 1e-6


def _corner_argmax_python(probs):  # pragma: no cover - compiled
    """Each model-grid voxel's largest channel (the first of a tie): ``(X', Y', Z')`` int32."""
    channels, nx, ny, nz = probs.shape
    best = np.empty((nx, ny, nz), np.float32)
    index = np.zeros((nx, ny, nz), np.int32)
    best[:] = probs[0]
    for k in range(1, channels):
        for i in range(nx):
            for j in range(ny):
                for v in range(nz):
                    if probs[k, i, j, v] > best[i, j, v]:
                        best[i, j, v] = probs[k, i, j, v]
                        index[i, j, v] = k
    return index


_corner_argmax = compiled(_corner_argmax_python)


def _candidates_python(probs, corners, x0, y0, z0, dx, dy, dz, chosen):  # pragma: no cover - compiled
    """The channels that can win somewhere in the cell at (x0, y0, z0) (``dx, dy, dz``: 1, or 0 on
    a one-plane axis) into ``chosen``; returns how many."""
    channels = probs.shape[0]
    floor = 0.0
    for a in range(2):
        for b in range(2):
            for c in range(2):
                k = corners[x0 + a * dx, y0 + b * dy, z0 + c * dz]
                low = 1.0
                for e in range(2):
                    for f in range(2):
                        for g in range(2):
                            low = min(low, probs[k, x0 + e * dx, y0 + f * dy, z0 + g * dz])
                floor = max(floor, low)
    count = 0
    for k in range(channels):
        high = 0.0
        for e in range(2):
            for f in range(2):
                for g in range(2):
                    high = max(high, probs[k, x0 + e * dx, y0 + f * dy, z0 + g * dz])
        if high >= floor - MARGIN:
            chosen[count] = k
            count += 1
    return count


_candidates = compiled(_candidates_python)


def _interpolated_argmax_python(probs, x0, y0, z0, dx, dy, dz, wx, wy, wz, chosen, count):  # pragma: no cover
    """The largest of the ``chosen`` channels interpolated at the fractions (wx, wy, wz) of the cell."""
    best, found = -1.0, chosen[0]
    for n in range(count):
        k = chosen[n]
        value = 0.0
        for e in range(2):
            for f in range(2):
                for g in range(2):
                    weight = ((wx if e else 1.0 - wx) * (wy if f else 1.0 - wy) * (wz if g else 1.0 - wz))
                    value += weight * probs[k, x0 + e * dx, y0 + f * dy, z0 + g * dz]
        if value > best:
            best, found = value, k
    return found


_interpolated_argmax = compiled(_interpolated_argmax_python)


def _walk_python(probs, corners, cell_x, cell_y, cell_z, frac_x, frac_y, frac_z, out):  # pragma: no cover - compiled
    """Fill ``out`` ``(X, Y, Z)`` with each input voxel's argmax channel, cell by cell."""
    nx, ny, nz = probs.shape[1], probs.shape[2], probs.shape[3]
    dx, dy, dz = min(1, nx - 1), min(1, ny - 1), min(1, nz - 1)
    chosen = np.empty(probs.shape[0], np.int64)
    starts_x, starts_y, starts_z = _starts(cell_x, nx), _starts(cell_y, ny), _starts(cell_z, nz)
    for x0 in range(nx):
        for y0 in range(ny):
            for z0 in range(nz):
                if (starts_x[x0] == starts_x[x0 + 1] or starts_y[y0] == starts_y[y0 + 1]
                        or starts_z[z0] == starts_z[z0 + 1]):
                    continue  # no input voxel in this cell
                a = corners[x0, y0, z0]
                uniform = True
                for e in range(2):
                    for f in range(2):
                        for g in range(2):
                            if corners[x0 + e * dx, y0 + f * dy, z0 + g * dz] != a:
                                uniform = False
                if uniform:
                    out[starts_x[x0]:starts_x[x0 + 1], starts_y[y0]:starts_y[y0 + 1], starts_z[z0]:starts_z[z0 + 1]] = a
                    continue
                count = _candidates(probs, corners, x0, y0, z0, dx, dy, dz, chosen)
                for i in range(starts_x[x0], starts_x[x0 + 1]):
                    for j in range(starts_y[y0], starts_y[y0 + 1]):
                        for k in range(starts_z[z0], starts_z[z0 + 1]):
                            out[i, j, k] = _interpolated_argmax(probs, x0, y0, z0, dx, dy, dz, frac_x[i],
                                                                frac_y[j], frac_z[k], chosen, count)


def _starts_python(cells, n):  # pragma: no cover - compiled
    """``starts[c]:starts[c + 1]``: the input indices in model cell ``c`` (``cells`` ascending)."""
    starts = np.zeros(n + 1, np.int64)
    for c in cells:
        starts[c + 1] += 1
    for c in range(n):
        starts[c + 1] += starts[c]
    return starts


_starts = compiled(_starts_python)
_walk = compiled(_walk_python)


def source_coords(n_out: int, n_src: int) -> np.ndarray:
    """Corner-aligned source coordinates (float64) of ``n_out`` output samples over ``n_src`` source
    samples: the first and last samples fixed, as the resampling onto the model grid maps them."""
    if n_out == 1 or n_src == 1:
        return np.zeros(n_out, dtype=np.float64)
    return np.arange(n_out, dtype=np.float64) * (n_src - 1) / (n_out - 1)


def _cells(n_out: int, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``n_out`` output samples' cell (its lower model-grid index, at most ``n_src - 2``)
    and its fraction of the way to the next one."""
    coords = source_coords(n_out, n_src)
    cells = np.minimum(np.floor(coords).astype(np.int64), max(n_src - 2, 0))
    return cells, coords - cells


def cell_argmax(probs: np.ndarray, shape) -> np.ndarray:
    """Channel argmax ``(X, Y, Z)`` (numpy intp) of ``probs`` ``(K, X', Y', Z')`` (float32, any memory
    layout, on the model grid) interpolated onto ``shape`` (trilinear, corner-aligned: the inverse of the resampling
    onto the model grid), interpolating only in cells whose corners disagree."""
    probs = np.asarray(probs, dtype=np.float32)  # read where it lies: the sliding window's crop is a strided view
    corners = _corner_argmax(probs)
    axes = [_cells(int(n), int(m)) for n, m in zip(shape, probs.shape[1:])]
    out = np.empty(tuple(int(n) for n in shape), np.intp)  # indexes a label table as it is
    _walk(probs, corners, axes[0][0], axes[1][0], axes[2][0], axes[0][1], axes[1][1], axes[2][1], out)
    return out
