"""QC review of SOLF's flagged samples (SwinBOB/SwinBOBModule/review.py) on a real QC list:
phantom cohort with planted corruptions -> ``swinbob solf run`` -> walk, decide, kill, resume."""

import csv
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402  (puts SwinBOB/ on sys.path)
from SwinBOBModule import review  # noqa: E402


@pytest.fixture(scope="module")
def qc_dir(tmp_path_factory):
    from SwinBOBLib.phantom import write_cohort

    root = tmp_path_factory.mktemp("review")
    write_cohort(root / "cohort", n=4, size="tiny", seed=0, corrupt=True, corrupt_fraction=0.5)
    subprocess.run([sys.executable, "-m", "SwinBOBLib", "solf", "run", str(root / "cohort"), "-o", str(root / "solf")],
                   check=True, capture_output=True, env=library_env())
    return root / "solf"


def library_env():
    from SwinBOBModule import jobs

    return jobs.libraryEnvironment()


@pytest.fixture
def qc_list(qc_dir, tmp_path):
    """A private copy of the QC list and its tables (each test writes its own decisions)."""
    for name in ("qc_list.json", "qc_list.csv", "bounds.json", "features.csv"):
        (tmp_path / name).write_bytes((qc_dir / name).read_bytes())
    return tmp_path / "qc_list.json"


def test_items_are_the_flagged_structures_of_the_qc_list(qc_list):
    entries = json.loads(qc_list.read_text())
    items = review.loadQcList(qc_list)
    expected = sum(1 for e in entries for f in e["flags"].values() if f["inaccurate"] or f["missing"])
    assert len(items) == expected > 0
    assert items[0].sample == entries[0]["id"]  # most severe sample first
    assert all(item.labelmap.endswith(".nii.gz") and item.image for item in items)
    assert all(item.kind == "missing" or len(item.out_of_range) >= 2 for item in items)
    # the CSV alone gives the same structures (without the features)
    csv_only = qc_list.parent / "only" / "qc_list.csv"
    csv_only.parent.mkdir()
    csv_only.write_bytes((qc_list.parent / "qc_list.csv").read_bytes())
    assert [i.key for i in review.loadQcList(csv_only)] == [i.key for i in items]


def _walk_and_die(qc_list, decisions: int) -> None:
    """Decide in a child process, then SIGKILL it: nothing may be lost."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(slicer_harness.MODULE_DIR)!r})
        from SwinBOBModule import review
        session = review.ReviewSession({str(qc_list)!r}, reviewer="child")
        for n in range({decisions}):
            session.decide(review.DECISIONS[n % 3], comment=f"n={{n}}")
        print("decided", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env=library_env())
    try:
        assert child.stdout.readline().strip() == "decided"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_decisions_survive_a_killed_process_and_the_list_resumes(qc_list):
    _walk_and_die(qc_list, 5)
    session = review.ReviewSession(str(qc_list), reviewer="me")
    done, total = session.progress
    assert done == 5 and total == len(session.items)
    assert session.progressText() == f"5 of {total} reviewed"
    assert session.position == 5 and session.state(session.current) == review.PENDING
    lines = [json.loads(line) for line in (qc_list.parent / "qc_list.review.jsonl").read_text().splitlines()]
    assert [l["decision"] for l in lines] == [review.DECISIONS[n % 3] for n in range(5)]
    assert {"reviewer", "time", "sample", "label", "structure", "decision", "comment"} <= set(lines[0])
    assert [(l["sample"], l["label"]) for l in lines] == [i.key for i in session.items[:5]]
    # a changed mind is one more line; the last one wins
    first = session.items[0]
    session.decide(review.REJECT, item=first)
    assert review.ReviewSession(str(qc_list)).state(first) == review.REJECT


def test_a_torn_last_line_is_skipped_and_the_next_decision_still_lands(qc_list):
    session = review.ReviewSession(str(qc_list), reviewer="me")
    session.decide(review.ACCEPT)
    with open(session.reviewPath, "a") as stream:
        stream.write('{"sample": "case_00')  # a crash mid-write
    reopened = review.ReviewSession(str(qc_list))
    assert reopened.progress[0] == 1
    reopened.decide(review.REJECT)
    assert review.ReviewSession(str(qc_list)).progress[0] == 2


def test_filter_sort_and_step(qc_list):
    session = review.ReviewSession(str(qc_list), reviewer="me")
    structure = session.items[0].structure
    n = session.setFilter(structure=structure)
    assert n == sum(i.structure == structure for i in session.items) and session.current.structure == structure
    n = session.setFilter(feature="sphericity", sortBy="structure")
    names = [session.items[i].structure for i in session.view]
    assert n > 0 and names == sorted(names)
    assert all("sphericity" in session.items[i].out_of_range for i in session.view)
    session.setFilter()
    assert session.previous() is session.items[0]
    assert session.next() is session.items[1]
    session.decide(review.CORRECT)
    assert session.setFilter(state=review.CORRECT) == 1
    assert session.setFilter(state=review.PENDING) == len(session.items) - 1
    with pytest.raises(ValueError, match="decision must be one of"):
        session.decide("maybe")
    with pytest.raises(ValueError, match="sortBy"):
        session.setFilter(sortBy="colour")


def test_summary_csv_is_the_false_alarm_rate_per_structure(qc_list):
    session = review.ReviewSession(str(qc_list), reviewer="me")
    target = session.items[0].label
    picks = [i for i in session.items if i.label == target]
    for item, decision in zip(picks, [review.ACCEPT, review.REJECT]):
        session.decide(decision, item=item)
    path = session.exportSummary()
    rows = {int(r["label"]): r for r in csv.DictReader(open(path))}
    row = rows[target]
    assert int(row["flagged"]) == len(picks)
    assert int(row["reviewed"]) == min(2, len(picks))
    assert float(row["false_alarm_rate"]) == pytest.approx(1 / min(2, len(picks)))
    assert all(r["false_alarm_rate"] == "" for label, r in rows.items() if label != target)
    assert sum(int(r["flagged"]) for r in rows.values()) == len(session.items)


def test_feature_context_and_plot(qc_list, tmp_path):
    session = review.ReviewSession(str(qc_list))
    item = next(i for i in session.items if i.kind == "inaccurate")
    context = session.featureContext(item)
    assert set(context) == set(review.SOLF_FEATURES)
    for feature, entry in context.items():
        outside = not entry["low"] <= entry["value"] <= entry["high"]
        assert entry["out_of_range"] == (feature in item.out_of_range)
        if entry["out_of_range"]:
            assert outside
        assert entry["value"] in entry["cohort"] and len(entry["cohort"]) >= 2
    png = review.plotFeatureContext(context, tmp_path / "why.png", title=item.structure)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mean_entropy_of_a_structure():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 5
    entropy = np.full((4, 4, 4), 0.5, np.float32)
    entropy[0] = 0.1
    assert review.structureMeanEntropy(entropy, labels, 5) == pytest.approx(0.3)
    assert np.isnan(review.structureMeanEntropy(entropy, labels, 6))


def test_a_sample_loads_into_the_scene_and_the_views_jump_to_the_structure(qc_list):
    core = slicer_harness.start_slicer_core()
    try:
        session = review.ReviewSession(str(qc_list))
        item = next(i for i in session.items if i.kind == "inaccurate")
        steps = []
        volume, segmentation = review.loadSampleNodes(core.scene, item, progress=lambda d, t, text: steps.append(d))
        assert steps == [0, 1, 2, 3]
        centre = review.jumpToStructure(core.scene, segmentation, item.label)
        assert centre is not None
        for name in ("Red", "Yellow", "Green"):
            sliceNode = core.scene.GetSingletonNode(name, "vtkMRMLSliceNode")
            sliceToRas = np.array([[sliceNode.GetSliceToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
            normal, origin = sliceToRas[:3, 2], sliceToRas[:3, 3]
            assert abs(normal @ (centre - origin)) < 1e-3, name  # the structure's centre is on every plane
        assert segmentation.GetSegmentation().GetNumberOfSegments() > 10
        assert volume.GetImageData().GetDimensions() == tuple(review.swinbob_io.load_image(item.image).spatial_shape)
    finally:
        core.close()
