"""Published Swin-UNETR checkpoints run as they were trained: variant, formats, heads, preprocessing."""

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from SwinBOBLib import cli, io
from SwinBOBLib.inference import InferenceConfig, normalize_intensity, segment_image
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.inference.preprocess import image_modality
from SwinBOBLib.inference.provenance import describe_checkpoint, preprocessing_record
from SwinBOBLib.labels import channel_layout
from SwinBOBLib.models import heads
from SwinBOBLib.models.legacy import variant_for_monai_version, variant_of
from SwinBOBLib.models.loading import load_checkpoint, read_checkpoint, save_checkpoint
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import build_model
from SwinBOBLib.training.config import load_config_file

FIXTURE = Path(__file__).resolve().parents[1] / "Data" / "fixtures" / "monai14_swinunetr"
sys.path.insert(0, str(FIXTURE))
from make_fixture import fill_parameters  # noqa: E402  (the fixture's own weight recipe)

#: The UK_BOB trainer's argparse defaults that decide preprocessing (UKBOB/main.py).
UKBOB_ARGS = dict(a_min=-175.0, a_max=250.0, b_min=0.0, b_max=1.0, space_x=1.5, space_y=1.5, space_z=2.0,
                  roi_x=96, roi_y=96, roi_z=96, infer_overlap=0.5, feature_size=12, in_channels=1,
                  out_channels=14, norm_name="instance", logdir="./runs/test")


@pytest.fixture(scope="module")
def btcv():
    """A tiny random BTCV-shaped Swin-UNETR (1 in, 14 out, MONAI's non-affine norms) as UK_BOB builds it."""
    torch.manual_seed(0)
    return build_model(12, 1, 14, affine_norm=False, variant="legacy").eval()


def _same_weights(model, reference):
    a, b = model.state_dict(), reference.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Exploit:
    """Unpickling this would run code (create a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------- the legacy variant


def test_legacy_variant_reproduces_monai_1_4(tmp_path):
    reference = np.load(FIXTURE / "reference.npz")
    assert str(reference["monai_version"]) == "1.4.0"
    model = build_model(12, 1, 3, affine_norm=False, variant="legacy").eval()
    sums = fill_parameters(model, int(reference["seed"]))
    names = list(reference["parameter_names"])
    assert sorted(sums) == names  # the same parameters in MONAI 1.4.0 and today's MONAI
    assert np.allclose([sums[n] for n in names], reference["parameter_sums"], rtol=0, atol=1e-9)
    # Through the loader, as a UK_BOB trainer dict without args: legacy is what a silent file gets.
    torch.save({"epoch": 10, "best_acc": 0.5, "state_dict": model.state_dict()}, tmp_path / "ukbob.pt")
    loaded, meta = load_checkpoint(tmp_path / "ukbob.pt")
    assert meta.variant == "legacy" and meta.sources["variant"] == "args"
    image = torch.from_numpy(reference["image"].astype(np.float32))
    with torch.no_grad():
        logits = loaded(image).numpy()
    assert np.abs(logits - reference["logits"]).max() < 1e-4
    assert np.array_equal(logits.argmax(1), reference["argmax"])
    # MONAI >= 1.5's order gives other logits from the same weights: the variant matters.
    fixed = build_model(12, 1, 3, affine_norm=False, variant="fixed").eval()
    fixed.load_state_dict(model.state_dict())
    with torch.no_grad():
        other = fixed(image).numpy()
    assert np.abs(other - reference["logits"]).max() > 0.1
    assert (other.argmax(1) != reference["argmax"]).mean() > 0.01


def test_variants_are_recorded_and_chosen(tmp_path):
    assert variant_of(build_model(12)) == "fixed"  # new SwinBOB models: MONAI's current order
    legacy = build_model(12, variant="legacy")
    assert variant_of(legacy) == "legacy" and variant_of(build_model(12, variant="mergingv2")) == "mergingv2"
    path = save_checkpoint(tmp_path / "own.pt", legacy, CheckpointMetadata(feature_size=12))
    stored = torch.load(path, weights_only=True)["swinbob"]
    assert stored["variant"] == "legacy" and stored["format_version"] == 2 and "sources" not in stored
    model, meta = load_checkpoint(path)
    assert variant_of(model) == "legacy" and meta.sources["variant"] == "metadata"
    model, meta = load_checkpoint(path, variant="fixed")
    assert variant_of(model) == "fixed" and meta.sources["variant"] == "option"
    torch.save(legacy.state_dict(), tmp_path / "plain.pt")
    model, meta = load_checkpoint(tmp_path / "plain.pt")
    assert meta.variant == "legacy" and meta.sources["variant"] == "assumed" and "MONAI < 1.5" in meta.notes["variant"]
    with pytest.raises(ValueError, match="unknown Swin-UNETR variant 'v3'"):
        load_checkpoint(tmp_path / "plain.pt", variant="v3")
    assert [variant_for_monai_version(v) for v in ("0.9.1", "1.4.0", "1.5.0", "1.6.1rc1")] == \
        ["legacy", "legacy", "fixed", "fixed"]


def test_the_bundled_demo_model_keeps_loading(repo_root):
    model, meta = load_checkpoint(repo_root / "Resources" / "Models" / "swinbob_demo.pt")
    assert meta.scheme == "ukbob" and meta.layout == "compact" and meta.activation == "softmax"
    if meta.network != "swinunetr":  # the demo model is a SegResNet: no patch merging, no variant
        assert meta.variant is None and "variant" not in meta.sources
        return
    assert meta.variant == variant_of(model)
    if meta.format_version < 2:  # trained before variants were recorded: with MONAI >= 1.5
        assert meta.variant == "fixed" and meta.sources["variant"] == "assumed"
    else:
        assert meta.sources["variant"] == "metadata"


def test_the_bundled_demo_model_records_the_recipe_that_made_it(repo_root):
    """The shipped file says what it is and how it was trained (docs/training.md), and the configs
    it names exist: a part of the cross-section chain, partial labels on the unlabelled body, windows
    that span the whole axial cross-section, the paired labels mirrored."""
    _, meta = load_checkpoint(repo_root / "Resources" / "Models" / "swinbob_demo.pt")
    assert meta.demo and meta.name == "swinbob-demo-synth" and "not Swin-BOB" in meta.description
    training = meta.training
    options = training["synthesis_options"]
    assert training["synthesis"] == "labels" and options["unlabelled_body"] == "partial"
    assert options["mirror_prob"] > 0 and options["shared_tissues"]
    configs = training["config"].split(" then ")
    assert [Path(c).name for c in configs] == ["swinbob_demo_xsec.yaml"]
    assert all((repo_root / c).is_file() for c in configs) and (repo_root / training["recipe"]).is_file()
    assert training["part"] >= 1 and training["global_step"] and training["best_synthetic_val_dice"]
    config = load_config_file(repo_root / configs[0])
    assert list(meta.roi_size) == config["roi_size"] and list(meta.target_spacing_mm) == config["target_spacing_mm"]
    assert meta.roi_size[0] * meta.target_spacing_mm[0] >= 450  # the whole cross-section (mm) in one window
    part = repo_root / "scripts" / "parts" / f"swinbob_demo_xsec_part{training['part']}.pt"
    assert part.is_file()  # what the next part of the chain starts from


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("args_as", ["namespace", "dict", None])
def test_ukbob_trainer_dict_takes_its_args(btcv, tmp_path, args_as):
    optimizer = torch.optim.AdamW(btcv.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    payload = {"epoch": 500, "best_acc": 0.83, "state_dict": btcv.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict()}
    if args_as:
        payload["args"] = argparse.Namespace(**UKBOB_ARGS) if args_as == "namespace" else dict(UKBOB_ARGS)
    torch.save(payload, tmp_path / "model_final.pt")
    model, meta = load_checkpoint(tmp_path / "model_final.pt")
    assert _same_weights(model, btcv) and not model.training
    assert meta.scheme == "btcv" and meta.layout == "compact" and meta.variant == "legacy"
    with torch.no_grad():  # the checkpoint's own channel order: the same logits as the network saved
        x = torch.randn(1, 1, 32, 32, 64)
        assert torch.allclose(model(x), btcv(x), atol=1e-5)
    if args_as is None:
        assert meta.intensity == "percentile" and meta.sources["intensity"] == "assumed"
        return
    assert meta.intensity == "ct_window"
    assert {k: meta.intensity_params[k] for k in ("a_min", "a_max", "b_min", "b_max")} == \
        {"a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0}
    assert meta.target_spacing_mm == (1.5, 1.5, 2.0) and meta.roi_size == 96 and meta.overlap == 0.5
    assert all(meta.sources[k] == "args" for k in ("intensity", "intensity_params", "target_spacing_mm", "overlap"))
    assert meta.modality == "CT" and meta.sources["scheme"] == "assumed"


@pytest.mark.parametrize("wrap", [
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "optimizer_states": [],
                "pytorch-lightning_version": "2.4.0", "epoch": 3},
    lambda sd: {"model": sd},
], ids=["module-prefix", "lightning", "model-key"])
def test_wrapped_state_dicts(btcv, tmp_path, wrap):
    torch.save(wrap(btcv.state_dict()), tmp_path / "c.pt")
    model, meta = load_checkpoint(tmp_path / "c.pt")
    assert _same_weights(model, btcv) and meta.scheme == "btcv"
    kind = read_checkpoint(tmp_path / "c.pt").kind
    assert kind in ("state_dict", "lightning")


def _bundle_config(spacing=(1.5, 1.5, 2.0)):
    # The shape of the MONAI model zoo's swin_unetr_btcv_segmentation configs/inference.json.
    return {
        "imports": ["$import glob"], "bundle_root": ".", "roi": [96, 96, 96],
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": 96, "in_channels": 1,
                        "out_channels": 14, "feature_size": 12, "use_checkpoint": False},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "ITKReader"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": list(spacing), "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -175, "a_max": 250, "b_min": 0.0,
             "b_max": 1.0, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi", "sw_batch_size": 4, "overlap": 0.5},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True}]},
        "initialize": ["$__import__('pathlib').Path(@bundle_root).joinpath('pwned').touch()"],
    }


_BUNDLE_META = {"version": "0.3.7", "monai_version": "1.0.1", "name": "Swin UNETR BTCV segmentation",
                "network_data_format": {"inputs": {"image": {"modality": "CT", "num_channels": 1}}}}


def _write_bundle(folder: Path, weights, config=None, meta=None, yaml_config=False) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    config = config or _bundle_config()
    if yaml_config:
        import yaml

        (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    else:
        (folder / "configs" / "inference.json").write_text(json.dumps(config))
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta or _BUNDLE_META))
    torch.save(weights, folder / "models" / "model.pt")
    return folder


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in folder.rglob("*"):
            if file.is_file():
                archive.write(file, f"{folder.name}/{file.relative_to(folder)}")
    return target


@pytest.mark.parametrize("packed", ["folder", "zip", "yaml"])
def test_monai_bundle_preprocessing_is_taken_over(btcv, tmp_path, packed):
    folder = _write_bundle(tmp_path / "swin_unetr_btcv_segmentation", btcv.state_dict(), yaml_config=packed == "yaml")
    path = _zip(folder, tmp_path / "bundle.zip") if packed == "zip" else folder
    model, meta = load_checkpoint(path)
    assert _same_weights(model, btcv)
    assert meta.variant == "legacy" and meta.sources["variant"] == "bundle"  # monai_version 1.0.1
    assert meta.target_spacing_mm == (1.5, 1.5, 2.0) and meta.intensity == "ct_window"
    assert meta.intensity_params["a_min"] == -175.0 and meta.intensity_params["clip"] is True
    assert meta.roi_size == 96 and meta.overlap == 0.5 and meta.modality == "CT" and meta.scheme == "btcv"
    assert all(meta.sources[k] == "bundle" for k in ("target_spacing_mm", "intensity", "roi_size", "overlap"))
    assert not (folder / "pwned").exists() and not (tmp_path / "pwned").exists()  # "$..." is never evaluated


def test_bundle_of_monai_1_5_and_bundle_errors(btcv, tmp_path):
    meta = dict(_BUNDLE_META, monai_version="1.5.0")
    _write_bundle(tmp_path / "new", btcv.state_dict(), meta=meta)
    _, loaded = load_checkpoint(tmp_path / "new")
    assert loaded.variant == "fixed"
    folder = _write_bundle(tmp_path / "ts", btcv.state_dict())
    (folder / "models" / "model.pt").rename(folder / "models" / "model.ts")
    with pytest.raises(ValueError, match="without models/model.pt.*TorchScript is code"):
        load_checkpoint(folder)
    (tmp_path / "empty" / "configs").mkdir(parents=True)
    with pytest.raises(ValueError, match="without configs/inference.json"):
        load_checkpoint(tmp_path / "empty")


def _evil(marker):
    return _Exploit(str(marker))


@pytest.mark.parametrize("where", ["trainer-args", "lightning", "bundle-folder", "bundle-zip", "plain"])
def test_pickled_code_is_refused_in_every_format(btcv, tmp_path, where):
    marker = tmp_path / "pwned"
    state = btcv.state_dict()
    payloads = {
        "trainer-args": {"epoch": 1, "best_acc": 0.1, "state_dict": state,
                         "args": argparse.Namespace(a_min=-175.0, hook=_evil(marker))},
        "lightning": {"state_dict": state, "optimizer_states": [], "callbacks": _evil(marker)},
        "plain": {**state, "payload": _evil(marker)},
    }
    if where.startswith("bundle"):
        folder = _write_bundle(tmp_path / "b", {"model": state, "extra": _evil(marker)})
        path = _zip(folder, tmp_path / "b.zip") if where == "bundle-zip" else folder
    else:
        path = tmp_path / "c.pt"
        torch.save(payloads[where], path)
    with pytest.raises(ValueError, match="refused to load.*pickled objects or code"):
        load_checkpoint(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- heads


def test_72_and_73_channel_ukbob_heads_give_the_same_labels(tmp_path):
    torch.manual_seed(1)
    full = build_model(12, 1, 73, variant="legacy").eval()
    with torch.no_grad():  # label 20 is unused: a trained full head never predicts it
        full.out.conv.conv.bias[20] = -1e4
    rows = torch.as_tensor(channel_layout("ukbob", "compact").rows_from(channel_layout("ukbob", "full")))
    compact_state = {k: (v[rows] if k.startswith("out.conv.conv") else v) for k, v in full.state_dict().items()}
    torch.save(full.state_dict(), tmp_path / "full.pt")
    torch.save(compact_state, tmp_path / "compact.pt")
    m73, meta73 = load_checkpoint(tmp_path / "full.pt")
    m72, meta72 = load_checkpoint(tmp_path / "compact.pt")
    assert meta73.layout == meta72.layout == "compact" and meta73.out_channels == meta72.out_channels == 72
    assert meta72.sources["layout"] == "assumed" and "compact" in meta72.notes["layout"]
    assert preprocessing_record(meta72)["assumed"].count("layout") == 1
    image = io.Image(np.random.default_rng(0).normal(size=(40, 36, 34)).astype(np.float32), np.eye(4))
    config = InferenceConfig(device="cpu", roi_size=32)
    a = segment_image(image, m72, meta72, config)
    b = segment_image(image, m73, meta73, config)
    assert np.array_equal(a.labels.array, b.labels.array)
    with torch.no_grad():  # and every label the full head predicts is where the compact one puts it
        x = torch.randn(1, 1, 32, 32, 32)
        labels73 = full(x).argmax(1)
        labels72 = torch.as_tensor(channel_layout("ukbob").labels)[m72(x).argmax(1)]
    assert torch.equal(labels73, labels72)


def test_sigmoid_region_head_brats(tmp_path):
    torch.manual_seed(2)
    net = build_model(12, 4, 3, affine_norm=False, variant="legacy").eval()
    brats_args = {"in_channels": 4, "out_channels": 3, "roi_x": 32, "roi_y": 32, "roi_z": 32, "infer_overlap": 0.6}
    torch.save({"epoch": 1, "best_acc": 0.9, "state_dict": net.state_dict(), "args": brats_args}, tmp_path / "brats.pt")
    model, meta = load_checkpoint(tmp_path / "brats.pt", intensity="zscore_nonzero")
    assert (meta.scheme, meta.activation, meta.layout) == ("brats", "sigmoid", "regions")
    assert meta.sources["intensity"] == "option" and meta.overlap == 0.6
    rng = np.random.default_rng(3)
    array = np.zeros((36, 34, 32, 4), np.float32)
    array[4:-4, 4:-4, 4:-4] = rng.normal(100, 20, (28, 26, 24, 4))
    image = io.Image(array, np.diag([1.0, 1.0, 1.0, 1.0]), channel_names=["t1", "t1ce", "t2", "flair"])
    result = segment_image(image, model, meta, InferenceConfig(device="cpu", probabilities=True))
    assert set(np.unique(result.labels.array)) <= {0, 1, 2, 3}
    probs = torch.from_numpy(np.moveaxis(result.probabilities.array, -1, 0))
    assert np.array_equal(result.labels.array, heads.region_head("brats").labels(probs))
    expected = heads.entropy(probs[None], "sigmoid")[0].numpy()  # mean binary entropy of the 3 channels
    assert np.allclose(result.entropy.array, expected, atol=1e-5)
    assert result.stats["layout"] == "regions" and result.stats["classes"] == 3
    # ETTA minimises the same mean binary entropy; its second pass is the segmentation.
    adapted = segment_image(image, model, meta, InferenceConfig(device="cpu", etta=True), EttaConfig(steps=1))
    etta = adapted.stats["etta"]
    assert 0 <= etta["entropy_after"] <= 1 and len(etta["losses"]) == 1
    assert etta["entropy_after"] == pytest.approx(float(adapted.entropy.array.mean()), abs=1e-4)


def test_region_painting_and_binary_entropy():
    head = heads.region_head("brats")
    # channels TC, WT, ET: whole tumour only -> edema (2); + core -> necrosis (1); + enhancing -> 3.
    probs = np.array([[0.1, 0.1, 0.9, 0.9], [0.2, 0.8, 0.9, 0.9], [0.1, 0.1, 0.1, 0.8]])
    assert head.labels(probs).tolist() == [0, 2, 1, 3]
    p = torch.tensor([[[0.5], [0.5], [0.5]], [[1.0], [0.0], [1.0]]])
    assert torch.allclose(heads.entropy(p, "sigmoid"), torch.tensor([[1.0], [0.0]]), atol=1e-4)
    logits = torch.randn(2, 3, 4, 4, 4)
    assert heads.entropy_loss(logits, "sigmoid").item() == pytest.approx(
        heads.entropy(torch.sigmoid(logits), "sigmoid").mean().item(), abs=1e-5)


# ----------------------------------------------------------------------------- preprocessing


def test_intensity_modes_match_monai():
    from monai.transforms import NormalizeIntensity, ScaleIntensityRange

    rng = np.random.default_rng(0)
    array = rng.normal(0, 400, (2, 10, 9, 8)).astype(np.float32)
    array[:, :3] = 0  # background that the non-zero z-score leaves alone
    params = {"a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
    ours = normalize_intensity(array, "ct_window", params)
    assert np.allclose(ours, np.asarray(ScaleIntensityRange(**params)(array)), atol=1e-6)
    ours = normalize_intensity(array, "zscore_nonzero", {"channel_wise": True})
    monai = np.asarray(NormalizeIntensity(nonzero=True, channel_wise=True)(array))
    assert np.allclose(ours, monai, atol=1e-5) and np.all(ours[:, :3] == 0)
    assert np.allclose(normalize_intensity(array, "ct_window", {"low": -175, "high": 250}),
                       normalize_intensity(array, "ct_window", params))
    with pytest.raises(ValueError, match="unknown intensity normalisation 'gamma'"):
        normalize_intensity(array, "gamma")


def test_modality_of_real_scans_and_the_warning(samples, btcv):
    ct = io.load_image(samples / "example_ct_sm.nii.gz")
    mr = io.load_image(samples / "example_mr_sm.nii.gz")
    assert image_modality(ct.array) == "CT" and image_modality(mr.array) == "MR"
    meta = CheckpointMetadata(scheme="btcv", out_channels=14, feature_size=12, roi_size=32, modality="CT",
                              target_spacing_mm=(9.0, 9.0, 9.0), intensity="ct_window", affine_norm=False)
    with pytest.warns(UserWarning, match="looks like MR.*trained on CT"):
        segment_image(mr, btcv, meta, InferenceConfig(device="cpu"))


def _segment(*args):
    return cli.main([str(a) for a in args])


def test_btcv_end_to_end_on_the_real_ct_lands_on_its_grid(samples, btcv, tmp_path, capsys):
    args = dict(UKBOB_ARGS, space_x=4.5, space_y=4.5, space_z=4.5, roi_x=32, roi_y=32, roi_z=32, infer_overlap=0.25)
    torch.save({"epoch": 5, "best_acc": 0.5, "state_dict": btcv.state_dict(), "args": argparse.Namespace(**args)},
               tmp_path / "btcv.pt")
    scan = samples / "example_ct_sm.nii.gz"
    out = tmp_path / "out"
    code = _segment("segment", scan, "-o", out, "--checkpoint", tmp_path / "btcv.pt", "--device", "cpu", "--quiet",
                    "--no-preview")
    assert code == 0, capsys.readouterr().err
    image, labels = io.load_image(scan), io.load_image(out / "labels.nii.gz")
    assert labels.array.shape == image.array.shape and np.allclose(labels.affine, image.affine)
    assert set(np.unique(labels.array)) <= set(range(14))
    report = json.loads((out / "report.json").read_text())
    pre = report["preprocessing"]
    assert pre["intensity"] == {"value": "ct_window", "source": "args"}
    assert pre["intensity_params"]["value"]["a_max"] == 250.0 and pre["target_spacing_mm"]["value"] == [4.5] * 3
    assert pre["overlap"]["value"] == 0.25 and pre["variant"]["value"] == "legacy"
    assert pre["scheme"]["value"] == "btcv" and "scheme" in pre["assumed"]
    assert not any("looks like" in w for w in report["warnings"])  # a CT for a CT model
    assert report["inference"]["model_spacing_mm"][0] == pytest.approx(4.5, rel=0.05)


def test_assumed_values_are_listed_and_warned_in_the_report(samples, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(build_model(12, 1, 14, affine_norm=False).state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "out"
    code = _segment("segment", samples / "example_ct_sm.nii.gz", "-o", out, "--checkpoint", tmp_path / "plain.pt",
                    "--device", "cpu", "--quiet", "--no-preview", "--roi-size", 32, "--spacing", 9,
                    "--intensity", "ct_window")
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    pre = report["preprocessing"]
    assert {"variant", "scheme", "overlap"} <= set(pre["assumed"])
    assert pre["intensity"]["source"] == "option" and pre["target_spacing_mm"]["source"] == "option"
    assert pre["roi_size"] == {"value": 32, "source": "option"}
    for name in ("variant", "scheme", "overlap"):
        assert any(w.startswith(f"assumed {name} = ") for w in report["warnings"]), report["warnings"]
    assert not any(w.startswith("assumed intensity =") for w in report["warnings"])


# ----------------------------------------------------------------------------- summary and CLI


def test_describe_checkpoint_and_cli(btcv, tmp_path, capsys):
    torch.save({"epoch": 500, "best_acc": 0.83, "state_dict": btcv.state_dict(), "args": dict(UKBOB_ARGS)},
               tmp_path / "btcv.pt")
    summary = describe_checkpoint(tmp_path / "btcv.pt")
    assert summary["format"] == "ukbob_trainer" and summary["file"]["epoch"] == 500
    assert (summary["network"], summary["variant"], summary["feature_size"]) == ("swinunetr", "legacy", 12)
    assert (summary["in_channels"], summary["out_channels"], summary["scheme"]) == (1, 14, "btcv")
    assert summary["channels"][:2] == ["background", "spleen"] and len(summary["channels"]) == 14
    assert summary["preprocessing"]["target_spacing_mm"] == {"value": [1.5, 1.5, 2.0], "source": "args"}
    assert summary["etta_parameters"] > 0  # the Swin encoder's LayerNorms
    json.dumps(summary)
    assert cli.main(["checkpoint", "info", str(tmp_path / "btcv.pt"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert printed["scheme"] == "btcv" and printed["preprocessing"]["intensity"]["source"] == "args"
    assert cli.main(["checkpoint", "info", str(tmp_path / "btcv.pt")]) == 0
    text = capsys.readouterr().out
    assert "variant\tlegacy" in text and "preprocessing.intensity\tct_window\t[args]" in text
    assert cli.main(["checkpoint", "info", str(tmp_path / "missing.pt")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
