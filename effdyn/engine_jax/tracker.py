"""Top Hessian eigenpairs followed along a trajectory, as a pure JAX function.

At the Edge of Stability the top of the Hessian is crowded: several eigenvalues near 2/η
(on the digits MLP 8 within 10 % of λ1, and a slowly decaying spectrum below). One vector
cannot follow λ1 through such a crowd cheaply: the eigenvectors rotate inside it from step
to step, while a block spanning the crowd's top moves less. So the tracker carries an
orthonormal block of
``block`` vectors (every eigenvalue above the caller's ``threshold``, plus ``guard`` more,
at least ``k``) from one call to the next, and at a new θ

1. applies H(θ) to the block carried from ``history`` updates before (``block`` HVPs)
   and does Rayleigh–Ritz on it;
2. accepts when every *wanted* Ritz pair — the top ``k`` and every one above
   ``threshold`` that is not a guard — meets the tolerance (``criterion``, below);
3. otherwise runs LOBPCG iterations from that block. Only the pairs that can be wanted
   (the top k; with a threshold every non-guard one) get residual and search directions,
   and H is applied only to the residuals of those not yet accepted (soft locking: one
   HVP per such pair and iteration); the images of the Ritz vectors and of the search
   directions are kept as linear combinations, so they cost nothing. At most
   ``max_iter`` iterations;
4. if that still fails (or on the first call) it solves cold: ``krylov`` steps of Lanczos
   with full reorthogonalisation from a fixed random vector, whose top Ritz vectors start
   LOBPCG for at most ``cold_iter`` iterations. Cold solves and pairs that end
   unconverged are counted in the state and flagged in the result. The warm and the cold
   attempt are two turns of one loop, so LOBPCG and the HVP inside it are compiled once
   (this halved the tracker's XLA compilation: 3.6 → 1.9 s on the peer MLP);
5. carries H·Y (orthonormalised) forward as the next start: a free step of subspace
   iteration that keeps the lower block vectors, which soft locking leaves alone, on the
   top cluster.

Two facts of the EoS shape this. θ alternates between the two sides of a valley, so the
block of two updates before (``history=2``) is much closer than the last one (measured on
the digits MLP: 26 against 80 HVPs per step). And the Rayleigh–Ritz eigenvalue error is
quadratic in the residual once the block holds the cluster, so the eigenvalue criterion
accepts far earlier than a residual test.

Accuracy (``scale`` is what the caller passes, 2/η in :func:`effdyn.engine_jax.gd_jax`):

* ``criterion="residual"``: ‖Hy − λy‖ <= ``rtol · scale`` for every wanted pair. A
  symmetric matrix has an eigenvalue within ‖r‖ of a Ritz value with residual r, so this
  bounds the eigenvalue error rigorously; ``rtol = TIGHT_RTOL`` (1e-10) matches a dense
  ``eigvalsh`` to about 1e-10 · scale.
* ``criterion="eigenvalue"``: a pair is also accepted when its estimated eigenvalue error is
  below ``rtol · scale``: 4‖r‖²/δ (δ = gap to the lowest Ritz value of the block), or, after
  an LOBPCG iteration, 4 times the rise of its Ritz value in that iteration (Ritz values of
  the top only rise as the basis grows; with geometric convergence at a rate <= 0.8 the
  error left is at most 4 times the last rise). These are
  estimates, not bounds; the tests and the benchmark check them against tight solves along
  whole EoS trajectories.

The guard vectors catch an eigenvalue rising into the wanted set; ``saturated`` reports
when more eigenvalues exceed ``threshold`` than the block has non-guard room for (the
caller should then use a larger ``block``).

Everything is a pure function of (state, HVP) with static shapes and fixed iteration
budgets (``lax.while_loop``), so it runs inside ``jit``/``lax.scan`` on any device. The
state is a :class:`TrackerState` (a NamedTuple of arrays), convertible to a dict of NumPy
arrays and back (:func:`state_to_dict`, :func:`state_from_dict`) for checkpoints.

For P <= ``dense_max`` every update is a dense ``eigh`` of H built from P HVPs.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._jax import import_jax

__all__ = ["EigenTrackerJax", "TrackerState", "TrackResult", "state_to_dict", "state_from_dict",
           "DEFAULT_RTOL", "TIGHT_RTOL"]

#: Default residual tolerance, relative to ``scale`` (2/η in ``gd_jax``).
DEFAULT_RTOL = 1e-4
#: Tight mode: eigenvalues equal to a dense solve to about this, relative to ``scale``.
TIGHT_RTOL = 1e-10


class TrackerState(NamedTuple):
    """What the tracker carries from one update to the next (all arrays)."""

    basis: object          # (history, P, block) Ritz vectors of the last updates, newest first
    vals: object           # (history, block) their Ritz values, descending
    initialized: object    # bool: False until the first (cold) solve
    key: object            # uint32 (2,): PRNG key of the cold-start vectors
    n_updates: object      # int64 counters over the whole run
    n_hvp: object
    n_cold: object
    n_unconverged: object
    n_saturated: object


class TrackResult(NamedTuple):
    """What one update returns."""

    vals: object           # (k,) top eigenvalues, descending
    vecs: object           # (P, k) eigenvectors, largest-magnitude entry positive
    residuals: object      # (k,) ‖Hv − λv‖
    n_hvp: object          # HVPs used by this update
    n_iter: object         # LOBPCG iterations (warm + cold)
    cold: object           # bool: a cold solve was needed
    converged: object      # bool: every wanted pair met the tolerance
    n_above: object        # Ritz values >= threshold in the block
    saturated: object      # bool: n_above > block − guard
    block_vals: object     # (block,) all Ritz values of the block
    block_vecs: object     # (P, block) their Ritz vectors (orthonormal; signs as ``vecs``)


def state_to_dict(state: TrackerState) -> dict:
    """The state as a dict of NumPy arrays (for checkpoints)."""
    return {name: np.asarray(value) for name, value in state._asdict().items()}


def state_from_dict(d: dict) -> TrackerState:
    """Inverse of :func:`state_to_dict`; raises ValueError naming a missing field."""
    _, jnp = import_jax()
    missing = [f for f in TrackerState._fields if f not in d]
    if missing:
        raise ValueError(f"`d` lacks the tracker state fields {missing}; pass a dict made by `state_to_dict`.")
    return TrackerState(**{f: jnp.asarray(d[f]) for f in TrackerState._fields})


def _int(x, name, lo):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < lo:
        raise ValueError(f"`{name}` must be an integer >= {lo}; got {x!r}.")
    return int(x)


@dataclass(frozen=True)
class EigenTrackerJax:
    """Configuration of the JAX eigen-tracker (static: hashable, no arrays).

    Parameters
    ----------
    k : int
        Eigenpairs returned (top ``k``).
    block : int, optional
        Vectors carried; default ``k + guard``. Make it cover every eigenvalue above the
        threshold plus the guard (see ``TrackResult.saturated``).
    guard : int, default 2
        Lowest vectors of the block that need not converge.
    rtol : float, default 1e-4
        Tolerance relative to ``scale`` (``TIGHT_RTOL`` for a tight solve).
    criterion : {"residual", "eigenvalue"}, default "residual"
        When a wanted pair is accepted. "residual": ‖r‖ <= rtol·scale, which bounds the
        eigenvalue error by rtol·scale rigorously. "eigenvalue": also accepted when the
        quadratic estimate ‖r‖²/δ <= rtol·scale, δ the gap between the Ritz value and the
        lowest Ritz value of the block (the Rayleigh–Ritz eigenvalue error is quadratic in
        the residual once the block holds the nearby eigenvalues). Along an EoS trajectory
        the block of two steps before already meets the eigenvalue estimate where the
        residual test needs several more iterations (measured in bench_jax_engine.py).
    rest_rtol : float, optional
        Tolerance of the wanted pairs below the top ``k`` (those wanted only because their
        Ritz value is at or above ``threshold``), always with the eigenvalue criterion. A
        caller that needs accurate vectors only for the top ``k`` and eigenvalues for the
        rest (the free-energy flow: the rest enter only through their rate) sets it looser
        than ``rtol``. None: the same tolerance and criterion as the top ``k``.
    history : {1, 2}, default 2
        Warm-start from the block of ``history`` updates ago. At the EoS θ alternates
        between the two sides of a valley, so with an update every (odd number of) step(s)
        the block of two updates ago, on the same side, is much closer than the last one
        (measured: cold fallbacks drop from most steps to a few per hundred on the digits
        MLP). Use 1 when updates are an even number of steps apart.
    max_iter : int, default 20
        LOBPCG iterations of a warm update before it gives up and solves cold. A warm block
        that is still converging is far cheaper to continue than a cold solve (~40 Lanczos
        steps and more): with 8, 3 cold solves in 60 EoS steps on the digits MLP at
        P ≈ 2·10⁴; with 20, one (the first).
    krylov : int, optional
        Lanczos steps of a cold solve (default ``max(2·block + 20, 40)``, at most P).
    cold_iter : int, default 60
        LOBPCG iterations after the cold Lanczos start.
    dense_max : int, default 64
        Up to this P each update is a dense ``eigh``.
    hvp_batch : {"auto", "vmap", "map"}
        How H is applied to the whole block: ``vmap`` over columns or a ``lax.map`` loop of
        single HVPs. On one CPU core vmap is faster at small P and slower at large P
        (measured in benchmarks/bench_jax_engine.py); "auto" uses vmap for P <= 4096.
        LOBPCG's new directions always go through the loop, which skips locked columns.
    """

    k: int = 1
    block: int | None = None
    guard: int = 2
    rtol: float = DEFAULT_RTOL
    criterion: str = "residual"
    rest_rtol: float | None = None
    history: int = 2
    max_iter: int = 20
    krylov: int | None = None
    cold_iter: int = 60
    dense_max: int = 64
    hvp_batch: str = "auto"

    def __post_init__(self):
        _int(self.k, "k", 1)
        _int(self.guard, "guard", 0)
        if self.block is not None:
            _int(self.block, "block", 1)
            if self.block < self.k:
                raise ValueError(f"`block` must be at least `k` = {self.k}; got {self.block}.")
        if isinstance(self.rtol, bool) or not isinstance(self.rtol, numbers.Real) or not (0 < self.rtol < 1):
            raise ValueError(f"`rtol` must be a number in (0, 1) (e.g. 1e-4, or TIGHT_RTOL = 1e-10); got {self.rtol!r}.")
        if self.rest_rtol is not None and (isinstance(self.rest_rtol, bool) or not isinstance(self.rest_rtol, numbers.Real)
                                           or not (0 < self.rest_rtol < 1)):
            raise ValueError(f"`rest_rtol` must be None or a number in (0, 1) (e.g. 1e-4); got {self.rest_rtol!r}.")
        _int(self.max_iter, "max_iter", 0)
        if self.criterion not in ("residual", "eigenvalue"):
            raise ValueError(f"`criterion` must be one of ['residual', 'eigenvalue']; got {self.criterion!r}.")
        if self.history not in (1, 2) or isinstance(self.history, bool):
            raise ValueError(f"`history` must be 1 or 2; got {self.history!r}.")
        _int(self.cold_iter, "cold_iter", 0)
        if self.krylov is not None:
            _int(self.krylov, "krylov", 2)
        _int(self.dense_max, "dense_max", 0)
        if self.hvp_batch not in ("auto", "vmap", "map"):
            raise ValueError(f"`hvp_batch` must be one of ['auto', 'vmap', 'map']; got {self.hvp_batch!r}.")

    # --- sizes ---------------------------------------------------------------------------
    def block_size(self, P: int) -> int:
        b = self.k + self.guard if self.block is None else self.block
        return max(self.k, min(b, P))

    def is_dense(self, P: int) -> bool:
        return P <= self.dense_max or 3 * self.block_size(P) >= P

    def krylov_steps(self, P: int) -> int:
        b = self.block_size(P)
        m = max(2 * b + 20, 40) if self.krylov is None else max(self.krylov, b)
        return int(min(m, P))

    # --- state ---------------------------------------------------------------------------
    def init(self, P: int, seed: int = 0) -> TrackerState:
        """A fresh state for dimension P (the first update solves cold)."""
        jax, jnp = import_jax()
        P = _int(P, "P", 1)
        if self.k > P:
            raise ValueError(f"`k` = {self.k} exceeds the dimension P = {P}.")
        b = self.block_size(P)
        zero = jnp.zeros((), jnp.int64)
        h = self.history
        return TrackerState(basis=jnp.zeros((h, P, b)), vals=jnp.zeros((h, b)), initialized=jnp.zeros((), bool),
                            key=jax.random.PRNGKey(_int(seed, "seed", 0)), n_updates=zero, n_hvp=zero,
                            n_cold=zero, n_unconverged=zero, n_saturated=zero)

    # --- the update ----------------------------------------------------------------------
    def update(self, state: TrackerState, hvp, *, threshold=None, scale=None):
        """Eigenpairs of H at the point where ``hvp`` (v ↦ H v) is taken.

        Parameters
        ----------
        state : TrackerState
        hvp : callable
            v ↦ H(θ)v for a (P,) vector, traceable by JAX.
        threshold : float or array, optional
            Ritz values at or above it are wanted too (besides the top k). None: -inf.
        scale : float or array, optional
            Scale of ``rtol`` (e.g. 2/η); None: the largest Ritz value magnitude.

        Returns
        -------
        (TrackerState, TrackResult)
        """
        jax, jnp = import_jax()
        _, P, b = state.basis.shape
        _check_hvp(jax, jnp, hvp, P)
        # The block of `history` updates ago (the last one until there are two).
        start = state.basis[-1] if self.history == 1 else jnp.where(state.n_updates >= 2, state.basis[1], state.basis[0])
        k, guard = self.k, b - self.k if b - self.k < self.guard else self.guard
        # No threshold: only the top k are wanted (+inf puts no Ritz value above it).
        thr = jnp.inf if threshold is None else jnp.asarray(threshold, jnp.float64)
        apply = _block_apply(jax, jnp, hvp, P, self.hvp_batch)

        if self.is_dense(P):
            H, _ = apply(jnp.eye(P))
            H = 0.5 * (H + H.T)
            lam, S = jnp.linalg.eigh(H)
            lam, Y = lam[::-1][:b], S[:, ::-1][:, :b]
            res = jnp.linalg.norm(H @ Y - Y * lam, axis=0)
            n_hvp = jnp.asarray(P, jnp.int64)
            n_iter, cold, conv = jnp.zeros((), jnp.int64), jnp.zeros((), bool), jnp.ones((), bool)
            carried = Y
        else:
            tol_of = _tolerance(jnp, self.rtol, scale, k, b, self.rest_rtol)
            wanted_of = _wanted(jnp, k, b, guard, thr)
            # Per pair: the eigenvalue criterion for the top k if asked, and always for the
            # rest when they have their own tolerance.
            quad = np.arange(b) >= k if self.rest_rtol is not None else np.zeros(b, bool)
            quad = quad | (self.criterion == "eigenvalue")
            # Pairs that can be wanted: the top k, or with a threshold every non-guard one.
            n_exp = k if threshold is None else max(k, b - guard)

            def warm_start(_):
                HS, spent = apply(start)
                Y, HY, lam = _rayleigh_ritz(jnp, start, HS)
                return Y, HY, lam, spent

            def cold_start(_):
                m = self.krylov_steps(P)
                key = jax.random.fold_in(state.key, state.n_cold)
                Y, HY, lam = _lanczos_block(jax, jnp, apply, hvp, P, m, b, key)
                return Y, HY, lam, jnp.asarray(m, jnp.int64)

            # At most two attempts, written as a loop so that LOBPCG (and the HVP inside it)
            # is traced and compiled once: warm from the carried block (max_iter
            # iterations), then, if that fails, cold (cold_iter); before the first update
            # only the cold one.
            def attempt(c):
                a, _, _, _, _, _, it, spent, was_cold = c
                use_warm = (a == 0) & state.initialized
                Y0, HY0, lam0, h0 = jax.lax.cond(use_warm, warm_start, cold_start, None)
                budget = jnp.where(use_warm, self.max_iter, self.cold_iter)
                Y, HY, lam, res, it_a, ok, h = _lobpcg(jax, jnp, apply, Y0, HY0, lam0, budget, tol_of, wanted_of,
                                                       quad, n_exp)
                return a + 1, Y, HY, lam, res, ok, it + it_a, spent + h0 + h, was_cold | ~use_warm

            def again(c):
                a, ok = c[0], c[5]
                return (a == 0) | ((a == 1) & ~ok & state.initialized)

            zi = jnp.zeros((), jnp.int64)
            z = jnp.zeros((P, b))
            c0 = (zi, z, z, jnp.zeros(b), jnp.full(b, jnp.inf), jnp.zeros((), bool), zi, zi, jnp.zeros((), bool))
            _, Y, HY, lam, res, conv, n_iter, n_hvp, cold = jax.lax.while_loop(again, attempt, c0)
            # The block carried forward is H Y orthonormalised: one free step of subspace
            # iteration (H Y is at hand), which keeps refining the lower block vectors that
            # soft locking leaves alone, so the block keeps holding the top cluster.
            carried = jnp.linalg.qr(HY)[0]

        n_above = jnp.sum(lam >= thr).astype(jnp.int64)
        # Without a threshold only the top k are wanted and the block cannot overflow.
        saturated = (n_above > b - guard) if threshold is not None else jnp.zeros((), bool)
        block_vecs = _fix_signs(jnp, Y)
        vecs = block_vecs[:, :k]
        new_state = TrackerState(
            basis=jnp.concatenate([carried[None], state.basis[:-1]]), vals=jnp.concatenate([lam[None], state.vals[:-1]]),
            initialized=jnp.ones((), bool), key=state.key,
            n_updates=state.n_updates + 1, n_hvp=state.n_hvp + n_hvp,
            n_cold=state.n_cold + cold.astype(jnp.int64),
            n_unconverged=state.n_unconverged + jnp.logical_not(conv).astype(jnp.int64),
            n_saturated=state.n_saturated + saturated.astype(jnp.int64))
        result = TrackResult(vals=lam[:k], vecs=vecs, residuals=res[:k], n_hvp=n_hvp, n_iter=n_iter, cold=cold,
                             converged=conv, n_above=n_above, saturated=saturated, block_vals=lam,
                             block_vecs=block_vecs)
        return new_state, result


# --------------------------------------------------------------------------------------
# building blocks (pure JAX, static shapes)
# --------------------------------------------------------------------------------------
def _check_hvp(jax, jnp, hvp, P):
    try:
        out = jax.eval_shape(hvp, jax.ShapeDtypeStruct((P,), jnp.float64))
    except Exception as exc:
        raise ValueError(f"`hvp` failed on a float64 vector of length P = {P}: {type(exc).__name__}: {exc}") from exc
    if getattr(out, "shape", None) != (P,) or getattr(out, "dtype", None) != jnp.float64:
        raise TypeError(
            f"`hvp` must map a float64 vector of length {P} to one (v ↦ H v); got "
            f"{getattr(out, 'dtype', type(out).__name__)} of shape {getattr(out, 'shape', None)}. "
            "Check that the matrix / loss is float64 (effdyn enables x64 through effdyn._jax.import_jax)."
        )


def _block_apply(jax, jnp, hvp, P, how):
    """``apply(V, mask=None) -> (H V, HVPs spent)``; columns with mask False give zeros.

    A whole block goes through ``vmap`` or a ``lax.map`` loop of single HVPs (``how``).
    A masked block (LOBPCG's new directions, most of them locked) always goes through the
    loop, where a ``lax.cond`` per column really skips the locked ones; under ``vmap`` they
    would all be computed.
    """
    if how == "auto":
        how = "vmap" if P <= 4096 else "map"

    def apply(V, mask=None):
        if mask is None:
            if how == "vmap":
                return jax.vmap(hvp, in_axes=1, out_axes=1)(V), jnp.asarray(V.shape[1], jnp.int64)
            return jax.lax.map(hvp, V.T).T, jnp.asarray(V.shape[1], jnp.int64)

        def one(args):
            v, m = args
            return jax.lax.cond(m, hvp, jnp.zeros_like, v)

        return jax.lax.map(one, (V.T, mask)).T, jnp.sum(mask).astype(jnp.int64)
    return apply


def _tolerance(jnp, rtol, scale, k, b, rest_rtol=None):
    """``tol_of(lam)``: the tolerance of each of the b pairs (rtol for the top k, rest_rtol
    below them when given), times the scale."""
    rel = np.full(b, rtol) if rest_rtol is None else np.where(np.arange(b) < k, rtol, rest_rtol)

    def tol_of(lam):
        s = jnp.max(jnp.abs(lam)) if scale is None else jnp.asarray(scale, jnp.float64)
        return jnp.asarray(rel) * jnp.maximum(s, jnp.finfo(jnp.float64).tiny)
    return tol_of


def _wanted(jnp, k, b, guard, thr):
    idx = jnp.arange(b)

    def wanted_of(lam):
        return (idx < k) | ((lam >= thr) & (idx < b - guard))
    return wanted_of


def _fix_signs(jnp, V):
    lead = V[jnp.argmax(jnp.abs(V), axis=0), jnp.arange(V.shape[1])]
    return V * jnp.where(lead < 0, -1.0, 1.0)


def _top_ritz(jnp, T, mask, b):
    """Top-b eigenpairs of the projected matrix T; columns with mask False are excluded
    (their rows and columns of T are zero; a large negative diagonal sorts them last)."""
    T = 0.5 * (T + T.T)
    big = 1e6 * (jnp.max(jnp.abs(T)) + 1.0)
    T = T - jnp.diag(jnp.where(mask, 0.0, big))
    lam, S = jnp.linalg.eigh(T)
    return lam[::-1][:b], S[:, ::-1][:, :b]


def _rayleigh_ritz(jnp, V, HV):
    T = V.T @ HV
    lam, S = _top_ritz(jnp, T, jnp.ones(V.shape[1], bool), V.shape[1])
    return V @ S, HV @ S, lam


def _svqb(jnp, Z, drop=1e-10):
    """Orthonormalise the columns of Z through its Gram matrix (columns normalised first);
    near-dependent directions become zero columns. Returns (Q, mask)."""
    norms = jnp.linalg.norm(Z, axis=0)
    Z = Z / jnp.where(norms > 0, norms, 1.0)
    G = Z.T @ Z
    w, E = jnp.linalg.eigh(0.5 * (G + G.T))
    keep = w > drop * jnp.maximum(jnp.max(w), 1e-300)
    Q = Z @ (E * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0))
    return Q, keep


def _extend(jnp, B, Z):
    """Columns of Z made orthonormal to the orthonormal (or zero) columns of B and to each
    other, twice ("twice is enough"); dropped directions are zero columns with mask False."""
    Z = Z - B @ (B.T @ Z)
    Q, _ = _svqb(jnp, Z)
    Q = Q - B @ (B.T @ Q)
    Q, keep = _svqb(jnp, Q)
    return Q, keep


def _lobpcg(jax, jnp, apply, Y, HY, lam, max_iter, tol_of, wanted_of, quadratic, n_expand=None):
    """LOBPCG from the Ritz block (Y, HY = H Y, lam), expanding the top ``n_expand`` pairs.

    Only the first ``n_expand`` Ritz pairs (those that can be wanted) get residual and
    search directions, so the basis has ``block + 2·n_expand`` columns; of these, H is
    applied only to the residuals of pairs not yet accepted.

    ``tol_of(lam)`` gives each pair's tolerance; ``quadratic`` (a boolean per pair) says
    which pairs may also pass by the eigenvalue criterion.

    Returns (Y, HY, lam, residual norms, iterations, converged, HVPs).
    """
    P, b = Y.shape
    e = b if n_expand is None else n_expand
    quadratic = np.broadcast_to(np.asarray(quadratic, bool), (b,))

    def status(Y, HY, lam, lam_old=None):
        res = jnp.linalg.norm(HY - Y * lam, axis=0)
        tol = tol_of(lam)
        good = res <= tol
        if quadratic.any():
            # ‖r‖²/δ is the Rayleigh–Ritz eigenvalue error when the residual lies along
            # eigenvalues at distance δ; the spectrum just below the block can be nearer
            # than the block's lowest Ritz value, hence the safety factor 4.
            quad = jnp.asarray(quadratic)
            good = good | (quad & (4.0 * res * res <= tol * (lam - lam[-1])))
            if lam_old is not None:
                # The top Ritz values only rise as the basis grows (Courant–Fischer). If they
                # converge geometrically with a factor ρ <= 0.8, the error left after an
                # iteration is at most ρ/(1 − ρ) = 4 times the rise in it.
                good = good | (quad & (4.0 * (lam - lam_old) <= tol))
        todo = jnp.logical_not(good) & wanted_of(lam)
        return res, jnp.logical_not(jnp.any(todo)), todo

    res, ok, todo = status(Y, HY, lam)
    zero_p = jnp.zeros((P, e))
    zero_i = jnp.zeros((), jnp.int64)
    carry = (Y, HY, lam, zero_p, zero_p, jnp.zeros(e, bool), res, ok, todo, zero_i, zero_i)

    def cond(c):
        return jnp.logical_not(c[7]) & (c[9] < max_iter)

    def body(c):
        Y, HY, lam, Pd, HPd, pmask, res, _, todo, it, n_hvp = c
        # New directions only from the wanted pairs not yet converged (soft locking): the
        # others keep improving through Rayleigh–Ritz on the enlarged basis for free.
        R = ((HY - Y * lam) * todo)[:, :e]
        Z, zmask = _extend(jnp, jnp.concatenate([Y, Pd], axis=1), R)
        HZ, spent = apply(Z, zmask)
        B = jnp.concatenate([Y, Pd, Z], axis=1)
        HB = jnp.concatenate([HY, HPd, HZ], axis=1)
        mask = jnp.concatenate([jnp.ones(b, bool), pmask, zmask])
        lam_new, C = _top_ritz(jnp, B.T @ HB, mask, b)
        Y_new, HY_new = B @ C, HB @ C
        # Search directions: the parts of the new Ritz vectors outside the old ones, made
        # orthonormal to the new Ritz vectors in coefficient space (B is orthonormal), so
        # their images follow as the same combinations of HB without any HVP.
        D = C[:, :e].at[:b].set(0.0)
        D = D - C @ (C.T @ D)
        D = D * mask[:, None]
        Dq, pmask_new = _svqb(jnp, D, drop=1e-12)
        Dq = Dq - C @ (C.T @ Dq)
        Pd_new, HPd_new = B @ Dq, HB @ Dq
        res_new, ok_new, todo_new = status(Y_new, HY_new, lam_new, lam)
        return (Y_new, HY_new, lam_new, Pd_new, HPd_new, pmask_new, res_new, ok_new, todo_new, it + 1, n_hvp + spent)

    Y, HY, lam, _, _, _, res, ok, _, it, n_hvp = jax.lax.while_loop(cond, body, carry)
    return Y, HY, lam, res, it, ok, n_hvp


def _lanczos_block(jax, jnp, apply, hvp, P, m, b, key):
    """Top-b Ritz pairs of H on the Krylov space of m vectors from a random start.

    Full reorthogonalisation (twice) keeps the basis orthonormal; the images H q_j are kept,
    so Rayleigh–Ritz uses T = Qᵀ(HQ) exactly and the Ritz vectors' images come for free.
    A Krylov space that closes early (invariant subspace) is continued with a fresh random
    direction.
    """
    keys = jax.random.split(key, m + 1)
    q0 = jax.random.normal(keys[0], (P,))
    q0 = q0 / jnp.linalg.norm(q0)
    Q = jnp.zeros((P, m)).at[:, 0].set(q0)
    HQ = jnp.zeros((P, m))

    def body(j, c):
        Q, HQ = c
        w = hvp(Q[:, j])
        HQ = HQ.at[:, j].set(w)
        norm_w = jnp.linalg.norm(w)
        for _ in range(2):
            w = w - Q @ (Q.T @ w)
        nrm = jnp.linalg.norm(w)
        fresh = jax.random.normal(keys[j + 1], (P,))
        for _ in range(2):
            fresh = fresh - Q @ (Q.T @ fresh)
        breakdown = nrm <= 1e-10 * jnp.maximum(norm_w, 1e-300)
        w = jnp.where(breakdown, fresh / jnp.linalg.norm(fresh), w / jnp.where(nrm > 0, nrm, 1.0))
        nxt = jnp.minimum(j + 1, m - 1)
        w = jnp.where(j + 1 < m, w, Q[:, nxt])
        Q = jax.lax.dynamic_update_slice(Q, w[:, None], (0, nxt))
        return Q, HQ

    Q, HQ = jax.lax.fori_loop(0, m, body, (Q, HQ))
    lam, S = _top_ritz(jnp, Q.T @ HQ, jnp.ones(m, bool), b)
    return Q @ S, HQ @ S, lam
