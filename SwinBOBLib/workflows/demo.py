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
from SwinBOBLib.solf.bounds import geometry_warnings, load_bounds
from SwinBOBLib.solf.comparable import VERDICTS, judge, reason_text
from SwinBOBLib.solf.features import organ_features
from SwinBOBLib.workflows.segment import load_model_for_cli, segment_file

REPO_ROOT = Path(__file__).resolve().parents[2]


SAMPLE_DIR = REPO_ROOT / "Testing" / "Data" / "totalsegmentator-samples"


SAMPLE_MR = SAMPLE_DIR / "example_mr_sm.nii.gz"


SAMPLE_MR_LABELS = SAMPLE_DIR / "example_seg_mr.nii.gz"


#: What the demo adds to ``segment``'s outputs (a rerun may replace them).
DEMO_FILES = ("solf.csv", "reference_scores.csv", "demo.json")


def solf_rows(labelmap: np.ndarray, spacing, bounds_path) -> list[dict]:
    """Per structure: the three SOLF features, the verdict (``plausible``, ``inaccurate``,
    ``missing`` or ``not comparable``; :func:`~SwinBOBLib.solf.comparable.judge`), the features judged,
    those out of range, why the others were not judged, and the cohort the verdict is against
    (``against``: e.g. "synthetic cohort, N=60"). Structures without bounds get ``no bounds``."""
    features = organ_features(labelmap, spacing=spacing)
    bounds = bounds_path if isinstance(bounds_path, dict) else load_bounds(bounds_path)  # a path or a Bounds
    verdicts = judge(features, bounds, labelmap, spacing)
    cohort = bounds.cohort or {}
    against = (f"{'synthetic' if cohort.get('synthetic') else 'recorded' if cohort else 'unrecorded'} cohort, "
               f"N={bounds.n_samples}")
    scheme = get_scheme("ukbob")
    rows = []
    for index in sorted(set(features) | set(verdicts)):
        values = features.get(index, {})
        entry = verdicts.get(index)
        rows.append({"index": index, "name": scheme.name_of(index),
                     "volume_ml": values["volume_mm3"] / 1000 if values else 0.0,
                     **{f: values.get(f, float("nan")) for f in ("normalized_volume", "sphericity", "eccentricity")},
                     "verdict": entry["verdict"] if entry else "not comparable",
                     "judged": ";".join(entry["judged"]) if entry else "",
                     "out_of_range": ";".join(entry["out_of_range"]) if entry else "",
                     "reason": reason_text(entry) if entry else "the bounds' cohort never had this structure",
                     "inaccurate": bool(entry and entry["verdict"] == "inaccurate"), "against": against})
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
               "structures": len(solf), "flagged_by_solf": [r["name"] for r in solf
                                                            if r["verdict"] in ("inaccurate", "missing")],
               "verdicts": {v: [r["name"] for r in solf if r["verdict"] == v] for v in VERDICTS},
               "reference_scores": {s["structure"]: round(float(s["dice"]), 3) for s in scores},
               "mean_dice_vs_reference": float(np.mean([s["dice"] for s in scores])) if scores else None,
               "seconds": round(time.perf_counter() - started, 2),
               "outputs": ["labels.nii.gz", "entropy.nii.gz", "organs.csv", "report.json", "preview.png",
                           "solf.csv", "reference_scores.csv", "demo.json"]}
    write_text_atomic(out / "demo.json", json.dumps(summary, indent=2, default=str))
    return summary


#: Structures the plain summary names first when the reference has them.
HEADLINE = ("liver", "spleen", "kidney_left", "kidney_right")


def plain_summary(summary: dict, output_dir) -> list[str]:
    """A few sentences a newcomer can read: what was found, how it scored against the sample's
    reference, what SOLF said, and where to look."""
    verdicts = summary["verdicts"]
    scores = summary.get("reference_scores") or {}
    lines = [f"SwinBOB segmented {summary['structures']} structures in the sample MRI with "
             f"{'the DEMO model (not Swin-BOB)' if summary['model'].get('demo') else summary['model']['name']}."]
    if scores:
        named = [f"{n} {scores[n]:.2f}" for n in HEADLINE if n in scores]
        lines.append(f"Against the sample's reference labels, mean Dice {summary['mean_dice_vs_reference']:.2f} "
                     f"over {len(scores)} shared structures" + (f" ({', '.join(named)})." if named else "."))
    counts = ", ".join(f"{len(verdicts[v])} {v}" for v in VERDICTS if verdicts.get(v))
    lines.append(f"SOLF shape check: {counts or 'nothing judged'}"
                 + (" (a scan unlike the bounds' cohort is not judged on what does not compare; see solf.csv)."
                    if verdicts.get("not comparable") else "."))
    lines.append(f"Look at {Path(output_dir) / 'preview.png'} first; open labels.nii.gz and entropy.nii.gz "
                 "(where the model is unsure) over the scan in 3D Slicer.")
    return lines
