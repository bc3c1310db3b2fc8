"""Writing without losing anything: atomic text and CSV writes, staging folders swapped into place
when a job's outputs are complete, safe names for user-supplied ids, and the checks that refuse
to write over what is not ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the permissions any
    tool would create it with (0666 or 0777 less the umask), so colleagues can read the results."""
    mode = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path`` and rename it into place.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        apply_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str],
                     float_format: str | None = None) -> Path:
    """Write ``rows`` as CSV with the header ``columns`` (keys not in it are ignored), atomically.

    ``float_format`` (e.g. ``".6g"``) formats float values; None writes them as Python prints them.
    """
    import csv
    import io as stdio

    buffer = stdio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format(v, float_format) if float_format and isinstance(v, float) else v
                         for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


#: Prefix of the hidden folders a case is written into before it is moved into place.
STAGING_PREFIX = ".swinbob-staging-"


_UNSAFE_NAME = re.compile(r"[/\\:\x00-\x1f]")


def safe_name(name: str, source: str = "name") -> str:
    """``name`` if it can be used as one folder name inside an output folder, else ValueError.

    Refused: empty names, ``.`` and ``..``, names starting with a dot (hidden, and the staging
    folders' prefix), path separators, drive colons and control characters, so ``OUTDIR/<name>``
    never points outside OUTDIR.
    """
    text = str(name).strip()
    if not text or text.startswith(".") or _UNSAFE_NAME.search(text) or len(text) > 200:
        raise ValueError(f"{source}: '{name}' cannot be used as a folder name (no path separators, no "
                         "leading dot, no '..', at most 200 characters); choose a plain name such as case_001")
    return text


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` (resolved, symbolic links followed) lies in ``folder`` or is ``folder``."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_writable(folder: str | os.PathLike) -> Path:
    """Raise PermissionError now, not after an hour of inference, when ``folder`` cannot be written.

    ``folder`` need not exist: its nearest existing parent must then let us create it. Nothing is
    left behind (a probe file is created and removed).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing}: is a file, so the output folder {folder} cannot be made there")
    try:
        handle, probe = tempfile.mkstemp(prefix=".swinbob-write-test-", dir=existing)
    except OSError as error:
        raise PermissionError(f"{folder}: cannot write the output folder here ({existing}: "
                              f"{error.strerror or error})") from None
    os.close(handle)
    os.unlink(probe)
    return folder


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_staging(parent: str | os.PathLike) -> list[Path]:
    """Remove staging folders that a killed run left in ``parent``; returns what was removed.

    Only folders named ``.swinbob-staging-<pid>-...`` whose process no longer runs are touched, so
    a run writing into the same folder at the same time keeps its own.
    """
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = re.match(re.escape(STAGING_PREFIX) + r"(\d+)-", entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Write a set of files into a hidden staging folder, then move it into place as ``target``.

    A run killed or failing while writing leaves ``target`` as it was (the next run removes the
    stale staging folder, see :func:`clean_stale_staging`); a finished run replaces ``target`` whole,
    so old and new outputs never mix. The caller decides whether an existing ``target`` may be
    replaced: everything in it is removed.

    Yields:
        The staging folder (on the same file system as ``target``), created with the umask's
        permissions.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=target.parent))
    try:
        apply_umask(staging)
        yield staging
        _move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
        return
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder; refusing to replace it")
    old = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
