"""Regenerate every SOLF table and figure of docs/solf.md from nothing, in one command.

    python benchmarks/reproduce_solf.py -o OUT                    # the docs. tables (1,000 phantoms, minutes)
    python benchmarks/reproduce_solf.py -o OUT --n 8 --sizes 4,8 --no-report --no-real  # the test's run

Steps, all seeded (the same command gives the same tables):

1. a phantom cohort with planted corruptions (``SwinBOBLib.phantom.write_cohort``, size ``--size``,
   seeds ``--seed``.., ``--corrupt-fraction`` of the cases with one corruption each, the kinds in
   turn so that each is planted about equally often), in OUT/cohort;
2. ``swinbob solf ablation`` on it: OUT/ablation/ablation.csv, ablation_by_kind.csv, ablation.md;
3. the same filters at epsilon 2 on the first n cases for each n of ``--sizes``: OUT/by_cohort_size.csv;
4. ``swinbob solf run`` on it (bounds, flags, report, distributions.png, mean_normalized_volume.png)
   in OUT/run;
5. the checks on the real label maps of Testing/Data (TotalSegmentator CT normal and fast models,
   MR): OUT/real_maps.csv, what each rule flags there and how much the CT labelings agree;
6. OUT/solf_tables.md: every table as Markdown, as docs/solf.md shows them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REAL_MAPS = {  # file in Testing/Data/totalsegmentator-samples -> its scheme
    "example_seg.nii.gz": "total", "example_seg_fast.nii.gz": "total",
    "example_seg_fast_force_split.nii.gz": "total", "example_seg_mr.nii.gz": "total_mr",
}
SAMPLES = REPO / "Testing" / "Data" / "totalsegmentator-samples"
#: On the real maps, holes are reported above this share of the volume (slices of real labelings
#: have one-voxel holes everywhere; the cohort bounds absorb those, fixed rules cannot).
REAL_HOLES_SHARE = 0.01


def make_cohort(folder: Path, args) -> dict:
    from SwinBOBLib import phantom

    return phantom.write_cohort(folder, n=args.n, size=args.size, seed=args.seed, corrupt=True,
                                corrupt_fraction=args.corrupt_fraction, balanced_kinds=not args.random_kinds)


def run_ablation(cohort: Path, out: Path, args) -> None:
    from SwinBOBLib.cli import solf as commands

    code = commands.main(["solf", "ablation", str(cohort), "-o", str(out), "--workers", str(args.workers),
                          "--quiet", "--epsilons", args.epsilons])
    if code:
        raise SystemExit(f"solf ablation failed with exit code {code}")


def by_cohort_size(features_dir: Path, cohort: Path, sizes, out: Path) -> list[dict]:
    """The filters at epsilon 2 on the first n samples, for each n."""
    from SwinBOBLib.solf import ablation
    from SwinBOBLib.solf.cohort import compute_features, find_samples
    from SwinBOBLib.solf.tables import structure_namer, write_table

    samples = find_samples(cohort)
    full = compute_features(samples, features_dir, workers=1, progress=False, scheme="ukbob").cohort()
    records = ablation.load_corruptions(cohort / "corruptions")
    rows = []
    for n in sizes:
        ids = sorted(full)[:n]
        subset = {i: full[i] for i in ids}
        truth = ablation.load_truth(cohort / "corruptions", ids)
        row = ablation.ablation_table(subset, truth, [2], structure_namer("ukbob"))[0]
        rows.append({"samples": n, "corruptions": sum(r["id"] in subset for r in records), **row})
    write_table(rows, out, list(rows[0]))
    return rows


def run_report(cohort: Path, out: Path, args) -> None:
    from SwinBOBLib.solf.pipeline import RunConfig, run_cohort

    run_cohort(RunConfig(cohort=str(cohort), out_dir=str(out), workers=args.workers, progress=False))


def real_maps(out: Path) -> list[dict]:
    """Check values and rule verdicts on the real label maps (fixed rules only: three maps are no
    cohort), with the Dice between the CT normal- and fast-model labelings per flagged structure."""
    from SwinBOBLib import io
    from SwinBOBLib.evaluation import metrics
    from SwinBOBLib.solf.checks import structure_checks
    from SwinBOBLib.solf.tables import structure_namer, write_table

    rows, normal = [], None
    for file, scheme in REAL_MAPS.items():
        image = io.load_labelmap(SAMPLES / file, scheme=None)
        name = structure_namer(scheme)
        if file == "example_seg.nii.gz":
            normal = image.array
        values = structure_checks(image.array, image.affine)
        for label, v in values.items():
            rules = _fixed_rules(name(label), v)
            if not rules:
                continue
            dice = ""
            comparable = normal is not None and scheme == "total" and normal.shape == image.array.shape
            if comparable and file != "example_seg.nii.gz":
                dice = round(metrics.dice(image.array == label, normal == label), 3)
            rows.append({"map": file, "label": label, "structure": name(label), "flags": ";".join(rules),
                         "lateral_offset_mm": round(v["lateral_offset_mm"], 1), "components": v["components"],
                         "largest_component_fraction": round(v["largest_component_fraction"], 3),
                         "filled_volume_ratio": round(v["filled_volume_ratio"], 3),
                         "slice_gap_fraction": round(v["slice_gap_fraction"], 3), "dice_vs_normal_model": dice})
    write_table(rows, out, ["map", "label", "structure", "flags", "lateral_offset_mm", "components",
                            "largest_component_fraction", "filled_volume_ratio", "slice_gap_fraction",
                            "dice_vs_normal_model"])
    return rows


def _fixed_rules(name: str, v: dict) -> list[str]:
    """What a structure fails without cohort bounds: the side rule, and deviations from a solid,
    one-piece, gap-free structure."""
    from SwinBOBLib.solf.checks import _side_of

    rules = []
    if _side_of(name) * v["lateral_offset_mm"] < 0:
        rules.append("wrong side")
    if v["components"] > 1:
        rules.append(f"{v['components']} pieces")
    if v["slice_gap_fraction"] > 0:
        rules.append("slice gaps")
    if v["filled_volume_ratio"] > 1.0 + REAL_HOLES_SHARE:
        rules.append("holes")
    return rules


def markdown(out: Path, info: dict) -> str:
    from SwinBOBLib.solf.ablation import markdown_table
    from SwinBOBLib.solf.tables import read_csv

    parts = [f"# SOLF tables ({info['n']} {info['size']} phantoms, seed {info['seed']}, "
             f"{info['corrupted']} corrupted; {info['machine']}; {info['seconds']:.0f} s)", ""]
    for title, path in (("Ablation over epsilon", out / "ablation" / "ablation.csv"),
                        ("Recall by corruption kind at epsilon 2", out / "ablation" / "ablation_by_kind.csv"),
                        ("Epsilon 2 by cohort size", out / "by_cohort_size.csv"),
                        ("Real label maps of Testing/Data (fixed rules)", out / "real_maps.csv")):
        rows = [{k: _number(v) for k, v in r.items()} for r in read_csv(path)] if path.exists() else []
        parts += [f"## {title}", "", markdown_table(rows) if rows else "(none)", ""]
    return "\n".join(parts)


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", required=True, help="output folder (created; must not exist)")
    parser.add_argument("--n", type=int, default=1000, help="phantoms in the cohort (default 1000)")
    parser.add_argument("--size", default="tiny", help="phantom size (default tiny: 48x40x96 at 10 mm)")
    parser.add_argument("--seed", type=int, default=0, help="seed of case 0 (default 0)")
    parser.add_argument("--corrupt-fraction", type=float, default=0.3, help="cases with a corruption (default 0.3)")
    parser.add_argument("--random-kinds", action="store_true", help="draw each corruption's kind at random "
                        "(default: the kinds in turn, so each is planted about equally often)")
    parser.add_argument("--sizes", default="100,300,1000", help="cohort sizes of by_cohort_size.csv")
    parser.add_argument("--epsilons", default="0,1,2,3,4,5")
    parser.add_argument("--workers", type=int, default=1, help="feature processes (default 1)")
    parser.add_argument("--no-report", action="store_true", help="skip solf run (report and figures)")
    parser.add_argument("--no-real", action="store_true", help="skip the real label maps")
    parser.add_argument("--cohort", help="use this cohort written before by the same --n/--size/--seed/"
                        "--corrupt-fraction instead of generating it again (phantoms are deterministic)")
    args = parser.parse_args(argv)
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} exists and is not empty; the tables are regenerated from nothing")
    started = time.perf_counter()
    if args.cohort:
        cohort = Path(args.cohort)
        written = {"corrupted": sorted(p.stem for p in (cohort / "corruptions").glob("*.json")
                                       if json.loads(p.read_text(encoding="utf-8")))}
    else:
        cohort = out / "cohort"
        written = make_cohort(cohort, args)
    run_ablation(cohort, out / "ablation", args)
    sizes = [n for n in (int(v) for v in args.sizes.split(",")) if n <= args.n]
    by_cohort_size(out / "ablation", cohort, sizes, out / "by_cohort_size.csv")
    if not args.no_report:
        run_report(cohort, out / "run", args)
    if not args.no_real:
        real_maps(out / "real_maps.csv")
    info = {"n": args.n, "size": args.size, "seed": args.seed, "corrupted": len(written["corrupted"]),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
            "seconds": time.perf_counter() - started}
    (out / "solf_tables.md").write_text(markdown(out, info), encoding="utf-8")
    (out / "reproduce.json").write_text(json.dumps({**info, "argv": sys.argv[1:] if argv is None else argv}, indent=1))
    print(f"wrote {out / 'solf_tables.md'} ({info['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
