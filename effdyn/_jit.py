"""One place that sets numba's compile options and counts compilations.

Every compiled kernel in effdyn is created with :func:`jit`. The registry lets a test
assert that a sweep over eta or seeds does not trigger new compilations
(:func:`compile_count`), which is the failure mode of kernels that close over Python
floats or globals.
"""

from __future__ import annotations

import numba

_DISPATCHERS: list = []


def jit(func=None, *, parallel: bool = False, cache: bool = True, fastmath: bool = False):
    """``numba.njit`` with effdyn's defaults (cached, no fastmath) and registration."""

    def wrap(f):
        d = numba.njit(cache=cache, parallel=parallel, fastmath=fastmath)(f)
        _DISPATCHERS.append(d)
        return d

    return wrap(func) if func is not None else wrap


def compile_count() -> int:
    """Number of specialisations compiled (or loaded from cache) in this process."""
    return sum(len(getattr(d, "signatures", ())) for d in _DISPATCHERS)
