"""Compiled kernels of the mean-field kinetic model (:class:`effdyn.models.MeanFieldKinetic`).

The kinetic model follows, for every neuron i of a :class:`effdyn.problems.TwoLayerNet`,
its two-step average weights θ̄_i and the amplitude u_i of its alternating part, stacked
as θ̄ (P,) and the columns of U (P, r) (theory §4, time in GD steps k)::

    dθ̄/dk = −η [∇L(θ̄) + ½ Σ_q ∇(u_qᵀ H(θ̄) u_q)],        dU/dk = η H(θ̄) U − 2U.

These are model equations, not derivatives of the loss, so they live here rather than with
the problem's kernels in :mod:`effdyn.kernels.two_layer`. Each kernel below is one forward
and one backward pass of that module (:func:`~effdyn.kernels.two_layer._forward`,
:func:`~effdyn.kernels.two_layer._backward`), whose weights select which of ∇L, the
curvature gradients and the Hessian-vector products come out of the shared pass; the
loss-kernel module explains the passes. Signature convention: ``kernel(*args, params)``
with the problem's ``params``, called through ``TwoLayerNet.run_kernel``.

Compile cache: numba invalidates a cached kernel when the source of the file that defines
it changes, not when a function it calls from another file does. After editing the passes
in ``two_layer.py``, delete this module's cache files (``kinetic.*.nbi`` and ``.nbc``, in
``__pycache__`` or under ``NUMBA_CACHE_DIR``). ``tests/test_mean_field.py`` compares the
kinetic drift with the problem's own gradient, third-derivative contraction and dense
Hessian to 1e-12, which a stale cache fails as soon as the passes change their numbers.

The NumPy reference of the drift is
:func:`effdyn.kernels.two_layer_reference.reference_kinetic_drift`.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit
from .two_layer import _backward, _forward


@jit
def _kinetic_drift(theta, U, eta, params):
    """dθ̄/dk = −η[∇L + ½ Σ_q ∇(u_qᵀHu_q)] and dU/dk = ηHU − 2U (theory §4, GD steps)."""
    f, Df, D2f = _forward(theta, U, params, True)
    r = U.shape[1]
    G, HU = _backward(theta, U, params, f - params[2], Df, D2f, -eta, np.full(r, -0.5 * eta), eta)
    out = np.empty(theta.shape[0] * (1 + r))
    P = theta.shape[0]
    out[:P] = G
    dU = HU - 2.0 * U
    out[P:] = dU.ravel()
    return out


@jit
def _contractions(theta, U, wg, wt, wh, params):
    """(wg·∇L + wt·Σ_q ∇(u_qᵀHu_q), wh·HU) from one forward and one backward pass."""
    f, Df, D2f = _forward(theta, U, params, True)
    return _backward(theta, U, params, f - params[2], Df, D2f, wg, np.full(U.shape[1], wt), wh)




@jit
def _quadratic_forms(theta, U, params):
    """L(θ) and the curvatures u_qᵀ H u_q = (1/n) Σ_k (Df_k² + r_k D²f_k), one forward pass."""
    f, Df, D2f = _forward(theta, U, params, True)
    res = f - params[2]
    n = res.shape[0]
    r = U.shape[1]
    curv = np.empty(r)
    for q in range(r):
        curv[q] = (np.dot(Df[q], Df[q]) + np.dot(res, D2f[q])) / n
    return 0.5 * np.dot(res, res) / n, curv
