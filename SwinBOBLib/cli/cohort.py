"""``swinbob cohort run``: options -> :class:`~SwinBOBLib.workflows.cohort.CohortConfig`, the run,
a summary; exit 0 only when every scan of the cohort succeeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from SwinBOBLib.cli.segment import parse_spacing
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.inference.etta import EttaConfig
from SwinBOBLib.inference.preprocess import check_roi_size
from SwinBOBLib.runtime.stop import terminate_as_interrupt
from SwinBOBLib.workflows.cohort import CohortConfig, run_cohort
from SwinBOBLib.workflows.cohort_dicomweb import FETCH_THREADS
from SwinBOBLib.workflows.cohort_scan import ScanSettings
from SwinBOBLib.workflows.cohort_solf import SolfSettings

_DESCRIPTION = """The UKBOB pipeline on a cohort: segment every scan (the model loaded once per worker, on a
local process pool or a Ray Data actor pool), then SOLF on the cohort's own label maps (bounds, the
2-of-3 rule, the missing rule, the extra checks, the QC queue). Resumable: run it again and only
what is missing, failed, or affected by a changed model or setting is done.

    swinbob cohort run INPUTS -o OUT [--engine local|ray] [--workers N]
    swinbob cohort run --dicomweb URL [STUDIES.csv] -o OUT [...]   # scans from a PACS

From a PACS (--dicomweb): STUDIES.csv has a 'study' column (Study Instance UID) and optionally
'series' and 'id'; without it, every study on the server. Each study's image series (the 'series'
cell, else its only one) is fetched into OUT/.sources/<id>/ (fetched again only when incomplete),
then segmented; a study that cannot be fetched is a row of failures.csv. Credentials come from
SWINBOB_DICOMWEB_TOKEN, or SWINBOB_DICOMWEB_USER and SWINBOB_DICOMWEB_PASSWORD, or ~/.netrc;
never put them in the URL.

Run `swinbob cohort run --help` for the options."""


def _configs(args) -> tuple[ScanSettings, SolfSettings]:
    check_roi_size(args.roi_size)
    config = InferenceConfig(device=args.device, roi_size=args.roi_size, overlap=args.overlap, fast=args.fast,
                             tta=args.tta, etta=args.etta, contrast=args.contrast,
                             target_spacing_mm=parse_spacing(args.spacing), seed=args.seed, progress=False)
    etta = dataclasses.replace(EttaConfig(), steps=args.etta_steps, seed=args.seed)
    scan = ScanSettings(checkpoint=args.checkpoint, config=config, etta_config=etta, preview=not args.no_preview,
                        threads=args.threads_per_worker, checks=args.checks)
    solf = SolfSettings(epsilon=args.epsilon, bounds=args.bounds, plots=not args.no_plots)
    return scan, solf


def cmd_run(args) -> int:
    scan, solf = _configs(args)
    config = CohortConfig(inputs=args.inputs, out_dir=args.output, engine=args.engine, workers=args.workers,
                          address=args.address, gpus_per_worker=args.gpus_per_worker, scan=scan, solf=solf,
                          progress=not args.quiet, progress_json=args.progress_json, dicomweb=args.dicomweb,
                          fetch_threads=args.fetch_threads)
    with terminate_as_interrupt():
        result = run_cohort(config)
    out = sys.stderr if args.progress_json == "-" else sys.stdout
    t = result.report["throughput"]
    print(f"{result.scans} scans: {result.done_now} segmented now, {result.reused} reused, {len(result.failed)} "
          f"failed; {result.flagged} flagged by SOLF ({result.out_dir / 'qc_list.json'}); {t['model_loads']} model "
          f"load(s), {t['scans_per_hour']} scans/hour", file=out)
    for failure in result.failed[:10]:
        print(f"failed: {failure['id']}: {failure['reason']}", file=sys.stderr)
    if result.failed:
        print(f"swinbob cohort run: {len(result.failed)} of {result.scans} scans failed; see "
              f"{result.out_dir / 'failures.csv'} (run again to retry them)", file=sys.stderr)
        return 1
    return 0


def _add_inference_arguments(p) -> None:
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint or MONAI bundle, as for `swinbob segment` "
                   "(default: the bundled demo model)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu; with cuda and "
                   "several GPUs each local worker takes one in turn")
    p.add_argument("--etta", action="store_true", help="entropy test-time adaptation per scan")
    p.add_argument("--etta-steps", type=int, default=EttaConfig.steps, help="ETTA steps (default %(default)s)")
    p.add_argument("--tta", action="store_true", help="flip-averaging test-time augmentation")
    p.add_argument("--fast", action="store_true", help="coarser grid and no window overlap")
    p.add_argument("--contrast", metavar="NAME", help="input channel(s) by name or index, e.g. water")
    p.add_argument("--roi-size", type=int, metavar="N", help="sliding-window edge (default: checkpoint's)")
    p.add_argument("--overlap", type=float, help="window overlap (default: the checkpoint's, else 0.25)")
    p.add_argument("--spacing", metavar="MM", help="resample to this spacing in mm (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="seeds torch in every worker (default %(default)s)")
    p.add_argument("--no-preview", action="store_true", help="skip each scan's preview.png")


def register(subparsers) -> None:
    """The ``cohort`` command (``cohort run``)."""
    parser = subparsers.add_parser("cohort", help="segment a cohort, then SOLF and the QC queue (resumable; local "
                                   "process pool or Ray)", description=_DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="cohort_command", metavar="COMMAND", required=True)
    p = commands.add_parser("run", help="segment every scan, then SOLF", description=_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", metavar="INPUTS", nargs="?", help="folder of scans, or a CSV with an 'image' column "
                   "(and optionally 'id', a plain folder name); with --dicomweb a CSV with a 'study' column (and "
                   "optionally 'series' and 'id'), or nothing for every study on the server")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder: OUT/<id>/ per scan, "
                   "manifest.csv, failures.csv, journal.jsonl, SOLF tables, qc_list.json, cohort_report.json; new, "
                   "empty or an earlier cohort run's (then resumed)")
    p.add_argument("--dicomweb", metavar="URL", help="take the scans from a DICOMweb server (PACS), e.g. "
                   "http://pacs:8042/dicom-web: each study's image series is fetched into OUT/.sources/<id>/, then "
                   "segmented; credentials from SWINBOB_DICOMWEB_TOKEN, SWINBOB_DICOMWEB_USER and _PASSWORD, or "
                   "~/.netrc, never in the URL")
    p.add_argument("--fetch-threads", type=int, default=FETCH_THREADS, metavar="N", help="with --dicomweb: series "
                   "fetched at the same time (default %(default)s)")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local process pool (default) "
                   "or a Ray Data actor pool")
    p.add_argument("--address", help="Ray cluster address, e.g. 10.0.0.1:6379 or auto (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="workers, each loading the model once (default: local: one per CPU "
                   "core, or per GPU where there are GPUs and --device is auto or cuda; ray: one per G GPUs of the "
                   "cluster, else one per T CPUs)")
    p.add_argument("--gpus-per-worker", type=float, metavar="G", help="GPUs per Ray actor (default: 1 where the "
                   "cluster has GPUs, else 0: CPU actors)")
    p.add_argument("--threads-per-worker", type=int, metavar="T", help="torch CPU threads per worker (default: "
                   "local: cores / workers; ray: 1, one CPU per actor)")
    _add_inference_arguments(p)
    p.add_argument("--bounds", metavar="FILE", help="SOLF bounds.json of a reference cohort (default: fitted on "
                   "this cohort's label maps)")
    p.add_argument("--epsilon", type=float, default=2.0, help="percent of the cohort outside each feature's "
                   "bounds (UKBOB: %(default)s)")
    p.add_argument("--checks", choices=("all", "labels", "none"), default="labels", help="SOLF checks measured "
                   "per scan beside the features: the label-only ones (default), all (adds the image checks, "
                   "about the model's own time per scan with the demo model) or none")
    p.add_argument("--no-plots", action="store_true", help="no figures in report.md")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress-json", metavar="PATH", help="JSON-lines events ('-' for stdout): start, case_done, "
                   "case_error, solf, done; with --dicomweb first fetch_start, fetch_done, fetch_error")
    p.set_defaults(func=cmd_run)
