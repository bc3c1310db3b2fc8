"""What a run used and where each value came from: the preprocessing record of ``report.json``
(metadata, args, bundle, option, weights or assumed) and :func:`describe_checkpoint`, what
``swinbob checkpoint info`` prints.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from SwinBOBLib.inference.config import InferenceConfig, window_overlap
from SwinBOBLib.labels.layouts import channel_layout
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.models.heads import region_head
from SwinBOBLib.models.legacy import VARIANTS
from SwinBOBLib.models.loading import load_checkpoint_and_file
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import count_parameters
from SwinBOBLib.models.norms import adaptable_parameters


def describe_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """What :func:`load_checkpoint` makes of a file, as a JSON-able summary (CLI, Slicer panel).

    Args:
        path: any file or bundle :func:`load_checkpoint` reads; ``overrides`` as there.

    Returns:
        ``{"path", "format", "file", "network", "variant", "variant_description", "feature_size",
        "in_channels", "out_channels", "scheme", "layout", "activation", "channels", "structures", "contrasts",
        "modality", "preprocessing", "parameters", "etta_parameters", "etta_tensors", "name",
        "description", "demo", "sources", "notes"}``: ``preprocessing`` is
        :func:`preprocessing_record` (each value with its source), ``channels`` the
        label (or region) of every output channel, ``etta_parameters`` the number of scalars ETTA
        adapts (normalisation affine weights and biases).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoint`.
    """
    model, metadata, file = load_checkpoint_and_file(path, **overrides)
    adaptable = adaptable_parameters(model)
    return {"path": str(path), "format": file.kind, "file": _plain_details(file.details),
            "network": metadata.network, "variant": metadata.variant,
            "variant_description": VARIANTS.get(metadata.variant) if metadata.variant else None,
            "feature_size": metadata.feature_size, "in_channels": metadata.in_channels,
            "out_channels": metadata.out_channels, "scheme": metadata.scheme, "layout": metadata.layout,
            "activation": metadata.activation, "channels": _channel_names(metadata),
            "structures": model_structures(metadata),
            "contrasts": list(metadata.contrasts) if metadata.contrasts else None, "modality": metadata.modality,
            "preprocessing": preprocessing_record(metadata), "parameters": count_parameters(model),
            "etta_parameters": int(sum(p.numel() for p in adaptable)), "etta_tensors": len(adaptable),
            "name": metadata.name, "description": metadata.description, "demo": bool(metadata.demo),
            "sources": dict(metadata.sources), "notes": dict(metadata.notes)}


def model_structures(metadata: CheckpointMetadata) -> list[str]:
    """Names (in the model's scheme) of the structures its output channels can label: background
    and unused channels left out; a region model's regions."""
    return [name for name in _channel_names(metadata) if name not in ("background", "unused")]


def _channel_names(metadata: CheckpointMetadata) -> list[str]:
    if metadata.activation == "sigmoid":
        return list(region_head(metadata.scheme).regions)
    scheme = get_scheme(metadata.scheme)
    return ["background" if v == 0 else scheme.name_of(v) if v in scheme.structures else "unused"
            for v in channel_layout(metadata.scheme, metadata.layout).labels]


def _plain_details(details: Mapping[str, Any]) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in details.items()}


#: Metadata fields that decide how a scan is preprocessed and decoded, in report order.
PREPROCESSING_FIELDS = ("variant", "scheme", "layout", "activation", "contrasts", "intensity", "intensity_params",
                        "target_spacing_mm", "roi_size", "overlap", "modality")


#: Inference options that override a field (``InferenceConfig`` attribute per field).
_OPTION_OF = {"contrasts": "contrast", "intensity": "intensity", "target_spacing_mm": "target_spacing_mm",
              "roi_size": "roi_size", "overlap": "overlap"}


def preprocessing_record(metadata, config=None, warn: bool = False) -> dict:
    """Every preprocessing value used for a run and where it came from, for ``report.json``.

    Args:
        metadata: the :class:`~SwinBOBLib.models.metadata.CheckpointMetadata` from :func:`~SwinBOBLib.models.loading.load_checkpoint`.
        config: the run's :class:`~SwinBOBLib.inference.config.InferenceConfig` (its options override); None: none.
        warn: also ``warnings.warn`` once per assumed value (what the file did not say).

    Returns:
        ``{field: {"value", "source", "note"?}}`` (source one of :data:`SOURCES`) plus
        ``"assumed": [field, ...]``.
    """
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
