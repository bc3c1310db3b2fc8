"""``swinbob review OUT``: serve the QC queue of a cohort run's or ``solf run``'s output folder in a
browser, on real Slicer views (the web review, package ``SwinBOBWeb``; needs the ``web`` extra).

    swinbob review OUT [--host 127.0.0.1] [--port 8080] [--reviewer NAME] [--token TOKEN]
"""

from __future__ import annotations

import importlib.util

#: What to install when the web review's dependencies are missing.
INSTALL_HINT = "pip install -e '.[web]' (trame-slicer, slicer-layer-dm; see docs/review.md)"


def web_available() -> str | None:
    """None when the web review can start, else what is missing and how to install it."""
    missing = [name for name in ("trame_slicer", "slicer", "SwinBOBWeb", "SwinBOBModule")
               if importlib.util.find_spec(name) is None]
    if missing:
        return f"the web review needs {', '.join(missing)}: {INSTALL_HINT}"
    return None


def cmd_review(args) -> int:
    problem = web_available()
    if problem:
        raise SystemExit(f"swinbob review: {problem}")
    from SwinBOBWeb.server import (
        serve,  # optional and heavy (slicer-core, trame): only here
    )

    serve(args.folder, host=args.host, port=args.port, token=args.token, reviewer=args.reviewer)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "review", help="review the QC queue of a cohort or SOLF run in a browser (Slicer views, decisions, "
        "corrections)",
        description="Serve the QC queue of OUT (the output folder of `swinbob solf run` or `swinbob cohort run`, "
        "holding qc_list.json) as a web app on real Slicer views: accept, reject or mark each flagged structure "
        "for correction (written to OUT/qc_list.review.jsonl, the log the Slicer module's QC review reads), "
        "and paint, erase or threshold a correction saved into OUT/ukbob_manual. Binds 127.0.0.1 unless told; "
        f"on any other address it requires a token. Needs the web extra: {INSTALL_HINT}.")
    p.add_argument("folder", metavar="OUT", help="folder holding qc_list.json (or qc_list.csv)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; "
                   "any other requires a token)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 = any free port)")
    p.add_argument("--reviewer", default="", help="reviewer name each browser starts with (each can change its own)")
    p.add_argument("--token", default=None, help="access token (default: $SWINBOB_REVIEW_TOKEN, else a new one "
                   "printed once at start on a non-local address)")
    p.set_defaults(func=cmd_review)
