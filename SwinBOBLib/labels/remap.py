"""Label maps from one scheme to another, structure by structure: a label maps to the same
structure in the destination, or to the nearest one containing it; what the destination cannot
represent becomes 0 (and is listed by :func:`lost_structures`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SwinBOBLib.labels.names import ancestors
from SwinBOBLib.labels.schemes import Scheme, get_scheme


@dataclass(frozen=True)
class Correspondence:
    """How one source structure lands in a destination scheme (``relation`` is "same" or "merged")."""

    src_index: int
    src_name: str
    dst_index: int
    dst_name: str
    relation: str


def correspondences(src: str | Scheme, dst: str | Scheme) -> list[Correspondence]:
    """How each structure of ``src`` lands in ``dst``: the same structure, or merged into the
    nearest ``dst`` structure that contains it. Source structures absent from ``dst`` are omitted."""
    src_scheme = src if isinstance(src, Scheme) else get_scheme(src)
    dst_scheme = dst if isinstance(dst, Scheme) else get_scheme(dst)
    dst_by_key = {s.key: i for i, s in dst_scheme.structures.items()}
    found = []
    for index in src_scheme.indices:
        key = src_scheme.structures[index].key
        for depth, candidate in enumerate([key, *ancestors(key)]):
            if candidate in dst_by_key:
                target = dst_by_key[candidate]
                found.append(Correspondence(index, src_scheme.structures[index].name, target,
                                            dst_scheme.structures[target].name,
                                            "same" if depth == 0 else "merged"))
                break
    return found


def lost_structures(src: str | Scheme, dst: str | Scheme) -> dict[int, str]:
    """``{src label: name}`` of the structures of ``src`` that ``dst`` cannot hold (remapped to 0)."""
    src_scheme = src if isinstance(src, Scheme) else get_scheme(src)
    mapped = {c.src_index for c in correspondences(src_scheme, dst)}
    return {i: src_scheme.structures[i].name for i in src_scheme.indices if i not in mapped}


def shared_structures(src: str | Scheme, dst: str | Scheme) -> list[Correspondence]:
    """The correspondences between ``src`` and ``dst``; see :func:`correspondences`."""
    return correspondences(src, dst)


def remap_table(src: str | Scheme, dst: str | Scheme) -> np.ndarray:
    """Lookup table ``lut[src_value] = dst_value`` for values 0..src.max_index (unmapped -> 0)."""
    src_scheme = src if isinstance(src, Scheme) else get_scheme(src)
    lut = np.zeros(src_scheme.max_index + 1, dtype=np.int32)
    for c in correspondences(src_scheme, dst):
        lut[c.src_index] = c.dst_index
    return lut


def remap(labelmap: np.ndarray, src: str | Scheme, dst: str | Scheme) -> np.ndarray:
    """Map a label map from scheme ``src`` to scheme ``dst`` by structure.

    Args:
        labelmap: integer array of any shape with values of scheme ``src``.
        src, dst: scheme names (see :func:`available_schemes`) or :class:`Scheme` objects.

    Returns:
        An array of the same shape with ``dst`` values (uint8 when they fit, else uint16).
        Structures ``dst`` lacks become 0; structures ``dst`` merges map to the merged label.

    Raises:
        ValueError: values outside ``src`` or non-integer values.
    """
    src_scheme = src if isinstance(src, Scheme) else get_scheme(src)
    dst_scheme = dst if isinstance(dst, Scheme) else get_scheme(dst)
    array = np.asarray(labelmap)
    src_scheme.validate_labelmap(array, source=f"label map (scheme {src_scheme.name})")
    lut = remap_table(src_scheme, dst_scheme)
    out_dtype = np.uint8 if dst_scheme.max_index < 256 else np.uint16
    return lut.astype(out_dtype)[array.astype(np.intp, copy=False)]
