"""Dixon-like MRI channels of a phantom (water, fat, in-phase, opposed-phase) from its labels:
tissue signal tables, a smooth bias field and Rician noise.
"""

from __future__ import annotations

import numpy as np

from SwinBOBLib.phantom.anatomy import _BONES, _TISSUE_SIGNAL, DEFAULT_NOISE
from SwinBOBLib.phantom.shapes import _scheme


def _signal_tables(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-label (256,) water and fat signal with per-seed variation (liver fat fraction etc.)."""
    water, fat = np.zeros(256, np.float32), np.zeros(256, np.float32)
    for index, structure in _scheme().structures.items():
        name = structure.name
        if name.startswith(_BONES):
            w, f = 0.15, 0.66
        else:
            w, f = next((w, f) for key, w, f in _TISSUE_SIGNAL if name.startswith(key))
        water[index], fat[index] = w, f
    water[1:] *= rng.normal(1.0, 0.04, 255).astype(np.float32)
    fat[1:] *= rng.normal(1.0, 0.04, 255).astype(np.float32)
    liver = _scheme().lookup("liver")
    fraction = rng.uniform(0.02, 0.2)  # hepatic proton-density fat fraction
    fat[liver] = water[liver] * fraction / (1.0 - fraction)
    return water, fat


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field exp(quadratic polynomial), within 0.74..1.35, float32 (X, Y, Z)."""
    bases = [np.stack([np.ones(n), np.linspace(-1, 1, n), 1.5 * np.linspace(-1, 1, n) ** 2 - 0.5])
             for n in shape]
    coefficients = rng.normal(0.0, 0.06, (3, 3, 3))
    i, j, k = np.indices((3, 3, 3))
    coefficients[(i + j + k) > 2] = 0.0
    coefficients[0, 0, 0] = 0.0
    yz = np.einsum("abc,by,cz->ayz", coefficients, bases[1], bases[2])
    log_field = np.tensordot(bases[0].T, yz, axes=1)
    return np.exp(np.clip(log_field, -0.3, 0.3)).astype(np.float32)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|signal + n1 + i n2| with n1, n2 ~ N(0, sigma): magnitude-image noise (float32)."""
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imaginary * imaginary)


def dixon_image(labels: np.ndarray, seed: int = 0, noise: float = DEFAULT_NOISE) -> np.ndarray:
    """Four Dixon contrasts for a UKBOB label map.

    Args:
        labels: (X, Y, Z) integer label map, UKBOB numbering.
        seed: seeds the tissue signals, the bias field and the noise.
        noise: standard deviation of the complex Gaussian noise (image units; fat tissue ~ 0.9).
            0 gives noise-free images in which in_phase == water + fat and
            opposed_phase == |water - fat| exactly.

    Returns:
        (X, Y, Z, 4) float32: water, fat, in_phase, opposed_phase; background (air) ~ 0.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng([int(seed), 7])
    water_table, fat_table = _signal_tables(rng)
    bias = _bias_field(labels.shape, rng)
    water = water_table[labels] * bias
    fat = fat_table[labels] * bias
    channels = [water, fat, water + fat, np.abs(water - fat)]
    if noise > 0:
        channels = [_rician(c, noise, rng) for c in channels]
    return np.stack(channels, axis=-1)
