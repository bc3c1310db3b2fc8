"""``swinbob segment`` end to end with a tiny random Swin-UNETR saved as a plain state dict."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SwinBOBLib import cli, io
from SwinBOBLib.models.networks import build_model
from SwinBOBLib.outputs.organs import ORGAN_COLUMNS, organ_rows
from SwinBOBLib.workflows.segment import list_inputs

OUTPUTS = {"labels.nii.gz", "entropy.nii.gz", "organs.csv", "report.json", "preview.png"}


def swinbob(*args):
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(build_model(feature_size=12).state_dict(), path)
    return path


def body(shape=(30, 26, 22), seed=0):
    """A bright box in air with noise, LPS-oriented (as DICOM-derived NIfTI often is)."""
    rng = np.random.default_rng(seed)
    array = np.zeros(shape, np.float32)
    array[4:-4, 3:-3, 2:-2] = 100
    return io.Image(array + rng.normal(0, 3, shape).astype(np.float32), np.diag([-2.0, -2.0, 3.0, 1.0]))


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "case.nii.gz"
    io.save_image(body(), path)
    return path


def test_segment_with_etta_writes_every_output(checkpoint, scan, tmp_path, capsys):
    out = tmp_path / "out"
    code = swinbob("segment", scan, "-o", out, "--checkpoint", checkpoint, "--device", "cpu", "--etta",
                   "--roi-size", 32, "--etta-steps", 1, "--etta-patches", 1, "--quiet")
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == OUTPUTS
    image = io.load_image(scan)
    labels = io.load_image(out / "labels.nii.gz")
    entropy = io.load_image(out / "entropy.nii.gz")
    for result in (labels, entropy):
        assert result.array.shape == image.array.shape
        assert np.allclose(result.affine, image.affine)
    assert 0 <= entropy.array.min() and entropy.array.max() <= 1
    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cpu" and report["config"]["roi_size"] == 32 and report["config"]["etta"]
    assert report["checkpoint"]["metadata"]["feature_size"] == 12
    assert report["entropy"]["etta_before"] is not None and report["entropy"]["etta_after"] is not None
    assert report["etta"]["n_parameters"] > 0 and report["timings"]["etta_s"] > 0
    assert report["input"]["orientation"] == "LPS"
    rows = list(csv.DictReader((out / "organs.csv").read_text().splitlines()))
    assert tuple(rows[0]) == ORGAN_COLUMNS and len(rows) == 71
    present = [r for r in rows if int(r["voxels"]) > 0]
    assert sum(int(r["voxels"]) for r in present) == int(np.count_nonzero(labels.array))
    assert "ETTA" in capsys.readouterr().out


def test_batch_folder_loads_the_model_once(checkpoint, tmp_path, capsys):
    folder = tmp_path / "scans"
    for i in range(2):
        io.save_image(body(shape=(20, 18, 16), seed=i), folder / f"case{i}.nii.gz")
    events = tmp_path / "events.jsonl"
    code = swinbob("segment", folder, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--device", "cpu",
                   "--roi-size", 32, "--no-preview", "--quiet", "--structures", "liver,left kidney",
                   "--progress-json", events)
    assert code == 0
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("case_done") == 2
    assert "progress" in kinds
    for i in range(2):
        report = json.loads((tmp_path / "out" / f"case{i}" / "report.json").read_text())
        assert report["inference"]["structures"] == [3, 5]
        assert len(list(csv.DictReader((tmp_path / "out" / f"case{i}" / "organs.csv").read_text().splitlines()))) == 2
    assert "wrote 2 of 2" in capsys.readouterr().out


def test_batch_csv_reports_a_bad_case_and_continues(checkpoint, tmp_path, capsys):
    io.save_image(body(shape=(20, 18, 16)), tmp_path / "good.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "list.csv").write_text("id,image\ngood,good.nii.gz\nbad,empty.nii.gz\n")
    code = swinbob("segment", tmp_path / "list.csv", "-o", tmp_path / "out", "--checkpoint", checkpoint,
                   "--device", "cpu", "--roi-size", 32, "--no-preview", "--quiet")
    assert code == 1
    assert (tmp_path / "out" / "good" / "labels.nii.gz").exists()
    assert not (tmp_path / "out" / "bad").exists()
    assert "bad: error" in capsys.readouterr().out


def _nifti(array, path):
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


@pytest.mark.parametrize("kind", ["2d", "nan", "empty", "missing"])
def test_bad_input_gets_a_clear_error_and_writes_nothing(kind, checkpoint, tmp_path, capsys):
    path = tmp_path / "bad.nii.gz"
    if kind == "2d":
        _nifti(np.ones((20, 20), np.float32), path)
    elif kind == "nan":
        array = np.ones((20, 20, 20), np.float32)
        array[1, 2, 3] = np.nan
        _nifti(array, path)
    elif kind == "empty":
        path.write_bytes(b"")
    out = tmp_path / "out"
    code = swinbob("segment", path, "-o", out, "--checkpoint", checkpoint, "--device", "cpu", "--roi-size", 32)
    err = capsys.readouterr().err
    assert code == 1
    assert {"2d": "2D", "nan": "NaN", "empty": "empty", "missing": "no such file"}[kind] in err
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_checkpoint_and_unavailable_device(scan, checkpoint, tmp_path, capsys, monkeypatch):
    from SwinBOBLib.workflows import segment as workflow

    monkeypatch.setattr(workflow, "DEMO_MODEL", tmp_path / "absent" / "swinbob_demo.pt")  # the default it uses
    assert swinbob("segment", scan, "-o", tmp_path / "a") == 1
    assert "bundled demo model is missing" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert swinbob("segment", scan, "-o", tmp_path / "b", "--checkpoint", checkpoint, "--device", "cuda") == 1
        assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_without_checkpoint_the_bundled_demo_model_is_used(scan, tmp_path, capsys):
    from SwinBOBLib.runtime.resources import DEMO_MODEL

    assert swinbob("segment", scan, "-o", tmp_path / "out", "--device", "cpu", "--no-preview") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert Path(report["checkpoint"]["path"]) == DEMO_MODEL
    assert report["model"]["demo"] is True and "not Swin-BOB" in report["model"]["description"]
    assert "DEMO MODEL" in capsys.readouterr().out
    labels = io.load_labelmap(tmp_path / "out" / "labels.nii.gz", scheme="ukbob")
    image = io.load_image(scan)
    assert labels.spatial_shape == image.spatial_shape and np.allclose(labels.affine, image.affine)


def test_organ_rows_for_an_empty_label_map():
    rows = organ_rows(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.float32), (1, 1, 1))
    assert len(rows) == 71 and all(r["voxels"] == 0 and r["mean_entropy"] == "" for r in rows)


def test_organ_rows_volumes_and_entropy():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 5  # liver, 64 voxels of 8 mm^3
    entropy = np.where(labels == 5, 0.25, 0.0).astype(np.float32)
    entropy[2, 2, 2] = 0.75
    row = organ_rows(labels, entropy, (2.0, 2.0, 2.0), structures=[5])[0]
    assert row["name"] == "liver" and row["voxels"] == 64 and row["volume_ml"] == pytest.approx(0.512)
    assert row["max_entropy"] == pytest.approx(0.75)
    assert row["mean_entropy"] == pytest.approx((63 * 0.25 + 0.75) / 64, abs=1e-4)


def test_organ_rows_entropy_columns_equal_whole_grid_reductions():
    """The per-structure voxels, mean and max entropy, taken in each structure's box, equal
    bincounts and ndimage.maximum over the whole grid (scattered labels, a Fortran-ordered map as
    NIfTI files load, a label past the scheme's end ignored)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    labels = np.asfortranarray(rng.choice([0, 1, 5, 18, 65, 66, 71], size=(30, 20, 12)).astype(np.uint8))
    labels[0, 0, :3] = 200  # not a ukbob label: no row, no failure
    entropy = rng.random(labels.shape).astype(np.float32)
    rows = {r["index"]: r for r in organ_rows(labels, entropy, (1.5, 1.5, 3.0))}
    for index in (1, 5, 18, 65, 66, 71):
        inside = labels == index
        assert rows[index]["voxels"] == int(inside.sum())
        assert rows[index]["mean_entropy"] == round(float(entropy[inside].astype(np.float64).mean()), 5)
        assert rows[index]["max_entropy"] == round(float(ndimage.maximum(entropy, labels, index)), 5)
    assert rows[2]["voxels"] == 0 and rows[2]["max_entropy"] == ""


def test_list_inputs(tmp_path):
    io.save_image(body(shape=(8, 8, 8)), tmp_path / "a.nii.gz")
    io.save_image(body(shape=(8, 8, 8)), tmp_path / "b.nrrd")
    assert [c for c, _ in list_inputs(tmp_path)] == ["a", "b"]
    (tmp_path / "x.csv").write_text("path\na.nii.gz\n")
    with pytest.raises(ValueError, match="'image' column"):
        list_inputs(tmp_path / "x.csv")


def test_model_record_names_the_model_and_flags_demo_models():
    from SwinBOBLib.models.metadata import CheckpointMetadata
    from SwinBOBLib.outputs.provenance import model_notice, model_record

    plain = model_record(CheckpointMetadata(feature_size=12), "/weights/my_swinbob.pt")
    assert plain["name"] == "my_swinbob" and plain["demo"] is False and "swinunetr" in plain["description"]
    assert not model_notice(plain).startswith("DEMO")
    demo = model_record(CheckpointMetadata(name="toy", description="a toy, not Swin-BOB", demo=True))
    structures = demo.pop("structures")
    assert demo == {"name": "toy", "demo": True, "description": "a toy, not Swin-BOB", "network": "swinunetr",
                    "path": None, "scheme": "ukbob"}
    assert len(structures) == 71 and structures[0] == "spleen" and "background" not in structures
    assert model_notice(demo) == "DEMO MODEL toy: a toy, not Swin-BOB"
