"""``swinbob cohort run``: the UKBOB pipeline on a cohort. Segment every scan with the model loaded
once per worker (a local process pool, or a Ray Data actor pool), then SOLF on the cohort's own
label maps: bounds, flags, the extra checks and the QC queue; resumable and fault-isolated.

    result = run_cohort(CohortConfig("scans/", "out/", engine="ray", workers=8))

OUT receives, per scan, ``OUT/<id>/`` with what ``swinbob segment`` writes (labels, entropy,
organs.csv, report.json, preview.png); for the cohort ``journal.jsonl`` (one line per finished
scan), ``manifest.csv`` (``id``, ``status`` done|failed, the key parts), ``failures.csv``
(``id``, ``reason``), SOLF's ``features.csv``, ``bounds.json``, ``flags.csv`` (with a
``check_<name>`` column per extra check), ``qc_list.csv``/``qc_list.json`` and ``report.md``, and
``cohort_report.json``/``.md`` (model, settings, bounds, version, throughput, time by stage,
failures, flags).

With ``dicomweb`` the scans come from a PACS: each study's image series is fetched into
``OUT/.sources/<id>/`` first (:mod:`~SwinBOBLib.workflows.cohort_dicomweb`), then segmented as a
local DICOM folder; a study that cannot be fetched is a failed row.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from SwinBOBLib.inference.preprocess import dicom_contrasts
from SwinBOBLib.io.dicomweb import check_url
from SwinBOBLib.io.files import check_output_path, claim_output_folder, staged_files
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.runtime.progress import ProgressWriter
from SwinBOBLib.solf.bounds import check_epsilon
from SwinBOBLib.workflows.cohort_dicomweb import (
    FETCH_THREADS,
    SOURCES_DIR,
    csv_cases,
    csv_columns,
    fetch_all,
    input_records,
    server_cases,
    sources_report,
    unfetched_record,
)
from SwinBOBLib.workflows.cohort_engines import ENGINES, init_ray
from SwinBOBLib.workflows.cohort_manifest import (
    JOURNAL_NAME,
    append_journal,
    finish_record,
    load_journal,
    plan,
    reserved_ids,
    result_settings,
    run_key,
    write_manifest,
)
from SwinBOBLib.workflows.cohort_scan import ScanSettings
from SwinBOBLib.workflows.cohort_solf import (
    SolfSettings,
    cohort_report,
    run_solf,
    write_cohort_report,
)
from SwinBOBLib.workflows.segment import list_inputs, load_model_for_cli

#: The command an output folder of a cohort run is marked with.
COHORT_COMMAND = "cohort"

#: Files of OUT that no scan id may take (SOURCES_DIR: the series fetched from a PACS).
OWN_FILES = ("manifest.csv", "failures.csv", JOURNAL_NAME, "features.csv", "bounds.json", "flags.csv",
             "qc_list.csv", "qc_list.json", "report.md", "cohort_report.json", "cohort_report.md", SOURCES_DIR)

#: manifest.csv is rewritten at most this often during a run (seconds); the journal is always current.
MANIFEST_EVERY_S = 30.0


@dataclass
class CohortConfig:
    """Settings of one cohort run; recorded in ``cohort_report.json``."""

    inputs: str | None                   # folder of images, or CSV with 'image' (and optional 'id'); with
    #                                      dicomweb a CSV with 'study' (optional 'series', 'id'), or None: every study
    out_dir: str                         # output folder (resumable)
    engine: str = "local"                # "local" process pool or "ray" (Ray Data actor pool)
    workers: int | None = None           # None: local: one per core (per GPU with cuda); ray: one per GPU(s)/CPU(s)
    address: str | None = None           # Ray cluster address; None starts a local Ray
    gpus_per_worker: float | None = None  # Ray actors' GPUs; None: 1 where the cluster has GPUs, else 0
    scan: ScanSettings = field(default_factory=ScanSettings)
    solf: SolfSettings = field(default_factory=SolfSettings)
    progress: bool = True                # one overall bar on stderr (rate, ETA, counts)
    progress_json: str | None = None     # JSON-lines events ('-' for stdout)
    dicomweb: str | None = None          # DICOMweb service root: the scans come from this PACS (no credentials in it)
    fetch_threads: int = FETCH_THREADS   # series fetched from the PACS at the same time


@dataclass
class CohortResult:
    """What :func:`run_cohort` did."""

    out_dir: Path
    scans: int
    done_now: int
    reused: int
    failed: list                         # [{"id", "reason"}]
    flagged: int
    redone: dict                         # why scans were (re)done: {"new": n, "model changed": n, ...}
    report: dict

    @property
    def ok(self) -> bool:
        return not self.failed


def check_config(config: CohortConfig) -> None:
    """Refuse bad settings before anything is read or started."""
    if config.engine not in ENGINES:
        raise ValueError(f"--engine {config.engine!r} is not one of {sorted(ENGINES)}")
    if config.workers is not None and config.workers < 1:
        raise ValueError(f"--workers {config.workers}: must be at least 1")
    if config.gpus_per_worker is not None and config.gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker {config.gpus_per_worker}: must be 0 or more")
    if config.scan.threads is not None and config.scan.threads < 1:
        raise ValueError(f"--threads-per-worker {config.scan.threads}: must be at least 1")
    if config.fetch_threads < 1:
        raise ValueError(f"--fetch-threads {config.fetch_threads}: must be at least 1")
    if config.dicomweb:
        check_url(config.dicomweb)
    elif not config.inputs:
        raise ValueError("no INPUTS: give a folder of scans or a CSV with an 'image' column, or --dicomweb URL for "
                         "the studies of a PACS")
    check_epsilon(config.solf.epsilon)
    if config.solf.bounds and not Path(config.solf.bounds).is_file():
        raise FileNotFoundError(f"--bounds {config.solf.bounds}: no such file")


def run_cohort(config: CohortConfig, on_record: Callable[[dict], None] | None = None) -> CohortResult:
    """Segment (or resume) every scan of ``config.inputs``, then SOLF and the reports.

    Args:
        on_record: called in the driver after each scan's record is in the journal.

    Raises:
        ValueError: bad settings or inputs (a CSV without an 'image' column, or with ``dicomweb``
            without a 'study' column; unsafe or duplicate ids; a URL holding credentials).
        DicomWebError: with ``dicomweb`` and no CSV, the server's studies cannot be listed.
        FileExistsError: ``out_dir`` holds files a cohort run did not write.
        FolderBusyError: another run writes into ``out_dir``.
    """
    check_config(config)
    remote = _remote_cases(config) if config.dicomweb else None
    cases = [(case.id, None) for case in remote] if remote is not None else _local_cases(config.inputs)
    reserved_ids(cases, OWN_FILES)
    out_dir = check_output_path(config.out_dir, [config.inputs])
    with ProgressWriter(config.progress_json, [config.inputs]) as events, folder_lock(out_dir):
        # The series fetched into OUT/.sources are the run's own files, not inputs OUT must keep apart from.
        claim_output_folder(out_dir, COHORT_COMMAND, [config.inputs, *(path for _, path in cases)])
        local = [(case, Path(path).resolve()) for case, path in cases] if remote is None else []
        return _run(config, local, out_dir.resolve(), events, on_record, remote)


def _remote_cases(config: CohortConfig):
    """The PACS's cases: the CSV's rows, or every study on the server (asked before OUT is touched)."""
    return csv_cases(config.inputs) if config.inputs else server_cases(config.dicomweb)


def _local_cases(inputs: str) -> list[tuple[str, Path]]:
    path = Path(inputs)
    columns = set(csv_columns(path)) if path.suffix.lower() == ".csv" and path.is_file() else set()
    if "study" in columns and "image" not in columns:
        raise ValueError(f"{inputs}: a CSV of studies ('study' column) needs --dicomweb URL, the server holding "
                         "them")
    return list_inputs(inputs)


def _fetch(config: CohortConfig, remote, out_dir: Path, events, metadata) -> tuple[list, dict, dict, dict]:
    """Fetch the PACS cases' series into OUT/.sources: ``(cases [(id, series folder, or the source of
    one that could not be fetched)], {id: failed record of those}, the report's DICOMweb record,
    {id: the scan's report.json input record})``."""
    url = config.dicomweb
    # A multi-channel (Dixon) model gets every image series of each study: the worker matches its contrasts.
    all_series = dicom_contrasts(metadata, config.scan.config) is not None
    fetched = fetch_all(url, remote, out_dir, events, threads=config.fetch_threads, progress=config.progress,
                        all_series=all_series)
    cases = [(item.case.id, item.case.source(url) if item.reason else item.folder) for item in fetched]
    unfetched = {item.case.id: unfetched_record(item, url) for item in fetched if item.reason}
    return cases, unfetched, sources_report(url, config.inputs, fetched), input_records(url, fetched)


def _workers(config: CohortConfig, todo: int) -> int:
    if config.workers:
        return config.workers
    if config.engine == "ray":
        import ray

        if not ray.is_initialized():  # nothing to do: no cluster was joined
            return 1
        cluster, gpus = ray.cluster_resources(), _gpus(config)
        return max(1, int(cluster.get("GPU", 0) / gpus if gpus else cluster.get("CPU", 1) / (config.scan.threads or 1)))
    import torch

    gpus = torch.cuda.device_count() if config.scan.config.device in ("auto", "cuda") else 0
    return max(1, min(todo or 1, gpus or os.cpu_count() or 1))


def _resolved_scan(config: CohortConfig, workers: int) -> ScanSettings:
    """Threads per worker: given, else the cores shared out among the local workers (1 on Ray)."""
    import dataclasses

    threads = config.scan.threads or (max(1, (os.cpu_count() or 1) // workers) if config.engine == "local" else 1)
    return dataclasses.replace(config.scan, threads=threads)


def _gpus(config: CohortConfig) -> float:
    if config.engine != "ray" or config.scan.config.device == "cpu":
        return 0.0
    if config.gpus_per_worker is not None:
        return config.gpus_per_worker
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) else 0.0


def _run(config: CohortConfig, cases, out_dir: Path, events, on_record, remote=None) -> CohortResult:
    """Segment ``cases`` (``[(id, path)]``; with ``remote``, the PACS cases fetched first), then SOLF
    and the reports. Series that could not be fetched are failed records, never journaled."""
    started = time.perf_counter()
    _, metadata, info = load_model_for_cli(config.scan.checkpoint, config.scan.config.roi_size)
    settings = result_settings(config.scan, metadata)
    key = run_key(info["sha256"], settings)
    unfetched, sources, inputs, stations = {}, None, {}, {}
    if remote is not None:  # once the model loaded: a bad checkpoint is refused before anything is fetched
        cases, unfetched, sources, inputs = _fetch(config, remote, out_dir, events, metadata)
        stations = {case.id: case.series_uid for case in remote if case.series_uid}
    local = [(case, path) for case, path in cases if case not in unfetched]
    tasks, reused, reasons = plan(local, load_journal(out_dir), out_dir, key)
    for task in tasks:  # a PACS scan's report.json names where it came from
        if task["id"] in inputs:
            task["input_record"] = inputs[task["id"]]
        if task["id"] in stations:  # its series (for a Dixon model: the station among the study's series)
            task["series_uid"] = stations[task["id"]]
    _say_redone(reasons, len(reused), config.progress_json == "-")
    if config.engine == "ray" and tasks:
        init_ray(config.address)  # before the worker count is read from the cluster
    workers = _workers(config, len(tasks))
    scan = _resolved_scan(config, workers)
    events.emit("start", cases=len(cases), todo=len(tasks), reused=len(reused), redo=dict(reasons),
                model=info["model"], engine=config.engine, workers=workers,
                **({"unfetched": len(unfetched)} if sources is not None else {}))
    now = _segment_all(config, tasks, scan, workers, key, cases, {**reused, **unfetched}, out_dir, events, on_record)
    records = {**reused, **unfetched, **{r["id"]: r for r in now}}
    run = {"inputs": config.inputs, "engine": config.engine, "workers": workers, "threads_per_worker": scan.threads,
           "gpus_per_worker": _gpus(config), "model": info["model"], "model_sha256": info["sha256"],
           "checkpoint": info["path"], "settings": settings, "settings_sha256": key["settings_sha256"],
           "solf": asdict(config.solf), "redone": dict(reasons), "wall_s": time.perf_counter() - started}
    if sources is not None:
        run["dicomweb"] = sources
    return _finish(config, out_dir, cases, records, now, run, events)


def _say_redone(reasons, reused: int, quiet: bool) -> None:
    """One line on stderr: what is reused and why the rest is (re)done."""
    if quiet or not (reused or set(reasons) - {"new"}):
        return
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    print(f"cohort: {reused} scan(s) done before are reused; to do: {why or 'nothing'}", file=sys.stderr)


def _bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="scan", desc="cohort", disable=not enabled, dynamic_ncols=True,
                smoothing=0.05, file=sys.stderr)


def _segment_all(config, tasks, scan, workers, key, cases, reused, out_dir, events, on_record) -> list[dict]:
    """Run the engine over ``tasks``; each record goes to the journal as it arrives. ``reused``: the
    records of the scans not to run (done before, or failed before running: not fetched)."""
    now, last_manifest = [], time.monotonic()
    counts = {status: sum(r.get("status") == status for r in reused.values()) for status in ("done", "failed")}
    with _bar(len(cases), len(reused), config.progress) as bar:
        try:
            for record in ENGINES[config.engine](tasks, scan, workers, address=config.address,
                                                 gpus_per_worker=_gpus(config)):
                record = finish_record(record, key)
                append_journal(out_dir, record)
                now.append(record)
                counts[record["status"]] += 1
                _emit(events, record, bar)
                bar.set_postfix(done=counts["done"], failed=counts["failed"],
                                pending=len(cases) - len(reused) - len(now), refresh=False)
                bar.update(1)
                if on_record is not None:
                    on_record(record)
                if time.monotonic() - last_manifest > MANIFEST_EVERY_S:
                    write_manifest(out_dir, cases, {**reused, **{r["id"]: r for r in now}})
                    last_manifest = time.monotonic()
        except KeyboardInterrupt:
            write_manifest(out_dir, cases, {**reused, **{r["id"]: r for r in now}})  # pending rows say what is left
            raise
    return now


def _emit(events, record: dict, bar) -> None:
    if record["status"] == "done":
        events.emit("case_done", case=record["id"], outdir=record["outdir"], worker=record.get("worker"),
                    seconds=record.get("seconds"), attempt=record.get("attempt"))
    else:
        events.emit("case_error", case=record["id"], message=record["reason"], attempt=record.get("attempt"))
        bar.write(f"{record['id']}: failed: {record['reason']}", file=sys.stderr)


def _finish(config, out_dir: Path, cases, records: dict, now: list, run: dict, events) -> CohortResult:
    """SOLF on the done scans, then manifest, failures, tables and reports written as one set."""
    done = {case: r for case, r in records.items() if r.get("status") == "done"}
    failed = [{"id": r["id"], "reason": r.get("reason", "")} for r in records.values() if r.get("status") == "failed"]
    counts = {"scans": len(cases), "done_now": sum(r["status"] == "done" for r in now),
              "reused": sum(r.get("run") == "earlier" for r in records.values()), "failed": len(failed)}
    with staged_files(out_dir, COHORT_COMMAND) as staging:
        write_manifest(staging, cases, records)
        solf = run_solf(out_dir, done, config.solf, staging)
        report = cohort_report(run, now, counts, solf)
        report["failures"] = failed  # every failed scan of the cohort, not only this run's
        write_cohort_report(report, staging)
    events.emit("solf", flagged=solf.flagged_samples, scans=len(done))
    events.emit("done", failed=[f["id"] for f in failed], scans=counts["scans"], done_now=counts["done_now"],
                reused=counts["reused"])
    return CohortResult(out_dir, len(cases), counts["done_now"], counts["reused"], failed, solf.flagged_samples,
                        run["redone"], report)
