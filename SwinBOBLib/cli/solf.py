"""``swinbob solf ...``: parse, call the library, print or write. No computing lives here.

    swinbob solf run COHORT -o OUT [--epsilon 2] [--engine local|ray] [--address ADDR] [--workers N]
    swinbob solf features LABELMAP [--scheme total] [--image CT.nii.gz | --body-mask MASK]
    swinbob solf check LABELMAP --bounds OUT/bounds.json
    swinbob solf ablation COHORT -o OUT [--truth COHORT/corruptions]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from SwinBOBLib import io
from SwinBOBLib.io.files import write_text_atomic
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.solf.ablation import (
    ablation_table,
    corrupted_pairs,
    load_corruptions,
    markdown_table,
    recall_by_kind,
)
from SwinBOBLib.solf.body import body_mask_from_image
from SwinBOBLib.solf.bounds import (
    MISSING_PRESENCE,
    SOLF_FEATURES,
    check_scheme,
    geometry_warnings,
    load_bounds,
)
from SwinBOBLib.solf.checks import cohort_size_warning
from SwinBOBLib.solf.cohort import (
    Sample,
    compute_features,
    find_samples,
    organ_only_warning,
)
from SwinBOBLib.solf.comparable import VERDICTS, judge, reason_text
from SwinBOBLib.solf.features import FEATURES, organ_features
from SwinBOBLib.solf.pipeline import RunConfig, claim_solf_folder, run_cohort
from SwinBOBLib.solf.tables import structure_namer, write_table

#: What ``swinbob solf --help`` says (the module docstring is for developers).
_DESCRIPTION = """SOLF, the organ label filter of the UKBOB paper: measure each structure's shape (normalised
volume, sphericity, eccentricity), learn per-structure bounds on a cohort, and flag label maps
whose structures fall outside them.

    swinbob solf run COHORT -o OUT        features, bounds, flags, QC list and report of a cohort
    swinbob solf features LABELMAP        print one label map's organ features
    swinbob solf check LABELMAP --bounds OUT/bounds.json   flag one label map (exit 3 when flagged)
    swinbob solf ablation COHORT -o OUT   precision/recall of SOLF against planted corruptions

Run `swinbob solf COMMAND --help` for each command's options."""


#: Exit code of ``check`` when a structure is inaccurate or missing (0: clean; ``swinbob`` itself
#: exits 1 on bad input and 2 on a usage error).
EXIT_FLAGGED = 3


def _scheme(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cohort", help="folder of label maps, dataset folder with labelsTr/, or a CSV "
                        "with columns labelmap[,id,image,body_mask]")
    parser.add_argument("-o", "--output", required=True, help="output folder (resumable): new, empty or an "
                        "earlier solf run/ablation output folder; one holding other files is refused")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local process pool (default) or Ray")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local processes (default: all cores; 1 = in this process)")
    parser.add_argument("--scheme", type=_scheme, default="ukbob",
                        help="label scheme naming the structures in outputs and the left/right pairs of "
                        "the partner check (default ukbob; 'none')")
    parser.add_argument("--images", default=None, help="folder of images matched by file name (also read "
                        "from imagesTr/ of a dataset folder); they feed the image checks")
    parser.add_argument("--body-masks", default=None, help="folder of body masks matched by file name")
    parser.add_argument("--body", choices=("auto", "labels", "image", "mask"), default="auto",
                        help="V_body from the body mask if given, else the non-zero labels (auto); or "
                        "segmented from the image (image)")
    parser.add_argument("--checks", choices=("all", "labels", "none"), default="all",
                        help="per-structure checks computed beside the SOLF features: every one with its inputs "
                        "(all, default), the label-only ones (labels: no image read, about half the time), or "
                        "none (the SOLF features alone, fastest; the ablation then has no check columns)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_run(args) -> int:
    config = RunConfig(cohort=args.cohort, out_dir=args.output, epsilon=args.epsilon, engine=args.engine,
                       workers=args.workers, address=args.address, scheme=args.scheme, images=args.images,
                       body_masks=args.body_masks, body=args.body, missing_presence=args.missing_presence,
                       plots=not args.no_plots, progress=not args.quiet, checks=args.checks)
    result = run_cohort(config)
    print(f"{result.samples} samples ({result.computed} computed, {result.reused} reused, "
          f"{len(result.errors)} unreadable); {result.flagged_samples} flagged, "
          f"{result.inaccurate_structures} inaccurate and {result.missing_structures} missing structures")
    for name, paths in result.files.items():
        print(f"{name}\t" + "\t".join(str(p) for p in paths))
    for warning in result.warnings:
        print(f"swinbob solf run: warning: {warning}", file=sys.stderr)
    if result.errors and len(result.errors) >= result.samples:
        print(f"swinbob solf run: error: none of the {result.samples} samples could be read; see "
              f"{Path(args.output) / 'errors.csv'}", file=sys.stderr)
        return 1
    return 0


def _sample_features(args):
    return _load_sample(args)[1]


def _load_sample(args):
    """The label map of a sample command and its organ features: ``(Image, features)``."""
    image = io.load_labelmap(args.labelmap, scheme=None)
    mask = None
    if args.body_mask:
        mask = io.load_image(args.body_mask).array != 0
    elif args.image:
        mask = body_mask_from_image(io.load_image(args.image).array)
    warning = organ_only_warning(Sample("", args.labelmap), "auto", mask, image.array, image.affine)
    if warning:  # the sample commands take --image / --body-mask rather than folders
        print("swinbob solf: warning: " + warning.replace("(--images DIR --body image, or an 'image' CSV "
              "column)", "(--image FILE)").replace("(--body-masks DIR, or a 'body_mask' CSV column)",
              "(--body-mask FILE)"), file=sys.stderr)
    return image, organ_features(image.array, image.spacing, body_mask=mask, source=args.labelmap)


def _add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labelmap", help="label map file")
    parser.add_argument("--scheme", type=_scheme, default="ukbob", help="label scheme for names (default ukbob)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body-mask", default=None, help="body mask file (V_body); default: non-zero labels")
    body.add_argument("--image", default=None, help="image to segment the body from (organ-only label maps)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_features(args) -> int:
    features = _sample_features(args)
    if args.json:
        print(json.dumps({str(k): v for k, v in features.items()}, indent=1))
        return 0
    name = structure_namer(args.scheme)
    print("\t".join(["label", "name", *FEATURES]))
    for label, values in features.items():
        print("\t".join([str(label), name(label)] + [f"{values[k]:.6g}" for k in FEATURES]))
    return 0


def cmd_check(args) -> int:
    bounds = load_bounds(args.bounds)
    image, features = _load_sample(args)
    check_scheme(args.labelmap, args.scheme, bounds, features, partial=args.partial)
    verdicts = judge(features, bounds, image.array, image.spacing)
    bad = {label: e for label, e in verdicts.items() if e["verdict"] in ("inaccurate", "missing")}
    _warn_geometry(bounds, image)
    if args.json:
        print(json.dumps({str(k): v for k, v in verdicts.items()}, indent=1))
    else:
        name = structure_namer(args.scheme or bounds.scheme)
        for label, entry in verdicts.items():
            if entry["verdict"] != "plausible":
                print(f"{label}\t{name(label)}\t{entry['verdict']}\t{reason_text(entry)}")
        counts = ", ".join(f"{sum(e['verdict'] == v for e in verdicts.values())} {v}" for v in VERDICTS)
        print(f"{len(bad)} of {len(verdicts)} structures flagged ({counts}; epsilon {bounds.epsilon:g}%, "
              f"cohort of {bounds.n_samples})")
    return EXIT_FLAGGED if bad else 0


def _warn_geometry(bounds, image) -> None:
    """A scan whose spacing or coverage differs markedly from the bounds' cohort (or bounds from a
    synthetic cohort) gets a warning on stderr: its verdicts are not to be trusted as they stand."""
    for note in geometry_warnings(bounds, image.spacing, image.spatial_shape):
        print(f"swinbob solf: warning: {note}", file=sys.stderr)


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def cmd_ablation(args) -> int:
    io.check_output_path(args.output)
    with folder_lock(args.output):  # one run per output folder
        claim_solf_folder(Path(args.output), [args.cohort, args.images, args.body_masks, args.truth])
        return _ablation(args)


def _ablation(args) -> int:
    samples = find_samples(args.cohort, args.images, args.body_masks)
    result = compute_features(samples, args.output, engine=args.engine, workers=args.workers,
                              address=args.address, body=args.body, progress=not args.quiet, scheme=args.scheme,
                              checks=args.checks)
    cohort = result.cohort()
    truth_dir = Path(args.truth) if args.truth else Path(args.cohort) / "corruptions"
    records = load_corruptions(truth_dir, set(cohort)) if truth_dir.is_dir() else None
    truth = set().union(*map(corrupted_pairs, records)) if records is not None else None
    epsilons = [_number(e) for e in args.epsilons.split(",")]
    name_of = structure_namer(args.scheme)
    rows = ablation_table(cohort, truth, epsilons, name_of)
    small = [w for w in (cohort_size_warning(len(cohort), e) for e in epsilons) if w]
    table = "".join(f"**Warning**: {w}.\n\n" for w in small) + markdown_table(rows)
    for warning in small:
        print(f"swinbob solf ablation: warning: {warning}", file=sys.stderr)
    write_table(rows, Path(args.output) / "ablation.csv", list(rows[0]))
    header = (f"SOLF epsilon ablation: {len(cohort)} samples, "
              + (f"{len(records)} planted corruptions, {len(truth)} wrong structures ({truth_dir})"
                 if records is not None else "no ground truth"))
    if records:
        kinds = recall_by_kind(cohort, records, args.kind_epsilon, name_of)
        write_table(kinds, Path(args.output) / "ablation_by_kind.csv", list(kinds[0]))
        table += f"\nRecall by corruption kind at epsilon {args.kind_epsilon:g}:\n\n" + markdown_table(kinds)
    write_text_atomic(Path(args.output) / "ablation.md", f"# {header}\n\n{table}")
    print(header)
    print(table, end="")
    return 0


def register(subparsers) -> None:
    """Add ``solf`` and its sub-commands to the ``swinbob`` parser's sub-parsers."""
    solf = subparsers.add_parser("solf", help="SOLF label filter: organ shape features, cohort bounds, flags",
                                 description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = solf.add_subparsers(dest="solf_command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="features, bounds, flags, QC list and report of a cohort")
    _add_cohort_arguments(run)
    run.add_argument("--epsilon", type=float, default=2.0, help="percent excluded per feature (default 2)")
    run.add_argument("--missing-presence", type=float, default=MISSING_PRESENCE,
                     help="report an absent structure as missing when at least this fraction of the "
                     f"cohort has it (default {MISSING_PRESENCE})")
    run.add_argument("--no-plots", action="store_true", help="report without PNG figures")
    run.set_defaults(func=cmd_run)

    features = commands.add_parser("features", help="print one label map's organ features")
    _add_sample_arguments(features)
    features.set_defaults(func=cmd_features)

    check = commands.add_parser("check", help="flag one label map against saved bounds "
                                f"(exit {EXIT_FLAGGED} when flagged)")
    _add_sample_arguments(check)
    check.set_defaults(scheme=None)
    check.add_argument("--bounds", required=True, help="bounds.json of a cohort run")
    check.add_argument("--partial", action="store_true", help="the map covers part of the body (e.g. a thin "
                       "slab): check it although it lacks many of the cohort's structures")
    check.set_defaults(func=cmd_check)

    ablation = commands.add_parser("ablation", help="epsilon 0..5 ablation: flags, precision and recall "
                                   f"of SOLF ({'/'.join(SOLF_FEATURES)}, 2 of 3), the missing rule, "
                                   "volume-only, IQR, each structure check and all combined")
    _add_cohort_arguments(ablation)
    ablation.add_argument("--truth", default=None, help="folder of corruption records "
                          "(default COHORT/corruptions)")
    ablation.add_argument("--epsilons", default="0,1,2,3,4,5", help="comma-separated (default 0..5)")
    ablation.add_argument("--kind-epsilon", type=float, default=2.0,
                          help="epsilon of the recall-by-corruption-kind table (default 2)")
    ablation.set_defaults(func=cmd_ablation)


def main(argv=None) -> int:
    """Stand-alone entry (``python -m SwinBOBLib.solf.commands ...``) before ``swinbob`` wires it in."""
    parser = argparse.ArgumentParser(prog="swinbob")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:  # as swinbob's own main: 1 on bad input
        print(f"swinbob solf: error: {error}", file=sys.stderr)
        return 1
