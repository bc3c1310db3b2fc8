"""From the network's grid back to the scan's: probabilities interpolated slab by slab (bounded
memory), argmax to labels, and the entropy normalised by log(C).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from SwinBOBLib.inference.preprocess import Prepared
from SwinBOBLib.models.heads import entropy as voxel_entropy


def _lerp_axis(tensor: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``tensor`` along ``axis`` at fractional source ``coords``."""
    n = tensor.shape[axis]
    lo = coords.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    weight = (coords - lo.to(coords.dtype)).to(tensor.dtype)
    view = [1] * tensor.ndim
    view[axis] = -1
    weight = weight.view(view)
    return tensor.index_select(axis, lo) * (1 - weight) + tensor.index_select(axis, hi) * weight


def _source_coords(n_out: int, n_src: int) -> torch.Tensor:
    """Corner-aligned source coordinates of ``n_out`` output samples over ``n_src`` source samples."""
    if n_out == 1 or n_src == 1:
        return torch.zeros(n_out, dtype=torch.float64)
    return torch.arange(n_out, dtype=torch.float64) * (n_src - 1) / (n_out - 1)


def probability_slabs(probs: torch.Tensor, shape: Sequence[int], slab: int = 16):
    """Yield ``(z0, z1, probs_slab (K, X, Y, z1 - z0) float32)`` of ``probs`` ``(1, K, X', Y', Z')``
    interpolated onto the grid ``shape`` (corner-aligned, the inverse of :func:`resample`)."""
    probs = probs[0]
    xs = _source_coords(shape[0], probs.shape[1])
    ys = _source_coords(shape[1], probs.shape[2])
    zs = _source_coords(shape[2], probs.shape[3])
    same_xy = tuple(probs.shape[1:3]) == tuple(shape[:2])
    for z0 in range(0, shape[2], slab):
        z1 = min(shape[2], z0 + slab)
        lo = int(zs[z0].floor())
        hi = min(int(zs[z1 - 1].ceil()), probs.shape[3] - 1)
        part = probs[:, :, :, lo:hi + 1].float()
        if not same_xy:
            part = _lerp_axis(_lerp_axis(part, 1, xs.to(torch.float32)), 2, ys.to(torch.float32))
        if tuple(probs.shape[1:]) != tuple(shape):
            part = _lerp_axis(part, 3, (zs[z0:z1] - lo).to(torch.float32))
        yield z0, z1, part.cpu()


def postprocess(probs: torch.Tensor, prepared: Prepared, keep_probabilities: bool = False,
                activation: str = "softmax", decode: Callable[[torch.Tensor], np.ndarray] | None = None):
    """Probabilities on the model grid -> channel argmax, entropy (and probabilities) on the RAS input grid.

    ``activation`` picks the entropy (:func:`SwinBOBLib.models.heads.entropy`); ``decode`` maps a slab of
    probabilities ``(K, X, Y, z)`` to integers ``(X, Y, z)`` (default: the channel argmax; a
    sigmoid head passes :meth:`SwinBOBLib.models.heads.RegionHead.labels`).

    Returns:
        ``(channels (X, Y, Z) int64, entropy (X, Y, Z) float32, probabilities (X, Y, Z, K) float32
        or None)``, all in the RAS voxel order of the input grid.
    """
    shape = prepared.ras_shape
    channels = np.zeros(shape, dtype=np.int64)
    entropy = np.zeros(shape, dtype=np.float32)
    kept = np.zeros((*shape, probs.shape[1]), dtype=np.float32) if keep_probabilities else None
    for z0, z1, part in probability_slabs(probs, shape):
        channels[:, :, z0:z1] = decode(part) if decode is not None else part.argmax(0).numpy()
        entropy[:, :, z0:z1] = voxel_entropy(part[None], activation)[0].numpy()
        if kept is not None:
            kept[:, :, z0:z1] = np.moveaxis(part.numpy(), 0, -1)
    return channels, entropy, kept
