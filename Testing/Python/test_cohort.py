"""``swinbob cohort run``: a cohort of tiny phantoms and the real MR sample segmented with the tiny
model on a local process pool and on a real local Ray cluster; resuming after kill -9 of the
driver; a killed worker replaced; corrupt and bad scans in failures.csv; bad options refused."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SwinBOBLib import cli, io
from SwinBOBLib.inference.config import InferenceConfig
from SwinBOBLib.phantom import write_cohort
from SwinBOBLib.solf.tables import QC_COLUMNS
from SwinBOBLib.workflows import cohort_engines
from SwinBOBLib.workflows.cohort import CohortConfig, run_cohort
from SwinBOBLib.solf.cohort import Sample
from SwinBOBLib.workflows.cohort_scan import ScanSettings, ScanWorker, written_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny

REPO = Path(__file__).resolve().parents[2]
MR_SAMPLE = REPO / "Testing" / "Data" / "totalsegmentator-samples" / "example_mr_sm.nii.gz"
PER_SCAN = ("labels.nii.gz", "entropy.nii.gz", "organs.csv", "preview.png")
COHORT_TABLES = ("features.csv", "flags.csv", "bounds.json", "qc_list.json", "qc_list.csv")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny.checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Five small Dixon phantoms (24 x 20 x 32 voxels, 4 channels): one window of the tiny model."""
    folder = tmp_path_factory.mktemp("phantoms") / "dataset"
    write_cohort(folder, n=5, size=(24, 20, 32), seed=3)
    return folder / "imagesTr"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, phantoms) -> Path:
    """Three phantoms, the real MR sample, a corrupt file, a scan with NaN voxels and a 2D image."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in ("case_0000", "case_0001", "case_0002"):
        shutil.copy2(phantoms / f"{name}.nii.gz", folder / f"{name}.nii.gz")
    shutil.copy2(MR_SAMPLE, folder / "mr.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a NIfTI file")
    bad = tiny.body_array((24, 20, 32))
    bad[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(bad, np.diag([2.0, 2.0, 3.0, 1.0])), folder / "nan_voxels.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((20, 18), np.float32), np.eye(4)), folder / "flat.nii.gz")
    return folder


def cohort_args(inputs, out, checkpoint, *extra) -> list[str]:
    return ["cohort", "run", str(inputs), "-o", str(out), "--device", "cpu", "--checkpoint", str(checkpoint),
            "--quiet", "--no-plots", *extra]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, mixed, checkpoint):
    """The mixed cohort on the local pool with 2 workers, through the command line: (exit code, OUT)."""
    out = tmp_path_factory.mktemp("local") / "out"
    code = cli.main(cohort_args(mixed, out, checkpoint, "--workers", "2", "--engine", "local"))
    return code, out


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_outputs(a: Path, b: Path, ids) -> None:
    """Per-scan files byte-identical; cohort tables identical once each OUT's own path is taken out."""
    for case in ids:
        for name in PER_SCAN:
            if not (a / case / name).exists() and not (b / case / name).exists():
                continue  # no preview.png in either
            assert (a / case / name).read_bytes() == (b / case / name).read_bytes(), f"{case}/{name}"
    for name in COHORT_TABLES:
        text_a = (a / name).read_text(encoding="utf-8").replace(str(a.resolve()), "OUT")
        text_b = (b / name).read_text(encoding="utf-8").replace(str(b.resolve()), "OUT")
        assert text_a == text_b, name


def test_local_run_writes_the_interface(local_run):
    code, out = local_run
    assert code == 1  # three scans failed
    manifest = {r["id"]: r for r in read_rows(out / "manifest.csv")}
    assert set(manifest) == {"case_0000", "case_0001", "case_0002", "mr", "broken", "nan_voxels", "flat"}
    assert {r["status"] for r in manifest.values()} == {"done", "failed"}
    failures = {r["id"]: r["reason"] for r in read_rows(out / "failures.csv")}
    assert set(failures) == {"broken", "nan_voxels", "flat"}
    assert "broken.nii.gz" in failures["broken"] and "NaN" in failures["nan_voxels"] and "2D" in failures["flat"]
    for case in ("case_0000", "case_0001", "case_0002", "mr"):
        assert manifest[case]["status"] == "done"
        assert io.load_labelmap(out / case / "labels.nii.gz").array.shape[:3] == \
            io.load_image(manifest[case]["image"]).array.shape[:3]
    qc = json.loads((out / "qc_list.json").read_text(encoding="utf-8"))
    assert isinstance(qc, list) and qc, "the tiny model's labels are far from any cohort norm"
    assert set(qc[0]) == set(QC_COLUMNS) | {"flags"} and qc[0]["labelmap"].endswith("labels.nii.gz")
    flags = read_rows(out / "flags.csv")
    assert {"inaccurate", "missing", "check_components", "check_holes"} <= set(flags[0])
    report = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
    assert report["throughput"]["model_loads"] == 2 and report["workers"] == 2
    assert set(report["stages"]) == {"read", "preprocess", "model", "entropy", "features", "write"}
    assert report["model"]["name"] == "tiny" and report["model_sha256"] == manifest["mr"]["model_sha256"]


def test_rerun_redoes_nothing_finished_and_exits_0_once_all_succeed(local_run, mixed, checkpoint, tmp_path,
                                                                   phantoms):
    _, first = local_run
    inputs, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(mixed, inputs)  # copies keep the content, so nothing finished is redone
    shutil.copytree(first, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/labels.nii.gz")}
    assert cli.main(cohort_args(inputs, out, checkpoint, "--workers", "1")) == 1
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/labels.nii.gz")} == stamps
    runs = {r["id"]: r["run"] for r in read_rows(out / "manifest.csv")}
    assert runs["mr"] == runs["case_0000"] == "earlier" and runs["broken"] == "this"
    shutil.copy2(phantoms / "case_0003.nii.gz", inputs / "broken.nii.gz")  # repaired
    (inputs / "nan_voxels.nii.gz").unlink()
    (inputs / "flat.nii.gz").unlink()
    assert cli.main(cohort_args(inputs, out, checkpoint, "--workers", "1")) == 0
    assert read_rows(out / "failures.csv") == [] and (out / "failures.csv").read_text() .startswith("id,reason")
    assert {r["status"] for r in read_rows(out / "manifest.csv")} == {"done"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/labels.nii.gz") if p in stamps} == stamps


def test_changed_setting_redoes_and_says_so(local_run, mixed, checkpoint, tmp_path, capsys):
    _, first = local_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    listing = tmp_path / "one.csv"
    listing.write_text(f"id,image\ncase_0000,{mixed / 'case_0000.nii.gz'}\n", encoding="utf-8")
    bounds = first / "bounds.json"  # SOLF judges against another cohort's bounds: no scan redone for it
    assert cli.main(cohort_args(listing, out, checkpoint, "--seed", "1", "--bounds", str(bounds))) == 0
    assert "to do: 1 settings changed" in capsys.readouterr().err
    report = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["done_now"] == 1 and report["redone"] == {"settings changed": 1}
    assert report["solf"]["bounds"] == str(bounds)
    assert json.loads((out / "bounds.json").read_text())["labels"] == json.loads(bounds.read_text())["labels"]
    assert [r["id"] for r in read_rows(out / "manifest.csv")] == ["case_0000"]


def _workers_of_this_run() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("swinbob-cohort-")]


def test_killed_local_worker_is_replaced_and_its_scan_retried(phantoms, checkpoint, tmp_path):
    killed = []

    def kill_the_worker(record):  # the worker that sent this record has just been handed nothing yet
        if killed:
            return
        pid = int(record["worker"].rsplit(":", 1)[1])
        victim = next(p for p in _workers_of_this_run() if p.pid == pid)
        os.kill(pid, signal.SIGKILL)
        victim.join(10)
        killed.append(pid)

    config = CohortConfig(str(phantoms), str(tmp_path / "out"), workers=2, progress=False,
                          scan=ScanSettings(str(checkpoint), InferenceConfig(device="cpu"), preview=False))
    result = run_cohort(config, on_record=kill_the_worker)
    assert result.ok and result.done_now == 5 and killed
    records = [json.loads(line) for line in (tmp_path / "out" / "journal.jsonl").read_text().splitlines()]
    assert [r["attempt"] for r in records].count(2) == 1
    assert result.report["throughput"]["model_loads"] == 3  # two workers, one replacement


def test_kill_9_of_the_driver_then_rerun_finishes_without_redoing(phantoms, checkpoint, tmp_path):
    clean, out = tmp_path / "clean", tmp_path / "killed"
    fast = ("--workers", "2", "--no-preview")  # the same in all three runs: one torch thread per worker
    assert cli.main(cohort_args(phantoms, clean, checkpoint, *fast)) == 0
    command = [sys.executable, "-m", "SwinBOBLib", *cohort_args(phantoms, out, checkpoint, *fast)]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert driver.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    driver.kill()  # SIGKILL: no cleanup at all
    driver.wait()
    finished = {json.loads(line)["id"] for line in journal.read_text().splitlines()}
    assert 2 <= len(finished) < 5
    stamps = {case: (out / case / "labels.nii.gz").stat().st_mtime_ns for case in finished}
    time.sleep(1.5)  # the orphaned worker notices its driver is gone and exits
    assert cli.main(cohort_args(phantoms, out, checkpoint, *fast)) == 0
    runs = {r["id"]: r["run"] for r in read_rows(out / "manifest.csv")}
    assert {case for case, run in runs.items() if run == "earlier"} == finished
    assert {case: (out / case / "labels.nii.gz").stat().st_mtime_ns for case in finished} == stamps
    same_outputs(clean, out, runs)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install 'swinbob[distributed]' for the Ray engine")
    pytest.importorskip("ray.data", reason="pip install 'ray[data]' for the Ray engine")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _actors(pattern: str = "MapBatches(ScanWorker))") -> dict[int, str]:
    """Ray Data actors of this run by pid, with their process titles (``....submit`` while busy)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in title:
            found[int(entry.name)] = title
    return found


def _kill_a_busy_actor(stop: threading.Event, killed: list, seen: set) -> None:
    """Kill -9 the first actor seen segmenting a scan; note every actor that ever ran."""
    while not stop.is_set():
        actors = _actors()
        seen.update(actors)
        busy = [pid for pid, title in actors.items() if title.rstrip().endswith(".submit")]
        if busy and not killed:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])
        time.sleep(0.05)


def test_ray_engine_replaces_a_killed_actor_and_matches_local(ray_cluster, local_run, mixed, checkpoint, tmp_path):
    _, local_out = local_run
    out = tmp_path / "ray"
    stop, killed, seen = threading.Event(), [], set()
    killer = threading.Thread(target=_kill_a_busy_actor, args=(stop, killed, seen), daemon=True)
    killer.start()
    try:
        code = cli.main(cohort_args(mixed, out, checkpoint, "--workers", "2", "--engine", "ray"))
    finally:
        stop.set()
        killer.join()
    assert code == 1 and killed
    assert len(seen) >= 3, "two actors and the one that replaced the killed one"
    manifest = {r["id"]: r["status"] for r in read_rows(out / "manifest.csv")}
    assert manifest == {r["id"]: r["status"] for r in read_rows(local_out / "manifest.csv")}
    report = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
    assert report["engine"] == "ray" and report["workers"] == 2
    same_outputs(local_out, out, [case for case, status in manifest.items() if status == "done"])


def test_ray_tasks_of_several_scans_give_what_tasks_of_one_give(ray_cluster, local_run, mixed, checkpoint, tmp_path,
                                                                  monkeypatch):
    """A large cohort sends each Ray task several scans (fewer tasks for the driver to schedule):
    the same records, statuses and byte-identical outputs as one scan a task and the local pool."""
    _, local_out = local_run
    monkeypatch.setattr(cohort_engines, "scans_per_task", lambda scans, workers: 3)
    out = tmp_path / "ray3"
    assert cli.main(cohort_args(mixed, out, checkpoint, "--workers", "2", "--engine", "ray")) == 1
    manifest = {r["id"]: r["status"] for r in read_rows(out / "manifest.csv")}
    assert manifest == {r["id"]: r["status"] for r in read_rows(local_out / "manifest.csv")}
    same_outputs(local_out, out, [case for case, status in manifest.items() if status == "done"])


def test_scans_of_a_failed_ray_task_are_sent_again_one_a_task(monkeypatch):
    """A task of several scans that failed twice (a scan killed its worker) loses their records: they
    are segmented again one per task, so only the scan that fails alone is returned failed, and
    the engine asks for tasks of at most 8 scans, each worker getting eight or more."""
    tasks = [{"id": f"s{i}", "image": f"s{i}.nii.gz", "outdir": f"out/s{i}"} for i in range(7)]
    passes = []

    def pool(pool_tasks, settings, workers, gpus, per_task):
        passes.append(([t["id"] for t in pool_tasks], per_task))
        for task in pool_tasks:
            lost = {"s3", "s4", "s5"} if per_task > 1 else {"s4"}  # s4 kills whichever worker runs it
            if task["id"] not in lost:
                yield {"id": task["id"], "status": "done"}

    monkeypatch.setattr(cohort_engines, "_ray_pool_records", pool)
    monkeypatch.setattr(cohort_engines, "init_ray", lambda address: None)
    records = {r["id"]: r for r in cohort_engines.ray_records(tasks, ScanSettings(), 2, per_task=3)}
    assert passes == [([t["id"] for t in tasks], 3), (["s3", "s4", "s5"], 1)]
    assert {i for i, r in records.items() if r["status"] == "done"} == {f"s{i}" for i in range(7)} - {"s4"}
    assert records["s4"]["status"] == "failed" and records["s4"]["reason"] == cohort_engines.WORKER_DIED
    assert [cohort_engines.scans_per_task(n, 2) for n in (10, 31, 32, 60, 1000)] == [1, 1, 2, 3, 8]


@pytest.mark.parametrize("extra, message", [
    (("--workers", "0"), "--workers 0"),
    (("--engine", "spark"), "invalid choice"),
    (("--bounds", "no_such_bounds.json"), "no_such_bounds.json"),
    (("--epsilon", "150"), "epsilon"),
])
def test_bad_options_are_refused_before_any_work(extra, message, phantoms, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) if "spark" in extra else _nothing():
        code = cli.main(cohort_args(phantoms, tmp_path / "out", checkpoint, *extra))
        assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_bad_inputs_are_refused(phantoms, checkpoint, tmp_path, capsys):
    no_image = tmp_path / "list.csv"
    no_image.write_text("path\nx.nii.gz\n", encoding="utf-8")
    assert cli.main(cohort_args(no_image, tmp_path / "a", checkpoint)) == 1
    assert "'image' column" in capsys.readouterr().err
    own = tmp_path / "own.csv"
    own.write_text(f"id,image\nmanifest.csv,{phantoms / 'case_0000.nii.gz'}\n", encoding="utf-8")
    assert cli.main(cohort_args(own, tmp_path / "b", checkpoint)) == 1
    assert "manifest.csv" in capsys.readouterr().err
    foreign = tmp_path / "c"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    assert cli.main(cohort_args(phantoms, foreign, checkpoint)) == 1
    assert "notes.txt" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "mine"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_changed_checks_measure_the_features_again_and_keep_the_segmentation(local_run, mixed, checkpoint, tmp_path,
                                                                             capsys):
    _, first = local_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    listing = tmp_path / "one.csv"
    listing.write_text(f"id,image\ncase_0000,{mixed / 'case_0000.nii.gz'}\n", encoding="utf-8")
    written = {p.name: p.stat().st_mtime_ns for p in (out / "case_0000").iterdir()}
    assert cli.main(cohort_args(listing, out, checkpoint, "--checks", "all")) == 0
    assert "to do: 1 features settings changed (segmentation kept)" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "case_0000").iterdir()} == written  # not segmented again
    report = json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["done_now"] == 1 and report["stages"]["model"]["scans"] == 0
    assert report["stages"]["features"]["scans"] == 1
    record = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()][-1]
    assert record["features_only"] and any("image_inside" in f for f in record["features"].values())
    assert cli.main(cohort_args(listing, out, checkpoint, "--checks", "all")) == 0  # now nothing to do
    assert json.loads((out / "cohort_report.json").read_text(encoding="utf-8"))["counts"]["done_now"] == 0


@pytest.mark.parametrize("orientation", ["LPS", "RAS"])
def test_features_from_the_arrays_in_memory_are_those_the_written_files_give(orientation, checkpoint, tmp_path):
    """A scan's SOLF features come from the arrays `segment_file` just wrote, not read back: the
    same record, bit for bit, as measuring the written files (the features-only path), all checks."""
    image = tmp_path / f"mr_{orientation}.nii.gz"
    source = nib.load(MR_SAMPLE)
    if orientation == "RAS":
        source = nib.as_closest_canonical(source)
    nib.save(source, image)
    assert "".join(nib.aff2axcodes(nib.load(image).affine)) == orientation
    worker = ScanWorker(ScanSettings(config=InferenceConfig(device="cpu"), checkpoint=str(checkpoint), checks="all"))
    task = {"id": "mr", "image": str(image), "outdir": str(tmp_path / "out")}
    kept: dict = {}
    worker._segment_file(task, kept)
    sample = Sample("mr", str(tmp_path / "out" / "labels.nii.gz"), str(image), None,
                    str(tmp_path / "out" / "entropy.nii.gz"))
    arrays = written_arrays(kept, sample)
    assert set(arrays) == {"labels", "entropy", "pixels"}
    assert np.array_equal(arrays["labels"].affine, io.load_image(sample.labelmap).affine)
    in_memory = worker.segment(task)
    read_back = worker.segment({**task, "features_only": True, "input_sha256": in_memory["input_sha256"]})
    assert in_memory["status"] == read_back["status"] == "done"
    assert in_memory["features"] and in_memory["features"] == read_back["features"]
    assert any("image_inside" in f for f in in_memory["features"].values())  # the image checks ran
    elsewhere = Sample("mr", str(tmp_path / "other" / "labels.nii.gz"), str(image), None, None)
    assert written_arrays(kept, elsewhere) is None  # not the file it wrote: read it
