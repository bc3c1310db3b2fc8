"""Synthetic neck-to-knee phantoms in UKBOB labels, with Dixon-like images and recorded label
corruptions (for training from label maps and for measuring SOLF).

* :mod:`.anatomy`: the template's tables (body outline, spine, tissue signal) and per-seed variation;
* :mod:`.shapes`: grids and drawing primitives; :mod:`.body` / :mod:`.organs`: what is painted;
* :mod:`.signal`: the Dixon channels; :mod:`.generator`: :func:`make_phantom`;
* :mod:`.corruption`: planted label errors; :mod:`.cohort`: a dataset folder of phantoms.

Imports only :mod:`SwinBOBLib.io` and :mod:`SwinBOBLib.labels`.
"""

from SwinBOBLib.phantom.anatomy import (  # noqa: F401
    BODY_COMPOSITION,
    CHANNEL_NAMES,
    DEFAULT_FOV_MM,
    DEFAULT_NOISE,
    SIZES,
    TOP_Z_MM,
)
from SwinBOBLib.phantom.cohort import (  # noqa: F401
    write_cohort,
)
from SwinBOBLib.phantom.corruption import (  # noqa: F401
    CORRUPTION_KINDS,
    DAMAGE_DICE,
    corrupt_labels,
    damaged_structures,
)
from SwinBOBLib.phantom.generator import (  # noqa: F401
    Phantom,
    make_labels,
    make_phantom,
    phantom_affine,
    resolve_size,
)
from SwinBOBLib.phantom.shapes import (  # noqa: F401
    partner_of,
)
from SwinBOBLib.phantom.signal import (  # noqa: F401
    dixon_image,
)

__all__ = [
    "CHANNEL_NAMES",
    "SIZES",
    "DEFAULT_FOV_MM",
    "TOP_Z_MM",
    "DEFAULT_NOISE",
    "BODY_COMPOSITION",
    "Phantom",
    "resolve_size",
    "phantom_affine",
    "make_labels",
    "make_phantom",
    "dixon_image",
    "CORRUPTION_KINDS",
    "corrupt_labels",
    "DAMAGE_DICE",
    "damaged_structures",
    "write_cohort",
    "partner_of",
]
