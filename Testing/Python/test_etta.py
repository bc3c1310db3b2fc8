"""ETTA: entropy, which parameters adapt, episodic adaptation, refusal, and the flip-TTA baseline."""

import copy
import math

import pytest
import torch
from torch import nn

from SwinBOBLib.inference import etta
from SwinBOBLib.inference.tta import flip_sets, flip_tta
from SwinBOBLib.models.heads import entropy_map
from SwinBOBLib.models.networks import build_model


class TinyNet(nn.Module):
    """A small 3D segmenter with every kind of normalisation ETTA handles (fast on CPU)."""

    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 8, 3, padding=1)
        self.instance = nn.InstanceNorm3d(8, affine=True)
        self.conv2 = nn.Conv3d(8, 8, 3, padding=1)
        self.group = nn.GroupNorm(2, 8)
        self.batch = nn.BatchNorm3d(8)
        self.plain_instance = nn.InstanceNorm3d(8)  # no affine parameters: nothing to adapt
        self.head = nn.Conv3d(8, classes, 1)

    def forward(self, x):
        x = torch.relu(self.instance(self.conv1(x)))
        x = torch.relu(self.batch(self.group(self.conv2(x))))
        return self.head(self.plain_instance(x))


def shifted_image(shape=(1, 1, 24, 20, 16), seed=0):
    """Smooth blobs, then an intensity shift and scale (a domain shift)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    x = nn.functional.avg_pool3d(x, 5, stride=1, padding=2)
    return x * 2.0 + 0.3


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval()


# ----------------------------------------------------------------------------- entropy


def test_entropy_of_one_hot_is_zero_and_uniform_is_one():
    one_hot = nn.functional.one_hot(torch.randint(0, 72, (2, 3, 4, 5)), 72).permute(0, 4, 1, 2, 3).float()
    h = entropy_map(one_hot)
    assert h.shape == (2, 3, 4, 5)
    assert torch.allclose(h, torch.zeros_like(h), atol=1e-5)
    uniform = torch.full((1, 7, 2, 2, 2), 1 / 7)
    assert torch.allclose(entropy_map(uniform), torch.ones(1, 2, 2, 2), atol=1e-5)


def test_entropy_is_normalised_by_log_classes():
    probs = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 4, 1, 1, 1)
    assert entropy_map(probs).item() == pytest.approx(math.log(2) / math.log(4), abs=1e-5)
    logits = torch.randn(1, 4, 3, 3, 3)
    assert etta.entropy_loss(logits).item() == pytest.approx(
        entropy_map(torch.softmax(logits, 1)).mean().item(), abs=1e-5)


def test_entropy_refuses_single_class():
    with pytest.raises(ValueError, match="C >= 2"):
        entropy_map(torch.ones(1, 1, 2, 2, 2))


# ----------------------------------------------------------------------------- parameters


def test_adaptable_parameters_are_the_norm_affines(tiny):
    expected = [tiny.instance.weight, tiny.instance.bias, tiny.group.weight, tiny.group.bias,
                tiny.batch.weight, tiny.batch.bias]
    assert [id(p) for p in etta.adaptable_parameters(tiny)] == [id(p) for p in expected]


def test_swin_unetr_adapts_layernorms_and_affine_instance_norms():
    model = build_model(12)
    kinds = {type(m).__name__ for m in model.modules()
             if any(p is q for p in etta.adaptable_parameters(model) for q in m.parameters(recurse=False))}
    assert "LayerNorm" in kinds and "InstanceNormAsGroupNorm" in kinds


def test_model_without_norm_parameters_is_refused():
    model = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.InstanceNorm3d(3))
    with pytest.raises(ValueError, match="no normalisation parameters to adapt"):
        etta.adapt(model, torch.rand(1, 1, 8, 8, 8), roi_size=8)


@pytest.mark.parametrize("bad", [torch.rand(1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8),
                                 torch.full((1, 1, 8, 8, 8), float("nan"))], ids=["4d", "batch2", "nan"])
def test_bad_images_are_refused(tiny, bad):
    with pytest.raises(ValueError):
        etta.adapt(tiny, bad, roi_size=8)


def test_bad_options_are_refused(tiny):
    with pytest.raises(ValueError, match="learning rate"):
        etta.adapt(tiny, shifted_image(), lr=0, roi_size=16)
    with pytest.raises(ValueError, match="optimizer"):
        etta.adapt(tiny, shifted_image(), roi_size=16, config=etta.EttaConfig(optimizer="lbfgs"))


# ----------------------------------------------------------------------------- adaptation


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()}, model.training)


def test_adapt_changes_only_norm_parameters_and_lowers_entropy(tiny):
    image = shifted_image()
    adapted, stats = etta.adapt(tiny, image, steps=10, lr=1e-2, roi_size=16)
    assert stats["entropy_after"] < stats["entropy_before"]
    assert stats["n_parameters"] == 6 * 8 and stats["steps"] == 10 and stats["time_s"] > 0
    norm_names = {n for n, p in adapted.named_parameters()
                  if any(p is q for q in etta.adaptable_parameters(adapted))}
    before = dict(tiny.named_parameters())
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= norm_names
    assert not adapted.training and not any(p.requires_grad for p in adapted.parameters())
    assert stats["batchnorm_layers"] == 1


def test_batchnorm_statistics_are_re_estimated_on_the_whole_scan(tiny):
    # Algorithm 1, UPDATEBNSTATISTICS: the BatchNorm layer ends up with the statistics of its input
    # over the test scan. One window covers the 16^3 scan, so they can be computed directly.
    image = shifted_image((1, 1, 16, 16, 16))
    with torch.no_grad():
        x = tiny.group(tiny.conv2(torch.relu(tiny.instance(tiny.conv1(image)))))
    adapted, _ = etta.adapt(tiny, image, steps=1, lr=1e-9, roi_size=16)
    assert torch.allclose(adapted.batch.running_mean, x.mean(dim=(0, 2, 3, 4)), atol=1e-5)
    assert torch.allclose(adapted.batch.running_var, x.var(dim=(0, 2, 3, 4), unbiased=True), rtol=1e-4)


def _entropy_of(model, x):
    with torch.no_grad():
        return entropy_map(torch.softmax(model(x), 1))


def test_entropy_before_and_after_are_whole_scan_means_without_padding(tiny):
    # A 12x10x16 scan in 16^3 windows: the window is half padding. The figures are the mean over
    # the scan's 1,920 voxels, as an independent forward of the padded scan gives them (MONAI's
    # sliding window pads both sides evenly).
    image = shifted_image((1, 1, 12, 10, 16))
    padded = nn.functional.pad(image, (0, 0, 3, 3, 2, 2))
    adapted, stats = etta.adapt(tiny, image, steps=3, lr=1e-2, roi_size=16)
    scan = (slice(None), slice(2, 14), slice(3, 13), slice(0, 16))
    assert stats["entropy_before"] == pytest.approx(float(_entropy_of(tiny, padded)[scan].mean()), abs=1e-5)
    assert stats["entropy_after"] == pytest.approx(float(_entropy_of(adapted, padded)[scan].mean()), abs=1e-5)
    assert stats["entropy_before"] != pytest.approx(float(_entropy_of(tiny, padded).mean()), abs=1e-4)
    assert stats["entropy_measured_on"] == "scan"
    # one window covers the scan: the patch figures are the same mean
    assert stats["patch_entropy_before"] == pytest.approx(stats["entropy_before"], abs=1e-6)


def test_adapt_and_predict_returns_the_adapted_models_whole_scan_prediction(tiny):
    image = shifted_image()
    adapted, stats, probs = etta.adapt_and_predict(tiny, image, steps=2, lr=1e-2, roi_size=16)
    again = etta.sliding_window_predictor((16, 16, 16), etta.EttaConfig())(adapted, image)
    assert probs.shape == (1, 4, 24, 20, 16) and torch.allclose(probs, again, atol=1e-6)
    assert stats["entropy_after"] == pytest.approx(etta.mean_entropy(probs), abs=1e-6)


def test_patches_are_the_highest_entropy_windows_of_the_first_pass():
    entropy = torch.zeros(32, 16, 16)
    entropy[20:28, 4:12, 4:12] = 1.0  # the uncertain region
    starts = etta.choose_windows(entropy, (16, 16, 16), 1)
    assert starts == [(16, 0, 0)]


def test_zero_steps_are_refused(tiny):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        etta.adapt(tiny, shifted_image(), steps=0, roi_size=16)


def test_adapt_leaves_the_callers_model_untouched(tiny):
    state, grads, training = _snapshot(tiny)
    reference = copy.deepcopy(tiny)
    etta.adapt(tiny, shifted_image(), steps=3, lr=1e-2, roi_size=16)
    assert tiny.training == training
    assert {n: p.requires_grad for n, p in tiny.named_parameters()} == grads
    assert all(torch.equal(v, state[k]) for k, v in tiny.state_dict().items())
    x = shifted_image(seed=1)
    with torch.no_grad():
        assert torch.equal(tiny(x), reference(x))


def test_adapt_runs_under_no_grad_and_inference_mode(tiny):
    with torch.no_grad():
        _, stats = etta.adapt(tiny, shifted_image(), steps=2, lr=1e-2, roi_size=16)
    assert len(stats["losses"]) == 2
    with torch.inference_mode():
        _, stats = etta.adapt(tiny, shifted_image(), steps=2, lr=1e-2, roi_size=16)
    assert len(stats["losses"]) == 2


def test_episodic_each_call_starts_from_the_loaded_weights(tiny):
    image = shifted_image()
    first, a = etta.adapt(tiny, image, steps=3, lr=1e-2, roi_size=16)
    second, b = etta.adapt(tiny, image, steps=3, lr=1e-2, roi_size=16)
    assert a["entropy_before"] == pytest.approx(b["entropy_before"])
    assert all(torch.allclose(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_adapt_on_a_tiny_swin_unetr():
    torch.manual_seed(0)
    model = build_model(12).eval()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    adapted, stats = etta.adapt(model, torch.rand(1, 1, 32, 32, 32), steps=1, lr=1e-3, roi_size=32,
                                config=etta.EttaConfig(patches=1))
    assert 0 <= stats["entropy_after"] <= 1 and stats["patches"] == 1
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert stats["n_parameters"] == sum(p.numel() for p in etta.adaptable_parameters(model))


# ----------------------------------------------------------------------------- flip TTA


def test_flip_sets():
    assert len(flip_sets(8)) == 8 and flip_sets(8)[0] == ()
    assert flip_sets(4) == [(), (2,), (3,), (4,)]
    with pytest.raises(ValueError):
        flip_sets(3)


def test_flip_tta_maps_predictions_back_voxel_for_voxel():
    x = torch.rand(1, 1, 6, 5, 4)

    def voxelwise(patch):  # equivariant: flipping in and back out changes nothing
        return torch.softmax(torch.cat([patch, -patch]), 0).reshape(1, 2, *patch.shape[2:])

    assert torch.allclose(flip_tta(voxelwise, 8)(x), voxelwise(x), atol=1e-6)

    def by_side(patch):  # a network that names a structure by its side: channel 1 = "left" (high x)
        p = torch.zeros(patch.shape[0], 3, *patch.shape[2:])
        p[:, 1, 3:] = 1
        p[:, 2, :3] = 1
        return p

    # A left-right flip shows it the left structure where the right one would be and it says
    # "right"; flipped back unswapped, that answer lands on the left structure.
    unswapped = flip_tta(by_side, 4)(x)
    assert torch.allclose(unswapped[0, 1, 3:], torch.tensor(0.75))
    assert torch.allclose(unswapped[0, 2, 3:], torch.tensor(0.25))
    # With the paired channels exchanged, every flip agrees with the unflipped pass.
    swapped = flip_tta(by_side, 8, swap_table=[0, 2, 1])(x)
    assert torch.equal(swapped, by_side(x))


def test_adaptation_patch_size_follows_the_network_stride():
    assert etta.network_stride((96, 96, 96)) == 32 and etta.network_stride((40, 40, 40)) == 8
    assert etta.network_stride((64, 64, 48)) == 16 and etta.network_stride((15, 15, 15)) == 1
    assert etta.adaptation_roi((96, 96, 96), 1.0) == (96, 96, 96)
    assert etta.adaptation_roi((96, 96, 96), 0.5) == (32, 32, 32)  # 48 rounded down to Swin's 32
    assert etta.adaptation_roi((40, 40, 40), 0.5) == (16, 16, 16)
    assert etta.adaptation_roi((40, 40, 40), 0.01) == (8, 8, 8)  # never below one stride


def test_a_smaller_adaptation_patch_is_the_highest_entropy_one_and_is_reported(tiny):
    image = shifted_image((1, 1, 48, 48, 48))
    _, stats = etta.adapt(tiny, image, steps=1, lr=1e-2, roi_size=48, config=etta.EttaConfig(patch_scale=0.5))
    assert stats["patch_size"] == [16, 16, 16]
    entropy = etta.entropy_volume(torch.softmax(tiny(image), 1))
    start = stats["windows"][0]
    chosen = float(entropy[tuple(slice(s, s + 16) for s in start)].mean())
    others = [float(entropy[tuple(slice(s, s + 16) for s in w)].mean())
              for w in etta.window_starts((48, 48, 48), (16, 16, 16), (8, 8, 8))]
    assert chosen == pytest.approx(max(others), abs=1e-6)
    with pytest.raises(ValueError, match="patch_scale must be in"):
        etta.adapt(tiny, image, roi_size=48, config=etta.EttaConfig(patch_scale=0.0))
