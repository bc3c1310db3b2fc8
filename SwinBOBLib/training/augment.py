"""Training augmentations: the UKBOB recipe (sec. 4.3) with left/right-aware flipping.

Inputs are channel-first arrays on the RAS grid: ``image`` ``(C, X, Y, Z)`` float32 and ``label``
``(1, X, Y, Z)`` holding *channel* indices of the model's layout. Spatial axis 0 is the patient's
left-right axis.

Flipping along the left-right axis mirrors the anatomy: the left kidney lands where a right kidney
would be. Trained on such samples unchanged, a model learns to confuse left and right structures
(TotalVibeSegmentator switched these flips off for that reason). SwinBOB's default swaps the paired
labels when it flips left-right (``lateral_flip="swap"``), so a mirrored scan is labelled as the
anatomy it now shows; ``"off"`` disables the lateral flip and ``"plain"`` reproduces the naive flip.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandomizableTransform,
    RandRotate90d,
    RandShiftIntensityd,
    SpatialPadd,
)

from SwinBOBLib.labels.layouts import ChannelLayout, lateral_swap_table

LATERAL_FLIP_MODES = ("swap", "off", "plain")


class RandLateralFlipd(RandomizableTransform, MapTransform):
    """Flip ``keys`` along spatial axis ``axis`` with probability ``prob`` and swap paired labels.

    Args:
        keys: image and label keys to flip.
        label_key: the key whose channel indices are remapped through ``swap_table``.
        swap_table: from :func:`lateral_swap_table`; None flips without swapping.
    """

    def __init__(self, keys: Sequence[Hashable], label_key: Hashable, swap_table: np.ndarray | None,
                 prob: float = 0.1, axis: int = 0):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.label_key = label_key
        self.swap_table = None if swap_table is None else np.asarray(swap_table, dtype=np.int64)
        self.axis = axis

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            value = d[key]
            d[key] = torch.flip(value, dims=[self.axis + 1]) if isinstance(value, torch.Tensor) \
                else np.ascontiguousarray(np.flip(value, axis=self.axis + 1))
        if self.swap_table is not None and self.label_key in d:
            d[self.label_key] = _apply_table(d[self.label_key], self.swap_table)
        return d


def _apply_table(label, table: np.ndarray):
    if isinstance(label, torch.Tensor):
        return torch.as_tensor(table, device=label.device)[label.long()].to(label.dtype)
    return table[np.asarray(label, dtype=np.int64)].astype(np.asarray(label).dtype)


def training_transforms(layout: ChannelLayout, roi_size: Sequence[int], crops_per_volume: int = 2,
                        flip_prob: float = 0.1, lateral_flip: str = "swap", rotate90_prob: float = 0.1,
                        intensity_shift: float = 0.1, intensity_shift_prob: float = 0.5) -> Compose:
    """The paper's training augmentation on cached, preprocessed cases.

    Random foreground crops of ``roi_size`` (half centred on labelled voxels), random flips along the
    three axes (the lateral one per ``lateral_flip``), random 90 degree rotations in the axial plane
    and a random intensity shift.
    """
    if lateral_flip not in LATERAL_FLIP_MODES:
        raise ValueError(f"lateral_flip must be one of {LATERAL_FLIP_MODES}, got '{lateral_flip}'")
    keys = ["image", "label"]
    steps = [SpatialPadd(keys, spatial_size=list(roi_size)),
             RandCropByPosNegLabeld(keys, label_key="label", spatial_size=list(roi_size), pos=1, neg=1,
                                    num_samples=crops_per_volume, image_key="image", image_threshold=0,
                                    allow_smaller=True)]
    if lateral_flip != "off":
        table = lateral_swap_table(layout) if lateral_flip == "swap" else None
        steps.append(RandLateralFlipd(keys, "label", table, prob=flip_prob, axis=0))
    steps += [RandFlipd(keys, prob=flip_prob, spatial_axis=1), RandFlipd(keys, prob=flip_prob, spatial_axis=2),
              RandRotate90d(keys, prob=rotate90_prob, max_k=3, spatial_axes=(0, 1)),
              RandShiftIntensityd("image", offsets=intensity_shift, prob=intensity_shift_prob),
              EnsureTyped(keys, track_meta=False)]
    return Compose(steps)
