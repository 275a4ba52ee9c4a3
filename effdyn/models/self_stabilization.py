"""Self-stabilisation (Damian, Nichani and Lee, ICLR 2023; theory §3).

GD at the Edge of Stability follows, on average, *projected* GD onto the stable set

    M = {θ : S(θ) ≤ 2/η,  ∇E(θ)·v₁(θ) = 0}

(the constrained trajectory θ†), and its deviation w = θ − θ† obeys a low-dimensional
"predicted dynamics" driven by the cubic term of the loss: the oscillation x = v·w along
the top eigenvector grows while the sharpness is above 2/η, and its square pulls the
sharpness back through y = ∇S⊥·w. Reduced to (x, y) this is a Lotka–Volterra cycle.

Four modes share one class (:class:`SelfStabilization`):

* ``"constrained"`` — θ†_{k+1} = proj_M(θ†_k − η∇E(θ†_k)) (discrete map);
* ``"predicted"`` — (θ†, w) with the predicted dynamics of w (discrete map);
* ``"generalized"`` — the same with the cubic model along v replaced by the exact loss
  along the line θ† + x v (a reconstruction, see the class docstring);
* ``"reduced"`` — the (x, y) system, as the ODE dx/dk = ηyx, dy/dk = η(α − βx²/2) or
  (``solver="map"``) its discrete form; :func:`reduced_energy` is its conserved quantity.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np

from .._checks import choice, positive_float, positive_int, real_float
from ..errors import IntegrationError
from ..problems.base import Problem
from ._shared import cached_jax_drift, losses, top_eig
from .base import AbstractModel
from .run_state import RunState

__all__ = ["SelfStabilization", "reduced_energy"]

_MODES = ("constrained", "predicted", "generalized", "reduced")


def reduced_energy(x, y, alpha, beta):
    """Conserved quantity of the reduced self-stabilisation ODE.

    For dx/dk = ηyx, dy/dk = η(α − βx²/2)::

        𝓔(x, y) = y²/2 + βx²/4 − (α/2) log x²

    (d𝓔/dk = yη(α − βx²/2) + (βx/2 − α/x)·ηyx = 0). Its minimum is the fixed point
    x² = 2α/β, y = 0 (the central-flow σ²).

    Parameters
    ----------
    x, y : array_like
        Oscillation amplitude along v₁ (x ≠ 0) and sharpness excess along ∇S⊥.
    alpha, beta : float
        α = −∇E·∇S⊥ and β = ‖∇S⊥‖² (β > 0).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return 0.5 * y**2 + 0.25 * beta * x**2 - 0.5 * alpha * np.log(x**2)


@dataclass(eq=False)
class SelfStabilizationRun(RunState):
    """Run state of :class:`SelfStabilization`.

    ``prev_v`` is the previous top eigenvector (its sign keeps x = v·w continuous along a
    run); ``ref_point``, ``ref_grad_s_perp``, ``alpha`` and ``beta`` are the reduced model's
    reference θ†₀, ∇S⊥ there and the α, β fixed at the start (given or computed)."""

    prev_v: object = None
    ref_point: object = None
    ref_grad_s_perp: object = None
    alpha: object = None
    beta: object = None


@dataclass(frozen=True)
class SelfStabilization(AbstractModel):
    """Damian–Nichani–Lee self-stabilisation: constrained trajectory, predicted dynamics,
    and the reduced (x, y) cycle.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        The loss; must provide ``third`` (for ∇S = ∇³E[v₁, v₁]).
    eta : float
        GD step size (> 0).
    mode : {"constrained", "predicted", "generalized", "reduced"}
        Which model (module docstring). The first three are discrete maps and run with
        ``solver="map"`` only; ``"reduced"`` also runs with the ODE solvers.
    projection_steps : int, default 3
        Linearised projection steps onto M (the reference code uses 3)::

            θ ← θ − max(0, S − 2/η) ∇S⊥/‖∇S⊥‖² − v (v·∇E)/S,   ∇S⊥ = ∇S − v(v·∇S).

    alpha, beta : float, optional
        ``mode="reduced"`` only: α and β of the reduced system. By default both are
        evaluated at the projection θ†₀ of ``theta0`` (α = −∇E·∇S⊥, β = ‖∇S⊥‖²) and then
        frozen — the reduced model is local in time.

    Notes
    -----
    *Predicted dynamics* (state (θ†, w), 2P entries; GD ≈ θ† + w)::

        w_{k+1} = w_k − η [H(θ†_k) w_k + ½(x_k² − δ_k²) ∇S⊥ + v x_k y_k],
        x_k = v·w_k,  y_k = ∇S⊥·w_k,  δ_k² = 2α_k/β_k,

    everything evaluated at θ†_k. The −½δ²∇S⊥ term is the displacement the projection
    inflicts on θ† when the sharpness constraint is active; when the projection did not
    act in step k (S below 2/η), δ_k² is taken as 0.

    *Generalized predicted dynamics* (reconstruction; the paper's own generalisation for
    losses that are sub- or super-quadratic along v could not be retrieved). The cubic
    model of the gradient along the oscillation, x S v + ½x²∇S⊥, is replaced by the exact
    difference ∇E(θ† + xv) − ∇E(θ†)::

        w_{k+1} = w_k − η [∇E(θ† + x_k v) − ∇E(θ†) + H(θ†)(w_k − x_k v) + v x_k y_k − ½δ_k² ∇S⊥].

    At cubic order it differs from the predicted dynamics by the term ½x²(v·∇S)v,
    which the predicted dynamics drop.

    *Reduced system* (state (x, y)): ODE dx/dk = ηyx, dy/dk = η(α − βx²/2); its map
    (``solver="map"``) is x⁺ = −(1 + ηy)x, y⁺ = y + η(α − βx²/2). Initial data: ``x0``,
    ``y0`` keywords of ``initial_state`` (defaults: v·(θ0 − θ†0) and ∇S⊥·(θ0 − θ†0)).

    Observables (all modes): ``theta`` (predicted two-step average trajectory), ``loss``,
    ``time_avg_loss``, ``sharpness``, ``amplitude``, and

    * constrained: ``delta`` = √(2α/β) where the constraint is active (else 0), used as the
      amplitude; time_avg_loss = E(θ†) + δ²/η;
    * predicted / generalized: ``theta_dagger``, ``gd_prediction`` = θ† + w (the predicted
      GD iterate), ``x``, ``y_excess`` (= y); ``theta`` = θ† + w − x v (the sign-alternating part
      removed), amplitude = |x|, time_avg_loss = ½[E(θ̄ + xv) + E(θ̄ − xv)];
    * reduced: ``x``, ``y_excess`` (= y; ``Solution.y`` is the raw state), ``energy``; ``theta`` = θ†₀ + (y/β)∇S⊥ (the sharpness excess
      turned back into a displacement, to first order), sharpness = 2/η + y,
      amplitude = |x|, time_avg_loss = E(θ) + x²/η.
    """

    problem: Problem
    eta: float
    mode: str = "predicted"
    _: KW_ONLY
    projection_steps: int = 3
    alpha: float | None = None
    beta: float | None = None

    requires = ("third",)
    run_state_class = SelfStabilizationRun

    def _check(self):
        choice(self.mode, "mode", _MODES)
        self._set("projection_steps", positive_int(self.projection_steps, "projection_steps"))
        if (self.alpha is not None or self.beta is not None) and self.mode != "reduced":
            raise ValueError("`alpha` and `beta` are parameters of mode='reduced' only.")
        if self.alpha is not None:
            self._set("alpha", real_float(self.alpha, "alpha"))
        if self.beta is not None:
            self._set("beta", positive_float(self.beta, "beta"))

    @property
    def name(self) -> str:
        return f"self_stabilization_{self.mode}"

    @property
    def supports(self) -> tuple:
        return ("scipy", "diffrax", "map") if self.mode == "reduced" else ("map",)

    def make_run(self, run):
        run.alpha, run.beta = self.alpha, self.beta

    # --- geometry of the stable set ------------------------------------------------------
    def geometry(self, theta, run=None):
        """Quantities of the stable set at θ (``run`` keeps the eigenvector's sign continuous).

        Returns
        -------
        dict
            ``S`` sharpness, ``v`` top eigenvector, ``grad`` ∇E, ``grad_S`` ∇S = ∇³E[v, v],
            ``grad_S_perp`` ∇S⊥ = ∇S − v(v·∇S), ``alpha`` = −∇E·∇S⊥, ``beta`` = ‖∇S⊥‖².
        """
        run = self._run(run)
        problem = run.problem
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        vals, vecs = top_eig(problem, theta)
        S, v = float(vals[0]), np.ascontiguousarray(vecs[:, 0])
        if run.prev_v is not None and run.prev_v.shape == v.shape and v @ run.prev_v < 0:
            v = -v  # keep the eigenvector's sign continuous along a run (x keeps its meaning)
        run.prev_v = v
        g = problem._grad(theta)
        dS = problem._third(theta, v[:, None].copy(), np.ones(1))
        dS_perp = dS - v * (v @ dS)
        return {"S": S, "v": v, "grad": g, "grad_S": dS, "grad_S_perp": dS_perp,
                "alpha": float(-(g @ dS_perp)), "beta": float(dS_perp @ dS_perp)}

    def project(self, theta, run=None):
        """Projection onto M with ``projection_steps`` linearised steps.

        Returns
        -------
        theta_proj : ndarray
            The projected point.
        active : bool
            Whether the sharpness constraint S ≤ 2/η acted in the first step.
        """
        run = self._run(run)
        theta = np.array(theta, dtype=np.float64)
        active = False
        for step in range(self.projection_steps):
            geo = self.geometry(theta, run)
            excess = geo["S"] - 2.0 / self.eta
            if step == 0:
                active = excess > 0
            if geo["S"] <= 0:
                raise IntegrationError(
                    f"SelfStabilization: the sharpness {geo['S']:.6g} at θ = {theta} is not positive, so the "
                    "projection onto the stable set (a Newton step along v with curvature S) is undefined.",
                    cause="non-finite")
            if excess > 0:
                if geo["beta"] == 0.0:
                    raise IntegrationError(
                        f"SelfStabilization: S = {geo['S']:.6g} > 2/η at θ = {theta} but ∇S⊥ = 0, so the "
                        "sharpness cannot be projected back to 2/η.", cause="non-finite")
                theta = theta - excess * geo["grad_S_perp"] / geo["beta"]
            theta = theta - geo["v"] * (geo["v"] @ geo["grad"]) / geo["S"]
        return theta, active

    # --- state -----------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return {"constrained": self.dim, "reduced": 2}.get(self.mode, 2 * self.dim)

    def _initial(self, run, theta0, x0=None, y0=None) -> np.ndarray:
        theta0 = self._theta0(theta0)
        if self.mode != "reduced" and (x0 is not None or y0 is not None):
            raise ValueError("`x0` and `y0` are initial data of mode='reduced' only.")
        dagger, _ = self.project(theta0, run)
        if self.mode == "constrained":
            return dagger
        if self.mode in ("predicted", "generalized"):
            return np.concatenate([dagger, theta0 - dagger])
        geo = self.geometry(dagger, run)
        if self.beta is None:
            if geo["beta"] == 0.0:
                raise ValueError("∇S⊥ vanishes at the projection of `theta0`; pass `alpha` and `beta` explicitly.")
            run.alpha, run.beta = geo["alpha"], geo["beta"]
        run.ref_point, run.ref_grad_s_perp = dagger, geo["grad_S_perp"]
        w = theta0 - dagger
        x0 = float(geo["v"] @ w) if x0 is None else real_float(x0, "x0")
        y0 = float(geo["grad_S_perp"] @ w) if y0 is None else real_float(y0, "y0")
        if x0 == 0.0:
            raise ValueError("`x0` = 0 is a fixed point of the reduced system (no oscillation ever starts); "
                             "pass a non-zero `x0`.")
        return np.array([x0, y0])

    def _reduced_params(self, run):
        if run is None or run.beta is None:
            raise ValueError(
                "mode='reduced' needs α and β: pass `alpha` and `beta` to the model, or use the run state "
                "made by start(theta0) (which computes them at the projection of θ0)."
            )
        return run.alpha, run.beta

    # --- dynamics --------------------------------------------------------------------------
    def drift(self, k, y, run=None):
        if self.mode != "reduced":
            raise NotImplementedError(f"mode={self.mode!r} is a discrete map; use solver='map'.")
        alpha, beta = self._reduced_params(self._run(run))
        x, s = y
        return np.array([self.eta * s * x, self.eta * (alpha - 0.5 * beta * x * x)])

    def jax_drift(self):
        if self.mode != "reduced":
            return super().jax_drift()

        def build():
            from .._jax import import_jax

            _, jnp = import_jax()

            def f(k, y, args):
                eta, alpha, beta = args["eta"], args["alpha"], args["beta"]
                return jnp.stack([eta * y[1] * y[0], eta * (alpha - 0.5 * beta * y[0] ** 2)])

            return f

        return cached_jax_drift(self.problem, "self_stabilization_reduced", build)

    def jax_args(self, run=None):
        from .._jax import import_jax

        _, jnp = import_jax()
        alpha, beta = self._reduced_params(run if run is not None else self.new_run())
        return {name: jnp.asarray(value, dtype=jnp.float64)
                for name, value in (("eta", self.eta), ("alpha", alpha), ("beta", beta))}

    def map_step(self, k, y, run=None):
        run = self._run(run)
        problem = run.problem
        eta, P = self.eta, self.dim
        if self.mode == "reduced":
            alpha, beta = self._reduced_params(run)
            x, s = y
            return np.array([-(1.0 + eta * s) * x, s + eta * (alpha - 0.5 * beta * x * x)])
        if self.mode == "constrained":
            theta = np.ascontiguousarray(y)
            return self.project(theta - eta * problem._grad(theta), run)[0]
        dagger = np.ascontiguousarray(y[:P])
        w = y[P:]
        geo = self.geometry(dagger, run)
        v, dS_perp = geo["v"], geo["grad_S_perp"]
        x, s = float(v @ w), float(dS_perp @ w)
        new_dagger, active = self.project(dagger - eta * geo["grad"], run)
        delta2 = 2.0 * geo["alpha"] / geo["beta"] if (active and geo["beta"] > 0) else 0.0
        if self.mode == "predicted":
            force = problem._hvp(dagger, np.ascontiguousarray(w)) + 0.5 * (x * x - delta2) * dS_perp + v * x * s
        else:
            w_perp = np.ascontiguousarray(w - x * v)
            along = problem._grad(np.ascontiguousarray(dagger + x * v)) - geo["grad"]
            force = along + problem._hvp(dagger, w_perp) + v * x * s - 0.5 * delta2 * dS_perp
        return np.concatenate([new_dagger, w - eta * force])

    # --- output ----------------------------------------------------------------------------
    def record(self, k, y, run):
        """Everything the observables need from the spectrum at one saved state."""
        y = np.asarray(y, dtype=np.float64)
        if self.mode == "reduced":
            return {}
        if self.mode == "constrained":
            geo = self.geometry(y, run)
            return {"sharpness": geo["S"], "delta2": 2.0 * geo["alpha"] / geo["beta"] if geo["beta"] > 0 else 0.0}
        P = self.dim
        dagger, w = y[:P], y[P:]
        geo = self.geometry(dagger, run)
        v = geo["v"]
        x = float(v @ w)
        bar = dagger + w - x * v
        return {"theta": bar, "v": v, "x": x, "y_excess": float(geo["grad_S_perp"] @ w),
                "sharpness": float(top_eig(run.problem, bar)[0][0])}

    def theta_of(self, y, run=None):
        Y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        if self.mode == "constrained":
            out = Y[:, : self.dim]
        elif self.mode == "reduced":
            out = self._reduced_theta(Y, run)
        else:
            out = self.records_of(np.zeros(len(Y)), Y, run)["theta"]
        return out if np.ndim(y) == 2 else out[0]

    def _reduced_theta(self, Y, run):
        if run is None or run.ref_point is None:
            raise ValueError("mode='reduced' has no reference point: use the run state made by start(theta0).")
        alpha, beta = self._reduced_params(run)
        return run.ref_point[None, :] + (Y[:, 1] / beta)[:, None] * run.ref_grad_s_perp[None, :]

    def observables(self, k, Y, records=None, run=None):
        Y = np.asarray(Y)
        eta = self.eta
        if self.mode == "reduced":
            alpha, beta = self._reduced_params(run)
            Theta = self._reduced_theta(Y, run)
            x, s = Y[:, 0], Y[:, 1]
            E = losses(self.problem, Theta)
            return {
                "theta": Theta, "loss": E, "time_avg_loss": E + x**2 / eta,
                "sharpness": 2.0 / eta + s, "amplitude": np.abs(x), "amplitude_subspace": np.abs(x),
                "x": x, "y_excess": s, "energy": reduced_energy(x, s, alpha, beta),
            }
        if records is None:
            records = self.records_of(k, Y, None)  # a fresh sign reference, as along a run
        if self.mode == "constrained":
            Theta = Y[:, : self.dim]
            S = records["sharpness"]
            active = S >= (2.0 / eta) * (1.0 - 1e-4)
            delta2 = np.where(active, np.maximum(records["delta2"], 0.0), 0.0)
            E = losses(self.problem, Theta)
            return {
                "theta": Theta, "loss": E, "time_avg_loss": E + delta2 / eta,
                "sharpness": S, "amplitude": np.sqrt(delta2), "amplitude_subspace": np.sqrt(delta2),
                "delta": np.sqrt(delta2),
            }
        P = self.dim
        Bar, V, X = records["theta"], records["v"], records["x"]
        D, W = Y[:, :P], Y[:, P:]
        avg = 0.5 * (losses(self.problem, Bar + X[:, None] * V) + losses(self.problem, Bar - X[:, None] * V))
        return {
            "theta": Bar, "loss": losses(self.problem, Bar), "time_avg_loss": avg,
            "sharpness": records["sharpness"], "amplitude": np.abs(X), "amplitude_subspace": np.abs(X),
            "theta_dagger": D, "gd_prediction": D + W, "x": X, "y_excess": records["y_excess"],
        }

    def _from_handover(self, run, state):
        """From GD's state at step k0. The constrained trajectory starts at the projection θ†
        of GD's midpoint θ̄ on the stable set. The predicted dynamics (a map of GD's iterates,
        GD ≈ θ† + w) start from GD's own iterate: w = θ_{k0} − θ† (θ_{k0} ≈ θ̄ − δ, so the
        oscillation x = v·w is GD's, taken from δ). The reduced system starts from
        x0 = v·w, y0 = ∇S⊥·w with α, β at θ† (unless given to the model)."""
        theta_bar = self._theta0(state.theta_bar)
        dagger, _ = self.project(theta_bar, run)
        if self.mode == "constrained":
            return dagger
        w = np.asarray(state.theta, dtype=np.float64) - dagger
        if self.mode in ("predicted", "generalized"):
            return np.concatenate([dagger, w])
        geo = self.geometry(dagger, run)
        if self.beta is None:
            if geo["beta"] == 0.0:
                raise ValueError("`start`: ∇S⊥ vanishes at the projection of GD's midpoint; pass `alpha` and `beta` "
                                 "to the model explicitly.")
            run.alpha, run.beta = geo["alpha"], geo["beta"]
        run.ref_point, run.ref_grad_s_perp = dagger, geo["grad_S_perp"]
        x0 = float(geo["v"] @ w)
        if x0 == 0.0:
            raise ValueError("`start`: GD's oscillation along v is zero at the handover step, a fixed point of the "
                             "reduced system; hand over at another step.")
        return np.array([x0, float(geo["grad_S_perp"] @ w)])
