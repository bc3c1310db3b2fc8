"""A volume as a classic MR Image Storage series (one file per slice), written with pydicom so that
every attribute the MR Image IOD requires is there and `dciodvfy` finds no error.

Geometry: ``array[i, j, k]`` with a voxel -> RAS affine (see :mod:`SwinBOBLib.io.image`) becomes
slice ``k`` with rows along ``j`` and columns along ``i``: Image Orientation (Patient) holds the
LPS directions of ``i`` then ``j``, Image Position (Patient) the LPS position of voxel ``(0, 0, k)``.
Oblique and flipped grids are written as they are (no resampling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SwinBOBLib import __version__
from SwinBOBLib.io.itk import itk_geometry

#: Rows/columns of one slice in DICOM are 16-bit unsigned; larger grids cannot be written.
MAX_SLICE_EDGE = 65535


#: MR Image Storage (classic, one frame per file).
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class SeriesHeader:
    """What every slice of a written series shares.

    Attributes:
        description: Series Description, shown in a PACS list.
        study_uid, series_uid, frame_of_reference_uid: new UIDs unless given.
        patient_name, patient_id: empty (Type 2) unless given.
    """

    description: str = "SwinBOB export"
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_name: str = ""
    patient_id: str = ""
    extra: dict = field(default_factory=dict)


def stored_values(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored integers, rescale slope, rescale intercept)`` that reproduce ``array``.

    Integers that fit int16 are stored as they are (slope 1, intercept 0); anything else is stored
    as uint16 with an integer intercept and a slope spreading the range over 0..65000, so a float
    volume comes back within ``(max - min) / 65000``.
    """
    if array.dtype.kind in "biu" and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16), 1.0, 0.0
    intercept = float(np.floor(array.min()))
    slope = (float(array.max()) - intercept) / 65000.0 or 1.0
    slope = float(f"{slope:.10g}")  # what the DS string holds, so the stored values use the same one
    stored = np.clip(np.round((array.astype(np.float64) - intercept) / slope), 0, 65535)
    return stored.astype(np.uint16), slope, intercept


def _ds(value: float) -> str:
    return f"{value:.10g}"


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def _shared_dataset(header: SeriesHeader, stored: np.ndarray, slope: float, intercept: float,
                    spacing, direction):
    """The attributes every slice shares (patient, study, series, frame of reference, equipment,
    image pixel description, MR Image module), as a pydicom Dataset."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = header.patient_name, header.patient_id, "", ""
    now_date, now_time = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = header.study_uid, now_date, now_time
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "", ""
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", header.series_uid, 1
    ds.SeriesDescription, ds.SeriesDate, ds.SeriesTime = header.description, now_date, now_time
    ds.Laterality, ds.PatientPosition = "", ""  # Type 2C: unknown for a converted volume
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = header.frame_of_reference_uid, ""
    ds.Manufacturer, ds.SoftwareVersions = "SwinBOB", f"SwinBOB {__version__}"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.ContentDate, ds.ContentTime = now_date, now_time
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows (j), between columns (i)
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(spacing[2])
    d = np.asarray(direction).reshape(3, 3)
    ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[0])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if (slope, intercept) != (1.0, 0.0):  # not part of the MR IOD (a dciodvfy warning), but GDCM, ITK and viewers apply it
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""  # RM: research mode
    ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "3D", "", "", ""
    ds.update(header.extra)
    return ds


def _window(stored: np.ndarray, slope: float, intercept: float) -> tuple[str, str]:
    """A display window covering the 1st..99th percentile of the real values."""
    low, high = np.percentile(stored, [1, 99]) * slope + intercept
    width = max(float(high - low), 1.0)
    return _ds((low + high) / 2), _ds(width)


def write_series_files(array: np.ndarray, affine: np.ndarray, folder: Path,
                       header: SeriesHeader | None = None) -> list[Path]:
    """Write ``array`` ``(X, Y, Z)`` as ``slice_0000.dcm``... into the existing ``folder``.

    Args:
        array: real values (integers, or floats stored as uint16 with a rescale).
        affine: ``(4, 4)`` voxel -> RAS mm; must have orthogonal axes.
        folder: an existing (staging) folder; the caller makes the write atomic.
        header: shared attributes; new UIDs are made for the empty ones.

    Returns:
        The files written, in slice order.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    header = header or SeriesHeader()
    for name in ("study_uid", "series_uid", "frame_of_reference_uid"):
        setattr(header, name, getattr(header, name) or _new_uid())
    if max(array.shape[:2]) > MAX_SLICE_EDGE:
        raise ValueError(f"{folder}: slices of {array.shape[0]} x {array.shape[1]} voxels exceed DICOM's "
                         f"{MAX_SLICE_EDGE} rows/columns")
    spacing, origin, direction = itk_geometry(affine, str(folder))
    stored, slope, intercept = stored_values(np.asarray(array))
    shared = _shared_dataset(header, stored, slope, intercept, spacing, direction)
    shared.WindowCenter, shared.WindowWidth = _window(stored, slope, intercept)
    d = np.asarray(direction).reshape(3, 3) * np.asarray(spacing)
    written = []
    for k in range(stored.shape[2]):
        ds = shared.copy()
        ds.SOPInstanceUID, ds.InstanceNumber = _new_uid(), k + 1
        ds.ImagePositionPatient = [_ds(v) for v in np.asarray(origin) + d[:, 2] * k]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        path = folder / f"slice_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
