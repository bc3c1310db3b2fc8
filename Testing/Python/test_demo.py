"""`swinbob demo`: the main job on the sample MRI with the bundled model and bounds."""

import csv
import json

import numpy as np

from SwinBOBLib import io
from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS, DEMO_MODEL
from SwinBOBLib.workflows import demo


def test_demo_with_the_bundled_model_and_bounds(tmp_path, samples):
    assert DEMO_MODEL.is_file() and DEFAULT_BOUNDS.is_file()
    summary = demo.run_demo(tmp_path, device="cpu")
    for name in summary["outputs"]:
        assert (tmp_path / name).is_file(), name
    image = io.load_image(samples / "example_mr_sm.nii.gz")
    for name in ("labels.nii.gz", "entropy.nii.gz"):
        out = io.load_image(tmp_path / name)
        assert out.array.shape == image.array.shape and np.array_equal(out.affine, image.affine)
    solf = list(csv.DictReader((tmp_path / "solf.csv").read_text(encoding="utf-8").splitlines()))
    assert len(solf) == summary["structures"] > 0
    assert {r["verdict"] for r in solf} <= {"plausible", "inaccurate", "missing", "not comparable"}
    entropy = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["entropy"]
    assert entropy["etta_before"] is not None and entropy["etta_after"] is not None
    scores = list(csv.DictReader((tmp_path / "reference_scores.csv").read_text(encoding="utf-8").splitlines()))
    assert scores and all(0 <= float(r["dice"]) <= 1 for r in scores)


def test_demo_says_which_model_and_which_bounds(tmp_path):
    summary = demo.run_demo(tmp_path, device="cpu")
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    model = report["model"]
    assert model["demo"] is True and model["name"] and "not Swin-BOB" in model["description"]
    assert summary["model"] == model
    # The bundled bounds come from synthetic phantoms, and the 60 mm MR slab is far from their
    # 960 mm neck-to-knee coverage: the verdicts come with warnings, not confidence.
    cohort = summary["bounds_cohort"]
    assert cohort["synthetic"] is True and cohort["n"] == 60 and cohort["spacing_mm"] and cohort["extent_mm"]
    assert any("synthetic" in note for note in summary["solf_warnings"])
    assert any("extent" in note for note in summary["solf_warnings"])
    solf = list(csv.DictReader((tmp_path / "solf.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["against"] for r in solf} == {"synthetic cohort, N=60"}
    # The 60 mm slab is not judged on normalised volume, nor on what its edges cut: no red
    # "inaccurate" on every structure, a reason on every "not comparable".
    assert all("normalized_volume" not in r["judged"] for r in solf)
    assert sum(r["verdict"] == "not comparable" for r in solf) > len(solf) / 2
    assert all(r["reason"] for r in solf if r["verdict"] == "not comparable")
    assert summary["verdicts"]["not comparable"] and not summary["verdicts"]["missing"]
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert "liver" in report["model"]["structures"] and "background" not in report["model"]["structures"]
    lines = demo.plain_summary(summary, tmp_path)
    assert "DEMO model" in lines[0] and "mean Dice" in lines[1] and "preview.png" in lines[-1]
