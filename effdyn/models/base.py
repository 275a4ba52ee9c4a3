"""The contract every effective model meets, written whole.

A model is a **value**: a frozen dataclass whose fields are its parameters (the problem,
η and the model's options). ``config()``, ``repr``, equality and the identity that
checkpoints check are derived from those fields, so no option that changes the numbers can
be left out of them. Whatever evolves during a solve besides the state vector lives in a
**run state** (:mod:`effdyn.models.run_state`) that the model creates and the solvers
thread through every call.

What the solvers, :class:`~effdyn.solution.Solution` and the validation suite use — the
whole interface a new model implements:

1. **Parameters.** Declare them as dataclass fields (``@dataclass(frozen=True)``) and check
   them in ``_check()`` (called after the problem and η are checked, before the
   ``requires`` features), normalising values with ``self._set(name, value)``. Bad input raises ``TypeError``/``ValueError`` naming
   the argument. Class attributes: ``name`` (report label), ``supports`` (solver families
   among "scipy", "diffrax", "map"; a property when it depends on the parameters),
   ``requires`` (problem features the drift calls besides loss and gradient: "hvp",
   "third", "loss_min"; checked at construction).
2. **State layout.** ``state_size`` (length of the flat float64 state ``y``; θ first by
   convention).
3. **Start.** ``new_run()`` returns a fresh run state (override ``make_run(run)`` to add
   fields or an eigen-tracker). ``start(theta0, **initial)`` returns ``(y0, run)``; the
   model implements ``_initial(run, theta0, **options)`` (its keyword options are the
   model's *initial data*, e.g. ``sigma0=`` — ``initial_options()`` lists them) and may
   store quantities fixed at the start in ``run``. ``initial_state(theta0, **initial)``
   returns ``y0`` alone. ``start_from(state)`` starts from GD's state handed over at a
   step k0 (:class:`effdyn.handover.HandoverState`); the model maps it to its own state in
   ``_from_handover(run, state)`` (default: ``_initial`` at GD's midpoint θ̄; a model with
   an oscillation takes it from GD's half-step δ or Σ factor).
4. **Dynamics.** ``drift(k, y, run)`` returns dy/dk (time in GD steps, NumPy float64) for
   the scipy backend; ``map_step(k, y, run)`` returns the state one GD step later for the
   step-exact map (default: explicit Euler with dk = 1). Both evaluate the loss only
   through ``run.problem`` (the counting view of the problem) and may update ``run``'s warm
   starts; ``run=None`` uses a throwaway run state. An unrecoverable condition raises
   :class:`~effdyn.errors.IntegrationError` with a cause from
   :class:`~effdyn.outcomes.Cause`; the solvers attach step, time and the partial solution.
5. **JAX.** ``jax_drift()`` returns a pure function ``f(k, y, args)`` for diffrax and
   ``jax_args()`` its ``args`` (parameters as arrays, so sweeps do not recompile); a model
   without one raises :class:`~effdyn.errors.MissingFeatureError` (the default).
   ``jax_map()`` returns the step-exact map as pure JAX functions of (state, JAX run
   state) (:class:`effdyn.engine_jax.compiled.CompiledMap`), which ``solve(solver="map")``
   runs in compiled chunks for problems from ``from_jax``; optional (default: raises
   MissingFeatureError, and the NumPy map runs).
6. **Validity.** ``check_state(y)`` returns None or a cause (``Cause`` value, e.g.
   ``"sigma not PSD"``) that stops the solve; ``magnitude(y)`` is the state's largest entry
   in physical units, which the blow-up check bounds (default max|y|; a state kept in log
   coordinates measures what it represents); ``atol_weights(y0)`` optionally scales the
   adaptive solvers' ``atol`` per component.
7. **Records.** ``record(k, y, run)`` is called by the solvers at every saved state and
   returns a dict of arrays (scalars or small fixed-shape arrays): every saved quantity that
   needs a spectral computation (sharpness, amplitude along the top eigenvector, the
   central flow's Σ factor ...). It may use and update ``run`` (warm starts, the memo).
8. **Observables.** ``observables(k, Y, records, run)`` maps saved states ``Y`` (n,
   state_size) and their stacked records to named arrays. It reads, never computes, the
   spectral quantities (no eigen-solves, no dense Hessians) and changes nothing. Required
   keys, checked by :meth:`check_observables`: ``theta`` (n, P), ``loss`` = E(θ),
   ``time_avg_loss`` (the model's prediction of GD's two-step averaged loss),
   ``sharpness`` = λ_max(H(θ)) (n,) and ``amplitude`` (predicted oscillation amplitude
   along the top eigenvector; 0 without an oscillation) (n,). Models with an oscillation
   also give ``amplitude_subspace`` (the whole oscillation, √tr Σ or ‖δ‖) (n,).
9. **Identity.** ``config()`` (derived from the fields), ``identity()`` (canonical JSON
   of the configuration, what ``resume`` compares).

The conformance suite (tests/test_conformance.py) checks every item above for every model
in its list; a new model is covered by adding one entry there.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from .._checks import as_vector, positive_float
from ..errors import MissingFeatureError
from ..problems.base import Problem
from .run_state import RunState

__all__ = ["AbstractModel", "REQUIRED_OBSERVABLES"]

#: Observables every model provides, with their shape after the saved-state axis
#: ("P" = the problem dimension).
REQUIRED_OBSERVABLES = {"theta": ("P",), "loss": (), "time_avg_loss": (), "sharpness": (), "amplitude": ()}


class AbstractModel(ABC):
    """Base class of the effective models (see the module docstring for the contract)."""

    #: Short identifier used in reports.
    name: ClassVar[str] = "model"
    #: Solver families the model supports ("scipy", "diffrax", "map").
    supports: ClassVar[tuple[str, ...]] = ("scipy", "diffrax", "map")
    #: Problem features the model's drift needs besides loss and gradient.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The class of the model's run state.
    run_state_class: ClassVar[type] = RunState
    #: Whether the model carries an oscillation (gradient flow does not: above 2/η it is
    #: expected to have none, so the stalled-oscillation warning does not apply to it).
    has_oscillation: ClassVar[bool] = True

    # --- parameters ---------------------------------------------------------------------
    def __post_init__(self):
        if not isinstance(self.problem, Problem):
            raise TypeError(
                f"`problem` must be an effdyn Problem (e.g. effdyn.problems.MinimalValley or "
                f"effdyn.problems.from_jax(...)); got {type(self.problem).__name__}."
            )
        if any(f.name == "eta" for f in dataclasses.fields(self)):
            self._set("eta", positive_float(self.eta, "eta"))
        self._check()
        self._require(self.requires)

    def _check(self) -> None:
        """Check and normalise the model's own parameters (``self._set``); models override."""

    def _set(self, name: str, value) -> None:
        """Normalise a field during ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    def _require(self, features) -> None:
        from ._shared import require_loss_min, require_third

        model = type(self).__name__
        for feature in features:
            if feature == "third":
                require_third(self.problem, model)
            elif feature == "loss_min":
                require_loss_min(self.problem, model)

    @property
    def dim(self) -> int:
        """Number of parameters P of the problem."""
        return self.problem.dim

    # --- identity -----------------------------------------------------------------------
    def config(self) -> dict:
        """Every parameter of the model (from its fields), the problem's own configuration
        under ``problem`` and the model's ``name``; saved as metadata and checked on resume."""
        cfg = {"model": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            cfg[f.name] = value.config() if isinstance(value, Problem) else value
        cfg.setdefault("eta", self.eta)
        return cfg

    def identity(self) -> str:
        """Canonical JSON of the class and configuration: equal identities, equal numbers."""
        from .._json import json_default as _json_default

        return json.dumps({"class": type(self).__name__, "config": self.config()}, sort_keys=True,
                          default=_json_default)

    # --- state --------------------------------------------------------------------------
    @property
    @abstractmethod
    def state_size(self) -> int:
        """Length of the flat state vector."""

    def theta_of(self, y: np.ndarray) -> np.ndarray:
        """The average trajectory θ inside a state (the first P entries by convention)."""
        return y[..., : self.dim]

    def _theta0(self, theta0) -> np.ndarray:
        return as_vector(theta0, "theta0", self.dim)

    # --- start --------------------------------------------------------------------------
    def new_run(self) -> RunState:
        """A fresh run state for this model (counters at zero, no warm starts)."""
        run = self.run_state_class().bind(self)
        self.make_run(run)
        return run

    def make_run(self, run: RunState) -> None:
        """Add what the model's run state starts with (default: an eigen-tracker of the
        top eigenpair for the records; models override)."""
        from ..spectrum import EigenTracker

        run.tracker = EigenTracker(run.problem, 1)

    def start(self, theta0, **initial):
        """``(y0, run)``: the validated initial state and the run state that goes with it."""
        _check_initial(self, initial)
        run = self.new_run()
        y0 = np.asarray(self._initial(run, theta0, **initial), dtype=np.float64)
        return y0, run

    def initial_state(self, theta0, **initial) -> np.ndarray:
        """The validated initial state ``y0`` (see :meth:`start`)."""
        return self.start(theta0, **initial)[0]

    def _initial(self, run: RunState, theta0) -> np.ndarray:
        """Initial state from θ0 (default: θ0 itself); keyword options are initial data."""
        return self._theta0(theta0)

    def start_from(self, state):
        """``(y0, run)`` from GD's state handed over (:class:`effdyn.handover.HandoverState`,
        ``traj.state_at(k)``): the state is checked against the model (problem, η), then
        mapped by :meth:`_from_handover`."""
        from ..handover import HandoverState

        if not isinstance(state, HandoverState):
            raise TypeError(f"`start` must be a HandoverState (from `traj.state_at(k)`); got {type(state).__name__}.")
        state.check(self)
        run = self.new_run()
        y0 = np.asarray(self._from_handover(run, state), dtype=np.float64)
        if y0.shape != (self.state_size,):
            raise ValueError(f"{type(self).__name__}._from_handover returned a state of shape {y0.shape}; "
                             f"expected ({self.state_size},).")
        bad = self.check_state(y0)
        if bad is not None:
            raise ValueError(f"the handover state maps to an invalid state of {type(self).__name__}: {bad}.")
        return y0, run

    def _from_handover(self, run: RunState, state) -> np.ndarray:
        """The model's initial state from GD's state ``state`` at step ``state.k0``.

        Default: the model's own initial state at GD's two-step midpoint θ̄ (right for models
        whose state is θ alone). Models that carry an oscillation override it and take it
        from GD's (``state.delta``, ``state.factor(r)``; see :mod:`effdyn.handover` for the
        sign conventions).
        """
        return self._initial(run, state.theta_bar)

    @classmethod
    def initial_options(cls) -> tuple[str, ...]:
        """Names of the model's initial-data options (keyword arguments of ``start``)."""
        params = list(inspect.signature(cls._initial).parameters.values())[3:]
        return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    # --- dynamics -----------------------------------------------------------------------
    def _run(self, run):
        return self.new_run() if run is None else run

    @abstractmethod
    def drift(self, k: float, y: np.ndarray, run: RunState | None = None) -> np.ndarray:
        """dy/dk at time ``k`` (in GD steps)."""

    def map_step(self, k: int, y: np.ndarray, run: RunState | None = None) -> np.ndarray:
        """State one GD step later (step-exact map); default: explicit Euler with dk = 1."""
        return y + self.drift(k, y, run)

    def jax_drift(self):
        raise MissingFeatureError(
            f"{type(self).__name__} has no JAX drift, so the diffrax backend cannot run it; "
            "use a scipy solver (e.g. solver=\"scipy:LSODA\") or solver=\"map\"."
        )

    def jax_args(self):
        """Arguments of the JAX drift (parameters as arrays)."""
        return None

    def jax_map(self):
        """The step-exact map as pure JAX functions of (state, run state), for the JAX engine
        (:class:`effdyn.engine_jax.compiled.CompiledMap`); models that have one override this.
        Raises :class:`~effdyn.errors.MissingFeatureError` (the default) when the model has
        no compiled map or its problem is not a JAX problem."""
        raise MissingFeatureError(
            f"{type(self).__name__} has no compiled JAX map; solve(..., solver=\"map\") runs its NumPy map."
        )

    def atol_weights(self, y0: np.ndarray):
        """Per-component multipliers of the adaptive solvers' ``atol`` (None: all ones).

        A model whose state has parts that live at a very different scale (a fluctuation
        seeded at round-off size, say) weights their absolute tolerance down so that the
        error control stays relative for them.
        """
        return None

    def scaled_atol(self, atol: float, y0: np.ndarray):
        """``atol`` as the adaptive backends use it: a scalar, or ``atol · atol_weights``."""
        w = self.atol_weights(y0)
        return atol if w is None else atol * np.asarray(w, dtype=np.float64)

    def magnitude(self, y: np.ndarray) -> float:
        """Largest entry of the state in physical units (what the blow-up check bounds);
        a model that stores something in log coordinates measures what it represents."""
        return float(np.max(np.abs(y))) if np.size(y) else 0.0

    def check_state(self, y: np.ndarray) -> str | None:
        """Cause string when ``y`` is not a valid state, else None."""
        return None if np.all(np.isfinite(y)) else "non-finite"

    # --- output -------------------------------------------------------------------------
    def record(self, k: float, y: np.ndarray, run: RunState) -> dict:
        """Spectral quantities of one saved state (default: the sharpness λ₁(θ))."""
        from ._shared import tracked_eigenpairs

        vals, _ = tracked_eigenpairs(run, self.theta_of(y))
        return {"sharpness": float(vals[0])}

    def records_of(self, k, Y, run: RunState | None = None) -> dict:
        """Records of saved states computed after the fact (for states that did not come
        from a solve, or from a backend that cannot record during the run)."""
        run = self._run(run)
        rows = [self.record(float(kk), np.asarray(y, dtype=np.float64), run) for kk, y in zip(k, Y)]
        return stack_records(rows)

    @abstractmethod
    def observables(self, k: np.ndarray, Y: np.ndarray, records: dict | None = None,
                    run: RunState | None = None) -> dict[str, np.ndarray]:
        """Named arrays along saved states (see the module docstring for required keys).
        Without ``records`` (states not from a solve) they are computed first."""

    def check_observables(self, k, obs: dict) -> dict:
        """Raise a clear error when a required observable is missing or misshapen."""
        n = len(k)
        missing = [name for name in REQUIRED_OBSERVABLES if name not in obs]
        if missing:
            raise KeyError(
                f"{type(self).__name__}.observables does not return the required observable(s) {missing}; "
                f"every model returns {list(REQUIRED_OBSERVABLES)} (see effdyn.models.base)."
            )
        for name, tail in REQUIRED_OBSERVABLES.items():
            want = (n,) + tuple(self.dim if t == "P" else t for t in tail)
            if np.shape(obs[name]) != want:
                raise ValueError(
                    f"{type(self).__name__}.observables returns `{name}` of shape {np.shape(obs[name])}; "
                    f"expected {want} (one row per saved state)."
                )
        return obs


def stack_records(rows: list[dict]) -> dict:
    """Records of consecutive saved states stacked along a first axis."""
    if not rows:
        return {}
    return {name: np.stack([np.asarray(r[name], dtype=np.float64) for r in rows]) for name in rows[0]}


def _check_initial(model, options: dict) -> None:
    allowed = model.initial_options()
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise TypeError(
            f"`{unknown[0]}` is not an initial-data option of {type(model).__name__} "
            f"(its options: {list(allowed) or 'none'})."
        )
