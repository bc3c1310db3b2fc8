"""Headless training: the UKBOB recipe (sec. 4.3), resumable, mixed precision, DDP under torchrun.

``train(config, dataset, run_dir)`` is the whole job; ``swinbob train`` maps its options onto
:class:`TrainConfig`. A run folder holds::

    RUNDIR/config.json              the effective configuration (what a resumed run uses)
    RUNDIR/split.json               case ids per split (subject-level, fixed for the run)
    RUNDIR/checkpoints/last.pt      model + optimiser + scheduler + data position (written atomically)
    RUNDIR/checkpoints/best.pt      best validation Dice; loads in `swinbob segment --checkpoint`
    RUNDIR/progress.jsonl           machine-readable progress events (see SwinBOBLib.runtime.progress)
    RUNDIR/tensorboard/             scalars and validation slices (when tensorboard is installed)
    RUNDIR/summary.json             final summary

Running the same command again with the same RUNDIR resumes from ``last.pt`` with the same
optimiser, scheduler and position in the epoch; at most the steps since that checkpoint are
repeated. SIGINT/SIGTERM finish the current step, write ``last.pt`` and exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from SwinBOBLib import io, labels
from SwinBOBLib.evaluation.metrics import dice
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.device import cpu_bf16_supported, select_device
from SwinBOBLib.inference.window import predict_probabilities
from SwinBOBLib.io.datasets import Case, Dataset, load_dataset
from SwinBOBLib.models.loading import (
    extract_state_dict,
    load_checkpoint,
    read_checkpoint_file,
    save_checkpoint,
)
from SwinBOBLib.models.metadata import CheckpointMetadata, roi_shape
from SwinBOBLib.models.networks import NETWORKS, build_model
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.runtime.progress import ProgressWriter
from SwinBOBLib.runtime.stop import StopFlag
from SwinBOBLib.training.augment import training_transforms
from SwinBOBLib.training.config import TrainConfig, crops_and_volumes, resolve_config
from SwinBOBLib.training.data import (
    load_case_image,
    make_dataset,
    prepare_case,
    prepare_generation_case,
    training_cases,
)
from SwinBOBLib.training.distributed import (
    all_true,
    barrier,
    init_distributed,
    leave_process_group,
)
from SwinBOBLib.training.losses import MaskedDiceCELoss
from SwinBOBLib.training.synthesis import (
    IGNORE,
    PARTIAL,
    SynthesisConfig,
    synthesis_transforms,
    synthesize_volume,
)


def model_metadata(config: TrainConfig, in_channels: int) -> CheckpointMetadata:
    """Checkpoint metadata of a model trained with ``config``."""
    layout = labels.channel_layout(config.scheme, "compact")
    training = {"synthesis": config.synthesis, "seed": config.seed}
    if config.synthesis != "off":
        training["synthesis_options"] = SynthesisConfig.from_dict(config.synthesis_options).to_dict()
    return CheckpointMetadata(network=config.network, scheme=config.scheme, layout="compact",
                              in_channels=in_channels, out_channels=layout.num_channels,
                              contrasts=tuple(config.contrasts) if config.contrasts else None,
                              target_spacing_mm=config.target_spacing_mm, intensity=config.intensity,
                              feature_size=config.feature_size, roi_size=config.roi_size,
                              affine_norm=config.affine_norm, training=training)


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
        # bf16 autocast on a CPU only where it computes bf16 natively; emulated it is two orders slower.
        self.cpu_amp = bool(config.cpu_amp) and self.device.type == "cpu" and cpu_bf16_supported()
        if config.cpu_amp and self.device.type == "cpu" and not self.cpu_amp:
            warnings.warn(f"cpu_amp: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16 "
                          "(AVX512-BF16 or AMX), where bf16 autocast runs about 100 times slower than float32; "
                          "training in float32", stacklevel=2)
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

        c = self.config
        crops, volumes = crops_and_volumes(c)
        if c.synthesis != "off":
            spacing = c.target_spacing_mm or (1.0, 1.0, 1.0)
            augment = synthesis_transforms(self.layout, roi_shape(c.roi_size), crops, spacing,
                                           SynthesisConfig.from_dict(c.synthesis_options), c.intensity,
                                           self.metadata.intensity_params)
        else:
            augment = training_transforms(self.layout, roi_shape(c.roi_size), crops, c.flip_prob,
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
        path = write_checkpoint(self.run_dir / "checkpoints" / "last.pt", self.model, self.metadata,
                                extra={"training": training})
        self.writer.emit("checkpoint", path=str(path), global_step=self.state.global_step)
        return path

    def save_best(self) -> Path:
        path = write_checkpoint(self.run_dir / "checkpoints" / "best.pt", self.model, self.metadata)
        self.writer.emit("checkpoint", path=str(path), best_dice=self.state.best_dice)
        return path

    # -- training ---------------------------------------------------------------------------

    def _step(self, batch: Mapping) -> float:
        images = batch["image"].to(self.device, non_blocking=True)
        targets = batch["label"].to(self.device, non_blocking=True).long()
        cuda_amp = self.config.amp and self.device.type == "cuda"
        cpu_amp = self.cpu_amp
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
        return all_true(bool(self.stop) or limit, self.ctx, self.device)

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
        config = InferenceConfig(overlap=self.config.val_overlap, amp=self.config.amp)
        scores, shown = [], None
        self.model.eval()
        for index, case in enumerate(cases):
            prepared = self._validation_case(index, case)
            image = torch.from_numpy(prepared["image"])[None]
            probs, _ = predict_probabilities(self.model, image, roi_shape(self.config.roi_size), config, self.device)
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
        barrier(self.ctx)
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
                import sys

                from tqdm import tqdm

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
                   "best_checkpoint": _existing(self.run_dir / "checkpoints" / "best.pt"),
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


def write_checkpoint(path: Path, model: torch.nn.Module, metadata: CheckpointMetadata, extra=None) -> Path:
    """:func:`save_checkpoint`, with a failed write (a full disk, a quota) as one OSError naming the
    file and the space left, not torch's ``RuntimeError: [enforce fail at inline_container.cc]``."""
    try:
        return save_checkpoint(path, model, metadata, extra=extra)
    except (RuntimeError, OSError) as error:
        if isinstance(error, RuntimeError) and "inline_container" not in str(error) and "write" not in str(error):
            raise
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise OSError(f"{path}: could not write the checkpoint ({reason}); is the disk full or over quota? "
                      f"({free}). The previous {path.name}, if any, is unchanged") from None


def _existing(path: Path) -> str | None:
    """``path`` as text when the file exists (a run stopped before validating has no best.pt)."""
    return str(path) if path.is_file() else None


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
    own = model.state_dict()
    head = set(NETWORKS[metadata.network].head) if metadata.scheme != scheme else set()
    copied = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape and k not in head}
    if not copied:
        raise ValueError(f"{path}: no weights match the model being trained (network or size differ)")
    model.load_state_dict(copied, strict=False)


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
    main = int(os.environ.get("RANK", "0")) == 0
    io.check_output_path(run_dir)
    with folder_lock(run_dir) if main else contextlib.nullcontext():  # one run per run folder
        if main:
            given = config if isinstance(config, Mapping) else dataclasses.asdict(config or TrainConfig())
            claim_run_folder(run_dir, [dataset, given.get("init_checkpoint")])
        run_dir.mkdir(parents=True, exist_ok=True)
        config = resolve_config(config, run_dir)
        data = load_dataset(dataset, scheme=config.dataset_scheme, allow_outside=config.allow_outside_paths)
        finished = finished_summary(config, run_dir)
        if finished is not None:  # nothing to do: not one more step, not a byte written
            return finished
        if main:
            _write_json(run_dir / "config.json", config.to_dict())
        target = progress_file if progress_file is not None else run_dir / "progress.jsonl"
        return _train_with_progress(config, data, run_dir, target if main else None, dataset, stop)


def claim_run_folder(run_dir: Path, inputs) -> None:
    """``RUNDIR`` must be new, empty or a run folder of ``swinbob train`` (see
    :func:`~SwinBOBLib.io.files.claim_output_folder`). A run folder of an earlier version (no marker,
    but its ``checkpoints/last.pt`` and ``config.json``) is taken as one."""
    legacy = (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "config.json").is_file()
    if legacy and not (run_dir / io.OUTPUT_MARKER).exists():
        io.write_text_atomic(run_dir / io.OUTPUT_MARKER, json.dumps({"command": "train"}) + "\n")
    io.claim_output_folder(run_dir, "train", [i for i in inputs if i])


def finished_summary(config: TrainConfig, run_dir: Path) -> dict | None:
    """The summary of a run in ``run_dir`` that already reached ``config``'s end (``max_steps`` or
    ``epochs``), with ``already_finished`` set; None when there is training left to do."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        return None
    obj = read_checkpoint_file(path)
    training = obj.get("training") if isinstance(obj, Mapping) else None
    if not isinstance(training, Mapping):
        return None  # the trainer refuses it with its own message
    step, epoch = int(training.get("global_step", 0)), int(training.get("epoch", 0))
    if not ((config.max_steps is not None and step >= config.max_steps) or epoch >= config.epochs):
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    return {**summary, "status": "done", "already_finished": True, "run_dir": str(run_dir), "global_step": step,
            "epochs_done": epoch, "best_dice": float(training.get("best_dice", -1.0)),
            "best_checkpoint": _existing(run_dir / "checkpoints" / "best.pt"), "last_checkpoint": str(path)}


def _train_with_progress(config: TrainConfig, data: Dataset, run_dir: Path, target, dataset, stop) -> dict:
    with ProgressWriter(target, inputs=[dataset]) as writer, \
            (stop if stop is not None else StopFlag()) as flag:
        try:
            return Trainer(config, data, run_dir, writer, flag).run()
        except Exception as error:
            writer.emit("error", message=str(error), type=type(error).__name__)
            raise
        finally:
            leave_process_group()
