"""The networks SwinBOB runs: MONAI's Swin-UNETR, UNETR, SegResNet and UNet, built from a registry
(:data:`NETWORKS`) whose entries also infer a network's sizes from its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from SwinBOBLib.labels.layouts import channel_layout
from SwinBOBLib.models.legacy import TRAINING_VARIANT, merging_module
from SwinBOBLib.models.metadata import roi_shape
from SwinBOBLib.models.norms import replace_instance_norms

#: Feature sizes Swin-BOB is built with (48 is the paper's; 12 and 24 for CPU and tests).
FEATURE_SIZES = (12, 24, 48)


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one network family and read its hyper-parameters back from a state dict.

    Attributes:
        build: ``build(feature_size, in_channels, out_channels, affine_norm) -> nn.Module``.
        infer: ``infer(state_dict) -> {"feature_size", "in_channels", "out_channels", "affine_norm"}``.
        anchor: a parameter name every state dict of this network has (used to strip prefixes).
        head: parameter names of the output layer (rows are output channels).
        roi_multiple: patch edges must be multiples of this (the network's total downsampling).
    """

    build: Callable[..., torch.nn.Module]
    infer: Callable[[Mapping[str, torch.Tensor]], dict]
    anchor: str
    head: tuple[str, ...]
    roi_multiple: int = 32
    variants: bool = False  # built in several variants (``build(..., variant=...)``), Swin-UNETR only


def _build_swinunetr(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size: int = 96,
                     variant: str | None = None):
    from monai.networks.nets import SwinUNETR

    if feature_size % 12:
        raise ValueError(f"Swin-UNETR feature_size must be a multiple of 12 (e.g. {FEATURE_SIZES}), "
                         f"got {feature_size}")
    norm = ("instance", {"affine": True}) if affine_norm else "instance"
    model = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                      norm_name=norm, spatial_dims=3, downsample=merging_module(variant or TRAINING_VARIANT))
    return replace_instance_norms(model)


def _infer_swinunetr(state_dict: Mapping[str, torch.Tensor]) -> dict:
    embed = state_dict["swinViT.patch_embed.proj.weight"]  # (feature_size, in_channels, 2, 2, 2)
    head = state_dict["out.conv.conv.weight"]  # (out_channels, feature_size, 1, 1, 1)
    return {"feature_size": int(embed.shape[0]), "in_channels": int(embed.shape[1]),
            "out_channels": int(head.shape[0]), "affine_norm": "encoder1.layer.norm1.weight" in state_dict}


def _instance(affine_norm: bool):
    return ("instance", {"affine": True}) if affine_norm else "instance"


#: UNETR's ViT width: MONAI's ViT-B (768) from feature size 16 (the UNETR paper's); a 192-wide ViT
#: for the small sizes used on CPUs and in tests.
def _unetr_width(feature_size: int) -> int:
    return 768 if feature_size >= 16 else 192


def _build_unetr(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size=96):
    from monai.networks.nets import UNETR

    shape = roi_shape(roi_size)
    if any(edge % 16 for edge in shape):
        raise ValueError(f"UNETR needs a roi size that is a multiple of 16 (its patch size), got {roi_size}")
    width = _unetr_width(feature_size)
    model = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=shape,
                  feature_size=feature_size, hidden_size=width, mlp_dim=4 * width, num_heads=12,
                  norm_name=_instance(affine_norm), spatial_dims=3)
    return replace_instance_norms(model)


def _infer_unetr(state_dict: Mapping[str, torch.Tensor]) -> dict:
    patches = state_dict["vit.patch_embedding.patch_embeddings.weight"]  # (hidden, in_channels, 16, 16, 16)
    positions = state_dict["vit.patch_embedding.position_embeddings"].shape[1]  # (roi / 16) ** 3
    return {"feature_size": int(state_dict["encoder1.layer.conv1.conv.weight"].shape[0]),
            "in_channels": int(patches.shape[1]), "out_channels": int(state_dict["out.conv.conv.weight"].shape[0]),
            "affine_norm": "encoder1.layer.norm1.weight" in state_dict,
            "roi_size": int(round(positions ** (1 / 3))) * 16}


def _build_segresnet(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size: int = 96):
    from monai.networks.nets import SegResNet

    # GroupNorm (8 groups, MONAI's default for SegResNet; fewer where 8 does not divide the filters,
    # e.g. 4 for 12) with affine parameters.
    return SegResNet(spatial_dims=3, init_filters=feature_size, in_channels=in_channels, out_channels=out_channels,
                     norm=("GROUP", {"num_groups": math.gcd(8, feature_size), "affine": affine_norm}))


def _infer_segresnet(state_dict: Mapping[str, torch.Tensor]) -> dict:
    stem = state_dict["convInit.conv.weight"]  # (init_filters, in_channels, 3, 3, 3)
    return {"feature_size": int(stem.shape[0]), "in_channels": int(stem.shape[1]),
            "out_channels": int(state_dict["conv_final.2.conv.weight"].shape[0]),
            "affine_norm": "down_layers.0.1.norm1.weight" in state_dict}


def _build_unet(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size: int = 96):
    from monai.networks.nets import UNet

    channels = tuple(feature_size * 2 ** level for level in range(5))
    model = UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=channels,
                 strides=(2, 2, 2, 2), num_res_units=2, norm=_instance(affine_norm))
    return replace_instance_norms(model)


def _infer_unet(state_dict: Mapping[str, torch.Tensor]) -> dict:
    stem = state_dict["model.0.conv.unit0.conv.weight"]  # (feature_size, in_channels, 3, 3, 3)
    return {"feature_size": int(stem.shape[0]), "in_channels": int(stem.shape[1]),
            "out_channels": int(state_dict["model.2.1.conv.unit0.conv.weight"].shape[0]),
            "affine_norm": "model.0.conv.unit0.adn.N.weight" in state_dict}


#: Network name -> spec. Adding a network is one entry here. The paper compares Swin-UNETR with
#: UNETR, SegResNet and a plain U-Net (tables 2, 4, 6).
NETWORKS: dict[str, NetworkSpec] = {
    "swinunetr": NetworkSpec(_build_swinunetr, _infer_swinunetr, "swinViT.patch_embed.proj.weight",
                             ("out.conv.conv.weight", "out.conv.conv.bias"), variants=True),
    "unetr": NetworkSpec(_build_unetr, _infer_unetr, "vit.patch_embedding.position_embeddings",
                         ("out.conv.conv.weight", "out.conv.conv.bias"), 16),
    "segresnet": NetworkSpec(_build_segresnet, _infer_segresnet, "convInit.conv.weight",
                             ("conv_final.2.conv.weight", "conv_final.2.conv.bias"), 8),
    # The U-Net's last stage (a transposed convolution, then a residual unit) has no single head.
    "unet": NetworkSpec(_build_unet, _infer_unet, "model.0.conv.unit0.conv.weight", (), 16),
}


def roi_multiple(network: str) -> int:
    """Patch edges of ``network`` must be multiples of this many voxels."""
    return network_spec(network).roi_multiple


def network_spec(network: str) -> NetworkSpec:
    key = str(network).lower().replace("-", "").replace("_", "")
    if key not in NETWORKS:
        raise ValueError(f"unknown network '{network}'; available: {', '.join(NETWORKS)}")
    return NETWORKS[key]


def build_model(feature_size: int = 48, in_channels: int = 1, out_channels: int | None = None,
                affine_norm: bool = True, network: str = "swinunetr", roi_size: int | tuple = 96,
                variant: str | None = None) -> torch.nn.Module:
    """Build a randomly initialised Swin-BOB network.

    Args:
        feature_size: embedding size (12, 24 or 48; the paper's Swin-BOB uses 48).
        in_channels: number of input contrasts.
        out_channels: output classes; default the compact UKBOB layout (72 = background + 71).
        affine_norm: give the decoder's InstanceNorm3d layers affine weights and biases, so ETTA
            adapts them as well as the Swin encoder's LayerNorms. MONAI's default (False) leaves
            only the LayerNorms adaptable.
        network: a key of :data:`NETWORKS` (swinunetr, unetr, segresnet, unet).
        roi_size: patch edge (or x, y, z edges) the network is built for (only UNETR's position
            embedding depends on it).
        variant: Swin-UNETR patch merging, a key of :data:`SwinBOBLib.models.legacy.VARIANTS` (``legacy``
            for weights trained with MONAI < 1.5); None: ``fixed``, MONAI's current order, the one
            new SwinBOB models train with. Ignored by the other networks.

    Returns:
        The ``torch.nn.Module`` mapping ``(B, in_channels, D, H, W)`` to logits
        ``(B, out_channels, D, H, W)``; D, H, W must be multiples of 32 for Swin-UNETR.
    """
    if out_channels is None:
        out_channels = channel_layout("ukbob", "compact").num_channels
    for name, value in (("feature_size", feature_size), ("in_channels", in_channels),
                        ("out_channels", out_channels)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    spec = network_spec(network)
    extra = {"variant": variant} if spec.variants else {}
    return spec.build(int(feature_size), int(in_channels), int(out_channels), bool(affine_norm),
                      roi_shape(roi_size), **extra)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
