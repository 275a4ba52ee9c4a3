"""The central flow's semidefinite complementarity problem, as a pure JAX function.

The problem (see :mod:`effdyn.models.sdcp`, whose NumPy solver is the reference):

    X ⪰ 0,   Z = A + B[X] ⪰ 0,   ⟨X, Z⟩ = 0,

equivalently ``min_{X ⪰ 0} ½ xᵀMx + aᵀx`` in svec coordinates (x = svec X, a = svec A,
M the PSD matrix of B). Inside a compiled loop the number r of critical eigenvalues changes
from step to step while shapes must not, so the solver works on a static ``R × R`` problem
(R = the central flow's ``max_rank``) of which only the leading ``r × r`` block is real:
the trailing rows are decoupled (B acts as the identity on them and A is the identity
there), so that their part of the solution is exactly 0.

Algorithm (fixed budgets, ``lax.while_loop``):

1. ``A ⪰ 0`` gives X = 0 (nothing to restore).
2. Otherwise semismooth Newton steps on the natural residual F(x) = x − Π(x − (Mx + a))
   (Π: projection onto the PSD cone), from the warm start (the previous solution, when it
   had the same r) or from X = 0. The generalised Jacobian of Π at W = QΛQᵀ acts as
   H ↦ Q(Ω ∘ QᵀHQ)Qᵀ with Ω the divided differences of max(λ, 0); one step is a
   least-squares solve of size R(R+1)/2. A step that does not reduce ‖F‖ is halved (up to
   four times) and otherwise replaced by a projected-gradient step X ← Π(X − Z/‖M‖), which
   decreases the objective. After every step the exact minimiser on the face of the
   iterate (spanned by the positive eigenvectors of X − Z) is tried too; the iterate with
   the smallest KKT residual is kept. From a warm start this takes 1–3 steps.
3. If that misses the tolerance within ``max_iter`` steps (degenerate problems: a singular
   M, where the solution set is not a point), the infeasible primal-dual interior-point
   method of the NumPy solver (HKM direction) runs, and its result is finished by the same
   Newton and face steps.
4. The returned X is Π(W) of that iterate (PSD by construction); ``residual`` is the same
   relative KKT residual as the NumPy solver's, and ``ok`` says whether it is within
   ``loose·tol`` (the NumPy solver's acceptance) and X is finite and not exploding (an
   SDCP without solution makes ‖X‖ grow without bound).

A singular M (several critical eigenvalues with dependent curvature gradients) makes the
solution non-unique; a Tikhonov term 1e-11·‖M‖ selects a small one, as in the NumPy solver.
The drift of the central flow only sees B[X], which is unique.
"""

from __future__ import annotations

import numpy as np

from .._jax import import_jax

__all__ = ["svec_pairs", "svec", "smat", "solve_sdcp_jax", "kkt_residual", "LOOSE_FACTOR"]

#: Results within this factor of ``tol`` are accepted (as effdyn.models.sdcp does).
LOOSE_FACTOR = 1e3
_SQRT2 = float(np.sqrt(2.0))


def svec_pairs(R: int):
    """(i, j, w): index pairs i <= j in svec order (upper triangle, row by row) and weights
    (1 on the diagonal, √2 off it), as NumPy arrays (static)."""
    pairs = [(i, j) for i in range(R) for j in range(i, R)]
    i = np.array([p[0] for p in pairs], dtype=np.int64)
    j = np.array([p[1] for p in pairs], dtype=np.int64)
    w = np.where(i == j, 1.0, _SQRT2)
    return i, j, w


def svec(X):
    """Symmetric (..., R, R) → (..., R(R+1)/2) with ⟨X, Y⟩ = svec(X)·svec(Y)."""
    i, j, w = svec_pairs(X.shape[-1])
    return X[..., i, j] * w


def smat(x, R: int):
    """Inverse of :func:`svec`."""
    _, jnp = import_jax()
    i, j, w = svec_pairs(R)
    v = x / w
    X = jnp.zeros(x.shape[:-1] + (R, R), x.dtype)
    X = X.at[..., i, j].set(v)
    return X.at[..., j, i].set(v)


def _basis(R: int):
    """The svec basis as matrices: E[p] with svec(E[p]) = e_p (static NumPy array)."""
    i, j, w = svec_pairs(R)
    E = np.zeros((len(i), R, R))
    for p, (a, b, c) in enumerate(zip(i, j, w)):
        E[p, a, b] = E[p, b, a] = 1.0 / c
    return E


def kkt_residual(X, Z, norm_a, norm_b):
    """Relative KKT residual of :mod:`effdyn.models.sdcp` (max of the primal, dual and
    complementarity violations; X is assumed symmetric)."""
    _, jnp = import_jax()
    tiny = jnp.finfo(jnp.float64).tiny
    nx = jnp.linalg.norm(X)
    scale = jnp.maximum(jnp.maximum(norm_a, norm_b * nx), tiny)
    wx = jnp.linalg.eigvalsh(X)
    wz = jnp.linalg.eigvalsh(0.5 * (Z + Z.T))
    safe_nx = jnp.where(nx > 0, nx, 1.0)
    primal = jnp.where(nx > 0, jnp.maximum(0.0, -wx[0]) / safe_nx, 0.0)
    dual = jnp.maximum(0.0, -wz[0]) / scale
    comp = jnp.where(nx > 0, jnp.linalg.norm(X @ Z) / (safe_nx * scale), 0.0)
    return jnp.maximum(jnp.maximum(primal, dual), comp)


def solve_sdcp_jax(A, M, r, X0=None, *, tol: float = 1e-10, max_iter: int = 20, ip_iter: int = 80):
    """Solve the SDCP on the leading ``r × r`` block of a static ``R × R`` problem.

    Parameters
    ----------
    A : array (R, R)
        Symmetric; only its leading r × r block is used.
    M : array (m, m), m = R(R+1)/2
        PSD matrix of B in svec coordinates; only the rows and columns of pairs inside the
        leading block are used.
    r : int or traced int
        Size of the real problem (0 <= r <= R).
    X0 : array (R, R), optional
        Warm start (its leading block is used).
    tol, max_iter, ip_iter : float, int, int
        Relative KKT tolerance, the Newton budget (before and after the interior point) and
        the interior-point budget (static).

    Returns
    -------
    X : array (R, R)
        The solution, zero outside the leading block.
    residual : scalar
        Relative KKT residual.
    ok : bool scalar
        ``residual <= 1000·tol`` and X finite and bounded.
    iterations : int scalar
        Newton plus interior-point iterations.
    """
    jax, jnp = import_jax()
    R = A.shape[-1]
    i, j, _ = svec_pairs(R)
    m = len(i)
    E = jnp.asarray(_basis(R))
    tiny = jnp.finfo(jnp.float64).tiny
    act = jnp.arange(R) < r
    block = act[:, None] & act[None, :]
    act_p = jnp.asarray(i) < r                                    # pairs inside the block (i <= j)
    A = 0.5 * (A + A.T)
    A_r = jnp.where(block, A, 0.0)
    M_r = jnp.where(act_p[:, None] & act_p[None, :], 0.5 * (M + M.T), 0.0)
    norm_a = jnp.linalg.norm(A_r)
    wm = jnp.linalg.eigvalsh(M_r)
    norm_b = jnp.maximum(wm[-1], 0.0)
    # B singular on the block (beyond the zero rows of the padding): the solution set may be
    # unbounded; as the NumPy solver, accept |X| only up to 1e5·|A|/λ_min⁺(B)
    small = wm <= 1e-12 * norm_b
    has_null = jnp.sum(small) > m - jnp.sum(act_p)
    min_pos = jnp.min(jnp.where(small, jnp.inf, wm))
    x_bound = jnp.where(has_null, 1e5 * jnp.maximum(norm_a, tiny) / min_pos, jnp.inf)
    # the trailing rows: A = I and B = identity there, so their part of the solution is 0
    A_p = A_r + jnp.diag(jnp.where(act, 0.0, 1.0))
    M_p = M_r + jnp.diag(jnp.where(act_p, 1e-11 * norm_b, 1.0))
    a = svec(A_p)
    eye = jnp.eye(m)

    def Z_of(x):
        return smat(M_p @ x + a, R)

    def residual(X):
        # X is PSD here (a projection), so only the dual and complementarity parts remain
        Z = jnp.where(block, Z_of(svec(X)), 0.0)
        nx = jnp.linalg.norm(X)
        scale = jnp.maximum(jnp.maximum(norm_a, norm_b * nx), tiny)
        dual = jnp.maximum(0.0, -jnp.linalg.eigvalsh(Z)[0]) / scale
        comp = jnp.where(nx > 0, jnp.linalg.norm(X @ Z) / (jnp.where(nx > 0, nx, 1.0) * scale), 0.0)
        return jnp.maximum(dual, comp)

    def natural(x):
        """F(x) = x − svec Π(W), W = X − Z, with Π(W) and the eigenpairs of W."""
        lam, Q = jnp.linalg.eigh(smat(x, R) - Z_of(x))
        P = (Q * jnp.maximum(lam, 0.0)) @ Q.T
        return x - svec(P), P, lam, Q

    def solve_reg(K, rhs, rel):
        # a (near-)singular system solved in the least-squares sense near the origin
        KtK = K.T @ K
        return jnp.linalg.solve(KtK + rel * jnp.maximum(jnp.max(jnp.abs(KtK)), tiny) * eye, K.T @ rhs)

    def newton_step(x):
        F, P, lam, Q = natural(x)
        pos = jnp.maximum(lam, 0.0)
        diff = lam[:, None] - lam[None, :]
        same = jnp.abs(diff) <= 1e-14 * jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
        omega = jnp.where(same, (lam[:, None] > 0).astype(lam.dtype),
                          (pos[:, None] - pos[None, :]) / jnp.where(same, 1.0, diff))
        QEQ = jnp.einsum("ai,pab,bj->pij", Q, E, Q)
        # DΠ on the svec basis: columns svec(Q (Ω ∘ QᵀE_pQ) Qᵀ); J = I − DΠ (I − M)
        D = svec(jnp.einsum("ai,pij,bj->pab", Q, omega * QEQ, Q)).T
        dx = solve_reg(eye - D @ (eye - M_p), -F, 1e-20)
        nF = jnp.linalg.norm(F)

        # backtracking on ‖F‖: t = 1, 1/2, ..., 1/16
        def bt_cond(c):
            return (c[1] < 5) & ~c[2]

        def bt_body(c):
            t, n, _, _ = c
            xt = x + t * dx
            return 0.5 * t, n + 1, jnp.linalg.norm(natural(xt)[0]) < (1.0 - 1e-4) * nF, xt

        _, _, decreased, x_n = jax.lax.while_loop(bt_cond, bt_body, (jnp.ones(()), jnp.zeros((), jnp.int32),
                                                                     jnp.zeros((), bool), x))
        _, P_n, lam_n, Q_n = natural(x_n)
        # the face of the new iterate (spanned by the positive eigenvectors of X − Z): the
        # exact minimiser there finishes problems that Newton steps approach slowly
        face = lam_n > 0
        f_p = face[jnp.asarray(i)] & face[jnp.asarray(j)]
        Pf = svec(jnp.einsum("ai,pij,bj->pab", Q_n, E, Q_n)).T            # svec(Y) ↦ svec(QYQᵀ)
        K = jnp.where(f_p[:, None] & f_p[None, :], Pf.T @ M_p @ Pf, 0.0) + jnp.diag(jnp.where(f_p, 0.0, 1.0))
        y0 = jnp.where(f_p, svec(Q_n.T @ smat(x_n, R) @ Q_n), 0.0)
        dy = solve_reg(K, jnp.where(f_p, -(K @ y0 + Pf.T @ a), 0.0), 1e-26)
        wy, Vy = jnp.linalg.eigh(smat(y0 + dy, R))
        P_f = Q_n @ ((Vy * jnp.maximum(wy, 0.0)) @ Vy.T) @ Q_n.T
        res_n, res_f = residual(P_n), residual(P_f)
        use_f = res_f < res_n
        return x_n, jnp.where(use_f, P_f, P_n), jnp.where(use_f, res_f, res_n), decreased

    scale_x = jnp.maximum(1.0, norm_a / jnp.maximum(norm_b, tiny))
    scale_z = jnp.maximum(1.0, norm_a)

    def max_step(S, dS):
        Li = jnp.linalg.inv(jnp.linalg.cholesky(S))
        w_ = jnp.linalg.eigvalsh(Li @ dS @ Li.T)[0]
        return jnp.where(w_ >= 0, jnp.inf, -1.0 / jnp.where(w_ >= 0, -1.0, w_))

    def ip_step(X, Z, sigma):
        # infeasible primal-dual path following (HKM direction), as effdyn.models.sdcp does
        Rr = M_p @ svec(X) + a - svec(Z)
        Zi = jnp.linalg.inv(Z)
        XDZ = jnp.einsum("ab,pbc,cd->pad", X, E, Zi)
        Ek = svec(0.5 * (XDZ + jnp.swapaxes(XDZ, -1, -2))).T          # D ↦ ½(X D Z⁻¹ + Z⁻¹ D X)
        rhs = svec(sigma * jnp.sum(X * Z) / R * Zi - X) - Ek @ Rr
        dx = jnp.linalg.solve(eye + Ek @ M_p, rhs)
        dX, dZ = smat(dx, R), smat(M_p @ dx + Rr, R)
        alpha = jnp.minimum(1.0, 0.95 * jnp.minimum(max_step(X, dX), max_step(Z, dZ)))
        going = jnp.isfinite(alpha) & (alpha >= 1e-12)
        alpha = jnp.where(going, alpha, 0.0)
        Xn, Zn = X + alpha * dX, Z + alpha * dZ
        sigma = jnp.where(alpha > 0.9, 0.05, jnp.where(alpha > 0.5, 0.2, 0.5))
        return 0.5 * (Xn + Xn.T), 0.5 * (Zn + Zn.T), sigma, going

    # One loop: Newton from the warm start (mode 0); if it misses the tolerance within its
    # budget or stalls, the interior point from its standard start (mode 1); then Newton
    # again from the interior point's best iterate (mode 2).
    def cond(c):
        mode, n = c[0], c[1]
        return (c[6] > tol) & (((mode != 1) & (n < max_iter)) | ((mode == 1) & (n < ip_iter)))

    def body(c):
        mode, n, x, X, Z, sigma, best_res, best_P, total = c

        def newton(_):
            x_n, P_c, res_c, decreased = newton_step(x)
            stop = (mode == 0) & (~decreased | (n + 1 >= max_iter)) & (res_c > tol)
            return (jnp.where(stop, 1, mode).astype(jnp.int32), jnp.where(stop, 0, n + 1).astype(jnp.int32), x_n, X, Z,
                    sigma, P_c, res_c)

        def interior(_):
            Xn, Zn, sig, going = ip_step(X, Z, sigma)
            res_n = residual(Xn)
            done = ~going | (n + 1 >= ip_iter) | (res_n <= 0.1 * tol)
            # leaving: Newton from the best point so far
            x_n = jnp.where(done, svec(jnp.where(res_n < best_res, Xn, best_P)), x)
            return (jnp.where(done, 2, 1).astype(jnp.int32), jnp.where(done, 0, n + 1).astype(jnp.int32), x_n, Xn, Zn,
                    sig, Xn, res_n)

        mode, n, x, X, Z, sigma, P_c, res_c = jax.lax.cond(mode == 1, interior, newton, None)
        better = res_c < best_res
        return (mode, n, x, X, Z, sigma, jnp.where(better, res_c, best_res), jnp.where(better, P_c, best_P),
                total + 1)

    x0 = jnp.zeros(m) if X0 is None else svec(jnp.where(block, 0.5 * (X0 + X0.T), 0.0))
    trivial = jnp.linalg.eigvalsh(A_p)[0] >= 0.0        # A ⪰ 0: X = 0
    P0 = natural(x0)[1]
    res0 = jnp.where(trivial, 0.0, residual(P0))
    c0 = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), x0, scale_x * jnp.eye(R), scale_z * jnp.eye(R),
          jnp.asarray(0.3), res0, P0, jnp.zeros((), jnp.int64))
    out = jax.lax.while_loop(cond, body, c0)
    res, X, it = out[6], out[7], out[8]
    X = jnp.where(trivial | ~block, 0.0, X)
    # a solvable problem has |X| of order |A|/λ_min⁺(B); an unbounded one grows without limit
    ok = (res <= LOOSE_FACTOR * tol) & jnp.all(jnp.isfinite(X)) & (jnp.linalg.norm(X) <= x_bound)
    return X, res, ok, it
