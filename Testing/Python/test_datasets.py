"""Dataset files: Decathlon JSON and CSV, scheme detection, path checks, subject-level splits."""

import json

import nibabel as nib
import numpy as np
import pytest

from SwinBOBLib.io import datasets
from SwinBOBLib.labels import get_scheme


def _write_pair(folder, name, label_value=1):
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine), str(folder / "imagesTr" / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), label_value, np.uint8), affine), str(folder / "labelsTr" / f"{name}.nii.gz"))
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


UKBOB_LABELS = {"0": "background", **{str(i): s.name for i, s in get_scheme("ukbob").structures.items()}}


def _decathlon(folder, entries, labels=None, **extra):
    data = {"name": "test", "modality": {"0": "water", "1": "fat"}, "labels": labels or UKBOB_LABELS,
            "training": entries, **extra}
    (folder / "dataset.json").write_text(json.dumps(data))
    return folder / "dataset.json"


def test_decathlon_folder_loads_with_detected_scheme(tmp_path):
    _decathlon(tmp_path, [_write_pair(tmp_path, f"case_{i}") for i in range(3)])
    dataset = datasets.load_dataset(tmp_path)
    assert dataset.scheme == "ukbob" and dataset.channel_names == ("water", "fat")
    assert [c.case_id for c in dataset.cases] == ["case_0", "case_1", "case_2"]
    assert all(c.images[0].exists() and c.label.exists() for c in dataset.cases)


def test_btcv_numbering_is_detected(tmp_path):
    labels = {"0": "background", "1": "spleen", "2": "kidney_right", "3": "kidney_left", "6": "liver",
              "12": "adrenal_gland_right", "13": "adrenal_gland_left"}  # partial, but only BTCV numbers so
    _decathlon(tmp_path, [_write_pair(tmp_path, "a")], labels=labels)
    assert datasets.load_dataset(tmp_path).scheme == "btcv"
    shared = {"0": "background", "1": "spleen", "5": "liver"}  # ukbob, total, total_mr ... all agree
    _decathlon(tmp_path, [_write_pair(tmp_path, "a")], labels=shared)
    with pytest.raises(datasets.DatasetError, match="several schemes match"):
        datasets.load_dataset(tmp_path)


def test_undetectable_scheme_asks_for_it(tmp_path):
    _decathlon(tmp_path, [_write_pair(tmp_path, "a")], labels={"0": "background", "1": "tumour"})
    with pytest.raises(datasets.DatasetError, match="--scheme"):
        datasets.load_dataset(tmp_path)
    assert datasets.load_dataset(tmp_path, scheme="ukbob").scheme == "ukbob"


def test_path_outside_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    entry = _write_pair(outside, "stray")
    inside = tmp_path / "dataset"
    inside.mkdir()
    entries = [{"image": f"../elsewhere/{entry['image'][2:]}", "label": f"../elsewhere/{entry['label'][2:]}"}]
    _decathlon(inside, entries)
    with pytest.raises(datasets.DatasetError, match=r"dataset\.json: '\.\./elsewhere/imagesTr/stray\.nii\.gz' points outside"):
        datasets.load_dataset(inside)
    assert len(datasets.load_dataset(inside, allow_outside=True).cases) == 1


def test_missing_file_is_refused(tmp_path):
    entries = [_write_pair(tmp_path, "a"), {"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"}]
    _decathlon(tmp_path, entries)
    with pytest.raises(datasets.DatasetError, match="gone.nii.gz' does not exist"):
        datasets.load_dataset(tmp_path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"), ('{"training": 3}', "'training' list"),
    ('{"training": [{"subject": "x"}]}', "has no 'image'"), ('{"training": []}', "no cases"),
])
def test_broken_dataset_files(tmp_path, content, message):
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(datasets.DatasetError, match=message):
        datasets.load_dataset(tmp_path, scheme="ukbob")


def test_csv_dataset_with_subjects_and_contrast_files(tmp_path):
    a, b = _write_pair(tmp_path, "s1_a"), _write_pair(tmp_path, "s1_b")
    lines = ["image,label,subject,split",
             f"{a['image']};{b['image']},{a['label']},s1,train",
             f"{b['image']},{b['label']},s2,"]
    (tmp_path / "list.csv").write_text("\n".join(lines))
    dataset = datasets.load_dataset(tmp_path / "list.csv", scheme="ukbob")
    assert len(dataset.cases[0].images) == 2 and dataset.cases[0].subject == "s1"
    assert dataset.cases[0].split == "train" and dataset.cases[1].split is None
    with pytest.raises(datasets.DatasetError, match="--scheme"):
        datasets.load_dataset(tmp_path / "list.csv")


def test_split_by_subject_never_separates_a_subject(tmp_path):
    entries = []
    for subject in range(10):
        for visit in range(2):
            entry = _write_pair(tmp_path, f"sub{subject}_v{visit}")
            entries.append({**entry, "subject": f"sub{subject}"})
    _decathlon(tmp_path, entries)
    dataset = datasets.load_dataset(tmp_path)
    splits = datasets.split_cases(dataset, seed=3)
    assert [len(splits[s]) for s in datasets.SPLITS] == [16, 2, 2]
    owners = {}
    for name, cases in splits.items():
        for case in cases:
            assert owners.setdefault(case.subject, name) == name
    assert datasets.split_cases(dataset, seed=3) == splits
    assert datasets.split_cases(dataset, seed=4) != splits


def test_split_keeps_fixed_assignments_and_small_datasets(tmp_path):
    entries = [_write_pair(tmp_path, f"c{i}") for i in range(3)]
    entries[0]["split"] = "test"
    _decathlon(tmp_path, entries)
    splits = datasets.split_cases(datasets.load_dataset(tmp_path))
    assert [c.case_id for c in splits["test"]] == ["c0"]
    assert len(splits["train"]) == 1 and len(splits["val"]) == 1
    with pytest.raises(ValueError, match="summing to 1"):
        datasets.split_cases(datasets.load_dataset(tmp_path), fractions=(0.5, 0.1, 0.1))
