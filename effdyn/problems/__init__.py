"""Loss functions with exact derivatives (the problem protocol is in ``base``).

Built-ins carry closed-form numba kernels; ``from_jax`` wraps any JAX-differentiable loss.
Submodules import lazily so that ``import effdyn`` stays light.
"""

from __future__ import annotations

import importlib

from .base import CompiledProblem, NumbaKernels, Problem

_LAZY = {
    "Quadratic": ".quadratic",
    "MinimalValley": ".minimal_valley",
    "ScalarProduct": ".scalar_product",
    "MinimalistTwoLayer": ".minimalist_two_layer",
    "DeepMatrixFactorization": ".matrix_factorization",
    "TwoLayerNet": ".two_layer",
    "teacher_student": ".two_layer",
    "teacher_student_data": ".two_layer",
    "from_jax": ".jax_problem",
    "JaxProblem": ".jax_problem",
}

__all__ = ["Problem", "CompiledProblem", "NumbaKernels", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'effdyn.problems' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
