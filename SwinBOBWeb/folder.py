"""The review folder: what the web review reads and writes, and who may use it.

Everything the server writes lies inside the review folder ``OUT``: the decisions log
(``qc_list.review.jsonl``, the same file the Slicer panel writes) and the corrected labels
(``OUT/ukbob_manual/``, a dataset folder). It reads ``OUT``'s QC tables and the scans, label maps and
entropy maps the QC list names (written by ``swinbob``, on the server). The browser never sends a
path: it names queue items by their position, and the one file route, ``/review-files/NAME``, serves
only files that resolve inside ``OUT``.

Access: on 127.0.0.1 anyone on this machine may connect; on any other address a token is required
(``--token``, else ``SWINBOB_REVIEW_TOKEN``, else a new one printed once at start). The first page
is opened as ``/?token=TOKEN``; the server then sets a cookie so the page's scripts and websocket
carry it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

#: Environment variable holding the token for a server on a non-local address.
TOKEN_ENV = "SWINBOB_REVIEW_TOKEN"
#: Cookie the server sets once a request carried the right token.
TOKEN_COOKIE = "swinbob_review_token"
#: Dataset folder (inside OUT) that receives the corrected label maps (UKBOB-manual).
DATASET_FOLDER = "ukbob_manual"
#: URL prefix of the files served from inside OUT (the feature plots, the summary, the log).
FILES_ROUTE = "/review-files/"


@dataclass(frozen=True)
class ReviewFolder:
    """A cohort run's or ``solf run``'s output folder holding ``qc_list.json`` (or ``.csv``)."""

    root: Path

    @classmethod
    def open(cls, path) -> ReviewFolder:
        """Raises:
            FileNotFoundError: no such folder, or no QC list in it (the message says what makes one).
        """
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"review folder {root} does not exist; give the output folder of "
                                    "`swinbob solf run` or `swinbob cohort run`")
        if not any((root / name).is_file() for name in ("qc_list.json", "qc_list.csv")):
            raise FileNotFoundError(f"{root} holds no qc_list.json or qc_list.csv; give the output folder of "
                                    "`swinbob solf run` or `swinbob cohort run`")
        return cls(root)

    @property
    def qcList(self) -> Path:
        json_list = self.root / "qc_list.json"
        return json_list if json_list.is_file() else self.root / "qc_list.csv"

    @property
    def dataset(self) -> Path:
        return self.root / DATASET_FOLDER

    @property
    def scratch(self) -> Path:
        """Server-made pictures (feature plots): ``OUT/.review-web/``."""
        return self.root / ".review-web"

    def inside(self, relative: str) -> Path:
        """The file ``relative`` names inside the folder.

        Raises:
            PermissionError: the name is absolute or leads outside the folder (``..``, a link).
            FileNotFoundError: no such file inside the folder.
        """
        if not relative or Path(relative).is_absolute() or "\x00" in relative:
            raise PermissionError(f"{relative!r}: only names inside the review folder are served")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise PermissionError(f"{relative!r} leads outside the review folder {self.root}")
        if not path.is_file():
            raise FileNotFoundError(f"{relative!r}: no such file in the review folder")
        return path


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token a server on ``host`` requires: ``token``, else ``$SWINBOB_REVIEW_TOKEN``, else a new
    random one on a non-loopback address; None (no token) on loopback unless one is given.

    Raises:
        ValueError: a given token shorter than 16 characters (guessable).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None:
        return None if is_loopback(host) else secrets.token_urlsafe(24)
    if len(token) < 16:
        raise ValueError(f"review token of {len(token)} characters: use at least 16 (or let the server make one)")
    return token


def token_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; everything matches when no token is required."""
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
