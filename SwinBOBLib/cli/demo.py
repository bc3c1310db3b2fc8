"""``swinbob demo``: the main job on the embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

from SwinBOBLib.io.files import check_output_path
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.workflows.demo import plain_summary, run_demo


def cmd_demo(args) -> int:
    check_output_path(args.output)
    with folder_lock(args.output):  # one run per output folder
        summary = run_demo(args.output, checkpoint=args.checkpoint, bounds=args.bounds, device=args.device)
    entropy = summary["entropy"]
    print(f"input       {summary['input']}")
    model = summary["model"]
    print(f"model       {model['name']} on {summary['device']} ({summary['checkpoint']})")
    print(f"            {'DEMO MODEL: ' if model.get('demo') else ''}{model['description']}")
    adapted = (f"ETTA {entropy['etta_before']:.3f} -> {entropy['etta_after']:.3f}"
               if entropy.get("etta_before") is not None else "ETTA skipped (see report.json warnings)")
    print(f"entropy     mean {entropy['mean']:.3f}; {adapted}")
    cohort = summary.get("bounds_cohort") or {}
    print(f"structures  {summary['structures']} segmented; SOLF flags {len(summary['flagged_by_solf'])}: "
          f"{', '.join(summary['flagged_by_solf'][:8]) or 'none'}")
    print(f"SOLF bounds {cohort.get('description') or 'cohort not recorded'}"
          f"{' (SYNTHETIC cohort)' if cohort.get('synthetic') else ''}")
    for note in summary.get("solf_warnings", []):
        print(f"            warning: {note}")
    if summary["mean_dice_vs_reference"] is not None:
        print(f"reference   mean Dice {summary['mean_dice_vs_reference']:.3f} against the sample's "
              "TotalSegmentator labels (shared structures; see reference_scores.csv)")
    print(f"outputs     {args.output}/: {', '.join(summary['outputs'])} ({summary['seconds']} s)")
    print()
    for line in plain_summary(summary, args.output):
        print(line)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="segment the bundled sample MRI with the demo model, ETTA and SOLF",
                              description="What `make demo` runs: the sample MRI in Testing/Data, the bundled "
                              "demo model and SOLF bounds in Resources/.")
    p.add_argument("-o", "--output", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--checkpoint", help="another model (default: Resources/Models/swinbob_demo.pt)")
    p.add_argument("--bounds", help="other SOLF bounds (default: Resources/SOLF/default_bounds.json)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    p.set_defaults(func=cmd_demo)
