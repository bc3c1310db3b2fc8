"""Shared fixtures: paths of the real sample data in Testing/Data."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Testing" / "Data" / "totalsegmentator-samples"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


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
