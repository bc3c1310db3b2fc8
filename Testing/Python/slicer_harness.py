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
    import slicer

    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name or Path(path).name.split(".")[0])
    scene.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise OSError(f"{path}: Slicer's volume reader failed")
    node.CreateDefaultDisplayNodes()
    return node
