"""The interface every effective model implements.

A model is a vector field on a flat state ``y`` (θ first, then whatever the model carries:
a covariance factor, a direction, a magnitude ...), with time in GD steps ``k``. The
solvers in ``effdyn.solvers`` only use this interface:

1. ``initial_state(theta0, **options)`` validates its input and returns ``y0`` (float64).
2. ``drift(k, y)`` returns dy/dk (NumPy, float64) for the scipy backend.
3. ``map_step(k, y)`` returns the state one GD step later for the step-exact map
   (default: an explicit Euler step of length 1).
4. ``jax_drift()`` returns a pure JAX function ``f(k, y, args) -> dy/dk`` for diffrax, or
   raises :class:`~effdyn.errors.MissingFeatureError` naming the missing piece.
5. ``check_state(y)`` returns ``None`` or a short cause (e.g. ``"sigma not PSD"``) that makes
   the solver stop with :class:`~effdyn.errors.IntegrationError`.
6. ``observables(k, Y)`` maps saved states ``Y`` (n, state_size) to named arrays. Every
   model returns at least ``theta`` (n, P), ``loss`` = E(θ), ``time_avg_loss`` (the model's
   prediction of GD's two-step averaged loss), ``sharpness`` = λ_max(H(θ)) and
   ``amplitude`` (predicted oscillation amplitude along the top eigenvector; 0 when the
   model has none). These are what :func:`effdyn.compare` checks against GD.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .._validation import as_vector, positive_float
from ..errors import MissingFeatureError
from ..problems.base import Problem


class AbstractModel(ABC):
    """Base class of the effective models (see the module docstring for the contract)."""

    #: Short identifier used in reports.
    name: str = "model"
    #: Solver families the model supports ("scipy", "diffrax", "map").
    supports: tuple[str, ...] = ("scipy", "diffrax", "map")

    def __init__(self, problem: Problem, eta: float):
        if not isinstance(problem, Problem):
            raise TypeError(
                f"`problem` must be an effdyn Problem (e.g. effdyn.problems.MinimalValley or "
                f"effdyn.problems.from_jax(...)); got {type(problem).__name__}."
            )
        self.problem = problem
        self.eta = positive_float(eta, "eta")

    # --- state ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of parameters P of the problem."""
        return self.problem.dim

    @property
    @abstractmethod
    def state_size(self) -> int:
        """Length of the flat state vector."""

    @abstractmethod
    def initial_state(self, theta0, **options) -> np.ndarray:
        """Validated flat initial state from ``theta0`` and model-specific options."""

    def theta_of(self, y: np.ndarray) -> np.ndarray:
        """The average trajectory θ inside a state (the first P entries by convention)."""
        return y[..., : self.dim]

    def _theta0(self, theta0) -> np.ndarray:
        return as_vector(theta0, "theta0", self.dim)

    # --- dynamics ---------------------------------------------------------------------
    @abstractmethod
    def drift(self, k: float, y: np.ndarray) -> np.ndarray:
        """dy/dk at time ``k`` (in GD steps)."""

    def map_step(self, k: int, y: np.ndarray) -> np.ndarray:
        """State one GD step later (step-exact map); default: explicit Euler with dk = 1."""
        return y + self.drift(k, y)

    def jax_drift(self):
        raise MissingFeatureError(
            f"{type(self).__name__} has no JAX drift, so the diffrax backend cannot run it; "
            "use a scipy solver (e.g. solver=\"scipy:LSODA\") or solver=\"map\"."
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

    def check_state(self, y: np.ndarray) -> str | None:
        """Cause string when ``y`` is not a valid state, else None."""
        return None if np.all(np.isfinite(y)) else "non-finite"

    # --- output -----------------------------------------------------------------------
    @abstractmethod
    def observables(self, k: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        """Named arrays along saved states (see the module docstring for required keys)."""

    def config(self) -> dict:
        """Parameters that reproduce this model (saved as metadata)."""
        return {"model": self.name, "eta": self.eta, "problem": self.problem.config()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(problem={self.problem!r}, eta={self.eta})"
