"""Sliding-window prediction: MONAI's sliding-window inference with Gaussian blending, averaging
probabilities (optionally over flips), autocast on GPU, a low-memory path that keeps the
probabilities on the CPU, and a fallback to it on CUDA out-of-memory.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Sequence

import torch

from SwinBOBLib.inference.config import InferenceConfig, window_overlap
from SwinBOBLib.inference.device import OUT_OF_MEMORY, autocast_dtype
from SwinBOBLib.inference.tta import flip_tta
from SwinBOBLib.labels.layouts import channel_layout, lateral_swap_table
from SwinBOBLib.models.heads import activate


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI visits for an image of ``shape`` (after padding to ``roi``)."""
    total = 1
    for n, r in zip(shape, roi):
        n = max(int(n), int(r))
        interval = int(r * (1 - overlap)) if n > r else r
        total *= 1 if n <= r else math.ceil((n - r) / max(1, interval)) + 1
    return total


def _patch_predictor(model, device, amp_dtype, counter: Callable[[int], None] | None,
                     out_dtype: torch.dtype = torch.float32, activation: str = "softmax"):
    """Patch ``(B, C, *roi)`` -> softmax (or sigmoid, :mod:`heads`) probabilities (``out_dtype``) on ``device``."""
    def predict(patch: torch.Tensor) -> torch.Tensor:
        patch = patch.to(device=device, dtype=torch.float32)
        if amp_dtype is not None:
            with torch.autocast(device.type, dtype=amp_dtype):
                logits = model(patch)
        else:
            logits = model(patch)
        if counter:
            counter(patch.shape[0])
        return activate(logits, activation).to(out_dtype)

    return predict


def _output_gb(tensor: torch.Tensor, channels: int) -> float:
    return channels * math.prod(tensor.shape[2:]) * 4 * 2 / 1e9  # probabilities + blending buffers


def _sliding_window(model, tensor, roi, config, device, low_memory, progress, flips, swap_table):
    from monai.inferers import sliding_window_inference

    overlap = window_overlap(config)
    total = count_windows(tensor.shape[2:], roi, overlap)
    done = [0]

    def counter(n):
        done[0] += n
        if progress:
            progress(min(done[0], total * flips), total * flips)

    # On the low-memory path patches leave the GPU as float16: half the transfer, the accumulator's type.
    out_dtype = torch.float16 if low_memory else torch.float32
    predict = _patch_predictor(model, device, autocast_dtype(device, config.amp), counter, out_dtype,
                               config.activation or "softmax")
    if flips > 1:
        predict = flip_tta(predict, flips, swap_table)
    if low_memory:  # probabilities accumulate on the CPU in float16; patches go to the GPU one batch at a time
        inputs, out_device = tensor.to("cpu", torch.float16), torch.device("cpu")
    else:
        inputs, out_device = tensor.to(device), device
    with torch.inference_mode():
        probs = sliding_window_inference(inputs, roi, config.sw_batch_size, predict, overlap=overlap,
                                         mode=config.blend, sw_device=device, device=out_device)
    return probs


def checkpoint_layout(metadata):
    """The channel layout a softmax checkpoint's outputs are in (compact unless it says otherwise)."""
    return channel_layout(metadata.scheme, getattr(metadata, "layout", "compact"))


def lateral_swap(metadata) -> list[int]:
    """The other-side channel of each channel of the checkpoint's layout (flip TTA exchanges them
    for left-right flipped windows)."""
    return lateral_swap_table(checkpoint_layout(metadata)).tolist()


def predict_probabilities(model: torch.nn.Module, tensor: torch.Tensor, roi: Sequence[int],
                          config: InferenceConfig, device: torch.device,
                          progress: Callable[[int, int], None] | None = None,
                          swap_table: Sequence[int] | None = None) -> tuple[torch.Tensor, dict]:
    """Sliding-window softmax probabilities of a preprocessed scan.

    Args:
        model: network on ``device`` in eval mode, logits ``(B, K, *roi)``.
        tensor: ``(1, C, X, Y, Z)`` preprocessed scan (any device).
        roi: window shape in voxels.
        progress: called as ``progress(done, total)`` with window counts (flips included).
        swap_table: with TTA, the other-side channel of each channel: predictions of left-right
            flipped windows have their paired channels exchanged (:func:`~SwinBOBLib.inference.tta.flip_tta`,
            :func:`lateral_swap`); None averages them unswapped.

    Returns:
        ``(probs, info)``: probabilities ``(1, K, X, Y, Z)`` (float32, or float16 on the CPU on the
        low-memory path) and ``{"low_memory": bool, "oom_fallback": bool, "windows": int,
        "tta_flips": int, "passes": int, "tta_lateral_swap": bool}``.
    """
    flips = config.tta_flips if config.tta else 1
    channels = _out_channels(model)
    low = config.low_memory
    if low is None:
        low = device.type != "cpu" and _output_gb(tensor, channels) > config.memory_budget_gb
    windows = count_windows(tensor.shape[2:], roi, window_overlap(config))
    # With TTA each window runs once per flip: "windows" counts positions, "passes" forward passes.
    info = {"low_memory": bool(low), "oom_fallback": False, "windows": windows, "tta_flips": flips,
            "passes": windows * flips}
    try:
        probs = _sliding_window(model, tensor, roi, config, device, low, progress, flips, swap_table)
    except OUT_OF_MEMORY:
        if low:
            raise
        warnings.warn(f"{device.type.upper()} out of memory: retrying on the low-memory path (probabilities "
                      "accumulated on the CPU in float16); use --low-memory to start there, or lower --sw-batch-size")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        info.update(low_memory=True, oom_fallback=True)
        probs = _sliding_window(model, tensor, roi, config, device, True, progress, flips, swap_table)
    probs = _finite_or_float32(probs, model, tensor, roi, config, device, progress, flips, swap_table, info)
    # flip_tta exchanges paired channels when the prediction has the layout's channels
    info["tta_lateral_swap"] = flips > 1 and swap_table is not None and len(swap_table) == probs.shape[1]
    return probs, info


def count_nonfinite(probs: torch.Tensor, slab: int = 8) -> int:
    """NaN or infinite values of ``probs`` ``(1, K, X, Y, Z)``, counted slab by slab (no full-size mask).

    First one pass with no mask at all: the float32 sum of probabilities (each in [0, 1], far fewer
    than 10^38 of them) is finite exactly when every one is, which is nearly always; only then are
    the bad ones counted (the strided slabs took 15 ms of the demo model's 0.2 s on the MR sample).
    """
    if math.isfinite(float(probs.sum(dtype=torch.float32))):
        return 0
    return sum(int((~torch.isfinite(probs[..., z0:z0 + slab])).sum()) for z0 in range(0, probs.shape[-1], slab))


def _finite_or_float32(probs, model, tensor, roi, config: InferenceConfig, device, progress, flips, swap_table,
                       info: dict) -> torch.Tensor:
    """``probs``, or, when half-precision autocast overflowed into NaN/inf, the pass again in
    float32 (with a warning); an overflow in float32 is the network's, never the scan's voxels."""
    bad = count_nonfinite(probs)
    if not bad:
        return probs
    dtype = autocast_dtype(device, config.amp)
    if dtype is not None:
        warnings.warn(f"the network's {str(dtype).replace('torch.', '')} computation overflowed ({bad} NaN or "
                      "infinite probabilities); recomputed in float32 (--no-amp starts there)")
        del probs
        config = dataclasses.replace(config, amp=False)
        probs = _sliding_window(model, tensor, roi, config, device, info["low_memory"], progress, flips, swap_table)
        info["amp_overflow"] = True
        bad = count_nonfinite(probs)
    if bad:
        raise ValueError(f"the network produced {bad} NaN or infinite probabilities in float32 (its weights "
                                 "overflow on this scan; the scan's own voxels are finite): check the checkpoint and "
                                 "the intensity normalisation (--intensity)")
    return probs


def _out_channels(model: torch.nn.Module) -> int:
    head = getattr(getattr(getattr(model, "out", None), "conv", None), "conv", None)
    if head is not None and hasattr(head, "out_channels"):
        return int(head.out_channels)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    return int(convs[-1].out_channels) if convs else 1
