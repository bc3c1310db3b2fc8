"""Procedural neck-to-knee torso phantom in the UKBOB label space, with Dixon-like MRI contrasts.

:func:`make_phantom` paints a whole-body label map (UKBOB numbering, see ``data/schemes/ukbob.tsv``)
from smooth shapes (ellipsoids, superellipse cross-sections, tubes along smoothed polylines) placed
in *template* millimetres, then renders four Dixon contrasts (water, fat, in-phase = water + fat,
opposed-phase = |water - fat|) with a smooth multiplicative bias field and Rician noise.

Geometry: the affine is RAS+ (array axis 0 points to the patient's Right, axis 1 Anterior, axis 2
Superior; nibabel's ``aff2axcodes`` gives ``('R', 'A', 'S')``). Hence ``*_left`` structures lie at
*smaller* world x than their ``*_right`` partners, the liver at x > 0 and the spleen at x < 0.
World z = 0 is near the L5/S1 disc; the most superior slice is at z = :data:`TOP_Z_MM` (low neck).

Per seed, the body habitus (global scale, subcutaneous and visceral fat), organ positions, sizes
and rotations, tissue intensities, bias field and noise vary; the anatomy stays consistent. Every
voxel inside the body carries a label: what no organ, bone or named muscle claims is subcutaneous
fat (65), other skeletal muscle (66) or inner fat (67), as in TotalVibeSegmentator outputs.

:func:`corrupt_labels` plants recorded label errors (for scoring the SOLF label-quality filter) and
:func:`write_cohort` writes a Decathlon-style dataset folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from SwinBOBLib.io.image import Image
from SwinBOBLib.phantom.anatomy import (
    CHANNEL_NAMES,
    DEFAULT_FOV_MM,
    DEFAULT_NOISE,
    SIZES,
    TOP_Z_MM,
    _Anatomy,
    _draw_anatomy,
)
from SwinBOBLib.phantom.body import _diaphragm_height
from SwinBOBLib.phantom.organs import _paint_all
from SwinBOBLib.phantom.shapes import _Canvas, _Grid
from SwinBOBLib.phantom.signal import dixon_image


@dataclass
class Phantom:
    """A generated phantom.

    Attributes:
        image: (X, Y, Z, 4) float32 Dixon contrasts, channels as ``channel_names``.
        labels: (X, Y, Z) uint8 label map in UKBOB numbering (0 = outside the body).
        affine: (4, 4) float64 voxel index -> RAS+ mm (axis 0 to the patient's Right).
        seed: the seed it was generated from.
        channel_names: names of the image channels.
        parameters: the drawn habitus (scales, fat thickness, visceral fat), for reports.
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    seed: int
    channel_names: tuple = CHANNEL_NAMES
    parameters: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the three array axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.labels.shape)

    def present_labels(self) -> list[int]:
        """Label values present in the label map, 0 excluded."""
        return [int(v) for v in np.unique(self.labels) if v != 0]

    def as_image(self):
        """The Dixon image as a :class:`SwinBOBLib.io.Image`."""
        return Image(self.image, self.affine.copy(), channel_names=tuple(self.channel_names))


def resolve_size(size) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing mm) for a size name in :data:`SIZES` or an explicit (X, Y, Z) shape.

    Raises:
        ValueError: unknown name, or a shape that is not three integers >= 8.
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown phantom size '{size}'; use one of {', '.join(SIZES)} or an (X, Y, Z) tuple")
        return SIZES[size]
    try:
        shape = tuple(int(n) for n in size)
    except TypeError:
        raise ValueError(f"phantom size must be a name ({', '.join(SIZES)}) or an (X, Y, Z) tuple, "
                         f"got {size!r}") from None
    if len(shape) != 3 or min(shape) < 8 or any(int(n) != n for n in size):
        raise ValueError(f"phantom shape must be three integers >= 8, got {size!r}")
    return shape, tuple(f / n for f, n in zip(DEFAULT_FOV_MM, shape))


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS+ affine of a phantom grid: x and y centred on 0, top slice at z = TOP_Z_MM."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[0, 3] = -0.5 * (shape[0] - 1) * spacing[0]
    affine[1, 3] = -0.5 * (shape[1] - 1) * spacing[1]
    affine[2, 3] = TOP_Z_MM - (shape[2] - 1) * spacing[2]
    return affine


def _template_grid(affine: np.ndarray, shape, anat: _Anatomy) -> _Grid:
    spacing = np.diag(affine)[:3]
    world = [affine[i, 3] + spacing[i] * np.arange(shape[i]) for i in range(3)]
    scales = (anat.scale_xy, anat.scale_xy, anat.scale_z)
    x, y, z = ((w - anat.shift[i]) / scales[i] for i, w in enumerate(world))
    min_radius = 0.6 * float(max(spacing[0] / scales[0], spacing[1] / scales[1]))
    return _Grid(x, y, z, min_radius)


def make_labels(size="tiny", seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The label map alone: ((X, Y, Z) uint8 UKBOB labels, (4, 4) RAS affine, habitus parameters)."""
    shape, spacing = resolve_size(size)
    affine = phantom_affine(shape, spacing)
    anat = _draw_anatomy(int(seed))
    grid = _template_grid(affine, shape, anat)
    canvas = _Canvas(np.zeros(shape, np.uint8), grid, anat, _diaphragm_height(grid, anat))
    _paint_all(canvas)
    parameters = {"scale_xy": anat.scale_xy, "scale_z": anat.scale_z, "shift_mm": anat.shift.tolist(),
                  "subcutaneous_fat_mm": anat.fat_mm, "visceral_fat": anat.visceral}
    return canvas.labels, affine, parameters


def make_phantom(size="tiny", seed: int = 0, *, noise: float = DEFAULT_NOISE) -> Phantom:
    """Generate a neck-to-knee phantom: UKBOB label map plus four Dixon contrasts.

    Args:
        size: "tiny" (48x40x96 at 10 mm, unit tests), "small" (96x80x192 at 5 mm, demos),
            "ukbob" (224x160x501 at 2.23x2.23x3 mm) or an explicit (X, Y, Z) shape, which covers
            a 480 x 400 x 960 mm field of view.
        seed: integer seed; the same seed and size give identical arrays.
        noise: Rician noise level (see :func:`dixon_image`); 0 for noise-free images.

    The anatomy is defined in millimetres, so every size shows the same body. At coarse spacings
    tubes and small ellipsoids get a radius of at least 0.6 voxel so that thin structures (vessels,
    ribs, adrenal glands) stay present; at "tiny" size they are thicker than in life.

    Returns:
        :class:`Phantom` with ``image`` (X, Y, Z, 4) float32, ``labels`` (X, Y, Z) uint8 and a RAS affine.

    Raises:
        ValueError: unknown size, bad shape, negative noise.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    labels, affine, parameters = make_labels(size, seed)
    image = dixon_image(labels, seed, noise)
    return Phantom(image, labels, affine, int(seed), CHANNEL_NAMES, parameters)
