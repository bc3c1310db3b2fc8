"""Swin-BOB networks and checkpoints: build, save and load safely, exactly as they were trained.

Swin-BOB is MONAI's Swin-UNETR (UKBOB sec. 4.3: 96^3 patches, feature size 48) with one output
channel per class of the *compact* UKBOB layout (72 channels, see :mod:`SwinBOBLib.labels`).

Checkpoint format (version 2; version 1 files, without ``variant``, ``activation`` and
``overlap``, still load), written by :func:`save_checkpoint` and read by :func:`load_checkpoint`::

    {"state_dict": {parameter name: tensor, ...},          # the network's own keys, no prefixes
     "swinbob": {"format_version": 2, "network": "swinunetr", "variant": "fixed", "scheme": "ukbob",
                 "layout": "compact", "activation": "softmax", "in_channels": 1, "out_channels": 72,
                 "contrasts": ["water"] or None, "target_spacing_mm": [x, y, z] or None,
                 "intensity": "percentile", "intensity_params": {"lower": 0.5, "upper": 99.5},
                 "feature_size": 48, "roi_size": 96, "overlap": None, "affine_norm": true, ...}}

Only plain types are stored, so the file loads with ``torch.load(..., weights_only=True)``; files
that need more (pickled classes, code) are refused. Every family of published Swin-UNETR weights
loads too (:mod:`SwinBOBLib.checkpoints`): plain state dicts, UK_BOB trainer dicts with their
``args``, Lightning checkpoints and MONAI bundles. What the weights tell (network size,
normalisation layers, in/out channels) is inferred; the rest comes from the file's metadata, its
``args`` or bundle config, the caller's overrides, or an assumption, and
:attr:`CheckpointMetadata.sources` records which (with :attr:`CheckpointMetadata.notes` saying why).

Swin-UNETR *variants* (:mod:`SwinBOBLib.networks_legacy`): MONAI 1.5 changed the patch-merging
order; a file that does not say is run with the ``legacy`` order every published Swin-UNETR was
trained with. SwinBOB's own checkpoints record the variant of the network they were saved from.

Heads: a UKBOB head of 73 channels (``full`` layout) is converted to the compact layout on load;
a 72-channel one is taken as compact. Heads of other schemes keep the checkpoint's own channel
order (``layout`` says which). A BraTS-style sigmoid head (``activation="sigmoid"``) gives
overlapping region channels (:mod:`SwinBOBLib.heads`).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .labels import available_schemes, channel_layout, get_scheme, layout_for_channels

CHECKPOINT_FORMAT_VERSION = 2

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
    variant: str | None = None  # Swin-UNETR patch merging (networks_legacy.VARIANTS); None: not a Swin-UNETR
    scheme: str = "ukbob"  # label scheme of the output channels
    layout: str = "compact"  # channel layout: compact or full (73 channels for UKBOB), "regions" (sigmoid)
    activation: str = "softmax"  # "softmax" (one class per voxel) or "sigmoid" (overlapping regions, BraTS)
    in_channels: int = 1  # one contrast (e.g. Dixon water, or a single MR/CT volume)
    out_channels: int = 72  # number of output classes including background
    contrasts: tuple[str, ...] | None = None  # channel names to feed, in order; None: any
    target_spacing_mm: tuple[float, float, float] | None = None  # None: keep the scan's own grid
    intensity: str = "percentile"  # percentile (MRI, to [0, 1]), ct_window, zscore_nonzero, zscore or none
    intensity_params: dict = field(default_factory=lambda: {"lower": 0.5, "upper": 99.5})
    feature_size: int = 48  # Swin-UNETR embedding size (paper: 48)
    roi_size: int = 96  # sliding-window patch edge in voxels (paper: 96^3)
    overlap: float | None = None  # sliding-window overlap it was validated with; None: the library's 0.25
    affine_norm: bool = True  # decoder InstanceNorms carry affine parameters (ETTA can adapt them)
    modality: str | None = None  # "MR" or "CT" it was trained on; None: unknown (no modality warning)
    name: str | None = None  # what the model is called in reports and the Slicer panel
    description: str | None = None  # one sentence on what it is and what it was trained on
    demo: bool = False  # True for a demonstration model (e.g. the bundled one), not Swin-BOB
    training: dict | None = None  # how it was trained: data, synthesis, steps (plain types)
    format_version: int = CHECKPOINT_FORMAT_VERSION
    # Not stored: where each value came from (SwinBOBLib.checkpoints.SOURCES) and why, set on load.
    sources: dict = field(default_factory=dict, compare=False)
    notes: dict = field(default_factory=dict, compare=False)

    def to_dict(self, provenance: bool = True) -> dict:
        """Plain-type dictionary (lists, not tuples); ``provenance=False`` drops sources/notes (storage)."""
        data = dataclasses.asdict(self)
        for key in ("contrasts", "target_spacing_mm"):
            if data[key] is not None:
                data[key] = list(data[key])
        if not provenance:
            data.pop("sources")
            data.pop("notes")
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
    variants: bool = False  # built in several variants (``build(..., variant=...)``), Swin-UNETR only


def _build_swinunetr(feature_size: int, in_channels: int, out_channels: int, affine_norm: bool, roi_size: int = 96,
                     variant: str | None = None):
    from monai.networks.nets import SwinUNETR

    from .networks_legacy import TRAINING_VARIANT, merging_module

    if feature_size % 12:
        raise ValueError(f"Swin-UNETR feature_size must be a multiple of 12 (e.g. {FEATURE_SIZES}), "
                         f"got {feature_size}")
    norm = ("instance", {"affine": True}) if affine_norm else "instance"
    model = SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                      norm_name=norm, spatial_dims=3, downsample=merging_module(variant or TRAINING_VARIANT))
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
    return _network_spec(network).roi_multiple


def _network_spec(network: str) -> NetworkSpec:
    key = str(network).lower().replace("-", "").replace("_", "")
    if key not in NETWORKS:
        raise ValueError(f"unknown network '{network}'; available: {', '.join(NETWORKS)}")
    return NETWORKS[key]


def build_model(feature_size: int = 48, in_channels: int = 1, out_channels: int | None = None,
                affine_norm: bool = True, network: str = "swinunetr", roi_size: int = 96,
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
        roi_size: patch edge the network is built for (only UNETR's position embedding depends on it).
        variant: Swin-UNETR patch merging, a key of :data:`networks_legacy.VARIANTS` (``legacy``
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
    spec = _network_spec(network)
    extra = {"variant": variant} if spec.variants else {}
    return spec.build(int(feature_size), int(in_channels), int(out_channels), bool(affine_norm), int(roi_size),
                      **extra)


# ----------------------------------------------------------------------------- saving


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    metadata: CheckpointMetadata | Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"state_dict", "swinbob": metadata}`` atomically (temporary file, then rename).

    ``extra`` adds further top-level entries of plain types and tensors (training keeps its
    optimiser, scheduler and data position under ``"training"``); loaders ignore them.

    The in/out channels, feature size and affine-norm flag are taken from the model's own
    weights, and the Swin-UNETR variant from its patch-merging layers, so the stored metadata
    always matches them.
    """
    from .networks_legacy import variant_of

    if not isinstance(metadata, CheckpointMetadata):
        metadata = CheckpointMetadata.from_dict(metadata)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    spec = _network_spec(metadata.network)
    inferred = spec.infer(state)
    # The variant is read off the network itself, so a checkpoint always says how it was computed.
    variant = variant_of(model) if spec.variants else None
    metadata = dataclasses.replace(metadata, **inferred, variant=variant, format_version=CHECKPOINT_FORMAT_VERSION)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save({**dict(extra or {}), "state_dict": state, "swinbob": metadata.to_dict(provenance=False)}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------- loading


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code.

    ``argparse.Namespace`` (the UK_BOB trainer's ``args``: plain data) is the one class allowed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty or corrupt file, or one that would need to unpickle objects or code.
    """
    from .checkpoints import safe_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty")
    return safe_load(path, str(path))


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


#: Fields a SwinBOB format-1 file could not hold; their values then follow from the format.
_FORMAT1_IMPLIED = {"activation": "softmax", "overlap": None}
#: The order in which schemes are tried for a head whose scheme the file does not name.
_SCHEME_PREFERENCE = ("ukbob", "btcv", "brats")


def _file_values(file, source: str) -> tuple[dict, dict, dict]:
    """``(values, sources, notes)`` the file itself states: SwinBOB metadata, or UK_BOB args / bundle."""
    if file.kind != "swinbob":
        return dict(file.told), dict.fromkeys(file.told, file.told_by), dict(file.notes)
    stored = CheckpointMetadata.from_dict(file.stored, source)
    if stored.format_version > CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{source}: checkpoint format version {stored.format_version} is newer "
                         f"than this SwinBOB reads ({CHECKPOINT_FORMAT_VERSION}); update SwinBOB")
    known = {f.name for f in dataclasses.fields(CheckpointMetadata)} - {"sources", "notes"}
    values = {k: getattr(stored, k) for k in known if k in file.stored}
    sources, notes = dict.fromkeys(values, "metadata"), {}
    if stored.format_version < 2:
        for key, value in _FORMAT1_IMPLIED.items():
            values[key], sources[key] = value, "metadata"
            notes[key] = "implied by SwinBOB checkpoint format 1"
        if values.get("network", "swinunetr") == "swinunetr":
            values["variant"], sources["variant"] = "fixed", "assumed"
            notes["variant"] = ("SwinBOB checkpoint format 1 does not record the variant; SwinBOB trained "
                                "with MONAI >= 1.5 ('fixed' patch merging)")
    return values, sources, notes


def _take(values: dict, sources: dict, new: Mapping[str, Any], source: str) -> None:
    """Set ``new`` values (skipping None) as coming from ``source``."""
    for key, value in new.items():
        if value is not None:
            values[key], sources[key] = value, source


def _assume(values: dict, sources: dict, notes: dict, key: str, value: Any, note: str) -> None:
    """Fill ``key`` with an assumed ``value`` unless the file or the caller said it."""
    if key not in values:
        values[key], sources[key], notes[key] = value, "assumed", note


def _resolve_head(values: dict, sources: dict, notes: dict, source: str) -> None:
    """Scheme, layout and activation of the output head from what is known and its channel count."""
    from .heads import REGION_HEADS

    count = int(values["out_channels"])
    if "scheme" not in values:
        scheme, why = _scheme_for_channels(count, values.get("activation"), source)
        _assume(values, sources, notes, "scheme", scheme, why)
    scheme = get_scheme(values["scheme"]).name
    values["scheme"] = scheme
    region = REGION_HEADS.get(scheme)
    sigmoid = values.get("activation") == "sigmoid" or (
        "activation" not in values and region is not None and count == region.num_channels)
    if sigmoid:
        _resolve_region_head(values, sources, notes, count, source)
        return
    _assume(values, sources, notes, "activation", "softmax", "one class per voxel (a softmax head)")
    try:
        layout = layout_for_channels(count, scheme)
    except ValueError as error:
        raise ValueError(f"{source}: output head: {error}; choose the scheme with --scheme") from None
    if "layout" in values and values["layout"] != layout.kind:
        warnings.warn(f"{source}: metadata says layout '{values['layout']}' but the head has {count} "
                      f"channels ({layout.kind}); using {layout.kind}")
        values["layout"] = layout.kind
    if scheme == "ukbob" and layout.kind == "compact":
        _assume(values, sources, notes, "layout", "compact",
                "72 channels: compact layout (channel c >= 20 holds label c + 1); the UK_BOB code defines none")
    if "layout" not in values:  # the channel count tells the layout: it is read off the weights
        values["layout"], sources["layout"] = layout.kind, "weights"
        notes["layout"] = f"{count} channels: the {layout.kind} layout of {scheme}"


def _resolve_region_head(values, sources, notes, count: int, source: str) -> None:
    from .heads import region_head

    head = region_head(values["scheme"])
    if count != head.num_channels:
        raise ValueError(f"{source}: a sigmoid head of scheme '{values['scheme']}' has {head.num_channels} "
                         f"region channels ({', '.join(head.regions)}), this one has {count}")
    _assume(values, sources, notes, "activation", "sigmoid",
            f"{count} channels: {values['scheme']} regions {', '.join(head.regions)} (sigmoid)")
    values["layout"] = "regions"
    sources.setdefault("layout", sources["activation"])


def _scheme_for_channels(count: int, activation: str | None, source: str) -> tuple[str, str]:
    """The label scheme a head of ``count`` channels most plausibly has, and why."""
    from .heads import REGION_HEADS

    candidates = []
    for name in (*_SCHEME_PREFERENCE, *sorted(set(available_schemes()) - set(_SCHEME_PREFERENCE))):
        if activation != "softmax" and name in REGION_HEADS and REGION_HEADS[name].num_channels == count:
            candidates.append((name, f"{count} output channels: the {name} sigmoid region head"))
        if activation != "sigmoid" and count in {channel_layout(name, k).num_channels for k in ("compact", "full")}:
            candidates.append((name, f"{count} output channels: the only scheme with that many is {name}"))
    if not candidates:
        sizes = ", ".join(f"{n} {channel_layout(n).num_channels}" for n in available_schemes())
        raise ValueError(f"{source}: output head: {count} output channels match no label scheme ({sizes}); "
                         "choose one with --scheme")
    if len(candidates) > 1:
        others = ", ".join(n for n, _ in candidates[1:])
        return candidates[0][0], f"{count} output channels: {candidates[0][0]} (also fits {others}; use --scheme)"
    return candidates[0]


def _resolve_variant(values: dict, sources: dict, notes: dict, network: str) -> None:
    from .networks_legacy import DEFAULT_VARIANT, VARIANTS

    if not _network_spec(network).variants:
        values["variant"] = None
        sources.pop("variant", None)
        return
    _assume(values, sources, notes, "variant", DEFAULT_VARIANT,
            "the file does not say; every published Swin-UNETR was trained with MONAI < 1.5")
    if values["variant"] not in VARIANTS:
        raise ValueError(f"unknown Swin-UNETR variant '{values['variant']}'; available: {', '.join(VARIANTS)}")


def _resolve_preprocessing(values: dict, sources: dict, notes: dict, given: Mapping[str, Any]) -> None:
    """Intensity, spacing, ROI, overlap and modality: the file's, the caller's, or assumed defaults."""
    from .checkpoints import SCHEME_MODALITY

    defaults = CheckpointMetadata()
    if "intensity" in given and "intensity_params" not in given:
        values.pop("intensity_params", None)  # the file's parameters belong to its own intensity mode
    _assume(values, sources, notes, "intensity", defaults.intensity, "MRI percentile scaling to [0, 1]")
    _assume(values, sources, notes, "intensity_params",
            defaults.intensity_params if values["intensity"] == "percentile" else {},
            f"defaults of '{values['intensity']}'")
    _assume(values, sources, notes, "target_spacing_mm", None, "the scan's own grid")
    _assume(values, sources, notes, "roi_size", defaults.roi_size, "Swin-UNETR's 96^3 training patch")
    _assume(values, sources, notes, "overlap", None, "the library default (0.25)")
    _assume(values, sources, notes, "modality", SCHEME_MODALITY.get(values["scheme"]),
            f"what '{values['scheme']}' models are trained on")


def load_checkpoint(path: str | os.PathLike, **overrides) -> tuple[torch.nn.Module, CheckpointMetadata]:
    """Load a checkpoint safely into a freshly built network, exactly as it was trained.

    Args:
        path: a SwinBOB checkpoint, a plain state dict, a UK_BOB trainer dict (with or without
            ``args``/``optimizer``/``scheduler``), a Lightning checkpoint, or a MONAI bundle
            (folder or zip); see :mod:`SwinBOBLib.checkpoints`.
        **overrides: metadata fields to set (e.g. ``scheme="btcv"``, ``variant="fixed"``,
            ``roi_size=32``, ``target_spacing_mm=...``); None values are ignored.

    Returns:
        ``(model, metadata)``: the model in eval mode on the CPU, and the effective metadata with
        :attr:`CheckpointMetadata.sources` saying where each value came from. The model maps
        ``(B, in_channels, D, H, W)`` to logits ``(B, out_channels, D, H, W)``: for UKBOB in the
        compact layout (a 73-channel head is converted), for other schemes in the checkpoint's
        own channel order (``metadata.layout``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, pickled code, a state dict of another network or shape (the
            message names the first wrong key and both shapes), a head no scheme fits, inconsistent metadata.
    """
    model, metadata, _ = _load(path, **overrides)
    return model, metadata


def _load(path, **overrides):
    """:func:`load_checkpoint`, also returning the :class:`checkpoints.CheckpointFile`."""
    from .checkpoints import read_checkpoint

    source = str(path)
    file = read_checkpoint(path)
    values, sources, notes = _file_values(file, source)
    network = overrides.get("network") or values.get("network", "swinunetr")
    state_dict = extract_state_dict(file.payload, network, source)
    _take(values, sources, {"network": network}, sources.get("network", "assumed"))
    _warn_size_mismatch(values, _network_spec(network).infer(state_dict), source)
    _take(values, sources, _network_spec(network).infer(state_dict), "weights")
    given = {k: v for k, v in overrides.items() if v is not None}
    _take(values, sources, given, "option")
    _resolve_head(values, sources, notes, source)
    _resolve_variant(values, sources, notes, network)
    _resolve_preprocessing(values, sources, notes, given)
    metadata = CheckpointMetadata.from_dict(values, source)
    if metadata.scheme == "ukbob" and metadata.layout == "full":
        state_dict = convert_head(state_dict, metadata, network)
        metadata = dataclasses.replace(metadata, layout="compact", out_channels=channel_layout("ukbob").num_channels)
        notes["layout"] = "73-channel full head converted to the compact layout"
    metadata = dataclasses.replace(metadata, sources=sources, notes=notes)
    model = build_model(metadata.feature_size, metadata.in_channels, metadata.out_channels, metadata.affine_norm,
                        network, metadata.roi_size, metadata.variant)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    if metadata.contrasts is not None and len(metadata.contrasts) != metadata.in_channels:
        raise ValueError(f"{source}: metadata lists {len(metadata.contrasts)} contrasts "
                         f"{metadata.contrasts} for a network with {metadata.in_channels} input channels")
    return model.eval(), metadata, file


def describe_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """What :func:`load_checkpoint` makes of a file, as a JSON-able summary (CLI, Slicer panel).

    Args:
        path: any file or bundle :func:`load_checkpoint` reads; ``overrides`` as there.

    Returns:
        ``{"path", "format", "file", "network", "variant", "variant_description", "feature_size",
        "in_channels", "out_channels", "scheme", "layout", "activation", "channels", "contrasts",
        "modality", "preprocessing", "parameters", "etta_parameters", "etta_tensors", "name",
        "description", "demo", "sources", "notes"}``: ``preprocessing`` is
        :func:`checkpoints.preprocessing_record` (each value with its source), ``channels`` the
        label (or region) of every output channel, ``etta_parameters`` the number of scalars ETTA
        adapts (normalisation affine weights and biases).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint`.
    """
    from .checkpoints import preprocessing_record
    from .etta import adaptable_parameters
    from .networks_legacy import VARIANTS

    model, metadata, file = _load(path, **overrides)
    adaptable = adaptable_parameters(model)
    return {"path": str(path), "format": file.kind, "file": _plain_details(file.details),
            "network": metadata.network, "variant": metadata.variant,
            "variant_description": VARIANTS.get(metadata.variant) if metadata.variant else None,
            "feature_size": metadata.feature_size, "in_channels": metadata.in_channels,
            "out_channels": metadata.out_channels, "scheme": metadata.scheme, "layout": metadata.layout,
            "activation": metadata.activation, "channels": _channel_names(metadata),
            "contrasts": list(metadata.contrasts) if metadata.contrasts else None, "modality": metadata.modality,
            "preprocessing": preprocessing_record(metadata), "parameters": count_parameters(model),
            "etta_parameters": int(sum(p.numel() for p in adaptable)), "etta_tensors": len(adaptable),
            "name": metadata.name, "description": metadata.description, "demo": bool(metadata.demo),
            "sources": dict(metadata.sources), "notes": dict(metadata.notes)}


def _channel_names(metadata: CheckpointMetadata) -> list[str]:
    if metadata.activation == "sigmoid":
        from .heads import region_head

        return list(region_head(metadata.scheme).regions)
    scheme = get_scheme(metadata.scheme)
    return ["background" if v == 0 else scheme.name_of(v) if v in scheme.structures else "unused"
            for v in channel_layout(metadata.scheme, metadata.layout).labels]


def _plain_details(details: Mapping[str, Any]) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in details.items()}


def _warn_size_mismatch(told: Mapping[str, Any], inferred: Mapping[str, Any], source: str) -> None:
    """The weights decide the sizes; say so when the file's own record disagrees."""
    for key in ("feature_size", "in_channels", "out_channels"):
        if key in told and key in inferred and int(told[key]) != int(inferred[key]):
            warnings.warn(f"{source}: the file records {key}={told[key]} but its weights have {inferred[key]}; "
                          "using the weights'")


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
