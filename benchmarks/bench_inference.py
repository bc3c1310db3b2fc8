"""Benchmark: Swin-BOB inference vs MONAI's plain fp32 sliding window, and ETTA vs plain inference.

Each mode runs in its own process so peak memory is measured cleanly:

* ``plain``: MONAI ``sliding_window_inference`` in fp32 with the model as predictor (logits
  accumulated on the device), then the argmax: the baseline the issue asks for.
* ``swinbob``: :func:`SwinBOBLib.inference.segment_image` end to end on the in-memory scan
  (preprocessing, bf16 autocast on GPU, probabilities, entropy, back onto the input grid).
* ``swinbob_lowmem``: the same on the low-memory path (probabilities on the CPU in float16).
* ``etta``: ``segment_image`` with ETTA at its default settings (first whole-scan pass, adaptation,
  second whole-scan pass = the segmentation).

Each row gives wall seconds and CPU seconds (all threads); on a shared machine compare the CPU
seconds, or wall times of runs made back to back.

Same model, ROI, overlap, sw-batch size and Gaussian blending everywhere. Random weights: speed
and memory do not depend on training. GPU defaults follow the paper (48 features, 96^3 windows)
on a UK Biobank-size scan (224x160x501); CPU defaults use a small model on a small scan.

    python benchmarks/bench_inference.py                       # picks the GPU when there is one
    python benchmarks/bench_inference.py --device cpu --json docs/bench_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("plain", "swinbob", "swinbob_lowmem", "etta")


def _defaults(device: str) -> dict:
    if device.startswith("cuda"):
        return {"feature_size": 48, "shape": "224x160x501", "roi": 96}
    return {"feature_size": 12, "shape": "96x80x96", "roi": 64}


def _synthetic_scan(shape):
    """A body-like volume in air (float32, (X, Y, Z)) with a 2.23 x 2.23 x 3 mm RAS affine."""
    import numpy as np

    from SwinBOBLib import io

    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    body = ((x / 0.8) ** 2 + (y / 0.7) ** 2 < 1).astype(np.float32) * (300 + 100 * np.cos(6 * z))
    array = body + rng.normal(0, 10, shape).astype(np.float32)
    return io.Image(array.astype(np.float32), np.diag([2.23, 2.23, 3.0, 1.0]))


def _peak_memory_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kB -> GB (process RSS)


def _current_rss_gb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return float("nan")


def run_child(args) -> dict:
    """One mode in this process; returns its figures."""
    import torch
    from monai.inferers import sliding_window_inference

    from SwinBOBLib import inference
    from SwinBOBLib.inference.etta import EttaConfig
    from SwinBOBLib.models.metadata import CheckpointMetadata
    from SwinBOBLib.models.networks import build_model

    torch.manual_seed(0)
    device = inference.select_device(args.device)
    shape = tuple(int(v) for v in args.shape.split("x"))
    image = _synthetic_scan(shape)
    model = build_model(args.feature_size).to(device).eval()
    meta = CheckpointMetadata(feature_size=args.feature_size, roi_size=args.roi)
    roi = (args.roi,) * 3
    with torch.inference_mode():  # warm-up: lazy initialisation, cuDNN autotuning
        model(torch.zeros(1, 1, *roi, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated(device) / 1e9 if device.type == "cuda" else _current_rss_gb()
    start = time.perf_counter()
    cpu_start = time.process_time()  # CPU seconds of all threads: steadier than wall time on a shared machine
    extra = {}
    if args.child == "plain":
        tensor, _ = inference.preprocess(image, meta, inference.InferenceConfig())
        with torch.inference_mode():
            logits = sliding_window_inference(tensor.to(device), roi, args.sw_batch_size, model,
                                              overlap=args.overlap, mode="gaussian")
            logits.argmax(1).cpu()
    else:
        config = inference.InferenceConfig(device=str(device), roi_size=args.roi, overlap=args.overlap,
                                           sw_batch_size=args.sw_batch_size, etta=args.child == "etta",
                                           low_memory=True if args.child == "swinbob_lowmem" else None)
        etta_config = EttaConfig(sw_batch_size=args.sw_batch_size, patch_scale=args.etta_patch_scale)
        result = inference.segment_image(image, model, meta, config, etta_config)
        extra = {k: result.stats.get(k) for k in ("low_memory", "oom_fallback", "windows", "amp")}
        if "etta" in result.stats:
            stats = result.stats["etta"]
            extra.update(etta_s=stats["time_s"], etta_adaptation_s=stats.get("adaptation_s"),
                         entropy_before=stats["entropy_before"], entropy_after=stats["entropy_after"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    peak = _peak_memory_gb(device)
    return {"mode": args.child, "time_s": elapsed, "cpu_s": cpu, "peak_memory_gb": peak, "added_memory_gb": peak - baseline,
            "memory_kind": "GPU allocated" if device.type == "cuda" else "process RSS", **extra}


def _machine(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--feature-size", type=int)
    parser.add_argument("--shape", help="XxYxZ of the synthetic scan")
    parser.add_argument("--roi", type=int)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--sw-batch-size", type=int, default=2)
    parser.add_argument("--etta-patch-scale", type=float, default=0.5, help="ETTA adaptation patch edge over the "
                        "window's (default 0.5, as segment)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for key, value in _defaults(args.device).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    rows = []
    for mode in args.modes.split(","):
        command = [sys.executable, __file__, "--child", mode, "--device", args.device, "--feature-size",
                   str(args.feature_size), "--shape", args.shape, "--roi", str(args.roi), "--overlap",
                   str(args.overlap), "--sw-batch-size", str(args.sw_batch_size),
                   "--etta-patch-scale", str(args.etta_patch_scale)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            rows.append({"mode": mode, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    summary = _summarise(rows)
    figures = {"machine": _machine(args.device), "device": args.device, "feature_size": args.feature_size,
               "shape": args.shape, "roi": args.roi, "overlap": args.overlap, "sw_batch_size": args.sw_batch_size,
               "etta_patch_scale": args.etta_patch_scale,
               "rows": rows, **summary}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def _summarise(rows) -> dict:
    times = {r["mode"]: r["time_s"] for r in rows if "time_s" in r}
    out = {}
    if "plain" in times and "swinbob" in times:
        out["speedup_vs_plain_fp32"] = times["plain"] / times["swinbob"]
    if "swinbob" in times and "etta" in times:
        out["etta_over_inference"] = times["etta"] / times["swinbob"]
    cpu = {r["mode"]: r["cpu_s"] for r in rows if "cpu_s" in r}
    if "swinbob" in cpu and "etta" in cpu:
        out["etta_over_inference_cpu_time"] = cpu["etta"] / cpu["swinbob"]
    if "plain" in times and "etta" in times:
        out["etta_over_plain_fp32"] = times["etta"] / times["plain"]
    return out


if __name__ == "__main__":
    sys.exit(main())
