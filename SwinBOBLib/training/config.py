"""Training settings, one source of defaults: :class:`TrainConfig`, its checks, the config file
reader and the effective configuration a resumed run uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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
    roi_size: int = 96  # training crop edge in voxels (paper: 96^3)
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
    cpu_amp: bool = False  # bf16 autocast on CPU (about 1.7x faster where the CPU has AVX512-BF16/AMX)
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


def check_config(config: TrainConfig, source: str = "config") -> TrainConfig:
    """Validate option values; raise ValueError naming the option and the bad value."""
    positive = ("feature_size", "roi_size", "batch_size", "crops_per_volume", "epochs", "restart_epochs",
                "val_every", "checkpoint_every")
    for name in positive:
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{source}: {name} must be at least 1, got {getattr(config, name)}")
    multiple = roi_multiple(config.network)  # also refuses an unknown network
    if config.roi_size % multiple:
        raise ValueError(f"{source}: roi_size must be a multiple of {multiple} for {config.network}, "
                         f"got {config.roi_size}")
    if not 0 < config.subset_fraction <= 1:
        raise ValueError(f"{source}: subset_fraction must be in (0, 1], got {config.subset_fraction}")
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
