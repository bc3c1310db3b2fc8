"""Shared fixtures (paths of the real sample data in Testing/Data) and the ``own_process`` marker.

Tests that build Qt widgets (PySide6) keep Qt's process-wide state (one QApplication, its
platform plugin, registered classes) away from slicer-core's VTK and from whatever ran before
them. (The segmentation fault that once depended on test order was a placeholder widget class
collected before Qt's .ui loader used it; ``slicer_harness.load_ui`` keeps them alive.) A test
module marked ``pytestmark = pytest.mark.own_process`` runs in a child pytest of its own, one per
module, and this process reports each test's outcome from the child's JUnit XML: any subset, any
order, ``-k`` and ``pytest-randomly`` work as usual.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Testing" / "Data" / "totalsegmentator-samples"
#: Set in a child pytest started for ``own_process`` tests (they then run in it as usual).
CHILD_ENV = "SWINBOB_TEST_CHILD"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def load_script():
    """``load_script("scripts/x.py")``: a script of the repository (not a package module) imported by path."""
    def load(relative: str):
        path = REPO / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def samples() -> Path:
    """Folder of the real TotalSegmentator sample scans and label maps."""
    assert SAMPLES.is_dir(), f"missing test data folder {SAMPLES}"
    return SAMPLES


@pytest.fixture(scope="module")
def core():
    """A slicer-core application with a scene and three slice views (slicer_harness); closed after
    the module. Only for test modules that import slicer (they skip without slicer-core)."""
    import slicer_harness

    core = slicer_harness.start_slicer_core()
    yield core
    core.close()


# ----------------------------------------------------------------------------- own_process


def pytest_configure(config):
    config.addinivalue_line("markers", "own_process: run this test module's tests in a child pytest of "
                            "their own (Qt widgets, kept apart from slicer-core's VTK)")


@pytest.hookimpl(trylast=True)  # after -k/-m deselection and any reordering
def pytest_collection_modifyitems(session, config, items):
    if os.environ.get(CHILD_ENV):
        return
    for index, item in enumerate(items):
        if item.get_closest_marker("own_process") and not isinstance(item, ChildProcessItem):
            child = ChildProcessItem.from_parent(item.parent, name=item.name, target=item.nodeid)
            child.own_markers.extend(item.own_markers)
            items[index] = child


class ChildProcessFailure(Exception):
    """What the child pytest reported for a test that failed there."""


class ChildProcessItem(pytest.Item):
    """A test of an ``own_process`` module, run with the module's other selected tests in one child."""

    _outcomes: dict = {}  # module path -> {test name: (outcome, message)}

    def __init__(self, *, target: str, **kwargs):
        super().__init__(**kwargs)
        self.target = target

    def runtest(self) -> None:
        outcomes = self._outcomes.get(self.path)
        if outcomes is None:
            outcomes = self._outcomes[self.path] = self._run_module()
        outcome, message = outcomes.get(self.name, ("failed", "the child pytest did not report this test"))
        if outcome == "skipped":
            pytest.skip(message)
        if outcome != "passed":
            raise ChildProcessFailure(message)

    def _run_module(self) -> dict:
        """Runs every selected test of this module in one child pytest; ``{name: (outcome, message)}``."""
        targets = [item.target for item in self.session.items
                   if isinstance(item, ChildProcessItem) and item.path == self.path]
        with tempfile.TemporaryDirectory(prefix="swinbob-child-") as folder:
            report = Path(folder) / "junit.xml"
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                       f"--junitxml={report}", "--rootdir", str(self.config.rootpath), *targets]
            done = subprocess.run(command, cwd=self.config.rootpath, capture_output=True, text=True,
                                  env={**os.environ, CHILD_ENV: "1"}, timeout=900)
            if not report.is_file():
                return {name: ("failed", f"child pytest exited {done.returncode} without a report:\n"
                                         f"{done.stdout[-4000:]}{done.stderr[-4000:]}")
                        for name in (t.split("::")[-1] for t in targets)}
            return _junit_outcomes(report, done)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ChildProcessFailure):
            return f"in a child pytest ({self.target}):\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"{self.name} (own process)"


def _junit_outcomes(report: Path, done: subprocess.CompletedProcess) -> dict:
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        problem = next((child for child in case if child.tag in ("failure", "error")), None)
        skipped = case.find("skipped")
        if problem is not None:
            outcomes[case.get("name")] = ("failed", (problem.text or problem.get("message") or "")[-6000:])
        elif skipped is not None:
            outcomes[case.get("name")] = ("skipped", skipped.get("message") or "skipped in the child")
        else:
            outcomes[case.get("name")] = ("passed", "")
    if done.returncode not in (0, 1, 5) and not outcomes:  # crashed before reporting any test
        return {}
    return outcomes
