"""Checkpoint files of every family SwinBOB runs, read safely, and what each one tells.

Families (``kind``), all read with ``torch.load(..., weights_only=True)``:

* ``swinbob``: ``{"state_dict", "swinbob": metadata}`` written by :func:`model.save_checkpoint`.
* ``ukbob_trainer``: the UK_BOB / Swin-UNETR research trainer's ``{"epoch", "best_acc",
  "state_dict"}``, optionally with ``"optimizer"``, ``"scheduler"`` and ``"args"`` (the argparse
  options as a dict or an ``argparse.Namespace``: the only class allowed through the safe
  unpickler, it holds data, never code). ``args`` give the preprocessing they were trained with.
* ``lightning``: a PyTorch Lightning checkpoint (``state_dict`` with ``model.`` prefixes).
* ``state_dict``: a plain ``{name: tensor}`` or a wrapper (``model``/``network``/``module.``).
* ``bundle``: a MONAI bundle folder or zip: ``configs/inference.json`` (or ``.yaml``) gives the
  network arguments, ``Spacingd`` pixdim, the intensity transform, the inferer's ROI and overlap
  and the output activation; ``configs/metadata.json`` the MONAI version (hence the patch-merging
  variant) and the input modality; ``models/model.pt`` the weights. Config expressions (``$...``)
  are never evaluated: only literals and ``@name`` references are read.

:func:`read_checkpoint` returns a :class:`CheckpointFile`; :func:`model.load_checkpoint` turns it
into a network and metadata whose every value records where it came from (:data:`SOURCES`).
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

#: Where a metadata value came from, as ``report.json`` and ``swinbob checkpoint info`` say it.
SOURCES = ("metadata", "args", "bundle", "option", "weights", "assumed")

#: Bundle ``network_def`` targets -> SwinBOB network names.
_BUNDLE_NETWORKS = {"swinunetr": "swinunetr", "unetr": "unetr", "segresnet": "segresnet", "unet": "unet"}

#: Modality each label scheme's models are trained on (for the CT-vs-MRI warning); others: unknown.
SCHEME_MODALITY = {"btcv": "CT", "total": "CT", "ukbob": "MR", "total_mr": "MR", "brats": "MR"}


@dataclass
class CheckpointFile:
    """What a checkpoint file holds, before a network is built.

    Attributes:
        path: the file or bundle.
        kind: ``swinbob``, ``ukbob_trainer``, ``lightning``, ``state_dict`` or ``bundle``.
        payload: what ``torch.load`` returned for the weights.
        stored: SwinBOB metadata (kind ``swinbob``), else empty.
        told: metadata fields the file states outside SwinBOB metadata (UK_BOB ``args`` or the
            bundle), with ``told_by`` naming the source (``args`` or ``bundle``).
        notes: field -> how it was read (e.g. "UK_BOB trainer: MONAI before 1.5").
        details: file facts for the summary (epoch, best_acc, bundle version, MONAI version).
    """

    path: Path
    kind: str
    payload: Any
    stored: dict = field(default_factory=dict)
    told: dict = field(default_factory=dict)
    told_by: str = ""
    notes: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- safe loading


def _allow_namespace():
    """Let ``argparse.Namespace`` (plain data) through the weights-only unpickler, nothing else."""
    allow = getattr(torch.serialization, "safe_globals", None)
    return allow([argparse.Namespace]) if allow is not None else contextlib.nullcontext()


def safe_load(file: str | os.PathLike | _io.BytesIO, source: str) -> Any:
    """``torch.load(file, weights_only=True)`` (tensors, plain containers, argparse.Namespace).

    Raises:
        ValueError: corrupt file, or one that needs pickled objects or code (never run).
    """
    try:
        with _allow_namespace():
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(str(error))
        if reason is None:
            raise ValueError(f"{source}: not a readable PyTorch checkpoint (corrupt or not a torch.save file)") from None
        raise ValueError(f"{source}: refused to load: the checkpoint contains pickled objects or code "
                         f"that a safe (weights_only) load does not allow ({reason}). Re-save it "
                         "as a plain state dict: torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{source}: not a readable PyTorch checkpoint ({error})") from None


def _unpickling_reason(message: str) -> str | None:
    """The offending global/class named by torch's weights-only unpickler, or None for plain corruption."""
    for line in message.splitlines():
        lowered = line.lower()
        if "global" in lowered or "unsupported class" in lowered or "reduce" in lowered:
            return line.strip()
    return None


# ----------------------------------------------------------------------------- reading a file


def read_checkpoint(path: str | os.PathLike) -> CheckpointFile:
    """Read a checkpoint file or MONAI bundle (folder or zip) safely and classify it.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: empty, corrupt or unsafe file; a bundle without weights or config.
    """
    path = Path(path)
    if path.is_dir() or (path.is_file() and _is_bundle_zip(path)):
        return _read_bundle(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or bundle folder")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty")
    payload = safe_load(path, str(path))
    return classify(path, payload)


def classify(path: Path, payload: Any) -> CheckpointFile:
    """The :class:`CheckpointFile` of a loaded ``torch.load`` result (see the module docstring)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("swinbob"), Mapping):
        return CheckpointFile(path, "swinbob", payload, stored=dict(payload["swinbob"]))
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        if "pytorch-lightning_version" in payload or "optimizer_states" in payload:
            return CheckpointFile(path, "lightning", payload,
                                  details={"lightning_version": payload.get("pytorch-lightning_version")})
        if {"epoch", "best_acc", "args"} & set(payload):
            return _trainer_file(path, payload)
    return CheckpointFile(path, "state_dict", payload)


def _trainer_file(path: Path, payload: Mapping) -> CheckpointFile:
    args = payload.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    details = {k: payload[k] for k in ("epoch", "best_acc") if isinstance(payload.get(k), (int, float))}
    details["has_optimizer"] = "optimizer" in payload
    details["has_scheduler"] = "scheduler" in payload
    told, notes = values_from_args(args) if isinstance(args, Mapping) else ({}, {})
    details["has_args"] = isinstance(args, Mapping)
    # The trainer's environment pins MONAI 07de215c (before 1.5): the legacy patch merging.
    told["variant"] = "legacy"
    notes["variant"] = "UK_BOB / Swin-UNETR trainer checkpoint: trained with MONAI < 1.5"
    return CheckpointFile(path, "ukbob_trainer", payload, told=told, told_by="args", notes=notes, details=details)


def values_from_args(args: Mapping[str, Any]) -> tuple[dict, dict]:
    """Metadata fields from the UK_BOB trainer's argparse options, and notes on how.

    ``a_min/a_max/b_min/b_max`` -> ``ct_window`` intensity (their ``ScaleIntensityRanged`` with
    clipping), ``space_x/y/z`` -> target spacing (mm), ``roi_x/y/z`` -> ROI (one edge; the
    largest with a note when they differ), ``infer_overlap`` -> overlap.
    """
    told, notes = {}, {}
    window = [args.get(k) for k in ("a_min", "a_max", "b_min", "b_max")]
    if all(isinstance(v, (int, float)) for v in window):
        told["intensity"] = "ct_window"
        told["intensity_params"] = dict(zip(("a_min", "a_max", "b_min", "b_max"), map(float, window)), clip=True)
    spacing = [args.get(k) for k in ("space_x", "space_y", "space_z")]
    if all(isinstance(v, (int, float)) for v in spacing):
        told["target_spacing_mm"] = tuple(float(v) for v in spacing)
    roi = [args.get(k) for k in ("roi_x", "roi_y", "roi_z")]
    if all(isinstance(v, int) for v in roi):
        told["roi_size"] = max(roi)
        if len(set(roi)) > 1:
            notes["roi_size"] = f"trained with a {roi[0]}x{roi[1]}x{roi[2]} ROI; using cubic {max(roi)}"
    if isinstance(args.get("infer_overlap"), (int, float)):
        told["overlap"] = float(args["infer_overlap"])
    return told, notes


# ----------------------------------------------------------------------------- MONAI bundles


def _is_bundle_zip(path: Path) -> bool:
    """A zip holding ``configs/`` and ``models/`` (torch.save files are zips too, without them)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(_bundle_member(n, "configs/metadata.json") or _bundle_member(n, "configs/inference.json")
               or _bundle_member(n, "configs/inference.yaml") for n in names)


def _bundle_member(name: str, wanted: str) -> bool:
    """``wanted`` at the bundle root: the zip root or one folder down (``bundle_name/...``)."""
    return name == wanted or (name.endswith("/" + wanted) and name.count("/") == wanted.count("/") + 1)


class _BundleFiles:
    """Read the few files a bundle needs from a folder or a zip, by bundle-relative name."""

    def __init__(self, path: Path):
        self.path = path
        self.archive = zipfile.ZipFile(path) if path.is_file() else None
        self.names = self.archive.namelist() if self.archive else []

    def read(self, relative: str) -> bytes | None:
        if self.archive is None:
            target = self.path / relative
            return target.read_bytes() if target.is_file() else None
        for name in self.names:
            if _bundle_member(name, relative):
                return self.archive.read(name)
        return None

    def close(self):
        if self.archive is not None:
            self.archive.close()


def _read_bundle(path: Path) -> CheckpointFile:
    files = _BundleFiles(path)
    try:
        config = _bundle_config(files, path)
        meta_bytes = files.read("configs/metadata.json")
        weights = files.read("models/model.pt")
        if weights is None:
            torchscript = files.read("models/model.ts") is not None
            raise ValueError(f"{path}: MONAI bundle without models/model.pt"
                             + (" (only models/model.ts: TorchScript is code and is not loaded; export the "
                                "state dict to models/model.pt)" if torchscript else ""))
    finally:
        files.close()
    bundle_meta = _document(meta_bytes, f"{path}: configs/metadata.json", "JSON") if meta_bytes else {}
    payload = safe_load(_io.BytesIO(weights), f"{path}: models/model.pt")
    told, notes = values_from_bundle(config, bundle_meta)
    details = {k: bundle_meta[k] for k in ("name", "version", "monai_version", "task") if k in bundle_meta}
    return CheckpointFile(path, "bundle", payload, told=told, told_by="bundle", notes=notes, details=details)


def _document(data: bytes, source: str, kind: str) -> dict:
    """A JSON or YAML (``kind``) object read as data only (YAML's safe loader: no tags, no code)."""
    import yaml

    parse, errors = (json.loads, json.JSONDecodeError) if kind == "JSON" else (yaml.safe_load, yaml.YAMLError)
    try:
        value = parse(data.decode("utf-8"))
    except (UnicodeDecodeError, errors) as error:
        raise ValueError(f"{source}: not valid {kind} ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected a {'JSON object' if kind == 'JSON' else 'mapping'}, "
                         f"found {type(value).__name__}")
    return value


def _bundle_config(files: _BundleFiles, path: Path) -> dict:
    data = files.read("configs/inference.json")
    if data is not None:
        return _document(data, f"{path}: configs/inference.json", "JSON")
    for name in ("configs/inference.yaml", "configs/inference.yml"):
        data = files.read(name)
        if data is not None:
            return _document(data, f"{path}: {name}", "YAML")
    raise ValueError(f"{path}: MONAI bundle without configs/inference.json or configs/inference.yaml")


def _resolve(value: Any, config: Mapping, depth: int = 0) -> Any:
    """Follow ``@name`` / ``@name#key`` references to literals; expressions (``$...``) become None."""
    if isinstance(value, str) and value.startswith("@") and depth < 8:
        node: Any = config
        for part in value[1:].split("#"):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return _resolve(node, config, depth + 1)
    if isinstance(value, str) and value.startswith("$"):
        return None
    if isinstance(value, list):
        return [_resolve(v, config, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, config, depth + 1) for k, v in value.items()}
    return value


def _components(config: Mapping) -> list[tuple[str, dict]]:
    """Every ``{"_target_": ...}`` dict of the config, references resolved: ``[(short name, dict)]``."""
    found, stack = [], [_resolve(v, config) for v in config.values()]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str):
                found.append((target.rsplit(".", 1)[-1], node))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def values_from_bundle(config: Mapping, bundle_meta: Mapping) -> tuple[dict, dict]:
    """Metadata fields a bundle's inference config and metadata.json state, and notes on how."""
    notes: dict = {}
    told = _bundle_metadata(bundle_meta, notes)  # the network definition below may refine the variant
    for name, node in _components(config):
        lowered = name.lower()
        if lowered in _BUNDLE_NETWORKS and "network" not in told:
            told.update(_bundle_network(node, lowered, notes))
        elif lowered in ("spacingd", "spacing") and node.get("pixdim") is not None:
            told["target_spacing_mm"] = _three_floats(node["pixdim"])
        elif lowered in ("scaleintensityranged", "scaleintensityrange"):
            window = _numbers(node, {"a_min": 0.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0}, name, notes)
            if window is not None:
                told["intensity"] = "ct_window"
                told["intensity_params"] = {**window, "clip": bool(node.get("clip", False))}
        elif lowered in ("normalizeintensityd", "normalizeintensity"):
            told["intensity"] = "zscore_nonzero" if node.get("nonzero") else "zscore"
            told["intensity_params"] = {"channel_wise": bool(node.get("channel_wise", False))}
        elif lowered in ("scaleintensityrangepercentilesd", "scaleintensityrangepercentiles"):
            bounds = _numbers(node, {"lower": 0.5, "upper": 99.5}, name, notes)
            if bounds is not None:
                told["intensity"], told["intensity_params"] = "percentile", bounds
        elif lowered in ("slidingwindowinferer",):
            roi = node.get("roi_size")
            roi = roi if isinstance(roi, list) else [roi] * 3
            if all(isinstance(v, int) and v > 0 for v in roi):
                told["roi_size"] = int(max(roi))
            elif node.get("roi_size") is not None:
                notes["roi_size"] = f"bundle inferer roi_size {node['roi_size']!r} is not literal; not used"
            if isinstance(node.get("overlap"), (int, float)):
                told["overlap"] = float(node["overlap"])
        elif lowered in ("activationsd", "activations"):
            if node.get("sigmoid"):
                told["activation"] = "sigmoid"
            elif node.get("softmax"):
                told["activation"] = "softmax"
    return told, notes


def _bundle_network(node: Mapping, name: str, notes: dict) -> dict:
    told = {"network": _BUNDLE_NETWORKS[name]}
    if name == "swinunetr":
        if node.get("use_v2"):
            raise ValueError("MONAI bundle: SwinUNETR with use_v2=true (Swin-UNETR v2) is not supported")
        downsample = node.get("downsample", "merging")
        if downsample == "mergingv2":
            told["variant"] = "mergingv2"
            notes["variant"] = "bundle network_def: downsample 'mergingv2'"
    return told


def _bundle_metadata(meta: Mapping, notes: dict) -> dict:
    from .networks_legacy import variant_for_monai_version

    told = {}
    version = meta.get("monai_version")
    if isinstance(version, str):
        told["variant"] = variant_for_monai_version(version)
        notes["variant"] = f"bundle metadata: monai_version {version}"
    image = (meta.get("network_data_format") or {}).get("inputs", {}).get("image", {})
    modality = str(image.get("modality", "")).upper()
    if modality in ("CT", "MR", "MRI"):
        told["modality"] = "MR" if modality.startswith("MR") else "CT"
    if isinstance(meta.get("name"), str):
        told["name"] = meta["name"]
    if isinstance(meta.get("description"), str):
        told["description"] = meta["description"]
    return told


def _numbers(node: Mapping, defaults: Mapping[str, float], name: str, notes: dict) -> dict | None:
    """``{key: float}`` of a transform's numeric arguments; None (with a note) when one is not literal."""
    values = {k: node.get(k, d) for k, d in defaults.items()}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        return {k: float(v) for k, v in values.items()}
    notes["intensity"] = f"bundle {name}: arguments {values} are not all literal numbers; not used"
    return None


def _three_floats(value: Any) -> tuple[float, float, float]:
    values = value if isinstance(value, (list, tuple)) else [value] * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise ValueError(f"MONAI bundle: Spacingd pixdim must be one or three positive numbers, got {value!r}")
    return tuple(float(v) for v in values)


# ----------------------------------------------------------------------------- provenance


#: Metadata fields that decide how a scan is preprocessed and decoded, in report order.
PREPROCESSING_FIELDS = ("variant", "scheme", "layout", "activation", "contrasts", "intensity", "intensity_params",
                        "target_spacing_mm", "roi_size", "overlap", "modality")
#: Inference options that override a field (``InferenceConfig`` attribute per field).
_OPTION_OF = {"contrasts": "contrast", "intensity": "intensity", "target_spacing_mm": "target_spacing_mm",
              "roi_size": "roi_size", "overlap": "overlap"}


def preprocessing_record(metadata, config=None, warn: bool = False) -> dict:
    """Every preprocessing value used for a run and where it came from, for ``report.json``.

    Args:
        metadata: the :class:`model.CheckpointMetadata` from :func:`model.load_checkpoint`.
        config: the run's :class:`inference.InferenceConfig` (its options override); None: none.
        warn: also ``warnings.warn`` once per assumed value (what the file did not say).

    Returns:
        ``{field: {"value", "source", "note"?}}`` (source one of :data:`SOURCES`) plus
        ``"assumed": [field, ...]``.
    """
    from .inference import InferenceConfig, window_overlap

    config = config or InferenceConfig()
    sources, notes = getattr(metadata, "sources", {}) or {}, getattr(metadata, "notes", {}) or {}
    record = {}
    for name in PREPROCESSING_FIELDS:
        entry = {"value": _plain(getattr(metadata, name, None)), "source": sources.get(name, "metadata")}
        if name in notes:
            entry["note"] = notes[name]
        option = getattr(config, _OPTION_OF.get(name, ""), None) if name in _OPTION_OF else None
        if option is not None and option != getattr(metadata, name, None):
            entry = {"value": _plain(option), "source": "option"}
        record[name] = entry
    if record["intensity"]["source"] == "option" and config.intensity != metadata.intensity:
        record["intensity_params"] = {"value": {}, "source": "option", "note": f"defaults of '{config.intensity}'"}
    record["overlap"]["value"] = window_overlap(config, metadata)
    if config.fast:
        record["overlap"] = {"value": 0.0, "source": "option", "note": "fast mode: no window overlap"}
        record["target_spacing_mm"]["note"] = "fast mode: no finer than 3 mm"
    record["assumed"] = [name for name in PREPROCESSING_FIELDS if record[name]["source"] == "assumed"]
    if warn:
        import warnings

        for name in record["assumed"]:
            if name == "modality":  # only decides whether a CT/MRI mismatch is warned about
                continue

            warnings.warn(f"assumed {name} = {record[name]['value']!r}: {record[name].get('note', 'the file does not say')}"
                          f" (set it with the matching option if that is wrong)")
    return record


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def image_modality(array) -> str | None:
    """``"CT"`` when at least 1 % of the voxels are below -500 (air in Hounsfield units), ``"MR"``
    when fewer than 1 % are below -100 (no air values; MR scans may dip slightly below 0), else
    None. ``array`` ``(X, Y, Z[, C])``, first channel used."""
    import numpy as np

    values = np.asarray(array)
    values = values[..., 0] if values.ndim == 4 else values
    sample = values[::2, ::2, ::2] if values.size > 1_000_000 else values
    if sample.size == 0:
        return None
    low = float(np.percentile(sample, 1))
    if low < -500:
        return "CT"
    return "MR" if low >= -100 else None


def check_modality(image, metadata) -> str | None:
    """Warn when a CT goes to a model trained on MRI or the other way round; returns the warning."""
    import warnings

    wanted = getattr(metadata, "modality", None)
    seen = image_modality(image.array) if wanted in ("CT", "MR") else None
    if seen is None or seen == wanted:
        return None
    why = "1 % of voxels below -500 HU" if seen == "CT" else "no air-like values below -100"
    message = (f"{getattr(image, 'path', None) or 'the scan'} looks like {seen} ({why}) but the model was "
               f"trained on {wanted}: expect a poor segmentation (choose a {seen} model, or check the file)")
    warnings.warn(message)
    return message
