"""From a scan to the network's input: the channels it was trained on, intensity normalisation,
exact reorientation to RAS and resampling to its spacing on a corner-aligned grid (so the way
back is the exact inverse), with size checks before anything large is allocated; and the
CT-vs-MRI check of a scan against the model's training modality.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from SwinBOBLib import io
from SwinBOBLib.inference.config import (
    CT_WINDOW_HU,
    FAST_SPACING_MM,
    INTENSITY_MODES,
    MAX_MODEL_VOXELS,
    MAX_ROI_SIZE,
    InferenceConfig,
)
from SwinBOBLib.inference.device import select_device
from SwinBOBLib.inference.memory import check_pipeline_memory
from SwinBOBLib.io.image import Image


def image_modality(array) -> str | None:
    """``"CT"`` when at least 1 % of the voxels are below -500 (air in Hounsfield units), ``"MR"``
    when fewer than 1 % are below -100 (no air values; MR scans may dip slightly below 0), else
    None. ``array`` ``(X, Y, Z[, C])``, first channel used."""
    import numpy as np

    values = np.asarray(array)
    values = values[..., 0] if values.ndim == 4 else values
    sample = values[::2, ::2, ::2] if values.size > 1_000_000 else values
    if sample.size == 0:
        return None
    low = float(np.percentile(sample, 1))
    if low < -500:
        return "CT"
    return "MR" if low >= -100 else None


def check_modality(image, metadata) -> str | None:
    """Warn when a CT goes to a model trained on MRI or the other way round; returns the warning."""
    import warnings

    wanted = getattr(metadata, "modality", None)
    seen = image_modality(image.array) if wanted in ("CT", "MR") else None
    if seen is None or seen == wanted:
        return None
    why = "1 % of voxels below -500 HU" if seen == "CT" else "no air-like values below -100"
    message = (f"{getattr(image, 'path', None) or 'the scan'} looks like {seen} ({why}) but the model was "
               f"trained on {wanted}: expect a poor segmentation (choose a {seen} model, or check the file)")
    warnings.warn(message)
    return message


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
            warnings.warn(f"{io.source_name(image.path)}: the image's channels are unnamed; feeding its "
                          f"{in_channels} channel(s) as {', '.join(map(str, names))} (the model's contrast); "
                          f"choose the channel with --contrast, e.g. --contrast "
                          f"{','.join(str(i) for i in range(in_channels))} to feed them as they are")
    elif names:
        image = io.select_channels(image, list(names))
    elif image.num_channels != in_channels and in_channels == 1:
        channel = image.channel_names[0] if image.channel_names else "0"
        warnings.warn(f"{io.source_name(image.path)}: {image.num_channels} channels for a 1-channel model; "
                      f"using channel '{channel}' (choose with --contrast)")
        image = io.select_channels(image, [0])
    if image.num_channels != in_channels:
        raise ValueError(f"{io.source_name(image.path)}: the model takes {in_channels} channel(s), the image "
                         f"gives {image.num_channels} {image.channel_names or ''}; choose them with --contrast")
    return image


def dicom_contrasts(metadata, config: InferenceConfig) -> tuple[str, ...] | None:
    """The contrasts to find among a DICOM folder's series and stack as channels (``contrasts`` of
    :func:`SwinBOBLib.io.load_image`): None for a one-channel model (the folder's series is chosen as
    for any scan, ``--series`` when it holds several); else the ``--contrast`` names, the checkpoint's
    contrasts, or UK Biobank's four (:data:`~SwinBOBLib.io.image.DIXON_CHANNELS`) for a four-channel
    model that names none."""
    if int(metadata.in_channels) < 2:
        return None
    names = [n.strip() for n in config.contrast.split(",")] if config.contrast else None
    if not names or any(n.isdigit() for n in names):  # indices name channels of a file, not DICOM series
        names = metadata.contrasts or (io.DIXON_CHANNELS if int(metadata.in_channels) == len(io.DIXON_CHANNELS)
                                       else None)
    return tuple(names) if names else None


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
        InsufficientMemoryError: the pipeline's estimated memory exceeds this machine's
            (:func:`~SwinBOBLib.inference.memory.check_pipeline_memory`).
    """
    names = [n.strip() for n in config.contrast.split(",")] if config.contrast else metadata.contrasts
    image = select_contrasts(image, metadata.in_channels, names)
    _check_voxels(image)
    ras, record = io.reorient(image, "RAS")
    target = effective_spacing(metadata.target_spacing_mm, config, ras.spacing)
    shape, spacing = model_grid(ras.spatial_shape, ras.spacing, target)
    _check_grid_size(shape, ras, target)
    check_pipeline_memory(io.source_name(image.path), ras.array.shape, ras.array.dtype.itemsize, ras.num_channels,
                          shape, spacing, int(metadata.out_channels), config, select_device(config.device).type)
    array = ras.array[None] if ras.array.ndim == 3 else np.moveaxis(ras.array, -1, 0)
    kind = config.intensity or metadata.intensity
    params = metadata.intensity_params if kind == metadata.intensity else {}
    array = normalize_intensity(array, kind, params)
    check_contrast(array, image, kind)
    tensor = resample(torch.from_numpy(array)[None], shape)
    return tensor, Prepared(record, ras.affine, ras.spatial_shape, shape, spacing)


def check_contrast(array: np.ndarray, image: Image, kind: str) -> str | None:
    """Warn when a normalised channel ``(C, X, Y, Z)`` is constant: a blank or constant scan (or one
    whose voxels nearly all share one value) has no contrast, and whatever the network paints on it
    is not anatomy. Returns the warning."""
    flat = [c for c in range(array.shape[0]) if float(array[c].max()) == float(array[c].min())]
    if not flat:
        return None
    raw = np.asarray(image.array)
    what = (f"every voxel is {raw.flat[0]:g}" if raw.size and raw.min() == raw.max()
            else f"nearly every voxel has one value, so the '{kind}' normalisation leaves no contrast")
    message = (f"{io.source_name(image.path)}: channel(s) {flat}: {what}; there is nothing to segment and "
               "the labels are not anatomy (check the file, the channel or --contrast)")
    warnings.warn(message)
    return message


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
        raise ValueError(f"{io.source_name(image.path)}: resampling its {image.spatial_shape} grid of "
                         f"{io.format_mm(image.spacing)} mm voxels to {io.format_mm(target)} mm gives {tuple(shape)} = "
                         f"{voxels:.3g} voxels, more than {MAX_MODEL_VOXELS:.3g}; check the header's spacing, "
                         "or choose a coarser --spacing")


def _check_voxels(image: Image) -> None:
    source = io.source_name(image.path)
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
