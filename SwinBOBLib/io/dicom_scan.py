"""What a DICOM folder holds, read file by file with pydicom before any voxel is loaded: its series
(UID, description, modality, slice size, files), which objects are images, and whether the chosen
series is one volume (one orientation, one slice size, no gantry tilt), its files in slice order.
Each file's Image Type, echo and field strength are kept too: :mod:`SwinBOBLib.io.dicom_channels`
tells Dixon contrasts apart by them.

Every refusal names the folder and the files concerned, so a user can fix or remove them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SwinBOBLib.io.image import ImageFormatError

#: SOP classes that hold pixels but are not scans to segment (our own outputs among them).
NOT_SCANS = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
}


#: Image orientations (direction cosines) may differ by this much before a series counts as mixed.
ORIENTATION_TOLERANCE = 1e-4


#: The slice normal and the direction in which slices advance may differ by this sine (about 0.3
#: degrees) before the series counts as tilted.
TILT_TOLERANCE = 5e-3


@dataclass
class DicomFile:
    """One file's header: what choosing and checking a series needs."""

    path: Path
    series_uid: str
    study_uid: str
    sop_class: str
    modality: str
    description: str
    image: bool
    size: tuple[int, int] | None = None
    orientation: np.ndarray | None = None
    position: np.ndarray | None = None
    instance: int = 0
    tilt: float = 0.0
    image_type: tuple[str, ...] = ()  # Image Type values, e.g. ("DERIVED", "PRIMARY", "DIXON", "WATER")
    echo_time: float | None = None  # Echo Time (ms)
    echo_number: int | None = None  # Echo Numbers (first value)
    field_strength: float | None = None  # Magnetic Field Strength (T)


@dataclass
class Series:
    """A series of a folder: its files (in slice order once :func:`choose_series` checked it)."""

    uid: str
    study_uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[DicomFile] = field(default_factory=list)

    def describe(self) -> str:
        """``UID 'description' MODALITY, N slices ROWSxCOLUMNS (first file)`` for a listing."""
        first = self.headers[0]
        what = (f"{len(self.headers)} slice(s) {first.size[0]}x{first.size[1]}" if first.image and first.size
                else f"{len(self.headers)} object(s), not an image ({_class_name(first.sop_class)})")
        return f"{self.uid} '{first.description}' {first.modality or '?'}, {what} ({first.path.name})"


def _class_name(uid: str) -> str:
    from pydicom.uid import UID

    return NOT_SCANS.get(uid) or UID(uid).name


def _plane(ds) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Image Orientation and Position (Patient), from the top level or an enhanced object's
    functional groups (first frame)."""
    orientation, position = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        for item in (ds.get(groups) or [])[:1]:
            if orientation is None and item.get("PlaneOrientationSequence"):
                orientation = item.PlaneOrientationSequence[0].get("ImageOrientationPatient")
            if position is None and item.get("PlanePositionSequence"):
                position = item.PlanePositionSequence[0].get("ImagePositionPatient")
    as_array = lambda v: np.asarray([float(x) for x in v]) if v is not None else None
    return as_array(orientation), as_array(position)


def _check_pixels(ds, path: Path) -> None:
    """Refuse a file whose uncompressed pixel data is shorter than its header says (truncated)."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    frames = int(ds.get("NumberOfFrames") or 1)
    expected = int(ds.Rows) * int(ds.Columns) * frames * int(ds.SamplesPerPixel or 1) * int(ds.BitsAllocated) // 8
    if len(ds.PixelData) < expected:
        raise ImageFormatError(f"{path}: the file is truncated: {len(ds.PixelData)} bytes of pixel data where its "
                               f"header ({ds.Rows}x{ds.Columns}, {frames} frame(s), {ds.BitsAllocated} bits) needs "
                               f"{expected}; copy the file again from its source")


def read_header(path: Path) -> DicomFile | None:
    """The header of one file; None for a file that is not DICOM (no ``DICM`` preamble).

    Raises:
        ImageFormatError: a DICOM file that cannot be read to its end (truncated or corrupt).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            if handle.read(4) != b"DICM":
                return None
        ds = pydicom.dcmread(path)
        _check_pixels(ds, path)
        series_uid, sop_class = str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPClassUID", ""))
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError, TypeError) as error:
        if isinstance(error, ImageFormatError):
            raise
        raise ImageFormatError(f"{path}: cannot read this DICOM file ({type(error).__name__}: {error}); "
                               "it is truncated or corrupt, copy it again from its source") from None
    if not series_uid or not sop_class:  # pydicom stops quietly where a file ends
        raise ImageFormatError(f"{path}: cannot read this DICOM file: it has no "
                               f"{'Series Instance UID' if not series_uid else 'SOP Class UID'}; it is truncated "
                               "or corrupt, copy it again from its source")
    image = ("PixelData" in ds or "FloatPixelData" in ds) and sop_class not in NOT_SCANS
    orientation, position = _plane(ds)
    echo_number = _number(ds.get("EchoNumbers"))
    return DicomFile(path, series_uid, str(ds.get("StudyInstanceUID", "")), sop_class, str(ds.get("Modality", "")),
                     str(ds.get("SeriesDescription", "")), bool(image),
                     (int(ds.Rows), int(ds.Columns)) if "Rows" in ds else None, orientation, position,
                     int(ds.get("InstanceNumber") or 0), float(ds.get("GantryDetectorTilt") or 0.0),
                     _values(ds.get("ImageType")), _number(ds.get("EchoTime")),
                     int(echo_number) if echo_number is not None else None, _number(ds.get("MagneticFieldStrength")))


def _values(value) -> tuple[str, ...]:
    """A multi-valued string attribute as a tuple of stripped strings (empty when absent)."""
    if value is None or value == "":
        return ()
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]  # a MultiValue
    return tuple(str(v).strip() for v in items)


def _number(value) -> float | None:
    """A DS/IS attribute (its first value when multi-valued) as a float; None when absent or empty."""
    items = _values(value)
    try:
        return float(items[0]) if items and items[0] else None
    except ValueError:
        return None


def scan_dicom_folder(folder: Path) -> dict[str, Series]:
    """``{series UID: Series}`` of the DICOM files directly in ``folder`` (hidden files, subfolders
    and files that are not DICOM are skipped).

    Raises:
        ImageFormatError: no DICOM file at all, or one that cannot be read (named).
    """
    series: dict[str, Series] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        header = read_header(path)
        if header is None:
            continue
        entry = series.setdefault(header.series_uid, Series(header.series_uid, header.study_uid))
        entry.headers.append(header)
        entry.files.append(path)
    if not series:
        raise ImageFormatError(f"{folder}: no DICOM series found in this folder")
    return series


def choose_series(found: dict[str, Series], folder: Path, series_uid: str | None) -> Series:
    """The series to read: ``series_uid``, or the folder's only series; checked and in slice order.

    Raises:
        ImageFormatError: several series and no ``series_uid`` (each listed with its description,
            modality and size), an unknown ``series_uid``, or a series that is not one volume.
    """
    listing = "; ".join(s.describe() for s in found.values())
    if series_uid is None and len(found) > 1:
        raise ImageFormatError(f"{folder}: holds {len(found)} DICOM series: {listing}. Choose one with "
                               "--series UID (series_uid=...), or give each series a folder of its own")
    if series_uid is not None and series_uid not in found:
        raise ImageFormatError(f"{folder}: no DICOM series {series_uid}; found {listing}")
    series = found[series_uid] if series_uid is not None else next(iter(found.values()))
    check_volume(series, folder)
    return series


def check_volume(series: Series, folder: Path) -> None:
    """Check that ``series`` is one volume and sort its files by position along the slice normal.

    Raises:
        ImageFormatError: a non-image object, mixed slice sizes, mixed orientations or a gantry
            tilt, each naming the files.
    """
    source = f"{folder}: DICOM series {series.uid}"
    headers = sorted(series.headers, key=lambda h: (h.instance, h.path.name))
    for h in headers:
        if not h.image:
            raise ImageFormatError(f"{source}: {h.path.name} is not an image ({_class_name(h.sop_class)}); "
                                   "move it out of the folder, SwinBOB reads image series only")
    first = headers[0]
    for number, h in enumerate(headers, start=1):
        if h.size != first.size:
            raise ImageFormatError(f"{source}: mixed slice sizes: slice {number} ({h.path.name}) is {h.size[0]}x"
                                   f"{h.size[1]} where slice 1 ({first.path.name}) is {first.size[0]}x{first.size[1]}")
        if h.orientation is None or first.orientation is None or h.position is None:
            continue
        if np.max(np.abs(h.orientation - first.orientation)) > ORIENTATION_TOLERANCE:
            raise ImageFormatError(f"{source}: mixed orientations: slice {number} ({h.path.name}) has Image "
                                   f"Orientation {_fmt(h.orientation)} where slice 1 ({first.path.name}) has "
                                   f"{_fmt(first.orientation)}; the files are not one volume")
    if len(headers) > 1 and all(h.position is not None for h in headers) and first.orientation is not None:
        normal = np.cross(first.orientation[:3], first.orientation[3:])
        headers.sort(key=lambda h: float(h.position @ normal))
        _check_tilt(headers, normal, source)
    series.headers, series.files = headers, [h.path for h in headers]


def _check_tilt(headers: list[DicomFile], normal: np.ndarray, source: str) -> None:
    tilted = [h for h in headers if abs(h.tilt) > 1e-3]
    step = headers[-1].position - headers[0].position
    sine = np.linalg.norm(np.cross(normal, step / np.linalg.norm(step))) if np.linalg.norm(step) else 0.0
    if tilted or sine > TILT_TOLERANCE:
        angle = tilted[0].tilt if tilted else float(np.degrees(np.arcsin(min(sine, 1.0))))
        raise ImageFormatError(
            f"{source}: gantry tilt of {angle:.3g} degrees: slices 1 to {len(headers)} ({headers[0].path.name} to "
            f"{headers[-1].path.name}) advance along a direction that is not the slice normal; resample the series "
            "to an untilted grid first (e.g. Slicer's DICOM import with 'Acquisition geometry regularization')")


def _fmt(values: np.ndarray) -> str:
    return "\\".join(f"{v:.4g}" for v in values)
