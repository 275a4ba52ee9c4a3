"""Kernels for the minimalist two-layer population loss; ``params = ([λ1, λ2],)``.

θ = (α, β1, β2), E = ½λ1α²β1² + ½λ2(αβ2 − 1)². Hessian:
H_αα = λ1β1² + λ2β2², H_αβ1 = 2λ1αβ1, H_αβ2 = λ2(2αβ2 − 1), H_β1β1 = λ1α²,
H_β2β2 = λ2α², H_β1β2 = 0.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def _loss(theta, params):
    l1 = params[0][0]
    l2 = params[0][1]
    a, b1, b2 = theta[0], theta[1], theta[2]
    r = a * b2 - 1.0
    return 0.5 * l1 * (a * b1) ** 2 + 0.5 * l2 * r * r


@jit
def _grad(theta, params):
    l1 = params[0][0]
    l2 = params[0][1]
    a, b1, b2 = theta[0], theta[1], theta[2]
    r = a * b2 - 1.0
    g = np.empty(3)
    g[0] = l1 * a * b1 * b1 + l2 * b2 * r
    g[1] = l1 * a * a * b1
    g[2] = l2 * a * r
    return g


@jit
def _hessian(theta, params):
    l1 = params[0][0]
    l2 = params[0][1]
    a, b1, b2 = theta[0], theta[1], theta[2]
    H = np.zeros((3, 3))
    H[0, 0] = l1 * b1 * b1 + l2 * b2 * b2
    H[0, 1] = 2.0 * l1 * a * b1
    H[0, 2] = l2 * (2.0 * a * b2 - 1.0)
    H[1, 1] = l1 * a * a
    H[2, 2] = l2 * a * a
    H[1, 0] = H[0, 1]
    H[2, 0] = H[0, 2]
    return H


@jit
def _hvp(theta, v, params):
    return np.dot(_hessian(theta, params), v)


@jit
def _third(theta, U, s, params):
    # ∇ of uᵀHu = H_αα u_α² + 2H_αβ1 u_α u_β1 + 2H_αβ2 u_α u_β2 + H_β1β1 u_β1² + H_β2β2 u_β2²
    # using the θ-derivatives of the Hessian entries listed in the module docstring.
    l1 = params[0][0]
    l2 = params[0][1]
    a, b1, b2 = theta[0], theta[1], theta[2]
    out = np.zeros(3)
    for r in range(U.shape[1]):
        ua, u1, u2 = U[0, r], U[1, r], U[2, r]
        out[0] += s[r] * (4.0 * l1 * b1 * ua * u1 + 4.0 * l2 * b2 * ua * u2
                          + 2.0 * l1 * a * u1 * u1 + 2.0 * l2 * a * u2 * u2)
        out[1] += s[r] * (2.0 * l1 * b1 * ua * ua + 4.0 * l1 * a * ua * u1)
        out[2] += s[r] * (2.0 * l2 * b2 * ua * ua + 4.0 * l2 * a * ua * u2)
    return out
