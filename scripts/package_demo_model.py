"""Package a trained run as the bundled demo model (Resources/Models/swinbob_demo.pt).

    python scripts/package_demo_model.py RUNDIR/checkpoints/best.pt [OUTPUT]

Stores the weights in float16 (they load into a float32 model; half the file) and writes into the
checkpoint's metadata what the model is, so every output it produces says so: its name, that it is a
demo model, a one-line description, and how it was trained (config, steps, data). See
docs/training.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SwinBOBLib.model import load_checkpoint, save_checkpoint  # noqa: E402

NAME = "swinbob-demo-synth"
DESCRIPTION = ("small demo model (SegResNet, 6 x 6 x 4 mm) trained on a CPU on images synthesised from label maps "
               "(phantoms + one real CT's labels, its unlabelled body as a partial label); not Swin-BOB, "
               "not for clinical use")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    source = Path(argv[0])
    target = Path(argv[1]) if len(argv) > 1 else REPO / "Resources" / "Models" / "swinbob_demo.pt"
    model, metadata = load_checkpoint(source)
    run = source.parent.parent
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8")) if (run / "summary.json").exists() else {}
    config = json.loads((run / "config.json").read_text(encoding="utf-8")) if (run / "config.json").exists() else {}
    training = dict(metadata.training or {})
    if config.get("init_checkpoint"):  # stage 2: fine-tuned from stage 1's best weights
        configs = ["Resources/Models/swinbob_demo.yaml", "Resources/Models/swinbob_demo_stage2.yaml"]
        start = Path(config["init_checkpoint"])  # relative to where training ran: try there and beside the run
        summaries = [c.parent.parent / "summary.json" for c in (start, run.parent / start)]
        first = next((json.loads(p.read_text(encoding="utf-8")) for p in summaries if p.exists()), {})
        training["stage1_global_step"], training["stage1_best_epoch"] = first.get("global_step"), first.get("best_epoch")
    else:
        configs = ["Resources/Models/swinbob_demo.yaml"]
    training.update({"config": " then ".join(configs), "recipe": "scripts/train_demo_model.sh",
                     "global_step": summary.get("global_step"), "best_epoch": summary.get("best_epoch"),
                     "best_synthetic_val_dice": summary.get("best_dice"),
                     "data": "16 synthetic phantoms (14 train, 2 val) + the real CT label maps of Testing/Data "
                             "(TotalSegmentator total, remapped to UKBOB); never the MR sample"})
    metadata = dataclasses.replace(metadata, name=NAME, description=DESCRIPTION, demo=True, training=training)
    save_checkpoint(target, model.half(), metadata)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
