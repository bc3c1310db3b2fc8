"""Output heads: from a network's logits to probabilities, label maps and entropy.

Two kinds of head:

* ``softmax``: one channel per class of a :class:`labels.ChannelLayout`; labels are the argmax
  mapped through the layout; entropy is the Shannon entropy over the C classes divided by log(C).
* ``sigmoid``: overlapping *region* channels, each its own binary problem (BraTS-style: tumour
  core, whole tumour, enhancing tumour, as Swin-UNETR's BraTS weights and UK_BOB's BRATS23 code
  predict them). A region is present where its probability exceeds 0.5; labels are painted in the
  order of :attr:`RegionHead.paint` (later regions overwrite earlier ones), so nested regions give
  the scheme's labels. Entropy is the mean over the channels of the binary entropy divided by log(2),
  also in [0, 1].

:data:`REGION_HEADS` is the registry of sigmoid heads, by label scheme.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

_EPS = 1e-8


#: Activation names a checkpoint's metadata may carry.
ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class RegionHead:
    """A sigmoid multi-label head: ``regions[c]`` names channel ``c``; ``paint`` lists
    ``(channel, label)`` pairs painted in order where the channel's probability is > 0.5."""

    scheme: str
    regions: tuple[str, ...]
    paint: tuple[tuple[int, int], ...]

    @property
    def num_channels(self) -> int:
        return len(self.regions)

    def labels(self, probabilities: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(K, *spatial)`` region probabilities -> ``(*spatial)`` uint8 labels of :attr:`scheme`."""
        probs = probabilities.numpy() if isinstance(probabilities, torch.Tensor) else np.asarray(probabilities)
        out = np.zeros(probs.shape[1:], dtype=np.uint8)
        for channel, label in self.paint:
            out[probs[channel] > 0.5] = label
        return out


#: Scheme -> sigmoid head. BraTS (Swin-UNETR BraTS21 weights, UK_BOB BRATS23/test.py): channels
#: tumour core (labels 1+3), whole tumour (1+2+3), enhancing tumour (3); painted WT -> 2 (edema),
#: TC -> 1 (necrosis), ET -> 3 (enhancing; BraTS 2023 numbering, 4 in BraTS 2021's).
REGION_HEADS: dict[str, RegionHead] = {
    "brats": RegionHead("brats", ("tumor_core", "whole_tumor", "enhancing_tumor"), ((1, 2), (0, 1), (2, 3))),
}


def region_head(scheme: str) -> RegionHead:
    """The sigmoid head of ``scheme``; ValueError for a scheme without one."""
    if scheme not in REGION_HEADS:
        raise ValueError(f"label scheme '{scheme}' has no sigmoid region head; available: {', '.join(REGION_HEADS)}")
    return REGION_HEADS[scheme]


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown output activation '{activation}'; use {' or '.join(ACTIVATIONS)}")
    return activation


def activate(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Logits ``(B, C, *spatial)`` -> float32 probabilities: softmax over C, or per-channel sigmoid."""
    if check_activation(activation) == "sigmoid":
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)


def entropy(probabilities: torch.Tensor, activation: str = "softmax", eps: float = _EPS) -> torch.Tensor:
    """Per-voxel normalised entropy ``(B, *spatial)`` float32 in [0, 1] of ``(B, C, *spatial)`` probabilities.

    softmax: Shannon entropy over C divided by log(C) (C >= 2); sigmoid: mean over C of the
    binary entropy divided by log(2) (C >= 1).
    """
    if check_activation(activation) == "softmax":
        return entropy_map(probabilities, eps)
    p = torch.as_tensor(probabilities).float().clamp(0.0, 1.0)
    h = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / math.log(2)  # 0 log 0 = 0
    return h.mean(dim=1).clamp_(0.0, 1.0)


def logit_entropy(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Per-voxel normalised entropy ``(B, *spatial)`` straight from logits ``(B, C, *spatial)``,
    differentiable and stable (log-softmax / log-sigmoid): :func:`entropy` of :func:`activate`."""
    z = logits.float()
    if check_activation(activation) == "softmax":
        log_p = torch.log_softmax(z, dim=1)
        return -(log_p.exp() * log_p).sum(dim=1) / math.log(z.shape[1])
    log_p, log_q = torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
    return -(log_p.exp() * log_p + log_q.exp() * log_q).mean(dim=1) / math.log(2)


def entropy_loss(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Mean normalised entropy of the activated ``logits`` ``(B, C, ...)``, differentiable (ETTA's loss)."""
    return logit_entropy(logits, activation).mean()


def entropy_map(probs: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Per-voxel Shannon entropy normalised by log(C).

    Args:
        probs: class probabilities ``(B, C, *spatial)`` (summing to 1 over C), any float dtype.
        eps: probabilities are clamped to ``[eps, 1]`` before the logarithm.

    Returns:
        ``(B, *spatial)`` float32 in [0, 1]: 0 for a one-hot voxel, 1 for a uniform one.

    Raises:
        ValueError: fewer than 2 dimensions or fewer than 2 classes.
    """
    probs = torch.as_tensor(probs)
    if probs.ndim < 2 or probs.shape[1] < 2:
        raise ValueError(f"entropy_map needs probabilities (B, C, *spatial) with C >= 2, got shape "
                         f"{tuple(probs.shape)}")
    p = probs.float().clamp(min=eps, max=1.0)
    p_log_p = p.log().mul_(p)  # in place: one temporary of the probabilities' size less
    return (-p_log_p.sum(dim=1) / math.log(probs.shape[1])).clamp_(0.0, 1.0)
