"""An edge-flow-style rank-one model, *reconstructed* from the published description of
Edge Flow (Marion 2026; theory §3).

The paper describes three coupled ODEs — a centre following a gradient flow on a
symmetrised loss, an oscillation direction driven by Rayleigh-quotient dynamics, and an
oscillation magnitude that grows or decays as the sharpness sits above or below 2/η —
costing two gradients and one Hessian-vector product per evaluation. Its exact equations
were not available to us; this module implements the reconstruction of theory §3, which
matches that description. Do not cite its numbers as Edge Flow's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import as_vector, positive_float
from ..problems.base import Problem
from ._shared import cached_jax_drift, jax_loss_of, losses, top_eig, tracked_eigenpairs, two_point_gradients
from .base import AbstractModel

__all__ = ["EdgeFlow"]

#: |ηλ − 1| is clipped from below in the step-exact map (log of the GD multiplier).
_MULTIPLIER_FLOOR = 1e-8


@dataclass(frozen=True)
class EdgeFlow(AbstractModel):
    """Rank-one oscillation model: centre θ, unit direction u, magnitude ρ (reconstruction).

    Equations (time in GD steps)::

        dθ/dk = −(η/2) [∇E(θ + ρu) + ∇E(θ − ρu)]
        du/dk = η (I − uuᵀ) H(θ) u
        dρ/dk = (η uᵀH(θ)u − 2) ρ

    The last line linearises GD's per-step growth log|1 − ηλ| of an oscillation along u at
    ηλ = 2. The state stores ``log ρ`` instead of ρ, so that the magnitude can shrink by
    hundreds of e-folds while the sharpness is below 2/η without underflow or sign
    changes; ``d log ρ/dk = η uᵀHu − 2``.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        The loss (needs gradients and Hessian-vector products only).
    eta : float
        GD step size (> 0).
    rho_floor : "roundoff", float or None, default "roundoff"
        Below 2/η the magnitude stops decaying at this value: there the log-magnitude
        drift is multiplied by ``1 − rho_floor/ρ`` (a smooth floor). GD's own oscillation
        never decays below the round-off of its iterates, which keeps re-seeding it;
        ``"roundoff"`` uses that size, ε_mach·max(1, ‖θ‖), evaluated along the run. A float
        sets a fixed floor; None integrates the equations as stated (pure model). Without a
        floor ρ falls by hundreds of e-folds during progressive sharpening (e.g. e^-680 on
        the minimal valley), so the sharpness overshoots 2/η far more than GD's before ρ
        recovers, and the recovery is sensitive to rounding.

    Notes
    -----
    State ``y = (θ, u, log ρ)`` of length 2P + 1. ``initial_state(theta0, u0=None,
    rho0=None)``: u0 defaults to the top Hessian eigenvector at θ0, ρ0 to GD's first
    half-step along it, ``(η/2)|u0·∇E(θ0)|`` (1e-12 if that vanishes).

    The step-exact map steps θ and u with Euler (dk = 1, u renormalised) and multiplies ρ
    by |1 − η uᵀHu| (clipped below at 1e-8), which is the Euler step of the ρ equation up
    to the sign of ρ, i.e. GD's own linear multiplier.

    Observables: ``theta``, ``loss`` = E(θ), ``time_avg_loss`` = ½[E(θ+ρu) + E(θ−ρu)],
    ``sharpness`` = λ_max(H(θ)), ``amplitude`` = ρ|u·v₁|, ``amplitude_subspace`` = ρ, and
    ``rho``, ``u``, ``rayleigh`` = uᵀH(θ)u.
    """

    problem: Problem
    eta: float
    rho_floor: object = "roundoff"

    name = "edge_flow"
    supports = ("scipy", "diffrax", "map")
    requires = ("hvp",)

    def _check(self):
        rho_floor = self.rho_floor
        if rho_floor is None or (isinstance(rho_floor, str) and rho_floor == "roundoff"):
            pass
        elif isinstance(rho_floor, str):
            raise ValueError(f"`rho_floor` must be 'roundoff', a positive float or None; got {rho_floor!r}.")
        else:
            self._set("rho_floor", positive_float(rho_floor, "rho_floor"))

    def _log_floor(self, theta) -> float:
        """log of the magnitude floor at θ (−inf without a floor)."""
        if self.rho_floor is None:
            return -np.inf
        if self.rho_floor == "roundoff":
            return float(np.log(np.finfo(float).eps * max(1.0, float(np.linalg.norm(theta)))))
        return float(np.log(self.rho_floor))

    @property
    def state_size(self) -> int:
        return 2 * self.dim + 1

    def _initial(self, run, theta0, u0=None, rho0=None) -> np.ndarray:
        theta0 = self._theta0(theta0)
        if u0 is None:
            u0 = top_eig(run.problem, theta0)[1][:, 0]
        else:
            u0 = as_vector(u0, "u0", self.dim)
            norm = np.linalg.norm(u0)
            if norm == 0:
                raise ValueError("`u0` must be a non-zero direction (it is normalised); pass None for the top eigenvector.")
            u0 = u0 / norm
        if rho0 is None:
            rho0 = 0.5 * self.eta * abs(float(u0 @ run.problem._grad(theta0)))
            if rho0 == 0.0:
                rho0 = 1e-12
        else:
            rho0 = positive_float(rho0, "rho0")
        return np.concatenate([theta0, u0, [np.log(rho0)]])

    def _split(self, y):
        P = self.dim
        theta = np.ascontiguousarray(y[:P])
        u = y[P: 2 * P]
        u = np.ascontiguousarray(u / np.linalg.norm(u))
        return theta, u, float(y[-1])

    def magnitude(self, y):
        """max of |θ| and ρ = e^{log ρ} (the stored log ρ grows only linearly while the
        oscillation it stands for explodes)."""
        y = np.asarray(y, dtype=np.float64)
        with np.errstate(over="ignore"):
            return float(max(np.max(np.abs(y[: self.dim])), np.exp(y[-1])))

    def _log_rho_rate(self, rayleigh, log_rho, theta):
        rate = self.eta * rayleigh - 2.0
        if self.rho_floor is not None and rate < 0:
            rate *= max(0.0, 1.0 - np.exp(self._log_floor(theta) - log_rho))
        return rate

    def _evaluate(self, y, run):
        """What both the drift and the map need: θ, u, log ρ, ∇E(θ ± ρu), Hu and uᵀHu."""
        problem = self._run(run).problem
        theta, u, log_rho = self._split(y)
        g_plus, g_minus = two_point_gradients(problem, theta, np.exp(log_rho) * u)
        Hu = problem._hvp(theta, u)
        return theta, u, log_rho, g_plus, g_minus, Hu, float(u @ Hu)

    def drift(self, k, y, run=None):
        theta, u, log_rho, g_plus, g_minus, Hu, rayleigh = self._evaluate(y, run)
        out = np.empty(self.state_size)
        out[: self.dim] = -0.5 * self.eta * (g_plus + g_minus)
        out[self.dim: 2 * self.dim] = self.eta * (Hu - rayleigh * u)
        out[-1] = self._log_rho_rate(rayleigh, log_rho, theta)
        return out

    def map_step(self, k, y, run=None):
        theta, u, log_rho, g_plus, g_minus, Hu, rayleigh = self._evaluate(y, run)
        u_new = u + self.eta * (Hu - rayleigh * u)
        factor = max(abs(1.0 - self.eta * rayleigh), _MULTIPLIER_FLOOR)
        log_new = log_rho + np.log(factor)
        if self.rho_floor is not None and factor < 1.0:
            log_new = max(log_new, min(log_rho, self._log_floor(theta)))
        return np.concatenate([theta - 0.5 * self.eta * (g_plus + g_minus), u_new / np.linalg.norm(u_new), [log_new]])

    def jax_drift(self):
        loss = jax_loss_of(self.problem, type(self).__name__)
        P = self.dim

        def build():
            from .._jax import import_jax

            jax, jnp = import_jax()
            grad = jax.grad(loss)

            def f(k, y, args):
                eta, floor, roundoff = args["eta"], args["log_rho_floor"], args["roundoff"]
                theta, u, log_rho = y[:P], y[P: 2 * P], y[2 * P]
                floor = jnp.where(roundoff > 0,
                                 jnp.log(jnp.finfo(jnp.float64).eps * jnp.maximum(1.0, jnp.linalg.norm(theta))),
                                 floor)
                u = u / jnp.linalg.norm(u)
                rho = jnp.exp(log_rho)
                g_sum = grad(theta + rho * u) + grad(theta - rho * u)
                Hu = jax.jvp(grad, (theta,), (u,))[1]
                rayleigh = u @ Hu
                rate = eta * rayleigh - 2.0
                damp = jnp.maximum(0.0, 1.0 - jnp.exp(floor - log_rho))
                rate = jnp.where(rate < 0, rate * damp, rate)
                return jnp.concatenate([-0.5 * eta * g_sum, eta * (Hu - rayleigh * u), rate[None]])

            return f

        return cached_jax_drift(self.problem, f"edge_flow:{P}", build)

    def jax_args(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        fixed = isinstance(self.rho_floor, float)
        floor = np.log(self.rho_floor) if fixed else -np.inf
        return {"eta": jnp.asarray(self.eta, dtype=jnp.float64),
                "log_rho_floor": jnp.asarray(floor, dtype=jnp.float64),
                "roundoff": jnp.asarray(1.0 if self.rho_floor == "roundoff" else 0.0, dtype=jnp.float64)}

    # --- JAX engine: the compiled step-exact map (effdyn.engine_jax) ----------------------
    def jax_map(self):
        """The step-exact map of :meth:`map_step` as pure JAX functions (two gradients and one
        HVP per step); the records' top eigenvector from a dense ``eigh`` (P <= 64) or the
        JAX eigen-tracker."""
        from .._jax import import_jax
        from ..engine_jax.compiled import CompiledMap, Spectrum, bump, fresh_run, no_evaluation, require_jax_problem
        from ..spectrum import DENSE_MAX

        _, jnp = import_jax()
        problem = require_jax_problem(self)
        P = self.dim
        spectrum = Spectrum(n=1, dense=P <= DENSE_MAX)

        def parts(y):
            u = y[P: 2 * P]
            return y[:P], u / jnp.linalg.norm(u), y[-1]

        def record(k, y, ev, jrun, params, data):
            theta, u, log_rho = parts(y)
            vals, vecs, jrun = spectrum.solve(jrun, problem, theta, data, scale=2.0 / params["eta"])
            return {"sharpness": vals[0], "amplitude": jnp.exp(log_rho) * jnp.abs(u @ vecs[:, 0])}, jrun

        def advance(k, y, ev, jrun, params, data):
            eta = params["eta"]
            theta, u, log_rho = parts(y)
            d = jnp.exp(log_rho) * u
            g_plus, g_minus = problem.pure_grad(theta + d, data), problem.pure_grad(theta - d, data)
            Hu = problem.pure_hvp(theta, u, data)
            rayleigh = u @ Hu
            u_new = u + eta * (Hu - rayleigh * u)
            factor = jnp.maximum(jnp.abs(1.0 - eta * rayleigh), _MULTIPLIER_FLOOR)
            log_new = log_rho + jnp.log(factor)
            # the floor (a fixed one, or the round-off of θ; −inf without one) as in map_step
            log_floor = jnp.where(params["roundoff"] > 0,
                                  jnp.log(jnp.finfo(jnp.float64).eps * jnp.maximum(1.0, jnp.linalg.norm(theta))),
                                  params["log_rho_floor"])
            log_new = jnp.where(factor < 1.0, jnp.maximum(log_new, jnp.minimum(log_rho, log_floor)), log_new)
            y_new = jnp.concatenate([theta - 0.5 * eta * (g_plus + g_minus), u_new / jnp.linalg.norm(u_new),
                                     log_new[None]])
            return y_new, bump(jrun, gradients=2, hvps=1)

        def magnitude(y):
            return jnp.maximum(jnp.max(jnp.abs(y[:P])), jnp.exp(y[-1]))

        return CompiledMap(key=("EdgeFlow", spectrum), params=self.jax_args(),
                           init_run=lambda y0, seed: fresh_run(**spectrum.init(P, seed)),
                           evaluate=no_evaluation, record=record, advance=advance, magnitude=magnitude, causes={})

    def record(self, k, y, run):
        theta, u, log_rho = self._split(y)
        vals, vecs = tracked_eigenpairs(run, theta)
        return {"sharpness": float(vals[0]), "amplitude": float(np.exp(log_rho) * abs(u @ vecs[:, 0]))}

    def observables(self, k, Y, records=None, run=None):
        P = self.dim
        Y = np.asarray(Y)
        records = self.records_of(k, Y, run) if records is None else records
        Theta = Y[:, :P]
        U = Y[:, P: 2 * P] / np.linalg.norm(Y[:, P: 2 * P], axis=1, keepdims=True)
        rho = np.exp(Y[:, -1])
        E = losses(self.problem, Theta)
        avg = 0.5 * (losses(self.problem, Theta + rho[:, None] * U) + losses(self.problem, Theta - rho[:, None] * U))
        rayleigh = np.array([u @ self.problem._hvp(np.ascontiguousarray(th), np.ascontiguousarray(u))
                             for th, u in zip(Theta, U)])
        return {
            "theta": Theta,
            "loss": E,
            "time_avg_loss": avg,
            "sharpness": records["sharpness"],
            "amplitude": records["amplitude"],
            "amplitude_subspace": rho.copy(),
            "rho": rho,
            "u": U,
            "rayleigh": rayleigh,
        }

    def _from_handover(self, run, state):
        """From GD's state at step k0: θ = θ̄; u = the top eigenvector v₁ of H(θ̄), signed
        like δ's component along it, and ρ = |v₁ᵀδ|, GD's half-step along v₁ — the same
        projection as the model's default seed at θ0. δ itself also holds the half-step of
        the slow drift (−η∇E/2 across the valley), which is not part of the oscillation;
        only where v₁ᵀδ vanishes is the unprojected δ used (u = δ/‖δ‖, ρ = ‖δ‖)."""
        theta = self._theta0(state.theta_bar)
        v = np.asarray(state.eigvecs[:, 0], dtype=np.float64)
        c = float(v @ state.delta)
        if c != 0.0:
            u, rho = v * np.sign(c), abs(c)
        else:
            rho = float(np.linalg.norm(state.delta))
            if rho == 0.0:
                raise ValueError("`start`: GD's half-step δ is zero at the handover step (GD at a fixed point), so "
                                 "the edge flow has no oscillation magnitude ρ > 0 to start from; hand over at "
                                 "another step.")
            u = np.asarray(state.delta, dtype=np.float64) / rho
        return np.concatenate([theta, u, [np.log(rho)]])
