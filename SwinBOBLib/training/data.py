"""Cases -> training data: each case loaded, reoriented to RAS and resampled to the model's
spacing once (or its label map split into generation labels for synthesis), then MONAI datasets
of random crops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import Transform as _MonaiTransform

from SwinBOBLib import io, labels
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.preprocess import model_grid, preprocess, resample
from SwinBOBLib.io.datasets import Case, Dataset, split_cases
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.training.config import TrainConfig
from SwinBOBLib.training.synthesis import SynthesisConfig, generation_labels


def nearest_resample(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Corner-aligned nearest-neighbour resampling of a 3D label array (matches the image grid of
    :func:`~SwinBOBLib.inference.preprocess.model_grid`, whose first and last voxels keep their centres)."""
    if tuple(array.shape) == tuple(shape):
        return array
    index = [np.rint(np.linspace(0, n - 1, m)).astype(np.intp) if n > 1 else np.zeros(m, np.intp)
             for n, m in zip(array.shape, shape)]
    return array[np.ix_(*index)]


def load_case_image(case: Case) -> io.Image:
    return io.load_image(list(case.images) if len(case.images) > 1 else case.images[0])


def _ras_labels(case: Case, dataset_scheme: str, metadata: CheckpointMetadata,
                image: io.Image | None = None) -> io.Image:
    """The case's label map in the model's scheme, RAS voxel order; checked against ``image``'s grid."""
    source = io.load_labelmap(case.label, scheme=dataset_scheme)
    if image is not None:
        difference = io.grid_difference(source, image)
        if difference:
            raise ValueError(f"{case.label}: the label map's grid differs from its image {case.images[0]}: {difference}")
    mapped = labels.remap(source.array, dataset_scheme, metadata.scheme)
    return io.reorient(io.Image(mapped, source.affine), "RAS")[0]


def prepare_case(case: Case, dataset_scheme: str, metadata: CheckpointMetadata) -> dict:
    """One case as training arrays on the model grid: ``image`` ``(C, X, Y, Z)`` float32 and ``label``
    ``(1, X, Y, Z)`` int16 channel indices of the compact layout (dataset labels remapped)."""
    image = load_case_image(case)
    tensor, prepared = preprocess(image, metadata, InferenceConfig())
    grid = nearest_resample(_ras_labels(case, dataset_scheme, metadata, image).array, prepared.model_shape)
    channels = labels.channel_layout(metadata.scheme, "compact").labels_to_channels(grid)
    return {"image": tensor[0].numpy(), "label": channels[None].astype(np.int16), "case_id": case.case_id}


def prepare_generation_case(case: Case, dataset_scheme: str, metadata: CheckpointMetadata,
                            tissue_classes: int = 4) -> dict:
    """One case for synthesis mode: ``gen`` ``(1, X, Y, Z)`` int16 generation labels on the RAS model
    grid (see :func:`SwinBOBLib.training.synthesis.generation_labels`); the image, when the case has one, only
    splits the unlabelled body into tissue classes."""
    loaded = load_case_image(case) if case.images and tissue_classes > 0 else None
    ras = _ras_labels(case, dataset_scheme, metadata, loaded)
    shape, _ = model_grid(ras.spatial_shape, ras.spacing, metadata.target_spacing_mm)
    grid = nearest_resample(ras.array, shape)
    image = None
    if loaded is not None:
        ras_image, _ = io.reorient(io.select_channels(loaded, [0]) if loaded.num_channels > 1 else loaded, "RAS")
        values = torch.from_numpy(np.asarray(ras_image.array, np.float32))[None, None]
        image = resample(values, shape)[0, 0].numpy()
    return {"gen": generation_labels(grid, image, tissue_classes)[None], "case_id": case.case_id}


class _PrepareCase(_MonaiTransform):
    """MONAI-cacheable transform: ``{"index": i}`` -> the prepared arrays of case ``i`` (generation
    labels in synthesis mode). It is a deterministic MONAI ``Transform``: ``CacheDataset`` and
    ``PersistentDataset`` cache what comes out of it (they cache nothing past a plain callable)."""

    def __init__(self, cases: Sequence[Case], dataset_scheme: str, metadata: CheckpointMetadata,
                 tissue_classes: int | None = None):
        self.cases, self.dataset_scheme, self.metadata = list(cases), dataset_scheme, metadata
        self.tissue_classes = tissue_classes

    def __call__(self, item: Mapping) -> dict:
        case = self.cases[int(item["index"])]
        if self.tissue_classes is not None:
            return prepare_generation_case(case, self.dataset_scheme, self.metadata, self.tissue_classes)
        return prepare_case(case, self.dataset_scheme, self.metadata)


def make_dataset(cases: Sequence[Case], dataset_scheme: str, metadata: CheckpointMetadata,
                 config: TrainConfig, run_dir: Path, augment: Callable | None):
    """A MONAI dataset of prepared cases (cached per ``config.cache``) with ``augment`` applied after."""
    from monai.data import CacheDataset, PersistentDataset
    from monai.data import Dataset as MonaiDataset
    from monai.transforms import Compose

    tissue = None
    if config.synthesis != "off":
        tissue = SynthesisConfig.from_dict(config.synthesis_options).tissue_classes
    # The augmentation chain is spliced in flat so that its deterministic head (class indices of the
    # crop sampler) is cached along with the prepared case.
    chain = list(augment.transforms) if isinstance(augment, Compose) else ([augment] if augment is not None else [])
    transform = Compose([_PrepareCase(cases, dataset_scheme, metadata, tissue)] + chain)
    items = [{"index": i, "case": c.case_id} for i, c in enumerate(cases)]
    if config.cache == "memory":
        return CacheDataset(items, transform, cache_rate=1.0, num_workers=None, progress=False)
    if config.cache == "disk":
        return PersistentDataset(items, transform, cache_dir=run_dir / "cache")
    return MonaiDataset(items, transform)


def training_cases(dataset: Dataset, config: TrainConfig) -> dict[str, list[Case]]:
    """Subject-level split, then the training subset (``subset_fraction``, at least one case)."""
    splits = split_cases(dataset, config.split, config.seed)
    if not splits["train"]:
        raise ValueError(f"{dataset.source}: no training cases after the split {config.split}")
    if config.subset_fraction < 1:
        count = max(1, int(round(len(splits["train"]) * config.subset_fraction)))
        order = np.random.default_rng(config.seed + 1).permutation(len(splits["train"]))[:count]
        splits["train"] = [splits["train"][i] for i in sorted(order)]
    return splits
