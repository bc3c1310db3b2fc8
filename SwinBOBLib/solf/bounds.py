"""Cohort bounds (UKBOB eq. 1) and the 2-of-3 rule that flags inaccurate organ labels.

For each structure c and each SOLF feature f, the acceptable range over a cohort of N samples is

    [P_{eps/2}({f_c^n}), P_{100 - eps/2}({f_c^n})],   n = 1..N samples that contain c,

with ``numpy.percentile``'s default (linear) interpolation and epsilon in percent. A structure of a
sample is *inaccurate* when at least two of its three features fall outside their ranges: a real
anatomical anomaly rarely deviates in more than one independent aspect at once, a labelling failure
usually does. A structure the cohort nearly always has (presence >= ``missing_presence``) but the
sample lacks is reported as *missing*, a flag of its own.

Bounds are a :class:`Bounds` (a plain ``{label: {feature: (low, high)}}`` dict carrying the cohort
metadata as attributes) and are saved as a small JSON file, so a cohort fitted once filters new
scans later (:func:`save_bounds`, :func:`load_bounds`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from SwinBOBLib.io.files import write_text_atomic
from SwinBOBLib.labels.schemes import get_scheme

#: ``solf check`` refuses a label map lacking more than this share of the structures the bounds'
#: cohort always has: it is almost certainly a map of another scheme.
FOREIGN_MISSING_SHARE = 0.25


def check_scheme(path: str, scheme: str | None, bounds, features, partial: bool = False) -> None:
    """Refuse to judge a label map against bounds of another label scheme.

    Raises:
        ValueError: ``scheme`` (the map's, if given) differs from the bounds' scheme, or the map
            lacks more than :data:`FOREIGN_MISSING_SHARE` of the structures nearly every cohort
            sample has (a total_mr map against ukbob bounds).
    """
    if scheme and bounds.scheme and get_scheme(scheme).name != get_scheme(bounds.scheme).name:
        raise ValueError(f"{path}: a '{get_scheme(scheme).name}' label map cannot be checked against SOLF bounds "
                         f"of '{bounds.scheme}' maps; fit bounds on a cohort of this scheme (swinbob solf run) "
                         f"or map it first (swinbob remap)")
    expected = [label for label, share in bounds.presence.items() if share >= MISSING_PRESENCE]
    missing = [label for label in expected if label not in features]
    if expected and len(missing) > FOREIGN_MISSING_SHARE * len(expected) and not partial:
        raise ValueError(f"{path}: lacks {len(missing)} of the {len(expected)} structures nearly every sample of "
                         f"the bounds' cohort ('{bounds.scheme or 'unknown'}' scheme) has; is it a label map of "
                         "another scheme? Check it against bounds fitted on its own scheme, or map it first "
                         "(swinbob remap). If it is a map of this scheme covering part of the body (a thin "
                         "slab), pass --partial")


#: The three SOLF features, in the paper's order.
SOLF_FEATURES = ("normalized_volume", "sphericity", "eccentricity")


#: Flag a sample's structure as inaccurate when at least this many features are out of range.
MIN_OUT_OF_RANGE = 2


#: A structure present in at least this fraction of the cohort is expected in every sample.
MISSING_PRESENCE = 0.95


BOUNDS_FORMAT = "swinbob-solf-bounds"


Features = Mapping[int, Mapping[str, float]]


class Bounds(dict):
    """``{label: {feature: (low, high)}}`` with the cohort it was fitted on.

    Attributes:
        epsilon: percent excluded in total (half at each end).
        n_samples: cohort size N.
        presence: ``{label: fraction of samples containing it}``.
        counts: ``{label: samples containing it}``.
        features: the features bounded, in order.
        scheme: label scheme name (for reports), or None.
        cohort: what the cohort was (see :func:`cohort_record`): ``description``, ``synthetic``,
            median ``spacing_mm`` and ``extent_mm`` of its label maps; None when unknown.
    """

    def __init__(self, data=(), *, epsilon: float = 2.0, n_samples: int = 0,
                 presence: Mapping[int, float] | None = None, counts: Mapping[int, int] | None = None,
                 features: Sequence[str] = SOLF_FEATURES, scheme: str | None = None,
                 cohort: Mapping | None = None):
        super().__init__(data)
        self.epsilon = float(epsilon)
        self.n_samples = int(n_samples)
        self.presence = dict(presence or {})
        self.counts = dict(counts or {})
        self.features = tuple(features)
        self.scheme = scheme
        self.cohort = dict(cohort) if cohort else None


#: A scan whose spacing or extent differs from the cohort's by more than this factor gets a warning:
#: sphericity depends on voxel size and normalised volume on the field of view.
GEOMETRY_TOLERANCE = 1.5


def cohort_record(records: Sequence[Mapping], description: str = "", synthetic: bool | None = None) -> dict:
    """What a cohort was, for the bounds file: N, median voxel spacing and extent (mm) per axis.

    Args:
        records: per-sample records with ``shape`` and ``spacing`` (as :func:`compute_sample` returns).
        description: free text, e.g. "60 synthetic neck-to-knee phantoms".
        synthetic: True for generated (phantom) cohorts, None when unknown.
    """
    usable = [r for r in records if r.get("shape") and r.get("spacing")]
    spacing = np.median([r["spacing"][:3] for r in usable], axis=0) if usable else None
    extent = np.median([np.asarray(r["shape"][:3]) * np.asarray(r["spacing"][:3]) for r in usable], axis=0) \
        if usable else None
    return {"description": description, "synthetic": synthetic, "n": len(usable),
            "spacing_mm": None if spacing is None else [round(float(v), 3) for v in spacing],
            "extent_mm": None if extent is None else [round(float(v), 1) for v in extent]}


def geometry_warnings(bounds: "Bounds", spacing: Sequence[float], shape: Sequence[int]) -> list[str]:
    """Warnings when a scan's voxel spacing or extent (mm) differ markedly from the bounds' cohort
    (by more than :data:`GEOMETRY_TOLERANCE` on an axis), or when the cohort is synthetic or unknown."""
    cohort = bounds.cohort or {}
    notes = []
    if not cohort.get("spacing_mm"):
        return ["the SOLF bounds do not record their cohort's spacing and extent; verdicts cannot be "
                "checked against the scan's geometry"]
    if cohort.get("synthetic"):
        notes.append(f"the SOLF bounds come from a synthetic cohort ({cohort.get('description') or 'phantoms'}); "
                     "verdicts are against that cohort, not real anatomy")
    for what, ours, theirs in (("voxel spacing", list(spacing)[:3], cohort["spacing_mm"]),
                               ("extent", [n * s for n, s in zip(list(shape)[:3], spacing)], cohort.get("extent_mm"))):
        if not theirs:
            continue
        ratio = geometry_ratio(ours, theirs)
        if ratio > GEOMETRY_TOLERANCE:
            notes.append(f"scan {what} {mm_text(ours)} differs from the SOLF cohort's {mm_text(theirs)} by up to "
                         f"{ratio:.1f}x; sphericity depends on voxel size and normalised volume on the "
                         "field of view, so the verdicts are unreliable")
    return notes


def geometry_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """How far apart two spacings or extents are: the largest per-axis ratio (>= 1)."""
    return max(max(a, b) / max(min(a, b), 1e-9) for a, b in zip(ours, theirs))


def mm_text(values) -> str:
    return "x".join(f"{float(v):.3g}" for v in values) + " mm"


def check_epsilon(epsilon: float) -> float:
    """Epsilon as a float in [0, 100); ValueError otherwise."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon {epsilon!r} is not a number (percent)") from None
    if not 0 <= value < 100 or math.isnan(value):
        raise ValueError(f"epsilon {epsilon!r} must be a percentage in [0, 100)")
    return value


def feature_values(cohort: Mapping[str, Features], label: int, feature: str) -> np.ndarray:
    """(n,) values of one feature of one structure over the samples that contain it and have the
    value (cohort order)."""
    values = [sample[label][feature] for sample in cohort.values() if label in sample and feature in sample[label]]
    return np.asarray(values, dtype=np.float64)


def fit_bounds(cohort: Mapping[str, Features], epsilon: float = 2.0,
               features: Sequence[str] = SOLF_FEATURES, scheme: str | None = None) -> Bounds:
    """Acceptable range of each feature of each structure over a cohort (eq. 1).

    Args:
        cohort: sample id -> that sample's :func:`~SwinBOBLib.solf.organ_features` result.
        epsilon: percent of the cohort excluded per feature (eps/2 at each end), 0 <= eps < 100.
            0 keeps [min, max], so no cohort member is out of range.
        features: feature names to bound (default the three SOLF features).
        scheme: label scheme name stored with the bounds.

    Returns:
        :class:`Bounds`, ``{label: {feature: (low, high)}}`` for every label present in at least one
        sample, percentiles as ``numpy.percentile``'s default; an empty cohort gives empty bounds.
    """
    epsilon = check_epsilon(epsilon)
    labels = sorted({int(label) for sample in cohort.values() for label in sample})
    bounds, counts = {}, {}
    for label in labels:
        ranges = {}
        for feature in features:
            values = feature_values(cohort, label, feature)
            if values.size == 0:  # an optional value this structure never has (an unpaired one's partner ratio)
                continue
            low, high = np.percentile(values, [epsilon / 2, 100 - epsilon / 2])
            ranges[feature] = (float(low), float(high))
        bounds[label] = ranges
        counts[label] = int(sum(label in sample for sample in cohort.values()))
    n = len(cohort)
    presence = {label: counts[label] / n for label in labels}
    return Bounds(bounds, epsilon=epsilon, n_samples=n, presence=presence, counts=counts,
                  features=features, scheme=scheme)


def out_of_range(values: Mapping[str, float], ranges: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the features whose value lies outside its closed range (NaN counts as outside)."""
    names = []
    for feature, (low, high) in ranges.items():
        value = values[feature]
        if not low <= value <= high:
            names.append(feature)
    return names


def flag(features: Features, bounds: Mapping[int, Mapping[str, tuple[float, float]]],
         min_out_of_range: int = MIN_OUT_OF_RANGE,
         missing_presence: float = MISSING_PRESENCE) -> dict[int, dict]:
    """Apply the 2-of-3 rule to one sample.

    Args:
        features: the sample's :func:`~SwinBOBLib.solf.organ_features` result.
        bounds: :func:`fit_bounds` result (or any ``{label: {feature: (low, high)}}``).
        min_out_of_range: out-of-range features that make a structure inaccurate (paper: 2).
        missing_presence: a structure absent from the sample is reported missing when at least this
            fraction of the cohort has it (needs ``bounds.presence``, i.e. a :class:`Bounds`).

    Returns:
        ``{label: {"out_of_range": [feature names], "n_out_of_range": int, "inaccurate": bool,
        "missing": bool}}`` for every structure of the sample that has bounds (labels the cohort
        never had are not judged), plus missing structures (``missing=True``, nothing out of range).
    """
    result = {}
    for label in sorted(features):
        if label not in bounds:
            continue
        names = out_of_range(features[label], bounds[label])
        result[int(label)] = {"out_of_range": names, "n_out_of_range": len(names),
                              "inaccurate": len(names) >= min_out_of_range, "missing": False}
    presence = getattr(bounds, "presence", {})
    for label, fraction in presence.items():
        if label not in features and fraction >= missing_presence:
            result[int(label)] = {"out_of_range": [], "n_out_of_range": 0, "inaccurate": False,
                                  "missing": True}
    return dict(sorted(result.items()))


def flag_cohort(cohort: Mapping[str, Features], bounds: Mapping, **options) -> dict[str, dict[int, dict]]:
    """:func:`flag` for every sample: ``{sample id: {label: flags}}``."""
    return {sample_id: flag(features, bounds, **options) for sample_id, features in cohort.items()}


def flagged_structures(flags: Mapping[int, Mapping]) -> list[int]:
    """Labels of one sample that are inaccurate or missing."""
    return [label for label, entry in flags.items() if entry["inaccurate"] or entry["missing"]]


def _name_of(scheme: str | None, label: int) -> str:
    if scheme is None:
        return str(label)
    try:
        return get_scheme(scheme).name_of(label)
    except KeyError:
        return f"label_{label}"


def bounds_to_json(bounds: Bounds) -> dict:
    """A JSON-ready dict: format, epsilon, scheme, cohort size, features and one entry per label.

    Raises:
        ValueError: a label without its cohort presence (bounds not made by :func:`fit_bounds`): the
            file would be refused on reading, as :func:`bounds_from_json` refuses a null presence.
    """
    unknown = sorted(label for label in bounds if bounds.presence.get(label) is None)
    if unknown:
        raise ValueError(f"SOLF bounds without the cohort's presence of label(s) {unknown} cannot be saved: "
                         "give Bounds(..., presence={label: share}) or fit them with fit_bounds")
    labels = {}
    for label, ranges in bounds.items():
        entry = {"name": _name_of(bounds.scheme, label),
                 "presence": bounds.presence.get(label), "samples": bounds.counts.get(label)}
        entry.update({feature: [low, high] for feature, (low, high) in ranges.items()})
        labels[str(label)] = entry
    return {"format": BOUNDS_FORMAT, "version": 1, "epsilon": bounds.epsilon,
            "scheme": bounds.scheme, "n_samples": bounds.n_samples,
            "features": list(bounds.features), "cohort": bounds.cohort, "labels": labels}


#: Versions of the bounds file this code reads.
BOUNDS_VERSIONS = (1,)


def bounds_from_json(data: Mapping, source: str = "bounds") -> Bounds:
    """Inverse of :func:`bounds_to_json`; ValueError naming ``source``, the label, the field and the
    value for a malformed document: an unknown version, a bound that is not two finite numbers with
    low <= high, a presence that is not a share in [0, 1]."""
    if not isinstance(data, Mapping) or data.get("format") != BOUNDS_FORMAT:
        raise ValueError(f"{source}: not a SOLF bounds file (expected \"format\": \"{BOUNDS_FORMAT}\")")
    if data.get("version") not in BOUNDS_VERSIONS:
        raise ValueError(f"{source}: SOLF bounds file version {data.get('version')!r} is not one this SwinBOB "
                         f"reads ({', '.join(map(str, BOUNDS_VERSIONS))}); refit the bounds or upgrade SwinBOB")
    try:
        features = tuple(data["features"])
        bounds, presence, counts = {}, {}, {}
        for key, entry in data["labels"].items():
            label = int(key)
            where = f"{source}: label {key} ({entry.get('name', '?')})"
            # fit_bounds leaves out a feature a structure never has (an unpaired one's partner ratio)
            bounds[label] = {f: _bound(entry[f], f"{where}, {f}") for f in features if f in entry}
            presence[label] = _share(entry.get("presence"), f"{where}, presence")
            if entry.get("samples") is not None:
                counts[label] = int(entry["samples"])
        return Bounds(bounds, epsilon=data["epsilon"], n_samples=data["n_samples"], presence=presence,
                      counts=counts, features=features, scheme=data.get("scheme"), cohort=data.get("cohort"))
    except BoundsValueError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ValueError(f"{source}: malformed SOLF bounds file ({type(error).__name__}: {error})") from None


class BoundsValueError(ValueError):
    """A value of a bounds file that cannot be used; the message names the file, label and field."""


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _bound(pair, where: str) -> tuple[float, float]:
    """``[low, high]``: two finite numbers, low <= high."""
    values = [_number(v) for v in pair] if isinstance(pair, (list, tuple)) and len(pair) == 2 else [math.nan]
    if not all(math.isfinite(v) for v in values) or values[0] > values[1]:
        raise BoundsValueError(f"{where} is {json.dumps(pair)}; expected [low, high], two finite numbers "
                               "with low <= high")
    return values[0], values[1]


def _share(value, where: str) -> float:
    number = _number(value)
    if not 0 <= number <= 1:  # NaN fails too
        raise BoundsValueError(f"{where} is {json.dumps(value)}; expected the share of the cohort with this "
                               "structure, a number in [0, 1] (it decides which absent structures are missing)")
    return number


def save_bounds(bounds: Bounds, path: str | os.PathLike) -> None:
    """Save bounds as JSON (atomic write)."""
    write_text_atomic(path, json.dumps(bounds_to_json(bounds), indent=1) + "\n")


def load_bounds(path: str | os.PathLike) -> Bounds:
    """Read bounds saved by :func:`save_bounds`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read SOLF bounds ({error})") from None
    return bounds_from_json(data, source=str(path))
