"""Swin-UNETR patch-merging variants: run published weights with the network they were trained in.

MONAI 1.5 changed the voxel order of SwinUNETR's default ``"merging"`` downsampling (PR #8285,
"Fix PatchMerging duplicate merging"). Before it, the eight 2x2x2 neighbours were concatenated as
offsets (0,0,0) (1,0,0) (0,1,0) (0,0,1) (1,0,1) (0,1,0) (0,0,1) (1,1,1): two duplicates, and
(1,1,0), (0,1,1) never seen. The weights are the same tensors either way, so a state dict cannot
tell which order it was trained with, yet the same weights give different logits (up to 0.4 on
the UKBOB checkpoints, a different argmax on 6-11 % of voxels). Every Swin-UNETR trained with
MONAI < 1.5 (UK_BOB, the MONAI model-zoo BTCV bundle, the original BTCV/BraTS weights) needs the
``legacy`` order.

Variants (key -> merging layer), independent of the installed MONAI version:

* ``legacy``: MONAI 0.9 - 1.4 ``"merging"`` (the order above).
* ``fixed``: MONAI >= 1.5 ``"merging"``: all eight offsets (0,0,0) (1,0,0) (0,1,0) (0,0,1)
  (1,1,0) (1,0,1) (0,1,1) (1,1,1).
* ``mergingv2``: MONAI ``"mergingv2"`` (itertools order, unchanged across versions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Offsets (d, h, w) of the eight neighbours, in concatenation order, per variant.
_LEGACY_ORDER = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


_FIXED_ORDER = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))


#: Variant -> one-line description (docs, ``swinbob checkpoint info``).
VARIANTS = {
    "legacy": "MONAI < 1.5 'merging' patch merging (every published Swin-UNETR; MONAI PR #8285 changed it)",
    "fixed": "MONAI >= 1.5 'merging' patch merging (all eight 2x2x2 neighbours)",
    "mergingv2": "MONAI 'mergingv2' patch merging",
}


#: Variant of checkpoints whose files say nothing: the one every published Swin-UNETR used.
DEFAULT_VARIANT = "legacy"


#: Variant new SwinBOB models are built (and trained) with: MONAI's current default.
TRAINING_VARIANT = "fixed"


def _merging_base():
    from monai.networks.nets.swin_unetr import PatchMergingV2

    return PatchMergingV2


class _OrderedPatchMerging(_merging_base()):
    """MONAI's patch merging (same ``reduction``/``norm`` parameters) with an explicit neighbour order."""

    order: tuple[tuple[int, int, int], ...] = _FIXED_ORDER

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` -> ``(B, ceil(D/2), ceil(H/2), ceil(W/2), 2C)``; odd sizes are zero-padded."""
        if x.ndim == 4:  # 2D input: MONAI's own order (unchanged by PR #8285)
            return super().forward(x)
        if x.ndim != 5:
            raise ValueError(f"patch merging expects a (B, D, H, W, C) tensor, got shape {tuple(x.shape)}")
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in self.order], -1)
        return self.reduction(self.norm(x))


class LegacyPatchMerging(_OrderedPatchMerging):
    """Patch merging exactly as MONAI 0.9 - 1.4 computed it (duplicated neighbours included)."""

    order = _LEGACY_ORDER


class FixedPatchMerging(_OrderedPatchMerging):
    """Patch merging as MONAI >= 1.5 computes it."""

    order = _FIXED_ORDER


def merging_module(variant: str):
    """The ``downsample`` argument of MONAI's ``SwinUNETR`` for ``variant`` (a key of :data:`VARIANTS`)."""
    key = str(variant).strip().lower()
    if key == "legacy":
        return LegacyPatchMerging
    if key == "fixed":
        return FixedPatchMerging
    if key == "mergingv2":
        return "mergingv2"
    raise ValueError(f"unknown Swin-UNETR variant '{variant}'; available: {', '.join(VARIANTS)}")


def variant_of(model: torch.nn.Module) -> str | None:
    """The variant a built network uses, from its first patch-merging layer; None without one."""
    from monai.networks.nets.swin_unetr import PatchMerging, PatchMergingV2

    for module in model.modules():
        if type(module) is LegacyPatchMerging:
            return "legacy"
        if type(module) is FixedPatchMerging:
            return "fixed"
        if type(module) is PatchMerging:  # MONAI's own class: its order depends on the installed version
            return variant_for_monai_version(_installed_monai())
        if type(module) is PatchMergingV2:
            return "mergingv2"
    return None


def _installed_monai() -> str:
    import monai

    return monai.__version__


def variant_for_monai_version(version: str) -> str:
    """The ``"merging"`` variant of a MONAI release: ``legacy`` before 1.5, ``fixed`` from 1.5.

    Raises:
        ValueError: a version string without a readable major.minor number.
    """
    parts = str(version).strip().lstrip("vV").split(".")
    try:
        major, minor = int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        raise ValueError(f"cannot read a MONAI version from '{version}' (expected e.g. 1.4.0)") from None
    return "legacy" if (major, minor) < (1, 5) else "fixed"
