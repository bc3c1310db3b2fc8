"""ETTA, Entropy Test-Time Adaptation (UKBOB sec. 3.3, eq. 2-3, appendix C, Algorithm 1).

    probs = torch.softmax(model(x), 1)
    h = entropy_map(probs)                               # (B, *spatial), in [0, 1]
    adapted, stats = adapt(model, image, roi_size=96)    # image (1, C, D, H, W)
    stats["entropy_before"], stats["entropy_after"]      # whole-scan means, no padding

The procedure, per scan (episodic: :func:`adapt` works on a deep copy, so every scan starts from
the loaded weights and the caller's model is never modified):

1. **First pass**: the unadapted model predicts the whole scan (sliding window). Its mean entropy
   over every voxel of the scan is ``entropy_before`` (window padding never counts; background
   voxels inside the scan do, as in eq. 2's mean over the sample's N voxels). The same pass
   collects the inputs' statistics of every BatchNorm layer, which then replace the training
   statistics (Algorithm 1's UPDATEBNSTATISTICS on the test sample; networks without BatchNorm,
   such as Swin-UNETR, skip this).
2. **Adaptation**: the ``patches`` sub-windows (edge ``patch_scale`` x the window's, 0.5 by
   default, rounded down to the network's stride) with the highest mean entropy *in the first
   pass's entropy map* (no extra forward pass to choose them) are adapted on for ``steps``
   gradient steps. The loss is eq. 2 over the patches' voxels inside the scan (padding excluded). Only
   normalisation-layer affine parameters change (eq. 3): LayerNorm, GroupNorm, InstanceNorm with
   affine parameters and BatchNorm; BatchNorm keeps the scan's statistics of step 1.
3. **Second pass**: the adapted model predicts the whole scan; its mean entropy is
   ``entropy_after``, and its probabilities are the segmentation (:func:`adapt_and_predict` hands
   them back, so inference does not run a third pass).

Cost: two sliding-window passes plus ``steps x patches`` forward/backward passes of one
adaptation patch (an eighth of a window's voxels by default); docs/inference.md has the figures.

Unlike TENT's reference code (BatchNorm2d only), this finds the normalisation layers of a 3D
Swin-UNETR; a model with none (e.g. a network without normalisation) is refused, instead of
silently adapting nothing. Augmentation TTA (flip averaging, the paper's baseline [80]) is
:func:`flip_tta`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from SwinBOBLib.inference.entropy import entropy_volume, mean_entropy
from SwinBOBLib.models.heads import activate, logit_entropy
from SwinBOBLib.models.norms import adaptable_parameters

_EPS = 1e-8


@dataclass
class EttaConfig:
    """ETTA options; the CLI and the Slicer module map onto these."""

    steps: int = 1  # gradient steps (>= 1); one Adam step moves each parameter by about lr
    lr: float = 3e-3  # Adam learning rate for normalisation parameters (TENT: 1e-3 per batch)
    optimizer: str = "adam"  # "adam" (TENT's choice) or "sgd" (momentum 0.9)
    patches: int = 1  # windows adapted on per step: the highest-entropy ones of the first pass
    patch_scale: float = 0.5  # adaptation patch edge / window edge (rounded down to the network stride)
    candidates: int | None = None  # deprecated and ignored: every window is scored by the first pass
    sw_batch_size: int = 2  # windows per no-grad forward pass of the whole-scan passes
    step_batch_size: int = 1  # patches per backward pass; gradients accumulate, 1 bounds GPU memory
    overlap: float = 0.25  # sliding-window overlap of the whole-scan passes adapt() runs itself
    seed: int = 0  # seeds the tie-breaking between windows of equal entropy
    activation: str = "softmax"  # the model's head: "sigmoid" regions use the mean binary entropy (heads)
    collapse_fraction: float = 0.5  # adaptation losing or relabelling more than this share of the foreground collapsed: keep the unadapted result


def entropy_loss(logits: torch.Tensor, valid: torch.Tensor | None = None, activation: str = "softmax") -> torch.Tensor:
    """Eq. 2 divided by log(C): mean normalised entropy of ``softmax(logits)``, ``(B, C, *spatial)``.

    ``valid`` (``(B, *spatial)`` bool or 0/1) restricts the mean to those voxels (padding excluded).
    ``activation="sigmoid"`` (region heads): the mean binary entropy of the channels instead.
    """
    h = logit_entropy(logits, activation)
    if valid is None:
        return h.mean()
    valid = valid.to(h.dtype)
    return (h * valid).sum() / valid.sum().clamp(min=1)


def configure_model(model: nn.Module) -> nn.Module:
    """Freeze everything but the normalisation affine parameters; eval mode everywhere.

    Modifies ``model`` in place (call it on a copy) and returns it. BatchNorm layers stay in eval
    mode: they normalise with the statistics :class:`BatchNormStatistics` measured on the scan, so
    the adaptation steps and the final pass see the same normalisation.
    """
    model.eval()
    model.requires_grad_(False)
    for p in adaptable_parameters(model):
        p.requires_grad_(True)
    return model


class BatchNormStatistics:
    """Collects the per-channel mean and variance of every BatchNorm layer's input during a pass
    (forward pre-hooks; the layers keep normalising with their stored statistics meanwhile), then
    :meth:`apply` writes them as the layers' running statistics: UPDATEBNSTATISTICS of Algorithm 1
    over the whole test scan, at no extra forward pass.

    Each layer's statistics are those of its input under the unadapted network in eval mode (one
    pass), not of a second pass in train mode where upstream layers already use the new ones.
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self._sums = {id(m): [0.0, 0.0, 0] for m in self.layers}
        self._handles = []

    def __enter__(self) -> "BatchNormStatistics":
        self._handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _hook(self, module, inputs) -> None:
        x = inputs[0].detach().double()
        dims = [d for d in range(x.ndim) if d != 1]
        entry = self._sums[id(module)]
        entry[0] = entry[0] + x.sum(dims).cpu().numpy()
        entry[1] = entry[1] + (x * x).sum(dims).cpu().numpy()
        entry[2] += x.numel() // x.shape[1]

    def apply(self) -> int:
        """Replace the running statistics of every layer that saw data; returns how many did."""
        done = 0
        for module in self.layers:
            first, second, count = self._sums[id(module)]
            if count == 0:
                continue
            mean = first / count
            var = second / count - mean * mean
            if count > 1:
                var = var * count / (count - 1)  # unbiased, as BatchNorm's running_var
            module.running_mean.copy_(torch.as_tensor(mean, dtype=module.running_mean.dtype))
            module.running_var.copy_(torch.as_tensor(var.clip(min=0), dtype=module.running_var.dtype))
            done += 1
        return done


def _optimizer(params, config: EttaConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    raise ValueError(f"ETTA optimizer must be 'adam' or 'sgd', got '{config.optimizer}'")


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


def _valid_mask(shape: Sequence[int], start, roi) -> torch.Tensor:
    """``(1, *roi)`` bool: True on the window's voxels that lie inside the scan (not padding)."""
    mask = torch.zeros((1, *roi), dtype=torch.bool)
    mask[(slice(None),) + tuple(slice(0, min(r, n - s)) for n, s, r in zip(shape, start, roi))] = True
    return mask


def choose_windows(entropy: torch.Tensor, roi: Sequence[int], count: int, seed: int = 0) -> list[tuple[int, ...]]:
    """The ``count`` windows (stride roi/2) with the highest mean entropy over their in-scan voxels.

    Args:
        entropy: ``(D, H, W)`` entropy map of the whole scan (e.g. the first pass's).
        roi: window shape in voxels.
        count: how many windows.
        seed: seeds the tie-breaking between windows of equal entropy.

    Returns:
        Start corners, highest entropy first.
    """
    starts = window_starts(entropy.shape, roi, [max(1, r // 2) for r in roi])
    scores = torch.tensor([float(entropy[tuple(slice(s, s + r) for s, r in zip(start, roi))].mean())
                           for start in starts])
    jitter = torch.rand(len(starts), generator=torch.Generator().manual_seed(seed)) * 1e-9
    order = torch.argsort(scores + jitter, descending=True)[:count]
    return [starts[i] for i in order.tolist()]


def _autocast(device: torch.device):
    """bf16 (fp16 without bf16 support) autocast on CUDA; fp32 elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def sliding_window_predictor(roi: Sequence[int], config: EttaConfig) -> Callable:
    """``predict(model, image) -> probabilities (1, K, *spatial)`` by MONAI's Gaussian-blended
    sliding window at ``config.overlap``: the whole-scan passes :func:`adapt` runs by default."""
    from monai.inferers import sliding_window_inference

    def predict(model: nn.Module, image: torch.Tensor, stage: str = "") -> torch.Tensor:
        device = next(model.parameters()).device

        def window(patch):
            with _autocast(device):
                return activate(model(patch.to(device)), config.activation)

        with torch.no_grad():
            return sliding_window_inference(image, roi, config.sw_batch_size, window, overlap=config.overlap,
                                            mode="gaussian", sw_device=device, device=image.device)

    return predict


def scan_entropy(model: nn.Module, image: torch.Tensor, roi: Sequence[int], config: EttaConfig) -> float:
    """Mean normalised entropy of a whole-scan sliding-window prediction, ``image`` ``(1, C, ...)``."""
    return mean_entropy(sliding_window_predictor(roi, config)(model, image), activation=config.activation)


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
        steps, lr: gradient steps (>= 1) and learning rate (override ``config``).
        roi_size: patch edge (int) or shape in voxels, as the network was trained (96 for Swin-BOB).
        config: the other options, see :class:`EttaConfig`.
        progress: called as ``progress(step, steps)`` after each step.

    Returns:
        ``(adapted_model, stats)``: the adapted copy in eval mode without gradients, and
        ``stats`` with ``"entropy_before"`` / ``"entropy_after"``: mean normalised entropy over
        every voxel of ``image`` (no padding; background voxels count) under the unadapted and
        the adapted model, ``"patch_entropy_before"`` / ``"patch_entropy_after"`` (the same over
        the adaptation patches' voxels), ``"entropy_measured_on"`` ("scan"), ``"windows"`` (start
        corners of the patches), ``"patch_size"`` (their edge, :func:`adaptation_roi`), ``"batchnorm_layers"`` (layers whose statistics were re-estimated
        on the scan), ``"steps"``, ``"lr"``, ``"patches"``, ``"n_parameters"``, ``"n_tensors"``,
        ``"losses"``, ``"adaptation_s"`` (first pass and steps), ``"final_pass_s"``, ``"time_s"``
        and ``"config"``.

    Raises:
        ValueError: bad image shape or values, bad options (``steps`` < 1 included), or a model
            without normalisation parameters to adapt.
    """
    adapted, stats, _ = adapt_and_predict(model, image, steps, lr, roi_size, config, progress)
    return adapted, stats


def adapt_and_predict(model: nn.Module, image: torch.Tensor, steps: int | None = None, lr: float | None = None,
                      roi_size: int | Sequence[int] = 96, config: EttaConfig | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      predict: Callable | None = None) -> tuple[nn.Module, dict, torch.Tensor]:
    """:func:`adapt`, also returning the second pass's probabilities ``(1, K, *spatial)``: the
    segmentation of the adapted model, so a caller needs no third pass.

    ``predict(model, image, stage)`` (stage "before" or "after") runs a whole-scan pass and
    returns probabilities on ``image``'s grid; default :func:`sliding_window_predictor`.
    Inference passes its own, so both passes are exactly its final sliding window (overlap,
    blending, flips, low-memory path).
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
    predict = predict or sliding_window_predictor(roi, config)
    with torch.inference_mode(False):  # normal tensors even when called from inference code
        return _adapt(model, image.clone(), roi, config, progress, predict)


def _adapt(model, image, roi, config: EttaConfig, progress, predict):
    started = time.perf_counter()
    adapted = copy.deepcopy(model).eval()
    with BatchNormStatistics(adapted) as batchnorm:  # the first pass also measures BN statistics
        probs = predict(adapted, image, "before")
    entropy = entropy_volume(probs, activation=config.activation)
    first_labels = predicted_labels(probs, config.activation)
    del probs
    patch = adaptation_roi(roi, config.patch_scale)
    windows = choose_windows(entropy, patch, config.patches, config.seed)
    with torch.no_grad():
        relearned = batchnorm.apply()
    configure_model(adapted)
    params = adaptable_parameters(adapted)
    losses = _run_steps(adapted, image, windows, patch, params, config, progress)
    adapted.eval().requires_grad_(False)
    adapted_at = time.perf_counter()
    probs = predict(adapted, image, "after")
    entropy_after = entropy_volume(probs, activation=config.activation)
    finished = time.perf_counter()
    stats = {"entropy_before": float(entropy.double().mean()), "entropy_after": float(entropy_after.double().mean()),
             "entropy_measured_on": "scan",
             "patch_entropy_before": _patch_mean(entropy, windows, patch),
             "patch_entropy_after": _patch_mean(entropy_after, windows, patch),
             "windows": [list(w) for w in windows], "patch_size": list(patch), "batchnorm_layers": relearned,
             "steps": config.steps, "lr": config.lr, "patches": len(windows),
             "n_parameters": int(sum(p.numel() for p in params)), "n_tensors": len(params),
             "losses": losses, "adaptation_s": adapted_at - started, "final_pass_s": finished - adapted_at,
             "time_s": finished - started, "config": asdict(config)}
    return _guard_collapse(model, adapted, image, probs, first_labels, stats, config, predict)


def predicted_labels(probs: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Labels ``(*spatial)`` of ``probs`` ``(1, K, *spatial)``, computed slab by slab: the argmax channel
    (softmax; 0 is the background), or 1 where any region channel is >= 0.5 (sigmoid)."""
    dtype = torch.uint8 if probs.shape[1] <= 256 else torch.int32
    out = torch.zeros(probs.shape[2:], dtype=dtype)
    for z0 in range(0, probs.shape[-1], 8):  # no whole-volume int64 index array
        part = probs[..., z0:z0 + 8]
        labels = part.argmax(1) if activation != "sigmoid" else (part >= 0.5).any(1)
        out[..., z0:z0 + 8] = labels[0].to("cpu", dtype)
    return out


def collapse_measures(before: torch.Tensor, after: torch.Tensor) -> dict:
    """How far the adapted labels ``after`` moved from the unadapted ``before`` (both ``(*spatial)``):
    the foreground share of each, and the share of ``before``'s foreground voxels keeping their label."""
    foreground = before != 0
    kept = int((after[foreground] == before[foreground]).sum()) if bool(foreground.any()) else 0
    return {"foreground_before": float(foreground.float().mean()), "foreground_after": float((after != 0).float().mean()),
            "label_agreement": kept / max(1, int(foreground.sum()))}


def _guard_collapse(model, adapted, image, probs, first_labels: torch.Tensor, stats: dict, config: EttaConfig,
                    predict):
    """Keep the unadapted model's segmentation when adaptation collapsed: it lost more than
    ``config.collapse_fraction`` of the first pass's foreground, or relabelled more than that share
    of it (entropy minimisation reaches zero entropy by calling everything one class). Warns, and
    records the measures in ``stats``."""
    measures = collapse_measures(first_labels, predicted_labels(probs, config.activation))
    lost = measures["foreground_after"] < (1.0 - config.collapse_fraction) * measures["foreground_before"]
    moved = measures["label_agreement"] < 1.0 - config.collapse_fraction
    collapsed = measures["foreground_before"] > 0 and (lost or moved)
    stats.update(measures, collapsed=collapsed, result="unadapted" if collapsed else "adapted")
    if not collapsed:
        return adapted, stats, probs
    what = (f"labels {measures['foreground_after']:.1%} of the scan as foreground against "
            f"{measures['foreground_before']:.1%} unadapted" if lost else
            f"keeps the label of only {measures['label_agreement']:.1%} of the unadapted foreground")
    warnings.warn(f"ETTA collapsed (steps {config.steps}, lr {config.lr:g}): the adapted model {what}, so its "
                  f"lower entropy ({stats['entropy_before']:.3f} -> {stats['entropy_after']:.3f}) is not an "
                  "improvement; the segmentation is the unadapted model's (lower --etta-lr or --etta-steps)")
    del probs
    started = time.perf_counter()
    probs = predict(model, image, "after")
    stats["final_pass_s"] += time.perf_counter() - started
    stats["time_s"] += time.perf_counter() - started
    return model, stats, probs


def network_stride(roi: Sequence[int]) -> int:
    """The input-size multiple a network trained at window ``roi`` accepts, read off the window:
    the largest power of two dividing every edge, at most 32 (Swin-UNETR's; SegResNet's 8)."""
    stride = 32
    while stride > 1 and any(int(r) % stride for r in roi):
        stride //= 2
    return stride


def adaptation_roi(roi: Sequence[int], scale: float) -> tuple[int, ...]:
    """Edge of the adaptation patches: ``scale`` x the window, rounded down to a multiple of
    :func:`network_stride` (at least one stride, at most the window)."""
    stride = network_stride(roi)
    return tuple(int(min(r, max(stride, (int(r * scale) // stride) * stride))) for r in roi)


def _patch_mean(entropy: torch.Tensor, windows, roi) -> float:
    """Mean of ``entropy`` over the in-scan voxels of the windows (overlaps counted once per window)."""
    parts = [entropy[tuple(slice(s, s + r) for s, r in zip(start, roi))].flatten() for start in windows]
    return float(torch.cat(parts).double().mean())


def _check_config(config: EttaConfig) -> None:
    if config.steps < 1:
        raise ValueError(f"ETTA steps must be >= 1, got {config.steps}; segment without ETTA for an "
                         "unadapted result")
    if not 0 < config.lr < float("inf"):
        raise ValueError(f"ETTA learning rate must be a finite number > 0, got {config.lr}")
    if config.step_batch_size < 1 or config.sw_batch_size < 1:
        raise ValueError(f"ETTA batch sizes must be >= 1, got {config.step_batch_size}, {config.sw_batch_size}")
    if config.patches < 1:
        raise ValueError(f"ETTA patch budget must be >= 1, got {config.patches}")
    if not 0 < config.patch_scale <= 1:
        raise ValueError(f"ETTA patch_scale must be in (0, 1], got {config.patch_scale}")
    if not 0 <= config.overlap < 1:
        raise ValueError(f"ETTA overlap must be in [0, 1), got {config.overlap}")
    if not 0 < config.collapse_fraction <= 1:
        raise ValueError(f"ETTA collapse_fraction must be in (0, 1], got {config.collapse_fraction}")
    if config.candidates is not None:
        warnings.warn("EttaConfig.candidates is deprecated and ignored: the first whole-scan pass scores "
                      "every window", DeprecationWarning, stacklevel=4)


def _run_steps(model: nn.Module, image: torch.Tensor, windows, roi, params, config: EttaConfig,
               progress) -> list[float]:
    """Entropy-minimisation steps on the windows (eq. 2 over their in-scan voxels; gradients
    enabled even under ``no_grad`` callers)."""
    optimizer = _optimizer(params, config)
    device = next(model.parameters()).device
    patches = torch.cat([_crop(image, start, roi) for start in windows])
    valid = torch.cat([_valid_mask(image.shape[2:], start, roi) for start in windows])
    total_valid = float(valid.sum())
    losses = []
    with torch.enable_grad():
        for step in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for i in range(0, patches.shape[0], config.step_batch_size):
                chunk, mask = patches[i:i + config.step_batch_size].to(device), valid[i:i + config.step_batch_size]
                with _autocast(device):
                    logits = model(chunk)
                # the mean over every in-scan voxel of all patches, accumulated chunk by chunk
                loss = entropy_loss(logits, mask.to(device), config.activation) * float(mask.sum()) / total_valid
                loss.backward()
                total += float(loss.detach())
            optimizer.step()
            losses.append(total)
            if progress:
                progress(step + 1, config.steps)
    return losses
