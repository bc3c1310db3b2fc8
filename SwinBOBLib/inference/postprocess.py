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


#: Bytes one slab of interpolated probabilities may take (float32, all channels); slabs are thinner
#: for many channels on a large grid, so memory stays bounded whatever the scan.
SLAB_BYTES = 256 * 2 ** 20


def slab_thickness(channels: int, shape: Sequence[int], limit: int = 16) -> int:
    """Slices per slab: at most ``limit``, and few enough that ``channels`` float32 planes of
    ``shape[:2]`` stay within :data:`SLAB_BYTES`."""
    plane = max(1, int(channels) * int(shape[0]) * int(shape[1]) * 4)
    return max(1, min(int(limit), SLAB_BYTES // plane))


def probability_slabs(probs: torch.Tensor, shape: Sequence[int], slab: int = 16):
    """Yield ``(z0, z1, probs_slab (K, X, Y, z1 - z0) float32)`` of ``probs`` ``(1, K, X', Y', Z')``
    interpolated onto the grid ``shape`` (corner-aligned, the inverse of :func:`resample`).

    Each slab is interpolated along z on the model grid first, then in-plane by bilinear
    interpolation with aligned corners (the same corner-aligned mapping, one kernel instead of
    copies of every channel); ``slab`` is thinned by :func:`slab_thickness`.
    """
    probs = probs[0]
    zs = _source_coords(shape[2], probs.shape[3])
    same_xy = tuple(probs.shape[1:3]) == tuple(shape[:2])
    slab = slab_thickness(probs.shape[0], shape, slab)
    for z0 in range(0, shape[2], slab):
        z1 = min(shape[2], z0 + slab)
        lo = int(zs[z0].floor())
        hi = min(int(zs[z1 - 1].ceil()), probs.shape[3] - 1)
        part = probs[:, :, :, lo:hi + 1].float()
        if probs.shape[3] != shape[2]:
            part = _lerp_axis(part, 3, (zs[z0:z1] - lo).to(torch.float32))
        if not same_xy:  # (K, X', Y', z) -> (z, K, X, Y) -> (K, X, Y, z)
            planes = torch.nn.functional.interpolate(part.permute(3, 0, 1, 2), size=tuple(int(n) for n in shape[:2]),
                                                     mode="bilinear", align_corners=True)
            part = planes.permute(1, 2, 3, 0)
        yield z0, z1, part.cpu()


def postprocess(probs: torch.Tensor, prepared: Prepared, keep_probabilities: bool = False,
                activation: str = "softmax", decode: Callable[[torch.Tensor], np.ndarray] | None = None,
                dtype=None):
    """Probabilities on the model grid -> channel argmax, entropy (and probabilities) on the RAS input grid.

    ``activation`` picks the entropy (:func:`SwinBOBLib.models.heads.entropy`); ``decode`` maps a slab of
    probabilities ``(K, X, Y, z)`` to integers ``(X, Y, z)`` (default: the channel argmax; a
    sigmoid head passes :meth:`SwinBOBLib.models.heads.RegionHead.labels`, a softmax head its label
    lookup, so no whole-volume index array is made). ``dtype`` of the first output: default uint8
    (uint16 beyond 256 channels). Works slab by slab
    (:func:`probability_slabs`): besides the outputs, memory holds one slab of all channels.

    Returns:
        ``(channels or decoded labels (X, Y, Z) of ``dtype``, entropy (X, Y, Z) float32,
        probabilities (X, Y, Z, K) float32 or None)``, all in the RAS voxel order of the input grid.
    """
    shape = prepared.ras_shape
    channels = np.zeros(shape, dtype=dtype or (np.uint8 if probs.shape[1] <= 256 else np.uint16))
    entropy = np.zeros(shape, dtype=np.float32)
    kept = np.zeros((*shape, probs.shape[1]), dtype=np.float32) if keep_probabilities else None
    for z0, z1, part in probability_slabs(probs, shape):
        channels[:, :, z0:z1] = decode(part) if decode is not None else part.argmax(0).numpy()
        entropy[:, :, z0:z1] = voxel_entropy(part[None], activation)[0].numpy()
        if kept is not None:
            kept[:, :, z0:z1] = np.moveaxis(part.numpy(), 0, -1)
    return channels, entropy, kept
