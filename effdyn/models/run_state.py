"""Run state: what a model carries through one solve besides its state vector.

A model is a value (its parameters); the state vector ``y`` is data. What evolves with a
solve but is not part of ``y`` lives here, in an explicit object that the model creates at
the start (:meth:`AbstractModel.start`) and the solvers thread through every ``drift`` /
``map_step`` / ``record`` call, return with the :class:`~effdyn.solution.Solution` and write
into checkpoints:

* warm starts — the eigen-tracker's previous eigenvectors, the last SDCP solution, the
  sign of the previous top eigenvector;
* quantities fixed at the start — the reference point of the reduced self-stabilisation
  model, the codimension of the minimiser manifold;
* a one-entry memo of the last spectral evaluation, so that the step-exact map and the
  record of a saved state do not solve the same eigenproblem twice;
* the work counters (gradients, Hessian-vector products, third-derivative contractions,
  dense Hessians, eigen-solves), counted by :class:`CountingProblem`, the view of the
  problem through which every model evaluates its loss.

Serialisation is data only: :meth:`RunState.to_dict` returns nested dicts of NumPy arrays,
numbers, strings and None (an eigen-tracker contributes its own ``state_dict()``), and
:meth:`RunState.from_dict` rebuilds the object for a given model. Nothing here is pickled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..problems.base import Problem

__all__ = ["Counters", "CountingProblem", "RunState"]


@dataclass
class Counters:
    """Work done by a solve, in oracle calls of the problem.

    ``thirds`` counts third-derivative contractions ∇_θ(uᵀH(θ)u) one direction u at a time
    (a call with r columns counts r); ``hvps`` includes those used by eigen-solves;
    ``eigensolves`` counts top-eigenpair computations (dense or iterative).
    """

    losses: int = 0
    gradients: int = 0
    hvps: int = 0
    thirds: int = 0
    hessians: int = 0
    eigensolves: int = 0

    def add(self, other: "Counters") -> "Counters":
        return Counters(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Counters":
        return cls(**{f.name: int(d.get(f.name, 0)) for f in dataclasses.fields(cls)})


class CountingProblem(Problem):
    """A problem seen through the counters of one run: every hot-path call is counted and
    passed on unchanged (same arrays, same arithmetic), so counting never alters a result.

    Attributes the wrapper does not define (``run_kernel``, ``width``, ``particle_dim`` ...)
    are those of the wrapped problem.
    """

    def __init__(self, problem: Problem, counters: Counters):
        self.inner = problem
        self.counters = counters
        self.name = problem.name
        self.loss_min = problem.loss_min

    def __getattr__(self, name):
        # Only called for attributes not found normally: problem-specific extras.
        if name in ("inner", "counters"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def has_third(self) -> bool:
        return self.inner.has_third

    @property
    def numba_kernels(self):
        return self.inner.numba_kernels

    def jax_loss(self):
        return self.inner.jax_loss()

    def config(self) -> dict:
        return self.inner.config()

    def _loss(self, theta):
        self.counters.losses += 1
        return self.inner._loss(theta)

    def _grad(self, theta):
        self.counters.gradients += 1
        return self.inner._grad(theta)

    def _hvp(self, theta, v):
        self.counters.hvps += 1
        return self.inner._hvp(theta, v)

    def _hessian(self, theta):
        self.counters.hessians += 1
        return self.inner._hessian(theta)

    def _third(self, theta, U, s):
        self.counters.thirds += int(np.shape(U)[1])
        return self.inner._third(theta, U, s)

    def _grad_third(self, theta, U, s, a, b):
        if a != 0:
            self.counters.gradients += 1
        if b != 0:
            self.counters.thirds += int(np.shape(U)[1])
        return self.inner._grad_third(theta, U, s, a, b)

    def __repr__(self) -> str:
        return f"CountingProblem({self.inner!r})"


def _is_data(value) -> bool:
    """Plain data that serialises without code: numbers, strings, arrays, containers."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (list, tuple)):
        return all(_is_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_data(v) for k, v in value.items())
    return False


@dataclass(eq=False)
class RunState:
    """Base run state: the work counters, a memo and an optional eigen-tracker.

    Subclasses (one per model that needs more) add dataclass fields. Every field must be
    data (see :func:`_is_data`), a :class:`Counters`, or an object with ``state_dict()`` /
    ``load_state_dict(d)`` (the eigen-tracker); :meth:`to_dict` checks this, so a model
    cannot put something into its run state that a checkpoint would lose.

    ``problem`` is the model's problem wrapped in :class:`CountingProblem`; models call
    their loss and derivatives through it (never through ``model.problem``) during a solve.
    It is rebuilt from the model, not saved.
    """

    counters: Counters = field(default_factory=Counters)
    #: last spectral evaluation: {"theta": θ, ...} (see :meth:`memo_get`)
    memo: dict = field(default_factory=dict)
    tracker: object = None
    #: the JAX engine's run state (its eigen-tracker, SDCP warm start, ...) as nested dicts
    #: of arrays, written by a compiled solve (effdyn.engine_jax.map); None otherwise
    jax_state: dict | None = None

    def bind(self, model) -> "RunState":
        """Attach the counting view of ``model.problem`` (done by ``model.new_run``, before
        any stateful field such as the tracker is created on top of it)."""
        self.problem = CountingProblem(model.problem, self.counters)
        return self

    # --- the memo: one entry, keyed by the exact point ---------------------------------
    def memo_get(self, kind: str, theta: np.ndarray):
        """The value memoised for ``kind`` at exactly ``theta``, or None."""
        entry = self.memo.get(kind)
        if entry is not None and entry["theta"].shape == theta.shape and np.array_equal(entry["theta"], theta):
            return entry["value"]
        return None

    def memo_put(self, kind: str, theta: np.ndarray, value) -> None:
        self.memo[kind] = {"theta": np.array(theta, dtype=np.float64), "value": value}

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """The run state as nested data (arrays, numbers, strings, None), copies only."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Counters):
                out[f.name] = {"counters": value.to_dict()}
            elif hasattr(value, "state_dict"):
                out[f.name] = {"state": value.state_dict()}
            elif _is_data(value):
                out[f.name] = {"value": _copy(value)}
            else:
                raise TypeError(
                    f"{type(self).__name__}.{f.name} holds a {type(value).__name__}, which a checkpoint cannot "
                    "store; a run state holds arrays, numbers, strings, None, containers of them, or objects "
                    "with state_dict()/load_state_dict()."
                )
        return out

    @classmethod
    def from_dict(cls, model, d: dict) -> "RunState":
        """Rebuild the run state of ``model`` from :meth:`to_dict` output."""
        run = model.new_run()
        if not isinstance(run, cls):
            raise TypeError(f"{type(model).__name__} uses {type(run).__name__}, not {cls.__name__}.")
        names = {f.name for f in dataclasses.fields(run)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"run state of {type(model).__name__} has no fields {unknown}.")
        for name, entry in d.items():
            if "counters" in entry:
                # in place: the counting problem (and the tracker through it) hold this object
                vars(getattr(run, name)).update(vars(Counters.from_dict(entry["counters"])))
            elif "state" in entry:
                current = getattr(run, name)
                if current is None or not hasattr(current, "load_state_dict"):
                    raise ValueError(f"{type(model).__name__}.new_run() creates no stateful {name!r} to load into.")
                current.load_state_dict(entry["state"])
            else:
                setattr(run, name, _copy(entry["value"]))
        return run


def _copy(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value
