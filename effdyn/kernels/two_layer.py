"""Compiled kernels of the finite-width two-layer network (:class:`effdyn.problems.TwoLayerNet`).

Network and loss (theory §4), parameters stored particle-major, θ.reshape(N, d + 1) with
row i = (w_i, a_i)::

    f(x_k) = c Σ_i a_i σ(w_i·x_k),     L = (1/2n) Σ_k (f(x_k) − y_k)²,

c = 1/N (mean-field scaling) or 1/√N (standard scaling). ``params = (X, XT, y, meta)``
with X (n, d), XT = Xᵀ contiguous (d, n), y (n,) and ``meta = [c, activation code]``; the
activation is an integer code so that one compiled kernel serves every activation and
width (no recompilation across sweeps).

Every derivative is a pair of passes over (particle, sample) pairs, O(N·n·d) each:

* the *forward* pass gives the outputs f_k and, for directions u = (v_i, b_i) (the
  columns of U), the first and second directional derivatives of the outputs
  ``Df_k = c Σ_i (b_i σ_ik + a_i σ'_ik p_ik)`` and
  ``D²f_k = c Σ_i (2 b_i σ'_ik p_ik + a_i σ''_ik p_ik²)`` with p_ik = v_i·x_k;
* the *backward* pass turns residuals r_k = f_k − y_k and these into per-particle
  outputs: a-components Σ_k C^a_ik and w-components Σ_k C^w_ik x_k (a matrix product).

With ∇f_k, ∇Df_k, ∇D²f_k the θ-gradients of these output functionals,

* ∇L = (1/n) Σ_k r_k ∇f_k;
* H u = (1/n) Σ_k [Df_k ∇f_k + r_k ∇Df_k]  (Gauss–Newton part + residual part);
* ∇(uᵀHu) = (1/n) Σ_k [2 Df_k ∇Df_k + D²f_k ∇f_k + r_k ∇D²f_k]  (theory §4, times N).

The backward pass needs every residual, so it cannot start before the forward pass has
summed over all particles: the two stay separate passes. Particles are processed in blocks
of rows; inside a block the inner products w_i·x_k, v_i·x_k and the w-outputs are dense
matrix products (BLAS through ``np.dot``) and the activation work is a compiled
element-wise loop. Blocks keep the memory at O(block·n) for any N: the forward quantities
are recomputed in the backward pass instead of being stored.

Threads: the dense products run on BLAS's threads; the element-wise loops run on the
calling thread. A ``prange`` version of those loops was measured and dropped: on this
2-core machine under load it was slower than the serial loop, and a cached kernel that
calls a ``parallel=True`` kernel segfaults when loaded from numba's cache in a new
process (numba issue #8578), which all of the problem kernels would do.

The free-energy θ-drift a·∇L + b·Σ_q s_q ∇(u_qᵀHu_q) is one forward and one backward
pass (:func:`_grad_third`, what ``TwoLayerNet._grad_third`` calls) instead of the two of
``_grad`` followed by ``_third``.

Lanczos calls H(θ)v many times at one θ: :func:`_linearise` keeps σ, σ', σ'' at θ and
:func:`_hvp_linearised` then needs no transcendental function (``TwoLayerNet._hvp`` uses
this pair up to ``CACHE_MAX_PAIRS``).

Related modules: the mean-field kinetic model's kernels, built on the two passes here, are
in :mod:`effdyn.kernels.kinetic`; plain NumPy references of every kernel, which the tests
compare with these and both with JAX autodiff of the loss, are in
:mod:`effdyn.kernels.two_layer_reference`.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import jit

#: Activation codes understood by the kernels (the registry is in problems/two_layer.py).
IDENTITY, TANH, SOFTPLUS, GELU = 0, 1, 2, 3

#: Target number of (particle, sample) pairs per block: 2^20 doubles = 8 MiB per array
#: (large enough for efficient BLAS products, small enough to bound the memory).
_BLOCK_ELEMS = 1 << 20

#: Problems with at most this many (particle, sample) pairs keep the activations at the
#: last θ for repeated Hessian-vector products (3 arrays of this many doubles).
CACHE_MAX_PAIRS = 1 << 21

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jit
def _act(z, code):
    """σ(z) and its first three derivatives for the activation ``code``."""
    if code == TANH:
        # libm's tanh costs ~3x exp. tanh|z| = (1 − e)/(1 + e), e = exp(−2|z|), has an
        # absolute error of a few 1e-16 everywhere (relative accuracy degrades only for
        # |z| << 1, where tanh itself is tiny), which is what sums over particles need.
        e = math.exp(-2.0 * abs(z))
        t = math.copysign((1.0 - e) / (1.0 + e), z)
        s1 = 1.0 - t * t
        return t, s1, -2.0 * t * s1, s1 * (6.0 * t * t - 2.0)
    if code == SOFTPLUS:
        # log(1 + e^z) and the logistic σ' from one exp(−|z|), without overflow.
        e = math.exp(-abs(z))
        s0 = max(z, 0.0) + math.log1p(e)
        g = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        s2 = g * (1.0 - g)
        return s0, g, s2, s2 * (1.0 - 2.0 * g)
    if code == GELU:
        # Exact GELU z·Φ(z): σ' = Φ + zφ, σ'' = φ(2 − z²), σ''' = φ(z³ − 4z).
        Phi = 0.5 * (1.0 + math.erf(z * _INV_SQRT2))
        phi = _INV_SQRT2PI * math.exp(-0.5 * z * z)
        return z * Phi, Phi + z * phi, phi * (2.0 - z * z), phi * z * (z * z - 4.0)
    return z, 1.0, 0.0, 0.0


@jit
def _block_size(n):
    return max(1, _BLOCK_ELEMS // max(n, 1))


@jit
def _block_inputs(theta, U, i0, i1, d, Wb, ab, Vb, bb):
    """Copy the block's w-rows, a-values and direction rows into rows 0..i1−i0−1 of the
    work arrays (contiguous, as the matrix products need)."""
    p = d + 1
    r = U.shape[1]
    for i in range(i1 - i0):
        base = (i0 + i) * p
        for j in range(d):
            Wb[i, j] = theta[base + j]
        ab[i] = theta[base + d]
        for q in range(r):
            for j in range(d):
                Vb[q, i, j] = U[base + j, q]
            bb[q, i] = U[base + d, q]


@jit
def _block_products(Wb, Vb, XT, B, with_directions, Z, Pq):
    """Z = W·Xᵀ and P_q = V_q·Xᵀ for the block's first B rows, written in place."""
    np.dot(Wb[:B], XT, Z[:B])
    if with_directions:
        for q in range(Vb.shape[0]):
            np.dot(Vb[q, :B], XT, Pq[q, :B])


@jit
def _forward_rows(B, Z, Pq, ab, bb, code, need_d2, f, Df, D2f):
    """Add the block rows 0..B−1 to the sums f, Df, D²f over particles (without the c)."""
    r = Pq.shape[0]
    n = Z.shape[1]
    for i in range(B):
        a = ab[i]
        for k in range(n):
            s0, s1, s2, s3 = _act(Z[i, k], code)
            f[k] += a * s0
            for q in range(r):
                pv = Pq[q, i, k]
                b = bb[q, i]
                Df[q, k] += b * s0 + a * s1 * pv
                if need_d2:
                    D2f[q, k] += 2.0 * b * s1 * pv + a * s2 * pv * pv


@jit
def _backward_rows(B, Z, Pq, ab, bb, code, resid, Df, D2f, wg, wt, wh, do_t, do_h, CW, CA, HW, HA):
    """Per-(particle, sample) output coefficients for the block rows 0..B−1."""
    r = Pq.shape[0]
    n = Z.shape[1]
    for i in range(B):
        a = ab[i]
        acc_a = 0.0
        if do_h:
            for q in range(r):
                HA[q, i] = 0.0
        for k in range(n):
            s0, s1, s2, s3 = _act(Z[i, k], code)
            rk = resid[k]
            ca = wg * rk * s0
            cw = wg * rk * a * s1
            if do_t or do_h:
                for q in range(r):
                    pv = Pq[q, i, k]
                    b = bb[q, i]
                    df = Df[q, k]
                    if do_t and wt[q] != 0.0:
                        d2 = D2f[q, k]
                        ca += wt[q] * (2.0 * df * s1 * pv + d2 * s0 + rk * s2 * pv * pv)
                        cw += wt[q] * (2.0 * df * (b * s1 + a * s2 * pv) + d2 * a * s1
                                       + rk * (2.0 * b * s2 * pv + a * s3 * pv * pv))
                    if do_h:
                        HA[q, i] += wh * (df * s0 + rk * s1 * pv)
                        HW[q, i, k] = wh * (df * a * s1 + rk * (b * s1 + a * s2 * pv))
            acc_a += ca
            CW[i, k] = cw
        CA[i] = acc_a


@jit
def _forward(theta, U, params, need_d2):
    """Outputs f (n,), Df (r, n) and, if ``need_d2``, D²f (r, n) along the columns of U."""
    X, XT, y, meta = params
    c = meta[0]
    code = int(meta[1])
    n, d = X.shape
    p = d + 1
    N = theta.shape[0] // p
    r = U.shape[1]
    f = np.zeros(n)
    Df = np.zeros((r, n))
    D2f = np.zeros((r, n))
    # Work arrays are allocated once per call and reused by every block (fresh large
    # allocations fault their pages in again on every block).
    bs = min(_block_size(n), N)
    Wb, ab, Vb, bb = np.empty((bs, d)), np.empty(bs), np.empty((r, bs, d)), np.empty((r, bs))
    Z, Pq = np.empty((bs, n)), np.empty((r, bs, n))
    for i0 in range(0, N, bs):
        i1 = min(N, i0 + bs)
        B = i1 - i0
        _block_inputs(theta, U, i0, i1, d, Wb, ab, Vb, bb)
        _block_products(Wb, Vb, XT, B, True, Z, Pq)
        _forward_rows(B, Z, Pq, ab, bb, code, need_d2, f, Df, D2f)
    return c * f, c * Df, c * D2f


@jit
def _backward(theta, U, params, resid, Df, D2f, wg, wt, wh):
    """Per-particle contractions from the forward quantities.

    Returns ``(G, HU)``: G (P,) = wg·∇L + Σ_q wt[q]·∇(u_qᵀHu_q) and HU (P, r) with
    column q = wh·H u_q (all-zero weights skip the corresponding work). ``resid`` is
    r_k = f_k − y_k; Df, D2f come from :func:`_forward` along the same U.
    """
    X, XT, y, meta = params
    c = meta[0]
    code = int(meta[1])
    n, d = X.shape
    p = d + 1
    N = theta.shape[0] // p
    r = U.shape[1]
    scale = c / n
    do_h = wh != 0.0
    do_t = False
    for q in range(r):
        if wt[q] != 0.0:
            do_t = True
    G = np.zeros(theta.shape[0])
    HU = np.zeros((theta.shape[0], r))
    rh = r if do_h else 0
    bs = min(_block_size(n), N)
    Wb, ab, Vb, bb = np.empty((bs, d)), np.empty(bs), np.empty((r, bs, d)), np.empty((r, bs))
    Z, Pq = np.empty((bs, n)), np.empty((r, bs, n))
    CW, CA = np.empty((bs, n)), np.empty(bs)
    HW, HA = np.empty((rh, bs, n)), np.empty((rh, bs))
    OW, OH = np.empty((bs, d)), np.empty((bs, d))
    for i0 in range(0, N, bs):
        i1 = min(N, i0 + bs)
        B = i1 - i0
        _block_inputs(theta, U, i0, i1, d, Wb, ab, Vb, bb)
        _block_products(Wb, Vb, XT, B, do_h or do_t, Z, Pq)
        _backward_rows(B, Z, Pq, ab, bb, code, resid, Df, D2f, wg, wt, wh, do_t, do_h, CW, CA, HW, HA)
        np.dot(CW[:B], X, OW[:B])
        for i in range(B):
            base = (i0 + i) * p
            for j in range(d):
                G[base + j] = scale * OW[i, j]
            G[base + d] = scale * CA[i]
        for q in range(rh):
            np.dot(HW[q, :B], X, OH[:B])
            for i in range(B):
                base = (i0 + i) * p
                for j in range(d):
                    HU[base + j, q] = scale * OH[i, j]
                HU[base + d, q] = scale * HA[q, i]
    return G, HU


# --- the problem kernels (signature convention of effdyn.problems.base) -----------------
@jit
def _no_directions(P):
    return np.zeros((P, 0))


@jit
def _loss(theta, params):
    f, Df, D2f = _forward(theta, _no_directions(theta.shape[0]), params, False)
    res = f - params[2]
    return 0.5 * np.dot(res, res) / res.shape[0]


@jit
def _grad(theta, params):
    U = _no_directions(theta.shape[0])
    f, Df, D2f = _forward(theta, U, params, False)
    G, HU = _backward(theta, U, params, f - params[2], Df, D2f, 1.0, np.zeros(0), 0.0)
    return G


@jit
def _hvp(theta, v, params):
    V = np.empty((theta.shape[0], 1))
    V[:, 0] = v
    f, Df, D2f = _forward(theta, V, params, False)
    G, HU = _backward(theta, V, params, f - params[2], Df, D2f, 0.0, np.zeros(1), 1.0)
    return HU[:, 0].copy()


@jit
def _third(theta, U, s, params):
    f, Df, D2f = _forward(theta, U, params, True)
    G, HU = _backward(theta, U, params, f - params[2], Df, D2f, 0.0, s, 0.0)
    return G



# --- the fused free-energy θ-drift -----------------------------------------------------
@jit
def _grad_third(theta, U, s, a, b, params):
    """a·∇L + b·Σ_q s_q ∇(u_qᵀHu_q) (the free-energy θ-drift up to −η) in one call.

    The same single forward and backward pass as the kinetic model's
    :func:`effdyn.kernels.kinetic._contractions`, with the per-direction weights
    w_q = b·s_q that :func:`_backward` accepts (so any s, not only s ∝ 1), and no
    Hessian-vector products. The separate ``_grad`` and ``_third`` make two
    forward and two backward passes, recomputing the activations in each. With every
    b·s_q = 0 the directions are dropped and this is the gradient pass alone.
    """
    P = theta.shape[0]
    r = U.shape[1]
    wt = np.empty(r)
    do_t = False
    for q in range(r):
        wt[q] = b * s[q]
        if wt[q] != 0.0:
            do_t = True
    if do_t:
        f, Df, D2f = _forward(theta, U, params, True)
        G, HU = _backward(theta, U, params, f - params[2], Df, D2f, a, wt, 0.0)
        return G
    V = _no_directions(P)
    f, Df, D2f = _forward(theta, V, params, False)
    G, HU = _backward(theta, V, params, f - params[2], Df, D2f, a, np.zeros(0), 0.0)
    return G


# --- dense quantities for small problems (Hessian, NTK Gram) --------------------------------
@jit
def _hessian(theta, params):
    # H = (1/n) JᵀJ + (1/n) Σ_k r_k ∇²f_k; ∇²f_k is block diagonal over particles with
    # blocks c·[[a σ'' x xᵀ, σ' x], [σ' xᵀ, 0]].
    X, XT, y, meta = params
    c = meta[0]
    code = int(meta[1])
    n, d = X.shape
    p = d + 1
    P = theta.shape[0]
    N = P // p
    J = np.zeros((n, P))
    H = np.zeros((P, P))
    f = np.zeros(n)
    # σ' and σ'' are kept from the forward pass: the second pass needs the residual first
    S1 = np.empty((N, n))
    S2 = np.empty((N, n))
    for i in range(N):
        a = theta[i * p + d]
        for k in range(n):
            z = 0.0
            for j in range(d):
                z += theta[i * p + j] * X[k, j]
            s0, s1, s2, s3 = _act(z, code)
            S1[i, k] = s1
            S2[i, k] = s2
            f[k] += c * a * s0
            for j in range(d):
                J[k, i * p + j] = c * a * s1 * X[k, j]
            J[k, i * p + d] = c * s0
    res = f - y
    for i in range(N):
        a = theta[i * p + d]
        base = i * p
        for k in range(n):
            s1, s2 = S1[i, k], S2[i, k]
            g = c * res[k] / n
            for j in range(d):
                H[base + j, base + d] += g * s1 * X[k, j]
                for l in range(d):
                    H[base + j, base + l] += g * a * s2 * X[k, j] * X[k, l]
        for j in range(d):
            H[base + d, base + j] = H[base + j, base + d]
    H += np.dot(J.T, J) / n
    return 0.5 * (H + H.T)  # exactly symmetric despite the rounding of the two halves


@jit
def _ntk_gram(theta, params):
    """Mean-field NTK Gram K_kl = (1/n)·(1/N) Σ_i [σ_ik σ_il + a_i² σ'_ik σ'_il x_k·x_l]."""
    X, XT, y, meta = params
    code = int(meta[1])
    n, d = X.shape
    p = d + 1
    N = theta.shape[0] // p
    S0 = np.empty((N, n))
    S1a = np.empty((N, n))
    for i in range(N):
        a = theta[i * p + d]
        for k in range(n):
            z = 0.0
            for j in range(d):
                z += theta[i * p + j] * X[k, j]
            s0, s1, s2, s3 = _act(z, code)
            S0[i, k] = s0
            S1a[i, k] = a * s1
    K = np.dot(S0.T, S0) + np.dot(S1a.T, S1a) * np.dot(X, XT)
    return K / (n * N)


# --- Hessian-vector products at a fixed θ (Lanczos) --------------------------------------
@jit
def _linearise(theta, params):
    """Activations at θ kept for repeated HVPs: (a, S0, S1, S2, residual), S_m = σ^(m)(w_i·x_k)."""
    X, XT, y, meta = params
    c = meta[0]
    code = int(meta[1])
    n, d = X.shape
    p = d + 1
    N = theta.shape[0] // p
    W = np.empty((N, d))
    a = np.empty(N)
    for i in range(N):
        for j in range(d):
            W[i, j] = theta[i * p + j]
        a[i] = theta[i * p + d]
    Z = np.dot(W, XT)
    S0 = np.empty((N, n))
    S1 = np.empty((N, n))
    S2 = np.empty((N, n))
    f = np.zeros(n)
    for i in range(N):
        for k in range(n):
            s0, s1, s2, s3 = _act(Z[i, k], code)
            S0[i, k] = s0
            S1[i, k] = s1
            S2[i, k] = s2
            f[k] += a[i] * s0
    return a, S0, S1, S2, c * f - y


@jit
def _hvp_linearised(v, a, S0, S1, S2, res, params):
    """H(θ)v from the activations of :func:`_linearise` (no transcendental functions)."""
    X, XT, y, meta = params
    c = meta[0]
    n, d = X.shape
    p = d + 1
    N = a.shape[0]
    V = np.empty((N, d))
    b = np.empty(N)
    for i in range(N):
        for j in range(d):
            V[i, j] = v[i * p + j]
        b[i] = v[i * p + d]
    Pm = np.dot(V, XT)
    Df = np.zeros(n)
    for i in range(N):
        for k in range(n):
            Df[k] += b[i] * S0[i, k] + a[i] * S1[i, k] * Pm[i, k]
    Df *= c
    scale = c / n
    out = np.empty(N * p)
    CW = np.empty((N, n))
    for i in range(N):
        acc = 0.0
        for k in range(n):
            rk = res[k]
            acc += Df[k] * S0[i, k] + rk * S1[i, k] * Pm[i, k]
            CW[i, k] = Df[k] * a[i] * S1[i, k] + rk * (b[i] * S1[i, k] + a[i] * S2[i, k] * Pm[i, k])
        out[i * p + d] = scale * acc
    OW = np.dot(CW, X)
    for i in range(N):
        for j in range(d):
            out[i * p + j] = scale * OW[i, j]
    return out
