"""Drawing primitives of the phantom: the voxel grid in template millimetres, rotated ellipsoids,
smooth tubes along paths, and the canvas that paints labels without overwriting what it must not.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.phantom.anatomy import _Anatomy


@functools.lru_cache(maxsize=1)
def _scheme():
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
