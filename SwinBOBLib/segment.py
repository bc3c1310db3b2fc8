"""``swinbob segment``: segment scans, write labels, entropy, per-organ table, report and preview.

One scan, a folder of scans, or a CSV listing them (column ``image``, optional ``id``) in one call;
the model is loaded once. For each scan OUTDIR (or OUTDIR/<id> in batch mode) receives:

* ``labels.<ext>``: UKBOB label map on the input's grid (``ext`` follows the input's format;
  NIfTI for DICOM input),
* ``entropy.<ext>``: per-voxel entropy normalised by log(C), float32 in [0, 1],
* ``organs.csv``: per structure: voxels, volume (ml), mean and max entropy, SOLF shape features,
* ``report.json``: inputs, checkpoint and its metadata, device, effective configuration,
  timings, entropy before/after ETTA, warnings,
* ``preview.png``: axial, coronal and sagittal slices with labels and entropy overlaid.

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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import __version__
from . import io
from .etta import EttaConfig
from .inference import InferenceConfig, Segmentation, effective_config, segment_image

ORGAN_COLUMNS = ("index", "name", "voxels", "volume_ml", "mean_entropy", "max_entropy", "volume_mm3",
                 "normalized_volume", "surface_mm2", "sphericity", "eccentricity")
_SOLF_KEYS = ORGAN_COLUMNS[6:]


# ----------------------------------------------------------------------------- inputs


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
        scans = sorted(p for p in source.iterdir() if p.is_file() and io._suffix(p) in io.IMAGE_SUFFIXES)
        if scans:
            return [(_case_id(p), p) for p in scans]
    return [(_case_id(source), source)]


def _case_id(path: Path) -> str:
    return io._stem(path) if path.is_file() else path.name


def _csv_inputs(path: Path) -> list[tuple[str, Path]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "image" not in rows[0]:
        raise ValueError(f"{path}: a batch CSV needs an 'image' column (and optionally 'id')")
    cases = []
    for row in rows:
        image = Path(row["image"])
        image = image if image.is_absolute() else path.parent / image
        cases.append((row.get("id") or _case_id(image), image))
    ids = [c[0] for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: case ids are not unique; add an 'id' column")
    return cases


def output_suffix(path: Path) -> str:
    """The input's format for outputs (``.nii.gz`` for DICOM folders and unknown suffixes)."""
    suffix = io._suffix(Path(path)) if Path(path).is_file() else None
    if suffix in (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"):
        return suffix
    if suffix == ".seg.nrrd":
        return ".nrrd"
    return ".nii.gz"


# ----------------------------------------------------------------------------- outputs


def organ_rows(labels: np.ndarray, entropy: np.ndarray, spacing, scheme: str = "ukbob",
               structures=None) -> list[dict]:
    """One row per structure (all of the scheme's, or ``structures``): see :data:`ORGAN_COLUMNS`.

    Absent structures have 0 voxels and empty entropy and shape cells. SOLF columns are empty
    when :mod:`SwinBOBLib.solf` is unavailable.
    """
    from .labels import get_scheme

    s = get_scheme(scheme)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    flat = labels.ravel().astype(np.int64)
    counts = np.bincount(flat, minlength=s.max_index + 1)
    sums = np.bincount(flat, weights=entropy.ravel().astype(np.float64), minlength=s.max_index + 1)
    maxima = np.zeros(s.max_index + 1)
    np.maximum.at(maxima, flat, entropy.ravel())
    features = _solf_features(labels, spacing)
    rows = []
    for index in (structures if structures is not None else s.indices):
        n = int(counts[index])
        row = {"index": index, "name": s.name_of(index), "voxels": n, "volume_ml": round(n * voxel_ml, 4),
               "mean_entropy": round(sums[index] / n, 5) if n else "",
               "max_entropy": round(float(maxima[index]), 5) if n else ""}
        found = features.get(index, {}) if features is not None else {}
        row.update({k: (round(float(found[k]), 6) if k in found else "") for k in _SOLF_KEYS})
        rows.append(row)
    return rows


def _solf_features(labels: np.ndarray, spacing) -> dict | None:
    try:
        from .solf import organ_features
    except ImportError:
        return None
    if not np.any(labels):
        return {}
    return organ_features(labels, spacing=spacing)


def write_organs_csv(rows: list[dict], path: Path) -> None:
    io.write_csv_atomic(path, rows, ORGAN_COLUMNS)


def write_outputs(result: Segmentation, image: io.Image, outdir: Path, suffix: str, report: dict,
                  scheme: str = "ukbob", preview: bool = True) -> dict:
    """Write the five outputs of one scan into ``outdir``; returns ``{name: path}``."""
    from .preview import render_preview

    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"labels": outdir / f"labels{suffix}", "entropy": outdir / f"entropy{suffix}",
             "organs": outdir / "organs.csv", "report": outdir / "report.json"}
    io.save_labelmap(result.labels.array, image, paths["labels"], scheme=scheme)
    io.save_image(result.entropy, paths["entropy"], dtype=np.float32)
    structures = result.stats.get("structures")
    write_organs_csv(organ_rows(result.labels.array, result.entropy.array, image.spacing, scheme, structures),
                     paths["organs"])
    if preview:
        paths["preview"] = outdir / "preview.png"
        render_preview(image, paths["preview"], labels=result.labels.array, scheme=scheme,
                       heatmap=result.entropy.array, heatmap_label="entropy (normalised)",
                       title=report["input"]["path"])
    report["outputs"] = {k: str(v) for k, v in paths.items()}
    io.write_text_atomic(paths["report"], json.dumps(report, indent=2, default=_json_default))
    return paths


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    return str(value)


# ----------------------------------------------------------------------------- one scan


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _input_info(image: io.Image, path: Path) -> dict:
    return {"path": str(path), "shape": list(image.array.shape), "spacing_mm": [round(s, 5) for s in image.spacing],
            "orientation": image.orientation, "channels": list(image.channel_names or [])}


def segment_file(path: Path, outdir: Path, model, metadata, config: InferenceConfig, etta_config: EttaConfig,
                 checkpoint_info: dict, preview: bool = True, progress=None) -> dict:
    """Load, segment and write one scan; returns its report. Nothing is written for a bad input.

    ``progress(stage, done, total)`` is passed to :func:`inference.segment_image`.
    """
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = io.load_image(path)
        load_s = time.perf_counter() - started
        result = segment_image(image, model, metadata, config, etta_config, progress)
    messages = sorted({str(w.message) for w in caught})
    for message in messages:
        warnings.warn(message)
    stats = dict(result.stats)
    etta_stats = stats.pop("etta", None)
    report = {"swinbob_version": __version__, "input": _input_info(image, path), "checkpoint": checkpoint_info,
              "device": stats.get("device"), "host": platform.node(), "config": effective_config(config, metadata),
              "etta_config": asdict(etta_config) if config.etta else None,
              "timings": {"load_s": load_s, **stats.pop("timings")},
              "entropy": {"mean": stats.get("mean_entropy"),
                          "etta_before": etta_stats["entropy_before"] if etta_stats else None,
                          "etta_after": etta_stats["entropy_after"] if etta_stats else None,
                          "etta_measured_on": etta_stats["entropy_measured_on"] if etta_stats else None},
              "etta": {k: v for k, v in etta_stats.items() if k != "config"} if etta_stats else None,
              "inference": stats, "warnings": messages}
    t0 = time.perf_counter()
    write_outputs(result, image, outdir, output_suffix(path), report, metadata.scheme, preview)
    report["timings"]["write_s"] = time.perf_counter() - t0
    report["timings"]["wall_s"] = time.perf_counter() - started
    io.write_text_atomic(outdir / "report.json", json.dumps(report, indent=2, default=_json_default))
    return report


def load_model_for_cli(checkpoint: str | None, roi_size: int | None):
    """``(model, metadata, checkpoint_info)`` from ``--checkpoint``; without one, the bundled demo model."""
    from .model import load_checkpoint

    from .resources import DEMO_MODEL, bundled

    path = Path(checkpoint) if checkpoint else bundled(DEMO_MODEL, "demo model")
    model, metadata = load_checkpoint(path, roi_size=roi_size)
    info = {"path": str(path), "sha256": _file_digest(path), "metadata": metadata.to_dict()}
    return model, metadata, info


# ----------------------------------------------------------------------------- command line


def _config_from_args(args) -> tuple[InferenceConfig, EttaConfig]:
    spacing = tuple(float(v) for v in args.spacing.split(",")) if args.spacing else None
    if spacing is not None and len(spacing) == 1:
        spacing = spacing * 3
    config = InferenceConfig(device=args.device, roi_size=args.roi_size, sw_batch_size=args.sw_batch_size,
                             overlap=args.overlap, amp=not args.no_amp, low_memory=True if args.low_memory else None,
                             fast=args.fast, tta=args.tta, tta_flips=args.tta_flips, etta=args.etta,
                             structures=args.structures, contrast=args.contrast, target_spacing_mm=spacing,
                             intensity=args.intensity, progress=not args.quiet, seed=args.seed)
    etta_config = EttaConfig(steps=args.etta_steps, lr=args.etta_lr, optimizer=args.etta_optimizer,
                             patches=args.etta_patches, sw_batch_size=args.sw_batch_size,
                             entropy_before=args.etta_entropy, seed=args.seed)
    return config, etta_config


def _summary(case: str, report: dict) -> str:
    t = report["timings"]
    line = (f"{case}: {report['inference'].get('windows')} windows on {report['device']} in "
            f"{t['inference_s']:.1f} s, mean entropy {report['entropy']['mean']:.3f}")
    if report["entropy"]["etta_before"] is not None:
        line += (f", ETTA {report['entropy']['etta_before']:.3f} -> {report['entropy']['etta_after']:.3f} "
                 f"({t.get('etta_s', 0):.1f} s)")
    return line


def cmd_segment(args) -> int:
    from .progress import ProgressWriter

    with ProgressWriter(args.progress_json) as events:
        try:
            return _segment_cases(args, events)
        except (ValueError, FileNotFoundError) as error:
            events.emit("error", message=str(error))
            raise


def _segment_cases(args, events) -> int:
    import torch

    config, etta_config = _config_from_args(args)
    cases = list_inputs(args.image)
    torch.manual_seed(args.seed)
    model, metadata, info = load_model_for_cli(args.checkpoint, args.roi_size)
    outdir = Path(args.output)
    events.emit("start", cases=len(cases))
    failures = []
    for case, path in cases:
        target = outdir if len(cases) == 1 else outdir / case
        report = lambda stage, done, total, case=case: events.emit(  # noqa: E731
            "progress", stage=stage, done=done, total=total, case=case)
        try:
            result = segment_file(path, target, model, metadata, config, etta_config, info,
                                  not args.no_preview, report)
        except (ValueError, FileNotFoundError) as error:
            if len(cases) == 1:
                raise
            failures.append(case)
            events.emit("case_error", case=case, message=str(error))
            print(f"{case}: error: {error}", file=sys.stderr if args.progress_json == "-" else sys.stdout)
            continue
        events.emit("case_done", case=case, outdir=str(target))
        if args.progress_json != "-":
            print(_summary(case, result))
    events.emit("done", failed=failures)
    if args.progress_json != "-":
        print(f"wrote {len(cases) - len(failures)} of {len(cases)} case(s) to {outdir}")
    return 1 if failures else 0


def register(subparsers) -> None:
    """The ``segment`` command."""
    p = subparsers.add_parser(
        "segment", help="segment scans with Swin-BOB (entropy map, optional ETTA/TTA)",
        description="Segment a scan (or a folder / CSV of scans) into the 71 UKBOB structures. Writes "
                    "labels, entropy, organs.csv, report.json and preview.png into OUTDIR "
                    "(OUTDIR/<case> for several scans).")
    p.add_argument("image", help="scan file, DICOM folder, folder of scans, or CSV with an 'image' column")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--checkpoint", metavar="CKPT", help="Swin-BOB checkpoint or plain state dict (.pt); "
                   "default: the bundled demo model (trained on synthetic phantoms)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--etta", action="store_true", help="entropy test-time adaptation (UKBOB sec. 3.3)")
    p.add_argument("--tta", action="store_true", help="flip-averaging test-time augmentation baseline")
    p.add_argument("--tta-flips", type=int, default=8, choices=(1, 4, 8), help="flips averaged by --tta")
    p.add_argument("--fast", action="store_true", help=f"coarser grid (>= {3.0} mm) and no window overlap")
    p.add_argument("--structures", metavar="NAMES", help="comma-separated structures or groups to keep")
    p.add_argument("--contrast", metavar="NAME", help="input channel(s) by name or index, e.g. water")
    p.add_argument("--roi-size", type=int, metavar="N", help="sliding-window edge in voxels (default: checkpoint's)")
    p.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap (default 0.25)")
    p.add_argument("--spacing", metavar="MM", help="resample to this spacing: one value or x,y,z")
    p.add_argument("--intensity", choices=("percentile", "ct_window", "none"),
                   help="intensity normalisation (default: checkpoint's; ct_window for CT)")
    p.add_argument("--low-memory", action="store_true", help="accumulate probabilities on the CPU in float16")
    p.add_argument("--no-amp", action="store_true", help="run fp32 on the GPU (no bf16/fp16 autocast)")
    p.add_argument("--etta-steps", type=int, default=EttaConfig.steps, help="ETTA gradient steps")
    p.add_argument("--etta-lr", type=float, default=EttaConfig.lr, help="ETTA learning rate")
    p.add_argument("--etta-optimizer", choices=("adam", "sgd"), default=EttaConfig.optimizer)
    p.add_argument("--etta-patches", type=int, default=EttaConfig.patches, help="patches adapted on per step")
    p.add_argument("--etta-entropy", choices=("patches", "scan"), default=EttaConfig.entropy_before,
                   help="measure entropy before/after ETTA on the adaptation patches (fast) or the whole scan")
    p.add_argument("--no-preview", action="store_true", help="skip preview.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress events ('-' for stdout): start, "
                   "progress (stage etta|sliding_window, done, total, case), case_done, case_error, error, done")
    p.set_defaults(func=cmd_segment)
