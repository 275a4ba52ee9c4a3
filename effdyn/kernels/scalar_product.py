"""Kernels for the scalar product E = ½(∏ᵢθᵢ − y)²; ``params = ([y],)``.

Write p = ∏θᵢ, ρ = p − y and, for distinct indices, qᵢ = ∏_{k≠i}θ_k,
q_ij = ∏_{k∉{i,j}}θ_k, q_ijk likewise (a repeated index gives 0). Then
∂ᵢE = ρqᵢ, ∂ᵢⱼE = qᵢqⱼ + ρq_ij and ∂ᵢⱼₖE = q_ik qⱼ + qᵢq_jk + q_k q_ij + ρq_ijk.
The contractions with a direction u are read off the t-expansion of
∏_{i≠k}(θᵢ + tuᵢ) = qₖ + t Σᵢ q_ik uᵢ + t² ½Σᵢⱼ q_ijk uᵢuⱼ + O(t³), built from prefix and
suffix products truncated at t², so everything is O(P) per direction and never divides
by θ (zeros are fine).
"""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def _excluded_expansions(theta, u):
    """Coefficients (c0, c1, c2) of ∏_{i≠k}(θᵢ + tuᵢ) for every k, and of the full product."""
    n = theta.shape[0]
    # pre[k] = ∏_{i<k}(θᵢ + tuᵢ) mod t³, suf[k] = ∏_{i≥k}(θᵢ + tuᵢ) mod t³.
    pre = np.zeros((n + 1, 3))
    suf = np.zeros((n + 1, 3))
    pre[0, 0] = 1.0
    suf[n, 0] = 1.0
    for i in range(n):
        a, b = theta[i], u[i]
        pre[i + 1, 0] = pre[i, 0] * a
        pre[i + 1, 1] = pre[i, 1] * a + pre[i, 0] * b
        pre[i + 1, 2] = pre[i, 2] * a + pre[i, 1] * b
    for i in range(n - 1, -1, -1):
        a, b = theta[i], u[i]
        suf[i, 0] = suf[i + 1, 0] * a
        suf[i, 1] = suf[i + 1, 1] * a + suf[i + 1, 0] * b
        suf[i, 2] = suf[i + 1, 2] * a + suf[i + 1, 1] * b
    c = np.empty((n, 3))
    for k in range(n):
        l0, l1, l2 = pre[k, 0], pre[k, 1], pre[k, 2]
        r0, r1, r2 = suf[k + 1, 0], suf[k + 1, 1], suf[k + 1, 2]
        c[k, 0] = l0 * r0
        c[k, 1] = l0 * r1 + l1 * r0
        c[k, 2] = l0 * r2 + l1 * r1 + l2 * r0
    return c, pre[n]


@jit
def _loss(theta, params):
    prod = 1.0
    for i in range(theta.shape[0]):
        prod *= theta[i]
    rho = prod - params[0][0]
    return 0.5 * rho * rho


@jit
def _grad(theta, params):
    c, full = _excluded_expansions(theta, np.zeros(theta.shape[0]))
    rho = full[0] - params[0][0]
    g = np.empty(theta.shape[0])
    for k in range(theta.shape[0]):
        g[k] = rho * c[k, 0]
    return g


@jit
def _hvp(theta, v, params):
    # Hv = q (q·v) + ρ Qv, with q·v = full[1] and (Qv)_k = c1_k.
    c, full = _excluded_expansions(theta, v)
    rho = full[0] - params[0][0]
    out = np.empty(theta.shape[0])
    for k in range(theta.shape[0]):
        out[k] = c[k, 0] * full[1] + rho * c[k, 1]
    return out


@jit
def _hessian(theta, params):
    n = theta.shape[0]
    pre = np.ones(n + 1)
    suf = np.ones(n + 1)
    for i in range(n):
        pre[i + 1] = pre[i] * theta[i]
    for i in range(n - 1, -1, -1):
        suf[i] = suf[i + 1] * theta[i]
    rho = pre[n] - params[0][0]
    H = np.empty((n, n))
    for i in range(n):
        H[i, i] = (pre[i] * suf[i + 1]) ** 2
        mid = 1.0  # ∏_{i<k<j} θ_k
        for j in range(i + 1, n):
            qij = pre[i] * mid * suf[j + 1]
            H[i, j] = pre[i] * suf[i + 1] * pre[j] * suf[j + 1] + rho * qij
            H[j, i] = H[i, j]
            mid *= theta[j]
    return H


@jit
def _third(theta, U, s, params):
    # Σᵢⱼ ∂ᵢⱼₖE uᵢuⱼ = 2 c1_k (q·u) + qₖ (uᵀQu) + 2ρ c2_k, with q·u = full[1], uᵀQu = 2 full[2].
    n = theta.shape[0]
    out = np.zeros(n)
    for r in range(U.shape[1]):
        c, full = _excluded_expansions(theta, np.ascontiguousarray(U[:, r]))
        rho = full[0] - params[0][0]
        for k in range(n):
            out[k] += 2.0 * s[r] * (c[k, 1] * full[1] + c[k, 0] * full[2] + rho * c[k, 2])
    return out
