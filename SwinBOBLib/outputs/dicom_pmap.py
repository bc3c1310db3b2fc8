"""The per-voxel entropy as a DICOM Parametric Map (highdicom) on the source grid, with a real-world
value mapping so that a viewer shows the true entropy in nats (0 .. ln C for a softmax over C
classes; 0 .. ln 2 for sigmoid heads, whose entropy is the mean binary entropy).

Stored as 16-bit integers: the entropy comes back within half a step, ``ln C / 65535 / 2`` nats.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from SwinBOBLib.outputs.dicom_common import (
    SERIES_NUMBERS,
    algorithm_identification,
    equipment,
    new_uid,
    save_dataset,
    series_description,
    source_datasets,
)

#: Largest stored value: the normalised entropy 1 (ln C nats).
STORED_MAX = 65535


#: The unit of the real-world values: nats (natural-log information), a UCUM annotation.
NAT_UNIT = ("{nat}", "UCUM", "nat")


def entropy_scale(report: dict) -> float:
    """Nats per unit of normalised entropy: ln C (softmax over C output classes) or ln 2 (sigmoid)."""
    metadata = (report.get("checkpoint") or {}).get("metadata") or {}
    if metadata.get("activation") == "sigmoid":
        return math.log(2.0)
    classes = int(metadata.get("out_channels") or 0)
    if classes < 2:
        raise ValueError(f"checkpoint metadata gives {classes} output classes; the entropy's range ln C needs C >= 2")
    return math.log(classes)


def build_parametric_map(entropy: np.ndarray, image, report: dict):
    """The Parametric Map of ``entropy`` ``(X, Y, Z)`` (normalised, in [0, 1]) on ``image``'s DICOM grid.

    Raises:
        NoDicomSourceError: ``image`` is not a DICOM series.
        ValueError: ``entropy`` off the grid or outside [0, 1].
    """
    import highdicom as hd

    sources = source_datasets(image)
    if entropy.shape != image.spatial_shape:
        raise ValueError(f"{image.path}: entropy of shape {entropy.shape} is not on the source grid {image.spatial_shape}")
    if entropy.size and (float(entropy.min()) < -1e-6 or float(entropy.max()) > 1 + 1e-6):
        raise ValueError(f"{image.path}: normalised entropy outside [0, 1] ({entropy.min():.4g}..{entropy.max():.4g})")
    scale = entropy_scale(report)
    stored = np.round(np.clip(entropy.astype(np.float64), 0, 1) * STORED_MAX).astype(np.uint16)
    frames = np.ascontiguousarray(np.transpose(stored, (2, 1, 0)))
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ENTROPY", lut_explanation=f"Shannon entropy of the class probabilities (0..ln {round(math.exp(scale))})",
        unit=hd.sr.CodedConcept(*NAT_UNIT), value_range=(0, STORED_MAX), slope=scale / STORED_MAX, intercept=0.0)
    pmap = hd.pm.ParametricMap(
        source_images=sources, pixel_array=frames, series_instance_uid=new_uid(),
        series_number=SERIES_NUMBERS["pmap"], sop_instance_uid=new_uid(), instance_number=1,
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=STORED_MAX / 2, window_width=STORED_MAX)],
        content_label="ENTROPY",
        content_description=series_description("entropy", report), series_description=series_description("entropy", report),
        **equipment(report))
    _record_algorithm(pmap, report)
    pmap.Laterality = sources[0].get("Laterality", "")  # Type 2C of General Series; highdicom leaves it out
    return pmap


def _record_algorithm(pmap, report: dict) -> None:
    """The model that made the map, in the derivation's Algorithm Identification (as in the SEG)."""
    for item in pmap.get("SharedFunctionalGroupsSequence") or []:
        for derivation in item.get("DerivationImageSequence") or []:
            derivation.DerivationAlgorithmSequence = algorithm_identification(report)


def write_parametric_map(entropy: np.ndarray, image, report: dict, path: Path) -> Path:
    """:func:`build_parametric_map` written to ``path`` (atomically)."""
    return save_dataset(build_parametric_map(entropy, image, report), path)


def read_entropy_nats(path: Path, source_uids: list[str]) -> np.ndarray:
    """A Parametric Map written here read back as true entropy in nats, ``(X, Y, Z)`` on the source grid."""
    import pydicom

    pmap = pydicom.dcmread(path)
    by_uid = {}
    for number, frame in enumerate(pmap.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        by_uid[uid] = number
    mapping = pmap.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    slope, intercept = float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)
    pixels = pmap.pixel_array.reshape(-1, pmap.Rows, pmap.Columns)
    frames = np.stack([pixels[by_uid[uid]] for uid in source_uids])
    return np.transpose(frames.astype(np.float64) * slope + intercept, (2, 1, 0))
