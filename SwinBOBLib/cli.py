"""The ``swinbob`` command line: parse, call the library, write results. No computing lives here.

Each command group registers itself through a ``register(subparsers)`` function; the list below
is the registry of command modules.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
        given = [option for option, value in (("--find", args.find), ("--to", args.to), ("--ctbl", args.ctbl))
                 if value]
        if given:
            raise ValueError(f"{', '.join(given)} needs a SCHEME, e.g. `swinbob labels ukbob {given[0]} ...`")
        for name in labels.available_schemes():
            scheme = labels.get_scheme(name)
            print(f"{name}\t{len(scheme)}\t{scheme.description}")
        return 0
    scheme = labels.get_scheme(args.scheme)
    if args.find:
        return _find_structures(scheme, args.find)
    if args.to:
        for c in labels.correspondences(scheme, args.to):
            print(f"{c.src_index}\t{c.src_name}\t{c.dst_index}\t{c.dst_name}\t{c.relation}")
        target = labels.get_scheme(args.to)
        for index, name in labels.lost_structures(scheme, target).items():
            print(f"{index}\t{name}\t0\t-\tlost")
        return 0
    if args.ctbl:
        Path(args.ctbl).write_text(labels.slicer_color_table(scheme.name), encoding="utf-8")
        print(f"wrote {args.ctbl}")
        return 0
    _print_rows(labels.scheme_rows(scheme.name))
    return 0


def _find_structures(scheme, names) -> int:
    """One line per label a name stands for (a split or paired name gives several); every unknown
    name is reported, not just the first."""
    from .labels import UnknownStructureError

    failed = 0
    for name in names:
        try:
            indices = scheme.resolve(name)
        except UnknownStructureError as error:
            print(f"swinbob labels: error: {error}", file=sys.stderr)
            failed += 1
            continue
        for index in indices:
            print(f"{index}\t{scheme[index].name}\t{scheme[index].display_name}")
    return 1 if failed else 0


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

    io.output_format(args.output)  # an unknown target suffix fails before the input is read
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
    import numpy as np

    counts = np.bincount(image.array.ravel().astype(np.int64))
    lost = {i: n for i, n in labels.lost_structures(args.src, args.dst).items() if i < counts.size and counts[i]}
    if lost:
        print(f"warning: {len(lost)} structure(s) of '{args.src}' have no place in '{args.dst}' and became "
              f"background: " + ", ".join(f"{name} ({int(counts[i])} voxels)" for i, name in lost.items()),
              file=sys.stderr)
    return 0


def cmd_phantom(args) -> int:
    from tqdm import tqdm

    from . import phantom

    size = args.size
    if "x" in size:
        size = tuple(int(v) for v in size.split("x"))
    with tqdm(total=args.n, desc="phantoms", unit="case", disable=args.quiet) as bar:
        summary = phantom.write_cohort(args.output, n=args.n, size=size, seed=args.seed, corrupt=args.corrupt,
                                       corrupt_fraction=args.corrupt_fraction, balanced_kinds=args.balanced_kinds,
                                       progress=lambda done, total: bar.update(done - bar.n))
    print(f"wrote {args.n} case(s) to {args.output}")
    if args.corrupt:
        print(f"corrupted cases: {len(summary.get('corrupted', []))}")
    return 0


def cmd_checkpoint_info(args) -> int:
    import json

    from .model import describe_checkpoint

    summary = describe_checkpoint(args.file, scheme=args.scheme, variant=args.variant)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    for key, value, source in checkpoint_rows(summary):
        print(f"{key}\t{value}" + (f"\t[{source}]" if source else ""))
    return 0


def checkpoint_rows(summary: dict) -> list[tuple[str, str, str]]:
    """``(key, value, source)`` text rows of a :func:`model.describe_checkpoint` summary."""
    sources, notes = summary["sources"], summary["notes"]

    def row(key, value, field=None):
        field = field or key
        source = sources.get(field, "")
        note = notes.get(field)
        return (key, f"{value}" + (f" ({note})" if note else ""), source)

    rows = [("file", summary["path"], ""), ("format", summary["format"], ""),
            *[(f"file.{k}", str(v), "") for k, v in summary["file"].items()],
            row("network", summary["network"]), row("variant", summary["variant"])]
    rows += [row(k, summary[k]) for k in ("feature_size", "in_channels", "out_channels", "scheme", "layout",
                                          "activation", "contrasts", "modality")]
    names = summary["channels"]
    rows.append(("channels", ", ".join(names[:16]) + (f", ... ({len(names)} in all)" if len(names) > 16 else ""), ""))
    for key, entry in summary["preprocessing"].items():
        if key != "assumed" and key not in ("variant", "scheme", "layout", "activation", "contrasts", "modality"):
            rows.append((f"preprocessing.{key}", f"{entry['value']}" + (f" ({entry['note']})" if entry.get("note") else ""),
                         entry["source"]))
    rows.append(("assumed", ", ".join(summary["preprocessing"]["assumed"]) or "-", ""))
    rows += [("parameters", str(summary["parameters"]), ""),
             ("etta_parameters", f"{summary['etta_parameters']} in {summary['etta_tensors']} tensors", "")]
    rows += [(k, str(summary[k]), "") for k in ("name", "description") if summary[k]]
    if summary["demo"]:
        rows.append(("demo", "True", ""))
    return rows


def register(subparsers) -> None:
    """The foundation's commands: labels, info, convert, remap, phantom, checkpoint."""
    p = subparsers.add_parser("labels", help="list label schemes, their structures, and correspondences",
                              description="Without SCHEME: list the schemes. With SCHEME: one line per "
                              "structure, INDEX<TAB>NAME<TAB>DISPLAY NAME<TAB>GROUP<TAB>R,G,B.")
    p.add_argument("scheme", nargs="?", help="ukbob, total, total_mr, btcv, brats, amos, mrsegmentator, zeroshot10")
    p.add_argument("--find", nargs="+", metavar="NAME", help="resolve structure names (synonyms, groups, both sides of "
                   "'kidney', plurals, 'left lung'); every unknown name is reported")
    p.add_argument("--to", metavar="SCHEME", help="show how each structure maps into another scheme "
                   "(and which are lost)")
    p.add_argument("--ctbl", metavar="FILE", help="write the scheme as a 3D Slicer colour table")
    p.set_defaults(func=cmd_labels)

    p = subparsers.add_parser("info", help="print an image's shape, spacing, orientation and affine")
    p.add_argument("image", help="NIfTI, NRRD, MHA file or DICOM folder")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("convert", help="convert between image formats, optionally reorienting")
    p.add_argument("input")
    p.add_argument("output", help="target file; its suffix picks the format: .nii(.gz), .nrrd, "
                   ".seg.nrrd, .mha, .mhd; no suffix: DICOM folder; other suffixes are refused")
    p.add_argument("--reorient", metavar="AXCODES", help="e.g. RAS or LPS (flips/permutations only)")
    p.add_argument("--channels", help="comma-separated channel names or indices to keep")
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser("remap", help="map a label map from one scheme to another by structure")
    p.add_argument("labelmap")
    p.add_argument("output")
    p.add_argument("--from", dest="src", required=True, help="scheme of the input")
    p.add_argument("--to", dest="dst", default="ukbob", help="target scheme (default: ukbob); structures it "
                   "cannot hold are listed with their voxel counts")
    p.set_defaults(func=cmd_remap)

    p = subparsers.add_parser("phantom", help="write synthetic neck-to-knee phantoms (UKBOB labels)",
                              description="Writes a Decathlon-style dataset folder: imagesTr/ (4-channel "
                              "Dixon NIfTI), labelsTr/ (UKBOB numbering, RAS), dataset.json; with --corrupt "
                              "also labelsClean/ and corruptions/*.json recording what was done.")
    p.add_argument("-o", "--output", required=True, help="output folder (one holding a dataset is refused)")
    p.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--size", default="tiny", help="tiny, small, ukbob (224x160x501) or XxYxZ")
    p.add_argument("--seed", type=int, default=0, help="seed of case 0; case i uses seed+i")
    p.add_argument("--corrupt", action="store_true", help="plant recorded label corruptions")
    p.add_argument("--corrupt-fraction", type=float, default=0.3, help="fraction of cases corrupted")
    p.add_argument("--balanced-kinds", action="store_true", help="corruption kinds in turn, each about equally "
                   "often (default: drawn at random)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_phantom)

    p = subparsers.add_parser("checkpoint", help="inspect a checkpoint: what the loader makes of it")
    commands = p.add_subparsers(dest="checkpoint_command", metavar="SUBCOMMAND", required=True)
    p = commands.add_parser("info", help="network and variant, sizes, label scheme and layout, preprocessing "
                            "with the source of each value, ETTA-adaptable parameters",
                            description="Load FILE safely (weights_only) as `swinbob segment --checkpoint FILE` "
                            "would and print what was made of it: one KEY<TAB>VALUE[<TAB>[SOURCE]] line each, "
                            "SOURCE being metadata, args, bundle, option, weights or assumed.")
    p.add_argument("file", help="checkpoint (.pt) or MONAI bundle (folder or .zip)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--scheme", help="label scheme of the output channels (as segment --scheme)")
    p.add_argument("--variant", choices=("legacy", "fixed", "mergingv2"), help="Swin-UNETR patch merging (as segment --variant)")
    p.set_defaults(func=cmd_checkpoint_info)


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
    except BrokenPipeError:
        # Output piped into `head` and the reader left: stop quietly, as any Unix tool does.
        _silence_stdout()
        return 141
    except (ValueError, KeyError, OSError, MemoryError) as error:
        if args.debug:
            raise
        print(f"swinbob {args.command}: error: {error_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        from .progress import Terminated

        if isinstance(stop, Terminated):
            print(f"swinbob {args.command}: stopped by SIGTERM", file=sys.stderr)
            return 143
        print(f"swinbob {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatter


def error_message(error: BaseException) -> str:
    """One line for an error the CLI reports instead of a traceback."""
    if isinstance(error, MemoryError):
        text = str(error)
        if text.startswith("not enough memory"):
            return text
        return (f"not enough memory ({text or 'MemoryError'}); try a coarser --spacing, a smaller "
                "--roi-size or --low-memory, or a machine with more memory")
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror[:1].lower()}{error.strerror[1:]}"
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error) or type(error).__name__


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
