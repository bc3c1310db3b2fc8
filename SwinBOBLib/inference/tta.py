"""Flip test-time augmentation: the flip sets and the averaged prediction, with left/right
channels exchanged for left-right flipped inputs.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch


def flip_sets(count: int = 8) -> list[tuple[int, ...]]:
    """Spatial-axis flip combinations for TTA, identity first: 8 (all), 4 (none + each axis) or 1."""
    if count == 8:
        return [tuple(a for a, on in zip((2, 3, 4), bits) if on) for bits in itertools.product((0, 1), repeat=3)]
    if count == 4:
        return [(), (2,), (3,), (4,)]
    if count == 1:
        return [()]
    raise ValueError(f"TTA flips must be 1, 4 or 8, got {count}")


def flip_tta(predict: Callable[[torch.Tensor], torch.Tensor], flips: int = 8,
             swap_table: Sequence[int] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a patch predictor (``(B, C, D, H, W)`` -> probabilities) into a flip-averaging one.

    Each flipped copy's prediction is flipped back voxel for voxel before averaging. A flip of the
    left-right axis (axis 2 of a RAS patch) also mirrors the anatomy: the network sees the left
    kidney where a right kidney would be and calls it so, whether it was trained without lateral
    flips or with flips that swap paired labels. Flipping its answer back puts a right-kidney
    label on the left kidney, so those predictions have their paired channels exchanged through
    ``swap_table`` (``swap_table[c]`` = the channel of c's other-side partner,
    :func:`SwinBOBLib.labels.layouts.lateral_swap_table`; applied when the prediction has that many
    channels); None averages them unswapped.
    """
    combos = flip_sets(flips)
    table = None if swap_table is None else torch.as_tensor([int(c) for c in swap_table], dtype=torch.int64)

    def averaged(patch: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in combos:
            out = predict(torch.flip(patch, axes) if axes else patch)
            out = torch.flip(out, axes) if axes else out
            if table is not None and 2 in axes and out.shape[1] == len(table):
                out = out[:, table.to(out.device)]
            total = out if total is None else total + out
        return total / len(combos)

    return averaged
