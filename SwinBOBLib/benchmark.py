"""``swinbob benchmark``: evaluate a checkpoint on a dataset with plain / TTA / ETTA inference.

The protocol of the UKBOB paper's tables 5 and 6: the model predicts in its own scheme, the
prediction and the reference are mapped into the *evaluation scheme* (by default the dataset's;
``zeroshot10`` for the paper's ten BTCV/AMOS organs with the adrenal glands merged), and only the
structures the model can represent there are scored. For each case and structure present in the
reference or the prediction: Dice, Hausdorff distance, HD95 and NSD in mm (:mod:`SwinBOBLib.metrics`).

Outputs in OUTDIR: ``per_case.csv`` (case, mode, structure, metrics, seconds), ``per_class.csv``
(mode, structure, means with bootstrap 95% CIs), ``summary.md`` (one row per mode, the layout of
the paper's table 6, then per-structure Dice), ``summary.json``, and ``progress.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import io, labels, metrics
from .datasets import Case, load_dataset, split_cases
from .etta import EttaConfig
from .inference import InferenceConfig, segment_image
from .model import load_checkpoint
from .progress import ProgressWriter, StopFlag

#: Mode name -> InferenceConfig switches. Adding a mode is one entry.
MODES = {
    "plain": {},
    "tta": {"tta": True},
    "etta": {"etta": True},
    "tta+etta": {"tta": True, "etta": True},
}

CASE_COLUMNS = ("case", "mode", "label", "structure", "dice", "hd_mm", "hd95_mm", "nsd", "pred_voxels",
                "ref_voxels", "seconds")
CLASS_COLUMNS = ("mode", "label", "structure", "cases", "dice", "dice_low", "dice_high", "hd95_mm",
                 "hd95_low", "hd95_high", "nsd")


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """Modes from "plain,tta,etta" (order kept, duplicates dropped); unknown names raise ValueError."""
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in MODES]
    if unknown or not names:
        raise ValueError(f"unknown benchmark mode(s) {unknown or names}; choose from {', '.join(MODES)}")
    return list(dict.fromkeys(names))


def evaluated_labels(model_scheme: str, eval_scheme: str) -> list[int]:
    """Labels of ``eval_scheme`` that a model of ``model_scheme`` can produce (same or merged)."""
    return sorted({c.dst_index for c in labels.correspondences(model_scheme, eval_scheme)})


def benchmark_cases(dataset, split: str) -> list[Case]:
    """The labelled cases to evaluate: ``all`` of them, or one split of the subject-level 80/10/10."""
    cases = [c for c in dataset.cases if c.label is not None]
    if split == "all":
        chosen = cases
    else:
        chosen = [c for c in split_cases(dataset)[split] if c.label is not None]
    if not chosen:
        raise ValueError(f"{dataset.source}: no labelled cases in split '{split}'")
    return chosen


def evaluate_case(case: Case, model, metadata, mode: str, dataset_scheme: str, eval_scheme: str,
                  config: InferenceConfig, etta_config: EttaConfig) -> list[dict]:
    """Segment one case in ``mode`` and score it; one row per evaluated structure."""
    image = io.load_image(list(case.images) if len(case.images) > 1 else case.images[0])
    reference = io.load_labelmap(case.label, scheme=dataset_scheme)
    started = time.perf_counter()
    options = {**config.to_dict(), **MODES[mode]}
    result = segment_image(image, model, metadata, InferenceConfig(**options), etta_config)
    seconds = time.perf_counter() - started
    predicted = labels.remap(result.labels.array, metadata.scheme, eval_scheme)
    truth = labels.remap(reference.array, dataset_scheme, eval_scheme)
    scheme = labels.get_scheme(eval_scheme)
    present = [v for v in evaluated_labels(metadata.scheme, eval_scheme)
               if np.any(predicted == v) or np.any(truth == v)]
    rows = metrics.per_class_metrics(predicted, truth, present, spacing=image.spacing)
    return [{"case": case.case_id, "mode": mode, "label": r["label"], "structure": scheme.name_of(r["label"]),
             "dice": r["dice"], "hd_mm": r["hd"], "hd95_mm": r["hd95"], "nsd": r["nsd"],
             "pred_voxels": r["pred_voxels"], "ref_voxels": r["ref_voxels"], "seconds": round(seconds, 3)}
            for r in rows]


def summarize(rows: Sequence[dict], modes: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Per-mode summary rows (table 6 layout) and per-(mode, structure) rows with bootstrap CIs."""
    per_class, per_mode = [], []
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        for label in sorted({r["label"] for r in mine}):
            sub = [r for r in mine if r["label"] == label]
            dice = metrics.bootstrap_ci([r["dice"] for r in sub])
            hd95 = metrics.bootstrap_ci([r["hd95_mm"] for r in sub])
            per_class.append({"mode": mode, "label": label, "structure": sub[0]["structure"], "cases": len(sub),
                              "dice": dice[0], "dice_low": dice[1], "dice_high": dice[2], "hd95_mm": hd95[0],
                              "hd95_low": hd95[1], "hd95_high": hd95[2],
                              "nsd": float(np.mean([r["nsd"] for r in sub]))})
        case_times = {r["case"]: r["seconds"] for r in mine}
        dice = metrics.bootstrap_ci([r["dice"] for r in mine])
        per_mode.append({"mode": mode, "dice": dice[0], "dice_low": dice[1], "dice_high": dice[2],
                         "hd_mm": _mean(r["hd_mm"] for r in mine), "hd95_mm": _mean(r["hd95_mm"] for r in mine),
                         "nsd": _mean(r["nsd"] for r in mine), "cases": len(case_times),
                         "seconds_per_case": _mean(case_times.values())})
    return per_mode, per_class


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def markdown_summary(per_mode: Sequence[dict], per_class: Sequence[dict], title: str) -> str:
    """The paper's table 6 layout (mean Dice and HD per mode) plus per-structure Dice per mode."""
    lines = [f"# {title}", "", "| Mode | Dice (95% CI) | HD95 (mm) | HD (mm) | NSD | cases | s / case |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in per_mode:
        lines.append(f"| {r['mode']} | {r['dice']:.3f} ({r['dice_low']:.3f}-{r['dice_high']:.3f}) | "
                     f"{r['hd95_mm']:.2f} | {r['hd_mm']:.2f} | {r['nsd']:.3f} | {r['cases']} | "
                     f"{r['seconds_per_case']:.1f} |")
    modes = [r["mode"] for r in per_mode]
    structures = list(dict.fromkeys(r["structure"] for r in per_class))
    lines += ["", "## Dice per structure", "", "| Structure | " + " | ".join(modes) + " |",
              "| --- |" + " --- |" * len(modes)]
    table = {(r["mode"], r["structure"]): r["dice"] for r in per_class}
    for name in structures:
        cells = [f"{table[(m, name)]:.3f}" if (m, name) in table else "-" for m in modes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_benchmark(dataset_path, checkpoint, outdir, modes=("plain",), split: str = "all",
                  eval_scheme: str | None = None, config: InferenceConfig | None = None,
                  etta_config: EttaConfig | None = None, limit: int | None = None,
                  progress_file=None, stop: StopFlag | None = None, roi_size: int | None = None) -> dict:
    """Evaluate ``checkpoint`` on a dataset in each mode and write the tables into ``outdir``.

    Returns the summary (also ``summary.json``); ``status`` is "stopped" when SIGINT/SIGTERM or
    ``stop`` ended the run early (the tables then hold the cases finished so far).
    """
    modes = parse_modes(modes)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(dataset_path)
    model, metadata = load_checkpoint(checkpoint, roi_size=roi_size)
    eval_scheme = labels.get_scheme(eval_scheme or dataset.scheme).name
    if not evaluated_labels(metadata.scheme, eval_scheme):
        raise ValueError(f"the model's scheme '{metadata.scheme}' shares no structure with '{eval_scheme}'")
    cases = benchmark_cases(dataset, split)[: limit or None]
    config = config or InferenceConfig()
    rows, status = [], "done"
    with ProgressWriter(progress_file if progress_file is not None else outdir / "progress.jsonl") as events, \
            (stop or StopFlag()) as flag:
        events.emit("start", cases=len(cases), modes=modes, eval_scheme=eval_scheme)
        for index, case in enumerate(cases):
            for mode in modes:
                if flag:
                    status = "stopped"
                    break
                rows += evaluate_case(case, model, metadata, mode, dataset.scheme, eval_scheme, config,
                                      etta_config or EttaConfig())
                events.emit("progress", case=case.case_id, mode=mode, done=index + 1, total=len(cases))
            if status == "stopped":
                break
        summary = _write_outputs(outdir, rows, modes, dataset, checkpoint, eval_scheme, status)
        events.emit(status, **{k: v for k, v in summary.items() if k != "modes"})
    return summary


def _write_outputs(outdir: Path, rows, modes, dataset, checkpoint, eval_scheme: str, status: str) -> dict:
    per_mode, per_class = summarize(rows, modes)
    io.write_csv_atomic(outdir / "per_case.csv", rows, CASE_COLUMNS, ".6g")
    io.write_csv_atomic(outdir / "per_class.csv", per_class, CLASS_COLUMNS, ".6g")
    title = f"{Path(str(checkpoint)).name} on {dataset.name} ({eval_scheme} structures)"
    io.write_text_atomic(outdir / "summary.md", markdown_summary(per_mode, per_class, title))
    summary = {"status": status, "dataset": str(dataset.source), "checkpoint": str(checkpoint),
               "eval_scheme": eval_scheme, "cases": len({r["case"] for r in rows}), "modes": per_mode}
    io.write_text_atomic(outdir / "summary.json", json.dumps(summary, indent=2))
    return summary


def cmd_benchmark(args) -> int:
    config = InferenceConfig(device=args.device, fast=args.fast, overlap=args.overlap, tta_flips=args.tta_flips,
                             progress=False)
    summary = run_benchmark(args.dataset, args.checkpoint, args.output, args.modes, args.split, args.eval_scheme,
                            config, EttaConfig(steps=args.etta_steps, lr=args.etta_lr), args.limit,
                            args.progress_json, roi_size=args.roi_size)
    print((Path(args.output) / "summary.md").read_text(encoding="utf-8"))
    return 0 if summary["status"] == "done" else 130


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark", help="evaluate a checkpoint on a dataset: plain, TTA, ETTA (Dice, HD95, NSD)",
        description="Segments each labelled case in every mode and scores the structures the model shares "
                    "with the evaluation scheme. Writes per_case.csv, per_class.csv, summary.md (one row "
                    "per mode) and summary.json into OUTDIR.")
    p.add_argument("--dataset", required=True, help="dataset folder (dataset.json), dataset.json or CSV")
    p.add_argument("--checkpoint", required=True, help="model checkpoint")
    p.add_argument("--modes", default="plain", help=f"comma-separated: {', '.join(MODES)} (default plain)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="cases to evaluate (default all labelled cases)")
    p.add_argument("--eval-scheme", help="score in this scheme, e.g. zeroshot10 (default: the dataset's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--roi-size", type=int, help="sliding-window edge (default: checkpoint's)")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--tta-flips", type=int, default=8, choices=(1, 4, 8))
    p.add_argument("--etta-steps", type=int, default=EttaConfig.steps)
    p.add_argument("--etta-lr", type=float, default=EttaConfig.lr)
    p.add_argument("--limit", type=int, help="evaluate at most N cases")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress ('-' for stdout)")
    p.set_defaults(func=cmd_benchmark)
