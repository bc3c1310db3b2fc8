"""The argmax of the probabilities interpolated onto the input grid, taken cell by cell of the model
grid (interpolating only where the 8 corners disagree, only the channels that can win there),
equals the argmax of every channel interpolated everywhere: against a float64 trilinear
interpolation and against the dense slab path, but at voxels whose two largest probabilities tie
within rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SwinBOBLib.inference.cell_argmax import cell_argmax
from SwinBOBLib.inference.postprocess import postprocess

TIE = 1e-6  # two interpolated probabilities this close are a tie rounding may break either way


def _reference(probs: torch.Tensor, shape) -> tuple[np.ndarray, np.ndarray]:
    """(argmax of every channel interpolated in float64, where the two largest do not tie)."""
    full = torch.nn.functional.interpolate(probs.double(), size=shape, mode="trilinear", align_corners=True)[0].numpy()
    top = np.sort(full, axis=0)
    return full.argmax(0), (top[-1] - top[-2]) > TIE


def _probabilities(rng, source, channels, sharpness, scale=1.0) -> torch.Tensor:
    logits = torch.from_numpy(rng.normal(size=(1, channels, *source)).astype(np.float32)) * sharpness
    return torch.softmax(logits, 1) * scale


@pytest.mark.parametrize("seed", range(4))
def test_the_cell_argmax_equals_every_channel_interpolated(seed):
    """Random grids, coarser and finer than the output, one-plane axes, 2 to 40 channels, flat and
    peaked probabilities, sums other than 1."""
    rng = np.random.default_rng(seed)
    compared = 0
    for _ in range(25):
        source = tuple(int(v) for v in rng.integers(1, 10, 3))
        shape = tuple(int(v) for v in rng.integers(1, 24, 3))
        probs = _probabilities(rng, source, int(rng.integers(2, 41)), rng.uniform(0.3, 8.0), rng.choice([1.0, 0.6]))
        expected, clear = _reference(probs, shape)
        found = cell_argmax(probs[0].numpy(), shape)
        assert found.shape == shape and found.dtype == np.intp
        assert np.array_equal(found[clear], expected[clear])
        compared += int(clear.sum())
    assert compared > 10_000


def test_a_strided_view_reads_as_its_copy_and_uniform_cells_take_their_corners_label():
    """The sliding window's probabilities are a crop of a padded array: read in place, the same
    labels as a contiguous copy; a cell whose corners agree gives their channel to every voxel."""
    rng = np.random.default_rng(7)
    padded = _probabilities(rng, (12, 11, 9), 6, 5.0)
    crop = padded[:, :, 1:10, 2:9, :7]
    assert not crop[0].numpy().flags["C_CONTIGUOUS"]
    shape = (19, 15, 12)
    assert np.array_equal(cell_argmax(crop[0].numpy(), shape), cell_argmax(crop[0].contiguous().numpy(), shape))
    one = torch.zeros(1, 4, 3, 3, 3)
    one[:, 2] = 0.7
    one[:, 3] = 0.3
    assert (cell_argmax(one[0].numpy(), (7, 5, 6)) == 2).all()


def test_postprocess_takes_the_cells_in_cpu_memory_and_both_paths_agree():
    """postprocess picks the cell walk for CPU probabilities (the argmax alone) and gives the labels
    the slab path gives, the label lookup applied; probabilities kept take the slabs."""
    rng = np.random.default_rng(3)
    probs = _probabilities(rng, (9, 8, 12), 40, 6.0)
    probs[:, 20:, :, :, :6] *= 1e-6  # channels 20.. absent from half the grid, as a trained network's are
    probs = probs / probs.sum(1, keepdim=True)
    shape = (17, 15, 23)
    prepared = type("Prepared", (), {"ras_shape": shape})()
    lookup = np.arange(100, 140, dtype=np.uint8)
    cells, _, _ = postprocess(probs, prepared, labels_of=lambda found: lookup[found])
    slabs, _, _ = postprocess(probs, prepared, labels_of=lambda found: lookup[found], cells=False)
    expected, clear = _reference(probs, shape)
    assert cells.dtype == np.uint8 and np.array_equal(cells[clear], lookup[expected][clear])
    assert np.array_equal(cells[clear], slabs[clear]) and clear.mean() > 0.99
    _, _, kept = postprocess(probs, prepared, keep_probabilities=True)
    assert kept.shape == (*shape, 40)
