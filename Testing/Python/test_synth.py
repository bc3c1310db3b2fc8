"""Synthesis training (images rendered from label maps): generation labels, the transform chain,
the masked loss, label-map-only datasets and a real training run in synthesis mode."""

import importlib.util
import re
import shutil

import numpy as np
import pytest
import torch

from SwinBOBLib import io, labels, phantom, training
from SwinBOBLib.io import datasets
from SwinBOBLib.models.loading import load_checkpoint
from SwinBOBLib.training.losses import MaskedDiceCELoss
from SwinBOBLib.training.synthesis import (
    IGNORE,
    PAD,
    PARTIAL,
    TISSUE_BASE,
    RandMirrord,
    RandSlabd,
    SynthesisConfig,
    allowed_channels,
    generation_labels,
    render_intensities,
    synthesis_transforms,
    synthesize_volume,
    target_table,
    tissue_groups,
)

LAYOUT = labels.channel_layout("ukbob", "compact")
TINY_SYNTH = {"network": "segresnet", "feature_size": 8, "roi_size": 32, "batch_size": 2, "crops_per_volume": 2,
              "device": "cpu", "split": [0.5, 0.5, 0.0], "progress": False, "synthesis": "labels",
              "target_spacing_mm": [10.0, 10.0, 10.0], "lateral_flip": "off"}


@pytest.fixture(scope="module")
def ct(samples):
    """The real CT sample's label map (TotalSegmentator 'total') remapped to UKBOB, and its image."""
    image = io.load_image(samples / "example_ct_sm.nii.gz")
    label = io.load_labelmap(samples / "example_seg.nii.gz", scheme="total")
    return np.asarray(image.array, np.float32), labels.remap(label.array, "total", "ukbob")


def test_generation_labels_split_only_the_unlabelled_body(ct):
    image, label = ct
    gen = generation_labels(label, image, tissue_classes=4)
    labelled = label > 0
    assert np.array_equal(gen[labelled], label[labelled])  # organs keep their labels
    tissue = gen >= TISSUE_BASE
    assert tissue.any() and not (tissue & labelled).any()
    assert set(np.unique(gen[tissue]).tolist()) <= {TISSUE_BASE + k for k in range(4)}
    # Clusters are ordered by intensity: on CT the brightest cluster is denser than the darkest.
    means = [image[gen == TISSUE_BASE + k].mean() for k in range(4) if (gen == TISSUE_BASE + k).any()]
    assert means == sorted(means)
    # Air around the body stays outside (0): the scan's corners are not body.
    assert gen[0, 0, 0] == 0 and gen[-1, -1, -1] == 0
    assert np.array_equal(generation_labels(label, None), label.astype(np.int16))


def test_generation_labels_refuse_values_that_collide_with_tissue_classes():
    with pytest.raises(ValueError, match="below 200"):
        generation_labels(np.full((4, 4, 4), 230), None)


def test_target_table_maps_labels_to_channels_partially_labels_tissue_and_ignores_padding():
    table = target_table(LAYOUT)
    lookup = LAYOUT.channel_lookup()
    assert table[0] == 0 and table[5] == lookup[5] and table[21] == lookup[21]
    assert table[TISSUE_BASE] == PARTIAL and table[TISSUE_BASE + 3] == PARTIAL and table[PAD] == IGNORE
    old = target_table(LAYOUT, "ignore")
    assert old[TISSUE_BASE] == IGNORE and old[PAD] == IGNORE and old[5] == lookup[5]


def test_allowed_channels_exclude_the_structures_the_case_contains(ct):
    _, label = ct
    allowed = allowed_channels(generation_labels(label, ct[0]), LAYOUT)
    lookup = LAYOUT.channel_lookup()
    present = set(np.unique(label).tolist()) - {0}
    assert allowed.shape == (LAYOUT.num_channels,) and allowed[0] == 1.0
    assert all(allowed[lookup[v]] == 0.0 for v in present)  # the liver is not in the fat around it
    absent = [v for v in LAYOUT.labels if v and v not in present]
    assert absent and all(allowed[lookup[v]] == 1.0 for v in absent)  # fat, muscle, out-of-view organs may be


def _gen_volume(ct):
    image, label = ct
    return generation_labels(label, image)[None]


def test_chain_gives_normalised_patches_with_valid_targets_and_random_contrast(ct):
    gen = _gen_volume(ct)
    chain = synthesis_transforms(LAYOUT, (32, 32, 32), 2, (3.0, 3.0, 3.0), SynthesisConfig(slab_prob=0.0))
    chain.set_random_state(seed=1)
    first = chain({"gen": gen})
    assert len(first) == 2
    for crop in first:
        assert tuple(crop["image"].shape) == (1, 32, 32, 32) and crop["image"].dtype == torch.float32
        assert float(crop["image"].min()) >= 0.0 and float(crop["image"].max()) <= 1.0
        values = set(torch.unique(crop["label"]).tolist())
        assert values <= set(range(LAYOUT.num_channels)) | {IGNORE, PARTIAL}
        assert "gen" not in crop and "pad" not in crop
        assert torch.equal(torch.as_tensor(crop["allowed"]), torch.from_numpy(allowed_channels(gen, LAYOUT)))
    assert any(bool((crop["label"] == PARTIAL).any()) for crop in first)  # the unlabelled CT body
    chain.set_random_state(seed=1)
    again = chain({"gen": gen})
    assert torch.equal(first[0]["image"], again[0]["image"])  # seeded: resumable training replays it
    chain.set_random_state(seed=2)
    other = chain({"gen": gen})
    assert not torch.equal(first[0]["image"], other[0]["image"])


def test_padding_beyond_a_thin_scan_is_zero_and_ignored(ct):
    gen = _gen_volume(ct)[:, :, :, :8]  # 8 slices: crops of 32 reach far beyond the scan
    chain = synthesis_transforms(LAYOUT, (32, 32, 32), 1, (3.0, 3.0, 3.0),
                                 SynthesisConfig(slab_prob=0.0, rotate_deg=0.0, scale=0.0, shear=0.0,
                                                 elastic_prob=0.0, crop_margin=1.0))
    chain.set_random_state(seed=3)
    crop = chain({"gen": gen})[0]
    beyond = crop["label"][0] == IGNORE
    planes = beyond.reshape(-1, 32).all(dim=0)  # z planes wholly beyond the scan
    assert int(planes.sum()) >= 32 - 8
    assert float(crop["image"][0][..., planes].abs().max()) == 0.0


def test_slab_keeps_a_thin_field_of_view():
    slab = RandSlabd(prob=1.0, thickness_mm=(30.0, 30.0), spacing_mm=3.0)
    slab.set_random_state(seed=0)
    data = {"image": torch.ones(1, 8, 8, 40), "label": torch.ones(1, 8, 8, 40, dtype=torch.long)}
    out = slab(data)
    kept = out["image"][0, 0, 0] > 0
    assert int(kept.sum()) == 10  # 30 mm at 3 mm
    assert bool((out["label"][0, 0, 0][~kept] == IGNORE).all()) and bool((out["label"][0, 0, 0][kept] == 1).all())


def test_synthetic_validation_volume_is_seeded_and_keeps_the_grid(ct):
    gen = _gen_volume(ct)[0]
    image, label = synthesize_volume(gen, LAYOUT, seed=5)
    image2, _ = synthesize_volume(gen, LAYOUT, seed=5)
    assert image.shape == (1, *gen.shape) and label.shape == gen.shape
    assert np.array_equal(image, image2)
    assert not np.array_equal(image, synthesize_volume(gen, LAYOUT, seed=6)[0])


def test_masked_loss_ignores_voxels_and_survives_an_all_ignored_batch():
    torch.manual_seed(0)
    loss = MaskedDiceCELoss(IGNORE)
    logits = torch.randn(1, 3, 4, 4, 4)
    target = torch.randint(0, 3, (1, 1, 4, 4, 4))
    changed = target.clone()
    changed[..., :2] = IGNORE
    other = changed.clone()
    other[..., :2] = (target[..., :2] + 1) % 3  # what lies under the ignored voxels does not matter
    other[..., :2] = IGNORE
    assert torch.allclose(loss(logits, changed), loss(logits, other))
    assert not torch.allclose(loss(logits, changed), loss(logits, target))
    assert torch.isfinite(loss(logits, torch.full_like(target, IGNORE)))
    # What the network outputs at an ignored voxel does not matter either (no background target there).
    noisy = logits.clone()
    noisy[..., :2] = torch.randn_like(noisy[..., :2]) * 5
    assert torch.allclose(loss(logits, changed), loss(noisy, changed))


def test_partial_label_loss_accepts_any_allowed_channel_and_punishes_the_others():
    torch.manual_seed(1)
    loss = MaskedDiceCELoss(IGNORE, PARTIAL)
    logits = torch.randn(2, 4, 4, 4, 4)
    target = torch.randint(1, 3, (2, 1, 4, 4, 4))
    target[..., :2] = PARTIAL  # the unlabelled body: channels 1 and 2 are the case's structures
    allowed = torch.tensor([[1.0, 0.0, 0.0, 1.0]] * 2)
    base = loss(logits, target, allowed)
    body = target[:, 0] == PARTIAL
    # Which allowed channel the body takes is the network's business: swapping them changes nothing.
    swapped = logits.clone()
    swapped[:, [0, 3]] = torch.where(body[:, None], logits[:, [3, 0]], logits[:, [0, 3]])
    assert torch.allclose(loss(swapped, target, allowed), base, atol=1e-6)
    # Putting the body on a structure the case contains costs, and more than leaving it allowed.
    organ = logits.clone()
    organ[:, 1] = torch.where(body, 10.0, logits[:, 1])
    settled = logits.clone()
    settled[:, 3] = torch.where(body, 10.0, logits[:, 3])
    assert float(loss(organ, target, allowed)) > float(base) > float(loss(settled, target, allowed))
    # Without the allowed channels the body is ignored, as with unlabelled_body: ignore.
    ignored = torch.where(target == PARTIAL, torch.full_like(target, IGNORE), target)
    assert torch.allclose(loss(organ, target), MaskedDiceCELoss(IGNORE)(organ, ignored))


def test_config_refuses_bad_synthesis_settings():
    with pytest.raises(ValueError, match="synthesis must be one of"):
        training.TrainConfig.from_dict({"synthesis": "images"})
    with pytest.raises(ValueError, match="unknown synthesis options"):
        training.TrainConfig.from_dict({"synthesis": "labels", "synthesis_options": {"bogus": 1}})
    with pytest.raises(ValueError, match="unlabelled_body must be one of partial, ignore, got 'background'"):
        training.TrainConfig.from_dict({"synthesis": "labels", "synthesis_options": {"unlabelled_body": "background"}})
    with pytest.raises(ValueError, match="intensity must be 'percentile'"):
        training.TrainConfig.from_dict({"synthesis": "labels", "intensity": "ct_window"})


@pytest.fixture(scope="module")
def label_folder(tmp_path_factory):
    """A folder holding only label maps (no images, no dataset.json)."""
    root = tmp_path_factory.mktemp("cohort")
    phantom.write_cohort(root / "ph", n=2, size="tiny", seed=3)
    folder = root / "labels"
    folder.mkdir()
    for path in sorted((root / "ph" / "labelsTr").glob("*.nii.gz")):
        shutil.copy(path, folder / path.name)
    return folder


def test_a_folder_of_label_maps_is_a_dataset_that_needs_its_scheme(label_folder):
    with pytest.raises(datasets.DatasetError, match="--dataset-scheme"):
        datasets.load_dataset(label_folder)
    data = datasets.load_dataset(label_folder, scheme="ukbob")
    assert [c.case_id for c in data.cases] == ["case_0000", "case_0001"]
    assert all(c.images == () and c.label.exists() for c in data.cases)


def test_csv_rows_may_hold_only_a_label(label_folder, tmp_path):
    table = tmp_path / "cases.csv"
    target = tmp_path / "a.nii.gz"
    shutil.copy(label_folder / "case_0000.nii.gz", target)
    table.write_text("label\na.nii.gz\n", encoding="utf-8")
    data = datasets.load_dataset(table, scheme="ukbob")
    assert data.cases[0].images == () and data.cases[0].case_id == "a"


def test_label_maps_without_images_need_synthesis(label_folder, tmp_path):
    options = {**TINY_SYNTH, "synthesis": "off", "dataset_scheme": "ukbob", "max_steps": 1}
    with pytest.raises(ValueError, match="--synthesis labels"):
        training.train(options, label_folder, tmp_path / "run")


def test_training_from_label_maps_alone_gives_a_one_channel_model(label_folder, tmp_path):
    summary = training.train({**TINY_SYNTH, "dataset_scheme": "ukbob", "max_steps": 2}, label_folder, tmp_path / "run")
    assert summary["status"] == "done" and summary["global_step"] == 2 and summary["best_dice"] >= 0
    model, metadata = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert metadata.in_channels == 1 and metadata.contrasts is None and metadata.network == "segresnet"
    assert metadata.training["synthesis"] == "labels"
    assert metadata.training["synthesis_options"]["tissue_classes"] == 4


def test_bounds_geometry_warnings_name_the_mismatch():
    from SwinBOBLib.solf.bounds import Bounds, geometry_warnings

    bounds = Bounds({}, n_samples=10, cohort={"description": "10 phantoms", "synthetic": True, "n": 10,
                                              "spacing_mm": [5.0, 5.0, 5.0], "extent_mm": [480.0, 400.0, 960.0]})
    same = geometry_warnings(bounds, (5.0, 5.0, 5.0), (96, 80, 192))
    assert len(same) == 1 and "synthetic" in same[0]  # matching geometry: only the cohort caveat
    notes = geometry_warnings(bounds, (3.0, 3.0, 3.0), (117, 91, 20))
    assert any("extent" in n and "960" in n for n in notes)
    assert any("voxel spacing" in n for n in notes)
    unknown = geometry_warnings(Bounds({}), (1.0, 1.0, 1.0), (10, 10, 10))
    assert unknown and "do not record" in unknown[0]


def test_solf_check_warns_when_the_scan_does_not_match_the_bundled_cohort(tmp_path, capsys):
    from SwinBOBLib import cli
    from SwinBOBLib.cli.solf import EXIT_FLAGGED
    from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS

    phantom.write_cohort(tmp_path / "ph", n=1, size="tiny", seed=4)  # 10 mm voxels; the cohort's are 5 mm
    mapped = tmp_path / "ph" / "labelsTr" / "case_0000.nii.gz"
    code = cli.main(["solf", "check", str(mapped), "--bounds", str(DEFAULT_BOUNDS)])
    err = capsys.readouterr().err
    assert code in (0, EXIT_FLAGGED)  # a verdict was given, with the warnings beside it
    assert "synthetic cohort" in err and "voxel spacing" in err and "unreliable" in err


def test_solf_check_of_a_thin_slab_needs_partial_and_then_warns(samples, tmp_path, capsys):
    from SwinBOBLib import cli
    from SwinBOBLib.cli.solf import EXIT_FLAGGED
    from SwinBOBLib.runtime.resources import DEFAULT_BOUNDS

    source = io.load_labelmap(samples / "example_seg_fast_force_split.nii.gz", scheme="total")
    mapped = tmp_path / "ct.ukbob.nii.gz"
    io.save_labelmap(labels.remap(source.array, "total", "ukbob"), source, mapped, scheme="ukbob")
    assert cli.main(["solf", "check", str(mapped), "--bounds", str(DEFAULT_BOUNDS)]) not in (0, EXIT_FLAGGED)
    assert "--partial" in capsys.readouterr().err
    code = cli.main(["solf", "check", str(mapped), "--bounds", str(DEFAULT_BOUNDS), "--partial"])
    err = capsys.readouterr().err
    assert code in (0, EXIT_FLAGGED) and "extent" in err and "unreliable" in err


def _corner_organ_volume():
    """A 64^3 body of one tissue class with a 4^3 liver in a corner: crops drawn anywhere in the body
    rarely see it."""
    gen = np.full((1, 64, 64, 64), TISSUE_BASE, np.int16)
    gen[0, 2:6, 2:6, 2:6] = 5  # liver
    return gen


def _crops_with_liver(config: SynthesisConfig, seeds=range(12)) -> int:
    chain = synthesis_transforms(LAYOUT, (16, 16, 16), 1, (3.0, 3.0, 3.0), config)
    liver = LAYOUT.channel_lookup()[5]
    seen = 0
    for seed in seeds:
        chain.set_random_state(seed=seed)
        seen += int(bool((chain({"gen": _corner_organ_volume()})[0]["label"] == liver).any()))
    return seen


def test_structure_crops_are_class_balanced_and_body_crops_are_not():
    still = dict(slab_prob=0.0, rotate_deg=0.0, scale=0.0, shear=0.0, elastic_prob=0.0, crop_margin=1.0)
    # Structure sampling, body weight 0: every crop is centred on the (one) structure.
    assert _crops_with_liver(SynthesisConfig(crop_sampling="structures", body_crop_weight=0.0, **still)) == 12
    # Body sampling: centres anywhere in the 64^3 body; a 16^3 crop holds the corner organ rarely.
    assert _crops_with_liver(SynthesisConfig(crop_sampling="body", **still)) < 6


def test_body_crop_fraction_mixes_structure_and_body_crops():
    still = dict(slab_prob=0.0, rotate_deg=0.0, scale=0.0, shear=0.0, elastic_prob=0.0, crop_margin=1.0,
                 crop_sampling="structures", body_crop_weight=0.0)
    seeds = range(40)
    # Half the draws centred on the structure (always hold it), half anywhere in the body (rarely).
    mixed = _crops_with_liver(SynthesisConfig(body_crop_fraction=0.5, **still), seeds)
    assert 10 <= mixed <= 32
    assert _crops_with_liver(SynthesisConfig(body_crop_fraction=1.0, **still), seeds) < 12
    # The same seed gives the same crops (the mix is part of the seeded chain).
    assert mixed == _crops_with_liver(SynthesisConfig(body_crop_fraction=0.5, **still), seeds)


def _liver_centres(config: SynthesisConfig, seeds=range(24)) -> np.ndarray:
    """Where in a 16^3 patch the centre of a 4^3 liver in the middle of a 64^3 body falls."""
    gen = np.full((1, 64, 64, 64), TISSUE_BASE, np.int16)
    gen[0, 30:34, 30:34, 30:34] = 5
    chain = synthesis_transforms(LAYOUT, (16, 16, 16), 1, (3.0, 3.0, 3.0), config)
    liver = LAYOUT.channel_lookup()[5]
    centres = []
    for seed in seeds:
        chain.set_random_state(seed=seed)
        found = np.argwhere(np.asarray(chain({"gen": gen})[0]["label"])[0] == liver)
        centres.append(found.mean(axis=0) if len(found) else np.full(3, np.nan))
    return np.array(centres)


def test_shift_moves_the_structure_off_the_patch_centre_and_keeps_it_in_view():
    still = dict(slab_prob=0.0, rotate_deg=0.0, scale=0.0, shear=0.0, elastic_prob=0.0, crop_margin=1.0,
                 crop_sampling="structures", body_crop_weight=0.0)
    centred = _liver_centres(SynthesisConfig(**still))
    # Without shift the sampled centre is a liver voxel: the liver sits within 2 voxels of the middle.
    assert not np.isnan(centred).any() and np.abs(centred - 7.5).max() <= 2.0
    moved = _liver_centres(SynthesisConfig(shift=0.4, **still))
    held = moved[~np.isnan(moved).any(axis=1)]
    # With shift 0.4 (up to 6.4 voxels per axis) the liver is still in every patch, now spread over it.
    assert len(held) == len(moved)
    assert np.abs(held - 7.5).max() > 4.0 and held.std(axis=0).min() > 1.5
    # Seeded like the rest of the chain.
    np.testing.assert_array_equal(moved, _liver_centres(SynthesisConfig(shift=0.4, **still)))


def test_tied_labels_share_one_intensity_and_untied_ones_do_not():
    gen = np.zeros((12, 12, 12), np.int64)
    gen[:4], gen[4:8], gen[8:] = 5, 1, TISSUE_BASE  # liver, spleen, a tissue class of the body
    flat = dict(std_range=(0.0, 0.0), dark_background_prob=0.0)

    def ties(config, seed):
        image = render_intensities(gen, np.random.RandomState(seed), config)
        means = [float(image[gen == v].mean()) for v in (5, 1, TISSUE_BASE)]
        return len(means) - len(set(means))

    assert sum(ties(SynthesisConfig(**flat), seed) for seed in range(20)) == 0
    # Every label takes a present label's Gaussian: a tie unless the three draws are a permutation.
    assert sum(ties(SynthesisConfig(tied_prob=1.0, **flat), seed) > 0 for seed in range(20)) >= 10
    # Seeded.
    image = render_intensities(gen, np.random.RandomState(3), SynthesisConfig(tied_prob=1.0, **flat))
    np.testing.assert_array_equal(image, render_intensities(gen, np.random.RandomState(3),
                                                            SynthesisConfig(tied_prob=1.0, **flat)))


def test_shared_tissues_render_every_muscle_alike_and_organs_apart():
    scheme = labels.get_scheme("ukbob")
    muscle, fat = tissue_groups("ukbob")
    assert {scheme.name_of(i) for i in fat} == {"subcutaneous_fat", "inner_fat"}
    assert {"muscle", "iliopsoas_left", "gluteus_maximus_right", "autochthon_left"} <= {scheme.name_of(i) for i in muscle}
    assert scheme.lookup("spleen") not in muscle + fat
    gen = np.zeros((12, 12, 12), np.int64)
    gen[:3], gen[3:6], gen[6:9], gen[9:] = scheme.lookup("muscle"), scheme.lookup("iliopsoas_left"), \
        scheme.lookup("spleen"), scheme.lookup("inner_fat")
    flat = dict(std_range=(0.0, 0.0), dark_background_prob=0.0)
    for seed in range(5):
        image = render_intensities(gen, np.random.RandomState(seed), SynthesisConfig(shared_tissues=True, **flat),
                                   tissue_groups("ukbob"))
        assert image[:3].mean() == image[3:6].mean() != image[6:9].mean()
        alone = render_intensities(gen, np.random.RandomState(seed), SynthesisConfig(**flat))
        assert alone[:3].mean() != alone[3:6].mean()


def test_mirroring_flips_left_right_and_exchanges_the_paired_labels():
    scheme = labels.get_scheme("ukbob")
    left, right, liver = (scheme.lookup(n) for n in ("kidney_left", "kidney_right", "liver"))
    gen = torch.zeros((1, 6, 4, 4), dtype=torch.int16)
    gen[0, 0], gen[0, 5], gen[0, 2] = left, TISSUE_BASE, liver
    allowed = torch.ones(LAYOUT.num_channels)
    allowed[LAYOUT.channel_lookup()[left]] = 0  # the case contains a left kidney
    mirror = RandMirrord(LAYOUT, prob=1.0)
    out = mirror({"gen": gen, "allowed": allowed})
    assert (out["gen"][0, 5] == right).all() and (out["gen"][0, 0] == TISSUE_BASE).all()
    assert (out["gen"][0, 3] == liver).all()  # unpaired: mirrored, same label
    assert out["allowed"][LAYOUT.channel_lookup()[right]] == 0 and out["allowed"][LAYOUT.channel_lookup()[left]] == 1
    assert RandMirrord(LAYOUT, prob=0.0)({"gen": gen})["gen"] is gen


def test_mirroring_and_shared_tissue_options_are_checked():
    with pytest.raises(ValueError, match=r"mirror_prob must be in \[0, 1\], got 1.5"):
        SynthesisConfig.from_dict({"mirror_prob": 1.5})
    with pytest.raises(ValueError, match=r"shared_tissues must be true or false, got 'yes'"):
        SynthesisConfig.from_dict({"shared_tissues": "yes"})


def test_crop_sampling_options_are_checked():
    with pytest.raises(ValueError, match="crop_sampling must be one of structures, body"):
        SynthesisConfig.from_dict({"crop_sampling": "organs"})
    with pytest.raises(ValueError, match="body_crop_weight must be >= 0"):
        SynthesisConfig.from_dict({"body_crop_weight": -1})
    with pytest.raises(ValueError, match=r"body_crop_fraction must be in \[0, 1\], got 1.5"):
        SynthesisConfig.from_dict({"body_crop_fraction": 1.5})
    with pytest.raises(ValueError, match=r"shift must be in \[0, 0.5\) \(a fraction of the patch\), got 0.5"):
        SynthesisConfig.from_dict({"shift": 0.5})
    with pytest.raises(ValueError, match=r"tied_prob must be in \[0, 1\], got 2"):
        SynthesisConfig.from_dict({"tied_prob": 2})


def test_training_on_a_real_ct_label_map_gives_its_unlabelled_body_a_partial_label(samples, tmp_path, monkeypatch):
    """The CT's unlabelled body reaches the loss as PARTIAL with the case's allowed channels."""
    source = io.load_labelmap(samples / "example_seg.nii.gz", scheme="total")
    mapped = tmp_path / "ct.ukbob.nii.gz"
    io.save_labelmap(labels.remap(source.array, "total", "ukbob"), source, mapped, scheme="ukbob")
    shutil.copy(samples / "example_ct_sm.nii.gz", tmp_path / "ct.nii.gz")
    rows = ["id,image,label,subject,split"] + [f"ct_{i},ct.nii.gz,ct.ukbob.nii.gz,s{i},{s}"
                                               for i, s in enumerate(["train", "val"])]
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    seen = []
    original = MaskedDiceCELoss.forward

    def spy(self, logits, target, allowed=None):
        seen.append((bool((target == PARTIAL).any()), None if allowed is None else allowed.clone()))
        return original(self, logits, target, allowed)

    monkeypatch.setattr(MaskedDiceCELoss, "forward", spy)
    options = {**TINY_SYNTH, "dataset_scheme": "ukbob", "max_steps": 2}
    summary = training.train(options, tmp_path / "cases.csv", tmp_path / "run")
    assert summary["status"] == "done" and len(seen) == 2
    liver = LAYOUT.channel_lookup()[labels.get_scheme("ukbob").lookup("liver")]
    assert any(body for body, _ in seen)
    for _, allowed in seen:
        assert allowed is not None and allowed.shape == (2, LAYOUT.num_channels)
        assert bool((allowed[:, 0] == 1).all()) and bool((allowed[:, liver] == 0).all())


def test_the_demo_model_recipe_configs_parse_and_later_stages_fine_tune_with_partial_labels(repo_root):
    models = repo_root / "Resources" / "Models"
    first = training.TrainConfig.from_dict(training.load_config_file(models / "swinbob_demo.yaml"))
    second = training.TrainConfig.from_dict(training.load_config_file(models / "swinbob_demo_stage2.yaml"))
    same = ("network", "feature_size", "roi_size", "intensity", "synthesis")
    assert all(getattr(first, k) == getattr(second, k) for k in same)  # the weights carry over as they are
    assert second.target_spacing_mm[0] > first.target_spacing_mm[0]  # stage 2 sees a wider cross-section
    assert SynthesisConfig.from_dict(first.synthesis_options).unlabelled_body == "ignore"
    assert SynthesisConfig.from_dict(second.synthesis_options).unlabelled_body == "partial"
    assert second.lr < first.lr and second.init_checkpoint is None  # the recipe passes --init-checkpoint
    third = training.TrainConfig.from_dict(training.load_config_file(models / "swinbob_demo_stage3.yaml"))
    assert all(getattr(third, k) == getattr(second, k) for k in (*same, "target_spacing_mm", "synthesis_options"))
    assert third.init_checkpoint is None and third.seed != second.seed  # a second cycle, new renders and crops


def _select_script(repo_root):
    spec = importlib.util.spec_from_file_location("select_demo_model", repo_root / "scripts" / "select_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_selection_script_scores_a_run_on_its_rendered_phantoms(repo_root, tmp_path, capsys):
    """scripts/select_demo_model.py on a recipe-shaped work folder (phantom labels two levels above the
    run, the run's split.json), with the bundled model as the run's checkpoint."""
    work = tmp_path / "work"
    phantom.write_cohort(work / "data" / "phantoms", n=1, size="tiny", seed=3)
    run = work / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "split.json").write_text('{"train": [], "val": ["case_0000", "not_a_phantom"], "test": []}')
    shutil.copy(repo_root / "Resources" / "Models" / "swinbob_demo.pt", run / "checkpoints" / "best.pt")
    script = _select_script(repo_root)
    assert script.main([str(run / "checkpoints" / "best.pt"), "--seeds", "1", "--confusion", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    line = out.splitlines()[0]
    assert "val phantoms case_0000 x seeds 1" in line  # cases without a label map are skipped
    scores = {k: float(v) for k, v in re.findall(r"(liver|spleen|kidney_right|kidney_left|mean) ([0-9.]+)", line)}
    assert set(scores) == {"liver", "spleen", "kidney_right", "kidney_left", "mean"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["mean"] == pytest.approx(np.mean([scores[k] for k in script.ORGANS]), abs=1e-3)
    assert "spleen voxels labelled:" in out
    assert script.main([str(run / "checkpoints" / "best.pt"), "--seeds", "1", "--mirror", "--threads", "1"]) == 0
    assert "val phantoms mirrored case_0000" in capsys.readouterr().out
    assert script.main([str(run / "checkpoints" / "best.pt"), "--seeds", "1", "--pad-left", "20", "--threads", "1"]) == 0
    assert "val phantoms padded 20 mm left case_0000" in capsys.readouterr().out
    (run / "split.json").unlink()
    with pytest.raises(SystemExit):  # no run folder split: refused, not guessed
        script.main([str(run / "checkpoints" / "best.pt")])
