"""Segment a series of a PACS study over DICOMweb and, if asked, store the DICOM SEG, the entropy
Parametric Map and the TID 1500 report back into the study as new series.

The series is fetched into a temporary folder, segmented like a local DICOM folder into the case
folder (complete before anything is sent), then stored; a refused store or a dropped connection
is reported with the files kept locally, and ``report.json`` records what was stored.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from SwinBOBLib import io
from SwinBOBLib.inference.preprocess import dicom_contrasts
from SwinBOBLib.io.dicomweb import (
    fetch_series,
    public_url,
    series_to_fetch,
    store_files,
)
from SwinBOBLib.outputs.dicom_common import DICOM_FILES
from SwinBOBLib.outputs.folders import json_default
from SwinBOBLib.workflows.segment import segment_file


def dicomweb_source(url: str, study_uid: str, series_uid: str | None) -> str:
    """How a DICOMweb input is named in reports and case folders (no credentials: see io.dicomweb)."""
    series = f"/series/{series_uid}" if series_uid else ""
    return f"{public_url(url)}/studies/{study_uid}{series}"


def segment_dicomweb(url: str, study_uid: str, series_uid: str | None, outdir: Path, model, metadata, config,
                     etta_config, checkpoint_info: dict, *, store: bool = False, preview: bool = True,
                     progress=None, bounds: Path | None = None) -> dict:
    """Fetch, segment (``output_type="dicom"``) and optionally store one series; returns its report.

    Args:
        url: the DICOMweb service root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        study_uid: Study Instance UID; series_uid: the series (default: the study's only image series).
            For a multi-channel (Dixon) model every image series of the study is fetched and its
            contrasts matched by their DICOM attributes (:func:`SwinBOBLib.io.read_dicom_channels`),
            ``series_uid`` then picking the station where a contrast is found more than once.
        outdir: the case folder (see :func:`~SwinBOBLib.outputs.folders.case_folder`).
        store: send the SEG, Parametric Map and SR to the server (STOW-RS) once written locally.

    Raises:
        DicomWebError: the server refuses, cannot be reached, or has no such study or series; when
            storing fails, the local outputs are complete and the message says so.
    """
    contrasts = dicom_contrasts(metadata, config)  # a multi-channel (Dixon) model: every image series
    chosen, fetched = series_to_fetch(url, study_uid, series_uid, all_series=contrasts is not None)
    record = {"path": dicomweb_source(url, study_uid, series_uid),  # as the case folder was chosen
              "dicomweb": {"url": public_url(url), "study_uid": study_uid, "series_uid": chosen.uid if chosen else None,
                           "series_description": chosen.description if chosen else None,
                           **({"series_fetched": [s.uid for s in fetched]} if contrasts else {})}}
    with tempfile.TemporaryDirectory(prefix="swinbob-dicomweb-") as folder:
        for number, series in enumerate(fetched):
            fetch_series(url, study_uid, series.uid, Path(folder), prefix=f"series{number:03d}_" if contrasts else "")
        report = segment_file(Path(folder), outdir, model, metadata, config, etta_config, checkpoint_info, preview,
                              progress, output_type="dicom", bounds=bounds, input_record=record,
                              series_uid=series_uid if contrasts else None)
    if store:
        report["dicomweb_stored"] = store_outputs(url, Path(outdir))
        io.write_text_atomic(Path(outdir) / "report.json", json.dumps(report, indent=2, default=json_default))
    return report


def store_outputs(url: str, outdir: Path) -> dict:
    """Store a case folder's DICOM objects (those present) on the server; ``{file: SOP Instance UID}``."""
    paths = [Path(outdir) / name for name in DICOM_FILES.values() if (Path(outdir) / name).exists()]
    if not paths:
        raise ValueError(f"{outdir}: no DICOM outputs to store (run with --output-type dicom)")
    return {"url": public_url(url), "instances": store_files(url, paths)}
