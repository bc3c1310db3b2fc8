"""Markdown report of a SOLF cohort run, with per-structure distributions before and after filtering
(like the UKBOB paper's figure 8) drawn by matplotlib (Agg, no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from SwinBOBLib.io.files import write_text_atomic
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.solf.bounds import SOLF_FEATURES, Bounds
from SwinBOBLib.solf.tables import structure_namer

FIGURE_DISTRIBUTIONS = "distributions.png"


FIGURE_MEAN_VOLUME = "mean_normalized_volume.png"


def values_before_after(cohort: Mapping[str, Mapping[int, Mapping]], flags: Mapping[str, Mapping[int, Mapping]],
                        label: int, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of one feature of one structure over all samples, and over those where the structure
    was not flagged inaccurate."""
    before, after = [], []
    for sample_id, sample in cohort.items():
        if label in sample:
            before.append(sample[label][feature])
            if not flags[sample_id].get(label, {}).get("inaccurate", False):
                after.append(sample[label][feature])
    return np.asarray(before), np.asarray(after)


def _horizontal_boxes() -> dict:
    """Horizontal boxes: ``orientation=`` from matplotlib 3.10 on (``vert=False`` warns there)."""
    import inspect

    from matplotlib.axes import Axes

    if "orientation" in inspect.signature(Axes.boxplot).parameters:
        return {"orientation": "horizontal"}
    return {"vert": False}



def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def structure_groups(labels: Sequence[int], scheme: str | None) -> list[tuple[str, list[int]]]:
    """``[(group name, labels)]`` in the scheme's group order (all in one "structures" group
    without a scheme, or for labels the scheme lacks: "other")."""
    if scheme is None:
        return [("structures", list(labels))]
    table = get_scheme(scheme).structures
    groups: dict[str, list[int]] = {}
    for label in labels:
        groups.setdefault(table[label].group if label in table else "other", []).append(label)
    return list(groups.items())


def plot_distributions(cohort, flags, labels: Sequence[int], path: str | os.PathLike,
                       scheme: str | None = None) -> None:
    """Box plots of the three SOLF features per structure before (grey) and after (blue)
    filtering: one row of panels per structure group, one column per feature, structures named
    on the vertical axis (horizontal boxes, so every name stays readable)."""
    plt = _pyplot()
    horizontal = _horizontal_boxes()
    name = structure_namer(scheme)
    groups = structure_groups(labels, scheme)
    heights = [max(2, len(members)) for _, members in groups]
    figure, axes = plt.subplots(len(groups), len(SOLF_FEATURES), squeeze=False,
                                figsize=(14, 0.28 * sum(heights) + 1.2 * len(groups) + 1),
                                gridspec_kw={"height_ratios": heights})
    for row, (group, members) in enumerate(groups):
        positions = np.arange(len(members))
        for column, feature in enumerate(SOLF_FEATURES):
            axis = axes[row, column]
            pairs = [values_before_after(cohort, flags, label, feature) for label in members]
            for offset, index, color in ((0.2, 0, "0.6"), (-0.2, 1, "tab:blue")):
                data = [p[index] if len(p[index]) else np.array([np.nan]) for p in pairs]
                axis.boxplot(data, positions=positions + offset, widths=0.35, **horizontal, showfliers=True,
                             flierprops={"markersize": 2}, patch_artist=True,
                             boxprops={"facecolor": color, "linewidth": 0.5}, medianprops={"color": "k"})
            axis.set_yticks(positions)
            axis.set_yticklabels([name(label) for label in members] if column == 0 else [], fontsize=8)
            axis.set_ylim(-0.7, len(members) - 0.3)
            axis.invert_yaxis()
            if feature == "normalized_volume":
                axis.set_xscale("log")
            axis.set_title(f"{group}: {feature.replace('_', ' ')}" if column else f"{group}", fontsize=9,
                           loc="left")
            axis.tick_params(axis="x", labelsize=7)
    for column, feature in enumerate(SOLF_FEATURES):
        axes[-1, column].set_xlabel(feature.replace("_", " "))
    figure.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="0.6"), plt.Rectangle((0, 0), 1, 1, color="tab:blue")],
                  labels=["before filtering", "after (structures flagged inaccurate removed)"], loc="upper center",
                  ncol=2, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_mean_volumes(cohort, flags, labels: Sequence[int], path: str | os.PathLike,
                      scheme: str | None = None) -> None:
    """Mean normalised volume of each structure before and after filtering (paper figure 8)."""
    plt = _pyplot()
    name = structure_namer(scheme)
    means = np.array([[np.mean(v) if len(v) else np.nan for v in values_before_after(cohort, flags, label,
                                                                                    "normalized_volume")]
                      for label in labels]).reshape(-1, 2)
    figure, axis = plt.subplots(figsize=(max(8.0, 0.25 * len(labels) + 2), 4))
    positions = np.arange(len(labels))
    axis.bar(positions - 0.2, means[:, 0], width=0.4, color="0.6", label="before")
    axis.bar(positions + 0.2, means[:, 1], width=0.4, color="tab:blue", label="after SOLF")
    axis.set_yscale("log")
    axis.set_ylabel("mean normalized volume")
    axis.set_xticks(positions)
    axis.set_xticklabels([name(label) for label in labels], rotation=90, fontsize=7)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _structure_table(cohort, flags, bounds: Bounds, name) -> list[str]:
    lines = ["| label | structure | samples | inaccurate | missing | normalized volume | sphericity | eccentricity |",
             "| ---: | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for label, ranges in bounds.items():
        inaccurate = sum(f.get(label, {}).get("inaccurate", False) for f in flags.values())
        missing = sum(f.get(label, {}).get("missing", False) for f in flags.values())
        spans = " | ".join(f"{ranges[f][0]:.4g} to {ranges[f][1]:.4g}" for f in SOLF_FEATURES)
        lines.append(f"| {label} | {name(label)} | {bounds.counts.get(label, '')} | {inaccurate} | "
                     f"{missing} | {spans} |")
    return lines


def write_report(out_dir: str | os.PathLike, cohort, flags, bounds: Bounds, qc_rows: Sequence[Mapping],
                 errors: Sequence[Mapping], summary: Mapping, scheme: str | None = None,
                 plots: bool = True) -> Path:
    """Write ``report.md`` (and its PNG figures) into ``out_dir``; returns the report path."""
    out_dir = Path(out_dir)
    name = structure_namer(scheme)
    labels = list(bounds)
    lines = ["# SOLF cohort report", "",
             *(f"- **{key.replace('_', ' ')}**: {value}" for key, value in summary.items()), "",
             "A structure is *inaccurate* when at least two of its three features (normalized volume, "
             f"sphericity, eccentricity) fall outside [P{bounds.epsilon / 2:g}, P{100 - bounds.epsilon / 2:g}] "
             "of the cohort (UKBOB eq. 1); *missing* when the cohort nearly always has it and the sample "
             "does not.", ""]
    if plots and cohort and labels:
        plot_distributions(cohort, flags, labels, out_dir / FIGURE_DISTRIBUTIONS, scheme)
        plot_mean_volumes(cohort, flags, labels, out_dir / FIGURE_MEAN_VOLUME, scheme)
        lines += ["## Distributions before and after filtering", "",
                  f"![features per structure]({FIGURE_DISTRIBUTIONS})", "",
                  f"![mean normalized volume per structure]({FIGURE_MEAN_VOLUME})", ""]
    lines += ["## Flagged samples (most severe first)", ""]
    if qc_rows:
        lines += ["| rank | sample | severity | inaccurate | missing |", "| ---: | --- | ---: | --- | --- |"]
        lines += [f"| {r['rank']} | {r['id']} | {r['severity']} | {r['inaccurate'] or '-'} | {r['missing'] or '-'} |"
                  for r in qc_rows[:30]]
        if len(qc_rows) > 30:
            lines.append(f"\n{len(qc_rows) - 30} more in `qc_list.csv`.")
    else:
        lines.append("None.")
    lines += ["", "## Bounds and flags per structure", "", *_structure_table(cohort, flags, bounds, name), ""]
    if errors:
        lines += ["## Skipped (unreadable) samples", ""]
        lines += [f"- `{e['labelmap']}`: {e['error']}" for e in errors]
        lines.append("")
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
