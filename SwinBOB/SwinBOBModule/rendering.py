"""A slice view of a result as an image, through Slicer's own slice pipeline, with no GUI.

``vtkMRMLSliceLogic`` reslices the background (scan), foreground (entropy) and label layers of a
slice node and blends them with each volume's display settings (window/level, colour node,
threshold, opacity), which is what a slice view of the application shows, minus the widgets.
The segmentation takes the label layer as a temporary label map coloured by the UKBOB table.
Works under slicer-core (tests, headless servers) and in the application (reports, batch QC).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from . import nodes

SNAPSHOT_VIEW = "SwinBOBSnapshot"


def sliceImage(scene, backgroundNode, foregroundNode=None, segmentationNode=None, orientation: str = "Axial",
               size: tuple[int, int] = (512, 512), center=None, foregroundOpacity: float = 0.45,
               labelOpacity: float = 0.6, labelOutline: bool = False, applicationLogic=None) -> np.ndarray:
    """The blended slice as an ``(H, W, 4)`` uint8 RGBA array, top row first.

    Args:
        orientation: "Axial", "Sagittal" or "Coronal" (radiological convention, as Slicer shows).
        size: ``(width, height)`` in pixels; the slice is fitted to the background volume.
        center: RAS point (mm) the slice passes through (default: the background's centre).
    """
    logic = snapshotLogic(scene, applicationLogic)
    sliceNode, composite = logic.GetSliceNode(), logic.GetSliceCompositeNode()
    if not sliceNode.SetOrientation(orientation):
        raise ValueError(f"unknown slice orientation '{orientation}'; use Axial, Sagittal or Coronal")
    sliceNode.SetDimensions(int(size[0]), int(size[1]), 1)
    labelmapNode = None
    try:
        composite.SetBackgroundVolumeID(backgroundNode.GetID())
        composite.SetForegroundVolumeID(foregroundNode.GetID() if foregroundNode is not None else None)
        composite.SetForegroundOpacity(foregroundOpacity if foregroundNode is not None else 0.0)
        if segmentationNode is not None:
            labelmapNode = _labelLayer(scene, segmentationNode, backgroundNode)
            sliceNode.SetUseLabelOutline(labelOutline)
        composite.SetLabelVolumeID(labelmapNode.GetID() if labelmapNode is not None else None)
        composite.SetLabelOpacity(labelOpacity)
        logic.FitSliceToBackground(int(size[0]), int(size[1]))
        sliceNode.JumpSliceByCentering(*(center if center is not None else _volumeCenter(backgroundNode)))
        return _blend(logic)
    finally:
        composite.SetLabelVolumeID(None)
        nodes.removeNode(scene, labelmapNode)


_SNAPSHOT_LOGICS: dict = {}


def snapshotLogic(scene, applicationLogic=None):
    """The off-layout slice view used for snapshots, created once per scene and reused (a slice
    logic made and dropped per picture leaves later foreground layers unrendered)."""
    logic = _SNAPSHOT_LOGICS.get(id(scene))
    if logic is not None and logic.GetMRMLScene() is scene and logic.GetSliceNode().GetScene() is scene:
        return logic
    sliceNode = scene.CreateNodeByClass("vtkMRMLSliceNode")  # carries the scene's orientation presets
    _addOrientationPresets(sliceNode)
    sliceNode.SetName(SNAPSHOT_VIEW)
    sliceNode.SetLayoutName(SNAPSHOT_VIEW)
    sliceNode.SetSingletonTag(SNAPSHOT_VIEW)
    sliceNode.SetHideFromEditors(True)
    scene.AddNode(sliceNode)
    logic = slicer.vtkMRMLSliceLogic()
    if applicationLogic is not None:
        logic.SetMRMLApplicationLogic(applicationLogic)
    logic.SetMRMLScene(scene)
    logic.SetSliceNode(sliceNode)  # creates the view's slice composite node
    _SNAPSHOT_LOGICS[id(scene)] = logic
    return logic


def releaseSnapshotView(scene) -> None:
    """Remove the snapshot view's nodes from ``scene``."""
    logic = _SNAPSHOT_LOGICS.pop(id(scene), None)
    if logic is None:
        return
    nodes_ = [logic.GetSliceCompositeNode(), logic.GetSliceNode()]
    logic.SetMRMLScene(None)
    for node in nodes_:
        if node is not None and node.GetScene() is scene:
            scene.RemoveNode(node)


def _addOrientationPresets(sliceNode) -> None:
    """Axial, sagittal and coronal presets (the application adds them to every slice node)."""
    for name, getter in (("Axial", slicer.vtkMRMLSliceNode.GetAxialSliceToRASMatrix),
                         ("Sagittal", slicer.vtkMRMLSliceNode.GetSagittalSliceToRASMatrix),
                         ("Coronal", slicer.vtkMRMLSliceNode.GetCoronalSliceToRASMatrix)):
        if not sliceNode.HasSliceOrientationPreset(name):
            matrix = vtk.vtkMatrix3x3()
            getter(matrix)
            sliceNode.AddSliceOrientationPreset(name, matrix)


def _labelLayer(scene, segmentationNode, referenceNode):
    labels = nodes.labelmapFromSegmentation(segmentationNode, referenceNode, scene)
    labelmapNode = nodes.volumeNodeFromImage(labels, scene, "SwinBOB snapshot labels", "vtkMRMLLabelMapVolumeNode")
    labelmapNode.CreateDefaultDisplayNodes()
    labelmapNode.GetDisplayNode().SetAndObserveColorNodeID(nodes.labelColorNode(scene).GetID())
    labelmapNode.SetHideFromEditors(True)
    return labelmapNode


def _volumeCenter(volumeNode):
    bounds = [0.0] * 6
    volumeNode.GetRASBounds(bounds)
    return [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]


def _blend(logic) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return np.ascontiguousarray(pixels[::-1])  # VTK's first row is the bottom one


def writePng(rgba: np.ndarray, path) -> Path:
    """Write an ``(H, W, 3|4)`` uint8 array (top row first) as PNG with VTK's writer."""
    from vtk.util.numpy_support import numpy_to_vtk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width, channels = rgba.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    flat = np.ascontiguousarray(rgba[::-1]).reshape(-1, channels)
    image.GetPointData().SetScalars(numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    writer = vtk.vtkPNGWriter()
    writer.SetInputData(image)
    writer.SetFileName(str(path))
    writer.Write()
    return path


def colorLookup(colorNode, count: int = 256) -> np.ndarray:
    """``(count, 4)`` RGBA floats of a colour node (for legends drawn outside Slicer)."""
    table = colorNode.GetLookupTable()
    low, high = table.GetRange()
    colors = []
    for i in range(count):
        rgb = [0.0, 0.0, 0.0]
        table.GetColor(low + (high - low) * i / (count - 1), rgb)
        colors.append(rgb + [1.0])
    return np.array(colors)
