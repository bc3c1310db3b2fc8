"""Clean stops for long jobs: SIGTERM raised as an interrupt, and a stop file the Slicer module or a
scheduler can create (its path in :data:`STOP_FILE_ENV`) checked between steps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

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


def exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """In a worker process: exit when the driver ``parent`` (its pid) dies, so a run killed with
    SIGKILL leaves no workers behind (a process-pool initializer, or the first call of a worker)."""
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
