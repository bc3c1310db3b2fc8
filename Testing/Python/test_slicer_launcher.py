"""Launching ``swinbob train`` / ``benchmark`` in a child process (SwinBOB/SwinBOBModule/launcher.py):
a tiny training runs to completion with progress; a second one is stopped midway and leaves a valid
checkpoint."""

import sys
import time

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402,F401  (puts SwinBOB/ on sys.path)
from SwinBOBModule import jobs, launcher  # noqa: E402

#: A model small enough to train a step in seconds on a CPU.
TINY = ["--feature-size", "12", "--roi-size", "32", "--batch-size", "2", "--crops-per-volume", "2",
        "--contrast", "in_phase", "--set", "split=[1.0,0.0,0.0]", "--num-workers", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from SwinBOBLib.phantom import write_cohort

    root = tmp_path_factory.mktemp("launcher") / "phantoms"
    write_cohort(root, n=2, size="tiny")
    return root


def test_a_tiny_training_runs_to_completion_and_reports_progress(dataset, tmp_path):
    options = launcher.TrainingOptions(str(dataset), str(tmp_path / "run"), maxSteps=2, device="cpu", extra=TINY)
    job = launcher.startTraining(options, python=sys.executable)
    fractions = []
    while not job.finished:
        fractions.append(job.poll().fraction)
        time.sleep(0.1)
        assert time.monotonic() - job.startTime < 600, "training did not finish"
    assert job.status.state == jobs.SUCCEEDED, (job.status.message, list(job.stderr)[-5:])
    steps = [e for e in job.events if e["event"] == "step"]
    assert [e["global_step"] for e in steps] == [1, 2] and steps[-1]["total_steps"] == 2
    assert job.status.fraction == 1.0 and max(fractions) <= 1.0
    assert job.events[-1]["event"] == "done"
    assert any(line.startswith("step 2/2") for line in job.logLines)
    results = job.results()
    from SwinBOBLib.models.loading import load_checkpoint

    load_checkpoint(results["last_checkpoint"])
    assert "best_checkpoint" in results or "last_checkpoint" in results


def test_stop_ends_a_training_cleanly_with_a_loadable_checkpoint(dataset, tmp_path):
    from SwinBOBLib.models.loading import load_checkpoint

    options = launcher.TrainingOptions(str(dataset), str(tmp_path / "run"), epochs=1000, device="cpu", extra=TINY)
    job = launcher.startTraining(options, python=sys.executable)
    try:
        while not any(e["event"] == "step" for e in job.events):
            assert job.poll().state == jobs.RUNNING, (job.status.message, list(job.stderr)[-5:])
            assert time.monotonic() - job.startTime < 600, "no step reported"
            time.sleep(0.1)
        status = job.stop(grace=300)  # a step can take minutes on a loaded 2-core machine
    finally:
        if job.process.poll() is None:
            job.process.kill()
    assert job.returncode == 130
    assert status.state == jobs.CANCELLED
    assert job.events[-1]["event"] == "stopped"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert job.results()["last_checkpoint"] == str(last)
    model, metadata = load_checkpoint(last)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_commands_carry_the_gui_config(dataset, tmp_path):
    ckpt = tmp_path / "start.pt"
    ckpt.write_bytes(b"x")
    command = launcher.trainCommand(launcher.TrainingOptions(str(dataset), str(tmp_path / "r"), str(ckpt), epochs=5,
                                                             device="cuda"), python="py")
    assert command[:4] == ["py", "-m", "SwinBOBLib", "train"]
    for pair in (["--dataset", str(dataset)], ["--init-checkpoint", str(ckpt)], ["--epochs", "5"],
                 ["--device", "cuda"], ["--progress-json", "-"]):
        index = command.index(pair[0])
        assert command[index:index + 2] == pair
    command = launcher.benchmarkCommand(launcher.BenchmarkOptions(str(dataset), str(ckpt), str(tmp_path / "b"),
                                                                  modes="plain,tta", limit=3), python="py")
    assert command[3] == "benchmark" and "--limit" in command and command[-2:] == ["--progress-json", "-"]


@pytest.mark.parametrize("change, message", [
    (dict(dataset="/nonexistent"), "dataset not found"),
    (dict(outdir=""), "run folder"),
    (dict(initCheckpoint="/nonexistent.pt"), "starting checkpoint not found"),
    (dict(epochs=0), "--epochs must be >= 1"),
])
def test_bad_training_options_are_refused(dataset, tmp_path, change, message):
    fields = dict(dataset=str(dataset), outdir=str(tmp_path / "r"))
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        launcher.trainCommand(launcher.TrainingOptions(**fields))


def test_job_results_of_a_benchmark_folder(tmp_path):
    (tmp_path / "summary.md").write_text("| mode |\n")
    assert launcher.jobResults(launcher.BENCHMARK, tmp_path) == {"summary_md": str(tmp_path / "summary.md")}
    assert launcher.jobResults(launcher.TRAIN, tmp_path) == {}
