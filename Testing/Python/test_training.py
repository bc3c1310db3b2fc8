"""Training: a tiny run writes a checkpoint `segment` accepts; kill and resume continue exactly."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from SwinBOBLib import io, labels, phantom, training
from SwinBOBLib.inference import InferenceConfig, segment_image
from SwinBOBLib.io.datasets import load_dataset
from SwinBOBLib.models.loading import load_checkpoint, read_checkpoint_file
from SwinBOBLib.runtime.progress import read_progress
from SwinBOBLib.runtime.stop import StopFlag
from SwinBOBLib.training import data as training_data
from SwinBOBLib.training.trainer import model_metadata

REPO = Path(__file__).resolve().parents[2]
TINY = {"feature_size": 12, "roi_size": 32, "batch_size": 2, "crops_per_volume": 2, "device": "cpu",
        "contrasts": ["in_phase"], "split": [1.0, 0.0, 0.0], "progress": False, "cache": "memory"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    phantom.write_cohort(root, n=3, size="tiny", seed=10)
    return root


def _weights(path):
    return read_checkpoint_file(path)["state_dict"]


def test_two_iterations_produce_a_checkpoint_segment_accepts(cohort, tmp_path):
    summary = training.train({**TINY, "max_steps": 2}, cohort, tmp_path / "run")
    assert summary["status"] == "done" and summary["global_step"] == 2
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    model, metadata = load_checkpoint(best)
    assert metadata.feature_size == 12 and metadata.contrasts == ("in_phase",) and metadata.roi_size == 32
    image = io.load_image(cohort / "imagesTr" / "case_0000.nii.gz")
    result = segment_image(image, model, metadata, InferenceConfig(device="cpu"))
    assert result.labels.array.shape == image.spatial_shape
    assert np.array_equal(result.labels.affine, image.affine)
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["lr"] == 1e-4 and config["lateral_flip"] == "swap"
    events = [e["event"] for e in read_progress(tmp_path / "run" / "progress.jsonl")]
    assert events[0] == "start" and events.count("step") == 2 and events[-1] == "done"


def test_a_window_spanning_the_cross_section_trains_segments_and_resumes(cohort, tmp_path):
    """Three crop edges (x, y, z): what the window covers is recorded and used by segment."""
    options = {**TINY, "network": "segresnet", "roi_size": [48, 40, 8], "max_steps": 1, "synthesis": "labels",
               "contrasts": None}
    summary = training.train(options, cohort, tmp_path / "run")
    assert summary["status"] == "done"
    model, metadata = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert metadata.roi_size == (48, 40, 8)
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["roi_size"] == [48, 40, 8]
    again = training.train({**options, "max_steps": 2}, cohort, tmp_path / "run")  # resumes: same crop
    assert again["global_step"] == 2
    image = io.load_image(cohort / "imagesTr" / "case_0000.nii.gz")
    result = segment_image(image, model, metadata, InferenceConfig(device="cpu"))
    assert result.labels.array.shape == image.spatial_shape
    assert result.stats["roi_size"] == [48, 40, 8]


@pytest.mark.parametrize("roi", [[48, 40], [48, 40, 0], [48.5, 40, 8], "big", [48, 40, 12]])
def test_a_bad_crop_shape_is_refused_with_its_value(cohort, tmp_path, roi):
    with pytest.raises(ValueError, match=r"roi_size") as error:
        training.train({**TINY, "network": "segresnet", "roi_size": roi, "max_steps": 1}, cohort, tmp_path / "run")
    assert str(roi if not isinstance(roi, list) else roi[0]) in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.fixture
def one_thread():
    """Multi-threaded CPU reductions differ in the last bit from run to run; one thread is exact."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(cohort, tmp_path, one_thread):
    training.train({**TINY, "max_steps": 4}, cohort, tmp_path / "straight")
    first = training.train({**TINY, "max_steps": 2}, cohort, tmp_path / "resumed")
    assert first["global_step"] == 2
    state = read_checkpoint_file(tmp_path / "resumed" / "checkpoints" / "last.pt")["training"]
    assert state["global_step"] == 2 and state["step_in_epoch"] == 2 and state["epoch"] == 0  # mid-epoch
    second = training.train({"max_steps": 4}, cohort, tmp_path / "resumed")  # options need not be repeated
    assert second["global_step"] == 4
    a = _weights(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = _weights(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged from the uninterrupted run"


def test_stop_request_writes_a_checkpoint(cohort, tmp_path):
    flag = StopFlag()
    flag.request()
    summary = training.train({**TINY, "max_steps": 50}, cohort, tmp_path / "run", stop=flag)
    assert summary["status"] == "stopped" and summary["global_step"] == 1
    assert read_checkpoint_file(tmp_path / "run" / "checkpoints" / "last.pt")["training"]["global_step"] == 1


def test_resume_refuses_a_different_architecture(cohort, tmp_path):
    training.train({**TINY, "max_steps": 1}, cohort, tmp_path / "run")
    with pytest.raises(ValueError, match="feature_size=24"):
        training.train({"feature_size": 24}, cohort, tmp_path / "run")


def test_sigterm_stops_a_real_training_process_cleanly(cohort, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "SwinBOBLib", "train", "--dataset", str(cohort), "-o", str(run),
               "--feature-size", "12", "--roi-size", "32", "--batch-size", "2", "--crops-per-volume", "2",
               "--epochs", "1000", "--device", "cpu", "--contrast", "in_phase", "--no-progress",
               "--set", "split=[1.0, 0.0, 0.0]"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = run / "progress.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (progress.exists() and "step" in progress.read_text(encoding="utf-8")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    events = read_progress(progress)
    assert events[-1]["event"] == "stopped"
    done = read_checkpoint_file(run / "checkpoints" / "last.pt")["training"]["global_step"]
    assert done >= 1
    again = training.train({"max_steps": done + 1}, cohort, run)
    assert again["global_step"] == done + 1


@pytest.mark.parametrize("options, message", [
    ({"roi_size": 40}, "multiple of 32"), ({"subset_fraction": 0}, "subset_fraction"),
    ({"learning_rate": 1}, "unknown training options"), ({"cache": "ram"}, "cache"),
])
def test_bad_options(options, message, tmp_path, cohort):
    with pytest.raises(ValueError, match=message):
        training.train({**TINY, **options}, cohort, tmp_path / "run")


def test_dataset_pointing_outside_is_refused_before_training(tmp_path, cohort):
    data = json.loads((cohort / "dataset.json").read_text(encoding="utf-8"))
    data["training"][0]["image"] = str(cohort / "imagesTr" / "case_0000.nii.gz")
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="points outside the dataset folder"):
        training.train(TINY, folder, tmp_path / "run")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_torchrun_two_processes(cohort, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "SwinBOBLib", "train",
               "--dataset", str(cohort), "-o", str(tmp_path / "ddp"), "--feature-size", "12", "--roi-size", "32",
               "--batch-size", "2", "--crops-per-volume", "2", "--max-steps", "2", "--device", "cpu",
               "--contrast", "in_phase", "--no-progress", "--set", "split=[1.0, 0.0, 0.0]"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    load_checkpoint(tmp_path / "ddp" / "checkpoints" / "best.pt")


def test_a_step_holds_batch_size_crops():
    assert training.crops_and_volumes(training.TrainConfig(batch_size=2, crops_per_volume=4)) == (2, 1)
    assert training.crops_and_volumes(training.TrainConfig(batch_size=8, crops_per_volume=4)) == (4, 2)


def test_fine_tuning_keeps_the_patch_merging_variant_of_its_weights(cohort, tmp_path):
    from SwinBOBLib.models.loading import save_checkpoint
    from SwinBOBLib.models.metadata import CheckpointMetadata
    from SwinBOBLib.models.networks import build_model

    legacy = build_model(12, 1, 72, True, "swinunetr", 32, variant="legacy")  # weights from MONAI < 1.5
    save_checkpoint(tmp_path / "init.pt", legacy, CheckpointMetadata(feature_size=12, roi_size=32,
                                                                     contrasts=("in_phase",)))
    summary = training.train({**TINY, "max_steps": 1, "init_checkpoint": str(tmp_path / "init.pt")}, cohort,
                             tmp_path / "run")
    assert summary["status"] == "done"
    _, metadata = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert metadata.variant == "legacy"


def test_memory_cache_prepares_each_case_once(cohort, tmp_path, monkeypatch):
    """``cache: memory`` caches the prepared case (loading, resampling, tissue split) and the
    deterministic head of the augmentation: only the random transforms run again each epoch."""
    from SwinBOBLib.training.synthesis import SynthesisConfig, synthesis_transforms

    dataset = load_dataset(cohort)
    config = training.TrainConfig(**{**TINY, "contrasts": None, "synthesis": "labels", "network": "segresnet",
                                     "feature_size": 8, "target_spacing_mm": (10.0, 10.0, 10.0)})
    metadata = model_metadata(config, 1)
    calls = []
    real = training_data.prepare_generation_case
    monkeypatch.setattr(training_data, "prepare_generation_case", lambda *a, **k: calls.append(a[0].case_id) or real(*a, **k))
    augment = synthesis_transforms(labels.channel_layout("ukbob", "compact"), (32, 32, 32), 2, (10.0, 10.0, 10.0),
                                   SynthesisConfig())
    data = training_data.make_dataset(dataset.cases[:2], dataset.scheme, metadata, config, tmp_path, augment)
    assert sorted(calls) == sorted(c.case_id for c in dataset.cases[:2])  # prepared when cached
    for _ in range(3):
        for index in range(len(data)):
            crops = data[index]
            assert len(crops) == 2 and tuple(crops[0]["image"].shape) == (1, 32, 32, 32)
    assert len(calls) == 2  # never again
    assert "gen_cls_indices" in data._cache[0]  # the crop sampler's class indices are cached too


@pytest.mark.parametrize("native", [False, True], ids=["emulated bf16: float32", "native bf16: autocast"])
def test_cpu_amp_autocasts_only_where_the_cpu_computes_bf16(cohort, tmp_path, monkeypatch, native):
    """bf16 emulated on an AVX2 CPU ran a 3D convolution 144 times slower than float32: cpu_amp
    falls back to float32 there, with a warning, and autocasts where bf16 is native."""
    from SwinBOBLib.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_bf16_supported", lambda: native)
    used = []
    real = torch.autocast

    def recording(*args, **kwargs):
        used.append((kwargs.get("dtype"), kwargs.get("enabled")))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module.torch, "autocast", recording)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = training.train({**TINY, "max_steps": 1, "cpu_amp": True}, cohort, tmp_path / "run")
    assert summary["status"] == "done"
    said = [str(w.message) for w in caught if "no native bf16" in str(w.message)]
    assert used and all(enabled is native for _, enabled in used)
    assert bool(said) is not native
