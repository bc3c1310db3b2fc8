"""Inference: from a scan and a model to labels and an entropy map on the scan's own grid.

    model, metadata = load_checkpoint("swinbob.pt")
    result = segment_image(load_image("scan.nii.gz"), model, metadata, InferenceConfig(etta=True))
    result.labels, result.entropy       # Images on the input's own grid and affine

* :mod:`.config`: :class:`InferenceConfig` (one source of defaults) and :class:`Segmentation`;
* :mod:`.preprocess`: channels, intensity normalisation, reorientation and resampling;
* :mod:`.window`: sliding-window prediction (blending, flips, low-memory path); :mod:`.tta`: flips;
* :mod:`.postprocess`: back onto the input grid, argmax and entropy; :mod:`.entropy`: whole-scan entropy;
* :mod:`.etta`: entropy test-time adaptation; :mod:`.pipeline`: :func:`segment_image`;
* :mod:`.provenance`: which preprocessing a run used and where each value came from.

Imports :mod:`SwinBOBLib.models`, :mod:`SwinBOBLib.io` and :mod:`SwinBOBLib.labels`.
"""

from SwinBOBLib.inference.config import (  # noqa: F401
    CT_WINDOW_HU,
    DEFAULT_OVERLAP,
    FAST_SPACING_MM,
    INTENSITY_MODES,
    MAX_MODEL_VOXELS,
    MAX_ROI_SIZE,
    InferenceConfig,
    Segmentation,
    effective_config,
    resolve_config,
    window_overlap,
)
from SwinBOBLib.inference.device import (  # noqa: F401
    OUT_OF_MEMORY,
    autocast_dtype,
    select_device,
    synchronize,
)
from SwinBOBLib.inference.pipeline import (  # noqa: F401
    segment_image,
)
from SwinBOBLib.inference.postprocess import (  # noqa: F401
    postprocess,
    probability_slabs,
)
from SwinBOBLib.inference.preprocess import (  # noqa: F401
    Prepared,
    check_modality,
    check_roi_size,
    effective_spacing,
    image_modality,
    model_grid,
    normalize_intensity,
    preprocess,
    resample,
    select_contrasts,
)
from SwinBOBLib.inference.window import (  # noqa: F401
    checkpoint_layout,
    count_windows,
    lateral_swap,
    predict_probabilities,
)

__all__ = [
    "FAST_SPACING_MM",
    "MAX_ROI_SIZE",
    "MAX_MODEL_VOXELS",
    "CT_WINDOW_HU",
    "DEFAULT_OVERLAP",
    "INTENSITY_MODES",
    "InferenceConfig",
    "Segmentation",
    "window_overlap",
    "resolve_config",
    "effective_config",
    "OUT_OF_MEMORY",
    "select_device",
    "autocast_dtype",
    "synchronize",
    "image_modality",
    "check_modality",
    "Prepared",
    "select_contrasts",
    "normalize_intensity",
    "model_grid",
    "effective_spacing",
    "preprocess",
    "check_roi_size",
    "resample",
    "count_windows",
    "checkpoint_layout",
    "lateral_swap",
    "predict_probabilities",
    "probability_slabs",
    "postprocess",
    "segment_image",
]
