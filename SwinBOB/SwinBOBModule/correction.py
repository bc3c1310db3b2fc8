"""Manual label correction (UKBOB-manual): a segmentation node edited in the Segment Editor back to
a UKBOB label map, saved into a dataset folder that ``swinbob train`` and ``swinbob benchmark`` read.

* The label value of each segment comes from its ``SwinBOB.LabelValue`` tag, else its name looked
  up in the UKBOB scheme (:func:`.nodes.segmentLabelValue`), never from the segment order: the
  Segment Editor reorders, adds and removes segments freely.
* The label map is written on the source image's grid (its affine), as ``labelsTr/CASE.nii.gz``;
  the image goes to ``imagesTr/CASE.<suffix>`` (copied byte for byte); ``dataset.json`` (scheme
  ``ukbob``) gets the case, atomically.
* ``provenance/CASE.json`` records the source label file and its SHA-256, the reviewer, the time,
  the structures edited and the agreement between automatic and corrected labels per structure
  (Dice, HD95 in mm): table 3 of the UKBOB paper measured exactly this.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from SwinBOBLib import io as swinbob_io
from SwinBOBLib import labels as swinbob_labels
from SwinBOBLib.evaluation import metrics

#: Columns of the agreement rows (automatic vs corrected, one row per structure in either).
AGREEMENT_COLUMNS = ("label", "structure", "voxels_automatic", "voxels_corrected", "volume_change_ml", "dice",
                     "hd95_mm")
#: Columns of ``DATASET/agreement.csv``: one row per corrected case and structure.
AGREEMENT_TABLE_COLUMNS = ("case", "reviewer", "time", *AGREEMENT_COLUMNS)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spacingOf(affine) -> tuple[float, float, float]:
    """Voxel spacing (mm) of an ``(4, 4)`` IJK -> RAS affine: the lengths of its first three columns."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def ukbobLabelmapFromSegmentation(segmentationNode, referenceVolumeNode, scene,
                                  scheme: str = "ukbob") -> swinbob_io.Image:
    """All segments as one ``(I, J, K)`` uint8/uint16 label map in the scheme's numbering, on
    ``referenceVolumeNode``'s grid (its affine).

    Segments are exported in their order (value = position + 1, Slicer's convention without a
    colour table), then renumbered by each segment's UKBOB value; where segments overlap the later
    one wins, as in Slicer's own export.

    Raises:
        ValueError: a segment whose name or tag is not a structure of ``scheme`` (the message names
            it), or two segments for one structure.
    """
    import slicer
    import vtk

    from . import nodes

    structures = swinbob_labels.get_scheme(scheme)
    segmentation = segmentationNode.GetSegmentation()
    values, seen = [0], {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        value = nodes.segmentLabelValue(segment, structures)
        if value is None or value not in structures.structures:
            raise ValueError(f"segment '{segment.GetName()}' of '{segmentationNode.GetName()}' is not a {scheme} "
                             f"structure; rename it to one (e.g. 'liver') or remove it before saving")
        if value in seen:
            raise ValueError(f"segments '{seen[value]}' and '{segment.GetName()}' are both {scheme} label {value} "
                             f"({structures.name_of(value)}); merge them before saving")
        seen[value] = segment.GetName()
        values.append(value)
    shape = referenceVolumeNode.GetImageData().GetDimensions()
    if len(values) == 1:
        return swinbob_io.Image(np.zeros(shape, dtype=np.uint8), nodes.volumeAffine(referenceVolumeNode))
    labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    colorTablesBefore = nodes._nodeIds(scene, "vtkMRMLColorTableNode")
    try:
        segmentIds = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(segmentIds)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, segmentIds, labelmapNode, referenceVolumeNode,
                slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise RuntimeError(f"exporting segmentation '{segmentationNode.GetName()}' to a label map failed")
        ordered = nodes.imageFromVolumeNode(labelmapNode)
    finally:
        nodes.removeNode(scene, labelmapNode)
        for nodeId in nodes._nodeIds(scene, "vtkMRMLColorTableNode") - colorTablesBefore:
            scene.RemoveNode(scene.GetNodeByID(nodeId))
    table = np.asarray(values, dtype=np.uint16)
    position = np.asarray(ordered.array).astype(np.int64)
    if position.max() >= len(table):
        raise RuntimeError(f"export gave label {position.max()} for {len(table) - 1} segments")
    array = swinbob_io.as_label_array(table[position], segmentationNode.GetName())
    return swinbob_io.Image(array, ordered.affine)


def agreementRows(automatic: np.ndarray, corrected: np.ndarray, spacing, scheme: str = "ukbob") -> list[dict]:
    """Per structure present in either map: voxel counts, volume change (ml, corrected minus
    automatic), Dice and HD95 (mm) of automatic vs corrected.

    Args:
        automatic, corrected: ``(I, J, K)`` label maps on one grid.
        spacing: voxel size in mm per axis.
    Dice is 1 and HD95 0 for identical structures; a structure in only one map has Dice 0 and
    HD95 as :func:`SwinBOBLib.evaluation.metrics.hausdorff` defines it for an empty side.
    """
    automatic, corrected = np.asarray(automatic), np.asarray(corrected)
    if automatic.shape != corrected.shape:
        raise ValueError(f"automatic {automatic.shape} and corrected {corrected.shape} label maps differ in shape")
    structures = swinbob_labels.get_scheme(scheme)
    rows = []
    for value in sorted((set(np.unique(automatic).tolist()) | set(np.unique(corrected).tolist())) - {0}):
        a, c = automatic == value, corrected == value
        try:
            name = structures.name_of(int(value))
        except KeyError:
            name = f"label_{value}"
        voxelMl = float(np.prod(spacing)) / 1000.0
        rows.append({"label": int(value), "structure": name, "voxels_automatic": int(a.sum()),
                     "voxels_corrected": int(c.sum()), "volume_change_ml": (int(c.sum()) - int(a.sum())) * voxelMl,
                     "dice": float(metrics.dice(a, c)),
                     "hd95_mm": float(metrics.hausdorff(a, c, spacing, percentile=95))})
    return rows


def editedStructures(automatic: np.ndarray, corrected: np.ndarray, scheme: str = "ukbob") -> list[str]:
    """Names of the structures whose voxels differ between the two label maps."""
    automatic, corrected = np.asarray(automatic), np.asarray(corrected)
    changed = automatic != corrected
    values = sorted((set(np.unique(automatic[changed]).tolist())
                     | set(np.unique(corrected[changed]).tolist())) - {0})
    structures = swinbob_labels.get_scheme(scheme)
    return [structures.name_of(int(v)) if int(v) in structures.structures else f"label_{v}" for v in values]


def _imageSuffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: the source image must be a .nii.gz, .nii, .nrrd or .mha file")


def updateDatasetJson(datasetDir, imageEntry: str, labelEntry: str, channelNames=None,
                      scheme: str = "ukbob") -> Path:
    """Add (or replace) one training pair in ``DATASETDIR/dataset.json``, created if absent, atomically."""
    path = Path(datasetDir) / "dataset.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {
        "name": Path(datasetDir).name, "description": "UKBOB-manual: labels corrected in 3D Slicer (SwinBOB)",
        "reference": "SwinBOB Slicer module", "tensorImageSize": "4D", "training": [], "test": []}
    structures = swinbob_labels.get_scheme(scheme)
    data["scheme"] = scheme
    data["labels"] = {"0": "background", **{str(v): s.name for v, s in sorted(structures.structures.items())}}
    if channelNames and "modality" not in data:
        data["modality"] = {str(i): str(n) for i, n in enumerate(channelNames)}
    data["training"] = [e for e in data.get("training", []) if e.get("label") != labelEntry] + \
        [{"image": imageEntry, "label": labelEntry}]
    data["numTraining"] = len(data["training"])
    return swinbob_io.write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def updateAgreementTable(datasetDir, record: dict) -> Path:
    """``DATASETDIR/agreement.csv``: the agreement rows of every corrected case (columns
    :data:`AGREEMENT_TABLE_COLUMNS`), this case's rows replacing its earlier ones; atomic."""
    path = Path(datasetDir) / "agreement.csv"
    rows = []
    if path.exists():
        with open(path, newline="", encoding="utf-8") as stream:
            rows = [row for row in csv.DictReader(stream) if row.get("case") != record["case"]]
    rows += [{"case": record["case"], "reviewer": record["reviewer"], "time": record["time"], **row}
             for row in record["agreement"]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AGREEMENT_TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return swinbob_io.write_text_atomic(path, buffer.getvalue())


def checkCaseId(caseId: str) -> str:
    """``caseId`` if it is a safe file stem (letters, digits, ``_-.``, not only dots), else ValueError."""
    if not caseId or set(caseId) <= {"."} or any(not (ch.isalnum() or ch in "_-.") for ch in caseId):
        raise ValueError(f"case id {caseId!r}: use letters, digits, '_', '-' or '.'")
    return caseId


def datasetFolder(path, requireAbsolute: bool = True) -> Path:
    """The dataset folder a path names; ValueError for an empty one (it would mean the current
    working folder: Slicer's, ``/`` on macOS) and, from the panel, for a relative one."""
    text = str(path or "").strip()
    if not text or text == ".":
        raise ValueError("choose a dataset folder for the corrected labels (none is set)")
    if requireAbsolute and not Path(text).is_absolute():
        raise ValueError(f"dataset folder {text!r}: choose a full path (a relative one would land in Slicer's "
                         "working folder)")
    return Path(text)


def saveCorrection(corrected: swinbob_io.Image, datasetDir, caseId: str, sourceImagePath,
                   sourceLabelPath=None, reviewer: str = "", automatic: np.ndarray | None = None,
                   scheme: str = "ukbob") -> dict:
    """Save a corrected label map as one case of a dataset folder; returns the provenance record.

    Args:
        corrected: ``(I, J, K)`` label map in the scheme's numbering on the source image's grid.
        datasetDir: dataset folder (created): ``imagesTr/``, ``labelsTr/``, ``provenance/``, ``dataset.json``.
        caseId: file stem of the case (letters, digits, ``_-.``).
        sourceImagePath: the scan; copied unchanged to ``imagesTr`` and its geometry used for the labels.
        sourceLabelPath: the automatic label file the correction started from (hashed; read for the
            agreement when ``automatic`` is not given).
        automatic: the automatic ``(I, J, K)`` label map (default: read from ``sourceLabelPath``).
    Raises:
        ValueError: bad case id, or the label map is not on the source image's grid.
    """
    checkCaseId(caseId)
    datasetFolder(datasetDir, requireAbsolute=False)
    sourceImagePath = Path(sourceImagePath)
    source = swinbob_io.load_image(sourceImagePath)
    array = swinbob_io.as_label_array(np.asarray(corrected.array), caseId)
    if array.shape != source.spatial_shape:
        raise ValueError(f"corrected label map {array.shape} is not on the grid of {sourceImagePath} "
                         f"{source.spatial_shape}")
    if not np.allclose(corrected.affine, source.affine, atol=1e-3):
        raise ValueError(f"corrected label map's geometry differs from {sourceImagePath}'s; export the "
                         "segmentation with the source volume as reference")
    swinbob_labels.get_scheme(scheme).validate_labelmap(array, source=caseId)
    root = Path(datasetDir)
    imageName = f"imagesTr/{caseId}{_imageSuffix(sourceImagePath)}"
    if (root / imageName).resolve() != sourceImagePath.resolve():
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        shutil.copy2(sourceImagePath, root / imageName)
    labelName = f"labelsTr/{caseId}.nii.gz"
    if sourceLabelPath and (root / labelName).resolve() == Path(sourceLabelPath).resolve():
        raise ValueError(f"{root / labelName} is the automatic label the correction started from; choose "
                         "another dataset folder (a correction never replaces the automatic label)")
    swinbob_io.save_labelmap(array, source, root / labelName, scheme=scheme)
    if automatic is None and sourceLabelPath:
        automatic = swinbob_io.load_labelmap(sourceLabelPath).array
    record = {
        "case": caseId, "image": imageName, "label": labelName, "scheme": scheme, "reviewer": reviewer,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_image": str(sourceImagePath), "source_image_sha256": sha256(sourceImagePath),
        "source_label": str(sourceLabelPath or ""),
        "source_label_sha256": sha256(sourceLabelPath) if sourceLabelPath else "",
        "edited_structures": editedStructures(automatic, array, scheme) if automatic is not None else [],
        "agreement": agreementRows(automatic, array, spacingOf(source.affine), scheme) if automatic is not None else [],
    }
    swinbob_io.write_text_atomic(root / "provenance" / f"{caseId}.json", json.dumps(record, indent=1) + "\n")
    updateAgreementTable(root, record)
    updateDatasetJson(root, f"./{imageName}", f"./{labelName}", source.channel_names, scheme)
    return record


def saveCorrectionFromSegmentation(segmentationNode, referenceVolumeNode, scene, datasetDir, caseId: str,
                                   sourceImagePath, sourceLabelPath=None, reviewer: str = "",
                                   automatic: np.ndarray | None = None) -> dict:
    """:func:`ukbobLabelmapFromSegmentation` then :func:`saveCorrection` (the panel's Save button).
    ``referenceVolumeNode`` must hold the source image's grid (as loaded from ``sourceImagePath``)."""
    corrected = ukbobLabelmapFromSegmentation(segmentationNode, referenceVolumeNode, scene)
    return saveCorrection(corrected, datasetDir, caseId, sourceImagePath, sourceLabelPath, reviewer, automatic)


def saveCorrectionFromResult(segmentationNode, volumeNode, scene, datasetDir, caseId: str, reviewer: str = "",
                             automatic: np.ndarray | None = None) -> dict:
    """Save a corrected Segment result (no source file needed): the input volume node is written as
    ``imagesTr/CASE.nii.gz`` (its exact voxels and geometry), the segments as its label map.

    Args:
        segmentationNode: the result, as edited in the Segment Editor.
        volumeNode: the input volume it was computed on (its grid is the label map's).
        automatic: the ``(I, J, K)`` label map the model produced (``SegmentationResult.labels``),
            for the agreement and the edited structures; None records neither.
    Raises:
        ValueError: empty dataset folder, bad case id, a segment that is no UKBOB structure.
    """
    from . import nodes

    checkCaseId(caseId)
    root = datasetFolder(datasetDir, requireAbsolute=False)
    corrected = ukbobLabelmapFromSegmentation(segmentationNode, volumeNode, scene)
    imagePath = root / "imagesTr" / f"{caseId}.nii.gz"
    imagePath.parent.mkdir(parents=True, exist_ok=True)
    swinbob_io.save_image(nodes.imageFromVolumeNode(volumeNode), imagePath)
    return saveCorrection(corrected, root, caseId, imagePath, None, reviewer, automatic)
