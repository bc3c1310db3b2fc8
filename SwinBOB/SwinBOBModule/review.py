"""Visual QC of the samples SOLF filtered out: walk a cohort's QC list, record a decision per
flagged structure, resume after a crash, and export the measured false-alarm rate.

Input is the ``qc_list.json`` written by ``swinbob solf run COHORT -o OUT`` (or ``qc_list.csv``
beside it; the JSON is preferred because it holds each structure's out-of-range features). Every
flagged structure (``inaccurate`` or ``missing``) of every listed sample is one :class:`ReviewItem`.

Decisions go to an append-only JSON-lines file beside the QC list (``qc_list.review.jsonl``), one
line per decision, flushed and fsync'ed before :meth:`ReviewSession.decide` returns::

    {"reviewer": "ab", "time": "2026-11-24T05:30:00+00:00", "sample": "case_0001", "label": 3,
     "structure": "kidney_left", "decision": "reject", "comment": ""}

The last line for a (sample, label) wins, so a changed mind is one more line; a line cut short by
a crash is skipped when the file is read. Several writers (the Slicer panel, web review servers)
may append to one file at once: each append holds an exclusive lock on it. Nothing here touches Qt
or MRML (the sample on MRML nodes is :mod:`.samples`).
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from SwinBOBLib import io as swinbob_io

#: Decisions a reviewer can record: the label is right (SOLF false alarm), wrong, or to be corrected.
ACCEPT, REJECT, CORRECT = "accept", "reject", "correct"
DECISIONS = (ACCEPT, REJECT, CORRECT)
#: Decision state of an item without a decision.
PENDING = "pending"
#: Why a structure is flagged: 2 of 3 features out of range (the paper's rule), or absent.
KINDS = ("inaccurate", "missing")
#: The three SOLF features, in the order shown.
SOLF_FEATURES = ("normalized_volume", "sphericity", "eccentricity")
#: Columns of the per-structure summary CSV.
SUMMARY_COLUMNS = ("label", "structure", "flagged", "reviewed", "accept", "reject", "correct",
                   "false_alarm_rate")


@dataclass(frozen=True)
class ReviewItem:
    """One flagged structure of one sample."""

    sample: str
    label: int
    structure: str
    kind: str  # "inaccurate" or "missing"
    out_of_range: tuple = ()
    rank: int = 0
    severity: int = 0
    labelmap: str = ""
    image: str = ""

    @property
    def key(self) -> tuple[str, int]:
        return (self.sample, self.label)


# ----------------------------------------------------------------------------- reading the QC list


def _structureName(label: int) -> str:
    from SwinBOBLib.labels import get_scheme

    try:
        return get_scheme("ukbob").name_of(label)
    except KeyError:
        return f"label_{label}"


def _itemsFromJson(entries: list, source: Path) -> list[ReviewItem]:
    items = []
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry or "flags" not in entry:
            raise ValueError(f"{source}: expected QC entries with 'id' and 'flags', got {str(entry)[:80]!r}")
        for label_text, flag in sorted(entry["flags"].items(), key=lambda kv: int(kv[0])):
            if not (flag.get("inaccurate") or flag.get("missing")):
                continue
            label = int(label_text)
            items.append(ReviewItem(str(entry["id"]), label, _structureName(label),
                                    "missing" if flag.get("missing") else "inaccurate",
                                    tuple(flag.get("out_of_range", ())), int(entry.get("rank", 0)),
                                    int(entry.get("severity", 0)), entry.get("labelmap", ""), entry.get("image", "")))
    return items


def _itemsFromCsv(rows: list, source: Path) -> list[ReviewItem]:
    items = []
    for row in rows:
        for kind in ("inaccurate", "missing"):
            for label_text in filter(None, (row.get(f"{kind}_labels") or "").split(";")):
                label = int(label_text)
                items.append(ReviewItem(row["id"], label, _structureName(label), kind, (), int(row.get("rank") or 0),
                                        int(row.get("severity") or 0), row.get("labelmap", ""), row.get("image", "")))
    return items


def loadQcList(path) -> list[ReviewItem]:
    """The flagged structures of a QC list, in its order (most severe sample first).

    Args:
        path: ``qc_list.json``, ``qc_list.csv`` (its ``.json`` sibling is used when present) or the
            SOLF output folder holding them.
    Raises:
        FileNotFoundError: no QC list there. ValueError: not a QC list.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "qc_list.json" if (path / "qc_list.json").exists() else path / "qc_list.csv"
    if path.suffix == ".csv" and path.with_suffix(".json").exists():
        path = path.with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"QC list not found: {path}")
    if path.suffix == ".json":
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a JSON QC list ({error})") from error
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of flagged samples")
        return _itemsFromJson(entries, path)
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if rows and "id" not in rows[0]:
        raise ValueError(f"{path}: expected a qc_list.csv with an 'id' column, got {list(rows[0])}")
    return _itemsFromCsv(rows, path)


def qcListPath(path) -> Path:
    """The QC list file a path names (as :func:`loadQcList` resolves it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "qc_list.json" if (path / "qc_list.json").exists() else path / "qc_list.csv"
    return path


# ----------------------------------------------------------------------------- the decisions file


def readDecisions(path) -> dict[tuple[str, int], dict]:
    """(sample, label) -> its last decision record; missing file = none.

    Lines that cannot be a decision are skipped, so the log always reopens: a torn last line (cut
    mid-character too: the file is decoded line by line), and records whose ``decision`` is not one
    of :data:`DECISIONS` (a hand edit, another version).
    """
    decisions = {}
    path = Path(path)
    if not path.exists():
        return decisions
    for raw in path.read_bytes().splitlines():
        try:
            record = json.loads(raw.decode("utf-8"))
            if record["decision"] not in DECISIONS:
                continue
            decisions[(str(record["sample"]), int(record["label"]))] = record
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut short by a crash
    return decisions


def _lock(stream) -> None:
    """An exclusive lock on an open file until it is closed (POSIX; Windows has no fcntl and
    appends unlocked, as before)."""
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(stream.fileno(), fcntl.LOCK_EX)


def appendDecision(path, record: dict) -> None:
    """Append one JSON line and fsync it: the decision survives a crash once this returns.
    Concurrent appends from several processes or threads are serialised by a file lock."""
    path = Path(path)
    text = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "ab") as stream:
        _lock(stream)  # other writers (a web review, the panel) wait: no interleaved or lost line
        if stream.tell() > 0:  # a torn last line must not swallow this record
            with open(path, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    stream.write(b"\n")
        stream.write(text.encode("utf-8"))
        stream.flush()
        os.fsync(stream.fileno())


# ----------------------------------------------------------------------------- the session


@dataclass
class ReviewSession:
    """A reviewer's walk through a QC list: filter, sort, step, decide, resume.

    Args:
        qcList: path of the QC list (see :func:`loadQcList`).
        reviewer: name written into each decision.
        reviewPath: the decisions file (default: ``<qc list stem>.review.jsonl`` beside it).
    """

    qcList: str
    reviewer: str = ""
    reviewPath: str | None = None
    items: list = field(init=False)
    decisions: dict = field(init=False)
    view: list = field(init=False)  # indices into items: the filtered, sorted list
    position: int = field(init=False, default=0)  # index into view

    def __post_init__(self):
        source = qcListPath(self.qcList)
        self.items = loadQcList(source)
        if self.reviewPath is None:
            self.reviewPath = str(source.with_name(source.stem + ".review.jsonl"))
        self.decisions = readDecisions(self.reviewPath)
        self.view = list(range(len(self.items)))
        self.resume()

    # -- state

    def state(self, item: ReviewItem) -> str:
        record = self.decisions.get(item.key)
        return record["decision"] if record else PENDING

    @property
    def current(self) -> ReviewItem | None:
        return self.items[self.view[self.position]] if self.view else None

    @property
    def progress(self) -> tuple[int, int]:
        """(reviewed, flagged) over the whole list."""
        return sum(item.key in self.decisions for item in self.items), len(self.items)

    def progressText(self) -> str:
        done, total = self.progress
        return f"{done} of {total} reviewed"

    # -- filtering and sorting

    def setFilter(self, structure: str | None = None, feature: str | None = None, state: str | None = None,
                  sortBy: str = "rank", kind: str | None = None) -> int:
        """Restrict the walk to matching items; returns how many match. ``feature``: one SOLF check
        out of range; ``kind``: "inaccurate" (the paper's 2 of 3) or "missing". ``sortBy``: rank (QC
        list order), structure, sample or state. The position moves to the first pending match."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        sortKeys = {"rank": lambda i: i, "structure": lambda i: (self.items[i].structure, i),
                    "sample": lambda i: (self.items[i].sample, i),
                    "state": lambda i: (self.state(self.items[i]) != PENDING, i)}
        if sortBy not in sortKeys:
            raise ValueError(f"sortBy must be one of {', '.join(sortKeys)}, got {sortBy!r}")
        if state is not None and state not in (*DECISIONS, PENDING):
            raise ValueError(f"state must be one of {', '.join((*DECISIONS, PENDING))}, got {state!r}")
        self.view = sorted((i for i, item in enumerate(self.items)
                            if (not structure or item.structure == structure)
                            and (not feature or feature in item.out_of_range)
                            and (not state or self.state(item) == state)
                            and (not kind or item.kind == kind)), key=sortKeys[sortBy])
        self.resume()
        return len(self.view)

    def structures(self) -> list[str]:
        return sorted({item.structure for item in self.items})

    # -- stepping

    def resume(self) -> ReviewItem | None:
        """Go to the first item of the view without a decision (the last one when all are done)."""
        pending = [p for p, i in enumerate(self.view) if self.items[i].key not in self.decisions]
        self.position = pending[0] if pending else max(len(self.view) - 1, 0)
        return self.current

    def next(self) -> ReviewItem | None:
        self.position = min(self.position + 1, max(len(self.view) - 1, 0))
        return self.current

    def previous(self) -> ReviewItem | None:
        self.position = max(self.position - 1, 0)
        return self.current

    def goTo(self, position: int) -> ReviewItem | None:
        if not 0 <= position < len(self.view):
            raise ValueError(f"position {position} outside the list of {len(self.view)} items")
        self.position = position
        return self.current

    # -- deciding

    def refresh(self) -> None:
        """Reread the decisions file: decisions other reviewers (another server, the Slicer panel)
        appended since are seen."""
        self.decisions = readDecisions(self.reviewPath)

    def decide(self, decision: str, comment: str = "", item: ReviewItem | None = None,
               advance: bool = True) -> dict:
        """Record ``decision`` for ``item`` (default: the current one), durably; then step on."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        item = item or self.current
        if item is None:
            raise ValueError("no item to decide on: the QC list (or its filtered view) is empty")
        record = {"reviewer": self.reviewer, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "sample": item.sample, "label": item.label, "structure": item.structure,
                  "decision": decision, "comment": comment, "out_of_range": list(item.out_of_range)}
        appendDecision(self.reviewPath, record)
        self.decisions[item.key] = record
        if advance and item is self.current:
            self.next()
        return record

    # -- summary

    def summaryRows(self) -> list[dict]:
        """Per structure: flagged, reviewed, decisions, false-alarm rate = accepted / reviewed (NaN
        until one is reviewed)."""
        rows = {}
        for item in self.items:
            row = rows.setdefault(item.label, {"label": item.label, "structure": item.structure, "flagged": 0,
                                               "reviewed": 0, ACCEPT: 0, REJECT: 0, CORRECT: 0})
            row["flagged"] += 1
            state = self.state(item)
            if state in DECISIONS:  # anything else counts as not reviewed, never as a crash
                row["reviewed"] += 1
                row[state] += 1
        for row in rows.values():
            row["false_alarm_rate"] = row[ACCEPT] / row["reviewed"] if row["reviewed"] else float("nan")
        return [rows[label] for label in sorted(rows)]

    def exportSummary(self, path=None) -> Path:
        """Write :meth:`summaryRows` as CSV (default: ``<qc list stem>.review_summary.csv``), atomically."""
        source = qcListPath(self.qcList)
        path = Path(path) if path else source.with_name(source.stem + ".review_summary.csv")
        buffer = _io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.summaryRows():
            writer.writerow({**row, "false_alarm_rate": "" if row["false_alarm_rate"] != row["false_alarm_rate"]
                             else f"{row['false_alarm_rate']:.4f}"})
        return swinbob_io.write_text_atomic(path, buffer.getvalue())

    # -- why it was flagged

    def featureContext(self, item: ReviewItem | None = None) -> dict:
        """The structure's three features against the cohort bounds, from ``bounds.json`` and
        ``features.csv`` beside the QC list: feature -> {value, low, high, out_of_range, cohort
        (all samples' values)}. Features without data are left out (a missing structure has none)."""
        item = item or self.current
        folder = qcListPath(self.qcList).parent
        bounds = {}
        if (folder / "bounds.json").exists():
            bounds = json.loads((folder / "bounds.json").read_text(encoding="utf-8")).get("labels", {})
        entry = bounds.get(str(item.label), {})
        values = {f: [] for f in SOLF_FEATURES}
        own = {}
        if (folder / "features.csv").exists():
            with open(folder / "features.csv", newline="", encoding="utf-8") as stream:
                for row in csv.DictReader(stream):
                    if int(row["label"]) != item.label:
                        continue
                    for f in SOLF_FEATURES:
                        if row.get(f) not in (None, ""):
                            values[f].append(float(row[f]))
                            if row["id"] == item.sample:
                                own[f] = float(row[f])
        context = {}
        for f in SOLF_FEATURES:
            low, high = (entry.get(f) or [None, None])[:2]
            if f in own or low is not None:
                context[f] = {"value": own.get(f), "low": low, "high": high, "cohort": values[f],
                              "out_of_range": f in item.out_of_range}
        return context


def plotFeatureContext(context: dict, path, title: str = "") -> Path:
    """A small PNG: per feature, the cohort's values (dots), the bounds (band) and this sample (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = list(context) or ["(no features)"]
    figure, axes = plt.subplots(len(features), 1, figsize=(4, 0.9 * len(features) + 0.4), squeeze=False)
    for axis, feature in zip(axes[:, 0], features):
        entry = context.get(feature, {})
        cohort = entry.get("cohort", [])
        axis.plot(cohort, np.zeros(len(cohort)), "|", color="0.4", markersize=12)
        if entry.get("low") is not None:
            axis.axvspan(entry["low"], entry["high"], color="#b6d7a8", alpha=0.6)
        if entry.get("value") is not None:
            axis.plot([entry["value"]], [0], "o", color="#c00000" if entry.get("out_of_range") else "#1a7f1a")
        axis.set_yticks([])
        axis.set_ylabel(feature.replace("_", " "), rotation=0, ha="right", fontsize=7)
        axis.tick_params(labelsize=6)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def structureMeanEntropy(entropy: np.ndarray, labels: np.ndarray, label: int) -> float:
    """Mean of ``entropy`` over the voxels of ``label`` (see :func:`.samples.structureMeanEntropy`)."""
    from . import samples

    return samples.structureMeanEntropy(entropy, labels, label)


# ----------------------------------------------------------------------------- MRML side
# The sample on MRML nodes lives in .samples (shared with the web review); these names stay for
# callers of 0.1. Imported lazily so that this module works without slicer-core.


def loadSampleNodes(scene, item: ReviewItem, progress=None):
    """See :func:`.samples.loadSampleNodes`."""
    from . import samples

    return samples.loadSampleNodes(scene, item, progress)


def jumpToStructure(scene, segmentationNode, label: int, referenceVolumeNode=None) -> np.ndarray | None:
    """Centre every slice view on the structure's centroid (RAS, mm); returns it, or None when the
    structure has no segment (a missing structure). See :func:`.samples.centreOnStructure`."""
    from . import samples

    try:
        return samples.centreOnStructure(scene, segmentationNode, label, highlight=False)
    except ValueError:
        return None


def showSampleLayers(scene, volumeNode, entropyNode=None) -> None:
    """See :func:`.samples.showSampleLayers`."""
    from . import samples

    samples.showSampleLayers(scene, volumeNode, entropyNode)


def loadSampleEntropy(scene, item: ReviewItem):
    """See :func:`.samples.loadSampleEntropy`."""
    from . import samples

    return samples.loadSampleEntropy(scene, item)
