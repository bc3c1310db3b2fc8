"""``swinbob cohort run --dicomweb``: a cohort taken from a real PACS, Orthanc with its DICOMweb
plugin started on 127.0.0.1 with a password (given to SwinBOB through the environment). Two
studies and an unknown one segmented with the tiny model; a rerun over every study of the server
fetches and redoes nothing; a partial download is fetched again but not segmented again; a
dropped connection is a failed row; bad CSVs and credentials in the URL are refused; the password
never reaches a file."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from SwinBOBLib import cli, io
from SwinBOBLib.io.dicomweb import DicomWebError
from SwinBOBLib.workflows import cohort_dicomweb
from SwinBOBLib.workflows.cohort_manifest import FAILURE_COLUMNS, MANIFEST_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny  # noqa: E402
from test_dicom_web import _start_orthanc as start_orthanc, _stop  # noqa: E402
from test_dicom_channels import DIXON, UKB, Exam, dixon_checkpoint, phantom  # noqa: E402, F401 (fixtures)


USER, PASSWORD = "cohort-reader", "pw-Xq7-never-written"
UNKNOWN = "1.2.826.0.1.3680043.9.7777.404"  # a well-formed Study Instance UID the server does not hold


@contextlib.contextmanager
def credentials():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWINBOB_DICOMWEB_USER", USER)
        patch.setenv("SWINBOB_DICOMWEB_PASSWORD", PASSWORD)
        patch.delenv("SWINBOB_DICOMWEB_TOKEN", raising=False)
        yield


@pytest.fixture(autouse=True)
def _credentials():
    with credentials():
        yield


def _start_orthanc(folder: Path):
    """Orthanc with its DICOMweb plugin on 127.0.0.1 (test_dicom_web's), wanting USER and PASSWORD on
    every request: ``(process, base URL, log)``."""
    return start_orthanc(folder, users={USER: PASSWORD})


def _upload(base: str, folder: Path) -> tuple[str, str]:
    """Upload a series through Orthanc's REST API; returns its (Study, Series) Instance UIDs."""
    for path in sorted(folder.iterdir()):
        requests.post(f"{base}/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=30).raise_for_status()
    header = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    return str(header.StudyInstanceUID), str(header.SeriesInstanceUID)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """``(DICOMweb URL, {study UID: (series UID, local copy of the series)})``: two small studies."""
    folder = tmp_path_factory.mktemp("pacs")
    process, base, log = _start_orthanc(folder / "server")
    try:
        studies = {}
        for name, shape, seed in (("a", (20, 18, 16), 0), ("b", (22, 18, 14), 1)):
            io.save_image(tiny.body(shape, seed), folder / name)
            study, series = _upload(base, folder / name)
            studies[study] = (series, folder / name)
        yield f"{base}/dicom-web", studies
    finally:
        _stop(process, log)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny.checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def cohort(url: str, out: Path, checkpoint: Path, *extra) -> list[str]:
    return ["cohort", "run", "--dicomweb", url, "-o", str(out), "--device", "cpu", "--checkpoint", str(checkpoint),
            "--workers", "1", "--no-preview", "--quiet", "--no-plots", *map(str, extra)]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stamps(out: Path, pattern: str) -> dict:
    return {p.relative_to(out): p.stat().st_mtime_ns for p in out.glob(pattern)}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, pacs, checkpoint):
    """The two studies (default ids) and an unknown one (id 'lost') from a CSV: (exit code, OUT, events)."""
    url, studies = pacs
    folder = tmp_path_factory.mktemp("first")
    listing = folder / "studies.csv"
    rows = "".join(f",{study},\n" for study in studies) + f"lost,{UNKNOWN},\n"
    listing.write_text("id,study,series\n" + rows, encoding="utf-8")
    with credentials():
        code = cli.main(cohort(url, folder / "out", checkpoint, listing, "--progress-json", folder / "events.jsonl"))
    return code, folder / "out", events(folder / "events.jsonl")


def test_two_studies_are_fetched_and_segmented_on_their_source_grid(first_run, pacs):
    code, out, log = first_run
    url, studies = pacs
    assert code == 1  # the unknown study
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == MANIFEST_COLUMNS
    manifest = {r["id"]: r for r in read_rows(out / "manifest.csv")}
    assert list(manifest) == [*studies, "lost"]  # the CSV's order; ids default to the study UIDs
    for study, (series, local) in studies.items():
        assert manifest[study]["status"] == "done"
        assert Path(manifest[study]["image"]) == (out / ".sources" / study / "dicom").resolve()
        labels, source = io.load_labelmap(out / study / "labels.nii.gz"), io.load_image(local)
        assert labels.array.shape == source.array.shape[:3]
        assert np.allclose(labels.affine, source.affine, atol=1e-4)
        record = json.loads((out / ".sources" / study / "source.json").read_text(encoding="utf-8"))
        assert record["series_uid"] == series and record["instances"] == len(list(local.iterdir()))
        scan_report = json.loads((out / study / "report.json").read_text(encoding="utf-8"))["input"]
        assert scan_report["path"] == f"{url}/studies/{study}/series/{series}"  # its source, not the local copy
        assert scan_report["dicomweb"]["study_uid"] == study and scan_report["dicomweb"]["series_uid"] == series
    qc = json.loads((out / "qc_list.json").read_text(encoding="utf-8"))
    assert isinstance(qc, list) and all(row["labelmap"].endswith("labels.nii.gz") for row in qc)
    report = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
    source = report["dicomweb"]
    assert source["url"] == url and source["fetched_now"] == 2 and source["failed"] == 1
    for study, (series, _) in studies.items():
        assert source["scans"][study]["source"] == f"{url}/studies/{study}/series/{series}"
        assert source["scans"][study]["fetched"] == "this"
    fetched = [e for e in log if e["event"] == "fetch_done"]
    assert sorted(e["case"] for e in fetched) == sorted(studies) and not any(e["cached"] for e in fetched)
    assert [e["event"] for e in log][:1] == ["fetch_start"] and log[-1]["event"] == "done"


def test_an_unknown_study_is_a_failed_row_naming_it(first_run, pacs):
    code, out, log = first_run
    url, _ = pacs
    assert code == 1
    with open(out / "failures.csv", newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == FAILURE_COLUMNS
    failures = read_rows(out / "failures.csv")
    assert [f["id"] for f in failures] == ["lost"]
    assert UNKNOWN in failures[0]["reason"] and failures[0]["image"] == f"{url}/studies/{UNKNOWN}"
    assert {r["id"]: r["status"] for r in read_rows(out / "manifest.csv")}["lost"] == "failed"
    assert [e["case"] for e in log if e["event"] == "fetch_error"] == ["lost"]
    assert not (out / "lost").exists() and not (out / ".sources" / "lost" / "dicom").exists()


def test_rerun_over_every_study_fetches_nothing_and_redoes_nothing(first_run, pacs, checkpoint, tmp_path):
    _, first, _ = first_run
    url, studies = pacs
    out = tmp_path / "out"
    shutil.copytree(first, out)
    before = {**stamps(out, "*/labels.nii.gz"), **stamps(out, ".sources/*/dicom/*")}
    code = cli.main(cohort(url, out, checkpoint, "--progress-json", tmp_path / "events.jsonl"))  # no CSV: all studies
    assert code == 0
    log = events(tmp_path / "events.jsonl")
    assert sorted(e["case"] for e in log if e["event"] == "fetch_done" and e["cached"]) == sorted(studies)
    assert not [e for e in log if e["event"] in ("fetch_error", "case_done", "case_error")]
    assert next(e for e in log if e["event"] == "start")["todo"] == 0
    assert {**stamps(out, "*/labels.nii.gz"), **stamps(out, ".sources/*/dicom/*")} == before
    assert {r["id"]: r["run"] for r in read_rows(out / "manifest.csv")} == {study: "earlier" for study in studies}
    assert read_rows(out / "failures.csv") == []
    report = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
    assert report["dicomweb"]["studies"] == "every study on the server" and report["dicomweb"]["already_fetched"] == 2


def test_a_partial_download_is_fetched_again_but_not_segmented_again(first_run, pacs, checkpoint, tmp_path):
    _, first, _ = first_run
    url, studies = pacs
    study = next(iter(studies))
    out = tmp_path / "out"
    shutil.copytree(first, out)
    labels = stamps(out, "*/labels.nii.gz")
    files = sorted((out / ".sources" / study / "dicom").iterdir())
    whole = {path.name: path.read_bytes() for path in files}
    files[0].unlink()  # as a run killed while it wrote the series would leave it
    listing = tmp_path / "one.csv"
    listing.write_text(f"study\n{study}\n", encoding="utf-8")
    assert cli.main(cohort(url, out, checkpoint, listing, "--progress-json", tmp_path / "events.jsonl")) == 0
    fetched = [e for e in events(tmp_path / "events.jsonl") if e["event"] == "fetch_done"]
    assert [(e["case"], e["cached"]) for e in fetched] == [(study, False)]
    assert {p.name: p.read_bytes() for p in (out / ".sources" / study / "dicom").iterdir()} == whole
    assert stamps(out, "*/labels.nii.gz") == labels  # the same content: the scan is not segmented again
    assert {r["id"]: r["run"] for r in read_rows(out / "manifest.csv")} == {study: "earlier"}


def test_a_dropped_connection_is_a_failed_row_and_the_run_goes_on(first_run, pacs, checkpoint, tmp_path,
                                                                  monkeypatch):
    _, first, _ = first_run
    url, studies = pacs
    dropped, kept = list(studies)
    out = tmp_path / "out"
    shutil.copytree(first, out)
    shutil.rmtree(out / ".sources" / dropped)
    fetch = cohort_dicomweb.fetch_series

    def drop_one(url, study, series, folder):
        if study != dropped:
            return fetch(url, study, series, folder)
        (folder / "instance_0000.dcm").write_bytes(b"half a file")
        raise DicomWebError(f"{url}: retrieving series {series} of study {study} failed: the connection was "
                            "refused or dropped (ConnectionError)")

    monkeypatch.setattr(cohort_dicomweb, "fetch_series", drop_one)
    assert cli.main(cohort(url, out, checkpoint)) == 1
    failures = read_rows(out / "failures.csv")
    assert [f["id"] for f in failures] == [dropped] and "dropped" in failures[0]["reason"]
    assert {r["id"]: r["status"] for r in read_rows(out / "manifest.csv")}[kept] == "done"
    assert not (out / ".sources" / dropped / "dicom").exists()  # the partial series never lands
    assert not [p for p in (out / ".sources" / dropped).iterdir()]
    monkeypatch.setattr(cohort_dicomweb, "fetch_series", fetch)
    assert cli.main(cohort(url, out, checkpoint)) == 0  # fetched again: same content, not segmented again
    assert {r["id"]: r["run"] for r in read_rows(out / "manifest.csv")} == {dropped: "earlier", kept: "earlier"}


def test_bad_csvs_and_missing_inputs_are_refused_before_any_work(pacs, checkpoint, tmp_path, capsys):
    url, studies = pacs
    images = tmp_path / "images.csv"
    images.write_text("image\nscan.nii.gz\n", encoding="utf-8")
    assert cli.main(cohort(url, tmp_path / "a", checkpoint, images)) == 1
    assert "needs a 'study' column" in capsys.readouterr().err
    listing = tmp_path / "studies.csv"
    listing.write_text(f"study\n{next(iter(studies))}\n", encoding="utf-8")
    local = ["cohort", "run", str(listing), "-o", str(tmp_path / "b"), "--checkpoint", str(checkpoint), "--quiet"]
    assert cli.main(local) == 1
    assert "needs --dicomweb URL" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("study\n1.2.abc\n", encoding="utf-8")
    assert cli.main(cohort(url, tmp_path / "c", checkpoint, bad)) == 1
    assert "line 2, study: '1.2.abc' is not a DICOM UID" in capsys.readouterr().err
    assert cli.main(["cohort", "run", "-o", str(tmp_path / "d"), "--quiet"]) == 1
    assert "no INPUTS" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_credentials_never_reach_an_output_file(first_run, pacs, checkpoint, tmp_path, capsys):
    _, out, log = first_run
    url, _ = pacs
    assert requests.get(f"{url}/studies", timeout=10).status_code == 401  # the server wants them
    with_password = url.replace("http://", f"http://{USER}:{PASSWORD}@")
    assert cli.main(cohort(with_password, tmp_path / "out", checkpoint)) == 1
    said = capsys.readouterr()
    assert "holds credentials" in said.err and PASSWORD not in said.err + said.out
    assert not (tmp_path / "out").exists()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "source.json" for p in written) and any(p.name == "journal.jsonl" for p in written)
    for path in written:
        content = path.read_bytes()
        assert PASSWORD.encode() not in content and USER.encode() not in content, path
    assert PASSWORD not in json.dumps(log) and USER not in json.dumps(log)


def test_a_dixon_model_gets_each_studys_dixon_series_as_its_channels(tmp_path, phantom, dixon_checkpoint):
    """A four-channel model: every image series of the study is fetched into the scan's folder and
    its contrasts matched there; a rerun fetches and redoes nothing."""
    process, base, log = _start_orthanc(tmp_path / "server")
    try:
        exam = Exam(tmp_path / "exam")
        uids = exam.dixon(phantom, descriptions=UKB)
        study, _ = _upload(base, exam.folder)
        listing = tmp_path / "studies.csv"
        listing.write_text(f"id,study\ndixon,{study}\n", encoding="utf-8")
        out = tmp_path / "out"
        assert cli.main(cohort(f"{base}/dicom-web", out, dixon_checkpoint, listing)) == 0
        record = json.loads((out / ".sources" / "dixon" / "source.json").read_text(encoding="utf-8"))
        assert sorted(record["series_uids"]) == sorted(uids.values()) and record["instances"] == 4 * phantom.shape[2]
        scan = json.loads((out / "dixon" / "report.json").read_text(encoding="utf-8"))["input"]
        assert [c["series_uid"] for c in scan["dicom_channels"]] == [uids[c] for c in DIXON]
        assert sorted(scan["dicomweb"]["series_fetched"]) == sorted(uids.values())
        labels = io.load_labelmap(out / "dixon" / "labels.nii.gz")
        assert labels.spatial_shape == phantom.shape and np.allclose(labels.affine, phantom.affine, atol=1e-4)
        assert cli.main(cohort(f"{base}/dicom-web", out, dixon_checkpoint, listing)) == 0
        again = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
        assert again["dicomweb"]["already_fetched"] == 1 and again["counts"]["done_now"] == 0
    finally:
        _stop(process, log)
