"""scripts/package_demo_model.py: what the bundled model's file records (docs/training.md)."""

import dataclasses
import json

import pytest

from SwinBOBLib.models.loading import load_checkpoint, save_checkpoint

SCRIPT = "scripts/package_demo_model.py"


def test_a_committed_part_ships_with_the_record_it_was_packaged_with(load_script, repo_root, tmp_path):
    part = repo_root / "scripts" / "parts" / "swinbob_demo_xsec_part2.pt"
    assert load_script(SCRIPT).main([str(part), str(tmp_path / "demo.pt"), "--design", "xsec", "--part", "2"]) == 0
    _, before = load_checkpoint(part)
    model, after = load_checkpoint(tmp_path / "demo.pt")
    assert after.demo and after.name == "swinbob-demo-synth" and "whole axial cross-section" in after.description
    assert after.training["part"] == 2 and "previous part's best weights" in after.training["parts"]
    for key in ("global_step", "best_epoch", "best_synthetic_val_dice", "seed", "synthesis_options"):
        assert after.training[key] == before.training[key]
    assert after.training["config"] == "Resources/Models/swinbob_demo_xsec.yaml"
    assert next(model.parameters()).dtype.is_floating_point


def test_a_file_without_run_folder_or_record_is_refused_and_part_needs_the_xsec_design(load_script, repo_root, tmp_path, capsys):
    part = repo_root / "scripts" / "parts" / "swinbob_demo_xsec_part1.pt"
    model, metadata = load_checkpoint(part)
    bare = tmp_path / "bare" / "checkpoints" / "best.pt"
    bare.parent.mkdir(parents=True)
    save_checkpoint(bare, model, dataclasses.replace(metadata, training={}))
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main([str(bare), str(tmp_path / "out.pt"), "--design", "xsec"])
    assert "no summary.json" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()
    with pytest.raises(SystemExit):
        load_script(SCRIPT).main([str(part), str(tmp_path / "out.pt"), "--part", "1"])
    assert "--part 1" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()


def test_a_run_stopped_before_its_end_records_its_best_validation_and_where_it_stopped(load_script, repo_root, tmp_path):
    """A part the session's end cut short has no summary.json: its progress.jsonl says which step the
    best weights are from and how far the run got."""
    model, metadata = load_checkpoint(repo_root / "scripts" / "parts" / "swinbob_demo_xsec_part1.pt")
    run = tmp_path / "xsec-part9"
    save_checkpoint(run / "checkpoints" / "best.pt", model, dataclasses.replace(metadata, training={"seed": 8}))
    events = [{"event": "step", "global_step": 1049, "total_steps": 6000},
              {"event": "validation", "epoch": 14, "global_step": 1050, "dice": 0.31},
              {"event": "validation", "epoch": 29, "global_step": 2100, "dice": 0.29},
              {"event": "step", "global_step": 2140, "total_steps": 6000}]
    (run / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    out = tmp_path / "part9.pt"
    assert load_script(SCRIPT).main([str(run / "checkpoints" / "best.pt"), str(out), "--design", "xsec", "--part", "9"]) == 0
    training = load_checkpoint(out)[1].training
    assert (training["global_step"], training["best_epoch"], training["best_synthetic_val_dice"]) == (1050, 14, 0.31)
    assert training["stopped_at_step"] == 2140 and training["planned_steps"] == 6000 and training["seed"] == 8
    shipped = tmp_path / "shipped.pt"  # packaged again from the packaged file: the record stands
    assert load_script(SCRIPT).main([str(out), str(shipped), "--design", "xsec", "--part", "9"]) == 0
    again = load_checkpoint(shipped)[1].training
    assert all(again[k] == training[k] for k in ("global_step", "best_epoch", "stopped_at_step", "planned_steps"))
