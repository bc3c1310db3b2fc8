"""Benchmark of ``swinbob cohort run``: prints figures, times nothing as a test.

1. Steady-state throughput with 1 and 2 workers (local process pool and Ray Data), the model loaded
   once per worker (the load count is printed): copies of the real MR sample, the bundled demo model.
2. Per-scan time by stage (read, preprocess, model, entropy, features, write) for the bundled model
   on the MR sample, and the share outside the model.
3. A projection to UK Biobank scale (51,761 scans of 224 x 168 x 363 voxels, 4 contrasts) for 1, 8
   and 64 GPUs: the CPU stages measured here on one synthetic scan of that size, the model's GPU
   time and the storage bandwidth given (``--gpu-model-s``, ``--io-gb-per-s``: not measured where
   no GPU is lent), and what bounds each.

    python benchmarks/bench_cohort.py                   # all three (about 6 minutes on 2 cores)
    python benchmarks/bench_cohort.py --skip-ray --skip-ukb --scans 6
    python benchmarks/bench_cohort.py --json bench_cohort.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from SwinBOBLib import io
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.phantom import make_phantom
from SwinBOBLib.workflows.cohort import CohortConfig, run_cohort
from SwinBOBLib.workflows.cohort_scan import ScanSettings

REPO = Path(__file__).resolve().parents[1]
MR_SAMPLE = REPO / "Testing" / "Data" / "totalsegmentator-samples" / "example_mr_sm.nii.gz"
UKB_SCANS = 51_761
UKB_SHAPE = (224, 168, 363)


def copies_of(sample: Path, n: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shutil.copy2(sample, folder / f"mr_{i:03d}.nii.gz")
    return folder


def timed_run(inputs: Path, out: Path, engine: str, workers: int, threads: int) -> dict:
    """One cohort run; the steady-state rate leaves out each worker's first records (:func:`steady_rate`)."""
    stamps = []
    scan = ScanSettings(config=InferenceConfig(device="cpu"), threads=threads)
    config = CohortConfig(str(inputs), str(out), engine=engine, workers=workers, scan=scan, progress=False)
    started = time.perf_counter()
    result = run_cohort(config, on_record=lambda record: stamps.append((record.get("finished", time.time()),
                                                                           record.get("worker"))))
    wall = time.perf_counter() - started
    n = len(stamps)
    return {"engine": engine, "workers": workers, "threads_per_worker": threads, "scans": n, "wall_s": round(wall, 1),
            "steady_scans_per_hour": round(steady_rate(stamps), 1),
            "model_loads": result.report["throughput"]["model_loads"],
            "stages": result.report["stages"], "failed": len(result.failed)}


def steady_rate(stamps: list[tuple[float, str]]) -> float:
    """Scans per hour once every worker has finished its first scan (start-up, model load): the scans
    finished after the last worker's first one, over the time from then to the last, by the times
    the workers record (``finished``), not when the driver receives them: a Ray call of several
    scans returns them together, and Ray Data hands a call's records on some time after it ends."""
    firsts = {}
    for stamp, worker in stamps:
        firsts[worker] = min(stamp, firsts.get(worker, stamp))
    start = max(firsts.values(), default=0.0)
    after = sorted(stamp for stamp, _ in stamps if stamp > start)
    return len(after) / (after[-1] - start) * 3600 if after else float("nan")


def throughput(work: Path, scans: int, engines: list[str]) -> list[dict]:
    inputs = copies_of(MR_SAMPLE, scans, work / "mr")
    rows = []
    for engine in engines:
        if engine == "ray":
            import ray

            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        for workers in (1, 2):
            rows.append(timed_run(inputs, work / f"{engine}_{workers}", engine, workers, threads=1))
            print(f"{engine:5s} {workers} worker(s) x 1 thread: {rows[-1]['steady_scans_per_hour']:8.1f} scans/h "
                  f"steady, {rows[-1]['wall_s']:6.1f} s wall for {scans} scans, "
                  f"{rows[-1]['model_loads']} model loads", flush=True)
        if engine == "ray":
            ray.shutdown()
    return rows


def stage_table(stages: dict) -> float:
    """Print the stages; returns the share of the per-scan time outside the model."""
    for stage, values in stages.items():
        print(f"  {stage:10s} mean {values['mean_s']:7.3f} s  share {values['share']:6.1%}")
    return 1.0 - stages["model"]["share"]


def ukb_stages(work: Path) -> tuple[dict, int]:
    """Stage costs of one synthetic scan of UK Biobank size (4 Dixon channels), demo model, 1 worker."""
    phantom = make_phantom(UKB_SHAPE, seed=1)
    folder = work / "ukb"
    folder.mkdir()
    io.save_image(phantom.as_image(), folder / "ukb_0000.nii.gz", dtype=np.float32)
    size = (folder / "ukb_0000.nii.gz").stat().st_size
    run = timed_run(folder, work / "ukb_out", "local", 1, threads=os.cpu_count() or 1)
    return run["stages"], size


def projection(stages: dict, compressed_bytes: int, gpu_model_s: float, io_gb_per_s: float,
               workers_per_gpu: int) -> list[dict]:
    """Hours for the UK Biobank cohort on 1, 8 and 64 GPUs and what bounds it.

    Each worker runs its scans' stages one after the other (read ... write; the CPU stages as
    measured here with this machine's cores), ``workers_per_gpu`` workers share a GPU (Ray
    ``--gpus-per-worker 1/k``, or more local workers than GPUs), so one's CPU stages overlap
    another's model; the GPU itself runs one model pass at a time; every scan is read once from
    shared storage. The slowest of the three is the bound.
    """
    cpu_s = sum(v["mean_s"] for k, v in stages.items() if k != "model")
    rows = []
    for gpus in (1, 8, 64):
        bounds = {"GPU (model)": UKB_SCANS * gpu_model_s / gpus,
                  "workers (CPU stages + model)": UKB_SCANS * (gpu_model_s + cpu_s) / (gpus * workers_per_gpu),
                  "storage read": UKB_SCANS * compressed_bytes / (io_gb_per_s * 1e9)}
        limit = max(bounds, key=bounds.get)
        rows.append({"gpus": gpus, "hours": round(bounds[limit] / 3600, 1), "bound": limit,
                     **{f"{k} h": round(v / 3600, 2) for k, v in bounds.items()}})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=10, help="MR sample copies per throughput run")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-ukb", action="store_true", help="no UK Biobank-size scan (the projection too)")
    parser.add_argument("--gpu-model-s", type=float, default=5.0, help="model seconds per UKB scan on one GPU "
                        "(assumed: 84 windows of 96^3 at overlap 0.5 x ~60 ms in bf16; measure with "
                        "bench_inference.py --device cuda)")
    parser.add_argument("--io-gb-per-s", type=float, default=1.0, help="shared storage read bandwidth (assumed)")
    parser.add_argument("--workers-per-gpu", type=int, default=2, help="workers sharing one GPU, each with "
                        "as many cores as this machine has")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.node()}; load average "
          f"{os.getloadavg()[0]:.2f} at start (other work on the machine slows every figure)")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as folder:
        work = Path(folder)
        rows = throughput(work, args.scans, ["local"] + ([] if args.skip_ray else ["ray"]))
        for engine in {r["engine"] for r in rows}:
            one, two = (next(r for r in rows if r["engine"] == engine and r["workers"] == w) for w in (1, 2))
            ratio = two["steady_scans_per_hour"] / one["steady_scans_per_hour"]
            print(f"{engine}: 2 workers / 1 worker = {ratio:.2f}x (target >= 1.8x)")
        print("per-scan stages, bundled demo model on the MR sample (local, 1 worker):")
        figures["outside_model_share"] = round(stage_table(rows[0]["stages"]), 3)
        print(f"  outside the model: {figures['outside_model_share']:.1%} of the per-scan time (target <= 25 %)")
        figures["throughput"] = rows
        if not args.skip_ukb:
            stages, size = ukb_stages(work)
            print(f"one synthetic UK Biobank-size scan {UKB_SHAPE} x 4 contrasts ({size / 1e6:.0f} MB gzipped), "
                  f"demo model on this CPU:")
            stage_table(stages)
            table = projection(stages, size, args.gpu_model_s, args.io_gb_per_s, args.workers_per_gpu)
            print(f"projection, {UKB_SCANS} scans, model {args.gpu_model_s} s/scan/GPU (assumed), storage "
                  f"{args.io_gb_per_s} GB/s (assumed), {args.workers_per_gpu} workers per GPU:")
            for row in table:
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
            cpu_s = sum(v["mean_s"] for k, v in stages.items() if k != "model")
            print(f"  the GPU becomes the bound with {int(np.ceil((args.gpu_model_s + cpu_s) / args.gpu_model_s))} "
                  f"workers per GPU, each with this machine's {os.cpu_count()} cores ({cpu_s:.1f} s of CPU stages "
                  f"per scan against {args.gpu_model_s} s of model)")
            figures.update(ukb_stages=stages, ukb_gzipped_bytes=size, projection=table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
