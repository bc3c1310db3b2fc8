"""``swinbob benchmark``: options -> configuration, then :func:`run_benchmark`."""

from __future__ import annotations

from pathlib import Path

from SwinBOBLib.evaluation.benchmark import MODES, run_benchmark
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.inference.preprocess import check_roi_size


def cmd_benchmark(args) -> int:
    check_roi_size(args.roi_size)
    config = InferenceConfig(device=args.device, fast=args.fast, overlap=args.overlap, tta_flips=args.tta_flips,
                             progress=False)
    summary = run_benchmark(args.dataset, args.checkpoint, args.output, args.modes, args.split, args.eval_scheme,
                            config, EttaConfig(steps=args.etta_steps, lr=args.etta_lr), args.limit,
                            args.progress_json, roi_size=args.roi_size, progress_bar=not args.quiet)
    print((Path(args.output) / "summary.md").read_text(encoding="utf-8"))
    if summary["status"] != "done":
        return 130
    return 1 if summary["failed"] else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark", help="evaluate a checkpoint on a dataset: plain, TTA, ETTA (Dice, HD95, NSD)",
        description="Segments each labelled case in every mode and scores the structures the model shares "
                    "with the evaluation scheme. Writes per_case.csv, per_class.csv, summary.md (one row "
                    "per mode) and summary.json into OUTDIR (new, empty or an earlier benchmark's; "
                    "a folder holding other files is refused).")
    p.add_argument("--dataset", required=True, help="dataset folder (dataset.json), dataset.json or CSV")
    p.add_argument("--checkpoint", required=True, help="model checkpoint")
    p.add_argument("--modes", default="plain", help=f"comma-separated: {', '.join(MODES)} (default plain)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="cases to evaluate (default all labelled cases)")
    p.add_argument("--eval-scheme", help="score in this scheme, e.g. zeroshot10 (default: the dataset's)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--roi-size", type=int, help="sliding-window edge (default: checkpoint's)")
    p.add_argument("--overlap", type=float, default=None,
                   help="sliding-window overlap, 0..1 (default: the checkpoint's, else 0.25, as in segment)")
    p.add_argument("--fast", action="store_true", help="coarser grid (>= 3 mm) and no window overlap")
    p.add_argument("--tta-flips", type=int, default=8, choices=(1, 4, 8),
                   help="flip combinations of the tta modes: each window runs this many times (default %(default)s)")
    p.add_argument("--etta-steps", type=int, default=EttaConfig.steps,
                   help="ETTA gradient steps per scan (default %(default)s)")
    p.add_argument("--etta-lr", type=float, default=EttaConfig.lr,
                   help="ETTA Adam learning rate (default %(default)s)")
    p.add_argument("--limit", type=int, help="evaluate at most N cases (N >= 1; default every case)")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress ('-' for stdout; default "
                   "OUTDIR/progress.jsonl); a new file or an earlier progress log, never an input")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_benchmark)
