"""The ``swinbob`` command line: parse, call the library, write results. No computing lives here.

Each command group registers itself through a ``register(subparsers)`` function; the list below
is the registry of command modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from . import __version__

#: Modules that add commands; each has ``register(subparsers)``.
COMMAND_MODULES = (
    "SwinBOBLib.cli",
    "SwinBOBLib.segment",
    "SwinBOBLib.solf.commands",
    "SwinBOBLib.training",
    "SwinBOBLib.benchmark",
    "SwinBOBLib.demo",
)


def _print_rows(rows) -> None:
    for row in rows:
        print("\t".join(str(v) for v in row))


def cmd_labels(args) -> int:
    from . import labels

    if args.scheme is None:
        for name in labels.available_schemes():
            scheme = labels.get_scheme(name)
            print(f"{name}\t{len(scheme)}\t{scheme.description}")
        return 0
    scheme = labels.get_scheme(args.scheme)
    if args.find:
        for name in args.find:
            index = scheme.lookup(name)
            print(f"{index}\t{scheme[index].name}\t{scheme[index].display_name}")
        return 0
    if args.to:
        for c in labels.correspondences(scheme, args.to):
            print(f"{c.src_index}\t{c.src_name}\t{c.dst_index}\t{c.dst_name}\t{c.relation}")
        return 0
    if args.ctbl:
        Path(args.ctbl).write_text(labels.slicer_color_table(scheme.name), encoding="utf-8")
        print(f"wrote {args.ctbl}")
        return 0
    _print_rows(labels.scheme_rows(scheme.name))
    return 0


def cmd_info(args) -> int:
    from . import io

    image = io.load_image(args.image)
    print(f"file\t{args.image}")
    print(f"shape\t{image.array.shape}")
    print(f"dtype\t{image.array.dtype}")
    print(f"spacing_mm\t{tuple(round(s, 4) for s in image.spacing)}")
    print(f"orientation\t{image.orientation}")
    print(f"channels\t{image.num_channels}" + (f"\t{','.join(image.channel_names)}" if image.channel_names else ""))
    print(f"value_range\t{image.array.min()}\t{image.array.max()}")
    for row in image.affine:
        print("affine\t" + "\t".join(f"{v:.4f}" for v in row))
    return 0


def cmd_convert(args) -> int:
    from . import io

    image = io.load_image(args.input)
    if args.channels:
        image = io.select_channels(image, args.channels.split(","))
    if args.reorient:
        image, _ = io.reorient(image, args.reorient.upper())
    io.save_image(image, args.output)
    print(f"wrote {args.output} ({image.orientation}, shape {image.array.shape})")
    return 0


def cmd_remap(args) -> int:
    from . import io, labels

    image = io.load_labelmap(args.labelmap, scheme=args.src)
    remapped = labels.remap(image.array, args.src, args.dst)
    io.save_labelmap(remapped, image, args.output, scheme=args.dst)
    kept = sorted(set(int(v) for v in labels.remap_table(args.src, args.dst)[image.array].ravel() if v))
    print(f"wrote {args.output}: {len(kept)} structures of '{args.dst}'")
    return 0


def cmd_phantom(args) -> int:
    from tqdm import tqdm

    from . import phantom

    size = args.size
    if "x" in size:
        size = tuple(int(v) for v in size.split("x"))
    with tqdm(total=args.n, desc="phantoms", unit="case", disable=args.quiet) as bar:
        summary = phantom.write_cohort(args.output, n=args.n, size=size, seed=args.seed, corrupt=args.corrupt,
                                       corrupt_fraction=args.corrupt_fraction,
                                       progress=lambda done, total: bar.update(done - bar.n))
    print(f"wrote {args.n} case(s) to {args.output}")
    if args.corrupt:
        print(f"corrupted cases: {len(summary.get('corrupted', []))}")
    return 0


def register(subparsers) -> None:
    """The foundation's commands: labels, info, convert, remap, phantom."""
    p = subparsers.add_parser("labels", help="list label schemes, their structures, and correspondences",
                              description="Without SCHEME: list the schemes. With SCHEME: one line per "
                              "structure, INDEX<TAB>NAME<TAB>DISPLAY NAME<TAB>GROUP<TAB>R,G,B.")
    p.add_argument("scheme", nargs="?", help="ukbob, total, total_mr, btcv, amos, mrsegmentator, zeroshot10")
    p.add_argument("--find", nargs="+", metavar="NAME", help="resolve structure names (synonyms allowed)")
    p.add_argument("--to", metavar="SCHEME", help="show how each structure maps into another scheme")
    p.add_argument("--ctbl", metavar="FILE", help="write the scheme as a 3D Slicer colour table")
    p.set_defaults(func=cmd_labels)

    p = subparsers.add_parser("info", help="print an image's shape, spacing, orientation and affine")
    p.add_argument("image", help="NIfTI, NRRD, MHA file or DICOM folder")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("convert", help="convert between image formats, optionally reorienting")
    p.add_argument("input")
    p.add_argument("output", help="target file; its suffix picks the format (no suffix: DICOM folder)")
    p.add_argument("--reorient", metavar="AXCODES", help="e.g. RAS or LPS (flips/permutations only)")
    p.add_argument("--channels", help="comma-separated channel names or indices to keep")
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser("remap", help="map a label map from one scheme to another by structure")
    p.add_argument("labelmap")
    p.add_argument("output")
    p.add_argument("--from", dest="src", required=True, help="scheme of the input")
    p.add_argument("--to", dest="dst", default="ukbob", help="target scheme (default: ukbob)")
    p.set_defaults(func=cmd_remap)

    p = subparsers.add_parser("phantom", help="write synthetic neck-to-knee phantoms (UKBOB labels)",
                              description="Writes a Decathlon-style dataset folder: imagesTr/ (4-channel "
                              "Dixon NIfTI), labelsTr/ (UKBOB numbering, RAS), dataset.json; with --corrupt "
                              "also labelsClean/ and corruptions/*.json recording what was done.")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--size", default="tiny", help="tiny, small, ukbob (224x160x501) or XxYxZ")
    p.add_argument("--seed", type=int, default=0, help="seed of case 0; case i uses seed+i")
    p.add_argument("--corrupt", action="store_true", help="plant recorded label corruptions")
    p.add_argument("--corrupt-fraction", type=float, default=0.3, help="fraction of cases corrupted")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_phantom)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swinbob",
        description="SwinBOB: whole-body MRI segmentation (Swin-BOB), entropy test-time adaptation (ETTA) "
                    "and the SOLF label filter, from the UKBOB paper.")
    parser.add_argument("--version", action="version", version=f"swinbob {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = sys.modules[__name__] if module_name == __name__ else importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    formatter = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")  # MONAI's own internals
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        if args.debug:
            raise
        print(f"swinbob {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"swinbob {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatter


if __name__ == "__main__":
    sys.exit(main())
