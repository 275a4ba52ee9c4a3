"""Kernels for the quadratic E = ½θᵀAθ − bᵀθ; ``params = (A, b)``."""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def _loss(theta, params):
    A, b = params
    return 0.5 * np.dot(theta, np.dot(A, theta)) - np.dot(b, theta)


@jit
def _grad(theta, params):
    A, b = params
    return np.dot(A, theta) - b


@jit
def _hvp(theta, v, params):
    A, b = params
    return np.dot(A, v)


@jit
def _hessian(theta, params):
    A, b = params
    return A.copy()


@jit
def _third(theta, U, s, params):
    # The Hessian does not depend on θ, so every third derivative vanishes.
    return np.zeros(theta.shape[0])
