"""Machine-readable progress and clean stopping for long jobs (training, benchmarks, cohort runs).

A job started by another program (the Slicer module, a workflow engine) reports progress as JSON
lines, one event per line, to a file or to stdout, and stops cleanly on SIGINT/SIGTERM: the signal
only sets a flag, and the job checks it between steps, writes its checkpoint and exits. The file
named by ``SWINBOB_STOP_FILE``, once it exists, asks for the same stop (the channel that works on
Windows, where a parent can only end a child by force, and through launchers that forward no signal).

Event lines always carry ``event`` (e.g. ``"start"``, ``"step"``, ``"validation"``,
``"checkpoint"``, ``"done"``, ``"stopped"``, ``"error"``) and ``time`` (Unix seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, TextIO


class ProgressWriter:
    """Writes progress events as JSON lines to ``target`` ("-" for stdout, a path, or None for off).

    Each line is flushed at once so a reader tailing the file sees it immediately.
    """

    def __init__(self, target: str | os.PathLike | None):
        self._handle: TextIO | None = None
        self._owned = False
        if target == "-":
            self._handle = sys.stdout
        elif target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(target, "a", encoding="utf-8")
            self._owned = True

    def emit(self, event: str, **fields: Any) -> None:
        if self._handle is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._handle.write(json.dumps(record, default=_plain) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._owned and self._handle is not None:
            self._handle.close()
        self._handle = None

    def __enter__(self) -> "ProgressWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(value):
    """JSON fallback for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_progress(path: str | os.PathLike) -> list[dict]:
    """All complete events of a progress file (a half-written last line is ignored)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


#: Environment variable naming a file whose existence asks the job to stop (see :class:`StopFlag`).
STOP_FILE_ENV = "SWINBOB_STOP_FILE"


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception, so ``finally`` blocks run and the job can say it stopped."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` instead of killing the process silently.

    Python's default SIGTERM action ends the process at once (exit 143, no message, no cleanup);
    a job that has no safe point to check a :class:`StopFlag` at (one long inference) uses this so
    its temporary files are removed and a final ``stopped`` event is written. Main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (installed only in the main thread).

    Use as a context manager; the previous handlers are restored on exit. A second signal while a
    stop is pending raises KeyboardInterrupt so a stuck job can still be interrupted. The flag is
    also set once the file ``stop_file`` (default: ``$SWINBOB_STOP_FILE``) exists.
    """

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM), stop_file: str | os.PathLike | None = None):
        self.signals = tuple(signals)
        self.requested: int | None = None
        self._previous = {}
        stop_file = stop_file if stop_file is not None else os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(stop_file) if stop_file else None

    def __bool__(self) -> bool:
        if self.requested is None and self.stop_file is not None and self.stop_file.exists():
            self.requested = signal.SIGTERM
        return self.requested is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask the job to stop (what the signal handler does; also usable from code and tests)."""
        self.requested = signum

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.request(signum)

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
