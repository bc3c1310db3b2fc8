"""``swinbob labels``: label schemes, structures by name, correspondences between schemes."""

from __future__ import annotations

import sys
from pathlib import Path

from SwinBOBLib import labels
from SwinBOBLib.labels.schemes import UnknownStructureError


def _print_rows(rows) -> None:
    for row in rows:
        print("\t".join(str(v) for v in row))


def cmd_labels(args) -> int:
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
    codes = {row[0]: row[1:] for row in labels.scheme_codes(scheme.name)}
    _print_rows(row + codes[row[0]] for row in labels.scheme_rows(scheme.name))
    return 0


def _find_structures(scheme, names) -> int:
    """One line per label a name stands for (a split or paired name gives several); every unknown
    name is reported, not just the first."""
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


def register(subparsers) -> None:
    """The ``labels`` command."""
    p = subparsers.add_parser("labels", help="list label schemes, their structures, and correspondences",
                              description="Without SCHEME: list the schemes. With SCHEME: one line per "
                              "structure, INDEX<TAB>NAME<TAB>DISPLAY NAME<TAB>GROUP<TAB>R,G,B<TAB>CATEGORY<TAB>TYPE<TAB>MODIFIER, "
                              "the last three the SNOMED CT codes of its anatomy (SCT:VALUE:MEANING) that DICOM SEG "
                              "output and Slicer's terminology use.")
    p.add_argument("scheme", nargs="?", help="ukbob, total, total_mr, btcv, brats, amos, mrsegmentator, zeroshot10")
    p.add_argument("--find", nargs="+", metavar="NAME", help="resolve structure names (synonyms, groups, both sides of "
                   "'kidney', plurals, 'left lung'); every unknown name is reported")
    p.add_argument("--to", metavar="SCHEME", help="show how each structure maps into another scheme "
                   "(and which are lost)")
    p.add_argument("--ctbl", metavar="FILE", help="write the scheme as a 3D Slicer colour table")
    p.set_defaults(func=cmd_labels)
