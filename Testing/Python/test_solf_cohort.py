"""SOLF cohort runs: inputs, local and Ray engines, resuming after a kill, unreadable files, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SwinBOBLib.cli import solf as commands
from SwinBOBLib.solf import cohort as solf_cohort
from SwinBOBLib.solf import load_bounds, organ_features
from SwinBOBLib.solf.pipeline import RunConfig, run_cohort
from SwinBOBLib.solf.tables import read_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def make_labelmap(rng, corrupt=False):
    """Body (label 71) holding a liver-like box (5), a spleen-like box (1) and a kidney (2)."""
    labels = np.zeros((24, 20, 18), np.uint8)
    labels[1:23, 1:19, 1:17] = 71
    labels[3:12, 3:11, 4:12 + rng.integers(0, 3)] = 5
    labels[14:19, 4:8, 5:10 + rng.integers(0, 2)] = 1
    labels[14:18, 12:16, 3:8] = 2
    if corrupt:  # a leak: the spleen label spills along a thin line through the body
        labels[13, 1:19, 14] = 1
    return labels


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(7)
    for n in range(12):
        labels = make_labelmap(rng, corrupt=(n == 3))
        nib.save(nib.Nifti1Image(labels, AFFINE), folder / f"case_{n:03d}.nii.gz")
    (folder / "case_broken.nii.gz").write_bytes(b"not a nifti file")
    return folder


def store_ids(out_dir: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out_dir / "features.jsonl").read_text(encoding="utf-8").splitlines()]


def test_find_samples_from_folder_and_csv(cohort_dir, tmp_path):
    samples = solf_cohort.find_samples(cohort_dir)
    assert [s.id for s in samples][:2] == ["case_000", "case_001"] and len(samples) == 13
    csv = tmp_path / "list.csv"
    csv.write_text("id,labelmap\nfirst," + str(cohort_dir / "case_000.nii.gz") + "\n,"
                   + str(cohort_dir / "case_001.nii.gz") + "\n")
    from_csv = solf_cohort.find_samples(csv)
    assert [s.id for s in from_csv] == ["first", "case_001"]
    assert from_csv[0].labelmap == str((cohort_dir / "case_000.nii.gz").resolve())
    with pytest.raises(ValueError, match="labelmap"):
        (tmp_path / "bad.csv").write_text("path\nx.nii.gz\n")
        solf_cohort.find_samples(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="folder"):
        solf_cohort.find_samples(tmp_path / "nothing_here")


def test_run_writes_outputs_and_skips_unreadable(cohort_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cohort(RunConfig(str(cohort_dir), str(out), epsilon=10.0, workers=1, progress=False))
    assert result.samples == 13 and result.computed == 12 and len(result.errors) == 1
    assert "case_broken" in (out / "errors.csv").read_text(encoding="utf-8")
    for name in ("features.csv", "bounds.json", "flags.csv", "qc_list.csv", "qc_list.json", "report.md",
                 "distributions.png", "mean_normalized_volume.png", "config.json"):
        assert (out / name).is_file(), name
    features = read_csv(out / "features.csv")
    assert len(features) == 12 * 4 and {r["name"] for r in features} >= {"liver", "spleen"}
    # the table holds exactly what organ_features gives for a sample
    labels = nib.load(cohort_dir / "case_005.nii.gz")
    direct = organ_features(np.asarray(labels.dataobj), labels.header.get_zooms())
    row = next(r for r in features if r["id"] == "case_005" and r["label"] == "5")
    assert float(row["sphericity"]) == pytest.approx(direct[5]["sphericity"], rel=1e-12)
    qc = read_csv(out / "qc_list.csv")
    assert qc[0]["id"] == "case_003" and "spleen" in qc[0]["inaccurate"]  # the planted leak, first
    assert int(qc[0]["severity"]) >= 2
    assert load_bounds(out / "bounds.json").n_samples == 12
    assert "case_003" in (out / "report.md").read_text(encoding="utf-8")


class Killed(Exception):
    pass


def test_resume_after_kill_recomputes_nothing_twice(cohort_dir, tmp_path):
    out = tmp_path / "resumed"
    samples = solf_cohort.find_samples(cohort_dir)
    seen = []

    def kill_after_five(record):
        seen.append(record["id"])
        if len(seen) == 5:
            raise Killed

    with pytest.raises(Killed):
        solf_cohort.compute_features(samples, out, workers=1, progress=False, on_record=kill_after_five)
    first = store_ids(out)
    assert len(first) == 5
    # the kill also cut the last line in half
    text = (out / "features.jsonl").read_text(encoding="utf-8")
    (out / "features.jsonl").write_text(text + text.splitlines()[0][:40])
    computed = []
    with pytest.warns(RuntimeWarning, match="repaired"):
        result = solf_cohort.compute_features(samples, out, workers=1, progress=False,
                                              on_record=lambda r: computed.append(r["id"]))
    assert not set(computed) & set(first)  # finished samples are not recomputed
    assert sorted(computed) == sorted(s.id for s in samples if s.id not in first)
    ids = store_ids(out)
    assert len(ids) == len(set(ids)) == 12  # no row lost, none duplicated
    assert result.reused == 5 and result.computed == 12 - 5
    fresh = solf_cohort.compute_features(samples, tmp_path / "fresh", workers=1, progress=False)
    assert result.cohort() == fresh.cohort()


def test_superseded_records_are_dropped(tmp_path):
    store = solf_cohort.ResultStore(tmp_path / "features.jsonl")
    store.append({"id": "a", "features": {}})
    store.append({"id": "a", "features": {"1": {}}})  # recomputed later: the later record wins
    with pytest.warns(RuntimeWarning):
        assert store.load() == {"a": {"id": "a", "features": {"1": {}}}}
    assert len(store.path.read_text(encoding="utf-8").splitlines()) == 1


def test_a_corrected_label_map_is_recomputed(cohort_dir, tmp_path):
    # Issue 14 item 6: the store was keyed by sample id only, so a corrected map kept stale features.
    import shutil

    folder = tmp_path / "maps"
    shutil.copytree(cohort_dir, folder)
    (folder / "case_broken.nii.gz").unlink()
    samples = solf_cohort.find_samples(folder)
    first = solf_cohort.compute_features(samples, tmp_path / "out", workers=1, progress=False)
    corrected = make_labelmap(np.random.default_rng(1))
    corrected[corrected == 1] = 0  # the correction removes the spleen
    nib.save(nib.Nifti1Image(corrected, AFFINE), folder / "case_003.nii.gz")
    second = solf_cohort.compute_features(samples, tmp_path / "out", workers=1, progress=False)
    assert second.computed == 1 and second.reused == len(samples) - 1
    assert 1 in first.cohort()["case_003"] and 1 not in second.cohort()["case_003"]
    third = solf_cohort.compute_features(samples, tmp_path / "out", workers=1, progress=False)
    assert third.computed == 0 and third.cohort() == second.cohort()


def test_organ_only_maps_with_body_auto_warn(tmp_path):
    labels = np.zeros((30, 30, 20), np.uint8)
    labels[3:10, 5:15, 5:15] = 5  # two organs side by side in an unlabelled body
    labels[18:26, 6:14, 4:14] = 1
    nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "organs.nii.gz")
    sample = solf_cohort.find_samples(tmp_path)[0]
    record = solf_cohort.compute_sample(sample)
    assert record["warnings"] and "--body image" in record["warnings"][0] and "body mask" in record["warnings"][0]
    assert solf_cohort.compute_sample(sample, body="labels")["warnings"] == []  # chosen on purpose


def test_resume_refuses_other_settings(cohort_dir, tmp_path):
    samples = solf_cohort.find_samples(cohort_dir)[:2]
    solf_cohort.compute_features(samples, tmp_path, workers=1, progress=False)
    with pytest.raises(ValueError, match="another output folder"):
        solf_cohort.compute_features(samples, tmp_path, workers=1, progress=False, labels=[1])


def test_process_pool_matches_in_process(cohort_dir, tmp_path):
    samples = solf_cohort.find_samples(cohort_dir)
    pooled = solf_cohort.compute_features(samples, tmp_path / "pool", workers=2, progress=False)
    single = solf_cohort.compute_features(samples, tmp_path / "single", workers=1, progress=False)
    assert pooled.cohort() == single.cohort() and len(pooled.errors) == 1


def test_ray_engine_matches_local(cohort_dir, tmp_path):
    ray = pytest.importorskip("ray")
    samples = solf_cohort.find_samples(cohort_dir)
    local = solf_cohort.compute_features(samples, tmp_path / "local", workers=1, progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        distributed = solf_cohort.compute_features(samples, tmp_path / "ray", engine="ray", progress=False)
    finally:
        ray.shutdown()
    assert distributed.cohort() == local.cohort()
    assert [e["id"] for e in distributed.errors] == ["case_broken"]
    ids = store_ids(tmp_path / "ray")
    assert sorted(ids) == sorted(local.records)


def test_body_masks_and_images(cohort_dir, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    body = np.zeros((24, 20, 18), np.uint8)
    body[:, :, :9] = 1
    nib.save(nib.Nifti1Image(body, AFFINE), masks / "case_000.nii.gz")
    sample = solf_cohort.find_samples(cohort_dir, body_masks=masks)[0]
    assert sample.body_mask is not None
    record = solf_cohort.compute_sample(sample)
    voxels = record["features"]["5"]["voxels"]
    assert record["features"]["5"]["normalized_volume"] == pytest.approx(voxels / body.sum())
    no_image = solf_cohort.compute_sample(sample, body="image")
    assert "needs an image" in no_image["error"]


def test_cli_run_check_features_ablation(cohort_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert commands.main(["solf", "run", str(cohort_dir), "-o", str(out), "--workers", "1", "--epsilon",
                          "10", "--quiet", "--no-plots"]) == 0
    assert "12 computed" in capsys.readouterr().out
    bounds = str(out / "bounds.json")
    assert commands.main(["solf", "check", str(cohort_dir / "case_003.nii.gz"), "--bounds", bounds]) == 3
    assert "spleen\tinaccurate" in capsys.readouterr().out
    assert commands.main(["solf", "check", str(cohort_dir / "case_005.nii.gz"), "--bounds", bounds]) == 0
    capsys.readouterr()
    assert commands.main(["solf", "features", str(cohort_dir / "case_000.nii.gz")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("label\tname\tvoxels") and table[1].split("\t")[1] == "spleen"
    assert commands.main(["solf", "check", str(cohort_dir / "case_000.nii.gz"), "--bounds",
                          str(cohort_dir / "case_000.nii.gz")]) == 1  # not a bounds file
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "case_003.json").write_text(json.dumps([{"label": 1, "kind": "leak"}]))
    assert commands.main(["solf", "ablation", str(cohort_dir), "-o", str(out), "--truth", str(truth),
                          "--workers", "1", "--quiet", "--epsilons", "0,10"]) == 0
    rows = read_csv(out / "ablation.csv")
    assert [float(r["epsilon"]) for r in rows] == [0, 10] and float(rows[1]["solf_recall"]) == 1.0
    assert (out / "ablation.md").read_text(encoding="utf-8").startswith("# SOLF epsilon ablation")


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory):
    phantom = pytest.importorskip("SwinBOBLib.phantom")
    folder = tmp_path_factory.mktemp("phantoms")
    phantom.write_cohort(folder, n=8, size="tiny", seed=3, corrupt=True, corrupt_fraction=0.25)
    return folder


def test_phantom_features_match_reference(phantom_cohort):
    from test_solf_features import assert_features_equal, reference_features

    from SwinBOBLib import io

    image = io.load_labelmap(phantom_cohort / "labelsTr" / "case_0000.nii.gz")
    assert_features_equal(organ_features(image.array, image.spacing),
                          reference_features(image.array, image.spacing))


def test_ablation_on_phantom_cohort(phantom_cohort, tmp_path, capsys):
    from SwinBOBLib.solf import ablation

    records = ablation.load_corruptions(phantom_cohort / "corruptions")
    assert len(records) == 2 and all("kind" in r for r in records)
    assert commands.main(["solf", "ablation", str(phantom_cohort), "-o", str(tmp_path), "--workers", "1",
                          "--quiet"]) == 0
    rows = read_csv(tmp_path / "ablation.csv")
    assert [float(r["epsilon"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    assert int(rows[0]["structures_flagged"]) <= int(rows[-1]["structures_flagged"])
    assert {"solf_precision", "solf_recall", "volume_recall", "iqr_recall"} <= set(rows[0])
    by_kind = read_csv(tmp_path / "ablation_by_kind.csv")
    assert sum(int(r["corruptions"]) for r in by_kind) == 2
    assert "Recall by corruption kind" in capsys.readouterr().out


def test_body_from_phantom_image_matches_labelled_body(phantom_cohort):
    sample = solf_cohort.find_samples(phantom_cohort)[1]
    assert sample.image.endswith("imagesTr/case_0001.nii.gz")  # dataset folder: images found
    from_labels = solf_cohort.compute_sample(sample)["features"]
    from_image = solf_cohort.compute_sample(sample, body="image")["features"]
    for label, values in from_labels.items():
        assert from_image[label]["normalized_volume"] == pytest.approx(values["normalized_volume"], rel=0.02)


def test_images_matched_with_channel_suffix(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    for name in ("labels/case_0001.nii.gz", "images/case_0001_0000.nii.gz", "images/case_0000.nii.gz",
                 "labels/case_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    samples = solf_cohort.find_samples(tmp_path / "labels", images=tmp_path / "images")
    assert [Path(s.image).name for s in samples] == ["case_0000.nii.gz", "case_0001_0000.nii.gz"]


def test_parquet_tables_when_pyarrow_is_installed(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from SwinBOBLib.solf.tables import write_table

    rows = ({"id": f"s{n}", "label": n, "value": n / 3} for n in range(4))
    written = write_table(rows, tmp_path / "t.csv", ("id", "label", "value"))
    assert [p.suffix for p in written] == [".csv", ".parquet"]
    assert pq.read_table(written[1]).column("label").to_pylist() == [0, 1, 2, 3]


def test_image_and_partner_checks_join_where_their_inputs_are(tmp_path):
    rng = np.random.default_rng(3)
    labels = make_labelmap(rng)
    labels[4:8, 12:16, 3:8] = 3  # a left kidney beside the right one (2)
    nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "case.nii.gz")
    image = np.where(labels == 71, 0.2, 0.8).astype(np.float32)
    nib.save(nib.Nifti1Image(image, AFFINE), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(image[:, :, :10], AFFINE), tmp_path / "cropped.nii.gz")
    sample = solf_cohort.Sample("case", str(tmp_path / "case.nii.gz"), str(tmp_path / "image.nii.gz"))
    record = solf_cohort.compute_sample(sample, scheme="ukbob")
    kidney = record["features"]["2"]
    assert {"image_inside", "image_outside", "partner_log_ratio"} <= set(kidney)
    assert "partner_log_ratio" not in record["features"]["5"]  # the liver has no partner
    assert "partner_log_ratio" not in solf_cohort.compute_sample(sample)["features"]["2"]  # no scheme, no pairs
    # An image on another grid: the image checks are skipped with a warning, the rest is measured.
    other = solf_cohort.Sample("case", str(tmp_path / "case.nii.gz"), str(tmp_path / "cropped.nii.gz"))
    record = solf_cohort.compute_sample(other, scheme="ukbob")
    assert "error" not in record and "image_inside" not in record["features"]["2"]
    assert any("image checks are skipped" in w for w in record["warnings"])


def test_a_store_of_another_scheme_is_refused(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    nib.save(nib.Nifti1Image(make_labelmap(np.random.default_rng(0)), AFFINE), folder / "a.nii.gz")
    samples = solf_cohort.find_samples(folder)
    solf_cohort.compute_features(samples, tmp_path / "out", workers=1, progress=False, scheme="ukbob")
    with pytest.raises(ValueError, match="scheme"):
        solf_cohort.compute_features(samples, tmp_path / "out", workers=1, progress=False, scheme=None)


def test_the_checks_setting_chooses_what_is_computed(tmp_path):
    rng = np.random.default_rng(5)
    labels = make_labelmap(rng)
    labels[4:8, 12:16, 3:8] = 3
    nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "case.nii.gz")
    nib.save(nib.Nifti1Image(np.where(labels == 71, 0.2, 0.8).astype(np.float32), AFFINE), tmp_path / "image.nii.gz")
    sample = solf_cohort.Sample("case", str(tmp_path / "case.nii.gz"), str(tmp_path / "image.nii.gz"))
    every = solf_cohort.compute_sample(sample, scheme="ukbob", checks="all")["features"]["2"]
    label_only = solf_cohort.compute_sample(sample, scheme="ukbob", checks="labels")["features"]["2"]
    none = solf_cohort.compute_sample(sample, scheme="ukbob", checks="none")["features"]["2"]
    assert {"image_inside", "partner_log_ratio", "cut_face"} <= set(every)
    assert "cut_face" in label_only and not {"image_inside", "partner_log_ratio"} & set(label_only)
    assert "cut_face" not in none and "sphericity" in none
    with pytest.raises(ValueError, match="checks 'some' is not one of"):
        solf_cohort.compute_features([sample], tmp_path / "out", workers=1, progress=False, checks="some")
    # The ablation without checks has the paper's filters and no check columns.
    from SwinBOBLib.solf import ablation

    cohort = solf_cohort.compute_features([sample], tmp_path / "none", workers=1, progress=False,
                                          checks="none").cohort()
    assert ablation.methods_for(cohort) == ["solf", "missing", "solf+missing", "volume", "iqr"]
