"""Inference settings, one source of defaults: :class:`InferenceConfig` (the CLI and the Slicer
module map onto it), the checkpoint values it falls back on, and :class:`Segmentation`, the result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from SwinBOBLib.io.image import Image
from SwinBOBLib.models.metadata import roi_shape

#: Fast mode resamples no finer than this (mm), like TotalSegmentator's --fast (3 mm).
FAST_SPACING_MM = 3.0


#: Largest sliding-window edge (voxels) accepted; a 512^3 window of the 48-feature model already
#: needs far more than any current GPU.
MAX_ROI_SIZE = 512


#: Largest model grid (voxels) accepted: 2^30 voxels are ~4 GB per class of probabilities.
MAX_MODEL_VOXELS = 2 ** 30


#: Default CT window (Hounsfield units) mapped to [0, 1]: Swin-UNETR's BTCV soft-tissue window.
CT_WINDOW_HU = (-175.0, 250.0)


#: Sliding-window overlap when neither the options nor the checkpoint give one (MONAI's default).
DEFAULT_OVERLAP = 0.25


#: Intensity normalisations :func:`normalize_intensity` knows.
INTENSITY_MODES = ("percentile", "ct_window", "zscore_nonzero", "zscore", "none")


@dataclass
class InferenceConfig:
    """Inference options; the CLI and the Slicer module map onto these. None means "from the checkpoint"."""

    device: str = "auto"  # "auto" (cuda, then mps, then cpu), "cuda", "cuda:1", "mps" or "cpu"
    roi_size: int | None = None  # sliding-window patch edge (voxels); None: checkpoint's (96)
    sw_batch_size: int = 2  # patches per forward pass; 2 fits 96^3 windows of the 48-feature model in < 8 GB
    overlap: float | None = None  # window overlap; None: checkpoint's (UK_BOB: 0.5), else DEFAULT_OVERLAP
    blend: str = "gaussian"  # "gaussian" weights window centres more than edges (MONAI)
    amp: bool = True  # bf16 (fp16 without bf16 support) autocast on GPU; CPU always runs fp32
    low_memory: bool | None = None  # None: automatic when the probabilities would not fit memory_budget_gb
    memory_budget_gb: float = 6.0  # GPU memory the accumulated probabilities may take (8 GB cards)
    fast: bool = False  # resample to >= FAST_SPACING_MM and use no window overlap
    tta: bool = False  # flip-averaging test-time augmentation (the paper's TTA baseline [80])
    tta_flips: int = 8  # 8: all flips of the 3 axes, 4: none + each axis, 1: off
    etta: bool = False  # entropy test-time adaptation before the final pass
    structures: str | None = None  # comma-separated names, synonyms or groups to keep; None: all
    contrast: str | None = None  # comma-separated channel names/indices to feed; None: checkpoint's
    target_spacing_mm: tuple[float, float, float] | None = None  # None: checkpoint's (or the scan's own)
    intensity: str | None = None  # percentile, ct_window, zscore_nonzero, zscore or none; None: checkpoint's
    activation: str | None = None  # "softmax" or "sigmoid" head; None: checkpoint's (segment_image sets it)
    probabilities: bool = False  # also return the softmax probabilities on the input grid
    progress: bool = False  # show a tqdm bar over sliding windows
    seed: int = 0  # seeds torch (ETTA patch tie-breaking, any randomness)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Segmentation:
    """Result of :func:`segment_image`; all images share the input's grid and affine.

    Attributes:
        labels: ``(X, Y, Z)`` uint8 label map in the UKBOB scheme (unselected structures are 0).
        entropy: ``(X, Y, Z)`` float32 per-voxel entropy normalised by log(C), in [0, 1].
        probabilities: ``(X, Y, Z, C)`` float32 softmax probabilities (compact layout), or None.
        stats: timings (s), device, paths taken (low memory, fallback), mean entropy, ETTA stats.
        whole_labels: with ``structures``, the label map before the subset was cut out (what SOLF
            measures the body on); None otherwise.
        organ_rows: the organ table (``outputs.organs.organ_rows``) once written to ``organs.csv``,
            so the DICOM report reuses it instead of measuring every structure again.
    """

    labels: Image
    entropy: Image
    probabilities: Image | None = None
    stats: dict = field(default_factory=dict)
    whole_labels: Image | None = None
    organ_rows: list | None = None


def window_overlap(config: InferenceConfig, metadata=None) -> float:
    """Sliding-window overlap: 0 in fast mode, else the option, the checkpoint's, or :data:`DEFAULT_OVERLAP`."""
    if config.fast:
        return 0.0
    if config.overlap is not None:
        return float(config.overlap)
    stored = getattr(metadata, "overlap", None)
    return float(stored) if stored is not None else DEFAULT_OVERLAP


def _whole(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


def check_inference_config(config: InferenceConfig) -> InferenceConfig:
    """Validate option values before any work; raise ValueError naming the option, the value and
    what is expected (the CLI and the Slicer module both build this config)."""
    _whole("sw_batch_size", config.sw_batch_size, 1)
    _whole("seed", config.seed, 0)
    if config.roi_size is not None:
        _whole("roi_size", config.roi_size, 1)
    if config.overlap is not None and not (isinstance(config.overlap, (int, float))
                                           and 0 <= config.overlap < 1):
        raise ValueError(f"overlap must be a number in [0, 1), got {config.overlap!r}")
    if not (isinstance(config.memory_budget_gb, (int, float)) and 0 < config.memory_budget_gb < math.inf):
        raise ValueError(f"memory_budget_gb must be a finite number > 0, got {config.memory_budget_gb!r}")
    if config.tta_flips not in (1, 4, 8):
        raise ValueError(f"tta_flips must be 1, 4 or 8, got {config.tta_flips!r}")
    if config.blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be gaussian or constant, got {config.blend!r}")
    return config


def resolve_config(config: InferenceConfig, metadata) -> InferenceConfig:
    """``config`` checked (:func:`check_inference_config`), with the checkpoint's values filled in
    where it says None (overlap, activation)."""
    import dataclasses

    check_inference_config(config)
    return dataclasses.replace(config, overlap=window_overlap(config, metadata),
                               activation=config.activation or getattr(metadata, "activation", "softmax"))


def effective_config(config: InferenceConfig, metadata) -> dict:
    """The configuration actually used (checkpoint values filled in), for report.json."""
    data = config.to_dict()
    roi = roi_shape(config.roi_size or metadata.roi_size)
    data["roi_size"] = roi[0] if len(set(roi)) == 1 else list(roi)
    data["intensity"] = config.intensity or metadata.intensity
    data["overlap"] = window_overlap(config, metadata)
    data["activation"] = config.activation or getattr(metadata, "activation", "softmax")
    return data
