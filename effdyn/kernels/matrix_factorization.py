"""Kernels for deep matrix factorisation E = ½‖W_L⋯W_1 − M‖_F²; ``params = (M,)``.

θ is the concatenation of the row-major flattened W_1, ..., W_L (each d×d); d is read from
M and L from len(θ)/d². With 0-based slots i = 0..L−1 (slot i holds W_{i+1}):

* ``Rt[i] = W_{i}⋯W_1`` (factors to the right of slot i, identity for i = 0),
  ``Lt[i] = W_L⋯W_{i+2}`` (factors to the left), so P = Lt[i] W_{i+1} Rt[i];
* ∂E/∂W_{i+1} = Lt[i]ᵀ ρ Rt[i]ᵀ with ρ = P − M.

For a direction U = (U_1..U_L) the product is multilinear, so ∏(W + tU) = P + tD1 + ½t²D2
+ O(t³) with D1 = Σᵢ (U at slot i), D2 = Σ_{i≠j} (U at slots i and j, ordered pairs). The
same expansion of the partial products (dRt, d2Rt, dLt, d2Lt) gives, at slot i,

* Hessian-vector product: dLtᵀρRtᵀ + Ltᵀ D1 Rtᵀ + Ltᵀ ρ dRtᵀ;
* uᵀHu = ‖D1‖² + ⟨ρ, D2⟩, whose θ-gradient at slot i is
  2(dLtᵀ D1 Rtᵀ + Ltᵀ D1 dRtᵀ) + Ltᵀ D2 Rtᵀ + d2LtᵀρRtᵀ + 2 dLtᵀρ dRtᵀ + Ltᵀρ d2Rtᵀ.

Everything is O(L d³) matrix products per direction; the dense Hessian is O(P²).

Implementation note: partial products live in (L, d, d) arrays written through
``np.dot(A, B, out)`` and element loops, never by slice assignment (``X[i] = Y``),
which costs numba ~10 s of compilation per kernel.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit


@jit
def _eye_into(out):
    d = out.shape[0]
    for a in range(d):
        for b in range(d):
            out[a, b] = 1.0 if a == b else 0.0


@jit
def _add_into(out, c, X):
    """out += c·X for (d, d) arrays."""
    d = out.shape[0]
    for a in range(d):
        for b in range(d):
            out[a, b] += c * X[a, b]


@jit
def _partials(W):
    """Right products Rt[i] = W[i-1]⋯W[0] (i = 0..L) and left products Lt[i] = W[L-1]⋯W[i+1]."""
    L, d = W.shape[0], W.shape[1]
    Rt = np.empty((L + 1, d, d))
    Lt = np.empty((L, d, d))
    _eye_into(Rt[0])
    for i in range(L):
        np.dot(W[i], Rt[i], Rt[i + 1])
    _eye_into(Lt[L - 1])
    for i in range(L - 1, 0, -1):
        np.dot(Lt[i], W[i], Lt[i - 1])
    return Rt, Lt


@jit
def _first_variations(W, V, Rt, Lt):
    """dRt, dLt: the t-derivatives of Rt and Lt along the direction V."""
    L, d = W.shape[0], W.shape[1]
    dRt = np.zeros((L + 1, d, d))
    dLt = np.zeros((L, d, d))
    T = np.empty((d, d))
    for i in range(L):
        np.dot(V[i], Rt[i], dRt[i + 1])
        np.dot(W[i], dRt[i], T)
        _add_into(dRt[i + 1], 1.0, T)
    for i in range(L - 1, 0, -1):
        np.dot(dLt[i], W[i], dLt[i - 1])
        np.dot(Lt[i], V[i], T)
        _add_into(dLt[i - 1], 1.0, T)
    return dRt, dLt


@jit
def _second_variations(W, V, dRt, dLt):
    """d2Rt, d2Lt: the second t-derivatives of Rt and Lt along V (ordered pairs)."""
    L, d = W.shape[0], W.shape[1]
    d2Rt = np.zeros((L + 1, d, d))
    d2Lt = np.zeros((L, d, d))
    T = np.empty((d, d))
    for i in range(L):
        np.dot(W[i], d2Rt[i], d2Rt[i + 1])
        np.dot(V[i], dRt[i], T)
        _add_into(d2Rt[i + 1], 2.0, T)
    for i in range(L - 1, 0, -1):
        np.dot(d2Lt[i], W[i], d2Lt[i - 1])
        np.dot(dLt[i], V[i], T)
        _add_into(d2Lt[i - 1], 2.0, T)
    return d2Rt, d2Lt


@jit
def _residual(P, M):
    d = M.shape[0]
    rho = np.empty((d, d))
    for a in range(d):
        for b in range(d):
            rho[a, b] = P[a, b] - M[a, b]
    return rho


@jit
def _factors(theta, d):
    L = theta.shape[0] // (d * d)
    return np.ascontiguousarray(theta).reshape((L, d, d))


@jit
def _loss(theta, params):
    M = params[0]
    W = _factors(theta, M.shape[0])
    Rt, Lt = _partials(W)
    P = Rt[W.shape[0]]
    total = 0.0
    for a in range(M.shape[0]):
        for b in range(M.shape[0]):
            total += (P[a, b] - M[a, b]) ** 2
    return 0.5 * total


@jit
def _grad(theta, params):
    M = params[0]
    W = _factors(theta, M.shape[0])
    L = W.shape[0]
    Rt, Lt = _partials(W)
    rho = _residual(Rt[L], M)
    g = np.empty(theta.shape[0])
    g3 = g.reshape(W.shape)
    for i in range(L):
        np.dot(Lt[i].T, np.dot(rho, Rt[i].T), g3[i])
    return g


@jit
def _hvp(theta, v, params):
    M = params[0]
    d = M.shape[0]
    W = _factors(theta, d)
    V = _factors(v, d)
    L = W.shape[0]
    Rt, Lt = _partials(W)
    dRt, dLt = _first_variations(W, V, Rt, Lt)
    rho = _residual(Rt[L], M)
    D1 = dRt[L]
    out = np.empty(theta.shape[0])
    out3 = out.reshape(W.shape)
    a = np.empty((d, d))
    T = np.empty((d, d))
    for i in range(L):
        np.dot(rho, Rt[i].T, a)
        np.dot(dLt[i].T, a, out3[i])
        np.dot(D1, Rt[i].T, a)
        np.dot(rho, dRt[i].T, T)
        _add_into(a, 1.0, T)
        np.dot(Lt[i].T, a, T)
        _add_into(out3[i], 1.0, T)
    return out


@jit
def _third(theta, U, s, params):
    M = params[0]
    d = M.shape[0]
    W = _factors(theta, d)
    L = W.shape[0]
    Rt, Lt = _partials(W)
    rho = _residual(Rt[L], M)
    out = np.zeros(theta.shape[0])
    out3 = out.reshape(W.shape)
    a = np.empty((d, d))
    b = np.empty((d, d))
    c = np.empty((d, d))
    T = np.empty((d, d))
    for r in range(U.shape[1]):
        V = _factors(np.ascontiguousarray(U[:, r]), d)
        dRt, dLt = _first_variations(W, V, Rt, Lt)
        d2Rt, d2Lt = _second_variations(W, V, dRt, dLt)
        D1 = dRt[L]
        D2 = d2Rt[L]
        for i in range(L):
            # Grouped by the left factor: Ltᵀ a + dLtᵀ b + d2Ltᵀ c.
            np.dot(D2, Rt[i].T, a)
            np.dot(D1, dRt[i].T, T)
            _add_into(a, 2.0, T)
            np.dot(rho, d2Rt[i].T, T)
            _add_into(a, 1.0, T)
            np.dot(D1, Rt[i].T, b)
            np.dot(rho, dRt[i].T, T)
            _add_into(b, 1.0, T)
            np.dot(rho, Rt[i].T, c)
            np.dot(Lt[i].T, a, T)
            _add_into(out3[i], s[r], T)
            np.dot(dLt[i].T, b, T)
            _add_into(out3[i], 2.0 * s[r], T)
            np.dot(d2Lt[i].T, c, T)
            _add_into(out3[i], s[r], T)
    return out


@jit
def _hessian(theta, params):
    # Block (k, m), entry ((a, b), (c, e)) for W_{k+1}[a, b] and W_{m+1}[c, e]:
    #   Gauss–Newton part (Lt_kᵀ Lt_m)[a, c] (Rt_k Rt_mᵀ)[b, e];
    #   for k > m, plus ⟨ρ, Lt_k E_ab Mid E_ce Rt_m⟩ = (Lt_kᵀ ρ Rt_mᵀ)[a, e] Mid[b, c],
    #   Mid = W_k⋯W_{m+2} (the factors strictly between the two slots).
    # Only k ≥ m is computed and mirrored, so H is exactly symmetric.
    M = params[0]
    d = M.shape[0]
    W = _factors(theta, d)
    L = W.shape[0]
    Rt, Lt = _partials(W)
    rho = _residual(Rt[L], M)
    dd = d * d
    H = np.empty((L * dd, L * dd))
    mid = np.empty((d, d))
    A = np.empty((d, d))
    B = np.empty((d, d))
    G = np.empty((d, d))
    T = np.empty((d, d))
    for m in range(L):
        _eye_into(mid)
        for k in range(m, L):
            np.dot(Lt[k].T, Lt[m], A)
            np.dot(Rt[k], Rt[m].T, B)
            if k == m:
                # A and B are symmetric here; symmetrise away the rounding.
                for a in range(d):
                    for c in range(a):
                        A[a, c] = A[c, a] = 0.5 * (A[a, c] + A[c, a])
                        B[a, c] = B[c, a] = 0.5 * (B[a, c] + B[c, a])
            else:
                np.dot(rho, Rt[m].T, T)
                np.dot(Lt[k].T, T, G)
                if k > m + 1:
                    np.dot(W[k - 1], mid, T)
                    mid, T = T, mid
            for a in range(d):
                for b in range(d):
                    row = k * dd + a * d + b
                    for c in range(d):
                        for e in range(d):
                            col = m * dd + c * d + e
                            h = A[a, c] * B[b, e]
                            if k != m:
                                h += G[a, e] * mid[b, c]
                            H[row, col] = h
                            H[col, row] = h
    return H
