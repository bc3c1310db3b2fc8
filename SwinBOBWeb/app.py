"""The web review app: real Slicer views of the QC queue (trame-slicer on slicer-core), the queue,
the decision buttons, the why-flagged panel and the correction tools.

Everything the page shows of a sample comes from ``SwinBOBModule``'s Qt-free code, as in the Slicer
panel: :mod:`SwinBOBModule.samples` loads and centres the sample and builds its organ table,
:mod:`SwinBOBModule.review` (through :mod:`.desk`) records decisions, :mod:`SwinBOBModule.correction`
saves corrections. The views and the queue position are shared by everyone connected (one scene
per server); the reviewer name is each browser's own.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen, no display needed

import numpy as np
import slicer
from SwinBOBModule import correction, nodes, review, samples
from trame.app import TrameApp
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import (
    BrushDiameterMode,
    SegmentationEffectErase,
    SegmentationEffectNoTool,
    SegmentationEffectPaint,
    SegmentationEffectThreshold,
)

from SwinBOBLib import io as swinbob_io

from . import ui
from .desk import RULES, ReviewDesk, item_key
from .folder import ReviewFolder

log = logging.getLogger(__name__)

#: Opacity of the entropy map over the scan (as in the Slicer panel).
ENTROPY_OPACITY = 0.45
#: Correction effects: name on the page -> trame-slicer effect.
EFFECTS = {"paint": SegmentationEffectPaint, "erase": SegmentationEffectErase,
           "threshold": SegmentationEffectThreshold}
#: Paint and erase brush diameter (mm).
BRUSH_MM = 12.0


@dataclass
class LoadedSample:
    """The nodes of the sample in the views, and its arrays for the numbers beside them."""

    item: review.ReviewItem
    volume: object
    segmentation: object
    entropy: object
    labels: np.ndarray | None = None  # (I, J, K) automatic label map
    entropyArray: np.ndarray | None = None  # (I, J, K) normalised entropy, 0-1

    def nodes(self) -> list:
        return [n for n in (self.volume, self.segmentation, self.entropy) if n is not None]


class ReviewApp(TrameApp):
    """One server's review desk on a folder; see the module docstring."""

    def __init__(self, server, folder: ReviewFolder, reviewer: str = ""):
        super().__init__(server)
        self.folder, self.desk = folder, ReviewDesk(folder)
        self.slicer = SlicerApp()
        slicer.mrmlScene = self.slicer.scene  # slicer.util reads it (no application here)
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layouts = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layouts.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layouts.set_layout("Quad View")
        self.loaded: LoadedSample | None = None
        self._initState(reviewer)
        ui.build(self)
        # Data is loaded once the server runs: loaded earlier, the slice views render black.
        self.server.controller.on_server_ready.add(lambda **_: self.showCurrent())

    @property
    def state(self):
        return self.server.state

    def _initState(self, reviewer: str) -> None:
        state = self.state
        state.trame__title = "SwinBOB review"
        state.reviewer = reviewer
        state.client_only("reviewer")  # each browser names its own reviewer
        state.update({"queue_rows": [], "counts_text": "", "rules": ["", *RULES],
                      "structures": ["", *self.desk.session.structures()],
                      "states": ["", review.PENDING, *review.DECISIONS], "filter_rule": "", "filter_structure": "",
                      "filter_state": "", "current_key": "", "current_position": -1, "current_title": "",
                      "why_rows": [], "organ_rows": [], "mean_entropy_text": "", "entropy_visible": True,
                      "has_entropy": False, "sample_error": "", "notice": "", "others_text": "", "effect": "",
                      "threshold_min": 0.0, "threshold_max": 0.0, "saved_text": "", "legend": entropyLegend()})
        state.change("entropy_visible")(self.onEntropyVisible)
        state.change("filter_rule", "filter_structure", "filter_state")(self.onFilter)

    # ----------------------------------------------------------------- the queue

    def refreshQueue(self) -> None:
        counts = self.desk.counts()
        self.state.queue_rows = self.desk.rows()
        self.state.counts_text = (f"{counts['reviewed']} reviewed, {counts['left']} left of {counts['total']}"
                                  f" ({counts['shown']} shown)")

    def onFilter(self, filter_rule="", filter_structure="", filter_state="", **_) -> None:
        try:
            self.desk.set_filter(filter_rule or "", filter_structure or "", filter_state or "")
        except ValueError as error:
            self.state.notice = str(error)
        self.showCurrent()

    def step(self, direction: int, reviewer: str = "") -> None:
        self.desk.step(int(direction))
        self.showCurrent(reviewer)

    def pick(self, position: int, reviewer: str = "") -> None:
        try:
            self.desk.go_to(int(position))
        except (TypeError, ValueError) as error:
            self.state.notice = str(error)
        self.showCurrent(reviewer)

    def jump(self, structure: str, reviewer: str = "") -> None:
        self.desk.jump_to_structure(str(structure))
        self.showCurrent(reviewer)

    def decide(self, decision: str, reviewer: str, key: str) -> None:
        """A decision button: ``decision`` on the item ``key`` the browser showed, by ``reviewer``."""
        try:
            decided = self.desk.decide(str(decision), str(reviewer or ""), str(key))
        except (ValueError, OSError) as error:
            self.state.notice = str(error)
            return
        self.state.notice = decided.notice
        self.showCurrent(reviewer)

    # ----------------------------------------------------------------- the current item

    def showCurrent(self, reviewer: str = "") -> None:
        """Show the current item: its sample in the views (loaded once per sample), the structure
        centred and highlighted, why it was flagged, its organ table; a message for broken files."""
        with self.state:
            self.refreshQueue()
            item = self.desk.current
            self.state.current_key = item_key(item) if item else ""
            self.state.current_position = self.desk.session.position if item else -1
            if item is None:
                self.state.current_title = "Nothing to review with this filter."
                return
            self.desk.seen(reviewer, item.sample)
            others = self.desk.others_on(item.sample, reviewer)
            self.state.others_text = f"Also on {item.sample}: {', '.join(others)}" if others else ""
            self.state.current_title = f"{item.sample} (rank {item.rank}): {item.structure}, {item.kind}"
            if not self._ensureLoaded(item):
                return
            samples.centreOnItem(self.slicer.scene, self.loaded.segmentation, item.label)
            fillOnly(self.loaded.segmentation, item.label)
            self.state.why_rows = whyRows(self.desk.session.featureContext(item))
            self.state.organ_rows = samples.sampleOrganRows(self.folder.root, item.sample)
            self.state.mean_entropy_text = self._meanEntropyText(item)
            record = self.desk.session.decisions.get(item.key)
            self.state.current_title += (f" (decided: {record['decision']} by {record.get('reviewer') or '?'})"
                                         if record else "")

    def _ensureLoaded(self, item) -> bool:
        if self.loaded is not None and self.loaded.item.sample == item.sample:
            self.loaded.item = item
            return True
        self._unload()
        try:
            self.loaded = self._load(item)
        except Exception as error:  # a missing or broken file: say so where the views are
            log.exception("loading %s failed", item.sample)
            self.state.sample_error = f"{item.sample} cannot be shown: {error}"
            self.state.why_rows, self.state.organ_rows, self.state.has_entropy = [], [], False
            return False
        self.state.sample_error = ""
        self.state.has_entropy = self.loaded.entropy is not None
        return True

    def _load(self, item) -> LoadedSample:
        scene = self.slicer.scene
        volume, segmentation = samples.loadSampleNodes(scene, item)
        if volume is None:
            raise ValueError(f"the QC list names no image for {item.sample}")
        entropy = samples.loadSampleEntropy(scene, item)
        loaded = LoadedSample(item, volume, segmentation, entropy, swinbob_io.load_labelmap(item.labelmap).array)
        if entropy is not None:
            loaded.entropyArray = np.asarray(swinbob_io.load_image(samples.sampleEntropyPath(item)).array)
        segmentation.CreateClosedSurfaceRepresentation()  # the labels in the 3D view
        samples.showSampleLayers(scene, volume, entropy if self.state.entropy_visible else None, ENTROPY_OPACITY)
        self.slicer.display_manager.reset_views()
        return loaded

    def _unload(self) -> None:
        self.slicer.segmentation_editor.set_active_effect_type(SegmentationEffectNoTool)
        self.state.effect = ""
        if self.loaded is not None:
            samples.showSampleLayers(self.slicer.scene, None, None)
            for node in self.loaded.nodes():
                nodes.removeNode(self.slicer.scene, node)
        self.loaded = None

    def _meanEntropyText(self, item) -> str:
        if self.loaded is None or self.loaded.entropyArray is None:
            return "No entropy map beside this label map."
        if self.loaded.entropyArray.shape != self.loaded.labels.shape:
            return "The entropy map is not on the label map's grid."
        value = samples.structureMeanEntropy(self.loaded.entropyArray, self.loaded.labels, item.label)
        return f"Mean entropy of {item.structure}: " + ("absent" if math.isnan(value) else f"{value:.3f}")

    def onEntropyVisible(self, entropy_visible=True, **_) -> None:
        if self.loaded is not None and self.loaded.entropy is not None:
            samples.showSampleLayers(self.slicer.scene, self.loaded.volume,
                                     self.loaded.entropy if entropy_visible else None, ENTROPY_OPACITY)

    # ----------------------------------------------------------------- correction

    def startEffect(self, name: str) -> None:
        """Paint, erase or threshold on the current item's structure (trame-slicer's segment editor)."""
        item = self.desk.current
        if name not in EFFECTS or item is None or self.loaded is None:
            return
        editor = self.slicer.segmentation_editor
        try:
            segmentId = nodes.segmentIdOfStructure(self.loaded.segmentation, item.label)
        except ValueError:  # a missing structure: start it
            segmentId = self.loaded.segmentation.GetSegmentation().AddEmptySegment("", item.structure)
            self.loaded.segmentation.GetSegmentation().GetSegment(segmentId).SetTag(nodes.LABEL_VALUE_TAG,
                                                                                     str(item.label))
        editor.set_active_segmentation(self.loaded.segmentation, self.loaded.volume)
        editor.set_active_segment_id(segmentId)
        effect = editor.set_active_effect_type(EFFECTS[name])
        if name in ("paint", "erase"):
            effect.set_brush_diameter(BRUSH_MM, BrushDiameterMode.Absolute)
        if name == "threshold":
            low, high = self.loaded.volume.GetImageData().GetScalarRange()
            self.state.threshold_min, self.state.threshold_max = float(low), float(high)
            effect.set_threshold_min_max_values((float(low), float(high)))
        self.state.effect = name

    def applyThreshold(self, low: float, high: float) -> None:
        effect = self.slicer.segmentation_editor.active_effect
        if isinstance(effect, SegmentationEffectThreshold):
            effect.set_threshold_min_max_values((float(low), float(high)))
            effect.apply()

    def stopEffect(self) -> None:
        self.slicer.segmentation_editor.set_active_effect_type(SegmentationEffectNoTool)
        self.state.effect = ""

    def saveCorrection(self, reviewer: str) -> None:
        """Write the edited labels into ``OUT/ukbob_manual`` (:mod:`SwinBOBModule.correction`) and
        record the item as ``correct`` with the saved file in the comment."""
        item = self.desk.current
        if item is None or self.loaded is None:
            return
        try:
            if not str(reviewer or "").strip():
                raise ValueError("enter your name (Reviewer) before saving a correction")
            record = correction.saveCorrectionFromSegmentation(
                self.loaded.segmentation, self.loaded.volume, self.slicer.scene, self.folder.dataset,
                item.sample, item.image, item.labelmap, str(reviewer), automatic=self.loaded.labels)
            self.desk.decide(review.CORRECT, str(reviewer), item_key(item),
                             comment=f"corrected: {self.folder.dataset.name}/{record['label']}")
        except (ValueError, OSError, RuntimeError) as error:
            self.state.notice = f"Saving the correction failed: {error}"
            return
        row = next((r for r in record["agreement"] if r["label"] == item.label), None)
        self.state.saved_text = (f"Saved {self.folder.dataset.name}/{record['label']}" + (
            f": {item.structure} Dice {row['dice']:.3f}, volume change {row['volume_change_ml']:+.2f} ml"
            if row else ""))
        self.stopEffect()
        self.showCurrent(reviewer)


def fillOnly(segmentationNode, label: int) -> None:
    """Only the flagged structure filled, every other one as an outline: the slice views'
    segment fill, even dimmed, hides the scan under 71 structures."""
    display = segmentationNode.GetDisplayNode()
    segmentation = segmentationNode.GetSegmentation()
    try:
        flagged = nodes.segmentIdOfStructure(segmentationNode, label)
    except ValueError:
        flagged = None
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        display.SetSegmentOpacity2DFill(segmentId, 0.6 if segmentId == flagged else 0.0)


def whyRows(context: dict) -> list[dict]:
    """Feature rows for the page: value, cohort bounds, and how far outside them (in bound widths)."""
    rows = []
    for feature, entry in context.items():
        value, low, high = entry.get("value"), entry.get("low"), entry.get("high")
        beyond = ""
        if value is not None and low is not None and high is not None:
            width = max(high - low, 1e-12)
            if value < low:
                beyond = f"below by {low - value:.3g} ({(low - value) / width:.2f} x range)"
            elif value > high:
                beyond = f"above by {value - high:.3g} ({(value - high) / width:.2f} x range)"
        rows.append({"feature": feature.replace("_", " "), "value": "n/a" if value is None else f"{value:.4g}",
                     "bounds": "no bounds" if low is None else f"[{low:.4g}, {high:.4g}]",
                     "out": bool(entry.get("out_of_range")), "beyond": beyond or "within"})
    return rows


def entropyLegend() -> str:
    """CSS gradient of the entropy colour ramp (:data:`SwinBOBModule.nodes.ENTROPY_COLOURS`)."""
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in nodes.ENTROPY_COLOURS)
    return f"linear-gradient(to right, {stops})"
