"""A PACS over DICOMweb (dicomweb-client): find a study's image series (QIDO-RS), fetch one into a
folder (WADO-RS), store new objects into the study (STOW-RS).

Credentials never come from the command line or a report: ``SWINBOB_DICOMWEB_TOKEN`` (a bearer
token) or ``SWINBOB_DICOMWEB_USER`` and ``SWINBOB_DICOMWEB_PASSWORD`` from the environment, else
the user's ``~/.netrc`` entry for the server's host (``requests`` reads it). A URL holding a user
name or password is refused. Every failure names the server and what was asked, and says what was
already written locally.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

#: Modalities of objects that are not scans (skipped when a study's image series are listed).
NOT_IMAGE_MODALITIES = {"SEG", "SR", "PR", "KO", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "DOC", "OT"}


#: Seconds a request may take before it counts as a dropped connection.
TIMEOUT_S = 60


#: Tries of a request whose connection fails or that the server says to retry (429, 503, ...), and
#: the first wait between them in ms (doubling): dicomweb-client's default (5 tries from 1 s) makes
#: an unreachable server a minute's silence.
ATTEMPTS, FIRST_WAIT_MS = 2, 500


class DicomWebError(OSError):
    """A DICOMweb request failed; the message names the server, the request and what to do."""


@dataclass
class RemoteSeries:
    """A series of a study on the server."""

    uid: str
    modality: str
    description: str
    instances: int

    def describe(self) -> str:
        return f"{self.uid} '{self.description}' {self.modality or '?'}, {self.instances} instance(s)"


def public_url(url: str) -> str:
    """``url`` as reports and messages show it (it never holds credentials: see :func:`client`)."""
    return url.rstrip("/")


def _session(url: str):
    import requests

    parts = urlsplit(url)
    if parts.username or parts.password:  # checked first: no message may repeat the credentials
        raise ValueError("--dicomweb: the URL holds credentials; put them in SWINBOB_DICOMWEB_USER and "
                         "SWINBOB_DICOMWEB_PASSWORD (or SWINBOB_DICOMWEB_TOKEN, or ~/.netrc), never on the command line")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--dicomweb '{url}': expected an http(s) URL of a DICOMweb service, e.g. "
                         "http://127.0.0.1:8042/dicom-web")
    session = requests.Session()  # trust_env: proxies and ~/.netrc apply unless credentials are given below
    token = os.environ.get("SWINBOB_DICOMWEB_TOKEN")
    user, password = os.environ.get("SWINBOB_DICOMWEB_USER"), os.environ.get("SWINBOB_DICOMWEB_PASSWORD")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, password or "")
    return session


def client(url: str):
    """A dicomweb-client for ``url`` with the credentials of the environment or ~/.netrc."""
    from dicomweb_client.api import DICOMwebClient

    session = _session(url)
    session.request = _with_timeout(session.request)
    web = DICOMwebClient(url=public_url(url), session=session)
    web.set_http_retry_params(retry=True, max_attempts=ATTEMPTS, wait_exponential_multiplier=FIRST_WAIT_MS)
    return web


def _with_timeout(request):
    def timed(method, url, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT_S)
        return request(method, url, **kwargs)
    return timed


def _failure(url: str, what: str, error: Exception, local: str = "") -> DicomWebError:
    """A clear error for a failed request: refused (HTTP status), unreachable or dropped."""
    import requests

    kept = f"; {local}" if local else ""
    response = getattr(error, "response", None)
    if response is not None:
        detail = (response.text or "").strip().splitlines()[:1]
        return DicomWebError(f"{public_url(url)}: {what} was refused: HTTP {response.status_code} {response.reason}"
                             f"{': ' + detail[0][:200] if detail else ''}{kept}")
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return DicomWebError(f"{public_url(url)}: {what} failed: the connection was refused or dropped "
                             f"({type(error).__name__}); check that the server runs and the URL{kept}")
    return DicomWebError(f"{public_url(url)}: {what} failed ({type(error).__name__}: {error}){kept}")


def _request_errors() -> tuple:
    import requests

    return (requests.RequestException, OSError)


def image_series(url: str, study_uid: str) -> list[RemoteSeries]:
    """The image series of a study (QIDO-RS), in the server's order.

    Raises:
        DicomWebError: the server refuses or cannot be reached, or it has no such study.
    """
    web = client(url)
    try:
        found = web.search_for_series(study_instance_uid=study_uid)
    except _request_errors() as error:
        raise _failure(url, f"searching study {study_uid}", error) from None
    if not found:
        raise DicomWebError(f"{public_url(url)}: no study {study_uid} (or it holds no series); check the Study "
                            "Instance UID")
    series = []
    for item in found:
        value = lambda tag, item=item: (item.get(tag, {}).get("Value") or [""])[0]
        series.append(RemoteSeries(str(value("0020000E")), str(value("00080060")), str(value("0008103E")),
                                   int(value("00201209") or 0)))
    return [s for s in series if s.modality not in NOT_IMAGE_MODALITIES]


def choose_remote_series(url: str, study_uid: str, series_uid: str | None) -> RemoteSeries:
    """The series to segment: ``series_uid``, or the study's only image series.

    Raises:
        DicomWebError: no image series, several and no ``series_uid`` (each listed), or an unknown one.
    """
    return _choose(url, study_uid, series_uid, image_series(url, study_uid))


def _choose(url: str, study_uid: str, series_uid: str | None, series: Sequence[RemoteSeries]) -> RemoteSeries:
    """:func:`choose_remote_series` among the study's image series ``series``, already listed."""
    listing = "; ".join(s.describe() for s in series) or "none"
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise DicomWebError(f"{public_url(url)}: study {study_uid} has no image series {series_uid}; its image "
                                f"series: {listing}")
        return chosen[0]
    if len(series) != 1:
        raise DicomWebError(f"{public_url(url)}: study {study_uid} has {len(series)} image series ({listing}); "
                            "choose one with --series UID")
    return series[0]


def series_to_fetch(url: str, study_uid: str, series_uid: str | None,
                    all_series: bool) -> tuple[RemoteSeries | None, list[RemoteSeries]]:
    """``(the chosen series, the series to fetch)`` of one scan: the chosen image series alone
    (:func:`choose_remote_series`), or with ``all_series`` (a multi-channel model's Dixon contrasts)
    every image series of the study, ``series_uid`` (if given, else None is chosen) among them.

    Raises:
        DicomWebError: as :func:`choose_remote_series`.
    """
    series = image_series(url, study_uid)
    if not all_series:
        chosen = _choose(url, study_uid, series_uid, series)
        return chosen, [chosen]
    return (_choose(url, study_uid, series_uid, series) if series_uid else None), series


def fetch_series(url: str, study_uid: str, series_uid: str, folder: Path, prefix: str = "") -> list[Path]:
    """Retrieve a series (WADO-RS) into ``folder`` as ``<prefix>instance_0000.dcm``...; returns the files."""
    web = client(url)
    try:
        datasets = web.retrieve_series(study_instance_uid=study_uid, series_instance_uid=series_uid)
    except _request_errors() as error:
        raise _failure(url, f"retrieving series {series_uid} of study {study_uid}", error) from None
    if not datasets:
        raise DicomWebError(f"{public_url(url)}: series {series_uid} of study {study_uid} returned no instances")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, dataset in enumerate(datasets):
        path = folder / f"{prefix}instance_{number:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def store_files(url: str, paths: Sequence[Path]) -> dict:
    """Store DICOM files on the server (STOW-RS); returns ``{file name: SOP Instance UID}``.

    Raises:
        DicomWebError: refused (HTTP status and the server's reason) or the connection dropped;
            the message says the files are kept locally.
    """
    import pydicom

    datasets = [pydicom.dcmread(p) for p in paths]
    local = f"the files are kept locally: {', '.join(str(p) for p in paths)}"
    web = client(url)
    try:
        response = web.store_instances(datasets=datasets)
    except _request_errors() as error:
        raise _failure(url, f"storing {len(paths)} object(s)", error, local) from None
    failed = response.get("00081198", {}).get("Value") if response is not None else None
    if failed:
        raise DicomWebError(f"{public_url(url)}: storing was refused for {len(failed)} of {len(paths)} object(s); {local}")
    return {Path(p).name: str(d.SOPInstanceUID) for p, d in zip(paths, datasets)}


def check_url(url: str) -> str:
    """Refuse a URL that is no http(s) URL or that holds credentials (before anything is written);
    returns :func:`public_url` of it. Asks the server nothing.

    Raises:
        ValueError: not an http(s) URL, or a user name or password in it (the message never repeats them).
    """
    _session(url)
    return public_url(url)


def _search_all(url: str, what: str, search, key: str) -> list[str]:
    """The ``key`` values of every match of a QIDO-RS ``search(offset=...)``, page after page: stops
    at an empty page, or at a page with nothing new (a server that ignores ``offset``)."""
    found: dict[str, None] = {}
    while True:
        try:
            page = search(offset=len(found))
        except _request_errors() as error:
            raise _failure(url, what, error) from None
        values = [str((item.get(key, {}).get("Value") or [""])[0]) for item in page or []]
        new = [value for value in values if value and value not in found]
        if not new:
            return list(found)
        found.update(dict.fromkeys(new))


def all_studies(url: str) -> list[str]:
    """Study Instance UIDs of every study on the server (QIDO-RS, all pages), sorted.

    Raises:
        DicomWebError: the server refuses or cannot be reached.
    """
    web = client(url)

    def search(offset: int):
        return web.search_for_studies(offset=offset or None, fields=["0020000D"])
    return sorted(_search_all(url, "listing its studies", search, "0020000D"))


def series_instances(url: str, study_uid: str, series_uid: str) -> list[str]:
    """SOP Instance UIDs of a series on the server (QIDO-RS, all pages), sorted: what a complete
    copy of it holds.

    Raises:
        DicomWebError: the server refuses or cannot be reached.
    """
    web = client(url)

    def search(offset: int):
        return web.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid,
                                        offset=offset or None, fields=["00080018"])
    return sorted(_search_all(url, f"listing the instances of series {series_uid} of study {study_uid}", search,
                              "00080018"))
