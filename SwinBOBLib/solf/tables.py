"""Tables of a cohort run: features, flags and the QC list of flagged samples (CSV; Parquet too
when pyarrow is installed). Rows are plain dicts, generated lazily for the per-structure tables.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from SwinBOBLib.io.files import apply_umask, write_text_atomic
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.solf.bounds import SOLF_FEATURES
from SwinBOBLib.solf.features import FEATURES

#: Severity weight of a missing structure (an inaccurate one weighs its out-of-range features, 2 or 3).
MISSING_WEIGHT = 2


def structure_namer(scheme: str | None) -> Callable[[int], str]:
    """label -> structure name in ``scheme`` (``label_<n>`` for values the scheme lacks)."""
    if scheme is None:
        return lambda label: f"label_{label}"
    table = get_scheme(scheme)

    def name(label: int) -> str:
        try:
            return table.name_of(label)
        except KeyError:
            return f"label_{label}"

    return name


def feature_rows(cohort: Mapping[str, Mapping[int, Mapping]], scheme: str | None = None) -> Iterator[dict]:
    """One row per sample and structure: id, label, name and every feature of :data:`FEATURES`."""
    name = structure_namer(scheme)
    for sample_id, sample in cohort.items():
        for label, values in sample.items():
            yield {"id": sample_id, "label": label, "name": name(label), **{k: values[k] for k in FEATURES}}


def flag_rows(flags: Mapping[str, Mapping[int, Mapping]], scheme: str | None = None) -> Iterator[dict]:
    """One row per sample and judged structure: which features are out of range, the verdicts."""
    name = structure_namer(scheme)
    for sample_id, sample in flags.items():
        for label, entry in sample.items():
            row = {"id": sample_id, "label": label, "name": name(label)}
            row.update({f"{f}_out": int(f in entry["out_of_range"]) for f in SOLF_FEATURES})
            row.update(n_out_of_range=entry["n_out_of_range"], inaccurate=int(entry["inaccurate"]),
                       missing=int(entry["missing"]))
            yield row


def severity(sample_flags: Mapping[int, Mapping]) -> int:
    """Out-of-range features of the inaccurate structures plus :data:`MISSING_WEIGHT` per missing one."""
    return sum(e["n_out_of_range"] for e in sample_flags.values() if e["inaccurate"]) + \
        MISSING_WEIGHT * sum(e["missing"] for e in sample_flags.values())


def qc_list(flags: Mapping[str, Mapping[int, Mapping]], samples: Mapping[str, object] | None = None,
            scheme: str | None = None) -> list[dict]:
    """Flagged samples (an inaccurate or missing structure), most severe first (ties: more features
    out of range in total, then id). ``samples`` (id -> :class:`~.cohort.Sample`) adds file paths."""
    name = structure_namer(scheme)
    rows = []
    for sample_id, sample in flags.items():
        inaccurate = [label for label, e in sample.items() if e["inaccurate"]]
        missing = [label for label, e in sample.items() if e["missing"]]
        if not inaccurate and not missing:
            continue
        source = (samples or {}).get(sample_id)
        rows.append({
            "id": sample_id, "severity": severity(sample), "n_inaccurate": len(inaccurate),
            "n_missing": len(missing), "n_out_of_range": sum(e["n_out_of_range"] for e in sample.values()),
            "inaccurate": ";".join(name(label) for label in inaccurate),
            "missing": ";".join(name(label) for label in missing),
            "inaccurate_labels": ";".join(str(label) for label in inaccurate),
            "missing_labels": ";".join(str(label) for label in missing),
            "labelmap": getattr(source, "labelmap", "") or "", "image": getattr(source, "image", "") or "",
        })
    rows.sort(key=lambda r: (-r["severity"], -r["n_out_of_range"], r["id"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def write_table(rows: Iterable[Mapping], path: str | os.PathLike, columns: Sequence[str]) -> list[Path]:
    """Stream ``rows`` to ``path`` (.csv, atomic) and, when pyarrow is installed, convert it to a
    .parquet beside it. Rows may be a generator: a cohort's tables never sit in memory as dicts.

    Returns:
        The files written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        apply_umask(temporary)  # 0644 with the usual umask, as every other output (mkstemp makes 0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return [path] + _parquet_beside(path)


def _parquet_beside(path: Path) -> list[Path]:
    try:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError:
        return []
    parquet = path.with_suffix(".parquet")
    pq.write_table(pa_csv.read_csv(path), parquet)
    return [parquet]


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV written by :func:`write_table` (values as strings)."""
    with open(path, newline="", encoding="utf-8-sig") as stream:
        return list(csv.DictReader(stream))


FEATURE_COLUMNS = ("id", "label", "name", *FEATURES)


FLAG_COLUMNS = ("id", "label", "name", *(f"{f}_out" for f in SOLF_FEATURES), "n_out_of_range",
                "inaccurate", "missing")


QC_COLUMNS = ("rank", "id", "severity", "n_inaccurate", "n_missing", "n_out_of_range", "inaccurate",
              "missing", "inaccurate_labels", "missing_labels", "labelmap", "image")


def write_qc_json(rows: Sequence[Mapping], flags: Mapping[str, Mapping[int, Mapping]],
                  path: str | os.PathLike) -> None:
    """QC list as JSON for a review GUI: each flagged sample with its full per-structure flags."""
    entries = [{**row, "flags": {str(label): entry for label, entry in flags[row["id"]].items()
                                 if entry["inaccurate"] or entry["missing"] or entry["n_out_of_range"]}}
               for row in rows]
    write_text_atomic(path, json.dumps(entries, indent=1) + "\n")
