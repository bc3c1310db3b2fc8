"""SOLF, the Specialized Organ Label Filter of UKBOB (section 3.2): shape features per organ,
cohort bounds (eq. 1) and the 2-of-3 rule that flags inaccurate labels.

    features = organ_features(labelmap, spacing)          # one sample, one pass over the voxels
    bounds = fit_bounds({sample_id: features, ...}, epsilon=2.0)
    flags = flag(features, bounds)                        # {label: {"out_of_range", "inaccurate", ...}}

Cohort runs (local process pool or Ray), reports and the epsilon ablation live in
:mod:`.cohort`, :mod:`.report` and :mod:`.ablation`; the command line in :mod:`.commands`.
"""

from .body import body_mask_from_image
from .bounds import SOLF_FEATURES, Bounds, fit_bounds, flag, flag_cohort, load_bounds, save_bounds
from .features import FEATURES, organ_features

__all__ = ["FEATURES", "SOLF_FEATURES", "Bounds", "body_mask_from_image", "fit_bounds", "flag",
           "flag_cohort", "load_bounds", "organ_features", "save_bounds"]
