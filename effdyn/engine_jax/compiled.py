"""What a model gives the compiled step-exact map: pure JAX functions of (state, run state).

The JAX engine runs a model's step-exact map inside one jitted ``lax.scan`` per chunk of GD
steps (:mod:`effdyn.engine_jax.map`). A model provides it through its method
``jax_map()``, which returns a :class:`CompiledMap`: a few pure functions with the problem's
data passed as an argument (never baked into the compiled code), the model's parameters as
arrays, and a *JAX run state* — a pytree (dict) holding what evolves besides ``y``: the
eigen-tracker's state, the last SDCP solution, the work counters. Every iteration ``k`` of
the scan does::

    ev,  jrun = evaluate(k, y, jrun, params, data)          # what the step and the record share
    rec, jrun = record(k, y, ev, jrun, params, data)        # only at the saved steps
    y,   jrun = advance(k, y, ev, jrun, params, data)       # only while k < steps

so that a saved state and the step taken from it share one spectral evaluation, as the
NumPy map shares it through the run state's memo. The host converts the JAX run state to
data (:func:`to_host`) after every chunk, into ``run.jax_state`` and ``run.counters``, so a
Solution and a checkpoint carry it.

This module also holds the spectral source shared by the models (:class:`Spectrum`: a dense
``eigh`` of the Hessian for small P, :class:`~effdyn.engine_jax.tracker.EigenTrackerJax`
above) and the oracle through which the free-energy flow's equations
(:mod:`effdyn.models.free_energy.dynamics`) see a JAX problem (:class:`PureOracle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from .._jax import import_jax

__all__ = ["CompiledMap", "Spectrum", "PureOracle", "COUNTERS", "fresh_run", "bump", "to_host", "from_host",
           "jax_problem_of", "require_jax_problem", "no_evaluation", "max_abs", "MODEL_TRACKER_RTOL", "MODEL_RATE_RTOL", "Derivatives",
           "derivatives_of", "tracker_report", "mixed_third", "RETRY"]

#: Work counters carried in the JAX run state (the names of effdyn.models.run_state.Counters).
COUNTERS = ("losses", "gradients", "hvps", "thirds", "hessians", "eigensolves")
#: Status a model's function sets when the step needs a richer compiled map
#: (``CompiledMap.upgrade``): the driver recompiles and redoes the chunk with it.
RETRY = 99
#: Residual tolerance (relative to 2/η) of the models' tracker for the pairs whose vectors
#: matter (the free-energy flow's top ``rank``; the central flow sets its own,
#: ``CENTRAL_FLOW_RTOL``); see docs/jax_engine.md ("Models") for the cost of this choice.
MODEL_TRACKER_RTOL = 1e-6
#: Tolerance (eigenvalue criterion, relative to 2/η) of the pairs a model needs only for their
#: eigenvalue: the free-energy flow's tracked pairs below its top ``rank``, which enter only
#: through their rate log max(|1 − ηλ|, clip) (an error δλ moves it by at most ηδλ/clip).
#: Converging them to 1e-6 residuals too cost 215 HVPs per step on the digits MLP at
#: P ≈ 2·10⁴ at the EoS (6 cold solves in 11 steps); this, 61 (one cold solve), with θ and
#: Σ within 1e-4 relative and the sharpness within 5e-7·(2/η) after 10 steps.
MODEL_RATE_RTOL = 1e-4
#: Warm LOBPCG iterations of the models' tracker before it falls back to a cold solve. GD's
#: tracker (top eigenvalue to 1e-4) needs fewer (its default is 20); converging a moving
#: cluster of critical pairs to 1e-6 residuals did not fit in the former 8: on a digits MLP at
#: the EoS (five critical eigenvalues of the central flow) every update then went cold (~90
#: HVPs per step); with 30 one cold solve in 21 updates (~45 HVPs per step), the same
#: tolerance.
MODEL_TRACKER_MAX_ITER = 30


class CompiledMap(NamedTuple):
    """A model's step-exact map as pure JAX functions (see the module docstring).

    Attributes
    ----------
    key : tuple
        Static configuration (hashable): together with the problem it identifies the
        compiled chunk, so models differing only in ``params`` share it.
    params : dict
        The model's numerical parameters as float64 arrays (traced, not compiled in).
    init_run : callable
        ``init_run(y0, seed) -> jrun``: a fresh JAX run state (:func:`fresh_run`); a run
        continued from ``run.jax_state`` is rebuilt from that data in its shape
        (:func:`from_host`).
    evaluate, record, advance : callable
        The three pure functions of the module docstring. ``record`` returns a dict of
        arrays with the keys and shapes of the model's NumPy ``record``.
    magnitude : callable
        ``magnitude(y)``: the model's ``magnitude`` (what the blow-up check bounds).
    causes : dict
        Codes a function may put into ``jrun["status"]`` (nonzero) and the cause and
        message the solve stops with.
    report : callable, optional
        ``report(state) -> list of str``: warnings about a finished run, from the host data
        of its JAX run state (e.g. a tracked block too small for the eigenvalues above the
        model's threshold).
    upgrade : callable, optional
        ``upgrade() -> CompiledMap``: a map that handles more cases at a higher compile
        cost, with the same run state (the central flow compiles its general SDCP solver
        only once two eigenvalues are critical). A function that meets such a case sets
        ``jrun["status"] = RETRY``; the driver then redoes the chunk with the upgrade.
    """

    key: tuple
    params: dict
    init_run: Callable
    evaluate: Callable
    record: Callable
    advance: Callable
    magnitude: Callable
    causes: dict
    report: Callable | None = None
    upgrade: Callable | None = None


def tracker_report(state: dict) -> list[str]:
    """Warnings about the run of a model's tracker (from its host data)."""
    tracker = state.get("tracker")
    if tracker is None:
        return []
    n = int(np.asarray(tracker["n_saturated"]))
    if not n:
        return []
    return [f"in {n} of {int(np.asarray(tracker['n_updates']))} eigen-solves more eigenvalues lay above the model's "
            "threshold than the tracked block holds, so the model missed some of them"]


class Derivatives:
    """The pure derivative functions of a problem, ``f(θ, ..., data)``, as a JAX problem has
    them (``pure_loss``, ``pure_grad``, ``pure_hvp``, ``pure_third``, ``pure_hessian``,
    ``data_args``, ``dim``); for any other problem they are built by autodiff of its
    ``jax_loss()`` (which holds its own constants; ``data_args`` is None)."""

    def __init__(self, loss, dim):
        jax, jnp = import_jax()
        self.dim, self.data_args = dim, None
        grad = jax.grad(loss)

        def hvp(theta, v):
            return jax.jvp(grad, (theta,), (v,))[1]

        def curvature(theta, U, s):
            def d2(u):
                first = lambda t: jax.jvp(loss, (t,), (u,))[1]  # noqa: E731
                return jax.jvp(first, (theta,), (u,))[1]
            return jnp.sum(s * jax.vmap(d2, in_axes=1)(U))

        third = jax.grad(curvature)
        hessian = jax.hessian(loss)
        self.loss = loss
        self.pure_loss = lambda theta, data: loss(theta)
        self.pure_grad = lambda theta, data: grad(theta)
        self.pure_hvp = lambda theta, v, data: hvp(theta, v)
        self.pure_third = lambda theta, U, s, data: third(theta, U, s)
        self.pure_hessian = lambda theta, data: hessian(theta)


def mixed_third(d):
    """``f(θ, u, w, data) = ∇_θ (uᵀ H(θ) w)`` for the derivatives ``d`` (a JAX problem or
    :class:`Derivatives`): the mixed second directional derivative d²/ds dt E(θ + su + tw),
    forward over forward, then one reverse pass — one direction's cost of ``pure_third``
    (the polarisation ¼[∇(u+w)ᵀH(u+w) − ∇(u−w)ᵀH(u−w)] costs two)."""
    jax, _ = import_jax()

    def f(theta, u, w, data):
        def second(x):
            def first(t):
                return jax.jvp(lambda z: d.pure_loss(z, data), (t,), (u,))[1]
            return jax.jvp(first, (x,), (w,))[1]
        return jax.grad(second)(theta)

    return f


def derivatives_of(problem, model_name: str = "the model"):
    """The problem itself when it is a JAX problem, else :class:`Derivatives` of its JAX loss
    (MissingFeatureError when it has none)."""
    from ..problems.jax_problem import JaxProblem

    if isinstance(problem, JaxProblem):
        return problem
    from ..errors import MissingFeatureError

    try:
        loss = problem.jax_loss()
    except NotImplementedError:
        raise MissingFeatureError(
            f"{model_name} on the diffrax backend needs `problem.jax_loss()`, which {type(problem).__name__} does "
            "not provide. Use solver=\"scipy:LSODA\" or solver=\"map\", or build the problem with "
            "`effdyn.problems.from_jax`.") from None
    return Derivatives(loss, problem.dim)


def jax_problem_of(model):
    """The model's problem when it is a JAX problem (``from_jax``), else None."""
    from ..problems.jax_problem import JaxProblem

    problem = model.problem
    return problem if isinstance(problem, JaxProblem) else None


# --- counters and run state ----------------------------------------------------------------

def require_jax_problem(model):
    """The model's JAX problem, or MissingFeatureError saying that the compiled map needs one."""
    from ..errors import MissingFeatureError

    problem = jax_problem_of(model)
    if problem is None:
        raise MissingFeatureError(
            f"the compiled map of {type(model).__name__} runs on problems made by effdyn.problems.from_jax; "
            f"{type(model.problem).__name__} runs on the NumPy map (engine=\"numpy\")."
        )
    return problem


def fresh_run(**parts) -> dict:
    """A JAX run state: the model's ``parts`` plus zero counters and status 0."""
    _, jnp = import_jax()
    return {**parts, "counts": {name: jnp.zeros((), jnp.int64) for name in COUNTERS},
            "status": jnp.zeros((), jnp.int64)}


def no_evaluation(k, y, jrun, params, data):
    """``evaluate`` of a model whose step needs no shared spectral evaluation."""
    return {}, jrun


def max_abs(y):
    """The default ``magnitude``: the largest entry of the state."""
    _, jnp = import_jax()
    return jnp.max(jnp.abs(y)) if y.size else jnp.zeros(())


def bump(jrun: dict, **increments) -> dict:
    """``jrun`` with its counters increased (values may be traced integers)."""
    _, jnp = import_jax()
    counts = dict(jrun["counts"])
    for name, inc in increments.items():
        counts[name] = counts[name] + jnp.asarray(inc, jnp.int64)
    return {**jrun, "counts": counts}


def to_host(jrun: dict) -> tuple[dict, dict]:
    """(state, counts): the JAX run state as nested dicts of NumPy arrays (the tracker state
    as its fields), and the counters as ints."""
    jax, _ = import_jax()
    host = jax.device_get(jrun)

    def data(x):
        if isinstance(x, dict):
            return {k: data(v) for k, v in x.items()}
        if hasattr(x, "_asdict"):  # a NamedTuple (the tracker state)
            return {k: data(v) for k, v in x._asdict().items()}
        return np.array(x)

    state = {k: data(v) for k, v in host.items() if k not in ("counts", "status")}
    counts = {k: int(v) for k, v in host["counts"].items()}
    return state, counts


def from_host(state: dict, template: dict) -> dict:
    """The JAX run state from :func:`to_host` data, shaped like ``template`` (a fresh
    run state of the same model): NamedTuples are rebuilt, arrays checked for shape."""
    _, jnp = import_jax()

    def build(t, d, path):
        if isinstance(t, dict):
            return {k: build(v, d[k], f"{path}.{k}") for k, v in t.items()}
        if hasattr(t, "_asdict"):
            return type(t)(**{k: build(v, d[k], f"{path}.{k}") for k, v in t._asdict().items()})
        arr = jnp.asarray(d, dtype=t.dtype)
        if arr.shape != t.shape:
            raise ValueError(f"`run.jax_state{path}` has shape {arr.shape}, expected {t.shape}: the run state "
                             "belongs to another model or configuration.")
        return arr

    fresh = {k: v for k, v in template.items() if k not in ("counts", "status")}
    try:
        out = build(fresh, state, "")
    except KeyError as exc:
        raise ValueError(f"`run.jax_state` lacks the entry {exc.args[0]!r}: it belongs to another model or "
                         "configuration.") from None
    return {**out, "counts": template["counts"], "status": template["status"]}


# --- the spectrum ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spectrum:
    """Top ``n`` eigenpairs of H(θ) for a JAX problem, as a pure function.

    ``dense``: a dense ``eigh`` of the Hessian (``problem.pure_hessian``), as the NumPy
    models do up to their ``dense_max``. Otherwise the warm block tracker with ``k`` wanted
    top pairs, every Ritz value at or above the caller's threshold wanted too, ``n``
    non-guard vectors and ``guard`` guards; it returns the ``n`` non-guard Ritz pairs (those
    not wanted are not converged: callers use them only where their Ritz value says that
    they do not matter).
    """

    n: int
    dense: bool
    k: int = 1
    guard: int = 2
    rtol: float = MODEL_TRACKER_RTOL
    criterion: str = "residual"
    rest_rtol: float | None = None
    history: int = 2
    max_iter: int = MODEL_TRACKER_MAX_ITER

    def tracker(self, P: int):
        from .tracker import EigenTrackerJax

        return EigenTrackerJax(k=self.k, block=min(P, self.n + self.guard), guard=self.guard, rtol=self.rtol,
                               criterion=self.criterion, rest_rtol=self.rest_rtol, history=self.history,
                               dense_max=0, max_iter=self.max_iter)

    def init(self, P: int, seed: int = 0):
        """The spectral part of a fresh JAX run state (an empty dict for the dense path)."""
        if self.dense:
            return {}
        return {"tracker": self.tracker(P).init(P, seed)}

    def solve(self, jrun: dict, problem, theta, data, *, threshold=None, scale=None):
        """(vals (n,), vecs (P, n), jrun): eigenpairs at θ, descending, counted in ``jrun``."""
        jax, jnp = import_jax()
        P = problem.dim
        if self.dense:
            H = problem.pure_hessian(theta, data)
            w, V = jnp.linalg.eigh(0.5 * (H + H.T))
            vals, vecs = w[::-1][: self.n], V[:, ::-1][:, : self.n]
            return vals, vecs, bump(jrun, hessians=1, eigensolves=1)
        tracker = self.tracker(P)
        state, res = tracker.update(jrun["tracker"], lambda v: problem.pure_hvp(theta, v, data),
                                    threshold=threshold, scale=scale)
        jrun = bump({**jrun, "tracker": state}, hvps=res.n_hvp, eigensolves=1)
        return res.block_vals[: self.n], res.block_vecs[:, : self.n], jrun

    def top_value(self, problem, theta, data, scale=None):
        """λ₁(θ) solved cold (no warm start): dense, or the tracker from a fresh state.
        Returns (value, HVPs or Hessians used)."""
        _, jnp = import_jax()
        P = problem.dim
        if self.dense:
            H = problem.pure_hessian(theta, data)
            return jnp.linalg.eigvalsh(0.5 * (H + H.T))[-1], jnp.ones((), jnp.int64)
        from .tracker import EigenTrackerJax

        tracker = EigenTrackerJax(k=1, block=min(P, 1 + self.guard), guard=self.guard, rtol=self.rtol,
                                  criterion=self.criterion, dense_max=0)
        _, res = tracker.update(tracker.init(P), lambda v: problem.pure_hvp(theta, v, data), scale=scale)
        return res.vals[0], res.n_hvp


# --- the oracle of the free-energy flow's equations ----------------------------------------------

class PureOracle:
    """Derivatives of a JAX problem through its pure functions (data as an argument) and
    eigenpairs computed beforehand (the evaluation of the step), for the equations of
    :mod:`effdyn.models.free_energy.dynamics`."""

    def __init__(self, problem, data, eig):
        self.jax, self.jnp = import_jax()
        self.problem, self.data, self.eig = problem, data, eig

    def eigenpairs(self, theta):
        return self.eig

    def grad_third(self, theta, U, a, b):
        # a∇E + b∇_θ Σ_r u_rᵀHu_r, the same two terms as the NumPy problems' default
        p, jnp = self.problem, self.jnp
        return a * p.pure_grad(theta, self.data) + b * p.pure_third(theta, U, jnp.ones(U.shape[1]), self.data)

    def two_point(self, theta, V):
        g = self.problem.pure_grad
        return g(theta + V, self.data), g(theta - V, self.data)

    def hvp(self, theta, v):
        return self.problem.pure_hvp(theta, v, self.data)

    def cond(self, pred, if_true, if_false):
        return self.jax.lax.cond(pred, if_true, if_false)
