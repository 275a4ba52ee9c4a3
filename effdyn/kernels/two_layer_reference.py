"""Plain NumPy references of the two-layer kernels, for the tests (and benchmarks) only.

Each function here recomputes, with dense NumPy algebra over whole (particle, sample)
arrays and SciPy's special functions, what a compiled kernel of
:mod:`effdyn.kernels.two_layer` or :mod:`effdyn.kernels.kinetic` computes with blocked
passes: the loss, gradient, Hessian-vector product, third-derivative contraction and
kinetic drift of the network f(x) = c Σ_i a_i σ(w_i·x) with θ particle-major (theory §4).
They share nothing with the kernels but the activation codes, so a test that finds the two
equal (and both equal to JAX autodiff of the loss) checks the kernels' closed forms, their
blocking and their activation formulas independently. Library code does not call these:
they are written for clarity, not speed or memory.

Arguments are the problem's data rather than the kernels' ``params``: ``X`` (n, d),
``y`` (n,), the output scale ``c`` and the activation ``code``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, expit

from .two_layer import GELU, SOFTPLUS, TANH


def reference_activation(z, code):
    """σ, σ', σ'', σ''' element-wise with NumPy/SciPy."""
    z = np.asarray(z, dtype=np.float64)
    if code == TANH:
        t = np.tanh(z)
        s1 = 1.0 - t**2
        return t, s1, -2.0 * t * s1, -2.0 * s1**2 + 4.0 * t**2 * s1
    if code == SOFTPLUS:
        g = expit(z)
        return np.logaddexp(0.0, z), g, g * (1 - g), g * (1 - g) * (1 - 2 * g)
    if code == GELU:
        Phi = 0.5 * (1 + erf(z / np.sqrt(2)))
        phi = np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
        return z * Phi, Phi + z * phi, (2 - z**2) * phi, (z**3 - 4 * z) * phi
    return z, np.ones_like(z), np.zeros_like(z), np.zeros_like(z)


def _ref_parts(theta, X, c, code):
    n, d = X.shape
    T = theta.reshape(-1, d + 1)
    W, a = T[:, :d], T[:, d]
    return W, a, reference_activation(W @ X.T, code)


def reference_outputs(theta, X, c, code, U=None):
    """f (n,), Df (r, n), D²f (r, n) by dense NumPy algebra."""
    n, d = X.shape
    W, a, (s0, s1, s2, _) = _ref_parts(theta, X, c, code)
    f = c * a @ s0
    if U is None:
        return f
    Df, D2f = [], []
    for u in np.asarray(U).T:
        Ur = u.reshape(-1, d + 1)
        V, b = Ur[:, :d], Ur[:, d]
        Pm = V @ X.T
        Df.append(c * (b @ s0 + a @ (s1 * Pm)))
        D2f.append(c * (2 * b @ (s1 * Pm) + a @ (s2 * Pm**2)))
    return f, np.array(Df), np.array(D2f)


def reference_loss(theta, X, y, c, code):
    r = reference_outputs(theta, X, c, code) - y
    return 0.5 * np.mean(r**2)


def reference_grad(theta, X, y, c, code):
    n, d = X.shape
    W, a, (s0, s1, _, _) = _ref_parts(theta, X, c, code)
    r = c * a @ s0 - y
    gw = (c / n) * (a[:, None] * s1 * r) @ X
    ga = (c / n) * s0 @ r
    return np.column_stack([gw, ga]).ravel()


def reference_hvp(theta, v, X, y, c, code):
    n, d = X.shape
    W, a, (s0, s1, s2, _) = _ref_parts(theta, X, c, code)
    f, Df, _ = reference_outputs(theta, X, c, code, np.asarray(v)[:, None])
    r, Df = f - y, Df[0]
    Vr = np.asarray(v).reshape(-1, d + 1)
    V, b = Vr[:, :d], Vr[:, d]
    Pm = V @ X.T
    ha = (c / n) * (s0 @ Df + (s1 * Pm) @ r)
    Cw = Df * a[:, None] * s1 + r * (b[:, None] * s1 + a[:, None] * s2 * Pm)
    hw = (c / n) * Cw @ X
    return np.column_stack([hw, ha]).ravel()


def reference_third(theta, U, s, X, y, c, code):
    """∇_θ Σ_q s_q u_qᵀ H u_q from the closed forms of theory §4."""
    n, d = X.shape
    W, a, (s0, s1, s2, s3) = _ref_parts(theta, X, c, code)
    U = np.asarray(U).reshape(theta.size, -1)
    f, Df, D2f = reference_outputs(theta, X, c, code, U)
    r = f - y
    out = np.zeros((theta.size // (d + 1), d + 1))
    for q in range(U.shape[1]):
        Ur = U[:, q].reshape(-1, d + 1)
        V, b = Ur[:, :d], Ur[:, d]
        Pm = V @ X.T
        ca = 2 * Df[q] * s1 * Pm + D2f[q] * s0 + r * s2 * Pm**2
        cw = (2 * Df[q] * (b[:, None] * s1 + a[:, None] * s2 * Pm) + D2f[q] * a[:, None] * s1
              + r * (2 * b[:, None] * s2 * Pm + a[:, None] * s3 * Pm**2))
        out[:, d] += s[q] * (c / n) * ca.sum(axis=1)
        out[:, :d] += s[q] * (c / n) * cw @ X
    return out.ravel()


def reference_kinetic_drift(theta, U, eta, X, y, c, code):
    """NumPy version of :func:`_kinetic_drift`."""
    U = np.asarray(U).reshape(theta.size, -1)
    r = U.shape[1]
    dtheta = -eta * (reference_grad(theta, X, y, c, code)
                     + 0.5 * reference_third(theta, U, np.ones(r), X, y, c, code))
    HU = np.column_stack([reference_hvp(theta, U[:, q], X, y, c, code) for q in range(r)])
    return np.concatenate([dtheta, (eta * HU - 2.0 * U).ravel()])
