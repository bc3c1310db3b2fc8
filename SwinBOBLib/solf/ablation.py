"""The epsilon ablation of UKBOB (section 5) and the filters beyond it: per epsilon, what each
filter flags and, on cohorts with planted corruptions (``corruptions/<id>.json`` as written by
:func:`SwinBOBLib.phantom.write_cohort`), the precision and recall of its flags against that ground
truth, overall and per corruption kind.

Unit of evaluation: a (sample, structure) pair. A pair is *positive* when a corruption record names
that structure of that sample, or records it as damaged on the way (a dilation overwrites its
neighbours: they are wrong labels too, :func:`corrupted_pairs`); it is *flagged* by a filter as
listed in :data:`METHODS`:

- ``solf``: the paper's rule alone, at least two of the three SOLF features outside their eq. 1
  ranges; ``missing``: our rule, a structure absent where the cohort nearly always has it;
  ``solf+missing`` both;
- ``volume`` (normalised volume alone out of its eq. 1 range) and ``iqr`` (raw voxel count outside
  Tukey's fences): the paper's comparisons;
- one filter per check of :data:`~.checks.CHECKS` (each with its own cohort bounds at epsilon);
- ``combined``: everything together: the missing rule, the side rule, and at least
  :data:`~.checks.COMBINED_MIN_SIGNALS` (three) signals out of range among the SOLF features and
  the other checks (:func:`combined_flags`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from SwinBOBLib.solf.bounds import fit_bounds, flag
from SwinBOBLib.solf.checks import (
    CHECKS,
    STRUCTURAL_CHECKS,
    bounded_features,
    check_flags,
    cohort_size_warning,
    combined_verdict,
    out_of_range_signals,
)

Cohort = Mapping[str, Mapping[int, Mapping[str, float]]]


Pairs = set[tuple[str, int]]


EPSILONS = (0, 1, 2, 3, 4, 5)


#: Tukey's fences: out of [Q1 - k IQR, Q3 + k IQR].
IQR_K = 1.5


def _flagged(cohort: Cohort, bounds, min_out_of_range: int, missing: bool = False) -> Pairs:
    """Pairs out of range on at least ``min_out_of_range`` features (or only the missing ones)."""
    pairs = set()
    for sample_id, features in cohort.items():
        for label, entry in flag(features, bounds, min_out_of_range=min_out_of_range).items():
            if (entry["missing"] if missing else entry["inaccurate"]):
                pairs.add((sample_id, label))
    return pairs


def solf_flags(cohort: Cohort, epsilon: float, name_of=None) -> Pairs:
    """SOLF as the paper defines it: two of the three features out of their eq. 1 range."""
    return _flagged(cohort, fit_bounds(cohort, epsilon), min_out_of_range=2)


def missing_flags(cohort: Cohort, epsilon: float = 0.0, name_of=None) -> Pairs:
    """Structures absent from a sample while at least 95 % of the cohort has them (our rule)."""
    return _flagged(cohort, fit_bounds(cohort, 0.0), min_out_of_range=99, missing=True)


def volume_flags(cohort: Cohort, epsilon: float, name_of=None) -> Pairs:
    """Normalised volume alone out of its eq. 1 range (the paper's "volume only" filter)."""
    return _flagged(cohort, fit_bounds(cohort, epsilon, features=("normalized_volume",)), min_out_of_range=1)


def iqr_flags(cohort: Cohort, epsilon: float | None = None, name_of=None, k: float = IQR_K) -> Pairs:
    """Flat IQR filter: a structure's raw voxel count outside Tukey's fences over the cohort
    (no body normalisation, no shape); epsilon is ignored."""
    bounds = fit_bounds(cohort, 0.0, features=("voxels",))
    for label in bounds:
        q1, q3 = np.percentile([s[label]["voxels"] for s in cohort.values() if label in s], [25, 75])
        bounds[label] = {"voxels": (q1 - k * (q3 - q1), q3 + k * (q3 - q1))}
    return _flagged(cohort, bounds, min_out_of_range=1)


def _has_values(cohort: Cohort, features: Sequence[str]) -> bool:
    return all(f in values for sample in cohort.values() for values in sample.values() for f in features)


def _present(cohort: Cohort, check) -> bool:
    """Whether a check applies to the cohort: every structure has a structural check's values;
    an optional check (image, entropy, partner) needs them on at least one structure."""
    if not check.needs:
        return _has_values(cohort, check.values)
    return any(f in values for sample in cohort.values() for values in sample.values() for f in check.values)


def check_filter(name: str) -> Callable[..., Pairs]:
    """The filter of one check of :data:`~.checks.CHECKS`: its bounds fitted on the cohort at epsilon."""

    def flags(cohort: Cohort, epsilon: float, name_of=None) -> Pairs:
        if not _present(cohort, CHECKS[name]):
            raise ValueError(f"the cohort's features lack the '{name}' check values; recompute them "
                             "(a store written before the checks existed is recomputed automatically)")
        bounds = fit_bounds(cohort, epsilon, features=bounded_features(cohort))
        namer = name_of or (lambda label: "")
        return {(sample_id, label) for sample_id, values in cohort.items()
                for label, failed in check_flags(values, bounds, namer, [name]).items() if failed}

    flags.__doc__ = f"Check '{name}': {CHECKS[name].description}."
    return flags


def combined_flags(cohort: Cohort, epsilon: float, name_of=None) -> Pairs:
    """Everything together: the missing rule, the side rule, and any structure with at least
    :data:`~.checks.COMBINED_MIN_SIGNALS` signals out of range among the three SOLF features and the
    cohort-bounded checks (the paper's principle, a real anomaly deviates in several independent
    ways at once, over every feature and check; :func:`~.checks.combined_verdict`). The checks that
    need an image, an entropy map or a scheme join where the cohort has their values."""
    for name in STRUCTURAL_CHECKS:
        if not _has_values(cohort, CHECKS[name].values):
            raise ValueError(f"the cohort's features lack the '{name}' check values; recompute them")
    solf_bounds = fit_bounds(cohort, epsilon)
    check_bounds = fit_bounds(cohort, epsilon, features=bounded_features(cohort))
    namer = name_of or (lambda label: "")
    pairs = set(missing_flags(cohort))
    for sample_id, values in cohort.items():
        for label, entry in values.items():
            if label not in solf_bounds:
                continue
            signals = out_of_range_signals(entry, solf_bounds[label], check_bounds.get(label, {}), namer(label))
            if combined_verdict(signals):
                pairs.add((sample_id, label))
    return pairs


#: Filter name -> flagged (sample, structure) pairs for a cohort, epsilon and label namer.
METHODS: dict[str, Callable[..., Pairs]] = {
    "solf": solf_flags, "missing": missing_flags,
    "solf+missing": lambda cohort, epsilon, name_of=None: solf_flags(cohort, epsilon) | missing_flags(cohort),
    "volume": volume_flags, "iqr": iqr_flags,
    **{name: check_filter(name) for name in CHECKS},
    "combined": combined_flags,
}


def methods_for(cohort: Cohort) -> list[str]:
    """The filters that apply to a cohort: a check's filter (and ``combined``) only where the
    cohort has its values (features computed without the checks have none; the entropy check
    needs entropy maps)."""
    usable = {name for name, check in CHECKS.items() if _present(cohort, check)}
    return [m for m in METHODS if (m not in CHECKS or m in usable)
            and (m != "combined" or set(STRUCTURAL_CHECKS) <= usable)]


#: Record ``params`` keys naming a second structure whose label a corruption also made wrong: a
#: left/right swap mislabels both sides. (A merge's target only gains a small structure; it counts
#: only when that damages it, see ``damaged``.)
SECOND_LABEL_KEYS = ("partner",)


def load_corruptions(folder: str | os.PathLike, sample_ids: Iterable[str] | None = None) -> list[dict]:
    """Corruption records of ``folder/<id>.json`` (a list of ``{"label", "kind", "params", ...}``, or
    ``{"corruptions": [...]}``), each with its ``id`` added. Samples without records are clean."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no corruption records folder")
    wanted = set(sample_ids) if sample_ids is not None else None
    records = []
    for path in sorted(folder.glob("*.json")):
        sample_id = path.name[: -len(".json")]
        if wanted is not None and sample_id not in wanted:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, Mapping):
            data = data.get("corruptions", data.get("records", []))
        try:
            records += [{**r, "id": sample_id, "label": int(r["label"])} for r in data]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: corruption records need an integer 'label'") from None
    return records


def corrupted_pairs(record: Mapping) -> Pairs:
    """(sample id, label) pairs one corruption record makes wrong: its structure, a second one
    named in its parameters (:data:`SECOND_LABEL_KEYS`) and the structures it damaged on the way
    (``damaged``: Dice below :data:`SwinBOBLib.phantom.DAMAGE_DICE` against the map before it, e.g.
    the neighbours a dilation overwrote; records written before that field existed have none)."""
    pairs = {(record["id"], int(record["label"]))}
    params = record.get("params") or {}
    pairs.update((record["id"], int(params[key])) for key in SECOND_LABEL_KEYS if params.get(key) is not None)
    pairs.update((record["id"], int(d["label"])) for d in record.get("damaged") or ())
    return pairs


def load_truth(folder: str | os.PathLike, sample_ids: Iterable[str] | None = None) -> Pairs:
    """All (sample id, label) pairs the corruption records of ``folder`` make wrong."""
    return set().union(*[corrupted_pairs(r) for r in load_corruptions(folder, sample_ids)])


def recall_by_kind(cohort: Cohort, records: Sequence[Mapping], epsilon: float = 2.0, name_of=None,
                   methods: Sequence[str] | None = None) -> list[dict]:
    """Per corruption kind: how many corruptions, and the share each filter catches (a corruption
    is caught when any structure it made wrong is flagged)."""
    methods = methods or methods_for(cohort)
    flagged = {name: METHODS[name](cohort, epsilon, name_of) for name in methods}
    rows = []
    for kind in sorted({r.get("kind", "?") for r in records}):
        of_kind = [corrupted_pairs(r) for r in records if r.get("kind", "?") == kind]
        row = {"kind": kind, "corruptions": len(of_kind)}
        row.update({f"{name}_recall": sum(bool(p & pairs) for p in of_kind) / len(of_kind)
                    for name, pairs in flagged.items()})
        rows.append(row)
    return rows


def precision_recall(flagged: Pairs, truth: Pairs) -> tuple[float, float]:
    """Precision (NaN when nothing is flagged) and recall (NaN when nothing is positive)."""
    hits = len(flagged & truth)
    precision = hits / len(flagged) if flagged else math.nan
    recall = hits / len(truth) if truth else math.nan
    return precision, recall


def ablation_table(cohort: Cohort, truth: Pairs | None = None, epsilons: Sequence[float] = EPSILONS,
                   name_of=None, methods: Sequence[str] | None = None) -> list[dict]:
    """One row per epsilon: samples and structures the paper's SOLF flags, whether the cohort is
    too small for that epsilon, and, with ``truth``, the flags, precision and recall of every
    filter (structure level) and of SOLF per sample."""
    methods = methods or methods_for(cohort)
    rows = []
    truth_samples = {s for s, _ in truth} if truth is not None else None
    for epsilon in epsilons:
        flagged = {name: METHODS[name](cohort, epsilon, name_of) for name in methods}
        samples = {s for s, _ in flagged["solf"]}
        row = {"epsilon": epsilon, "samples_flagged": len(samples), "structures_flagged": len(flagged["solf"]),
               "cohort_too_small": int(cohort_size_warning(len(cohort), epsilon) is not None)}
        if truth is not None:
            for name, pairs in flagged.items():
                if name != "solf":  # SOLF's count is structures_flagged
                    row[f"{name}_flagged"] = len(pairs)
                row[f"{name}_precision"], row[f"{name}_recall"] = precision_recall(pairs, truth)
            row["solf_sample_precision"], row["solf_sample_recall"] = precision_recall(
                {(s, 0) for s in samples}, {(s, 0) for s in truth_samples})
        rows.append(row)
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping]) -> str:
    """The rows of :func:`ablation_table` as a Markdown table."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "| " + " | ".join("---:" for _ in columns) + " |"]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
