"""The JAX engine: GD and eigen-tracking for problems from :func:`effdyn.problems.from_jax`.

Everything here runs as jitted pure functions in compiled chunks, on whatever device JAX
has (nothing pins the CPU), in float64. JAX is imported only when these functions are used.

* :func:`gd_jax` — GD in compiled ``lax.scan`` chunks with the eigen-tracker inside,
  returning an :class:`effdyn.reference.GDTrajectory`.
* :class:`EigenTrackerJax` — top Hessian eigenpairs followed from step to step
  (state :class:`TrackerState`, saved through :func:`state_to_dict` / :func:`state_from_dict`).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "gd_jax": ".gd",
    "EigenTrackerJax": ".tracker",
    "TrackerState": ".tracker",
    "TrackResult": ".tracker",
    "state_to_dict": ".tracker",
    "state_from_dict": ".tracker",
    "DEFAULT_RTOL": ".tracker",
    "TIGHT_RTOL": ".tracker",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'effdyn.engine_jax' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
