"""Metrics against hand-computed values, empty masks and anisotropic spacing."""

import math

import numpy as np
import pytest

from SwinBOBLib.evaluation import metrics


def _box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def test_dice_by_hand():
    a = _box((10, 10, 10), (0, 0, 0), (4, 4, 4))  # 64 voxels
    b = _box((10, 10, 10), (2, 0, 0), (6, 4, 4))  # 64 voxels, overlap 2*4*4 = 32
    assert metrics.dice(a, b) == pytest.approx(2 * 32 / 128)
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, ~a) == 0.0


def test_hausdorff_of_shifted_boxes_with_anisotropic_spacing():
    a = _box((20, 12, 12), (2, 2, 2), (8, 8, 8))
    b = _box((20, 12, 12), (5, 2, 2), (11, 8, 8))  # shifted 3 voxels along axis 0
    assert metrics.hausdorff(a, b) == pytest.approx(3.0)
    assert metrics.hausdorff(a, b, spacing=(2.5, 1.0, 1.0)) == pytest.approx(7.5)
    assert metrics.hausdorff(a, b, spacing=(1.0, 4.0, 4.0)) == pytest.approx(3.0)
    assert metrics.hausdorff(a, a, spacing=(2.5, 1, 1)) == 0.0


def test_hd95_ignores_a_single_outlier():
    ref = _box((40, 40, 40), (5, 5, 5), (25, 25, 25))
    pred = ref.copy()
    pred[38, 38, 38] = True  # one stray voxel far away
    assert metrics.hausdorff(pred, ref) == pytest.approx(math.dist((38, 38, 38), (24, 24, 24)))
    assert metrics.hausdorff(pred, ref, percentile=95) < 1.0


def test_surface_dice():
    a = _box((20, 20, 20), (5, 5, 5), (15, 15, 15))
    b = _box((20, 20, 20), (6, 5, 5), (16, 15, 15))  # shifted by one voxel
    assert metrics.surface_dice(a, a) == 1.0
    assert metrics.surface_dice(a, b, tolerance_mm=1.0) == pytest.approx(1.0)
    assert metrics.surface_dice(a, b, spacing=(3, 3, 3), tolerance_mm=1.0) < 1.0


def test_empty_masks_have_documented_values():
    empty = np.zeros((5, 6, 7), bool)
    full = _box((5, 6, 7), (1, 1, 1), (3, 3, 3))
    spacing = (2.0, 1.0, 3.0)
    diagonal = math.sqrt((4 * 2.0) ** 2 + 5 ** 2 + (6 * 3.0) ** 2)
    assert metrics.dice(empty, empty) == 1.0 and metrics.dice(full, empty) == 0.0
    assert metrics.hausdorff(empty, empty, spacing) == 0.0
    assert metrics.hausdorff(full, empty, spacing) == pytest.approx(diagonal)
    assert metrics.hausdorff(empty, full, spacing, percentile=95) == pytest.approx(diagonal)
    assert metrics.surface_dice(empty, empty) == 1.0 and metrics.surface_dice(empty, full) == 0.0


def test_per_class_metrics_on_label_maps():
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[:6] = 1
    ref[6:] = 2
    pred = ref.copy()
    pred[5] = 2
    rows = {r["label"]: r for r in metrics.per_class_metrics(pred, ref, [1, 2, 3], spacing=(1, 1, 1))}
    assert rows[1]["dice"] == pytest.approx(2 * 5 * 144 / (5 * 144 + 6 * 144))
    assert rows[1]["hd"] == pytest.approx(1.0)
    assert rows[3]["dice"] == 1.0 and rows[3]["hd"] == 0.0  # absent from both
    assert rows[2]["pred_voxels"] == 7 * 144 and rows[2]["ref_voxels"] == 6 * 144


def test_bootstrap_ci():
    values = np.random.default_rng(0).normal(0.8, 0.05, 200)
    mean, low, high = metrics.bootstrap_ci(values)
    assert low < mean < high and mean == pytest.approx(values.mean())
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(200), rel=0.25)
    single = metrics.bootstrap_ci([0.5])  # one case: no confidence interval
    assert single[0] == 0.5 and math.isnan(single[1]) and math.isnan(single[2])
    assert all(math.isnan(v) for v in metrics.bootstrap_ci([]))


def test_a_structure_in_one_map_only_scores_the_whole_image_diagonal():
    # The case: a 4^3 cube missed in a 50x60x70 image scores the image diagonal (103 mm),
    # not the diagonal of its own box (8.7 mm), with isotropic and anisotropic spacing.
    shape = (50, 60, 70)
    cube = np.zeros(shape, np.uint8)
    cube[10:14, 20:24, 30:34] = 1
    empty = np.zeros(shape, np.uint8)
    for spacing in ((1.0, 1.0, 1.0), (2.0, 1.5, 0.8)):
        diagonal = math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing)))
        for pred, ref in ((empty, cube), (cube, empty)):  # missed, then hallucinated
            row = metrics.per_class_metrics(pred, ref, [1], spacing=spacing)[0]
            assert row["hd"] == pytest.approx(diagonal) and row["hd95"] == pytest.approx(diagonal)
            assert row["dice"] == 0.0 and row["nsd"] == 0.0
    assert math.sqrt(49 ** 2 + 59 ** 2 + 69 ** 2) == pytest.approx(103.2, abs=0.1)


def test_a_missed_organ_never_scores_better_than_a_misplaced_one():
    ref = np.zeros((50, 60, 70), np.uint8)
    ref[10:14, 20:24, 30:34] = 1
    misplaced = np.roll(ref, 30, axis=2)
    missed = metrics.per_class_metrics(np.zeros_like(ref), ref, [1])[0]
    moved = metrics.per_class_metrics(misplaced, ref, [1])[0]
    assert moved["hd"] == pytest.approx(30.0)
    assert missed["hd95"] > moved["hd95"]


def test_cropping_does_not_change_distances_when_both_are_present():
    rng = np.random.default_rng(3)
    ref = np.zeros((30, 32, 34), np.uint8)
    ref[5:15, 6:18, 8:20] = 2
    pred = ref.copy()
    pred[rng.random(ref.shape) < 0.01] = 2
    row = metrics.per_class_metrics(pred, ref, [2], spacing=(1.5, 1.0, 2.0))[0]
    assert row["hd"] == pytest.approx(metrics.hausdorff(pred == 2, ref == 2, (1.5, 1.0, 2.0)))
    assert row["hd95"] == pytest.approx(metrics.hausdorff(pred == 2, ref == 2, (1.5, 1.0, 2.0), 95))
    assert row["nsd"] == pytest.approx(metrics.surface_dice(pred == 2, ref == 2, (1.5, 1.0, 2.0)))


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.dice(np.zeros((3, 3, 3)), np.zeros((3, 3, 4))), "differs"),
    (lambda: metrics.hausdorff(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), spacing=(1, 0, 1)), "positive"),
    (lambda: metrics.hausdorff(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), percentile=120), "percentile"),
    (lambda: metrics.dice(np.zeros(3), np.zeros(3)), "2D or 3D"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
