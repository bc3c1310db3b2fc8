"""How much memory segmenting a scan takes, estimated before anything large is allocated, so a
scan too large for the machine is refused with the figure and what to do, not killed by the kernel.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.io import memory as host_memory
from SwinBOBLib.io.memory import InsufficientMemoryError, format_bytes, format_mm

#: Fixed cost of a segmenting process (torch, MONAI, the network, one slab of postprocessing), bytes.
PIPELINE_BASE_BYTES = 1.5e9

#: Share of the machine's memory a run may plan to use (the rest: the OS, other processes).
USABLE_SHARE = 0.8


def probabilities_on_host(config: InferenceConfig, device_type: str, channels: int, model_voxels: int) -> bool:
    """Whether the accumulated probabilities live in host memory: always on the CPU; on a GPU on
    the low-memory path (asked for, or chosen when they exceed ``config.memory_budget_gb``)."""
    if device_type == "cpu" or config.low_memory:
        return True
    return config.low_memory is None and channels * model_voxels * 8 / 1e9 > config.memory_budget_gb


def pipeline_memory_bytes(input_shape: Sequence[int], input_itemsize: int, contrasts: int,
                          model_shape: Sequence[int], channels: int, config: InferenceConfig,
                          device_type: str = "cpu") -> float:
    """Estimated peak host memory (bytes) of :func:`~SwinBOBLib.inference.pipeline.segment_image`.

    Args:
        input_shape: the scan's array shape ``(X, Y, Z[, C])`` as loaded; ``input_itemsize`` its bytes per value.
        contrasts: channels fed to the network; ``model_shape`` the grid it sees ``(X', Y', Z')``.
        channels: output channels ``K`` of the network.
        device_type: "cpu", "cuda" or "mps".

    Counts the loaded scan, its float32 normalised copy and percentile scratch, the network input,
    the blended probabilities (``K`` x model voxels, float32 or float16 on the low-memory path,
    with MONAI's accumulation buffers), the labels (uint8) and entropy (float32) on the input grid
    and their reoriented copies, the kept probabilities if asked for, and :data:`PIPELINE_BASE_BYTES`.
    """
    n_in = math.prod(int(n) for n in input_shape[:3])
    n_model = math.prod(int(n) for n in model_shape)
    total = n_in * int(input_shape[3] if len(input_shape) > 3 else 1) * int(input_itemsize)
    total += 8.0 * contrasts * n_in + 4.0 * contrasts * n_model
    if probabilities_on_host(config, device_type, channels, n_model):
        total += channels * n_model * (2 if config.low_memory else 4) * 2.0
    total += 2 * 5.0 * n_in + (4.0 * channels * n_in if config.probabilities else 0.0)
    return total + PIPELINE_BASE_BYTES


def check_pipeline_memory(source: str, input_shape: Sequence[int], input_itemsize: int, contrasts: int,
                          model_shape: Sequence[int], model_spacing: Sequence[float], channels: int,
                          config: InferenceConfig, device_type: str = "cpu") -> float | None:
    """Refuse a scan whose estimated pipeline memory (:func:`pipeline_memory_bytes`) exceeds
    :data:`USABLE_SHARE` of what this machine lets the process use.

    Returns the estimate (None where the machine's memory is unknown).

    Raises:
        InsufficientMemoryError: the estimate, the grids, the machine's memory and what would fit
            (``--low-memory``, a coarser ``--spacing``).
    """
    limit = host_memory.available_memory_bytes()
    need = pipeline_memory_bytes(input_shape, input_itemsize, contrasts, model_shape, channels, config, device_type)
    if not limit or need <= USABLE_SHARE * limit:
        return need if limit else None
    advice = _advice(input_shape, input_itemsize, contrasts, model_shape, model_spacing, channels, config,
                     device_type, USABLE_SHARE * limit)
    raise InsufficientMemoryError(
        f"not enough memory to segment {source}: the pipeline needs about {format_bytes(need)} ({channels} "
        f"channels of probabilities on the {'x'.join(map(str, model_shape))} model grid of "
        f"{format_mm(model_spacing)} mm voxels, the input grid {'x'.join(map(str, input_shape[:3]))}); this "
        f"machine allows {format_bytes(limit)}. {advice}")


def _advice(input_shape, itemsize, contrasts, model_shape, spacing, channels, config: InferenceConfig,
            device_type, usable: float) -> str:
    """What would fit: the low-memory path, else the finest coarser spacing (x1.5, x2, x3, x4) that does."""
    low = dataclasses.replace(config, low_memory=True)
    tips = []
    if not config.low_memory:
        need = pipeline_memory_bytes(input_shape, itemsize, contrasts, model_shape, channels, low, device_type)
        if need <= usable:
            return f"Use --low-memory (float16 probabilities, about {format_bytes(need)})."
        tips.append("--low-memory")
    for factor in (1.5, 2.0, 3.0, 4.0, 6.0, 8.0):
        coarse = [max(1, math.ceil(n / factor)) for n in model_shape]
        need = pipeline_memory_bytes(input_shape, itemsize, contrasts, coarse, channels, low, device_type)
        if need <= usable:
            coarser = ",".join(f"{s * factor:.3g}" for s in spacing)
            return (f"Use {' and '.join(tips + [f'--spacing {coarser}'])} (about {format_bytes(need)}), "
                    "or a machine with more memory.")
    return "Even a grid 8 times coarser does not fit: crop the scan, or use a machine with more memory."
