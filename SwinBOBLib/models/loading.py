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
loads too (:mod:`SwinBOBLib.models.formats`): plain state dicts, UK_BOB trainer dicts with their
``args``, Lightning checkpoints and MONAI bundles. What the weights tell (network size,
normalisation layers, in/out channels) is inferred; the rest comes from the file's metadata, its
``args`` or bundle config, the caller's overrides, or an assumption, and
:attr:`CheckpointMetadata.sources` records which (with :attr:`CheckpointMetadata.notes` saying why).

Swin-UNETR *variants* (:mod:`SwinBOBLib.models.legacy`): MONAI 1.5 changed the patch-merging
order; a file that does not say is run with the ``legacy`` order every published Swin-UNETR was
trained with. SwinBOB's own checkpoints record the variant of the network they were saved from.

Heads: a UKBOB head of 73 channels (``full`` layout) is converted to the compact layout on load;
a 72-channel one is taken as compact. Heads of other schemes keep the checkpoint's own channel
order (``layout`` says which). A BraTS-style sigmoid head (``activation="sigmoid"``) gives
overlapping region channels (:mod:`SwinBOBLib.models.heads`).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from SwinBOBLib.labels.layouts import channel_layout, layout_for_channels
from SwinBOBLib.labels.schemes import available_schemes, get_scheme
from SwinBOBLib.models.bundles import is_bundle_zip, read_bundle
from SwinBOBLib.models.formats import SCHEME_MODALITY, CheckpointFile, classify, safe_load
from SwinBOBLib.models.heads import REGION_HEADS, region_head
from SwinBOBLib.models.legacy import DEFAULT_VARIANT, VARIANTS, variant_of
from SwinBOBLib.models.metadata import CHECKPOINT_FORMAT_VERSION, CheckpointMetadata
from SwinBOBLib.models.networks import build_model, network_spec

#: Prefixes that training wrappers put in front of the network's own parameter names.
_WRAPPER_PREFIXES = ("module.", "model.", "net.", "network.", "_orig_mod.")


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
    if not isinstance(metadata, CheckpointMetadata):
        metadata = CheckpointMetadata.from_dict(metadata)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    spec = network_spec(metadata.network)
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


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code.

    ``argparse.Namespace`` (the UK_BOB trainer's ``args``: plain data) is the one class allowed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty or corrupt file, or one that would need to unpickle objects or code.
    """
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
    anchor = network_spec(network).anchor
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
    for key in network_spec(network).head:
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
    if not network_spec(network).variants:
        values["variant"] = None
        sources.pop("variant", None)
        return
    _assume(values, sources, notes, "variant", DEFAULT_VARIANT,
            "the file does not say; every published Swin-UNETR was trained with MONAI < 1.5")
    if values["variant"] not in VARIANTS:
        raise ValueError(f"unknown Swin-UNETR variant '{values['variant']}'; available: {', '.join(VARIANTS)}")


def _resolve_preprocessing(values: dict, sources: dict, notes: dict, given: Mapping[str, Any]) -> None:
    """Intensity, spacing, ROI, overlap and modality: the file's, the caller's, or assumed defaults."""
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
            (folder or zip); see :mod:`SwinBOBLib.models.formats`.
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
    model, metadata, _ = load_checkpoint_and_file(path, **overrides)
    return model, metadata


def load_checkpoint_and_file(path, **overrides):
    """:func:`load_checkpoint`, also returning the :class:`~SwinBOBLib.models.formats.CheckpointFile`."""

    source = str(path)
    file = read_checkpoint(path)
    values, sources, notes = _file_values(file, source)
    network = overrides.get("network") or values.get("network", "swinunetr")
    state_dict = extract_state_dict(file.payload, network, source)
    _take(values, sources, {"network": network}, sources.get("network", "assumed"))
    _warn_size_mismatch(values, network_spec(network).infer(state_dict), source)
    _take(values, sources, network_spec(network).infer(state_dict), "weights")
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


def _warn_size_mismatch(told: Mapping[str, Any], inferred: Mapping[str, Any], source: str) -> None:
    """The weights decide the sizes; say so when the file's own record disagrees."""
    for key in ("feature_size", "in_channels", "out_channels"):
        if key in told and key in inferred and int(told[key]) != int(inferred[key]):
            warnings.warn(f"{source}: the file records {key}={told[key]} but its weights have {inferred[key]}; "
                          "using the weights'")


def read_checkpoint(path: str | os.PathLike) -> CheckpointFile:
    """Read a checkpoint file or MONAI bundle (folder or zip) safely and classify it.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: empty, corrupt or unsafe file; a bundle without weights or config.
    """
    path = Path(path)
    if path.is_dir() or (path.is_file() and is_bundle_zip(path)):
        return read_bundle(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or bundle folder")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty")
    payload = safe_load(path, str(path))
    return classify(path, payload)
