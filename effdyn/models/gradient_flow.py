"""Gradient flow, the baseline that every Edge-of-Stability model is measured against.

Also holds the small helpers the peer models share (spectrum along saved states, checks
for optional problem features, the cached JAX drift), so that each model module only says
what is specific to it.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..errors import MissingFeatureError
from ..problems.base import Problem
from .base import AbstractModel

__all__ = ["GradientFlow"]


# --------------------------------------------------------------------------------------
# helpers shared by the peer models
# --------------------------------------------------------------------------------------
def require_third(problem: Problem, model: str) -> None:
    """Raise MissingFeatureError when the problem has no third-derivative contraction."""
    if not problem.has_third:
        raise MissingFeatureError(
            f"{model} needs the third-derivative contraction `problem.third` (∇_θ uᵀH(θ)u), which "
            f"{type(problem).__name__} does not provide. Implement `_third` on the problem, or wrap the "
            "loss with `effdyn.problems.from_jax` to get it by autodiff."
        )


def require_loss_min(problem: Problem, model: str) -> float:
    """The known minimum value of E, or MissingFeatureError."""
    if problem.loss_min is None:
        raise MissingFeatureError(
            f"{model} needs `problem.loss_min` (the minimum value of E, which defines the minimiser "
            f"manifold); {type(problem).__name__} has loss_min = None. Set it on the problem "
            "(e.g. `from_jax(..., loss_min=0.0)`)."
        )
    return float(problem.loss_min)


def jax_loss_of(problem: Problem, model: str):
    """The problem's JAX loss, or MissingFeatureError naming ``jax_loss``."""
    try:
        return problem.jax_loss()
    except NotImplementedError:
        raise MissingFeatureError(
            f"{model} on the diffrax backend needs `problem.jax_loss()`, which {type(problem).__name__} "
            "does not provide. Use solver=\"scipy:LSODA\" or solver=\"map\", or build the problem "
            "with `effdyn.problems.from_jax`."
        ) from None


# One JAX drift per (problem, model kind): parameters such as eta travel in ``args``, so a
# sweep over them reuses the function object and therefore diffrax's compiled solve.
_JAX_DRIFTS: "weakref.WeakKeyDictionary[Problem, dict]" = weakref.WeakKeyDictionary()


def cached_jax_drift(problem: Problem, key: str, build):
    """``build()`` once per problem and key; later calls return the same function."""
    per_problem = _JAX_DRIFTS.setdefault(problem, {})
    if key not in per_problem:
        per_problem[key] = build()
    return per_problem[key]


def top_spectrum(problem: Problem, Theta: np.ndarray, k: int = 1):
    """Top-k Hessian eigenpairs along the rows of ``Theta``: vals (n, k), vecs (n, P, k)."""
    from ..spectrum import EigenTracker

    Theta = np.atleast_2d(Theta)
    k = min(k, problem.dim)
    tracker = EigenTracker(problem, k)
    vals = np.empty((len(Theta), k))
    vecs = np.empty((len(Theta), problem.dim, k))
    for i, th in enumerate(Theta):
        vals[i], vecs[i] = tracker.update(np.ascontiguousarray(th))
    return vals, vecs


def losses(problem: Problem, Theta: np.ndarray) -> np.ndarray:
    """E along the rows of ``Theta``."""
    return np.array([problem._loss(np.ascontiguousarray(th)) for th in np.atleast_2d(Theta)])


def two_point_gradients(problem: Problem, theta: np.ndarray, d: np.ndarray):
    """∇E(θ + d) and ∇E(θ − d): the gradients at the two points of a period-two cycle
    θ± = θ ± d (their mean drives the cycle's centre, their difference is H̄d for the
    Hessian H̄ averaged over the chord θ− → θ+)."""
    return problem._grad(theta + d), problem._grad(theta - d)


def top_eig(problem: Problem, theta: np.ndarray, k: int = 1):
    """Top-k eigenpairs at one point: vals (k,) descending, vecs (P, k).

    Dense ``eigh`` of ``problem._hessian`` for small problems (no validation: this sits in
    drift evaluations), Lanczos through :func:`effdyn.spectrum.top_eigenpairs` otherwise.
    """
    from ..spectrum import DENSE_MAX, top_eigenpairs

    k = min(k, problem.dim)
    if problem.dim <= DENSE_MAX:
        H = problem._hessian(np.ascontiguousarray(theta, dtype=np.float64))
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        return w[::-1][:k].copy(), V[:, ::-1][:, :k].copy()
    return top_eigenpairs(problem, theta, k)


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
class GradientFlow(AbstractModel):
    """Gradient flow in GD-step time: dθ/dk = −η ∇E(θ).

    The baseline of theory §3: it follows GD exactly while the sharpness stays well below
    2/η and keeps sharpening past 2/η where GD self-stabilises, so at the Edge of Stability
    it overestimates the sharpness and misses the oscillation (its ``amplitude`` is 0).
    Its step-exact map (Euler with dk = 1) *is* GD.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        The loss.
    eta : float
        GD step size (> 0).

    Notes
    -----
    Observables: ``theta``, ``loss``, ``time_avg_loss`` (= loss), ``sharpness``,
    ``amplitude`` (zeros). The diffrax backend uses ``problem.jax_loss()``; η is passed in
    ``jax_args()``, so a sweep over η does not recompile.

    Examples
    --------
    >>> import effdyn as ed
    >>> p = ed.problems.Quadratic([[1.0, 0.0], [0.0, 2.0]])
    >>> sol = ed.solve(GradientFlow(p, eta=0.1), [1.0, 1.0], steps=10, solver="scipy:RK45")
    >>> round(float(sol.theta[-1, 0]), 6)    # exp(-0.1 * 10)
    0.367879
    """

    name = "gradient_flow"
    supports = ("scipy", "diffrax", "map")

    @property
    def state_size(self) -> int:
        return self.dim

    def initial_state(self, theta0) -> np.ndarray:
        return self._theta0(theta0)

    def drift(self, k, y):
        return -self.eta * self.problem._grad(np.ascontiguousarray(y))

    def jax_drift(self):
        loss = jax_loss_of(self.problem, type(self).__name__)

        def build():
            from .._jax import import_jax

            jax, _ = import_jax()
            grad = jax.grad(loss)

            def f(k, y, args):
                return -args["eta"] * grad(y)

            return f

        return cached_jax_drift(self.problem, "gradient_flow", build)

    def jax_args(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        return {"eta": jnp.asarray(self.eta, dtype=jnp.float64)}

    def observables(self, k, Y):
        Theta = np.asarray(Y)[:, : self.dim]
        vals, _ = top_spectrum(self.problem, Theta)
        E = losses(self.problem, Theta)
        return {
            "theta": Theta,
            "loss": E,
            "time_avg_loss": E.copy(),
            "sharpness": vals[:, 0],
            "amplitude": np.zeros(len(Theta)),
        }
