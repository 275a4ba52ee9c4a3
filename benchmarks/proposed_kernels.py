"""Prototype kernels measured by the benchmarks as proposals for the library (not used by
effdyn itself).

``dmf_fused_drift(theta, U, s, a, b, M)`` returns a·∇E + b·Σ_q s_q ∇_θ(u_qᵀHu_q) for deep
matrix factorisation E = ½‖W_L⋯W_1 − M‖² in one compiled call. It differs from the
library's ``_grad`` + ``_third`` pair in three ways, each measured in
``bench_drift.py``:

1. one call instead of two, sharing the partial products W_i⋯W_1 and W_L⋯W_{i+2} and the
   residual between the gradient and the contraction;
2. products with the identity and with structurally zero factors at both ends of the
   chain are skipped: along θ + t·u every partial product is a polynomial in t,
   R_i(t) = R0_i + t R1_i + t² R2_i, and R_0 = I, R_1 = W_1 + tU_1 (no t²) are known
   without any product (likewise on the left). For depth 3 this needs 22 d×d products per
   direction plus 7 for the gradient, where the library kernels use about 60;
3. below ``SMALL_D`` the d×d products are explicit loops: a BLAS call costs ~0.25 µs of
   overhead, ten times a 2×2 product.

The t² coefficient of the gradient ∇E(θ + tu) = Lt(t)ᵀ(P(t) − M)Rt(t)ᵀ, times 2, is the
contraction (theory §1: ∇_θ uᵀH(θ)u = ∂²_t ∇E(θ + tu) at t = 0).
"""

from __future__ import annotations

import numba
import numpy as np

#: Largest d for which products are explicit loops rather than BLAS calls.
SMALL_D = 6


@numba.njit(cache=True)
def _mm_acc(A, B, c, out, T):
    """out += c·A·B (A, B may be transposed views); T is scratch of out's shape."""
    d = out.shape[0]
    if d <= SMALL_D:
        for i in range(d):
            for j in range(d):
                acc = 0.0
                for k in range(d):
                    acc += A[i, k] * B[k, j]
                out[i, j] += c * acc
    else:
        np.dot(A, B, T)
        for i in range(d):
            for j in range(d):
                out[i, j] += c * T[i, j]


@numba.njit(cache=True)
def _set(out, c, A):
    d = out.shape[0]
    for i in range(d):
        for j in range(d):
            out[i, j] = c * A[i, j]


@numba.njit(cache=True)
def dmf_fused_drift(theta, U, s, a, b, M):
    """a·∇E + b·Σ_q s_q ∇_θ(u_qᵀHu_q) for E = ½‖W_L⋯W_1 − M‖² (θ row-major W_1..W_L)."""
    d = M.shape[0]
    L = theta.shape[0] // (d * d)
    W = np.ascontiguousarray(theta).reshape((L, d, d))
    T = np.empty((d, d))
    # R0[i] = W_i⋯W_1 (slot i's right factor, R0[0] = I), L0[i] = W_L⋯W_{i+2} (L0[L-1] = I)
    R0 = np.zeros((L + 1, d, d))
    for j in range(d):
        R0[0, j, j] = 1.0
    if L >= 1:
        _set(R0[1], 1.0, W[0])
    for i in range(1, L):
        _mm_acc(W[i], R0[i], 1.0, R0[i + 1], T)
    L0 = np.zeros((L, d, d))
    for j in range(d):
        L0[L - 1, j, j] = 1.0
    if L >= 2:
        _set(L0[L - 2], 1.0, W[L - 1])
    for i in range(L - 2, 0, -1):
        _mm_acc(L0[i], W[i], 1.0, L0[i - 1], T)
    rho0 = R0[L] - M
    out = np.zeros(theta.shape[0])
    G = out.reshape((L, d, d))
    # A0[i] = ρ0 R0[i]ᵀ; gradient slot i = L0[i]ᵀ A0[i]
    A0 = np.zeros((L, d, d))
    for i in range(L):
        if i == 0:
            _set(A0[0], 1.0, rho0)
        else:
            _mm_acc(rho0, R0[i].T, 1.0, A0[i], T)
        if a != 0.0:
            if i == L - 1:
                for p in range(d):
                    for q in range(d):
                        G[i, p, q] += a * A0[i, p, q]
            else:
                _mm_acc(L0[i].T, A0[i], a, G[i], T)
    if b == 0.0:
        return out
    R1 = np.zeros((L + 1, d, d))
    R2 = np.zeros((L + 1, d, d))
    L1 = np.zeros((L, d, d))
    L2 = np.zeros((L, d, d))
    A1 = np.empty((d, d))
    A2 = np.empty((d, d))
    for q in range(U.shape[1]):
        w = 2.0 * b * s[q]
        if w == 0.0:
            continue
        V = np.ascontiguousarray(U[:, q]).reshape((L, d, d))
        # Right: R(i+1) = (W_i + tV_i) R(i), R(0) = I, R(1) = W_0 + tV_0 (no t² term).
        R1[1:] = 0.0
        R2[1:] = 0.0
        _set(R1[1], 1.0, V[0])
        for i in range(1, L):
            _mm_acc(W[i], R1[i], 1.0, R1[i + 1], T)
            _mm_acc(V[i], R0[i], 1.0, R1[i + 1], T)
            if i >= 2:
                _mm_acc(W[i], R2[i], 1.0, R2[i + 1], T)
            _mm_acc(V[i], R1[i], 1.0, R2[i + 1], T)
        # Left: L(i-1) = L(i)(W_i + tV_i), L(L-1) = I, L(L-2) = W_{L-1} + tV_{L-1}.
        L1[:] = 0.0
        L2[:] = 0.0
        if L >= 2:
            _set(L1[L - 2], 1.0, V[L - 1])
        for i in range(L - 2, 0, -1):
            _mm_acc(L1[i], W[i], 1.0, L1[i - 1], T)
            _mm_acc(L0[i], V[i], 1.0, L1[i - 1], T)
            if i <= L - 3:
                _mm_acc(L2[i], W[i], 1.0, L2[i - 1], T)
            _mm_acc(L1[i], V[i], 1.0, L2[i - 1], T)
        rho1 = R1[L]
        rho2 = R2[L]
        for i in range(L):
            # A(t) = ρ(t) R_i(t)ᵀ to order t²
            if i == 0:
                _set(A1, 1.0, rho1)
                _set(A2, 1.0, rho2)
            else:
                A1[:] = 0.0
                A2[:] = 0.0
                _mm_acc(rho0, R1[i].T, 1.0, A1, T)
                _mm_acc(rho1, R0[i].T, 1.0, A1, T)
                if i >= 2:
                    _mm_acc(rho0, R2[i].T, 1.0, A2, T)
                _mm_acc(rho1, R1[i].T, 1.0, A2, T)
                _mm_acc(rho2, R0[i].T, 1.0, A2, T)
            # t² coefficient of L_i(t)ᵀ A(t), times 2 (inside w)
            if i == L - 1:
                for p in range(d):
                    for r in range(d):
                        G[i, p, r] += w * A2[p, r]
            else:
                _mm_acc(L0[i].T, A2, w, G[i], T)
                _mm_acc(L1[i].T, A1, w, G[i], T)
                if i <= L - 3:
                    _mm_acc(L2[i].T, A0[i], w, G[i], T)
    return out


@numba.njit(cache=True)
def free_energy_sigma_tail(H, S, dtheta, eta, threshold, clip, q, n_track):
    """The rest of the free-energy flow's drift after dθ: [dθ, G·V] in one compiled call.

    Log form, factor storage V (P, r), dense eigendecomposition of H (small P): the same
    arithmetic as ``FreeEnergyFlow.rates``, ``_floored`` and the G·V product (theory §2:
    G = log|I − ηH| on the tracked modes above ``threshold``, log(clip) elsewhere; a
    decaying top-r mode is relaxed towards amplitude² q), without NumPy's per-call overhead.
    """
    P, r = S.shape
    w, E = np.linalg.eigh(0.5 * (H + H.T))
    g_off = np.log(clip)
    out = np.empty(P + P * r)
    out[:P] = dtheta
    GS = g_off * S
    c = np.empty(r)
    for j in range(n_track):
        i = P - 1 - j
        lam = w[i]
        g = np.log(max(abs(1.0 - eta * lam), clip)) if lam > threshold else g_off
        for a in range(r):
            acc = 0.0
            for p in range(P):
                acc += E[p, i] * S[p, a]
            c[a] = acc
        if j < r and q > 0.0 and g < 0.0:
            m = 0.0
            for a in range(r):
                m += c[a] * c[a]
            g *= min(max(1.0 - q / max(m, 1e-300), 0.0), 1.0)
        for p in range(P):
            for a in range(r):
                GS[p, a] += (g - g_off) * E[p, i] * c[a]
    out[P:] = GS.ravel()
    return out


def compiled_free_energy_drift(model):
    """A drift y ↦ dy/dk for a small built-in problem with the Σ part compiled, or None.

    Needs numba kernels, the log form, factor storage and the dense eigen path; the floor
    is the model's (a number, or "roundoff": (ε_mach·max(1, ‖θ‖))²). A prototype of what a
    compiled small-P path of ``FreeEnergyFlow.drift`` would cost.
    """
    k = getattr(model.problem, "numba_kernels", None)
    if (k is None or model.sigma_form != "log" or model.storage != "factor" or model.dim > model.dense_max):
        return None
    P, r, eta = model.dim, model.rank, model.eta
    ones = np.ones(r)
    eps = np.finfo(np.float64).eps

    def drift(y):
        theta = y[:P]
        V = np.ascontiguousarray(y[P:].reshape(P, r))
        g = k.grad(theta, k.params) + 0.5 * k.third(theta, V, ones, k.params)
        q = (eps * max(1.0, float(np.sqrt(theta @ theta)))) ** 2 if model.floor == "roundoff" else model.floor
        return free_energy_sigma_tail(k.hessian(theta, k.params), V, -eta * g, eta, model.threshold, model.clip, q,
                                      model.n_track)

    return drift
