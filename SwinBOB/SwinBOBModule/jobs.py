"""Long jobs in a background process: ``swinbob segment`` reporting JSON-lines progress.

The child writes one JSON object per line on stdout (``--progress-json -``, written by
:class:`SwinBOBLib.runtime.progress.ProgressWriter`)::

    {"event": "start", "cases": N}
    {"event": "progress", "stage": "etta" | "sliding_window", "done": d, "total": t, "case": id}
    {"event": "case_done", "case": id, "outdir": path}
    {"event": "error", "message": "..."}
    {"event": "done"}

Lines that are not JSON (a library printing its summary) are kept as log text. Two reader threads
move stdout and stderr into queues, so :meth:`BackgroundJob.poll` never blocks: the widget calls
it from a ``qt.QTimer`` and Slicer stays responsive; scripts and tests call :meth:`wait`.

Stopping ends the whole process tree. Inside Slicer ``sys.executable`` is PythonSlicer, a CTK
launcher that starts ``python-real`` as its child and forwards no signal, so ending the launcher
alone would leave the real job running (SlicerMONAIAuto3DSeg kills the children with psutil for
the same reason). :meth:`BackgroundJob.cancel` therefore

1. asks for a clean stop: it creates the job's stop file (``SWINBOB_STOP_FILE`` in the child's
   environment; ``swinbob train`` and ``benchmark`` check it between steps, which is the only
   graceful channel on Windows, where ``terminate()`` is TerminateProcess) and, on POSIX, sends
   SIGTERM to every process of the tree except the workers a process started from its own program
   (DataLoader workers: their parent ends them, and a SIGTERM to them would turn a clean stop into
   a "worker exited unexpectedly" crash);
2. after the grace period kills every process of the tree that is still there (psutil), children
   of children included, and returns once they are gone.

On Windows the child starts in a new process group with no console window, as
``slicer.util.launchConsoleProcess`` starts its processes. Nothing here touches Qt or MRML.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

#: Job states; the last three are final.
RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
#: Human-readable names of the progress stages.
STAGE_TITLES = {"etta": "Adapting (ETTA)", "sliding_window": "Segmenting"}
#: Seconds cancel() waits after the clean-stop request before killing the process tree.
CANCEL_GRACE_S = 5.0
#: Seconds between two scans of the job's process tree while it runs.
TREE_SCAN_INTERVAL_S = 1.0
#: Environment variable naming the file whose existence asks a job to stop cleanly
#: (read by :class:`SwinBOBLib.runtime.stop.StopFlag`).
STOP_FILE_ENV = "SWINBOB_STOP_FILE"


def pythonExecutable() -> str:
    """The Python to run the library with: ``sys.executable``, or PythonSlicer beside the Slicer
    launcher when ``sys.executable`` is the application itself."""
    executable = Path(sys.executable)
    if executable.name.lower().startswith("slicer"):
        for name in ("PythonSlicer", "PythonSlicer.exe"):
            candidate = executable.with_name(name)
            if candidate.exists():
                return str(candidate)
    return str(executable)


def segmentCommand(imagePath, outdir, checkpointPath, options: Sequence[str] = (),
                   python: str | None = None) -> list[str]:
    """``python -m SwinBOBLib segment IMAGE -o OUTDIR --checkpoint CKPT --progress-json - ...``."""
    return [python or pythonExecutable(), "-m", "SwinBOBLib", "segment", str(imagePath), "-o", str(outdir),
            "--checkpoint", str(checkpointPath), "--progress-json", "-", "--quiet", "--no-preview", *options]


def libraryEnvironment(libraryRoot: str | os.PathLike | None = None) -> dict:
    """Environment for the child: SwinBOBLib's folder first on PYTHONPATH, unbuffered UTF-8 output."""
    env = dict(os.environ)
    if libraryRoot is None:
        import SwinBOBLib

        libraryRoot = Path(SwinBOBLib.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(libraryRoot)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # what poll() decodes, also on Windows
    return env


@dataclass
class JobStatus:
    """What the widget shows: state, stage, fraction of the stage done, last message."""

    state: str = RUNNING
    stage: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    cases: int = 0
    outdirs: list = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def text(self) -> str:
        title = STAGE_TITLES.get(self.stage, self.stage.replace("_", " ").capitalize())
        if self.state != RUNNING:
            return self.message or self.state.capitalize()
        return f"{title} {self.done}/{self.total}" if self.total else (title or "Starting...")


def _pump(stream, sink: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        sink.put(line.rstrip("\n"))
    stream.close()
    sink.put(None)


class BackgroundJob:
    """A child process reporting JSON-lines progress; poll it, wait for it or cancel it.

    Args:
        command: the program and its arguments.
        env: its environment (default: this process's).
        cwd: its working folder.
        popen: ``subprocess.Popen`` or a stand-in (tests).
        onEvent: called with each parsed event from :meth:`poll` (the caller's thread).
    """

    def __init__(self, command: Sequence[str], env: dict | None = None, cwd=None,
                 popen: Callable = subprocess.Popen, onEvent: Callable[[dict], None] | None = None):
        self.command = [str(c) for c in command]
        self.stopFile = Path(tempfile.mkdtemp(prefix="SwinBOB-job-")) / "stop"
        env = dict(os.environ if env is None else env)
        env[STOP_FILE_ENV] = str(self.stopFile)
        self.status = JobStatus()
        self.events: list[dict] = []
        self.log: deque = deque(maxlen=200)
        self.stderr: deque = deque(maxlen=200)
        self.onEvent = onEvent
        self.returncode: int | None = None
        self._cancelled = False
        self._killed = False
        self._cancelRequestedAt: float | None = None
        self._known: dict = {}  # pid -> psutil.Process of every process of the tree seen so far
        self._treeSeenAt = 0.0
        self._stdout: queue.Queue = queue.Queue()
        self._stderr: queue.Queue = queue.Queue()
        self._open = 2
        self.startTime = time.monotonic()
        self.process = popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
                             **platformOptions())
        for stream, sink in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr)):
            threading.Thread(target=_pump, args=(stream, sink), daemon=True).start()

    # -- reading

    def poll(self) -> JobStatus:
        """Take in whatever the child wrote, update :attr:`status`; never blocks."""
        self._drain(self._stdout, self._onStdout)
        self._drain(self._stderr, self.stderr.append)
        now = time.monotonic()
        if self.status.state == RUNNING and now - self._treeSeenAt > TREE_SCAN_INTERVAL_S:
            self._treeSeenAt = now
            self._tree()  # remember the job's processes while they can still be found
        if (self._cancelRequestedAt is not None and not self._killed
                and now - self._cancelRequestedAt > self.cancelGrace):
            self._killed = True
            self._killAll()
        if self.status.state == RUNNING and self._open == 0:
            self.returncode = self.process.wait()
            if self._cancelled:  # the launcher may be gone while its children still run
                self._killAll()
            self._finish()
        return self.status

    def _drain(self, source: queue.Queue, handle) -> None:
        while True:
            try:
                line = source.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._open -= 1
            else:
                handle(line)

    def _onStdout(self, line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            self.log.append(line)
            return
        self.events.append(event)
        self._apply(event)
        if self.onEvent is not None:
            self.onEvent(event)

    def _apply(self, event: dict) -> None:
        status, kind = self.status, event["event"]
        if kind == "start":
            status.cases = int(event.get("cases", 0))
        elif kind == "progress":
            status.stage = str(event.get("stage", ""))
            status.done, status.total = int(event.get("done", 0)), int(event.get("total", 0))
        elif kind == "case_done":
            status.outdirs.append(event.get("outdir"))
        elif kind == "error":
            status.message = str(event.get("message", "error"))

    def _finish(self) -> None:
        self.cleanupFiles()
        status = self.status
        if self._cancelled:
            status.state, status.message = CANCELLED, "Cancelled"
        elif self.returncode == 0 and not any(e["event"] == "error" for e in self.events):
            status.state = SUCCEEDED
            status.message = f"Finished in {time.monotonic() - self.startTime:.1f} s"
        else:
            status.state = FAILED
            status.message = status.message or self.errorText() or f"exit status {self.returncode}"

    def errorText(self) -> str:
        """The child's error: its ``error`` event, else the last line of stderr that says something."""
        for event in reversed(self.events):
            if event["event"] == "error":
                return str(event.get("message", ""))
        lines = [line for line in self.stderr if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or [""])[-1].strip()

    @property
    def finished(self) -> bool:
        return self.status.state != RUNNING

    # -- control

    def wait(self, timeout: float | None = None, interval: float = 0.05,
             whileWaiting: Callable[[], object] | None = None) -> JobStatus:
        """Poll until the job ends; TimeoutError after ``timeout`` seconds (the job keeps running).

        ``whileWaiting`` is called between polls: on Slicer's GUI thread pass
        ``slicer.app.processEvents``, or the application freezes until the job ends.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll().state == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job still running after {timeout} s: {' '.join(self.command[:6])} ...")
            if whileWaiting is not None:
                whileWaiting()
            time.sleep(interval)
        return self.status

    cancelGrace = CANCEL_GRACE_S

    def _tree(self) -> list:
        """psutil processes of the job: the child, its descendants, and any seen before that are
        still alive (a launcher that exited leaves its children to init, out of reach of
        ``children()``)."""
        psutil = _psutil()
        if psutil is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            found = []
        for known in list(self._known.values()):
            try:
                if known.is_running():
                    found += known.children(recursive=True)
            except psutil.Error:
                pass
        for proc in found:
            self._known.setdefault(proc.pid, proc)
        return [proc for proc in self._known.values() if _alive(proc)]

    def requestCancel(self, grace: float | None = None) -> None:
        """Ask the job to stop without waiting (the GUI's Cancel / Stop): the stop file and SIGTERM
        now (see the module's docstring); a later :meth:`poll` kills the whole process tree once
        ``grace`` seconds have passed."""
        if grace is not None:
            self.cancelGrace = grace
        if self._cancelRequestedAt is not None or self.finished:
            return
        if self.process.poll() is not None and not self._tree():
            return  # already over; poll() reads its result
        self._cancelled = True
        self._cancelRequestedAt = time.monotonic()
        try:
            self.stopFile.parent.mkdir(parents=True, exist_ok=True)
            self.stopFile.touch()
        except OSError:
            pass
        tree = self._tree()
        if os.name == "nt":
            return  # terminate() is TerminateProcess there: the stop file is the clean channel
        if tree:
            terminateTree(tree)
        elif self.process.poll() is None:  # no psutil: the direct child only
            self.process.terminate()

    def _killAll(self) -> None:
        """Kill every process of the tree that is left and wait until all are gone."""
        tree = self._tree()
        if not tree and self.process.poll() is None:  # no psutil
            self.process.kill()
        killTree(tree, ownChild=self.process)

    def cancel(self, grace: float | None = None) -> JobStatus:
        """Stop the job and wait: the clean-stop request, then after ``grace`` seconds kill every
        process of its tree. Returns once all of them are gone, with the final status
        (``cancelled``, or the job's own result if it had already ended)."""
        self.requestCancel(grace)
        status = self.wait(timeout=self.cancelGrace + 10)
        self._killAll()  # what is left: children that outlived their parent
        return status

    def cleanupFiles(self) -> None:
        """Remove the job's stop-file folder."""
        shutil.rmtree(self.stopFile.parent, ignore_errors=True)


# --------------------------------------------------------------------- process trees


def _psutil():
    try:
        import psutil
    except ImportError:  # the panel installs it; scripts without it stop the direct child only
        return None
    return psutil


def _alive(proc) -> bool:
    psutil = _psutil()
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def platformOptions() -> dict:
    """Popen options: on Windows no console window and a process group of its own (as
    ``slicer.util.launchConsoleProcess`` hides its consoles); nothing elsewhere."""
    if os.name != "nt":
        return {}
    info = subprocess.STARTUPINFO()
    info.dwFlags |= subprocess.STARTF_USESHOWWINDOW
    info.wShowWindow = 0  # SW_HIDE
    return {"startupinfo": info,
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}


def _program(proc) -> str | None:
    try:
        return proc.exe()
    except Exception:  # psutil.Error, or no access
        return None


def terminateTree(processes) -> list:
    """SIGTERM to each process whose parent is not in ``processes`` running the same program
    (a worker started by its own program is ended by its parent). Returns those signalled."""
    psutil = _psutil()
    byPid = {proc.pid: proc for proc in processes}
    signalled = []
    for proc in processes:
        try:
            parent = byPid.get(proc.ppid())
        except psutil.Error:
            continue
        if parent is not None and _program(parent) is not None and _program(parent) == _program(proc):
            continue
        try:
            proc.terminate()
            signalled.append(proc)
        except psutil.Error:
            pass
    return signalled


def killTree(processes, ownChild: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    """Kill every process of ``processes`` (children first) and wait until they are gone.

    ``ownChild`` (this process's own ``Popen``) is waited for through ``Popen.wait`` so that its
    exit status stays readable; psutil would reap it.
    """
    psutil = _psutil()
    if psutil is not None and processes:
        for proc in reversed(processes):
            try:
                proc.kill()
            except psutil.Error:
                pass
        others = [proc for proc in processes if ownChild is None or proc.pid != ownChild.pid]
        _gone, alive = psutil.wait_procs(others, timeout=timeout)
        if alive:
            raise RuntimeError(f"processes {[p.pid for p in alive]} of the job did not end after kill")
    if ownChild is not None and ownChild.poll() is None:
        ownChild.wait(timeout)
