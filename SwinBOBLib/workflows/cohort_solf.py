"""SOLF on a cohort run's own outputs, and the cohort report.

From the features each worker measured on the label map it wrote: bounds (fitted on this cohort
at epsilon, or read from ``--bounds``), the paper's 2-of-3 rule and the missing rule
(:func:`~SwinBOBLib.solf.bounds.flag_cohort`), the extra checks of
:data:`~SwinBOBLib.solf.checks.CHECKS` as separate ``check_<name>`` columns of ``flags.csv`` (their
bounds always fitted on this cohort), and the QC queue in the format ``swinbob solf run`` writes
(``qc_list.csv`` / ``qc_list.json``, read by the Slicer module's review).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from SwinBOBLib import __version__
from SwinBOBLib.io.files import write_text_atomic
from SwinBOBLib.solf.bounds import (
    Bounds,
    cohort_record,
    fit_bounds,
    flag_cohort,
    load_bounds,
    save_bounds,
)
from SwinBOBLib.solf.checks import (
    CHECKS,
    bounded_features,
    check_flags,
    cohort_size_warning,
)
from SwinBOBLib.solf.cohort import Sample
from SwinBOBLib.solf.report import write_report
from SwinBOBLib.solf.tables import (
    FEATURE_COLUMNS,
    FLAG_COLUMNS,
    QC_COLUMNS,
    feature_rows,
    flag_rows,
    qc_list,
    structure_namer,
    write_qc_json,
    write_table,
)
from SwinBOBLib.workflows.cohort_scan import labels_path

#: ``flags.csv``: the SOLF columns, then one 0/1 column per extra check.
CHECK_COLUMNS = tuple(f"check_{name}" for name in CHECKS)

#: Stages timed per scan, in pipeline order (keys of a record's ``timings``).
STAGES = ("read_s", "preprocess_s", "model_s", "entropy_s", "features_s", "write_s")


@dataclass
class SolfSettings:
    """How the cohort's label maps are judged."""

    epsilon: float = 2.0               # percent of the cohort outside each feature's bounds (UKBOB: 2)
    bounds: str | None = None          # bounds.json of another run (None: fit on this cohort)
    missing_presence: float = 0.95     # presence above which an absent structure is "missing"
    scheme: str | None = "ukbob"       # names the structures in the tables
    plots: bool = True                 # figures in report.md


@dataclass
class SolfResult:
    flagged_samples: int = 0
    qc_rows: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def _cohort(records: Mapping[str, dict]) -> dict[str, dict[int, dict]]:
    return {case: {int(label): values for label, values in records[case]["features"].items()}
            for case in sorted(records)}


def _bounds(cohort, records, settings: SolfSettings) -> Bounds:
    if settings.bounds:
        return load_bounds(settings.bounds)
    bounds = fit_bounds(cohort, settings.epsilon, scheme=settings.scheme)
    bounds.cohort = cohort_record([records[case] for case in cohort],
                                  f"{len(cohort)} scans segmented by `swinbob cohort run`", None)
    return bounds


def _flag_rows_with_checks(flags, check_failures, scheme) -> list[dict]:
    rows = []
    for row in flag_rows(flags, scheme):
        failed = check_failures.get(row["id"], {}).get(int(row["label"]), [])
        rows.append({**row, **{f"check_{name}": int(name in failed) for name in CHECKS}})
    return rows


def run_solf(out_dir: Path, records: Mapping[str, dict], settings: SolfSettings, staging: Path) -> SolfResult:
    """Bounds, flags, checks, QC queue, tables and report of the done scans, written into ``staging``.

    Args:
        records: journal records of the scans that are done, by id (each with ``features``).
    """
    cohort = _cohort(records)
    bounds = _bounds(cohort, records, settings)
    flags = flag_cohort(cohort, bounds, missing_presence=settings.missing_presence)
    check_bounds = fit_bounds(cohort, settings.epsilon, features=bounded_features(cohort)) if cohort else {}
    name = structure_namer(settings.scheme)
    checks = {case: check_flags(values, check_bounds, name) for case, values in cohort.items()}
    write_table(feature_rows(cohort, settings.scheme), staging / "features.csv", FEATURE_COLUMNS)
    save_bounds(bounds, staging / "bounds.json")
    write_table(_flag_rows_with_checks(flags, checks, settings.scheme), staging / "flags.csv",
                (*FLAG_COLUMNS, *CHECK_COLUMNS))
    samples = {case: Sample(case, str(labels_path(out_dir / case, records[case]["image"])), records[case]["image"])
               for case in cohort}
    qc_rows = qc_list(flags, samples, settings.scheme)
    write_table(qc_rows, staging / "qc_list.csv", QC_COLUMNS)
    write_qc_json(qc_rows, flags, staging / "qc_list.json")
    notes = [w for w in [cohort_size_warning(len(cohort), settings.epsilon)] if w and not settings.bounds]
    fitted = f"fitted on this cohort, epsilon {settings.epsilon:g} %"
    summary = {"scans": len(cohort), "bounds": settings.bounds or fitted, "flagged scans": len(qc_rows),
               "warnings": " ".join(notes) or "none"}
    write_report(staging, cohort, flags, bounds, qc_rows, [], summary, settings.scheme,
                 settings.plots and bool(cohort))
    return SolfResult(len(qc_rows), qc_rows, notes)


def stage_summary(records: Sequence[dict]) -> dict:
    """Seconds per stage over the scans done in this run: total, mean per scan and share of the
    per-scan time (the model's share is what a faster GPU shortens)."""
    timed = [r["timings"] for r in records if r.get("status") == "done" and r.get("timings")]
    totals = {stage: sum(t.get(stage, 0.0) for t in timed) for stage in STAGES}
    runs = {stage: sum(stage in t for t in timed) for stage in STAGES}  # features alone: a scan re-measured
    whole = sum(totals.values()) or 1.0
    return {stage.removesuffix("_s"): {"total_s": round(totals[stage], 3), "scans": runs[stage],
                                       "mean_s": round(totals[stage] / runs[stage], 4) if runs[stage] else None,
                                       "share": round(totals[stage] / whole, 4)} for stage in STAGES}


def throughput(records: Sequence[dict], wall_s: float) -> dict:
    """Scans per hour overall and per worker; ``model_loads`` counts the workers that returned a scan
    (each loaded the model once; a worker killed before its first scan is not counted)."""
    done = [r for r in records if r.get("status") == "done"]
    workers = {r.get("worker") for r in records if r.get("worker")}
    per_worker = {w: sum(r.get("worker") == w for r in done) for w in sorted(workers)}
    hours = max(wall_s, 1e-9) / 3600.0
    return {"scans_per_hour": round(len(done) / hours, 2), "wall_s": round(wall_s, 2),
            "model_loads": len(workers), "scans_per_hour_per_worker":
            {w: round(n / hours, 2) for w, n in per_worker.items()}}


def cohort_report(run: Mapping, records_now: Sequence[dict], counts: Mapping, solf: SolfResult) -> dict:
    """What produced the outputs and how the run went (``cohort_report.json``)."""
    failures = [{"id": r["id"], "reason": r.get("reason", "")} for r in records_now if r.get("status") == "failed"]
    return {"swinbob_version": __version__, "command": "swinbob cohort run", **run, "counts": dict(counts),
            "throughput": throughput(records_now, run.get("wall_s", 0.0)),
            "stages": stage_summary(records_now), "failures": failures,
            "flags": {"flagged_scans": solf.flagged_samples,
                      "top": [{"id": r["id"], "severity": r["severity"], "inaccurate": r["inaccurate"],
                               "missing": r["missing"]} for r in solf.qc_rows[:10]]},
            "warnings": solf.warnings, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.node()}"}


def write_cohort_report(report: Mapping, folder: Path) -> None:
    """``cohort_report.json`` and a short ``cohort_report.md`` for people."""
    write_text_atomic(folder / "cohort_report.json", json.dumps(report, indent=1, default=str) + "\n")
    t, c = report["throughput"], report["counts"]
    model = report["model"]
    kind = "DEMO model, not for clinical use" if model.get("demo") else "user checkpoint"
    lines = ["# Cohort run", "",
             (f"- **produced by**: SwinBOB {report['swinbob_version']}, model {model.get('name', '?')} "
              f"(sha256 {report['model_sha256'][:12]}), {kind}"),
             (f"- **scans**: {c.get('scans')} ({c.get('done_now')} done now, {c.get('reused')} reused, "
              f"{c.get('failed')} failed)"),
             (f"- **engine**: {report['engine']} with {report['workers']} workers; {t['model_loads']} model "
              f"loads; {t['scans_per_hour']} scans/hour over {t['wall_s']} s"),
             f"- **bounds**: {report['solf']['bounds'] or 'fitted on this cohort'}", "",
             "| stage | total (s) | mean per scan (s) | share |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {stage} | {v['total_s']} | {v['mean_s']} | {v['share']:.0%} |"
              for stage, v in report["stages"].items()]
    lines += ["", "## Failures", ""] + ([f"- {f['id']}: {f['reason']}" for f in report["failures"]] or ["None."])
    write_text_atomic(folder / "cohort_report.md", "\n".join(lines) + "\n")
