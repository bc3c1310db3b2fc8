"""Training augmentation: the left/right-aware flip and the recipe's output shapes."""

import numpy as np
import pytest
import torch

from SwinBOBLib.labels import channel_layout, get_scheme
from SwinBOBLib.training import augment

LAYOUT = channel_layout("ukbob", "compact")
SCHEME = get_scheme("ukbob")


def channel(name):
    return int(LAYOUT.channel_lookup()[SCHEME.lookup(name)])


def test_swap_table_pairs_left_and_right_structures():
    table = augment.lateral_swap_table(LAYOUT)
    for left, right in [("kidney_left", "kidney_right"), ("lung_upper_lobe_left", "lung_upper_lobe_right"),
                        ("gluteus_minimus_left", "gluteus_minimus_right"), ("iliac_vena_left", "iliac_vena_right"),
                        ("common_carotid_artery_left", "common_carotid_artery_right")]:
        assert table[channel(left)] == channel(right) and table[channel(right)] == channel(left)
    for name in ("liver", "aorta", "lung_middle_lobe_right", "atrial_appendage_left"):  # unpaired stay
        assert table[channel(name)] == channel(name)
    assert table[0] == 0
    assert np.array_equal(table[table], np.arange(LAYOUT.num_channels)), "swapping twice is the identity"


def test_swap_table_of_the_full_layout_keeps_its_unused_channel():
    """The full layout has a channel per label value, 20 (unused in UKBOB) included: it stays put
    (the table used to fail on it), and the pairs are swapped as in the compact layout."""
    full = channel_layout("ukbob", "full")
    table = augment.lateral_swap_table(full)
    assert table[20] == 20 and table[0] == 0
    assert table[SCHEME.lookup("kidney_left")] == SCHEME.lookup("kidney_right")
    assert np.array_equal(table[table], np.arange(full.num_channels))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_lateral_flip_mirrors_and_relabels(as_tensor):
    image = np.zeros((1, 8, 4, 4), np.float32)
    label = np.zeros((1, 8, 4, 4), np.int64)
    image[0, :2] = 1.0
    label[0, :2] = channel("kidney_left")  # at small RAS x, i.e. on the patient's... left side of x
    label[0, 3] = channel("liver")
    data = {"image": image, "label": label}
    if as_tensor:
        data = {k: torch.from_numpy(v) for k, v in data.items()}
    flip = augment.RandLateralFlipd(["image", "label"], "label", augment.lateral_swap_table(LAYOUT), prob=1.0)
    out = flip(data)
    out_label = np.asarray(out["label"])
    assert np.all(out_label[0, 6:] == channel("kidney_right"))
    assert np.all(out_label[0, 4] == channel("liver"))
    assert np.asarray(out["image"])[0, 6:].min() == 1.0
    plain = augment.RandLateralFlipd(["image", "label"], "label", None, prob=1.0)(data)
    assert np.all(np.asarray(plain["label"])[0, 6:] == channel("kidney_left"))


def test_training_transforms_produce_roi_crops():
    rng = np.random.default_rng(0)
    image = rng.random((2, 40, 30, 20)).astype(np.float32)
    label = np.zeros((1, 40, 30, 20), np.int64)
    label[0, 10:20, 10:20, 5:15] = channel("liver")
    transforms = augment.training_transforms(LAYOUT, (16, 16, 16), crops_per_volume=3)
    transforms.set_random_state(seed=0)
    crops = transforms({"image": image, "label": label})
    assert len(crops) == 3
    assert all(c["image"].shape == (2, 16, 16, 16) and c["label"].shape == (1, 16, 16, 16) for c in crops)
    assert isinstance(crops[0]["image"], torch.Tensor)
    with pytest.raises(ValueError, match="lateral_flip"):
        augment.training_transforms(LAYOUT, (16, 16, 16), lateral_flip="sometimes")
