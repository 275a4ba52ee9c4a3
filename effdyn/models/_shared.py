"""Helpers every model needs: feature checks, spectra along a run, loss evaluations, the
two-point gradients of a period-two cycle, and the cache of JAX drifts."""

from __future__ import annotations

import weakref

import numpy as np

from ..errors import MissingFeatureError
from ..problems.base import Problem
from .run_state import CountingProblem

__all__ = ["require_third", "require_loss_min", "jax_loss_of", "cached_jax_drift", "losses", "two_point_gradients",
           "top_eig", "tracked_eigenpairs", "count_eigensolve"]


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


def losses(problem: Problem, Theta: np.ndarray) -> np.ndarray:
    """E along the rows of ``Theta``."""
    return np.array([problem._loss(np.ascontiguousarray(th)) for th in np.atleast_2d(Theta)])


def two_point_gradients(problem: Problem, theta: np.ndarray, d: np.ndarray):
    """∇E(θ + d) and ∇E(θ − d): the gradients at the two points of a period-two cycle
    θ± = θ ± d (their mean drives the cycle's centre, their difference is H̄d for the
    Hessian H̄ averaged over the chord θ− → θ+)."""
    return problem._grad(theta + d), problem._grad(theta - d)


def count_eigensolve(problem) -> None:
    """Count one eigen-solve on the run whose counting view ``problem`` is (if any)."""
    if isinstance(problem, CountingProblem):
        problem.counters.eigensolves += 1


def top_eig(problem: Problem, theta: np.ndarray, k: int = 1):
    """Top-k eigenpairs at one point, solved cold: vals (k,) descending, vecs (P, k).

    Dense ``eigh`` of ``problem._hessian`` for small problems (no validation: this sits in
    drift evaluations), Lanczos through :func:`effdyn.spectrum.top_eigenpairs` otherwise.
    """
    from ..spectrum import DENSE_MAX, top_eigenpairs

    count_eigensolve(problem)
    k = min(k, problem.dim)
    if problem.dim <= DENSE_MAX:
        H = problem._hessian(np.ascontiguousarray(theta, dtype=np.float64))
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        return w[::-1][:k].copy(), V[:, ::-1][:, :k].copy()
    return top_eigenpairs(problem, theta, k)


def tracked_eigenpairs(run, theta: np.ndarray):
    """Eigenpairs at θ from the run's eigen-tracker (warm-started along the run).

    The last result is memoised by the exact point, so the step-exact map and the record
    of the same saved state solve the eigenproblem once.
    """
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    hit = run.memo_get("eig", theta)
    if hit is not None:
        return hit
    count_eigensolve(run.problem)
    vals, vecs = run.tracker._update(theta)
    out = (vals.copy(), vecs.copy())
    run.memo_put("eig", theta, out)
    return out
