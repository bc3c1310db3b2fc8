"""``swinbob solf run``: features of a cohort, bounds, flags, tables, QC list and report."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from SwinBOBLib.io.files import OUTPUT_MARKER, check_output_path, claim_output_folder, staged_files, write_text_atomic
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.solf.bounds import (
    MISSING_PRESENCE,
    check_epsilon,
    cohort_record,
    fit_bounds,
    flag_cohort,
    save_bounds,
)
from SwinBOBLib.solf.checks import cohort_size_warning
from SwinBOBLib.solf.cohort import (
    BODY_SOURCES,
    RUN_CONFIG_NAME,
    STORE_NAME,
    CohortFeatures,
    compute_features,
    find_samples,
)
from SwinBOBLib.solf.report import write_report
from SwinBOBLib.solf.tables import (
    FEATURE_COLUMNS,
    FLAG_COLUMNS,
    QC_COLUMNS,
    feature_rows,
    flag_rows,
    qc_list,
    write_qc_json,
    write_table,
)


@dataclass
class RunConfig:
    """Settings of one cohort run; saved as ``config.json`` with the outputs."""

    cohort: str                          # folder of label maps / dataset folder / CSV list
    out_dir: str                         # output folder (also the resumable results store)
    epsilon: float = 2.0                 # percent excluded per feature (UKBOB uses 2)
    engine: str = "local"                # "local" process pool or "ray"
    workers: int | None = None           # local processes (default: all cores)
    address: str | None = None           # Ray cluster address; None starts a local Ray
    scheme: str | None = "ukbob"         # names structures in tables and reports; features use indices
    images: str | None = None            # folder of images matched by file name (for body="image")
    body_masks: str | None = None        # folder of body masks matched by file name
    body: str = "auto"                   # V_body source, see cohort.BODY_SOURCES
    missing_presence: float = MISSING_PRESENCE  # presence above which an absent structure is "missing"
    plots: bool = True                   # PNG figures in the report
    progress: bool = True                # progress bar on stderr
    checks: str = "all"                  # per-structure checks stored beside the features, cohort.CHECK_SETS


@dataclass
class RunResult:
    """Outputs of :func:`run_cohort`: paths and counts."""

    out_dir: Path
    samples: int
    computed: int
    reused: int
    errors: list
    flagged_samples: int
    inaccurate_structures: int
    missing_structures: int
    files: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # cohort too small for epsilon, organ-only maps


def check_config(config: RunConfig) -> None:
    check_epsilon(config.epsilon)
    if config.body not in BODY_SOURCES:
        raise ValueError(f"--body {config.body!r} is not one of {BODY_SOURCES}")
    if not 0 < config.missing_presence <= 1:
        raise ValueError(f"--missing-presence {config.missing_presence} must be in (0, 1]")
    if config.workers is not None and config.workers < 1:
        raise ValueError(f"--workers {config.workers} must be at least 1")
    if config.scheme is not None:
        get_scheme(config.scheme)


def run_cohort(config: RunConfig, **hooks) -> RunResult:
    """Compute (or resume) features, fit bounds, flag every sample and write the outputs:
    ``features.csv``, ``bounds.json``, ``flags.csv``, ``qc_list.csv``/``.json``, ``errors.csv``,
    ``report.md`` + PNGs, ``config.json``, written as one set. ``hooks`` are passed to
    :func:`compute_features`.

    Raises:
        FileExistsError: ``out_dir`` holds files SwinBOB did not write for ``solf`` (a user's report.md,
            the cohort itself); see :func:`~SwinBOBLib.io.files.claim_output_folder`.
        FolderBusyError: another run writes into ``out_dir``.
    """
    check_config(config)
    out_dir = check_output_path(config.out_dir)
    with folder_lock(out_dir):  # one run per output folder
        claim_solf_folder(out_dir, [config.cohort, config.images, config.body_masks])
        return _run(config, out_dir, hooks)


def claim_solf_folder(out_dir: Path, inputs) -> None:
    """``out_dir`` must be new, empty or a SOLF output folder (see
    :func:`~SwinBOBLib.io.files.claim_output_folder`); one of an earlier version (no marker, but its
    features store and the store's settings) is taken as one, so it still resumes."""
    legacy = (out_dir / STORE_NAME).is_file() and (out_dir / RUN_CONFIG_NAME).is_file()
    if legacy and not (out_dir / OUTPUT_MARKER).exists():
        write_text_atomic(out_dir / OUTPUT_MARKER, _json({"command": SOLF_COMMAND}))
    claim_output_folder(out_dir, SOLF_COMMAND, inputs)


#: The command an output folder of ``solf run`` and ``solf ablation`` is marked with (they share the
#: resumable features, so either may write into the other's folder).
SOLF_COMMAND = "solf"


def _run(config: RunConfig, out_dir: Path, hooks) -> RunResult:
    samples = find_samples(config.cohort, config.images, config.body_masks)
    result = compute_features(samples, out_dir, engine=config.engine, workers=config.workers,
                              address=config.address, body=config.body, progress=config.progress,
                              scheme=config.scheme, checks=config.checks, **hooks)
    cohort = result.cohort()
    bounds = fit_bounds(cohort, config.epsilon, scheme=config.scheme)
    description, synthetic = _describe_cohort(config.cohort, len(cohort))
    bounds.cohort = cohort_record([result.records[i] for i in sorted(result.records)], description, synthetic)
    flags = flag_cohort(cohort, bounds, missing_presence=config.missing_presence)
    return _write_outputs(config, out_dir, samples, result, cohort, bounds, flags)


def _describe_cohort(cohort_path, n: int) -> tuple[str, bool | None]:
    """A description of the cohort for the bounds file, and whether it is synthetic (a dataset
    written by ``swinbob phantom`` says so in its dataset.json)."""
    import json

    folder = Path(cohort_path)
    info = folder / "dataset.json" if folder.is_dir() else None
    try:
        data = json.loads(info.read_text(encoding="utf-8")) if info and info.exists() else {}
    except (OSError, ValueError):
        data = {}
    synthetic = True if str(data.get("reference", "")).startswith("SwinBOBLib.phantom") else None
    text = data.get("description") or data.get("name") or f"label maps of {folder.name}"
    return f"{n} samples: {text}", synthetic


def _write_outputs(config, out_dir, samples, result: CohortFeatures, cohort, bounds, flags) -> RunResult:
    """Every table, the bounds, the report and its figures, written as one set (staged, then moved
    into ``out_dir`` together): a killed run never leaves new flags beside an old report."""
    with staged_files(out_dir, SOLF_COMMAND) as staging:
        run = _write_set(config, staging, samples, result, cohort, bounds, flags)
    run.out_dir = out_dir
    run.files = {name: [out_dir / Path(p).name for p in paths] for name, paths in run.files.items()}
    return run


def _write_set(config, out_dir, samples, result: CohortFeatures, cohort, bounds, flags) -> RunResult:
    files = {}
    write_text_atomic(out_dir / "config.json", _json(asdict(config)))
    files["features"] = write_table(feature_rows(cohort, config.scheme),
                                           out_dir / "features.csv", FEATURE_COLUMNS)
    save_bounds(bounds, out_dir / "bounds.json")
    files["bounds"] = [out_dir / "bounds.json"]
    files["flags"] = write_table(flag_rows(flags, config.scheme), out_dir / "flags.csv",
                                        FLAG_COLUMNS)
    qc_rows = qc_list(flags, {s.id: s for s in samples}, config.scheme)
    files["qc_list"] = write_table(qc_rows, out_dir / "qc_list.csv", QC_COLUMNS)
    write_qc_json(qc_rows, flags, out_dir / "qc_list.json")
    files["errors"] = write_table(result.errors, out_dir / "errors.csv", ("id", "labelmap", "error"))
    counts = _counts(flags)
    notes = run_warnings(result, len(cohort), config.epsilon)
    summary = {"cohort": config.cohort, "samples": len(samples), "features computed": len(cohort),
               "unreadable (skipped)": len(result.errors), "epsilon (%)": f"{config.epsilon:g}",
               "flagged samples": counts[0], "inaccurate structures": counts[1],
               "missing structures": counts[2],
               "warnings": " ".join(f"{n}." for n in notes) if notes else "none",
               "engine": f"{config.engine} ({result.computed} computed now, {result.reused} reused, "
                         f"{result.seconds:.1f} s)", "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    files["report"] = [write_report(out_dir, cohort, flags, bounds, qc_rows, result.errors, summary,
                                    config.scheme, config.plots)]
    return RunResult(out_dir, len(samples), result.computed, result.reused, result.errors, *counts, files, notes)


def run_warnings(result: CohortFeatures, n_samples: int, epsilon: float) -> list[str]:
    """What the report must warn about: a cohort too small for epsilon, and label maps that label
    organs only while ``--body auto`` took their labelled voxels as the body."""
    notes = [w for w in [cohort_size_warning(n_samples, epsilon)] if w]
    organ_only = [w for r in result.records.values() for w in r.get("warnings", [])]
    if organ_only:
        notes.append(f"{len(organ_only)} label maps label organs only, e.g. {organ_only[0]}")
    return notes


def _counts(flags) -> tuple[int, int, int]:
    flagged = sum(any(e["inaccurate"] or e["missing"] for e in s.values()) for s in flags.values())
    inaccurate = sum(e["inaccurate"] for s in flags.values() for e in s.values())
    missing = sum(e["missing"] for s in flags.values() for e in s.values())
    return flagged, inaccurate, missing


def _json(data) -> str:
    import json

    return json.dumps(data, indent=1, default=str) + "\n"
