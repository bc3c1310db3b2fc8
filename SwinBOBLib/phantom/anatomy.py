"""The phantom's anatomy tables (template millimetres): body outline, fat profile, cavity, spine
centre line and segments, tissue signal of each Dixon channel; and the per-seed variation drawn
from them (:class:`_Anatomy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNEL_NAMES = ("water", "fat", "in_phase", "opposed_phase")


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


# Vertebral levels from L5 up: name prefix, count, body height, disc height, body half-width and
# half-depth, spinal canal radius (template mm).
_SPINE_SEGMENTS = (("L", 5, 27.0, 9.0, 25.0, 17.0, 10.0), ("T", 12, 19.0, 4.5, 18.0, 15.0, 8.0),
                   ("C", 7, 12.0, 4.0, 11.0, 8.0, 9.0))


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
