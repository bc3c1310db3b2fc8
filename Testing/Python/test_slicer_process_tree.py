"""Cancel and Stop end the job's whole process tree (SwinBOB/SwinBOBModule/jobs.py).

Inside Slicer the job's program is PythonSlicer, a launcher that starts ``python-real`` as its child
and forwards no signal. The stand-ins here do the same: they run their arguments as a child and
ignore SIGTERM/SIGINT themselves, so ending only the direct child (what ``Popen.terminate`` does)
would leave the real job running.
"""

import os
import signal
import sys
import time

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")
psutil = pytest.importorskip("psutil", reason="psutil is a dependency (pyproject.toml)")

import slicer_harness  # noqa: E402,F401  (puts SwinBOB/ on sys.path)
from SwinBOBModule import jobs, launcher  # noqa: E402

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-ins use POSIX signals")

#: Like CTK's launcher: runs its arguments as a child (with default signal handling), forwards no
#: signal, ignores SIGTERM/SIGINT itself, and exits with the child's status.
LAUNCHER = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
def defaults():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
sys.exit(subprocess.call(sys.argv[1:], preexec_fn=defaults))
"""


def _script(folder, name, text):
    path = folder / name
    path.write_text(text)
    return str(path)


def _gone(pid: int) -> bool:
    """No such process, or only its exit status is left (a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for_file(path, job, timeout=30.0):
    started = time.monotonic()
    while not path.exists() or not path.read_text().strip():
        job.poll()
        assert time.monotonic() - started < timeout, f"{path} never written; stderr: {list(job.stderr)[-5:]}"
        time.sleep(0.05)
    return path.read_text().strip()


@pytest.fixture()
def stand_in(tmp_path):
    return _script(tmp_path, "launcher.py", LAUNCHER)


def _stubborn_tree(tmp_path, stand_in):
    """launcher stand-in -> child -> grandchild; child and grandchild ignore SIGTERM too."""
    pids = tmp_path / "grandchild.pid"
    grandchild = _script(tmp_path, "grandchild.py", "import signal, time\n"
                                                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                                    "time.sleep(120)\n")
    child = _script(tmp_path, "child.py", f"""
import json, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, {grandchild!r}])
open({str(pids)!r}, "w").write(str(worker.pid))
print(json.dumps({{"event": "start", "cases": 1}}), flush=True)
time.sleep(120)
""")
    return [sys.executable, stand_in, sys.executable, child], pids


def test_cancel_ends_the_grandchild_of_a_launcher_that_ignores_signals(tmp_path, stand_in):
    command, pids = _stubborn_tree(tmp_path, stand_in)
    job = jobs.BackgroundJob(command)
    grandchild = int(_wait_for_file(pids, job))
    assert psutil.Process(grandchild).is_running()
    t0 = time.monotonic()
    status = job.cancel(grace=0.5)
    assert status.state == jobs.CANCELLED
    assert _gone(grandchild), "the grandchild outlived cancel()"
    assert job.process.poll() is not None
    assert not job._tree(), "processes of the job are left"
    assert time.monotonic() - t0 < 15
    assert not job.stopFile.parent.exists(), "the job's stop-file folder is left behind"


def test_the_panels_cancel_kills_the_tree_from_poll(tmp_path, stand_in):
    """The GUI path: requestCancel() returns at once, poll() from the timer kills after the grace."""
    command, pids = _stubborn_tree(tmp_path, stand_in)
    job = jobs.BackgroundJob(command)
    grandchild = int(_wait_for_file(pids, job))
    t0 = time.monotonic()
    job.requestCancel(grace=0.5)
    assert time.monotonic() - t0 < 1.0, "requestCancel blocked"
    assert not job.finished
    while not job.finished:
        job.poll()
        assert time.monotonic() - t0 < 15, "poll() never ended the job"
        time.sleep(0.05)
    assert job.status.state == jobs.CANCELLED and _gone(grandchild)


def test_sigterm_reaches_the_job_behind_a_launcher_but_not_its_workers(tmp_path):
    """The clean stop: a launcher of another program (here /bin/sh, ignoring SIGTERM) passes
    nothing on, yet the job behind it gets SIGTERM; the worker the job started from its own
    program does not (its parent ends it, as DataLoader shuts its workers down)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    worker = _script(tmp_path, "worker.py", f"""
import signal, sys, time
def handler(signum, frame):
    open({str(marks / 'worker-sigterm')!r}, "w").write("x")
    sys.exit(1)
signal.signal(signal.SIGTERM, handler)
time.sleep(120)
""")
    job_script = _script(tmp_path, "job.py", f"""
import json, signal, subprocess, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
worker = subprocess.Popen([sys.executable, {worker!r}])
print(json.dumps({{"event": "start", "worker": worker.pid}}), flush=True)
while not stop:
    time.sleep(0.05)
open({str(marks / 'job-sigterm')!r}, "w").write("x")
worker.kill()
worker.wait()
sys.exit(130)
""")
    shell = ["/bin/sh", "-c", 'trap "" TERM INT; "$@"; status=$?; exit $status', "sh", sys.executable, job_script]
    job = jobs.BackgroundJob(shell)
    started = time.monotonic()
    while not job.events:
        job.poll()
        assert time.monotonic() - started < 30, list(job.stderr)
        time.sleep(0.05)
    status = job.cancel(grace=20)
    assert status.state == jobs.CANCELLED
    assert (marks / "job-sigterm").exists(), "SIGTERM did not reach the job behind the launcher"
    assert not (marks / "worker-sigterm").exists(), "the job's own worker was signalled"
    assert time.monotonic() - started < 20, "the clean stop waited for the kill"
    assert _gone(job.events[0]["worker"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from SwinBOBLib.phantom import write_cohort

    root = tmp_path_factory.mktemp("tree") / "phantoms"
    write_cohort(root, n=2, size="tiny")
    return root


def test_a_training_stopped_through_the_launcher_leaves_a_loadable_last_checkpoint(dataset, tmp_path, stand_in):
    """Stop through a launcher that forwards nothing and runs the same program as the job (so no
    SIGTERM is sent to the job): the stop file stops it cleanly, as on Windows."""
    from SwinBOBLib.models.loading import load_checkpoint

    tiny = ["--feature-size", "12", "--roi-size", "32", "--batch-size", "1", "--crops-per-volume", "1",
            "--contrast", "in_phase", "--set", "split=[1.0,0.0,0.0]", "--num-workers", "0"]
    options = launcher.TrainingOptions(str(dataset), str(tmp_path / "run"), epochs=1000, device="cpu", extra=tiny)
    command = [sys.executable, stand_in, *launcher.trainCommand(options, python=sys.executable)]
    job = launcher.LibraryJob(launcher.TRAIN, command, options.outdir, env=jobs.libraryEnvironment())
    try:
        while not any(e["event"] == "step" for e in job.events):
            assert job.poll().state == jobs.RUNNING, (job.status.message, list(job.stderr)[-5:])
            assert time.monotonic() - job.startTime < 600, "no step reported"
            time.sleep(0.1)
        training = [p for p in job._tree() if p.pid != job.process.pid]
        assert training, "the launcher started no child"
        status = job.stop(grace=300)  # a step can take minutes on a loaded 2-core machine
    finally:
        job._killAll()
    assert status.state == jobs.CANCELLED, (status.message, list(job.stderr)[-5:])
    assert job.returncode == 130 and job.events[-1]["event"] == "stopped"
    assert all(_gone(p.pid) for p in training)
    model, _metadata = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_finished_job_is_not_cancelled(tmp_path):
    job = jobs.BackgroundJob([sys.executable, "-c", "print('{\"event\": \"done\"}')"])
    assert job.wait(30).state == jobs.SUCCEEDED
    assert job.cancel(grace=0.1).state == jobs.SUCCEEDED


def test_the_child_is_told_where_its_stop_file_is(tmp_path):
    code = "import json, os; print(json.dumps({'event': 'start', 'stop': os.environ['SWINBOB_STOP_FILE']}))"
    job = jobs.BackgroundJob([sys.executable, "-c", code], env={**os.environ, "SWINBOB_STOP_FILE": "elsewhere"})
    job.wait(30)
    assert job.events[0]["stop"] == str(job.stopFile)


def test_stop_flag_reads_the_stop_file(tmp_path, monkeypatch):
    from SwinBOBLib.runtime.stop import STOP_FILE_ENV, StopFlag

    assert STOP_FILE_ENV == jobs.STOP_FILE_ENV
    monkeypatch.setenv(STOP_FILE_ENV, str(tmp_path / "stop"))
    flag = StopFlag()
    assert not flag
    (tmp_path / "stop").touch()
    assert flag and flag.requested == signal.SIGTERM

