"""The page of the web review: a thin vuetify layout over :class:`.app.ReviewApp`'s state.

Buttons pass the browser's own reviewer name and the item it shows (``current_key``) with each
call, so a decision lands on the item the reviewer saw. Keys: n / p next and previous item,
a / r / c accept, reject, needs correction, e entropy overlay, j jump to the structure chosen in
the queue's structure filter.
"""

from __future__ import annotations

import json

from trame.widgets import client, html
from trame.widgets import vuetify3 as v
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

#: Keyboard shortcuts: key -> id of the button it presses (not while typing in a field).
KEYS = {"n": "swb-next", "p": "swb-previous", "a": "swb-accept", "r": "swb-reject", "c": "swb-correct",
        "e": "swb-entropy", "j": "swb-jump"}

KEYS_SCRIPT = """
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
  const button = document.getElementById(KEYS[event.key]);
  if (button && !button.disabled) { event.preventDefault(); button.click(); }
});
""".replace("KEYS", json.dumps(KEYS))

STYLE = """
html { overflow-y: hidden; }
.swb-side { width: 340px; height: 100%; overflow-y: auto; padding: 8px; font-size: 13px; }
.swb-side table { border-collapse: collapse; width: 100%; }
.swb-side td, .swb-side th { padding: 1px 4px; text-align: left; border-bottom: 1px solid #ddd; }
.swb-out { color: #c00000; font-weight: bold; }
.swb-row { cursor: pointer; }
.swb-row.swb-current { background: #dbe9ff; }
.swb-legend { height: 10px; width: 100%; border: 1px solid #888; }
"""


def build(app) -> None:
    """The whole page: toolbar (queue steps, decisions, reviewer), drawer (queue), content (views
    and the why-flagged panel)."""
    with SinglePageWithDrawerLayout(app.server, full_height=True) as layout:
        layout.title.set_text("SwinBOB review")
        client.Style(STYLE)
        client.Script(KEYS_SCRIPT)
        with layout.toolbar:
            _toolbar(app)
        with layout.drawer as drawer:
            drawer.width = 380
            _queue(app)
        with layout.content, html.Div(style="display: flex; height: calc(100vh - 88px);"):
            with html.Div(id="swb-views", style="flex: 1; display: flex; flex-direction: column; min-width: 0;"):
                v.VAlert(v_if="sample_error", type="error", text=("sample_error",), density="compact")
                app.layouts.initialize_layout_grid(layout)
            with html.Div(classes="swb-side"):
                _side(app)
    app.ui = layout


def _button(text, click, id_, key, **kwargs):
    kwargs.setdefault("classes", "mx-1")
    return v.VBtn(text, id=id_, click=click, aria_keyshortcuts=key, variant="tonal", density="compact", **kwargs)


def _toolbar(app) -> None:
    v.VSpacer()
    _button("Previous", (app.step, "[-1, reviewer]"), "swb-previous", "p")
    _button("Next", (app.step, "[1, reviewer]"), "swb-next", "n")
    v.VDivider(vertical=True, classes="mx-2")
    _button("Accept", (app.decide, "['accept', reviewer, current_key]"), "swb-accept", "a", color="green",
            disabled=("!current_key",))
    _button("Reject", (app.decide, "['reject', reviewer, current_key]"), "swb-reject", "r", color="red",
            disabled=("!current_key",))
    _button("Needs correction", (app.decide, "['correct', reviewer, current_key]"), "swb-correct", "c",
            color="orange", disabled=("!current_key",))
    v.VDivider(vertical=True, classes="mx-2")
    _button("Entropy", "entropy_visible = !entropy_visible", "swb-entropy", "e",
            disabled=("!has_entropy",), active=("entropy_visible && has_entropy",))
    v.VTextField(v_model=("reviewer",), label="Reviewer", density="compact", hide_details=True,
                 style="max-width: 160px;", classes="mx-2", id="swb-reviewer")


def _queue(app) -> None:
    with html.Div(classes="pa-2", style="font-size: 13px;"):
        html.Div("{{ counts_text }}", id="swb-counts", classes="mb-2")
        v.VSelect(v_model=("filter_rule",), items=("rules",), label="Rule", density="compact", hide_details=True)
        v.VSelect(v_model=("filter_structure",), items=("structures",), label="Structure", density="compact",
                  hide_details=True)
        v.VSelect(v_model=("filter_state",), items=("states",), label="Decision", density="compact",
                  hide_details=True)
        _button("Jump to structure", (app.jump, "[filter_structure, reviewer]"), "swb-jump", "j",
                disabled=("!filter_structure",), classes="my-1")
        with html.Table(style="width: 100%; border-collapse: collapse;"):
            with html.Tr():
                for title in ("#", "Sample", "Structure", "Why", "Decision"):
                    html.Th(title, style="text-align: left;")
            with html.Tr(v_for="row in queue_rows", key="row.key", click=(app.pick, "[row.position, reviewer]"),
                         classes=("row.position === current_position ? 'swb-row swb-current' : 'swb-row'",)):
                html.Td("{{ row.rank }}")
                html.Td("{{ row.sample }}")
                html.Td("{{ row.structure }}")
                html.Td("{{ row.why }}")
                html.Td("{{ row.decision }}{{ row.reviewer ? ' (' + row.reviewer + ')' : '' }}")


def _side(app) -> None:
    html.H3("{{ current_title }}", id="swb-current")
    v.VAlert(v_if="notice", text=("notice",), type="warning", density="compact", closable=True, id="swb-notice",
             classes="my-1")
    html.Div("{{ others_text }}", v_if="others_text", classes="swb-out", id="swb-others")
    html.H4("Why it was flagged (SOLF features vs cohort bounds)", classes="mt-2")
    with html.Table():
        with html.Tr(v_for="row in why_rows", key="row.feature"):
            html.Td("{{ row.feature }}")
            html.Td("{{ row.value }}")
            html.Td("{{ row.bounds }}")
            html.Td("{{ row.beyond }}", classes=("row.out ? 'swb-out' : ''",))
    html.Div("{{ mean_entropy_text }}", classes="mt-1")
    html.H4("Entropy overlay", classes="mt-2")
    html.Div(classes="swb-legend", style=("{ background: legend }",))
    html.Div("0 certain \u2192 1 unsure (normalised entropy)", style="font-size: 11px;")
    _correction(app)
    html.H4("Organ table (SOLF verdicts)", classes="mt-2")
    with html.Table(id="swb-organs"):
        with html.Tr():
            for title in ("Structure", "Verdict", "Out of range"):
                html.Th(title)
        with html.Tr(v_for="row in organ_rows", key="row.index"):
            html.Td("{{ row.name }}")
            html.Td("{{ row.verdict }}", classes=("row.verdict === 'inaccurate' ? 'swb-out' : ''",))
            html.Td("{{ row.out_of_range }}")


def _correction(app) -> None:
    html.H4("Correct the structure", classes="mt-2")
    with html.Div(classes="d-flex flex-wrap"):
        for name, title in (("paint", "Paint"), ("erase", "Erase"), ("threshold", "Threshold")):
            v.VBtn(title, click=(app.startEffect, f"['{name}']"), density="compact", classes="ma-1",
                   variant=(f"effect === '{name}' ? 'flat' : 'tonal'",), disabled=("!current_key || !!sample_error",))
        v.VBtn("Stop editing", click=app.stopEffect, density="compact", classes="ma-1", disabled=("!effect",))
    with html.Div(v_if="effect === 'threshold'", classes="d-flex"):
        v.VTextField(v_model_number=("threshold_min",), label="min", type="number", density="compact",
                     hide_details=True)
        v.VTextField(v_model_number=("threshold_max",), label="max", type="number", density="compact",
                     hide_details=True)
        v.VBtn("Apply threshold", click=(app.applyThreshold, "[threshold_min, threshold_max]"), density="compact")
    v.VBtn("Save correction", click=(app.saveCorrection, "[reviewer]"), density="compact", classes="ma-1",
           color="primary", disabled=("!current_key || !!sample_error",))
    html.Div("{{ saved_text }}", id="swb-saved")
