"""The scans of a cohort run from a PACS (DICOMweb): which studies, and each one's image series
fetched into the run's own cache, ``OUT/.sources/<id>/``, for the local machinery to segment.

The studies are the rows of a CSV (``study``, optional ``series`` and ``id``) or every study on
the server (QIDO-RS). Each study's image series is chosen as ``swinbob segment --dicomweb`` chooses
it (the ``series`` cell, else the study's only image series), then fetched (WADO-RS) by a few
threads into a hidden staging folder that is renamed to ``OUT/.sources/<id>/dicom/`` once every
instance the server lists is there; ``OUT/.sources/<id>/source.json`` then records what it holds.
A rerun fetches a series again only when that record no longer matches the server's list of SOP
Instance UIDs (or files went missing): a partial download is never used. The series folders are
DICOM folders like any other, keyed by content in the manifest, so a series fetched again with
the same instances is not segmented again.

For a multi-channel (Dixon) model every image series of each study is fetched into the one folder
(``all_series``), and the worker matches the model's contrasts among them by their DICOM attributes
as for any DICOM folder; the ``series`` cell then picks the station where a contrast is found twice.

A study that cannot be fetched (unknown UID, refused, connection dropped, no or several image
series) is a failed row of the run, with the reason; the others go on.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from SwinBOBLib.io.dicomweb import (
    DicomWebError,
    all_studies,
    fetch_series,
    public_url,
    series_instances,
    series_to_fetch,
)
from SwinBOBLib.io.files import safe_name, staged_folder, write_text_atomic
from SwinBOBLib.workflows.dicomweb import dicomweb_source

#: Folder of OUT holding the fetched series, one ``<id>/`` each (hidden: the run's own, never a scan id).
SOURCES_DIR = ".sources"

#: In ``OUT/.sources/<id>/``: the series' instances (a DICOM folder), and the record of what they are.
SERIES_DIR, SOURCE_RECORD = "dicom", "source.json"

#: Series fetched at the same time (each holds one series in memory while it is written).
FETCH_THREADS = 4

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class RemoteCase:
    """One scan of the cohort on the server."""

    id: str                      # names OUT/<id>/ (default: the series UID, else the study UID)
    study_uid: str
    series_uid: str | None       # None: the study's only image series

    def source(self, url: str) -> str:
        """The case as reports name it: ``URL/studies/UID[/series/UID]`` (no credentials)."""
        return dicomweb_source(url, self.study_uid, self.series_uid)


@dataclass
class Fetched:
    """What fetching one case gave: the local series folder and its record, or why not."""

    case: RemoteCase
    folder: Path | None = None   # OUT/.sources/<id>/dicom, None when it could not be fetched
    record: dict | None = None   # source.json
    cached: bool = False         # a complete copy was already there: nothing fetched
    reason: str = ""             # why it could not be fetched
    seconds: float = 0.0


def check_uid(value: str, where: str) -> str:
    """``value`` stripped if it reads as a DICOM UID (digits and dots, at most 64 characters)."""
    text = (value or "").strip()
    if not _UID.fullmatch(text) or len(text) > 64:
        raise ValueError(f"{where}: '{value}' is not a DICOM UID (digits and dots, at most 64 characters)")
    return text


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (empty for a file without one)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def csv_cases(path: str | Path) -> list[RemoteCase]:
    """The cases of a CSV with a ``study`` column (Study Instance UID) and optional ``series`` and
    ``id`` (a plain folder name; default the series UID, else the study UID), in file order.

    Raises:
        ValueError: no ``study`` column, an empty or malformed UID, an unsafe or repeated id (naming
            the file and line).
    """
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: with --dicomweb, INPUTS is a CSV of studies ('study' column, optional 'series' "
                         "and 'id'), or nothing for every study on the server")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "study" not in rows[0]:
        raise ValueError(f"{path}: a CSV of studies on a DICOMweb server needs a 'study' column (Study Instance "
                         "UID) and optionally 'series' and 'id'" + ("" if rows else "; it has no rows"))
    cases = []
    for number, row in enumerate(rows, start=2):
        where = f"{path}: line {number}"
        study = check_uid(row["study"] or "", f"{where}, study")
        series = check_uid(row["series"], f"{where}, series") if (row.get("series") or "").strip() else None
        case = safe_name((row.get("id") or "").strip() or series or study, f"{where}, id")
        cases.append(RemoteCase(case, study, series))
    _check_unique(cases, str(path))
    return cases


def server_cases(url: str) -> list[RemoteCase]:
    """Every study on the server, one case each (its only image series), by Study Instance UID.

    Raises:
        DicomWebError: the server refuses or cannot be reached; ValueError: it holds no study.
    """
    studies = all_studies(url)
    if not studies:
        raise ValueError(f"{public_url(url)}: the server holds no study")
    return [RemoteCase(safe_name(uid, f"{public_url(url)}: study"), uid, None) for uid in studies]


def _check_unique(cases: Sequence[RemoteCase], where: str) -> None:
    repeated = sorted(case for case, n in Counter(case.id for case in cases).items() if n > 1)
    if repeated:
        raise ValueError(f"{where}: case ids {repeated[:5]} are not unique (a study listed twice?); give each row "
                         "its own 'series' or 'id'")


def series_folder(out_dir: Path, case_id: str) -> Path:
    """Where a case's series is kept: ``OUT/.sources/<id>/dicom``."""
    return Path(out_dir) / SOURCES_DIR / case_id / SERIES_DIR


def cached_record(out_dir: Path, case_id: str, series_uids: Sequence[str], instances: Sequence[str]) -> dict | None:
    """The record of a complete local copy of the series (the server's SOP Instance UIDs, every file
    present and nothing else), else None."""
    home = Path(out_dir) / SOURCES_DIR / case_id
    try:
        record = json.loads((home / SOURCE_RECORD).read_text(encoding="utf-8"))
        present = {entry.name for entry in (home / SERIES_DIR).iterdir()}
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("series_uids", [record.get("series_uid")]) != list(series_uids):
        return None
    if record.get("sop_instance_uids") != list(instances) or present != set(record.get("files", [])):
        return None
    return record


def fetch_case(url: str, case: RemoteCase, out_dir: Path, all_series: bool = False) -> Fetched:
    """Fetch one case's series into ``OUT/.sources/<id>/`` unless a complete copy is there; with
    ``all_series`` (a multi-channel model) every image series of the study.

    Raises:
        DicomWebError: unknown study or series, no or several image series, refused, dropped, or
            fewer instances than the server lists; the series folder is then as it was.
    """
    started = time.perf_counter()
    chosen, wanted = series_to_fetch(url, case.study_uid, case.series_uid, all_series)
    listed = {series.uid: series_instances(url, case.study_uid, series.uid) for series in wanted}
    instances = sorted(uid for uids in listed.values() for uid in uids)
    record = cached_record(out_dir, case.id, list(listed), instances)
    folder = series_folder(out_dir, case.id)
    if record is not None:
        return Fetched(case, folder, record, cached=True, seconds=time.perf_counter() - started)
    (folder.parent / SOURCE_RECORD).unlink(missing_ok=True)  # the copy is incomplete from here until renamed
    with staged_folder(folder) as staging:
        paths = []
        for number, series in enumerate(wanted):
            paths += fetch_series(url, case.study_uid, series.uid, staging, prefix=f"series{number:03d}_")
        files = _name_by_instance(paths)
        if sorted(files) != instances:
            raise DicomWebError(f"{public_url(url)}: study {case.study_uid}, series {', '.join(listed)}: fetched "
                                f"{len(files)} instance(s), the server lists {len(instances)}; run again")
    record = {"url": public_url(url), "study_uid": case.study_uid, "series_uid": chosen.uid if chosen else None,
              "series_description": chosen.description if chosen else "",
              "modality": chosen.modality if chosen else "", "instances": len(files),
              "sop_instance_uids": instances, "files": sorted(files.values())}
    if all_series:
        record.update(series_uids=list(listed), series=[{"uid": s.uid, "description": s.description,
                                                         "modality": s.modality, "instances": len(listed[s.uid])}
                                                        for s in wanted])
    write_text_atomic(folder.parent / SOURCE_RECORD, json.dumps(record, indent=1) + "\n")
    return Fetched(case, folder, record, seconds=time.perf_counter() - started)


def _name_by_instance(paths: Sequence[Path]) -> dict[str, str]:
    """Rename each fetched file ``<SOP Instance UID>.dcm``, so the folder's content (its key in the
    manifest) does not depend on the order the server sent them in; ``{uid: file name}``."""
    import pydicom

    names = {}
    for path in paths:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        name = f"{safe_name(uid, f'{path.name}: SOP Instance UID')}.dcm"
        if uid in names:
            raise DicomWebError(f"two instances of the series have SOP Instance UID {uid}")
        path.rename(path.with_name(name))
        names[uid] = name
    return names


def fetch_all(url: str, cases: Sequence[RemoteCase], out_dir: Path, events, *, threads: int = FETCH_THREADS,
              progress: bool = True, all_series: bool = False) -> list[Fetched]:
    """Fetch every case (``threads`` at a time) with one bar on stderr and JSON-lines events
    (``fetch_start``, ``fetch_done`` with ``cached``, ``fetch_error``); never raises for one case.
    ``all_series``: every image series of each study (:func:`fetch_case`).

    Returns:
        One :class:`Fetched` per case, in the order of ``cases``.
    """
    events.emit("fetch_start", url=public_url(url), cases=len(cases), threads=threads)
    results: dict[str, Fetched] = {}
    counts = Counter()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="swinbob-fetch")
    try:
        with _bar(len(cases), progress) as bar:
            for future in as_completed([pool.submit(_fetch_or_reason, url, case, out_dir, all_series) for case in cases]):
                fetched = future.result()
                results[fetched.case.id] = fetched
                _emit(events, fetched, bar)
                counts["failed" if fetched.reason else "cached" if fetched.cached else "fetched"] += 1
                bar.set_postfix(fetched=counts["fetched"], cached=counts["cached"], failed=counts["failed"],
                                refresh=False)
                bar.update(1)
    finally:  # on Ctrl-C: no new fetch starts; those under way end in their hidden staging folders
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[case.id] for case in cases]


def _fetch_or_reason(url: str, case: RemoteCase, out_dir: Path, all_series: bool = False) -> Fetched:
    started = time.perf_counter()
    try:
        return fetch_case(url, case, out_dir, all_series)
    except Exception as error:  # noqa: BLE001 - one study that cannot be fetched must not stop the cohort
        return Fetched(case, reason=f"{type(error).__name__}: {error}".strip(),
                       seconds=time.perf_counter() - started)


def _emit(events, fetched: Fetched, bar) -> None:
    case = fetched.case
    if fetched.reason:
        events.emit("fetch_error", case=case.id, study=case.study_uid, series=case.series_uid,
                    message=fetched.reason)
        bar.write(f"{case.id}: cannot be fetched: {fetched.reason}")
        return
    events.emit("fetch_done", case=case.id, study=case.study_uid, series=fetched.record["series_uid"],
                instances=fetched.record["instances"], cached=fetched.cached, seconds=round(fetched.seconds, 3))


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="series", desc="fetch", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def unfetched_record(fetched: Fetched, url: str) -> dict:
    """The failed record of a case that could not be fetched (this run's; never journaled, so a
    scan segmented before is reused once its series can be fetched again)."""
    return {"id": fetched.case.id, "image": fetched.case.source(url), "outdir": "", "status": "failed",
            "reason": fetched.reason, "run": "this", "attempt": 1}


def input_records(url: str, fetched: Sequence[Fetched]) -> dict[str, dict]:
    """``{id: report.json "input" record}`` of the fetched cases, as ``segment --dicomweb`` writes it:
    each scan's report names its DICOMweb source, not the local copy in OUT/.sources."""
    return {item.case.id: {"path": dicomweb_source(url, item.case.study_uid, item.record["series_uid"]),
                           "dicomweb": {"url": public_url(url), "study_uid": item.case.study_uid,
                                        "series_uid": item.record["series_uid"],
                                        "series_description": item.record.get("series_description", ""),
                                        "local_copy": str(item.folder),
                                        **({"series_fetched": item.record["series_uids"]}
                                           if "series_uids" in item.record else {})}}
            for item in fetched if not item.reason}


def sources_report(url: str, listing: str | None, fetched: Sequence[Fetched]) -> dict:
    """``cohort_report.json``'s ``dicomweb``: the server (public URL only), where the studies came
    from, counts, and per scan its source: study, series, description, instances, fetched now or
    earlier, or why it could not be fetched."""
    scans = {}
    for item in fetched:
        case = item.case
        if item.reason:
            scans[case.id] = {"source": case.source(url), "study_uid": case.study_uid,
                              "series_uid": case.series_uid, "error": item.reason}
            continue
        record = item.record
        scans[case.id] = {"source": dicomweb_source(url, case.study_uid, record["series_uid"]),
                          "study_uid": case.study_uid, "series_uid": record["series_uid"],
                          "series_description": record.get("series_description", ""),
                          "instances": record["instances"], "fetched": "earlier" if item.cached else "this"}
    return {"url": public_url(url), "studies": listing or "every study on the server",
            "fetched_now": sum(not f.reason and not f.cached for f in fetched),
            "already_fetched": sum(f.cached for f in fetched), "failed": sum(bool(f.reason) for f in fetched),
            "scans": scans}
