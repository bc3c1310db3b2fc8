"""Memory checks before large allocations: a file's declared size against the machine's memory,
with an error that names the file, the size and what to do instead of a crash.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


class InsufficientMemoryError(MemoryError):
    """An image whose declared size does not fit this machine's memory; the message names the file."""


def format_mm(values) -> str:
    """Spacings or positions (mm) as plain numbers, ``(3, 3, 1e-06)``: no ``np.float64(...)`` reprs."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def format_bytes(count: float) -> str:
    """A byte count for messages: ``"7.5 GB"`` (powers of 1000)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000.0
    return f"{count:.1f} PB"


def physical_memory_bytes() -> int | None:
    """Total physical memory of this machine in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_limit_bytes() -> int | None:
    """The memory limit of this process's control group (containers, batch jobs), if any."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as stream:
                text = stream.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:  # cgroup v1 writes a huge number for "no limit"
            return int(text)
    return None


def available_memory_bytes() -> int | None:
    """Memory this process may use in bytes: the physical memory, or the control group's limit where
    that is lower (the kernel kills a process beyond either); None where neither is known."""
    known = [n for n in (physical_memory_bytes(), _cgroup_limit_bytes()) if n]
    return min(known) if known else None


def check_declared_size(source, shape: Sequence[int], itemsize: int) -> int:
    """Refuse an image whose header declares more voxels than this machine's memory can hold.

    Args:
        source: the file, for the message.
        shape: declared array shape (any number of axes).
        itemsize: bytes per value.

    Returns:
        The declared size in bytes.

    Raises:
        InsufficientMemoryError: the declared size exceeds the physical memory.
    """
    declared = int(np.prod([int(n) for n in shape], dtype=np.float64)) * int(itemsize)
    total = physical_memory_bytes()
    if total is not None and declared > total:
        raise InsufficientMemoryError(
            f"not enough memory to read {source} (declared size {format_bytes(declared)}, shape "
            f"{tuple(int(n) for n in shape)}; this machine has {format_bytes(total)}); the header is broken "
            "or the image must be cropped first")
    return declared


def out_of_memory_error(source, shape: Sequence[int], itemsize: int) -> InsufficientMemoryError:
    declared = float(np.prod([int(n) for n in shape], dtype=np.float64)) * int(itemsize)
    return InsufficientMemoryError(f"not enough memory to read {source} (declared size {format_bytes(declared)}, "
                                   f"shape {tuple(int(n) for n in shape)})")
