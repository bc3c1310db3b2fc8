"""Package a trained run as the bundled demo model (Resources/Models/swinbob_demo.pt).

    python scripts/package_demo_model.py RUNDIR/checkpoints/best.pt [OUTPUT]
    python scripts/package_demo_model.py demo-train/xsec-part1/checkpoints/best.pt \
        scripts/parts/swinbob_demo_xsec_part1.pt --design xsec --part 1
        (the cross-section design: the weights a session's part ends with, which the next part
        starts from on a machine without the run folder)
    python scripts/package_demo_model.py scripts/parts/swinbob_demo_xsec_part2.pt --design xsec --part 2
        (ships a committed part: its training record, written when the part was packaged, is kept)

Stores the weights in float16 (they load into a float32 model; half the file) and writes into the
checkpoint's metadata what the model is, so every output it produces says so: its name, that it is a
demo model, a one-line description, and how it was trained (config, steps, data). See
docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SwinBOBLib.models.loading import load_checkpoint, save_checkpoint  # noqa: E402

NAME = "swinbob-demo-synth"
DESCRIPTION = ("small demo model (SegResNet, 6 x 6 x 4 mm) trained on a CPU on images synthesised from label maps "
               "(phantoms + one real CT's labels, its unlabelled body as a partial label); not Swin-BOB, "
               "not for clinical use")

#: The recipe's stage configs, in order (scripts/train_demo_model.sh).
CONFIGS = ["Resources/Models/swinbob_demo.yaml", "Resources/Models/swinbob_demo_stage2.yaml",
           "Resources/Models/swinbob_demo_stage3.yaml"]

#: The cross-section design (DESIGN=xsec): one config, run in parts, each from the previous part's weights.
XSEC_CONFIG = "Resources/Models/swinbob_demo_xsec.yaml"
XSEC_DESCRIPTION = ("small demo model (SegResNet whose windows span the whole axial cross-section, 6 x 6 x 4 mm) "
                    "trained on a CPU on images synthesised from label maps (phantoms + one real CT's labels, "
                    "its unlabelled body as a partial label); not Swin-BOB, not for clinical use")
DATA = {"stages": "16 synthetic phantoms (14 train, 2 val) + the real CT label maps of Testing/Data "
                  "(TotalSegmentator total, remapped to UKBOB); never the MR sample",
        "xsec": "40 synthetic phantoms (35 train, 5 val) + the real CT label maps of Testing/Data "
                "(TotalSegmentator total, remapped to UKBOB); never the MR sample"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _summary_of(run: Path) -> dict:
    """The run's summary.json, or for a run stopped before its end (a part the session's end cut
    short) what its progress.jsonl says: the best validation's step, epoch and Dice, and how far it got."""
    summary = _read(run / "summary.json")
    progress = run / "progress.jsonl"
    if summary or not progress.is_file():
        return summary
    events = [json.loads(line) for line in progress.read_text(encoding="utf-8").splitlines() if line.strip()]
    checks = [e for e in events if e.get("event") == "validation" and e.get("dice") is not None]
    steps = [e for e in events if e.get("event") == "step"]
    if not checks or not steps:
        return {}
    best = max(checks, key=lambda e: e["dice"])
    return {"global_step": best["global_step"], "best_epoch": best["epoch"], "best_dice": best["dice"],
            "stopped_at_step": steps[-1]["global_step"], "planned_steps": steps[-1].get("total_steps")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="RUNDIR/checkpoints/best.pt")
    parser.add_argument("target", type=Path, nargs="?", default=REPO / "Resources" / "Models" / "swinbob_demo.pt")
    parser.add_argument("--design", choices=("stages", "xsec"), default="stages",
                        help="which recipe made it (scripts/train_demo_model.sh; default stages)")
    parser.add_argument("--part", type=int, default=None,
                        help="the cross-section design: which part of the chain this is (1, 2, ...); recorded")
    args = parser.parse_args(argv)
    source, target = args.source, args.target
    configs_of_design = CONFIGS if args.design == "stages" else [XSEC_CONFIG] * 99
    model, metadata = load_checkpoint(source)
    run = source.parent.parent
    summary = _summary_of(run)
    training = dict(metadata.training or {})
    if args.part is not None:
        if args.design != "xsec" or args.part < 1:
            parser.error(f"--part {args.part}: a part number (1, 2, ...) of the cross-section design (--design xsec)")
        training["part"] = args.part
        training["parts"] = (f"part {args.part} of the chain: part 1 from scratch, each later part from the "
                             "previous part's best weights, each one cosine cycle of the config's max_steps")
    if not summary:
        # A committed part's file (scripts/parts/) has no run folder beside it: keep the training record
        # written when it was packaged (config, steps, best synthetic validation Dice, data).
        if not training.get("global_step"):
            parser.error(f"{source}: no summary.json in {run} and no training record in the checkpoint; "
                         "expected RUNDIR/checkpoints/best.pt or a file this script packaged")
        kept = {"global_step": "global_step", "best_epoch": "best_epoch", "best_dice": "best_synthetic_val_dice",
                "stopped_at_step": "stopped_at_step", "planned_steps": "planned_steps"}
        summary = {key: training.get(name) for key, name in kept.items()}
    # Walk back the --init-checkpoint chain (stage 3 <- stage 2 <- stage 1); a path is relative to
    # where training ran: try it as written and beside the run.
    runs = [run]
    while len(runs) < len(configs_of_design) and (start := _read(runs[-1] / "config.json").get("init_checkpoint")):
        start = Path(start).parent.parent
        previous = next((r for r in (start, runs[-1].parent / start) if (r / "config.json").exists()), None)
        if previous is None:
            break
        runs.append(previous)
    runs.reverse()
    configs = configs_of_design[:len(runs)]
    for number, earlier in enumerate(runs[:-1], start=1):
        stage_summary = _read(earlier / "summary.json")
        training[f"stage{number}_global_step"] = stage_summary.get("global_step")
        training[f"stage{number}_best_epoch"] = stage_summary.get("best_epoch")
    training.update({"config": " then ".join(configs), "recipe": "scripts/train_demo_model.sh",
                     "global_step": summary.get("global_step"), "best_epoch": summary.get("best_epoch"),
                     "best_synthetic_val_dice": summary.get("best_dice"),
                     "data": DATA[args.design]})
    if summary.get("stopped_at_step"):  # the weights of its best validation, before the end of its cycle
        training["stopped_at_step"] = summary["stopped_at_step"]
        training["planned_steps"] = summary.get("planned_steps")
    description = DESCRIPTION if args.design == "stages" else XSEC_DESCRIPTION
    metadata = dataclasses.replace(metadata, name=NAME, description=description, demo=True, training=training)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target, model.half(), metadata)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
