"""Benchmarks of SOLF (a script that prints figures, not a test).

    python benchmarks/bench_solf.py [--samples 6] [--out /tmp/bench_solf] [--source phantom|synthetic]

1. organ_features vs a plain per-organ numpy implementation on a 224x160x501 UKBOB-grid label map
   with 72 labels (background + 71 structures) where every body voxel is labelled;
2. per-sample time split into load (read + decompress the NIfTI) and compute, on real-size maps;
3. the per-structure checks (``structure_checks``) on one phantom: label-only, and with the image
   checks and partner pairs (phantom source only);
4. cohort throughput with 1 and 2 local workers (process pool) and, if installed, Ray.

Label maps come from SwinBOBLib.phantom (``--source phantom``, default when importable) or from a
synthetic generator below (blocks of 71 labels inside an ellipsoid body).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from SwinBOBLib.solf import organ_features  # noqa: E402
from SwinBOBLib.solf.cohort import compute_features, find_samples  # noqa: E402

SHAPE = (224, 160, 501)
SPACING = (2.232143, 2.232143, 3.0)


def naive_features(labelmap, spacing=(1, 1, 1)):
    """The per-organ numpy reference: mask each label, count, diff for faces, covariance."""
    spacing = np.asarray(spacing, dtype=float)
    face_area = [spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]]
    body = np.count_nonzero(labelmap)
    result = {}
    for label in np.unique(labelmap):
        if label == 0:
            continue
        mask = labelmap == label
        count = int(np.count_nonzero(mask))
        padded = np.pad(mask, 1).view(np.int8)
        area = sum(np.count_nonzero(np.diff(padded, axis=a)) * face_area[a] for a in range(3))
        coords = np.argwhere(mask) * spacing
        cov = np.cov(coords.T, bias=True) if count > 1 else np.zeros((3, 3))
        eig = np.linalg.eigvalsh(cov)
        volume = count * float(np.prod(spacing))
        result[int(label)] = {
            "voxels": count, "volume_mm3": volume, "normalized_volume": count / body, "surface_mm2": area,
            "sphericity": math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area,
            "eccentricity": math.sqrt(max(0.0, 1 - max(eig[0], 0) / eig[2])) if eig[2] > 0 else 0.0}
    return result


def synthetic_labelmap(seed: int) -> np.ndarray:
    """Every voxel of an ellipsoid body labelled with one of 71 labels (blocky regions)."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice([i for i in range(1, 73) if i != 20], size=(8, 6, 14)).astype(np.uint8)
    reps = [math.ceil(s / c) for s, c in zip(SHAPE, coarse.shape)]
    labels = np.repeat(np.repeat(np.repeat(coarse, reps[0], 0), reps[1], 1), reps[2], 2)
    labels = labels[: SHAPE[0], : SHAPE[1], : SHAPE[2]].copy()
    x, y, z = (np.linspace(-1, 1, s).reshape([-1 if a == i else 1 for a in range(3)]) for i, s in enumerate(SHAPE))
    labels[x ** 2 + y ** 2 + z ** 2 > 1.0] = 0
    return labels


def phantom_labelmap(seed: int) -> np.ndarray:
    from SwinBOBLib.phantom import make_phantom

    return make_phantom("ukbob", seed=seed).labels


def make_labelmap(source: str, seed: int) -> np.ndarray:
    return phantom_labelmap(seed) if source == "phantom" else synthetic_labelmap(seed)


def bench_features(labels: np.ndarray, repeats: int = 5) -> dict:
    organ_features(labels[:8, :8, :8])  # compile (or load the cached kernel) outside the timing
    fast = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = organ_features(labels, SPACING)
        fast.append(time.perf_counter() - started)
    started = time.perf_counter()
    reference = naive_features(labels, SPACING)
    naive = time.perf_counter() - started
    worst = max(abs(result[c][k] - reference[c][k]) / max(abs(reference[c][k]), 1e-12)
                for c in reference for k in ("volume_mm3", "surface_mm2", "sphericity"))
    return {"labels": len(np.unique(labels)), "voxels": int(labels.size), "fast_s": min(fast),
            "fast_median_s": float(np.median(fast)), "naive_s": naive, "speedup": naive / min(fast),
            "max_relative_difference": worst, "voxels_per_s": labels.size / min(fast)}


def bench_checks(seed: int = 0, repeats: int = 3) -> dict:
    """``structure_checks`` on one UKBOB-size phantom: the label-only checks, then with the
    partner pairs and the Dixon image (the image checks), best of ``repeats``."""
    from SwinBOBLib.phantom import make_phantom
    from SwinBOBLib.solf.checks import image_disagreement, partner_labels, structure_checks

    phantom = make_phantom("ukbob", seed=seed)
    partners = partner_labels("ukbob")

    def best(call):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times)

    return {"labels_only_s": best(lambda: structure_checks(phantom.labels, phantom.affine)),
            "with_image_and_partners_s": best(lambda: structure_checks(phantom.labels, phantom.affine,
                                                                       image=phantom.image, partners=partners)),
            "image_disagreement_s": best(lambda: image_disagreement(phantom.labels, phantom.image))}


def write_cohort(folder: Path, source: str, n: int) -> Path:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    for seed in range(n):
        path = folder / f"case_{seed:04d}.nii.gz"
        if not path.exists():
            nib.save(nib.Nifti1Image(make_labelmap(source, seed), affine), path)
    return folder


def bench_load_compute(folder: Path) -> dict:
    from SwinBOBLib import io

    loads, computes = [], []
    for path in sorted(folder.glob("*.nii.gz")):
        started = time.perf_counter()
        image = io.load_labelmap(path, scheme=None)
        loaded = time.perf_counter()
        organ_features(image.array, image.spacing)
        computes.append(time.perf_counter() - loaded)
        loads.append(loaded - started)
    return {"samples": len(loads), "load_s": float(np.mean(loads)), "compute_s": float(np.mean(computes)),
            "file_mb": float(np.mean([p.stat().st_size for p in folder.glob("*.nii.gz")]) / 1e6)}


def scaling_list(folder: Path, repeat: int) -> Path:
    """A CSV listing every label map ``repeat`` times under distinct ids (a longer cohort from few
    files; the OS file cache serves the repeats, as it would on a node with local disks)."""
    path = folder.parent / f"cohort_x{repeat}.csv"
    files = sorted(folder.glob("*.nii.gz"))
    rows = [f"r{r}_{f.name[:-7]},{f}" for r in range(repeat) for f in files]
    path.write_text("id,labelmap\n" + "\n".join(rows) + "\n")
    return path


def bench_scaling(cohort: Path, work: Path, engines) -> dict:
    samples = find_samples(cohort)
    figures = {"samples": len(samples)}
    for engine, workers in engines:
        out = work / f"{engine}_{workers}"
        shutil.rmtree(out, ignore_errors=True)
        if engine == "ray":
            import ray

            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        first = []
        started = time.perf_counter()
        compute_features(samples, out, engine=engine, workers=workers, progress=False,
                         on_record=lambda r: first or first.append(time.perf_counter() - started))
        seconds = time.perf_counter() - started
        if engine == "ray":
            ray.shutdown()
        figures[f"{engine} x{workers}"] = {"seconds": seconds, "samples_per_s": len(samples) / seconds,
                                           "first_result_s": first[0],
                                           "steady_samples_per_s": (len(samples) - 1) / (seconds - first[0])}
    return figures


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6, help="label maps for load/compute and scaling")
    parser.add_argument("--out", default="/tmp/bench_solf", help="scratch folder")
    parser.add_argument("--source", choices=("phantom", "synthetic"), default=None)
    parser.add_argument("--repeat", type=int, default=6, help="times each map is listed for scaling")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args(argv)
    source = args.source
    if source is None:
        try:
            from SwinBOBLib.phantom import make_phantom  # noqa: F401
            source = "phantom"
        except ImportError:
            source = "synthetic"
    work = Path(args.out) / source
    figures = {"machine": machine(), "source": source}
    print(f"machine: {figures['machine']}\nlabel maps: {source}, {SHAPE}", flush=True)
    folder = write_cohort(work / "cohort", source, args.samples)
    from SwinBOBLib import io

    labels = io.load_labelmap(folder / "case_0000.nii.gz", scheme=None).array
    figures["features"] = bench_features(labels)
    print(json.dumps(figures["features"], indent=1), flush=True)
    figures["load_compute"] = bench_load_compute(folder)
    print(json.dumps(figures["load_compute"], indent=1), flush=True)
    if source == "phantom":
        figures["checks"] = bench_checks()
        print(json.dumps(figures["checks"], indent=1), flush=True)
    engines = [("local", 1), ("local", 2)] + ([] if args.no_ray else [("ray", 1), ("ray", 2)])
    figures["scaling"] = bench_scaling(scaling_list(folder, args.repeat), work, engines)
    print(json.dumps(figures["scaling"], indent=1), flush=True)
    (Path(args.out) / f"figures_{source}.json").write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
