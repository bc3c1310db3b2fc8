"""Whole-scan entropy, computed in slabs along the last axis so a whole-body scan never needs a
float32 copy of all its channels (per-voxel entropy itself is :func:`SwinBOBLib.models.heads.entropy`).
"""

from __future__ import annotations

import torch

from SwinBOBLib.models.heads import entropy


def mean_entropy(probs: torch.Tensor, slab: int = 16, activation: str = "softmax") -> float:
    """Mean normalised entropy over every voxel of ``probs`` ``(1, K, *spatial)``, computed in slabs
    along the last axis so a whole-body scan never needs a float32 copy of all its channels."""
    return float(entropy_volume(probs, slab, activation).double().mean())


def entropy_volume(probs: torch.Tensor, slab: int = 16, activation: str = "softmax") -> torch.Tensor:
    """``(*spatial)`` float32 CPU entropy map of ``probs`` ``(1, K, *spatial)``, slab by slab
    (``activation`` as in :func:`SwinBOBLib.models.heads.entropy`)."""

    parts = [entropy(probs[..., z0:z0 + slab], activation)[0].cpu() for z0 in range(0, probs.shape[-1], slab)]
    return torch.cat(parts, dim=-1)
