"""A QC sample on MRML nodes, shared by the Slicer panel and the web review (SwinBOBWeb): load a
sample's scan, labels and entropy map into a scene, show them in the slice views, centre and
highlight a structure, and the sample's organ table with its SOLF verdicts. No Qt here: the panel
and the web app each only bind their widgets to these functions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import slicer

from SwinBOBLib import io as swinbob_io

from . import nodes

#: SOLF verdicts of a structure in the organ table.
VERDICT_OK, VERDICT_ONE_OUT, VERDICT_INACCURATE, VERDICT_NO_BOUNDS = "ok", "1 out of range", "inaccurate", "no bounds"
#: A structure of one scan that cannot be judged against bounds of another coverage or voxel size
#: (``solf.csv``'s verdict of the same name; SwinBOBLib.solf.comparable).
VERDICT_NOT_COMPARABLE = "not comparable"
#: 2D fill and 3D opacity of the structures other than the highlighted one.
DIMMED_OPACITY = 0.15


# ----------------------------------------------------------------------------- loading a sample


def loadSampleNodes(scene, item, progress=None):
    """The item's image (first channel of a multi-channel scan) and label map as a volume node and a
    segmentation node in ``scene``. ``progress(done, total, text)`` is called between the steps
    (the panel's progress indicator for large scans). Returns (volumeNode, segmentationNode).

    Raises:
        ValueError: the item names no label map. OSError / ValueError from reading a broken file.
    """
    report = progress or (lambda done, total, text: None)
    if not item.labelmap:
        raise ValueError(f"QC item {item.sample} ({item.structure}) names no label map; rerun `swinbob solf run` "
                         "on label maps with their images")
    report(0, 3, f"Reading {Path(item.image).name}")
    volumeNode = None
    if item.image:
        image = swinbob_io.load_image(item.image)
        if image.array.ndim == 4:
            image = swinbob_io.Image(image.array[..., 0], image.affine)
        volumeNode = nodes.volumeNodeFromImage(image, scene, item.sample)
        volumeNode.CreateDefaultDisplayNodes()
        setWindowFromPercentiles(volumeNode, image.array)
    report(1, 3, f"Reading {Path(item.labelmap).name}")
    labels = swinbob_io.load_labelmap(item.labelmap)
    report(2, 3, "Building segments")
    segmentationNode = nodes.segmentationFromLabelmap(labels, scene, item.sample + "_labels", volumeNode)
    report(3, 3, "Loaded")
    return volumeNode, segmentationNode


def setWindowFromPercentiles(volumeNode, array, low: float = 1.0, high: float = 99.0) -> None:
    """Grey window of a scan from its ``low``-``high`` percentiles (what Slicer's automatic
    window does; without the application's volumes logic a new node's window stays unset)."""
    display = volumeNode.GetDisplayNode()
    if display is None:
        return
    values = np.percentile(np.asarray(array, dtype=np.float64), [low, high])
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(float(values[0]), float(max(values[1], values[0] + 1e-6)))
    colorNode = volumeNode.GetScene().GetNodeByID("vtkMRMLColorTableNodeGrey") if volumeNode.GetScene() else None
    if colorNode is not None:
        display.SetAndObserveColorNodeID(colorNode.GetID())


def sampleEntropyPath(item) -> Path | None:
    """The entropy map ``swinbob segment`` wrote beside the item's label map (``entropy.*`` next to
    ``labels.*``), or None."""
    if not item.labelmap or not Path(item.labelmap).name.startswith("labels."):
        return None
    found = sorted(Path(item.labelmap).parent.glob("entropy.*"))
    return found[0] if found else None


def loadSampleEntropy(scene, item):
    """The item's entropy map (see :func:`sampleEntropyPath`) as a coloured volume node, or None."""
    path = sampleEntropyPath(item)
    if path is None:
        return None
    return nodes.entropyVolumeFromImage(swinbob_io.load_image(path), scene, f"{item.sample} entropy")


def showSampleLayers(scene, volumeNode, entropyNode=None, opacity: float | None = None) -> None:
    """Every slice view shows the sample: ``volumeNode`` as background and its own entropy map at
    ``opacity`` (0-1; unchanged when None), or no foreground, so the previous scan's overlay does
    not stay on top."""
    for composite in compositeNodes(scene):
        composite.SetBackgroundVolumeID(volumeNode.GetID() if volumeNode is not None else None)
        composite.SetForegroundVolumeID(entropyNode.GetID() if entropyNode is not None else None)
        if opacity is not None:
            composite.SetForegroundOpacity(opacity)


def compositeNodes(scene) -> list:
    collection = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


# ----------------------------------------------------------------------------- a structure


def centreOnStructure(scene, segmentationNode, structure, highlight: bool = True):
    """Centre every slice view on a structure (name, synonym or label value) and, with
    ``highlight``, dim the other structures. Returns the RAS centre (mm) as a ``(3,)`` array, or
    None when the structure has no voxels here (a missing structure: nothing moves).

    Raises:
        ValueError: the structure is not in the segmentation (the message lists what is).
    """
    segmentId = nodes.segmentIdOfStructure(segmentationNode, structure)  # in the node's own scheme
    centre = segmentationNode.GetSegmentCenterRAS(segmentId)
    if centre is None:
        return None
    # Centred: the default offset jump only moves each view's slice plane, which can leave the
    # structure outside the visible field.
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *centre, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    if highlight:
        highlightStructure(segmentationNode, segmentId)
    return np.asarray(centre, dtype=np.float64)


def centreOnItem(scene, segmentationNode, label: int, highlight: bool = True):
    """:func:`centreOnStructure` for a QC item's label: None (views unmoved, nothing dimmed) when
    the structure is not in the sample or has no voxels, as for a missing structure."""
    try:
        centre = centreOnStructure(scene, segmentationNode, label, highlight)
    except ValueError:
        centre = None
    if centre is None and highlight:
        highlightStructure(segmentationNode, None)
    return centre


def highlightStructure(segmentationNode, segmentId: str | None) -> None:
    """Full opacity for one segment, the others dimmed to :data:`DIMMED_OPACITY`; None restores all."""
    display = segmentationNode.GetDisplayNode()
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        other = segmentation.GetNthSegmentID(index)
        opacity = 1.0 if segmentId is None or other == segmentId else DIMMED_OPACITY
        display.SetSegmentOpacity2DFill(other, opacity)
        display.SetSegmentOpacity3D(other, opacity)


def structureMeanEntropy(entropy: np.ndarray, labels: np.ndarray, label: int) -> float:
    """Mean of ``entropy`` over the voxels of ``label`` (both ``(I, J, K)``, same grid); NaN when the
    structure is absent."""
    entropy, labels = np.asarray(entropy), np.asarray(labels)
    if entropy.shape != labels.shape:
        raise ValueError(f"entropy {entropy.shape} and label map {labels.shape} are not on one grid")
    mask = labels == label
    return float(entropy[mask].mean()) if mask.any() else float("nan")


# ----------------------------------------------------------------------------- the organ table


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def solfVerdicts(rows, boundsPath, scheme: str = "ukbob", labelmap=None, spacing=None):
    """SOLF verdicts of organ rows against cohort bounds.

    Args:
        rows: dicts with ``index`` (label value) and the three SOLF features (strings or numbers).
        boundsPath: ``bounds.json`` of ``swinbob solf run``, or None.
        labelmap, spacing: the scan's label map and voxel size (mm): with them only the features
            that compare with the bounds' cohort are judged, as ``swinbob demo``'s ``solf.csv`` does
            (a slab against whole-body bounds gets "not comparable", with the reason).
    Returns:
        ``({label: (verdict, [out-of-range features])}, [missing structure names], [messages])``;
        no verdicts (with a message) without bounds or with bounds of another label scheme.
    """
    if boundsPath is None:
        return {}, [], [("No SOLF bounds: the bundled default bounds (Resources/SOLF/default_bounds.json) are "
                        "not in this build; choose a bounds file written by `swinbob solf run`.")]
    from SwinBOBLib.labels import get_scheme
    from SwinBOBLib.solf import SOLF_FEATURES, flag, load_bounds

    bounds = load_bounds(boundsPath)
    if (bounds.scheme or "ukbob") != scheme:
        return {}, [], [(f"The SOLF bounds {Path(boundsPath).name} are for {bounds.scheme or 'ukbob'} labels and "
                        f"this segmentation uses {scheme} labels: no SOLF verdicts (choose bounds fitted on "
                        f"{scheme} label maps).")]
    features = {}
    for row in rows:
        values = {f: _number(row.get(f, "")) for f in SOLF_FEATURES}
        if all(np.isfinite(v) for v in values.values()):
            features[int(_number(row["index"]))] = values
    if labelmap is not None:
        return _comparableVerdicts(features, bounds, labelmap, spacing)
    verdicts, missing = {}, []
    for label, entry in flag(features, bounds).items():
        if entry["missing"]:
            missing.append(get_scheme(bounds.scheme or "ukbob").name_of(label))
            continue
        verdict = (VERDICT_INACCURATE if entry["inaccurate"] else
                   VERDICT_ONE_OUT if entry["n_out_of_range"] else VERDICT_OK)
        verdicts[label] = (verdict, list(entry["out_of_range"]))
    return verdicts, missing, []


def _comparableVerdicts(features, bounds, labelmap, spacing):
    """:func:`solfVerdicts` on the features that compare (``SwinBOBLib.solf.comparable.judge``)."""
    from SwinBOBLib.labels import get_scheme
    from SwinBOBLib.solf.comparable import judge, reason_text

    verdicts, missing = {}, []
    for label, entry in judge(features, bounds, np.asarray(labelmap), spacing).items():
        if entry["verdict"] == "missing":
            missing.append(get_scheme(bounds.scheme or "ukbob").name_of(label))
        elif entry["verdict"] == "not comparable":
            verdicts[label] = (VERDICT_NOT_COMPARABLE, [reason_text(entry)])
        else:
            verdicts[label] = (VERDICT_INACCURATE if entry["verdict"] == "inaccurate" else
                               VERDICT_ONE_OUT if entry["out_of_range"] else VERDICT_OK, list(entry["out_of_range"]))
    return verdicts, missing, []


def sampleOrganRows(qcFolder, sample: str) -> list[dict]:
    """One row per structure of ``sample`` in ``QCFOLDER/features.csv`` (``swinbob solf run``'s
    table): ``index``, ``name``, the SOLF features, ``verdict`` and ``out_of_range`` (comma-joined)
    against ``QCFOLDER/bounds.json``. Empty when the table is absent."""
    folder = Path(qcFolder)
    table = folder / "features.csv"
    if not table.exists():
        return []
    with open(table, newline="", encoding="utf-8") as stream:
        rows = [{**row, "index": int(row["label"])} for row in csv.DictReader(stream) if row.get("id") == sample]
    bounds = folder / "bounds.json"
    verdicts, _missing, _messages = solfVerdicts(rows, bounds if bounds.exists() else None)
    for row in rows:
        verdict, out = verdicts.get(row["index"], (VERDICT_NO_BOUNDS, []))
        row.update(verdict=verdict, out_of_range=",".join(out))
    return rows
