"""effdyn: effective continuous-time models of gradient descent at the Edge of Stability.

Every model is validated against discrete gradient descent on the same problem. Time is
measured in GD steps ``k`` throughout; Σ is the physical covariance of the fast oscillation.

Heavy submodules (jax, diffrax, xarray, matplotlib) are imported lazily.
"""

from __future__ import annotations

import importlib

from ._jit import compile_count
from .errors import IntegrationError, MissingFeatureError

__version__ = "0.1.0"

_LAZY = {
    "problems": ("effdyn.problems", None),
    "models": ("effdyn.models", None),
    "spectrum": ("effdyn.spectrum", None),
    "diagnostics": ("effdyn.diagnostics", None),
    "solvers": ("effdyn.solvers", None),
    "validation": ("effdyn.validation", None),
    "registry": ("effdyn.registry", None),
    "outcomes": ("effdyn.outcomes", None),
    "Status": ("effdyn.outcomes", "Status"),
    "Cause": ("effdyn.outcomes", "Cause"),
    "gd": ("effdyn.reference", "gd"),
    "resume_gd": ("effdyn.reference", "resume_gd"),
    "GDTrajectory": ("effdyn.reference", "GDTrajectory"),
    "solve": ("effdyn.solvers", "solve"),
    "resume": ("effdyn.solvers", "resume"),
    "Solution": ("effdyn.solution", "Solution"),
    "compare": ("effdyn.diagnostics", "compare"),
    "Metrics": ("effdyn.diagnostics", "Metrics"),
    "plot": ("effdyn.plotting", "plot"),
    "load": ("effdyn.results", "load"),
    "save": ("effdyn.results", "save"),
    "Results": ("effdyn.results", "Results"),
}

__all__ = ["IntegrationError", "MissingFeatureError", "compile_count", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'effdyn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
