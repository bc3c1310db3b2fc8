"""What the DICOM objects of a run share: the source instances they reference, the equipment and
algorithm that made them (a demo model says DEMO, in the Series Description too), new UIDs, and
the atomic save of a dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

from SwinBOBLib import __version__
from SwinBOBLib.io.files import apply_umask

#: Manufacturer of every object SwinBOB writes (General Equipment module).
MANUFACTURER = "SwinBOB"


#: SOP classes of the objects SwinBOB writes, for checks and messages.
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"


#: Series numbers of the objects, after the source series' own numbers in a PACS list.
SERIES_NUMBERS = {"seg": 901, "pmap": 902, "sr": 903}


class NoDicomSourceError(ValueError):
    """DICOM output was asked for an input that is not a DICOM series (nothing to reference)."""


def source_files(image) -> list[Path]:
    """The source instances of ``image`` (a DICOM series read by :func:`SwinBOBLib.io.load_image`),
    in slice order: slice ``k`` of ``image.array[:, :, k]`` is file ``k``.

    Raises:
        NoDicomSourceError: ``image`` was not read from a DICOM series.
    """
    files = (image.metadata or {}).get("dicom_files")
    if not files:
        raise NoDicomSourceError(
            f"{image.path}: --output-type dicom needs a DICOM series as input (a folder of DICOM files or "
            "--dicomweb): DICOM SEG, Parametric Map and SR reference the source instances, and a "
            f"{Path(str(image.path)).suffix or 'non-DICOM'} file has none. Convert the scan with "
            "`swinbob convert SCAN FOLDER` first, or use the default NIfTI output")
    return [Path(f) for f in files]


def source_datasets(image) -> list:
    """The source instances' headers (pydicom datasets, no pixel data), in slice order."""
    import pydicom

    return [pydicom.dcmread(path, stop_before_pixels=True) for path in source_files(image)]


def model_words(report: dict) -> tuple[str, bool]:
    """``(model name, demo)`` from a run's report."""
    model = report.get("model") or {}
    return str(model.get("name") or "model"), bool(model.get("demo"))


def series_description(kind: str, report: dict) -> str:
    """What a PACS list shows for an object: ``SwinBOB SEG DEMO <model>`` (at most 64 characters)."""
    name, demo = model_words(report)
    return f"SwinBOB {kind} {'DEMO ' if demo else ''}{name}"[:64]


def model_version(report: dict) -> str:
    """The model's version as the objects record it: SwinBOB's version and the checkpoint's sha256."""
    digest = (report.get("checkpoint") or {}).get("sha256") or "unknown"
    return f"SwinBOB {__version__} sha256:{digest[:16]}"[:64]


def algorithm_identification(report: dict):
    """highdicom's Algorithm Identification of the model (SEG, Parametric Map)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    name, demo = model_words(report)
    checkpoint = report.get("checkpoint") or {}
    parameters = {"checkpoint_sha256": str(checkpoint.get("sha256") or "unknown"), "demo": "DEMO" if demo else "no"}
    return hd.AlgorithmIdentificationSequence(name=(f"DEMO {name}" if demo else name)[:64],
                                              family=codes.cid7162.ArtificialIntelligence,
                                              version=model_version(report), source="SwinBOB",
                                              parameters=parameters)


def equipment(report: dict) -> dict:
    """The General Equipment arguments highdicom's constructors take."""
    name, demo = model_words(report)
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": (f"DEMO {name}" if demo else name)[:64],
            "software_versions": f"SwinBOB {__version__}", "device_serial_number": "none"}


def new_uid() -> str:
    import highdicom as hd

    return hd.UID()


def save_dataset(dataset, path: Path) -> Path:
    """Write a DICOM object to ``path`` atomically (temporary file beside it, then renamed)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        dataset.save_as(temporary, enforce_file_format=True)
        apply_umask(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


#: File names of the DICOM objects in a case folder (``--output-type dicom``).
DICOM_FILES = {"seg": "labels_seg.dcm", "pmap": "entropy_pmap.dcm", "sr": "organs_sr.dcm"}
