"""The demo: the real sample MRI segmented with the bundled demo model and ETTA, SOLF against the
bundled bounds, scores against the sample's reference labels.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from SwinBOBLib import io, labels
from SwinBOBLib.evaluation.metrics import per_class_metrics
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.io.files import write_csv_atomic, write_text_atomic
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.outputs.folders import foreign_files
from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS, DEMO_MODEL, bundled
from SwinBOBLib.solf.bounds import flag, geometry_warnings, load_bounds
from SwinBOBLib.solf.features import organ_features
from SwinBOBLib.workflows.segment import load_model_for_cli, segment_file

REPO_ROOT = Path(__file__).resolve().parents[2]


SAMPLE_DIR = REPO_ROOT / "Testing" / "Data" / "totalsegmentator-samples"


SAMPLE_MR = SAMPLE_DIR / "example_mr_sm.nii.gz"


SAMPLE_MR_LABELS = SAMPLE_DIR / "example_seg_mr.nii.gz"


#: What the demo adds to ``segment``'s outputs (a rerun may replace them).
DEMO_FILES = ("solf.csv", "reference_scores.csv", "demo.json")


def solf_rows(labelmap: np.ndarray, spacing, bounds_path) -> list[dict]:
    """Per structure: the three SOLF features, which are out of the bounds, the 2-of-3 verdict, and
    the cohort the verdict is against (``against``: e.g. "synthetic cohort, N=60")."""
    features = organ_features(labelmap, spacing=spacing)
    bounds = bounds_path if isinstance(bounds_path, dict) else load_bounds(bounds_path)  # a path or a Bounds
    flags = flag(features, bounds)
    cohort = bounds.cohort or {}
    against = (f"{'synthetic' if cohort.get('synthetic') else 'recorded' if cohort else 'unrecorded'} cohort, "
               f"N={bounds.n_samples}")
    scheme = get_scheme("ukbob")
    rows = []
    for index, values in sorted(features.items()):
        verdict = flags.get(index, {})
        rows.append({"index": index, "name": scheme.name_of(index), "volume_ml": values["volume_mm3"] / 1000,
                     "normalized_volume": values["normalized_volume"], "sphericity": values["sphericity"],
                     "eccentricity": values["eccentricity"],
                     "out_of_range": ";".join(verdict.get("out_of_range", [])),
                     "inaccurate": bool(verdict.get("inaccurate", False)), "against": against})
    return rows


def reference_scores(labelmap: np.ndarray, reference_path: Path, scheme: str, spacing) -> list[dict]:
    """Dice and HD95 against the sample's reference labels, in the reference scheme."""
    reference = io.load_labelmap(reference_path, scheme=scheme)
    predicted = labels.remap(labelmap, "ukbob", scheme)
    shared = sorted({c.dst_index for c in labels.correspondences("ukbob", scheme)} & set(np.unique(reference.array).tolist()))
    rows = per_class_metrics(predicted, reference.array, shared, spacing=spacing)
    names = labels.get_scheme(scheme)
    return [{"structure": names.name_of(r["label"]), "dice": r["dice"], "hd95_mm": r["hd95"]} for r in rows]


def run_demo(output_dir: str | os.PathLike, image_path=SAMPLE_MR, labels_path=SAMPLE_MR_LABELS,
             labels_scheme: str = "total_mr", checkpoint=None, bounds=None, device: str = "auto") -> dict:
    """Run the demo into ``output_dir``; returns a summary (also ``demo.json``)."""
    started = time.perf_counter()
    out = Path(output_dir)
    for path in (image_path, labels_path):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: demo sample missing (run from a full checkout of SwinBOB)")
    checkpoint = Path(checkpoint) if checkpoint else bundled(DEMO_MODEL, "demo model")
    bounds = Path(bounds) if bounds else bundled(DEFAULT_BOUNDS, "SOLF bounds")
    io.check_writable(out)  # before minutes of inference, not after
    found = foreign_files(out, [Path(image_path)], DEMO_FILES)
    if found:  # the demo replaces its own earlier output, never a user's files
        raise FileExistsError(f"{out}: holds files the demo did not write ({', '.join(found[:3])}); choose "
                              "another folder with -o")
    model, metadata, info = load_model_for_cli(str(checkpoint), None)
    config = InferenceConfig(device=device, etta=True, progress=True)
    report = segment_file(Path(image_path), out, model, metadata, config, EttaConfig(), info,
                          extra_outputs=DEMO_FILES)

    predicted = io.load_labelmap(out / "labels.nii.gz")
    loaded_bounds = load_bounds(bounds)
    solf = solf_rows(predicted.array, predicted.spacing, loaded_bounds)
    bounds_notes = geometry_warnings(loaded_bounds, predicted.spacing, predicted.spatial_shape)
    write_csv_atomic(out / "solf.csv", solf, list(solf[0]) if solf else ["index"], ".6g")
    scores = reference_scores(predicted.array, Path(labels_path), labels_scheme, predicted.spacing)
    write_csv_atomic(out / "reference_scores.csv", scores, ["structure", "dice", "hd95_mm"], ".6g")
    summary = {"input": str(image_path), "checkpoint": str(checkpoint), "model": report["model"],
               "bounds": str(bounds), "bounds_cohort": loaded_bounds.cohort, "solf_warnings": bounds_notes,
               "device": report["device"], "entropy": report["entropy"], "timings": report["timings"],
               "structures": len(solf), "flagged_by_solf": [r["name"] for r in solf if r["inaccurate"]],
               "mean_dice_vs_reference": float(np.mean([s["dice"] for s in scores])) if scores else None,
               "seconds": round(time.perf_counter() - started, 2),
               "outputs": ["labels.nii.gz", "entropy.nii.gz", "organs.csv", "report.json", "preview.png",
                           "solf.csv", "reference_scores.csv", "demo.json"]}
    write_text_atomic(out / "demo.json", json.dumps(summary, indent=2, default=str))
    return summary
