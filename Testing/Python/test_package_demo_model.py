"""scripts/package_demo_model.py: what the bundled model's file records (docs/training.md)."""

import dataclasses
import importlib.util

import pytest

from SwinBOBLib.models.loading import load_checkpoint, save_checkpoint


def _script(repo_root):
    spec = importlib.util.spec_from_file_location("package_demo_model", repo_root / "scripts" / "package_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_committed_part_ships_with_the_record_it_was_packaged_with(repo_root, tmp_path):
    part = repo_root / "scripts" / "parts" / "swinbob_demo_xsec_part2.pt"
    assert _script(repo_root).main([str(part), str(tmp_path / "demo.pt"), "--design", "xsec", "--part", "2"]) == 0
    _, before = load_checkpoint(part)
    model, after = load_checkpoint(tmp_path / "demo.pt")
    assert after.demo and after.name == "swinbob-demo-synth" and "whole axial cross-section" in after.description
    assert after.training["part"] == 2 and "previous part's best weights" in after.training["parts"]
    for key in ("global_step", "best_epoch", "best_synthetic_val_dice", "seed", "synthesis_options"):
        assert after.training[key] == before.training[key]
    assert after.training["config"] == "Resources/Models/swinbob_demo_xsec.yaml"
    assert next(model.parameters()).dtype.is_floating_point


def test_a_file_without_run_folder_or_record_is_refused_and_part_needs_the_xsec_design(repo_root, tmp_path, capsys):
    part = repo_root / "scripts" / "parts" / "swinbob_demo_xsec_part1.pt"
    model, metadata = load_checkpoint(part)
    bare = tmp_path / "bare" / "checkpoints" / "best.pt"
    bare.parent.mkdir(parents=True)
    save_checkpoint(bare, model, dataclasses.replace(metadata, training={}))
    with pytest.raises(SystemExit):
        _script(repo_root).main([str(bare), str(tmp_path / "out.pt"), "--design", "xsec"])
    assert "no summary.json" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
    with pytest.raises(SystemExit):
        _script(repo_root).main([str(part), str(tmp_path / "out.pt"), "--part", "1"])
    assert "--part 1" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
