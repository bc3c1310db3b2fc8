"""Swin-BOB inference: preprocessing, sliding-window prediction, entropy, and back to the input grid.

    model, metadata = load_checkpoint("swinbob.pt")
    result = segment_image(load_image("scan.nii.gz"), model, metadata, InferenceConfig(etta=True))
    result.labels, result.entropy       # Images on the input's own grid and affine

Pipeline (each step a function below):

1. :func:`select_contrasts` picks the channels the network was trained on.
2. :func:`preprocess` reorients to RAS (exact flips/permutations, :func:`io.reorient`), normalises
   intensities as the checkpoint was trained (:func:`normalize_intensity`: percentile clip to
   [0, 1], a CT window, a non-zero z-score), and
   resamples to the checkpoint's spacing with trilinear interpolation on a corner-aligned grid
   (first and last voxel centres stay put), so the way back is the exact inverse mapping.
3. :func:`predict_probabilities` runs MONAI's sliding-window inference with Gaussian blending and
   averages *softmax probabilities*, optionally over flips (augmentation TTA); bf16/fp16 autocast
   on GPU; a low-memory path keeps the accumulated probabilities on the CPU in float16 and streams
   patches to the GPU; a CUDA out-of-memory error falls back to it with a warning.
4. :func:`postprocess` interpolates the probabilities back onto the RAS input grid slab by slab
   (bounded memory), takes the argmax (channel -> UKBOB label via the compact layout) and the
   entropy normalised by log(C), and :func:`io.undo_reorientation` restores the input's voxel
   order and affine bit for bit.

ETTA (:mod:`SwinBOBLib.inference.etta`) adapts a copy of the model on the preprocessed scan; its second
whole-scan pass (the adapted model, same sliding window) is step 3's prediction.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np
import torch

from SwinBOBLib import io
from SwinBOBLib.inference.config import (
    MAX_ROI_SIZE,
    InferenceConfig,
    Segmentation,
    resolve_config,
)
from SwinBOBLib.inference.device import (
    OUT_OF_MEMORY,
    autocast_dtype,
    select_device,
    synchronize,
)
from SwinBOBLib.inference.etta import EttaConfig, adapt_and_predict
from SwinBOBLib.inference.postprocess import postprocess
from SwinBOBLib.inference.preprocess import Prepared, check_modality, preprocess
from SwinBOBLib.inference.window import (
    checkpoint_layout,
    lateral_swap,
    predict_probabilities,
)
from SwinBOBLib.io.image import Image
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.models.heads import region_head
from SwinBOBLib.models.metadata import roi_shape
from SwinBOBLib.models.networks import roi_multiple


def _roi(config: InferenceConfig, metadata) -> tuple[int, int, int]:
    """The sliding window: the config's edge (a cube) where given, else the checkpoint's (an edge or
    three, e.g. a window spanning the whole axial cross-section)."""
    roi = roi_shape(config.roi_size or metadata.roi_size)
    multiple = roi_multiple(metadata.network)
    if any(edge % multiple for edge in roi):
        raise ValueError(f"roi size must be a positive multiple of {multiple} voxels for {metadata.network} "
                         f"(its total downsampling), got {_edges(roi)}")
    if max(roi) > MAX_ROI_SIZE:
        raise ValueError(f"roi size {_edges(roi)} voxels asks for windows of {float(np.prod(roi)):.3g} voxels, "
                         f"which no GPU or CPU memory holds; use at most {MAX_ROI_SIZE} (the checkpoint's is "
                         f"{metadata.roi_size})")
    return roi


def _edges(roi: tuple[int, int, int]) -> str:
    return str(roi[0]) if len(set(roi)) == 1 else "x".join(map(str, roi))


def _bar(enabled: bool, desc: str, unit: str = "window", report=None, stage: str = ""):
    """A tqdm bar and its ``update(done, total)``, which also calls ``report(stage, done, total)``."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, disable=not enabled, leave=False)

    def update(done, total):
        bar.total = total
        bar.update(done - bar.n)
        if report:
            report(stage, done, total)

    return bar, update


def segment_image(image: Image, model: torch.nn.Module, metadata, config: InferenceConfig | None = None,
                  etta_config=None, progress: Callable[[str, int, int], None] | None = None) -> Segmentation:
    """Segment one scan: preprocess, optional ETTA, sliding window, back onto the input grid.

    Args:
        image: the scan as loaded by :func:`io.load_image` (any orientation, 1 or more channels).
        model: the network (see :func:`~SwinBOBLib.models.loading.load_checkpoint`); not modified (ETTA adapts a copy).
        metadata: its :class:`~SwinBOBLib.models.metadata.CheckpointMetadata`.
        config: :class:`InferenceConfig` (defaults when None).
        etta_config: :class:`~SwinBOBLib.inference.etta.EttaConfig` used when ``config.etta`` is set.
        progress: called as ``progress(stage, done, total)``, stage "etta" (steps) or
            "sliding_window" (windows), e.g. to report JSON-lines progress.

    Returns:
        :class:`Segmentation` on the input's grid.

    Raises:
        ValueError: bad image (NaN voxels, wrong channels, not 3D), bad options, a model ETTA cannot adapt.
        InsufficientMemoryError: the pipeline's estimated memory exceeds this machine's, checked
            before anything large is allocated (:mod:`~SwinBOBLib.inference.memory`).

    Warnings (into ``report.json`` ``warnings``): no contrast, ETTA collapsed, fp16 overflow recomputed.
    """
    config = resolve_config(config or InferenceConfig(), metadata)
    torch.manual_seed(config.seed)
    timings, stats = {}, {}
    started = time.perf_counter()
    device = select_device(config.device)
    check_modality(image, metadata)
    roi = _roi(config, metadata)
    selected = get_scheme(metadata.scheme).select(config.structures) if config.structures else None
    tensor, prepared = preprocess(image, metadata, config)
    timings["preprocess_s"] = time.perf_counter() - started
    model = model.to(device).eval()
    used = model
    swap = lateral_swap(metadata) if config.tta else None
    probs = None
    if config.etta:  # ETTA's second pass is the segmentation: no third pass
        used, stats["etta"], probs, info = _run_etta(model, tensor, roi, config, etta_config, device, progress, swap)
        timings["etta_s"] = stats["etta"].get("adaptation_s", stats["etta"]["time_s"])
        timings["inference_s"] = stats["etta"].get("final_pass_s", 0.0)
    if probs is None:
        t0 = time.perf_counter()
        bar, update = _bar(config.progress, "sliding window", report=progress, stage="sliding_window")
        try:
            probs, info = predict_probabilities(used, tensor, roi, config, device, update, swap)
        finally:
            bar.close()
        synchronize(device)
        timings["inference_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = _finish(probs, prepared, metadata, config, selected)
    timings["postprocess_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    result.stats.update(stats, **info, timings=timings, device=str(device),
                        amp=str(autocast_dtype(device, config.amp)), roi_size=list(roi),
                        model_grid=list(prepared.model_shape),
                        model_spacing_mm=[round(s, 4) for s in prepared.model_spacing])
    return result


def _run_etta(model, tensor, roi, config: InferenceConfig, etta_config, device, report, swap_table=None):
    """ETTA whose two whole-scan passes are this module's sliding window (overlap, blending, flips,
    low-memory path), so its second pass is the segmentation. Returns ``(model, stats, probs of
    the adapted model or None when ETTA was skipped, window info)``."""
    infos = {}

    def predict(net, image, stage):
        name = "sliding window" if stage == "after" else "ETTA first pass"
        bar, update = _bar(config.progress, name, report=report, stage="sliding_window" if stage == "after" else "etta")
        try:
            probs, infos[stage] = predict_probabilities(net, image, roi, config, device, update, swap_table)
        finally:
            bar.close()
        synchronize(device)
        return probs

    import dataclasses

    # ETTA's entropy follows the head: softmax classes or sigmoid regions (mean binary entropy).
    etta_config = dataclasses.replace(etta_config or EttaConfig(), activation=config.activation or "softmax")
    bar, update = _bar(config.progress, "ETTA", unit="step", report=report, stage="etta")
    started = time.perf_counter()
    try:
        adapted, stats, probs = adapt_and_predict(model, tensor, roi_size=roi, config=etta_config,
                                                       progress=update, predict=predict)
    except OUT_OF_MEMORY:
        # Adaptation back-propagates through whole patches; on a small GPU segment unadapted, say so.
        warnings.warn("ETTA ran out of GPU memory and was skipped; the segmentation is unadapted "
                      "(try --etta-patches 1, a smaller --roi-size, or --device cpu)")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return model, {"entropy_before": None, "entropy_after": None, "entropy_measured_on": None,
                       "skipped": "out of memory", "time_s": time.perf_counter() - started}, None, None
    finally:
        bar.close()
    return adapted, stats, probs, infos["after"]


def _finish(probs, prepared: Prepared, metadata, config: InferenceConfig, selected) -> Segmentation:
    activation = config.activation or "softmax"
    if activation == "sigmoid":  # overlapping region channels painted into labels (heads.RegionHead)
        head = region_head(metadata.scheme)
        channels, entropy, kept = postprocess(probs, prepared, config.probabilities, activation, head.labels)
        labels, kind, classes = channels.astype(np.uint8), "regions", head.num_channels
    else:  # the checkpoint's own channel order (compact for UKBOB, converted on load)
        layout = checkpoint_layout(metadata)
        dtype = np.uint8 if max(layout.labels) < 256 else np.uint16
        labels, entropy, kept = postprocess(probs, prepared, config.probabilities,
                                            labels_of=layout.channels_to_labels,
                                            dtype=dtype)
        kind, classes = layout.kind, layout.num_channels
    del probs
    whole = labels
    if selected is not None:
        labels = np.where(np.isin(labels, selected), labels, 0).astype(labels.dtype)
    record = prepared.record
    back = lambda array: io.undo_reorientation(Image(array, prepared.ras_affine), record)  # noqa: E731
    out_labels = back(labels)
    out_entropy = back(entropy)
    out_probs = back(kept) if kept is not None else None
    stats = {"mean_entropy": float(entropy.mean()), "layout": kind, "classes": classes,
             "structures": list(selected) if selected is not None else None}
    return Segmentation(out_labels, out_entropy, out_probs, stats,
                        whole_labels=back(whole) if selected is not None else None)
