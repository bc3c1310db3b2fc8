"""The tiny real model and scan the command-line tests share: a seeded 12-feature Swin-UNETR that
runs one 32^3 window on a CPU in well under a second, and a small noisy box of "body"."""

from pathlib import Path

import numpy as np
import torch

from SwinBOBLib import io
from SwinBOBLib.models.loading import save_checkpoint
from SwinBOBLib.models.metadata import CheckpointMetadata
from SwinBOBLib.models.networks import build_model


def checkpoint(path: Path) -> Path:
    """A seeded tiny Swin-BOB checkpoint (feature size 12, ROI 32, one in-phase channel) at ``path``."""
    torch.manual_seed(0)
    save_checkpoint(path, build_model(feature_size=12, in_channels=1),
                    CheckpointMetadata(feature_size=12, roi_size=32, contrasts=("in_phase",)))
    return path


def body_array(shape=(20, 18, 16), seed: int = 0) -> np.ndarray:
    """A bright box inside a dark border, with noise: float32 ``shape``."""
    rng = np.random.default_rng(seed)
    array = np.zeros(shape, np.float32)
    array[3:-3, 3:-3, 2:-2] = 100
    return array + rng.normal(0, 3, shape).astype(np.float32)


def body(shape=(20, 18, 16), seed: int = 0) -> io.Image:
    """:func:`body_array` as an LPS-like Image (2 x 2 x 3 mm, x and y flipped)."""
    return io.Image(body_array(shape, seed), np.diag([-2.0, -2.0, 3.0, 1.0]))
