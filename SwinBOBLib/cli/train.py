"""``swinbob train``: the training options mapped onto :class:`TrainConfig`, then :func:`train`."""

from __future__ import annotations

import os

from SwinBOBLib.runtime.progress import check_progress_target
from SwinBOBLib.training.config import load_config_file
from SwinBOBLib.training.trainer import train

#: CLI flag -> (TrainConfig field, type). Flags left unset keep the config file's or saved value.
_CLI_OPTIONS = {
    "epochs": int, "max_steps": int, "roi_size": int, "feature_size": int, "batch_size": int,
    "crops_per_volume": int, "lr": float, "weight_decay": float, "network": str, "device": str,
    "scheme": str, "dataset_scheme": str, "subset_fraction": float, "lateral_flip": str,
    "init_checkpoint": str, "num_workers": int, "cache": str, "seed": int, "val_every": int,
    "checkpoint_every": int, "restart_epochs": int, "intensity": str, "synthesis": str,
}


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def options_from_args(args) -> dict:
    """The options a user gave: the config file, then the flags set on the command line."""
    given = load_config_file(args.config) if args.config else {}
    for name in _CLI_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            given[name] = value
    if args.contrast:
        given["contrasts"] = [c.strip() for c in args.contrast.split(",") if c.strip()]
    if args.spacing:
        values = [float(v) for v in args.spacing.split(",")]
        given["target_spacing_mm"] = values * 3 if len(values) == 1 else values
    if args.allow_outside_paths:
        given["allow_outside_paths"] = True
    if args.no_amp:
        given["amp"] = False
    if args.no_progress:
        given["progress"] = False
    for item in args.set or []:
        key, _, value = item.partition("=")
        if not _:
            raise ValueError(f"--set expects KEY=VALUE, got '{item}'")
        given[key.strip()] = _parse_value(value)
    return given


def cmd_train(args) -> int:
    if args.progress_json and args.progress_json != "-":
        check_progress_target(args.progress_json, [args.dataset, args.config, args.init_checkpoint])
    summary = train(options_from_args(args), args.dataset, args.output, progress_file=args.progress_json)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0 if summary["status"] == "done" else 130
    if summary.get("already_finished"):
        print(f"{args.output}: this run already finished ({summary['global_step']} steps, {summary['epochs_done']} "
              "epochs); nothing to do. Raise --max-steps or --epochs to train on, or choose a new RUNDIR.")
    best = summary["best_dice"]
    print(f"{summary['status']}: {summary['global_step']} steps, {summary['epochs_done']} epochs, "
          f"best validation Dice {best:.4f}" if best >= 0 else f"{summary['status']}: {summary['global_step']} steps")
    if summary.get("best_checkpoint"):
        print(f"checkpoint: {summary['best_checkpoint']}")
    else:
        print(f"checkpoint: none validated yet (best.pt is written at the first validation); last state: "
              f"{summary['last_checkpoint']}")
    return 0 if summary["status"] == "done" else 130


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a segmentation model (the UKBOB recipe), resumable",
        description="Train on a dataset folder (dataset.json, e.g. from `swinbob phantom`), a Decathlon "
                    "dataset.json or a CSV of image,label pairs. Defaults are the UKBOB paper's recipe "
                    "(96^3 crops, batch 8, AdamW 1e-4, cosine warm restarts every 200 epochs, Dice+CE). "
                    "Running again with the same RUNDIR resumes. Launch with torchrun for several GPUs.")
    p.add_argument("--dataset", required=True, help="dataset folder, dataset.json or CSV")
    p.add_argument("-o", "--output", required=True, metavar="RUNDIR", help="run folder (created; resumed if present; a folder holding other files is refused)")
    p.add_argument("--config", help="YAML/JSON file of TrainConfig options; flags override it")
    for name, kind in _CLI_OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=_HELP.get(name))
    p.add_argument("--contrast", help="comma-separated channels to train on (names or indices); default all")
    p.add_argument("--spacing", help="target voxel spacing in mm, one value or x,y,z; default native")
    p.add_argument("--allow-outside-paths", action="store_true", help="let the dataset point outside its folder")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig option")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress ('-' for stdout; default "
                   "RUNDIR/progress.jsonl); a new file or an earlier progress log, never an input")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


_HELP = {
    "epochs": "epochs to train (default 3000, the paper's)", "max_steps": "stop after N optimisation steps",
    "roi_size": "crop edge in voxels (default 96; multiple of 32 for Swin-UNETR; three edges x, y, z in a --config file)",
    "feature_size": "Swin-UNETR feature size: 12, 24 or 48 (default 48)",
    "batch_size": "crops per step (default 8)", "network": "swinunetr (default), unetr, segresnet or unet",
    "device": "auto (default), cuda, cpu or mps", "scheme": "label scheme of the model (default ukbob)",
    "dataset_scheme": "label scheme of the dataset files (default: from dataset.json)",
    "subset_fraction": "train on this fraction of the training cases",
    "lateral_flip": "swap (default: left-right flips swap paired labels), off or plain",
    "init_checkpoint": "fine-tune from this checkpoint (new head for another scheme)",
    "cache": "memory (default), disk or none",
    "lr": "AdamW learning rate (default 1e-4, the paper's)", "weight_decay": "AdamW weight decay (default 1e-5)",
    "val_every": "validate (mean Dice on the val split) every N epochs (default 1)",
    "checkpoint_every": "also write RUNDIR/last.pt every N optimisation steps (default 100; always at epoch ends)",
    "restart_epochs": "epochs between cosine warm restarts of the learning rate (default 200)",
    "crops_per_volume": "random crops drawn from each loaded volume (default 4, at most --batch-size)",
    "num_workers": "data-loading processes (default 0: in the training process)",
    "seed": "seeds the split, sampling, augmentation and initialisation (default 0)",
    "intensity": "percentile (default, MRI), ct_window (CT) or none",
    "synthesis": "off (default: train on the dataset's images) or labels (render every training image from "
                 "its label map with random contrast, shape, resolution and field of view, SynthSeg-style; "
                 "images only split the unlabelled body into tissue classes, trained as none of the "
                 "structures the map contains); ranges and unlabelled_body (partial|ignore) via "
                 "--set synthesis_options={...}",
}
