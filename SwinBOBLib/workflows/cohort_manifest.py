"""The state of a cohort run: which scans are done, keyed by what decides their result.

A scan's key is its input's content (SHA-256, :func:`~.cohort_scan.file_digest`), the model's
checksum and the settings that change results (:func:`result_settings`). Every finished scan is
one JSON line of ``journal.jsonl`` (appended and fsynced by the driver,
:class:`~SwinBOBLib.solf.cohort.ResultStore`), so a run killed at any moment loses at most the
scans in flight; ``manifest.csv`` and ``failures.csv`` are written from it.

A scan is redone when it has no done record, its key changed (another model, another setting, a
new content under its id) or its label map is gone. Its content is hashed again only when its
path, size or modification time changed (:func:`~.cohort_scan.file_stamp`): a cohort moved to
another disk is recognised by content and not redone.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from SwinBOBLib.inference.config import effective_config
from SwinBOBLib.io.files import write_csv_atomic
from SwinBOBLib.solf.cohort import RECORD_VERSION, ResultStore
from SwinBOBLib.workflows.cohort_scan import (
    ScanSettings,
    file_digest,
    file_stamp,
    labels_path,
)

JOURNAL_NAME = "journal.jsonl"

#: ``manifest.csv``: one row per scan of the cohort (status ``done`` or ``failed``).
MANIFEST_COLUMNS = ("id", "status", "reason", "image", "outdir", "run", "attempts", "worker", "seconds",
                    "input_sha256", "model_sha256", "settings_sha256")

#: ``failures.csv``: one row per failed scan (header only when none failed).
FAILURE_COLUMNS = ("id", "reason", "image", "attempts")

# Inference options that do not change a scan's outputs (where it runs, how it reports).
_NOT_RESULTS = ("device", "progress", "sw_batch_size", "memory_budget_gb")


def result_settings(settings: ScanSettings, metadata) -> dict:
    """The settings that change a scan's outputs: the effective inference configuration (the
    checkpoint's values filled in; not the device or batch size), ETTA's when on, the preview, the
    SOLF record version, scheme and checks."""
    config = {k: v for k, v in effective_config(settings.config, metadata).items() if k not in _NOT_RESULTS}
    return {"inference": config, "etta": asdict(settings.etta_config) if settings.config.etta else None,
            "preview": settings.preview, "solf_record_version": RECORD_VERSION, "scheme": settings.scheme,
            "checks": settings.checks}


#: Settings that change only a scan's SOLF features and checks, not its segmentation: when nothing
#: else changed, the features are measured again on the files already written.
FEATURE_SETTINGS = ("solf_record_version", "scheme", "checks")


def run_key(model_sha256: str, settings: Mapping) -> dict:
    """A run's key: the model's checksum, the checksum of all result settings, and that of the
    settings the segmentation depends on (all but :data:`FEATURE_SETTINGS`)."""
    segmentation = {k: v for k, v in settings.items() if k not in FEATURE_SETTINGS}
    return {"model_sha256": model_sha256, "settings_sha256": digest(settings),
            "segmentation_sha256": digest(segmentation)}


def digest(data) -> str:
    """SHA-256 of ``data`` as sorted JSON (the settings' checksum)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def load_journal(out_dir: Path) -> dict[str, dict]:
    """Records by scan id (the last of each id; a line cut by a kill is dropped). A scan done
    again (retried, or its key changed) has several lines: the file is compacted, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ResultStore(out_dir / JOURNAL_NAME).load()


def append_journal(out_dir: Path, record: Mapping) -> None:
    ResultStore(out_dir / JOURNAL_NAME).append(record)


def _content_digest(image: Path, record: Mapping) -> str:
    """The input's digest: the recorded one while the file is unchanged, else read again."""
    stamp = file_stamp(image)
    if record.get("stamp") == stamp and record.get("input_sha256"):
        return record["input_sha256"]
    return file_digest(image)


def why_redo(record: Mapping | None, image: Path, outdir: Path, key: Mapping) -> str | None:
    """Why a scan must be (re)done, or None when its done record still holds."""
    if not record or record.get("status") != "done":
        return "new" if not record else "failed before"
    if not labels_path(outdir, image).is_file():
        return "outputs missing"
    if not image.exists():
        return "input missing"
    if record.get("model_sha256") != key["model_sha256"]:
        return "model changed"
    if _content_digest(image, record) != record.get("input_sha256"):
        return "input content changed"
    if record.get("settings_sha256") != key["settings_sha256"]:
        if record.get("segmentation_sha256") == key.get("segmentation_sha256") and (outdir / "report.json").is_file():
            return FEATURES_ONLY
        return "settings changed"
    return None


#: The reason of a scan whose segmentation holds but whose features settings (``--checks``, the
#: scheme, the SOLF record version) changed: only its features are measured again.
FEATURES_ONLY = "features settings changed (segmentation kept)"


def plan(cases: Sequence[tuple[str, Path]], journal: Mapping[str, dict], out_dir: Path,
         key: Mapping) -> tuple[list[dict], dict[str, dict], Counter]:
    """Split the cohort into tasks to run and records to reuse.

    Args:
        cases: ``[(id, image path)]``.
        journal: :func:`load_journal`.
        key: :func:`run_key` of this run.

    Returns:
        ``(tasks, reused records by id, Counter of why scans are (re)done)``.
    """
    tasks, reused, reasons = [], {}, Counter()
    for case, image in cases:
        outdir = out_dir / case
        reason = why_redo(journal.get(case), Path(image), outdir, key)
        if reason is None:
            reused[case] = {**journal[case], "run": "earlier"}
            continue
        reasons[reason] += 1
        task = {"id": case, "image": str(image), "outdir": str(outdir), "attempt": 1}
        if reason == FEATURES_ONLY:
            task.update(features_only=True, input_sha256=journal[case]["input_sha256"])
        tasks.append(task)
    return tasks, reused, reasons


def finish_record(record: dict, key: Mapping) -> dict:
    """A worker's record with this run's key and the input's stamp, ready for the journal."""
    record = {**record, **key, "run": "this"}
    if record.get("status") == "done":
        record["stamp"] = file_stamp(record["image"])
    return record


def manifest_rows(cases: Sequence[tuple[str, Path]], records: Mapping[str, dict]) -> list[dict]:
    """One row per scan of ``cases`` in cohort order; a scan without a record is ``pending``."""
    rows = []
    for case, image in cases:
        record = records.get(case, {})
        rows.append({"id": case, "status": record.get("status", "pending"), "reason": record.get("reason", ""),
                     "image": str(image), "outdir": record.get("outdir", ""), "run": record.get("run", ""),
                     "attempts": record.get("attempt", ""), "worker": record.get("worker", ""),
                     "seconds": record.get("seconds", ""), "input_sha256": record.get("input_sha256", ""),
                     "model_sha256": record.get("model_sha256", ""),
                     "settings_sha256": record.get("settings_sha256", "")})
    return rows


def write_manifest(out_dir: Path, cases: Sequence[tuple[str, Path]], records: Mapping[str, dict]) -> list[dict]:
    """Write ``manifest.csv`` and ``failures.csv`` (atomically); returns the manifest rows."""
    rows = manifest_rows(cases, records)
    write_csv_atomic(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    failures = [r for r in rows if r["status"] == "failed"]
    write_csv_atomic(out_dir / "failures.csv", failures, FAILURE_COLUMNS)
    return rows


def reserved_ids(cases: Sequence[tuple[str, Path]], names: Sequence[str]) -> None:
    """Refuse a scan id that would name one of the run's own files in OUT (``manifest.csv``)."""
    clash = sorted({case for case, _ in cases} & set(names))
    if clash:
        raise ValueError(f"scan ids {clash} are names of the cohort run's own files; give those scans "
                         "another 'id' in the input CSV")

