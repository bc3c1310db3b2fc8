"""One scan of a cohort run, as a worker does it: the model loaded once per worker, then for each
scan the files ``swinbob segment`` writes (:func:`~SwinBOBLib.workflows.segment.segment_file`) and
the scan's SOLF features and checks (:func:`~SwinBOBLib.solf.cohort.compute_sample`), returned as a
plain record for the driver's journal. A worker never raises for a bad scan: the reason comes back
in the record, so one unreadable file never stops a cohort.

The same :class:`ScanWorker` serves both engines: the local process pool calls
:meth:`ScanWorker.segment`, Ray Data calls the instance on a batch (a callable class, so each
actor loads the model once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from SwinBOBLib import io
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.outputs.folders import output_suffix
from SwinBOBLib.solf.cohort import Sample, compute_sample
from SwinBOBLib.workflows.segment import load_model_for_cli, segment_file


@dataclass(frozen=True)
class ScanSettings:
    """What every worker needs to segment scans the same way (picklable, sent once per worker)."""

    checkpoint: str | None = None       # None: the bundled demo model
    config: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    etta_config: EttaConfig = dataclasses.field(default_factory=EttaConfig)
    preview: bool = True                # preview.png in each scan's folder, as `segment` writes
    threads: int | None = None          # torch CPU threads per worker (None: torch's default)
    scheme: str = "ukbob"               # label scheme of the SOLF names and left/right pairs
    checks: str = "labels"              # SOLF checks per scan (solf.cohort.CHECK_SETS): the image checks
    #                                     ("all") cost about as much as the model of the demo model does


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (a DICOM series: relative names and bytes,
    in sorted order), so a scan is known by its content wherever it lies."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for item in files:
        if item is not path:
            digest.update(str(item.relative_to(path)).encode("utf-8") + b"\0")
        with open(item, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str | os.PathLike) -> str:
    """Resolved path, size and modification time of a scan (of each file of a folder): while it is
    unchanged, the content digest recorded for it is reused instead of reading the scan again."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = [f"{p}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32] if parts else ""


def labels_path(outdir: str | os.PathLike, image: str | os.PathLike) -> Path:
    """Where ``segment`` writes the label map of ``image`` in ``outdir``."""
    return Path(outdir) / f"labels{output_suffix(Path(image))}"


class ScanWorker:
    """Holds the model of one worker (loaded once) and segments scans with it.

    Args:
        settings: :class:`ScanSettings`, the same for every worker of a run.
        device: overrides ``settings.config.device`` (a local worker's own GPU, ``cuda:1``).
    """

    def __init__(self, settings: ScanSettings, device: str | None = None):
        import torch

        if settings.threads:
            torch.set_num_threads(settings.threads)
        config = dataclasses.replace(settings.config, progress=False, device=device or settings.config.device)
        self.settings = dataclasses.replace(settings, config=config)
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        self.model, self.metadata, self.info = load_model_for_cli(settings.checkpoint, config.roi_size)
        self.load_s = time.perf_counter() - started
        self.worker = f"{platform.node()}:{os.getpid()}"
        self.shown: set = set()  # warnings printed once per worker, every report lists them

    def segment(self, task: dict) -> dict:
        """Segment one scan into ``task["outdir"]`` and measure it; never raises.

        Args:
            task: ``{"id", "image", "outdir", "attempt"}`` (paths as strings), and for a scan fetched
                from a PACS ``"input_record"`` (its source, for ``report.json``'s ``input``) and
                ``"series_uid"`` (the series, or the station a Dixon model's contrasts come from); with
                ``"features_only"`` (and the ``"input_sha256"`` recorded before) the scan's outputs
                stand and only its SOLF features and checks are measured again.

        Returns:
            A journal record: ``{"id", "status": "done" | "failed", "reason", "worker", "attempt",
            "input_sha256", "timings": {stage: seconds}, "features": {label: {...}}, "seconds",
            "finished" (Unix time), ...}``.
        """
        started = time.perf_counter()
        record = {"id": task["id"], "image": task["image"], "outdir": task["outdir"], "worker": self.worker,
                  "attempt": task.get("attempt", 1), "model_load_s": round(self.load_s, 4)}
        try:
            if task.get("features_only"):  # the segmentation holds: the files it wrote are measured again
                record.update(input_sha256=task["input_sha256"], features_only=True, timings={})
                report = json.loads((Path(task["outdir"]) / "report.json").read_text(encoding="utf-8"))
            else:
                record["input_sha256"] = file_digest(task["image"])
                hashed = time.perf_counter() - started
                kept: dict = {}
                report = self._segment_file(task, kept)
                record["timings"] = _stage_timings(report, hashed)
            features = self._features(task, kept if not task.get("features_only") else None)
            record["timings"]["features_s"] = round(features.pop("seconds"), 4)
            record.update(status="done", reason="", features=features["features"],
                          warnings=report.get("warnings", []) + features.get("warnings", []),
                          mean_entropy=report["entropy"]["mean"], shape=features["shape"],
                          spacing=features["spacing"])
        except Exception as error:  # noqa: BLE001 - one bad scan must not stop the cohort (MemoryError is an Exception)
            record.update(status="failed", reason=f"{type(error).__name__}: {error}".strip())
        record["seconds"] = round(time.perf_counter() - started, 4)
        record["finished"] = round(time.time(), 3)  # when, in Unix seconds: rates from the workers' own clocks
        return record

    def _segment_file(self, task: dict, keep: dict | None = None) -> dict:
        settings = self.settings
        return segment_file(Path(task["image"]), Path(task["outdir"]), self.model, self.metadata, settings.config,
                            settings.etta_config, self.info, settings.preview, shown_warnings=self.shown,
                            input_record=task.get("input_record"), series_uid=task.get("series_uid"), keep=keep)

    def _features(self, task: dict, kept: dict | None = None) -> dict:
        """SOLF features and checks of the written label map, with its entropy and image; with
        ``kept`` (what :func:`segment_file` just wrote) from the arrays in memory, not read back."""
        started = time.perf_counter()
        outdir = Path(task["outdir"])
        entropy = outdir / labels_path(outdir, task["image"]).name.replace("labels", "entropy", 1)
        sample = Sample(task["id"], str(labels_path(outdir, task["image"])), str(task["image"]), None,
                        str(entropy) if entropy.is_file() else None)
        record = compute_sample(sample, "auto", None, self.settings.scheme, self.settings.checks,
                                preloaded=written_arrays(kept, sample) if kept else None)
        if "error" in record:
            raise ValueError(f"SOLF features of {sample.labelmap}: {record['error']}")
        record["seconds"] = time.perf_counter() - started
        return record

    def __call__(self, batch: dict) -> dict:
        """Ray Data entry: a batch ``{"task": [JSON task, ...]}`` -> ``{"record": [JSON record, ...]}``."""
        return {"record": [json.dumps(self.segment(json.loads(str(task)))) for task in batch["task"]]}


def _is_nifti(path) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def written_arrays(kept: dict, sample: Sample) -> dict | None:
    """What :func:`compute_sample` would read back from the files :func:`segment_file` just wrote,
    from the arrays it kept (``keep``): bit for bit the same arrays, values, dtype and memory order
    (a NIfTI file reads in Fortran order), the affine from the written file's header (float32 in a
    NIfTI file, so this is what reading it gives). None (read the files) for outputs that are not
    NIfTI or that were not written where ``sample`` says; the image only for a NIfTI input, read
    as ``segment_file`` reads it."""
    outputs = {name: Path(path) for name, path in kept.get("outputs", {}).items()}
    if not (_is_nifti(sample.labelmap) and Path(sample.labelmap) == outputs.get("labels")):
        return None
    header = nib.load(sample.labelmap)  # the header only: the voxels are not read
    labels = io.Image(np.asfortranarray(io.as_label_array(kept["labels"], sample.labelmap)),
                      np.asarray(header.affine, dtype=np.float64), Path(sample.labelmap))
    arrays = {"labels": labels}
    if sample.entropy and _is_nifti(sample.entropy) and Path(sample.entropy) == outputs.get("entropy"):
        arrays["entropy"] = np.asfortranarray(np.asarray(kept["entropy"], dtype=np.float32))
    if sample.image and _is_nifti(sample.image) and kept.get("image") is not None:
        arrays["pixels"] = kept["image"].array
    return arrays


def _stage_timings(report: dict, hashed_s: float) -> dict:
    """Seconds per stage from a scan's report: read (hash + load), preprocess, model (ETTA and the
    sliding window), entropy (probabilities back onto the input grid, argmax, entropy), write."""
    t = report["timings"]
    stages = {"read_s": hashed_s + t.get("load_s", 0.0), "preprocess_s": t.get("preprocess_s", 0.0),
              "model_s": t.get("inference_s", 0.0) + t.get("etta_s", 0.0),
              "entropy_s": t.get("postprocess_s", 0.0), "write_s": t.get("write_s", 0.0)}
    return {k: round(float(v), 4) for k, v in stages.items()}


def failed_record(task: dict, reason: str) -> dict:
    """The record of a scan no worker returned (its worker died on it twice)."""
    return {"id": task["id"], "image": task["image"], "outdir": task["outdir"], "worker": "",
            "attempt": task.get("attempt", 1), "status": "failed", "reason": reason}
