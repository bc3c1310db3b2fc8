"""Tests of SwinBOBLib.phantom: geometry, anatomy, Dixon contrasts, label corruptions, cohorts."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from SwinBOBLib import io as sio
from SwinBOBLib import phantom as ph
from SwinBOBLib.labels import get_scheme

SCHEME = get_scheme("ukbob")
BODY_COMPOSITION = {SCHEME.lookup(n) for n in ("subcutaneous_fat", "muscle", "inner_fat")}
PAIRS = ["kidney", "femur", "hip", "adrenal_gland", "humerus", "iliopsoas", "gluteus_maximus", "autochthon",
         "clavicula", "scapula", "lung_upper_lobe", "lung_lower_lobe", "iliac_artery"]
INTERNAL = ["liver", "spleen", "kidney_left", "kidney_right", "heart", "stomach", "pancreas", "urinary_bladder",
            "lung_upper_lobe_left", "lung_lower_lobe_right", "aorta", "gallbladder", "vertebra_body", "spinal_cord"]


@pytest.fixture(scope="module")
def tiny():
    return {seed: ph.make_phantom("tiny", seed) for seed in (0, 1, 2)}


@pytest.fixture(scope="module")
def small():
    return ph.make_phantom("small", 0)


def world_centroid(phantom_or_labels, name, affine=None):
    labels = getattr(phantom_or_labels, "labels", phantom_or_labels)
    affine = phantom_or_labels.affine if affine is None else affine
    mask = labels == SCHEME.lookup(name)
    assert mask.any(), f"{name} missing"
    return (affine @ [*ndimage.center_of_mass(mask), 1.0])[:3]


def volume_ml(phantom, name):
    return float((phantom.labels == SCHEME.lookup(name)).sum() * np.prod(phantom.spacing) / 1000.0)


# ----------------------------------------------------------------------------- generation


def test_same_seed_gives_identical_phantoms(tiny):
    again = ph.make_phantom("tiny", 1)
    np.testing.assert_array_equal(again.labels, tiny[1].labels)
    np.testing.assert_array_equal(again.image, tiny[1].image)
    np.testing.assert_array_equal(again.affine, tiny[1].affine)
    assert again.seed == 1


def test_seeds_vary_anatomy_and_image(tiny):
    assert not np.array_equal(tiny[0].labels, tiny[1].labels)
    assert not np.allclose(tiny[0].image, tiny[1].image)
    assert tiny[0].parameters["subcutaneous_fat_mm"] != tiny[1].parameters["subcutaneous_fat_mm"]
    livers = [volume_ml(p, "liver") for p in tiny.values()]
    assert len(set(livers)) == 3


def test_tiny_generation_is_fast():
    ph.make_phantom("tiny", 5)  # warm caches (scheme table)
    start = time.perf_counter()
    ph.make_phantom("tiny", 6)
    assert time.perf_counter() - start < 1.0


def test_tiny_shapes_types_and_ras_affine(tiny):
    p = tiny[0]
    assert p.image.shape == (48, 40, 96, 4) and p.image.dtype == np.float32
    assert p.labels.shape == (48, 40, 96) and p.labels.dtype == np.uint8
    assert p.affine.shape == (4, 4) and p.affine.dtype == np.float64
    assert nib.aff2axcodes(p.affine) == ("R", "A", "S")
    assert p.spacing == pytest.approx((10.0, 10.0, 10.0))
    assert p.channel_names == ("water", "fat", "in_phase", "opposed_phase")
    top = (p.affine @ [0, 0, p.shape[2] - 1, 1])[2]
    assert top == pytest.approx(ph.TOP_Z_MM)


def test_ukbob_size_has_exact_shape_and_same_anatomy_as_tiny(tiny):
    labels, affine, _ = ph.make_labels("ukbob", 0)
    assert labels.shape == (224, 160, 501)
    assert np.linalg.norm(affine[:3, :3], axis=0) == pytest.approx((2.232143, 2.232143, 3.0))
    assert len(np.unique(labels)) - 1 >= 69
    for name in ("liver", "kidney_left", "urinary_bladder", "heart"):
        fine = world_centroid(labels, name, affine)
        coarse = world_centroid(tiny[0], name)
        assert np.linalg.norm(fine - coarse) < 12.0, name


def test_explicit_shape_covers_default_field_of_view():
    p = ph.make_phantom((24, 20, 48), seed=3)
    assert p.labels.shape == (24, 20, 48) and p.image.shape == (24, 20, 48, 4)
    assert p.spacing == pytest.approx((20.0, 20.0, 20.0))


@pytest.mark.parametrize("size", ["huge", (10, 10), (4, 40, 40), (10.5, 40, 40), None])
def test_bad_size_raises(size):
    with pytest.raises(ValueError):
        ph.make_phantom(size)


def test_negative_noise_raises():
    with pytest.raises(ValueError, match="noise"):
        ph.make_phantom("tiny", noise=-0.1)


# ----------------------------------------------------------------------------- anatomy


def test_label_values_belong_to_ukbob_and_cover_most_structures(tiny, small):
    for p in (*tiny.values(), small):
        SCHEME.validate_labelmap(p.labels)
        assert 20 not in p.present_labels()
    assert min(len(p.present_labels()) for p in tiny.values()) >= 60
    assert len(small.present_labels()) >= 70


def test_every_body_voxel_is_labelled(tiny):
    for p in tiny.values():
        body = p.labels > 0
        assert not (ndimage.binary_fill_holes(body) & ~body).any()
        for k in range(p.shape[2]):  # no enclosed air in any axial slice either
            section = body[:, :, k]
            assert not (ndimage.binary_fill_holes(section) & ~section).any()
        assert (p.labels == SCHEME.lookup("subcutaneous_fat")).sum() > 0.05 * body.sum()


def test_internal_organs_do_not_touch_air(tiny, small):
    for p in (*tiny.values(), small):
        near_air = ndimage.binary_dilation(p.labels == 0)
        for name in INTERNAL:
            assert not (near_air & (p.labels == SCHEME.lookup(name))).any(), name


@pytest.mark.parametrize("pair", PAIRS)
def test_left_structures_lie_at_smaller_ras_x(tiny, pair):
    for p in tiny.values():
        left = world_centroid(p, f"{pair}_left")
        right = world_centroid(p, f"{pair}_right")
        assert left[0] < 0.0 < right[0], (pair, left, right)


def test_left_is_left_in_voxel_order_too(tiny):
    # The affine maps increasing axis-0 index to the patient's Right (+x in RAS).
    p = tiny[0]
    left = ndimage.center_of_mass(p.labels == SCHEME.lookup("kidney_left"))
    right = ndimage.center_of_mass(p.labels == SCHEME.lookup("kidney_right"))
    assert left[0] < right[0]


def test_organ_sides_and_heights(tiny):
    for p in tiny.values():
        c = {n: world_centroid(p, n) for n in ("liver", "spleen", "stomach", "heart", "gallbladder",
                                               "urinary_bladder", "thyroid_gland", "aorta", "sternum",
                                               "vertebra_body", "kidney_left", "adrenal_gland_left")}
        assert c["liver"][0] > 0 > c["spleen"][0]
        assert c["stomach"][0] < 0 and c["gallbladder"][0] > 0 and c["heart"][0] < 0
        assert c["thyroid_gland"][2] > c["heart"][2] > c["liver"][2] > c["urinary_bladder"][2]
        assert c["adrenal_gland_left"][2] > c["kidney_left"][2]
        assert c["sternum"][1] > c["heart"][1] > c["vertebra_body"][1]


def test_relative_volumes_are_plausible(small):
    v = {n: volume_ml(small, n) for n in ("liver", "spleen", "kidney_left", "heart", "adrenal_gland_left",
                                          "urinary_bladder", "prostate")}
    assert 900 < v["liver"] < 2600
    assert v["liver"] > v["spleen"] > v["adrenal_gland_left"]
    assert v["liver"] > v["heart"] > v["kidney_left"] > v["prostate"]
    lungs = sum(volume_ml(small, s.name) for s in SCHEME.structures.values() if s.name.startswith("lung_"))
    assert lungs > 2 * v["heart"]


# ----------------------------------------------------------------------------- Dixon contrasts


def test_dixon_channels_without_noise_obey_the_dixon_relations():
    p = ph.make_phantom("tiny", 0, noise=0.0)
    water, fat, in_phase, opposed = np.moveaxis(p.image, -1, 0)
    np.testing.assert_allclose(in_phase, water + fat, rtol=1e-6)
    np.testing.assert_allclose(opposed, np.abs(water - fat), rtol=1e-6)
    assert np.all(p.image[p.labels == 0] == 0)


def test_dixon_contrast_by_tissue(tiny):
    p = tiny[0]
    water, fat = p.image[..., 0], p.image[..., 1]
    sat = p.labels == SCHEME.lookup("subcutaneous_fat")
    assert fat[sat].mean() > 0.6 and fat[sat].mean() > 4 * water[sat].mean()
    for name in ("liver", "spleen", "muscle", "kidney_right"):
        mask = p.labels == SCHEME.lookup(name)
        assert water[mask].mean() > 3 * fat[mask].mean(), name
    lung = p.labels == SCHEME.lookup("lung_upper_lobe_right")
    assert water[lung].mean() < 0.3 * water[p.labels == SCHEME.lookup("spleen")].mean()
    assert p.image[p.labels == 0].mean() < 0.05  # air: noise floor only


def test_noise_is_added_on_top_of_the_clean_contrasts():
    clean = ph.make_phantom("tiny", 4, noise=0.0).image
    noisy = ph.make_phantom("tiny", 4, noise=0.05).image
    body = ph.make_phantom("tiny", 4, noise=0.0).labels > 0
    difference = (noisy - clean)[body]
    assert 0.02 < difference.std() < 0.1
    assert abs(np.median(difference)) < 0.02
    residual = noisy[..., 2] - noisy[..., 0] - noisy[..., 1]
    assert abs(np.median(residual[body])) < 0.05


# ----------------------------------------------------------------------------- corruptions


def corrupt_one(labels, kind, seed=0):
    out, records = ph.corrupt_labels(labels, seed=seed, kinds=[kind])
    assert len(records) == 1
    record = records[0]
    assert set(record) == {"label", "name", "kind", "params", "voxels_before", "voxels_after", "damaged"}
    assert record["kind"] == kind and record["name"] == SCHEME.name_of(record["label"])
    assert record["label"] not in BODY_COMPOSITION
    assert record["voxels_before"] == int((labels == record["label"]).sum())
    assert record["voxels_after"] == int((out == record["label"]).sum())
    json.dumps(records)  # records must be JSON-serialisable
    assert np.array_equal(out == 0, labels == 0), "corruptions must not move the body outline"
    return out, record


def removed_became_tissue(before, after, label):
    removed = (before == label) & (after != label)
    return removed.any() and set(np.unique(after[removed]).tolist()) <= BODY_COMPOSITION


@pytest.mark.parametrize("seed", [0, 1])
def test_truncation_cuts_beyond_a_plane(tiny, seed):
    labels = tiny[seed].labels
    out, rec = corrupt_one(labels, "truncation", seed)
    p = rec["params"]
    assert rec["voxels_after"] < rec["voxels_before"] and rec["voxels_after"] > 0
    kept = np.nonzero(out == rec["label"])[p["axis"]]
    assert (kept < p["cut_index"]).all() if p["side"] == "high" else (kept > p["cut_index"]).all()
    assert removed_became_tissue(labels, out, rec["label"])
    assert np.array_equal(out[labels != rec["label"]], labels[labels != rec["label"]])


def test_swap_exchanges_left_and_right(tiny):
    labels = tiny[0].labels
    out, rec = corrupt_one(labels, "swap")
    partner = rec["params"]["partner"]
    assert ph.partner_of(rec["label"]) == partner
    assert {rec["name"].rsplit("_", 1)[1], rec["params"]["partner_name"].rsplit("_", 1)[1]} == {"left", "right"}
    assert (out[labels == rec["label"]] == partner).all() and (out[labels == partner] == rec["label"]).all()
    assert rec["voxels_after"] == int((labels == partner).sum())
    untouched = (labels != rec["label"]) & (labels != partner)
    assert np.array_equal(out[untouched], labels[untouched])


def test_merge_relabels_as_a_touching_neighbour(tiny):
    labels = tiny[1].labels
    out, rec = corrupt_one(labels, "merge")
    into = rec["params"]["into"]
    assert rec["voxels_after"] == 0 and into != rec["label"]
    assert (out[labels == rec["label"]] == into).all()
    assert (ndimage.binary_dilation(labels == rec["label"]) & (labels == into)).any()


def test_dilation_grows_inside_the_body(tiny):
    labels = tiny[0].labels
    out, rec = corrupt_one(labels, "dilation")
    assert rec["voxels_after"] > rec["voxels_before"]
    assert (out[labels == rec["label"]] == rec["label"]).all()
    grown = (out == rec["label"]) & (labels != rec["label"])
    reach = ndimage.binary_dilation(labels == rec["label"], iterations=rec["params"]["iterations"])
    assert not (grown & ~reach).any()


def test_erosion_shrinks_and_leaves_tissue(tiny):
    labels = tiny[2].labels
    out, rec = corrupt_one(labels, "erosion", seed=4)
    assert 0 < rec["voxels_after"] < rec["voxels_before"]
    assert not ((out == rec["label"]) & (labels != rec["label"])).any()
    assert removed_became_tissue(labels, out, rec["label"])


def test_dropped_slices_empty_exactly_the_recorded_slices(tiny):
    labels = tiny[0].labels
    out, rec = corrupt_one(labels, "dropped_slices", seed=2)
    slices = rec["params"]["slices"]
    before, after = labels == rec["label"], out == rec["label"]
    assert slices and all(before[:, :, k].any() and not after[:, :, k].any() for k in slices)
    others = np.setdiff1d(np.arange(labels.shape[2]), slices)
    np.testing.assert_array_equal(after[:, :, others], before[:, :, others])
    assert removed_became_tissue(labels, out, rec["label"])


def test_holes_are_punched_at_the_recorded_centres(small):
    labels = small.labels
    out, rec = corrupt_one(labels, "holes", seed=3)
    assert rec["voxels_after"] < rec["voxels_before"]
    for center in rec["params"]["centers"]:
        assert labels[tuple(center)] == rec["label"] and out[tuple(center)] != rec["label"]
        assert out[tuple(center)] in BODY_COMPOSITION
    assert not ((out == rec["label"]) & (labels != rec["label"])).any()


@pytest.mark.parametrize("seed", [0, 7])
def test_spurious_blob_adds_a_disconnected_component(tiny, seed):
    labels = tiny[0].labels
    out, rec = corrupt_one(labels, "spurious_blob", seed)
    before, after = labels == rec["label"], out == rec["label"]
    assert rec["voxels_after"] == rec["voxels_before"] + rec["params"]["voxels_added"] > rec["voxels_before"]
    assert ndimage.label(after)[1] > ndimage.label(before)[1]
    components, _ = ndimage.label(after)
    blob = components == components[tuple(rec["params"]["center"])]
    assert not (blob & before).any()
    assert (before & ~after).sum() == 0


def test_damaged_structures_are_recorded_and_counted_as_corrupted():
    """A dilation overwrites its neighbours: they are wrong labels too, recorded under ``damaged``
    (Dice below DAMAGE_DICE against the map before) and counted by the ablation."""
    from SwinBOBLib.solf import ablation

    before = np.zeros((12, 12, 12), np.int16)
    before[2:6, 2:10, 2:10] = 5   # liver
    before[6:8, 2:10, 2:10] = 1   # spleen, a thin slab against it
    before[8:12, :, :] = 66       # muscle
    after = before.copy()
    after[6:8, 2:10, 2:10] = 5    # the liver grew over the spleen
    after[8, 4:6, 4:6] = 5        # and over 4 of the muscle's 576 voxels (Dice 0.997: not damaged)
    damaged = ph.damaged_structures(before, after)
    assert [d["label"] for d in damaged] == [1, 5]  # the liver changed too (corrupt_labels names it)
    assert damaged[0]["name"] == "spleen" and damaged[0]["dice"] == 0.0
    damaged = damaged[:1]
    record = {"id": "case_0000", "label": 5, "kind": "dilation", "params": {"iterations": 1}, "damaged": damaged}
    assert ablation.corrupted_pairs(record) == {("case_0000", 5), ("case_0000", 1)}
    assert ablation.corrupted_pairs({**record, "damaged": []}) == {("case_0000", 5)}


def test_corrupt_labels_leaves_its_input_alone_and_is_deterministic(tiny):
    labels = tiny[0].labels
    copy = labels.copy()
    out1, rec1 = ph.corrupt_labels(labels, seed=9, n_corruptions=6)
    out2, rec2 = ph.corrupt_labels(labels, seed=9, n_corruptions=6)
    np.testing.assert_array_equal(labels, copy)
    np.testing.assert_array_equal(out1, out2)
    assert rec1 == rec2 and len(rec1) == 6
    for record in rec1:  # what else each corruption made wrong, never the structures it names
        assert record["label"] not in {d["label"] for d in record["damaged"]}
    assert len({r["label"] for r in rec1}) == 6
    assert out1.dtype == labels.dtype and not np.array_equal(out1, labels)
    same, none = ph.corrupt_labels(labels, n_corruptions=0)
    assert none == [] and np.array_equal(same, labels) and same is not labels


def test_structures_argument_restricts_the_choice(tiny):
    _, records = ph.corrupt_labels(tiny[0].labels, seed=1, n_corruptions=2, structures=["liver", "spleen"])
    assert {r["name"] for r in records} == {"liver", "spleen"}


@pytest.mark.parametrize("kwargs", [dict(kinds=["melt"]), dict(kinds=[]), dict(n_corruptions=-1),
                                    dict(n_corruptions=1.5), dict(structures=["no_such_organ"]),
                                    dict(kinds=["swap"], structures=["liver"])])
def test_corrupt_labels_rejects_bad_arguments(tiny, kwargs):
    with pytest.raises(ValueError):
        ph.corrupt_labels(tiny[0].labels, **kwargs)


@pytest.mark.parametrize("labels", [np.zeros((4, 4), np.uint8), np.full((4, 4, 4), 20, np.uint8),
                                    np.full((4, 4, 4), 0.5)])
def test_corrupt_labels_rejects_bad_label_maps(labels):
    with pytest.raises(ValueError):
        ph.corrupt_labels(labels)


# ----------------------------------------------------------------------------- cohorts


def test_write_cohort_writes_a_loadable_decathlon_dataset(tmp_path):
    calls = []
    summary = ph.write_cohort(tmp_path / "cohort", n=2, size="tiny", seed=10, corrupt=True, corrupt_fraction=0.5,
                              progress=lambda done, total: calls.append((done, total)))
    root = tmp_path / "cohort"
    assert calls == [(1, 2), (2, 2)]
    assert summary["cases"] == ["case_0000", "case_0001"] and len(summary["corrupted"]) == 1
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["numTraining"] == 2
    assert dataset["modality"] == {"0": "water", "1": "fat", "2": "in_phase", "3": "opposed_phase"}
    assert dataset["labels"]["0"] == "background" and dataset["labels"]["5"] == "liver"
    assert len(dataset["labels"]) == 72 and "20" not in dataset["labels"]
    for i, entry in enumerate(dataset["training"]):
        case = f"case_{i:04d}"
        assert entry == {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
        expected = ph.make_phantom("tiny", 10 + i)
        image = sio.load_image(root / entry["image"])
        assert image.array.shape == (48, 40, 96, 4) and image.orientation == "RAS"
        np.testing.assert_allclose(image.affine, expected.affine, atol=1e-5)
        np.testing.assert_allclose(image.array, expected.image, atol=1e-5)
        label = sio.load_labelmap(root / entry["label"])
        clean = sio.load_labelmap(root / "labelsClean" / f"{case}.nii.gz")
        assert label.array.dtype == np.uint8 and label.orientation == "RAS"
        np.testing.assert_array_equal(clean.array, expected.labels)
        records = json.loads((root / "corruptions" / f"{case}.json").read_text())
        if case in summary["corrupted"]:
            assert records and not np.array_equal(label.array, clean.array)
            assert records[0]["voxels_after"] == int((label.array == records[0]["label"]).sum())
        else:
            assert records == [] and np.array_equal(label.array, clean.array)


def test_balanced_kinds_plant_every_kind_in_turn(tmp_path):
    import json

    n = len(ph.CORRUPTION_KINDS)
    summary = ph.write_cohort(tmp_path / "c", n=n, size="tiny", seed=3, corrupt=True, corrupt_fraction=1.0,
                              balanced_kinds=True)
    kinds = [json.loads((tmp_path / "c" / "corruptions" / f"{case}.json").read_text())[0]["kind"]
             for case in summary["corrupted"]]
    assert kinds == list(ph.CORRUPTION_KINDS)


def test_write_cohort_without_corruption_writes_no_extra_folders(tmp_path):
    summary = ph.write_cohort(tmp_path, n=1, size="tiny", seed=0)
    assert summary["corrupted"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=-2), dict(n=1.5), dict(n="2"), dict(size="huge"),
                                    dict(corrupt=True, corrupt_fraction=1.5)])
def test_write_cohort_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        ph.write_cohort(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
