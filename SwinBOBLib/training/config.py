"""Training settings, one source of defaults: :class:`TrainConfig`, its checks, the config file
reader and the effective configuration a resumed run uses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from SwinBOBLib.inference.device import cpu_bf16_supported, select_device
from SwinBOBLib.io import memory as host_memory
from SwinBOBLib.io.memory import InsufficientMemoryError, format_bytes
from SwinBOBLib.labels.layouts import channel_layout
from SwinBOBLib.models.metadata import roi_shape
from SwinBOBLib.models.networks import roi_multiple
from SwinBOBLib.training.synthesis import SYNTHESIS_MODES, SynthesisConfig

#: Options a resumed run may change; any other difference from the saved config is refused.
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "device", "num_workers", "val_every", "checkpoint_every",
                       "progress", "cpu_amp")


@dataclass
class TrainConfig:
    """Training options; defaults are the UKBOB paper's recipe (sec. 4.3) unless noted."""

    network: str = "swinunetr"  # swinunetr (Swin-BOB), unetr, segresnet or unet
    feature_size: int = 48  # Swin-UNETR embedding size (paper: 48)
    roi_size: int | tuple[int, int, int] = 96  # training crop: an edge in voxels (paper: 96^3) or x, y, z edges
    batch_size: int = 8  # crops per optimisation step (paper: 8)
    crops_per_volume: int = 4  # random foreground crops drawn from each loaded volume (at most batch_size)
    epochs: int = 3000  # paper: 3000 epochs
    max_steps: int | None = None  # stop after this many optimisation steps in total (smoke runs)
    lr: float = 1e-4  # AdamW learning rate (paper: 1e-4)
    weight_decay: float = 1e-5  # AdamW weight decay (paper: 1e-5)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (paper)
    restart_epochs: int = 200  # cosine schedule with warm restarts every 200 epochs (paper)
    flip_prob: float = 0.1  # random flip probability per axis
    lateral_flip: str = "swap"  # left-right flips swap paired labels ("swap"), are off, or "plain"
    rotate90_prob: float = 0.1  # random 90 degree rotation probability (paper: 10%)
    intensity_shift: float = 0.1  # random intensity shift offset (paper: 0.1)
    val_every: int = 1  # validate every N epochs
    val_overlap: float = 0.25  # sliding-window overlap during validation
    checkpoint_every: int = 100  # also write last.pt every N steps (besides each epoch end)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test fractions by subject (paper)
    subset_fraction: float = 1.0  # train on this fraction of the training cases (scaling study)
    seed: int = 0  # seeds the split, sampling, augmentation and initialisation
    contrasts: tuple[str, ...] | None = None  # channels to train on (names or indices); None: all
    target_spacing_mm: tuple[float, float, float] | None = None  # resample to this grid; None: native
    intensity: str = "percentile"  # MRI: percentiles to [0, 1]; "ct_window" for CT; "none"
    scheme: str = "ukbob"  # label scheme of the model (datasets are remapped into it)
    dataset_scheme: str | None = None  # label scheme of the dataset files; None: from dataset.json
    allow_outside_paths: bool = False  # let dataset files point outside their folder
    affine_norm: bool = True  # affine InstanceNorms in the decoder (ETTA can adapt them)
    init_checkpoint: str | None = None  # fine-tune from these weights (a new head if the scheme differs)
    amp: bool = True  # bf16/fp16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on CPU where it has AVX512-BF16/AMX (about 1.7x faster); else float32
    device: str = "auto"  # auto, cuda, cpu, mps
    num_workers: int = 0  # data-loading processes (0: in the training process)
    cache: str = "memory"  # preprocessed cases cached in "memory", on "disk" (RUNDIR/cache) or "none"
    progress: bool = True  # tqdm bar on stderr
    synthesis: str = "off"  # "labels": images rendered from the label maps (SynthSeg-style), see synth.py
    synthesis_options: dict = field(default_factory=dict)  # SynthesisConfig fields (ranges); {} = defaults

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown training options {unknown}; known: {', '.join(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return check_config(cls(**values), source)


#: Whole-number options; a value such as ``epochs: 1.7`` or ``true`` is refused, not truncated.
INTEGER_OPTIONS = ("feature_size", "batch_size", "crops_per_volume", "epochs", "max_steps",
                   "restart_epochs", "val_every", "checkpoint_every", "seed", "num_workers")

#: Real-number options -> (lowest, highest, whether the lowest is allowed).
REAL_OPTIONS = {"lr": (0.0, math.inf, False), "weight_decay": (0.0, math.inf, True),
                "flip_prob": (0.0, 1.0, True), "rotate90_prob": (0.0, 1.0, True),
                "intensity_shift": (0.0, math.inf, True), "val_overlap": (0.0, 0.99, True),
                "subset_fraction": (0.0, 1.0, False)}

#: Yes/no options; a string such as ``"false"`` would otherwise count as true.
BOOLEAN_OPTIONS = ("allow_outside_paths", "affine_norm", "amp", "cpu_amp", "progress")


def _integer(name: str, value, source: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{source}: {name} must be a whole number, got {value!r}")
    return value


def _real(name: str, value, source: str) -> float:
    low, high, low_allowed = REAL_OPTIONS.get(name, (-math.inf, math.inf, True))
    try:  # YAML reads 1e-4 (no dot) as a string
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    inside = math.isfinite(number) and low <= number <= high and (low_allowed or number > low)
    if not inside:
        if high == math.inf:
            expected = f"a finite number {'>=' if low_allowed else '>'} {low:g}"
        else:
            expected = f"a number in {'[' if low_allowed else '('}{low:g}, {high:g}]"
        raise ValueError(f"{source}: {name} must be {expected}, got {value!r}")
    return number


def _typed(config: TrainConfig, source: str) -> TrainConfig:
    """``config`` with every number checked and converted (``"1e-4"`` -> 1e-4, ``2.0`` -> 2)."""
    values = {}
    for name in INTEGER_OPTIONS:
        value = getattr(config, name)
        values[name] = None if value is None and name == "max_steps" else _integer(name, value, source)
    roi = roi_shape(config.roi_size, f"{source}: roi_size")
    values["roi_size"] = roi[0] if len(set(roi)) == 1 else roi
    for name in REAL_OPTIONS:
        values[name] = _real(name, getattr(config, name), source)
    for name in BOOLEAN_OPTIONS:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{source}: {name} must be true or false, got {getattr(config, name)!r}")
    betas = config.betas
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{source}: betas must be two numbers in [0, 1), got {betas!r}")
    values["betas"] = tuple(_real("betas", b, source) for b in betas)
    if not all(0 <= b < 1 for b in values["betas"]):
        raise ValueError(f"{source}: betas must be two numbers in [0, 1), got {betas!r}")
    return dataclasses.replace(config, **values)


def check_config(config: TrainConfig, source: str = "config") -> TrainConfig:
    """Validate option values; raise ValueError naming the option and the bad value.

    Returns the config with its numbers converted (a YAML string ``"1e-4"`` becomes 1e-4).
    """
    config = _typed(config, source)
    positive = ("feature_size", "batch_size", "crops_per_volume", "epochs", "restart_epochs",
                "val_every", "checkpoint_every")
    for name in positive:
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{source}: {name} must be at least 1, got {getattr(config, name)}")
    multiple = roi_multiple(config.network)  # also refuses an unknown network
    if any(edge % multiple for edge in roi_shape(config.roi_size)):
        raise ValueError(f"{source}: roi_size must be a multiple of {multiple} for {config.network}, "
                         f"got {config.roi_size}")
    if config.cache not in ("memory", "disk", "none"):
        raise ValueError(f"{source}: cache must be memory, disk or none, got '{config.cache}'")
    if config.max_steps is not None and config.max_steps < 1:
        raise ValueError(f"{source}: max_steps must be at least 1, got {config.max_steps}")
    _check_synthesis(config, source)
    if config.batch_size % config.crops_per_volume and config.batch_size > config.crops_per_volume:
        raise ValueError(f"{source}: batch_size {config.batch_size} must be a multiple of "
                         f"crops_per_volume {config.crops_per_volume}")
    return config


def _check_synthesis(config: TrainConfig, source: str) -> None:
    if config.synthesis not in SYNTHESIS_MODES:
        raise ValueError(f"{source}: synthesis must be one of {', '.join(SYNTHESIS_MODES)}, got '{config.synthesis}'")
    if not isinstance(config.synthesis_options, Mapping):
        raise ValueError(f"{source}: synthesis_options must be a mapping of SynthesisConfig fields, "
                         f"got {config.synthesis_options!r}")
    SynthesisConfig.from_dict(config.synthesis_options, f"{source}: synthesis_options")
    if config.synthesis != "off" and config.intensity != "percentile":
        raise ValueError(f"{source}: synthesis renders MRI-like images normalised by percentiles; "
                         f"intensity must be 'percentile', got '{config.intensity}'")
    if config.synthesis != "off" and config.contrasts:
        raise ValueError(f"{source}: a synthesis model takes one channel of any contrast; drop contrasts "
                         f"{list(config.contrasts)}")


def crops_and_volumes(config: TrainConfig) -> tuple[int, int]:
    """Crops drawn per loaded volume and volumes per step, so that a step holds ``batch_size`` crops
    (``crops_per_volume`` is capped at ``batch_size``)."""
    crops = min(config.crops_per_volume, config.batch_size)
    return crops, max(1, config.batch_size // crops)


#: Bytes kept per crop voxel for back-propagation, per output channel (logits, softmax, one-hot
#: target and their gradients) and per feature of the network (its activations). Measured on the
#: CPU for Swin-UNETR (12 and 24 features, 64^3 crops: 3.2 kB + 114 B per feature a voxel for 72
#: channels) and rounded up for the loss; the other networks keep fewer activations.
TRAIN_BYTES_PER_VOXEL_CHANNEL = 64
TRAIN_BYTES_PER_VOXEL_FEATURE = 120

#: Fixed cost of a training process (torch, MONAI, cached cases, validation) in bytes.
TRAIN_BASE_BYTES = 2e9

#: A CPU recipe that fits a few GB: what the refusal suggests.
CPU_RECIPE = {"roi_size": 32, "feature_size": 12, "batch_size": 2, "crops_per_volume": 2}


def training_memory_bytes(config: TrainConfig, parameters: int | None = None) -> float:
    """Estimated peak memory (bytes) of one training step of ``config`` on the CPU.

    ``batch_size`` crops of ``roi_size^3`` voxels, each keeping activations that grow with
    ``feature_size`` and the output channels of ``scheme``; plus the weights, their gradients and
    AdamW's two moments (``parameters`` scalars, estimated from the feature size when None) and
    :data:`TRAIN_BASE_BYTES`. bf16 autocast (``cpu_amp``, where the CPU computes bf16 natively: else the
    trainer runs float32) keeps the activations in half the bytes.
    """
    channels = channel_layout(config.scheme, "compact").num_channels
    voxels = float(config.batch_size) * float(np.prod(roi_shape(config.roi_size)))
    per_voxel = TRAIN_BYTES_PER_VOXEL_CHANNEL * channels + TRAIN_BYTES_PER_VOXEL_FEATURE * config.feature_size
    if config.cpu_amp and cpu_bf16_supported():
        per_voxel *= 0.6
    if parameters is None:  # Swin-UNETR holds about 27,000 f^2 weights (62 M at 48 features)
        parameters = 27_000 * config.feature_size ** 2
    return voxels * per_voxel + 16.0 * parameters + TRAIN_BASE_BYTES


def crop_text(roi) -> str:
    """``96^3`` for a cube, ``80x64x16`` otherwise (messages, progress)."""
    shape = roi_shape(roi)
    return f"{shape[0]}^3" if len(set(shape)) == 1 else "x".join(map(str, shape))


def check_training_memory(config: TrainConfig, source: str = "options") -> float | None:
    """Refuse a CPU run whose estimated memory (:func:`training_memory_bytes`) exceeds what this
    machine lets the process use, before the kernel kills it without a word.

    Returns the estimate in bytes (None when the run is not on the CPU or the memory is unknown).

    Raises:
        InsufficientMemoryError: the estimate, the machine's memory, and a CPU-sized alternative.
    """
    try:
        device = select_device(config.device)
    except ValueError:
        return None  # the trainer names the bad device
    limit = host_memory.available_memory_bytes()
    if device.type != "cpu" or not limit:
        return None
    need = training_memory_bytes(config)
    if need <= 0.8 * limit:
        return need
    small = dataclasses.replace(config, **CPU_RECIPE)
    settings = " ".join(f"--set {k}={v}" for k, v in CPU_RECIPE.items())
    raise InsufficientMemoryError(
        f"not enough memory to train ({source}): {config.network} ({config.feature_size} features, batch of {config.batch_size} "
        f"crops of {crop_text(config.roi_size)} voxels) on the CPU needs about {format_bytes(need)} of memory; this "
        f"machine allows {format_bytes(limit)}. Train on a GPU (--device cuda), or for a CPU run use {settings} "
        f"(about {format_bytes(training_memory_bytes(small))})")


def load_config_file(path: str | os.PathLike) -> dict:
    """Options from a YAML or JSON file (a mapping of TrainConfig field names)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the config file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of option: value")
    return data


def resolve_config(options: TrainConfig | Mapping[str, Any] | None, run_dir: Path) -> TrainConfig:
    """The configuration of a run: ``options`` for a new run; for a run being resumed, its saved
    config with the explicitly given options that may change (:data:`RESUMABLE_OVERRIDES`).

    ``options`` is a :class:`TrainConfig` (every field counts as given) or a mapping of only the
    options the user gave (what the CLI passes), so a resumed run needs no options repeated.
    """
    config = _resolved(options, run_dir)
    check_training_memory(config)
    return config


def _resolved(options: TrainConfig | Mapping[str, Any] | None, run_dir: Path) -> TrainConfig:
    given = options.to_dict() if isinstance(options, TrainConfig) else dict(options or {})
    saved_path = run_dir / "config.json"
    if not (run_dir / "checkpoints" / "last.pt").exists() or not saved_path.exists():
        return TrainConfig.from_dict(given, "options")
    saved = TrainConfig.from_dict(json.loads(saved_path.read_text(encoding="utf-8")), str(saved_path))
    current = saved.to_dict()
    changed = {k: v for k, v in given.items() if k in current and _plain(current[k]) != _plain(v)}
    refused = sorted(set(changed) - set(RESUMABLE_OVERRIDES))
    if refused:
        details = ", ".join(f"{k}={changed[k]!r} (run has {current[k]!r})" for k in refused)
        raise ValueError(f"{run_dir}: cannot resume with different {details}; use a new RUNDIR or the saved values")
    return TrainConfig.from_dict({**current, **changed}, str(saved_path))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
