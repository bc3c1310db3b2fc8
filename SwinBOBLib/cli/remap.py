"""``swinbob remap``: a label map from one label scheme to another, structure by structure."""

from __future__ import annotations

import sys

import numpy as np

from SwinBOBLib import io, labels


def cmd_remap(args) -> int:
    io.check_not_input(args.output, [args.labelmap])  # structures may be dropped: the input must survive
    image = io.load_labelmap(args.labelmap, scheme=args.src)
    remapped = labels.remap(image.array, args.src, args.dst)
    io.save_labelmap(remapped, image, args.output, scheme=args.dst)
    kept = sorted(set(int(v) for v in labels.remap_table(args.src, args.dst)[image.array].ravel() if v))
    print(f"wrote {args.output}: {len(kept)} structures of '{args.dst}'")
    counts = np.bincount(image.array.ravel().astype(np.int64))
    lost = {i: n for i, n in labels.lost_structures(args.src, args.dst).items() if i < counts.size and counts[i]}
    if lost:
        print(f"warning: {len(lost)} structure(s) of '{args.src}' have no place in '{args.dst}' and became "
              f"background: " + ", ".join(f"{name} ({int(counts[i])} voxels)" for i, name in lost.items()),
              file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """The ``remap`` command."""
    p = subparsers.add_parser("remap", help="map a label map from one scheme to another by structure")
    p.add_argument("labelmap")
    p.add_argument("output", help="the remapped label map (a new file: the input itself is refused)")
    p.add_argument("--from", dest="src", required=True, help="scheme of the input")
    p.add_argument("--to", dest="dst", default="ukbob", help="target scheme (default: ukbob); structures it "
                   "cannot hold are listed with their voxel counts")
    p.set_defaults(func=cmd_remap)
