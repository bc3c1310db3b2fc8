"""One writer per folder: an advisory lock (``fcntl.flock``) on a hidden file beside the folder,
held for as long as a run writes there, and released by the kernel when the run dies.

A lock, unlike a process id, means the same in every container and on every node that shares the
file system, so a run never takes another's folder for abandoned. The lock file records who holds
it (process id, host, boot id, start time, command line) so a refused run can name the other.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected from each other
    fcntl = None

#: Prefix of the lock file beside a folder being written (``.swinbob-lock-<folder name>``).
LOCK_PREFIX = ".swinbob-lock-"


class FolderBusyError(OSError):
    """Another run holds the folder's lock; the message names it (pid, host, start time)."""


# Locks this process holds, by lock file: a job that locks a folder it already holds (a cohort run
# calling the feature store) nests instead of refusing itself.
_HELD: dict[str, list] = {}


def boot_id() -> str:
    """This machine's boot id (``/proc/sys/kernel/random/boot_id``), or "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def host_tag() -> str:
    """Host name and the first 8 characters of the boot id, safe in a file name (``node1-1a2b3c4d``)."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{boot_id()[:8] or 'noboot'}"


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.swinbob-lock-<name>`` in its (resolved) parent folder, or
    inside ``folder`` when that exists and its parent cannot be written (a folder made for the user
    in a read-only project space)."""
    folder = Path(folder).resolve()
    if folder.is_dir() and folder.parent.is_dir() and not os.access(folder.parent, os.W_OK):
        return folder / f"{LOCK_PREFIX}{folder.name}"
    return folder.parent / f"{LOCK_PREFIX}{folder.name}"


def owner_text(info: dict) -> str:
    """``pid 123 on host node1 since 2026-12-07 05:40:01 (swinbob segment ...)``."""
    if not info:
        return "a run that did not record itself"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    command = f" ({info['command']})" if info.get("command") else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {started}{command}"


def read_owner(path: str | os.PathLike) -> dict:
    """Who wrote the lock file ``path`` (empty when it cannot be read)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _try_lock(handle: int) -> bool | None:
    """True: locked; False: another holds it; None: the file system has no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP: an NFS mount without locking
    return True


def _acquire(path: Path, what: str) -> int:
    """Open, lock and sign ``path``; FolderBusyError naming the holder when another has it."""
    for _ in range(10):
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        locked = _try_lock(handle)
        if locked is False:
            os.close(handle)
            raise FolderBusyError(f"{what}: another swinbob run is writing there ({owner_text(read_owner(path))}); "
                                  "wait for it to finish or choose another output folder")
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file between our open and lock: open the new one
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": boot_id(),
                     "started": round(time.time(), 3), "command": " ".join(["swinbob", *sys.argv[1:]])[:500]}
            os.ftruncate(handle, 0)
            os.write(handle, json.dumps(owner).encode("utf-8"))
            return handle
        os.close(handle)
    raise FolderBusyError(f"{what}: its lock file {path} keeps changing; another run is starting there")


def _release(path: Path, handle: int) -> None:
    # Removed while still locked, so no other run can lock this file after we let go of it.
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(handle)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (the lock file is removed on leaving it).

    ``folder`` need not exist; its parent is created. Nested use on the same folder in one process
    is allowed.

    Raises:
        FolderBusyError: another run (any process, container or node sharing the file system)
            holds the lock; the message gives its pid, host, start time and command.
    """
    path = lock_path(folder)
    key = str(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _HELD[key][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, str(folder))
    _HELD[key] = [handle, 1]
    try:
        yield path
    finally:
        del _HELD[key]
        _release(path, handle)


def is_locked(folder: str | os.PathLike) -> bool | None:
    """Whether a run holds ``folder``'s lock now: True, False (no lock file, or nobody holds it), or
    None when the file system cannot tell (no advisory locks)."""
    path = lock_path(folder)
    if str(path) in _HELD:
        return True
    try:
        handle = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        locked = _try_lock(handle)
        return None if locked is None else not locked
    finally:
        os.close(handle)  # closing drops a lock we took just to test
