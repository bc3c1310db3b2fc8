"""Datasets for training and benchmarking: Decathlon ``dataset.json`` files (what ``swinbob phantom``
writes) and CSV lists of image/label pairs, with their label scheme, validated paths and
subject-level splits.

A dataset file may only point inside its own folder (so a copied or shared dataset cannot silently
read files from elsewhere) unless ``allow_outside=True``; every referenced file must exist. Both
checks happen when the dataset is loaded, before any training starts.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from SwinBOBLib import labels as label_schemes

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset definition that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Case:
    """One scan of a dataset.

    Attributes:
        case_id: unique name (the image file's stem by default).
        images: one file (possibly multi-channel) or one file per contrast.
        label: label map file, or None for unlabelled cases (inference only).
        subject: who was scanned; splits never separate cases of one subject.
        split: "train", "val" or "test" when the dataset fixes it, else None.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    subject: str
    split: str | None = None


@dataclass
class Dataset:
    """Cases plus what is known about them: label scheme, contrast names, source file."""

    source: Path
    cases: list[Case]
    scheme: str
    channel_names: tuple[str, ...] | None = None
    name: str = ""
    label_names: dict[int, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.source.parent


def _resolve(entry: str, root: Path, source: Path, allow_outside: bool) -> Path:
    path = Path(entry)
    path = (path if path.is_absolute() else root / path).resolve()
    if not allow_outside and not path.is_relative_to(root.resolve()):
        raise DatasetError(f"{source}: '{entry}' points outside the dataset folder {root}; move the file "
                           "into the folder or allow outside paths explicitly")
    if not path.exists():
        raise DatasetError(f"{source}: '{entry}' does not exist ({path})")
    return path


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _case(image, label, root, source, allow_outside, subject=None, split=None, case_id=None) -> Case:
    """A case; ``image`` None (or empty) with a ``label`` is a label-map-only case (synthesis training)."""
    entries = [] if image in (None, "", []) and label else image if isinstance(image, (list, tuple)) else [image]
    if any(not isinstance(e, str) or not e.strip() for e in entries) or not (entries or label):
        raise DatasetError(f"{source}: image entry {image!r} must be a path or a list of paths")
    images = tuple(_resolve(e, root, source, allow_outside) for e in entries)
    label_path = _resolve(label, root, source, allow_outside) if label else None
    if split is not None and split not in SPLITS:
        raise DatasetError(f"{source}: split '{split}' of {(entries or [label])[0]} must be one of {', '.join(SPLITS)}")
    case_id = case_id or _stem(images[0] if images else label_path)
    return Case(case_id, images, label_path, subject or case_id, split)


def detect_scheme(label_names: Mapping[int, str], source: str = "dataset") -> str:
    """The registered scheme whose numbering matches a dataset's ``labels`` table.

    A table listing exactly a scheme's structures identifies it; a partial table must be
    consistent with one scheme only (many schemes share e.g. spleen = 1).

    Raises:
        DatasetError: no scheme (or more than one) matches; the message says how to state it.
    """
    names = {int(i): n for i, n in label_names.items() if int(i) != 0 and n != "unused"}
    if not names:
        raise DatasetError(f"{source}: its 'labels' table names no structure, so the label scheme cannot be "
                           "told from it; add \"scheme\": NAME to the file or pass --scheme (one of "
                           f"{', '.join(label_schemes.available_schemes())})")
    matches, exact = [], []
    for scheme_name in label_schemes.available_schemes():
        scheme = label_schemes.get_scheme(scheme_name)
        try:
            if all(scheme.lookup(name) == index for index, name in names.items()):
                matches.append(scheme_name)
                if set(names) == set(scheme.indices):
                    exact.append(scheme_name)
        except label_schemes.UnknownStructureError:
            continue
    if len(exact) == 1:
        return exact[0]
    if len(matches) != 1:
        found = f"several schemes match ({', '.join(matches)})" if matches else "no label scheme matches"
        raise DatasetError(f"{source}: {found} its labels table; add \"scheme\": NAME to the file or pass "
                           f"--scheme (one of {', '.join(label_schemes.available_schemes())})")
    return matches[0]


def load_decathlon(path: str | os.PathLike, scheme: str | None = None, allow_outside: bool = False) -> Dataset:
    """Read a Medical Segmentation Decathlon style ``dataset.json``.

    Uses ``training`` (image/label pairs), optional ``validation`` (pairs, split "val") and ``test``
    (image paths or pairs, split "test"); ``modality`` names the channels; ``labels`` maps values to
    names and decides the scheme unless the file has ``"scheme"`` or ``scheme`` is given.
    """
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{source}: cannot read the dataset file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("training", []), list):
        raise DatasetError(f"{source}: expected a JSON object with a 'training' list")
    root = source.parent
    cases = []
    for key, split in (("training", None), ("validation", "val"), ("test", "test")):
        for entry in data.get(key, []) or []:
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or not ("image" in entry or (key != "test" and entry.get("label"))):
                raise DatasetError(f"{source}: entry {entry!r} of '{key}' has no 'image'")
            if key != "test" and not entry.get("label"):
                raise DatasetError(f"{source}: entry {entry['image']!r} of '{key}' has no 'label'")
            cases.append(_case(entry.get("image"), entry.get("label"), root, source, allow_outside,
                               entry.get("subject"), entry.get("split", split), entry.get("id")))
    label_names = {_integer_key(k, "labels", source): str(v) for k, v in _table(data, "labels", source).items()}
    scheme = scheme or data.get("scheme") or detect_scheme(label_names, str(source))
    label_schemes.get_scheme(scheme)  # unknown scheme names fail here
    modality = {_integer_key(k, "modality", source): v for k, v in _table(data, "modality", source).items()}
    channels = tuple(str(modality[k]) for k in sorted(modality)) if modality else None
    return _finish(Dataset(source, cases, scheme, channels, str(data.get("name", source.parent.name)), label_names))


def _table(data: dict, key: str, source: Path) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise DatasetError(f"{source}: '{key}' must be an object such as {{\"0\": \"background\"}}, got {value!r:.60}")
    return value


def _integer_key(key, table: str, source: Path) -> int:
    """A ``labels``/``modality`` key as an integer; anything else names the file, the table and the key."""
    try:
        return int(key)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: key {key!r} of '{table}' is not an integer (label value or channel "
                           "index)") from None


def load_csv(path: str | os.PathLike, scheme: str | None = None, allow_outside: bool = False) -> Dataset:
    """Read a CSV list with columns ``image`` and ``label`` (and optional ``subject``, ``split``,
    ``id``); several contrast files go in one ``image`` cell separated by ``;``."""
    source = Path(path)
    try:
        with open(source, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DatasetError(f"{source}: cannot read the dataset file ({error})") from error
    if not rows or not ("image" in rows[0] or "label" in rows[0]):
        raise DatasetError(f"{source}: expected a header with an 'image' (or, for label maps only, a "
                           "'label') column and at least one row")
    cases = []
    for number, row in enumerate(rows, start=2):
        image = [p.strip() for p in (row.get("image") or "").split(";") if p.strip()]
        if not image and not (row.get("label") or "").strip():
            raise DatasetError(f"{source}: line {number} has an empty 'image' cell")
        cases.append(_case(image, (row.get("label") or "").strip() or None, source.parent, source,
                           allow_outside, (row.get("subject") or "").strip() or None,
                           (row.get("split") or "").strip() or None, (row.get("id") or "").strip() or None))
    if scheme is None:
        raise DatasetError(f"{source}: a CSV dataset needs its label scheme (--scheme)")
    label_schemes.get_scheme(scheme)
    return _finish(Dataset(source, cases, scheme, None, source.stem))


def _finish(dataset: Dataset) -> Dataset:
    if not dataset.cases:
        raise DatasetError(f"{dataset.source}: the dataset has no cases")
    seen = set()
    for case in dataset.cases:
        if case.case_id in seen:
            raise DatasetError(f"{dataset.source}: case id '{case.case_id}' appears twice")
        seen.add(case.case_id)
    return dataset


LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")


def load_label_folder(path: str | os.PathLike, scheme: str | None) -> Dataset:
    """A folder of label maps only (no dataset.json): one label-map-only case per file, for training
    with images rendered from the labels (``--synthesis labels``). ``scheme`` is required."""
    folder = Path(path)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(LABEL_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"{folder}: no dataset.json and no label maps ({', '.join(LABEL_SUFFIXES)})")
    if scheme is None:
        raise DatasetError(f"{folder}: a folder of label maps needs its label scheme (--dataset-scheme)")
    label_schemes.get_scheme(scheme)
    cases = [Case(_stem(f), (), f.resolve(), _stem(f)) for f in files]
    return _finish(Dataset(folder / "dataset.json", cases, scheme, None, folder.name))


def load_dataset(path: str | os.PathLike, scheme: str | None = None, allow_outside: bool = False) -> Dataset:
    """A dataset from a folder holding ``dataset.json``, a ``dataset.json`` file, a CSV list, or a
    folder of label maps only (:func:`load_label_folder`)."""
    path = Path(path)
    if path.is_dir() and not (path / "dataset.json").exists():
        return load_label_folder(path, scheme)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset file (a folder with dataset.json, a dataset.json, or a CSV)")
    if path.suffix.lower() == ".csv":
        return load_csv(path, scheme, allow_outside)
    return load_decathlon(path, scheme, allow_outside)


def split_cases(dataset: Dataset, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[Case]]:
    """Train/val/test split by subject (the paper's 80/10/10), honouring splits the dataset fixes.

    Unassigned subjects are shuffled with ``seed`` and dealt out by ``fractions``; with few subjects
    every split that has a non-zero fraction still gets at least one subject when possible.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions {tuple(fractions)} must be three non-negative numbers summing to 1")
    by_subject: dict[str, list[Case]] = defaultdict(list)
    for case in dataset.cases:
        by_subject[case.subject].append(case)
    splits: dict[str, list[Case]] = {name: [] for name in SPLITS}
    free = []
    for subject, cases in by_subject.items():
        fixed = {c.split for c in cases if c.split}
        if len(fixed) > 1:
            raise DatasetError(f"{dataset.source}: subject '{subject}' has cases in several splits {sorted(fixed)}")
        (splits[fixed.pop()].extend(cases) if fixed else free.append(subject))
    order = np.random.default_rng(seed).permutation(len(free))
    counts = _split_counts(len(free), fractions)
    start = 0
    for name, count in zip(SPLITS, counts):
        for index in order[start:start + count]:
            splits[name].extend(by_subject[free[index]])
        start += count
    return splits


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    counts = [int(np.floor(n * f)) for f in fractions]
    for i in np.argsort([-(n * f - c) for f, c in zip(fractions, counts)]):
        if sum(counts) < n:
            counts[i] += 1
    for i, f in enumerate(fractions):  # a wanted split that got nothing borrows from the largest
        if f > 0 and counts[i] == 0 and max(counts) > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    return counts
