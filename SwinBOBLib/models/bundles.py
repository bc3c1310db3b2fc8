"""MONAI bundles (folder or zip): what ``configs/inference.json`` (or ``.yaml``) and
``configs/metadata.json`` tell about the network, its preprocessing and its weights. Config
expressions (``$...``) are never evaluated: only literals and ``@name`` references are read.
"""

from __future__ import annotations

import io as _io
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

from SwinBOBLib.models.formats import CheckpointFile, safe_load
from SwinBOBLib.models.legacy import variant_for_monai_version

#: Bundle ``network_def`` targets -> SwinBOB network names.
_BUNDLE_NETWORKS = {"swinunetr": "swinunetr", "unetr": "unetr", "segresnet": "segresnet", "unet": "unet"}


def is_bundle_zip(path: Path) -> bool:
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


def read_bundle(path: Path) -> CheckpointFile:
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
                told["roi_size"] = int(roi[0]) if len(set(roi)) == 1 else tuple(int(v) for v in roi)
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
