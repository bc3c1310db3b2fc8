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

ETTA (:mod:`SwinBOBLib.etta`) adapts a copy of the model on the preprocessed scan; its second
whole-scan pass (the adapted model, same sliding window) is step 3's prediction.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from . import io
from .io import Image
from .labels import channel_layout, get_scheme

#: CUDA out-of-memory error type (``torch.OutOfMemoryError`` from torch 2.5, ``torch.cuda`` before).
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
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
    """

    labels: Image
    entropy: Image
    probabilities: Image | None = None
    stats: dict = field(default_factory=dict)
    whole_labels: Image | None = None


# ----------------------------------------------------------------------------- devices


def select_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: "auto" picks CUDA, then Apple MPS, then the CPU.

    Raises:
        ValueError: an explicitly requested device that this machine or torch build lacks.
    """
    name = str(name or "auto").lower()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but torch sees no CUDA GPU (torch {torch.__version__}); "
                         "use --device cpu")
    if device.type == "mps" and not has_mps:
        raise ValueError(f"device '{name}' requested but this torch build has no Apple MPS support")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device '{name}' is not supported; use auto, cpu, cuda or mps")
    return device


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16; None (fp32) on the CPU, MPS or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ----------------------------------------------------------------------------- preprocessing


@dataclass
class Prepared:
    """Geometry needed to bring a prediction back: see :func:`preprocess`."""

    record: io.Reorientation  # undoes the RAS reorientation
    ras_affine: np.ndarray  # (4, 4) affine of the RAS grid
    ras_shape: tuple[int, int, int]  # input grid shape in RAS order
    model_shape: tuple[int, int, int]  # grid the network sees
    model_spacing: tuple[float, float, float]  # its voxel size (mm)


def select_contrasts(image: Image, in_channels: int, names: Sequence[str] | None) -> Image:
    """The channels to feed the network, ``in_channels`` of them.

    ``names`` (channel names or indices) are picked in order; an image without channel names that
    has exactly ``in_channels`` channels is fed as it is (a single-contrast scan for a model trained on
    one named contrast, with a warning); without names an image with exactly
    ``in_channels`` channels is used as is, and a multi-channel image for a one-channel network
    gives its first channel with a warning (UK Biobank Dixon order: water first).
    """
    if names and image.channel_names is None and image.num_channels == in_channels:
        if not all(str(n).isdigit() for n in names):
            warnings.warn(f"{io._source(image.path)}: the image's channels are unnamed; feeding its "
                          f"{in_channels} channel(s) as {', '.join(map(str, names))} (the model's contrast); "
                          f"choose the channel with --contrast, e.g. --contrast "
                          f"{','.join(str(i) for i in range(in_channels))} to feed them as they are")
    elif names:
        image = io.select_channels(image, list(names))
    elif image.num_channels != in_channels and in_channels == 1:
        channel = image.channel_names[0] if image.channel_names else "0"
        warnings.warn(f"{io._source(image.path)}: {image.num_channels} channels for a 1-channel model; "
                      f"using channel '{channel}' (choose with --contrast)")
        image = io.select_channels(image, [0])
    if image.num_channels != in_channels:
        raise ValueError(f"{io._source(image.path)}: the model takes {in_channels} channel(s), the image "
                         f"gives {image.num_channels} {image.channel_names or ''}; choose them with --contrast")
    return image


def normalize_intensity(array: np.ndarray, kind: str = "percentile", params: dict | None = None) -> np.ndarray:
    """Normalise intensities of ``(C, X, Y, Z)`` channel by channel (float32), as the model was trained.

    Kinds (``params`` keys in brackets):

    * ``percentile`` [lower=0.5, upper=99.5]: clip to those percentiles, scale to [0, 1] (MRI;
      the paper's "normalization to [0, 1]"). A constant channel becomes 0.
    * ``ct_window`` [a_min, a_max, b_min=0, b_max=1, clip=True]: MONAI's ``ScaleIntensityRange``,
      ``(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``, clipped to [b_min, b_max]
      (default window :data:`CT_WINDOW_HU`; the older ``low``/``high`` keys mean a_min/a_max).
    * ``zscore_nonzero`` [channel_wise=True]: MONAI's ``NormalizeIntensity(nonzero=True)``: mean
      and (population) standard deviation of the non-zero voxels; zeros stay 0.
    * ``zscore`` [channel_wise=True]: the same over every voxel.
    * ``none``: values unchanged.
    """
    params = dict(params or {})
    out = np.asarray(array, dtype=np.float32).copy()
    if kind == "none":
        return out
    if kind == "ct_window":
        return _ct_window(out, params)
    if kind in ("zscore_nonzero", "zscore"):
        return _zscore(out, kind == "zscore_nonzero", bool(params.get("channel_wise", True)))
    if kind != "percentile":
        raise ValueError(f"unknown intensity normalisation '{kind}'; use {', '.join(INTENSITY_MODES)}")
    for c in range(out.shape[0]):
        low, high = np.percentile(out[c], [params.get("lower", 0.5), params.get("upper", 99.5)])
        scale = float(high - low)
        out[c] = 0.0 if scale <= 0 else (np.clip(out[c], low, high) - low) / scale
    return out


def _ct_window(out: np.ndarray, params: dict) -> np.ndarray:
    a_min = float(params.get("a_min", params.get("low", CT_WINDOW_HU[0])))
    a_max = float(params.get("a_max", params.get("high", CT_WINDOW_HU[1])))
    b_min, b_max = float(params.get("b_min", 0.0)), float(params.get("b_max", 1.0))
    if a_max == a_min:
        raise ValueError(f"ct_window needs a_max != a_min, got a_min = a_max = {a_min}")
    out = (out - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
    if params.get("clip", True):
        out = np.clip(out, min(b_min, b_max), max(b_min, b_max))
    return out.astype(np.float32, copy=False)


def _zscore(out: np.ndarray, nonzero: bool, channel_wise: bool) -> np.ndarray:
    groups = [out[c:c + 1] for c in range(out.shape[0])] if channel_wise else [out]
    for group in groups:  # views: normalised in place
        mask = group != 0 if nonzero else np.ones(group.shape, dtype=bool)
        if not mask.any():
            continue
        values = group[mask].astype(np.float64)
        std = float(values.std()) or 1.0  # MONAI: a zero standard deviation divides by 1
        group[mask] = ((values - values.mean()) / std).astype(np.float32)
    return out


def model_grid(shape: Sequence[int], spacing: Sequence[float],
               target: Sequence[float] | None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and spacing of the corner-aligned grid covering the same extent at ``target`` mm.

    ``n' = round((n - 1) * s / t) + 1``; the effective spacing ``(n - 1) * s / (n' - 1)`` is
    within half a voxel of ``target`` over the scan. ``target`` None keeps the grid.
    """
    if target is None:
        return tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
    new_shape, new_spacing = [], []
    for n, s, t in zip(shape, spacing, target):
        m = max(2, int(round((n - 1) * s / t)) + 1) if n > 1 else 1
        new_shape.append(m)
        new_spacing.append((n - 1) * s / (m - 1) if m > 1 else s)
    return tuple(new_shape), tuple(new_spacing)


def effective_spacing(metadata_spacing, config: InferenceConfig, native: Sequence[float]):
    """Target spacing (mm) after the config override and fast mode; None keeps the scan's grid."""
    target = config.target_spacing_mm or metadata_spacing
    if target is not None and (len(target) != 3 or not all(math.isfinite(float(t)) and float(t) > 0 for t in target)):
        # A negative value is a typo, not a flip: refuse it instead of resampling to |value| mm.
        raise ValueError(f"target spacing {tuple(target)} mm must be three finite voxel sizes > 0")
    if config.fast:
        base = target or native
        target = tuple(max(float(s), FAST_SPACING_MM) for s in base)
    return tuple(float(s) for s in target) if target is not None else None


def preprocess(image: Image, metadata, config: InferenceConfig) -> tuple[torch.Tensor, Prepared]:
    """Image -> network input ``(1, C, X', Y', Z')`` float32 in RAS voxel order, and its geometry.

    Raises:
        ValueError: wrong channels, non-finite voxels, a grid with fewer than 2 voxels along an axis.
    """
    names = [n.strip() for n in config.contrast.split(",")] if config.contrast else metadata.contrasts
    image = select_contrasts(image, metadata.in_channels, names)
    _check_voxels(image)
    ras, record = io.reorient(image, "RAS")
    array = ras.array[None] if ras.array.ndim == 3 else np.moveaxis(ras.array, -1, 0)
    kind = config.intensity or metadata.intensity
    params = metadata.intensity_params if kind == metadata.intensity else {}
    array = normalize_intensity(array, kind, params)
    target = effective_spacing(metadata.target_spacing_mm, config, ras.spacing)
    shape, spacing = model_grid(ras.spatial_shape, ras.spacing, target)
    _check_grid_size(shape, ras, target)
    tensor = resample(torch.from_numpy(array)[None], shape)
    return tensor, Prepared(record, ras.affine, ras.spatial_shape, shape, spacing)


def check_roi_size(roi: int | None) -> int | None:
    """A requested window edge (voxels) within 1..:data:`MAX_ROI_SIZE`, checked before any model is
    built for it (UNETR's position embedding grows with its cube)."""
    if roi is not None and not 1 <= int(roi) <= MAX_ROI_SIZE:
        raise ValueError(f"--roi-size {roi}: a sliding window of {int(roi)}^3 voxels does not fit in memory; "
                         f"use 32..{MAX_ROI_SIZE} (a multiple of 32 for Swin-UNETR)")
    return roi


def _check_grid_size(shape: Sequence[int], image: Image, target) -> None:
    """Refuse a model grid no machine can hold, e.g. a header claiming 1000 mm voxels resampled to 1.5 mm."""
    voxels = math.prod(int(n) for n in shape)
    if voxels > MAX_MODEL_VOXELS:
        raise ValueError(f"{io._source(image.path)}: resampling its {image.spatial_shape} grid of "
                         f"{io._mm(image.spacing)} mm voxels to {io._mm(target)} mm gives {tuple(shape)} = "
                         f"{voxels:.3g} voxels, more than {MAX_MODEL_VOXELS:.3g}; check the header's spacing, "
                         "or choose a coarser --spacing")


def _check_voxels(image: Image) -> None:
    source = io._source(image.path)
    array = np.asarray(image.array)
    if array.ndim not in (3, 4) or min(array.shape[:3]) < 2:
        raise ValueError(f"{source}: image of shape {array.shape} is not a 3D volume")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{source}: {int(np.size(array) - np.isfinite(array).sum())} voxels are NaN or "
                         "infinite; fix or mask them first")


def resample(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Trilinear, corner-aligned resampling of ``(B, C, X, Y, Z)`` to spatial ``shape`` (no-op if equal)."""
    if tuple(tensor.shape[2:]) == tuple(shape):
        return tensor
    return torch.nn.functional.interpolate(tensor, size=tuple(int(s) for s in shape), mode="trilinear",
                                           align_corners=True)


# ----------------------------------------------------------------------------- sliding window


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
    from .heads import activate

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


def window_overlap(config: InferenceConfig, metadata=None) -> float:
    """Sliding-window overlap: 0 in fast mode, else the option, the checkpoint's, or :data:`DEFAULT_OVERLAP`."""
    if config.fast:
        return 0.0
    if config.overlap is not None:
        return float(config.overlap)
    stored = getattr(metadata, "overlap", None)
    return float(stored) if stored is not None else DEFAULT_OVERLAP


def _output_gb(tensor: torch.Tensor, channels: int) -> float:
    return channels * math.prod(tensor.shape[2:]) * 4 * 2 / 1e9  # probabilities + blending buffers


def _sliding_window(model, tensor, roi, config, device, low_memory, progress, flips, swap_table):
    from monai.inferers import sliding_window_inference

    from .etta import flip_tta

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


def _checkpoint_layout(metadata):
    """The channel layout a softmax checkpoint's outputs are in (compact unless it says otherwise)."""
    return channel_layout(metadata.scheme, getattr(metadata, "layout", "compact"))


def lateral_swap(metadata) -> list[int]:
    """The other-side channel of each channel of the checkpoint's layout (flip TTA exchanges them
    for left-right flipped windows)."""
    from .augment import lateral_swap_table

    return lateral_swap_table(_checkpoint_layout(metadata)).tolist()


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
            flipped windows have their paired channels exchanged (:func:`~SwinBOBLib.etta.flip_tta`,
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
    # flip_tta exchanges paired channels when the prediction has the layout's channels
    info["tta_lateral_swap"] = flips > 1 and swap_table is not None and len(swap_table) == probs.shape[1]
    return probs, info


def _out_channels(model: torch.nn.Module) -> int:
    head = getattr(getattr(getattr(model, "out", None), "conv", None), "conv", None)
    if head is not None and hasattr(head, "out_channels"):
        return int(head.out_channels)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    return int(convs[-1].out_channels) if convs else 1


# ----------------------------------------------------------------------------- postprocessing


def _lerp_axis(tensor: torch.Tensor, axis: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``tensor`` along ``axis`` at fractional source ``coords``."""
    n = tensor.shape[axis]
    lo = coords.floor().long().clamp(0, n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    weight = (coords - lo.to(coords.dtype)).to(tensor.dtype)
    view = [1] * tensor.ndim
    view[axis] = -1
    weight = weight.view(view)
    return tensor.index_select(axis, lo) * (1 - weight) + tensor.index_select(axis, hi) * weight


def _source_coords(n_out: int, n_src: int) -> torch.Tensor:
    """Corner-aligned source coordinates of ``n_out`` output samples over ``n_src`` source samples."""
    if n_out == 1 or n_src == 1:
        return torch.zeros(n_out, dtype=torch.float64)
    return torch.arange(n_out, dtype=torch.float64) * (n_src - 1) / (n_out - 1)


def probability_slabs(probs: torch.Tensor, shape: Sequence[int], slab: int = 16):
    """Yield ``(z0, z1, probs_slab (K, X, Y, z1 - z0) float32)`` of ``probs`` ``(1, K, X', Y', Z')``
    interpolated onto the grid ``shape`` (corner-aligned, the inverse of :func:`resample`)."""
    probs = probs[0]
    xs = _source_coords(shape[0], probs.shape[1])
    ys = _source_coords(shape[1], probs.shape[2])
    zs = _source_coords(shape[2], probs.shape[3])
    same_xy = tuple(probs.shape[1:3]) == tuple(shape[:2])
    for z0 in range(0, shape[2], slab):
        z1 = min(shape[2], z0 + slab)
        lo = int(zs[z0].floor())
        hi = min(int(zs[z1 - 1].ceil()), probs.shape[3] - 1)
        part = probs[:, :, :, lo:hi + 1].float()
        if not same_xy:
            part = _lerp_axis(_lerp_axis(part, 1, xs.to(torch.float32)), 2, ys.to(torch.float32))
        if tuple(probs.shape[1:]) != tuple(shape):
            part = _lerp_axis(part, 3, (zs[z0:z1] - lo).to(torch.float32))
        yield z0, z1, part.cpu()


def postprocess(probs: torch.Tensor, prepared: Prepared, keep_probabilities: bool = False,
                activation: str = "softmax", decode: Callable[[torch.Tensor], np.ndarray] | None = None):
    """Probabilities on the model grid -> channel argmax, entropy (and probabilities) on the RAS input grid.

    ``activation`` picks the entropy (:func:`heads.entropy`); ``decode`` maps a slab of
    probabilities ``(K, X, Y, z)`` to integers ``(X, Y, z)`` (default: the channel argmax; a
    sigmoid head passes :meth:`heads.RegionHead.labels`).

    Returns:
        ``(channels (X, Y, Z) int64, entropy (X, Y, Z) float32, probabilities (X, Y, Z, K) float32
        or None)``, all in the RAS voxel order of the input grid.
    """
    from .heads import entropy as voxel_entropy

    shape = prepared.ras_shape
    channels = np.zeros(shape, dtype=np.int64)
    entropy = np.zeros(shape, dtype=np.float32)
    kept = np.zeros((*shape, probs.shape[1]), dtype=np.float32) if keep_probabilities else None
    for z0, z1, part in probability_slabs(probs, shape):
        channels[:, :, z0:z1] = decode(part) if decode is not None else part.argmax(0).numpy()
        entropy[:, :, z0:z1] = voxel_entropy(part[None], activation)[0].numpy()
        if kept is not None:
            kept[:, :, z0:z1] = np.moveaxis(part.numpy(), 0, -1)
    return channels, entropy, kept


# ----------------------------------------------------------------------------- the whole job


def _roi(config: InferenceConfig, metadata) -> tuple[int, int, int]:
    roi = int(config.roi_size or metadata.roi_size)
    from .model import roi_multiple

    multiple = roi_multiple(metadata.network)
    if roi < 1 or roi % multiple:
        raise ValueError(f"roi size must be a positive multiple of {multiple} voxels for {metadata.network} "
                         f"(its total downsampling), got {roi}")
    if roi > MAX_ROI_SIZE:
        raise ValueError(f"roi size {roi} voxels asks for windows of {roi ** 3:.3g} voxels, which no GPU or CPU "
                         f"memory holds; use at most {MAX_ROI_SIZE} (the checkpoint's is {metadata.roi_size})")
    return (roi, roi, roi)


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
        model: the network (see :func:`model.load_checkpoint`); not modified (ETTA adapts a copy).
        metadata: its :class:`model.CheckpointMetadata`.
        config: :class:`InferenceConfig` (defaults when None).
        etta_config: :class:`etta.EttaConfig` used when ``config.etta`` is set.
        progress: called as ``progress(stage, done, total)``, stage "etta" (steps) or
            "sliding_window" (windows), e.g. to report JSON-lines progress.

    Returns:
        :class:`Segmentation` on the input's grid.

    Raises:
        ValueError: bad image (NaN voxels, wrong channels, not 3D), bad options, a model ETTA cannot adapt.
    """
    config = resolve_config(config or InferenceConfig(), metadata)
    torch.manual_seed(config.seed)
    timings, stats = {}, {}
    started = time.perf_counter()
    device = select_device(config.device)
    from .checkpoints import check_modality

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
        _synchronize(device)
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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_etta(model, tensor, roi, config: InferenceConfig, etta_config, device, report, swap_table=None):
    """ETTA whose two whole-scan passes are this module's sliding window (overlap, blending, flips,
    low-memory path), so its second pass is the segmentation. Returns ``(model, stats, probs of
    the adapted model or None when ETTA was skipped, window info)``."""
    from . import etta

    infos = {}

    def predict(net, image, stage):
        name = "sliding window" if stage == "after" else "ETTA first pass"
        bar, update = _bar(config.progress, name, report=report, stage="sliding_window" if stage == "after" else "etta")
        try:
            probs, infos[stage] = predict_probabilities(net, image, roi, config, device, update, swap_table)
        finally:
            bar.close()
        _synchronize(device)
        return probs

    import dataclasses

    # ETTA's entropy follows the head: softmax classes or sigmoid regions (mean binary entropy).
    etta_config = dataclasses.replace(etta_config or etta.EttaConfig(), activation=config.activation or "softmax")
    bar, update = _bar(config.progress, "ETTA", unit="step", report=report, stage="etta")
    started = time.perf_counter()
    try:
        adapted, stats, probs = etta.adapt_and_predict(model, tensor, roi_size=roi, config=etta_config,
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


def resolve_config(config: InferenceConfig, metadata) -> InferenceConfig:
    """``config`` with the checkpoint's values filled in where it says None (overlap, activation)."""
    import dataclasses

    return dataclasses.replace(config, overlap=window_overlap(config, metadata),
                               activation=config.activation or getattr(metadata, "activation", "softmax"))


def _finish(probs, prepared: Prepared, metadata, config: InferenceConfig, selected) -> Segmentation:
    activation = config.activation or "softmax"
    if activation == "sigmoid":  # overlapping region channels painted into labels (heads.RegionHead)
        from .heads import region_head

        head = region_head(metadata.scheme)
        channels, entropy, kept = postprocess(probs, prepared, config.probabilities, activation, head.labels)
        labels, kind, classes = channels.astype(np.uint8), "regions", head.num_channels
    else:  # the checkpoint's own channel order (compact for UKBOB, converted on load)
        layout = _checkpoint_layout(metadata)
        channels, entropy, kept = postprocess(probs, prepared, config.probabilities)
        labels, kind, classes = layout.channels_to_labels(channels), layout.kind, layout.num_channels
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


def effective_config(config: InferenceConfig, metadata) -> dict:
    """The configuration actually used (checkpoint values filled in), for report.json."""
    data = config.to_dict()
    data["roi_size"] = int(config.roi_size or metadata.roi_size)
    data["intensity"] = config.intensity or metadata.intensity
    data["overlap"] = window_overlap(config, metadata)
    data["activation"] = config.activation or getattr(metadata, "activation", "softmax")
    return data


__all__ = ["InferenceConfig", "Segmentation", "select_device", "autocast_dtype", "select_contrasts",
           "normalize_intensity", "preprocess", "resample", "predict_probabilities", "postprocess",
           "segment_image", "count_windows"]
