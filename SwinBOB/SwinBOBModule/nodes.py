"""MRML nodes <-> SwinBOBLib inputs and outputs, geometry kept exactly.

Axis orders, the one place they meet:

* ``slicer.util.arrayFromVolume`` gives a volume's voxels as ``(K, J, I)`` (``(K, J, I, C)`` for a
  vector volume): slowest axis first, as VTK stores them.
* :class:`SwinBOBLib.io.Image` holds ``(I, J, K)`` (``(I, J, K, C)``), the file's voxel order, and an
  ``affine`` mapping ``(i, j, k)`` to RAS millimetres.
* A volume node's ``IJKToRASMatrix`` *is* that affine. So conversion is a transpose of the array
  and a copy of the matrix, nothing is resampled, and a voxel keeps its RAS position both ways.

Everything here works on plain MRML nodes in any scene (Slicer's, or one made by a test harness).
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from SwinBOBLib import io as swinbob_io
from SwinBOBLib import labels as swinbob_labels

from .parameters import ENTROPY_ROLE, ROLE_ATTRIBUTE  # noqa: F401  (part of this module's API)

#: Attribute of a vector volume node naming its channels, comma-separated (e.g. "water,fat").
CHANNEL_NAMES_ATTRIBUTE = "SwinBOB.ChannelNames"
#: Segment tag holding the label value a segment came from.
LABEL_VALUE_TAG = "SwinBOB.LabelValue"
#: DICOM private coding scheme of the UKBOB structure codes (terminology type of each segment).
CODING_SCHEME = "99SWINBOB"
#: Terminology category of every structure: SNOMED CT "Anatomical Structure".
ANATOMY_CATEGORY = ("SCT", "123037004", "Anatomical Structure")
#: Colours of the entropy map, low to high (perceptually ordered, close to matplotlib's inferno).
ENTROPY_COLOURS = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66),
                   (245, 125, 21), (250, 193, 39), (252, 255, 164))
ENTROPY_COLOR_NODE_NAME = "SwinBOB_Entropy"
#: Node attribute naming what a node is to the module (ENTROPY_ROLE, ORGAN_TABLE_ROLE; the entropy
#: selector filters on it, see parameters.py), and the label scheme a segmentation's segments were built with.
ORGAN_TABLE_ROLE = "organs"
SCHEME_ATTRIBUTE = "SwinBOB.Scheme"


# ----------------------------------------------------------------------------- geometry


def matrixToArray(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def arrayToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def volumeAffine(volumeNode) -> np.ndarray:
    """``(4, 4)`` IJK -> RAS (mm) matrix of a volume node (parent transforms are not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def rasToIjk(volumeNode, ras) -> np.ndarray:
    """Voxel index ``(i, j, k)`` (float) of a RAS point in a volume node."""
    inverse = np.linalg.inv(volumeAffine(volumeNode))
    return (inverse @ np.append(np.asarray(ras, dtype=np.float64), 1.0))[:3]


# ----------------------------------------------------------------------------- volumes -> images


def _require_volume(volumeNode, what: str = "input volume"):
    if volumeNode is None or not volumeNode.IsA("vtkMRMLVolumeNode"):
        raise ValueError(f"{what}: expected a volume node, got {volumeNode!r}")
    if volumeNode.GetImageData() is None:
        raise ValueError(f"{what} '{volumeNode.GetName()}' has no voxels (image data is empty)")


def channelNames(volumeNode) -> tuple[str, ...] | None:
    """Channel names of a vector volume: its ``SwinBOB.ChannelNames`` attribute, or the Dixon names
    for four components, else None."""
    text = volumeNode.GetAttribute(CHANNEL_NAMES_ATTRIBUTE)
    count = volumeNode.GetImageData().GetNumberOfScalarComponents()
    if text:
        names = tuple(n.strip() for n in text.split(","))
        if len(names) != count:
            raise ValueError(f"volume '{volumeNode.GetName()}': attribute {CHANNEL_NAMES_ATTRIBUTE} names "
                             f"{len(names)} channels {names}, the volume has {count}")
        return names
    return swinbob_io.DIXON_CHANNELS if count == len(swinbob_io.DIXON_CHANNELS) else None


def imageFromVolumeNode(volumeNode) -> swinbob_io.Image:
    """A volume node as a :class:`SwinBOBLib.io.Image`: array ``(I, J, K[, C])`` (a copy), affine
    = the node's IJKToRAS matrix, channel names of a vector volume.

    Raises:
        ValueError: not a volume node, or a volume without voxels.
    """
    _require_volume(volumeNode)
    kji = slicer.util.arrayFromVolume(volumeNode)
    axes = (2, 1, 0, 3) if kji.ndim == 4 else (2, 1, 0)
    array = np.ascontiguousarray(np.transpose(kji, axes))
    names = channelNames(volumeNode) if array.ndim == 4 else None
    return swinbob_io.Image(array, volumeAffine(volumeNode), channel_names=names,
                            metadata={"node": volumeNode.GetName()})


def imageFromVolumeNodes(volumeNodes) -> swinbob_io.Image:
    """Several scalar volumes on one grid (e.g. the Dixon contrasts loaded as separate volumes)
    stacked as channels ``(I, J, K, C)``, named after the nodes. One node gives its own image."""
    volumeNodes = [n for n in volumeNodes if n is not None]
    if not volumeNodes:
        raise ValueError("no input volume selected")
    images = [imageFromVolumeNode(n) for n in volumeNodes]
    if len(images) == 1:
        return images[0]
    first = images[0]
    for node, image in zip(volumeNodes[1:], images[1:]):
        if image.num_channels != 1:
            raise ValueError(f"volume '{node.GetName()}' has {image.num_channels} channels; stack scalar "
                             "volumes only")
        if image.spatial_shape != first.spatial_shape or not np.allclose(image.affine, first.affine, atol=1e-4):
            raise ValueError(f"volume '{node.GetName()}' (grid {image.spatial_shape}) is not on the grid of "
                             f"'{volumeNodes[0].GetName()}' ({first.spatial_shape}); contrasts must share a grid")
    array = np.stack([image.array for image in images], axis=-1)
    names = tuple(n.GetName() for n in volumeNodes)
    return swinbob_io.Image(array, first.affine, channel_names=names)


# ----------------------------------------------------------------------------- images -> volumes


def removeNode(scene, node) -> None:
    """Remove a temporary node with its display and storage nodes (the scene does not cascade)."""
    if node is None or node.GetScene() is not scene:
        return
    helpers = []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)


def volumeNodeFromImage(image: swinbob_io.Image, scene, name: str,
                        className: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding ``image`` (its voxels and its affine, exactly)."""
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
    array = np.asarray(image.array)
    axes = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.transpose(array, axes)))
    node.SetIJKToRASMatrix(arrayToMatrix(image.affine))
    return node


def labelColorNode(scene, scheme: str = "ukbob"):
    """Colour table of a label scheme (names, colours, terminology), created once per scene.

    Entry ``v`` is label value ``v``; its terminology type is (``99SWINBOB``, structure name,
    display name) in the SNOMED category "Anatomical Structure", so names survive DICOM SEG and
    .seg.nrrd export. Unused values (UKBOB's 20) stay unnamed and transparent.
    """
    name = f"SwinBOB_{scheme}_labels"
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    structures = swinbob_labels.get_scheme(scheme)
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(name)
    node.SetTypeToUser()
    node.SetNumberOfColors(structures.max_index + 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value in range(1, structures.max_index + 1):
        node.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
    for value, structure in structures.structures.items():
        r, g, b = (c / 255.0 for c in structure.color)
        node.SetColor(value, structure.name, r, g, b, 1.0)
        node.SetTerminology(value, *ANATOMY_CATEGORY, CODING_SCHEME, structure.name, structure.display_name)
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def segmentationFromLabelmap(labels: swinbob_io.Image, scene, name: str, referenceVolumeNode=None,
                             scheme: str = "ukbob"):
    """A segmentation node with one segment per label value present in ``labels``.

    Segments carry the scheme's name, colour and terminology entry, and the tag
    ``SwinBOB.LabelValue``; the reference geometry is ``referenceVolumeNode``'s (when given), so
    exported label maps land on the input's grid.

    Args:
        labels: ``(I, J, K)`` integer label map and its affine.
    Raises:
        ValueError: label values outside ``scheme``.
    """
    array = swinbob_io.as_label_array(labels.array, name)
    structures = swinbob_labels.get_scheme(scheme)
    structures.validate_labelmap(array, source=name)
    colorNode = labelColorNode(scene, scheme)
    labelmapNode = volumeNodeFromImage(swinbob_io.Image(array, labels.affine), scene, name + "_labelmap",
                                       "vtkMRMLLabelMapVolumeNode")
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    try:
        labelmapNode.CreateDefaultDisplayNodes()
        labelmapNode.GetDisplayNode().SetAndObserveColorNodeID(colorNode.GetID())
        segmentationNode.CreateDefaultDisplayNodes()
        if referenceVolumeNode is not None:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode):
            raise RuntimeError(f"{name}: importing the label map into a segmentation failed")
    finally:
        removeNode(scene, labelmapNode)
    _describeSegments(segmentationNode, structures, colorNode)
    segmentationNode.SetAttribute(SCHEME_ATTRIBUTE, scheme)
    return segmentationNode


def _describeSegments(segmentationNode, structures, colorNode) -> None:
    """Names, colours, terminology and label-value tags of the imported segments."""
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        value = int(segment.GetLabelValue())
        structure = structures.structures.get(value)
        if structure is None:
            continue
        segment.SetName(structure.name)
        segment.SetColor(*(c / 255.0 for c in structure.color))
        segment.SetTag(LABEL_VALUE_TAG, str(value))
        segment.SetTerminology(colorNode.GetTerminologyAsString(value))


def segmentationScheme(segmentationNode) -> str:
    """The label scheme a segmentation's segments were built with (its ``SwinBOB.Scheme``
    attribute; UKBOB for segmentations made elsewhere)."""
    return segmentationNode.GetAttribute(SCHEME_ATTRIBUTE) or "ukbob"


def segmentIdOfStructure(segmentationNode, structure: str | int, scheme: str | None = None) -> str:
    """Segment ID of a structure given by name, synonym or label value, looked up in ``scheme``
    (default: the scheme the segmentation was built with, see :func:`segmentationScheme`).

    Raises:
        ValueError: the structure is not in this segmentation (the message lists what is).
    """
    structures = swinbob_labels.get_scheme(scheme or segmentationScheme(segmentationNode))
    value = structures.lookup(structure)
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        if segmentLabelValue(segmentation.GetNthSegment(index), structures) == value:
            return segmentation.GetNthSegmentID(index)
    present = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    raise ValueError(f"structure '{structure}' is not in segmentation '{segmentationNode.GetName()}' "
                     f"(it has: {', '.join(present) or 'no segments'})")


def segmentLabelValue(segment, structures) -> int | None:
    """Label value of a segment: its ``SwinBOB.LabelValue`` tag, else its name looked up in the
    scheme (segments renamed or made by hand), else None."""
    tag = vtk.reference("")
    if segment.GetTag(LABEL_VALUE_TAG, tag) and str(tag).isdigit():
        return int(str(tag))
    try:
        return structures.lookup(segment.GetName())
    except ValueError:
        return None


def labelmapFromSegmentation(segmentationNode, referenceVolumeNode, scene, scheme: str = "ukbob") -> swinbob_io.Image:
    """All segments exported as one label map on ``referenceVolumeNode``'s grid: ``(I, J, K)``
    label values (segment names matched to the scheme's colour table) and that grid's affine."""
    labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    colorTablesBefore = _nodeIds(scene, "vtkMRMLColorTableNode")
    try:
        segmentIds = vtk.vtkStringArray()
        segmentationNode.GetSegmentation().GetSegmentIDs(segmentIds)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentationNode, segmentIds, labelmapNode, referenceVolumeNode,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, labelColorNode(scene, scheme))
        if not ok:
            raise RuntimeError(f"exporting segmentation '{segmentationNode.GetName()}' to a label map failed")
        return imageFromVolumeNode(labelmapNode)
    finally:
        removeNode(scene, labelmapNode)
        for nodeId in _nodeIds(scene, "vtkMRMLColorTableNode") - colorTablesBefore:  # made by the export
            scene.RemoveNode(scene.GetNodeByID(nodeId))


def _nodeIds(scene, className: str) -> set[str]:
    collection = scene.GetNodesByClass(className)
    return {collection.GetItemAsObject(i).GetID() for i in range(collection.GetNumberOfItems())}


# ----------------------------------------------------------------------------- entropy


def entropyColorNode(scene):
    """The entropy colour ramp (256 entries, dark = certain, bright = unsure), created once."""
    existing = scene.GetFirstNodeByName(ENTROPY_COLOR_NODE_NAME)
    if existing is not None:
        return existing
    anchors = np.asarray(ENTROPY_COLOURS, dtype=np.float64) / 255.0
    positions = np.linspace(0.0, 1.0, len(anchors))
    ramp = np.linspace(0.0, 1.0, 256)
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(ENTROPY_COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for index, t in enumerate(ramp):
        rgb = [float(np.interp(t, positions, anchors[:, c])) for c in range(3)]
        node.SetColor(index, f"{t:.3f}", *rgb, 1.0)
    node.SetAttribute("Category", "SwinBOB")
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def entropyVolumeFromImage(entropy: swinbob_io.Image, scene, name: str):
    """A scalar volume node holding the normalised entropy (0..1), coloured by the entropy ramp.

    The display window is 0 .. max(0.05, 99.5th percentile) so that low-certainty regions stand
    out; values below 2 % of it are transparent when shown as a foreground overlay (lower threshold).
    """
    node = volumeNodeFromImage(swinbob_io.Image(np.asarray(entropy.array, dtype=np.float32), entropy.affine),
                               scene, name)
    node.SetAttribute(ROLE_ATTRIBUTE, ENTROPY_ROLE)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(entropyColorNode(scene).GetID())
    high = max(0.05, float(np.percentile(entropy.array, 99.5))) if np.size(entropy.array) else 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, high)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(0.02 * high)
    display.SetUpperThreshold(1.0)
    return node


def addColorLegend(displayableNode, title: str = "Entropy (normalised)"):
    """A colour legend (Slicer's colour legend display node) for a displayable node."""
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(displayableNode)
    if legend is not None:
        legend.SetTitleText(title)
        legend.SetVisibility(True)
    return legend


# ----------------------------------------------------------------------------- tables

#: Organ table columns: (key in the row dicts, column title, unit, description, type).
TABLE_COLUMNS = (
    ("index", "Label", "", "UKBOB label value", "int"),
    ("name", "Structure", "", "UKBOB structure name", "string"),
    ("volume_ml", "Volume", "ml", "structure volume", "double"),
    ("normalized_volume", "Normalised volume", "", "structure voxels / body voxels (SOLF)", "double"),
    ("sphericity", "Sphericity", "", "pi^(1/3) (6V)^(2/3) / surface area, 1 for a sphere (SOLF)", "double"),
    ("eccentricity", "Eccentricity", "",
     "sqrt(1 - smallest/largest eigenvalue of the voxel-coordinate covariance in mm) (SOLF)", "double"),
    ("mean_entropy", "Mean entropy", "", "mean normalised entropy of the structure's voxels", "double"),
    ("verdict", "SOLF verdict", "", "ok, 1 out of range, inaccurate (>= 2 of 3 out of range), not comparable (another coverage or voxel size), no bounds", "string"),
    ("out_of_range", "Out of range", "", "SOLF features outside the cohort bounds", "string"),
)


def _vtkArray(kind: str, title: str):
    array = {"int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray, "string": vtk.vtkStringArray}[kind]()
    array.SetName(title)
    return array


def fillOrganTable(tableNode, rows) -> None:
    """Replace a table node's content with one row per entry of ``rows`` (dicts keyed as
    :data:`TABLE_COLUMNS`; missing or empty numbers become NaN)."""
    table = vtk.vtkTable()
    columns = []
    for key, title, _unit, _description, kind in TABLE_COLUMNS:
        array = _vtkArray(kind, title)
        for row in rows:
            value = row.get(key, "")
            if kind == "string":
                array.InsertNextValue(str(value))
            elif kind == "int":
                array.InsertNextValue(int(value))
            else:
                array.InsertNextValue(float(value) if value not in ("", None) else float("nan"))
        table.AddColumn(array)
        columns.append(array)
    tableNode.SetAndObserveTable(table)
    for key, title, unit, description, _kind in TABLE_COLUMNS:
        if unit:
            tableNode.SetColumnUnitLabel(title, unit)
        tableNode.SetColumnDescription(title, description)
    tableNode.SetUseColumnTitleAsColumnHeader(True)
    tableNode.SetLocked(True)
    tableNode.Modified()


def isOrganTable(tableNode) -> bool:
    """Whether a table node is an organ table this module made (attribute ``SwinBOB.Role`` =
    ``organs``, or, for tables saved and loaded again, every column of :data:`TABLE_COLUMNS`)."""
    if tableNode is None or not tableNode.IsA("vtkMRMLTableNode"):
        return False
    if tableNode.GetAttribute(ROLE_ATTRIBUTE) == ORGAN_TABLE_ROLE:
        return True
    table = tableNode.GetTable()
    return table is not None and all(table.GetColumnByName(title) is not None for _k, title, *_ in TABLE_COLUMNS)


def tableRows(tableNode) -> list[dict]:
    """The rows of an organ table node as dicts keyed as :data:`TABLE_COLUMNS`.

    Raises:
        ValueError: not an organ table (see :func:`isOrganTable`); the message names the node.
    """
    if not isOrganTable(tableNode):
        name = tableNode.GetName() if tableNode is not None else None
        raise ValueError(f"table '{name}' is not a SwinBOB organ table (columns {', '.join(c[1] for c in TABLE_COLUMNS)})")
    table = tableNode.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for key, title, _unit, _description, kind in TABLE_COLUMNS:
            value = table.GetColumnByName(title).GetValue(r)
            row[key] = value if kind == "string" else (int(value) if kind == "int" else float(value))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- subject hierarchy


def applyInputTransform(inputNode, nodes) -> None:
    """Put ``nodes`` under the input's parent transform (if any), so results computed on the
    input's voxel grid show where the input is shown."""
    transformId = inputNode.GetTransformNodeID()
    for node in nodes:
        if node is not None and node.IsA("vtkMRMLTransformableNode"):
            node.SetAndObserveTransformNodeID(transformId)


def placeBesideInput(inputNode, nodes, folderName: str | None = None) -> None:
    """Put ``nodes`` in the subject hierarchy under the input volume's parent (its study), or
    under a folder ``folderName`` created there. Inputs outside the hierarchy are added first."""
    scene = inputNode.GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    inputItem = shNode.GetItemByDataNode(inputNode)
    if not inputItem:
        inputItem = shNode.CreateItem(shNode.GetSceneItemID(), inputNode)
    parent = shNode.GetItemParent(inputItem)
    if folderName:
        parent = shNode.CreateFolderItem(parent, folderName)
    for node in nodes:
        item = shNode.GetItemByDataNode(node)
        if item:
            shNode.SetItemParent(item, parent)
        else:
            shNode.CreateItem(parent, node)
