"""From the network's grid back to the scan's: probabilities interpolated slab by slab (bounded
memory), argmax to labels, and the network's entropy (normalised by log(C)) interpolated.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from SwinBOBLib.inference.cell_argmax import cell_argmax, source_coords
from SwinBOBLib.inference.preprocess import Prepared
from SwinBOBLib.models.heads import entropy as voxel_entropy


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
    copies of every channel); ``slab`` is thinned by :func:`slab_thickness`. The in-plane kernel
    runs channels-last (three times faster on a CPU than channels-first for 72 channels), so each
    yielded slab is a view whose channels lie next to each other in memory: a reduction over them
    (the argmax) reads memory in order.
    """
    for z0, z1, part, _ in _slabs(probs, shape, slab):
        yield z0, z1, part


def _slabs(probs: torch.Tensor, shape: Sequence[int], slab: int = 16, floor: float | None = None):
    """:func:`probability_slabs` yielding ``(z0, z1, part, channels)``: with ``floor``, each slab
    interpolates only the channels reaching it somewhere in the model-grid planes it is made of
    (``channels``, a numpy index array; None when all are kept)."""
    probs = probs[0]
    zs = torch.from_numpy(source_coords(int(shape[2]), int(probs.shape[3])))
    same_xy = tuple(probs.shape[1:3]) == tuple(shape[:2])
    slab = slab_thickness(probs.shape[0], shape, slab)
    # Each channel's largest value in each model-grid plane, (K, Z'): one pass over the probabilities
    # (reducing x, then y, reads memory in order; a reduction over a slab's strided block took
    # three times as long as this whole pass, per slab).
    plane_max = probs.amax(dim=1).amax(dim=1) if floor is not None else None
    for z0 in range(0, shape[2], slab):
        z1 = min(shape[2], z0 + slab)
        lo = int(zs[z0].floor())
        hi = min(int(zs[z1 - 1].ceil()), probs.shape[3] - 1)
        source, channels = probs[:, :, :, lo:hi + 1], None
        if floor is not None:
            reached = plane_max[:, lo:hi + 1].amax(dim=1) >= floor
            if not bool(reached.all()):
                channels = torch.nonzero(reached).flatten()
                source = source.index_select(0, channels)
                channels = channels.cpu().numpy()
        # (K, X', Y', z') -> planes (z', K, X', Y') stored channels-last, i.e. (z', X', Y', K) in memory
        planes = source.permute(3, 0, 1, 2).to(torch.float32, memory_format=torch.channels_last)
        if probs.shape[3] != shape[2]:
            planes = _lerp_planes(planes, zs[z0:z1] - lo)
        if not same_xy:
            planes = torch.nn.functional.interpolate(planes, size=tuple(int(n) for n in shape[:2]),
                                                     mode="bilinear", align_corners=True)
        yield z0, z1, planes.permute(1, 2, 3, 0).cpu(), channels


def argmax_floor(probs: torch.Tensor) -> float | None:
    """A probability below which a channel can never be a voxel's largest once interpolated (None:
    none such, for probabilities that are not finite or sum to nothing somewhere).

    Each interpolated voxel is a convex combination of model-grid voxels, so its K probabilities
    sum to at least the smallest sum S on the model grid (1 for a softmax), and its largest is at
    least S / K; a channel below S / K at every model-grid voxel a slab is made of stays below it
    in the whole slab (with a margin for rounding), and the argmax need not interpolate it. The
    structures outside a scan's field of view are such (the demo model on the MR sample: 46 and 39
    of the 72 channels interpolated in its two slabs, the slabs' time 47 ms -> 34 ms).
    """
    smallest = float(probs.sum(dim=1, dtype=torch.float32).amin())
    return smallest / probs.shape[1] * (1.0 - 1e-4) if math.isfinite(smallest) and smallest > 0 else None


def _lerp_planes(planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``planes`` ``(z', K, X, Y)`` (channels-last) at fractional plane
    ``coords``: one ``torch.lerp`` of two whole planes per output plane (contiguous memory; an
    ``index_select`` along the last axis of ``(K, X, Y, z')`` took five times as long)."""
    lo = coords.floor().long().clamp(0, planes.shape[0] - 1)
    hi = (lo + 1).clamp(max=planes.shape[0] - 1)
    weights = (coords - lo.to(coords.dtype)).tolist()
    out = torch.empty((len(weights), *planes.shape[1:]), dtype=planes.dtype, device=planes.device,
                      memory_format=torch.channels_last)
    for j, weight in enumerate(weights):
        torch.lerp(planes[int(lo[j])], planes[int(hi[j])], float(weight), out=out[j])
    return out


def channel_argmax(part: torch.Tensor) -> np.ndarray:
    """The index of each voxel's largest channel of a slab ``part`` ``(K, X, Y, z)``: ``(X, Y, z)``
    int64, the first channel of a tie (as ``torch.argmax``).

    A slab lying channels-last in CPU memory (as :func:`probability_slabs` yields it) is reduced
    by numpy along its contiguous channel axis, about 2.5 times faster than ``torch.argmax`` over
    the same memory (numpy's SIMD argmax; 72 channels, one thread); any other slab by torch.
    """
    planes = part.permute(3, 1, 2, 0)  # (z, X, Y, K): contiguous when the channels lie last in memory
    if planes.device.type == "cpu" and planes.is_contiguous() and not planes.requires_grad:
        return planes.numpy().argmax(axis=-1).transpose(1, 2, 0)
    return part.argmax(0).cpu().numpy()


def model_grid_entropy(probs: torch.Tensor, shape: Sequence[int], activation: str = "softmax") -> np.ndarray:
    """The normalised entropy of ``probs`` ``(1, K, X', Y', Z')`` on the model grid, interpolated
    (trilinear, corner-aligned like :func:`probability_slabs`) onto ``shape``: ``(X, Y, Z)`` float32.

    This is the uncertainty of the network's own output (the quantity ETTA minimises). The entropy
    of the probabilities interpolated onto a finer input grid would add a ridge of high entropy
    along every boundary between two confident classes, from the interpolation alone, and would
    cost a logarithm per channel per input voxel (0.2 s of the demo model's 1 s per MR sample).
    Taken in z-slabs of at most :data:`SLAB_BYTES` of probabilities, so memory stays bounded.
    """
    probs = probs[0]
    depth = slab_thickness(probs.shape[0], probs.shape[1:3], limit=max(1, int(probs.shape[3])))
    coarse = torch.cat([voxel_entropy(probs[None, :, :, :, z:z + depth].float(), activation)
                        for z in range(0, int(probs.shape[3]), depth)], dim=-1)  # (1, X', Y', Z')
    if tuple(coarse.shape[1:]) != tuple(int(n) for n in shape):
        coarse = torch.nn.functional.interpolate(coarse[None], size=tuple(int(n) for n in shape),
                                                 mode="trilinear", align_corners=True)[0]
    return coarse[0].clamp_(0.0, 1.0).cpu().numpy()


def postprocess(probs: torch.Tensor, prepared: Prepared, keep_probabilities: bool = False,
                activation: str = "softmax", decode: Callable[[torch.Tensor], np.ndarray] | None = None,
                dtype=None, labels_of: Callable[[np.ndarray], np.ndarray] | None = None, cells: bool | None = None):
    """Probabilities on the model grid -> channel argmax, entropy (and probabilities) on the RAS input grid.

    The labels are the argmax of the probabilities interpolated onto the input grid; the entropy is
    the model grid's, interpolated (:func:`model_grid_entropy`). ``activation`` picks the entropy
    (:func:`SwinBOBLib.models.heads.entropy`); ``decode`` maps a slab of
    probabilities ``(K, X, Y, z)`` to integers ``(X, Y, z)`` (a sigmoid head passes
    :meth:`SwinBOBLib.models.heads.RegionHead.labels`). Without it the channel argmax is taken,
    each slab interpolating only the channels that can win in it (:func:`argmax_floor`; all of
    them when the probabilities are kept), and ``labels_of`` maps the channel indices of a slab to
    its labels (a softmax head's label lookup, so no whole-volume index array is made). The argmax
    alone of probabilities in CPU memory is :func:`~SwinBOBLib.inference.cell_argmax.cell_argmax`
    instead, which interpolates only in the model-grid cells whose corners disagree (``cells``:
    None picks it there, False takes the slabs, True asks for it).
    ``dtype`` of the first output: default uint8 (uint16 beyond 256 channels). Works slab by slab
    (:func:`probability_slabs`): besides the outputs, memory holds one slab of all channels.

    Returns:
        ``(channels or decoded labels (X, Y, Z) of ``dtype``, entropy (X, Y, Z) float32,
        probabilities (X, Y, Z, K) float32 or None)``, all in the RAS voxel order of the input grid.
    """
    shape = prepared.ras_shape
    channels = np.zeros(shape, dtype=dtype or (np.uint8 if probs.shape[1] <= 256 else np.uint16))
    entropy = model_grid_entropy(probs, shape, activation)
    if cells is None:
        cells = probs.device.type == "cpu"
    if cells and decode is None and not keep_probabilities:
        # the argmax alone, in CPU memory: interpolated only in the cells whose corners disagree
        found = cell_argmax(probs[0].detach().numpy(), shape)
        channels[...] = labels_of(found) if labels_of is not None else found
        return channels, entropy, None
    kept = np.zeros((*shape, probs.shape[1]), dtype=np.float32) if keep_probabilities else None
    floor = argmax_floor(probs) if decode is None and kept is None else None  # the argmax alone: prune
    for z0, z1, part, index in _slabs(probs, shape, floor=floor):
        if decode is not None:
            channels[:, :, z0:z1] = decode(part)
        else:
            found = channel_argmax(part)
            found = index[found] if index is not None else found
            channels[:, :, z0:z1] = labels_of(found) if labels_of is not None else found
        if kept is not None:
            kept[:, :, z0:z1] = np.moveaxis(part.numpy(), 0, -1)
    return channels, entropy, kept
