"""SOLF organ features against an independent per-organ numpy implementation and analytic shapes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from SwinBOBLib import io
from SwinBOBLib.solf import FEATURES, body_mask_from_image, organ_features

DATA = Path(__file__).resolve().parents[1] / "Data" / "totalsegmentator-samples"


def reference_features(labelmap, spacing=(1, 1, 1), body_mask=None):
    """Plain per-organ definitions: mask, count, padded diff for faces, covariance of coordinates."""
    spacing = np.asarray(spacing, dtype=float)
    labelmap = np.asarray(labelmap)
    body = np.count_nonzero(labelmap) if body_mask is None else np.count_nonzero(body_mask)
    face_area = [spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]]
    result = {}
    for label in np.unique(labelmap):
        if label == 0:
            continue
        mask = labelmap == label
        count = int(mask.sum())
        padded = np.pad(mask, 1).astype(np.int8)
        area = sum(np.count_nonzero(np.diff(padded, axis=a)) * face_area[a] for a in range(3))
        coords = np.argwhere(mask) * spacing
        cov = np.cov(coords.T, bias=True) if count > 1 else np.zeros((3, 3))
        eig = np.linalg.eigvalsh(cov)
        volume = count * np.prod(spacing)
        result[int(label)] = {
            "voxels": count, "volume_mm3": volume, "normalized_volume": count / body,
            "surface_mm2": area, "sphericity": math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area,
            "eccentricity": math.sqrt(max(0.0, 1 - max(eig[0], 0) / eig[2])) if eig[2] > 0 else 0.0,
        }
    return result


def assert_features_equal(actual, expected):
    assert list(actual) == list(expected)
    for label in expected:
        assert set(actual[label]) == set(FEATURES)
        assert actual[label]["voxels"] == expected[label]["voxels"]
        for key in ("volume_mm3", "normalized_volume", "surface_mm2", "sphericity"):
            assert actual[label][key] == pytest.approx(expected[label][key], rel=1e-12), (label, key)
        assert actual[label]["eccentricity"] == pytest.approx(expected[label]["eccentricity"], abs=1e-6), label


def random_blobs(shape, num_labels, seed, fill=0.6):
    """Label map of random blocky regions (upsampled noise) inside an ellipsoid; holes of background."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, num_labels + 1, size=tuple(max(1, s // 3) for s in shape))
    labels = np.kron(coarse, np.ones((3, 3, 3), dtype=int))[: shape[0], : shape[1], : shape[2]]
    labels = np.pad(labels, [(0, s - labels.shape[i]) for i, s in enumerate(shape)], mode="edge")
    labels[rng.random(shape) > fill + 0.35] = 0  # speckle of background voxels
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    labels[sum(g ** 2 for g in grid) > 1] = 0
    return labels.astype(np.uint16)


@pytest.mark.parametrize("seed,spacing", [(0, (1, 1, 1)), (1, (0.7, 1.3, 3.0)), (2, (2.23, 2.23, 4.5))])
def test_random_shapes_match_reference(seed, spacing):
    labels = random_blobs((23, 17, 31), num_labels=9, seed=seed)
    assert_features_equal(organ_features(labels, spacing), reference_features(labels, spacing))


@pytest.mark.parametrize("name", ["example_seg.nii.gz", "example_seg_fast_force_split.nii.gz",
                                  "example_seg_mr.nii.gz"])
def test_real_label_maps_match_reference(name):
    image = io.load_labelmap(DATA / name, scheme=None)
    assert image.array.ndim == 3
    actual = organ_features(image.array, image.spacing)
    assert len(actual) > 20
    assert_features_equal(actual, reference_features(image.array, image.spacing))


def test_real_label_map_with_body_mask_from_image():
    labels = io.load_labelmap(DATA / "example_seg.nii.gz", scheme=None)
    ct = io.load_image(DATA / "example_ct_sm.nii.gz")
    body = body_mask_from_image(ct.array)
    assert np.count_nonzero(body) > np.count_nonzero(labels.array)
    assert not np.any((labels.array > 0) & ~body)  # every labelled organ lies inside the body
    actual = organ_features(labels.array, labels.spacing, body_mask=body)
    assert_features_equal(actual, reference_features(labels.array, labels.spacing, body_mask=body))
    liver = 5  # TotalSegmentator total: liver
    assert 0 < actual[liver]["normalized_volume"] < 0.5


def test_cube_analytic():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 7  # 4^3 voxels, 6 x 16 faces
    feats = organ_features(labels, spacing=(2, 2, 2))[7]
    assert feats["voxels"] == 64
    assert feats["volume_mm3"] == 64 * 8
    assert feats["normalized_volume"] == 1.0  # the only labelled structure is the body
    assert feats["surface_mm2"] == 96 * 4
    assert feats["sphericity"] == pytest.approx(math.pi ** (1 / 3) * 6 ** (2 / 3) / 6)  # a cube's
    assert feats["eccentricity"] == pytest.approx(0.0, abs=1e-7)


def test_box_eccentricity_analytic():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:3, 1:5, 1:11] = 1  # 2 x 4 x 10 voxels; variance of n consecutive integers is (n^2 - 1) / 12
    spacing = (3.0, 1.0, 0.5)
    variances = [(n * n - 1) / 12 * s * s for n, s in zip((2, 4, 10), spacing)]
    feats = organ_features(labels, spacing)[1]
    assert feats["eccentricity"] == pytest.approx(math.sqrt(1 - min(variances) / max(variances)))
    faces = {0: 2 * 4 * 10, 1: 2 * 2 * 10, 2: 2 * 2 * 4}
    area = faces[0] * 1.0 * 0.5 + faces[1] * 3.0 * 0.5 + faces[2] * 3.0 * 1.0
    assert feats["surface_mm2"] == pytest.approx(area)


def test_single_voxel():
    labels = np.zeros((5, 5, 5), np.int32)
    labels[2, 3, 1] = 4
    feats = organ_features(labels, (1.0, 2.0, 3.0))[4]
    assert feats["voxels"] == 1 and feats["volume_mm3"] == 6.0
    assert feats["surface_mm2"] == 2 * (6 + 3 + 2)
    assert feats["eccentricity"] == 0.0


def test_organ_touching_border_counts_border_faces():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0:2, :, 0:3] = 1  # touches the borders of axes 0, 1 and 2
    assert_features_equal(organ_features(labels), reference_features(labels))
    assert organ_features(labels)[1]["surface_mm2"] == 2 * (5 * 3) + 2 * (2 * 3) + 2 * (2 * 5)
    full = np.ones((3, 4, 5), np.uint8)
    assert organ_features(full)[1]["surface_mm2"] == 2 * (12 + 15 + 20)


def test_empty_label_map():
    assert organ_features(np.zeros((4, 4, 4), np.uint8)) == {}
    assert organ_features(np.zeros((0, 4, 4), np.uint8)) == {}


def test_memory_order_and_dtype_do_not_matter():
    labels = random_blobs((19, 13, 11), num_labels=6, seed=3)
    spacing = (0.9, 1.7, 2.5)
    expected = organ_features(labels, spacing)
    for variant in (np.asfortranarray(labels), labels.astype(np.int64), labels.astype(np.float32),
                    labels[:, ::-1, :], np.ascontiguousarray(labels.transpose(2, 0, 1)).transpose(1, 2, 0)):
        got = organ_features(variant, spacing)
        assert_features_equal(got, reference_features(variant, spacing))
        assert {k: v["voxels"] for k, v in got.items()} == {k: v["voxels"] for k, v in expected.items()}


def test_labels_argument_and_large_label_values():
    labels = np.zeros((6, 6, 6), np.int64)
    labels[1:3, 1:3, 1:3] = 3
    labels[3:5, 3:5, 3:6] = 5_000_000  # beyond the direct table: renumbered internally
    both = organ_features(labels)
    assert list(both) == [3, 5_000_000]
    assert both[5_000_000]["voxels"] == 12
    assert list(organ_features(labels, labels=[5_000_000, 9])) == [5_000_000]


def test_body_mask_normalises_volume():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 2
    body = np.zeros((6, 6, 6), bool)
    body[:, :, :4] = True
    assert organ_features(labels, body_mask=body)[2]["normalized_volume"] == 8 / 144


@pytest.mark.parametrize("bad,match", [
    (np.full((4, 4, 4), 1.5), "non-integer"),
    (np.zeros((4, 4), np.uint8), "3D"),
    (np.zeros((2, 4, 4, 4), np.uint8), "3D"),
    (np.full((3, 3, 3), -1, np.int16), "negative"),
    (np.array([[["a"]]]), "dtype"),
])
def test_bad_label_maps_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        organ_features(bad)


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -1, 1), (1, 1), (1, float("nan"), 1), "abc"])
def test_bad_spacing_raises(spacing):
    with pytest.raises(ValueError, match="spacing"):
        organ_features(np.ones((3, 3, 3), np.uint8), spacing)


def test_bad_body_mask_raises():
    labels = np.ones((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        organ_features(labels, body_mask=np.ones((3, 3, 2), bool))
    with pytest.raises(ValueError, match="empty"):
        organ_features(labels, body_mask=np.zeros((3, 3, 3), bool))


def test_body_mask_from_image_fills_dark_inside():
    image = np.zeros((20, 20, 6), np.float32)
    image[3:17, 3:17, :] = 100.0
    image[8:12, 8:12, :] = 0.0  # a dark "lung" inside the body
    image[0, 0, 0] = 100.0  # an isolated bright voxel outside (noise)
    mask = body_mask_from_image(image)
    assert mask[3:17, 3:17, :].all() and mask.sum() == 14 * 14 * 6
    assert not body_mask_from_image(np.zeros((4, 4, 4))).any()
