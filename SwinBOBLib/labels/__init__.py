"""Label schemes: structures by index and by name, remapping between schemes, model channel layouts.

* :mod:`.names`: structure names normalised to canonical keys, aliases, the part-of table;
* :mod:`.schemes`: the registered schemes (TSVs in ``SwinBOBLib/data/schemes``), :func:`get_scheme`;
* :mod:`.remap`: correspondences between schemes and :func:`remap` of a label map;
* :mod:`.layouts`: model output channels <-> label values (compact and full layouts).

Lowest layer: imports nothing else of SwinBOBLib. ``from SwinBOBLib import labels`` gives every
public name below.
"""

from SwinBOBLib.labels.layouts import (  # noqa: F401
    ChannelLayout,
    channel_layout,
    lateral_swap_table,
    layout_for_channels,
)
from SwinBOBLib.labels.names import (  # noqa: F401
    PART_OF,
    ancestors,
    canonical_key,
    normalize_name,
    singular,
)
from SwinBOBLib.labels.remap import (  # noqa: F401
    Correspondence,
    correspondences,
    lost_structures,
    remap,
    remap_table,
    shared_structures,
)
from SwinBOBLib.labels.schemes import (  # noqa: F401
    DATA_DIR,
    GROUPS,
    SCHEME_ALIASES,
    SCHEME_DIR,
    SCHEME_FILES,
    Scheme,
    Structure,
    UnknownSchemeError,
    UnknownStructureError,
    available_schemes,
    get_scheme,
    scheme_rows,
    slicer_color_table,
)

__all__ = [
    "PART_OF",
    "normalize_name",
    "canonical_key",
    "ancestors",
    "singular",
    "DATA_DIR",
    "SCHEME_DIR",
    "SCHEME_FILES",
    "SCHEME_ALIASES",
    "GROUPS",
    "UnknownStructureError",
    "UnknownSchemeError",
    "Structure",
    "Scheme",
    "available_schemes",
    "get_scheme",
    "slicer_color_table",
    "scheme_rows",
    "Correspondence",
    "correspondences",
    "lost_structures",
    "shared_structures",
    "remap_table",
    "remap",
    "ChannelLayout",
    "channel_layout",
    "layout_for_channels",
    "lateral_swap_table",
]
