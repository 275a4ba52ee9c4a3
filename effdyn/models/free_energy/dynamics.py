"""The free-energy flow's equations, written once for NumPy and JAX.

Every function takes ``xp`` (``numpy`` or ``jax.numpy``) and an *oracle*, the source of the
loss derivatives and of the spectrum: :class:`NumpyOracle` calls the problem's kernels
through a run's counting view and its eigen-tracker; :class:`JaxOracle` differentiates the
problem's JAX loss and takes the dense eigendecomposition. The flow's NumPy drift, its map
and its JAX drift (diffrax) are the same code with a different oracle.

Closures — how the oscillation enters the mean and its rate — are functions
``closure(xp, oracle, theta, U, lam, p) -> (dθ/dk, λ)``:

* :func:`second_order`: dθ/dk = −η(∇E + ½∇_θ⟨H, Σ⟩), rates from the Hessian at θ;
* :func:`chord` (rank 1): dθ/dk = −η(∇E(θ+) + ∇E(θ−))/2 at θ± = θ ± V, and the top rate
  from the chord curvature Vᵀ(∇E(θ+) − ∇E(θ−))/(2‖V‖²).

``p`` holds the scalar parameters (η, clip, threshold, floor; floor −1 means "roundoff").
"""

from __future__ import annotations

import numpy as np

from .._shared import count_eigensolve, two_point_gradients

__all__ = ["NumpyOracle", "JaxOracle", "CLOSURES", "second_order", "chord", "drift", "map_step", "rates",
           "floor_value", "mode_floor", "CHORD_MIN_AMPLITUDE"]

#: Below this amplitude (relative to max(1, ‖θ‖)) the chord correction of the top
#: curvature is left out: it is O(‖V‖²) there (≤ 1e-8 relative), while the difference
#: ∇E(θ+) − ∇E(θ−) it is computed from would be dominated by round-off.
CHORD_MIN_AMPLITUDE = 1e-4


# --- oracles ------------------------------------------------------------------------------

class NumpyOracle:
    """Derivatives through a run's counting problem; eigenpairs from the flow (tracked)."""

    def __init__(self, problem, eigenpairs):
        self.problem = problem
        self.eigenpairs = eigenpairs

    def grad_third(self, theta, U, a, b):
        # one call for a∇E + b∇_θ Σ_r u_rᵀHu_r (a fused kernel where the problem has one)
        return self.problem._grad_third(theta, np.ascontiguousarray(U), np.ones(U.shape[1]), a, b)

    def two_point(self, theta, V):
        return two_point_gradients(self.problem, theta, np.ascontiguousarray(V))

    def hvp(self, theta, v):
        return self.problem._hvp(theta, np.ascontiguousarray(v))

    @staticmethod
    def cond(pred, if_true, if_false):
        return if_true() if pred else if_false()


class JaxOracle:
    """Autodiff of a JAX loss; dense eigendecomposition of the Hessian (small P)."""

    def __init__(self, loss, n_track: int):
        from ..._jax import import_jax

        self.jax, self.jnp = import_jax()
        jax = self.jax
        self.grad = jax.grad(loss)
        self.hessian = jax.hessian(loss)
        self.n_track = n_track

        def curvature(theta, U):  # Σ_r u_rᵀ H(θ) u_r by forward-over-reverse
            HU = jax.vmap(lambda u: jax.jvp(self.grad, (theta,), (u,))[1], in_axes=1, out_axes=1)(U)
            return self.jnp.sum(U * HU)

        self.third = jax.grad(curvature)

    def eigenpairs(self, theta):
        w, E = self.jnp.linalg.eigh(self.hessian(theta))
        return w[::-1][: self.n_track], E[:, ::-1][:, : self.n_track]

    def grad_third(self, theta, U, a, b):
        return a * self.grad(theta) + b * self.third(theta, U)

    def two_point(self, theta, V):
        return self.grad(theta + V), self.grad(theta - V)

    def hvp(self, theta, v):
        return self.jax.jvp(self.grad, (theta,), (v,))[1]

    def cond(self, pred, if_true, if_false):
        return self.jax.lax.cond(pred, if_true, if_false)


def numpy_eigenpairs(run, theta, n_track: int, dense_max: int):
    """Top ``n_track`` eigenpairs (descending) of H(θ): dense ``eigh`` up to ``dense_max``,
    the run's warm-started tracker above; memoised by the exact point."""
    theta = np.ascontiguousarray(theta)
    hit = run.memo_get("eig", theta)
    if hit is not None:
        return hit
    count_eigensolve(run.problem)
    if theta.shape[0] <= dense_max:
        w, Q = np.linalg.eigh(run.problem._hessian(theta))
        out = (w[::-1][:n_track], Q[:, ::-1][:, :n_track])
    else:
        vals, vecs = run.tracker._update(theta)
        out = (vals.copy(), vecs.copy())
    run.memo_put("eig", theta, out)
    return out


# --- closures -------------------------------------------------------------------------

def second_order(xp, oracle, theta, U, lam, p):
    """dθ/dk = −η(∇E + ½∇_θ⟨H, Σ⟩) (a = 1, b = ½ keep the fused kernel's arithmetic)."""
    return -p["eta"] * oracle.grad_third(theta, U, 1.0, 0.5), lam


def chord(xp, oracle, theta, U, lam, p):
    """Two-point closure (rank 1, V = U[:, 0]): centre and top rate from θ± = θ ± V."""
    V = U[:, 0]
    g_plus, g_minus = oracle.two_point(theta, V)
    dtheta = -0.5 * p["eta"] * (g_plus + g_minus)
    a2 = V @ V
    big = a2 > (CHORD_MIN_AMPLITUDE * xp.maximum(1.0, xp.linalg.norm(theta))) ** 2

    def corrected():
        # the curvature along V, averaged over the chord θ− → θ+, replaces the one at θ
        chord_curv = (V @ (g_plus - g_minus)) / (2.0 * a2)
        centre = (V @ oracle.hvp(theta, V)) / a2
        return xp.concatenate([lam[:1] + (chord_curv - centre), lam[1:]])

    return dtheta, oracle.cond(big, corrected, lambda: lam)


CLOSURES = {"second-order": second_order, "chord": chord}


# --- the covariance part ------------------------------------------------------------------

def floor_value(xp, theta, floor):
    """The persistent floor q of the step-exact map (and of the seeds): the number given, or
    (ε_mach·max(1, ‖θ‖))² for "roundoff" (−1)."""
    roundoff = (xp.finfo(xp.float64).eps * xp.maximum(1.0, xp.linalg.norm(theta))) ** 2
    return xp.where(floor < 0, roundoff, floor)


def mode_floor(xp, theta, Q, floor, rank: int):
    """The persistent floor of the continuous flow, per top-r mode: the number given, or for
    "roundoff" (−1) the round-off that seeds GD's own oscillation along each mode,
    q_i = ε_mach² Σ_p Q_pi² θ_p².

    GD rounds every coordinate of θ − η∇E to its own precision, ~ε|θ_p|, so the seed along
    an eigenvector is that rounding projected on it: far below ε‖θ‖ when the oscillating
    coordinates are small (the minimal valley: x ≈ 0.003 beside y ≈ 3.8, a thousandth of
    it). The step-exact map keeps :func:`floor_value`: its θ is a discrete iterate with
    GD's own instability and its own round-off of exactly this size, so Σ's floor must lie
    well above it, or θ's oscillation grows alongside Σ's and the map becomes GD
    (docs/theory.md, "Seeds")."""
    r = min(rank, Q.shape[1])
    roundoff = xp.finfo(xp.float64).eps ** 2 * xp.sum(Q[:, :r] ** 2 * (theta**2)[:, None], axis=0)
    return xp.where(floor < 0, roundoff, floor)


def rates(xp, lam, p):
    """Per-step log-amplitude rates g_i of the tracked modes (oscillating: λ > threshold) and
    g_off = log(clip) of everything else; |1 − ηλ| is clipped from below at ``clip``."""
    g_off = xp.log(p["clip"])
    g = xp.where(lam > p["threshold"], xp.log(xp.maximum(xp.abs(1.0 - p["eta"] * lam), p["clip"])), g_off)
    return g, g_off


def floored(xp, g, Q, S, q, rank: int, factored: bool):
    """Rates with the persistent floor: a decaying top mode relaxes towards amplitude² q
    (q a number, or one per top mode)."""
    r = min(rank, g.shape[0])
    if factored:
        m = xp.sum((Q[:, :r].T @ S) ** 2, axis=1)
    else:
        m = xp.einsum("pi,pq,qi->i", Q[:, :r], S, Q[:, :r])
    shrink = xp.where(q > 0, xp.clip(1.0 - q / xp.maximum(m, 1e-300), 0.0, 1.0), 1.0)
    return xp.concatenate([xp.where(g[:r] < 0, g[:r] * shrink, g[:r]), g[r:]])


def _apply_M(xp, lam, Q, S, p):
    # M = I − ηH on oscillating tracked modes and 0 elsewhere (non-oscillating directions are
    # not part of the fluctuation: the rate form damps them at rate 1)
    m = xp.where(lam > p["threshold"], 1.0 - p["eta"] * lam, 0.0)
    return Q @ (m[:, None] * (Q.T @ S))


def _evaluate(xp, oracle, layout, closure, y, p):
    theta, S = layout.unpack(xp, y)
    lam, Q = oracle.eigenpairs(theta)
    dtheta, lam = closure(xp, oracle, theta, layout.factor(xp, S), lam, p)
    return theta, S, dtheta, lam, Q


def drift(xp, oracle, layout, closure, form: str, rank: int, y, p):
    """dy/dk of the flow (theory §2; the model's module docstring)."""
    theta, S, dtheta, lam, Q = _evaluate(xp, oracle, layout, closure, y, p)
    if form == "log":
        g, g_off = rates(xp, lam, p)
        g = floored(xp, g, Q, S, mode_floor(xp, theta, Q, p["floor"], rank), rank, layout.factored)
        GS = Q @ ((g - g_off)[:, None] * (Q.T @ S)) + g_off * S  # G applied to V (or Σ)
        dS = GS if layout.factored else GS + GS.T
    else:
        MS = _apply_M(xp, lam, Q, S, p)
        dS = _apply_M(xp, lam, Q, MS.T, p).T - S
    return layout.pack_rate(xp, y, dtheta, dS)


def map_step(xp, oracle, layout, closure, form: str, rank: int, y, p):
    """One GD step: θ by an explicit Euler step of length 1; Σ by GD's own covariance
    recursion on the oscillating modes, Σ ← |I − ηH| Σ |I − ηH| (the exact one-step solution
    of the log form for frozen H, and explicit Euler of the rate form)."""
    theta, S, dtheta, lam, Q = _evaluate(xp, oracle, layout, closure, y, p)
    theta_new = theta + dtheta
    if form == "log":
        g, g_off = rates(xp, lam, p)
        g = floored(xp, g, Q, S, floor_value(xp, theta, p["floor"]), rank, layout.factored)
        f, f_off = xp.exp(g), xp.exp(g_off)

        def F(S):
            return Q @ ((f - f_off)[:, None] * (Q.T @ S)) + f_off * S

        if layout.factored:
            return layout.map_factor(xp, theta_new, y, F)
        S_new = F(F(S).T).T
    else:
        MS = _apply_M(xp, lam, Q, S, p)
        S_new = _apply_M(xp, lam, Q, MS.T, p).T
    return layout.pack(xp, theta_new, S_new)
