"""``swinbob``: the parser of every command, and how errors, warnings and stops are reported.

Each command is one module of this package with ``register(subparsers)``; :data:`COMMAND_MODULES`
is the registry. Commands parse, build the library's configuration, call it and print: no
computing lives in this package.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from SwinBOBLib import __version__
from SwinBOBLib.cli import (
    benchmark,
    checkpoint,
    cohort,
    convert,
    demo,
    info,
    labels,
    phantom,
    remap,
    review,
    segment,
    solf,
    startup,
    train,
)
from SwinBOBLib.runtime.stop import Terminated

#: The commands, in ``swinbob --help`` order: one module each, with ``register(subparsers)``.
COMMAND_MODULES = (labels, info, convert, remap, phantom, checkpoint, segment, solf, cohort, train, benchmark, demo,
                   review)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swinbob",
        description="SwinBOB: whole-body MRI segmentation (Swin-BOB), entropy test-time adaptation (ETTA) "
                    "and the SOLF label filter, from the UKBOB paper.")
    parser.add_argument("--version", action="version", version=f"swinbob {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    startup.started()
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
