"""Sharpness and top Hessian eigenpairs, from Hessian-vector products.

The sharpness is the largest *algebraic* eigenvalue of H(θ) = ∇²E(θ) (theory §1), so every
solver here targets the top of the spectrum, not the largest magnitude: a strongly
negative-curvature direction never counts as "sharp".

Two ways of getting the top-k eigenpairs:

* :func:`top_eigenpairs` solves from scratch: a dense ``eigh`` of the Hessian when the
  problem is small (``P <= dense_max``), otherwise implicitly restarted Lanczos (ARPACK,
  ``scipy.sparse.linalg.eigsh``) on a ``LinearOperator`` that calls ``problem._hvp``.
* :class:`EigenTracker` follows the eigenpairs along a trajectory. Each update starts
  from the subspace spanned by the last few solutions (``history`` of them, plus ``guard``
  vectors just below the tracked block so that an eigenvalue rising into the top k is
  caught), so Rayleigh–Ritz on it already extrapolates along the trajectory; the subspace is
  then grown with Ritz residuals (a Davidson iteration without preconditioner, i.e. a Krylov
  expansion) until every wanted residual is below ``tol``. When θ moves little between
  updates this costs a handful of HVPs where a cold Lanczos solve costs at least ARPACK's
  ``ncv`` (20) of them. A warm update that does not converge within its budget is redone
  cold.

Convergence criterion (both paths): a Ritz pair (λ, v) is accepted when
``‖Hv − λv‖ <= tol · scale``, with ``scale`` the largest Ritz value magnitude in the
tracker and ``|λ|`` in ARPACK. The eigenvalue error is bounded by the residual and is
typically of order residual²/gap, so the default ``tol = 1e-8`` gives eigenvalues to about
machine precision and eigenvectors to about ``tol``/(relative gap).

Sign convention: each eigenvector is scaled so that its largest-magnitude component is
positive (the first such component on ties), independently of history, so that two calls
at nearby points return nearby vectors.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._validation import as_vector, positive_float, positive_int
from .problems.base import MAX_DENSE_DIM, Problem

__all__ = ["top_eigenpairs", "sharpness", "EigenTracker"]

#: Default dimension up to which the dense Hessian is diagonalised instead of Lanczos.
DENSE_MAX = 64
#: Default relative residual tolerance of the iterative solvers.
TOL = 1e-8


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_problem(problem) -> Problem:
    if not isinstance(problem, Problem):
        raise TypeError(
            "`problem` must be an effdyn Problem (e.g. `effdyn.problems.Quadratic(A)`, or a "
            f"subclass of `effdyn.problems.Problem`); got {type(problem).__name__}."
        )
    return problem


def _check_dense_max(dense_max) -> int:
    if isinstance(dense_max, bool) or not isinstance(dense_max, numbers.Integral) or dense_max < 0:
        raise ValueError(f"`dense_max` must be an integer >= 0 (0 forces Lanczos); got {dense_max!r}.")
    return int(dense_max)


def _check_k(k, P: int, name: str = "k") -> int:
    k = positive_int(k, name)
    if k > P:
        raise ValueError(f"`{name}` must be between 1 and the problem dimension P = {P}; got {k}.")
    return k


# --------------------------------------------------------------------------------------
# small numerical helpers
# --------------------------------------------------------------------------------------
def _fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Scale each column so that its largest-magnitude entry is positive."""
    cols = np.arange(vecs.shape[1])
    lead = vecs[np.argmax(np.abs(vecs), axis=0), cols]
    return vecs * np.where(lead < 0, -1.0, 1.0)


class _CountingHVP:
    """H(θ)·x through ``problem._hvp``, counting every product."""

    def __init__(self, problem: Problem, theta: np.ndarray):
        self.problem = problem
        self.theta = theta
        self.count = 0

    def vec(self, x) -> np.ndarray:
        self.count += 1
        # numba kernels specialise on memory layout; always hand them contiguous vectors.
        return self.problem._hvp(self.theta, np.ascontiguousarray(np.ravel(x), dtype=np.float64))

    def block(self, X: np.ndarray) -> np.ndarray:
        out = np.empty_like(X)
        for j in range(X.shape[1]):
            out[:, j] = self.vec(X[:, j])
        return out


def _orthonormal_extension(V: np.ndarray, Z: np.ndarray, drop: float = 1e-10) -> np.ndarray:
    """Columns of Z made orthonormal to V and to each other; near-dependent ones dropped.

    Classical Gram–Schmidt applied twice ("twice is enough") keeps the basis orthonormal to
    working precision, which Rayleigh–Ritz relies on.
    """
    out = []
    for j in range(Z.shape[1]):
        z = Z[:, j].copy()
        norm0 = np.linalg.norm(z)
        if norm0 == 0.0:
            continue
        for _ in range(2):
            if V.shape[1]:
                z -= V @ (V.T @ z)
            for q in out:
                z -= q * (q @ z)
        norm = np.linalg.norm(z)
        if norm > drop * norm0:
            out.append(z / norm)
    if not out:
        return np.empty((V.shape[0], 0))
    return np.column_stack(out)


def _dense_top(problem: Problem, theta: np.ndarray, k: int):
    H = problem._hessian(theta)
    vals, vecs = np.linalg.eigh(0.5 * (H + H.T))
    return vals[::-1][:k].copy(), _fix_signs(vecs[:, ::-1][:, :k].copy())


def _lanczos_top(problem: Problem, theta: np.ndarray, k: int, v0, tol: float, maxiter):
    from scipy.sparse.linalg import LinearOperator, eigsh

    P = theta.shape[0]
    op = _CountingHVP(problem, theta)
    A = LinearOperator((P, P), matvec=op.vec, dtype=np.float64)
    if v0 is None:
        # A fixed start makes cold solves reproducible (ARPACK's own start is not seeded).
        v0 = np.random.default_rng(0).standard_normal(P)
    vals, vecs = eigsh(A, k=k, which="LA", v0=v0, tol=tol, maxiter=maxiter)
    order = np.argsort(vals)[::-1]
    return vals[order], _fix_signs(vecs[:, order]), op.count


# --------------------------------------------------------------------------------------
# public cold solve
# --------------------------------------------------------------------------------------
def top_eigenpairs(problem, theta, k: int = 1, *, v0=None, dense_max: int = DENSE_MAX, tol: float = TOL,
                   maxiter: int | None = None, return_info: bool = False):
    """The k largest (algebraic) eigenvalues of H(θ) and their eigenvectors.

    Parameters
    ----------
    problem : Problem
        The loss.
    theta : array_like, shape (P,)
        Point at which the Hessian is taken.
    k : int, default 1
        Number of eigenpairs, 1 <= k <= P.
    v0 : array_like, shape (P,), optional
        Lanczos start vector (e.g. the previous top eigenvector). Ignored on the dense path.
        Default: a fixed pseudo-random vector, so results are reproducible.
    dense_max : int, default 64
        Use a dense ``eigh`` of ``problem.hessian`` when P <= dense_max (and always when
        k >= P, which ARPACK cannot do). ``dense_max=0`` forces Lanczos.
    tol : float, default 1e-8
        Relative residual tolerance of Lanczos (ARPACK's ``tol``).
    maxiter : int, optional
        ARPACK's restart limit (its default when None).
    return_info : bool, default False
        Also return a dict with ``method`` ("dense" or "lanczos"), ``n_hvp`` (Hessian-vector
        products used) and ``n_hessian`` (dense Hessians built).

    Returns
    -------
    vals : ndarray, shape (k,)
        Eigenvalues in descending order; ``vals[0]`` is the sharpness.
    vecs : ndarray, shape (P, k)
        Orthonormal eigenvectors (columns), largest-magnitude entry of each positive.
    info : dict
        Only with ``return_info=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from effdyn.problems import Quadratic
    >>> vals, vecs = top_eigenpairs(Quadratic(np.diag([1.0, 3.0, 2.0])), np.zeros(3), k=2)
    >>> vals
    array([3., 2.])
    """
    problem = _check_problem(problem)
    P = problem.dim
    theta = as_vector(theta, "theta", P)
    k = _check_k(k, P)
    dense_max = _check_dense_max(dense_max)
    tol = positive_float(tol, "tol")
    if v0 is not None:
        v0 = as_vector(v0, "v0", P)
        if not np.any(v0):
            raise ValueError("`v0` must be a non-zero vector (a Lanczos start); pass None for the default start.")
    if maxiter is not None:
        maxiter = positive_int(maxiter, "maxiter")

    use_dense = P <= dense_max or k >= P
    if use_dense and P > MAX_DENSE_DIM:
        raise ValueError(
            f"`k` = {k} needs all eigenpairs of a {P}x{P} Hessian, too large for a dense solve; "
            f"ask for fewer eigenpairs (k < P)."
        )
    if use_dense:
        vals, vecs = _dense_top(problem, theta, k)
        info = {"method": "dense", "n_hvp": 0, "n_hessian": 1}
    else:
        vals, vecs, n_hvp = _lanczos_top(problem, theta, k, v0, tol, maxiter)
        info = {"method": "lanczos", "n_hvp": n_hvp, "n_hessian": 0}
    if return_info:
        return vals, vecs, info
    return vals, vecs


def sharpness(problem, theta, **kwargs) -> float:
    """S(θ) = λ_max(H(θ)), the largest algebraic Hessian eigenvalue.

    Keyword arguments go to :func:`top_eigenpairs` (``dense_max``, ``tol``, ``v0``).
    """
    vals, _ = top_eigenpairs(problem, theta, 1, **kwargs)
    return float(vals[0])


# --------------------------------------------------------------------------------------
# warm-started tracking
# --------------------------------------------------------------------------------------
def _warm_block_solve(op: _CountingHVP, X0: np.ndarray, k: int, n_keep: int, tol: float,
                      max_basis: int, max_hvp: int):
    """Top-k eigenpairs by Rayleigh–Ritz on a growing subspace started from ``X0``.

    Each iteration adds the residual of the first unconverged wanted Ritz pair (Davidson
    without preconditioner; for one wanted pair this is Lanczos with full
    reorthogonalisation). At ``max_basis`` columns the subspace is thick-restarted to its
    best ``max(n_keep + k, max_basis // 2)`` Ritz vectors. Returns ``None`` when X0 spans
    fewer than k directions, else (vals, vecs, residuals, converged) for the top
    ``n_keep`` Ritz pairs (those beyond k are the guard vectors, not converged).
    """
    V = _orthonormal_extension(np.empty((X0.shape[0], 0)), X0)
    if V.shape[1] < k:
        return None
    W = op.block(V)
    while True:
        T = V.T @ W
        ritz, S = np.linalg.eigh(0.5 * (T + T.T))
        ritz, S = ritz[::-1], S[:, ::-1]
        m = min(n_keep, V.shape[1])
        Y = V @ S[:, :m]
        R = W @ S[:, :m] - Y * ritz[:m]
        res = np.linalg.norm(R, axis=0)
        scale = max(np.max(np.abs(ritz)), np.finfo(float).tiny)
        unconverged = np.flatnonzero(res[:k] > tol * scale)
        if unconverged.size == 0:
            return ritz[:m], Y, res, True
        if op.count >= max_hvp:
            return ritz[:m], Y, res, False
        if V.shape[1] >= max_basis:
            keep = min(V.shape[1], max(n_keep + k, max_basis // 2))
            V, W = V @ S[:, :keep], W @ S[:, :keep]
        Z = _orthonormal_extension(V, R[:, unconverged[:1]])
        if Z.shape[1] == 0:
            # The residuals already lie in the subspace to working precision: stagnation.
            return ritz[:m], Y, res, False
        V = np.hstack([V, Z])
        W = np.hstack([W, op.block(Z)])


class EigenTracker:
    """Top-k Hessian eigenpairs followed along a trajectory with warm starts.

    Parameters
    ----------
    problem : Problem
        The loss.
    k : int, default 1
        Number of tracked eigenpairs.
    dense_max : int, default 64
        Up to this dimension every update is a dense ``eigh`` (warm starts buy nothing).
    tol : float, default 1e-8
        Relative residual tolerance (see the module docstring).
    guard : int, default 1
        Extra eigen-directions just below the tracked block kept in the warm-start
        subspace (one HVP each per update), so that an eigenvalue rising past the k-th is
        noticed instead of the tracker staying on the old branch.
    history : int, default 3
        Number of previous solutions whose top-k vectors span the warm-start subspace (one
        HVP per vector). Rayleigh–Ritz on the last h solutions extrapolates with an error of
        order Δθ^h on a smooth trajectory; at the Edge of Stability, where θ alternates
        between the two sides of a valley, it also contains the solution of two steps
        before, which is closer than the previous one.
    max_basis : int, optional
        Largest subspace before a thick restart (default ``max(20, 3·(k + guard) + 8)``;
        small projected problems also keep LAPACK single-threaded and fast).
    max_hvp : int, optional
        HVP budget of a warm update before it gives up and solves cold
        (default ``3 · max_basis``).
    refresh_every : int, optional
        Force a cold solve every this many updates (never by default).

    Attributes
    ----------
    vals, vecs : ndarray
        Latest eigenvalues (k,) and eigenvectors (P, k).
    n_hvp : int
        Hessian-vector products used by all updates so far.
    hvp_counts : list of int
        HVPs used by each update.
    methods : list of str
        How each update was solved: "dense", "cold", "warm" or "warm+cold" (a warm
        attempt that failed and was redone cold; its HVPs are counted in full).
    """

    def __init__(self, problem, k: int = 1, *, dense_max: int = DENSE_MAX, tol: float = TOL, guard: int = 1,
                 history: int = 3, max_basis: int | None = None, max_hvp: int | None = None,
                 refresh_every: int | None = None):
        self.problem = _check_problem(problem)
        P = problem.dim
        self.k = _check_k(k, P)
        self.dense_max = _check_dense_max(dense_max)
        self.tol = positive_float(tol, "tol")
        if isinstance(guard, bool) or not isinstance(guard, numbers.Integral) or guard < 0:
            raise ValueError(f"`guard` must be an integer >= 0; got {guard!r}.")
        self.history = positive_int(history, "history")
        # ARPACK needs fewer than P wanted pairs, so the guard shrinks for tiny problems.
        self.n_block = max(self.k, min(self.k + int(guard), P - 1))
        self.max_basis = max(20, 3 * self.n_block + 8) if max_basis is None else positive_int(max_basis, "max_basis")
        if self.max_basis < 2 * self.n_block:
            raise ValueError(f"`max_basis` must be at least 2·(k + guard) = {2 * self.n_block}; got {self.max_basis}.")
        self.max_hvp = 3 * self.max_basis if max_hvp is None else positive_int(max_hvp, "max_hvp")
        self.refresh_every = None if refresh_every is None else positive_int(refresh_every, "refresh_every")
        self.reset()

    @property
    def dense(self) -> bool:
        """Whether updates use the dense Hessian."""
        return self.problem.dim <= self.dense_max or self.k >= self.problem.dim

    def reset(self) -> None:
        """Forget the previous solutions (the next update solves cold)."""
        self.vals = None
        self.vecs = None
        self._past: list[np.ndarray] = []  # most recent first, each (P, n_block)
        self.n_hvp = 0
        self.n_hessian = 0
        self.hvp_counts: list[int] = []
        self.methods: list[str] = []
        self.last_info: dict = {}

    def _cold(self, theta):
        vals, vecs, info = top_eigenpairs(self.problem, theta, self.n_block, dense_max=0, tol=self.tol,
                                          return_info=True)
        return vals, vecs, info["n_hvp"]

    def update(self, theta):
        """Eigenpairs at a new point θ of the trajectory.

        Returns
        -------
        vals : ndarray, shape (k,)
            Top-k eigenvalues, descending.
        vecs : ndarray, shape (P, k)
            Their eigenvectors (largest-magnitude entry positive).
        """
        return self._update(as_vector(theta, "theta", self.problem.dim))

    def _update(self, theta):
        n_calls = len(self.methods)
        if self.dense:
            vals, vecs = _dense_top(self.problem, theta, self.k)
            method, n_hvp, residual = "dense", 0, None
            self.n_hessian += 1
        else:
            refresh = self.refresh_every is not None and n_calls % self.refresh_every == 0
            result = None
            op = _CountingHVP(self.problem, theta)
            if self._past and not refresh:
                X0 = np.hstack([self._past[0]] + [p[:, : self.k] for p in self._past[1:]])
                result = _warm_block_solve(op, X0, self.k, self.n_block, self.tol, self.max_basis, self.max_hvp)
            if result is not None and result[3]:
                vals, vecs, residual, _ = result
                method, n_hvp = "warm", op.count
            else:
                vals, vecs, n_cold = self._cold(theta)
                method = "cold" if result is None else "warm+cold"
                n_hvp, residual = op.count + n_cold, None
            vecs = _fix_signs(vecs)
            self._past = [vecs] + self._past[: self.history - 1]
            vals, vecs = vals[: self.k].copy(), vecs[:, : self.k].copy()
        self.vals, self.vecs = vals, vecs
        self.n_hvp += n_hvp
        self.hvp_counts.append(n_hvp)
        self.methods.append(method)
        self.last_info = {"method": method, "n_hvp": n_hvp, "residual": residual}
        return vals, vecs

    #: Attributes set at construction; everything else an update may change (run state).
    _CONFIG_ATTRS = ("problem", "k", "dense_max", "tol", "history", "n_block", "max_basis", "max_hvp",
                     "refresh_every")

    def state_dict(self) -> dict:
        """What the updates have changed, as data (arrays, numbers, strings, lists, None):
        the warm-start history, the last solution and the counters. With
        :meth:`load_state_dict` on a tracker built with the same arguments it continues
        exactly as this one would (used by checkpoints)."""
        out = {}
        for name, value in vars(self).items():
            if name in self._CONFIG_ATTRS:
                continue
            if isinstance(value, np.ndarray):
                value = value.copy()
            elif isinstance(value, list):
                value = [v.copy() if isinstance(v, np.ndarray) else v for v in value]
            elif isinstance(value, dict):
                value = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in value.items()}
            out[name] = value
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (the configuration is not touched)."""
        for name, value in state.items():
            if name in self._CONFIG_ATTRS:
                raise ValueError(f"`state` sets the configuration attribute {name!r} of the tracker.")
            if isinstance(value, np.ndarray):
                value = value.copy()
            elif isinstance(value, (list, tuple)):
                value = [v.copy() if isinstance(v, np.ndarray) else v for v in value]
            elif isinstance(value, dict):
                value = dict(value)
            setattr(self, name, value)

    def __repr__(self) -> str:
        return (f"EigenTracker(k={self.k}, dense={self.dense}, updates={len(self.methods)}, "
                f"n_hvp={self.n_hvp})")
