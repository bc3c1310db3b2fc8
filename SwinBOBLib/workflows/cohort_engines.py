"""Where a cohort's scans are segmented: a local pool of worker processes (the default: nothing to
start) or a Ray Data actor pool (a cluster, or a local Ray). Each engine loads the model once per
worker and yields one record per scan (see :meth:`~.cohort_scan.ScanWorker.segment`) in completion
order; the driver alone writes the journal.

A worker that dies (killed, out of memory, a crash in a native library) is replaced and the scan
it held is tried once more; a scan whose worker dies a second time comes back failed.
"""

from __future__ import annotations

import json
import logging
import os
import queue as queues
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from SwinBOBLib.runtime.stop import exit_with_parent
from SwinBOBLib.workflows.cohort_scan import ScanSettings, ScanWorker, failed_record

#: Why a scan failed when its worker died on it on both tries.
WORKER_DIED = ("its worker died on it twice (killed, out of memory, or a crash in a native library); "
               "it was retried once on a new worker")


def _worker_main(index: int, settings: ScanSettings, device: str | None, tasks, results, parent: int) -> None:
    """A local worker process: load the model once, then segment each task until told to stop."""
    exit_with_parent(parent)
    try:
        worker = ScanWorker(settings, device)
    except Exception as error:  # noqa: BLE001 - a model that loaded in the driver should load here; say so if not
        results.put((index, None, {"load_error": f"{type(error).__name__}: {error}"}))
        return
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put((index, task["id"], worker.segment(task)))


def worker_device(device: str, index: int) -> str | None:
    """Local worker ``index``'s device: with ``cuda`` (or ``auto``) and several GPUs, one each in turn."""
    if device not in ("auto", "cuda"):
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{index % count}" if count > 1 else None


class _LocalPool:
    """Worker processes (spawned: fork is unsafe with torch threads), one task each at a time, so the
    driver knows which scan a dead worker held."""

    def __init__(self, settings: ScanSettings, workers: int):
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.settings, self.results = settings, self.context.Queue()
        self.processes, self.inboxes, self.current = {}, {}, {}
        for index in range(workers):
            self.start(index)

    def start(self, index: int) -> None:
        inbox = self.context.Queue()
        device = worker_device(self.settings.config.device, index)
        process = self.context.Process(target=_worker_main, daemon=True, name=f"swinbob-cohort-{index}",
                                       args=(index, self.settings, device, inbox, self.results, os.getpid()))
        process.start()
        self.processes[index], self.inboxes[index] = process, inbox

    def assign(self, pending: deque) -> None:
        for index in self.processes:
            if index not in self.current and pending:
                self.current[index] = pending.popleft()
                self.inboxes[index].put(self.current[index])

    def dead(self) -> list[int]:
        return [i for i, p in self.processes.items() if not p.is_alive()]

    def close(self) -> None:
        for index, process in self.processes.items():
            if process.is_alive():
                self.inboxes[index].put(None)
        for process in self.processes.values():
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def _replace_dead(pool: _LocalPool, pending: deque, attempts: dict) -> Iterator[dict]:
    """Restart dead workers; the scan each held goes back to the front of the queue, or fails on
    its second death."""
    for index in pool.dead():
        task = pool.current.pop(index, None)
        pool.start(index)
        if task is None:
            continue
        attempts[task["id"]] = attempts.get(task["id"], 1) + 1
        if attempts[task["id"]] > 2:
            yield failed_record(task, WORKER_DIED)
        else:
            pending.appendleft({**task, "attempt": attempts[task["id"]]})


def local_records(tasks: Sequence[dict], settings: ScanSettings, workers: int, **_) -> Iterator[dict]:
    """Records of ``tasks`` from ``workers`` local processes, in completion order."""
    if not tasks:
        return
    pool = _LocalPool(settings, min(workers, len(tasks)))
    pending, attempts = deque(tasks), {}
    try:
        while pending or pool.current:
            pool.assign(pending)
            try:
                index, case, record = pool.results.get(timeout=0.5)
            except queues.Empty:
                yield from _replace_dead(pool, pending, attempts)
                continue
            if case is None:
                raise RuntimeError(f"a cohort worker could not load the model: {record['load_error']}")
            if pool.current.get(index, {}).get("id") == case:
                del pool.current[index]
                pool.assign(pending)  # its next scan first: the driver's journal (an fsync) is no worker's wait
                yield record
    finally:
        pool.close()


def init_ray(address: str | None) -> None:
    """Join ``address`` (None: start a local Ray) unless Ray is already initialised."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)


#: Most scans one Ray task segments (see :func:`scans_per_task`).
MAX_SCANS_PER_TASK = 8


def scans_per_task(scans: int, workers: int) -> int:
    """Scans per Ray task: enough that the driver's work per task (its streaming executor shares the
    workers' CPUs; with half-second scans on two cores it took a tenth of them) is spread over
    several scans, few enough that each worker still gets eight tasks or more, so all stay busy to
    the end. 1 for a cohort of fewer than 16 scans per worker."""
    return max(1, min(MAX_SCANS_PER_TASK, scans // (max(1, workers) * 8)))


def ray_records(tasks: Sequence[dict], settings: ScanSettings, workers: int, address: str | None = None,
                gpus_per_worker: float = 0.0, per_task: int | None = None, **_) -> Iterator[dict]:
    """Records of ``tasks`` from a Ray Data actor pool of ``workers`` actors (``ScanWorker``, the
    model loaded once per actor), ``per_task`` scans per task (None: :func:`scans_per_task`).

    Actors ask for ``gpus_per_worker`` GPUs (0: CPU actors with ``settings.threads`` CPUs each).
    Ray restarts a dead actor and retries its task once (``max_task_retries=1``). The scans of a
    task that still failed are segmented again one per task, so a scan that kills its worker fails
    alone, not with the scans it was sent with; one that fails on its own task is returned failed.
    Joins ``address`` (or starts a local Ray) unless Ray is already initialised.
    """
    if not tasks:
        return
    try:
        import ray.data  # noqa: F401  (checked here: a clear message before any work)
    except ImportError as error:
        raise ImportError(f"--engine ray needs Ray Data ({error}); install it with "
                          "pip install 'swinbob[distributed]' (ray[data])") from None
    init_ray(address)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our bar and events report progress
    per_task = per_task or scans_per_task(len(tasks), workers)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates its own context options and max_task_retries as a keyword, with no
        # replacement for the latter yet: not the user's to act on.
        warnings.filterwarnings("ignore", message=".*deprecated", category=DeprecationWarning)
        returned = set()
        for record in _ray_pool_records(tasks, settings, workers, gpus_per_worker, per_task):
            returned.add(record["id"])
            yield record
        missing = [task for task in tasks if task["id"] not in returned]
        if missing and per_task > 1:  # the tasks that failed, a scan per task: only the culprit fails
            for record in _ray_pool_records(missing, settings, workers, gpus_per_worker, 1):
                returned.add(record["id"])
                yield record
    for task in tasks:
        if task["id"] not in returned:
            yield failed_record({**task, "attempt": 2}, WORKER_DIED)


def _ray_pool_records(tasks: Sequence[dict], settings: ScanSettings, workers: int,
                      gpus_per_worker: float, per_task: int) -> Iterator[dict]:
    """The records of one pass of a Ray Data actor pool over ``tasks``, ``per_task`` scans a block
    (and a task); a block whose task failed twice returns nothing."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = -1  # a scan whose worker died twice is one failed block, not a failed run
    context.enable_progress_bars = False
    resources = {"num_gpus": gpus_per_worker} if gpus_per_worker else {"num_cpus": settings.threads or 1}
    blocks = -(-len(tasks) // per_task)
    dataset = ray.data.from_items([{"task": json.dumps(t)} for t in tasks], override_num_blocks=blocks)
    dataset = dataset.map_batches(
        ScanWorker, fn_constructor_args=(settings,), batch_size=per_task, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, blocks), max_tasks_in_flight_per_actor=2),
        max_task_retries=1, **resources)
    for row in dataset.iter_rows():
        yield json.loads(str(row["record"]))


#: Engine name -> generator of records. Adding an engine is one entry.
ENGINES: dict[str, Callable[..., Iterator[dict]]] = {"local": local_records, "ray": ray_records}
