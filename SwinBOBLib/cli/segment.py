"""``swinbob segment``: options -> :class:`InferenceConfig` / :class:`EttaConfig`, the model loaded
once, each scan segmented into its result folder, a summary line per scan.
"""

from __future__ import annotations

import sys
from pathlib import Path

from SwinBOBLib import io
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.inference.preprocess import check_roi_size
from SwinBOBLib.outputs.folders import case_folder
from SwinBOBLib.outputs.provenance import model_notice
from SwinBOBLib.runtime.locks import folder_lock
from SwinBOBLib.runtime.progress import ProgressWriter
from SwinBOBLib.runtime.stop import Terminated, terminate_as_interrupt
from SwinBOBLib.workflows.dicomweb import dicomweb_source, segment_dicomweb
from SwinBOBLib.workflows.segment import list_inputs, load_model_for_cli, segment_file


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """``--spacing`` "1.5" or "1.5,1.5,3" -> mm per axis; values outside 0.1..30 mm are refused
    (a 0.001 mm grid asks for terabytes, a negative one is a typo, not a flip)."""
    if not text:
        return None
    try:
        spacing = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--spacing '{text}': expected one number or three comma-separated numbers (mm)") from None
    spacing = spacing * 3 if len(spacing) == 1 else spacing
    if len(spacing) != 3 or not all(0.1 <= v <= 30.0 for v in spacing):
        raise ValueError(f"--spacing '{text}': expected 1 or 3 voxel sizes between 0.1 and 30 mm")
    return spacing


def _config_from_args(args) -> tuple[InferenceConfig, EttaConfig]:
    spacing = parse_spacing(args.spacing)
    check_roi_size(args.roi_size)
    config = InferenceConfig(device=args.device, roi_size=args.roi_size, sw_batch_size=args.sw_batch_size,
                             overlap=args.overlap, amp=not args.no_amp, low_memory=True if args.low_memory else None,
                             fast=args.fast, tta=args.tta, tta_flips=args.tta_flips, etta=args.etta,
                             structures=args.structures, contrast=args.contrast, target_spacing_mm=spacing,
                             intensity=args.intensity, progress=not args.quiet, seed=args.seed)
    etta_config = EttaConfig(steps=args.etta_steps, lr=args.etta_lr, optimizer=args.etta_optimizer,
                             patches=args.etta_patches, patch_scale=args.etta_patch_scale,
                             sw_batch_size=args.sw_batch_size, seed=args.seed)
    return config, etta_config


def _summary(case: str, report: dict) -> str:
    t = report["timings"]
    windows, flips = report["inference"].get("windows"), report["inference"].get("tta_flips", 1)
    count = f"{windows} windows" if flips == 1 else f"{windows} windows x {flips} flips = {windows * flips} passes"
    line = (f"{case}: {count} on {report['device']} in "
            f"{t['inference_s']:.1f} s, mean entropy {report['entropy']['mean']:.3f}")
    if report["entropy"]["etta_before"] is not None:
        line += (f", ETTA {report['entropy']['etta_before']:.3f} -> {report['entropy']['etta_after']:.3f} "
                 f"({t.get('etta_s', 0):.1f} s)")
        if (report.get("etta") or {}).get("collapsed"):
            line += " (collapsed: the unadapted result is kept)"
    return line


def _inputs(args) -> list:
    """The files ``segment`` reads (scan, folder or CSV, the scans a CSV lists, the checkpoint)."""
    try:
        listed = [path for _, path in list_inputs(args.image)] if args.image else []
    except (ValueError, OSError):
        listed = []  # reported by the run itself
    return [p for p in (args.image, args.checkpoint, args.bounds, *listed) if p]


def check_source_args(args) -> None:
    """A scan (file, folder, CSV) or ``--dicomweb URL --study UID``, not both; ``--store`` only with
    ``--dicomweb`` and DICOM output; DICOM output only for DICOM series inputs (checked before
    the model is loaded)."""
    if bool(args.image) == bool(args.dicomweb):
        raise ValueError("give either a scan (file, DICOM folder, folder of scans or CSV) or --dicomweb URL --study UID")
    if args.dicomweb and not args.study:
        raise ValueError("--dicomweb needs --study UID (and --series UID when the study has several image series)")
    if args.study and not args.dicomweb:
        raise ValueError("--study needs --dicomweb URL")
    if args.dicomweb and args.output_type != "dicom":
        raise ValueError("--dicomweb needs --output-type dicom (the results are DICOM objects of that study)")
    if args.store and not args.dicomweb:
        raise ValueError("--store sends the results to the --dicomweb server; give --dicomweb URL --study UID")
    if args.output_type == "dicom" and args.image:
        for case, path in list_inputs(args.image):
            if not Path(path).is_dir():
                raise ValueError(f"{path}: --output-type dicom needs a DICOM series (a folder of DICOM files, or "
                                 "--dicomweb): DICOM SEG, Parametric Map and SR reference the source instances, which "
                                 "a NIfTI/NRRD/MHA file lacks. Use the default --output-type nifti, or convert the scan "
                                 "to a DICOM series with `swinbob convert SCAN FOLDER` first")


def cmd_segment(args) -> int:
    io.check_output_path(args.output)
    with ProgressWriter(args.progress_json, _inputs(args)) as events, terminate_as_interrupt():
        try:
            io.check_writable(args.output)  # before the lock file is made beside it
            with folder_lock(args.output):  # one run per output folder
                return _segment_cases(args, events)
        except KeyboardInterrupt as stop:
            # A stopped run says so: the staging folder of the case in progress was removed.
            signal_name = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
            events.emit("stopped", signal=signal_name, message=f"stopped by {signal_name}; the case in "
                        "progress was not written, finished cases are complete")
            raise
        except (ValueError, OSError, MemoryError) as error:
            events.emit("error", message=str(error))
            raise


def _segment_cases(args, events) -> int:
    import torch

    config, etta_config = _config_from_args(args)
    check_source_args(args)
    if args.dicomweb:
        case = io.safe_name(args.series or args.study, "--series/--study")
        cases = [(case, Path(dicomweb_source(args.dicomweb, args.study, args.series)))]
    else:
        cases = list_inputs(args.image)
    outdir = Path(args.output)
    batch = len(cases) > 1
    io.check_writable(outdir)  # before the model is loaded and an hour is spent on inference
    # One scan: refuse (or choose the subfolder) before inference; a batch decides case by case.
    targets = {} if batch else {cases[0][0]: case_folder(outdir, cases[0][0], cases[0][1], batch=False)}
    torch.manual_seed(args.seed)
    model, metadata, info = load_model_for_cli(args.checkpoint, args.roi_size, scheme=args.scheme,
                                               variant=args.variant)
    events.emit("start", cases=len(cases), model=info["model"])
    if args.progress_json != "-":
        print(model_notice(info["model"]))
    failures, shown = [], set() if batch else None
    for case, path in cases:
        report = lambda stage, done, total, case=case: events.emit(
            "progress", stage=stage, done=done, total=total, case=case)
        try:
            target = targets.get(case) or case_folder(outdir, case, path, batch)
            result = _segment_case(args, path, target, (model, metadata, info), config, etta_config, report, shown)
        except (ValueError, OSError, MemoryError) as error:
            if not batch:
                raise
            failures.append(case)
            events.emit("case_error", case=case, message=str(error))
            print(f"{case}: error: {error}", file=sys.stderr if args.progress_json == "-" else sys.stdout)
            continue
        events.emit("case_done", case=case, outdir=str(target))
        if args.progress_json != "-":
            print(_summary(case, result))
    events.emit("done", failed=failures)
    if args.progress_json != "-":
        print(f"wrote {len(cases) - len(failures)} of {len(cases)} case(s) to {outdir}")
    return 1 if failures else 0


def _segment_case(args, path, target, loaded, config, etta_config, report, shown) -> dict:
    model, metadata, info = loaded
    if args.dicomweb:
        return segment_dicomweb(args.dicomweb, args.study, args.series, target, model, metadata, config, etta_config,
                                info, store=args.store, preview=not args.no_preview, progress=report,
                                bounds=args.bounds)
    return segment_file(path, target, model, metadata, config, etta_config, info, not args.no_preview, report,
                        shown_warnings=shown, output_type=args.output_type, bounds=args.bounds,
                        series_uid=args.series)


def _add_dicom_arguments(p) -> None:
    """DICOM output, the series of a folder, and a DICOMweb study as input."""
    p.add_argument("--output-type", choices=("nifti", "dicom"), default="nifti", help="nifti (default): labels and "
                   "entropy as images; dicom: also labels_seg.dcm (DICOM SEG), entropy_pmap.dcm (Parametric Map, "
                   "entropy in nats) and organs_sr.dcm (TID 1500 report with SOLF verdicts), for a DICOM series input "
                   "only (docs/dicom.md)")
    p.add_argument("--series", metavar="UID", help="Series Instance UID to read from a DICOM folder or a --dicomweb "
                   "study holding several series; for a multi-channel (Dixon) model, whose contrasts are found among a "
                   "folder's series by their DICOM attributes, the series whose grid settles a contrast found more than "
                   "once (docs/dicom.md)")
    p.add_argument("--dicomweb", metavar="URL", help="read the series from a DICOMweb server (e.g. "
                   "http://127.0.0.1:8042/dicom-web) instead of a file; credentials from SWINBOB_DICOMWEB_TOKEN, or "
                   "SWINBOB_DICOMWEB_USER and SWINBOB_DICOMWEB_PASSWORD, or ~/.netrc, never in the URL")
    p.add_argument("--study", metavar="UID", help="Study Instance UID of the --dicomweb series")
    p.add_argument("--store", action="store_true", help="with --dicomweb: store the SEG, Parametric Map and SR as "
                   "new series of the same study (STOW-RS) once written locally")
    p.add_argument("--bounds", metavar="JSON", help="SOLF bounds that judge each structure in the DICOM report "
                   "(default: Resources/SOLF/default_bounds.json)")


def register(subparsers) -> None:
    """The ``segment`` command."""
    p = subparsers.add_parser(
        "segment", help="segment scans with Swin-BOB (entropy map, optional ETTA/TTA)",
        description="Segment a scan (or a folder / CSV of scans) into the 71 UKBOB structures. Writes "
                    "labels, entropy, organs.csv, report.json and preview.png into OUTDIR "
                    "(OUTDIR/<case> for several scans, or when OUTDIR holds files SwinBOB did not write, such "
                    "as the scan itself, or another scan's result). A case is written into a hidden staging folder and moved into place "
                    "whole; nothing is ever written over an input or a user's files, and one run at a time writes into "
                    "OUTDIR (a second is refused, naming the first).")
    p.add_argument("image", nargs="?", help="scan file, DICOM folder, folder of scans, or CSV with an 'image' "
                   "column and optionally 'id' (a plain folder name: no '/', '..' or leading dot); or none with "
                   "--dicomweb")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint (.pt: SwinBOB, UK_BOB trainer, Lightning, plain "
                   "state dict) or MONAI bundle (folder or .zip); default: the bundled demo model (trained on "
                   "synthetic phantoms). See `swinbob checkpoint info CKPT`")
    p.add_argument("--scheme", metavar="NAME", help="label scheme of the checkpoint's output channels (default: its "
                   "metadata, else the scheme whose channel count matches, e.g. btcv for 14)")
    p.add_argument("--variant", choices=("legacy", "fixed", "mergingv2"), help="Swin-UNETR patch merging the weights "
                   "were trained with (default: the checkpoint's; legacy, MONAI < 1.5, when it does not say)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--etta", action="store_true", help="entropy test-time adaptation (UKBOB sec. 3.3)")
    p.add_argument("--tta", action="store_true", help="flip-averaging test-time augmentation baseline (left-right flipped "
                   "windows have their paired left/right channels exchanged)")
    p.add_argument("--tta-flips", type=int, default=8, choices=(1, 4, 8), help="flip combinations averaged by --tta: each window runs this many times "
                   "(default %(default)s)")
    p.add_argument("--fast", action="store_true", help=f"coarser grid (>= {3.0} mm) and no window overlap")
    p.add_argument("--structures", metavar="NAMES", help="comma-separated structures or groups to keep")
    p.add_argument("--contrast", metavar="NAME", help="input channel(s) by name or index, e.g. water; for a DICOM "
                   "folder and a multi-channel model, the Dixon contrasts to find among its series, e.g. "
                   "water,fat,in_phase,opposed_phase (default: the checkpoint's)")
    p.add_argument("--roi-size", type=int, metavar="N", help="sliding-window edge in voxels (default: checkpoint's)")
    p.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--overlap", type=float, help="window overlap (default: the checkpoint's, else 0.25)")
    p.add_argument("--spacing", metavar="MM", help="resample to this spacing in mm, 0.1..30: one value or x,y,z "
                   "(default: the checkpoint's)")
    p.add_argument("--intensity", choices=("percentile", "ct_window", "zscore_nonzero", "zscore", "none"),
                   help="intensity normalisation (default: the checkpoint's; percentile when it does not say)")
    p.add_argument("--low-memory", action="store_true", help="accumulate probabilities on the CPU in float16")
    p.add_argument("--no-amp", action="store_true", help="run fp32 on the GPU (no bf16/fp16 autocast)")
    p.add_argument("--etta-steps", type=int, default=EttaConfig.steps, help="ETTA gradient steps on the scan "
                   "(default %(default)s)")
    p.add_argument("--etta-lr", type=float, default=EttaConfig.lr, help="ETTA Adam learning rate of the normalisation "
                   "parameters (default %(default)s)")
    p.add_argument("--etta-optimizer", choices=("adam", "sgd"), default=EttaConfig.optimizer)
    p.add_argument("--etta-patches", type=int, default=EttaConfig.patches, help="highest-entropy windows adapted on per "
                   "step (default %(default)s)")
    p.add_argument("--etta-patch-scale", type=float, default=EttaConfig.patch_scale, help="edge of the adaptation "
                   "patch over the window's, in (0, 1]; smaller is cheaper, rounded down to the network's stride "
                   "(default %(default)s)")
    _add_dicom_arguments(p)
    p.add_argument("--no-preview", action="store_true", help="skip preview.png")
    p.add_argument("--seed", type=int, default=0, help="seeds torch (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines progress events ('-' for stdout): start, "
                   "progress (stage etta|sliding_window, done, total, case), case_done, case_error, error, done; "
                   "appended to a new file or an earlier progress log, never to an input")
    p.set_defaults(func=cmd_segment)
