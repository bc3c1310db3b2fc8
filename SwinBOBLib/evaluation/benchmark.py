"""The benchmark of a checkpoint on a dataset: each labelled case segmented in every mode (plain,
TTA, ETTA), the structures it shares with the evaluation scheme scored (Dice, HD95, NSD), and
per-case, per-class and summary tables with bootstrap intervals.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from SwinBOBLib import io, labels
from SwinBOBLib.evaluation.metrics import bootstrap_ci, per_class_metrics
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.inference.pipeline import segment_image
from SwinBOBLib.io.datasets import Case, load_dataset, split_cases
from SwinBOBLib.models.loading import load_checkpoint
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.runtime.progress import ProgressWriter
from SwinBOBLib.runtime.stop import StopFlag

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
    reference = reference_on_image_grid(io.load_labelmap(case.label, scheme=dataset_scheme), image, case)
    started = time.perf_counter()
    options = {**config.to_dict(), **MODES[mode]}
    result = segment_image(image, model, metadata, InferenceConfig(**options), etta_config)
    seconds = time.perf_counter() - started
    predicted = labels.remap(result.labels.array, metadata.scheme, eval_scheme)
    truth = labels.remap(reference.array, dataset_scheme, eval_scheme)
    scheme = labels.get_scheme(eval_scheme)
    present = [v for v in evaluated_labels(metadata.scheme, eval_scheme)
               if np.any(predicted == v) or np.any(truth == v)]
    rows = per_class_metrics(predicted, truth, present, spacing=image.spacing)
    return [{"case": case.case_id, "mode": mode, "label": r["label"], "structure": scheme.name_of(r["label"]),
             "dice": r["dice"], "hd_mm": r["hd"], "hd95_mm": r["hd95"], "nsd": r["nsd"],
             "pred_voxels": r["pred_voxels"], "ref_voxels": r["ref_voxels"], "seconds": round(seconds, 3)}
            for r in rows]


def reference_on_image_grid(reference: io.Image, image: io.Image, case: Case) -> io.Image:
    """The reference label map on the image's voxel grid, or ValueError naming the case.

    A reference stored in another voxel order (e.g. RAS beside an LPS image) is reoriented exactly
    (flips and permutations, no interpolation); any other difference (a shift, another spacing or
    shape) is refused, as ``train`` refuses it, instead of being scored voxel for voxel.
    """
    if io.grid_difference(reference, image) is None:
        return reference
    if reference.orientation != image.orientation:
        moved, _ = io.reorient(reference, image.orientation)
        if io.grid_difference(moved, image) is None:
            return moved
    raise ValueError(f"case {case.case_id}: the reference {case.label} is not on the grid of its image "
                     f"{case.images[0]} ({io.grid_difference(reference, image)}); resample it onto the image's "
                     "grid first")


def summarize(rows: Sequence[dict], modes: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Per-mode summary rows (table 6 layout) and per-(mode, structure) rows with bootstrap CIs.

    Per mode: means over cases of each case's mean over its structures, the Dice CI a bootstrap of
    those case means. Per structure: the CI is a bootstrap of that structure's values across cases
    (one row per case). One case gives NaN bounds (no CI).
    """
    per_class, per_mode = [], []
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        for label in sorted({r["label"] for r in mine}):
            sub = [r for r in mine if r["label"] == label]
            dice = bootstrap_ci([r["dice"] for r in sub])
            hd95 = bootstrap_ci([r["hd95_mm"] for r in sub])
            per_class.append({"mode": mode, "label": label, "structure": sub[0]["structure"], "cases": len(sub),
                              "dice": dice[0], "dice_low": dice[1], "dice_high": dice[2], "hd95_mm": hd95[0],
                              "hd95_low": hd95[1], "hd95_high": hd95[2],
                              "nsd": float(np.mean([r["nsd"] for r in sub]))})
        case_times = {r["case"]: r["seconds"] for r in mine}
        means = case_means(mine)  # the CI resamples cases, not pooled (case, structure) rows
        dice = bootstrap_ci([m["dice"] for m in means])
        per_mode.append({"mode": mode, "dice": dice[0], "dice_low": dice[1], "dice_high": dice[2],
                         "hd_mm": _mean(m["hd_mm"] for m in means), "hd95_mm": _mean(m["hd95_mm"] for m in means),
                         "nsd": _mean(m["nsd"] for m in means), "cases": len(case_times),
                         "seconds_per_case": _mean(case_times.values())})
    return per_mode, per_class


def case_means(rows: Sequence[dict]) -> list[dict]:
    """One dict per case: the mean of ``dice``, ``hd_mm``, ``hd95_mm`` and ``nsd`` over its structures."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    return [{key: _mean(r[key] for r in rows if r["case"] == case) for key in ("dice", "hd_mm", "hd95_mm", "nsd")}
            for case in cases]


def _ci(value: float, low: float, high: float) -> str:
    """``mean (low-high)``, or ``mean (no CI: 1 case)`` when the bootstrap had a single case."""
    if np.isnan(low):
        return f"{value:.3f} (no CI: 1 case)"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def markdown_summary(per_mode: Sequence[dict], per_class: Sequence[dict], title: str) -> str:
    """The paper's table 6 layout (mean Dice and HD per mode) plus per-structure Dice per mode."""
    lines = [f"# {title}", "", "Means over cases of each case's mean over its structures; the 95% CI is a "
             "bootstrap over cases. A structure missed or hallucinated scores HD = HD95 = the image diagonal.",
             "", "| Mode | Dice (95% CI) | HD95 (mm) | HD (mm) | NSD | cases | s / case |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in per_mode:
        lines.append(f"| {r['mode']} | {_ci(r['dice'], r['dice_low'], r['dice_high'])} | "
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
                  progress_file=None, stop: StopFlag | None = None, roi_size: int | None = None,
                  progress_bar: bool = False) -> dict:
    """Evaluate ``checkpoint`` on a dataset in each mode and write the tables into ``outdir``.

    Returns the summary (also ``summary.json``); ``status`` is "stopped" when SIGINT/SIGTERM or
    ``stop`` ended the run early (the tables then hold the cases finished so far and the summary
    says "partial"). A case that cannot be read or scored is reported (stderr, a ``case_error``
    event, ``failed`` in the summary) and the run goes on. ``progress_bar`` shows a bar per
    case and mode with the time left. ``outdir`` must be new, empty or an earlier benchmark's
    (:func:`~SwinBOBLib.io.files.claim_output_folder`); ``limit`` at least 1.
    """
    modes = parse_modes(modes)
    check_limit(limit)
    outdir = io.check_output_path(outdir)
    with folder_lock(outdir):  # one run per output folder
        _adopt_earlier_version(outdir)
        io.claim_output_folder(outdir, "benchmark", [dataset_path, checkpoint])
        outdir.mkdir(parents=True, exist_ok=True)
        return _run(dataset_path, checkpoint, outdir, modes, split, eval_scheme, config, etta_config, limit,
                    progress_file, stop, roi_size, progress_bar)


#: What a benchmark writes into its output folder.
OUTPUT_FILES = ("per_case.csv", "per_class.csv", "summary.md", "summary.json", "progress.jsonl")


def _adopt_earlier_version(outdir: Path) -> None:
    """An output folder of an earlier version (no marker) holding only a benchmark's files, with its
    summary.json, is marked as the benchmark's, so it can be written again."""
    if not outdir.is_dir() or (outdir / io.OUTPUT_MARKER).exists():
        return
    names = {e.name for e in outdir.iterdir() if not e.name.startswith(".")}
    try:
        summary = json.loads((outdir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if names <= set(OUTPUT_FILES) and isinstance(summary, dict) and "modes" in summary:
        io.write_text_atomic(outdir / io.OUTPUT_MARKER, json.dumps({"command": "benchmark"}) + "\n")


def check_limit(limit: int | None) -> None:
    """``--limit`` must be a whole number of cases, at least 1 (None: every case)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit {limit}: expected a number of cases of at least 1 (leave it out for every case)")


def _run(dataset_path, checkpoint, outdir: Path, modes, split, eval_scheme, config, etta_config, limit,
         progress_file, stop, roi_size, progress_bar) -> dict:
    dataset = load_dataset(dataset_path)
    model, metadata = load_checkpoint(checkpoint, roi_size=roi_size)
    eval_scheme = labels.get_scheme(eval_scheme or dataset.scheme).name
    if not evaluated_labels(metadata.scheme, eval_scheme):
        raise ValueError(f"the model's scheme '{metadata.scheme}' shares no structure with '{eval_scheme}'")
    cases = benchmark_cases(dataset, split)[: limit or None]
    config = config or InferenceConfig()
    rows, status, failed = [], "done", []
    with ProgressWriter(progress_file if progress_file is not None else outdir / "progress.jsonl",
                        [dataset_path, checkpoint]) as events, \
            (stop if stop is not None else StopFlag()) as flag, \
            _progress_bar(progress_bar, len(cases) * len(modes)) as bar:
        events.emit("start", cases=len(cases), modes=modes, eval_scheme=eval_scheme)
        _announce_costs(modes, config, etta_config or EttaConfig(), progress_bar)
        for index, case in enumerate(cases):
            for mode in modes:
                if flag:
                    status = "stopped"
                    break
                bar.set_description(f"{case.case_id} {mode}")
                try:
                    rows += evaluate_case(case, model, metadata, mode, dataset.scheme, eval_scheme, config,
                                          etta_config or EttaConfig())
                except (ValueError, OSError, MemoryError) as error:
                    failed.append(_report_failure(case, mode, error, events, bar))
                    bar.update(len(modes) - modes.index(mode))
                    break  # the case's other modes would fail the same way
                bar.update(1)
                events.emit("progress", case=case.case_id, mode=mode, done=index + 1, total=len(cases))
            if status == "stopped":
                break
        summary = _write_outputs(outdir, rows, modes, dataset, checkpoint, eval_scheme, status,
                                 failed=failed, planned=len(cases))
        events.emit(status, **{k: v for k, v in summary.items() if k != "modes"})
    return summary


def _progress_bar(enabled: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="run", disable=not enabled, dynamic_ncols=True,
                bar_format="{desc}{n_fmt}/{total_fmt} case-modes [{elapsed}<{remaining}] {bar}")


def _announce_costs(modes, config: InferenceConfig, etta_config: EttaConfig, enabled: bool) -> None:
    """Say before the first case what TTA and ETTA cost, so a long run is not a surprise."""
    import sys

    if not enabled:
        return
    if any(MODES[m].get("tta") for m in modes) and config.tta_flips > 1:
        print(f"note: TTA runs every window {config.tta_flips} times (--tta-flips {config.tta_flips}): each "
              f"tta case takes about {config.tta_flips}x the plain time", file=sys.stderr)
    if any(MODES[m].get("etta") for m in modes):
        print(f"note: ETTA adds {etta_config.steps} adaptation step(s) on {etta_config.patches} patch(es) "
              "before each etta case's inference", file=sys.stderr)


def _report_failure(case: Case, mode: str, error: BaseException, events, bar) -> dict:
    import sys

    message = str(error) or type(error).__name__
    events.emit("case_error", case=case.case_id, mode=mode, message=message)
    bar.write(f"{case.case_id}: error: {message} (skipped; the other cases go on)", file=sys.stderr)
    return {"case": case.case_id, "mode": mode, "error": message}


def _write_outputs(outdir: Path, rows, modes, dataset, checkpoint, eval_scheme: str, status: str,
                   failed=(), planned: int | None = None) -> dict:
    per_mode, per_class = summarize(rows, modes)
    io.write_csv_atomic(outdir / "per_case.csv", rows, CASE_COLUMNS, ".6g")
    io.write_csv_atomic(outdir / "per_class.csv", per_class, CLASS_COLUMNS, ".6g")
    finished = len({r["case"] for r in rows})
    title = f"{Path(str(checkpoint)).name} on {dataset.name} ({eval_scheme} structures)"
    if status == "stopped":
        title = f"PARTIAL: stopped after {finished} of {planned} case(s). {title}"
    if failed:
        title += f"; {len(failed)} case(s) failed: {', '.join(f['case'] for f in failed)}"
    io.write_text_atomic(outdir / "summary.md", markdown_summary(per_mode, per_class, title))
    summary = {"status": status, "partial": status == "stopped", "dataset": str(dataset.source),
               "checkpoint": str(checkpoint), "eval_scheme": eval_scheme, "cases": finished,
               "cases_planned": planned, "failed": list(failed), "modes": per_mode}
    io.write_text_atomic(outdir / "summary.json", json.dumps(_json_safe(summary), indent=2, allow_nan=False))
    return summary


def _json_safe(value):
    """NaN and infinities (e.g. the CI of a one-case table) as null: strict JSON for other programs."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
