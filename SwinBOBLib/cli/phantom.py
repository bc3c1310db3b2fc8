"""``swinbob phantom``: a dataset folder of synthetic neck-to-knee phantoms."""

from __future__ import annotations

from SwinBOBLib import phantom


def cmd_phantom(args) -> int:
    from tqdm import tqdm

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


def register(subparsers) -> None:
    """The ``phantom`` command."""
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
