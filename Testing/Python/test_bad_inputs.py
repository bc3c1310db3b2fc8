"""Issue 28, part B: inputs and options that gave a wrong result, a traceback or a kernel kill.

Each test reproduces one hole on real files and a tiny random Swin-UNETR; large sizes are
declared (headers, estimates) or the machine's memory figure is patched, never allocated.
"""

import importlib
import json
import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SwinBOBLib import io
from SwinBOBLib.cli import main
from SwinBOBLib.inference import InferenceConfig, segment_image
from SwinBOBLib.inference import etta as etta_module
from SwinBOBLib.inference import memory as inference_memory
from SwinBOBLib.io import datasets, writers
from SwinBOBLib.io import memory as host_memory
from SwinBOBLib.io.itk import itk_affine
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import build_model
from SwinBOBLib.solf import bounds as solf_bounds
from SwinBOBLib.training import config as train_config

import tiny  # Testing/Python: the tiny model and scan the command-line tests share

postprocess_module = importlib.import_module("SwinBOBLib.inference.postprocess")  # the package re-exports its function


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


body = tiny.body_array


def segment(scan, out, checkpoint, *extra):
    return main(["segment", str(scan), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--roi-size", "32", "--no-preview", "--quiet", *map(str, extra)])


# -- item 6: a blank or constant image ------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 250.0])
def test_constant_image_is_segmented_with_a_warning_in_the_report(value, checkpoint, tmp_path):
    scan = tmp_path / "blank.nii.gz"
    io.save_image(io.Image(np.full((20, 18, 16), value, np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    assert segment(scan, tmp_path / "out", checkpoint) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("nothing to segment" in w and f"every voxel is {value:g}" in w for w in report["warnings"])


def test_an_image_with_contrast_gets_no_blank_warning(checkpoint, tmp_path):
    scan = tmp_path / "body.nii.gz"
    io.save_image(io.Image(body(), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    assert segment(scan, tmp_path / "out", checkpoint) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not any("nothing to segment" in w for w in report["warnings"])


# -- item 7: NIfTI without orientation (qform_code = sform_code = 0) -------------------------


def _unoriented_nifti(path: Path) -> Path:
    image = nib.Nifti1Image(body(), None)
    image.header.set_zooms((2.0, 2.5, 3.0))
    nib.save(image, str(path))
    header = nib.load(str(path)).header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0
    return path


def _itk_affine(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return itk_affine(sitk.ReadImage(str(path)))


def test_unoriented_nifti_is_read_as_simpleitk_reads_it_with_a_warning(tmp_path):
    path = _unoriented_nifti(tmp_path / "scan.nii.gz")
    with pytest.warns(io.GeometryWarning, match="qform_code = sform_code = 0"):
        image = io.load_image(path)
    np.testing.assert_allclose(image.affine, _itk_affine(path), atol=1e-6)
    assert image.orientation == "LPS" and np.allclose(image.affine[:3, 3], 0)


def test_unoriented_nifti_outputs_lie_where_slicer_shows_the_input(checkpoint, tmp_path):
    path = _unoriented_nifti(tmp_path / "scan.nii.gz")
    assert segment(path, tmp_path / "out", checkpoint) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("qform_code = sform_code = 0" in w for w in report["warnings"])
    labels = tmp_path / "out" / "labels.nii.gz"
    np.testing.assert_allclose(_itk_affine(labels), _itk_affine(path), atol=1e-5)


# -- item 8: ETTA collapse ------------------------------------------------------------------


def _probabilities(foreground: bool) -> torch.Tensor:
    probs = torch.zeros(1, 3, 16, 16, 16)
    probs[:, 0] = 1.0
    if foreground:
        probs[:, :, 4:12, 4:12, 4:12] = torch.tensor([0.1, 0.8, 0.1])[:, None, None, None]
    return probs


def test_etta_collapse_keeps_the_unadapted_result_and_warns():
    torch.manual_seed(0)
    model = build_model(feature_size=12, in_channels=1, out_channels=3)

    def predict(net, image, stage):  # the adapted copy calls everything background
        return _probabilities(foreground=stage == "before" or net is model)

    image = torch.rand(1, 1, 32, 32, 32)
    with pytest.warns(UserWarning, match="ETTA collapsed"):
        used, stats, probs = etta_module.adapt_and_predict(model, image, roi_size=32, predict=predict)
    assert used is model and stats["collapsed"] and stats["result"] == "unadapted"
    assert stats["foreground_before"] == pytest.approx(512 / 4096) and stats["foreground_after"] == 0
    assert torch.equal(probs, _probabilities(True))


def test_etta_collapse_on_the_command_line_is_not_reported_as_an_improvement(checkpoint, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    io.save_image(io.Image(body(), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    assert segment(scan, tmp_path / "out", checkpoint, "--etta", "--etta-lr", "1", "--etta-steps", "5") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["etta"]["collapsed"] and report["etta"]["result"] == "unadapted"
    assert any(w.startswith("ETTA collapsed (steps 5, lr 1)") for w in report["warnings"])


def test_etta_without_collapse_keeps_the_adapted_result():
    torch.manual_seed(0)
    model = build_model(feature_size=12, in_channels=1, out_channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        used, stats, _ = etta_module.adapt_and_predict(model, torch.rand(1, 1, 32, 32, 32), roi_size=32,
                                                       predict=lambda net, image, stage: _probabilities(True))
    assert used is not model and not stats["collapsed"] and stats["result"] == "adapted"


def test_etta_collapse_fraction_is_checked():
    model = build_model(feature_size=12, in_channels=1, out_channels=3)
    with pytest.raises(ValueError, match="collapse_fraction must be in"):
        etta_module.adapt_and_predict(model, torch.rand(1, 1, 32, 32, 32), roi_size=32,
                                      config=etta_module.EttaConfig(collapse_fraction=0))


# -- item 13: the pipeline's memory, estimated before the work -------------------------------


def test_a_large_scan_is_refused_with_the_estimate_and_what_to_do(monkeypatch):
    monkeypatch.setattr(host_memory, "available_memory_bytes", lambda: 128e9)
    config = InferenceConfig(device="cpu")
    shape = (1024, 1024, 1024)  # 0.5 mm voxels kept by a checkpoint without a target spacing
    need = inference_memory.pipeline_memory_bytes(shape, 2, 1, shape, 72, config)
    assert need > 600e9
    with pytest.raises(host_memory.InsufficientMemoryError) as error:
        inference_memory.check_pipeline_memory("big.nii.gz", shape, 2, 1, shape, (0.5, 0.5, 0.5), 72, config)
    message = str(error.value)
    assert message.startswith("not enough memory to segment big.nii.gz") and "--low-memory" in message
    assert "Use --low-memory and --spacing 1,1,1 (about 62.2 GB)" in message


def test_low_memory_is_suggested_when_it_fits(monkeypatch):
    monkeypatch.setattr(host_memory, "available_memory_bytes", lambda: 24e9)
    shape = (512, 512, 512)
    with pytest.raises(MemoryError, match=r"Use --low-memory \(float16"):
        inference_memory.check_pipeline_memory("scan", shape, 2, 1, (320, 320, 320), (1.5,) * 3, 72,
                                               InferenceConfig(device="cpu"))


def test_segment_refuses_before_the_work_when_memory_is_short(checkpoint, tmp_path, monkeypatch, capsys):
    scan = tmp_path / "scan.nii.gz"
    io.save_image(io.Image(body(), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    monkeypatch.setattr(host_memory, "available_memory_bytes", lambda: 1.6e9)
    assert segment(scan, tmp_path / "out", checkpoint) == 1
    assert "not enough memory to segment" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_postprocess_slabs_are_bounded_and_labels_are_uint8():
    assert postprocess_module.slab_thickness(72, (512, 512)) * 72 * 512 * 512 * 4 <= postprocess_module.SLAB_BYTES
    assert postprocess_module.slab_thickness(3, (8, 8)) == 16
    torch.manual_seed(0)
    probs = torch.softmax(torch.rand(1, 5, 6, 7, 8), 1)
    shape = (11, 13, 15)
    reference = torch.nn.functional.interpolate(probs, size=shape, mode="trilinear", align_corners=True)[0]
    for z0, z1, part in postprocess_module.probability_slabs(probs, shape, slab=4):
        torch.testing.assert_close(part, reference[..., z0:z1], atol=1e-5, rtol=1e-5)
    prepared = type("Prepared", (), {"ras_shape": shape})()
    channels, _, _ = postprocess_module.postprocess(probs, prepared)
    assert channels.dtype == np.uint8 and np.array_equal(channels, reference.argmax(0).numpy())


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_the_argmax_interpolating_only_channels_that_can_win_equals_the_full_ones(scale):
    """Channels below the floor in every model-grid voxel of a slab are left out of its
    interpolation: the labels equal the argmax of every channel interpolated (sharp, peaked
    probabilities as a trained network gives, most channels absent from part of the scan; sums
    other than 1 too), and the kept probabilities still hold every channel."""
    torch.manual_seed(2)
    logits = torch.randn(1, 40, 9, 8, 12) * 6
    logits[:, 20:] -= 30 * (torch.arange(12) < 6).float()  # channels 20.. absent from the first half in z
    probs = torch.softmax(logits, 1) * scale
    shape = (17, 15, 23)
    reference = torch.nn.functional.interpolate(probs, size=shape, mode="trilinear", align_corners=True)[0]
    prepared = type("Prepared", (), {"ras_shape": shape})()
    floor = postprocess_module.argmax_floor(probs)
    assert floor == pytest.approx(scale / 40, rel=1e-3)
    assert postprocess_module.argmax_floor(torch.full((1, 3, 2, 2, 2), float("nan"))) is None  # nothing left out
    assert postprocess_module.argmax_floor(torch.zeros(1, 3, 2, 2, 2)) is None
    pruned = [index for *_, index in postprocess_module._slabs(probs, shape, slab=4, floor=floor)]
    assert any(index is not None and len(index) < 40 for index in pruned)  # some slabs did leave channels out
    channels, _, _ = postprocess_module.postprocess(probs, prepared, cells=False)  # the slabs (a GPU's path)
    assert np.array_equal(channels, reference.argmax(0).numpy())
    lookup = np.arange(100, 140, dtype=np.uint8)
    labels, _, _ = postprocess_module.postprocess(probs, prepared, labels_of=lambda found: lookup[found], cells=False)
    assert np.array_equal(labels, lookup[reference.argmax(0).numpy()])
    _, _, kept = postprocess_module.postprocess(probs, prepared, keep_probabilities=True)
    torch.testing.assert_close(torch.from_numpy(kept), reference.permute(1, 2, 3, 0), atol=1e-5, rtol=1e-5)


def test_the_channel_argmax_of_a_slab_is_torchs_ties_included():
    """numpy's argmax over a channels-last slab (the fast path) and torch's over any other layout
    give torch.argmax's answer, the first channel of a tie."""
    torch.manual_seed(1)
    planes = torch.rand(5, 72, 9, 7).to(memory_format=torch.channels_last)  # (z, K, X, Y) as the slabs lie
    planes[2, 10:13, 3, 4] = 2.0  # a three-way tie: channel 10 wins
    planes[:, 40] = planes[:, 41]  # a tie in every voxel where these two lead
    for part in (planes.permute(1, 2, 3, 0), planes.contiguous().permute(1, 2, 3, 0), torch.rand(72, 9, 7, 5)):
        found = postprocess_module.channel_argmax(part)
        assert found.shape == (9, 7, 5) and np.array_equal(found, part.argmax(0).numpy())
    assert postprocess_module.channel_argmax(planes.permute(1, 2, 3, 0))[3, 4, 2] == 10


# -- item 14: training memory on the CPU ----------------------------------------------------


def _dataset(tmp_path: Path) -> Path:
    return tmp_path / "no-dataset-needed"  # refused before the dataset is read


def test_default_recipe_on_a_cpu_is_refused_with_an_estimate_and_an_alternative(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(host_memory, "available_memory_bytes", lambda: 16e9)
    code = main(["train", "--dataset", str(_dataset(tmp_path)), "-o", str(tmp_path / "run"), "--max-steps", "1",
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "not enough memory to train" in err
    assert "--set roi_size=32 --set feature_size=12" in err and "16.0 GB" in err


def test_the_suggested_cpu_recipe_fits_a_small_machine(monkeypatch):
    monkeypatch.setattr(host_memory, "available_memory_bytes", lambda: 8e9)
    small = train_config.TrainConfig(device="cpu", **train_config.CPU_RECIPE)
    assert train_config.check_training_memory(small) < 4e9
    with pytest.raises(MemoryError, match="needs about"):
        train_config.check_training_memory(train_config.TrainConfig(device="cpu"))


# -- items 12, 15, 16: option values ---------------------------------------------------------


@pytest.mark.parametrize("options, expected", [
    ({"epochs": 1.7}, "epochs must be a whole number, got 1.7"),
    ({"epochs": True}, "epochs must be a whole number, got True"),
    ({"flip_prob": 7}, "flip_prob must be a number in [0, 1], got 7"),
    ({"lr": "abc"}, "lr must be a finite number > 0, got 'abc'"),
    ({"lr": math.nan}, "lr must be a finite number > 0, got nan"),
    ({"lr": math.inf}, "lr must be a finite number > 0, got inf"),
    ({"amp": "false"}, "amp must be true or false"),
])
def test_bad_training_option_values_are_refused(options, expected):
    with pytest.raises(ValueError) as error:
        train_config.TrainConfig.from_dict(options, "run.yaml")
    assert str(error.value).startswith("run.yaml: ") and expected in str(error.value)


def test_numbers_written_as_yaml_strings_are_read():
    config = train_config.TrainConfig.from_dict({"lr": "1e-4", "epochs": 2.0})
    assert config.lr == 1e-4 and config.epochs == 2 and isinstance(config.epochs, int)


@pytest.mark.parametrize("where", ["set", "file"])
def test_bad_lr_from_the_command_line_or_a_file_is_one_line(where, tmp_path, capsys):
    extra = ["--set", "lr=abc"]
    if where == "file":
        (tmp_path / "run.yaml").write_text("lr: .nan\n")
        extra = ["--config", str(tmp_path / "run.yaml")]
    code = main(["train", "--dataset", str(_dataset(tmp_path)), "-o", str(tmp_path / "run"), "--device", "cpu",
                 "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 1 and "lr must be a finite number > 0" in err and "Traceback" not in err


@pytest.mark.parametrize("option, value, expected", [
    ("--sw-batch-size", "0", "sw_batch_size must be a whole number >= 1, got 0"),
    ("--overlap", "nan", "overlap must be a number in [0, 1), got nan"),
    ("--overlap", "1", "overlap must be a number in [0, 1), got 1.0"),
])
def test_bad_inference_options_are_refused_by_name(option, value, expected, checkpoint, tmp_path, capsys):
    scan = tmp_path / "scan.nii.gz"
    io.save_image(io.Image(body(), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    assert segment(scan, tmp_path / "out", checkpoint, option, value) == 1
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_inference_config_is_checked_for_the_library_too():
    with pytest.raises(ValueError, match="sw_batch_size"):
        segment_image(io.Image(body(), np.eye(4) * 2), None, CheckpointMetadata(), InferenceConfig(sw_batch_size=0))


# -- item 12: a CSV saved by Excel (byte-order mark) keeps its first column -------------------


def test_dataset_csv_with_a_byte_order_mark_keeps_its_id_column(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(body((8, 8, 8)), affine), str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), affine), str(tmp_path / "a_label.nii.gz"))
    (tmp_path / "list.csv").write_text("id,image,label\ncase-7,a.nii.gz,a_label.nii.gz\n", encoding="utf-8-sig")
    dataset = datasets.load_dataset(tmp_path / "list.csv", scheme="ukbob")
    assert dataset.cases[0].case_id == "case-7"


# -- item 15: bounds files whose values cannot be used ---------------------------------------


def _bounds_file(tmp_path: Path, change) -> Path:
    cohort = {f"s{i}": {1: {"normalized_volume": 0.1 + 0.01 * i, "sphericity": 0.5, "eccentricity": 0.3}}
              for i in range(5)}
    path = tmp_path / "bounds.json"
    solf_bounds.save_bounds(solf_bounds.fit_bounds(cohort, scheme="ukbob"), path)
    data = json.loads(path.read_text())
    change(data, data["labels"]["1"])
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, expected", [
    (lambda d, e: e.update(sphericity=[float("nan"), 0.6]), r"label 1 \(spleen\), sphericity is \[NaN, 0.6\]"),
    (lambda d, e: e.update(sphericity=[0.1, float("inf")]), r"sphericity is \[0.1, Infinity\]"),
    (lambda d, e: e.update(sphericity=[float("-inf"), 0.6]), r"sphericity is \[-Infinity, 0.6\]"),
    (lambda d, e: e.update(sphericity=[0.6, 0.4]), r"sphericity is \[0.6, 0.4\]; expected \[low, high\]"),
    (lambda d, e: e.update(presence=None), r"presence is null; expected the share"),
    (lambda d, e: e.update(presence=1.5), r"presence is 1.5"),
    (lambda d, e: d.update(version=2), r"version 2 is not one this SwinBOB reads"),
])
def test_bounds_files_with_unusable_values_are_refused(change, expected, tmp_path):
    path = _bounds_file(tmp_path, change)
    with pytest.raises(ValueError, match=f"^{path!s}: .*{expected}"):
        solf_bounds.load_bounds(path)


def test_a_good_bounds_file_with_a_byte_order_mark_loads(tmp_path):
    path = _bounds_file(tmp_path, lambda d, e: None)
    path.write_text(path.read_text(), encoding="utf-8-sig")
    assert solf_bounds.load_bounds(path).presence == {1: 1.0}


# -- item 16: messages that blame the wrong file, or name none -------------------------------


def test_a_text_file_as_checkpoint_is_named_as_such(tmp_path, capsys):
    scan, fake = tmp_path / "scan.nii.gz", tmp_path / "model.pt"
    io.save_image(io.Image(body(), np.diag([2.0, 2.0, 3.0, 1.0])), scan)
    for text in ("hello, this is a text file\n", "<html>404 not found</html>\n"):
        fake.write_text(text)
        assert segment(scan, tmp_path / "out", fake) == 1
        err = capsys.readouterr().err
        assert f"{fake}: not a readable PyTorch checkpoint (a text file starting {text.strip()!r})" in err
        assert "error: 101" not in err


class NaNNetwork(torch.nn.Module):
    """Logits that overflow: every probability NaN."""

    def __init__(self):
        super().__init__()
        self.out = torch.nn.Conv3d(1, 72, 1)

    def forward(self, x):
        return self.out(x) * float("nan")


def test_an_overflowing_network_is_blamed_not_the_scan(tmp_path):
    image = io.Image(body(), np.diag([2.0, 2.0, 3.0, 1.0]), path=tmp_path / "scan.nii.gz")
    with pytest.raises(ValueError, match="network produced .* NaN or infinite probabilities in float32") as error:
        segment_image(image, NaNNetwork(), CheckpointMetadata(roi_size=32), InferenceConfig(device="cpu"))
    assert "scan.nii.gz" not in str(error.value)


def test_writing_nan_voxels_says_a_computation_overflowed(tmp_path):
    target = tmp_path / "entropy.nii.gz"
    with pytest.raises(ValueError, match=r"entropy.nii.gz: cannot write this image: 1 of its voxels are NaN .*not at fault"):
        io.save_image(io.Image(np.where(np.arange(60).reshape(3, 4, 5) == 7, np.nan, 0).astype(np.float32),
                               np.eye(4)), target)
    assert not target.exists()


def test_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers, "_write_nifti", full)
    target = tmp_path / "labels.nii.gz"
    with pytest.raises(OSError) as error:
        io.save_image(io.Image(np.zeros((3, 4, 5), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), target)
    assert error.value.filename == str(target) and error.value.errno == errno.ENOSPC
    assert "No space left on device" in error.value.strerror
    assert [p.name for p in tmp_path.iterdir()] == []


def test_mhd_header_names_its_own_data_file(tmp_path):
    target = tmp_path / "labels.mhd"
    io.save_image(io.Image(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), np.diag([2.0, 2.0, 2.0, 1.0])), target)
    header = dict(line.split(" = ", 1) for line in target.read_text().splitlines() if " = " in line)
    assert not header["ElementDataFile"].startswith(".") and (tmp_path / header["ElementDataFile"]).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["labels.mhd", header["ElementDataFile"]])
    assert np.array_equal(io.load_image(target).array, np.arange(60).reshape(3, 4, 5))


# ----------------------------------------------------------------------------- messages name the user's files


def test_an_error_inside_a_staged_folder_names_the_output_not_the_hidden_staging_file(tmp_path):
    from SwinBOBLib.io.files import staged_folder

    target = tmp_path / "out"
    with pytest.raises(ValueError) as raised:
        with staged_folder(target) as staging:
            raise ValueError(f"{staging / 'entropy.nii.gz'}: voxels are NaN")
    assert str(raised.value) == f"{target / 'entropy.nii.gz'}: voxels are NaN"
    with pytest.raises(OSError) as raised:
        with staged_folder(target) as staging:
            raise OSError(28, "No space left on device", str(staging / "labels.nii.gz"))
    assert raised.value.filename == str(target / "labels.nii.gz") and raised.value.errno == 28
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_a_batch_csv_with_a_byte_order_mark_keeps_its_id_column(tmp_path):
    from SwinBOBLib.workflows.segment import list_inputs

    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    table = tmp_path / "scans.csv"
    table.write_text("id,image\npatient7,scan.nii.gz\n", encoding="utf-8-sig")
    assert [case for case, _ in list_inputs(table)] == ["patient7"]


def test_the_console_line_of_a_collapsed_etta_says_the_unadapted_result_was_kept():
    from SwinBOBLib.cli.segment import _summary

    report = {"timings": {"inference_s": 1.0, "etta_s": 2.0}, "inference": {"windows": 3}, "device": "cpu",
              "entropy": {"mean": 0.5, "etta_before": 0.232, "etta_after": 0.0}, "etta": {"collapsed": True}}
    assert _summary("scan", report).endswith("(collapsed: the unadapted result is kept)")
    report["etta"]["collapsed"] = False
    assert "collapsed" not in _summary("scan", report)


def test_bounds_without_presence_are_refused_on_saving_as_on_reading(tmp_path):
    from SwinBOBLib.solf.bounds import Bounds, load_bounds, save_bounds

    bounds = Bounds({5: {"normalized_volume": (0.01, 0.02), "sphericity": (0.5, 0.9), "eccentricity": (0.1, 0.8)}},
                    n_samples=3, scheme="ukbob")
    with pytest.raises(ValueError, match=r"presence of label\(s\) \[5\] cannot be saved"):
        save_bounds(bounds, tmp_path / "bounds.json")
    assert not (tmp_path / "bounds.json").exists()
    bounds.presence[5] = 1.0
    save_bounds(bounds, tmp_path / "bounds.json")
    assert load_bounds(tmp_path / "bounds.json").presence == {5: 1.0}
