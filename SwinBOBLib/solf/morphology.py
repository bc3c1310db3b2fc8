"""Compiled morphology of one structure's mask for the label checks (:mod:`SwinBOBLib.solf.checks`):
one-voxel pits and a closing by the 6-connected cross, in loops numba compiles once.

The shifted-view numpy versions these replace made about 40 numpy calls per structure, a few
microseconds each: on a small scan's 30 structures a third of its label checks' time (the MR
sample: 18 ms of 57 ms; a 30 x 25 x 12 mask 0.48 -> 0.10 ms, a 100 x 100 x 60 one 4.2 -> 1.3 ms).
The loops give exactly what ``scipy.ndimage`` gives (tested against its convolution and
``binary_closing``).
"""

from __future__ import annotations

import numpy as np

from SwinBOBLib.runtime.jit import compiled


def _step_python(source, out, dilate):  # pragma: no cover - compiled
    """One dilation (the voxel or any face neighbour in ``source``) or erosion (the voxel and all
    six) by the 6-connected cross, into ``out``, of 0/1 bytes whose outer layer is 0 and stays 0
    (a mask padded by :data:`CLOSING_PAD` never reaches it: a dilation would find no voxel there,
    an erosion erodes it, as outside the array is background)."""
    nx, ny, nz = source.shape
    out[:] = 0
    for i in range(1, nx - 1):
        for j in range(1, ny - 1):
            for k in range(1, nz - 1):
                if dilate:
                    out[i, j, k] = (source[i, j, k] | source[i - 1, j, k] | source[i + 1, j, k] | source[i, j - 1, k]
                                    | source[i, j + 1, k] | source[i, j, k - 1] | source[i, j, k + 1])
                else:
                    out[i, j, k] = (source[i, j, k] & source[i - 1, j, k] & source[i + 1, j, k] & source[i, j - 1, k]
                                    & source[i, j + 1, k] & source[i, j, k - 1] & source[i, j, k + 1])


_step = compiled(_step_python)


def _surface_counts_python(padded):  # pragma: no cover - compiled
    """``(pits, closed voxels)`` of a mask of 0/1 bytes padded by :data:`CLOSING_PAD`: voxels
    outside it with at least 5 of their 6 face neighbours in it, and the voxels of its closing (two
    dilations, then two erosions)."""
    nx, ny, nz = padded.shape
    pits = 0
    for i in range(1, nx - 1):
        for j in range(1, ny - 1):
            for k in range(1, nz - 1):
                around = (padded[i - 1, j, k] + padded[i + 1, j, k] + padded[i, j - 1, k] + padded[i, j + 1, k]
                          + padded[i, j, k - 1] + padded[i, j, k + 1])
                pits += (padded[i, j, k] == 0) & (around >= 5)
    first = np.empty_like(padded)
    second = np.empty_like(padded)
    _step(padded, first, True)
    _step(first, second, True)
    _step(second, first, False)
    _step(first, second, False)
    closed = 0
    for value in second.ravel():
        closed += value
    return pits, closed


_surface_counts = compiled(_surface_counts_python)


#: Zero voxels around a mask before its closing: two dilations reach two voxels out, so the closing
#: never meets the array's edge (one more for the pits' neighbours).
CLOSING_PAD = 3


def surface_values(mask: np.ndarray) -> dict[str, float]:
    """One-voxel pits and a closing's gain (two 6-connected iterations, as a share of the volume)
    of one structure's mask."""
    voxels = int(np.count_nonzero(mask))
    padded = np.pad(np.asarray(mask, dtype=bool), CLOSING_PAD).view(np.uint8)  # C order, bytes of 0 and 1
    pits, closed = _surface_counts(padded)
    return {"pits": int(pits), "closing_gain": float(closed - voxels) / voxels}

