"""SOLF cohort bounds (eq. 1), the 2-of-3 rule, bounds files and the epsilon ablation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from SwinBOBLib.solf import Bounds, fit_bounds, flag, load_bounds, save_bounds
from SwinBOBLib.solf import ablation


def sample(nv, sph, ecc, label=1, extra=None):
    features = {label: {"voxels": int(nv * 1000), "volume_mm3": nv * 1000.0, "normalized_volume": nv,
                        "surface_mm2": 100.0, "sphericity": sph, "eccentricity": ecc}}
    features.update(extra or {})
    return features


@pytest.fixture
def cohort():
    """Ten samples whose structure 1 runs over 0.10..0.19 (normalised volume), 0.50..0.59
    (sphericity), 0.30..0.39 (eccentricity); structure 2 only in the first five."""
    samples = {}
    for n in range(10):
        other = {2: sample(0.01, 0.9, 0.1, label=2)[2]} if n < 5 else {}
        samples[f"s{n}"] = sample(0.10 + n / 100, 0.50 + n / 100, 0.30 + n / 100, extra=other)
    return samples


def test_fit_bounds_are_numpy_percentiles(cohort):
    bounds = fit_bounds(cohort, epsilon=20.0)
    values = [0.10 + n / 100 for n in range(10)]
    assert bounds[1]["normalized_volume"] == pytest.approx(tuple(np.percentile(values, [10, 90])))
    assert set(bounds[1]) == {"normalized_volume", "sphericity", "eccentricity"}
    assert isinstance(bounds[1]["sphericity"], tuple)
    assert bounds[2]["eccentricity"] == (0.1, 0.1)
    assert bounds.presence == {1: 1.0, 2: 0.5} and bounds.n_samples == 10 and bounds.epsilon == 20.0


def test_epsilon_zero_is_min_max(cohort):
    bounds = fit_bounds(cohort, epsilon=0)
    assert bounds[1]["sphericity"] == pytest.approx((0.50, 0.59))
    assert not any(entry["inaccurate"] for s in cohort.values() for entry in flag(s, bounds).values())


def test_two_of_three_rule(cohort):
    bounds = fit_bounds(cohort, epsilon=0)  # ranges: nv 0.10..0.19, sph 0.50..0.59, ecc 0.30..0.39
    cases = {
        "none": (sample(0.15, 0.55, 0.35), [], False),
        "volume only (a large but normal organ)": (sample(0.40, 0.55, 0.35), ["normalized_volume"], False),
        "sphericity only": (sample(0.15, 0.20, 0.35), ["sphericity"], False),
        "volume and eccentricity": (sample(0.01, 0.55, 0.95), ["normalized_volume", "eccentricity"], True),
        "sphericity and eccentricity": (sample(0.15, 0.95, 0.01), ["sphericity", "eccentricity"], True),
        "all three": (sample(0.5, 0.1, 0.9), ["normalized_volume", "sphericity", "eccentricity"], True),
        "on the bounds": (sample(0.10, 0.59, 0.39), [], False),
    }
    for name, (features, out, inaccurate) in cases.items():
        result = flag(features, bounds)[1]
        assert result["out_of_range"] == out, name
        assert result["n_out_of_range"] == len(out), name
        assert result["inaccurate"] is inaccurate, name
        assert result["missing"] is False


def test_missing_structure_is_its_own_flag(cohort):
    bounds = fit_bounds(cohort, epsilon=2)
    absent = flag({}, bounds)
    assert absent[1] == {"out_of_range": [], "n_out_of_range": 0, "inaccurate": False, "missing": True}
    assert 2 not in absent  # only half the cohort has structure 2: its absence is normal
    unknown = flag(sample(0.15, 0.55, 0.35, label=99, extra=cohort["s0"]), bounds)
    assert 99 not in unknown  # no bounds, not judged


def test_flag_with_plain_dict_bounds():
    bounds = {1: {"normalized_volume": (0.1, 0.2), "sphericity": (0.5, 0.6), "eccentricity": (0.3, 0.4)}}
    assert flag(sample(0.5, 0.9, 0.35), bounds)[1]["inaccurate"] is True
    assert flag({}, bounds) == {}


def test_bounds_json_round_trip(tmp_path, cohort):
    bounds = fit_bounds(cohort, epsilon=2.0, scheme="ukbob")
    path = tmp_path / "bounds.json"
    save_bounds(bounds, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["epsilon"] == 2.0 and data["n_samples"] == 10 and data["scheme"] == "ukbob"
    assert data["labels"]["1"]["name"] == "spleen"
    loaded = load_bounds(path)
    assert isinstance(loaded, Bounds)
    assert loaded == bounds
    assert loaded.presence == bounds.presence and loaded.epsilon == 2.0
    assert flag(cohort["s9"], loaded) == flag(cohort["s9"], bounds)


def test_bad_bounds_and_epsilon(tmp_path, cohort):
    for epsilon in (-1, 100, float("nan"), "x"):
        with pytest.raises(ValueError, match="epsilon"):
            fit_bounds(cohort, epsilon=epsilon)
    path = tmp_path / "other.json"
    path.write_text('{"something": 1}')
    with pytest.raises(ValueError, match="other.json"):
        load_bounds(path)
    with pytest.raises(ValueError, match="missing.json"):
        load_bounds(tmp_path / "missing.json")


def test_empty_cohort():
    assert fit_bounds({}) == {}


def test_precision_recall():
    assert ablation.precision_recall({("a", 1), ("b", 2)}, {("a", 1), ("c", 3)}) == (0.5, 0.5)
    precision, recall = ablation.precision_recall(set(), {("a", 1)})
    assert math.isnan(precision) and recall == 0


def test_ablation_on_hand_made_cohort():
    # Independent features: each sample is extreme in at most one of them, except "bad", which a
    # labelling failure made too large and too irregular at once.
    cohort = {f"s{n}": sample(0.10 + n / 100, 0.50 + (3 * n + 1) % 10 / 100, 0.30 + (7 * n + 5) % 10 / 100)
              for n in range(10)}
    cohort["bad"] = sample(0.60, 0.10, 0.35)
    truth = {("bad", 1)}
    rows = ablation.ablation_table(cohort, truth, epsilons=(0, 20))
    assert [r["epsilon"] for r in rows] == [0, 20]
    assert rows[0]["structures_flagged"] == 0  # eps 0: nothing outside [min, max]
    eps20 = rows[1]
    assert ablation.solf_flags(cohort, 20) == {("bad", 1)}
    assert (eps20["solf_precision"], eps20["solf_recall"]) == (1.0, 1.0)
    assert ("s0", 1) in ablation.volume_flags(cohort, 20)  # the smallest normal organ: volume alone flags it
    assert eps20["volume_recall"] == 1.0 and eps20["volume_precision"] < 1.0
    assert ablation.iqr_flags(cohort) == {("bad", 1)}  # 600 voxels, far beyond Tukey's fences
    text = ablation.markdown_table(rows)
    assert text.startswith("| epsilon |") and text.count("\n") == 4
