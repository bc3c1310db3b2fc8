"""The web review (``swinbob review OUT``, package SwinBOBWeb) driven for real: a phantom cohort with
planted corruptions -> ``swinbob solf run`` -> the server started as a user starts it -> Debian's
Chromium, headless, driven by Playwright (no downloaded browser). One server for the module."""

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="the web review needs the web extra: pip install -e '.[web]'")
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[web]' (playwright)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is missing: apt-get install chromium", allow_module_level=True)

from PIL import Image as PILImage  # noqa: E402
from SwinBOBModule import review  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"SwinBOB review ready at (http://\S+)")
BROKEN_SAMPLE = "case_0003"


# ----------------------------------------------------------------------------- the review folder


def _entropy(labels: np.ndarray) -> np.ndarray:
    """A normalised entropy map (0-1) high along label boundaries, as a model's is."""
    from scipy import ndimage

    boundary = np.zeros(labels.shape, bool)
    for axis in range(3):
        boundary |= np.diff(labels, axis=axis, append=np.take(labels, [-1], axis=axis)) != 0
    return np.clip(ndimage.gaussian_filter(boundary.astype(np.float32), 1.0) * 2.5, 0, 1).astype(np.float32)


def build_review_folder(root: Path) -> Path:
    """Cases laid out as ``swinbob segment`` writes them (labels, entropy beside the image), a
    ``solf run`` over them, and one sample's scan broken afterwards."""
    from SwinBOBLib import io as swinbob_io
    from SwinBOBLib.phantom import write_cohort

    write_cohort(root / "cohort", n=4, size="tiny", seed=0, corrupt=True, corrupt_fraction=0.5)
    rows = []
    for labelmap in sorted((root / "cohort" / "labelsTr").glob("*.nii.gz")):
        case = labelmap.name[:-len(".nii.gz")]
        folder = root / "cases" / case
        folder.mkdir(parents=True)
        shutil.copy(labelmap, folder / "labels.nii.gz")
        shutil.copy(root / "cohort" / "imagesTr" / labelmap.name, folder / "image.nii.gz")
        labels = swinbob_io.load_labelmap(labelmap)
        swinbob_io.save_image(swinbob_io.Image(_entropy(labels.array), labels.affine), folder / "entropy.nii.gz")
        rows.append({"id": case, "labelmap": folder / "labels.nii.gz", "image": folder / "image.nii.gz"})
    with open(root / "cohort.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["id", "labelmap", "image"])
        writer.writeheader()
        writer.writerows(rows)
    subprocess.run([sys.executable, "-m", "SwinBOBLib", "solf", "run", str(root / "cohort.csv"), "-o",
                    str(root / "review")], check=True, capture_output=True)
    (root / "cases" / BROKEN_SAMPLE / "image.nii.gz").write_bytes(b"not a NIfTI file")
    return root / "review"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, *args, env=None):
    """``swinbob review FOLDER ...`` in its own process; returns (process, url) once it is ready."""
    process = subprocess.Popen([sys.executable, "-m", "SwinBOBLib", "review", str(folder), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := READY.search(line):
            return process, match.group(1)
    process.kill()
    raise AssertionError(f"the server did not say it was ready:\n{''.join(lines)}")


def stop_server(process) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        rest, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, rest


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = build_review_folder(tmp_path_factory.mktemp("web-review"))
    process, url = start_server(folder, "--host", "127.0.0.1", "--port", str(free_port()))
    yield folder, url
    code, rest = stop_server(process)
    assert code == 0 and "stopped" in rest, (code, rest)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, url: str, reviewer: str):
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    page = context.new_page()
    # A 2-core CI machine running the whole suite renders slowly: every wait is generous; none of
    # the tests below passes by waiting, each waits for what must appear.
    page.set_default_timeout(90_000)
    page.goto(url)
    page.get_by_role("button", name="Accept").wait_for()
    field = page.get_by_label("Reviewer")
    field.fill(reviewer)
    field.blur()
    # The queue position is shared by everyone connected: start each test on the first item
    # (a sample whose files are fine), wherever the last test left it.
    first = page.locator("tr.swb-row").first
    sample = first.locator("td").nth(1).inner_text()
    first.click()
    wait_for(lambda: page.locator("#swb-current").inner_text().startswith(sample) and
             not page.get_by_role("alert").filter(has_text="cannot be shown").count(), "the first item")
    return context, page


def view_pixels(page, index: int = 0) -> np.ndarray:
    picture = page.locator("#swb-views img").nth(index).screenshot()
    return np.asarray(PILImage.open(io.BytesIO(picture)).convert("L"), dtype=np.float64)


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def settled_title(page, quiet: float = 1.5) -> str:
    """The current item's title once it has stayed the same for ``quiet`` seconds (the shared queue
    may still be moving from an earlier test's last key press when a page opens)."""
    title, since = page.locator("#swb-current").inner_text(), time.monotonic()
    deadline = since + 30.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = page.locator("#swb-current").inner_text()
        if now != title:
            title, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return title
    raise AssertionError("the current item kept changing")


def log_records(folder: Path) -> list[dict]:
    path = folder / "qc_list.review.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_scan(page, index: int = 0) -> np.ndarray:
    """The slice view once it shows the scan: its pixels are not uniform."""
    return wait_for(lambda: (lambda p: p if p.std() > 5 else None)(view_pixels(page, index)),
                    "the slice view to show the scan")


# ----------------------------------------------------------------------------- the tests


def test_views_show_the_scan_and_the_keyboard_steps_on(served, browser):
    _folder, url = served
    context, page = open_page(browser, url, "kim")
    try:
        for index in (0, 2, 3):  # coronal, sagittal, axial (the 3D view is the second)
            wait_for_scan(page, index)
        before = page.locator("#swb-current").inner_text()
        page.locator("body").click(position={"x": 5, "y": 5})  # focus out of the reviewer field
        page.keyboard.press("n")
        wait_for(lambda: page.locator("#swb-current").inner_text() != before, "the next item after 'n'")
        page.keyboard.press("p")
        wait_for(lambda: page.locator("#swb-current").inner_text() == before, "the previous item after 'p'")
    finally:
        context.close()


def test_a_decision_lands_in_the_log_the_slicer_module_reads(served, browser, core):
    folder, url = served
    context, page = open_page(browser, url, "alice")
    try:
        wait_for_scan(page)
        title = settled_title(page)
        page.get_by_role("button", name="Reject").click()
        record = wait_for(lambda: next((r for r in log_records(folder) if r["reviewer"] == "alice"), None),
                          "alice's decision in the log")
    finally:
        context.close()
    assert record["decision"] == "reject" and title.startswith(record["sample"]) and record["structure"] in title
    session = review.ReviewSession(str(folder / "qc_list.json"))  # what the Slicer panel opens
    assert session.decisions[(record["sample"], record["label"])]["reviewer"] == "alice"
    from SwinBOBModule import samples

    item = next(i for i in session.items if i.key == (record["sample"], record["label"]))
    volume, segmentation = samples.loadSampleNodes(core.scene, item)  # the panel's loading, on slicer-core
    assert samples.centreOnItem(core.scene, segmentation, item.label) is not None and volume is not None


def test_a_painted_correction_is_saved_with_its_agreement(served, browser):
    folder, url = served
    context, page = open_page(browser, url, "dora")
    try:
        wait_for_scan(page, 3)
        title = page.locator("#swb-current").inner_text()
        sample = title.split(" ")[0]
        page.get_by_role("button", name="Paint").click()
        page.wait_for_timeout(1000)
        box = page.locator("#swb-views img").nth(3).bounding_box()  # the axial view, centred on the structure
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 40, y)
        page.mouse.down()
        for step in range(1, 17):
            page.mouse.move(x - 40 + 5 * step, y + 2 * step, steps=2)
        page.mouse.up()
        page.wait_for_timeout(1500)
        page.get_by_role("button", name="Save correction").click()
        wait_for(lambda: "Saved" in page.locator("#swb-saved").inner_text(), "the saved message")
    finally:
        context.close()
    dataset = folder / "ukbob_manual"
    assert (dataset / "labelsTr" / f"{sample}.nii.gz").is_file()
    with open(dataset / "agreement.csv", newline="") as stream:
        rows = [r for r in csv.DictReader(stream) if r["case"] == sample]
    changed = [r for r in rows if r["voxels_automatic"] != r["voxels_corrected"]]
    assert changed, f"painting changed no structure of {sample}: {rows[:3]}"
    assert all(float(r["dice"]) < 1 for r in changed) and rows[0]["reviewer"] == "dora"
    provenance = json.loads((dataset / "provenance" / f"{sample}.json").read_text())
    assert provenance["source_label"].endswith("labels.nii.gz")  # the automatic label, untouched
    assert any(r["reviewer"] == "dora" and r["decision"] == "correct" for r in log_records(folder))


def test_the_entropy_overlay_toggles(served, browser):
    _folder, url = served
    context, page = open_page(browser, url, "eve")
    try:
        wait_for_scan(page, 3)
        page.wait_for_timeout(1000)
        shown = view_pixels(page, 3)
        page.get_by_role("button", name="Entropy").click()
        hidden = wait_for(lambda: (lambda p: p if np.abs(p - shown).mean() > 1 else None)(view_pixels(page, 3)),
                          "the view to change without the overlay")
        page.keyboard.press("e")
        wait_for(lambda: np.abs(view_pixels(page, 3) - hidden).mean() > 1, "the overlay back after 'e'")
    finally:
        context.close()


def pick_row(page, record: dict) -> None:
    """Click the queue row of a log record's item and wait until it is the page's current item."""
    row = page.locator("tr.swb-row", has_text=record["structure"]).filter(has_text=record["sample"]).first
    row.click()
    wait_for(lambda: record["structure"] in page.locator("#swb-current").inner_text(),
             f"{record['sample']} {record['structure']} current")


def test_two_browsers_deciding_at_once_lose_nothing(served, browser):
    folder, url = served
    (context_a, page_a), (context_b, page_b) = open_page(browser, url, "bob"), open_page(browser, url, "carol")
    try:
        for page in (page_a, page_b):
            wait_for_scan(page)
        for _ in range(3):  # both press at once, without waiting for the other's answer
            page_a.get_by_role("button", name="Accept").click(no_wait_after=True)
            page_b.get_by_role("button", name="Needs correction").click(no_wait_after=True)
        wait_for(lambda: sum(r["reviewer"] in ("bob", "carol") for r in log_records(folder)) >= 6,
                 "all six decisions in the log", timeout=30)
        records = [r for r in log_records(folder) if r["reviewer"] in ("bob", "carol")]
        assert sum(r["reviewer"] == "bob" and r["decision"] == "accept" for r in records) == 3
        assert sum(r["reviewer"] == "carol" and r["decision"] == "correct" for r in records) == 3
        # carol decides an item whose latest decision is bob's: she is told. In the burst above carol may
        # have decided bob's items after him, so bob decides one again first and it is his for certain.
        decided = next(r for r in records if r["reviewer"] == "bob")
        pick_row(page_a, decided)
        page_a.get_by_role("button", name="Accept").click()
        wait_for(lambda: len([r for r in log_records(folder) if r["reviewer"] in ("bob", "carol")]) >= 7,
                 "bob's second decision in the log", timeout=30)
        pick_row(page_b, decided)
        page_b.get_by_role("button", name="Reject").click()
        notice = page_b.locator("#swb-notice")
        wait_for(lambda: notice.count() > 0 and "bob decided" in notice.inner_text(), "the notice to carol")
    finally:
        context_a.close()
        context_b.close()


def test_a_broken_sample_shows_a_message(served, browser):
    _folder, url = served
    context, page = open_page(browser, url, "fay")
    try:
        page.locator("tr.swb-row", has_text=BROKEN_SAMPLE).first.click()
        alert = page.get_by_role("alert").filter(has_text="cannot be shown")
        alert.wait_for(timeout=30000)
        assert BROKEN_SAMPLE in alert.inner_text()
    finally:
        context.close()


def _status(url: str, headers=None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_paths_outside_the_folder_are_refused(served):
    folder, url = served
    assert _status(url + "review-files/qc_list.json") == 200
    for name in ("..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..%2Fcases%2Fcase_0000%2Flabels.nii.gz"):
        assert _status(url + "review-files/" + name) in (403, 404), name
    (folder / "link").symlink_to("/etc/passwd")
    assert _status(url + "review-files/link") == 403


def test_another_address_needs_the_token(tmp_path):
    (tmp_path / "qc_list.json").write_text("[]")
    process, url = start_server(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()), env={"SWINBOB_REVIEW_TOKEN": ""})
    try:
        token = re.search(r"token=(\S+)", url).group(1)
        base = url.split("?")[0].replace("0.0.0.0", "127.0.0.1")
        assert _status(base) == 403
        assert _status(base + "?token=wrong-token-wrong-token") == 403
        assert _status(base + "review-files/qc_list.json", {"X-SwinBOB-Token": "nope"}) == 403
        assert _status(base + f"?token={token}") == 200
        assert _status(base + "review-files/qc_list.json", {"X-SwinBOB-Token": token}) == 200
    finally:
        code, rest = stop_server(process)
    assert code == 0 and "stopped" in rest


def test_a_folder_without_a_qc_list_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "SwinBOBLib", "review", str(tmp_path), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "qc_list.json" in done.stderr
