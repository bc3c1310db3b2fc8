"""``swinbob checkpoint info``: what the loader makes of a checkpoint or MONAI bundle."""

from __future__ import annotations

from SwinBOBLib.inference.provenance import describe_checkpoint


def cmd_checkpoint_info(args) -> int:
    import json

    summary = describe_checkpoint(args.file, scheme=args.scheme, variant=args.variant)
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    for key, value, source in checkpoint_rows(summary):
        print(f"{key}\t{value}" + (f"\t[{source}]" if source else ""))
    return 0


def checkpoint_rows(summary: dict) -> list[tuple[str, str, str]]:
    """``(key, value, source)`` text rows of a :func:`~SwinBOBLib.inference.provenance.describe_checkpoint` summary."""
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
    rows.append(("structures", f"{len(summary['structures'])} it can label: " + ", ".join(summary["structures"]), ""))
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
    """The ``checkpoint`` command."""
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
