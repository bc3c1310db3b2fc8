"""Swin-BOB networks and checkpoints: build, save and load safely.

Swin-BOB is MONAI's Swin-UNETR (UKBOB sec. 4.3: 96^3 patches, feature size 48) with one output
channel per class of the *compact* UKBOB layout (72 channels, see :mod:`SwinBOBLib.labels`).

Checkpoint format (version 1), written by :func:`save_checkpoint` and read by :func:`load_checkpoint`::

    {"state_dict": {parameter name: tensor, ...},          # the network's own keys, no prefixes
     "swinbob": {"format_version": 1, "network": "swinunetr", "scheme": "ukbob", "layout": "compact",
                 "in_channels": 1, "out_channels": 72, "contrasts": ["water"] or None,
                 "target_spacing_mm": [x, y, z] or None, "intensity": "percentile",
                 "intensity_params": {"lower": 0.5, "upper": 99.5}, "feature_size": 48,
                 "roi_size": 96, "affine_norm": true}}

Only plain types are stored, so the file loads with ``torch.load(..., weights_only=True)``; files
that need more (pickled classes, code) are refused. Plain state dicts and wrappers from MONAI or
Lightning (``state_dict``/``model``/``network`` keys, ``module.``/``model.``/``net.`` prefixes) load
too: what the keys tell (network size, normalisation layers, in/out channels) is inferred and the
rest takes the defaults of :class:`CheckpointMetadata`. A 73-channel (``full`` layout) head is
converted to the compact layout on load.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .labels import channel_layout, layout_for_channels

CHECKPOINT_FORMAT_VERSION = 1

#: Feature sizes Swin-BOB is built with (48 is the paper's; 12 and 24 for CPU and tests).
FEATURE_SIZES = (12, 24, 48)

#: Prefixes that training wrappers put in front of the network's own parameter names.
_WRAPPER_PREFIXES = ("module.", "model.", "net.", "network.", "_orig_mod.")


@dataclass
class CheckpointMetadata:
    """What inference needs to know about a checkpoint, stored beside its weights.

    Defaults are what a plain state dict without metadata is assumed to be.
    """

    network: str = "swinunetr"  # key of NETWORKS
    scheme: str = "ukbob"  # label scheme of the output channels
    layout: str = "compact"  # channel layout: 72 (compact) or 73 (full) channels for UKBOB
    in_channels: int = 1  # one contrast (e.g. Dixon water, or a single MR/CT volume)
    out_channels: int = 72  # number of output classes including background
    contrasts: tuple[str, ...] | None = None  # channel names to feed, in order; None: any
    target_spacing_mm: tuple[float, float, float] | None = None  # None: keep the scan's own grid
    intensity: str = "percentile"  # "percentile" (MRI, to [0, 1]), "ct_window" or "none"
    intensity_params: dict = field(default_factory=lambda: {"lower": 0.5, "upper": 99.5})
    feature_size: int = 48  # Swin-UNETR embedding size (paper: 48)
    roi_size: int = 96  # sliding-window patch edge in voxels (paper: 96^3)
    affine_norm: bool = True  # decoder InstanceNorms carry affine parameters (ETTA can adapt them)
    format_version: int = CHECKPOINT_FORMAT_VERSION

    def to_dict(self) -> dict:
        """Plain-type dictionary (lists, not tuples) as stored in the checkpoint."""
        data = dataclasses.asdict(self)
        for key in ("contrasts", "target_spacing_mm"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> "CheckpointMetadata":
        """Metadata from a stored dictionary; unknown keys are ignored with a warning."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown metadata keys {unknown}")
        values = {k: v for k, v in data.items() if k in known}
        if values.get("contrasts") is not None:
            values["contrasts"] = tuple(str(c) for c in values["contrasts"])
        if values.get("target_spacing_mm") is not None:
            spacing = tuple(float(s) for s in values["target_spacing_mm"])
            if len(spacing) != 3 or min(spacing) <= 0:
                raise ValueError(f"{source}: target_spacing_mm must be three positive numbers, got {spacing}")
            values["target_spacing_mm"] = spacing
        return cls(**values)


# ----------------------------------------------------------------------------- network registry


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


def _build_swinunetr(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size: int = 96):
    from monai.networks.nets import SwinUNETR

    if feature_size % 12:
        raise ValueError(f"Swin-UNETR feature_size must be a multiple of 12 (e.g. {FEATURE_SIZES}), "
                         f"got {feature_size}")
    norm = ("instance", {"affine": True}) if affine_norm else "instance"
    model = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                      norm_name=norm, spatial_dims=3)
    return replace_instance_norms(model)


class InstanceNormAsGroupNorm(torch.nn.GroupNorm):
    """InstanceNorm written as GroupNorm(C, C) that also accepts one voxel per channel.

    With a single voxel the normalised value is 0 (x minus its own mean), so the output is the
    bias (or 0 without affine parameters), where ``F.instance_norm``/``F.group_norm`` raise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0, 0].numel() > 1:
            return super().forward(x)
        out = x - x  # keeps dtype, device and the graph
        if self.affine:
            # The weight takes part (with a zero gradient) so DDP sees every parameter used.
            shape = (1, -1, *([1] * (x.ndim - 2)))
            out = out * self.weight.view(shape).to(out.dtype) + self.bias.view(shape).to(out.dtype)
        return out


def replace_instance_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Swap every InstanceNorm for the identical GroupNorm (one group per channel), in place.

    Why: ``F.instance_norm`` refuses inputs with one voxel per channel, which Swin-UNETR's
    bottleneck sees with 32^3 patches (small models on CPU, tests). GroupNorm(C, C) computes
    the same normalisation, has the same ``weight``/``bias`` names and shapes (or none without
    affine parameters), so state dicts are unchanged and ETTA adapts the same parameters.
    InstanceNorms tracking running statistics are left alone (they are not plain instance norms).
    """
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
            replacement = InstanceNormAsGroupNorm(child.num_features, child.num_features, eps=child.eps,
                                             affine=child.affine)
            if child.affine:
                replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            replace_instance_norms(child)
    return model


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


def _build_unetr(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size: int = 96):
    from monai.networks.nets import UNETR

    if roi_size % 16:
        raise ValueError(f"UNETR needs a roi size that is a multiple of 16 (its patch size), got {roi_size}")
    width = _unetr_width(feature_size)
    model = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=(roi_size,) * 3,
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

    # GroupNorm (8 groups) with affine parameters, MONAI's default for SegResNet.
    return SegResNet(spatial_dims=3, init_filters=feature_size, in_channels=in_channels, out_channels=out_channels,
                     norm=("GROUP", {"num_groups": min(8, feature_size), "affine": affine_norm}))


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
                             ("out.conv.conv.weight", "out.conv.conv.bias")),
    "unetr": NetworkSpec(_build_unetr, _infer_unetr, "vit.patch_embedding.position_embeddings",
                         ("out.conv.conv.weight", "out.conv.conv.bias"), 16),
    "segresnet": NetworkSpec(_build_segresnet, _infer_segresnet, "convInit.conv.weight",
                             ("conv_final.2.conv.weight", "conv_final.2.conv.bias"), 8),
    # The U-Net's last stage (a transposed convolution, then a residual unit) has no single head.
    "unet": NetworkSpec(_build_unet, _infer_unet, "model.0.conv.unit0.conv.weight", (), 16),
}


def roi_multiple(network: str) -> int:
    """Patch edges of ``network`` must be multiples of this many voxels."""
    return _network_spec(network).roi_multiple


def _network_spec(network: str) -> NetworkSpec:
    key = str(network).lower().replace("-", "").replace("_", "")
    if key not in NETWORKS:
        raise ValueError(f"unknown network '{network}'; available: {', '.join(NETWORKS)}")
    return NETWORKS[key]


def build_model(feature_size: int = 48, in_channels: int = 1, out_channels: int | None = None,
                affine_norm: bool = True, network: str = "swinunetr", roi_size: int = 96) -> torch.nn.Module:
    """Build a randomly initialised Swin-BOB network.

    Args:
        feature_size: embedding size (12, 24 or 48; the paper's Swin-BOB uses 48).
        in_channels: number of input contrasts.
        out_channels: output classes; default the compact UKBOB layout (72 = background + 71).
        affine_norm: give the decoder's InstanceNorm3d layers affine weights and biases, so ETTA
            adapts them as well as the Swin encoder's LayerNorms. MONAI's default (False) leaves
            only the LayerNorms adaptable.
        network: a key of :data:`NETWORKS` (swinunetr, unetr, segresnet, unet).
        roi_size: patch edge the network is built for (only UNETR's position embedding depends on it).

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
    return _network_spec(network).build(int(feature_size), int(in_channels), int(out_channels), bool(affine_norm),
                                        int(roi_size))


# ----------------------------------------------------------------------------- saving


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    metadata: CheckpointMetadata | Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"state_dict", "swinbob": metadata}`` atomically (temporary file, then rename).

    ``extra`` adds further top-level entries of plain types and tensors (training keeps its
    optimiser, scheduler and data position under ``"training"``); loaders ignore them.

    The in/out channels, feature size and affine-norm flag are taken from the model's own
    weights, so the stored metadata always matches them.
    """
    if not isinstance(metadata, CheckpointMetadata):
        metadata = CheckpointMetadata.from_dict(metadata)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    inferred = _network_spec(metadata.network).infer(state)
    metadata = dataclasses.replace(metadata, **inferred)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save({**dict(extra or {}), "state_dict": state, "swinbob": metadata.to_dict()}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------- loading


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty or corrupt file, or one that would need to unpickle objects or code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(str(error))
        if reason is None:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint (corrupt or not a torch.save file)") from None
        raise ValueError(f"{path}: refused to load: the checkpoint contains pickled objects or code "
                         f"that a safe (weights_only) load does not allow ({reason}). Re-save it "
                         "as a plain state dict: torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from None


def _unpickling_reason(message: str) -> str | None:
    """The offending global/class named by torch's weights-only unpickler, or None for plain corruption."""
    for line in message.splitlines():
        lowered = line.lower()
        if "global" in lowered or "unsupported class" in lowered or "reduce" in lowered:
            return line.strip()
    return None


def extract_state_dict(obj: Any, network: str = "swinunetr", source: str = "checkpoint") -> dict:
    """The network's own ``{name: tensor}`` from a plain state dict or a training wrapper.

    Looks inside ``state_dict``/``model``/``network``/``net`` keys and strips prefixes such as
    ``module.`` (DataParallel) or ``model.`` (Lightning) in front of the network's names.
    """
    anchor = _network_spec(network).anchor
    for _ in range(3):
        if isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if not isinstance(obj, Mapping):
            break
        inner = [obj[k] for k in ("state_dict", "model", "network", "net", "model_state_dict")
                 if isinstance(obj.get(k), Mapping)]
        if not inner:
            break
        obj = inner[0]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    prefixes = [k[: -len(anchor)] for k in tensors if k.endswith(anchor)]
    if not prefixes:
        raise ValueError(f"{source}: no '{anchor}' parameter: this is not a {network} state dict "
                         f"(first keys: {list(tensors)[:3]})")
    prefix = prefixes[0]
    if prefix and not any(prefix.startswith(p) for p in _WRAPPER_PREFIXES):
        warnings.warn(f"{source}: stripping unusual parameter prefix '{prefix}'")
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                     source: str = "checkpoint") -> None:
    """Raise ValueError naming the first missing, unexpected or wrongly shaped key."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source}: missing parameter '{key}' (expected shape {tuple(value.shape)})")
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise ValueError(f"{source}: parameter '{key}' has shape {tuple(state_dict[key].shape)}, "
                             f"the model expects {tuple(value.shape)}")
    extra = [k for k in state_dict if k not in expected]
    if extra:
        raise ValueError(f"{source}: unexpected parameter '{extra[0]}' (shape {tuple(state_dict[extra[0]].shape)}) "
                         f"and {len(extra) - 1} more; the model has no such key")


def convert_head(state_dict: dict, metadata: CheckpointMetadata, network: str = "swinunetr") -> dict:
    """Convert a ``full``-layout output head (73 channels for UKBOB) to the compact layout."""
    if metadata.layout == "compact":
        return state_dict
    source_layout = channel_layout(metadata.scheme, metadata.layout)
    rows = channel_layout(metadata.scheme, "compact").rows_from(source_layout)
    if np.any(rows < 0):
        raise ValueError(f"cannot convert the {metadata.layout} head of scheme '{metadata.scheme}' "
                         "to the compact layout: some classes have no channel")
    converted = dict(state_dict)
    for key in _network_spec(network).head:
        converted[key] = state_dict[key][torch.as_tensor(rows)]
    return converted


def _stored_metadata(obj: Any, source: str) -> CheckpointMetadata | None:
    """The checkpoint's own metadata, or None for a plain state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("swinbob"), Mapping):
        metadata = CheckpointMetadata.from_dict(obj["swinbob"], source)
        if metadata.format_version > CHECKPOINT_FORMAT_VERSION:
            raise ValueError(f"{source}: checkpoint format version {metadata.format_version} is newer "
                             f"than this SwinBOB reads ({CHECKPOINT_FORMAT_VERSION}); update SwinBOB")
        return metadata
    return None


def load_checkpoint(path: str | os.PathLike, **overrides) -> tuple[torch.nn.Module, CheckpointMetadata]:
    """Load a checkpoint safely into a freshly built network.

    Args:
        path: a file from :func:`save_checkpoint`, a plain state dict, or a MONAI/Lightning-style
            wrapper, with a compact (72) or full (73) channel UKBOB head.
        **overrides: metadata fields to override (e.g. ``roi_size=32``, ``target_spacing_mm=...``).

    Returns:
        ``(model, metadata)``: the model in eval mode on the CPU with the compact head, and the
        effective metadata (``layout`` is "compact" after conversion).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, pickled code, a state dict of another network or shape (the
            message names the first wrong key and both shapes), inconsistent metadata.
    """
    source = str(path)
    obj = read_checkpoint_file(path)
    stored = _stored_metadata(obj, source)
    metadata = stored or CheckpointMetadata()
    network = metadata.network
    state_dict = extract_state_dict(obj, network, source)
    inferred = _network_spec(network).infer(state_dict)
    stored_layout = metadata.layout if stored else None
    metadata = dataclasses.replace(metadata, **inferred)
    metadata = dataclasses.replace(metadata, layout=_head_layout(metadata, stored_layout, source).kind)
    metadata = dataclasses.replace(metadata, **{k: v for k, v in overrides.items() if v is not None})
    state_dict = convert_head(state_dict, metadata, network)
    compact = channel_layout(metadata.scheme, "compact").num_channels
    metadata = dataclasses.replace(metadata, layout="compact", out_channels=compact)
    model = build_model(metadata.feature_size, metadata.in_channels, compact, metadata.affine_norm, network,
                        metadata.roi_size)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    if metadata.contrasts is not None and len(metadata.contrasts) != metadata.in_channels:
        raise ValueError(f"{source}: metadata lists {len(metadata.contrasts)} contrasts "
                         f"{metadata.contrasts} for a network with {metadata.in_channels} input channels")
    return model.eval(), metadata


def _head_layout(metadata: CheckpointMetadata, stored_layout: str | None, source: str):
    """The channel layout the head's row count denotes; refuses a count that fits none."""
    try:
        layout = layout_for_channels(metadata.out_channels, metadata.scheme)
    except ValueError as error:
        raise ValueError(f"{source}: output head: {error}") from None
    if stored_layout is not None and stored_layout != layout.kind:
        warnings.warn(f"{source}: metadata says layout '{stored_layout}' but the head has "
                      f"{metadata.out_channels} channels ({layout.kind}); using {layout.kind}")
    return layout


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
