"""Time the DICOM objects of `segment --output-type dicom` on the real sample MRI (Testing/Data):
the series written by `convert`, then the SEG, Parametric Map and TID 1500 report of its real
label map (TotalSegmentator's, remapped to UKBOB), each saved and read back. Prints seconds and sizes.

    .venv/bin/python benchmarks/bench_dicom.py
"""

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from SwinBOBLib import io, labels
from SwinBOBLib.outputs.dicom_common import save_dataset
from SwinBOBLib.outputs.dicom_pmap import build_parametric_map
from SwinBOBLib.outputs.dicom_seg import build_segmentation, read_seg_labels
from SwinBOBLib.outputs.dicom_sr import build_report
from SwinBOBLib.outputs.organs import organ_rows
from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS
from SwinBOBLib.solf.bounds import load_bounds

SAMPLES = Path(__file__).resolve().parents[1] / "Testing" / "Data" / "totalsegmentator-samples"
REPORT = {"model": {"name": "benchmark", "demo": False},
          "checkpoint": {"sha256": "0" * 64, "metadata": {"out_channels": 72}}}


def timed(what: str, call):
    started = time.perf_counter()
    value = call()
    print(f"{what}: {time.perf_counter() - started:.2f} s")
    return value


def main() -> None:
    import pydicom

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        scan = io.load_image(SAMPLES / "example_mr_sm.nii.gz")
        timed(f"write series {scan.spatial_shape}", lambda: io.save_image(scan, folder / "series"))
        image = timed("read series", lambda: io.load_image(folder / "series"))
        ukbob = labels.remap(io.load_labelmap(SAMPLES / "example_seg_mr.nii.gz", scheme="total_mr").array,
                             "total_mr", "ukbob").astype(np.uint8)
        entropy = np.random.default_rng(0).random(image.spatial_shape).astype(np.float32)
        seg, present = timed(f"build SEG ({len(present_labels(ukbob))} segments)",
                             lambda: build_segmentation(ukbob, image, "ukbob", REPORT))
        timed("save SEG", lambda: save_dataset(seg, folder / "seg.dcm"))
        pmap = timed("build Parametric Map", lambda: build_parametric_map(entropy, image, REPORT))
        timed("save Parametric Map", lambda: save_dataset(pmap, folder / "pmap.dcm"))
        rows = organ_rows(ukbob, entropy, image.spacing, "ukbob", present)
        sr = timed("build TID 1500 report", lambda: build_report(rows, seg, present, image, "ukbob", REPORT,
                                                                 load_bounds(DEFAULT_BOUNDS), "default_bounds.json"))
        timed("save report", lambda: save_dataset(sr, folder / "sr.dcm"))
        uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in image.metadata["dicom_files"]]
        back = timed("read SEG back", lambda: read_seg_labels(folder / "seg.dcm", uids))
        print(f"SEG equals the label map: {np.array_equal(back, ukbob)}; sizes (KB): "
              + ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f}" for p in sorted(folder.glob("*.dcm"))))
        print(f"entropy quantisation step: {math.log(72) / 65535:.2e} nats")


def present_labels(array):
    return [v for v in np.unique(array) if v]


if __name__ == "__main__":
    main()
