"""Swin-BOB model building and safe checkpoint loading (no forward passes: fast)."""

import pytest
import torch

from SwinBOBLib.inference import etta
from SwinBOBLib.labels import channel_layout
from SwinBOBLib.models.loading import load_checkpoint, save_checkpoint
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import NETWORKS, build_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(feature_size=12)


def test_default_head_is_the_compact_ukbob_layout(tiny):
    assert tiny.out.conv.conv.out_channels == channel_layout("ukbob", "compact").num_channels == 72
    assert tiny.swinViT.patch_embed.proj.in_channels == 1


@pytest.mark.parametrize("feature_size", [12, 24, 48])
def test_feature_sizes(feature_size):
    model = build_model(feature_size=feature_size, in_channels=4, out_channels=5)
    assert model.swinViT.patch_embed.proj.weight.shape == (feature_size, 4, 2, 2, 2)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of 12"):
        build_model(feature_size=20)
    with pytest.raises(ValueError, match="in_channels"):
        build_model(feature_size=12, in_channels=0)
    with pytest.raises(ValueError, match="unknown network"):
        build_model(feature_size=12, network="resnet")


def test_affine_norm_adds_adaptable_decoder_norms():
    with_affine = etta.adaptable_parameters(build_model(12, affine_norm=True))
    without = etta.adaptable_parameters(build_model(12, affine_norm=False))
    # Without affine InstanceNorms only the Swin encoder's LayerNorms remain adaptable.
    assert 0 < len(without) < len(with_affine)
    assert len(with_affine) - len(without) == 2 * 26  # 26 affine instance norms in the decoder/encoders


def test_network_registry_has_swinunetr():
    assert "swinunetr" in NETWORKS


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_and_load_round_trip_keeps_metadata(tiny, tmp_path):
    meta = CheckpointMetadata(contrasts=("water",), target_spacing_mm=(2.0, 2.0, 3.0), roi_size=64)
    path = save_checkpoint(tmp_path / "ckpt.pt", tiny, meta)
    model, loaded = load_checkpoint(path)
    assert _same_weights(model, tiny)
    assert loaded.feature_size == 12 and loaded.contrasts == ("water",)
    assert loaded.target_spacing_mm == (2.0, 2.0, 3.0) and loaded.roi_size == 64
    assert not model.training
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: no temporary left


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "optimizer_states": []},
], ids=["plain", "state_dict", "model", "module-prefix", "lightning"])
def test_loader_accepts_wrappers(tiny, tmp_path, wrap):
    path = tmp_path / "c.pt"
    torch.save(wrap(tiny.state_dict()), path)
    model, meta = load_checkpoint(path)
    assert _same_weights(model, tiny)
    assert (meta.feature_size, meta.in_channels, meta.affine_norm) == (12, 1, True)


def test_loader_infers_norms_without_affine(tmp_path):
    plain = build_model(12, affine_norm=False)
    torch.save(plain.state_dict(), tmp_path / "c.pt")
    model, meta = load_checkpoint(tmp_path / "c.pt")
    assert meta.affine_norm is False and _same_weights(model, plain)


def test_full_73_channel_head_is_converted(tiny, tmp_path):
    full = build_model(12, out_channels=73)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    model, meta = load_checkpoint(tmp_path / "full.pt")
    assert meta.layout == "compact" and meta.out_channels == 72
    rows = channel_layout("ukbob", "compact").rows_from(channel_layout("ukbob", "full"))
    assert torch.equal(model.out.conv.conv.weight, full.out.conv.conv.weight[torch.as_tensor(rows)])
    assert 20 not in rows  # the unused label 20 is dropped


def test_wrong_shape_names_the_first_bad_key(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["encoder1.layer.conv1.conv.weight"] = torch.zeros(12, 1, 3, 3, 2)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"encoder1\.layer\.conv1\.conv\.weight.*\(12, 1, 3, 3, 2\).*\(12, 1, 3, 3, 3\)"):
        load_checkpoint(tmp_path / "bad.pt")


def test_wrong_head_size_is_refused(tmp_path):
    torch.save(build_model(12, out_channels=15).state_dict(), tmp_path / "c.pt")
    with pytest.raises(ValueError, match="15 output channels match no label scheme.*--scheme"):
        load_checkpoint(tmp_path / "c.pt")
    torch.save(build_model(12, out_channels=14).state_dict(), tmp_path / "c14.pt")
    with pytest.raises(ValueError, match="14 output channels match no layout of scheme 'ukbob'"):
        load_checkpoint(tmp_path / "c14.pt", scheme="ukbob")


def test_missing_key_is_named(tiny, tmp_path):
    state = dict(tiny.state_dict())
    del state["decoder1.conv_block.norm1.weight"]
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="missing parameter 'decoder1.conv_block.norm1.weight'"):
        load_checkpoint(tmp_path / "c.pt")


def test_not_a_swinunetr_state_dict(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="not a swinunetr state dict"):
        load_checkpoint(tmp_path / "c.pt")


class _Exploit:
    """Unpickling this would run code (create a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        torch.save({"state_dict": {}, "payload": _Exploit(str(marker))}, handle, pickle_protocol=2)
    with pytest.raises(ValueError, match="refused to load.*pickled objects or code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_newer_format_is_refused(tiny, tmp_path):
    torch.save({"state_dict": tiny.state_dict(), "swinbob": {"format_version": 99}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="newer"):
        load_checkpoint(tmp_path / "c.pt")
