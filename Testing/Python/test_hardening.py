"""Issue 14: nothing lost, nothing written where it should not be, one clear line instead of a traceback.

Each test reproduces one hole a hostile probe of the commands found, on real files (the sample
scans in Testing/Data) and a tiny random Swin-UNETR.
"""

import csv
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from SwinBOBLib import io
from SwinBOBLib.cli import main
from SwinBOBLib.evaluation import benchmark
from SwinBOBLib.io import readers, writers
from SwinBOBLib.models.loading import save_checkpoint
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import build_model

import tiny  # Testing/Python: the tiny model and scan the command-line tests share

REPO = Path(__file__).resolve().parents[2]
MR = "example_mr_sm.nii.gz"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


body = tiny.body


def segment(*args, checkpoint):
    return main(["segment", *map(str, args), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--roi-size", "32", "--no-preview", "--quiet"])


def tree(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones too) with its content digest."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- 1. path traversal


@pytest.mark.parametrize("bad_id", ["../../escaped", "/tmp/swinbob-abs-escape", "..", "a/../../b", ".hidden",
                                    "sub\\..\\..\\x"])
def test_batch_ids_never_write_outside_outdir(bad_id, checkpoint, tmp_path, capsys):
    work = tmp_path / "work"
    io.save_image(body(), work / "a.nii.gz")
    io.save_image(body(seed=1), work / "b.nii.gz")
    (work / "list.csv").write_text(f"id,image\nfine,a.nii.gz\n{bad_id},b.nii.gz\n", encoding="utf-8")
    before = tree(tmp_path)
    code = segment(work / "list.csv", "-o", work / "nested" / "out", checkpoint=checkpoint)
    err = capsys.readouterr().err
    assert code == 1 and "line 3" in err and "cannot be used as a folder name" in err
    assert "Traceback" not in err
    assert tree(tmp_path) == before, "a refused batch writes nothing at all"
    assert not Path("/tmp/swinbob-abs-escape").exists()


def test_batch_ids_are_folders_inside_outdir(checkpoint, tmp_path):
    io.save_image(body(), tmp_path / "a.nii.gz")
    io.save_image(body(seed=1), tmp_path / "b.nii.gz")
    (tmp_path / "list.csv").write_text("id,image\npatient 1,a.nii.gz\nPAT-2_ä,b.nii.gz\n", encoding="utf-8")
    out = tmp_path / "out"
    assert segment(tmp_path / "list.csv", "-o", out, checkpoint=checkpoint) == 0
    assert sorted(p.name for p in out.iterdir()) == ["PAT-2_ä", "patient 1"]
    outside = {p.name for p in tmp_path.iterdir()}
    assert outside == {"a.nii.gz", "b.nii.gz", "list.csv", "out"}


# ----------------------------------------------------------------------------- 2. never over an input


@pytest.mark.parametrize("name", ["labels.nii.gz", "entropy.nii.gz"])
def test_segment_never_writes_over_its_input(name, checkpoint, tmp_path, capsys):
    folder = tmp_path / "study"
    scan = io.save_image(body(), folder / name)
    (folder / "organs.csv").write_text("my own table\n", encoding="utf-8")
    (folder / "report.json").write_text('{"mine": true}', encoding="utf-8")
    before = tree(folder)
    assert segment(scan, "-o", folder, checkpoint=checkpoint) == 0
    err = capsys.readouterr().err
    stem = name.split(".")[0]
    assert f"writing the outputs into {folder / stem}" in err
    after = tree(folder)
    assert {k: v for k, v in after.items() if k in before} == before, "the input and the user's files are untouched"
    assert (folder / stem / "labels.nii.gz").exists() and (folder / stem / "report.json").exists()


def test_dicom_folder_as_output_stays_one_series(checkpoint, tmp_path, capsys):
    dicom = tmp_path / "series"
    io.save_image(body(), dicom)
    before = tree(dicom)
    assert segment(dicom, "-o", dicom, checkpoint=checkpoint) == 0
    assert "writing the outputs into" in capsys.readouterr().err
    assert {k: v for k, v in tree(dicom).items() if k in before} == before
    from SwinBOBLib.workflows.segment import list_inputs

    assert list_inputs(dicom) == [("series", dicom)], "the folder still reads as one DICOM series"
    assert io.load_image(dicom).array.shape == body().array.shape


def test_a_folder_of_someone_elses_files_is_refused(checkpoint, tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    (out / "scan").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    (out / "scan" / "thesis.docx").write_text("keep me too", encoding="utf-8")
    before = tree(out)
    assert segment(scan, "-o", out, checkpoint=checkpoint) == 1
    err = capsys.readouterr().err
    assert "holds files SwinBOB did not write" in err and "thesis.docx" in err
    assert tree(out) == before


def test_sample_scan_bytes_never_change(checkpoint, samples, tmp_path):
    """The acceptance check: `swinbob segment IMAGE -o DIR` never changes IMAGE, DIR its folder."""
    folder = tmp_path / "copy"
    folder.mkdir()
    scan = folder / "labels.nii.gz"
    scan.write_bytes((samples / MR).read_bytes())
    before = digest(scan)
    assert segment(scan, "-o", folder, "--spacing", "8", checkpoint=checkpoint) == 0
    assert digest(scan) == before


# ----------------------------------------------------------------------------- 3. whole output sets


def test_an_interrupted_rerun_keeps_the_previous_set_whole(checkpoint, tmp_path, monkeypatch):
    from SwinBOBLib.outputs import folders as segment_module  # where the result folder is written

    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert segment(scan, "-o", out, checkpoint=checkpoint) == 0
    before = tree(out)

    real = segment_module.write_organs_csv

    def killed(rows, path):  # dies after labels and entropy of the new run are written
        real(rows, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(segment_module, "write_organs_csv", killed)
    assert segment(scan, "-o", out, "--structures", "liver", checkpoint=checkpoint) == 130
    assert tree(out) == before, "old outputs stay whole, no new file beside them"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no staging folder left"
    monkeypatch.setattr(segment_module, "write_organs_csv", real)
    assert segment(scan, "-o", out, "--structures", "liver", checkpoint=checkpoint) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["inference"]["structures"] == [5]
    assert report["outputs"]["labels"] == str(out / "labels.nii.gz")


def test_stale_staging_of_a_killed_run_is_cleaned(checkpoint, tmp_path):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".swinbob-staging-{int(dead.stdout)}-x1y2"
    stale.mkdir(parents=True)
    (stale / "labels.nii.gz").write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * io.files.STALE_AFTER_S,) * 2)  # nobody holds its lock, and it is old
    alive = out / f".swinbob-staging-{os.getpid()}-live"  # a run still going keeps its folder
    alive.mkdir()
    (tmp_path / "list.csv").write_text("id,image\none,scan.nii.gz\ntwo,scan.nii.gz\n", encoding="utf-8")
    assert segment(tmp_path / "list.csv", "-o", out, checkpoint=checkpoint) == 0
    assert not stale.exists() and alive.exists()
    assert sorted(p.name for p in out.iterdir()) == [alive.name, "one", "two"]


def test_sigterm_removes_the_partial_case_and_says_so(checkpoint, tmp_path):
    scan = io.save_image(body(shape=(96, 96, 64)), tmp_path / "big.nii.gz")
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "SwinBOBLib", "segment", str(scan), "-o", str(out), "--checkpoint", str(checkpoint),
         "--device", "cpu", "--roi-size", "32", "--tta", "--no-preview", "--quiet", "--progress-json", str(events)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if events.exists() and '"progress"' in events.read_text(encoding="utf-8"):
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    last = json.loads(events.read_text(encoding="utf-8").splitlines()[-1])
    assert last["event"] == "stopped" and last["signal"] == "SIGTERM"
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- 4. benchmark geometry


def _rewrite_label(path: Path, change) -> None:
    image = io.load_image(path)
    io.save_image(change(image), path)


def small_dataset(root: Path, n: int) -> Path:
    """``n`` small scans (one 32^3 window each) with a two-structure UKBOB reference, as dataset.json."""
    entries = []
    for i in range(n):
        image = body(seed=i)
        labels = np.zeros(image.spatial_shape, np.uint8)
        labels[3:10, 3:-3, 2:-2], labels[10:-3, 3:-3, 2:-2] = 5, 3  # liver, left kidney
        io.save_image(image, root / "imagesTr" / f"case_{i:04d}.nii.gz")
        io.save_labelmap(labels, image, root / "labelsTr" / f"case_{i:04d}.nii.gz")
        entries.append({"image": f"imagesTr/case_{i:04d}.nii.gz", "label": f"labelsTr/case_{i:04d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "small", "scheme": "ukbob", "training": entries}),
                                       encoding="utf-8")
    return root


def test_benchmark_checks_label_geometry_and_goes_on_past_bad_cases(checkpoint, tmp_path, capsys):
    data = small_dataset(tmp_path / "data", 3)
    baseline = benchmark.run_benchmark(data, checkpoint, tmp_path / "base", ["plain"], limit=1,
                                       config=benchmark.InferenceConfig(device="cpu"))
    assert baseline["failed"] == [] and baseline["cases"] == 1
    labels = data / "labelsTr"
    # case_0000: the same reference stored in RAS voxel order beside the LPS image: reoriented exactly
    _rewrite_label(labels / "case_0000.nii.gz", lambda im: io.reorient(im, "RAS")[0])
    assert io.load_image(labels / "case_0000.nii.gz").orientation == "RAS"

    def shifted(im):  # case_0001: 50 mm off
        affine = im.affine.copy()
        affine[0, 3] += 50.0
        return io.Image(im.array, affine)

    _rewrite_label(labels / "case_0001.nii.gz", shifted)
    (labels / "case_0002.nii.gz").write_bytes(b"\x1f\x8b not a label map")  # case_0002: unreadable
    out = tmp_path / "bench"
    code = main(["benchmark", "--dataset", str(data), "--checkpoint", str(checkpoint), "-o", str(out),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert "case case_0001" in err and "(origin (50, 0, 0) vs (0, 0, 0) mm)" in err and "Traceback" not in err
    assert "case_0002: error" in err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [f["case"] for f in summary["failed"]] == ["case_0001", "case_0002"]
    assert summary["cases"] == 1 and summary["status"] == "done"
    rows = list(csv.DictReader((out / "per_case.csv").read_text(encoding="utf-8").splitlines()))
    base = list(csv.DictReader((tmp_path / "base" / "per_case.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["case"] for r in rows} == {"case_0000"}
    assert [(r["structure"], r["dice"]) for r in rows] == [(r["structure"], r["dice"]) for r in base], \
        "a reference stored in another voxel order scores exactly as the original"
    assert "2 case(s) failed" in (out / "summary.md").read_text(encoding="utf-8")


def test_benchmark_progress_and_a_stopped_run_marked_partial(checkpoint, tmp_path, capsys, monkeypatch):
    data = small_dataset(tmp_path / "data", 2)
    flag = benchmark.StopFlag(signals=())
    real = benchmark.evaluate_case

    def then_stop(*args, **kwargs):
        rows = real(*args, **kwargs)
        flag.request()  # as SIGTERM would, after the first case and mode
        return rows

    monkeypatch.setattr(benchmark, "evaluate_case", then_stop)
    summary = benchmark.run_benchmark(data, checkpoint, tmp_path / "out", ["plain", "tta"], stop=flag,
                                      config=benchmark.InferenceConfig(device="cpu", tta_flips=4),
                                      progress_bar=True)
    err = capsys.readouterr().err
    assert "TTA runs every window 4 times" in err
    assert "case_0000 plain: 1/4 case-modes [" in err and "<" in err, "a bar with the time left"
    assert summary["status"] == "stopped" and summary["partial"] and summary["cases"] == 1
    assert summary["cases_planned"] == 2
    assert (tmp_path / "out" / "summary.md").read_text(encoding="utf-8").startswith(
        "# PARTIAL: stopped after 1 of 2 case(s)")


# ----------------------------------------------------------------------------- 5. DICOM gaps


def test_dicom_series_with_a_missing_slice_is_refused_with_its_position(checkpoint, tmp_path, capsys):
    series = tmp_path / "series"
    io.save_image(body(), series)  # float voxels: GDCM writes Enhanced MR (positions in functional groups)
    (series / "slice_0007.dcm").unlink()
    with pytest.raises(io.ImageFormatError, match=r"slices 7 and 8 of 15 \(slice_0006\.dcm and slice_0008\.dcm\) "
                                                  r"are 6 mm apart where the series' spacing is 3 mm"):
        io.load_image(series)
    out = tmp_path / "out"
    assert segment(series, "-o", out, checkpoint=checkpoint) == 1
    assert "a slice is missing" in capsys.readouterr().err
    assert not out.exists()


def test_an_integer_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    series = tmp_path / "series"
    image = body()
    io.save_image(io.Image(np.round(image.array).astype(np.int16), image.affine), series)  # classic MR Image
    assert pydicom.dcmread(series / "slice_0000.dcm").SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    (series / "slice_0003.dcm").unlink()
    with pytest.raises(io.ImageFormatError, match=r"slices 3 and 4 of 15 .* 6 mm apart"):
        io.load_image(series)


def test_a_complete_dicom_series_still_reads(tmp_path):
    series = tmp_path / "series"
    io.save_image(body(), series)
    assert io.load_image(series).array.shape == (20, 18, 16)


# ----------------------------------------------------------------------------- 7. phantom onto a dataset


def test_phantom_refuses_to_overwrite_a_dataset(tmp_path, capsys):
    assert main(["phantom", "-o", str(tmp_path / "d"), "--quiet"]) == 0
    before = tree(tmp_path / "d")
    assert main(["phantom", "-o", str(tmp_path / "d"), "--seed", "5", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "already holds a dataset (dataset.json, imagesTr, labelsTr)" in err
    assert tree(tmp_path / "d") == before


# ----------------------------------------------------------------------------- 8. QC review log


def test_review_log_recovers_from_a_torn_non_utf8_tail_and_unknown_decisions(tmp_path):
    sys.path.insert(0, str(REPO / "SwinBOB"))
    try:
        from SwinBOBModule import review
    finally:
        sys.path.remove(str(REPO / "SwinBOB"))
    qc = tmp_path / "qc_list.json"
    qc.write_text(json.dumps([{"id": "case_0000", "flags": {"5": {"inaccurate": True, "out_of_range": ["sphericity"]}}},
                              {"id": "case_0001", "flags": {"3": {"missing": True}}}]), encoding="utf-8")
    session = review.ReviewSession(str(qc), reviewer="me")
    session.decide(review.ACCEPT)
    with open(session.reviewPath, "ab") as stream:
        stream.write(json.dumps({"sample": "case_0001", "label": 3, "decision": "maybe"}).encode() + b"\n")
        stream.write(b'{"sample": "case_0001", "comment": "caf\xc3')  # killed mid-character
    reopened = review.ReviewSession(str(qc))
    assert reopened.progress == (1, 2)
    rows = list(csv.DictReader(reopened.exportSummary().read_text(encoding="utf-8").splitlines()))
    assert [(r["structure"], r["reviewed"], r["accept"]) for r in rows] == [("kidney_left", "0", "0"),
                                                                           ("liver", "1", "1")]
    reopened.decide(review.REJECT)
    assert review.ReviewSession(str(qc)).progress == (2, 2)


# ----------------------------------------------------------------------------- 9. errors, not tracebacks


def _nifti_header_only(path: Path, shape, dtype=np.float32) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    with open(path, "wb") as stream:
        header.write_to(stream)
        stream.write(b"\0" * 64)
    return path


def test_a_header_declaring_terabytes_gets_a_memory_message(tmp_path, capsys):
    path = _nifti_header_only(tmp_path / "huge.nii", (30000, 30000, 30000))
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"not enough memory to read {path} (declared size 108.0 TB" in err and "Traceback" not in err


def test_an_allocation_failure_is_one_line(tmp_path, capsys, monkeypatch, samples):
    def no_memory(path):
        raise MemoryError()

    monkeypatch.setattr(readers, "_read_nifti", no_memory)
    assert main(["info", str(samples / MR)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("swinbob info: error: not enough memory") and len(err.splitlines()) == 1


def test_permission_errors_are_one_line(tmp_path, capsys, monkeypatch, samples):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.nrrd"))

    monkeypatch.setattr(writers, "_write_itk", denied)
    assert main(["convert", str(samples / MR), str(tmp_path / "out.nrrd")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"swinbob convert: error: {tmp_path / 'out.nrrd'}: permission denied"


def test_unwritable_output_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    missing = tmp_path / "no-such-model.pt"
    assert segment(scan, "-o", tmp_path / "file" / "out", checkpoint=missing) == 1
    err = capsys.readouterr().err
    assert "cannot be made there" in err and "no-such-model" not in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert segment(scan, "-o", locked / "out", checkpoint=missing) == 1
        assert "cannot write the output folder" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--spacing", "0.001", "between 0.1 and 30 mm"), ("--spacing", "-2", "between 0.1 and 30 mm"),
    ("--spacing", "1,x,2", "expected one number"), ("--roi-size", "100000", "--roi-size 100000: a sliding window"),
])
def test_requests_for_terabytes_are_refused_with_the_value(option, value, message, checkpoint, tmp_path, capsys):
    scan = io.save_image(body(), tmp_path / "scan.nii.gz")
    args = ["segment", str(scan), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--device", "cpu",
            option, value]
    assert main(args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_header_claiming_1000_mm_voxels_is_refused_before_resampling(tmp_path, capsys):
    path = tmp_path / "km.nii.gz"
    io.save_image(io.Image(body().array, np.diag([1000.0, 1000.0, 1000.0, 1.0])), path)
    ckpt = tmp_path / "spaced.pt"
    save_checkpoint(ckpt, build_model(feature_size=12, in_channels=1),
                    CheckpointMetadata(feature_size=12, roi_size=32, contrasts=("in_phase",), target_spacing_mm=(1.5,) * 3))
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt), "--device", "cpu",
                 "--contrast", "0"]) == 1
    err = capsys.readouterr().err
    assert "(1000, 1000, 1000) mm voxels to (1.5, 1.5, 1.5) mm" in err and "check the header" in err


def test_output_piped_into_head_ends_quietly():
    result = subprocess.run(f"'{sys.executable}' -m SwinBOBLib labels total | head -n 1", shell=True, cwd=REPO,
                            capture_output=True, text=True)
    assert result.stdout.startswith("1\t") and result.stderr == ""


# ----------------------------------------------------------------------------- 10. messages that mislead


def test_tiny_spacing_is_named_not_called_a_zero_axis(tmp_path):
    image = io.Image(np.zeros((4, 4, 4), np.float32), np.diag([3.0, 3.0, 1e-6, 1.0]))
    with pytest.raises(io.ImageFormatError) as error:
        io.save_image(image, tmp_path / "tiny.nii.gz")
    assert "(3, 3, 1e-06) mm is below 0.001 mm" in str(error.value)
    assert "zero axis" not in str(error.value) and "np.float64" not in str(error.value)


def test_bad_segment_metadata_names_file_and_key(tmp_path, samples):
    import SimpleITK as sitk

    path = io.save_image(io.load_image(samples / "example_seg_mr.nii.gz"), tmp_path / "seg.seg.nrrd", scheme="total_mr")
    img = sitk.ReadImage(str(path))
    img.SetMetaData("Segment0_LabelValue", "seven")
    sitk.WriteImage(img, str(path))
    with pytest.raises(io.ImageFormatError, match=r"seg\.seg\.nrrd: header field 'Segment0_LabelValue' is 'seven', "
                                                  "expected an integer"):
        io.load_image(path)


@pytest.mark.parametrize("labels, message", [
    ({"zero": "background", "1": "spleen"}, "key 'zero' of 'labels' is not an integer"),
    ({}, "names no structure"), ([1, 2], "'labels' must be an object"),
])
def test_bad_dataset_labels_tables_are_named(labels, message, tmp_path):
    from SwinBOBLib.io.datasets import DatasetError, load_dataset

    io.save_image(body(), tmp_path / "a.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "training": [
        {"image": "a.nii.gz", "label": "a.nii.gz"}]}), encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_grid_difference_says_what_differs():
    image = io.Image(np.zeros((48, 40, 96)), np.diag([1.5, 1.5, 3.0, 1.0]))
    shifted = io.Image(image.array, image.affine.copy())
    shifted.affine[0, 3] = 50.0
    assert io.grid_difference(image, shifted) == "origin (0, 0, 0) vs (50, 0, 0) mm"
    finer = io.Image(image.array, np.diag([1.0, 1.5, 3.0, 1.0]))
    assert io.grid_difference(image, finer) == "spacing (1.5, 1.5, 3) vs (1, 1.5, 3) mm"
    flipped = io.Image(image.array, np.diag([-1.5, 1.5, 3.0, 1.0]))
    assert "direction RAS vs LAS" in io.grid_difference(image, flipped)
    assert io.grid_difference(image, image) is None


def test_solf_run_fails_when_no_sample_can_be_read(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (cohort / name).write_bytes(b"\x1f\x8b broken")
    assert main(["solf", "run", str(cohort), "-o", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 1
    assert "none of the 2 samples could be read" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 11. permissions


def test_outputs_get_the_umask_permissions(checkpoint, tmp_path):
    previous = os.umask(0o022)
    try:
        scan = io.save_image(body(), tmp_path / "scan.nii.gz")
        out = tmp_path / "out"
        assert segment(scan, "-o", out, checkpoint=checkpoint) == 0
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
        assert modes == {"out": 0o755, "labels.nii.gz": 0o644, "entropy.nii.gz": 0o644, "organs.csv": 0o644,
                         "report.json": 0o644}
        series = io.save_image(body(), tmp_path / "series")
        assert stat.S_IMODE(series.stat().st_mode) == 0o755
        os.umask(0o077)
        private = io.write_text_atomic(tmp_path / "private.txt", "x")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(previous)


# ----------------------------------------------------------------------------- 13. --structures and SOLF


@pytest.mark.parametrize("names, expected", [
    ("kidneys", [2, 3]), ("kidney", [2, 3]), ("lungs", [10, 11, 12, 13, 14]), ("left lung", [10, 11]),
    ("adrenal glands", [8, 9]), ("gluteus maximus", [53, 54]), ("femurs", [48, 49]),
    ("muscle", [53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 66]), ("liver, Kidney L", [3, 5]),
])
def test_structures_resolve_as_a_user_means(names, expected):
    from SwinBOBLib.labels import get_scheme

    assert get_scheme("ukbob").select(names) == expected


def test_every_unknown_structure_is_named_at_once():
    from SwinBOBLib.labels import UnknownStructureError, get_scheme

    with pytest.raises(UnknownStructureError, match=r"2 unknown names: unknown structure 'kidnee'.*\| unknown "
                                                    r"structure 'spleeen'"):
        get_scheme("ukbob").select("liver,kidnee,spleeen")


def test_solf_features_of_a_subset_use_the_whole_prediction_as_body(samples):
    from SwinBOBLib import labels
    from SwinBOBLib.outputs.organs import organ_rows

    source = io.load_labelmap(samples / "example_seg_mr.nii.gz", scheme="total_mr")
    whole = labels.remap(source.array, "total_mr", "ukbob")
    entropy = np.zeros(whole.shape, np.float32)
    full = {r["index"]: r for r in organ_rows(whole, entropy, source.spacing)}
    subset = np.where(whole == 5, whole, 0)
    alone = organ_rows(subset, entropy, source.spacing, structures=[5])[0]
    assert alone["normalized_volume"] == pytest.approx(1.0), "the bug: the liver alone is its own body"
    fixed = organ_rows(subset, entropy, source.spacing, structures=[5], whole_labels=whole)[0]
    assert fixed["normalized_volume"] == full[5]["normalized_volume"] < 0.5
    assert fixed["sphericity"] == full[5]["sphericity"]


# ----------------------------------------------------------------------------- 14-15. remap, labels, convert


def test_remap_reports_what_the_target_cannot_hold(samples, tmp_path, capsys):
    source = io.load_image(samples / "example_seg_mr.nii.gz")
    assert main(["remap", str(samples / "example_seg_mr.nii.gz"), str(tmp_path / "u.nii.gz"), "--from", "total_mr"]) == 0
    err = capsys.readouterr().err
    from SwinBOBLib.labels import get_scheme

    scheme = get_scheme("total_mr")
    for index in (11, 19):  # a whole lung (UKBOB has lobes), all vertebrae in one label (UKBOB: two parts)
        count = int(np.count_nonzero(source.array == index))
        assert count and f"{scheme[index].name} ({count} voxels)" in err
    assert "2 structure(s) of 'total_mr' have no place in 'ukbob'" in err, "absent ones are not listed"


def test_labels_to_lists_lost_structures_and_find_reports_every_unknown(capsys):
    assert main(["labels", "total_mr", "--to", "ukbob"]) == 0
    out = capsys.readouterr().out
    assert "50\tbrain\t0\t-\tlost" in out and "10\tlung_left\t0\t-\tlost" in out
    assert main(["labels", "ukbob", "--find", "left lung", "kidnee", "kidneys", "spleeen"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["10\tlung_upper_lobe_left\tLeft upper lung lobe",
                                         "11\tlung_lower_lobe_left\tLeft lower lung lobe",
                                         "2\tkidney_right\tRight kidney", "3\tkidney_left\tLeft kidney"]
    assert "'kidnee'" in captured.err and "'spleeen'" in captured.err


def test_labels_options_without_a_scheme_are_an_error(tmp_path, capsys):
    assert main(["labels", "--ctbl", str(tmp_path / "x.ctbl")]) == 1
    assert "--ctbl needs a SCHEME" in capsys.readouterr().err
    assert not (tmp_path / "x.ctbl").exists()


@pytest.mark.parametrize("name", ["out.png", "out.txt", "out.dcm"])
def test_convert_refuses_unknown_suffixes(name, samples, tmp_path, capsys):
    assert main(["convert", str(samples / MR), str(tmp_path / name)]) == 1
    assert f"{tmp_path / name}: unknown image format" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_convert_to_a_numbered_dicom_folder_still_works(samples, tmp_path):
    assert main(["convert", str(samples / MR), str(tmp_path / "1.2.840.99")]) == 0
    assert io.load_image(tmp_path / "1.2.840.99").spatial_shape == io.load_image(samples / MR).spatial_shape


def test_write_errors_name_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    import SimpleITK as sitk

    def broken(image, path, useCompression=True):
        raise RuntimeError(f"ITK ERROR: could not write {path}")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(OSError) as error:
        io.save_image(body(), tmp_path / "out.nrrd")
    assert str(error.value).startswith(f"{tmp_path / 'out.nrrd'}: cannot write the image")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 16. console


def test_batch_console_warns_once_counts_tta_passes(checkpoint, tmp_path, capsys):
    for i in range(2):
        io.save_image(body(seed=i), tmp_path / "scans" / f"c{i}.nii.gz")
    code = main(["segment", str(tmp_path / "scans"), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
                 "--device", "cpu", "--roi-size", "32", "--no-preview", "--quiet", "--tta", "--tta-flips", "4",
                 "--structures", "kidneys,muscle"])
    captured = capsys.readouterr()
    assert code == 0
    warnings_shown = [line for line in captured.err.splitlines() if "channels are unnamed" in line]
    assert len(warnings_shown) == 1 and "--contrast" in warnings_shown[0]
    assert captured.out.count("1 windows x 4 flips = 4 passes") == 2
    for i in range(2):
        report = json.loads((tmp_path / "out" / f"c{i}" / "report.json").read_text(encoding="utf-8"))
        assert report["inference"]["structures"] == [2, 3, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 66]
        assert any("channels are unnamed" in w for w in report["warnings"])


@pytest.mark.parametrize("command, option, text", [
    ("segment", "--tta-flips", "(default 8)"), ("segment", "--etta-lr", "learning rate"),
    ("segment", "--etta-steps", "(default"), ("segment", "--spacing", "mm"),
    ("benchmark", "--tta-flips", "(default 8)"), ("benchmark", "--etta-lr", "(default"),
    ("train", "--lr", "default 1e-4"), ("train", "--val-every", "every N epochs (default 1)"),
    ("train", "--checkpoint-every", "N optimisation steps (default 100"),
])
def test_option_help_gives_units_and_defaults(command, option, text, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    after = help_text.rsplit(f"{option} ", 1)[1]  # the option list, not the usage line
    assert text in after[:200]


def test_solf_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["solf", "--help"])
    out = capsys.readouterr().out
    assert "No computing lives here" not in out and "organ label filter" in out


def test_validation_dice_is_shown_during_training(tmp_path, capsys):
    from SwinBOBLib import training

    data = small_dataset(tmp_path / "data", 2)
    config = {"feature_size": 12, "roi_size": 32, "batch_size": 1, "crops_per_volume": 1, "device": "cpu",
              "split": [0.5, 0.5, 0.0], "progress": True, "epochs": 1, "max_steps": 1}
    training.train(config, data, tmp_path / "run")
    assert "epoch 1/1: validation Dice " in capsys.readouterr().err


def test_a_negative_target_spacing_is_refused_not_made_positive():
    from SwinBOBLib.inference import InferenceConfig, effective_spacing

    with pytest.raises(ValueError, match=r"target spacing \(-2.0, 2.0, 2.0\) mm must be three finite"):
        effective_spacing(None, InferenceConfig(target_spacing_mm=(-2.0, 2.0, 2.0)), (1.0, 1.0, 1.0))
    assert effective_spacing((1.5, 1.5, 1.5), InferenceConfig(), (1.0, 1.0, 1.0)) == (1.5, 1.5, 1.5)
