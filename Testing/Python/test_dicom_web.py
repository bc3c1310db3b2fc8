"""A real PACS: Orthanc with its DICOMweb plugin, started on 127.0.0.1 with ports of its own in a
temporary folder and stopped after. A series is uploaded, segmented through DICOMweb, the SEG,
Parametric Map and SR stored back and queried; a refused store, an unknown study and a dropped
connection each give a clear message and keep the local results."""

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import tiny  # Testing/Python: the tiny model and scan the command-line tests share
from test_dicom_channels import DIXON, UKB, Exam, dixon_checkpoint, phantom  # noqa: F401 (fixtures)

from SwinBOBLib import io
from SwinBOBLib.cli import main
from SwinBOBLib.io.dicomweb import DicomWebError
from SwinBOBLib.outputs.dicom_seg import read_seg_labels
from SwinBOBLib.workflows.dicomweb import store_outputs

ORTHANC = shutil.which("Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
# Refuses every STOW-RS request (POST under /dicom-web/) and nothing else: uploads through the REST API pass.
REFUSE_STOW = """function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return not (method == 'POST' and string.sub(uri, 1, 11) == '/dicom-web/')
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_orthanc(folder: Path, lua: str | None = None, users: dict | None = None):
    """Orthanc with its DICOMweb plugin on 127.0.0.1 and a port of its own; with ``users`` (name:
    password) it wants one of them on every request. ``(process, base URL, log)``."""
    if ORTHANC is None or not PLUGIN.exists():
        pytest.skip("Orthanc with its DICOMweb plugin is missing: apt-get install orthanc orthanc-dicomweb")
    folder.mkdir(parents=True)
    port = _free_port()
    config = {"Name": "swinbob-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "DicomPort": _free_port(), "RemoteAccessAllowed": False,
              "AuthenticationEnabled": bool(users), "Plugins": [str(PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    if users:
        config["RegisteredUsers"] = dict(users)
    if lua:
        (folder / "filter.lua").write_text(lua)
        config["LuaScripts"] = [str(folder / "filter.lua")]
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")  # noqa: SIM115 (closed by _stop with the server)
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            auth = next(iter(users.items())) if users else None
            if requests.get(f"{base}/system", auth=auth, timeout=1).ok:
                return process, base, log
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")


def _stop(process, log) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """``base URL`` of a running Orthanc (DICOMweb at ``/dicom-web``)."""
    process, base, log = _start_orthanc(tmp_path_factory.mktemp("orthanc") / "server")
    yield base
    _stop(process, log)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _upload(base: str, folder: Path) -> str:
    """Upload a series through Orthanc's REST API; returns its Study Instance UID."""
    for path in sorted(folder.glob("*.dcm")):
        requests.post(f"{base}/instances", data=path.read_bytes(), timeout=30).raise_for_status()
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)


def _series(tmp_path: Path, name: str = "series") -> Path:
    io.save_image(tiny.body(), tmp_path / name)
    return tmp_path / name


def _segment(*args) -> int:
    return main(["segment", *map(str, args), "--device", "cpu", "--quiet", "--no-preview"])


def test_segment_through_dicomweb_and_store_the_results_in_the_study(orthanc, checkpoint, tmp_path):
    study = _upload(orthanc, _series(tmp_path))
    out = tmp_path / "out"
    assert _segment("--dicomweb", f"{orthanc}/dicom-web", "--study", study, "-o", out, "--output-type", "dicom",
                    "--store", "--checkpoint", checkpoint) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["dicomweb"]["study_uid"] == study and report["dicomweb_stored"]["instances"]
    found = requests.get(f"{orthanc}/dicom-web/studies/{study}/series", timeout=30).json()
    modalities = sorted(item["00080060"]["Value"][0] for item in found)
    assert modalities == ["MR", "OT", "SEG", "SR"]  # highdicom gives the Parametric Map modality OT
    local = pydicom.dcmread(out / "labels_seg.dcm")
    stored = requests.get(f"{orthanc}/dicom-web/studies/{study}/series/{local.SeriesInstanceUID}/instances/"
                          f"{local.SOPInstanceUID}", headers={"Accept": 'multipart/related; type="application/dicom"'},
                          timeout=30)
    assert stored.ok
    (tmp_path / "back.dcm").write_bytes(stored.content[stored.content.index(b"DICM") - 128:])
    source = io.load_image(tmp_path / "series")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in source.metadata["dicom_files"]]
    assert np.array_equal(read_seg_labels(tmp_path / "back.dcm", uids), io.load_labelmap(out / "labels.nii.gz").array)


def test_an_unknown_study_is_a_clear_error(orthanc, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment("--dicomweb", f"{orthanc}/dicom-web", "--study", "1.2.3.4.5", "-o", out, "--output-type", "dicom",
                    "--checkpoint", checkpoint) == 1
    assert "no study 1.2.3.4.5" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_a_refused_store_keeps_the_local_results(checkpoint, tmp_path, capsys):
    process, base, log = _start_orthanc(tmp_path / "refusing", REFUSE_STOW)
    try:
        study = _upload(base, _series(tmp_path))
        out = tmp_path / "out"
        assert _segment("--dicomweb", f"{base}/dicom-web", "--study", study, "-o", out, "--output-type", "dicom",
                        "--store", "--checkpoint", checkpoint) == 1
        error = capsys.readouterr().err
        assert "was refused: HTTP 403" in error and "the files are kept locally" in error
        assert {"labels_seg.dcm", "entropy_pmap.dcm", "organs_sr.dcm", "report.json"} <= {p.name for p in out.iterdir()}
    finally:
        _stop(process, log)


def test_a_dropped_connection_keeps_the_local_results(checkpoint, tmp_path, capsys):
    io.save_image(tiny.body(), tmp_path / "series")
    out = tmp_path / "out"
    assert _segment(tmp_path / "series", "-o", out, "--output-type", "dicom", "--checkpoint", checkpoint) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    closed = f"http://127.0.0.1:{_free_port()}/dicom-web"
    with pytest.raises(DicomWebError, match="connection was refused or dropped.*the files are kept locally"):
        store_outputs(closed, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _segment("--dicomweb", closed, "--study", "1.2.3", "-o", tmp_path / "other", "--output-type", "dicom",
                    "--checkpoint", checkpoint) == 1
    assert "connection was refused or dropped" in capsys.readouterr().err


def test_credentials_in_the_url_are_refused(checkpoint, tmp_path, capsys):
    assert _segment("--dicomweb", "http://user:secret@127.0.0.1:1/dicom-web", "--study", "1.2.3", "-o", tmp_path / "o",
                    "--output-type", "dicom", "--checkpoint", checkpoint) == 1
    error = capsys.readouterr().err
    assert "the URL holds credentials" in error and "SWINBOB_DICOMWEB_USER" in error


@pytest.mark.parametrize("url", ["ftp://user:secret@127.0.0.1/dicom-web", "http://user:secret@/dicom-web"])
def test_credentials_in_a_url_that_is_not_http_are_refused_without_repeating_them(checkpoint, tmp_path, capsys, url):
    assert _segment("--dicomweb", url, "--study", "1.2.3", "-o", tmp_path / "o", "--output-type", "dicom",
                    "--checkpoint", checkpoint) == 1
    error = capsys.readouterr().err
    assert "the URL holds credentials" in error and "secret" not in error and "user:" not in error
    assert not (tmp_path / "o").exists()


def test_a_four_channel_model_takes_the_studys_dixon_series_as_its_channels(orthanc, phantom, dixon_checkpoint,
                                                                           tmp_path):
    exam = Exam(tmp_path / "exam")
    uids = exam.dixon(phantom, descriptions=UKB)
    study = _upload(orthanc, exam.folder)
    out = tmp_path / "out"
    assert _segment("--dicomweb", f"{orthanc}/dicom-web", "--study", study, "-o", out, "--output-type", "dicom",
                    "--checkpoint", dixon_checkpoint) == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["input"]["dicomweb"]["series_fetched"]) == sorted(uids.values())
    assert [c["series_uid"] for c in report["input"]["dicom_channels"]] == [uids[c] for c in DIXON]
    labels = io.load_labelmap(out / "labels.nii.gz")
    assert labels.spatial_shape == phantom.shape and np.allclose(labels.affine, phantom.affine, atol=1e-4)
    seg = pydicom.dcmread(out / "labels_seg.dcm", stop_before_pixels=True)
    assert seg.StudyInstanceUID == study  # stored back it lands in the same study
