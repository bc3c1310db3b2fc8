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
    roi_size: int | tuple[int, int, int] = 96  # sliding window in voxels: an edge (paper: 96^3) or 3 edges
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
        for key in ("contrasts", "target_spacing_mm", "roi_size"):
            if isinstance(data[key], (tuple, list)):
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
        if "roi_size" in values:
            shape = roi_shape(values["roi_size"], f"{source}: roi_size")
            values["roi_size"] = shape[0] if len(set(shape)) == 1 else shape
        return cls(**values)


def roi_shape(roi, what: str = "roi_size") -> tuple[int, int, int]:
    """A sliding window or training crop as three edges in voxels: ``96`` is ``(96, 96, 96)``.

    Args:
        roi: one positive whole number (a cube) or three (x, y, z edges, e.g. a window spanning a
            whole axial cross-section but few slices).
        what: names the value in the error.

    Raises:
        ValueError: not one or three positive whole numbers.
    """
    edges = list(roi) if isinstance(roi, (list, tuple)) else [roi]
    if len(edges) == 1:
        edges = edges * 3
    ok = len(edges) == 3 and all(isinstance(e, (int, float)) and not isinstance(e, bool)
                                 and float(e) == int(e) and int(e) >= 1 for e in edges)
    if not ok:
        raise ValueError(f"{what} must be a positive whole number of voxels or three of them (x, y, z), "
                         f"got {roi!r}")
    return tuple(int(e) for e in edges)
