"""SwinBOBLogic: the module's public API for the GUI, other modules and scripts. No Qt.

    logic = SwinBOBLogic()
    result = logic.segment(volumeNode, SegmentationOptions(etta=True))      # in this process
    run = logic.startSegmentation(volumeNode, SegmentationOptions())         # background process
    while not run.job.finished: run.job.poll(); ...                           # (the widget: a QTimer)
    result = logic.finishSegmentation(run)
    logic.centreOnStructure(result.segmentationNode, "liver")

Both paths end in :meth:`SwinBOBLogic.loadResult`: a segmentation node (one segment per present
structure, UKBOB names, colours and terminology, the input as reference geometry), an entropy
volume on the input's grid (colour map, legend), and an organ table node (volume, SOLF shape
features, mean entropy, SOLF verdict against a bounds file), all placed beside the input in the
subject hierarchy. Errors are raised (ValueError / FileNotFoundError / RuntimeError with a message
for the user); the widget shows them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer

from SwinBOBLib import io as swinbob_io

from . import jobs, nodes, resource_path, samples
from .parameters import SegmentationOptions, parameterNamed, selectableNodes

#: Bundled files (Resources/...) used when no path is given.
DEMO_CHECKPOINT = ("Models", "swinbob_demo.pt")
DEFAULT_BOUNDS = ("SOLF", "default_bounds.json")
#: Opacity of the entropy map over the scan, and of the other segments while one is highlighted.
ENTROPY_OPACITY = 0.45
DIMMED_OPACITY = samples.DIMMED_OPACITY
VERDICT_OK, VERDICT_ONE_OUT, VERDICT_INACCURATE, VERDICT_NO_BOUNDS = (
    samples.VERDICT_OK, samples.VERDICT_ONE_OUT, samples.VERDICT_INACCURATE, samples.VERDICT_NO_BOUNDS)


@dataclass
class SegmentationResult:
    """Nodes made by one run, and what to tell the user."""

    segmentationNode: object
    entropyNode: object
    tableNode: object
    inputNode: object
    stats: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    scheme: str = "ukbob"
    labels: object = None  # the automatic (I, J, K) label map: what a correction is compared with

    @property
    def meanEntropy(self) -> float | None:
        return self.stats.get("mean_entropy")

    def entropySummary(self) -> str:
        """"Mean entropy 0.1230 (ETTA: 0.2010 -> 0.1500)", the line the module shows."""
        mean = self.meanEntropy
        text = f"Mean entropy {mean:.4f}" if mean is not None else "Mean entropy: n/a"
        before, after = self.stats.get("etta_before"), self.stats.get("etta_after")
        if before is not None and after is not None:
            text += f" (ETTA: {before:.4f} before -> {after:.4f} after adaptation)"
        return text


@dataclass
class SegmentationRun:
    """A background segmentation: the job, and what is needed to load its output."""

    job: jobs.BackgroundJob
    inputNode: object
    options: SegmentationOptions
    workdir: Path
    outdir: Path
    keepFiles: bool = False


def bundledFile(parts, what: str, hint: str) -> str:
    """Path of a bundled resource, or FileNotFoundError saying what is missing and what to do."""
    try:
        return resource_path(*parts)
    except FileNotFoundError:
        raise FileNotFoundError(f"The bundled {what} (Resources/{'/'.join(parts)}) is not in this build of "
                                f"SwinBOB. {hint}") from None


class SwinBOBLogic:
    """Segmentation, ETTA, entropy and SOLF review on MRML nodes.

    Args:
        scene: the MRML scene (default: ``slicer.mrmlScene`` at call time).
        modelLoader: ``path -> (model, metadata)`` (default :func:`SwinBOBLib.models.load_checkpoint`).
        jobFactory: ``(command, env=...) -> BackgroundJob``-like (tests inject fakes).
        torchModule: the torch module to describe devices with (tests inject fakes).
    """

    def __init__(self, scene=None, modelLoader=None, jobFactory=None, torchModule=None):
        self._scene = scene
        self._modelLoader = modelLoader
        self._jobFactory = jobFactory or jobs.BackgroundJob
        self._torch = torchModule
        self._modelCache: dict = {}

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    # ----------------------------------------------------------------- files and devices

    def checkpointPath(self, path: str = "") -> str:
        """``path`` checked to exist, or the bundled demo model when empty."""
        if not str(path or "").strip():
            return bundledFile(DEMO_CHECKPOINT, "demo model", "Choose a Swin-BOB / MONAI checkpoint file (.pt).")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return str(path)

    def boundsPath(self, path: str = "") -> str | None:
        """``path`` checked to exist, the bundled default bounds when empty, or None when neither
        exists (verdicts then read "no bounds")."""
        if str(path or "").strip():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"SOLF bounds file not found: {path}")
            return str(path)
        try:
            return resource_path(*DEFAULT_BOUNDS)
        except FileNotFoundError:
            return None

    def defaultInputVolume(self):
        """The first scan in the scene the panel can segment: a volume the input selector lists
        (a scalar or vector volume, not a label map, tensor or diffusion-weighted volume, which
        derive from the scalar class) that is not a result of this module (an entropy map); None
        when there is none."""
        for node in selectableNodes(self.scene, parameterNamed("inputVolume")):
            if not node.GetAttribute(nodes.ROLE_ATTRIBUTE):
                return node
        return None

    def availableDevices(self) -> list[tuple[str, str]]:
        """``[(device, description)]``: auto, each CUDA GPU with its name and memory, the CPU."""
        torch = self._torch
        if torch is None:
            import torch
        gpus = []
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                gpus.append((f"cuda:{index}", f"GPU {index}: {props.name} ({props.total_memory / 2**30:.1f} GB)"))
        auto = f"Auto ({gpus[0][1]})" if gpus else "Auto (no CUDA GPU found: CPU)"
        return [("auto", auto), *gpus, ("cpu", "CPU")]

    def loadModel(self, path: str):
        """``(model, metadata)`` of a checkpoint, cached by path and modification time."""
        key = (os.path.abspath(path), os.path.getmtime(path))
        if key not in self._modelCache:
            loader = self._modelLoader
            if loader is None:
                from SwinBOBLib.models.loading import load_checkpoint as loader
            self._modelCache = {key: loader(path)}
        return self._modelCache[key]

    # ----------------------------------------------------------------- segmentation

    def inputImage(self, inputNode, contrastNodes=()) -> swinbob_io.Image:
        """The input volume (plus extra same-grid contrast volumes, stacked as channels) as an Image."""
        return nodes.imageFromVolumeNodes([inputNode, *contrastNodes])

    def segment(self, inputNode, options: SegmentationOptions | None = None, contrastNodes=(),
                show: bool = True, ettaConfig=None, progress=None) -> SegmentationResult:
        """Segment ``inputNode`` in this process (blocks; for scripts, tests and small scans).

        ``progress(stage, done, total)`` is called as ETTA steps and sliding windows complete
        (stages ``"etta"``, ``"sliding_window"``), as the background process reports them.

        ``ettaConfig`` (an :class:`EttaConfig`) overrides the ETTA settings the options give, for
        scripts that tune more than steps and learning rate.

        Raises:
            ValueError: bad options, input or checkpoint; FileNotFoundError: missing files.
        """
        from SwinBOBLib.inference import segment_image

        options = options or SegmentationOptions()
        options.validate()
        checkpoint = self.checkpointPath(options.checkpointPath)
        bounds = self.boundsPath(options.boundsPath)
        image = self.inputImage(inputNode, contrastNodes)
        model, metadata = self.loadModel(checkpoint)
        result = segment_image(image, model, metadata, options.inferenceConfig(), ettaConfig or options.ettaConfig(),
                               progress=progress)
        stats = _flatStats(result.stats)
        return self.loadResult(inputNode, result.labels, result.entropy, stats, bounds, scheme=metadata.scheme,
                               structures=result.stats.get("structures"), show=show)

    # ----------------------------------------------------------------- what is loaded

    def modelSummary(self, path: str = "") -> dict:
        """What a checkpoint is, for the panel: ``{"path", "name", "demo", "description", "scheme",
        "text"}`` (``text``: the lines to show; a demo model says so plainly).

        Uses ``SwinBOBLib.inference.provenance.describe_checkpoint`` where the library has it, else
        the metadata of :func:`SwinBOBLib.models.load_checkpoint`. Raises what they raise for a bad file.
        """
        from SwinBOBLib.inference import provenance

        checkpoint = self.checkpointPath(path)
        describe = getattr(provenance, "describe_checkpoint", None)
        if describe is not None:
            info = dict(describe(checkpoint))
        else:
            _model, metadata = self.loadModel(checkpoint)
            info = {k: getattr(metadata, k, None) for k in ("name", "description", "demo", "network", "scheme",
                                                             "in_channels", "out_channels", "contrasts",
                                                             "target_spacing_mm")}
        return {**info, "path": checkpoint, "text": describeModel(info, checkpoint)}

    def boundsSummary(self, path: str = "") -> dict:
        """What a SOLF bounds file is: ``{"path", "scheme", "n_samples", "cohort", "text"}``, or
        ``{"path": None, "text": ...}`` when there are none. The ``cohort`` record (which cohort,
        at what spacing) is read where the file has one."""
        bounds = self.boundsPath(path)
        if bounds is None:
            return {"path": None, "text": "No SOLF bounds: verdicts read 'no bounds'."}
        try:
            data = json.loads(Path(bounds).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"SOLF bounds {bounds}: not readable as JSON ({error})") from error
        data = data if isinstance(data, dict) else {}
        cohort = data.get("cohort") if isinstance(data.get("cohort"), dict) else {}
        info = {"path": bounds, "scheme": data.get("scheme"), "n_samples": data.get("n_samples"), "cohort": cohort}
        return {**info, "text": describeBounds(info)}

    def startSegmentation(self, inputNode, options: SegmentationOptions | None = None, contrastNodes=(),
                          workdir=None, python: str | None = None) -> SegmentationRun:
        """Start ``swinbob segment`` on ``inputNode`` in a background process; returns at once.

        The input is written (exact voxels and geometry) to a working folder as NIfTI; poll
        ``run.job`` until it is finished, then call :meth:`finishSegmentation`.
        """
        options = options or SegmentationOptions()
        options.validate()
        checkpoint = self.checkpointPath(options.checkpointPath)
        self.boundsPath(options.boundsPath)
        image = self.inputImage(inputNode, contrastNodes)
        keepFiles = workdir is not None
        arguments = options.commandLineOptions()
        if options.contrast.strip():
            arguments[arguments.index("--contrast") + 1] = _contrastIndices(image, options.contrast)
        workdir = Path(workdir or tempfile.mkdtemp(prefix="SwinBOB-"))
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            imagePath = swinbob_io.save_image(image, workdir / "input.nii")
            outdir = workdir / "output"
            command = jobs.segmentCommand(imagePath, outdir, checkpoint, arguments, python)
            job = self._jobFactory(command, env=jobs.libraryEnvironment())
        except BaseException:
            if not keepFiles:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        return SegmentationRun(job, inputNode, options, workdir, outdir, keepFiles=keepFiles)

    def finishSegmentation(self, run: SegmentationRun, show: bool = True) -> SegmentationResult:
        """Load the output of a finished background run into nodes (see :meth:`loadResult`).

        Raises:
            RuntimeError: the job failed or was cancelled (with its error message).
        """
        try:
            status = run.job.poll()
            if status.state != jobs.SUCCEEDED:
                raise RuntimeError(f"Segmentation {status.state}: {status.message or run.job.errorText()}")
            try:
                labels = swinbob_io.load_labelmap(_single(run.outdir, "labels"), scheme=None)
                entropy = swinbob_io.load_image(_single(run.outdir, "entropy"))
                report = json.loads((run.outdir / "report.json").read_text(encoding="utf-8"))
                rows = _readOrgansCsv(run.outdir / "organs.csv")
            except (OSError, ValueError) as error:
                raise RuntimeError(f"Segmentation output in {run.outdir} is incomplete: {error}") from error
            stats = _reportStats(report)
            scheme = reportScheme(report)
            result = self.loadResult(run.inputNode, labels, entropy, stats, self.boundsPath(run.options.boundsPath),
                                     rows=rows, scheme=scheme, show=show)
            model = report.get("model") if isinstance(report.get("model"), dict) else {}
            if model.get("demo"):
                result.messages.insert(0, f"Demo model ({model.get('name') or 'bundled'}): "
                                          "trained on synthetic data, not Swin-BOB; do not use the labels.")
            return result
        finally:
            if run.job.finished:  # a run still going is left to the caller (poll, or discardRun)
                self.discardRun(run)

    def discardRun(self, run: SegmentationRun) -> None:
        """Remove a run's working folder (it holds a full copy of the input) unless the caller chose
        it; the job is cancelled first if it still runs. Safe to call more than once."""
        if not run.job.finished:
            run.job.cancel()
        if not run.keepFiles:
            shutil.rmtree(run.workdir, ignore_errors=True)

    def loadResult(self, inputNode, labels: swinbob_io.Image, entropy: swinbob_io.Image, stats: dict,
                   boundsPath: str | None, rows=None, scheme: str = "ukbob", structures=None,
                   show: bool = True) -> SegmentationResult:
        """Labels, entropy and organ rows (on ``inputNode``'s grid) -> nodes beside the input.

        Raises:
            ValueError: ``labels`` or ``entropy`` not on the input's grid.
        """
        reference = nodes.imageFromVolumeNode(inputNode)
        for what, image in (("labels", labels), ("entropy", entropy)):
            same = image.spatial_shape == reference.spatial_shape and np.allclose(image.affine, reference.affine,
                                                                                   atol=1e-3)
            if not same:
                raise ValueError(f"{what} grid {image.spatial_shape} does not match the input volume "
                                 f"'{inputNode.GetName()}' {reference.spatial_shape}")
        scene, base = self.scene, inputNode.GetName()
        segmentationNode = nodes.segmentationFromLabelmap(labels, scene, f"{base} SwinBOB", inputNode, scheme)
        entropyNode = nodes.entropyVolumeFromImage(entropy, scene, f"{base} entropy")
        if rows is None:
            from SwinBOBLib.outputs.organs import organ_rows

            rows = organ_rows(labels.array, entropy.array, reference.spacing, scheme, structures)
        tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{base} organs"))
        messages = self.fillOrganTable(tableNode, rows, boundsPath, stats, scheme=scheme, labels=labels)
        nodes.placeBesideInput(inputNode, [segmentationNode, entropyNode, tableNode])
        nodes.applyInputTransform(inputNode, [segmentationNode, entropyNode])
        result = SegmentationResult(segmentationNode, entropyNode, tableNode, inputNode, stats, messages, scheme,
                                    np.asarray(labels.array))
        if show:
            self.showResult(result)
        return result

    # ----------------------------------------------------------------- organ table

    def fillOrganTable(self, tableNode, rows, boundsPath: str | None, stats: dict | None = None,
                       scheme: str = "ukbob", labels=None) -> list[str]:
        """Fill ``tableNode`` with one row per present structure and its SOLF verdict.

        With the scan's ``labels`` (a SwinBOBLib Image), a structure is judged only on the features
        that compare with the bounds' cohort, as ``solf.csv`` of ``swinbob demo``: "not comparable"
        (with the reason in ``out_of_range``) where fewer than two do.

        ``scheme`` is the label scheme of the rows; bounds fitted on another scheme give no
        verdicts (a label value means another structure there), with a message.

        ``rows`` are ``swinbob segment``'s organs.csv rows (dicts; strings or numbers); structures
        with 0 voxels are left out. Missing structures (absent here, present in >= 95 % of the
        cohort) are listed in ``stats["missing_structures"]``. Returns messages for the user.
        """
        present = [r for r in rows if _number(r.get("voxels", 1)) > 0]
        verdicts, missing, messages = self.solfVerdicts(present, boundsPath, scheme, labels)
        table = []
        for row in present:
            index = int(_number(row["index"]))
            verdict, out = verdicts.get(index, (VERDICT_NO_BOUNDS, []))
            table.append({**row, "index": index, "verdict": verdict, "out_of_range": ",".join(out)})
        nodes.fillOrganTable(tableNode, table)
        tableNode.SetAttribute("SwinBOB.Bounds", boundsPath or "")
        tableNode.SetAttribute(nodes.ROLE_ATTRIBUTE, nodes.ORGAN_TABLE_ROLE)
        if stats is not None:
            stats["missing_structures"] = missing
        if missing:
            messages.append(f"Missing structures (present in >= 95 % of the cohort): {', '.join(missing)}")
        return messages

    def solfVerdicts(self, rows, boundsPath: str | None, scheme: str = "ukbob", labels=None):
        """``({label: (verdict, [out-of-range features])}, [missing names], [messages])``
        (:func:`.samples.solfVerdicts`, shared with the web review); ``labels``: the scan's label map
        Image, to judge only the features that compare."""
        if labels is None:
            return samples.solfVerdicts(rows, boundsPath, scheme)
        return samples.solfVerdicts(rows, boundsPath, scheme, labels.array, labels.spacing)

    # ----------------------------------------------------------------- display

    def showResult(self, result: SegmentationResult, show3D: bool = True, progress=None) -> None:
        """Input as background, entropy as a foreground overlay with a legend, segments in 2D and 3D.

        ``progress(text)`` is called before the closed surfaces are built (seconds for 71 structures).
        """
        for composite in _compositeNodes(self.scene):
            composite.SetBackgroundVolumeID(result.inputNode.GetID())
        self.setEntropyOverlay(result.entropyNode, True, ENTROPY_OPACITY)
        nodes.addColorLegend(result.entropyNode)
        self.setSegmentFill(result.segmentationNode, True)
        if show3D:
            self.showSurfaces(result.segmentationNode, progress)

    def showSurfaces(self, segmentationNode, progress=None) -> None:
        """Closed surfaces of every segment for the 3D view; ``progress(text)`` is told first."""
        count = segmentationNode.GetSegmentation().GetNumberOfSegments()
        if progress is not None:
            progress(f"Building 3D surfaces of {count} structures...")
        segmentationNode.CreateClosedSurfaceRepresentation()

    def setEntropyOverlay(self, entropyNode, visible: bool = True, opacity: float = ENTROPY_OPACITY) -> None:
        """The entropy map as every slice view's foreground at ``opacity`` (0-1), or no foreground."""
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"entropy overlay opacity {opacity}: use a value from 0 to 1")
        for composite in _compositeNodes(self.scene):
            if visible and entropyNode is not None:
                composite.SetForegroundVolumeID(entropyNode.GetID())
                composite.SetForegroundOpacity(opacity)
            elif entropyNode is None or composite.GetForegroundVolumeID() == entropyNode.GetID():
                composite.SetForegroundVolumeID(None)

    def setSegmentFill(self, segmentationNode, visible: bool = True, opacity: float | None = None) -> None:
        """Segments shown (outline always) with their 2D fill on or off at ``opacity`` (0-1)."""
        if opacity is not None and not 0.0 <= opacity <= 1.0:
            raise ValueError(f"segment fill opacity {opacity}: use a value from 0 to 1")
        display = segmentationNode.GetDisplayNode()
        display.SetVisibility(True)
        display.SetVisibility2DFill(bool(visible))
        if opacity is not None:
            display.SetOpacity2DFill(opacity)

    def centreOnStructure(self, segmentationNode, structure, highlight: bool = True) -> tuple[float, float, float]:
        """Centre every slice view on a structure (name, synonym or label value) and highlight it
        (:func:`.samples.centreOnStructure`). Returns the RAS point (mm) the views are centred on.

        Raises:
            ValueError: the structure is not in the segmentation, or is empty there.
        """
        center = samples.centreOnStructure(self.scene, segmentationNode, structure, highlight)
        if center is None:
            raise ValueError(f"structure '{structure}' is empty in '{segmentationNode.GetName()}'")
        return tuple(float(c) for c in center)

    def snapshot(self, result: SegmentationResult, path, orientation: str = "Axial", size=(512, 512),
                 center=None):
        """Save a slice view of a result (scan, entropy overlay, labels) as PNG; returns the path.

        Rendered by Slicer's slice pipeline without a GUI (see :mod:`.rendering`), so it works in
        batch scripts and headless sessions as well as in the application.
        """
        from . import rendering

        app = getattr(getattr(slicer, "app", None), "applicationLogic", lambda: None)()
        rgba = rendering.sliceImage(self.scene, result.inputNode, result.entropyNode, result.segmentationNode,
                                    orientation, size, center, applicationLogic=app)
        return rendering.writePng(rgba, path)

    def highlightStructure(self, segmentationNode, segmentId: str | None) -> None:
        """Full opacity for one segment, the others dimmed; ``None`` restores all."""
        samples.highlightStructure(segmentationNode, segmentId)


# --------------------------------------------------------------------- helpers


_compositeNodes = samples.compositeNodes
_number = samples._number


def _single(folder: Path, stem: str) -> Path:
    found = sorted(p for p in Path(folder).iterdir() if p.name.startswith(stem + "."))
    if not found:
        raise FileNotFoundError(f"{folder}: no {stem}.* file")
    return found[0]


def _readOrgansCsv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _contrastIndices(image: swinbob_io.Image, contrast: str) -> str:
    """Channel names -> indices (the NIfTI handed to the child keeps no names)."""
    names = [n.lower() for n in (image.channel_names or ())]
    picked = []
    for item in (c.strip() for c in contrast.split(",") if c.strip()):
        if item.isdigit():
            picked.append(item)
        elif item.lower() in names:
            picked.append(str(names.index(item.lower())))
        else:
            raise ValueError(f"no contrast '{item}' in the input; its channels are "
                             f"{', '.join(image.channel_names or ['0'])}")
    return ",".join(picked)


def _flatStats(stats: dict) -> dict:
    """The statistics the module shows, from :class:`Segmentation` stats."""
    etta = stats.get("etta") or {}
    return {"mean_entropy": stats.get("mean_entropy"), "etta_before": etta.get("entropy_before"),
            "etta_after": etta.get("entropy_after"), "device": stats.get("device"),
            "timings": stats.get("timings", {})}


def reportScheme(report: dict) -> str:
    """The label scheme a ``report.json`` names (its ``checkpoint.metadata.scheme``), UKBOB if none."""
    checkpoint = report.get("checkpoint") if isinstance(report.get("checkpoint"), dict) else {}
    metadata = checkpoint.get("metadata") if isinstance(checkpoint.get("metadata"), dict) else {}
    return str(metadata.get("scheme") or "ukbob")


def describeModel(info: dict, path: str) -> str:
    """The panel's lines about a model (from a checkpoint's description or metadata)."""
    name = info.get("name") or Path(path).name
    lines = [f"Model: {name}"]
    details = [str(info[k]) for k in ("network", "variant") if info.get(k)]
    if info.get("scheme"):
        details.append(f"{info['scheme']} labels")
    if info.get("in_channels"):
        contrasts = info.get("contrasts")
        details.append(f"{info['in_channels']} input channel(s)" + (f" ({', '.join(contrasts)})" if contrasts else ""))
    if details:
        lines.append(", ".join(details))
    if info.get("description"):
        lines.append(str(info["description"]))
    if info.get("demo"):
        lines.append("DEMO MODEL: trained on synthetic phantoms, it is not Swin-BOB. Its labels show the "
                     "workflow only; load a trained Swin-BOB checkpoint for real use.")
    return "\n".join(lines)


def describeBounds(info: dict) -> str:
    """The panel's lines about SOLF bounds: which cohort, how many samples, at what spacing."""
    cohort = info.get("cohort") or {}
    samples = cohort.get("n_samples", info.get("n_samples"))
    lines = [f"SOLF bounds: {Path(info['path']).name}" + (f" ({info['scheme']} labels)" if info.get("scheme") else "")]
    facts = []
    if cohort.get("name") or cohort.get("description"):
        facts.append(str(cohort.get("name") or cohort.get("description")))
    if samples is not None:
        facts.append(f"{samples} samples")
    spacing = cohort.get("spacing_mm") or cohort.get("spacing")
    if spacing:
        facts.append("spacing " + (" x ".join(f"{float(v):g}" for v in spacing) if isinstance(spacing, (list, tuple))
                                   else f"{spacing}") + " mm")
    if facts:
        lines.append(", ".join(facts))
    if cohort.get("synthetic") or cohort.get("demo"):
        lines.append("Fitted on a synthetic cohort: verdicts show the workflow only.")
    return "\n".join(lines)


def _reportStats(report: dict) -> dict:
    """The same statistics from ``report.json`` of ``swinbob segment``."""
    entropy = report.get("entropy") or {}
    return {"mean_entropy": entropy.get("mean"), "etta_before": entropy.get("etta_before"),
            "etta_after": entropy.get("etta_after"), "device": report.get("device"),
            "timings": report.get("timings", {})}
