"""Ctrl-C while the ``swinbob`` command starts (torch and MONAI take seconds to import) ends it
with one line and exit 130, as it does once the command runs, instead of an import traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupted(signum, frame) -> None:
    os.write(2, b"swinbob: interrupted\n")
    os._exit(130)  # nothing is written yet: no cleanup to run, and no half-imported module to unwind


def started_as_command() -> bool:
    """Whether this process is the ``swinbob`` command (console script or ``python -m SwinBOBLib``),
    not a program importing the library."""
    program = sys.argv[0] if sys.argv else ""
    return os.path.basename(program) == "swinbob" or program.endswith(os.path.join("SwinBOBLib", "__main__.py"))


def quiet_interrupts_while_starting() -> None:
    """Until :func:`started` is called, SIGINT prints one line and exits 130 (command only; main
    thread; only over Python's default handler)."""
    if (started_as_command() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupted)


def started() -> None:
    """The command's own handling takes over: SIGINT raises KeyboardInterrupt again."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
