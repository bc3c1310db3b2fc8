"""Training images rendered from label maps: contrast-agnostic training in the manner of SynthSeg.

SynthSeg (Billot et al., Medical Image Analysis 2023) trains a segmentation network on images that
are *generated* on the fly from label maps, with every property of the image randomised: the
intensity of each structure, the bias field, the contrast curve, noise, blur and resolution, plus
the shape (affine and elastic deformation) and the field of view. The network never sees the same
contrast twice, so it learns anatomy and works on scans of a contrast it was never trained on.
``swinbob train --synthesis labels`` is this dataset mode; any folder of label maps (for example
TotalVibeSegmentator outputs of a cohort) is enough.

Generation labels and segmentation labels differ. A label map that leaves part of the body
unlabelled (CT organ maps have no fat or muscle classes) would render that part as one flat colour;
when the case has an image, :func:`generation_labels` splits the unlabelled body into
``tissue_classes`` intensity clusters (k-means of the image inside the body: fat, soft tissue, air,
bone on CT) that get their own random intensities. The label map does not say what those voxels
are, but it does say what they are not: a label map names every structure it contains, so its
unlabelled body is none of the structures it labels elsewhere. They are trained with a partial
label (:data:`PARTIAL`, ``unlabelled_body: partial``): the loss asks only that the network put
their probability on the structures the case does not contain (background, fat, muscle, organs
out of the field of view; :class:`AllowedChannelsd`), so a kidney or a liver cannot spread into
the fat around it unpunished (a marginal loss, as in partially-supervised multi-organ training:
Shi et al., Medical Image Analysis 2021). ``unlabelled_body: ignore`` leaves them out of the loss.

Arrays are channel-first on the RAS model grid: ``gen`` ``(1, X, Y, Z)`` int16 generation labels
(0 outside the body, 1..99 the scheme's label values, ``TISSUE_BASE + k`` tissue class k); the
transform chain outputs ``image`` ``(1, X, Y, Z)`` float32 normalised as inference normalises
(:func:`SwinBOBLib.inference.normalize_intensity`) and ``label`` ``(1, X, Y, Z)`` int64 channel
indices, :data:`IGNORE`-valued where the loss must not look and :data:`PARTIAL` on the unlabelled
body; ``allowed`` ``(C,)`` float32 marks the channels the unlabelled body may take. Only the per-label intensity sampling,
the anisotropic resolution loss and the field-of-view cut are ours; the rest are MONAI transforms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    EnsureTyped,
    MapTransform,
    OneOf,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    SpatialPadd,
)

from SwinBOBLib.inference.preprocess import normalize_intensity
from SwinBOBLib.labels.layouts import ChannelLayout, lateral_swap_table
from SwinBOBLib.labels.schemes import get_scheme

#: Label value that the training loss ignores (set in ``label`` after synthesis).
IGNORE = 255


#: Label value of the unlabelled body: any channel in the case's ``allowed`` vector, none other.
PARTIAL = 253


#: Generation label of tissue cluster k of the unlabelled body is ``TISSUE_BASE + k``.
TISSUE_BASE = 200


#: Generation label of voxels beyond the scan (crop padding): image 0 as sliding-window padding, ignored.
PAD = 254


#: Size of the per-sample intensity tables (every generation label value is below it).
_TABLE = 256


SYNTHESIS_MODES = ("off", "labels")


#: How crop centres are drawn: class-balanced over the structures present (each structure equally
#: often, the unlabelled body with ``body_crop_weight``; ``body_crop_fraction`` of the draws anywhere in the
#: body instead) or uniformly over the body (2:1 against air).
CROP_SAMPLING = ("structures", "body")


#: How the loss treats the unlabelled body (tissue classes): a partial label (any structure the case
#: does not contain) or not at all.
UNLABELLED_BODY = ("partial", "ignore")


@dataclass
class SynthesisConfig:
    """Randomisation ranges of :func:`synthesis_transforms`; lengths in voxels of the model grid."""

    rotate_deg: float = 15.0  # uniform rotation about each axis, +- degrees
    scale: float = 0.15  # uniform scaling per axis, 1 +- scale
    shear: float = 0.05  # shear factors, +- shear
    elastic_prob: float = 0.3  # smooth elastic deformation (MONAI's is the costliest step on a CPU)
    elastic_sigma: tuple[float, float] = (5.0, 8.0)  # smoothness of the elastic field (voxels)
    elastic_magnitude: tuple[float, float] = (0.0, 3.0)  # elastic displacement scale (voxels)
    crop_margin: float = 1.3  # crop this much larger than the patch so rotations stay filled
    shift: float = 0.0  # move the patch off its sampled centre by up to this fraction of its size per axis
    crop_sampling: str = "structures"  # crop centres: "structures" (class-balanced) or "body" (any body voxel)
    body_crop_weight: float = 2.0  # "structures": the unlabelled body counts as this many structures
    body_crop_fraction: float = 0.0  # "structures": this share of the draws centres anywhere in the body instead
    mean_range: tuple[float, float] = (0.0, 1.0)  # per-label mean intensity
    std_range: tuple[float, float] = (0.0, 0.08)  # per-label intensity spread
    tied_prob: float = 0.0  # each label in a crop takes another present label's intensity with this probability
    dark_background_prob: float = 0.7  # air outside the body dark, as in MRI
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # Gaussian blur (partial volume), voxels
    lowres_prob: float = 0.5  # simulate thick slices / coarse acquisition along one axis
    lowres_factor: tuple[float, float] = (1.5, 4.0)  # down-sampling factor along that axis
    bias_prob: float = 0.7  # smooth multiplicative bias field
    bias_coeff: float = 0.5  # MONAI RandBiasField coefficient range (0, bias_coeff)
    gamma: tuple[float, float] = (0.6, 1.6)  # contrast curve exponent
    noise_std: float = 0.04  # Gaussian noise, std drawn from (0, noise_std)
    slab_prob: float = 0.4  # cut the field of view to a thin slab along the superior axis
    slab_mm: tuple[float, float] = (40.0, 120.0)  # slab thickness
    tissue_classes: int = 4  # intensity clusters of the unlabelled body (0 switches the split off)
    unlabelled_body: str = "partial"  # loss on the unlabelled body: "partial" (not the case's structures) or "ignore"
    mirror_prob: float = 0.0  # mirror left-right with the paired labels exchanged (kidney_left <-> kidney_right)
    shared_tissues: bool = False  # all muscles one Gaussian, all fat compartments another (SynthSeg's classes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "synthesis options") -> "SynthesisConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data or {}) - known)
        if unknown:
            raise ValueError(f"{source}: unknown synthesis options {unknown}; known: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in (data or {}).items()}
        config = cls(**values)
        if config.crop_sampling not in CROP_SAMPLING:
            raise ValueError(f"{source}: crop_sampling must be one of {', '.join(CROP_SAMPLING)}, "
                             f"got {config.crop_sampling!r}")
        if config.unlabelled_body not in UNLABELLED_BODY:
            raise ValueError(f"{source}: unlabelled_body must be one of {', '.join(UNLABELLED_BODY)}, "
                             f"got {config.unlabelled_body!r}")
        if not 0.0 <= float(config.body_crop_weight):
            raise ValueError(f"{source}: body_crop_weight must be >= 0, got {config.body_crop_weight}")
        if not 0.0 <= float(config.body_crop_fraction) <= 1.0:
            raise ValueError(f"{source}: body_crop_fraction must be in [0, 1], got {config.body_crop_fraction}")
        if not 0.0 <= float(config.tied_prob) <= 1.0:
            raise ValueError(f"{source}: tied_prob must be in [0, 1], got {config.tied_prob}")
        if not 0.0 <= float(config.shift) < 0.5:
            raise ValueError(f"{source}: shift must be in [0, 0.5) (a fraction of the patch), got {config.shift}")
        if not 0.0 <= float(config.mirror_prob) <= 1.0:
            raise ValueError(f"{source}: mirror_prob must be in [0, 1], got {config.mirror_prob}")
        if not isinstance(config.shared_tissues, bool):
            raise ValueError(f"{source}: shared_tissues must be true or false, got {config.shared_tissues!r}")
        return config

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def body_mask(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The body of a scan ``(X, Y, Z)``: Otsu foreground (SimpleITK), holes filled slice by slice,
    the largest connected component, plus every labelled voxel."""
    import SimpleITK as sitk
    from scipy import ndimage

    values = sitk.GetImageFromArray(np.asarray(image, np.float32))
    foreground = sitk.GetArrayFromImage(sitk.OtsuThreshold(values, 0, 1)).astype(bool)
    filled = np.stack([ndimage.binary_fill_holes(foreground[:, :, k]) for k in range(foreground.shape[2])], axis=2)
    components, count = ndimage.label(filled)
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        filled = components == int(np.argmax(sizes))
    return filled | (labels > 0)


def tissue_clusters(image: np.ndarray, mask: np.ndarray, classes: int) -> np.ndarray:
    """k-means (SimpleITK ``ScalarImageKmeans``) of the intensities inside ``mask`` into ``classes``
    clusters ordered by intensity; returns int16 ``(X, Y, Z)`` cluster indices, -1 outside."""
    import SimpleITK as sitk

    out = np.full(image.shape, -1, np.int16)
    values = np.asarray(image, np.float64)[mask]
    if values.size < classes or classes < 1:
        return out
    start = np.percentile(values, np.linspace(10, 90, classes)).tolist()
    clusters = sitk.ScalarImageKmeans(sitk.GetImageFromArray(values.reshape(1, 1, -1)), start, False)
    out[mask] = sitk.GetArrayFromImage(clusters).reshape(-1).astype(np.int16)
    return out


def generation_labels(labels: np.ndarray, image: np.ndarray | None, tissue_classes: int = 4) -> np.ndarray:
    """Generation labels ``(X, Y, Z)`` int16 from a label map and (optionally) its image.

    Labelled voxels keep their label value; unlabelled voxels of the body (found from ``image``) get
    ``TISSUE_BASE + cluster``; the rest stays 0. Without an image (or with ``tissue_classes`` 0) the
    label map is used as it is.
    """
    labels = np.asarray(labels)
    if labels.max(initial=0) >= TISSUE_BASE:
        raise ValueError(f"label values must be below {TISSUE_BASE} for synthesis, got {int(labels.max())}")
    gen = labels.astype(np.int16)
    if image is None or tissue_classes < 1:
        return gen
    unlabelled = body_mask(image, labels) & (labels == 0)
    clusters = tissue_clusters(image, unlabelled, tissue_classes)
    gen[unlabelled] = TISSUE_BASE + clusters[unlabelled]
    return gen


def target_table(layout: ChannelLayout, unlabelled_body: str = "partial") -> np.ndarray:
    """``table[generation label]`` = training target: the layout's channel for a scheme label, 0 for
    the outside, :data:`PARTIAL` for tissue classes (``unlabelled_body="partial"``: one of the
    structures the case does not contain) or :data:`IGNORE` (``"ignore"``), :data:`IGNORE` for
    padding beyond the scan."""
    table = np.full(_TABLE, IGNORE, np.int64)  # PAD (and unused values)
    table[TISSUE_BASE:PAD] = PARTIAL if unlabelled_body == "partial" else IGNORE
    table[0] = 0
    lookup = layout.channel_lookup()
    for label in range(1, TISSUE_BASE):
        table[label] = lookup[label] if label < len(lookup) and lookup[label] >= 0 else 0
    return table


def allowed_channels(gen: np.ndarray, layout: ChannelLayout) -> np.ndarray:
    """``(C,)`` float32: 1 for the channels the unlabelled body of a case may be (background and
    every structure the case's label map does not contain), 0 for the structures it contains."""
    lookup = layout.channel_lookup()
    allowed = np.ones(layout.num_channels, np.float32)
    for value in np.unique(np.asarray(gen)).tolist():
        if 0 < value < min(TISSUE_BASE, len(lookup)) and lookup[value] > 0:
            allowed[lookup[value]] = 0.0
    allowed[0] = 1.0
    return allowed


class AllowedChannelsd(MapTransform):
    """``gen`` -> ``allowed`` (:func:`allowed_channels` of the whole case). Deterministic, so it runs
    (and is cached) before the crops, which copy it to every crop."""

    def __init__(self, layout: ChannelLayout, gen_key: str = "gen"):
        MapTransform.__init__(self, [gen_key])
        self.gen_key, self.layout = gen_key, layout

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        d["allowed"] = torch.from_numpy(allowed_channels(np.asarray(d[self.gen_key]), self.layout))
        return d


def render_intensities(gen: np.ndarray, rng: np.random.RandomState, config: SynthesisConfig,
                       groups: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """An image ``gen.shape`` float32: each generation label drawn from its own Gaussian, whose mean
    and spread are drawn per call from ``config.mean_range`` / ``config.std_range``. With
    ``config.tied_prob`` each label present takes, with that probability, the Gaussian of another
    label present: structures that share one intensity, as many do in any one MR contrast (spleen
    and muscle, say), so that shape and context must tell them apart. Each of ``groups`` (label
    values; :func:`tissue_groups`) is rendered with one Gaussian."""
    means = rng.uniform(*config.mean_range, size=_TABLE).astype(np.float32)
    stds = rng.uniform(*config.std_range, size=_TABLE).astype(np.float32)
    for group in groups:  # tissues that look alike in every MR contrast share one Gaussian (no draws)
        means[group], stds[group] = means[group[0]], stds[group[0]]
    if config.tied_prob > 0:  # no draws without it: the seeded stream stays as it was
        present = np.unique(np.asarray(gen))
        present = present[(present > 0) & (present != PAD)]
        if len(present) > 1:
            tied = present[rng.uniform(size=len(present)) < config.tied_prob]
            donors = rng.choice(present, size=len(tied))
            means[tied], stds[tied] = means[donors], stds[donors]
    if rng.uniform() < config.dark_background_prob:
        means[0], stds[0] = rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.02)
    means[PAD], stds[PAD] = 0.0, 0.0
    index = np.asarray(gen, np.int64)
    noise = rng.standard_normal(index.shape).astype(np.float32)
    return means[index] + stds[index] * noise


#: Scheme groups whose structures look alike in every MR contrast: each is one generation class when
#: ``shared_tissues`` is on (muscles; fat compartments).
SHARED_TISSUES = {"muscle": ("muscle",), "fat": ("subcutaneous_fat", "inner_fat")}


def tissue_groups(scheme: str) -> list[list[int]]:
    """Label values rendered alike under ``shared_tissues``: every structure of the scheme's
    ``muscle`` group plus its generic muscle class, and its fat compartments."""
    structures = get_scheme(scheme).structures
    muscles = [i for i, s in structures.items() if s.group == "muscle" or s.name in SHARED_TISSUES["muscle"]]
    fats = [i for i, s in structures.items() if s.name in SHARED_TISSUES["fat"]]
    return [sorted(g) for g in (muscles, fats) if len(g) > 1]


def mirror_table(layout: ChannelLayout) -> np.ndarray:
    """``table[generation label]``: the label of the same structure on the other side (others unchanged)."""
    table = np.arange(_TABLE, dtype=np.int64)
    for label, partner in get_scheme(layout.scheme).lateral_partners().items():
        if label < TISSUE_BASE and partner < TISSUE_BASE:
            table[label] = partner
    return table


class RandMirrord(RandomizableTransform, MapTransform):
    """Mirror a crop's generation labels left-right (model axis 0) with probability ``prob``, exchanging
    the paired labels, so a mirrored body is labelled as the anatomy it shows; the case's
    ``allowed`` channels are exchanged the same way."""

    def __init__(self, layout: ChannelLayout, prob: float, gen_key: str = "gen"):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [gen_key])
        self.gen_key = gen_key
        self.values = torch.from_numpy(mirror_table(layout))
        self.channels = torch.from_numpy(lateral_swap_table(layout))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        gen = torch.as_tensor(d[self.gen_key])
        d[self.gen_key] = self.values[torch.flip(gen, dims=[1]).long()].to(gen.dtype)
        if "allowed" in d:
            d["allowed"] = torch.as_tensor(d["allowed"])[self.channels]
        return d


class RandRenderd(RandomizableTransform, MapTransform):
    """``gen`` -> ``image`` (rendered intensities), ``label`` (training targets) and ``pad`` (voxels
    beyond the scan, zeroed again after the intensity transforms by :class:`RandSlabd`)."""

    def __init__(self, layout: ChannelLayout, config: SynthesisConfig, gen_key: str = "gen"):
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, [gen_key])
        self.gen_key, self.config = gen_key, config
        self.table = target_table(layout, config.unlabelled_body)
        self.groups = tissue_groups(layout.scheme) if config.shared_tissues else ()

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        gen = np.asarray(d.pop(self.gen_key), dtype=np.int64)
        d["image"] = torch.from_numpy(render_intensities(gen, self.R, self.config, self.groups))
        d["label"] = torch.from_numpy(self.table[np.clip(gen, 0, _TABLE - 1)])
        d["pad"] = torch.from_numpy(gen == PAD)
        return d


class RandLowResolutiond(RandomizableTransform, MapTransform):
    """Down-sample one random axis by a random factor and back (thick slices, coarse grids)."""

    def __init__(self, keys: Sequence[Hashable], prob: float, factor: tuple[float, float]):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.factor = factor

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        axis, factor = int(self.R.randint(3)), float(self.R.uniform(*self.factor))
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key], dtype=torch.float32)[None]
            shape = list(image.shape[2:])
            low = list(shape)
            low[axis] = max(2, int(round(shape[axis] / factor)))
            coarse = torch.nn.functional.interpolate(image, size=low, mode="area")
            d[key] = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0]
        return d


class NormalizeIntensityLiked(MapTransform):
    """The intensity normalisation inference applies (percentile clip to [0, 1])."""

    def __init__(self, keys: Sequence[Hashable], kind: str = "percentile", params: dict | None = None):
        MapTransform.__init__(self, keys)
        self.kind, self.params = kind, dict(params or {})

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.from_numpy(normalize_intensity(np.asarray(d[key]), self.kind, self.params))
        return d


class RandSlabd(RandomizableTransform, MapTransform):
    """Keep a random slab along the superior axis: the image is 0 outside it (what sliding-window
    padding shows the network around a thin scan) and the targets are ignored there. Voxels beyond
    the scan (``pad``) are set to 0 whether or not the slab is drawn."""

    def __init__(self, prob: float, thickness_mm: tuple[float, float], spacing_mm: float):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ["image", "label"])
        self.thickness = thickness_mm
        self.spacing = float(spacing_mm)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        pad = d.pop("pad", None)
        if pad is not None and bool(pad.any()):
            d["image"] = torch.where(torch.as_tensor(pad), 0.0, torch.as_tensor(d["image"], dtype=torch.float32))
        self.randomize(None)
        if not self._do_transform:
            return d
        depth = d["image"].shape[-1]
        keep = int(np.clip(round(self.R.uniform(*self.thickness) / self.spacing), 2, depth))
        start = int(self.R.randint(0, depth - keep + 1))
        image, label = torch.as_tensor(d["image"]).clone(), torch.as_tensor(d["label"]).clone()
        image[..., :start] = 0
        image[..., start + keep:] = 0
        label[..., :start] = IGNORE
        label[..., start + keep:] = IGNORE
        d["image"], d["label"] = image, label
        return d


def crop_ratios(body_weight: float, tissue_classes: int) -> list[float]:
    """Weights of the generation label values as crop centres: 1 for each structure (1..99),
    ``body_weight`` shared by the ``tissue_classes`` clusters of the unlabelled body, 0 for air,
    padding and ignored voxels. Values absent from a case are skipped by the sampler."""
    ratios = [0.0] * _TABLE
    for value in range(1, 100):
        ratios[value] = 1.0
    for value in range(TISSUE_BASE, TISSUE_BASE + max(0, int(tissue_classes))):
        ratios[value] = float(body_weight) / max(1, int(tissue_classes))
    return ratios


def synthesis_transforms(layout: ChannelLayout, roi_size: Sequence[int], crops_per_volume: int,
                         spacing_mm: Sequence[float], config: SynthesisConfig | None = None,
                         intensity: str = "percentile", intensity_params: dict | None = None) -> Compose:
    """The training chain of synthesis mode, from cached generation labels ``{"gen": (1, X, Y, Z)}``.

    Crops a little larger than ``roi_size``, centred class-balanced on the structures (or anywhere in
    the body, ``crop_sampling="body"``, or a mix of the two, ``body_crop_fraction``); affine (with a
    random translation of up to ``shift`` of the patch) and elastic deformation of the labels
    (nearest neighbour) to ``roi_size``; rendering; blur, resolution loss, bias field, noise and a
    contrast curve; the inference normalisation; a random thin field of view. With
    ``unlabelled_body="partial"`` every crop carries the case's ``allowed`` channels.
    """
    config = config or SynthesisConfig()
    roi = [int(r) for r in roi_size]
    # With ``shift`` the patch moves off the sampled centre (a structure voxel) by up to that fraction
    # of its size, so the structure is seen anywhere in the window, as sliding-window inference shows
    # it; the crop grows by the shift on each side, so the moved patch still holds the case's voxels.
    # (No translation range at all without it: a zero range would still draw from the seeded stream.)
    moves = [float(config.shift) * r for r in roi]
    crop = [int(round(r * config.crop_margin + 2 * m)) for r, m in zip(roi, moves)]
    head = [AllowedChannelsd(layout)] if config.unlabelled_body == "partial" else []
    mirror = [RandMirrord(layout, config.mirror_prob)] if config.mirror_prob > 0 else []  # else no draws
    steps = head + _crop_sampling(config, crop, crops_per_volume) + _deform(config, roi, moves) + mirror + [
        RandRenderd(layout, config),
        RandGaussianSmoothd(["image"], sigma_x=config.blur_sigma, sigma_y=config.blur_sigma,
                            sigma_z=config.blur_sigma, prob=0.8),
        RandLowResolutiond(["image"], config.lowres_prob, config.lowres_factor),
        RandBiasFieldd(["image"], coeff_range=(0.0, config.bias_coeff), prob=config.bias_prob),
        RandGaussianNoised(["image"], prob=0.8, mean=0.0, std=config.noise_std, sample_std=True),
        RandAdjustContrastd(["image"], gamma=config.gamma, prob=0.8),
        NormalizeIntensityLiked(["image"], intensity, intensity_params),
        RandSlabd(config.slab_prob, config.slab_mm, float(spacing_mm[2])),
        EnsureTyped(["image", "label"], track_meta=False),
    ]
    return Compose(steps)


def _crop_sampling(config: SynthesisConfig, crop: list[int], crops_per_volume: int) -> list:
    """The crop steps of :func:`synthesis_transforms`: class-balanced on the structures, anywhere in
    the body, or a mix of the two (``body_crop_fraction``)."""
    body_crops = [
        SpatialPadd(["gen"], spatial_size=crop, value=PAD),
        RandCropByPosNegLabeld(["gen"], label_key="gen", spatial_size=crop, pos=2, neg=1,
                               num_samples=crops_per_volume, allow_smaller=True),
    ]
    fraction = float(config.body_crop_fraction)
    if config.crop_sampling != "structures" or fraction >= 1.0:
        return body_crops
    # Crop centres class-balanced over the structures: without it most crops of a whole-body map
    # hold only fat and muscle, and small organs are rarely seen. Indices are computed once per
    # case (deterministic: cached with the case) and the crop is padded afterwards.
    ratios = crop_ratios(config.body_crop_weight, config.tissue_classes)
    structure_crops = [
        RandCropByLabelClassesd(["gen"], label_key="gen", spatial_size=crop, ratios=ratios, num_classes=_TABLE,
                                num_samples=crops_per_volume, indices_key="gen_cls_indices",
                                allow_smaller=True, warn=False),
        SpatialPadd(["gen"], spatial_size=crop, value=PAD),
    ]
    sampling = [ClassesToIndicesd(["gen"], num_classes=_TABLE)]
    if fraction > 0.0:
        # A share of the draws centred anywhere in the body: structure-centred crops alone put
        # every small organ near the patch centre, and the network learns where in the window an
        # organ lies, which sliding-window inference does not keep (nnU-Net mixes the two the same way).
        return sampling + [OneOf([Compose(structure_crops), Compose(body_crops)], weights=[1.0 - fraction, fraction])]
    return sampling + structure_crops


def _deform(config: SynthesisConfig, roi: list[int], moves: list[float]) -> list:
    """Affine (with the ``shift`` translation) and elastic deformation of the labels to ``roi``."""
    angle = np.deg2rad(config.rotate_deg)
    return [
        RandAffined(["gen"], prob=1.0, rotate_range=(angle,) * 3, shear_range=(config.shear,) * 6,
                    scale_range=(config.scale,) * 3, translate_range=moves if config.shift else None,
                    spatial_size=roi, mode="nearest", padding_mode="zeros"),
        Rand3DElasticd(["gen"], sigma_range=config.elastic_sigma, magnitude_range=config.elastic_magnitude,
                       prob=config.elastic_prob, spatial_size=roi, mode="nearest", padding_mode="zeros"),
    ]


def synthesize_volume(gen: np.ndarray, layout: ChannelLayout, seed: int, config: SynthesisConfig | None = None,
                      intensity: str = "percentile", intensity_params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A whole rendered volume without spatial change (synthetic validation): ``gen`` ``(X, Y, Z)``
    -> ``image`` ``(1, X, Y, Z)`` float32 and ``label`` ``(X, Y, Z)`` int64 targets (:data:`PARTIAL` on the unlabelled body); seeded."""
    config = config or SynthesisConfig()
    chain = Compose([
        RandRenderd(layout, config),
        RandGaussianSmoothd(["image"], sigma_x=config.blur_sigma, sigma_y=config.blur_sigma,
                            sigma_z=config.blur_sigma, prob=0.8),
        RandBiasFieldd(["image"], coeff_range=(0.0, config.bias_coeff), prob=config.bias_prob),
        RandGaussianNoised(["image"], prob=0.8, mean=0.0, std=config.noise_std, sample_std=True),
        RandAdjustContrastd(["image"], gamma=config.gamma, prob=0.8),
        NormalizeIntensityLiked(["image"], intensity, intensity_params),
    ])
    chain.set_random_state(seed=seed)
    out = chain({"gen": np.asarray(gen)[None]})
    out.pop("pad", None)
    return np.asarray(out["image"], np.float32), np.asarray(out["label"])[0]
