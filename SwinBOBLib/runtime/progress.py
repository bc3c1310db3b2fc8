"""JSON-lines progress for other programs (the Slicer module, a cluster's job log): one event per
line, written and flushed as it happens, to a file or stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO


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
