"""Launching ``swinbob train`` and ``swinbob benchmark`` from Slicer as background processes.

The job runs in a child Python (``python -m SwinBOBLib train|benchmark ... --progress-json -``), so
Slicer stays responsive and a crash of the job cannot take Slicer down. Its JSON-lines events feed
a progress bar and a log:

* train: ``start``, ``step`` (``global_step``, ``total_steps``, ``loss``, ``eta_s``), ``validation``
  (``dice``), ``checkpoint`` (``path``), then ``done`` / ``stopped`` / ``error``.
* benchmark: ``start`` (``cases``), ``progress`` (``done``, ``total``, ``case``, ``mode``), then
  ``done`` / ``stopped``.

Stop asks for a clean stop (the job's stop file, and SIGTERM on POSIX, to the launcher and the
Python it starts, see :mod:`.jobs`): training finishes its step, writes ``checkpoints/last.pt`` and
exits with 130; the job then reads as :data:`~.jobs.CANCELLED`. Whatever is left of the process tree
after the grace period is killed. :func:`jobResults` names what a finished job left
(best/last checkpoint, ``summary.md``) for the panel's "load" links. No Qt here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import jobs

TRAIN, BENCHMARK = "train", "benchmark"
#: Seconds Stop waits for a clean exit (the step in flight, then last.pt) before killing the job.
STOP_GRACE_S = 120.0


@dataclass
class TrainingOptions:
    """What the panel's training form sets; ``None`` keeps ``swinbob train``'s default."""

    dataset: str
    outdir: str
    initCheckpoint: str = ""  # fine-tune from this checkpoint
    config: str = ""  # YAML/JSON file of TrainConfig options (``swinbob train --config``); flags override it
    epochs: int | None = None
    maxSteps: int | None = None
    device: str = "auto"
    extra: Sequence[str] = ()  # any other ``swinbob train`` flags


@dataclass
class BenchmarkOptions:
    dataset: str
    checkpoint: str
    outdir: str
    modes: str = "plain"  # comma-separated: plain, tta, etta, tta+etta
    device: str = "auto"
    limit: int | None = None
    extra: Sequence[str] = ()


def _require(path: str, what: str) -> None:
    if not path or not Path(path).exists():
        raise ValueError(f"{what} not found: {path!r}")


def trainCommand(options: TrainingOptions, python: str | None = None) -> list[str]:
    """``python -m SwinBOBLib train --dataset D -o RUNDIR ... --progress-json -``.

    Raises:
        ValueError: dataset or starting checkpoint missing, no run folder, epochs/steps < 1.
    """
    _require(options.dataset, "dataset")
    if not options.outdir:
        raise ValueError("choose a run folder for the training")
    command = [python or jobs.pythonExecutable(), "-m", "SwinBOBLib", "train", "--dataset", str(options.dataset),
               "-o", str(options.outdir), "--device", options.device or "auto"]
    if options.initCheckpoint:
        _require(options.initCheckpoint, "starting checkpoint")
        command += ["--init-checkpoint", str(options.initCheckpoint)]
    if options.config:
        _require(options.config, "training config file")
        command += ["--config", str(options.config)]
    for flag, value in (("--epochs", options.epochs), ("--max-steps", options.maxSteps)):
        if value is not None:
            if int(value) < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
            command += [flag, str(int(value))]
    return command + [*map(str, options.extra), "--progress-json", "-", "--no-progress"]


def benchmarkCommand(options: BenchmarkOptions, python: str | None = None) -> list[str]:
    """``python -m SwinBOBLib benchmark --dataset D --checkpoint C -o OUT ... --progress-json -``."""
    _require(options.dataset, "dataset")
    _require(options.checkpoint, "checkpoint")
    if not options.outdir:
        raise ValueError("choose an output folder for the benchmark")
    command = [python or jobs.pythonExecutable(), "-m", "SwinBOBLib", "benchmark", "--dataset", str(options.dataset),
               "--checkpoint", str(options.checkpoint), "-o", str(options.outdir), "--modes", options.modes,
               "--device", options.device or "auto"]
    if options.limit:
        command += ["--limit", str(int(options.limit))]
    return command + [*map(str, options.extra), "--progress-json", "-"]


class LibraryJob(jobs.BackgroundJob):
    """A train or benchmark child process; :attr:`status` follows its events, :attr:`logLines`
    holds a readable line per event for the panel's log."""

    def __init__(self, kind: str, command, outdir, **kwargs):
        if kind not in (TRAIN, BENCHMARK):
            raise ValueError(f"kind must be '{TRAIN}' or '{BENCHMARK}', got {kind!r}")
        self.kind, self.outdir = kind, Path(outdir)
        self.logLines: list[str] = []
        super().__init__(command, **kwargs)
        self.cancelGrace = STOP_GRACE_S

    def _apply(self, event: dict) -> None:
        status, kind = self.status, event["event"]
        if kind == "step":
            status.stage = "training"
            status.done, status.total = int(event.get("global_step", 0)), int(event.get("total_steps", 0))
            self.logLines.append(f"step {status.done}/{status.total}  loss {event.get('loss')}  "
                                 f"eta {event.get('eta_s')} s")
        elif kind == "progress":
            status.stage = "benchmark"
            status.done, status.total = int(event.get("done", 0)), int(event.get("total", 0))
            self.logLines.append(f"case {event.get('case')} ({event.get('mode')}) {status.done}/{status.total}")
        elif kind in ("validation", "checkpoint", "start", "done", "stopped"):
            self.logLines.append(kind + "  " + ", ".join(f"{k}={v}" for k, v in event.items()
                                                         if k != "event" and not isinstance(v, (dict, list))))
        elif kind == "error":
            status.message = str(event.get("message", "error"))
            self.logLines.append(f"error  {status.message}")

    def _finish(self) -> None:
        stopped = any(e["event"] == "stopped" for e in self.events)
        if stopped and self.returncode == 130:
            self._cancelled = True  # stopped cleanly, by Stop or by a signal from outside
        super()._finish()

    def stop(self, grace: float | None = None) -> jobs.JobStatus:
        """Stop cleanly and wait (SIGTERM, then kill after ``grace`` seconds)."""
        return self.cancel(grace if grace is not None else self.cancelGrace)

    def results(self) -> dict:
        return jobResults(self.kind, self.outdir)


def jobResults(kind: str, outdir) -> dict:
    """What a job left in ``outdir``: train -> ``best_checkpoint``/``last_checkpoint`` (``.pt``),
    benchmark -> ``summary_md``/``summary_json``; only files that exist."""
    outdir = Path(outdir)
    names = ({"best_checkpoint": "checkpoints/best.pt", "last_checkpoint": "checkpoints/last.pt",
              "summary_json": "summary.json"} if kind == TRAIN else
             {"summary_md": "summary.md", "summary_json": "summary.json", "per_class_csv": "per_class.csv"})
    return {key: str(outdir / name) for key, name in names.items() if (outdir / name).exists()}


def plannedTraining(options: TrainingOptions) -> str:
    """What the training will run, for the panel: epochs and step limit, each with where it comes
    from (the form, the config file, or ``swinbob train``'s default).

    Raises:
        ValueError: the config file cannot be read.
    """
    from SwinBOBLib.training import TrainConfig, load_config_file

    fromFile = load_config_file(options.config) if options.config else {}
    parts = []
    for key, value, default in (("epochs", options.epochs, TrainConfig.epochs),
                                ("max_steps", options.maxSteps, TrainConfig.max_steps)):
        if value is not None:
            chosen, source = value, "this form"
        elif fromFile.get(key) is not None:
            chosen, source = fromFile[key], Path(options.config).name
        else:
            chosen, source = default, "swinbob train's default"
        if chosen is not None:
            parts.append(f"{chosen} {'epochs' if key == 'epochs' else 'steps at most'} ({source})")
    return "Will run " + ", ".join(parts) if parts else ""


def startTraining(options: TrainingOptions, python: str | None = None, **kwargs) -> LibraryJob:
    """Start ``swinbob train`` in the background; poll, wait or stop the returned job."""
    Path(options.outdir).mkdir(parents=True, exist_ok=True)
    return LibraryJob(TRAIN, trainCommand(options, python), options.outdir, env=jobs.libraryEnvironment(), **kwargs)


def startBenchmark(options: BenchmarkOptions, python: str | None = None, **kwargs) -> LibraryJob:
    """Start ``swinbob benchmark`` in the background."""
    Path(options.outdir).mkdir(parents=True, exist_ok=True)
    return LibraryJob(BENCHMARK, benchmarkCommand(options, python), options.outdir,
                      env=jobs.libraryEnvironment(), **kwargs)
