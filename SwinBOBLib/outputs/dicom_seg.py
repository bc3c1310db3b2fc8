"""The label map as a DICOM Segmentation (highdicom): one BINARY segment per structure present, on
the source series' grid, each referencing the source instances and coded with its anatomy (the
SNOMED CT category / type / modifier of the label scheme, as Slicer's terminology codes them) and
its colour; Algorithm Identification names the model, its version and checksum (DEMO for a demo).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from SwinBOBLib.labels.schemes import Code, get_scheme
from SwinBOBLib.outputs.dicom_common import (
    SERIES_NUMBERS,
    algorithm_identification,
    equipment,
    new_uid,
    save_dataset,
    series_description,
    source_datasets,
)


def coded(code: Code):
    """A scheme's :class:`~SwinBOBLib.labels.schemes.Code` as highdicom's CodedConcept."""
    import highdicom as hd

    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_descriptions(present: list[int], scheme: str, report: dict) -> list:
    """One highdicom SegmentDescription per label in ``present`` (segment numbers 1.. in that order).

    The tracking ID is the structure's name in ``scheme`` (what :func:`read_seg_labels` maps back),
    the label its display name, the colour the scheme's (as CIELab).
    """
    import highdicom as hd

    s = get_scheme(scheme)
    algorithm = algorithm_identification(report)
    descriptions = []
    for number, label in enumerate(present, start=1):
        structure = s[label]
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=structure.display_name[:64],
            segmented_property_category=coded(structure.category), segmented_property_type=coded(structure.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=new_uid(), tracking_id=structure.name,
            display_color=hd.color.CIELabColor.from_rgb(*structure.color))
        if structure.modifier is not None:
            item = description.SegmentedPropertyTypeCodeSequence[0]
            item.SegmentedPropertyTypeModifierCodeSequence = [coded(structure.modifier)]
        descriptions.append(description)
    return descriptions


def build_segmentation(labels: np.ndarray, image, scheme: str, report: dict):
    """The DICOM SEG of ``labels`` ``(X, Y, Z)`` (label values of ``scheme``) on ``image``'s DICOM grid.

    Returns:
        ``(highdicom Segmentation, [label of segment 1, 2, ...])``; an empty label map gives a SEG
        without segments refused by highdicom, so it raises instead.

    Raises:
        NoDicomSourceError: ``image`` is not a DICOM series.
        ValueError: ``labels`` holds no structure (a SEG needs at least one segment).
    """
    import highdicom as hd

    sources = source_datasets(image)
    if labels.shape != image.spatial_shape:
        raise ValueError(f"{image.path}: label map of shape {labels.shape} is not on the source grid {image.spatial_shape}")
    present = [int(v) for v in np.unique(labels) if v != 0]
    if not present:
        raise ValueError(f"{image.path}: the label map holds no structure; a DICOM SEG needs at least one segment")
    numbers = np.zeros(int(labels.max()) + 1, dtype=np.uint8 if len(present) < 256 else np.uint16)
    numbers[present] = np.arange(1, len(present) + 1)
    frames = np.ascontiguousarray(np.transpose(numbers[labels], (2, 1, 0)))  # (slices, rows, columns)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(present, scheme, report), series_instance_uid=new_uid(),
        series_number=SERIES_NUMBERS["seg"], sop_instance_uid=new_uid(), instance_number=1,
        series_description=series_description("SEG", report), content_label="SWINBOB",
        content_description=series_description("segmentation", report), **equipment(report))
    return seg, present


def write_segmentation(labels: np.ndarray, image, scheme: str, report: dict, path: Path) -> Path:
    """:func:`build_segmentation` written to ``path`` (atomically)."""
    seg, _ = build_segmentation(labels, image, scheme, report)
    return save_dataset(seg, path)


def read_seg_labels(path: Path, source_uids: list[str], scheme: str = "ukbob") -> np.ndarray:
    """A SEG read back as a label map ``(X, Y, Z)`` of ``scheme`` on the source grid.

    Args:
        path: the SEG file.
        source_uids: SOP Instance UIDs of the source slices in slice order (``k`` = array's third axis).
        scheme: the label scheme whose structure names the segments' tracking IDs are.

    Raises:
        ValueError: a segment whose tracking ID is not a structure of ``scheme``.
    """
    import highdicom as hd

    seg = hd.seg.segread(path)
    s = get_scheme(scheme)
    lookup = np.zeros(max(seg.get_segment_numbers(), default=0) + 1, dtype=np.uint16)
    for number in seg.get_segment_numbers():
        tracking = seg.get_segment_description(number).tracking_id
        lookup[number] = s.lookup(tracking)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(source_uids), combine_segments=True)
    return np.transpose(lookup[frames], (2, 1, 0))
