"""A result rendered through Slicer's slice pipeline (vtkMRMLSliceLogic, offscreen, no OpenGL):
scan + entropy overlay + label layer, written as PNG; the docs picture is refreshed from it."""

import shutil

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

import slicer_harness  # noqa: E402
from SwinBOBModule import nodes, rendering, selftests  # noqa: E402
from SwinBOBModule.logic import SwinBOBLogic  # noqa: E402
from SwinBOBModule.parameters import SegmentationOptions  # noqa: E402

DOCS_PICTURE = slicer_harness.REPO / "docs" / "slicer_render.png"
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")


@pytest.fixture(scope="module")
def rendered(samples, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    core = slicer_harness.start_slicer_core()
    try:
        volume = slicer_harness.load_volume(core.scene, samples / "example_mr_sm.nii.gz", "example_mr_sm")
        checkpoint = selftests.make_tiny_checkpoint(tmp / "tiny.pt")
        result = SwinBOBLogic().segment(volume, SegmentationOptions(checkpointPath=checkpoint))
        rows = nodes.tableRows(result.tableNode)
        largest = max(rows, key=lambda r: r["volume_ml"])["name"]
        center = SwinBOBLogic().centreOnStructure(result.segmentationNode, largest)
        views = {}
        for orientation in ORIENTATIONS:
            views[orientation] = {
                layers: rendering.sliceImage(core.scene, volume, *args, orientation=orientation, size=(360, 360),
                                             center=center, applicationLogic=core.applicationLogic)
                for layers, args in (("scan", ()), ("entropy", (result.entropyNode,)),
                                     ("labels", (None, result.segmentationNode)),
                                     ("all", (result.entropyNode, result.segmentationNode)))}
        snapshot = SwinBOBLogic().snapshot(result, tmp / "snapshot_axial.png", "Axial", (256, 256))
        legend = rendering.colorLookup(result.entropyNode.GetDisplayNode().GetColorNode())
        window = result.entropyNode.GetDisplayNode()
        yield {"views": views, "tmp": tmp, "legend": legend,
               "window": (window.GetWindowLevelMin(), window.GetWindowLevelMax()),
               "summary": result.entropySummary(), "scene": core.scene,
               "snapshot": snapshot}
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


def test_png_written_and_docs_picture_refreshed(rendered):
    paths = [rendering.writePng(rendered["views"][o]["all"], rendered["tmp"] / f"slice_{o.lower()}.png")
             for o in ORIENTATIONS]
    for path in [*paths, rendered["snapshot"]]:
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = _figure(rendered, rendered["tmp"] / "slicer_render.png")
    assert figure.stat().st_size > 10_000
    DOCS_PICTURE.parent.mkdir(exist_ok=True)
    shutil.copyfile(figure, DOCS_PICTURE)


def _figure(rendered, path):
    """The three blended views side by side with the entropy colour legend (matplotlib adds the
    titles and the legend; the pixels are Slicer's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, Normalize

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), dpi=100)
    for row, (layer, title) in enumerate((("labels", "MR + labels"), ("entropy", "MR + entropy overlay"))):
        for ax, orientation in zip(axes[row], ORIENTATIONS):
            ax.imshow(rendered["views"][orientation][layer][60:300])
            ax.set_title(f"{orientation}: {title}", fontsize=10)
            ax.axis("off")
    low, high = rendered["window"]
    mappable = plt.cm.ScalarMappable(Normalize(low, high), ListedColormap(rendered["legend"]))
    fig.colorbar(mappable, ax=axes[1], fraction=0.02, pad=0.01, label="entropy (normalised)")
    fig.suptitle("SwinBOB result rendered by Slicer's slice pipeline (vtkMRMLSliceLogic, offscreen)\n"
                 f"example_mr_sm, tiny untrained test model: {rendered['summary']}", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return path
