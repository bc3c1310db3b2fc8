"""PNG previews: axial, coronal and sagittal slices with label and heat-map overlays.

Slices are shown in the radiological convention (patient's right on the viewer's left, anterior
up in axial views, superior up in coronal and sagittal views, anterior on the left in sagittal
views), whatever the file's orientation: the image is reoriented to RAS first, without resampling.
Each panel is labelled with the patient directions at its edges so a flip is visible at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from SwinBOBLib.io.geometry import reorient
from SwinBOBLib.io.image import Image
from SwinBOBLib.labels.schemes import get_scheme


def _label_colors(scheme: str, max_label: int) -> np.ndarray:
    table = np.zeros((max_label + 1, 4), dtype=np.float32)
    s = get_scheme(scheme)
    for index in range(1, max_label + 1):
        if index in s.structures:
            table[index, :3] = np.asarray(s.structures[index].color) / 255.0
        else:
            table[index, :3] = (1.0, 0.0, 1.0)  # values outside the scheme stand out in magenta
        table[index, 3] = 0.45
    return table


def _centre_slices(labels: np.ndarray | None, shape) -> tuple[int, int, int]:
    """Slice through the labels' centre of mass, or the volume centre."""
    if labels is not None and np.any(labels):
        return tuple(int(round(c)) for c in np.argwhere(labels > 0).mean(axis=0))
    return tuple(n // 2 for n in shape)


def _panels(volume: np.ndarray, centre, spacing):
    """(title, 2D array shown with origin lower, aspect, edge letters) for the three views."""
    i, j, k = centre
    sx, sy, sz = spacing
    # RAS arrays: flip x (and y for sagittal) so the patient's right / anterior sit on the viewer's left.
    yield "axial", volume[::-1, :, k].T, sy / sx, ("R", "L", "P", "A")
    yield "coronal", volume[::-1, j, :].T, sz / sx, ("R", "L", "I", "S")
    yield "sagittal", volume[i, ::-1, :].T, sz / sy, ("A", "P", "I", "S")


def render_preview(image: Image, path: str | os.PathLike, labels: np.ndarray | None = None,
                   scheme: str = "ukbob", heatmap: np.ndarray | None = None,
                   heatmap_label: str = "entropy", title: str | None = None,
                   notice: str | None = None, legend_max: int = 24) -> Path:
    """Write a PNG with the three orthogonal views through the labelled region.

    Args:
        image: the scan (a multi-channel image shows its first channel).
        path: PNG to write (atomically).
        labels: optional label map on the image's grid, ``(X, Y, Z)``, in ``scheme``.
        heatmap: optional values in [0, 1] on the same grid (e.g. normalised entropy), drawn as a
            second row with a colour bar (numbered 0 to 1).
        title: the figure title (e.g. the input file).
        notice: a line under the title in orange, e.g. which model produced the labels and that it
            is a demo model.
        legend_max: at most this many structures in the legend (the largest in the shown slices).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume, ras_labels, ras_heat, spacing = _ras_layers(image, labels, heatmap)
    centre = _centre_slices(ras_labels, volume.shape)
    window = np.percentile(volume, [1, 99.5]) if volume.size else (0, 1)
    colors = _label_colors(scheme, int(ras_labels.max())) if ras_labels is not None and ras_labels.max() > 0 else None
    rows = 2 if ras_heat is not None else 1
    fig, axes = plt.subplots(rows, 3, figsize=(12, 4.4 * rows), squeeze=False, facecolor="black")
    shown_counts: dict[int, int] = {}
    _draw_row(fig, axes[0], volume, ras_labels, centre, spacing, window, colors, shown_counts)
    if ras_heat is not None:
        _draw_row(fig, axes[1], volume, ras_heat, centre, spacing, window, None, shown_counts, heatmap_label)
    legend_rows = _legend(fig, shown_counts, colors, scheme, legend_max)
    if title:
        fig.suptitle(title, color="white", y=0.995)
    if notice:
        fig.text(0.5, 0.955, notice, color="orange", ha="center", va="top", fontsize=10, wrap=True)
    bottom = min(0.35, 0.03 * legend_rows * 2 / rows) if legend_rows else 0.0
    fig.tight_layout(rect=(0, bottom, 1, 0.92 if notice else 0.96))
    return _save(fig, Path(path))


def _ras_layers(image: Image, labels, heatmap):
    """``(scan, labels or None, heat map or None, spacing)`` reoriented to RAS together (exactly:
    flips and permutations), the scan's first channel as float32."""
    stack = [image.array if image.num_channels == 1 else image.array[..., 0]]
    for extra in (labels, heatmap):
        if extra is not None and np.asarray(extra).shape[:3] != image.spatial_shape:
            raise ValueError(f"overlay of shape {np.asarray(extra).shape} does not match the image grid "
                             f"{image.spatial_shape}")
    ras, _ = reorient(Image(np.stack([stack[0]] + [np.asarray(x, np.float32) for x in (labels, heatmap)
                                                    if x is not None], axis=-1), image.affine), "RAS")
    volume = ras.array[..., 0].astype(np.float32)
    ras_labels = ras.array[..., 1].astype(np.int64) if labels is not None else None
    ras_heat = ras.array[..., -1] if heatmap is not None else None
    return volume, ras_labels, ras_heat, ras.spacing


def _draw_row(fig, axes, volume, overlay, centre, spacing, window, colors, shown_counts: dict,
              heat_label: str | None = None) -> None:
    """One row of three views: the scan with the labels (``colors`` given; the structures shown are
    counted into ``shown_counts``) or with a heat map in [0, 1] (``heat_label`` given, colour bar)."""
    low, high = window
    views = zip(_panels(volume, centre, spacing),
                _panels(overlay, centre, spacing) if overlay is not None else [None] * 3)
    for col, ((name, plane, aspect, edges), over) in enumerate(views):
        ax = axes[col]
        ax.imshow(plane, cmap="gray", origin="lower", aspect=aspect, vmin=low, vmax=high)
        if heat_label is None and over is not None and colors is not None:
            ax.imshow(colors[over[1]], origin="lower", aspect=aspect)
            values, counts = np.unique(over[1], return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist()):
                if value:
                    shown_counts[value] = shown_counts.get(value, 0) + count
        elif heat_label is not None:
            shown = ax.imshow(np.ma.masked_less(over[1], 0.02), cmap="inferno", origin="lower",
                              aspect=aspect, vmin=0, vmax=1, alpha=0.8)
            if col == 2:
                _colorbar(fig, shown, ax, heat_label)
        _annotate(ax, name, edges)


def _save(fig, path: Path) -> Path:
    """The figure as a PNG, atomically (a temporary file renamed into place)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=80, facecolor="black")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _colorbar(fig, mappable, ax, label: str) -> None:
    bar = fig.colorbar(mappable, ax=ax, fraction=0.04, ticks=[0, 0.25, 0.5, 0.75, 1.0])
    bar.set_label(label, color="white")
    bar.ax.tick_params(colors="white", labelsize=9)


def _legend(fig, counts: dict[int, int], colors, scheme: str, limit: int) -> int:
    """A legend of the structures in the shown slices (largest first); returns its row count."""
    if not counts or colors is None:
        return 0
    from matplotlib.patches import Patch

    structures = get_scheme(scheme).structures
    order = sorted(counts, key=lambda v: -counts[v])
    handles = [Patch(facecolor=colors[v, :3], edgecolor="none",
                     label=f"{v} {structures[v].display_name if v in structures else f'(not in {scheme})'}")
               for v in order[:limit]]
    if len(order) > limit:
        handles.append(Patch(facecolor="black", edgecolor="none", label=f"+ {len(order) - limit} more"))
    columns = 4
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False,
               labelcolor="white", handlelength=1.2, columnspacing=1.0)
    return -(-len(handles) // columns)


def _annotate(ax, name: str, edges) -> None:
    left, right, bottom, top = edges
    style = dict(color="yellow", fontsize=11, fontweight="bold", transform=ax.transAxes)
    ax.text(0.01, 0.5, left, va="center", ha="left", **style)
    ax.text(0.99, 0.5, right, va="center", ha="right", **style)
    ax.text(0.5, 0.01, bottom, va="bottom", ha="center", **style)
    ax.text(0.5, 0.99, top, va="top", ha="center", **style)
    ax.set_title(name, color="white")
    ax.axis("off")
