"""``--output-type dicom``: the DICOM SEG, the entropy Parametric Map and the TID 1500 report of a
scan read from a DICOM series, written beside the NIfTI outputs of its case folder.
"""

from __future__ import annotations

from pathlib import Path

from SwinBOBLib.inference.config import Segmentation
from SwinBOBLib.outputs.dicom_common import DICOM_FILES, save_dataset
from SwinBOBLib.outputs.dicom_pmap import build_parametric_map
from SwinBOBLib.outputs.dicom_seg import build_segmentation
from SwinBOBLib.outputs.dicom_sr import build_report
from SwinBOBLib.outputs.organs import organ_rows

#: Output types of ``segment``: NIfTI (and the input's format) only, or the DICOM objects too.
OUTPUT_TYPES = ("nifti", "dicom")


def write_dicom_outputs(result: Segmentation, image, outdir: Path, report: dict, scheme: str = "ukbob",
                        bounds=None, bounds_name: str | None = None) -> dict[str, Path]:
    """Write ``labels_seg.dcm``, ``entropy_pmap.dcm`` and ``organs_sr.dcm`` into ``outdir``.

    Args:
        result: the segmentation of ``image`` (labels and normalised entropy on its grid).
        image: the scan, read from a DICOM series (its files are the source instances).
        report: the run's report (model, checkpoint checksum and metadata).
        bounds: SOLF bounds judging each structure in the report, or None (not judged).

    Returns:
        ``{"seg" | "pmap" | "sr": path}``. A label map without any structure gets no SEG and no
        report (a SEG needs a segment), only the Parametric Map.

    Raises:
        NoDicomSourceError: ``image`` was not read from a DICOM series.
    """
    paths = {}
    labels, entropy = result.labels.array, result.entropy.array
    paths["pmap"] = save_dataset(build_parametric_map(entropy, image, report), Path(outdir) / DICOM_FILES["pmap"])
    if not labels.any():
        return paths
    seg, present = build_segmentation(labels, image, scheme, report)
    paths["seg"] = save_dataset(seg, Path(outdir) / DICOM_FILES["seg"])
    whole = result.whole_labels
    by_index = {row["index"]: row for row in result.organ_rows or []}  # organs.csv's rows, measured once
    rows = ([by_index[index] for index in present] if all(index in by_index for index in present) else
            organ_rows(labels, entropy, image.spacing, scheme, present,
                       whole_labels=whole.array if whole is not None else None))
    paths["sr"] = save_dataset(build_report(rows, seg, present, image, scheme, report, bounds, bounds_name, labels),
                               Path(outdir) / DICOM_FILES["sr"])
    return paths
