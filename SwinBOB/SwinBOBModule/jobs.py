"""Long jobs in a background process: ``swinbob segment`` reporting JSON-lines progress.

The child writes one JSON object per line on stdout (``--progress-json -``, written by
:class:`SwinBOBLib.progress.ProgressWriter`)::

    {"event": "start", "cases": N}
    {"event": "progress", "stage": "etta" | "sliding_window", "done": d, "total": t, "case": id}
    {"event": "case_done", "case": id, "outdir": path}
    {"event": "error", "message": "..."}
    {"event": "done"}

Lines that are not JSON (a library printing its summary) are kept as log text. Two reader threads
move stdout and stderr into queues, so :meth:`BackgroundJob.poll` never blocks: the widget calls
it from a ``qt.QTimer`` and Slicer stays responsive; scripts and tests call :meth:`wait`.
Nothing here touches Qt or MRML.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
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
#: Seconds cancel() waits after terminate() before kill().
CANCEL_GRACE_S = 5.0


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
        self.status = JobStatus()
        self.events: list[dict] = []
        self.log: deque = deque(maxlen=200)
        self.stderr: deque = deque(maxlen=200)
        self.onEvent = onEvent
        self.returncode: int | None = None
        self._cancelled = False
        self._cancelRequestedAt: float | None = None
        self._stdout: queue.Queue = queue.Queue()
        self._stderr: queue.Queue = queue.Queue()
        self._open = 2
        self.startTime = time.monotonic()
        self.process = popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace", bufsize=1)
        for stream, sink in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr)):
            threading.Thread(target=_pump, args=(stream, sink), daemon=True).start()

    # -- reading

    def poll(self) -> JobStatus:
        """Take in whatever the child wrote, update :attr:`status`; never blocks."""
        self._drain(self._stdout, self._onStdout)
        self._drain(self._stderr, self.stderr.append)
        if (self._cancelRequestedAt is not None and self.process.poll() is None
                and time.monotonic() - self._cancelRequestedAt > self.cancelGrace):
            self.process.kill()
        if self.status.state == RUNNING and self._open == 0:
            self.returncode = self.process.wait()
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

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> JobStatus:
        """Poll until the job ends; TimeoutError after ``timeout`` seconds (the job keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll().state == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job still running after {timeout} s: {' '.join(self.command[:6])} ...")
            time.sleep(interval)
        return self.status

    cancelGrace = CANCEL_GRACE_S

    def requestCancel(self, grace: float | None = None) -> None:
        """Ask the child to stop without waiting (the GUI's Cancel): terminate now (SIGTERM; the
        library stops between steps); a later :meth:`poll` kills it after ``grace`` seconds."""
        if grace is not None:
            self.cancelGrace = grace
        if self.process.poll() is None and self._cancelRequestedAt is None:
            self._cancelled = True
            self._cancelRequestedAt = time.monotonic()
            self.process.terminate()

    def cancel(self, grace: float | None = None) -> JobStatus:
        """Stop the child and wait for it: terminate, then kill after ``grace`` seconds. Returns
        the final status (``cancelled``, or the job's own result if it had already ended)."""
        self.requestCancel(grace)
        return self.wait(timeout=self.cancelGrace + 10)
