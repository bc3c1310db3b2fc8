"""A Slicer application's core, without the application: scene, application logic, module logics,
and the three slice views, as Slicer sets them up at startup (see docs/slicer.md).

Used by the Slicer module's pytest suite under ``slicer-core``; inside the real application the
same test bodies (SwinBOB/SwinBOBModule/selftests.py) run on ``slicer.mrmlScene`` instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SwinBOB"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

#: Slice views of Slicer's default layout: (layout name, orientation).
SLICE_VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))


@dataclass
class SlicerCore:
    """What the test bodies need of a running Slicer."""

    scene: object
    applicationLogic: object
    colorLogic: object
    sliceLogics: dict = field(default_factory=dict)

    def close(self) -> None:
        import slicer

        for logic in self.sliceLogics.values():
            logic.SetMRMLScene(None)
        self.colorLogic.SetMRMLScene(None)
        self.applicationLogic.SetMRMLScene(None)
        self.scene.Clear(1)
        if getattr(slicer, "mrmlScene", None) is self.scene:
            slicer.mrmlScene = None


def start_slicer_core() -> SlicerCore:
    """A fresh scene wired like the application's: ``slicer.mrmlScene`` points at it."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(scene)  # registers the colour nodes and the colour legend display node class
    core = SlicerCore(scene, app, colors)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in SLICE_VIEWS:
        sliceNode = scene.CreateNodeByClass("vtkMRMLSliceNode")
        sliceNode.SetName(name)
        sliceNode.SetLayoutName(name)
        sliceNode.SetSingletonTag(name)
        assert sliceNode.SetOrientation(orientation), orientation
        sliceNode.SetDimensions(256, 256, 1)
        scene.AddNode(sliceNode)
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(sliceNode)  # creates the slice composite node of this view
        core.sliceLogics[name] = logic
    return core


def load_volume(scene, path, name: str | None = None):
    """A scalar volume node read from a file through its storage node (Slicer's reader)."""
    from SwinBOBModule.selftests import read_volume

    return read_volume(scene, path, name or Path(path).name.split(".")[0])


# ----------------------------------------------------------------------------- rendered views

#: Orientations of the rendered views, left to right.
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
SAMPLE = REPO / "Testing" / "Data" / "totalsegmentator-samples" / "example_mr_sm.nii.gz"


def render_result_views(core: SlicerCore, tmp: Path, size: int = 360) -> dict:
    """The MR sample segmented by the tiny seeded test model, rendered through Slicer's slice
    pipeline in three orientations and four layer sets (scan, +entropy, +labels, all).

    Returns ``{"views": {orientation: {layers: (H, W, 4) uint8}}, "legend", "window", "summary",
    "snapshot", "scene", "result"}``; files are written under ``tmp`` only.
    """
    from SwinBOBModule import nodes, rendering, selftests
    from SwinBOBModule.logic import SwinBOBLogic
    from SwinBOBModule.parameters import SegmentationOptions

    volume = load_volume(core.scene, SAMPLE, "example_mr_sm")
    checkpoint = selftests.make_tiny_checkpoint(Path(tmp) / "tiny.pt")
    result = SwinBOBLogic().segment(volume, SegmentationOptions(checkpointPath=checkpoint))
    rows = nodes.tableRows(result.tableNode)
    largest = max(rows, key=lambda r: r["volume_ml"])["name"]
    center = SwinBOBLogic().centreOnStructure(result.segmentationNode, largest)
    views = {}
    for orientation in ORIENTATIONS:
        views[orientation] = {
            layers: rendering.sliceImage(core.scene, volume, *args, orientation=orientation, size=(size, size),
                                         center=center, applicationLogic=core.applicationLogic)
            for layers, args in (("scan", ()), ("entropy", (result.entropyNode,)),
                                 ("labels", (None, result.segmentationNode)),
                                 ("all", (result.entropyNode, result.segmentationNode)))}
    snapshot = SwinBOBLogic().snapshot(result, Path(tmp) / "snapshot_axial.png", "Axial", (256, 256))
    display = result.entropyNode.GetDisplayNode()
    return {"views": views, "legend": rendering.colorLookup(display.GetColorNode()),
            "window": (display.GetWindowLevelMin(), display.GetWindowLevelMax()),
            "summary": result.entropySummary(), "snapshot": snapshot, "scene": core.scene, "result": result}


def render_figure(rendered: dict, path) -> Path:
    """The three blended views side by side with the entropy colour legend, as a PNG (matplotlib
    adds the titles and the legend; the pixels are Slicer's). The docs picture is this figure."""
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the .ui under Qt

#: Slicer/CTK classes the .ui may use, with the Qt class their placeholder derives from.
SLICER_WIDGET_CLASSES = {"qMRMLWidget": "QWidget", "ctkCollapsibleButton": "QWidget", "qMRMLNodeComboBox": "QWidget",
                         "ctkPathLineEdit": "QWidget", "ctkSliderWidget": "QWidget"}
#: The placeholder classes, made once and kept for the process: QUiLoader.registerCustomWidget does
#: not hold a reference, and a class collected before ``load`` is a segmentation fault in Qt.
_PLACEHOLDERS: dict = {}


def load_ui(path):
    """``(QApplication, widget)``: a .ui file loaded with PySide6 (set QT_QPA_PLATFORM=offscreen
    first), Slicer's own widget classes registered as placeholder widgets of the same name."""
    from PySide6 import QtWidgets
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    if not _PLACEHOLDERS:
        _PLACEHOLDERS.update({name: type(name, (getattr(QtWidgets, base),), {})
                              for name, base in SLICER_WIDGET_CLASSES.items()})
    loader = QUiLoader()
    for placeholder in _PLACEHOLDERS.values():
        loader.registerCustomWidget(placeholder)
    handle = QFile(str(path))
    assert handle.open(QFile.ReadOnly), f"cannot open {path}"
    widget = loader.load(handle)
    handle.close()
    assert widget is not None, loader.errorString()
    return app, widget
