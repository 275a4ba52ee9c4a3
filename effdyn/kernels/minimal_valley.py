"""Kernels for Berthier's minimal valley E = ½(y + ζx)x² − ε(x + y); ``params = ([ζ, ε],)``.

With θ = (x, y): ∇E = (xy + (3/2)ζx² − ε, ½x² − ε), H = [[y + 3ζx, x], [x, 0]], and the
only non-zero third derivatives are E_xxx = 3ζ and E_xxy = 1 (with its permutations).
"""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def _loss(theta, params):
    zeta = params[0][0]
    eps = params[0][1]
    x = theta[0]
    y = theta[1]
    return 0.5 * (y + zeta * x) * x * x - eps * (x + y)


@jit
def _grad(theta, params):
    zeta = params[0][0]
    eps = params[0][1]
    x = theta[0]
    y = theta[1]
    g = np.empty(2)
    g[0] = x * y + 1.5 * zeta * x * x - eps
    g[1] = 0.5 * x * x - eps
    return g


@jit
def _hvp(theta, v, params):
    zeta = params[0][0]
    x = theta[0]
    y = theta[1]
    out = np.empty(2)
    out[0] = (y + 3.0 * zeta * x) * v[0] + x * v[1]
    out[1] = x * v[0]
    return out


@jit
def _hessian(theta, params):
    zeta = params[0][0]
    x = theta[0]
    y = theta[1]
    H = np.empty((2, 2))
    H[0, 0] = y + 3.0 * zeta * x
    H[0, 1] = x
    H[1, 0] = x
    H[1, 1] = 0.0
    return H


@jit
def _third(theta, U, s, params):
    # uᵀHu = (y + 3ζx)u_x² + 2x u_x u_y; differentiate in x and y with u held fixed.
    zeta = params[0][0]
    out = np.zeros(2)
    for r in range(U.shape[1]):
        ux = U[0, r]
        uy = U[1, r]
        out[0] += s[r] * (3.0 * zeta * ux * ux + 2.0 * ux * uy)
        out[1] += s[r] * ux * ux
    return out
