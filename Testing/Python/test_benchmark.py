"""`swinbob benchmark`: every mode gets rows; schemes are mapped before scoring."""

import csv
import json
import shutil

import pytest

from SwinBOBLib import phantom
from SwinBOBLib.cli import main
from SwinBOBLib.evaluation import benchmark
from SwinBOBLib.models.loading import save_checkpoint
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import build_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_model(feature_size=12, in_channels=1),
                    CheckpointMetadata(feature_size=12, roi_size=32, contrasts=("in_phase",)))
    return path


def test_all_modes_write_rows_and_one_summary_row_each(tmp_path, tiny_checkpoint):
    phantom.write_cohort(tmp_path / "data", n=1, size="tiny", seed=1)
    out = tmp_path / "bench"
    code = main(["benchmark", "--dataset", str(tmp_path / "data"), "--checkpoint", str(tiny_checkpoint),
                 "--modes", "plain,tta,etta,tta+etta", "-o", str(out), "--device", "cpu", "--tta-flips", "4",
                 "--etta-steps", "1"])
    assert code == 0
    rows = list(csv.DictReader((out / "per_case.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["mode"] for r in rows} == {"plain", "tta", "etta", "tta+etta"}
    assert all(0 <= float(r["dice"]) <= 1 for r in rows)
    table = [line for line in (out / "summary.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("| ") and line.split("|")[1].strip() in benchmark.MODES]
    assert [line.split("|")[1].strip() for line in table] == ["plain", "tta", "etta", "tta+etta"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "done" and len(summary["modes"]) == 4


def test_real_mr_sample_scored_on_shared_structures(tmp_path, tiny_checkpoint, samples):
    folder = tmp_path / "real"
    folder.mkdir()
    shutil.copy(samples / "example_mr_sm.nii.gz", folder / "mr.nii.gz")
    shutil.copy(samples / "example_seg_mr.nii.gz", folder / "seg.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "name": "ts-mr", "scheme": "total_mr", "training": [{"image": "./mr.nii.gz", "label": "./seg.nii.gz"}]}),
        encoding="utf-8")
    summary = benchmark.run_benchmark(folder, tiny_checkpoint, tmp_path / "out", ["plain"],
                                      config=benchmark.InferenceConfig(device="cpu"))
    rows = list(csv.DictReader((tmp_path / "out" / "per_case.csv").read_text(encoding="utf-8").splitlines()))
    names = {r["structure"] for r in rows}
    assert summary["eval_scheme"] == "total_mr"
    scorable = {c.dst_name for c in benchmark.labels.correspondences("ukbob", "total_mr")}
    assert "liver" in names and names <= scorable
    assert "lung_left" in scorable and "brain" not in scorable  # lobes merge into a lung; UKBOB has no brain


def test_bad_modes():
    with pytest.raises(ValueError, match="unknown benchmark mode"):
        benchmark.parse_modes("plain,fast")
    assert benchmark.parse_modes("etta, plain,etta") == ["etta", "plain"]


def test_confidence_intervals_resample_cases_not_pooled_rows():
    # Two cases of 30 structures each: a CI over pooled rows would be narrow; over the two case
    # means (0.2 and 0.8) it spans both. One case has no CI.
    rows = [{"case": case, "mode": "plain", "label": label, "structure": f"s{label}", "dice": dice,
             "hd_mm": 1.0, "hd95_mm": 1.0, "nsd": 1.0, "seconds": 1.0}
            for case, dice in (("a", 0.2), ("b", 0.8)) for label in range(1, 31)]
    per_mode, per_class = benchmark.summarize(rows, ["plain"])
    assert per_mode[0]["dice"] == pytest.approx(0.5)
    assert per_mode[0]["dice_low"] == pytest.approx(0.2) and per_mode[0]["dice_high"] == pytest.approx(0.8)
    assert [m["dice"] for m in benchmark.case_means(rows)] == [pytest.approx(0.2), pytest.approx(0.8)]
    one_case, _ = benchmark.summarize([r for r in rows if r["case"] == "a"], ["plain"])
    text = benchmark.markdown_summary(one_case, [], "t")
    assert "no CI: 1 case" in text and "bootstrap over cases" in text


def test_without_overlap_the_checkpoints_own_is_used_as_in_segment(tmp_path, monkeypatch):
    """A checkpoint that stores its overlap is benchmarked with it (as `segment` runs it), unless
    --overlap says otherwise; before, benchmark always ran 0.25."""
    from SwinBOBLib import inference

    path = tmp_path / "stored.pt"
    save_checkpoint(path, build_model(feature_size=12, in_channels=1),
                    CheckpointMetadata(feature_size=12, roi_size=32, contrasts=("in_phase",), overlap=0.6))
    phantom.write_cohort(tmp_path / "data", n=1, size="tiny", seed=1)
    used, real = [], benchmark.segment_image

    def spy(image, model, metadata, config, *rest, **kw):
        used.append(inference.window_overlap(config, metadata))
        return real(image, model, metadata, config, *rest, **kw)

    monkeypatch.setattr(benchmark, "segment_image", spy)
    args = ["benchmark", "--dataset", str(tmp_path / "data"), "--checkpoint", str(path), "--modes", "plain",
            "--device", "cpu"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 0
    assert main(args + ["-o", str(tmp_path / "b"), "--overlap", "0.25"]) == 0
    assert used == [0.6, 0.25]
