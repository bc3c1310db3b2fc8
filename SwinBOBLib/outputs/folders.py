"""The result folder of a scan: labels, entropy, organs.csv, report.json and preview.png written
into a staging folder and swapped into place whole; a folder holding files that are not ours is
refused (or a subfolder used).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from SwinBOBLib import io
from SwinBOBLib.inference.config import Segmentation
from SwinBOBLib.outputs.organs import organ_rows, write_organs_csv
from SwinBOBLib.outputs.preview import render_preview
from SwinBOBLib.outputs.provenance import model_notice


def output_suffix(path: Path) -> str:
    """The input's format for outputs (``.nii.gz`` for DICOM folders and unknown suffixes)."""
    suffix = io.image_suffix(Path(path)) if Path(path).is_file() else None
    if suffix in (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"):
        return suffix
    if suffix == ".seg.nrrd":
        return ".nrrd"
    return ".nii.gz"


#: Files ``segment`` writes into a case folder (``labels``/``entropy`` with the image's suffix; the
#: three ``.dcm`` objects with ``--output-type dicom``, see :data:`~SwinBOBLib.outputs.dicom_common.DICOM_FILES`).
OUTPUT_FILES = ("labels", "entropy", "organs.csv", "report.json", "preview.png",
                "labels_seg.dcm", "entropy_pmap.dcm", "organs_sr.dcm")


# Hidden temporary files of earlier, interrupted versions (atomic writes beside the target).
_OLD_TEMPORARY = re.compile(r"\.(labels|entropy|organs\.csv|report\.json|preview)[.]")


def _is_output_name(name: str, extra: Sequence[str] = ()) -> bool:
    if name in OUTPUT_FILES or name in extra or _OLD_TEMPORARY.match(name) or name.startswith(io.LOCK_PREFIX):
        return True
    stem, _, suffix = name.partition(".")
    return stem in ("labels", "entropy") and f".{suffix}" in io.IMAGE_SUFFIXES


def foreign_files(folder: Path, inputs: Sequence[Path] = (), extra: Sequence[str] = ()) -> list[str]:
    """What in ``folder`` SwinBOB did not write there (empty: the folder may be replaced whole).

    A folder is SwinBOB's when it does not exist, is empty, or holds only ``segment``'s outputs
    (:data:`OUTPUT_FILES`, plus ``extra`` names) including a ``report.json`` SwinBOB wrote, and none
    of ``inputs``.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or not folder.is_dir():
        return [folder.name]
    inputs_here = [str(p) for p in inputs if io.inside(p, folder)]
    entries = sorted(folder.iterdir())
    found = inputs_here + [e.name for e in entries
                           if not (_is_output_name(e.name, extra) and e.is_file() and not e.is_symlink())]
    if found or not entries:
        return found
    try:
        ours = "swinbob_version" in json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    return [] if ours else [e.name for e in entries]


def case_folder(outdir: Path, case: str, path: Path, batch: bool) -> Path:
    """The folder one case's outputs go to: OUTDIR (one scan) or OUTDIR/<case> (batch).

    One scan whose OUTDIR holds other files (the input itself, a user's ``report.json``, a DICOM
    series) or the result of another scan goes to OUTDIR/<case> instead, with a note on stderr:
    nothing is ever written over a user's files, and one scan's result never replaces another's
    (a re-run of the same scan replaces its own).

    Raises:
        FileExistsError: the chosen folder holds files SwinBOB did not write.
    """
    outdir = Path(outdir)
    target = outdir / io.safe_name(case, "case id") if batch else outdir
    found = foreign_files(target, [path])
    other = None if batch or found else result_of_another_scan(target, path)
    if (found or other) and not batch:
        sub = outdir / io.safe_name(case, "case id")
        found_in_sub = foreign_files(sub, [path])
        if not found_in_sub:
            why = (f"the result of another scan ({other})" if other else
                   f"files SwinBOB did not write ({', '.join(found[:3])})")
            print(f"note: {outdir} holds {why}; writing the outputs into {sub} instead", file=sys.stderr)
            return sub
        target, found = sub, found_in_sub
    if found:
        raise FileExistsError(f"{target}: holds files SwinBOB did not write ({', '.join(found[:3])}"
                              f"{', ...' if len(found) > 3 else ''}); refusing to write over them, choose a new "
                              "or empty output folder")
    if not io.inside(target, outdir):
        raise ValueError(f"{target}: is outside the output folder {outdir}")
    return target


def result_of_another_scan(folder: Path, path: Path) -> str | None:
    """The input ``folder``'s ``report.json`` records when that is not ``path``; None when the folder
    holds no result, or this scan's own."""
    try:
        recorded = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))["input"]["path"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    try:
        same = Path(recorded).resolve() == Path(path).resolve() or os.path.samefile(recorded, path)
    except (OSError, TypeError):
        same = False
    return None if same else str(recorded)


def write_outputs(result: Segmentation, image: io.Image, outdir: Path, suffix: str, report: dict,
                  scheme: str = "ukbob", preview: bool = True) -> dict:
    """Write the five outputs of one scan into ``outdir``; returns ``{name: path}``.

    ``outdir`` is written file by file; :func:`segment_file` points it at a staging folder that is
    then moved into place whole.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"labels": outdir / f"labels{suffix}", "entropy": outdir / f"entropy{suffix}",
             "organs": outdir / "organs.csv", "report": outdir / "report.json"}
    io.save_labelmap(result.labels.array, image, paths["labels"], scheme=scheme)
    io.save_image(result.entropy, paths["entropy"], dtype=np.float32)
    structures = result.stats.get("structures")
    whole = result.whole_labels
    result.organ_rows = organ_rows(result.labels.array, result.entropy.array, image.spacing, scheme, structures,
                                   whole_labels=whole.array if whole is not None else None)
    write_organs_csv(result.organ_rows, paths["organs"])
    if preview:
        paths["preview"] = outdir / "preview.png"
        render_preview(image, paths["preview"], labels=result.labels.array, scheme=scheme,
                       heatmap=result.entropy.array, heatmap_label="entropy (normalised)",
                       title=report["input"]["path"], notice=model_notice(report.get("model")))
    report["outputs"] = {k: str(v) for k, v in paths.items()}
    io.write_text_atomic(paths["report"], json.dumps(report, indent=2, default=json_default))
    return paths


def json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    return str(value)
