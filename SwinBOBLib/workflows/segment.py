"""``swinbob segment``: segment scans, write labels, entropy, per-organ table, report and preview.

One scan, a folder of scans, or a CSV listing them (column ``image``, optional ``id``) in one call;
the model is loaded once. For each scan OUTDIR (or OUTDIR/<id> in batch mode) receives:

* ``labels.<ext>``: UKBOB label map on the input's grid (``ext`` follows the input's format;
  NIfTI for DICOM input),
* ``entropy.<ext>``: per-voxel entropy normalised by log(C), float32 in [0, 1],
* ``organs.csv``: per structure: voxels, volume (ml), mean and max entropy, SOLF shape features,
* ``report.json``: inputs, checkpoint and its metadata, device, effective configuration,
  timings, entropy before/after ETTA, warnings,
* ``preview.png``: axial, coronal and sagittal slices with labels and entropy overlaid,
* with ``output_type="dicom"`` (a DICOM series input only): ``labels_seg.dcm`` (DICOM SEG),
  ``entropy_pmap.dcm`` (Parametric Map of the entropy in nats) and ``organs_sr.dcm`` (TID 1500
  report of the organ table with SOLF verdicts); see docs/dicom.md.

For a multi-channel (Dixon) model a DICOM folder's series are matched to the model's contrasts by
their DICOM attributes (:func:`SwinBOBLib.io.dicom_channels.read_dicom_channels`); the DICOM outputs
reference the first channel's series.

A bad input is refused before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from SwinBOBLib import __version__, io
from SwinBOBLib.inference.config import InferenceConfig, effective_config
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.inference.pipeline import segment_image
from SwinBOBLib.inference.preprocess import dicom_contrasts
from SwinBOBLib.inference.provenance import preprocessing_record
from SwinBOBLib.models.loading import load_checkpoint
from SwinBOBLib.outputs.dicom_common import source_files
from SwinBOBLib.outputs.dicom_outputs import OUTPUT_TYPES, write_dicom_outputs
from SwinBOBLib.outputs.folders import (
    foreign_files,
    json_default,
    output_suffix,
    write_outputs,
)
from SwinBOBLib.outputs.provenance import model_record
from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS, DEMO_MODEL, bundled
from SwinBOBLib.solf.bounds import load_bounds


def list_inputs(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """``[(case id, path)]`` for a scan, a folder of scans, or a CSV (``image`` column, optional ``id``).

    A folder holding DICOM files (and no NIfTI/NRRD/MHA files) is one DICOM series.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.is_file() and source.suffix.lower() == ".csv":
        return _csv_inputs(source)
    if source.is_dir():
        scans = sorted(p for p in source.iterdir() if p.is_file() and io.image_suffix(p) in io.IMAGE_SUFFIXES)
        if scans:
            return [(io.safe_name(_case_id(p), f"{p}: case id"), p) for p in scans]
    return [(io.safe_name(_case_id(source), f"{source}: case id"), source)]


def _case_id(path: Path) -> str:
    return io.image_stem(path) if path.is_file() else path.name


def _csv_inputs(path: Path) -> list[tuple[str, Path]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "image" not in rows[0]:
        raise ValueError(f"{path}: a batch CSV needs an 'image' column (and optionally 'id')")
    cases = []
    for number, row in enumerate(rows, start=2):
        if not (row.get("image") or "").strip():
            raise ValueError(f"{path}: line {number} has an empty 'image' cell")
        image = Path(row["image"].strip())
        image = image if image.is_absolute() else path.parent / image
        # The id names the case's output folder: OUTDIR/<id> must stay inside OUTDIR.
        case = io.safe_name((row.get("id") or "").strip() or _case_id(image), f"{path}: line {number}, id")
        cases.append((case, image))
    ids = [c[0] for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: case ids are not unique; add an 'id' column")
    return cases


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _input_info(image: io.Image, path: Path) -> dict:
    channels = {"dicom_channels": image.metadata["dicom_channels"]} if image.metadata.get("dicom_channels") else {}
    return {"path": str(path), "shape": list(image.array.shape), "spacing_mm": [round(s, 5) for s in image.spacing],
            "orientation": image.orientation, "channels": list(image.channel_names or []), **channels}


def segment_file(path: Path, outdir: Path, model, metadata, config: InferenceConfig, etta_config: EttaConfig,
                 checkpoint_info: dict, preview: bool = True, progress=None, *, extra_outputs: Sequence[str] = (),
                 shown_warnings: set | None = None, output_type: str = "nifti", bounds: Path | None = None,
                 series_uid: str | None = None, input_record: dict | None = None, keep: dict | None = None) -> dict:
    """Load, segment and write one scan; returns its report. Nothing is written for a bad input.

    The outputs are written into a hidden staging folder beside ``outdir`` and moved into place
    whole (:func:`io.staged_folder`), so a killed run never leaves new labels beside an old report.
    ``outdir`` may only hold an earlier run's outputs (``extra_outputs`` names more files that may
    be replaced); it is never the input's own folder.

    Args:
        progress: ``progress(stage, done, total)``, passed to :func:`~SwinBOBLib.inference.pipeline.segment_image`.
        shown_warnings: warnings (with the file name taken out) already shown in this batch;
            repeats are recorded in the report but not printed again.
        output_type: ``nifti`` (the default outputs) or ``dicom`` (also the DICOM SEG, entropy
            Parametric Map and TID 1500 report, :func:`write_dicom_outputs`; the input must be a
            DICOM series, refused before inference otherwise).
        bounds: SOLF bounds file that judges each structure in the DICOM report (default: the
            bundled bounds).
        series_uid: which series of a DICOM folder holding several (for a multi-channel model, the
            series whose grid settles a contrast found more than once).
        input_record: more about the input for ``report.json`` (e.g. the DICOMweb study it came from).
        keep: filled, once the outputs are in place, with the input as read (``"image"``), the arrays
            written (``"labels"``, ``"entropy"``) and their paths (``"outputs"``), to measure next.

    Raises:
        FileExistsError: ``outdir`` holds files SwinBOB did not write (see :func:`foreign_files`).
        NoDicomSourceError: ``output_type`` dicom for an input that is not a DICOM series.
    """
    found = foreign_files(outdir, [path], extra_outputs)
    if found:
        raise FileExistsError(f"{outdir}: holds files SwinBOB did not write ({', '.join(found[:3])}); "
                              "refusing to write over them")
    ours = [e.name for e in Path(outdir).iterdir()] if Path(outdir).is_dir() else []
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = io.load_image(path, series_uid=series_uid, contrasts=dicom_contrasts(metadata, config))
        load_s = time.perf_counter() - started
        solf_bounds = _dicom_output_checks(image, output_type, bounds)
        result = segment_image(image, model, metadata, config, etta_config, progress)
        # Every preprocessing value and its source; one warning per value the checkpoint did not give.
        preprocessing = preprocessing_record(metadata, config, warn=True)
    messages = sorted({str(w.message) for w in caught})
    _show_warnings(messages, path, shown_warnings)
    report = _report(image, path, result, metadata, config, etta_config, checkpoint_info, preprocessing, messages,
                     load_s, input_record)
    t0 = time.perf_counter()
    with io.staged_folder(outdir, replaceable=ours) as staging:  # files saved there meanwhile are kept
        written = write_outputs(result, image, staging, output_suffix(path), report, metadata.scheme, preview)
        if output_type == "dicom":
            written.update(write_dicom_outputs(result, image, staging, report, metadata.scheme, *solf_bounds))
        report["outputs"] = {k: str(Path(outdir) / v.name) for k, v in written.items()}
        report["timings"]["write_s"] = time.perf_counter() - t0
        report["timings"]["wall_s"] = time.perf_counter() - started
        io.write_text_atomic(staging / "report.json", json.dumps(report, indent=2, default=json_default))
    if keep is not None:
        keep.update(image=image, labels=result.labels.array, entropy=result.entropy.array, outputs=report["outputs"])
    return report


def _report(image, path, result, metadata, config, etta_config, checkpoint_info, preprocessing, messages,
            load_s: float, input_record: dict | None) -> dict:
    """The report of one scan (``report.json``) before its outputs are written."""
    stats = dict(result.stats)
    etta_stats = stats.pop("etta", None)
    return {"swinbob_version": __version__, "input": {**_input_info(image, path), **(input_record or {})},
            "model": checkpoint_info.get("model") or model_record(metadata, checkpoint_info.get("path")),
            "checkpoint": checkpoint_info,
            "device": stats.get("device"), "host": platform.node(), "config": effective_config(config, metadata),
            "etta_config": asdict(etta_config) if config.etta else None, "preprocessing": preprocessing,
            "timings": {"load_s": load_s, **stats.pop("timings")},
            "entropy": {"mean": stats.get("mean_entropy"),
                        "etta_before": etta_stats["entropy_before"] if etta_stats else None,
                        "etta_after": etta_stats["entropy_after"] if etta_stats else None,
                        "etta_measured_on": etta_stats["entropy_measured_on"] if etta_stats else None},
            "etta": {k: v for k, v in etta_stats.items() if k != "config"} if etta_stats else None,
            "inference": stats, "warnings": messages}


def _dicom_output_checks(image: io.Image, output_type: str, bounds: Path | None) -> tuple:
    """Before inference: the output type is known and, for DICOM output, the input is a DICOM
    series; returns ``(SOLF bounds, their file name)`` for the report (None, None for NIfTI)."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output type '{output_type}': expected one of {', '.join(OUTPUT_TYPES)}")
    if output_type != "dicom":
        return None, None
    source_files(image)  # raises NoDicomSourceError for a NIfTI/NRRD/MHA input
    path = Path(bounds) if bounds else bundled(DEFAULT_BOUNDS, "SOLF bounds")
    return load_bounds(path), path.name


def _show_warnings(messages: Sequence[str], path: Path, shown: set | None) -> None:
    """Print each warning once per batch: the same warning for the next case is not repeated."""
    for message in messages:
        key = message.replace(str(path), "<input>")
        if shown is not None:
            if key in shown:
                continue
            shown.add(key)
        # Printed, not re-raised as a Python warning: this function decides what repeats (not the
        # warnings registry's once-per-place rule) and the user sees it wherever warnings are captured.
        note = " (shown once; later cases' reports list it too)" if shown is not None else ""
        print(f"warning: {message}{note}", file=sys.stderr)


def load_model_for_cli(checkpoint: str | None, roi_size: int | None, **overrides):
    """``(model, metadata, checkpoint_info)`` from ``--checkpoint``; without one, the bundled demo model.

    ``overrides`` (``scheme``, ``variant``; None ignored) go to :func:`~SwinBOBLib.models.loading.load_checkpoint`.
    """
    path = Path(checkpoint) if checkpoint else bundled(DEMO_MODEL, "demo model")
    model, metadata = load_checkpoint(path, roi_size=roi_size, **overrides)
    info = {"path": str(path), "sha256": _file_digest(path), "metadata": metadata.to_dict(),
            "model": model_record(metadata, path)}
    return model, metadata, info
