"""numba compilation shared by the library's compiled loops."""

from __future__ import annotations

import numba


def compiled(function):
    """numba-compile ``function``, cached on disk when a cache folder is writable (else per process)."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # numba found no writable cache location (read-only install and home)
        return numba.njit(nogil=True)(function)
