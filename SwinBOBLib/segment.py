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
import re
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from . import io
from .etta import EttaConfig
from .checkpoints import preprocessing_record
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
            return [(io.safe_name(_case_id(p), f"{p}: case id"), p) for p in scans]
    return [(io.safe_name(_case_id(source), f"{source}: case id"), source)]


def _case_id(path: Path) -> str:
    return io._stem(path) if path.is_file() else path.name


def _csv_inputs(path: Path) -> list[tuple[str, Path]]:
    with open(path, newline="", encoding="utf-8") as handle:
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
               structures=None, whole_labels: np.ndarray | None = None) -> list[dict]:
    """One row per structure (all of the scheme's, or ``structures``): see :data:`ORGAN_COLUMNS`.

    Absent structures have 0 voxels and empty entropy and shape cells. SOLF columns are empty
    when :mod:`SwinBOBLib.solf` is unavailable. ``whole_labels`` (same shape) is the prediction
    before a ``structures`` subset was cut out of it: SOLF's body (V_body of the normalised
    volume) is taken from it, so a subset reports the same features as the whole map.
    """
    from .labels import get_scheme

    s = get_scheme(scheme)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    flat = labels.ravel().astype(np.int64)
    counts = np.bincount(flat, minlength=s.max_index + 1)
    sums = np.bincount(flat, weights=entropy.ravel().astype(np.float64), minlength=s.max_index + 1)
    maxima = np.zeros(s.max_index + 1)
    np.maximum.at(maxima, flat, entropy.ravel())
    features = _solf_features(labels, spacing, whole_labels)
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


def _solf_features(labels: np.ndarray, spacing, whole_labels: np.ndarray | None = None) -> dict | None:
    try:
        from .solf import organ_features
    except ImportError:
        return None
    if not np.any(labels):
        return {}
    body = whole_labels if whole_labels is not None and np.any(whole_labels) else None
    return organ_features(labels, spacing=spacing, body_mask=body)


def write_organs_csv(rows: list[dict], path: Path) -> None:
    io.write_csv_atomic(path, rows, ORGAN_COLUMNS)


#: Files ``segment`` writes into a case folder (``labels``/``entropy`` with the image's suffix).
OUTPUT_FILES = ("labels", "entropy", "organs.csv", "report.json", "preview.png")
# Hidden temporary files of earlier, interrupted versions (atomic writes beside the target).
_OLD_TEMPORARY = re.compile(r"\.(labels|entropy|organs\.csv|report\.json|preview)[.]")


def _is_output_name(name: str, extra: Sequence[str] = ()) -> bool:
    if name in OUTPUT_FILES or name in extra or _OLD_TEMPORARY.match(name):
        return True
    stem, _, suffix = name.partition(".")
    return stem in ("labels", "entropy") and f".{suffix}" in io.IMAGE_SUFFIXES


def foreign_files(folder: Path, inputs: Sequence[Path] = (), extra: Sequence[str] = ()) -> list[str]:
    """What in ``folder`` SwinBOB did not write there (empty: the folder may be replaced whole).

    A folder is SwinBOB's when it does not exist, is empty, or holds only ``segment``'s outputs
    (:data:`OUTPUT_FILES`, plus ``extra`` names) including a ``report.json`` SwinBOB wrote, and none
    of ``inputs``.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or not folder.is_dir():
        return [folder.name]
    inputs_here = [str(p) for p in inputs if io.inside(p, folder)]
    entries = sorted(folder.iterdir())
    found = inputs_here + [e.name for e in entries
                           if not (_is_output_name(e.name, extra) and e.is_file() and not e.is_symlink())]
    if found or not entries:
        return found
    try:
        ours = "swinbob_version" in json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    return [] if ours else [e.name for e in entries]


def case_folder(outdir: Path, case: str, path: Path, batch: bool) -> Path:
    """The folder one case's outputs go to: OUTDIR (one scan) or OUTDIR/<case> (batch).

    One scan whose OUTDIR holds other files (the input itself, a user's ``report.json``, a DICOM
    series) goes to OUTDIR/<case> instead, with a note on stderr; nothing is ever written over
    them.

    Raises:
        FileExistsError: the chosen folder holds files SwinBOB did not write.
    """
    outdir = Path(outdir)
    target = outdir / io.safe_name(case, "case id") if batch else outdir
    found = foreign_files(target, [path])
    if found and not batch:
        sub = outdir / io.safe_name(case, "case id")
        found_in_sub = foreign_files(sub, [path])
        if not found_in_sub:
            print(f"note: {outdir} holds files SwinBOB did not write ({', '.join(found[:3])}); writing the "
                  f"outputs into {sub} instead", file=sys.stderr)
            return sub
        target, found = sub, found_in_sub
    if found:
        raise FileExistsError(f"{target}: holds files SwinBOB did not write ({', '.join(found[:3])}"
                              f"{', ...' if len(found) > 3 else ''}); refusing to write over them, choose a new "
                              "or empty output folder")
    if not io.inside(target, outdir):
        raise ValueError(f"{target}: is outside the output folder {outdir}")
    return target


def write_outputs(result: Segmentation, image: io.Image, outdir: Path, suffix: str, report: dict,
                  scheme: str = "ukbob", preview: bool = True) -> dict:
    """Write the five outputs of one scan into ``outdir``; returns ``{name: path}``.

    ``outdir`` is written file by file; :func:`segment_file` points it at a staging folder that is
    then moved into place whole.
    """
    from .preview import render_preview

    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"labels": outdir / f"labels{suffix}", "entropy": outdir / f"entropy{suffix}",
             "organs": outdir / "organs.csv", "report": outdir / "report.json"}
    io.save_labelmap(result.labels.array, image, paths["labels"], scheme=scheme)
    io.save_image(result.entropy, paths["entropy"], dtype=np.float32)
    structures = result.stats.get("structures")
    whole = result.whole_labels
    write_organs_csv(organ_rows(result.labels.array, result.entropy.array, image.spacing, scheme, structures,
                                whole_labels=whole.array if whole is not None else None),
                     paths["organs"])
    if preview:
        paths["preview"] = outdir / "preview.png"
        render_preview(image, paths["preview"], labels=result.labels.array, scheme=scheme,
                       heatmap=result.entropy.array, heatmap_label="entropy (normalised)",
                       title=report["input"]["path"], notice=model_notice(report.get("model")))
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
                 checkpoint_info: dict, preview: bool = True, progress=None, *, extra_outputs: Sequence[str] = (),
                 shown_warnings: set | None = None) -> dict:
    """Load, segment and write one scan; returns its report. Nothing is written for a bad input.

    The outputs are written into a hidden staging folder beside ``outdir`` and moved into place
    whole (:func:`io.staged_folder`), so a killed run never leaves new labels beside an old report.
    ``outdir`` may only hold an earlier run's outputs (``extra_outputs`` names more files that may
    be replaced); it is never the input's own folder.

    Args:
        progress: ``progress(stage, done, total)``, passed to :func:`inference.segment_image`.
        shown_warnings: warnings (with the file name taken out) already shown in this batch;
            repeats are recorded in the report but not printed again.

    Raises:
        FileExistsError: ``outdir`` holds files SwinBOB did not write (see :func:`foreign_files`).
    """
    found = foreign_files(outdir, [path], extra_outputs)
    if found:
        raise FileExistsError(f"{outdir}: holds files SwinBOB did not write ({', '.join(found[:3])}); "
                              "refusing to write over them")
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = io.load_image(path)
        load_s = time.perf_counter() - started
        result = segment_image(image, model, metadata, config, etta_config, progress)
        # Every preprocessing value and its source; one warning per value the checkpoint did not give.
        preprocessing = preprocessing_record(metadata, config, warn=True)
    messages = sorted({str(w.message) for w in caught})
    _show_warnings(messages, path, shown_warnings)
    stats = dict(result.stats)
    etta_stats = stats.pop("etta", None)
    report = {"swinbob_version": __version__, "input": _input_info(image, path),
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
    t0 = time.perf_counter()
    with io.staged_folder(outdir) as staging:
        written = write_outputs(result, image, staging, output_suffix(path), report, metadata.scheme, preview)
        report["outputs"] = {k: str(Path(outdir) / v.name) for k, v in written.items()}
        report["timings"]["write_s"] = time.perf_counter() - t0
        report["timings"]["wall_s"] = time.perf_counter() - started
        io.write_text_atomic(staging / "report.json", json.dumps(report, indent=2, default=_json_default))
    return report


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


def model_record(metadata, path=None) -> dict:
    """What produced the labels, for report.json and every display: ``name``, ``demo`` (True for a
    demonstration model such as the bundled one), ``description``, ``network``, ``path``."""
    name = getattr(metadata, "name", None) or (Path(path).stem if path else metadata.network)
    description = getattr(metadata, "description", None) or (
        f"{metadata.network} checkpoint, {metadata.out_channels} output channels in the "
        f"'{metadata.scheme}' scheme")
    return {"name": name, "demo": bool(getattr(metadata, "demo", False)), "description": description,
            "network": metadata.network, "path": str(path) if path else None}


def model_notice(model: dict | None) -> str | None:
    """One line naming the model; a demo model says it is not Swin-BOB."""
    if not model:
        return None
    if model.get("demo"):
        return f"DEMO MODEL {model['name']}: {model['description']}"
    return f"model {model['name']}: {model['description']}"


def load_model_for_cli(checkpoint: str | None, roi_size: int | None, **overrides):
    """``(model, metadata, checkpoint_info)`` from ``--checkpoint``; without one, the bundled demo model.

    ``overrides`` (``scheme``, ``variant``; None ignored) go to :func:`model.load_checkpoint`.
    """
    from .model import load_checkpoint

    from .resources import DEMO_MODEL, bundled

    path = Path(checkpoint) if checkpoint else bundled(DEMO_MODEL, "demo model")
    model, metadata = load_checkpoint(path, roi_size=roi_size, **overrides)
    info = {"path": str(path), "sha256": _file_digest(path), "metadata": metadata.to_dict(),
            "model": model_record(metadata, path)}
    return model, metadata, info


# ----------------------------------------------------------------------------- command line


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """``--spacing`` "1.5" or "1.5,1.5,3" -> mm per axis; values outside 0.1..30 mm are refused
    (a 0.001 mm grid asks for terabytes, a negative one is a typo, not a flip)."""
    if not text:
        return None
    try:
        spacing = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--spacing '{text}': expected one number or three comma-separated numbers (mm)") from None
    spacing = spacing * 3 if len(spacing) == 1 else spacing
    if len(spacing) != 3 or not all(0.1 <= v <= 30.0 for v in spacing):
        raise ValueError(f"--spacing '{text}': expected 1 or 3 voxel sizes between 0.1 and 30 mm")
    return spacing


def _config_from_args(args) -> tuple[InferenceConfig, EttaConfig]:
    from .inference import check_roi_size

    spacing = parse_spacing(args.spacing)
    check_roi_size(args.roi_size)
    config = InferenceConfig(device=args.device, roi_size=args.roi_size, sw_batch_size=args.sw_batch_size,
                             overlap=args.overlap, amp=not args.no_amp, low_memory=True if args.low_memory else None,
                             fast=args.fast, tta=args.tta, tta_flips=args.tta_flips, etta=args.etta,
                             structures=args.structures, contrast=args.contrast, target_spacing_mm=spacing,
                             intensity=args.intensity, progress=not args.quiet, seed=args.seed)
    etta_config = EttaConfig(steps=args.etta_steps, lr=args.etta_lr, optimizer=args.etta_optimizer,
                             patches=args.etta_patches, patch_scale=args.etta_patch_scale,
                             sw_batch_size=args.sw_batch_size, seed=args.seed)
    return config, etta_config


def _summary(case: str, report: dict) -> str:
    t = report["timings"]
    windows, flips = report["inference"].get("windows"), report["inference"].get("tta_flips", 1)
    count = f"{windows} windows" if flips == 1 else f"{windows} windows x {flips} flips = {windows * flips} passes"
    line = (f"{case}: {count} on {report['device']} in "
            f"{t['inference_s']:.1f} s, mean entropy {report['entropy']['mean']:.3f}")
    if report["entropy"]["etta_before"] is not None:
        line += (f", ETTA {report['entropy']['etta_before']:.3f} -> {report['entropy']['etta_after']:.3f} "
                 f"({t.get('etta_s', 0):.1f} s)")
    return line


def cmd_segment(args) -> int:
    from .progress import ProgressWriter, Terminated, terminate_as_interrupt

    with ProgressWriter(args.progress_json) as events, terminate_as_interrupt():
        try:
            return _segment_cases(args, events)
        except KeyboardInterrupt as stop:
            # A stopped run says so: the staging folder of the case in progress was removed.
            signal_name = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
            events.emit("stopped", signal=signal_name, message=f"stopped by {signal_name}; the case in "
                        "progress was not written, finished cases are complete")
            raise
        except (ValueError, OSError, MemoryError) as error:
            events.emit("error", message=str(error))
            raise


def _segment_cases(args, events) -> int:
    import torch

    config, etta_config = _config_from_args(args)
    cases = list_inputs(args.image)
    outdir = Path(args.output)
    batch = len(cases) > 1
    io.check_writable(outdir)  # before the model is loaded and an hour is spent on inference
    # One scan: refuse (or choose the subfolder) before inference; a batch decides case by case.
    targets = {} if batch else {cases[0][0]: case_folder(outdir, cases[0][0], cases[0][1], batch=False)}
    torch.manual_seed(args.seed)
    model, metadata, info = load_model_for_cli(args.checkpoint, args.roi_size, scheme=args.scheme,
                                               variant=args.variant)
    events.emit("start", cases=len(cases), model=info["model"])
    if args.progress_json != "-":
        print(model_notice(info["model"]))
    failures, shown = [], set() if batch else None
    for case, path in cases:
        report = lambda stage, done, total, case=case: events.emit(  # noqa: E731
            "progress", stage=stage, done=done, total=total, case=case)
        try:
            target = targets.get(case) or case_folder(outdir, case, path, batch)
            result = segment_file(path, target, model, metadata, config, etta_config, info,
                                  not args.no_preview, report, shown_warnings=shown)
        except (ValueError, OSError, MemoryError) as error:
            if not batch:
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
                    "(OUTDIR/<case> for several scans, or when OUTDIR holds files SwinBOB did not write, such "
                    "as the scan itself). A case is written into a hidden staging folder and moved into place "
                    "whole; nothing is ever written over an input or a user's files.")
    p.add_argument("image", help="scan file, DICOM folder, folder of scans, or CSV with an 'image' "
                   "column and optionally 'id' (a plain folder name: no '/', '..' or leading dot)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint (.pt: SwinBOB, UK_BOB trainer, Lightning, plain "
                   "state dict) or MONAI bundle (folder or .zip); default: the bundled demo model (trained on "
                   "synthetic phantoms). See `swinbob checkpoint info CKPT`")
    p.add_argument("--scheme", metavar="NAME", help="label scheme of the checkpoint's output channels (default: its "
                   "metadata, else the scheme whose channel count matches, e.g. btcv for 14)")
    p.add_argument("--variant", choices=("legacy", "fixed", "mergingv2"), help="Swin-UNETR patch merging the weights "
                   "were trained with (default: the checkpoint's; legacy, MONAI < 1.5, when it does not say)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--etta", action="store_true", help="entropy test-time adaptation (UKBOB sec. 3.3)")
    p.add_argument("--tta", action="store_true", help="flip-averaging test-time augmentation baseline (left-right flipped "
                   "windows have their paired left/right channels exchanged)")
    p.add_argument("--tta-flips", type=int, default=8, choices=(1, 4, 8), help="flip combinations averaged by --tta: each window runs this many times "
                   "(default %(default)s)")
    p.add_argument("--fast", action="store_true", help=f"coarser grid (>= {3.0} mm) and no window overlap")
    p.add_argument("--structures", metavar="NAMES", help="comma-separated structures or groups to keep")
    p.add_argument("--contrast", metavar="NAME", help="input channel(s) by name or index, e.g. water")
    p.add_argument("--roi-size", type=int, metavar="N", help="sliding-window edge in voxels (default: checkpoint's)")
    p.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--overlap", type=float, help="window overlap (default: the checkpoint's, else 0.25)")
    p.add_argument("--spacing", metavar="MM", help="resample to this spacing in mm, 0.1..30: one value or x,y,z "
                   "(default: the checkpoint's)")
    p.add_argument("--intensity", choices=("percentile", "ct_window", "zscore_nonzero", "zscore", "none"),
                   help="intensity normalisation (default: the checkpoint's; percentile when it does not say)")
    p.add_argument("--low-memory", action="store_true", help="accumulate probabilities on the CPU in float16")
    p.add_argument("--no-amp", action="store_true", help="run fp32 on the GPU (no bf16/fp16 autocast)")
    p.add_argument("--etta-steps", type=int, default=EttaConfig.steps, help="ETTA gradient steps on the scan "
                   "(default %(default)s)")
    p.add_argument("--etta-lr", type=float, default=EttaConfig.lr, help="ETTA Adam learning rate of the normalisation "
                   "parameters (default %(default)s)")
    p.add_argument("--etta-optimizer", choices=("adam", "sgd"), default=EttaConfig.optimizer)
    p.add_argument("--etta-patches", type=int, default=EttaConfig.patches, help="highest-entropy windows adapted on per "
                   "step (default %(default)s)")
    p.add_argument("--etta-patch-scale", type=float, default=EttaConfig.patch_scale, help="edge of the adaptation "
                   "patch over the window's, in (0, 1]; smaller is cheaper, rounded down to the network's stride "
                   "(default %(default)s)")
    p.add_argument("--no-preview", action="store_true", help="skip preview.png")
    p.add_argument("--seed", type=int, default=0, help="seeds torch (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress events ('-' for stdout): start, "
                   "progress (stage etta|sliding_window, done, total, case), case_done, case_error, error, done")
    p.set_defaults(func=cmd_segment)
