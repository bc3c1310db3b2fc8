"""``swinbob convert``: one image format to another, optionally reoriented or with fewer channels."""

from __future__ import annotations

from SwinBOBLib import io


def cmd_convert(args) -> int:
    io.output_format(args.output)  # an unknown target suffix fails before the input is read
    io.check_not_input(args.output, [args.input])
    image = io.load_image(args.input)
    if args.channels:
        image = io.select_channels(image, args.channels.split(","))
    if args.reorient:
        image, _ = io.reorient(image, args.reorient.upper())
    io.save_image(image, args.output)
    print(f"wrote {args.output} ({image.orientation}, shape {image.array.shape})")
    return 0


def register(subparsers) -> None:
    """The ``convert`` command."""
    p = subparsers.add_parser("convert", help="convert between image formats, optionally reorienting")
    p.add_argument("input")
    p.add_argument("output", help="target file; its suffix picks the format: .nii(.gz), .nrrd, "
                   ".seg.nrrd, .mha, .mhd; no suffix: DICOM folder; other suffixes, and the input itself, are refused")
    p.add_argument("--reorient", metavar="AXCODES", help="e.g. RAS or LPS (flips/permutations only)")
    p.add_argument("--channels", help="comma-separated channel names or indices to keep")
    p.set_defaults(func=cmd_convert)
