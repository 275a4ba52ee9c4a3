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

Why the warm subspace alone is not enough. Rayleigh–Ritz plus residual expansion only
finds eigenvectors that the start subspace already overlaps; a residual-converged Ritz pair
can be an *interior* eigenpair. Deep linear networks show this sharply: each singular mode
of the product owns an (almost) invariant block of Hessian eigenvectors, so the Krylov space
grown from one mode's vectors never reaches another mode's. On a period-two orbit the top
eigenvector alternates between blocks, and a tracker that only ever held one block reported
an interior eigenvalue at every other step (the top eigenvalue of another block went
unseen). Two defences, both on by default:

* **probe** (every warm update): after the warm block has converged, ``probe`` Krylov steps
  are taken in the orthogonal complement of the warm subspace, from a fresh pseudo-random
  vector plus the previous updates' best complement Ritz vectors, and Rayleigh–Ritz is
  redone on the union; an eigenvalue above the tracked ones that the warm subspace missed
  now surfaces and is converged. The probe vectors carried along the trajectory make this a
  restarted Lanczos iteration on the complement, spread over the updates.
* **spot checks**: every ``check_every``-th warm update, and whenever the top Ritz value is
  more than ``check_jump`` (relative) away from each of the last ``history`` top values, the
  update is repeated cold; the cold answer is kept, and a disagreement of the top-k
  eigenvalues (beyond ``100·tol`` relative) is counted in ``n_corrections``.

What remains: the probe is short, so an eigenvalue that crosses the tracked top by a small
margin in a crowded spectrum can go unseen until a check; on a chaotic DLN trajectory
(2100 updates) 2 updates kept an eigenvalue 0.4 % below the top, against 20 updates and
1.7 % without these defences. On the period-two orbits tested, every update is exact.

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

from ._checks import as_vector, positive_float, positive_int
from .problems.base import MAX_DENSE_DIM, Problem

__all__ = ["top_eigenpairs", "sharpness", "EigenTracker"]

#: Default dimension up to which the dense Hessian is diagonalised instead of Lanczos.
DENSE_MAX = 64
#: Default relative residual tolerance of the iterative solvers.
TOL = 1e-8
#: Default number of Krylov steps of the complement probe in each warm update.
PROBE = 3
#: Default spot-check rate: a cold solve checks every this many warm updates.
CHECK_EVERY = 50
#: Default jump trigger: a cold check when the top Ritz value moved by more than this
#: (relative) from each of the last ``history`` top values.
CHECK_JUMP = 0.05


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
                      max_basis: int, max_hvp: int, probe_start=None, probe_steps: int = 0):
    """Top-k eigenpairs by Rayleigh–Ritz on a growing subspace started from ``X0``.

    Each iteration adds the residual of the first unconverged wanted Ritz pair (Davidson
    without preconditioner; for one wanted pair this is Lanczos with full
    reorthogonalisation). At ``max_basis`` columns the subspace is thick-restarted to its
    best ``max(n_keep + k, max_basis // 2)`` Ritz vectors.

    Once the wanted pairs have converged, ``probe_steps`` Krylov vectors grown from
    ``probe_start`` in the orthogonal complement of the subspace are added (the probe, see
    the module docstring) and the iteration resumes on the union, so that a missed
    eigenvalue above the converged ones is found and converged too.

    Returns ``None`` when X0 spans fewer than k directions, else (vals, vecs, residuals,
    converged, probe) for the top ``n_keep`` Ritz pairs (those beyond k are the guard
    vectors, not converged); ``probe`` is the best Ritz vector outside those ``n_keep``
    (None when the subspace has no more columns).
    """
    V = _orthonormal_extension(np.empty((X0.shape[0], 0)), X0)
    if V.shape[1] < k:
        return None
    W = op.block(V)
    probed = probe_start is None or probe_steps <= 0
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
            if probed:
                probe = V @ S[:, m] if V.shape[1] > m else None
                return ritz[:m], Y, res, True, probe
            probed = True
            if V.shape[1] + probe_steps > max_basis:
                keep = max(n_keep + 1, min(V.shape[1], max_basis - probe_steps))
                V, W = V @ S[:, :keep], W @ S[:, :keep]
            z = probe_start
            for _ in range(probe_steps):
                Z = _orthonormal_extension(V, z[:, None])
                if Z.shape[1] == 0:
                    break
                HZ = op.block(Z)
                V, W = np.hstack([V, Z]), np.hstack([W, HZ])
                z = HZ[:, 0]
            continue
        if op.count >= max_hvp:
            return ritz[:m], Y, res, False, None
        if V.shape[1] >= max_basis:
            keep = min(V.shape[1], max(n_keep + k, max_basis // 2))
            V, W = V @ S[:, :keep], W @ S[:, :keep]
        Z = _orthonormal_extension(V, R[:, unconverged[:1]])
        if Z.shape[1] == 0:
            # The residuals already lie in the subspace to working precision: stagnation.
            return ritz[:m], Y, res, False, None
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
        Largest subspace before a thick restart (default ``max(20, 3·(k + guard) + 8)``
        plus ``probe``; small projected problems also keep LAPACK single-threaded and fast).
    max_hvp : int, optional
        HVP budget of a warm update before it gives up and solves cold
        (default ``3 · max_basis``).
    refresh_every : int, optional
        Force a cold solve every this many updates (never by default).
    probe : int, default 3
        Krylov steps of the complement probe in each warm update (one HVP each; 0 turns the
        probe off). See the module docstring.
    check_every : int or None, default 50
        Spot check: every this many updates (update indices N, 2N, ...) a warm update is
        repeated cold and the cold answer kept. None: no periodic checks.
    check_jump : float or None, default 0.05
        Spot check also when the warm top eigenvalue differs by more than this fraction from
        each of the last ``history`` top eigenvalues (on a period-two orbit the value two
        updates back is close, so the orbit itself does not trigger checks). None: off.
    seed : int, default 0
        Seed of the probe's pseudo-random start vectors (drawn from ``(seed, update index)``,
        so a run is reproducible and a resumed tracker draws the same vectors).

    Attributes
    ----------
    vals, vecs : ndarray
        Latest eigenvalues (k,) and eigenvectors (P, k).
    n_hvp : int
        Hessian-vector products used by all updates so far.
    hvp_counts : list of int
        HVPs used by each update.
    methods : list of str
        How each update was solved: "dense", "cold", "warm", "warm+cold" (a warm
        attempt that failed and was redone cold; its HVPs are counted in full), "checked"
        (a converged warm update repeated cold as a spot check, which agreed) or
        "corrected" (a spot check that disagreed; the cold answer was kept).
    n_checks, n_corrections : int
        Spot checks made, and those whose cold top-k eigenvalues differed from the warm
        ones by more than ``100·tol`` relative to the top eigenvalue.
    corrections : list of tuple
        (update index, warm top eigenvalue, cold top eigenvalue) of each correction.
    """

    def __init__(self, problem, k: int = 1, *, dense_max: int = DENSE_MAX, tol: float = TOL, guard: int = 1,
                 history: int = 3, max_basis: int | None = None, max_hvp: int | None = None,
                 refresh_every: int | None = None, probe: int = PROBE, check_every: int | None = CHECK_EVERY,
                 check_jump: float | None = CHECK_JUMP, seed: int = 0):
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
        if isinstance(probe, bool) or not isinstance(probe, numbers.Integral) or probe < 0:
            raise ValueError(f"`probe` must be an integer >= 0 (0 turns the complement probe off); got {probe!r}.")
        self.probe = int(probe)
        self.check_every = None if check_every is None else positive_int(check_every, "check_every")
        self.check_jump = None if check_jump is None else positive_float(check_jump, "check_jump")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"`seed` must be an integer >= 0; got {seed!r}.")
        self.seed = int(seed)
        # The probe needs room beside the warm block in the subspace.
        if max_basis is None:
            self.max_basis += self.probe
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
        self._probes: list[np.ndarray] = []  # best complement Ritz vectors, most recent first
        self._tops: list[float] = []  # top eigenvalues of the last `history` updates
        self.n_checks = 0
        self.n_corrections = 0
        self.corrections: list[tuple] = []
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

    def _probe_start(self, n_calls: int) -> np.ndarray:
        """Fresh pseudo-random direction plus the carried probe vectors (all unit length)."""
        z = np.random.default_rng((self.seed, n_calls)).standard_normal(self.problem.dim)
        z /= np.linalg.norm(z)
        for q in self._probes:
            z += q
        return z

    def _needs_check(self, n_calls: int, top: float) -> bool:
        if self.check_every is not None and n_calls % self.check_every == 0:
            return True
        if self.check_jump is not None and self._tops:
            rel = min(abs(top - t) / max(abs(t), np.finfo(float).tiny) for t in self._tops)
            return rel > self.check_jump
        return False

    def _update(self, theta):
        n_calls = len(self.methods)
        if self.dense:
            vals, vecs = _dense_top(self.problem, theta, self.k)
            method, n_hvp, residual = "dense", 0, None
            self.n_hessian += 1
        else:
            refresh = self.refresh_every is not None and n_calls % self.refresh_every == 0
            result, probe = None, None
            op = _CountingHVP(self.problem, theta)
            if self._past and not refresh:
                X0 = np.hstack([self._past[0]] + [p[:, : self.k] for p in self._past[1:]])
                start = self._probe_start(n_calls) if self.probe else None
                result = _warm_block_solve(op, X0, self.k, self.n_block, self.tol, self.max_basis, self.max_hvp,
                                           start, self.probe)
            if result is not None and result[3]:
                vals, vecs, residual, _, probe = result
                method, n_hvp = "warm", op.count
                if self._needs_check(n_calls, vals[0]):
                    cvals, cvecs, n_cold = self._cold(theta)
                    self.n_checks += 1
                    scale = max(abs(cvals[0]), np.finfo(float).tiny)
                    if np.max(np.abs(cvals[: self.k] - vals[: self.k])) > 100 * self.tol * scale:
                        self.n_corrections += 1
                        self.corrections.append((n_calls, float(vals[0]), float(cvals[0])))
                        method = "corrected"
                    else:
                        method = "checked"
                    vals, vecs, residual = cvals, cvecs, None
                    n_hvp += n_cold
            else:
                vals, vecs, n_cold = self._cold(theta)
                method = "cold" if result is None else "warm+cold"
                n_hvp, residual = op.count + n_cold, None
            vecs = _fix_signs(vecs)
            self._past = [vecs] + self._past[: self.history - 1]
            if probe is not None:
                self._probes = [probe] + self._probes[: self.history - 1]
            self._tops = [float(vals[0])] + self._tops[: self.history - 1]
            vals, vecs = vals[: self.k].copy(), vecs[:, : self.k].copy()
        self.vals, self.vecs = vals, vecs
        self.n_hvp += n_hvp
        self.hvp_counts.append(n_hvp)
        self.methods.append(method)
        self.last_info = {"method": method, "n_hvp": n_hvp, "residual": residual}
        return vals, vecs

    #: Attributes set at construction; everything else an update may change (run state).
    _CONFIG_ATTRS = ("problem", "k", "dense_max", "tol", "history", "n_block", "max_basis", "max_hvp",
                     "refresh_every", "probe", "check_every", "check_jump", "seed")

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
                f"n_hvp={self.n_hvp}, checks={self.n_checks}, corrections={self.n_corrections})")
