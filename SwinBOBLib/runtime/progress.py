"""JSON-lines progress for other programs (the Slicer module, a cluster's job log): one event per
line, written and flushed as it happens, to a file or stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO


class ProgressWriter:
    """Writes progress events as JSON lines to ``target`` ("-" for stdout, a path, or None for off).

    Each line is flushed at once so a reader tailing the file sees it immediately. Events are
    appended to an existing progress log; any other existing file, and any of ``inputs`` (or a
    file inside an input folder), is refused (:func:`check_progress_target`).
    """

    def __init__(self, target: str | os.PathLike | None, inputs: Sequence[str | os.PathLike | None] = ()):
        self._handle: TextIO | None = None
        self._owned = False
        if target == "-":
            self._handle = sys.stdout
        elif target:
            check_progress_target(target, inputs)
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


def is_progress_log(path: str | os.PathLike) -> bool:
    """Whether ``path`` is empty or starts with a progress event of ours (a JSON object with "event"
    and "time")."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(1 << 16)
    except OSError:
        return False
    if not first.strip():
        return True
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "event" in record and "time" in record


def check_progress_target(target: str | os.PathLike, inputs: Sequence[str | os.PathLike | None] = ()) -> None:
    """Refuse a ``--progress-json`` file that is one of ``inputs`` (or inside an input folder), or an
    existing file that is not a progress log of ours: appending would change it."""
    path = Path(target)
    resolved = path.resolve()
    for item in inputs:
        if item is None or str(item) == "-" or not Path(item).exists():
            continue
        source = Path(item).resolve()
        if resolved == source or (source.is_dir() and resolved.is_relative_to(source)):
            raise ValueError(f"--progress-json {target}: is the input {item} (or inside it); progress events "
                             "would be appended to an input, choose another file")
    if path.is_dir():
        raise ValueError(f"--progress-json {target}: is a folder; expected a file for JSON-lines progress")
    if path.exists() and not is_progress_log(path):
        raise ValueError(f"--progress-json {target}: exists and is not a SwinBOB progress log (its first line is "
                         "not a progress event); refusing to append to it, choose a new file")


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
