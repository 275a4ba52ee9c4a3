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
        Relative KKT tolerance, the Newton budget and the interior-point budget (static).

    Returns
    -------
    X : array (R, R)
        The solution, zero outside the leading block.
    residual : scalar
        Relative KKT residual.
    ok : bool scalar
        ``residual <= 1000·tol`` and X finite and bounded.
    iterations : int scalar
    """
    jax, jnp = import_jax()
    R = A.shape[-1]
    i, j, w = svec_pairs(R)
    m = len(i)
    E = jnp.asarray(_basis(R))
    act = jnp.arange(R) < r
    act_p = jnp.asarray(i) < r                                    # pairs inside the block (i <= j)
    A = 0.5 * (A + A.T)
    A_r = jnp.where(act[:, None] & act[None, :], A, 0.0)
    M_r = jnp.where(act_p[:, None] & act_p[None, :], M, 0.0)
    norm_a = jnp.linalg.norm(A_r)
    norm_b = jnp.maximum(jnp.linalg.eigvalsh(0.5 * (M_r + M_r.T))[-1], 0.0)
    # the trailing rows: A = I and B = identity there, so their solution part is 0
    A_p = A_r + jnp.diag(jnp.where(act, 0.0, 1.0))
    rho = 1e-11 * norm_b
    M_p = M_r + jnp.diag(jnp.where(act_p, rho, 1.0))
    a = svec(A_p)
    L = jnp.maximum(jnp.linalg.eigvalsh(M_p)[-1], jnp.finfo(jnp.float64).tiny)
    eye = jnp.eye(m)

    def Z_of(x):
        return smat(M_p @ x + a, R)

    def project(W):
        lam, Q = jnp.linalg.eigh(0.5 * (W + W.T))
        return (Q * jnp.maximum(lam, 0.0)) @ Q.T, lam, Q

    def residual_of(X):
        return kkt_residual(jnp.where(act[:, None] & act[None, :], X, 0.0),
                            jnp.where(act[:, None] & act[None, :], Z_of(svec(X)), 0.0), norm_a, norm_b)

    def natural(x):
        X = smat(x, R)
        W = X - Z_of(x)
        P, lam, Q = project(W)
        return x - svec(P), P, lam, Q

    def newton_direction(x, F, lam, Q):
        pos = jnp.maximum(lam, 0.0)
        diff = lam[:, None] - lam[None, :]
        same = jnp.abs(diff) <= 1e-14 * jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
        omega = jnp.where(same, (lam[:, None] > 0).astype(lam.dtype),
                          (pos[:, None] - pos[None, :]) / jnp.where(same, 1.0, diff))
        # DΠ on the svec basis: columns svec(Q (Ω ∘ QᵀE_pQ) Qᵀ)
        QEQ = jnp.einsum("ai,pab,bj->pij", Q, E, Q)
        D = svec(jnp.einsum("ai,pij,bj->pab", Q, omega * QEQ, Q)).T
        J = eye - D @ (eye - M_p)
        return jnp.linalg.lstsq(J, -F, rcond=1e-14)[0]

    def face_solve(x, lam, Q):
        # minimise ½B[X,X] + ⟨A,X⟩ over X = Q_S Y Q_Sᵀ, S = {lam > 0}, nearest to the iterate
        face = lam > 0
        f_p = face[jnp.asarray(i)] & face[jnp.asarray(j)]
        Pf = svec(jnp.einsum("ai,pij,bj->pab", Q, E, Q)).T            # svec(Y) ↦ svec(QYQᵀ)
        K = Pf.T @ M_p @ Pf
        K = jnp.where(f_p[:, None] & f_p[None, :], K, 0.0) + jnp.diag(jnp.where(f_p, 0.0, 1.0))
        y0 = jnp.where(f_p, svec(Q.T @ smat(x, R) @ Q), 0.0)
        rhs = jnp.where(f_p, -(K @ y0 + Pf.T @ a), 0.0)
        scale_k = jnp.maximum(jnp.max(jnp.abs(K)), jnp.finfo(jnp.float64).tiny)
        dy = jnp.linalg.lstsq(K / scale_k, rhs / scale_k, rcond=1e-13)[0]
        Y = smat(y0 + dy, R)
        return Q @ project(Y)[0] @ Q.T

    def newton(x0, budget):
        F0, P0, lam0, Q0 = natural(x0)

        def cond(c):
            return (c[5] > tol) & (c[6] < budget)

        def body(c):
            x, F, lam, Q, best_P, best_res, it = c
            nF = jnp.linalg.norm(F)
            dx = newton_direction(x, F, lam, Q)

            def try_step(t):
                xt = x + t * dx
                Ft, Pt, lt, Qt = natural(xt)
                return xt, Ft, Pt, lt, Qt

            # backtracking on ‖F‖ over t = 1, 1/2, ..., 1/16 (the first success wins)
            steps = [try_step(0.5 ** s) for s in range(5)]
            norms = jnp.stack([jnp.linalg.norm(st[1]) for st in steps])
            good = norms < (1.0 - 1e-4) * nF
            pick = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs)[jnp.argmax(good)], *steps)
            # none succeeded: a projected-gradient step on the objective instead
            xg = svec(project(smat(x, R) - Z_of(x) / L)[0])
            Fg, Pg, lg, Qg = natural(xg)
            x_n, F_n, P_n, l_n, Q_n = jax.tree_util.tree_map(
                lambda a_, b_: jnp.where(jnp.any(good), a_, b_), pick, (xg, Fg, Pg, lg, Qg))
            res_n = residual_of(P_n)
            # the face of the new iterate (the positive eigenvectors of X − Z): the exact
            # minimiser there finishes problems that Newton steps approach slowly
            P_f = face_solve(x_n, l_n, Q_n)
            res_f = residual_of(P_f)
            use_f = res_f < res_n
            P_c, res_c = jnp.where(use_f, P_f, P_n), jnp.where(use_f, res_f, res_n)
            better = res_c < best_res
            return (x_n, F_n, l_n, Q_n, jnp.where(better, P_c, best_P), jnp.where(better, res_c, best_res),
                    it + 1)

        start = (x0, F0, lam0, Q0, P0, residual_of(P0), jnp.zeros((), jnp.int64))
        out = jax.lax.while_loop(cond, body, start)
        return out[4], out[5], out[6]

    def interior_point(_):
        # infeasible primal-dual path following (HKM direction), as effdyn.models.sdcp does
        scale_x = jnp.maximum(1.0, norm_a / jnp.maximum(norm_b, jnp.finfo(jnp.float64).tiny))
        scale_z = jnp.maximum(1.0, norm_a)

        def max_step(S, dS):
            Li = jnp.linalg.inv(jnp.linalg.cholesky(S))
            w_ = jnp.linalg.eigvalsh(Li @ dS @ Li.T)
            return jnp.where(w_[0] >= 0, jnp.inf, -1.0 / jnp.where(w_[0] >= 0, -1.0, w_[0]))

        def cond(c):
            return (c[3] > 0.1 * tol) & (c[5] < ip_iter) & c[6]

        def body(c):
            X, Z, best_X, best_res, sigma, it, going = c
            x = svec(X)
            Rr = M_p @ x + a - svec(Z)
            gap = jnp.sum(X * Z)
            mu = sigma * gap / R
            Zi = jnp.linalg.inv(Z)
            # svec matrix of D ↦ ½(X D Z⁻¹ + Z⁻¹ D X)
            XDZ = jnp.einsum("ab,pbc,cd->pad", X, E, Zi)
            Ek = svec(0.5 * (XDZ + jnp.swapaxes(XDZ, -1, -2))).T
            rhs = svec(mu * Zi - X) - Ek @ Rr
            dx = jnp.linalg.solve(eye + Ek @ M_p, rhs)
            dz = M_p @ dx + Rr
            dX, dZ = smat(dx, R), smat(dz, R)
            alpha = jnp.minimum(1.0, 0.95 * jnp.minimum(max_step(X, dX), max_step(Z, dZ)))
            going = jnp.isfinite(alpha) & (alpha >= 1e-12)
            alpha = jnp.where(going, alpha, 0.0)
            Xn, Zn = X + alpha * dX, Z + alpha * dZ
            Xn, Zn = 0.5 * (Xn + Xn.T), 0.5 * (Zn + Zn.T)
            res_n = residual_of(Xn)
            better = res_n < best_res
            sigma = jnp.where(alpha > 0.9, 0.05, jnp.where(alpha > 0.5, 0.2, 0.5))
            return (Xn, Zn, jnp.where(better, Xn, best_X), jnp.where(better, res_n, best_res), sigma, it + 1, going)

        X0_ = scale_x * jnp.eye(R)
        c0 = (X0_, scale_z * jnp.eye(R), X0_, residual_of(X0_), jnp.asarray(0.3), jnp.zeros((), jnp.int64),
              jnp.ones((), bool))
        out = jax.lax.while_loop(cond, body, c0)
        # finish on the face the interior point found
        Xp, res_p, it_p = newton(svec(out[2]), max_iter)
        use = res_p < out[3]
        return jnp.where(use, Xp, out[2]), jnp.where(use, res_p, out[3]), out[5] + it_p

    x0 = jnp.zeros(m) if X0 is None else svec(jnp.where(act[:, None] & act[None, :], 0.5 * (X0 + X0.T), 0.0))
    trivial = jnp.linalg.eigvalsh(A_p)[0] >= 0.0

    def solve(_):
        X, res, it = newton(x0, max_iter)
        return jax.lax.cond(res <= tol, lambda _: (X, res, it), interior_point, None)

    X, res, it = jax.lax.cond(trivial, lambda _: (jnp.zeros((R, R)), jnp.zeros(()), jnp.zeros((), jnp.int64)),
                              solve, None)
    X = jnp.where(act[:, None] & act[None, :], X, 0.0)
    nx = jnp.linalg.norm(X)
    # a solvable problem has |X| of order |A|/λ_min^+(M); an unbounded one grows without limit
    bounded = nx <= 1e8 * norm_a / jnp.maximum(norm_b, jnp.finfo(jnp.float64).tiny)
    ok = (res <= LOOSE_FACTOR * tol) & jnp.all(jnp.isfinite(X)) & bounded
    return X, res, ok, it
