"""Gradient flow, the baseline that every Edge-of-Stability model is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..problems.base import Problem
from ._shared import cached_jax_drift, jax_loss_of, losses
from .base import AbstractModel

__all__ = ["GradientFlow"]


@dataclass(frozen=True)
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
    ``amplitude`` and ``amplitude_subspace`` (zeros). The diffrax backend uses
    ``problem.jax_loss()``; η is passed in ``jax_args()``, so a sweep over η does not
    recompile.

    Examples
    --------
    >>> import effdyn as ed
    >>> p = ed.problems.Quadratic([[1.0, 0.0], [0.0, 2.0]])
    >>> sol = ed.solve(GradientFlow(p, eta=0.1), [1.0, 1.0], steps=10, solver="scipy:RK45")
    >>> round(float(sol.theta[-1, 0]), 6)    # exp(-0.1 * 10)
    0.367879
    """

    problem: Problem
    eta: float

    name = "gradient_flow"
    supports = ("scipy", "diffrax", "map")
    has_oscillation = False

    @property
    def state_size(self) -> int:
        return self.dim

    def drift(self, k, y, run=None):
        run = self._run(run)
        return -self.eta * run.problem._grad(np.ascontiguousarray(y))

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

    # --- JAX engine: the compiled step-exact map (effdyn.engine_jax) ----------------------
    def jax_map(self):
        """GD itself (θ ← θ − η∇E) as pure JAX functions; the sharpness of the saved states
        from a dense ``eigh`` (P <= 64) or the JAX eigen-tracker."""
        from ..engine_jax.compiled import (CompiledMap, Spectrum, bump, fresh_run, max_abs, no_evaluation,
                                           require_jax_problem)
        from ..spectrum import DENSE_MAX

        problem = require_jax_problem(self)
        P = self.dim
        spectrum = Spectrum(n=1, dense=P <= DENSE_MAX)

        def record(k, y, ev, jrun, params, data):
            vals, _, jrun = spectrum.solve(jrun, problem, y, data, scale=2.0 / params["eta"])
            return {"sharpness": vals[0]}, jrun

        def advance(k, y, ev, jrun, params, data):
            return y - params["eta"] * problem.pure_grad(y, data), bump(jrun, gradients=1)

        return CompiledMap(key=("GradientFlow", spectrum), params=self.jax_args(),
                           init_run=lambda y0, seed: fresh_run(**spectrum.init(P, seed)),
                           evaluate=no_evaluation, record=record, advance=advance, magnitude=max_abs, causes={})

    def observables(self, k, Y, records=None, run=None):
        Theta = np.asarray(Y)[:, : self.dim]
        records = self.records_of(k, Y, run) if records is None else records
        E = losses(self.problem, Theta)
        zeros = np.zeros(len(Theta))
        return {
            "theta": Theta,
            "loss": E,
            "time_avg_loss": E.copy(),
            "sharpness": records["sharpness"],
            "amplitude": zeros,
            "amplitude_subspace": zeros.copy(),
        }

    def _from_handover(self, run, state):
        """From GD's state at step k0: θ = GD's two-step midpoint θ̄ (no oscillation to carry)."""
        return self._theta0(state.theta_bar)
