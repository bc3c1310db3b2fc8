"""Synthetic model selection for the demo model: Dice of liver, spleen and kidneys on rendered phantoms.

    python scripts/select_demo_model.py demo-train/run3/checkpoints/best.pt [more checkpoints...]
    python scripts/select_demo_model.py CKPT --split train --confusion     # how well it fits its training phantoms

Each phantom label map of the run's split (``split.json`` of the checkpoint's run folder; ``--split
val`` by default, the synthetic validation) is rendered with the training synthesis
(``SwinBOBLib.training.synthesis.synthesize_volume``, fixed seeds ``--seeds``) on its own grid and segmented
through ``segment_image`` (resampled to the model's grid and back), so candidates trained on
different grids are compared on the same images. Prints, per checkpoint, the mean Dice over cases and
seeds of liver / spleen / kidney_right / kidney_left and their mean (the number the demo model is
selected on; docs/training.md), and with ``--confusion`` what each organ's voxels are labelled as.
Never the real MR sample: that is the zero-shot test, scored once with scripts/score_demo_model.sh.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ORGANS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.index("Each"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--split", default="val", choices=("val", "train"),
                        help="which phantoms of the run's split.json (default val)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="folder of the phantom label maps (default: WORKDIR/data/phantoms/labelsTr "
                             "of the recipe, two levels above the run folder)")
    parser.add_argument("--seeds", default="1,2", help="render seeds per phantom (default 1,2)")
    parser.add_argument("--max-cases", type=int, default=None, help="at most this many phantoms")
    parser.add_argument("--confusion", action="store_true", help="also print what each organ is labelled as")
    parser.add_argument("--mirror", action="store_true",
                        help="mirror each phantom left-right first (paired labels exchanged, so the names stay "
                             "anatomical): a structure's shape on the other side of the body")
    parser.add_argument("--pad-left", type=float, default=0.0, metavar="MM",
                        help="add this much air on the patient's left of each phantom first: the same anatomy "
                             "at another place in the sliding-window grid")
    parser.add_argument("--overlap", type=float, default=None,
                        help="sliding-window overlap (default: the checkpoint's, else the library's 0.25)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from SwinBOBLib import io, labels
    from SwinBOBLib.evaluation.metrics import dice
    from SwinBOBLib.inference import InferenceConfig, segment_image, window_overlap
    from SwinBOBLib.labels.layouts import lateral_swap_table
    from SwinBOBLib.models.loading import load_checkpoint
    from SwinBOBLib.training.synthesis import SynthesisConfig, generation_labels, synthesize_volume

    torch.set_num_threads(args.threads)
    layout = labels.channel_layout("ukbob", "full")
    name_of = labels.get_scheme("ukbob").name_of
    seeds = [int(s) for s in args.seeds.split(",")]
    exchange = lateral_swap_table(layout)  # the full layout: channel == label value
    for checkpoint in args.checkpoints:
        run = checkpoint.resolve().parent.parent
        split_file = run / "split.json"
        if not split_file.is_file():
            parser.error(f"{checkpoint}: no {split_file} (the run folder's split); is this a training checkpoint?")
        folder = args.labels or run.parent / "data" / "phantoms" / "labelsTr"
        cases = [c for c in json.loads(split_file.read_text())[args.split] if (folder / f"{c}.nii.gz").is_file()]
        if not cases:
            parser.error(f"{checkpoint}: no phantom of the '{args.split}' split in {folder}")
        cases = cases[: args.max_cases]
        model, metadata = load_checkpoint(checkpoint)
        scores = {organ: [] for organ in ORGANS}
        confusion = {organ: Counter() for organ in ORGANS}
        for case in cases:
            ras, _ = io.reorient(io.load_labelmap(folder / f"{case}.nii.gz", scheme="ukbob"), "RAS")
            reference = np.asarray(ras.array)
            affine = np.array(ras.affine, float)
            if args.mirror:  # RAS: array axis 0 is left-right
                reference = exchange[reference[::-1]]
            if args.pad_left > 0:  # RAS: the patient's left is the low end of axis 0
                pad = int(round(args.pad_left / abs(affine[0, 0])))
                reference = np.pad(reference, ((pad, 0), (0, 0), (0, 0)))
                affine[:3, 3] -= affine[:3, 0] * pad
            for seed in seeds:
                image, _ = synthesize_volume(generation_labels(reference, None), layout, seed, SynthesisConfig())
                result = segment_image(io.Image(image[0], affine), model, metadata,
                                       InferenceConfig(device="cpu", overlap=args.overlap, progress=False))
                predicted = np.asarray(result.labels.array)
                for organ, value in ORGANS.items():
                    scores[organ].append(dice(predicted == value, reference == value))
                    values, counts = np.unique(predicted[reference == value], return_counts=True)
                    confusion[organ].update(dict(zip(values.tolist(), counts.tolist())))
        means = {organ: float(np.mean(v)) for organ, v in scores.items()}
        overlap = window_overlap(InferenceConfig(overlap=args.overlap), metadata)
        moved = (" mirrored" if args.mirror else "") + (f" padded {args.pad_left:g} mm left" if args.pad_left else "")
        print(f"{checkpoint} (overlap {overlap:g}): {args.split} phantoms{moved} {', '.join(cases)} x seeds {args.seeds}: "
              + ", ".join(f"{o} {m:.3f}" for o, m in means.items()) + f"; mean {np.mean(list(means.values())):.3f}",
              flush=True)
        if args.confusion:
            for organ, counter in confusion.items():
                total = sum(counter.values())
                top = ", ".join(f"{name_of(v) if v else 'background'} {n / total:.0%}" for v, n in counter.most_common(4))
                print(f"  {organ} voxels labelled: {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
