"""Label schemes: structures by index and by name, remapping between schemes, model channel layouts.

* :mod:`.names`: structure names normalised to canonical keys, aliases, the part-of table;
* :mod:`.schemes`: the registered schemes (TSVs in ``SwinBOBLib/data/schemes``), :func:`get_scheme`;
* :mod:`.remap`: correspondences between schemes and :func:`remap` of a label map;
* :mod:`.layouts`: model output channels <-> label values (compact and full layouts).

Lowest layer: imports nothing else of SwinBOBLib. ``from SwinBOBLib import labels`` gives every
public name below.
"""

from SwinBOBLib.labels.layouts import (
    ChannelLayout,
    channel_layout,
    lateral_swap_table,
    layout_for_channels,
)
from SwinBOBLib.labels.names import (
    PART_OF,
    ancestors,
    canonical_key,
    normalize_name,
    singular,
)
from SwinBOBLib.labels.remap import (
    Correspondence,
    correspondences,
    lost_structures,
    remap,
    remap_table,
    shared_structures,
)
from SwinBOBLib.labels.schemes import (
    DATA_DIR,
    GENERIC_CATEGORY,
    GENERIC_TYPE,
    GROUPS,
    SCHEME_ALIASES,
    SCHEME_DIR,
    SCHEME_FILES,
    Code,
    Scheme,
    Structure,
    UnknownSchemeError,
    UnknownStructureError,
    available_schemes,
    get_scheme,
    scheme_codes,
    scheme_rows,
    slicer_color_table,
)

__all__ = [
    "DATA_DIR",
    "GENERIC_CATEGORY",
    "GENERIC_TYPE",
    "GROUPS",
    "PART_OF",
    "SCHEME_ALIASES",
    "SCHEME_DIR",
    "SCHEME_FILES",
    "ChannelLayout",
    "Code",
    "Correspondence",
    "Scheme",
    "Structure",
    "UnknownSchemeError",
    "UnknownStructureError",
    "ancestors",
    "available_schemes",
    "canonical_key",
    "channel_layout",
    "correspondences",
    "get_scheme",
    "lateral_swap_table",
    "layout_for_channels",
    "lost_structures",
    "normalize_name",
    "remap",
    "remap_table",
    "scheme_codes",
    "scheme_rows",
    "shared_structures",
    "singular",
    "slicer_color_table",
]
