"""Small semidefinite complementarity problems (SDCPs), in plain NumPy.

The central flow (Cohen et al., ICLR 2025; theory §3) needs, at every evaluation of its
drift, the solution of

    X ⪰ 0,   Z = A + B[X] ⪰ 0,   ⟨X, Z⟩ = 0,

with ``X, A`` symmetric r×r (r = number of critical Hessian eigenvalues, at most a few)
and ``B`` a positive semidefinite linear operator on symmetric matrices. When ``B`` is PSD
these are exactly the optimality (KKT) conditions of the convex problem

    min_{X ⪰ 0}  ½ B[X, X] + ⟨A, X⟩,

whose gradient is ``Z``. This module solves that problem without any external dependency:

1. trivial cases first: ``A ⪰ 0`` gives ``X = 0``; r = 1 is a scalar formula;
2. accelerated projected gradient (FISTA with adaptive restart), the projection onto the
   PSD cone being an eigenvalue clip;
3. every few iterations, a *polish* step: the rank m of the current iterate guesses the
   face of the cone that holds the solution, ``X = V Y Vᵀ`` with V the top-m eigenvectors;
   minimising over unconstrained symmetric Y is a linear solve, and the candidate is
   accepted only when it satisfies all three KKT conditions to ``tol``. The polish makes
   the answer exact to rounding once the face is right, so the iteration never has to
   crawl to 1e-10 by itself.

Symmetric matrices are handled in ``svec`` coordinates (off-diagonal entries scaled by
√2), in which ⟨X, Y⟩ = svec(X)·svec(Y) and ``B`` becomes an ordinary symmetric matrix.

Residuals are relative: ``scale = max(‖A‖, ‖B‖·‖X‖)`` (Frobenius / operator 2-norms) and
the reported residual is the largest of  λ_min(X)⁻/‖X‖,  λ_min(Z)⁻/scale  and
|⟨X, Z⟩|/(‖X‖·scale).

An SDCP without solution (the quadratic objective unbounded below: some direction D ⪰ 0
with B[D] = 0 and ⟨A, D⟩ < 0) raises :class:`SDCPError` saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["solve_sdcp", "SDCPResult", "SDCPError", "svec", "smat", "operator_matrix", "kkt_residuals"]

_SQRT2 = np.sqrt(2.0)


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
        Projected-gradient iterations used (0 for the closed-form cases).
    method : str
        ``"zero"``, ``"scalar"``, ``"polish"`` (face from the warm start) or ``"fista+polish"``.
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
    comp = abs(float(np.sum(X * Z))) / (nx * scale) if nx > 0 else 0.0
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


def _polish(X: np.ndarray, a: np.ndarray, M: np.ndarray, r: int, norm_a: float, norm_b: float, tol: float):
    """Exact minimiser on the face suggested by X, if it satisfies the KKT conditions."""
    w, Q = np.linalg.eigh(0.5 * (X + X.T))
    top = max(float(w[-1]), 0.0)
    ranks = []
    for thr in (1e-6, 1e-3, 1e-9, 1e-12):
        m = int(np.sum(w > thr * top)) if top > 0 else 0
        if m not in ranks:
            ranks.append(m)
    best = None
    for m in ranks:
        if m == 0:
            Xc = np.zeros((r, r))
        else:
            V = Q[:, r - m:]
            P = _face_basis(r, V)
            K = P.T @ M @ P
            # When B is singular the face minimisers form an affine set; take the one closest
            # to the current iterate (which is PSD), not the minimum-norm one.
            y0 = svec(V.T @ X @ V)
            dy, *_ = np.linalg.lstsq(K, -(K @ y0 + P.T @ a), rcond=1e-13)
            y = y0 + dy
            Y = smat(y, m)
            wy = np.linalg.eigvalsh(Y)
            if wy[0] < -tol * max(abs(wy[-1]), 1.0):
                continue
            Xc = V @ _psd_project(Y)[0] @ V.T
        Zc = smat(M @ svec(Xc) + a, r)
        res = _residual(Xc, Zc, norm_a, norm_b)
        if best is None or res < best[2]:
            best = (Xc, Zc, res)
        if res <= tol:
            return best
    return best


def _solve_svec(a_mat: np.ndarray, M: np.ndarray, *, tol: float = 1e-10, max_iter: int = 5000,
                X0: np.ndarray | None = None) -> SDCPResult:
    """Hot-path solver: ``a_mat`` is A (r×r), ``M`` is B in svec coordinates. No validation."""
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

    def objective(v):
        return 0.5 * v @ (M @ v) + a @ v

    if X0 is not None and X0.shape == (r, r):
        cand = _polish(X0, a, M, r, norm_a, norm_b, tol)
        if cand is not None and cand[2] <= tol:
            return SDCPResult(cand[0], cand[1], cand[2], 0, "polish")
        x = svec(_psd_project(X0)[0])
    else:
        x = np.zeros(len(a))
    step = 1.0 / norm_b
    y = x.copy()
    t = 1.0
    f_x = objective(x)
    best = None
    for it in range(1, max_iter + 1):
        x_new = svec(_psd_project(smat(y - step * (M @ y + a), r))[0])
        f_new = objective(x_new)
        if f_new > f_x:  # adaptive restart (O'Donoghue & Candès): the momentum overshot
            t, y = 1.0, x.copy()
        else:
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = x_new + ((t - 1.0) / t_new) * (x_new - x)
            x, t, f_x = x_new, t_new, f_new
        if it % 4 == 0:
            cand = _polish(smat(x, r), a, M, r, norm_a, norm_b, tol)
            if cand is not None:
                if best is None or cand[2] < best[2]:
                    best = cand
                if cand[2] <= tol:
                    return SDCPResult(cand[0], cand[1], cand[2], it, "fista+polish")
                # The exact minimiser on the guessed face is a better iterate whenever it has a
                # lower objective: jump there (subspace acceleration) and restart the momentum.
                xc = svec(cand[0])
                fc = objective(xc)
                if fc < f_x:
                    x, y, t, f_x = xc, xc.copy(), 1.0, fc
        if it % 20 == 0 and null.shape[1]:
            nx = float(np.linalg.norm(x))
            if nx > 0:
                # Unbounded objective: iterates run off along a recession direction D ⪰ 0
                # with B[D] = 0 and <A, D> < 0; their direction certifies it.
                d = null @ (null.T @ (x / nx))
                if (np.linalg.norm(d) > 0.999 and a @ d < -1e-8 * norm_a
                        and np.linalg.eigvalsh(smat(d, r))[0] >= -1e-6):
                    raise SDCPError(
                        "SDCP has no solution: the objective ½B[X,X] + <A,X> decreases without bound "
                        f"along a PSD direction D with B[D] = 0 and <A, D> = {a @ d:.3g} < 0 (|X| reached "
                        f"{nx:.3g}), so the critical eigenvalues cannot be held at the threshold.", "unbounded")
    res = best[2] if best is not None else np.inf
    raise SDCPError(
        f"SDCP solver did not reach tol = {tol:g} in {max_iter} iterations (best KKT residual {res:.3g}); "
        + ("B is singular, so the problem may have no solution (objective unbounded below)."
           if null.shape[1] else "the problem is badly conditioned."),
        "not converged")


def solve_sdcp(A, B, *, tol: float = 1e-10, max_iter: int = 5000, X0=None) -> SDCPResult:
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
        Projected-gradient iteration budget.
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
    from ._validation import as_matrix, positive_float, positive_int

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
    return _solve_svec(A, M, tol=tol, max_iter=max_iter, X0=X0)
