"""Rod flow (Regis & Chewi 2026), implemented from its public restatement (theory §3).

GD's consecutive iterates θ_k, θ_{k+1} are the two ends of a "rod" with centre w̄ and
half-length vector δ (θ_k = w̄ + δ, θ_{k+1} = w̄ − δ). With L± = E(w̄ ± δ) and
g± = ∇L±, H± = ∇²L±, the restated equations are (time in GD steps)::

    dw̄/dk = −(η/2)(g₊ + g₋) − (η²/8)(H₊ + H₋)(g₊ + g₋)
    dΣ/dk = (η²/4)(g₊g₊ᵀ + g₋g₋ᵀ) − 2Σ,          Σ = δδᵀ.

The original paper was not available to us; everything here follows the restatement and
is checked on the quartic E = (S/2)w² − (Q/4)w⁴, whose rod fixed point is
Σ* = S/Q − 2/(ηQ) when S > 2/η.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import as_vector, choice
from ..problems.base import Problem
from ._shared import cached_jax_drift, jax_loss_of, losses, tracked_eigenpairs
from .base import AbstractModel

__all__ = ["RodFlow"]


@dataclass(frozen=True)
class RodFlow(AbstractModel):
    """Rod flow: centre w̄ and half-step δ of GD's two-step rod (public restatement).

    Parameters
    ----------
    problem : effdyn.problems.Problem
        The loss (needs gradients and Hessian-vector products only).
    eta : float
        GD step size (> 0).
    sigma : {"rank1", "dense"}
        How Σ = δδᵀ is carried.

        * ``"rank1"`` (default): the state holds δ. Write the source of the Σ equation as
          (η²/8)[ddᵀ + ssᵀ] with d = g₊ − g₋ (the part that flips sign with the rod,
          i.e. the oscillation) and s = g₊ + g₋ (the mean gradient, i.e. the GD step
          itself). δ follows the projection of the d-part of the Σ equation onto the
          rank-one matrices at δδᵀ (the tangent space {δaᵀ + aδᵀ})::

              dδ/dk = (η²/8) (d·δ) d / |δ|²  −  (η²/16) (d·δ)² δ / |δ|⁴  −  δ,

          so that d(δδᵀ)/dk equals the projected right-hand side exactly. The s-part is
          dropped: its projection behaves like |s|²/|δ| as δ → 0 (the Σ equation then
          has no rank-one solution). Whenever d ∥ δ — one dimension, or δ along a Hessian
          eigenvector — this is the Σ equation itself, so the quartic fixed point
          Σ* = S/Q − 2/(ηQ) and its stability are exactly those of the restatement.
        * ``"dense"``: the state holds the full symmetric Σ (P² entries, small P only) and
          follows the Σ equation as stated; δ = √λ₁(Σ)·(top eigenvector of Σ), its sign
          being irrelevant because both equations are symmetric under δ → −δ.

    delta_floor : "roundoff", float or None, default "roundoff"
        rank1 form: below 2/η the half-step δ stops shrinking at this length (the decaying
        component of dδ/dk along δ is scaled by ``1 − floor/‖δ‖``, a smooth floor, as the
        edge flow's ``rho_floor``). GD's own oscillation never falls below the round-off of
        its iterates, which keeps re-seeding it; ``"roundoff"`` uses ε_mach·max(1, ‖w̄‖).
        Without a floor (None, the restatement as written) ‖δ‖ decays by hundreds of
        e-folds during progressive sharpening (to 1e-162 on some problems), after which
        the flow behaves as gradient flow past 2/η.

    Notes
    -----
    ``initial_state(theta0, delta0=None)`` (rank1) or ``(theta0, sigma0=None)`` (dense):
    the centre starts at θ0 and δ0 defaults to GD's first half-step (η/2)∇E(θ0)
    (Σ0 = δ0δ0ᵀ); a zero gradient gives δ0 = 1e-12 along the first coordinate.

    In the rank1 form ‖δ‖ shrinks by many e-folds while the sharpness is below 2/η
    (rate 1 − η²λ²/4 per step along an eigenvector with eigenvalue λ); the state is
    δ itself, so this only costs accuracy once ‖δ‖ is below the absolute tolerance.

    There is no step-exact map (``solver="map"`` is refused): the η² term is already the
    first correction of a continuous flow towards GD, so an Euler step of length 1 would
    count GD's discretisation twice (on a quadratic that step is unstable for
    ηλ > √5 − 1 ≈ 1.24).

    The dense form keeps the mean-gradient part (η²/8)ssᵀ of the source; away from the
    Edge of Stability it dominates Σ, so δ (its principal factor) points along the
    gradient rather than along the unstable eigenvector. On the minimal valley this stops
    the dense rod flow from self-stabilising (measured in docs/peer_models.md); the rank1
    form does not have this problem.

    Observables: ``theta`` = w̄, ``loss`` = E(w̄), ``time_avg_loss`` = ½(L₊ + L₋),
    ``sharpness`` = λ_max(H(w̄)), ``amplitude`` = |v₁·δ|, ``amplitude_subspace`` = ‖δ‖ and
    ``delta`` (n, P) (Σ = δδᵀ is not expanded).
    """

    problem: Problem
    eta: float
    sigma: str = "rank1"
    delta_floor: object = "roundoff"

    name = "rod_flow"
    # No step-exact map: the η² term already is the first correction of a continuous flow
    # towards GD (backward error analysis), so an Euler step of length 1 adds GD's
    # discretisation a second time; on a quadratic it is unstable once ηλ > √5 − 1 ≈ 1.24.
    supports = ("scipy", "diffrax")
    requires = ("hvp",)

    def _check(self):
        choice(self.sigma, "sigma", ("rank1", "dense"))
        floor = self.delta_floor
        if isinstance(floor, str):
            if floor != "roundoff":
                raise ValueError(f"`delta_floor` must be 'roundoff', a positive float or None; got {floor!r}.")
        elif floor is not None:
            from .._checks import positive_float

            self._set("delta_floor", positive_float(floor, "delta_floor"))
        if self.sigma == "dense" and self.problem.dim > 200:
            raise ValueError(
                f"`sigma`='dense' stores a {self.problem.dim}x{self.problem.dim} matrix in the state; use "
                "sigma='rank1' for problems with more than 200 parameters."
            )

    @property
    def sigma_form(self) -> str:
        """How Σ is carried: "rank1" (δ) or "dense" (the ``sigma`` parameter)."""
        return self.sigma

    @property
    def state_size(self) -> int:
        P = self.dim
        return 2 * P if self.sigma_form == "rank1" else P + P * P

    def _initial(self, run, theta0, delta0=None, sigma0=None) -> np.ndarray:
        theta0 = self._theta0(theta0)
        P = self.dim
        if sigma0 is not None and self.sigma_form == "rank1":
            raise ValueError("`sigma0` is for sigma='dense'; with sigma='rank1' pass the half-step `delta0`.")
        if delta0 is not None and sigma0 is not None:
            raise ValueError("Pass either `delta0` or `sigma0`, not both.")
        if sigma0 is not None:
            S0 = np.array(sigma0, dtype=np.float64)
            if S0.shape != (P, P) or not np.all(np.isfinite(S0)):
                raise ValueError(f"`sigma0` must be a finite ({P}, {P}) matrix; got shape {S0.shape}.")
            if np.max(np.abs(S0 - S0.T)) > 1e-12 * max(1.0, np.max(np.abs(S0))) or np.linalg.eigvalsh(S0)[0] < -1e-12 * max(1.0, np.max(np.abs(S0))):
                raise ValueError("`sigma0` must be symmetric positive semidefinite (a covariance).")
            return np.concatenate([theta0, (0.5 * (S0 + S0.T)).ravel()])
        if delta0 is None:
            delta0 = 0.5 * self.eta * run.problem._grad(theta0)
            if not np.any(delta0):
                delta0 = np.zeros(P)
                delta0[0] = 1e-12
        else:
            delta0 = as_vector(delta0, "delta0", P)
            if self.sigma_form == "rank1" and not np.any(delta0):
                raise ValueError("`delta0` must be non-zero for sigma='rank1' (δ = 0 is a fixed point that never grows).")
        if self.sigma_form == "rank1":
            return np.concatenate([theta0, delta0])
        return np.concatenate([theta0, np.outer(delta0, delta0).ravel()])

    # --- pieces -----------------------------------------------------------------------
    def _delta(self, y) -> np.ndarray:
        P = self.dim
        if self.sigma_form == "rank1":
            return np.ascontiguousarray(y[P: 2 * P])
        S = y[P:].reshape(P, P)
        w, V = np.linalg.eigh(0.5 * (S + S.T))
        return np.ascontiguousarray(np.sqrt(max(w[-1], 0.0)) * V[:, -1])

    def drift(self, k, y, run=None):
        p = self._run(run).problem
        P = self.dim
        w = np.ascontiguousarray(y[:P])
        delta = self._delta(y)
        g_plus = p._grad(w + delta)
        g_minus = p._grad(w - delta)
        s = g_plus + g_minus
        Hs = p._hvp(np.ascontiguousarray(w + delta), s) + p._hvp(np.ascontiguousarray(w - delta), s)
        dw = -0.5 * self.eta * s - 0.125 * self.eta**2 * Hs
        if self.sigma_form == "rank1":
            d = g_plus - g_minus
            n2 = float(delta @ delta)
            if n2 == 0.0:
                ddelta = np.zeros(P)
            else:
                c = float(d @ delta) / n2
                ddelta = 0.125 * self.eta**2 * c * d - (0.0625 * self.eta**2 * c * c + 1.0) * delta
                if self.delta_floor is not None:
                    par = float(delta @ ddelta) / n2
                    if par < 0:  # shrinking: the floor takes out the decay along δ near it
                        ddelta = ddelta - par * min(1.0, self._floor(w) / np.sqrt(n2)) * delta
            return np.concatenate([dw, ddelta])
        S = y[P:].reshape(P, P)
        dS = 0.25 * self.eta**2 * (np.outer(g_plus, g_plus) + np.outer(g_minus, g_minus)) - 2.0 * S
        return np.concatenate([dw, dS.ravel()])

    def _floor(self, w) -> float:
        if self.delta_floor == "roundoff":
            return float(np.finfo(np.float64).eps * max(1.0, float(np.linalg.norm(w))))
        return float(self.delta_floor)

    def check_state(self, y):
        cause = super().check_state(y)
        if cause is not None or self.sigma_form == "rank1":
            return cause
        P = self.dim
        S = y[P:].reshape(P, P)
        w = np.linalg.eigvalsh(0.5 * (S + S.T))
        # Σ decays to 0 below 2/η; entries of the size of the integrator's absolute
        # tolerance may then turn slightly negative without meaning anything.
        if w[0] < -max(1e-8 * abs(w[-1]), 1e-9):
            return "sigma not PSD"
        return None

    def jax_drift(self):
        loss = jax_loss_of(self.problem, type(self).__name__)
        P = self.dim
        form = self.sigma_form

        def build():
            from .._jax import import_jax

            jax, jnp = import_jax()
            grad = jax.grad(loss)

            def hvp(x, v):
                return jax.jvp(grad, (x,), (v,))[1]

            def f(k, y, args):
                eta = args["eta"]
                w = y[:P]
                if form == "rank1":
                    delta = y[P:]
                else:
                    S = y[P:].reshape(P, P)
                    lam, V = jnp.linalg.eigh(0.5 * (S + S.T))
                    delta = jnp.sqrt(jnp.maximum(lam[-1], 0.0)) * V[:, -1]
                g_plus, g_minus = grad(w + delta), grad(w - delta)
                s = g_plus + g_minus
                dw = -0.5 * eta * s - 0.125 * eta**2 * (hvp(w + delta, s) + hvp(w - delta, s))
                if form == "rank1":
                    d = g_plus - g_minus
                    n2 = delta @ delta
                    safe = jnp.where(n2 > 0, n2, 1.0)
                    c = jnp.where(n2 > 0, (d @ delta) / safe, 0.0)
                    ddelta = 0.125 * eta**2 * c * d - (0.0625 * eta**2 * c * c + 1.0) * delta
                    floor = jnp.where(args["floor"] < 0,
                                      jnp.finfo(jnp.float64).eps * jnp.maximum(1.0, jnp.linalg.norm(w)), args["floor"])
                    par = (delta @ ddelta) / safe
                    cut = jnp.where((par < 0) & (n2 > 0) & (floor > 0),
                                    par * jnp.minimum(1.0, floor / jnp.sqrt(safe)), 0.0)
                    return jnp.concatenate([dw, ddelta - cut * delta])
                dS = 0.25 * eta**2 * (jnp.outer(g_plus, g_plus) + jnp.outer(g_minus, g_minus)) - 2.0 * S
                return jnp.concatenate([dw, dS.ravel()])

            return f

        return cached_jax_drift(self.problem, f"rod_flow:{form}:{P}", build)

    def jax_args(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        floor = -1.0 if self.delta_floor == "roundoff" else (0.0 if self.delta_floor is None else self.delta_floor)
        return {"eta": jnp.asarray(self.eta, dtype=jnp.float64), "floor": jnp.asarray(floor, dtype=jnp.float64)}

    def record(self, k, y, run):
        w = self.theta_of(y)
        vals, vecs = tracked_eigenpairs(run, w)
        return {"sharpness": float(vals[0]), "amplitude": float(abs(self._delta(y) @ vecs[:, 0]))}

    def observables(self, k, Y, records=None, run=None):
        P = self.dim
        Y = np.asarray(Y)
        records = self.records_of(k, Y, run) if records is None else records
        W = Y[:, :P]
        D = np.array([self._delta(y) for y in Y])
        avg = 0.5 * (losses(self.problem, W + D) + losses(self.problem, W - D))
        return {
            "theta": W,
            "loss": losses(self.problem, W),
            "time_avg_loss": avg,
            "sharpness": records["sharpness"],
            "amplitude": records["amplitude"],
            "amplitude_subspace": np.linalg.norm(D, axis=1),
            "delta": D,
        }

    def _from_handover(self, run, state):
        """From GD's state at step k0: centre w̄ = θ̄ and the rod's half-step from GD's δ with
        the rod's sign (the rod writes θ_k = w̄ + δ, the handover θ_k ≈ θ̄ − δ; the
        equations are even in δ). ``sigma="rank1"`` carries the oscillation only (it drops
        the mean-gradient part of the Σ equation), so δ is projected on the top eigenvector
        of H(θ̄), −v₁(v₁ᵀδ) (the whole −δ where that vanishes); ``sigma="dense"`` keeps the
        mean-gradient part and takes Σ = δδᵀ of the whole δ."""
        theta = self._theta0(state.theta_bar)
        delta = -np.asarray(state.delta, dtype=np.float64)
        if self.sigma_form == "rank1":
            top = state.factor(1)[:, 0]
            delta = -top if np.any(top) else delta
            if not np.any(delta):
                raise ValueError("`start`: GD's half-step δ is zero at the handover step, and δ = 0 is a fixed point of "
                                 "the rank-one rod flow; hand over at another step.")
            return np.concatenate([theta, delta])
        return np.concatenate([theta, np.outer(delta, delta).ravel()])
