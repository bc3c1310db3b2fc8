"""Variants of the sample MR for a robustness check of a shipped model (docs/training.md).

    python scripts/make_mr_variants.py IMAGE LABEL OUTDIR [--seed 0]

Writes OUTDIR/dataset.json (a Decathlon-style list, scheme total_mr) and one image per variant with
its label map: the scan stored in another orientation (LPS and a permuted axis order, the label map
reoriented the same way, so the voxels differ but the anatomy in world space does not), with a
smooth multiplicative bias field, with a gamma change and with Gaussian noise (the label map as it
is). The intensity variants use MONAI's transforms with a fixed seed. These are stand-ins for the
held-out variants the issue names (which we do not have); the model is never selected on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import RandAdjustContrast, RandBiasField, RandGaussianNoise


def _reoriented(image: nib.Nifti1Image, codes: tuple[str, str, str]) -> nib.Nifti1Image:
    wanted = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(image.affine), wanted)
    return image.as_reoriented(transform)


def _save(image: nib.Nifti1Image, data: np.ndarray | None, path: Path, dtype=np.float32) -> None:
    out = nib.Nifti1Image(np.asarray(image.dataobj if data is None else data).astype(dtype), image.affine,
                          image.header)
    out.set_data_dtype(dtype)
    nib.save(out, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("label", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="seed of the intensity variants (default 0)")
    args = parser.parse_args(argv)
    for path in (args.image, args.label):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    image, label = nib.load(args.image), nib.load(args.label)
    if image.shape[:3] != label.shape[:3] or not np.allclose(image.affine, label.affine, atol=1e-3):
        parser.error(f"{args.label}: its grid {label.shape} differs from {args.image}'s {image.shape}")
    args.outdir.mkdir(parents=True, exist_ok=True)
    data = np.asarray(image.dataobj, dtype=np.float32)
    low, high = float(data.min()), float(data.max())
    cases = []

    def write(name: str, img: nib.Nifti1Image, values: np.ndarray | None, lab: nib.Nifti1Image) -> None:
        _save(img, values, args.outdir / f"{name}.nii.gz")
        _save(lab, None, args.outdir / f"{name}_label.nii.gz", np.uint8)
        cases.append({"image": f"{name}.nii.gz", "label": f"{name}_label.nii.gz", "variant": name})

    for name, codes in (("orientation_LPS", ("L", "P", "S")), ("orientation_SAR", ("S", "A", "R"))):
        write(name, _reoriented(image, codes), None, _reoriented(label, codes))
    channel = data[None]
    bias = RandBiasField(coeff_range=(0.3, 0.5), degree=3, prob=1.0)
    bias.set_random_state(args.seed)
    write("bias_field", image, np.asarray(bias(channel))[0], label)
    gamma = RandAdjustContrast(gamma=(1.5, 1.5), prob=1.0)  # a darker mid-range, the extremes kept
    gamma.set_random_state(args.seed)
    write("gamma_1.5", image, np.asarray(gamma(channel))[0], label)
    noise = RandGaussianNoise(std=0.03 * (high - low), prob=1.0, sample_std=False)
    noise.set_random_state(args.seed)
    write("noise_3pct", image, np.asarray(noise(channel))[0], label)
    dataset = {"name": "mr-variants", "scheme": "total_mr", "training": cases,
               "description": f"variants of {args.image.name} (scripts/make_mr_variants.py, seed {args.seed})"}
    (args.outdir / "dataset.json").write_text(json.dumps(dataset, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} variants to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
