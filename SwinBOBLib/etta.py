"""ETTA, Entropy Test-Time Adaptation (UKBOB sec. 3.3, eq. 2-3, appendix C, Algorithm 1).

    probs = torch.softmax(model(x), 1)
    h = entropy_map(probs)                               # (B, *spatial), in [0, 1]
    adapted, stats = adapt(model, image, steps=3, lr=1e-3, roi_size=96)
    stats["entropy_before"], stats["entropy_after"]

Only normalisation-layer affine parameters are updated (eq. 3): LayerNorm, GroupNorm,
InstanceNorm with affine parameters and BatchNorm. BatchNorm layers also switch to the test
statistics, as Algorithm 1's UPDATEBNSTATISTICS does: their running statistics are reset and
re-estimated (cumulative average) on the adaptation batches, and the adapted model's final,
eval-mode pass uses them. Adaptation is episodic: :func:`adapt` works on a deep copy, so every scan
starts from the loaded weights and the caller's model is never modified.

Unlike TENT's reference code (BatchNorm2d only), this finds the normalisation layers of a 3D
Swin-UNETR; a model with none (e.g. a network without normalisation) is refused, instead of
silently adapting nothing.

Each step adapts on a bounded patch budget: the highest-entropy foreground patches of ``roi_size``,
chosen once among the most-foreground candidate windows. Augmentation TTA (flip averaging, the
paper's baseline [80]) is :func:`flip_tta`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

#: Normalisation layer types whose affine parameters ETTA adapts.
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm)

_EPS = 1e-8


@dataclass
class EttaConfig:
    """ETTA options; the CLI and the Slicer module map onto these."""

    steps: int = 3  # gradient steps; a few suffice for normalisation parameters (TENT: 1 per batch)
    lr: float = 1e-3  # TENT's Adam learning rate for normalisation parameters
    optimizer: str = "adam"  # "adam" (TENT's choice) or "sgd" (momentum 0.9)
    patches: int = 2  # patch budget per step: the highest-entropy foreground patches
    candidates: int = 4  # foreground windows scored by entropy (one forward each) to choose the patches
    foreground_threshold: float = 0.05  # normalised intensity above which a voxel is body
    entropy_before: str = "patches"  # "patches": measured on the chosen patches (cheap), "scan": whole scan
    sw_batch_size: int = 2  # patches per no-grad forward pass (scoring, measuring)
    step_batch_size: int = 1  # patches per backward pass; gradients accumulate, 1 bounds GPU memory
    overlap: float = 0.25  # sliding-window overlap of whole-scan entropy passes
    seed: int = 0  # seeds the tie-breaking of candidate windows


# ----------------------------------------------------------------------------- entropy


def entropy_map(probs: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Per-voxel Shannon entropy normalised by log(C).

    Args:
        probs: class probabilities ``(B, C, *spatial)`` (summing to 1 over C), any float dtype.
        eps: probabilities are clamped to ``[eps, 1]`` before the logarithm.

    Returns:
        ``(B, *spatial)`` float32 in [0, 1]: 0 for a one-hot voxel, 1 for a uniform one.

    Raises:
        ValueError: fewer than 2 dimensions or fewer than 2 classes.
    """
    probs = torch.as_tensor(probs)
    if probs.ndim < 2 or probs.shape[1] < 2:
        raise ValueError(f"entropy_map needs probabilities (B, C, *spatial) with C >= 2, got shape "
                         f"{tuple(probs.shape)}")
    p = probs.float().clamp(min=eps, max=1.0)
    h = -(p * p.log()).sum(dim=1) / math.log(probs.shape[1])
    return h.clamp_(0.0, 1.0)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 2 divided by log(C): mean normalised entropy of ``softmax(logits)``, ``(B, C, ...)``."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean() / math.log(logits.shape[1])


# ----------------------------------------------------------------------------- parameters


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def adaptable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters ETTA updates: affine weights and biases of the normalisation layers.

    LayerNorm, GroupNorm, InstanceNorm (only with ``affine=True``) and BatchNorm; an InstanceNorm
    without affine parameters contributes nothing. Order follows ``model.modules()``.
    """
    params = []
    for module in _norm_modules(model):
        params += [p for p in (getattr(module, "weight", None), getattr(module, "bias", None))
                   if isinstance(p, nn.Parameter)]
    return params


def configure_model(model: nn.Module) -> nn.Module:
    """Freeze everything but the normalisation affine parameters; BatchNorm uses test statistics.

    Modifies ``model`` in place (call it on a copy) and returns it: eval mode everywhere (no
    dropout), BatchNorm layers in train mode with reset running statistics accumulated as a
    cumulative average, so they end up holding the test scan's statistics (Algorithm 1).
    """
    model.eval()
    model.requires_grad_(False)
    for p in adaptable_parameters(model):
        p.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
            if module.track_running_stats:
                module.reset_running_stats()
                module.momentum = None
    return model


def _optimizer(params, config: EttaConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    raise ValueError(f"ETTA optimizer must be 'adam' or 'sgd', got '{config.optimizer}'")


# ----------------------------------------------------------------------------- patches


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"ETTA needs a torch tensor image (1, C, D, H, W), got {type(image).__name__}")
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"ETTA needs one image of shape (1, C, D, H, W), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("ETTA image holds NaN or infinite voxels")


def window_starts(shape: Sequence[int], roi: Sequence[int], stride: Sequence[int]) -> list[tuple[int, ...]]:
    """Start corners of windows of size ``roi`` tiling ``shape`` with ``stride``, last flush to the end."""
    axes = []
    for n, r, s in zip(shape, roi, stride):
        if n <= r:
            axes.append([0])
            continue
        starts = list(range(0, n - r + 1, max(1, s)))
        if starts[-1] != n - r:
            starts.append(n - r)
        axes.append(starts)
    return list(itertools.product(*axes))


def _crop(image: torch.Tensor, start, roi) -> torch.Tensor:
    """Window ``(1, C, *roi)`` at ``start``, zero-padded where the image is smaller than ``roi``."""
    slices = tuple(slice(s, s + r) for s, r in zip(start, roi))
    patch = image[(slice(None), slice(None)) + slices]
    pad = [r - n for r, n in zip(roi, patch.shape[2:])]
    if any(pad):
        patch = nn.functional.pad(patch, [v for p in reversed(pad) for v in (0, p)])
    return patch


def _forward(model: nn.Module, patches: torch.Tensor, batch: int) -> torch.Tensor:
    """Logits of a stack of patches ``(N, C, *roi)``, ``batch`` at a time, under autocast on GPU."""
    device = next(model.parameters()).device
    outputs = []
    for i in range(0, patches.shape[0], max(1, batch)):
        with _autocast(device):
            outputs.append(model(patches[i:i + batch].to(device)).float())
    return torch.cat(outputs)


def _autocast(device: torch.device):
    """bf16 (fp16 without bf16 support) autocast on CUDA; fp32 elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def select_patches(model: nn.Module, image: torch.Tensor, roi: Sequence[int],
                   config: EttaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the adaptation patches: the highest-entropy foreground windows.

    Windows tile the image (stride roi/2); the ``candidates`` with the most foreground (intensity
    above ``foreground_threshold``) are scored by the model's mean entropy over their foreground
    voxels, and the ``patches`` highest are kept.

    Returns:
        ``(patches (K, C, *roi), entropies (K,))``, the latter the mean normalised entropy of each
        whole patch under the unadapted model.
    """
    starts = window_starts(image.shape[2:], roi, [max(1, r // 2) for r in roi])
    foreground = (image[0] > config.foreground_threshold).any(dim=0)
    fractions = torch.tensor([float(_crop(foreground[None, None].float(), s, roi).mean()) for s in starts])
    generator = torch.Generator().manual_seed(config.seed)
    jitter = torch.rand(len(starts), generator=generator) * 1e-6  # stable, seeded tie-breaking
    order = torch.argsort(fractions + jitter, descending=True)[: max(config.candidates, config.patches)]
    candidates = torch.cat([_crop(image, starts[i], roi) for i in order.tolist()])
    masks = torch.cat([_crop(foreground[None, None].float(), starts[i], roi) for i in order.tolist()])
    with torch.no_grad():
        h = entropy_map(torch.softmax(_forward(model, candidates, config.sw_batch_size), 1)).cpu()
    masks = masks[:, 0]
    fg_entropy = (h * masks).flatten(1).sum(1) / masks.flatten(1).sum(1).clamp(min=1)
    keep = torch.argsort(fg_entropy, descending=True)[: config.patches]
    return candidates[keep], h[keep].flatten(1).mean(1)


def scan_entropy(model: nn.Module, image: torch.Tensor, roi: Sequence[int], config: EttaConfig) -> float:
    """Mean normalised entropy of a whole-scan sliding-window prediction, ``image`` ``(1, C, ...)``."""
    from monai.inferers import sliding_window_inference

    device = next(model.parameters()).device

    def predict(patch):
        with _autocast(device):
            return torch.softmax(model(patch.to(device)).float(), 1)

    with torch.no_grad():
        probs = sliding_window_inference(image, roi, config.sw_batch_size, predict, overlap=config.overlap,
                                         mode="gaussian", sw_device=device, device=image.device)
    return float(entropy_map(probs).mean())


# ----------------------------------------------------------------------------- adaptation


def _roi(roi_size, image: torch.Tensor) -> tuple[int, int, int]:
    roi = (int(roi_size),) * 3 if isinstance(roi_size, (int, float)) else tuple(int(r) for r in roi_size)
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi_size must be a positive int or three ints, got {roi_size!r}")
    return roi


def adapt(model: nn.Module, image: torch.Tensor, steps: int | None = None, lr: float | None = None,
          roi_size: int | Sequence[int] = 96, config: EttaConfig | None = None,
          progress: Callable[[int, int], None] | None = None) -> tuple[nn.Module, dict]:
    """Adapt a copy of ``model`` to one scan by minimising the mean prediction entropy (eq. 2-3).

    Args:
        model: the segmentation network (logits ``(B, K, D, H, W)``); never modified.
        image: the preprocessed scan ``(1, C, D, H, W)``, float, on any device (the adapted copy
            runs on ``model``'s device).
        steps, lr: gradient steps and learning rate (override ``config``).
        roi_size: patch edge (int) or shape in voxels, as the network was trained (96 for Swin-BOB).
        config: the other options, see :class:`EttaConfig`.
        progress: called as ``progress(step, steps)`` after each step.

    Returns:
        ``(adapted_model, stats)``: the adapted copy in eval mode without gradients, and
        ``{"entropy_before", "entropy_after"}`` (mean normalised entropy, on the adaptation
        patches or the whole scan per ``config.entropy_before``) plus ``"entropy_measured_on"``,
        ``"steps"``, ``"lr"``, ``"patches"``, ``"n_parameters"``, ``"losses"``, ``"time_s"``
        and ``"config"``.

    Raises:
        ValueError: bad image shape or values, bad options, or a model without normalisation
            parameters to adapt.
    """
    config = copy.copy(config or EttaConfig())
    config.steps = config.steps if steps is None else int(steps)
    config.lr = config.lr if lr is None else float(lr)
    _check_config(config)
    _check_image(image)
    roi = _roi(roi_size, image)
    if not adaptable_parameters(model):
        raise ValueError(f"ETTA: {type(model).__name__} has no normalisation parameters to adapt "
                         "(no LayerNorm/GroupNorm/BatchNorm, no affine InstanceNorm); refusing to run "
                         "an adaptation that would change nothing. Build it with affine_norm=True.")
    with torch.inference_mode(False):  # normal tensors even when called from inference code
        return _adapt(model, image.clone(), roi, config, progress)


def _adapt(model, image, roi, config: EttaConfig, progress) -> tuple[nn.Module, dict]:
    started = time.perf_counter()
    adapted = copy.deepcopy(model).eval()
    with torch.no_grad():  # "before" figures come from the unadapted copy in eval mode
        patches, patch_entropy = select_patches(adapted, image, roi, config)
        if config.entropy_before == "scan":
            before = scan_entropy(adapted, image, roi, config)
        else:
            before = float(patch_entropy.mean())
    configure_model(adapted)
    params = adaptable_parameters(adapted)
    losses = _run_steps(adapted, patches, params, config, progress)
    adapted.eval().requires_grad_(False)
    if config.entropy_before == "scan":
        after = scan_entropy(adapted, image, roi, config)
    else:
        with torch.no_grad():
            after = float(entropy_map(torch.softmax(_forward(adapted, patches, config.sw_batch_size), 1)).mean())
    stats = {"entropy_before": before, "entropy_after": after, "entropy_measured_on": config.entropy_before,
             "steps": config.steps, "lr": config.lr, "patches": int(patches.shape[0]),
             "n_parameters": int(sum(p.numel() for p in params)), "n_tensors": len(params),
             "losses": losses, "time_s": time.perf_counter() - started, "config": asdict(config)}
    return adapted, stats


def _check_config(config: EttaConfig) -> None:
    if config.steps < 0:
        raise ValueError(f"ETTA steps must be >= 0, got {config.steps}")
    if not config.lr > 0:
        raise ValueError(f"ETTA learning rate must be > 0, got {config.lr}")
    if config.step_batch_size < 1 or config.sw_batch_size < 1:
        raise ValueError(f"ETTA batch sizes must be >= 1, got {config.step_batch_size}, {config.sw_batch_size}")
    if config.patches < 1:
        raise ValueError(f"ETTA patch budget must be >= 1, got {config.patches}")
    if config.entropy_before not in ("patches", "scan"):
        raise ValueError(f"ETTA entropy_before must be 'patches' or 'scan', got '{config.entropy_before}'")


def _run_steps(model: nn.Module, patches: torch.Tensor, params, config: EttaConfig, progress) -> list[float]:
    """Entropy-minimisation steps on ``patches``; gradients enabled even under ``no_grad`` callers."""
    optimizer = _optimizer(params, config)
    device = next(model.parameters()).device
    losses = []
    with torch.enable_grad():
        for step in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for i in range(0, patches.shape[0], config.step_batch_size):
                chunk = patches[i:i + config.step_batch_size].to(device)
                with _autocast(device):
                    logits = model(chunk)
                loss = entropy_loss(logits) * chunk.shape[0] / patches.shape[0]
                loss.backward()
                total += float(loss.detach())
            optimizer.step()
            losses.append(total)
            if progress:
                progress(step + 1, config.steps)
    return losses


# ----------------------------------------------------------------------------- augmentation TTA


def flip_sets(count: int = 8) -> list[tuple[int, ...]]:
    """Spatial-axis flip combinations for TTA, identity first: 8 (all), 4 (none + each axis) or 1."""
    if count == 8:
        return [tuple(a for a, on in zip((2, 3, 4), bits) if on) for bits in itertools.product((0, 1), repeat=3)]
    if count == 4:
        return [(), (2,), (3,), (4,)]
    if count == 1:
        return [()]
    raise ValueError(f"TTA flips must be 1, 4 or 8, got {count}")


def flip_tta(predict: Callable[[torch.Tensor], torch.Tensor], flips: int = 8) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a patch predictor (``(B, C, D, H, W)`` -> probabilities) into a flip-averaging one.

    Each flipped copy's prediction is flipped back voxel for voxel before averaging, so no label
    swap is needed for left/right structures: the averaged map stays on the input's grid.
    """
    combos = flip_sets(flips)

    def averaged(patch: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in combos:
            out = predict(torch.flip(patch, axes) if axes else patch)
            out = torch.flip(out, axes) if axes else out
            total = out if total is None else total + out
        return total / len(combos)

    return averaged
