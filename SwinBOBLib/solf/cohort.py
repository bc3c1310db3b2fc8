"""SOLF over a cohort: inputs, per-sample features on a local process pool or on Ray, a resumable
results store, and the run that fits bounds, flags and writes the tables.

Design: workers only compute (load a label map, compute its features, return a record); the driver
alone writes. Every finished sample is appended as one JSON line to ``features.jsonl`` and flushed
to disk, so a killed run loses at most the sample being written. On restart the store drops a
half-written last line, keeps the last record of any duplicated id, and only the samples without a
record, or whose files changed size or modification time since, are computed. A sample that
cannot be read is recorded in ``errors.csv`` and skipped; it is tried again on the next run.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from SwinBOBLib import io
from SwinBOBLib.io.files import write_text_atomic
from SwinBOBLib.runtime.stop import exit_with_parent
from SwinBOBLib.solf.body import body_mask_from_image
from SwinBOBLib.solf.checks import partner_labels, structure_checks, superior_axis
from SwinBOBLib.solf.features import organ_features

LABELMAP_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")


#: Which per-structure checks a cohort run computes beside the SOLF features: every one that has
#: its inputs, the label-only ones (no image read, no partner pairs: half the time on UKBOB-size
#: maps), or none (the SOLF features alone, ~35 ms per map).
CHECK_SETS = ("all", "labels", "none")


#: Where V_body comes from: the body-mask file, the image (segmented), or the non-zero labels.
BODY_SOURCES = ("auto", "labels", "image", "mask")


STORE_NAME = "features.jsonl"


RUN_CONFIG_NAME = "run_config.json"


@dataclass(frozen=True)
class Sample:
    """One cohort member: an id and the files it is made of (absolute paths or None)."""

    id: str
    labelmap: str
    image: str | None = None
    body_mask: str | None = None
    entropy: str | None = None  # the prediction's entropy map (segment's entropy output), if any


def sample_id_of(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``case_0001.nii.gz`` -> ``case_0001``."""
    name = Path(path).name
    for suffix in LABELMAP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(LABELMAP_SUFFIXES))


def _files_by_id(folder: str | os.PathLike | None) -> dict[str, str]:
    """Sample id -> file of ``folder`` (nnU-Net ``_0000`` channel suffixes stripped); {} for None."""
    if folder is None:
        return {}
    paths = {sample_id_of(p): str(p.resolve()) for p in _image_files(Path(folder))}
    files = {i[: -len("_0000")]: p for i, p in paths.items() if i.endswith("_0000")}
    files.update(paths)  # an exact name wins over a stripped one (case_0000 is a case, not a channel)
    return files


def samples_from_folder(folder: str | os.PathLike, images: str | os.PathLike | None = None,
                        body_masks: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of a folder of label maps, or of a dataset folder with ``labelsTr/`` (and
    ``imagesTr/``, used as images unless ``images`` is given). Images and body masks are matched to
    label maps by file name."""
    folder = Path(folder)
    if (folder / "labelsTr").is_dir():
        if images is None and (folder / "imagesTr").is_dir():
            images = folder / "imagesTr"
        folder = folder / "labelsTr"
    files = _image_files(folder)
    if not files:
        raise ValueError(f"{folder}: no label maps ({', '.join(LABELMAP_SUFFIXES)}) in this folder")
    images, body_masks = _files_by_id(images), _files_by_id(body_masks)
    return [Sample(sample_id_of(p), str(p.resolve()), images.get(sample_id_of(p)),
                   body_masks.get(sample_id_of(p))) for p in files]


def samples_from_csv(path: str | os.PathLike) -> list[Sample]:
    """Samples of a CSV with a ``labelmap`` column and optional ``id``, ``image``, ``body_mask``,
    ``entropy`` columns; relative paths are relative to the CSV's folder."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or "labelmap" not in rows[0]:
        raise ValueError(f"{path}: a cohort CSV needs a header with a 'labelmap' column "
                         "(optional: id, image, body_mask)")

    def resolve(value):
        return str((path.parent / value.strip()).resolve()) if value and value.strip() else None

    return [Sample((row.get("id") or "").strip() or sample_id_of(row["labelmap"].strip()),
                   resolve(row["labelmap"]), resolve(row.get("image")), resolve(row.get("body_mask")),
                   resolve(row.get("entropy")))
            for row in rows]


def find_samples(cohort: str | os.PathLike, images=None, body_masks=None) -> list[Sample]:
    """Samples of a cohort given as a folder (see :func:`samples_from_folder`) or a CSV list."""
    cohort = Path(cohort)
    if cohort.is_dir():
        samples = samples_from_folder(cohort, images, body_masks)
    elif cohort.suffix.lower() == ".csv" and cohort.is_file():
        samples = samples_from_csv(cohort)
    else:
        raise ValueError(f"{cohort}: a cohort must be a folder of label maps or a .csv list")
    duplicates = sorted(i for i, n in Counter(s.id for s in samples).items() if n > 1)
    if duplicates:
        raise ValueError(f"{cohort}: duplicate sample ids {duplicates[:5]}; give an 'id' column")
    return samples


def _grid_error(path: str, array: np.ndarray, shape) -> str | None:
    """Why ``array`` (read from ``path``) cannot be used with a label map of ``shape``, or None."""
    if array.shape[:3] != tuple(shape):
        return f"{path}: grid {array.shape[:3]} differs from the label map's {tuple(shape)}"
    return None


def _body_source(sample: Sample, body: str) -> str:
    """``body`` with "auto" resolved: the sample's body mask if it has one, else the labels."""
    if body == "auto":
        return "mask" if sample.body_mask else "labels"
    return body


def _body_mask(sample: Sample, body: str, shape, image: np.ndarray | None = None) -> np.ndarray | None:
    """V_body's mask (None: the labels), ``image`` the sample's image if already read."""
    body = _body_source(sample, body)
    if body == "labels":
        return None
    path = sample.body_mask if body == "mask" else sample.image
    if path is None:
        needed = "an image" if body == "image" else "a body mask"
        raise ValueError(f"{sample.labelmap}: body source '{body}' needs {needed} for this sample")
    array = image if body == "image" and image is not None else io.load_image(path).array
    mask = array != 0 if body == "mask" else body_mask_from_image(array)
    if error := _grid_error(path, mask, shape):
        raise ValueError(error)
    return mask


def compute_sample(sample: Sample, body: str = "auto", labels: Sequence[int] | None = None,
                   scheme: str | None = None, checks: str = "all", *, preloaded: Mapping | None = None) -> dict:
    """Load one sample and compute its features and check values; never raises (errors come back
    in the record). With ``checks="all"`` the image checks run where the sample has an image and
    ``scheme`` names the left/right pairs of the partner check (none without it); ``"labels"``
    computes the label-only checks, ``"none"`` no checks (:data:`CHECK_SETS`).

    ``load_s`` covers reading the files and the body mask, ``compute_s`` :func:`organ_features`
    and :func:`~.checks.structure_checks`. ``files`` records each input's size and modification
    time, so a later run recomputes a sample whose files changed (:func:`is_fresh`).

    ``preloaded`` holds what was just written to the sample's files, so they are not read back: an
    :class:`~SwinBOBLib.io.Image` ``"labels"`` (the label map, with the affine its file holds), and
    optionally ``"entropy"`` and ``"pixels"`` (arrays on its grid: the entropy map and the image);
    the caller vouches they are what the files hold (``cohort run`` passes its own outputs).

    Returns:
        ``{"id", "labelmap", "version", "files", "shape", "spacing", "features": {"<label>": {...}},
        "warnings", "load_s", "compute_s"}``, or ``{"id", "labelmap", "error"}``.
    """
    started = time.perf_counter()
    try:
        preloaded = preloaded or {}
        image = preloaded.get("labels")
        image = io.load_labelmap(sample.labelmap, scheme=None) if image is None else image
        wants_image = checks == "all" or _body_source(sample, body) == "image"
        pixels = None
        if sample.image and wants_image:  # read once
            pixels = preloaded["pixels"] if preloaded.get("pixels") is not None else io.load_image(sample.image).array
        mask = _body_mask(sample, body, image.array.shape, pixels)
        entropy = preloaded.get("entropy")
        entropy = _entropy(sample, image.array.shape) if entropy is None else entropy
        intensities, image_warning = _intensities(sample, pixels, image.array.shape) if checks == "all" else (None, None)
        loaded = time.perf_counter()
        features = organ_features(image.array, image.spacing, body_mask=mask, labels=labels,
                                  source=sample.labelmap)
        values = {} if checks == "none" else structure_checks(
            image.array, image.affine, body_mask=mask, entropy=entropy, labels=labels, image=intensities,
            partners=partner_labels(scheme) if checks == "all" else None)
        warnings_ = [w for w in [organ_only_warning(sample, body, mask, image.array, image.affine),
                                 image_warning] if w]
        done = time.perf_counter()
    except Exception as error:  # one bad file must not stop the cohort
        return {"id": sample.id, "labelmap": sample.labelmap,
                "error": f"{type(error).__name__}: {error}".strip()}
    return {"id": sample.id, "labelmap": sample.labelmap, "version": RECORD_VERSION, "files": file_stamps(sample),
            "shape": list(image.array.shape), "spacing": [round(s, 6) for s in image.spacing],
            "features": {str(label): {**entry, **values.get(label, {})} for label, entry in features.items()},
            "warnings": warnings_, "load_s": round(loaded - started, 4), "compute_s": round(done - loaded, 4)}


#: Bumped when a record's content changes (2: check values, file stamps; 3: the shape, partner and
#: image checks; 4: image_enclosed), so old stores recompute.
RECORD_VERSION = 4


#: A label map whose labels cover less than this share of its outline is taken as organs only
#: (measured: 0.97-0.98 on the UKBOB phantoms, 0.65 and 0.51 on the TotalSegmentator CT and MR samples).
ORGAN_ONLY_COVERAGE = 0.85


def _entropy(sample: Sample, shape) -> np.ndarray | None:
    if sample.entropy is None:
        return None
    array = io.load_image(sample.entropy).array
    if error := _grid_error(sample.entropy, array, shape):
        raise ValueError(error)
    return array


def _intensities(sample: Sample, pixels: np.ndarray | None, shape) -> tuple[np.ndarray | None, str | None]:
    """The sample's image (``pixels``, already read) for the image checks, or None (no image, or one
    on another grid: then the image checks are skipped with a warning, the rest is still measured)."""
    if pixels is None:
        return None, None
    if error := _grid_error(sample.image, pixels, shape):
        return None, f"{error}; the image checks are skipped for this sample (resample the image onto the label map)"
    return pixels, None


def labelled_coverage(labelmap: np.ndarray, affine: np.ndarray) -> float:
    """Share of the voxels inside the label map's outline that carry a label: ~1 for a UKBOB map
    (every body voxel labelled), far less for a map of organs only.

    The outline of each axial slice: the voxels between the first and last labelled voxel of
    their row or of their column.
    """
    labelled = np.asarray(labelmap) != 0
    if not labelled.any():
        return 1.0
    hull = np.zeros_like(labelled)
    for axis in [a for a in range(3) if a != superior_axis(affine)]:
        forward = np.maximum.accumulate(labelled, axis=axis)
        backward = np.flip(np.maximum.accumulate(np.flip(labelled, axis), axis=axis), axis)
        hull |= forward & backward
    return float(labelled.sum() / max(int(hull.sum()), 1))


def organ_only_warning(sample: Sample, body: str, mask, labelmap, affine) -> str | None:
    """The ``--body auto`` trap: no body mask, and a map that labels organs only."""
    if body != "auto" or mask is not None:
        return None
    coverage = labelled_coverage(labelmap, affine)
    if coverage >= ORGAN_ONLY_COVERAGE:
        return None
    return (f"{sample.labelmap}: labels cover only {coverage:.0%} of the voxels inside its outline (organs "
            "only?); with --body auto V_body is the labelled voxels, so normalised volumes come out too "
            "large. Pass the image (--images DIR --body image, or an 'image' CSV column) or a body mask "
            "(--body-masks DIR, or a 'body_mask' CSV column)")


def file_stamps(sample: Sample) -> dict[str, list[int]]:
    """``{path: [size in bytes, mtime in ns]}`` of the sample's input files that exist."""
    stamps = {}
    for path in (sample.labelmap, sample.image, sample.body_mask, sample.entropy):
        if path and os.path.exists(path):
            stat = os.stat(path)
            stamps[str(path)] = [int(stat.st_size), int(stat.st_mtime_ns)]
    return stamps


def is_fresh(record: Mapping, sample: Sample) -> bool:
    """Whether a stored record still describes the sample: same record version, same files with
    the same size and modification time (a corrected label map is recomputed)."""
    return record.get("version") == RECORD_VERSION and record.get("files") == file_stamps(sample)


class ResultStore:
    """Append-only JSON-lines file of per-sample records, safe against kills.

    Reading drops a half-written last line and keeps the last record of each id (a sample
    recomputed because its files changed is appended again); appending flushes and fsyncs each line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        """Records by id, repairing the file in place if it was cut or holds duplicates."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        # The piece after the last newline is empty, or a line cut by a kill: dropped either way.
        records, dirty = {}, not data.endswith(b"\n") and bool(data)
        for line in data.split(b"\n")[:-1]:
            try:
                record = json.loads(line)
                sample_id = record["id"]
            except (ValueError, KeyError, TypeError):
                dirty = True
                continue
            if sample_id in records:
                dirty = True
                del records[sample_id]  # superseded: the later record wins (keeps file order)
            records[sample_id] = record
        if dirty:
            warnings.warn(f"{self.path}: repaired (cut last line or superseded records); "
                          f"{len(records)} samples kept", RuntimeWarning, stacklevel=2)
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in records.values()))
        return records

    def append(self, record: Mapping) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


def _pending_window(workers: int) -> int:
    return max(2, 4 * workers)


def _local_results(samples: Sequence[Sample], body: str, labels, workers: int, address=None,
                   scheme: str | None = None, checks: str = "all") -> Iterator[dict]:
    """Records in completion order, computed in this process (1 worker) or a process pool."""
    if workers <= 1:
        for sample in samples:
            yield compute_sample(sample, body, labels, scheme, checks)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fork is unsafe with threads (numba, Ray)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=exit_with_parent,
                               initargs=(os.getpid(),))
    try:
        queue, pending = iter(samples), set()
        while True:
            for sample in queue:
                pending.add(pool.submit(compute_sample, sample, body, labels, scheme, checks))
                if len(pending) >= _pending_window(workers):
                    break
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:  # on an interrupt, drop the queued samples instead of finishing them
        pool.shutdown(wait=True, cancel_futures=True)


def _ray_results(samples: Sequence[Sample], body: str, labels, workers: int, address=None,
                 scheme: str | None = None, checks: str = "all") -> Iterator[dict]:
    """Records in completion order from Ray tasks; joins ``address`` (or starts a local Ray) unless
    Ray is already initialised. ``workers`` caps the tasks in flight (0: 4 per cluster CPU)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True)
    task = ray.remote(compute_sample)
    window = _pending_window(workers or int(ray.cluster_resources().get("CPU", 1)))
    queue, pending = iter(samples), {}
    while True:
        for sample in queue:
            pending[task.remote(sample, body, labels, scheme, checks)] = sample
            if len(pending) >= window:
                break
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            sample = pending.pop(ref)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as error:  # a worker died (e.g. out of memory) on this sample
                yield {"id": sample.id, "labelmap": sample.labelmap, "error": f"{type(error).__name__}: {error}"}


#: Engine name -> generator of records. Adding an engine is one entry.
ENGINES: dict[str, Callable[..., Iterator[dict]]] = {"local": _local_results, "ray": _ray_results}


def _check_run_config(out_dir: Path, config: dict) -> None:
    """Refuse to resume a store computed with other feature settings."""
    path = out_dir / RUN_CONFIG_NAME
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        added = {k: v for k, v in config.items() if k not in previous and k in ("scheme", "checks")}
        if added:  # written before these were settings (record version 2): its records are recomputed anyway
            previous.update(added)
            write_text_atomic(path, json.dumps(previous) + "\n")
        if previous != config:
            raise ValueError(f"{out_dir}: holds features computed with {previous}, this run asks for "
                             f"{config}; use another output folder or delete {STORE_NAME}")
    else:
        write_text_atomic(path, json.dumps(config) + "\n")


@dataclass
class CohortFeatures:
    """Result of :func:`compute_features`.

    Attributes:
        records: id -> record (see :func:`compute_sample`) for every sample computed, now or before.
        errors: records of the samples that failed in this run.
        computed: samples computed in this run.
        reused: samples found in the store.
        seconds: wall time of this run.
    """

    records: dict
    errors: list
    computed: int
    reused: int
    seconds: float

    def cohort(self) -> dict[str, dict[int, dict]]:
        """``{id: organ_features result}`` with int labels, sorted by id."""
        return {sample_id: {int(label): values for label, values in self.records[sample_id]["features"].items()}
                for sample_id in sorted(self.records)}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="sample", disable=not enabled, dynamic_ncols=True,
                desc="SOLF features", smoothing=0.1, file=sys.stderr)


def compute_features(samples: Sequence[Sample], out_dir: str | os.PathLike, *, engine: str = "local",
                     workers: int | None = None, address: str | None = None, body: str = "auto",
                     labels: Sequence[int] | None = None, progress: bool = True,
                     on_record: Callable[[dict], None] | None = None, scheme: str | None = None,
                     checks: str = "all") -> CohortFeatures:
    """Features of every sample, resuming from ``out_dir/features.jsonl``.

    Args:
        samples: the cohort (see :func:`find_samples`).
        out_dir: folder of the results store (created).
        engine: a key of :data:`ENGINES` ("local" process pool, "ray").
        workers: local processes (default all cores; 1 computes in this process) or, for Ray, tasks
            in flight per CPU budget (default 4 per cluster CPU).
        address: Ray cluster address (``ray.init(address=...)``); None starts a local Ray.
        body: one of :data:`BODY_SOURCES`; "auto" uses a body-mask file when the sample has one,
            else the non-zero labels.
        labels: label values to keep (default all).
        progress: show a progress bar with rate and ETA (stderr).
        on_record: called in the driver after each record is stored (tests inject failures here).
        scheme: the label maps' scheme, naming the left/right pairs of the partner check (None:
            no partner check). Part of the store's settings, like ``body`` and ``labels``.
        checks: which per-structure checks to compute (:data:`CHECK_SETS`; also a store setting).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine '{engine}' is not one of {sorted(ENGINES)}")
    if body not in BODY_SOURCES:
        raise ValueError(f"body source '{body}' is not one of {BODY_SOURCES}")
    if checks not in CHECK_SETS:
        raise ValueError(f"checks '{checks}' is not one of {CHECK_SETS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_run_config(out_dir, {"body": body, "labels": sorted(labels) if labels is not None else None,
                                "scheme": scheme, "checks": checks})
    store = ResultStore(out_dir / STORE_NAME)
    records = store.load()
    wanted = {s.id for s in samples}
    by_id = {s.id: s for s in samples}
    records = {i: r for i, r in records.items() if i in wanted and is_fresh(r, by_id[i])}
    todo = [s for s in samples if s.id not in records]
    workers = workers if workers is not None else (os.cpu_count() or 1) if engine == "local" else 0
    started, errors = time.perf_counter(), []
    with _progress(len(samples), len(records), progress) as bar:
        for record in ENGINES[engine](todo, body, labels, workers, address, scheme, checks):
            if "error" in record:
                errors.append(record)
                bar.write(f"skipped {record['labelmap']}: {record['error']}", file=sys.stderr)
            else:
                store.append(record)
                records[record["id"]] = record
            bar.update(1)
            if on_record is not None:
                on_record(record)
    return CohortFeatures(records, errors, len(todo) - len(errors), len(samples) - len(todo),
                          time.perf_counter() - started)
