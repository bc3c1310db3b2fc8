"""What a checkpoint says about its network and preprocessing: :class:`CheckpointMetadata`, with
the source of every value (:data:`SwinBOBLib.models.formats.SOURCES`).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

CHECKPOINT_FORMAT_VERSION = 2


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
    # Not stored: where each value came from (SwinBOBLib.models.formats.SOURCES) and why, set on load.
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
