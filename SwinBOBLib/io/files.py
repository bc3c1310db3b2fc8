"""Writing without losing anything: atomic text and CSV writes, staging folders swapped into place
when a job's outputs are complete, safe names for user-supplied ids, and the checks that refuse
to write over what is not ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from SwinBOBLib.runtime.locks import LOCK_PREFIX, FolderBusyError, folder_lock, host_tag, is_locked, lock_path


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


#: A staging folder nobody holds the lock of is removed only once untouched this long (seconds): the
#: second guard where a file system's locks are local to one node (NFS mounted ``nolock``).
STALE_AFTER_S = 3600.0


def _newest_change(path: Path) -> float:
    times = [path.lstat().st_mtime]
    with contextlib.suppress(OSError):
        times.append(lock_path(path).stat().st_mtime)
    return max(times)


def is_stale_staging(entry: Path, now: float | None = None) -> bool:
    """Whether ``entry`` is a staging folder its writer left: nobody holds its lock (a live writer
    does, in whatever container or node it runs) and it is older than :data:`STALE_AFTER_S`."""
    if not entry.name.startswith(STAGING_PREFIX) or entry.is_symlink() or not entry.is_dir():
        return False
    if is_locked(entry) is not False:  # held, or the file system cannot tell: keep it
        return False
    return (time.time() if now is None else now) - _newest_change(entry) > STALE_AFTER_S


def clean_stale_staging(parent: str | os.PathLike) -> list[Path]:
    """Remove staging folders that a killed run left in ``parent``; returns what was removed.

    A folder goes only when no run holds its lock (:func:`is_stale_staging`), so a run writing into
    the same folder at the same time, here or on another node, keeps its own.
    """
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not is_stale_staging(entry):
            continue
        try:
            with folder_lock(entry):  # taken before removing, so no writer can start on it meanwhile
                shutil.rmtree(entry, ignore_errors=True)
        except FolderBusyError:
            continue
        removed.append(entry)
    return removed


def _staging_name(kind: str = "") -> str:
    return f"{STAGING_PREFIX}{host_tag()}-{os.getpid()}-{kind}"


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, replaceable: Iterable[str] | None = None) -> Iterator[Path]:
    """Write a set of files into a hidden staging folder, then move it into place as ``target``.

    A run killed or failing while writing leaves ``target`` as it was (a later run removes the
    stale staging folder, see :func:`clean_stale_staging`); a finished run replaces ``target`` whole,
    so old and new outputs never mix. The caller decides whether ``target`` may be replaced: the
    entries named in ``replaceable`` (default: what it held when the block began; a caller that
    checked the folder earlier passes what it saw then) are removed, and anything else found in it
    at the swap (a user's notes saved while the job ran) is carried into the new folder, never
    deleted.

    Yields:
        The staging folder (on the same file system as ``target``), created with the umask's
        permissions, locked for as long as it exists (:func:`~SwinBOBLib.runtime.locks.folder_lock`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(target.parent)
    before = _entry_names(target) if replaceable is None else set(replaceable)
    staging = Path(tempfile.mkdtemp(prefix=_staging_name(), dir=target.parent))
    try:
        with folder_lock(staging):
            apply_umask(staging)
            try:
                yield staging
            except (OSError, ValueError) as error:
                raise _named_as_target(error, staging, target)
            _move_into_place(staging, target, before)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _named_as_target(error: Exception, staging: Path, target: Path) -> Exception:
    """``error`` with the hidden staging folder replaced by ``target`` in its file name and text, so
    a message names the file the user will see (``OUT/entropy.nii.gz``), not a temporary one."""
    hidden, shown = str(staging), str(target)
    if isinstance(error, OSError):
        for attribute in ("filename", "filename2"):
            value = getattr(error, attribute, None)
            if isinstance(value, str) and hidden in value:
                setattr(error, attribute, value.replace(hidden, shown))
    if error.args and isinstance(error.args[0], str) and hidden in error.args[0]:
        error.args = (error.args[0].replace(hidden, shown), *error.args[1:])
    return error


def _entry_names(folder: Path) -> set[str]:
    if folder.is_symlink() or not folder.is_dir():
        return set()
    return {entry.name for entry in folder.iterdir()}


def _move_into_place(staging: Path, target: Path, before: set[str]) -> None:
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
        return
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"{target}: exists and is not a folder; refusing to replace it")
    old = Path(tempfile.mkdtemp(prefix=_staging_name("old-"), dir=target.parent))
    with folder_lock(old):
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
        _carry_over(old, target, before)


def _carry_over(old: Path, target: Path, before: set[str]) -> None:
    """Remove from ``old`` what it held when the job began; move anything added since into ``target``."""
    kept = []
    for entry in sorted(old.iterdir()):
        if entry.name in before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        elif (target / entry.name).exists() or (target / entry.name).is_symlink():
            kept.append(entry.name)
        else:
            os.rename(entry, target / entry.name)
    if kept:
        keep = target.with_name(f"{target.name}-kept-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(old, keep)
        raise FileExistsError(f"{target}: {', '.join(kept)} was saved there while SwinBOB wrote the same name; "
                              f"the saved file is kept in {keep}")
    old.rmdir()


#: Hidden file that marks a folder as a SwinBOB command's output folder: ``{"command": ...}``.
OUTPUT_MARKER = ".swinbob-outputs.json"


def _ours_hidden(name: str) -> bool:
    return name == OUTPUT_MARKER or name.startswith((STAGING_PREFIX, LOCK_PREFIX))


def check_output_path(folder: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse an output folder that is the file system's root (``-o /``), an input, or holds an
    input; returns ``folder`` as a Path."""
    folder = Path(folder)
    resolved = folder.resolve()
    if resolved == resolved.parent:
        raise ValueError(f"-o {folder}: refusing to write outputs straight into {resolved}; choose a new "
                         "folder for them, e.g. -o results")
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        if Path(item).resolve() == resolved or inside(item, folder):
            raise ValueError(f"-o {folder}: holds the input {item}; choose an output folder apart from the inputs")
    return folder


def check_not_input(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> Path:
    """Refuse an output file that is one of ``inputs`` (or lies inside an input folder): writing it
    would destroy the input. Returns ``output`` as a Path."""
    output = Path(output)
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        if output.resolve() == Path(item).resolve() or (Path(item).is_dir() and inside(output, item)):
            raise ValueError(f"{output}: is the input {item}; refusing to write over an input, choose another "
                             "output file")
    return output


def claim_output_folder(folder: str | os.PathLike, command: str,
                        inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """The one rule for a command's ``-o`` folder: it must be new, empty, or an earlier output folder
    of the same ``command`` (its :data:`OUTPUT_MARKER` says so); then it is marked as ``command``'s.

    Anything else (a user's ``report.md``, a dataset, a cohort, another command's results) is
    refused, so a command never writes over files it did not write. Hidden staging and lock entries
    of SwinBOB are not counted.

    Raises:
        FileExistsError: ``folder`` holds files SwinBOB did not write there for ``command``.
        ValueError: ``folder`` is ``/``, an input or holds an input.
    """
    folder = check_output_path(folder, inputs)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"-o {folder}: is a file, not a folder")
    found = sorted(e.name for e in folder.iterdir() if not _ours_hidden(e.name)) if folder.is_dir() else []
    try:
        marked = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        marked = None
    if found and marked != command:
        whose = f"`swinbob {marked}`" if marked else "SwinBOB"
        raise FileExistsError(f"-o {folder}: holds files {whose} did not write for `swinbob {command}` "
                              f"({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); refusing to write "
                              "over them, choose a new or empty output folder")
    if marked != command:
        write_text_atomic(folder / OUTPUT_MARKER, json.dumps({"command": command}) + "\n")
    return folder


def _read_marker(folder: Path) -> dict:
    try:
        data = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike, command: str | None) -> Iterator[Path]:
    """Write a set of files into a hidden staging folder inside ``folder``, then move them into
    ``folder`` together, for outputs that live beside a store that must stay in place (``solf
    run``'s tables beside its resumable features) or beside a user's other files (``phantom``).

    A run killed while computing or writing leaves the previous set whole (or none); the moves at
    the end are renames (milliseconds), subfolders first and files last (so an index such as
    ``dataset.json`` appears only once what it lists is there). With a ``command``, ``folder``'s
    :data:`OUTPUT_MARKER` says ``"complete": false`` while they run, and files of the previous set
    that the new one lacks (figures of a run with plots, now without) are removed; nothing else in
    ``folder`` is touched. A subfolder of the set must not exist in ``folder`` yet.

    Yields:
        The staging folder, locked while it exists.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(folder)
    staging = Path(tempfile.mkdtemp(prefix=_staging_name(), dir=folder))
    try:
        with folder_lock(staging):
            apply_umask(staging)
            yield staging
            _publish(staging, folder, command)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path, command: str | None) -> None:
    names = sorted(staging.iterdir(), key=lambda entry: (not entry.is_dir(), entry.name))
    names = [entry.name for entry in names]
    previous = [n for n in _read_marker(folder).get("files", []) if isinstance(n, str) and "/" not in n]
    if command is not None:
        write_text_atomic(folder / OUTPUT_MARKER, json.dumps({"command": command, "complete": False,
                                                             "files": sorted(set(previous) | set(names))}) + "\n")
    for name in names:
        if (staging / name).is_dir() and (folder / name).exists():
            raise FileExistsError(f"{folder / name}: appeared while SwinBOB wrote it; refusing to "
                                  "replace it")
        os.replace(staging / name, folder / name)
    if command is None:
        return
    for name in set(previous) - set(names):
        if not name.startswith(".") and (folder / name).is_file():
            (folder / name).unlink()
    write_text_atomic(folder / OUTPUT_MARKER, json.dumps({"command": command, "complete": True,
                                                         "files": names}) + "\n")
