"""The one command that regenerates docs/solf.md's tables (benchmarks/reproduce_solf.py), run reduced
(8 tiny phantoms, deterministic seeds) against the committed expected tables."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from SwinBOBLib.solf.tables import read_csv

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "Testing" / "Data" / "fixtures" / "solf_reproduce"
ARGS = ["--n", "8", "--sizes", "4,8", "--no-report", "--no-real"]  # as the fixture was made


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_solf", REPO / "benchmarks" / "reproduce_solf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same(actual: str, expected: str) -> bool:
    try:
        a, b = float(actual), float(expected)
    except ValueError:
        return actual == expected
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    assert _script().main(["-o", str(out), *ARGS]) == 0
    return out


@pytest.mark.parametrize("table", ["ablation/ablation.csv", "ablation/ablation_by_kind.csv", "by_cohort_size.csv"])
def test_reduced_run_reproduces_the_committed_tables(reproduced, table):
    actual = read_csv(reproduced / table)
    expected = read_csv(EXPECTED / Path(table).name)
    assert [list(r) for r in actual] == [list(r) for r in expected]  # same columns, same rows
    for row, want in zip(actual, expected):
        assert all(_same(row[k], want[k]) for k in want), (table, row, want)


def test_interface_columns(reproduced):
    rows = read_csv(reproduced / "ablation" / "ablation.csv")
    assert {"epsilon", "solf_precision", "solf_recall", "combined_precision", "combined_recall"} <= set(rows[0])
    kinds = read_csv(reproduced / "ablation" / "ablation_by_kind.csv")
    assert {"kind", "solf_recall", "combined_recall", "missing_recall"} <= set(kinds[0])
    assert (reproduced / "solf_tables.md").read_text(encoding="utf-8").startswith("# SOLF tables (8 tiny phantoms")


def test_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "x").write_text("old")
    with pytest.raises(SystemExit):
        _script().main(["-o", str(tmp_path), *ARGS])


def _feasibility():
    spec = importlib.util.spec_from_file_location("solf_feasibility", REPO / "benchmarks" / "solf_feasibility.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feasibility_runs_on_the_reduced_cohort(reproduced, capsys):
    assert _feasibility().main([str(reproduced)]) == 0
    report = (reproduced / "feasibility" / "feasibility.md").read_text(encoding="utf-8")
    for heading in ("## The combined rule by signals out of range", "## Upper bound for any threshold"):
        assert heading in report
    rows = [line for line in report.splitlines() if line.startswith("| SOLF + every check | 3 |")]
    assert len(rows) == 1
    # The same command gives the same tables (timing aside).
    assert _feasibility().main([str(reproduced)]) == 0
    assert (reproduced / "feasibility" / "feasibility.md").read_text(encoding="utf-8").split("(")[:-1] == \
        report.split("(")[:-1]


def test_feasibility_refuses_a_folder_without_the_cohort(tmp_path):
    with pytest.raises(SystemExit):
        _feasibility().main([str(tmp_path)])
