"""A result rendered through Slicer's slice pipeline (vtkMRMLSliceLogic, offscreen, no OpenGL):
scan + entropy overlay + label layer, written as PNG into a temporary folder only. The docs picture
(docs/slicer_render.png) is refreshed by `make docs-pictures`, never by the tests."""

import hashlib

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402
from SwinBOBModule import rendering  # noqa: E402

DOCS_PICTURE = slicer_harness.REPO / "docs" / "slicer_render.png"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def rendered(samples, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    docs_before = _digest(DOCS_PICTURE)
    core = slicer_harness.start_slicer_core()
    try:
        yield {**slicer_harness.render_result_views(core, tmp), "tmp": tmp, "docs_before": docs_before}
    finally:
        rendering.releaseSnapshotView(core.scene)
        core.close()


def test_layers_change_the_picture(rendered):
    for orientation, layers in rendered["views"].items():
        scan, entropy, everything = layers["scan"], layers["entropy"], layers["all"]
        assert scan.shape == (360, 360, 4) and scan.dtype == np.uint8
        assert scan[..., :3].std() > 10, f"{orientation}: blank background"
        assert np.abs(entropy.astype(int) - scan).mean() > 1, f"{orientation}: entropy overlay not visible"
        assert np.abs(everything.astype(int) - entropy).mean() > 1, f"{orientation}: labels not visible"
    assert rendered["scene"].GetFirstNodeByName("SwinBOB snapshot labels") is None  # temporary label layer removed
    rendering.releaseSnapshotView(rendered["scene"])
    assert rendered["scene"].GetFirstNodeByName(rendering.SNAPSHOT_VIEW) is None


def test_axial_view_is_radiological(rendered):
    """Patient's right on the screen's left, anterior up: the MR sample's body (wider than deep)
    fills the image's width, and the axial slice is taken where the views were centred."""
    scan = rendered["views"]["Axial"]["scan"][..., :3].mean(axis=2)
    rows, cols = np.nonzero(scan > 20)
    assert np.ptp(cols) > np.ptp(rows)


def test_pngs_are_written_to_the_temporary_folder_only(rendered):
    tmp = rendered["tmp"]
    paths = [rendering.writePng(rendered["views"][o]["all"], tmp / f"slice_{o.lower()}.png")
             for o in slicer_harness.ORIENTATIONS]
    for path in [*paths, rendered["snapshot"]]:
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert tmp in path.parents
    figure = slicer_harness.render_figure(rendered, tmp / "slicer_render.png")
    assert figure.stat().st_size > 10_000
    assert _digest(DOCS_PICTURE) == rendered["docs_before"], "a test changed docs/slicer_render.png"
