"""The body outline of the phantom: torso, limbs, body cavity and diaphragm, as masks on the grid."""

from __future__ import annotations

import numpy as np

from SwinBOBLib.phantom.anatomy import _CAVITY, _CAVITY_Z, _FAT_PROFILE, _TORSO, _TORSO_POWER, _Anatomy
from SwinBOBLib.phantom.shapes import _ellipsoid, _Grid, _tube


def _torso_profile(z: np.ndarray, anat: _Anatomy, grow: np.ndarray | float = 0.0):
    """Half-width, half-depth and centre y (each shaped like z) of the torso at heights z."""
    a, b, c = (np.interp(z, _TORSO[:, 0], _TORSO[:, i]) for i in (1, 2, 3))
    belly = np.interp(z, [-120, 0, 80, 180, 260], [0, 0.6, 1.0, 0.6, 0]) * anat.visceral
    return a + 12 * belly + grow, b + 22 * belly + grow, c + 10 * belly


def _inside_superellipse(grid: _Grid, a, b, c, power: float) -> np.ndarray:
    """(X, Y, Z) mask of |x/a|^p + |(y-c)/b|^p <= 1 with a, b, c given per slice (shape (Z,)).

    Separable in x and (y, z), so the only full-size operations are one add and one compare.
    """
    a, b = np.maximum(a, 1e-3), np.maximum(b, 1e-3)
    term_x = np.abs(grid.x)[:, None] ** power / (a ** power)[None, :]
    term_y = np.abs((grid.y[:, None] - c[None, :]) / b[None, :]) ** power
    return (term_x[:, None, :] + term_y[None, :, :]) <= 1.0


def _limb_paths(anat: _Anatomy):
    """[(points (N, 3), radii (N,), fat share)] of the right arm, right leg, left arm, left leg
    centre lines (template mm); the subcutaneous fat is ``fat share`` times the torso's."""
    limbs = []
    for side in (1.0, -1.0):
        x_shoulder = 150.0 + 0.45 * anat.fat_mm
        arm = [(side * x_shoulder, -8, 408), (side * (x_shoulder + 12), -10, 130),
               (side * (x_shoulder + 6), 5, -130), (side * x_shoulder, 10, -225)]
        limbs.append((np.array(arm), np.array([40, 33, 25, 18]) * anat.limb_scale[0], 0.6))
        leg = [(side * 95, 0, -80), (side * 88, 2, -300), (side * 80, 5, -500),
               (side * 80, -5, -700), (side * 80, -10, -930)]
        limbs.append((np.array(leg), np.array([82, 70, 52, 46, 32]) * anat.limb_scale[1], 0.8))
    return limbs


def _body_masks(grid: _Grid, anat: _Anatomy):
    """Boolean (X, Y, Z) masks of the whole body (skin outline) and of its muscle-wall core."""
    z = grid.z
    fat = anat.fat_mm * np.interp(z, *_FAT_PROFILE)
    a, b, c = _torso_profile(z, anat)
    in_torso = (z >= _TORSO[0, 0]) & (z <= _TORSO[-1, 0])
    core = _inside_superellipse(grid, a, b, c, _TORSO_POWER) & in_torso
    outer = _inside_superellipse(grid, a + fat, b + fat, c, _TORSO_POWER)
    outer &= (z >= _TORSO[0, 0] - anat.fat_mm) & (z <= _TORSO[-1, 0])
    shoulder = [(s * (140.0 + 0.45 * anat.fat_mm), -5, 410) for s in (1, -1)]
    for points, radii, fat_share in _limb_paths(anat):
        for mask, grow in ((core, 0.0), (outer, fat_share * anat.fat_mm)):
            for box, piece in _tube(grid, points, radii + grow):
                mask[box] |= piece
    for center in shoulder:
        for mask, grow in ((core, 0.0), (outer, 0.6 * anat.fat_mm)):
            for box, piece in _ellipsoid(grid, center, (45 + grow, 50 + grow, 50 + grow)):
                mask[box] |= piece
    return outer, core & outer


def _cavity_mask(grid: _Grid, anat: _Anatomy) -> np.ndarray:
    """Mask of the trunk's body cavity (thorax + abdomen + pelvis) inside the muscle wall."""
    z = grid.z
    lateral, anterior, posterior = (np.interp(z, _CAVITY[:, 0], _CAVITY[:, i]) for i in (1, 2, 3))
    a, b, c = _torso_profile(z, anat)
    mask = _inside_superellipse(grid, a - lateral, b - (anterior + posterior) / 2,
                                c + (posterior - anterior) / 2, _TORSO_POWER)
    return mask & ((z >= _CAVITY_Z[0]) & (z <= _CAVITY_Z[1]))


def _diaphragm_height(grid: _Grid, anat: _Anatomy) -> np.ndarray:
    """(X, Y) template z of the diaphragm surface: two domes, the right one higher."""
    x, y = grid.x[:, None], grid.y[None, :]
    right_top, left_top = 285 + anat.rng.normal(0, 6), 270 + anat.rng.normal(0, 6)
    right = right_top - 60 * ((x - 50) / 80) ** 2 - 50 * ((y - 5) / 75) ** 2
    left = left_top - 60 * ((x + 55) / 75) ** 2 - 50 * ((y - 5) / 75) ** 2
    return np.maximum(np.maximum(right, left), 165.0 + 0.35 * (y + 60))
