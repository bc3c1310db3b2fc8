"""``swinbob info``: an image's shape, spacing, orientation and affine."""

from __future__ import annotations

from SwinBOBLib import io


def cmd_info(args) -> int:
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


def register(subparsers) -> None:
    """The ``info`` command."""
    p = subparsers.add_parser("info", help="print an image's shape, spacing, orientation and affine")
    p.add_argument("image", help="NIfTI, NRRD, MHA file or DICOM folder")
    p.set_defaults(func=cmd_info)
