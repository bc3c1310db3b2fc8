"""Headless training: the UKBOB recipe (sec. 4.3), resumable, mixed precision, DDP under torchrun.

``train(config, dataset, run_dir)`` is the whole job; ``swinbob train`` maps its options onto
:class:`TrainConfig`. A run folder holds::

    RUNDIR/config.json              the effective configuration (what a resumed run uses)
    RUNDIR/split.json               case ids per split (subject-level, fixed for the run)
    RUNDIR/checkpoints/last.pt      model + optimiser + scheduler + data position (written atomically)
    RUNDIR/checkpoints/best.pt      best validation Dice; loads in `swinbob segment --checkpoint`
    RUNDIR/progress.jsonl           machine-readable progress events (see SwinBOBLib.progress)
    RUNDIR/tensorboard/             scalars and validation slices (when tensorboard is installed)
    RUNDIR/summary.json             final summary

Running the same command again with the same RUNDIR resumes from ``last.pt`` with the same
optimiser, scheduler and position in the epoch; at most the steps since that checkpoint are
repeated. SIGINT/SIGTERM finish the current step, write ``last.pt`` and exit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import Transform as _MonaiTransform

from . import io, labels
from .datasets import Case, Dataset, load_dataset, split_cases
from .inference import InferenceConfig, preprocess, predict_probabilities, select_device
from .model import CheckpointMetadata, build_model, load_checkpoint, save_checkpoint
from .progress import ProgressWriter, StopFlag

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
    from .model import roi_multiple

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
    from .synth import SYNTHESIS_MODES, SynthesisConfig

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


# ----------------------------------------------------------------------------- data


def nearest_resample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Corner-aligned nearest-neighbour resampling of a 3D label array (matches the image grid of
    :func:`inference.model_grid`, whose first and last voxels keep their centres)."""
    if tuple(array.shape) == tuple(shape):
        return array
    index = [np.rint(np.linspace(0, n - 1, m)).astype(np.intp) if n > 1 else np.zeros(m, np.intp)
             for n, m in zip(array.shape, shape)]
    return array[np.ix_(*index)]


def model_metadata(config: TrainConfig, in_channels: int) -> CheckpointMetadata:
    """Checkpoint metadata of a model trained with ``config``."""
    layout = labels.channel_layout(config.scheme, "compact")
    training = {"synthesis": config.synthesis, "seed": config.seed}
    if config.synthesis != "off":
        from .synth import SynthesisConfig

        training["synthesis_options"] = SynthesisConfig.from_dict(config.synthesis_options).to_dict()
    return CheckpointMetadata(network=config.network, scheme=config.scheme, layout="compact",
                              in_channels=in_channels, out_channels=layout.num_channels,
                              contrasts=tuple(config.contrasts) if config.contrasts else None,
                              target_spacing_mm=config.target_spacing_mm, intensity=config.intensity,
                              feature_size=config.feature_size, roi_size=config.roi_size,
                              affine_norm=config.affine_norm, training=training)


def load_case_image(case: Case) -> io.Image:
    return io.load_image(list(case.images) if len(case.images) > 1 else case.images[0])


def _ras_labels(case: Case, dataset_scheme: str, metadata: CheckpointMetadata,
                image: io.Image | None = None) -> io.Image:
    """The case's label map in the model's scheme, RAS voxel order; checked against ``image``'s grid."""
    source = io.load_labelmap(case.label, scheme=dataset_scheme)
    if image is not None:
        difference = io.grid_difference(source, image)
        if difference:
            raise ValueError(f"{case.label}: the label map's grid differs from its image {case.images[0]}: {difference}")
    mapped = labels.remap(source.array, dataset_scheme, metadata.scheme)
    return io.reorient(io.Image(mapped, source.affine), "RAS")[0]


def prepare_case(case: Case, dataset_scheme: str, metadata: CheckpointMetadata) -> dict:
    """One case as training arrays on the model grid: ``image`` ``(C, X, Y, Z)`` float32 and ``label``
    ``(1, X, Y, Z)`` int16 channel indices of the compact layout (dataset labels remapped)."""
    image = load_case_image(case)
    tensor, prepared = preprocess(image, metadata, InferenceConfig())
    grid = nearest_resample(_ras_labels(case, dataset_scheme, metadata, image).array, prepared.model_shape)
    channels = labels.channel_layout(metadata.scheme, "compact").labels_to_channels(grid)
    return {"image": tensor[0].numpy(), "label": channels[None].astype(np.int16), "case_id": case.case_id}


def prepare_generation_case(case: Case, dataset_scheme: str, metadata: CheckpointMetadata,
                            tissue_classes: int = 4) -> dict:
    """One case for synthesis mode: ``gen`` ``(1, X, Y, Z)`` int16 generation labels on the RAS model
    grid (see :func:`SwinBOBLib.synth.generation_labels`); the image, when the case has one, only
    splits the unlabelled body into tissue classes."""
    from .inference import model_grid, resample
    from .synth import generation_labels

    loaded = load_case_image(case) if case.images and tissue_classes > 0 else None
    ras = _ras_labels(case, dataset_scheme, metadata, loaded)
    shape, _ = model_grid(ras.spatial_shape, ras.spacing, metadata.target_spacing_mm)
    grid = nearest_resample(ras.array, shape)
    image = None
    if loaded is not None:
        ras_image, _ = io.reorient(io.select_channels(loaded, [0]) if loaded.num_channels > 1 else loaded, "RAS")
        values = torch.from_numpy(np.asarray(ras_image.array, np.float32))[None, None]
        image = resample(values, shape)[0, 0].numpy()
    return {"gen": generation_labels(grid, image, tissue_classes)[None], "case_id": case.case_id}


class _PrepareCase(_MonaiTransform):
    """MONAI-cacheable transform: ``{"index": i}`` -> the prepared arrays of case ``i`` (generation
    labels in synthesis mode). It is a deterministic MONAI ``Transform``: ``CacheDataset`` and
    ``PersistentDataset`` cache what comes out of it (they cache nothing past a plain callable)."""

    def __init__(self, cases: Sequence[Case], dataset_scheme: str, metadata: CheckpointMetadata,
                 tissue_classes: int | None = None):
        self.cases, self.dataset_scheme, self.metadata = list(cases), dataset_scheme, metadata
        self.tissue_classes = tissue_classes

    def __call__(self, item: Mapping) -> dict:
        case = self.cases[int(item["index"])]
        if self.tissue_classes is not None:
            return prepare_generation_case(case, self.dataset_scheme, self.metadata, self.tissue_classes)
        return prepare_case(case, self.dataset_scheme, self.metadata)


def make_dataset(cases: Sequence[Case], dataset_scheme: str, metadata: CheckpointMetadata,
                 config: TrainConfig, run_dir: Path, augment: Callable | None):
    """A MONAI dataset of prepared cases (cached per ``config.cache``) with ``augment`` applied after."""
    from monai.data import CacheDataset, Dataset as MonaiDataset, PersistentDataset
    from monai.transforms import Compose

    tissue = None
    if config.synthesis != "off":
        from .synth import SynthesisConfig

        tissue = SynthesisConfig.from_dict(config.synthesis_options).tissue_classes
    # The augmentation chain is spliced in flat so that its deterministic head (class indices of the
    # crop sampler) is cached along with the prepared case.
    chain = list(augment.transforms) if isinstance(augment, Compose) else ([augment] if augment is not None else [])
    transform = Compose([_PrepareCase(cases, dataset_scheme, metadata, tissue)] + chain)
    items = [{"index": i, "case": c.case_id} for i, c in enumerate(cases)]
    if config.cache == "memory":
        return CacheDataset(items, transform, cache_rate=1.0, num_workers=None, progress=False)
    if config.cache == "disk":
        return PersistentDataset(items, transform, cache_dir=run_dir / "cache")
    return MonaiDataset(items, transform)


def training_cases(dataset: Dataset, config: TrainConfig) -> dict[str, list[Case]]:
    """Subject-level split, then the training subset (``subset_fraction``, at least one case)."""
    splits = split_cases(dataset, config.split, config.seed)
    if not splits["train"]:
        raise ValueError(f"{dataset.source}: no training cases after the split {config.split}")
    if config.subset_fraction < 1:
        count = max(1, int(round(len(splits["train"]) * config.subset_fraction)))
        order = np.random.default_rng(config.seed + 1).permutation(len(splits["train"]))[:count]
        splits["train"] = [splits["train"][i] for i in sorted(order)]
    return splits


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun describes through RANK/WORLD_SIZE/LOCAL_RANK (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_true(flag: bool, ctx: Distributed, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. a stop request)."""
    if ctx.world_size == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _barrier(ctx: Distributed) -> None:
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------- the run


@dataclass
class TrainState:
    """Where a run stands; saved in last.pt so a killed run resumes exactly here."""

    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # batches of that epoch already trained
    global_step: int = 0  # optimisation steps done in total
    best_dice: float = -1.0  # best mean validation Dice so far
    best_epoch: int = -1
    history: list = field(default_factory=list)  # one {"epoch", "loss", "val_dice"} per finished epoch


def _seed_for(config: TrainConfig, epoch: int) -> int:
    return (config.seed * 1_000_003 + epoch) % (2**31 - 1)


class Trainer:
    """One training run: model, optimiser, data and state, with checkpointing and resume."""

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: Path, writer: ProgressWriter,
                 stop: StopFlag):
        self.config, self.dataset, self.run_dir, self.writer, self.stop = config, dataset, run_dir, writer, stop
        self.device = select_device(config.device)
        self.ctx = init_distributed(self.device)
        if self.device.type == "cuda" and self.ctx.world_size > 1:
            self.device = torch.device("cuda", self.ctx.local_rank)
        self.splits = self._load_or_make_split()
        synthetic = config.synthesis != "off"
        imageless = [c.case_id for c in dataset.cases if not c.images]
        if imageless and not synthetic:
            raise ValueError(f"{dataset.source}: cases {imageless[:3]} have label maps but no images; train on "
                             "label maps alone with --synthesis labels")
        probe = None if synthetic else load_case_image(self.splits["train"][0])
        contrasts = list(config.contrasts) if config.contrasts else None
        in_channels = 1 if synthetic else len(contrasts) if contrasts else probe.num_channels
        self.metadata = model_metadata(config, in_channels)
        if probe is not None and contrasts is None and probe.channel_names and in_channels > 1:
            self.metadata = dataclasses.replace(self.metadata, contrasts=tuple(probe.channel_names))
        self.layout = labels.channel_layout(config.scheme, "compact")
        self.state = TrainState()
        self._synthetic_validation: dict[str, dict] = {}  # rendered validation volumes, by case id
        self.model = self._build_model()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(self.optimizer, T_0=config.restart_epochs)
        self._resume_if_possible()
        self.network = self._wrap(self.model)
        self.loss = self._loss()
        self.tensorboard = self._tensorboard()

    # -- setup ------------------------------------------------------------------------------

    def _load_or_make_split(self) -> dict[str, list[Case]]:
        path = self.run_dir / "split.json"
        by_id = {c.case_id: c for c in self.dataset.cases}
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            missing = [i for ids in saved.values() for i in ids if i not in by_id]
            if missing:
                raise ValueError(f"{path}: cases {missing[:5]} of the saved split are not in {self.dataset.source}")
            return {name: [by_id[i] for i in ids] for name, ids in saved.items()}
        splits = training_cases(self.dataset, self.config)
        if self.ctx.main:
            _write_json(path, {name: [c.case_id for c in cases] for name, cases in splits.items()})
        return splits

    def _build_model(self) -> torch.nn.Module:
        torch.manual_seed(self.config.seed)
        m = self.metadata
        pretrained = load_checkpoint(self.config.init_checkpoint) if self.config.init_checkpoint else None
        # Fine-tuning keeps the patch-merging order the weights were trained with (MONAI < 1.5 or not).
        variant = getattr(pretrained[1], "variant", None) if pretrained else None
        model = build_model(m.feature_size, m.in_channels, m.out_channels, m.affine_norm, m.network, m.roi_size,
                            variant=variant)
        if pretrained:
            copy_pretrained(model, *pretrained, self.config.scheme, self.config.init_checkpoint)
        return model.to(self.device)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.ctx.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _loss(self):
        from monai.losses import DiceCELoss

        if self.config.synthesis != "off":
            from .synth import IGNORE, PARTIAL

            return MaskedDiceCELoss(IGNORE, PARTIAL)
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def _tensorboard(self):
        if not self.ctx.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.state.global_step or None)

    def _loader(self, augment_cases: Sequence[Case]):
        from monai.data import DataLoader, list_data_collate
        from torch.utils.data.distributed import DistributedSampler

        from .augment import training_transforms

        c = self.config
        crops, volumes = crops_and_volumes(c)
        if c.synthesis != "off":
            from .synth import SynthesisConfig, synthesis_transforms

            spacing = c.target_spacing_mm or (1.0, 1.0, 1.0)
            augment = synthesis_transforms(self.layout, (c.roi_size,) * 3, crops, spacing,
                                           SynthesisConfig.from_dict(c.synthesis_options), c.intensity,
                                           self.metadata.intensity_params)
        else:
            augment = training_transforms(self.layout, (c.roi_size,) * 3, crops, c.flip_prob,
                                          c.lateral_flip, c.rotate90_prob, c.intensity_shift)
        data = make_dataset(augment_cases, self.dataset.scheme, self.metadata, c, self.run_dir, augment)
        sampler = DistributedSampler(data, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                     shuffle=True, seed=c.seed)
        loader = DataLoader(data, batch_size=volumes, sampler=sampler, num_workers=c.num_workers,
                            collate_fn=list_data_collate, pin_memory=self.device.type == "cuda")
        return data, sampler, loader

    # -- checkpoints ------------------------------------------------------------------------

    def _resume_if_possible(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        if not path.exists():
            return
        from .model import extract_state_dict, read_checkpoint_file

        obj = read_checkpoint_file(path)
        training = obj.get("training") if isinstance(obj, Mapping) else None
        if not isinstance(training, Mapping):
            raise ValueError(f"{path}: not a training checkpoint (no 'training' state); use a new RUNDIR")
        self.model.load_state_dict(extract_state_dict(obj, self.metadata.network, str(path)))
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.state = TrainState(**{k: training[k] for k in dataclasses.asdict(TrainState()) if k in training})
        self.resumed_from = path

    def save_last(self) -> Path:
        """Write last.pt: weights, metadata, optimiser, scheduler and the data position."""
        if not self.ctx.main:
            return self.run_dir / "checkpoints" / "last.pt"
        training = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    **dataclasses.asdict(self.state)}
        path = save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self.model, self.metadata,
                               extra={"training": training})
        self.writer.emit("checkpoint", path=str(path), global_step=self.state.global_step)
        return path

    def save_best(self) -> Path:
        path = save_checkpoint(self.run_dir / "checkpoints" / "best.pt", self.model, self.metadata)
        self.writer.emit("checkpoint", path=str(path), best_dice=self.state.best_dice)
        return path

    # -- training ---------------------------------------------------------------------------

    def _step(self, batch: Mapping) -> float:
        images = batch["image"].to(self.device, non_blocking=True)
        targets = batch["label"].to(self.device, non_blocking=True).long()
        cuda_amp = self.config.amp and self.device.type == "cuda"
        cpu_amp = self.config.cpu_amp and self.device.type == "cpu"
        dtype = torch.bfloat16 if cpu_amp or (cuda_amp and torch.cuda.is_bf16_supported()) else torch.float16
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=cuda_amp or cpu_amp):
            logits = self.network(images)
        # Synthesis with partial labels: the channels each crop's unlabelled body may take.
        allowed = (batch["allowed"].to(self.device),) if "allowed" in batch else ()
        loss = self.loss(logits.float(), targets, *allowed)  # the loss in float32 whatever the autocast
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _should_stop(self) -> bool:
        limit = self.config.max_steps is not None and self.state.global_step >= self.config.max_steps
        return _all_true(bool(self.stop) or limit, self.ctx, self.device)

    def train_epoch(self, data, sampler, loader, bar) -> tuple[list[float], bool]:
        """Train the rest of the current epoch; returns its losses and whether the run must stop."""
        epoch, skip = self.state.epoch, self.state.step_in_epoch
        sampler.set_epoch(epoch)
        torch.manual_seed(_seed_for(self.config, epoch))
        data.transform.set_random_state(seed=_seed_for(self.config, epoch))
        steps, losses = len(loader), []
        self.network.train()
        for index, batch in enumerate(loader):
            if index < skip:  # replay the epoch's sampling and augmentation up to the saved position
                continue
            started = time.perf_counter()
            losses.append(self._step(batch))
            self.scheduler.step(epoch + (index + 1) / steps)
            self.state.step_in_epoch, self.state.global_step = index + 1, self.state.global_step + 1
            self._report_step(losses[-1], len(batch["image"]), time.perf_counter() - started, steps, bar)
            if self.state.global_step % self.config.checkpoint_every == 0:
                self.save_last()
            if self._should_stop():
                return losses, True
        return losses, False

    def _report_step(self, loss: float, crops: int, seconds: float, steps: int, bar) -> None:
        if not self.ctx.main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        total = self.config.max_steps or self.config.epochs * steps
        eta = max(0, total - self.state.global_step) * seconds
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        self.writer.emit("step", epoch=self.state.epoch, step=self.state.step_in_epoch, steps=steps,
                         global_step=self.state.global_step, total_steps=total, loss=round(loss, 6), lr=lr,
                         samples_per_s=round(crops * self.ctx.world_size / max(seconds, 1e-9), 3),
                         eta_s=round(eta, 1))
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, self.state.global_step)
            self.tensorboard.add_scalar("train/lr", lr, self.state.global_step)

    def validate(self, cases: Sequence[Case]) -> float | None:
        """Mean Dice over validation cases (structures present in reference or prediction)."""
        if not cases or not self.ctx.main:
            return None
        from .metrics import dice

        config = InferenceConfig(overlap=self.config.val_overlap, amp=self.config.amp)
        scores, shown = [], None
        self.model.eval()
        for index, case in enumerate(cases):
            prepared = self._validation_case(index, case)
            image = torch.from_numpy(prepared["image"])[None]
            probs, _ = predict_probabilities(self.model, image, (self.config.roi_size,) * 3, config, self.device)
            predicted = probs[0].argmax(0).cpu().numpy()
            reference = prepared["label"][0]
            known = ~np.isin(reference, prepared.get("ignore", ()))  # tissue the label map does not name
            predicted, reference = np.where(known, predicted, 0), np.where(known, reference, 0)
            present = sorted((set(np.unique(reference).tolist()) | set(np.unique(predicted).tolist())) - {0})
            scores.append(float(np.mean([dice(predicted == c, reference == c) for c in present])) if present else 1.0)
            shown = shown or (prepared["image"], reference, predicted)
        self._log_validation_slices(shown)
        return float(np.mean(scores))

    def _validation_case(self, index: int, case: Case) -> dict:
        """Validation arrays; in synthesis mode an image rendered from the label map with a fixed seed
        per case, so model selection sees synthetic data only and is comparable between epochs."""
        if self.config.synthesis == "off":
            return prepare_case(case, self.dataset.scheme, self.metadata)
        from .synth import IGNORE, PARTIAL, SynthesisConfig, synthesize_volume

        cache = self._synthetic_validation
        if case.case_id not in cache:  # rendered once per run: the seed is fixed, so it never changes
            options = SynthesisConfig.from_dict(self.config.synthesis_options)
            gen = prepare_generation_case(case, self.dataset.scheme, self.metadata, options.tissue_classes)["gen"][0]
            image, label = synthesize_volume(gen, self.layout, self.config.seed + 7919 * index, options,
                                             self.config.intensity, self.metadata.intensity_params)
            cache[case.case_id] = {"image": image, "label": label[None], "ignore": (IGNORE, PARTIAL)}
        return cache[case.case_id]

    def _log_validation_slices(self, shown) -> None:
        if self.tensorboard is None or shown is None:
            return
        image, reference, predicted = shown
        reference = np.where(reference < self.layout.num_channels, reference, 0)
        k = int(np.argwhere(reference > 0)[:, 2].mean()) if reference.any() else reference.shape[2] // 2
        colors = _channel_colors(self.layout)
        gray = np.repeat(np.clip(image[0, :, :, k], 0, 1)[..., None], 3, axis=-1)
        panels = [gray, 0.5 * gray + 0.5 * colors[reference[:, :, k]], 0.5 * gray + 0.5 * colors[predicted[:, :, k]]]
        picture = np.concatenate([np.rot90(p) for p in panels], axis=1)
        self.tensorboard.add_image("validation/image_reference_prediction", picture, self.state.global_step,
                                   dataformats="HWC")

    def run(self) -> dict:
        """Train to the configured end (epochs or max_steps) or until stopped; returns the summary."""
        data, sampler, loader = self._loader(self.splits["train"])
        started, status = time.perf_counter(), "done"
        self.writer.emit("start", run_dir=str(self.run_dir), resumed_from=str(getattr(self, "resumed_from", "")) or None,
                         epoch=self.state.epoch, global_step=self.state.global_step, device=str(self.device),
                         world_size=self.ctx.world_size, train_cases=len(self.splits["train"]),
                         val_cases=len(self.splits["val"]))
        bar = _progress_bar(self.config.progress and self.ctx.main, self.state.global_step,
                            self.config.max_steps or self.config.epochs * len(loader))
        try:
            while self.state.epoch < self.config.epochs:
                losses, stopping = self.train_epoch(data, sampler, loader, bar)
                if stopping:
                    status = "stopped" if self.stop else "done"
                    self._end_epoch(losses, final=status == "done")
                    break
                self._end_epoch(losses, final=False)
        finally:
            bar.close()
        return self._summary(status, time.perf_counter() - started)

    def _end_epoch(self, losses: list[float], final: bool) -> None:
        """Validation and checkpoints at an epoch end (or at the step where the run ends)."""
        complete = self.state.step_in_epoch >= self._steps_per_epoch()
        validate = final or (complete and (self.state.epoch + 1) % self.config.val_every == 0)
        val_dice = self.validate(self.splits["val"]) if validate else None
        _barrier(self.ctx)
        if self.ctx.main:
            self._record_epoch(losses, val_dice, complete)
        if complete:
            self.state.epoch, self.state.step_in_epoch = self.state.epoch + 1, 0
        self.save_last()

    def _steps_per_epoch(self) -> int:
        _, volumes = crops_and_volumes(self.config)
        per_rank = math.ceil(len(self.splits["train"]) / self.ctx.world_size)
        return math.ceil(per_rank / volumes)

    def _record_epoch(self, losses: list[float], val_dice: float | None, complete: bool) -> None:
        entry = {"epoch": self.state.epoch, "loss": float(np.mean(losses)) if losses else None,
                 "val_dice": val_dice, "complete": complete, "global_step": self.state.global_step}
        self.state.history.append(entry)
        if val_dice is not None:
            self.writer.emit("validation", epoch=self.state.epoch, global_step=self.state.global_step, dice=val_dice)
            if self.config.progress and self.ctx.main:  # shown as it happens, not only in the final summary
                from tqdm import tqdm

                import sys

                tqdm.write(f"epoch {self.state.epoch + 1}/{self.config.epochs}: validation Dice {val_dice:.4f} "
                           f"(best {max(val_dice, self.state.best_dice):.4f})", file=sys.stderr)
            if self.tensorboard is not None:
                self.tensorboard.add_scalar("val/dice", val_dice, self.state.global_step)
        no_validation = not self.splits["val"]
        if (val_dice is not None and val_dice > self.state.best_dice) or no_validation:
            self.state.best_dice = val_dice if val_dice is not None else self.state.best_dice
            self.state.best_epoch = self.state.epoch
            self.save_best()

    def _summary(self, status: str, seconds: float) -> dict:
        summary = {"status": status, "run_dir": str(self.run_dir), "epochs_done": self.state.epoch,
                   "global_step": self.state.global_step, "best_dice": self.state.best_dice,
                   "best_epoch": self.state.best_epoch, "seconds": round(seconds, 2),
                   "best_checkpoint": str(self.run_dir / "checkpoints" / "best.pt"),
                   "last_checkpoint": str(self.run_dir / "checkpoints" / "last.pt"),
                   "device": str(self.device), "world_size": self.ctx.world_size,
                   "cases": {k: len(v) for k, v in self.splits.items()}, "history": self.state.history[-20:]}
        if self.ctx.main:
            _write_json(self.run_dir / "summary.json", summary)
            self.writer.emit("stopped" if status == "stopped" else "done", **{k: v for k, v in summary.items()
                                                                            if k != "history"})
            if self.tensorboard is not None:
                self.tensorboard.close()
        return summary


class MaskedDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy (as MONAI's DiceCELoss) over the voxels whose target is not ``ignore``,
    with partial labels: a voxel whose target is ``partial`` is any of the channels its sample's
    ``allowed`` vector marks (the unlabelled body of a label map: none of the structures the map
    contains). There the cross-entropy is the marginal one, ``-log sum_{c allowed} p_c``, and the
    Dice counts the probability it puts on channels not allowed as false positives (the Dice of an
    allowed channel does not look at the voxel: it may or may not be that channel).

    ``forward(logits (B, C, ...), target (B, 1, ...) int, allowed (B, C) or None)``; without
    ``allowed`` (or ``partial``) partial voxels are ignored. The Dice part is MONAI's DiceLoss on
    masked probabilities and masked one-hot targets (MONAI's MaskedDiceLoss masks the label indices
    before their one-hot encoding, so an ignored voxel would count as a background target).
    """

    def __init__(self, ignore: int, partial: int | None = None):
        super().__init__()
        from monai.losses import DiceLoss

        self.ignore, self.partial = int(ignore), None if partial is None else int(partial)
        self.dice = DiceLoss(to_onehot_y=False, softmax=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        from monai.networks.utils import one_hot

        channels, spatial = logits.shape[1], (1,) * (logits.dim() - 2)
        target = target.long()
        partial = target == (self.partial if self.partial is not None else self.ignore)
        labelled = (target != self.ignore) & ~partial
        if allowed is None or self.partial is None:
            partial = torch.zeros_like(partial)  # nothing says what the body may be: ignored
        clean = torch.where(labelled, target, torch.zeros_like(target))
        log_probs = torch.log_softmax(logits, dim=1)
        ce = -log_probs.gather(1, clean)[labelled].sum()
        mask = labelled.to(logits.dtype).expand(-1, channels, *logits.shape[2:])
        if bool(partial.any()):
            allowed = allowed.to(logits.dtype).reshape(-1, channels, *spatial)
            marginal = torch.logsumexp(log_probs + torch.log(allowed.clamp_min(1e-30)), dim=1, keepdim=True)
            ce = ce - marginal[partial].sum()
            mask = torch.maximum(mask, partial.to(logits.dtype) * (1.0 - allowed))
        count = int(labelled.sum()) + int(partial.sum())
        ce = ce / count if count else ce.new_zeros(())
        dice = self.dice(log_probs.exp() * mask, one_hot(clean, channels) * mask)
        return dice + ce


def _progress_bar(enabled: bool, initial: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", disable=not enabled, dynamic_ncols=True)


def _channel_colors(layout) -> np.ndarray:
    scheme = labels.get_scheme(layout.scheme)
    colors = np.zeros((layout.num_channels, 3), np.float32)
    for channel, label in enumerate(layout.labels):
        if label:
            colors[channel] = np.asarray(scheme[label].color) / 255.0
    return colors


def _write_json(path: Path, data) -> None:
    io.write_text_atomic(path, json.dumps(data, indent=2, default=str))


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike, scheme: str) -> None:
    """Fine-tuning: copy every weight of the checkpoint at ``path`` whose name and shape match; the
    output head is kept from the checkpoint only when it has the same classes (else freshly initialised)."""
    copy_pretrained(model, *load_checkpoint(path), scheme, path)


def copy_pretrained(model: torch.nn.Module, source: torch.nn.Module, metadata, scheme: str, path) -> None:
    """:func:`load_pretrained` for an already loaded checkpoint ``(source, metadata)`` read from ``path``."""
    from .model import NETWORKS

    own = model.state_dict()
    head = set(NETWORKS[metadata.network].head) if metadata.scheme != scheme else set()
    copied = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape and k not in head}
    if not copied:
        raise ValueError(f"{path}: no weights match the model being trained (network or size differ)")
    model.load_state_dict(copied, strict=False)


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


def train(config: TrainConfig | Mapping[str, Any] | None, dataset: str | os.PathLike, run_dir: str | os.PathLike,
          progress_file: str | os.PathLike | None = None, stop: StopFlag | None = None) -> dict:
    """Train (or resume training) a model on ``dataset`` into ``run_dir``.

    Args:
        config: a :class:`TrainConfig`, or a mapping of the options given (see :func:`resolve_config`);
            when ``run_dir`` holds a run, its saved config is used and only
            :data:`RESUMABLE_OVERRIDES` may differ.
        dataset: a folder with dataset.json (e.g. from ``swinbob phantom``), a dataset.json or a CSV.
        run_dir: the run folder (created).
        progress_file: JSON-lines progress target ("-" for stdout); default RUNDIR/progress.jsonl.
        stop: a :class:`StopFlag` to request a clean stop (SIGINT/SIGTERM are handled by default).

    Returns:
        The summary (also RUNDIR/summary.json): status "done" or "stopped", steps, best Dice, paths.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_config(config, run_dir)
    data = load_dataset(dataset, scheme=config.dataset_scheme, allow_outside=config.allow_outside_paths)
    if int(os.environ.get("RANK", "0")) == 0:
        _write_json(run_dir / "config.json", config.to_dict())
    target = progress_file if progress_file is not None else run_dir / "progress.jsonl"
    with ProgressWriter(target if int(os.environ.get("RANK", "0")) == 0 else None) as writer, \
            (stop if stop is not None else StopFlag()) as flag:
        try:
            return Trainer(config, data, run_dir, writer, flag).run()
        except Exception as error:
            writer.emit("error", message=str(error), type=type(error).__name__)
            raise
        finally:
            _leave_process_group()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- command line

#: CLI flag -> (TrainConfig field, type). Flags left unset keep the config file's or saved value.
_CLI_OPTIONS = {
    "epochs": int, "max_steps": int, "roi_size": int, "feature_size": int, "batch_size": int,
    "crops_per_volume": int, "lr": float, "weight_decay": float, "network": str, "device": str,
    "scheme": str, "dataset_scheme": str, "subset_fraction": float, "lateral_flip": str,
    "init_checkpoint": str, "num_workers": int, "cache": str, "seed": int, "val_every": int,
    "checkpoint_every": int, "restart_epochs": int, "intensity": str, "synthesis": str,
}


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def options_from_args(args) -> dict:
    """The options a user gave: the config file, then the flags set on the command line."""
    given = load_config_file(args.config) if args.config else {}
    for name in _CLI_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            given[name] = value
    if args.contrast:
        given["contrasts"] = [c.strip() for c in args.contrast.split(",") if c.strip()]
    if args.spacing:
        values = [float(v) for v in args.spacing.split(",")]
        given["target_spacing_mm"] = values * 3 if len(values) == 1 else values
    if args.allow_outside_paths:
        given["allow_outside_paths"] = True
    if args.no_amp:
        given["amp"] = False
    if args.no_progress:
        given["progress"] = False
    for item in args.set or []:
        key, _, value = item.partition("=")
        if not _:
            raise ValueError(f"--set expects KEY=VALUE, got '{item}'")
        given[key.strip()] = _parse_value(value)
    return given


def cmd_train(args) -> int:
    summary = train(options_from_args(args), args.dataset, args.output, progress_file=args.progress_json)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0 if summary["status"] == "done" else 130
    best = summary["best_dice"]
    print(f"{summary['status']}: {summary['global_step']} steps, {summary['epochs_done']} epochs, "
          f"best validation Dice {best:.4f}" if best >= 0 else f"{summary['status']}: {summary['global_step']} steps")
    print(f"checkpoint: {summary['best_checkpoint']}")
    return 0 if summary["status"] == "done" else 130


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a segmentation model (the UKBOB recipe), resumable",
        description="Train on a dataset folder (dataset.json, e.g. from `swinbob phantom`), a Decathlon "
                    "dataset.json or a CSV of image,label pairs. Defaults are the UKBOB paper's recipe "
                    "(96^3 crops, batch 8, AdamW 1e-4, cosine warm restarts every 200 epochs, Dice+CE). "
                    "Running again with the same RUNDIR resumes. Launch with torchrun for several GPUs.")
    p.add_argument("--dataset", required=True, help="dataset folder, dataset.json or CSV")
    p.add_argument("-o", "--output", required=True, metavar="RUNDIR", help="run folder (created; resumed if present)")
    p.add_argument("--config", help="YAML/JSON file of TrainConfig options; flags override it")
    for name, kind in _CLI_OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=_HELP.get(name))
    p.add_argument("--contrast", help="comma-separated channels to train on (names or indices); default all")
    p.add_argument("--spacing", help="target voxel spacing in mm, one value or x,y,z; default native")
    p.add_argument("--allow-outside-paths", action="store_true", help="let the dataset point outside its folder")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig option")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress ('-' for stdout; default RUNDIR/progress.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


_HELP = {
    "epochs": "epochs to train (default 3000, the paper's)", "max_steps": "stop after N optimisation steps",
    "roi_size": "crop edge in voxels (default 96; multiple of 32 for Swin-UNETR)",
    "feature_size": "Swin-UNETR feature size: 12, 24 or 48 (default 48)",
    "batch_size": "crops per step (default 8)", "network": "swinunetr (default), unetr, segresnet or unet",
    "device": "auto (default), cuda, cpu or mps", "scheme": "label scheme of the model (default ukbob)",
    "dataset_scheme": "label scheme of the dataset files (default: from dataset.json)",
    "subset_fraction": "train on this fraction of the training cases",
    "lateral_flip": "swap (default: left-right flips swap paired labels), off or plain",
    "init_checkpoint": "fine-tune from this checkpoint (new head for another scheme)",
    "cache": "memory (default), disk or none",
    "lr": "AdamW learning rate (default 1e-4, the paper's)", "weight_decay": "AdamW weight decay (default 1e-5)",
    "val_every": "validate (mean Dice on the val split) every N epochs (default 1)",
    "checkpoint_every": "also write RUNDIR/last.pt every N optimisation steps (default 100; always at epoch ends)",
    "restart_epochs": "epochs between cosine warm restarts of the learning rate (default 200)",
    "crops_per_volume": "random crops drawn from each loaded volume (default 4, at most --batch-size)",
    "num_workers": "data-loading processes (default 0: in the training process)",
    "seed": "seeds the split, sampling, augmentation and initialisation (default 0)",
    "intensity": "percentile (default, MRI), ct_window (CT) or none",
    "synthesis": "off (default: train on the dataset's images) or labels (render every training image from "
                 "its label map with random contrast, shape, resolution and field of view, SynthSeg-style; "
                 "images only split the unlabelled body into tissue classes, trained as none of the "
                 "structures the map contains); ranges and unlabelled_body (partial|ignore) via "
                 "--set synthesis_options={...}",
}
