"""Inference: geometry round trips on real scans, entropy, options, devices and bad inputs.

A stand-in network that labels voxels by intensity makes the expected label map computable
from the input voxels, so any flip, permutation or shift in the pipeline shows up exactly.
"""

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from SwinBOBLib import inference, io
from SwinBOBLib.inference import InferenceConfig, segment_image, window
from SwinBOBLib.labels import channel_layout
from SwinBOBLib.models.heads import entropy as voxel_entropy
from SwinBOBLib.models.metadata import CheckpointMetadata

LAYOUT = channel_layout("ukbob", "compact")


class IntensityBands(nn.Module):
    """Channel = intensity band (4 bands of the normalised intensity), confident logits.

    Five channels keep it fast: channels map to labels through the compact layout's first rows.
    """

    def __init__(self, classes=5):
        super().__init__()
        self.classes = classes
        self.norm = nn.LayerNorm(1)  # something for ETTA to adapt

    def forward(self, x):
        band = (x[:, 0].clamp(0, 0.999) * 4).long()
        logits = nn.functional.one_hot(band, self.classes).permute(0, 4, 1, 2, 3).float() * 20
        return logits + 0 * self.norm.weight.sum()


def expected_labels(image, metadata):
    array = image.array if image.array.ndim == 3 else image.array[..., 0]
    norm = inference.normalize_intensity(array[None], metadata.intensity, metadata.intensity_params)[0]
    return LAYOUT.channels_to_labels((np.clip(norm, 0, 0.999) * 4).astype(np.int64))


def cpu(**kw):
    return InferenceConfig(device="cpu", overlap=0.0, **kw)


@pytest.fixture(scope="module")
def mr(samples):
    return io.load_image(samples / "example_mr_sm.nii.gz")


@pytest.fixture(scope="module")
def ct(samples):
    return io.load_image(samples / "example_ct_sm.nii.gz")


@pytest.mark.parametrize("name,intensity", [("mr", "percentile"), ("ct", "ct_window")])
def test_native_grid_round_trip_is_exact(name, intensity, mr, ct):
    image = {"mr": mr, "ct": ct}[name]
    meta = CheckpointMetadata(roi_size=64, intensity=intensity)
    result = segment_image(image, IntensityBands(), meta, cpu())
    for out in (result.labels, result.entropy):
        assert out.array.shape == image.array.shape
        assert np.array_equal(out.affine, image.affine)
    assert np.array_equal(result.labels.array, expected_labels(image, meta))  # left stays left
    assert result.labels.array.dtype == np.uint8
    assert float(result.entropy.array.max()) < 1e-3  # confident everywhere


def _centroid_mm(mask, affine):
    ijk = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def test_resampled_round_trip_keeps_grid_and_sides(mr):
    meta = CheckpointMetadata(roi_size=64, target_spacing_mm=(4.5, 4.5, 4.5))
    result = segment_image(mr, IntensityBands(), meta, cpu())
    assert result.labels.array.shape == mr.array.shape and np.array_equal(result.labels.affine, mr.affine)
    assert result.stats["model_grid"] != list(mr.spatial_shape)
    expected = expected_labels(mr, meta)
    assert (result.labels.array == expected).mean() > 0.8
    label = int(np.bincount(expected[expected > 0]).argmax())
    shift = _centroid_mm(result.labels.array == label, mr.affine) - _centroid_mm(expected == label, mr.affine)
    assert np.all(np.abs(shift) < 3.0)  # mm: well under one 3 mm voxel, no mirror image


def test_model_grid_is_corner_aligned():
    shape, spacing = inference.model_grid((117, 91, 20), (3.0, 3.0, 6.0), (1.5, 1.5, 1.5))
    assert shape == (233, 181, 77)
    assert spacing == pytest.approx((1.5, 1.5, 1.5))
    assert inference.model_grid((10, 10, 10), (1, 1, 1), None) == ((10, 10, 10), (1.0, 1.0, 1.0))


def test_probabilities_structures_and_fast_mode(mr):
    meta = CheckpointMetadata(roi_size=64)
    result = segment_image(mr, IntensityBands(), meta, cpu(probabilities=True, structures="kidney_right", fast=True))
    probs = result.probabilities.array
    assert probs.shape == (*mr.array.shape, 5)
    assert np.allclose(probs.sum(-1), 1, atol=1e-4)
    assert set(np.unique(result.labels.array)) <= {0, 2}  # label 2 = right kidney; others dropped
    assert result.stats["structures"] == [2]
    assert result.stats["model_spacing_mm"][0] >= inference.FAST_SPACING_MM - 0.2


def test_tta_and_low_memory_paths_agree(mr):
    meta = CheckpointMetadata(roi_size=64)
    plain = segment_image(mr, IntensityBands(), meta, cpu())
    tta = segment_image(mr, IntensityBands(), meta, cpu(tta=True, tta_flips=4))
    low = segment_image(mr, IntensityBands(), meta, cpu(low_memory=True))
    assert np.array_equal(tta.labels.array, plain.labels.array)  # voxelwise model: flips change nothing
    assert low.stats["low_memory"] and (low.labels.array == plain.labels.array).mean() > 0.999


def test_tta_exchanges_paired_channels_of_left_right_flipped_windows(mr):
    from SwinBOBLib.labels import channel_layout

    layout = channel_layout("ukbob")
    right, left = layout.channel_lookup()[2], layout.channel_lookup()[3]  # kidney_right, kidney_left
    table = inference.lateral_swap(CheckpointMetadata(roi_size=64))
    assert table[right] == left and table[left] == right and table[0] == 0
    five = segment_image(mr, IntensityBands(), CheckpointMetadata(roi_size=64), cpu(tta=True, tta_flips=4))
    assert not five.stats["tta_lateral_swap"]  # five channels are not the layout's: nothing to exchange
    # A voxelwise model cannot tell sides, so the swap shows: of 4 flips, the left-right one's
    # "kidney_right" answer is counted as kidney_left.
    result = segment_image(mr, IntensityBands(layout.num_channels), CheckpointMetadata(roi_size=64),
                           cpu(tta=True, tta_flips=4, probabilities=True))
    assert result.stats["tta_lateral_swap"]
    probs = result.probabilities.array
    kidney = result.labels.array == 2
    assert kidney.any()
    assert np.allclose(probs[kidney][:, right], 0.75, atol=1e-3) and np.allclose(probs[kidney][:, left], 0.25, atol=1e-3)


def test_window_count_matches_monai():
    from monai.inferers import sliding_window_inference

    calls = []

    def predictor(patch):
        calls.append(patch.shape[0])
        return patch

    sliding_window_inference(torch.zeros(1, 1, 70, 40, 100), (32, 32, 32), 1, predictor, overlap=0.25)
    assert inference.count_windows((70, 40, 100), (32, 32, 32), 0.25) == sum(calls)


def test_intensity_normalisation():
    array = np.linspace(-2000, 3000, 1000, dtype=np.float32).reshape(1, 10, 10, 10)
    ct = inference.normalize_intensity(array, "ct_window")
    assert ct.min() == 0 and ct.max() == 1
    mr = inference.normalize_intensity(array, "percentile")
    assert 0 <= mr.min() and mr.max() <= 1
    assert np.all(inference.normalize_intensity(np.ones((1, 4, 4, 4)), "percentile") == 0)
    with pytest.raises(ValueError, match="unknown intensity"):
        inference.normalize_intensity(array, "gamma")


def test_device_selection():
    assert inference.select_device("cpu").type == "cpu"
    assert inference.select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            inference.select_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        inference.select_device("tpu0")
    assert inference.autocast_dtype(torch.device("cpu")) is None


def test_contrast_selection(mr):
    dixon = io.Image(np.stack([mr.array, mr.array * 0.5], -1), mr.affine, channel_names=("water", "fat"))
    meta = CheckpointMetadata(roi_size=64)
    with pytest.warns(UserWarning, match="using channel 'water'"):
        segment_image(dixon, IntensityBands(), meta, cpu())
    result = segment_image(dixon, IntensityBands(), meta, cpu(contrast="fat"))
    assert result.labels.array.shape == mr.array.shape
    with pytest.raises(ValueError, match="no channel 'opposed'"):
        segment_image(dixon, IntensityBands(), meta, cpu(contrast="opposed"))


def test_bad_inputs_are_refused(mr):
    meta = CheckpointMetadata(roi_size=64)
    nan = io.Image(mr.array.astype(np.float32).copy(), mr.affine)
    nan.array[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segment_image(nan, IntensityBands(), meta, cpu())
    flat = io.Image(np.zeros((20, 20, 1), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="not a 3D volume"):
        segment_image(flat, IntensityBands(), meta, cpu())
    with pytest.raises(ValueError, match="multiple of 32"):
        segment_image(mr, IntensityBands(), meta, cpu(roi_size=48))


def test_out_of_memory_falls_back_to_the_low_memory_path(mr, monkeypatch):
    real = window._sliding_window

    def failing(model, tensor, roi, config, device, low_memory, progress, flips, swap_table):
        if not low_memory:
            raise inference.OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 5.20 GiB")
        return real(model, tensor, roi, config, device, low_memory, progress, flips, swap_table)

    monkeypatch.setattr(window, "_sliding_window", failing)
    with pytest.warns(UserWarning, match="out of memory: retrying on the low-memory path"):
        result = segment_image(mr, IntensityBands(), CheckpointMetadata(roi_size=64), cpu())
    assert result.stats["oom_fallback"] and result.stats["low_memory"]
    assert result.labels.array.shape == mr.array.shape


def test_progress_callback_counts_windows(mr):
    seen = []
    tensor = torch.zeros(1, 1, 70, 40, 20)
    inference.predict_probabilities(IntensityBands(), tensor, (32, 32, 32), cpu(tta=True, tta_flips=4),
                                    torch.device("cpu"), lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == inference.count_windows((70, 40, 20), (32, 32, 32), 0.0) * 4


def test_etta_out_of_memory_is_skipped_with_a_warning(mr, monkeypatch):
    from SwinBOBLib.inference import pipeline

    def failing(*args, **kwargs):
        raise inference.OUT_OF_MEMORY("CUDA out of memory")

    monkeypatch.setattr(pipeline, "adapt_and_predict", failing)  # what segment_image calls
    with pytest.warns(UserWarning, match="ETTA ran out of GPU memory and was skipped"):
        result = segment_image(mr, IntensityBands(), CheckpointMetadata(roi_size=64), cpu(etta=True))
    assert result.stats["etta"]["skipped"] == "out of memory"
    assert result.labels.array.shape == mr.array.shape


# -- the entropy map is the network's, interpolated; the labels are the interpolated probabilities' argmax --


def _two_confident_classes(x: int = 6, y: int = 5, z: int = 4) -> torch.Tensor:
    """Probabilities (1, 3, x, y, z): class 1 (p 0.98) left of the middle, class 2 (p 0.98) right of it."""
    probs = torch.full((1, 3, x, y, z), 0.01)
    probs[0, 1, : x // 2] = 0.98
    probs[0, 2, x // 2:] = 0.98
    return probs


def test_entropy_is_the_model_grids_interpolated_so_a_boundary_between_confident_classes_adds_no_ridge():
    probs = _two_confident_classes()
    shape = (21, 9, 7)
    prepared = type("Prepared", (), {"ras_shape": shape})()
    labels, entropy, _ = inference.postprocess(probs, prepared)
    coarse = voxel_entropy(probs)[0]
    expected = torch.nn.functional.interpolate(coarse[None, None], size=shape, mode="trilinear", align_corners=True)
    np.testing.assert_allclose(entropy, expected[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert entropy.max() <= float(coarse.max()) + 1e-6  # no ridge: the interpolated probabilities' entropy peaks at the boundary
    ridge = voxel_entropy(torch.nn.functional.interpolate(probs, size=shape, mode="trilinear", align_corners=True))
    assert float(ridge.max()) > 3 * float(coarse.max())
    reference = torch.nn.functional.interpolate(probs, size=shape, mode="trilinear", align_corners=True)[0].argmax(0)
    assert np.array_equal(labels, reference.numpy())  # labels from the interpolated probabilities
    assert set(np.unique(labels[:9])) == {1} and set(np.unique(labels[-9:])) == {2}


def test_entropy_and_labels_on_the_same_grid_are_the_networks_own(monkeypatch):
    probs = torch.softmax(torch.randn(1, 5, 6, 7, 8, generator=torch.Generator().manual_seed(3)), 1)
    prepared = type("Prepared", (), {"ras_shape": (6, 7, 8)})()
    monkeypatch.setattr(importlib.import_module("SwinBOBLib.inference.postprocess"), "SLAB_BYTES", 5 * 6 * 7 * 4 * 3)
    labels, entropy, kept = inference.postprocess(probs, prepared, keep_probabilities=True)
    np.testing.assert_allclose(entropy, voxel_entropy(probs)[0].numpy(), rtol=1e-6, atol=1e-7)
    assert np.array_equal(labels, probs[0].argmax(0).numpy())
    np.testing.assert_allclose(kept, probs[0].permute(1, 2, 3, 0).numpy(), rtol=1e-6, atol=1e-7)


def test_count_nonfinite_counts_every_bad_value_and_never_a_large_good_sum():
    probs = torch.full((1, 3, 4, 5, 20), 0.5)
    assert window.count_nonfinite(probs) == 0
    half = torch.ones((1, 72, 40, 40, 30), dtype=torch.float16)  # sums past float16's largest value
    assert window.count_nonfinite(half) == 0
    probs[0, 0, 1, 1, 3] = float("nan")
    probs[0, 1, 2, 2, 17] = float("inf")
    probs[0, 2, 3, 4, 9] = float("-inf")
    assert window.count_nonfinite(probs) == 3
    half[0, 5, 0, 0, 29] = float("nan")
    assert window.count_nonfinite(half) == 1
