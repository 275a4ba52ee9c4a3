"""Small semidefinite complementarity problems (SDCPs), in plain NumPy: the inner solver of
the central flow (:class:`effdyn.models.CentralFlow`).

The central flow (Cohen et al., ICLR 2025; theory §3) needs, at every evaluation of its
drift, the solution of

    X ⪰ 0,   Z = A + B[X] ⪰ 0,   ⟨X, Z⟩ = 0,

with ``X, A`` symmetric r×r (r = number of critical Hessian eigenvalues, at most a few)
and ``B`` a positive semidefinite linear operator on symmetric matrices. When ``B`` is PSD
these are exactly the optimality (KKT) conditions of the convex problem

    min_{X ⪰ 0}  ½ B[X, X] + ⟨A, X⟩,

whose gradient is ``Z``. This module solves that problem without any external dependency:

1. trivial cases first: ``A ⪰ 0`` gives ``X = 0``; r = 1 is a scalar formula;
2. a *polish* from a face guess: at a solution X and Z = A + B[X] have orthogonal
   ranges, so the positive eigenvectors V of X − Z at a starting point (the warm start —
   the solution at the previous time of a flow — or X = 0, where they are the negative
   directions of A) guess the face ``X = V Y Vᵀ``; minimising over symmetric Y is a linear
   solve (faces of other ranks in the same eigenbasis are tried next), and the best face
   candidate is finished by semismooth Newton steps on the natural residual
   X − Π₊(X − Z(X)) (quadratic convergence near a strictly complementary solution). Along
   a flow this succeeds almost always and costs a few small linear solves;
3. otherwise an infeasible primal-dual interior-point method (HKM direction, a few tens
   of Newton steps on an r(r+1)/2-dimensional system) followed by the same polish on the
   face it finds.

A result is accepted when its relative KKT residual (below) is at most ``tol``; singular
or degenerate problems may stall slightly above it in double precision, so results within
``LOOSE_FACTOR·tol`` (1000·tol) are returned too, with their ``residual`` for the caller to
inspect. Anything worse raises.

When B is singular the solution need not be unique (directions D with B[D] = 0 and
⟨A, D⟩ = 0 are free); the returned X is one solution. For the central flow this does not
change the drift, which only sees B[X], but it does change Σ. A tiny Tikhonov term
(1e-11·‖B‖) keeps the iteration bounded in that case.

Symmetric matrices are handled in ``svec`` coordinates (off-diagonal entries scaled by
√2), in which ⟨X, Y⟩ = svec(X)·svec(Y) and ``B`` becomes an ordinary symmetric matrix.

Residuals are relative: ``scale = max(‖A‖, ‖B‖·‖X‖)`` (Frobenius / operator 2-norms) and
the reported residual is the largest of  λ_min(X)⁻/‖X‖,  λ_min(Z)⁻/scale  and
‖XZ‖/(‖X‖·scale) (which bounds |⟨X, Z⟩| and also measures how orthogonal the ranges of X
and Z are).

An SDCP without solution (the quadratic objective unbounded below: some direction D ⪰ 0
with B[D] = 0 and ⟨A, D⟩ < 0) raises :class:`SDCPError` saying so. The test for it is
exact when B = 0 or when such a D is an eigen-direction of A; otherwise (singular B) it is
a heuristic on the size of the regularised solution, and a problem with a very large or
unbounded solution set can come back as a large X with a small *relative* residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["solve_sdcp", "solve_sdcp_svec", "SDCPResult", "SDCPError", "svec", "smat", "operator_matrix",
           "kkt_residuals"]

_SQRT2 = np.sqrt(2.0)
#: Results whose KKT residual is above ``tol`` but within this factor of it are returned
#: (with their residual) rather than rejected: singular or degenerate problems can stall
#: there in double precision.
LOOSE_FACTOR = 1e3


class SDCPError(RuntimeError):
    """The SDCP has no solution, or the solver could not find one to tolerance.

    Attributes
    ----------
    reason : str
        ``"unbounded"`` (no solution exists: the objective decreases without bound along a
        PSD direction in the null space of B) or ``"not converged"``.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class SDCPResult:
    """Solution of an SDCP.

    Attributes
    ----------
    X : ndarray, shape (r, r)
        The PSD solution.
    Z : ndarray, shape (r, r)
        A + B[X] (PSD, complementary to X).
    residual : float
        Largest relative KKT violation (see the module docstring).
    iterations : int
        Interior-point iterations used (0 when the closed forms or the polish from the warm
        start sufficed).
    method : str
        ``"zero"`` (A ⪰ 0, so X = 0), ``"scalar"`` (r = 1), ``"polish"`` (face guess from the
        warm start or X = 0, then semismooth Newton), ``"interior point"`` or
        ``"interior point+polish"``.
    """

    X: np.ndarray
    Z: np.ndarray
    residual: float
    iterations: int
    method: str


# --------------------------------------------------------------------------------------
# svec coordinates
# --------------------------------------------------------------------------------------
def _index_pairs(r: int):
    return [(i, j) for i in range(r) for j in range(i, r)]


def svec(X: np.ndarray) -> np.ndarray:
    """Symmetric matrix → vector with ⟨X, Y⟩ = svec(X)·svec(Y) (upper triangle, row by row)."""
    X = np.asarray(X, dtype=np.float64)
    r = X.shape[0]
    return np.array([X[i, j] if i == j else _SQRT2 * X[i, j] for i, j in _index_pairs(r)])


def smat(x: np.ndarray, r: int) -> np.ndarray:
    """Inverse of :func:`svec`."""
    X = np.empty((r, r))
    for value, (i, j) in zip(x, _index_pairs(r)):
        if i == j:
            X[i, i] = value
        else:
            X[i, j] = X[j, i] = value / _SQRT2
    return X


def operator_matrix(B: np.ndarray) -> np.ndarray:
    """The matrix M of the operator ``X ↦ B[X]`` in svec coordinates.

    ``B`` has shape (r, r, r, r) with ``B[X]_ij = Σ_kl B[i, j, k, l] X_kl``. Only the action
    of B on symmetric X and the symmetric part of the result matter.
    """
    r = B.shape[0]
    pairs = _index_pairs(r)
    M = np.empty((len(pairs), len(pairs)))
    for col, (k, l) in enumerate(pairs):
        E = np.zeros((r, r))
        E[k, l] = E[l, k] = 1.0 if k == l else 1.0 / _SQRT2
        out = np.einsum("ijkl,kl->ij", B, E)
        M[:, col] = svec(0.5 * (out + out.T))
    return 0.5 * (M + M.T)


def _psd_project(X: np.ndarray):
    w, Q = np.linalg.eigh(0.5 * (X + X.T))
    w = np.maximum(w, 0.0)
    return (Q * w) @ Q.T, w, Q


# --------------------------------------------------------------------------------------
# residuals
# --------------------------------------------------------------------------------------
def _norms(a_mat: np.ndarray, M: np.ndarray):
    norm_a = float(np.linalg.norm(a_mat))
    norm_b = float(np.linalg.eigvalsh(M)[-1]) if M.size else 0.0
    return norm_a, max(norm_b, 0.0)


def _residual(X: np.ndarray, Z: np.ndarray, norm_a: float, norm_b: float) -> float:
    nx = float(np.linalg.norm(X))
    scale = max(norm_a, norm_b * nx, np.finfo(float).tiny)
    wx = np.linalg.eigvalsh(X)
    wz = np.linalg.eigvalsh(0.5 * (Z + Z.T))
    primal = max(0.0, -wx[0]) / nx if nx > 0 else 0.0
    dual = max(0.0, -wz[0]) / scale
    # ‖XZ‖ rather than ⟨X, Z⟩: the trace vanishes on any face solution even when the face
    # is slightly rotated, while XZ = 0 also says that the ranges are orthogonal.
    comp = float(np.linalg.norm(X @ Z)) / (nx * scale) if nx > 0 else 0.0
    return max(primal, dual, comp)


def kkt_residuals(A, B, X) -> dict:
    """Absolute KKT violations of X for SDCP(A, B): a dict with ``min_eig_X``,
    ``min_eig_Z`` and ``complementarity`` = ⟨X, A + B[X]⟩ (all ≈ 0 or ≥ 0 at a solution)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Z = A + np.einsum("ijkl,kl->ij", B, X)
    Z = 0.5 * (Z + Z.T)
    return {
        "min_eig_X": float(np.linalg.eigvalsh(X)[0]),
        "min_eig_Z": float(np.linalg.eigvalsh(Z)[0]),
        "complementarity": float(np.sum(X * Z)),
    }


# --------------------------------------------------------------------------------------
# solver
# --------------------------------------------------------------------------------------
def _face_basis(r: int, V: np.ndarray) -> np.ndarray:
    """Matrix P with svec(V Y Vᵀ) = P svec(Y) for Y symmetric m×m."""
    m = V.shape[1]
    pairs = _index_pairs(m)
    P = np.empty((r * (r + 1) // 2, len(pairs)))
    for col, (k, l) in enumerate(pairs):
        E = np.zeros((m, m))
        E[k, l] = E[l, k] = 1.0 if k == l else 1.0 / _SQRT2
        P[:, col] = svec(V @ E @ V.T)
    return P


def _face_solve(X, V, a, M, r):
    """Minimiser of the objective over {V Y Vᵀ : Y symmetric}, PSD-clipped; None if Y is
    clearly indefinite (the face is wrong)."""
    m = V.shape[1]
    if m == 0:
        return np.zeros((r, r))
    P = _face_basis(r, V)
    K = P.T @ M @ P
    # When B is singular the face minimisers form an affine set; take the one closest to
    # the current iterate (which is PSD), not the minimum-norm one.
    y0 = svec(V.T @ X @ V)
    dy, *_ = np.linalg.lstsq(K, -(K @ y0 + P.T @ a), rcond=1e-13)
    Y = smat(y0 + dy, m)
    wy = np.linalg.eigvalsh(Y)
    if wy[0] < -1e-6 * max(abs(wy[-1]), 1e-300):
        return None
    return V @ _psd_project(Y)[0] @ V.T


def _newton_refine(X, a, M, r, norm_a, norm_b, tol, max_steps: int = 12):
    """Semismooth Newton on the natural residual F(X) = X − Π(X − Z(X)), Z(X) = A + B[X].

    F = 0 exactly at a solution (Π = projection onto the PSD cone). With W = X − Z = QΛQᵀ,
    the derivative of Π along H is Q(Ω ∘ QᵀHQ)Qᵀ with Ω_ij the divided differences of
    max(λ, 0) (1 between positive eigenvalues, 0 between non-positive ones), so one Newton
    step is a linear solve of size r(r+1)/2. Near a strictly complementary solution the
    convergence is quadratic, which takes an interior-point or face estimate accurate to
    ~1e-8 down to rounding. Returns (X, Z, residual) of the best PSD iterate Π(W).
    """
    n = r * (r + 1) // 2
    basis = [smat(e, r) for e in np.eye(n)]
    best = None
    x = svec(X)
    for _ in range(max_steps):
        Xm = smat(x, r)
        Z = smat(M @ x + a, r)
        lam, Q = np.linalg.eigh(Xm - Z)
        pos = np.maximum(lam, 0.0)
        proj = (Q * pos) @ Q.T
        Zp = smat(M @ svec(proj) + a, r)
        res = _residual(proj, Zp, norm_a, norm_b)
        if best is None or res < best[2]:
            best = (proj, Zp, res)
        if res <= tol:
            break
        F = x - svec(proj)
        diff = lam[:, None] - lam[None, :]
        same = np.abs(diff) <= 1e-14 * max(1.0, np.abs(lam).max())
        omega = np.where(same, (lam[:, None] > 0).astype(float),
                         (pos[:, None] - pos[None, :]) / np.where(same, 1.0, diff))
        J = np.empty((n, n))
        for col, D in enumerate(basis):
            H = D - smat(M @ svec(D), r)
            J[:, col] = svec(D) - svec(Q @ (omega * (Q.T @ H @ Q)) @ Q.T)
        step, *_ = np.linalg.lstsq(J, -F, rcond=1e-14)
        x = x + step
    return best


def _polish(X: np.ndarray, a: np.ndarray, M: np.ndarray, r: int, norm_a: float, norm_b: float, tol: float):
    """Exact minimiser on the face suggested by X, if it satisfies the KKT conditions.

    At a solution X and Z = A + B[X] are PSD with orthogonal ranges, so the positive
    eigenvectors of X − Z span the face of X. From an approximate X (a warm start, an
    interior point) those of its X − Z are the best guess; faces of every other rank
    along the same eigenbasis are tried next. The range of the solution moves with the
    data, so a face taken from a warm start is only approximately right: the best face
    candidate is finished by semismooth Newton steps (:func:`_newton_refine`).
    """
    X = 0.5 * (X + X.T)
    Z = smat(M @ svec(X) + a, r)
    w, Q = np.linalg.eigh(X - Z)
    m_guess = int(np.sum(w > 0))
    ranks = [m_guess] + [m for m in range(r + 1) if m != m_guess]
    best = None
    for m in ranks:
        Xc = _face_solve(X, Q[:, r - m:], a, M, r)
        if Xc is None:
            continue
        Zc = smat(M @ svec(Xc) + a, r)
        res = _residual(Xc, Zc, norm_a, norm_b)
        if best is None or res < best[2]:
            best = (Xc, Zc, res)
        if res <= tol:
            return best
    if best is not None and best[2] < 1e-3:
        refined = _newton_refine(best[0], a, M, r, norm_a, norm_b, tol)
        if refined[2] < best[2]:
            best = refined
    return best


def solve_sdcp_svec(a_mat: np.ndarray, M: np.ndarray, *, tol: float = 1e-10, max_iter: int = 200,
                    X0: np.ndarray | None = None) -> SDCPResult:
    """The SDCP with B given in svec coordinates, without argument checks (the central
    flow's hot path; :func:`solve_sdcp` is the checked entry point).

    ``a_mat`` is A (r×r, symmetrised here), ``M`` the symmetric PSD matrix of B in svec
    coordinates (:func:`operator_matrix`), ``X0`` an optional warm start (r×r), ``max_iter``
    the interior-point iteration budget.
    """
    r = a_mat.shape[0]
    if r == 0:
        return SDCPResult(np.zeros((0, 0)), np.zeros((0, 0)), 0.0, 0, "zero")
    a_mat = 0.5 * (a_mat + a_mat.T)
    norm_a, norm_b = _norms(a_mat, M)
    if np.linalg.eigvalsh(a_mat)[0] >= 0.0:
        return SDCPResult(np.zeros((r, r)), a_mat.copy(), 0.0, 0, "zero")
    if r == 1:
        b = float(M[0, 0])
        if b <= 0.0:
            raise SDCPError(
                f"SDCP has no solution: A = {a_mat[0, 0]:.6g} < 0 and B = {b:.6g}, so A + B·X never "
                "becomes >= 0 for X >= 0 (the constraint cannot be restored).", "unbounded")
        x = -a_mat[0, 0] / b
        return SDCPResult(np.array([[x]]), np.zeros((1, 1)), 0.0, 0, "scalar")
    a = svec(a_mat)
    if norm_b <= 0.0:
        raise SDCPError(
            "SDCP has no solution: B = 0 and A is not PSD (min eigenvalue "
            f"{np.linalg.eigvalsh(a_mat)[0]:.6g}), so no X >= 0 makes A + B[X] >= 0.", "unbounded")
    wm, Qm = np.linalg.eigh(M)
    null = Qm[:, wm <= 1e-12 * norm_b]
    if null.shape[1]:
        # Cheap certificate of unboundedness: an eigenvector q of A with negative eigenvalue
        # such that B[qqᵀ] = 0 (e.g. a critical eigenvalue whose gradient vanishes).
        wa, Qa = np.linalg.eigh(a_mat)
        for lam, q in zip(wa, Qa.T):
            d = svec(np.outer(q, q))
            if lam < 0 and np.linalg.norm(M @ d) <= 1e-12 * norm_b:
                raise SDCPError(
                    f"SDCP has no solution: A has the negative eigenvalue {lam:.6g} along a direction q "
                    "with B[qqᵀ] = 0, so no X >= 0 can make A + B[X] >= 0 (the critical eigenvalue "
                    "does not respond to Σ).", "unbounded")

    # A singular B leaves a set of solutions (flat directions D with B[D] = 0, <A, D> = 0);
    # a Tikhonov term ½ρ|X|² with ρ = 1e-11·|B| selects the smallest one, changes the KKT
    # residual by at most 1e-11 (relative), and turns an unbounded problem into one whose
    # solution is huge and fails the final check against the original B.
    Mw = M + (1e-11 * norm_b) * np.eye(len(a)) if null.shape[1] else M

    def final(X, it, method):
        Zt = smat(M @ svec(X) + a, r)
        res = _residual(X, Zt, norm_a, norm_b)
        return SDCPResult(X, Zt, res, it, method)

    def unbounded(X, residual):
        return SDCPError(
            "SDCP has no solution: the objective ½B[X,X] + <A,X> is unbounded below (|X| grew to "
            f"{np.linalg.norm(X):.3g}, KKT residual {residual:.3g}); some direction D >= 0 with B[D] = 0 "
            "and <A, D> < 0 exists, so the critical eigenvalues cannot be held at the threshold.", "unbounded")

    # With singular B the regularised problem always has a solution; for an unbounded
    # original it is of size |<A, D>|/ρ, far beyond what a solvable problem produces.
    positive = wm[wm > 1e-12 * norm_b]
    x_bound = 1e5 * max(norm_a, np.finfo(float).tiny) / positive[0] if null.shape[1] else np.inf

    # Face guess from the warm start, or from X = 0 (then the face is spanned by the most
    # negative directions of A); only if that fails, the interior-point method.
    start = X0 if (X0 is not None and X0.shape == (r, r)) else np.zeros((r, r))
    cand = _polish(start, a, Mw, r, norm_a, norm_b, tol)
    if cand is not None and cand[2] <= tol:
        out = final(cand[0], 0, "polish")
        if out.residual <= tol and np.linalg.norm(out.X) <= x_bound:
            return out
    X, _, res, it, grew = _interior_point(a_mat, Mw, r, norm_a, norm_b, tol, max_iter)
    best = final(X, it, "interior point")
    cand = _polish(X, a, Mw, r, norm_a, norm_b, tol)
    if cand is not None:
        polished = final(cand[0], it, "interior point+polish")
        if polished.residual <= max(best.residual, tol):
            best = polished
    if grew or np.linalg.norm(best.X) > x_bound:
        raise unbounded(best.X, best.residual)
    # Singular or nearly degenerate problems can stall slightly above tol in double
    # precision; such results are returned with their residual (documented), worse raise.
    if best.residual <= LOOSE_FACTOR * tol:
        return best
    raise SDCPError(
        f"SDCP solver did not reach tol = {tol:g} in {max_iter} interior-point iterations (best KKT "
        f"residual {best.residual:.3g}).", "not converged")


def _sym_kron_matrix(r: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """svec matrix of D ↦ ½(left·D·right + rightᵀ·D·leftᵀ)."""
    pairs = _index_pairs(r)
    E = np.empty((len(pairs), len(pairs)))
    for col, (k, l) in enumerate(pairs):
        D = np.zeros((r, r))
        D[k, l] = D[l, k] = 1.0 if k == l else 1.0 / _SQRT2
        out = left @ D @ right
        E[:, col] = svec(0.5 * (out + out.T))
    return E


def _max_step(S: np.ndarray, dS: np.ndarray) -> float:
    """Largest α with S + α dS ⪰ 0 (S ≻ 0)."""
    L = np.linalg.cholesky(S)
    Li = np.linalg.inv(L)
    w = np.linalg.eigvalsh(Li @ dS @ Li.T)
    return np.inf if w[0] >= 0 else -1.0 / w[0]


def _interior_point(a_mat, M, r, norm_a, norm_b, tol, max_iter):
    """Infeasible primal-dual path following (HKM direction) for min ½xᵀMx + aᵀx, X ⪰ 0.

    Unknowns X ≻ 0, Z ≻ 0 with residual R = Mx + a − z and centring XZ = μI. Each Newton
    step solves (I + E M) dx = svec(μZ⁻¹ − X) − E R with E the svec matrix of
    dZ ↦ ½(X dZ Z⁻¹ + Z⁻¹ dZ X), SPD, so I + EM is invertible. Returns
    (X, Z, residual, iterations, grew) where ``grew`` flags iterates running off to
    infinity (an unbounded problem).
    """
    a = svec(a_mat)
    scale_x = max(1.0, norm_a / norm_b)
    scale_z = max(1.0, norm_a)
    X = scale_x * np.eye(r)
    Z = scale_z * np.eye(r)
    eye = np.eye(len(a))
    best = None
    sigma = 0.3
    norm_first = None
    for it in range(1, max_iter + 1):
        x = svec(X)
        R = M @ x + a - svec(Z)
        gap = float(np.sum(X * Z))
        Zs = Z - smat(R, r)  # A + B[X] exactly
        res = _residual(X, Zs, norm_a, norm_b)
        if best is None or res < best[2]:
            best = (X.copy(), Zs, res)
        if res <= 0.1 * tol:
            break
        mu = sigma * gap / r
        Zi = np.linalg.inv(Z)
        E = _sym_kron_matrix(r, X, Zi)
        rhs = svec(mu * Zi - X) - E @ R
        try:
            dx = np.linalg.solve(eye + E @ M, rhs)
        except np.linalg.LinAlgError:  # numerically singular near the end of the path
            dx = np.linalg.lstsq(eye + E @ M, rhs, rcond=None)[0]
        dz = M @ dx + R
        dX, dZ = smat(dx, r), smat(dz, r)
        try:
            alpha = min(1.0, 0.95 * min(_max_step(X, dX), _max_step(Z, dZ)))
        except np.linalg.LinAlgError:  # X or Z lost definiteness to rounding: stop here
            break
        if not np.isfinite(alpha) or alpha < 1e-12:
            break
        X = X + alpha * dX
        Z = Z + alpha * dZ
        X, Z = 0.5 * (X + X.T), 0.5 * (Z + Z.T)
        # Long steps mean the centring can be more aggressive (a cheap Mehrotra-type rule).
        sigma = 0.05 if alpha > 0.9 else (0.2 if alpha > 0.5 else 0.5)
        nx = float(np.linalg.norm(X))
        if norm_first is None:
            norm_first = nx
        if nx > 1e10 * max(norm_first, scale_x):
            return best[0], best[1], best[2], it, True
    nx = float(np.linalg.norm(best[0]))
    return best[0], best[1], best[2], it, nx > 1e6 * max(norm_first or 1.0, scale_x)


def solve_sdcp(A, B, *, tol: float = 1e-10, max_iter: int = 200, X0=None) -> SDCPResult:
    """Solve X ⪰ 0, A + B[X] ⪰ 0, ⟨X, A + B[X]⟩ = 0.

    Parameters
    ----------
    A : array_like, shape (r, r)
        Symmetric matrix.
    B : array_like, shape (r, r, r, r)
        PSD operator, ``B[X]_ij = Σ_kl B[i, j, k, l] X_kl``.
    tol : float
        Relative KKT tolerance (module docstring).
    max_iter : int
        Iteration budget of the interior-point fallback.
    X0 : array_like, shape (r, r), optional
        Warm start (e.g. the solution at the previous time); its face is tried first.

    Returns
    -------
    SDCPResult

    Raises
    ------
    SDCPError
        When no solution exists or none was found within ``max_iter``.

    Examples
    --------
    >>> import numpy as np
    >>> B = np.einsum("ik,jl->ijkl", np.eye(2), np.eye(2))   # B[X] = X
    >>> res = solve_sdcp(np.diag([-1.0, 2.0]), B)
    >>> np.round(res.X, 12)
    array([[1., 0.],
           [0., 0.]])
    """
    from .._checks import as_matrix, positive_float, positive_int

    A = as_matrix(A, "A")
    r = A.shape[0]
    if A.shape != (r, r):
        raise ValueError(f"`A` must be square; got shape {A.shape}.")
    if np.max(np.abs(A - A.T), initial=0.0) > 1e-12 * max(np.max(np.abs(A), initial=0.0), 1.0):
        raise ValueError("`A` must be symmetric; pass ½(A + Aᵀ).")
    B = np.asarray(B, dtype=np.float64)
    if B.shape != (r, r, r, r):
        raise ValueError(f"`B` must have shape (r, r, r, r) = {(r, r, r, r)}; got {B.shape}.")
    if not np.all(np.isfinite(B)):
        raise ValueError("`B` contains non-finite entries; pass finite values.")
    tol = positive_float(tol, "tol")
    max_iter = positive_int(max_iter, "max_iter")
    M = operator_matrix(B) if r else np.zeros((0, 0))
    if r:
        wm = np.linalg.eigvalsh(M)
        if wm[0] < -1e-10 * max(abs(wm[-1]), 1.0):
            raise ValueError(
                f"`B` must be positive semidefinite on symmetric matrices (its smallest eigenvalue is "
                f"{wm[0]:.3g}); the SDCP is then not a convex problem.")
    if X0 is not None:
        X0 = as_matrix(X0, "X0", (r, r))
    return solve_sdcp_svec(A, M, tol=tol, max_iter=max_iter, X0=X0)
