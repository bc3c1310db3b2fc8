"""``swinbob demo``: the main job on the embedded default data (what ``make demo`` runs).

Today the demo reads the real sample MRI shipped in ``Testing/Data`` with its automatic label map,
converts the labels into the UKBOB scheme on the scan's own grid, checks that reorienting to the
model's RAS orientation and back is exact, computes the SOLF shape features of every structure,
writes a synthetic UKBOB phantom, and renders previews. It grows with each capability of SwinBOB.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "Testing" / "Data" / "totalsegmentator-samples"
SAMPLE_MR = SAMPLE_DIR / "example_mr_sm.nii.gz"
SAMPLE_MR_LABELS = SAMPLE_DIR / "example_seg_mr.nii.gz"


def _write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _solf_table(labelmap: np.ndarray, spacing) -> list[dict]:
    """Per-structure SOLF features, when the SOLF module is available."""
    try:
        from .solf import organ_features
    except ImportError:
        return []
    from .labels import get_scheme

    scheme = get_scheme("ukbob")
    return [{"index": index, "name": scheme.name_of(index), **values}
            for index, values in organ_features(labelmap, spacing=spacing).items()]


def run_demo(output_dir: str | os.PathLike, image_path=SAMPLE_MR, labels_path=SAMPLE_MR_LABELS,
             labels_scheme: str = "total_mr") -> dict:
    """Run the demo into ``output_dir`` and return its report (also written as report.json)."""
    from . import io, labels, phantom, preview

    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in (image_path, labels_path):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: demo sample missing (run from a full checkout of SwinBOB)")
    image = io.load_image(image_path)
    source_labels = io.load_labelmap(labels_path, scheme=labels_scheme)
    ukbob = labels.remap(source_labels.array, labels_scheme, "ukbob")
    io.save_labelmap(ukbob, image, out / "labels_ukbob.nii.gz")
    io.save_labelmap(ukbob, image, out / "labels_ukbob.seg.nrrd")

    canonical, record = io.reorient(image, "RAS")
    back = io.undo_reorientation(canonical, record)
    exact = bool(np.array_equal(back.array, image.array) and np.array_equal(back.affine, image.affine))

    features = _solf_table(ukbob, image.spacing)
    preview.render_preview(image, out / "preview.png", labels=ukbob,
                           title=f"{Path(image_path).name}: {labels_scheme} labels in the UKBOB scheme")
    cohort = phantom.write_cohort(out / "phantom", n=1, size="small", seed=0)
    ph = io.load_image(out / "phantom" / "imagesTr" / "case_0000.nii.gz")
    ph_labels = io.load_labelmap(out / "phantom" / "labelsTr" / "case_0000.nii.gz")
    preview.render_preview(ph, out / "phantom_preview.png", labels=ph_labels.array, title="synthetic phantom, seed 0")

    present = sorted(int(v) for v in np.unique(ukbob) if v)
    report = {
        "input": str(image_path), "input_labels": str(labels_path), "input_scheme": labels_scheme,
        "shape": list(image.array.shape), "spacing_mm": list(image.spacing),
        "orientation": image.orientation, "reorientation_round_trip_exact": exact,
        "ukbob_structures": [labels.get_scheme("ukbob").name_of(i) for i in present],
        "solf_features": features, "phantom": str(cohort.get("output_dir", out / "phantom")),
        "seconds": round(time.perf_counter() - started, 2),
        "outputs": ["labels_ukbob.nii.gz", "labels_ukbob.seg.nrrd", "preview.png", "phantom/", "phantom_preview.png"],
    }
    _write_json(report, out / "report.json")
    return report


def cmd_demo(args) -> int:
    report = run_demo(args.output)
    print(f"input       {report['input']} ({report['orientation']}, shape {tuple(report['shape'])}, "
          f"spacing {tuple(round(s, 2) for s in report['spacing_mm'])} mm)")
    print(f"labels      {len(report['ukbob_structures'])} UKBOB structures from the '{report['input_scheme']}' "
          "label map, written on the input grid")
    print(f"geometry    RAS round trip exact: {report['reorientation_round_trip_exact']}")
    if report["solf_features"]:
        print("SOLF        structure              volume_ml  sphericity  eccentricity")
        for row in report["solf_features"]:
            print(f"            {row['name']:<22} {row['volume_mm3'] / 1000:9.1f}  {row['sphericity']:10.3f}"
                  f"  {row['eccentricity']:12.3f}")
    print(f"phantom     {report['phantom']}")
    print(f"outputs     {args.output}/: {', '.join(report['outputs'])}, report.json ({report['seconds']} s)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the bundled sample MRI (what `make demo` runs)")
    p.add_argument("-o", "--output", default="demo-output", help="output folder (default: demo-output)")
    p.set_defaults(func=cmd_demo)
