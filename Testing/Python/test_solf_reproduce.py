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


def test_candidate_values_on_known_shapes(tmp_path):
    import nibabel as nib
    import numpy as np

    labels = np.zeros((20, 20, 20), np.int16)
    labels[2:8, 2:8, 2:8] = 1                      # a cube: flat faces, solid
    labels[10:17, 10:17, 10:17] = 2                # a cube with a one-voxel cavity
    labels[13, 13, 13] = 0
    labels[2:5, 12:15, 2:5] = 3                    # two pieces 3 voxels (6 mm) apart
    labels[8:10, 12:15, 2:5] = 3
    labels[12:18, 2:8, 12:18] = 4
    labels[14, 2, 14] = 0                          # a pit in a face: 5 of its 6 neighbours are the structure
    path = tmp_path / "shapes.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    values = _feasibility().candidate_values(str(path))
    assert values[1]["cut_face"] == 1.0 and values[1]["cavity_fraction"] == 0.0 and values[1]["detached_mm"] == 0.0
    assert values[2]["cavity_fraction"] == 1 / (7 ** 3 - 1)
    assert values[3]["detached_mm"] == 8.0         # voxel 4 to voxel 8 along x at 2 mm
    assert values[4]["pits"] == 1 and values[4]["cavity_fraction"] == 0.0 and values[1]["pits"] == 0


def test_feasibility_runs_on_the_reduced_cohort_and_resumes(reproduced, capsys):
    module = _feasibility()
    assert module.main([str(reproduced)]) == 0
    assert "candidates 8/8" in capsys.readouterr().out
    report = (reproduced / "feasibility" / "feasibility.md").read_text(encoding="utf-8")
    for heading in ("## Candidate checks alone", "## The combined rule", "## Upper bound for any threshold"):
        assert heading in report
    store = reproduced / "feasibility" / "candidates.jsonl"
    lines = store.read_text().splitlines()
    assert len(lines) == 8
    store.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # killed while writing the sixth
    assert module.main([str(reproduced)]) == 0
    assert "candidates 3/3" in capsys.readouterr().out             # only what was lost is recomputed
    assert store.read_text().splitlines() == lines
    assert (reproduced / "feasibility" / "feasibility.md").read_text(encoding="utf-8").split("(")[:-1] == \
        report.split("(")[:-1]                                         # the same tables (timing aside)


def test_image_disagreement_sees_tissue_labelled_as_its_neighbour():
    import numpy as np

    labels = np.zeros((12, 12, 12), np.int16)
    labels[2:10, 2:10, 2:6] = 1                    # an organ (water signal) on top of
    labels[2:10, 2:10, 6:10] = 2                   # fat (fat signal)
    image = np.zeros((12, 12, 12, 2), np.float32)
    image[..., 0][labels == 1] = 0.8
    image[..., 1][labels == 2] = 0.9
    clean = _feasibility().image_disagreement(labels, image)
    assert all(v == {"image_inside": 0.0, "image_outside": 0.0} for v in clean.values())
    labels[5, 5, 5] = 2                            # an organ voxel labelled fat (a dent at the boundary)
    values = _feasibility().image_disagreement(labels, image)
    assert values[2]["image_inside"] == 1 / (labels == 2).sum()   # fat holding one voxel of organ signal
    assert values[1]["image_outside"] == 1 / (labels == 1).sum()  # organ signal next to the organ, labelled fat
    assert values[1]["image_inside"] == 0.0 and values[2]["image_outside"] == 0.0
