"""A dataset folder of phantoms (``swinbob phantom``): imagesTr/, labelsTr/, dataset.json and, with
corruptions, labelsClean/ and corruptions/*.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from SwinBOBLib.io.files import check_output_path, staged_files
from SwinBOBLib.io.image import Image
from SwinBOBLib.io.writers import save_image, save_labelmap
from SwinBOBLib.phantom.anatomy import CHANNEL_NAMES
from SwinBOBLib.phantom.corruption import CORRUPTION_KINDS, corrupt_labels
from SwinBOBLib.phantom.generator import make_phantom, resolve_size
from SwinBOBLib.phantom.shapes import _scheme
from SwinBOBLib.runtime.locks import folder_lock


def _dataset_json(n: int, size, seed: int, corrupt: bool) -> dict:
    """Decathlon-style dataset description of a phantom cohort."""
    scheme = _scheme()
    labels = {"0": "background", **{str(i): scheme[i].name for i in scheme.indices}}
    return {
        "name": "SwinBOB phantom",
        "description": (f"Procedural neck-to-knee Dixon phantoms (size {size!r}, seeds {seed}..{seed + n - 1}), "
                        "UKBOB label numbering" + ("; labelsTr partly corrupted, see corruptions/" if corrupt else "")),
        "reference": "SwinBOBLib.phantom",
        "licence": "CC0",
        "tensorImageSize": "4D",
        "modality": {str(i): name for i, name in enumerate(CHANNEL_NAMES)},
        "labels": labels,
        "numTraining": n,
        "numTest": 0,
        "training": [{"image": f"./imagesTr/case_{i:04d}.nii.gz", "label": f"./labelsTr/case_{i:04d}.nii.gz"}
                     for i in range(n)],
        "test": [],
    }


def _check_cohort_args(n, size, corrupt_fraction) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    resolve_size(size)
    if not isinstance(corrupt_fraction, (int, float, np.number)) or not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"corrupt_fraction must lie in [0, 1], got {corrupt_fraction!r}")


def _write_json(data, path: Path) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_cohort(output_dir, n: int = 1, size="tiny", seed: int = 0, corrupt: bool = False,
                 corrupt_fraction: float = 0.3, progress: Callable[[int, int], None] | None = None,
                 n_corruptions: int = 1, balanced_kinds: bool = False) -> dict:
    """Write ``n`` phantoms as a Decathlon-style dataset folder.

    Layout: ``imagesTr/case_0000.nii.gz`` (X, Y, Z, 4 float32 Dixon), ``labelsTr/case_0000.nii.gz``
    (uint8 UKBOB labels) and ``dataset.json``. With ``corrupt``, ``round(corrupt_fraction * n)``
    cases (at least one when the fraction is > 0) get ``n_corruptions`` planted errors in
    ``labelsTr``; every case then also has ``labelsClean/`` (true labels) and
    ``corruptions/case_XXXX.json`` (the records of :func:`corrupt_labels`, [] if uncorrupted).
    Case ``i`` uses seed ``seed + i``; the dataset is written into a hidden staging folder and
    moved into place when complete, so an interrupted run leaves none of it behind.

    Args:
        output_dir: dataset folder (created).
        n: number of cases (>= 1).
        size: as :func:`make_phantom`.
        seed: seed of case 0; also chooses which cases are corrupted.
        corrupt: plant label corruptions.
        corrupt_fraction: share of cases to corrupt, 0..1.
        progress: called as ``progress(done, total)`` after each case.
        n_corruptions: corruptions per corrupted case.
        balanced_kinds: the j-th corrupted case's corruptions take the kinds of
            :data:`CORRUPTION_KINDS` in turn (j, j+1, ...), so every kind is planted about equally
            often; default: each kind drawn at random.

    Returns:
        ``{"output_dir": str, "cases": [case ids], "corrupted": [case ids], "dataset_json": str}``.

    Raises:
        ValueError: n < 1, unknown size, fraction outside [0, 1].
        FileExistsError: ``output_dir`` already holds a dataset (``dataset.json`` or its folders),
            which would be overwritten case by case.
        FolderBusyError: another run writes into ``output_dir``.
    """
    _check_cohort_args(n, size, corrupt_fraction)
    root = check_output_path(output_dir)
    with folder_lock(root):  # one run per folder: two runs never both pass the check below
        _refuse_dataset(root)
        root.mkdir(parents=True, exist_ok=True)
        # Written into a hidden staging folder and moved into place at the end: a killed run leaves
        # no partial dataset to block the next one.
        with staged_files(root, None) as staging:
            summary = _write_cases(staging, n, size, seed, corrupt, corrupt_fraction, progress, n_corruptions,
                                   balanced_kinds)
    return {**summary, "output_dir": str(root), "dataset_json": str(root / "dataset.json")}


def _refuse_dataset(root: Path) -> None:
    existing = [name for name in DATASET_ENTRIES if (root / name).exists()]
    if existing:
        raise FileExistsError(f"{root}: already holds a dataset ({', '.join(existing)}); refusing to overwrite "
                              "it, choose a new or empty folder")


#: What a phantom cohort writes into its folder.
DATASET_ENTRIES = ("dataset.json", "imagesTr", "labelsTr", "labelsClean", "corruptions")


def _write_cases(root: Path, n, size, seed, corrupt, corrupt_fraction, progress, n_corruptions,
                 balanced_kinds) -> dict:
    n_bad = 0 if not corrupt else min(n, max(int(round(corrupt_fraction * n)), int(corrupt_fraction > 0)))
    corrupted = set(np.random.default_rng([int(seed), 11]).permutation(n)[:n_bad].tolist())
    turn = {case: j * n_corruptions for j, case in enumerate(sorted(corrupted))}  # balanced_kinds: first kind
    cases = []
    for i in range(n):
        kinds = None
        if i in corrupted and balanced_kinds:
            kinds = sorted({CORRUPTION_KINDS[(turn[i] + k) % len(CORRUPTION_KINDS)] for k in range(n_corruptions)})
        cases.append(_write_case(root, i, seed + i, size, corrupt, i in corrupted, n_corruptions, kinds))
        if progress is not None:
            progress(i + 1, n)
    _write_json(_dataset_json(n, size, seed, corrupt), root / "dataset.json")
    return {"cases": cases, "corrupted": [f"case_{i:04d}" for i in sorted(corrupted)]}


def _write_case(root: Path, index: int, seed: int, size, corrupt: bool, corrupted: bool, n_corruptions: int,
                kinds) -> str:
    """Case ``index`` of :func:`write_cohort`: its image and labels (planted corruptions when
    ``corrupted``; with ``corrupt`` also its clean labels and the corruption records)."""
    case = f"case_{index:04d}"
    phantom = make_phantom(size, seed)
    image = Image(phantom.image, phantom.affine, channel_names=CHANNEL_NAMES)
    save_image(image, root / "imagesTr" / f"{case}.nii.gz")
    labels, records = phantom.labels, []
    if corrupt:
        save_labelmap(phantom.labels, image, root / "labelsClean" / f"{case}.nii.gz")
        if corrupted:
            labels, records = corrupt_labels(phantom.labels, seed=seed, n_corruptions=n_corruptions, kinds=kinds)
        (root / "corruptions").mkdir(parents=True, exist_ok=True)
        _write_json(records, root / "corruptions" / f"{case}.json")
    save_labelmap(labels, image, root / "labelsTr" / f"{case}.nii.gz")
    return case
