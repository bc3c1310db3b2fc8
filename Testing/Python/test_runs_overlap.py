"""Issue 28 (part A): overlapping runs and lost data. Each test reproduces one item on real files,
real subprocesses and a tiny random model: a live staging folder judged stale, a user's file
deleted, progress appended to an input, a command writing over a user's files, two runs in one
folder, a finished training run trained again, mixed SOLF outputs, a partial phantom dataset.
"""

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from SwinBOBLib import io, phantom
from SwinBOBLib.cli import main
from SwinBOBLib.runtime.locks import FolderBusyError, folder_lock, lock_path

import tiny  # Testing/Python: the tiny model and scan the command-line tests share

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = ["--feature-size", "12", "--roi-size", "32", "--batch-size", "1", "--crops-per-volume", "1",
              "--device", "cpu", "--no-progress", "--set", "split=[1.0, 0.0, 0.0]"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two small scans (one 32^3 window each) with a two-structure reference, as dataset.json."""
    root = tmp_path_factory.mktemp("data")
    entries = []
    for i in range(2):
        image = body(seed=i)
        labels = np.zeros(image.spatial_shape, np.uint8)
        labels[3:10, 3:-3, 2:-2], labels[10:-3, 3:-3, 2:-2] = 5, 3
        io.save_image(image, root / "imagesTr" / f"case_{i}.nii.gz")
        io.save_labelmap(labels, image, root / "labelsTr" / f"case_{i}.nii.gz")
        entries.append({"image": f"imagesTr/case_{i}.nii.gz", "label": f"labelsTr/case_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "small", "scheme": "ukbob", "training": entries}),
                                       encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    phantom.write_cohort(root, n=4, size="tiny", seed=1)
    return root


body = tiny.body


def segment_args(*args, checkpoint):
    return ["segment", *map(str, args), "--checkpoint", str(checkpoint), "--device", "cpu", "--roi-size", "32",
            "--no-preview", "--quiet"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path, hidden: bool = True) -> dict:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and (hidden or not p.name.startswith("."))}


def hold_lock(path: Path) -> subprocess.Popen:
    """A process that holds an flock on ``path`` until killed (another container's writer)."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(300)")
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


# ----------------------------------------------------------------------------- 1. stale staging


def test_a_live_staging_folder_of_another_namespace_is_kept(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    long_ago = time.time() - 2 * io.files.STALE_AFTER_S
    live = tmp_path / f"{io.STAGING_PREFIX}{dead}-other-container"  # its pid means nothing here
    live.mkdir()
    (live / "labels.nii.gz").write_bytes(b"being written")
    killed = tmp_path / f"{io.STAGING_PREFIX}node2-1234abcd-{dead}-killed"
    killed.mkdir()
    lock_path(killed).write_text("{}")  # its writer died: nobody holds the lock
    young = tmp_path / f"{io.STAGING_PREFIX}{dead}-just-made"  # no lock file yet: the age guard keeps it
    young.mkdir()
    for path in (live, killed, lock_path(killed)):
        os.utime(path, (long_ago, long_ago))
    holder = hold_lock(lock_path(live))
    try:
        removed = io.clean_stale_staging(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert removed == [killed] and not killed.exists()
    assert (live / "labels.nii.gz").read_bytes() == b"being written" and young.is_dir()


def test_a_staging_folder_is_locked_while_it_is_written(tmp_path):
    with io.staged_folder(tmp_path / "out") as staging:
        os.utime(staging, (0, 0))
        assert io.clean_stale_staging(tmp_path) == [] and staging.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----------------------------------------------------------------------------- 2. files saved during a run


def test_a_file_saved_during_a_segment_run_is_kept(checkpoint, tmp_path, monkeypatch):
    from SwinBOBLib.workflows import segment as workflow

    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert main(segment_args(scan, "-o", out, checkpoint=checkpoint)) == 0
    real = workflow.segment_image

    def user_saves_notes(*args, **kwargs):  # the user writes into the folder while the model runs
        (out / "notes.txt").write_text("my notes", encoding="utf-8")
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow, "segment_image", user_saves_notes)
    assert main(segment_args(scan, "-o", out, "--structures", "liver", checkpoint=checkpoint)) == 0
    assert (out / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["inference"]["structures"] == [5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_file_saved_while_the_outputs_are_swapped_is_kept(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "labels.nii.gz").write_bytes(b"old")
    with io.staged_folder(target) as staging:
        (staging / "labels.nii.gz").write_bytes(b"new")
        (target / "notes.txt").write_text("saved meanwhile")
    assert (target / "labels.nii.gz").read_bytes() == b"new"
    assert (target / "notes.txt").read_text() == "saved meanwhile"


# ----------------------------------------------------------------------------- 3. --progress-json


def test_progress_json_never_appends_to_an_input(checkpoint, dataset, tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    listing = tmp_path / "list.csv"
    listing.write_text("id,image\none,scan.nii.gz\n", encoding="utf-8")
    for source, progress in ((scan, scan), (listing, listing), (listing, scan), (scan, checkpoint)):
        before = digest(progress)
        code = main(segment_args(source, "-o", tmp_path / "out", "--progress-json", progress, checkpoint=checkpoint))
        assert code == 1 and digest(progress) == before
        assert "--progress-json" in capsys.readouterr().err
    before = digest(dataset / "dataset.json")
    assert main(["train", "--dataset", str(dataset), "-o", str(tmp_path / "run"), "--max-steps", "1",
                 "--progress-json", str(dataset / "dataset.json"), *TINY_TRAIN]) == 1
    assert main(["benchmark", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "-o",
                 str(tmp_path / "bench"), "--progress-json", str(dataset / "dataset.json")]) == 1
    assert digest(dataset / "dataset.json") == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_progress_json_refuses_a_users_file_and_appends_to_its_own_log(checkpoint, tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a log\n", encoding="utf-8")
    assert main(segment_args(scan, "-o", tmp_path / "a", "--progress-json", notes, checkpoint=checkpoint)) == 1
    assert notes.read_text(encoding="utf-8") == "not a log\n"
    assert "is not a SwinBOB progress log" in capsys.readouterr().err
    log = tmp_path / "events.jsonl"
    for out in ("a", "b"):
        assert main(segment_args(scan, "-o", tmp_path / out, "--progress-json", log, checkpoint=checkpoint)) == 0
    events = [json.loads(line)["event"] for line in log.read_text(encoding="utf-8").splitlines()]
    assert events.count("start") == 2 and events.count("done") == 2


# ----------------------------------------------------------------------------- 4. one rule for -o


def test_solf_run_never_writes_over_a_users_report(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("# my report\n", encoding="utf-8")
    assert main(["solf", "run", str(cohort), "-o", str(out), "--workers", "1", "--quiet", "--checks", "none"]) == 1
    err = capsys.readouterr().err
    assert "report.md" in err and "refusing to write over them" in err
    assert tree(out) == {"report.md": hashlib.sha256(b"# my report\n").hexdigest()}
    before = tree(cohort)
    assert main(["solf", "run", str(cohort), "-o", str(cohort), "--workers", "1", "--quiet"]) == 1
    assert main(["solf", "ablation", str(cohort), "-o", str(cohort), "--workers", "1", "--quiet"]) == 1
    assert tree(cohort) == before


def test_train_never_writes_over_a_users_config_or_a_dataset(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"mine": true}', encoding="utf-8")
    assert main(["train", "--dataset", str(dataset), "-o", str(run), "--max-steps", "1", *TINY_TRAIN]) == 1
    assert "config.json" in capsys.readouterr().err
    assert tree(run) == {"config.json": hashlib.sha256(b'{"mine": true}').hexdigest()}
    before = tree(dataset)
    assert main(["train", "--dataset", str(dataset), "-o", str(dataset), "--max-steps", "1", *TINY_TRAIN]) == 1
    assert tree(dataset) == before


def test_benchmark_never_writes_over_a_users_summary(checkpoint, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("mine", encoding="utf-8")
    assert main(["benchmark", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "-o", str(out),
                 "--device", "cpu", "--quiet"]) == 1
    assert "summary.md" in capsys.readouterr().err and tree(out) == {"summary.md": digest(out / "summary.md")}


def test_benchmark_writes_again_into_its_own_folder(checkpoint, dataset, tmp_path):
    argv = ["benchmark", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out"),
            "--device", "cpu", "--quiet", "--limit", "1"]
    assert main(argv) == 0
    (tmp_path / "out" / io.OUTPUT_MARKER).unlink()  # an output folder of an earlier version
    assert main(argv) == 0 and main(argv) == 0


@pytest.mark.parametrize("command", ["remap", "convert"])
def test_remap_and_convert_refuse_to_write_over_their_input(command, tmp_path, capsys):
    image = body()
    labels = np.zeros(image.spatial_shape, np.uint8)
    labels[5:9, 5:9, 5:9] = 1
    path = io.save_labelmap(labels, image, tmp_path / "labels.nii.gz")
    before = digest(path)
    argv = ["remap", str(path), str(path), "--from", "total", "--to", "ukbob"] if command == "remap" else \
        ["convert", str(path), str(tmp_path / "." / "labels.nii.gz")]
    assert main(argv) == 1
    assert "refusing to write over an input" in capsys.readouterr().err and digest(path) == before


def test_the_root_folder_is_refused_before_anything_is_written():
    for check in (io.check_output_path, lambda folder: io.claim_output_folder(folder, "solf")):
        with pytest.raises(ValueError, match="refusing to write outputs straight into /"):
            check("/")


# Run as root, a command that lost the check would write its outputs into / before failing: the
# commands themselves are tried only where / cannot be written.
@pytest.mark.skipif(os.access("/", os.W_OK), reason="/ is writable here: a regression would write into it")
@pytest.mark.parametrize("argv", [
    ["solf", "run", "{cohort}", "-o", "/", "--workers", "1", "--quiet"],
    ["phantom", "-o", "/", "--quiet"],
    ["train", "--dataset", "{dataset}", "-o", "/", "--max-steps", "1"],
    ["segment", "{scan}", "-o", "/"],
])
def test_the_root_folder_is_refused_as_output(argv, cohort, dataset, tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    names = {"cohort": cohort, "dataset": dataset, "scan": scan}
    before = sorted(os.listdir("/"))
    assert main([a.format(**names) for a in argv]) == 1
    assert "refusing to write outputs straight into /" in capsys.readouterr().err
    assert sorted(os.listdir("/")) == before


# ----------------------------------------------------------------------------- 5. one run per folder


def test_a_second_run_into_a_busy_folder_is_refused_and_names_the_first(checkpoint, dataset, tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    with folder_lock(tmp_path / "out"):
        holder = json.loads(lock_path(tmp_path / "out").read_text(encoding="utf-8"))
        assert holder["pid"] == os.getpid() and holder["host"]
    holder = hold_lock(lock_path(tmp_path / "busy"))
    try:
        for argv in (segment_args(scan, "-o", tmp_path / "busy", checkpoint=checkpoint),
                     ["phantom", "-o", str(tmp_path / "busy"), "--quiet"],
                     ["train", "--dataset", str(dataset), "-o", str(tmp_path / "busy"), "--max-steps", "1",
                      *TINY_TRAIN]):
            assert main(argv) == 1
            assert "another swinbob run is writing there" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "busy").exists()


def test_two_segment_runs_started_together_into_one_folder(checkpoint, tmp_path):
    scans = [io.save_image(body(shape=(48, 40, 32), seed=i), tmp_path / f"scan{i}.nii.gz") for i in range(2)]
    out = tmp_path / "out"
    processes = [subprocess.Popen([sys.executable, "-m", "SwinBOBLib", *segment_args(s, "-o", out,
                                                                                     checkpoint=checkpoint)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for s in scans]
    results = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 1]), results
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert Path(report["outputs"]["labels"]).is_file()
    if codes == [0, 1]:
        refused = next(err for code, _, err in results if code == 1)
        assert "another swinbob run is writing there (pid" in refused and "Traceback" not in refused
    else:  # one after the other: the second went into out/<case>, beside the first
        assert all("wrote 1 of 1" in out for _, out, _ in results)
        assert _recorded_inputs(out) == {str(s) for s in scans}


def _recorded_inputs(out: Path) -> set[str]:
    return {json.loads(r.read_text(encoding="utf-8"))["input"]["path"] for r in out.rglob("report.json")}


def test_a_second_scan_segmented_into_the_same_folder_keeps_the_first_result(checkpoint, tmp_path, capsys):
    scans = [io.save_image(body(seed=i), tmp_path / f"scan{i}.nii.gz") for i in range(2)]
    out = tmp_path / "out"
    assert main(segment_args(scans[0], "-o", out, checkpoint=checkpoint)) == 0
    first = digest(out / "labels.nii.gz")
    assert main(segment_args(scans[1], "-o", out, checkpoint=checkpoint)) == 0
    assert "holds the result of another scan" in capsys.readouterr().err
    assert digest(out / "labels.nii.gz") == first and (out / "scan1" / "labels.nii.gz").is_file()
    assert _recorded_inputs(out) == {str(s) for s in scans}
    capsys.readouterr()
    assert main(segment_args(scans[1], "-o", out / "scan1", checkpoint=checkpoint)) == 0  # a re-run replaces its own
    assert "note:" not in capsys.readouterr().err and not (out / "scan1" / "scan1").exists()
    assert digest(out / "labels.nii.gz") == first


# ----------------------------------------------------------------------------- 9. and 15-16: train


def test_a_finished_training_run_rerun_does_nothing(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(dataset), "-o", str(run), "--max-steps", "1", *TINY_TRAIN]
    assert main(argv) == 0
    capsys.readouterr()
    before = tree(run)
    assert main(argv) == 0
    assert "already finished (1 steps" in capsys.readouterr().out
    assert tree(run) == before


def test_train_stopped_before_validating_names_no_missing_best_checkpoint(dataset, tmp_path, capsys, monkeypatch):
    stop = tmp_path / "stop"
    stop.touch()
    monkeypatch.setenv("SWINBOB_STOP_FILE", str(stop))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(dataset), "-o", str(run), "--epochs", "5", *TINY_TRAIN, "--set",
                 "split=[0.5, 0.5, 0.0]", "--val-every", "5"]) == 130
    out = capsys.readouterr().out
    assert not (run / "checkpoints" / "best.pt").exists() and "best.pt" not in out.replace("best.pt is", "")
    assert f"last state: {run / 'checkpoints' / 'last.pt'}" in out


def test_a_write_error_during_training_is_one_line(dataset, tmp_path):
    import resource

    def small_files():  # every file SwinBOB writes may hold 64 KB: the checkpoint does not fit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    done = subprocess.run([sys.executable, "-m", "SwinBOBLib", "train", "--dataset", str(dataset), "-o",
                           str(tmp_path / "run"), "--max-steps", "1", *TINY_TRAIN], cwd=REPO, capture_output=True,
                          text=True, timeout=300, preexec_fn=small_files)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "could not write the checkpoint" in done.stderr, done.stderr


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # whatever the test process inherited: Python installs its own


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT while the command imports torch. The signal is sent once torch's libraries are being
    mapped; a run that finished before the test saw that (a fast, cached start) is tried again."""
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-m", "SwinBOBLib", "labels"], cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        maps = Path(f"/proc/{process.pid}/maps")
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None and "libtorch" not in maps.read_text():
            time.sleep(0.005)  # until torch's libraries are being loaded: the command is starting
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
            assert process.returncode == 130 and "Traceback" not in err, err
            assert "interrupted" in err
            return
        process.communicate()
    pytest.fail("the command never stayed in its start-up long enough to be interrupted")


def test_the_start_up_handler_ends_the_command_with_one_line():
    """The same without timing: the handler the command installs, then SIGINT to itself."""
    code = ("import os, signal, sys, time\n"
            "sys.argv[0] = 'swinbob'\n"
            "from SwinBOBLib.cli import startup\n"
            "startup.quiet_interrupts_while_starting()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=_default_sigint)
    assert done.returncode == 130 and done.stderr.strip() == "swinbob: interrupted", done.stderr


# ----------------------------------------------------------------------------- 10. and 15-16: solf run


def test_a_killed_solf_run_leaves_the_previous_outputs_whole(cohort, tmp_path, monkeypatch):
    from SwinBOBLib.solf import pipeline

    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["solf", "run", str(cohort), "-o", str(out), "--workers", "1", "--quiet", "--checks",
                         "none"]) == 0
    finally:
        os.umask(previous)
    assert [str(w.message) for w in caught if "deprecat" in str(w.message).lower()] == []
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if not p.name.startswith(".")}
    assert set(modes.values()) == {0o644}, modes
    before = tree(out, hidden=False)
    real = pipeline.write_report

    def killed(*args, **kwargs):  # killed while drawing the report, after the tables
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "write_report", killed)
    assert main(["solf", "run", str(cohort), "-o", str(out), "--workers", "1", "--quiet", "--checks", "none",
                 "--epsilon", "10"]) == 130
    assert tree(out, hidden=False) == before, "no new table beside the old report"
    assert [p.name for p in out.iterdir() if p.name.startswith(io.STAGING_PREFIX)] == []
    monkeypatch.setattr(pipeline, "write_report", real)
    assert main(["solf", "run", str(cohort), "-o", str(out), "--workers", "1", "--quiet", "--checks", "none",
                 "--epsilon", "10", "--no-plots"]) == 0
    assert json.loads((out / "bounds.json").read_text(encoding="utf-8"))["epsilon"] == 10
    assert not list(out.glob("*.png")), "figures of the earlier set are not left beside the new report"
    (out / io.OUTPUT_MARKER).unlink()  # an output folder of an earlier version still resumes
    assert main(["solf", "run", str(cohort), "-o", str(out), "--workers", "1", "--quiet", "--checks", "none"]) == 0


# ----------------------------------------------------------------------------- 11. phantom


def test_an_interrupted_phantom_leaves_nothing_to_block_the_next(tmp_path):
    def interrupt(done, total):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        phantom.write_cohort(tmp_path / "d", n=2, progress=interrupt)
    assert list((tmp_path / "d").iterdir()) == []
    phantom.write_cohort(tmp_path / "d", n=2)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]


# ----------------------------------------------------------------------------- 12. benchmark --limit


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_benchmark_limit_must_be_at_least_one(limit, checkpoint, dataset, tmp_path, capsys):
    assert main(["benchmark", "--dataset", str(dataset), "--checkpoint", str(checkpoint), "-o",
                 str(tmp_path / "out"), "--limit", limit, "--device", "cpu", "--quiet"]) == 1
    assert f"--limit {limit}: expected a number of cases of at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_folder_busy_error_is_an_os_error():
    assert issubclass(FolderBusyError, OSError)
