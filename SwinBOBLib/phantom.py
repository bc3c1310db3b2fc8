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

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

CHANNEL_NAMES = ("water", "fat", "in_phase", "opposed_phase")
CORRUPTION_KINDS = ("truncation", "swap", "merge", "dilation", "erosion", "dropped_slices", "holes",
                    "spurious_blob")

#: Named sizes: (shape (X, Y, Z) in voxels, spacing in mm). All cover the same anatomy.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "tiny": ((48, 40, 96), (10.0, 10.0, 10.0)),      # unit tests
    "small": ((96, 80, 192), (5.0, 5.0, 5.0)),       # training demos
    "ukbob": ((224, 160, 501), (2.232143, 2.232143, 3.0)),  # UK Biobank Dixon grid
}
#: Field of view (mm) used for an explicit (X, Y, Z) shape; the spacing is FOV / shape.
DEFAULT_FOV_MM = (480.0, 400.0, 960.0)
#: World z (mm) of the most superior slice.
TOP_Z_MM = 530.0
#: Standard deviation of the Gaussian noise behind the Rician noise, in image units (fat ~ 0.9).
DEFAULT_NOISE = 0.02

BODY_COMPOSITION = ("subcutaneous_fat", "muscle", "inner_fat")


# ----------------------------------------------------------------------------- label helpers


@functools.lru_cache(maxsize=1)
def _scheme():
    from .labels import get_scheme

    return get_scheme("ukbob")


@functools.lru_cache(maxsize=1)
def _partners() -> dict[int, int]:
    return _scheme().lateral_partners()


def _ids(*names: str) -> tuple[int, ...]:
    """UKBOB label values of the given structure names."""
    return tuple(_scheme().lookup(n) for n in names)


def _lut(values: Iterable[int]) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(values)] = True
    return table


def _all_but(*excluded: int) -> np.ndarray:
    table = np.ones(256, dtype=bool)
    table[list(excluded)] = False
    return table


def partner_of(label: int) -> int | None:
    """Label of the other-side partner of a ``*_left`` / ``*_right`` structure, or None."""
    return _partners().get(int(label))


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in template mm along each array axis (increasing)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    min_radius: float  # thinner shapes would fall between voxel centres

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels with lo <= coordinate <= hi, or None when empty."""
        slices = []
        for axis, a, b in zip((self.x, self.y, self.z), lo, hi):
            i0, i1 = int(np.searchsorted(axis, a, "left")), int(np.searchsorted(axis, b, "right"))
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
        return tuple(slices)

    def coords(self, box):
        """Broadcastable (x, y, z) coordinate arrays of a box, shapes (n,1,1), (1,n,1), (1,1,n)."""
        return (self.x[box[0]][:, None, None], self.y[box[1]][None, :, None],
                self.z[box[2]][None, None, :])


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx for angles (degrees) about the x, y and z axes."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid(grid: _Grid, center, radii, angles=(0.0, 0.0, 0.0), power: float = 2.0):
    """Pieces [(box, mask)] of a rotated ellipsoid (power 2) or superquadric (power > 2), in mm."""
    center = np.asarray(center, dtype=float)
    radii = np.maximum(np.asarray(radii, dtype=float), grid.min_radius)
    rot = _rotation(angles)
    extent = np.abs(rot) @ radii
    box = grid.box(center - extent, center + extent)
    if box is None:
        return []
    x, y, z = grid.coords(box)
    dx, dy, dz = x - center[0], y - center[1], z - center[2]
    total = 0.0
    for i in range(3):
        local = (rot[0, i] * dx + rot[1, i] * dy + rot[2, i] * dz) / radii[i]
        total = total + (local * local if power == 2.0 else np.abs(local) ** power)
    return [(box, total <= 1.0)]


def _smooth_path(points, radii, per_span: int = 3):
    """Catmull-Rom interpolation of a polyline (N, 3) and its radii (N,) through every point."""
    points = np.asarray(points, dtype=float)
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(points),))
    if len(points) < 3:
        return points, radii
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0, 1, per_span, endpoint=False)[:, None]
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1:i + 3]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(points[-1:])
    fine = np.vstack(out)
    s_coarse = np.arange(len(points), dtype=float)
    s_fine = np.concatenate([np.arange(len(points) - 1)[:, None] + t.T, [[len(points) - 1]]], axis=None)
    return fine, np.interp(s_fine, s_coarse, radii)


def _tube(grid: _Grid, points, radii, smooth: bool = True):
    """Pieces of a tube of varying radius (mm) around a polyline (N, 3) of template points."""
    if smooth:
        points, radii = _smooth_path(points, radii)
    points = np.asarray(points, dtype=float)
    radii = np.maximum(np.broadcast_to(np.asarray(radii, float), (len(points),)), grid.min_radius)
    pieces = []
    for p0, p1, r0, r1 in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        box = grid.box(np.minimum(p0, p1) - max(r0, r1), np.maximum(p0, p1) + max(r0, r1))
        if box is None:
            continue
        x, y, z = grid.coords(box)
        d = p1 - p0
        t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(d @ d), 1e-9)
        t = np.clip(t, 0.0, 1.0)
        dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
        radius = r0 + t * (r1 - r0)
        pieces.append((box, dist2 <= radius * radius))
    return pieces


def _paint(labels: np.ndarray, pieces, name: str, over: np.ndarray, region=None) -> None:
    """Set ``name``'s label where a piece's mask holds, the current label is in the ``over`` table
    and ``region(box)`` (if given) holds."""
    value = _scheme().lookup(name)
    for box, mask in pieces:
        view = labels[box]
        selected = mask & over[view]
        if region is not None:
            selected &= region(box)
        view[selected] = value


# ----------------------------------------------------------------------------- random anatomy


@dataclass
class _Anatomy:
    """Per-seed anatomical variation; everything else is the template in mm."""

    rng: np.random.Generator
    scale_xy: float
    scale_z: float
    shift: np.ndarray          # (3,) world mm of the template origin
    fat_mm: float              # subcutaneous fat thickness (template mm)
    visceral: float            # 0 (lean) .. 1 (much visceral fat)
    spine_y: np.ndarray        # (2, K) keypoints z -> y of the vertebral-body centre line
    limb_scale: tuple[float, float]  # radius factors of the arms and the legs

    def jitter(self, point, sd: float = 4.0) -> np.ndarray:
        return np.asarray(point, dtype=float) + self.rng.normal(0.0, sd, 3)

    def factor(self, low: float = 0.88, high: float = 1.12) -> float:
        return float(self.rng.uniform(low, high))

    def spine_at(self, z) -> np.ndarray:
        """y (template mm) of the vertebral-body centre line at height(s) z."""
        return np.interp(z, self.spine_y[0], self.spine_y[1])


# Spine centre line (z, y) in template mm: cervical and lumbar lordosis, thoracic kyphosis, sacrum.
_SPINE_Y = np.array([[-120, -100, -60, -10, 40, 100, 150, 250, 330, 400, 460, 620],
                     [-78, -72, -58, -40, -28, -28, -38, -52, -54, -48, -36, -24]], dtype=float)


def _draw_anatomy(seed: int) -> _Anatomy:
    rng = np.random.default_rng(seed)
    spine = _SPINE_Y.copy()
    spine[1] += rng.normal(0.0, 3.0, spine.shape[1]).cumsum() * 0.3
    return _Anatomy(rng=rng, scale_xy=float(rng.uniform(0.93, 1.06)), scale_z=float(rng.uniform(0.96, 1.04)),
                    shift=np.array([rng.normal(0, 4), rng.normal(0, 4), rng.normal(0, 10)]),
                    fat_mm=float(rng.uniform(7.0, 32.0)), visceral=float(rng.uniform(0.0, 1.0)),
                    spine_y=spine, limb_scale=(float(rng.uniform(0.92, 1.08)), float(rng.uniform(0.9, 1.1))))


# ----------------------------------------------------------------------------- body outline

# Torso muscle-wall outline: z, half-width a, half-depth b, centre y (template mm).
_TORSO = np.array([
    [-215, 110, 80, -5], [-160, 145, 97, -8], [-100, 150, 100, -5], [-30, 140, 98, 0],
    [50, 134, 100, 5], [130, 140, 103, 5], [210, 147, 106, 3], [300, 150, 108, 2],
    [380, 150, 104, 0], [415, 140, 95, -5], [440, 120, 80, -10], [460, 75, 62, -18], [480, 58, 56, -20],
    [700, 54, 52, -16]], dtype=float)
_TORSO_POWER = 2.6
# Subcutaneous fat thickness relative to the seed's value, by height.
_FAT_PROFILE = np.array([[-600, -215, -100, 60, 250, 420, 560], [0.8, 1.2, 1.3, 1.4, 1.0, 0.6, 0.5]])
# Body cavity inset from the muscle wall: z, lateral, anterior, posterior (template mm).
_CAVITY = np.array([
    [-150, 62, 18, 38], [-70, 48, 16, 45], [40, 20, 15, 52], [160, 18, 15, 50],
    [300, 20, 18, 38], [440, 24, 20, 30], [462, 26, 20, 30]], dtype=float)
_CAVITY_Z = (-150.0, 462.0)


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


# ----------------------------------------------------------------------------- painting


@dataclass
class _Canvas:
    """The label map being painted, with the grid and the diaphragm that splits the cavity."""

    labels: np.ndarray
    grid: _Grid
    anat: _Anatomy
    diaphragm: np.ndarray  # (X, Y) template z

    def above_diaphragm(self, box) -> np.ndarray:
        return self.grid.z[box[2]][None, None, :] > self.diaphragm[box[0], box[1]][:, :, None] + 2.0

    def below_diaphragm(self, box) -> np.ndarray:
        return self.grid.z[box[2]][None, None, :] < self.diaphragm[box[0], box[1]][:, :, None] - 2.0

    def paint(self, name: str, pieces, over: np.ndarray, region=None) -> None:
        _paint(self.labels, pieces, name, over, region)

    def ellipsoid(self, name, center, radii, angles=(0, 0, 0), over=None, region=None, sd=4.0, power=2.0):
        """Paint an ellipsoid with per-seed jitter of position (sd mm), size and rotation."""
        a = self.anat
        radii = np.asarray(radii, float) * a.factor()
        angles = np.asarray(angles, float) + a.rng.normal(0.0, 5.0, 3)
        pieces = _ellipsoid(self.grid, a.jitter(center, sd), radii, angles, power)
        self.paint(name, pieces, _over("organ") if over is None else over, region)

    def tube(self, name, points, radii, over=None, region=None, sd=2.0):
        """Paint a tube; the whole path is shifted by a per-seed offset (sd mm)."""
        points = np.asarray(points, float) + self.anat.rng.normal(0.0, sd, 3)
        radii = np.asarray(radii, float) * self.anat.factor(0.9, 1.1)
        self.paint(name, _tube(self.grid, points, radii), _over("vessel") if over is None else over, region)


@functools.lru_cache(maxsize=None)
def _over(kind: str) -> np.ndarray:
    """Which existing labels a structure of ``kind`` may overwrite (never background or skin fat)."""
    soft = _ids("muscle", "inner_fat")
    lungs = _ids("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
                 "lung_middle_lobe_right", "lung_lower_lobe_right")
    if kind == "soft":
        return _lut(soft)
    if kind == "organ":
        return _lut(soft + _ids("intestine"))
    if kind == "thorax":
        return _lut(soft + lungs)
    if kind == "muscle":
        return _lut(soft + _ids("intestine"))
    if kind in ("vessel", "bone"):
        return _all_but(0, _scheme().lookup("subcutaneous_fat"))
    raise ValueError(f"unknown paint kind '{kind}'")


def _sides():
    """(sign of x, suffix) for the patient's right (+x in RAS) and left (-x)."""
    return ((1.0, "right"), (-1.0, "left"))


def _paint_body(canvas: _Canvas) -> None:
    """Subcutaneous fat everywhere in the body, muscle in the wall, inner fat in the cavity."""
    grid, anat, labels = canvas.grid, canvas.anat, canvas.labels
    outer, core = _body_masks(grid, anat)
    cavity = _cavity_mask(grid, anat)
    labels[outer] = _scheme().lookup("subcutaneous_fat")
    labels[core] = _scheme().lookup("muscle")
    labels[cavity & core] = _scheme().lookup("inner_fat")
    band = np.abs(grid.z[None, None, :] - canvas.diaphragm[:, :, None]) <= 3.0
    labels[band & cavity & core] = _scheme().lookup("muscle")


def _paint_lungs(canvas: _Canvas) -> None:
    """Both lungs fill the thoracic cavity beside the mediastinum; fissures split the lobes."""
    grid, anat = canvas.grid, canvas.anat
    box = grid.box((-400, -400, 150), (400, 400, 480))
    if box is None:
        return
    x, y, z = grid.coords(box)
    midline = -5.0 + anat.rng.normal(0, 2)
    half_width = np.interp(z, [150, 300, 400, 480], [24, 22, 16, 14])
    spine = (np.abs(x) < 38) & (y < anat.spine_at(z) + 22)
    lung = (np.abs(x - midline) > half_width) & ~spine & canvas.above_diaphragm(box)
    lung &= canvas.labels[box] == _scheme().lookup("inner_fat")
    oblique = 305.0 + anat.rng.normal(0, 8) - 0.9 * y   # fissure height; lower lobe below it
    horizontal = 300.0 + anat.rng.normal(0, 8)
    right, left = lung & (x > midline), lung & (x < midline)
    lower = z < oblique
    pieces = {
        "lung_lower_lobe_left": left & lower, "lung_upper_lobe_left": left & ~lower,
        "lung_lower_lobe_right": right & lower, "lung_middle_lobe_right": right & ~lower & (z < horizontal),
        "lung_upper_lobe_right": right & ~lower & (z >= horizontal)}
    for name, mask in pieces.items():
        canvas.paint(name, [(box, mask)], _over("soft"))


def _bowel_field(grid: _Grid, box, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field (~unit variance) whose upper level sets look like bowel loops."""
    x, y, z = grid.coords(box)
    field_ = 0.0
    for _ in range(6):
        direction = rng.normal(size=3)
        k = 2 * np.pi / rng.uniform(55, 80) * direction / np.linalg.norm(direction)
        field_ = field_ + np.cos(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi))
    return field_ / np.sqrt(3.0)


def _paint_intestine(canvas: _Canvas) -> None:
    """Small-bowel loops in the abdominal cavity (fewer with more visceral fat) and the colon frame."""
    anat, grid = canvas.anat, canvas.grid
    box = grid.box((-200, -120, -110), (200, 200, 175))
    if box is not None:
        threshold = -0.6 + 0.8 * anat.visceral
        loops = _bowel_field(grid, box, anat.rng) > threshold
        x, y, z = grid.coords(box)
        loops &= y > anat.spine_at(z) + 20
        canvas.paint("intestine", [(box, loops)], _over("soft"), canvas.below_diaphragm)
    rectum_y = anat.spine_at(-100.0) + 30
    colon = [(85, 0, -40), (88, 10, 130), (60, 60, 140), (0, 70, 118), (-60, 60, 140), (-85, 10, 170),
             (-85, -5, 40), (-75, 0, -50), (-40, 25, -75), (0, rectum_y + 10, -90), (0, rectum_y, -120),
             (0, -15, -150)]
    radii = [22, 22, 20, 20, 20, 20, 20, 20, 18, 18, 17, 15]
    canvas.tube("intestine", colon, radii, over=_over("soft"), region=canvas.below_diaphragm)


def _paint_abdomen(canvas: _Canvas) -> None:
    """Solid and hollow abdominal organs below the diaphragm."""
    c, below, anat = canvas, canvas.below_diaphragm, canvas.anat
    liver_over = _over("organ")
    c.ellipsoid("liver", (60, 0, 215), (85, 80, 75), (0, 0, 10), over=liver_over, region=below)
    c.ellipsoid("liver", (-25, 40, 235), (60, 38, 35), (0, 0, -10), over=liver_over, region=below)
    spleen = anat.factor(0.8, 1.25)
    c.ellipsoid("spleen", (-90, -42, 228), np.array([22, 50, 45]) * spleen, (0, 10, 30), region=below)
    c.ellipsoid("stomach", (-55, -2, 240), (35, 33, 35), region=below)
    c.tube("stomach", [(-55, 5, 235), (-50, 30, 190), (-25, 50, 162), (10, 45, 160), (30, 35, 165)],
           [33, 30, 24, 18, 12], over=_over("organ"), region=below)
    organs = _over("organ") | _lut(_ids("liver", "stomach", "spleen"))
    for sign, side in _sides():
        height = 115.0 if side == "right" else 133.0
        c.ellipsoid(f"kidney_{side}", (sign * 75, -30, height), (28, 22, 55), (0, sign * 12, sign * -30), over=organs)
        c.ellipsoid(f"adrenal_gland_{side}", (sign * 45, -20, height + 68), (14, 5, 18), (0, 0, sign * 30),
                    over=organs, sd=2.0)
    c.ellipsoid("gallbladder", (50, 50, 150), (14, 16, 32), (30, 0, 0), over=organs, region=below)
    c.tube("pancreas", [(45, 15, 125), (25, 15, 140), (0, 20, 150), (-40, 5, 160), (-75, -15, 180)],
           [16, 14, 12, 11, 10], over=organs, region=below)
    c.tube("duodenum", [(30, 35, 165), (50, 20, 160), (58, 10, 125), (50, 10, 95), (10, 15, 88),
                        (-25, 15, 100), (-35, 20, 125)], 12, over=organs, region=below)


def _paint_pelvis(canvas: _Canvas) -> None:
    fill = canvas.anat.factor(0.7, 1.3)
    canvas.ellipsoid("urinary_bladder", (0, 38, -88), np.array([42, 35, 33]) * fill, over=_over("organ"))
    canvas.ellipsoid("prostate", (0, 32, -140), (18, 14, 16), over=_over("organ"), sd=2.0)


def _paint_thorax(canvas: _Canvas) -> None:
    """Heart, left atrial appendage, airway, oesophagus and thyroid."""
    c, above = canvas, canvas.above_diaphragm
    c.ellipsoid("heart", (-18, 40, 300), (62, 45, 50), (0, 20, -35), over=_over("thorax"), region=above)
    c.ellipsoid("atrial_appendage_left", (-52, 25, 332), (14, 10, 12), over=_over("thorax"), sd=2.0)
    airway = _over("thorax") | _lut(_ids("esophagus"))
    c.tube("trachea", [(0, 12, 620), (0, 8, 470), (0, -2, 420), (0, -10, 375)], 9, over=airway)
    for end in ((28, -15, 352), (-35, -15, 348)):
        c.tube("trachea", [(0, -10, 378), end], 6, over=airway, sd=0.0)
    spine = canvas.anat.spine_at
    esophagus = [(2, spine(620) + 20, 620), (2, spine(470) + 22, 470), (4, spine(380) + 26, 380),
                 (4, spine(300) + 30, 300), (-10, -12, 262), (-30, -2, 245), (-45, 3, 235)]
    c.tube("esophagus", esophagus, 8, over=_over("thorax"), sd=1.0)
    for sign in (1.0, -1.0):
        c.ellipsoid("thyroid_gland", (sign * 19, 8, 490), (8, 9, 21), over=_over("soft"), sd=1.0)
    c.tube("thyroid_gland", [(19, 14, 482), (0, 22, 479), (-19, 14, 482)], 5, over=_over("soft"), sd=0.5)


def _paint_muscles(canvas: _Canvas) -> None:
    """Iliopsoas, gluteal and autochthonous back muscles (they only replace soft tissue)."""
    c, spine, over = canvas, canvas.anat.spine_at, _over("muscle")
    for sign, side in _sides():
        psoas = [(sign * 25, spine(190) + 5, 190), (sign * 40, spine(100) + 5, 100),
                 (sign * 52, spine(20) + 10, 20), (sign * 70, 5, -50), (sign * 78, 35, -95),
                 (sign * 105, 25, -140)]
        c.tube(f"iliopsoas_{side}", psoas, [10, 16, 24, 28, 20, 14], over=over)
        c.ellipsoid(f"gluteus_maximus_{side}", (sign * 80, -85, -110), (70, 32, 85), (0, sign * 25, 0), over=over)
        normal = np.array([math.cos(math.radians(38)) * sign, -math.sin(math.radians(38)), 0.0])
        ilium = np.array([sign * 82, -18, 10.0])
        angles = (0, 0, -sign * 38)
        c.ellipsoid(f"gluteus_minimus_{side}", ilium + 13 * normal + (0, 0, -20), (9, 42, 38), angles,
                    over=over, sd=2.0)  # deepest, so painted first
        c.ellipsoid(f"gluteus_medius_{side}", ilium + 26 * normal, (16, 58, 55), angles, over=over)
        heights = np.array([620, 460, 300, 150, 40, -40])
        back = [(sign * 30, spine(h) - 38, h) for h in heights]
        c.tube(f"autochthon_{side}", back, [14, 18, 20, 24, 26, 16], over=over)


def _paint_vessels(canvas: _Canvas) -> None:
    """Aorta and its branches, caval, portal, iliac and pulmonary veins as tubes (mm radii)."""
    c, spine = canvas, canvas.anat.spine_at
    descending = [(-22 + 0.05 * (360 - h), spine(h) + 30, h) for h in (360, 300, 230, 170, 110, 45)]
    c.tube("aorta", [(8, 35, 330), (5, 28, 385), (-8, 10, 405), (-20, -15, 395), *descending],
           [14, 14, 13, 12, 12, 12, 11, 11, 10, 10], sd=1.0)
    c.tube("inferior_vena_cava", [(14, spine(40) + 27, 40), (22, spine(120) + 28, 120),
                                  (25, spine(180) + 32, 180), (28, -5, 230), (20, 15, 265), (18, 25, 282)], 11)
    c.tube("portal_vein_and_splenic_vein", [(45, 5, 195), (20, 10, 165), (0, 8, 150), (-40, -5, 160),
                                            (-80, -25, 190)], 7)
    c.tube("superior_vena_cava", [(22, 30, 310), (25, 32, 360), (25, 32, 400)], 10)
    c.tube("brachiocephalic_vein_right", [(25, 32, 398), (38, 25, 440), (45, 15, 470)], 7)
    c.tube("brachiocephalic_vein_left", [(25, 32, 398), (-10, 38, 412), (-45, 25, 440), (-55, 15, 465)], 7)
    c.tube("brachiocephalic_trunk", [(0, 18, 403), (12, 15, 425), (18, 12, 440)], 7, sd=0.5)
    c.tube("subclavian_artery_right", [(18, 12, 440), (50, 5, 446), (100, -5, 428), (135, -10, 412)], 5, sd=0.5)
    c.tube("common_carotid_artery_right", [(18, 12, 440), (30, 0, 475), (33, -6, 620)], 4.5, sd=0.5)
    c.tube("common_carotid_artery_left", [(-8, 12, 406), (-24, 4, 450), (-31, 0, 475), (-33, -6, 620)], 4.5,
           sd=0.5)
    c.tube("subclavian_artery_left", [(-18, -2, 402), (-35, -5, 438), (-70, -5, 442), (-100, -5, 428),
                                      (-135, -10, 412)], 5, sd=0.5)
    for sign, side in _sides():
        c.tube(f"iliac_vena_{side}", [(12, spine(40) + 24, 40), (sign * 38, spine(-10) + 26, -20),
                                      (sign * 55, 20, -70), (sign * 66, 44, -112)], 8)
        c.tube(f"iliac_artery_{side}", [(-8, spine(45) + 30, 45), (sign * 40, spine(-10) + 34, -15),
                                        (sign * 62, 28, -68), (sign * 78, 50, -110)], 6.5)
        for height in (318, 288):
            c.tube("pulmonary_vein", [(-5, 12, 300), (sign * 30, 0, height), (sign * 62, -8, height)], 5.5, sd=1.0)


def _rib_path(anat: _Anatomy, level_z: float, number: int, sign: float):
    """Centre line of rib ``number`` (1..12) on one side and the fraction that is cartilage."""
    end = {11: 0.55, 12: 0.45}.get(number, 0.97 if number <= 7 else 0.85)
    theta = np.linspace(0.06, end, 10) * np.pi
    z = level_z - (25 + 4 * number) * theta / np.pi
    a, b, c = _torso_profile(z, anat, grow=-17.0)
    p = _TORSO_POWER
    x = sign * np.maximum(a * np.sin(theta) ** (2 / p), 10)
    y = c - b * np.sign(np.cos(theta)) * np.abs(np.cos(theta)) ** (2 / p)
    if number <= 7:
        x[-1] = sign * 18
    return np.column_stack([x, y, z]), (0.75 if number <= 10 else 1.0)


def _paint_thoracic_cage(canvas: _Canvas, levels) -> None:
    """Ribs (bone_other), costal cartilages and the sternum."""
    over = _over("bone")
    for name, z0, z1, *_ in levels:
        if not name.startswith("T"):
            continue
        number = int(name[1:])
        for sign, _side in _sides():
            path, bony = _rib_path(canvas.anat, 0.5 * (z0 + z1), number, sign)
            split = max(2, int(round(bony * (len(path) - 1))))
            canvas.tube("bone_other", path[:split + 1], 5.0, over=over, sd=0.0)
            if split < len(path) - 1:
                canvas.tube("costal_cartilages", path[split:], 5.0, over=over, sd=0.0)
    top, bottom = 432.0, 262.0
    _, b_top, c_top = _torso_profile(np.array([top]), canvas.anat)
    _, b_bot, c_bot = _torso_profile(np.array([bottom]), canvas.anat)
    front = np.array([(0, c_top[0] + b_top[0] - 16, top), (0, c_bot[0] + b_bot[0] - 16, bottom)])
    for (p0, p1), half_width in (((front[0], 0.8 * front[0] + 0.2 * front[1]), 26),
                                 ((0.8 * front[0] + 0.2 * front[1], front[1]), 15)):
        center = 0.5 * (p0 + p1)
        tilt = math.degrees(math.atan2(p1[1] - p0[1], p0[2] - p1[2]))
        canvas.ellipsoid("sternum", center, (half_width, 7, 0.5 * abs(p0[2] - p1[2]) + 12), (tilt, 0, 0),
                         over=over, sd=1.0, power=3.0)


def _paint_limb_bones(canvas: _Canvas) -> None:
    """Shoulder girdle, humeri, forearm bones, femurs and lower-leg bones."""
    c, over = canvas, _over("bone")
    paths = [limb[0] for limb in _limb_paths(canvas.anat)]  # right arm, right leg, left arm, left leg
    _, depth, centre = _torso_profile(np.array([425.0]), canvas.anat)
    front_y = float(centre[0] + depth[0])  # anterior muscle-wall surface at the sternal notch
    for (sign, side), arm, leg in zip(_sides(), paths[0::2], paths[1::2]):
        shoulder = arm[0]
        clavicle = [(sign * 18, front_y - 12, 428), (sign * 70, front_y - 26, 434), (sign * 130, 0, 436),
                    (sign * 148, -12, 430)]
        c.tube(f"clavicula_{side}", clavicle, 7, over=over, sd=1.0)
        c.ellipsoid(f"scapula_{side}", (sign * 88, -82, 350), (48, 6, 72), (0, 0, sign * 28), over=over,
                    sd=2.0, power=3.0)
        c.tube(f"scapula_{side}", [(sign * 118, -62, 395), shoulder + (-sign * 22, -8, -4)], 10, over=over, sd=0.0)
        c.ellipsoid(f"humerus_{side}", shoulder + (-sign * 4, 0, -6), (22, 22, 22), over=over, sd=0.5)
        c.tube(f"humerus_{side}", [shoulder + (0, 0, -10), arm[1] + (0, 0, 15)], [11, 12], over=over, sd=0.0)
        c.ellipsoid(f"humerus_{side}", arm[1] + (0, 0, 12), (20, 13, 14), over=over, sd=0.5)
        for offset in (-9.0, 9.0):
            c.tube("bone_other", [arm[1] + (0, offset, 0), arm[2] + (0, offset, 0), arm[3]], [7, 6, 8],
                   over=over, sd=0.0)
        head = (sign * 88, 5, -95)
        c.ellipsoid(f"femur_{side}", head, (23, 23, 23), over=over, sd=1.0)
        c.tube(f"femur_{side}", [head, (sign * 135, -5, -115)], 14, over=over, sd=0.0)
        c.ellipsoid(f"femur_{side}", (sign * 138, -10, -112), (18, 22, 28), over=over, sd=1.0)
        knee = leg[2]
        c.tube(f"femur_{side}", [(sign * 130, 0, -125), (sign * 108, 4, -300), knee + (0, 5, 20)], [15, 14, 14],
               over=over, sd=0.0)
        c.ellipsoid(f"femur_{side}", knee + (0, 0, 5), (38, 30, 22), over=over, sd=1.0)
        c.ellipsoid("bone_other", knee + (0, 2, -32), (35, 28, 14), over=over, sd=1.0)
        c.tube("bone_other", [knee + (0, 2, -40), leg[4] + (0, 8, 20)], 14, over=over, sd=0.0)
        c.tube("bone_other", [knee + (sign * 30, -12, -45), leg[4] + (sign * 25, -5, 20)], 6, over=over, sd=0.0)


def _paint_pelvic_bones(canvas: _Canvas) -> None:
    """Hip bones (ilium wing, acetabulum, pubis, ischium) and the sacrum."""
    c, spine, over = canvas, canvas.anat.spine_at, _over("bone")
    for sign, side in _sides():
        name = f"hip_{side}"
        c.ellipsoid(name, (sign * 82, -18, 10), (8, 62, 62), (0, sign * 8, -sign * 38), over=over, sd=2.0)
        c.ellipsoid(name, (sign * 55, -52, 0), (14, 22, 45), (0, 0, -sign * 30), over=over, sd=1.0)
        c.ellipsoid(name, (sign * 72, 3, -86), (24, 30, 32), over=over, sd=1.0)
        c.tube(name, [(sign * 82, -16, -15), (sign * 74, 0, -75)], 17, over=over, sd=0.5)  # ilium body
        c.tube(name, [(sign * 75, 25, -100), (sign * 30, 55, -118), (sign * 10, 60, -122)], [10, 10, 8], over=over,
               sd=0.5)
        c.tube(name, [(sign * 80, -5, -100), (sign * 62, -25, -150)], 14, over=over, sd=0.5)
        c.tube(name, [(sign * 62, -25, -150), (sign * 20, 35, -145), (sign * 10, 55, -132)], 8, over=over, sd=0.5)
    for z, radii in ((-22.0, (45, 20, 28)), (-62.0, (30, 16, 25)), (-98.0, (14, 11, 19))):
        c.ellipsoid("sacrum", (0, spine(z) - 4, z), radii, over=over, sd=1.0)


# Vertebral levels from L5 up: name prefix, count, body height, disc height, body half-width and
# half-depth, spinal canal radius (template mm).
_SPINE_SEGMENTS = (("L", 5, 27.0, 9.0, 25.0, 17.0, 10.0), ("T", 12, 19.0, 4.5, 18.0, 15.0, 8.0),
                   ("C", 7, 12.0, 4.0, 11.0, 8.0, 9.0))


def _vertebral_levels():
    """[(name, z_bottom, z_top, half_width, half_depth, canal_radius)] from L5 upwards (template mm)."""
    levels, z = [], 0.0
    for prefix, count, height, disc, rx, ry, canal in _SPINE_SEGMENTS:
        numbers = range(count, 0, -1)
        for number in numbers:
            z += disc * 0.8
            levels.append((f"{prefix}{number}", z, z + height, rx, ry, canal))
            z += height + disc * 0.2
    return levels


def _canal_y(anat: _Anatomy, z, ry, canal) -> np.ndarray:
    return anat.spine_at(z) - ry - canal - 1.0


def _paint_vertebra(canvas: _Canvas, level, next_level) -> None:
    """Body (elliptic cylinder), disc above it, and posterior elements of one vertebra."""
    name, z0, z1, rx, ry, canal = level
    anat, grid, over, mid = canvas.anat, canvas.grid, _over("bone"), 0.5 * (z0 + z1)
    y_body, y_canal = float(anat.spine_at(mid)), float(_canal_y(anat, mid, ry, canal))
    body = _ellipsoid(grid, (0, y_body, mid), (rx, ry, 0.5 * (z1 - z0)), power=6.0)
    canvas.paint("vertebra_body", body, over)
    if next_level is not None:
        top = next_level[1]
        disc = _ellipsoid(grid, (0, float(anat.spine_at(0.5 * (z1 + top))), 0.5 * (z1 + top)),
                          (rx * 0.95, ry * 0.95, 0.5 * (top - z1)), power=6.0)
        canvas.paint("IVD", disc, over)
    half = 0.5 * (z1 - z0) * 0.8
    arch = _tube(grid, [(0, y_canal, mid - half), (0, y_canal, mid + half)], canal + 6.0, smooth=False)
    arch = [(box, mask & (grid.coords(box)[1] < y_canal + 0.5 * canal)) for box, mask in arch]
    spinous_length = 26.0 if name[0] != "C" else 14.0
    transverse = 2.2 * rx if name[0] != "C" else 2.0 * rx
    pieces = arch + _ellipsoid(grid, (0, y_canal - canal - 0.5 * spinous_length, mid - 4),
                               (4, 0.5 * spinous_length, half), power=3.0)
    pieces += _ellipsoid(grid, (0, y_canal + 2, mid), (transverse, 5, 0.7 * half), power=3.0)
    canvas.paint("vertebra_posterior_elements", pieces, over)


def _paint_spine(canvas: _Canvas, levels) -> None:
    """Vertebrae, discs, the spinal canal (down into the sacrum) and the cord (ending at L1/L2)."""
    for level, next_level in zip(levels, [*levels[1:], None]):
        _paint_vertebra(canvas, level, next_level)
    heights = np.array([-70.0, -20.0, 10.0, 80.0, 150.0, 250.0, 400.0, 470.0, 620.0])
    ry = np.interp(heights, [0, 180, 460], [17.0, 15.0, 8.0])
    canal = np.interp(heights, [-70, 0, 180, 300, 460, 620], [6.0, 10.0, 8.0, 7.5, 9.0, 9.0])
    centre = np.column_stack([np.zeros_like(heights), _canal_y(canvas.anat, heights, ry, canal), heights])
    canvas.paint("spinal_channel", _tube(canvas.grid, centre, canal), _over("bone"))
    cord = centre[heights >= 150]
    cord_top = np.array([[0.0, cord[0, 1], 135.0]])
    canvas.paint("spinal_cord", _tube(canvas.grid, np.vstack([cord_top, cord]), 5.0), _over("bone"))


def _paint_all(canvas: _Canvas) -> None:
    """Paint every structure; later steps overwrite earlier ones only where ``_over`` allows."""
    levels = _vertebral_levels()
    _paint_body(canvas)
    _paint_lungs(canvas)
    _paint_intestine(canvas)
    _paint_abdomen(canvas)
    _paint_pelvis(canvas)
    _paint_thorax(canvas)
    _paint_muscles(canvas)
    _paint_vessels(canvas)
    _paint_thoracic_cage(canvas, levels)
    _paint_pelvic_bones(canvas)
    _paint_limb_bones(canvas)  # after the hips: the femoral heads sit in the acetabula
    _paint_spine(canvas, levels)


# ----------------------------------------------------------------------------- MRI contrasts

# (water, fat) signal per tissue, arbitrary units (subcutaneous fat ~ 0.9 in the fat image).
# Keys are label names or name prefixes; the first matching entry wins.
_TISSUE_SIGNAL = (
    ("subcutaneous_fat", 0.06, 0.90), ("inner_fat", 0.08, 0.82), ("muscle", 0.55, 0.05),
    ("autochthon", 0.53, 0.08), ("gluteus", 0.54, 0.07), ("iliopsoas", 0.56, 0.05),
    ("liver", 0.62, 0.06), ("spleen", 0.78, 0.02), ("kidney", 0.80, 0.02), ("gallbladder", 0.33, 0.01),
    ("stomach", 0.40, 0.08), ("pancreas", 0.58, 0.12), ("adrenal", 0.50, 0.10), ("lung", 0.06, 0.01),
    ("esophagus", 0.45, 0.04), ("trachea", 0.02, 0.00), ("thyroid", 0.70, 0.03), ("intestine", 0.42, 0.10),
    ("duodenum", 0.46, 0.06), ("urinary_bladder", 0.26, 0.00), ("prostate", 0.52, 0.02), ("heart", 0.48, 0.02),
    ("atrial_appendage", 0.44, 0.02), ("aorta", 0.40, 0.01), ("vertebra_body", 0.28, 0.45),
    ("vertebra_posterior", 0.20, 0.55), ("IVD", 0.62, 0.01), ("spinal_cord", 0.50, 0.01),
    ("spinal_channel", 0.24, 0.00), ("costal_cartilages", 0.42, 0.05), ("sternum", 0.22, 0.58),
    ("sacrum", 0.20, 0.60), ("", 0.36, 0.01),
)
_BONES = ("humerus", "scapula", "clavicula", "femur", "hip", "bone_other")


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


# ----------------------------------------------------------------------------- public API


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
        from .io import Image

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


# ----------------------------------------------------------------------------- label corruptions


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask``'s voxels, grown by ``margin`` (clipped)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _fill_removed(labels: np.ndarray, removed: np.ndarray) -> None:
    """Give removed voxels the label of the nearest body-composition voxel (65-67), in place.

    Removed voxels thus become the surrounding subcutaneous fat, muscle or inner fat rather than
    background; without any body-composition voxel nearby they become inner fat.
    """
    if not removed.any():
        return
    box = _bounding_box(removed, margin=6)
    view, hole = labels[box], removed[box]
    tissue = np.isin(view, _ids(*BODY_COMPOSITION)) & ~hole
    if not tissue.any():
        view[hole] = _scheme().lookup("inner_fat")
        return
    indices = ndimage.distance_transform_edt(~tissue, return_distances=False, return_indices=True)
    nearest = view[tuple(indices)]
    view[hole] = nearest[hole]


def _truncation(labels, label, rng):
    """Cut the part of the structure beyond a plane normal to one array axis."""
    mask = labels == label
    box = _bounding_box(mask)
    coordinates = [c + b.start for c, b in zip(np.nonzero(mask[box]), box)]
    axes = [a for a in range(3) if coordinates[a].min() < coordinates[a].max()]
    axis = int(rng.choice(axes))
    values = coordinates[axis]
    fraction = float(rng.uniform(0.25, 0.5))
    side = "high" if rng.random() < 0.5 else "low"
    if side == "high":
        cut = int(np.clip(np.ceil(np.quantile(values, 1.0 - fraction)), values.min() + 1, values.max()))
        removed_index = np.arange(labels.shape[axis]) >= cut
    else:
        cut = int(np.clip(np.floor(np.quantile(values, fraction)), values.min(), values.max() - 1))
        removed_index = np.arange(labels.shape[axis]) <= cut
    shape = [1, 1, 1]
    shape[axis] = -1
    _fill_removed(labels, mask & removed_index.reshape(shape))
    return {"axis": axis, "side": side, "cut_index": cut, "fraction": round(fraction, 3)}


def _swap(labels, label, rng):
    """Exchange the labels of a structure and its other-side partner."""
    partner = partner_of(label)
    mask, partner_mask = labels == label, labels == partner
    labels[mask], labels[partner_mask] = partner, label
    return {"partner": int(partner), "partner_name": _scheme().name_of(partner)}


def _neighbour(labels: np.ndarray, label: int) -> int | None:
    """Most frequent label touching the structure, organs before body composition; None if none."""
    mask = labels == label
    box = _bounding_box(mask, margin=1)
    shell = ndimage.binary_dilation(mask[box]) & ~mask[box]
    values, counts = np.unique(labels[box][shell], return_counts=True)
    keep = values != 0
    values, counts = values[keep], counts[keep]
    if values.size == 0:
        return None
    tissue = np.isin(values, _ids(*BODY_COMPOSITION))
    if (~tissue).any():
        values, counts = values[~tissue], counts[~tissue]
    return int(values[np.argmax(counts)])


def _merge(labels, label, rng):
    """Relabel the whole structure as the neighbour it touches most."""
    into = _neighbour(labels, label)
    labels[labels == label] = into
    return {"into": into, "into_name": _scheme().name_of(into)}


def _dilation(labels, label, rng):
    """Grow the structure by 1-2 voxels into its surroundings (never out of the body)."""
    iterations = int(rng.integers(1, 3))
    mask = labels == label
    box = _bounding_box(mask, margin=iterations)
    grown = ndimage.binary_dilation(mask[box], iterations=iterations) & (labels[box] != 0)
    labels[box][grown] = label
    return {"iterations": iterations}


def _erosion(labels, label, rng):
    """Shrink the structure by 1-2 voxels (1 where 2 would remove it)."""
    mask = labels == label
    box = _bounding_box(mask, margin=1)
    iterations = int(rng.integers(1, 3))
    eroded = ndimage.binary_erosion(mask[box], iterations=iterations)
    if not eroded.any():
        iterations = 1
        eroded = ndimage.binary_erosion(mask[box], iterations=1)
    removed = np.zeros_like(mask)
    removed[box] = mask[box] & ~eroded
    _fill_removed(labels, removed)
    return {"iterations": iterations}


def _dropped_slices(labels, label, rng):
    """Remove the structure from a random 15-35 % of the axial slices (axis 2) it occupies."""
    mask = labels == label
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    count = int(np.clip(round(rng.uniform(0.15, 0.35) * slices.size), 1, slices.size - 1))
    dropped = np.sort(rng.choice(slices, size=count, replace=False))
    removed = np.zeros_like(mask)
    removed[:, :, dropped] = mask[:, :, dropped]
    _fill_removed(labels, removed)
    return {"axis": 2, "slices": [int(k) for k in dropped]}


def _ball_at(shape, center, radius: int):
    """(box, mask) of the voxels within ``radius`` voxels of ``center``, clipped to ``shape``."""
    box = tuple(slice(max(c - radius, 0), min(c + radius + 1, n)) for c, n in zip(center, shape))
    offsets = np.ogrid[box]
    return box, sum((o - c) ** 2 for o, c in zip(offsets, center)) <= radius * radius


def _holes(labels, label, rng):
    """Punch 1-3 balls (radius 1-2 voxels) out of the structure's interior."""
    mask = labels == label
    radius = int(rng.integers(1, 3))
    box = _bounding_box(mask, margin=1)
    interior = ndimage.binary_erosion(mask[box], iterations=radius)
    if not interior.any():
        radius, interior = 1, ndimage.binary_erosion(mask[box])
    points = np.argwhere(interior) + [b.start for b in box]
    centers = points[rng.choice(len(points), size=min(int(rng.integers(1, 4)), len(points)), replace=False)]
    removed = np.zeros_like(mask)
    for center in centers:
        box, ball = _ball_at(mask.shape, center, radius)
        removed[box] |= ball
    removed &= mask
    _fill_removed(labels, removed)
    return {"centers": centers.tolist(), "radius_vox": radius}


def _spurious_blob(labels, label, rng):
    """Add a disconnected ball (radius 1-3 voxels) of the label in body tissue away from the structure."""
    radius = int(rng.integers(1, 4))
    mask = labels == label
    keep_out = np.zeros_like(mask)
    keep_out[_bounding_box(mask, margin=radius + 2)] = True
    tissue = np.isin(labels, _ids("muscle", "inner_fat")) & ~keep_out
    if not tissue.any():
        tissue = np.isin(labels, _ids(*BODY_COMPOSITION)) & ~keep_out
    center = [int(c) for c in np.unravel_index(rng.choice(np.flatnonzero(tissue)), labels.shape)]
    box, ball = _ball_at(labels.shape, center, radius)
    blob = ball & np.isin(labels[box], _ids(*BODY_COMPOSITION))
    labels[box][blob] = label
    return {"center": [int(c) for c in center], "radius_vox": radius, "voxels_added": int(blob.sum())}


_CORRUPTORS: dict[str, Callable] = {
    "truncation": _truncation, "swap": _swap, "merge": _merge, "dilation": _dilation,
    "erosion": _erosion, "dropped_slices": _dropped_slices, "holes": _holes, "spurious_blob": _spurious_blob,
}


def _padded(box: tuple[slice, ...], shape, margin: int = 1) -> tuple[slice, ...]:
    return tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n)) for b, n in zip(box, shape))


def _eligible(labels: np.ndarray, label: int, kind: str, used: set[int], box) -> bool:
    """Whether ``kind`` can be applied to ``label`` (whose bounding box is ``box``, None if absent)."""
    if box is None:
        return False
    mask = labels[_padded(box, labels.shape)] == label
    if int(mask.sum()) < 2:
        return False
    if kind == "swap":
        partner = partner_of(label)
        return partner is not None and partner not in used and bool((labels == partner).any())
    if kind == "merge":
        return _neighbour(labels, label) is not None
    if kind == "truncation":
        return any(b.stop - b.start > 1 for b in box)
    if kind == "dropped_slices":
        return box[2].stop - box[2].start >= 2
    if kind in ("erosion", "holes"):
        return bool(ndimage.binary_erosion(mask).any())
    return True


def _check_corruption_args(labels, n_corruptions, kinds, structures) -> tuple[np.ndarray, tuple, list[int]]:
    array = np.asarray(labels)
    if array.ndim != 3:
        raise ValueError(f"labels must be a 3D (X, Y, Z) label map, got shape {array.shape}")
    _scheme().validate_labelmap(array, source="labels")
    if isinstance(n_corruptions, bool) or not isinstance(n_corruptions, (int, np.integer)) or n_corruptions < 0:
        raise ValueError(f"n_corruptions must be an integer >= 0, got {n_corruptions!r}")
    kinds = CORRUPTION_KINDS if kinds is None else tuple([kinds] if isinstance(kinds, str) else kinds)
    unknown = [k for k in kinds if k not in CORRUPTION_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown corruption kinds {unknown or kinds!r}; choose from {', '.join(CORRUPTION_KINDS)}")
    if structures is None:
        excluded = set(_ids(*BODY_COMPOSITION))
        candidates = [i for i in _scheme().indices if i not in excluded]
    else:
        candidates = sorted({_scheme().lookup(s) for s in ([structures] if isinstance(structures, (str, int)) else structures)})
    return array, kinds, candidates


def corrupt_labels(labels: np.ndarray, seed: int = 0, n_corruptions: int = 1, kinds: Sequence[str] | None = None,
                   structures: Sequence[str | int] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Plant controlled, recorded errors in a copy of a UKBOB label map.

    Each corruption picks a kind (uniformly from ``kinds``) and a structure present in the map that
    the kind applies to (swap needs a present left/right partner, erosion and holes an interior),
    never the same structure twice. Voxels a structure loses become the nearest body-composition
    label (subcutaneous fat, muscle or inner fat), not background.

    Args:
        labels: (X, Y, Z) integer label map in UKBOB numbering; not modified.
        seed: seeds the choices.
        n_corruptions: how many corruptions (>= 0).
        kinds: subset of :data:`CORRUPTION_KINDS` (default: all).
        structures: names or label values to choose from (default: every structure except the
            body-composition classes 65-67).

    Returns:
        (corrupted copy with the input's dtype, records). A record is ``{"label", "name", "kind",
        "params", "voxels_before", "voxels_after", "damaged"}``, the counts being voxels of
        ``label`` just before and after that corruption, ``damaged`` the other structures it
        made wrong (:func:`damaged_structures`: Dice below :data:`DAMAGE_DICE`, e.g. the
        neighbours a dilation overwrote). Kind parameters: truncation ``axis``, ``side``,
        ``cut_index``, ``fraction``; swap ``partner``, ``partner_name``; merge ``into``,
        ``into_name``; dilation/erosion ``iterations``; dropped_slices ``axis`` (2), ``slices``;
        holes ``centers`` (voxel indices), ``radius_vox``; spurious_blob ``center``,
        ``radius_vox``, ``voxels_added``.

    Raises:
        ValueError: not a 3D UKBOB label map, bad count, unknown kinds or structures, or fewer
            eligible structures than corruptions asked for.
    """
    array, kinds, candidates = _check_corruption_args(labels, n_corruptions, kinds, structures)
    rng = np.random.default_rng(seed)
    out, records, used = array.copy(), [], set()
    for _ in range(int(n_corruptions)):
        kind = kinds[int(rng.integers(len(kinds)))]
        boxes = ndimage.find_objects(out)
        box_of = lambda c: boxes[c - 1] if c - 1 < len(boxes) else None  # noqa: E731
        eligible = [c for c in candidates if c not in used and _eligible(out, c, kind, used, box_of(c))]
        if not eligible:
            raise ValueError(f"no structure left for a '{kind}' corruption (asked for {n_corruptions}; "
                             f"{len(used)} structures already corrupted)")
        label = int(eligible[int(rng.integers(len(eligible)))])
        before = int((out == label).sum())
        previous = out.copy()
        params = _CORRUPTORS[kind](out, label, rng)
        used.add(label)
        if kind == "swap":
            used.add(params["partner"])
        named = {label, params.get("partner")}
        records.append({"label": label, "name": _scheme().name_of(label), "kind": kind, "params": params,
                        "voxels_before": before, "voxels_after": int((out == label).sum()),
                        "damaged": [d for d in damaged_structures(previous, out) if d["label"] not in named]})
    return out, records


#: A structure a corruption changed is *damaged* (its label is wrong) below this Dice against the
#: map before the corruption: a dilation overwrites its neighbours, a blob or a merge covers parts
#: of others. The ablation counts damaged structures as corrupted (they are wrong labels).
DAMAGE_DICE = 0.9


def damaged_structures(before: np.ndarray, after: np.ndarray, max_dice: float = DAMAGE_DICE) -> list[dict]:
    """Structures (body-composition classes included) whose mask ``after`` has a Dice below
    ``max_dice`` against ``before``: ``[{"label", "name", "dice"}]``, by label."""
    changed = before != after
    values = np.unique(np.concatenate([before[changed], after[changed]]))
    damaged = []
    for value in (int(v) for v in values if v != 0):
        a, b = before == value, after == value
        dice = 2.0 * float(np.logical_and(a, b).sum()) / max(1.0, float(a.sum() + b.sum()))
        if dice < max_dice:
            damaged.append({"label": value, "name": _scheme().name_of(value), "dice": round(dice, 4)})
    return damaged


# ----------------------------------------------------------------------------- cohorts


def _dataset_json(n: int, size, seed: int, corrupt: bool) -> dict:
    """Decathlon-style dataset description of a phantom cohort."""
    scheme = _scheme()
    labels = {"0": "background", **{str(i): scheme[i].name for i in scheme.indices}}
    return {
        "name": "SwinBOB phantom",
        "description": (f"Procedural neck-to-knee Dixon phantoms (size {size!r}, seeds {seed}..{seed + n - 1}), "
                        "UKBOB label numbering" + ("; labelsTr partly corrupted, see corruptions/" if corrupt else "")),
        "reference": "SwinBOBLib.phantom",
        "licence": "CC0",
        "tensorImageSize": "4D",
        "modality": {str(i): name for i, name in enumerate(CHANNEL_NAMES)},
        "labels": labels,
        "numTraining": n,
        "numTest": 0,
        "training": [{"image": f"./imagesTr/case_{i:04d}.nii.gz", "label": f"./labelsTr/case_{i:04d}.nii.gz"}
                     for i in range(n)],
        "test": [],
    }


def _check_cohort_args(n, size, corrupt_fraction) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    resolve_size(size)
    if not isinstance(corrupt_fraction, (int, float, np.number)) or not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"corrupt_fraction must lie in [0, 1], got {corrupt_fraction!r}")


def _write_json(data, path: Path) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_cohort(output_dir, n: int = 1, size="tiny", seed: int = 0, corrupt: bool = False,
                 corrupt_fraction: float = 0.3, progress: Callable[[int, int], None] | None = None,
                 n_corruptions: int = 1, balanced_kinds: bool = False) -> dict:
    """Write ``n`` phantoms as a Decathlon-style dataset folder.

    Layout: ``imagesTr/case_0000.nii.gz`` (X, Y, Z, 4 float32 Dixon), ``labelsTr/case_0000.nii.gz``
    (uint8 UKBOB labels) and ``dataset.json``. With ``corrupt``, ``round(corrupt_fraction * n)``
    cases (at least one when the fraction is > 0) get ``n_corruptions`` planted errors in
    ``labelsTr``; every case then also has ``labelsClean/`` (true labels) and
    ``corruptions/case_XXXX.json`` (the records of :func:`corrupt_labels`, [] if uncorrupted).
    Case ``i`` uses seed ``seed + i``; files are written atomically.

    Args:
        output_dir: dataset folder (created).
        n: number of cases (>= 1).
        size: as :func:`make_phantom`.
        seed: seed of case 0; also chooses which cases are corrupted.
        corrupt: plant label corruptions.
        corrupt_fraction: share of cases to corrupt, 0..1.
        progress: called as ``progress(done, total)`` after each case.
        n_corruptions: corruptions per corrupted case.
        balanced_kinds: the j-th corrupted case's corruptions take the kinds of
            :data:`CORRUPTION_KINDS` in turn (j, j+1, ...), so every kind is planted about equally
            often; default: each kind drawn at random.

    Returns:
        ``{"output_dir": str, "cases": [case ids], "corrupted": [case ids], "dataset_json": str}``.

    Raises:
        ValueError: n < 1, unknown size, fraction outside [0, 1].
        FileExistsError: ``output_dir`` already holds a dataset (``dataset.json`` or its folders),
            which would be overwritten case by case.
    """
    from .io import Image, save_image, save_labelmap

    _check_cohort_args(n, size, corrupt_fraction)
    root = Path(output_dir)
    existing = [name for name in ("dataset.json", "imagesTr", "labelsTr", "labelsClean", "corruptions")
                if (root / name).exists()]
    if existing:
        raise FileExistsError(f"{root}: already holds a dataset ({', '.join(existing)}); refusing to overwrite "
                              "it, choose a new or empty folder")
    n_bad = 0 if not corrupt else min(n, max(int(round(corrupt_fraction * n)), int(corrupt_fraction > 0)))
    corrupted = set(np.random.default_rng([int(seed), 11]).permutation(n)[:n_bad].tolist())
    turn = {case: j * n_corruptions for j, case in enumerate(sorted(corrupted))}  # balanced_kinds: first kind
    cases = []
    for i in range(n):
        case = f"case_{i:04d}"
        phantom = make_phantom(size, seed + i)
        image = Image(phantom.image, phantom.affine, channel_names=CHANNEL_NAMES)
        save_image(image, root / "imagesTr" / f"{case}.nii.gz")
        labels, records = phantom.labels, []
        if corrupt:
            save_labelmap(phantom.labels, image, root / "labelsClean" / f"{case}.nii.gz")
            if i in corrupted:
                kinds = None
                if balanced_kinds:
                    kinds = sorted({CORRUPTION_KINDS[(turn[i] + k) % len(CORRUPTION_KINDS)] for k in range(n_corruptions)})
                labels, records = corrupt_labels(phantom.labels, seed=seed + i, n_corruptions=n_corruptions,
                                                 kinds=kinds)
            (root / "corruptions").mkdir(parents=True, exist_ok=True)
            _write_json(records, root / "corruptions" / f"{case}.json")
        save_labelmap(labels, image, root / "labelsTr" / f"{case}.nii.gz")
        cases.append(case)
        if progress is not None:
            progress(i + 1, n)
    _write_json(_dataset_json(n, size, seed, corrupt), root / "dataset.json")
    return {"output_dir": str(root), "cases": cases,
            "corrupted": [f"case_{i:04d}" for i in sorted(corrupted)], "dataset_json": str(root / "dataset.json")}
