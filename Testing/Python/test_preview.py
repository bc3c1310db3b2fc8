"""preview.png: the radiological convention whatever the file's orientation (the patient's right on
the viewer's left), the overlays' colours, the heat row and its legend, written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFont

from SwinBOBLib import io
from SwinBOBLib.labels.schemes import get_scheme
from SwinBOBLib.outputs import preview
from SwinBOBLib.outputs.preview import CELL_WIDTH, MARGIN, render_preview

SPLEEN, LIVER = 1, 5  # UKBOB: the spleen lies on the patient's left, the liver on the right


def _scan_and_labels(flip_x: bool):
    """A blank scan with the liver on the patient's right and the spleen on the left (RAS x: right
    is high), stored RAS or, with ``flip_x``, with its first axis running right-to-left (LPS-like)."""
    shape = (40, 30, 12)
    labels = np.zeros(shape, np.uint8)
    labels[26:36, 8:22, 3:9] = LIVER      # high RAS x: towards the patient's right
    labels[4:14, 8:22, 3:9] = SPLEEN      # low RAS x: the patient's left
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    scan = np.zeros(shape, np.float32)
    if flip_x:
        affine = affine @ np.array([[-1, 0, 0, shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
        labels = labels[::-1].copy()
    return io.Image(scan, affine), labels


def _blended(label: int) -> np.ndarray:
    """The overlay's colour on a black scan."""
    return np.round(np.asarray(get_scheme("ukbob").structures[label].color) * preview.LABEL_ALPHA)


def _columns_of(picture: np.ndarray, colour: np.ndarray, x0: int, x1: int) -> np.ndarray:
    cell = picture[:, x0:x1].astype(int)
    return np.nonzero(np.all(np.abs(cell - colour) <= 1, axis=-1))[1]


@pytest.mark.parametrize("flip_x", [False, True], ids=["RAS", "right-to-left first axis"])
def test_the_patients_right_is_on_the_viewers_left_in_axial_and_coronal_views(tmp_path, flip_x):
    scan, labels = _scan_and_labels(flip_x)
    path = render_preview(scan, tmp_path / "preview.png", labels=labels, title="t")
    picture = np.asarray(PILImage.open(path).convert("RGB"))
    for col in (0, 1):  # axial, coronal: R on the left
        x0 = MARGIN + col * (CELL_WIDTH + MARGIN)
        liver = _columns_of(picture, _blended(LIVER), x0, x0 + CELL_WIDTH)
        spleen = _columns_of(picture, _blended(SPLEEN), x0, x0 + CELL_WIDTH)
        assert liver.size > 50 and spleen.size > 50
        assert liver.max() < spleen.min(), f"view {col}: the liver must be left of the spleen"


def test_the_heat_row_and_legend_are_drawn_and_the_file_is_replaced_atomically(tmp_path):
    scan, labels = _scan_and_labels(False)
    heat = np.zeros(labels.shape, np.float32)
    heat[labels == LIVER] = 1.0
    target = tmp_path / "preview.png"
    target.write_bytes(b"old")
    render_preview(scan, target, labels=labels, heatmap=heat, heatmap_label="entropy (normalised)",
                   title="a scan", notice="DEMO MODEL")
    picture = np.asarray(PILImage.open(target).convert("RGB"))
    top = np.round(preview._heat_colors()[255] * preview.HEAT_ALPHA)  # heat 1 on black
    rows = np.nonzero(np.all(np.abs(picture[:, :CELL_WIDTH + MARGIN].astype(int) - top) <= 1, axis=-1))[0]
    assert rows.size > 50  # the liver glows in the heat row, below the label row
    liver_rows = np.nonzero(np.all(np.abs(picture[:, :CELL_WIDTH + MARGIN].astype(int) - _blended(LIVER)) <= 1,
                                   axis=-1))[0]
    assert rows.min() > liver_rows.max()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_a_mismatched_overlay_is_refused_with_both_shapes(tmp_path):
    scan, labels = _scan_and_labels(False)
    with pytest.raises(ValueError, match=r"overlay of shape \(40, 30, 11\) does not match the image grid \(40, 30, 12\)"):
        render_preview(scan, tmp_path / "p.png", labels=labels[..., :11])
    assert not (tmp_path / "p.png").exists()


def test_kept_text_draws_the_same_picture_as_pillows_own_font(tmp_path, monkeypatch):
    """The fonts that keep their rendered strings (made once per process) draw every preview pixel
    for pixel as Pillow's default font does, the second picture of a process (strings kept) too."""
    scan, labels = _scan_and_labels(False)
    heat = np.linspace(0.0, 1.0, labels.size, dtype=np.float32).reshape(labels.shape)
    options = dict(labels=labels, heatmap=heat, title="a title long enough to be wrapped onto a second line " * 3,
                   notice="Demo model: which model made these labels, and that it is a demo " * 2)
    kept = [np.asarray(PILImage.open(render_preview(scan, tmp_path / f"kept{i}.png", **options)).convert("RGB"))
            for i in range(2)]
    assert isinstance(preview._fonts()[11], preview._MemoFont) and preview._fonts()[11]._kept
    monkeypatch.setattr(preview, "_fonts", lambda: {s: ImageFont.load_default(size=s) for s in (11, 12, 13, 14)})
    plain = np.asarray(PILImage.open(render_preview(scan, tmp_path / "plain.png", **options)).convert("RGB"))
    assert np.array_equal(kept[0], plain) and np.array_equal(kept[1], plain)
    assert (plain != 0).any(axis=-1).sum() > 1000  # the picture holds text and views, not a blank canvas
