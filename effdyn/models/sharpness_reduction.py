"""Sharpness-reduction flow on the minimiser manifold (Arora, Li and Panigrahi, ICML 2022;
theory §3).

For small η, normalised GD (η_k = η/‖∇E(θ_k)‖) and GD on √(E − E_min) both reach the
minimiser manifold Γ = {E = E_min}, oscillate across it along the top Hessian
eigenvector, and drift along it so as to decrease the sharpness. The drift is a
projected gradient flow in the slow time τ = η²k::

    NGD:  dX/dτ = −¼ ∂Φ(X) ∇log λ₁(X)
    √E:   dX/dτ = −⅛ ∂Φ(X) ∇λ₁(X)

with ∂Φ(X) the projection onto the tangent space of Γ at X.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np
import scipy.integrate as si

from .._checks import choice, positive_float
from ..errors import IntegrationError
from ..problems.base import MAX_DENSE_DIM, Problem
from ._shared import count_eigensolve, losses
from .base import AbstractModel
from .run_state import RunState

__all__ = ["SharpnessReductionFlow"]

#: The drift coefficients c of dX/dk = −c η² ∂Φ ∇f (f = log λ₁ for NGD, λ₁ for √E).
COEFFICIENTS = {"normalized": 0.25, "sqrt": 0.125}


@dataclass(eq=False)
class SharpnessReductionRun(RunState):
    """Run state of :class:`SharpnessReductionFlow`: the codimension m of Γ, fixed at the
    first drift evaluation (on Γ)."""

    codim: object = None


@dataclass(frozen=True)
class SharpnessReductionFlow(AbstractModel):
    """Arora–Li–Panigrahi flow of NGD / √E-GD along the minimiser manifold Γ.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        The loss; must provide ``third`` and ``loss_min`` (Γ = {E = loss_min}). Dense
        Hessians are used (P <= 4096), because the tangent projection needs the whole
        non-zero spectrum.
    eta : float
        Step size η of the discrete method (> 0); time is in its steps, k = τ/η².
    variant : {"normalized", "sqrt"}
        NGD (η_k = η/‖∇E‖) or GD on √(E − E_min).
    rank_tol : float, default 1e-8
        At the initial point, Hessian eigenvalues above ``rank_tol · λ₁`` count the
        codimension m of Γ; afterwards the top-m eigenvectors span the normal space and the
        rest the tangent space (Γ must be a manifold of constant codimension).

    Notes
    -----
    In GD steps the flow reads dX/dk = −c η² ∂Φ(X)∇f(X) with (c, f) = (¼, log λ₁) for
    NGD and (⅛, λ₁) for √E. ∂Φ is the orthogonal projection I − V Vᵀ, V the Hessian
    eigenvectors with non-negligible eigenvalues (at a minimiser the tangent space of Γ
    is the Hessian kernel), and ∇λ₁ = ∇³E[v₁, v₁].

    The constants follow from a two-cycle across Γ along v₁: NGD steps ±η, so the
    iterates sit at ±η/2 from Γ; √E-GD steps η√(λ₁/2), so they sit at ±(η/2)√(λ₁/2). The
    cubic term ½z²∇λ₁ of the gradient at distance z, divided by the step normalisation,
    gives the drifts above. These predictions are the model's ``amplitude`` and
    ``time_avg_loss`` (E_min + ½λ₁·amplitude²).

    ``initial_state(theta0, project=True)`` maps θ0 to Γ with the gradient-flow limit
    Φ(θ0) (integrated to ‖∇E‖ below 1e-12, then Newton steps with the pseudo-inverse
    Hessian); ``project=False`` takes θ0 as given (it must lie on Γ).

    The flow is defined on Γ only; the integrator's error moves X off Γ at the level of
    its tolerances, which the observables report as ``loss`` − E_min.

    Observables: ``theta`` = X, ``loss`` = E(X), ``time_avg_loss``, ``sharpness`` = λ₁(X),
    ``amplitude``, ``tau`` = η²k.
    """

    problem: Problem
    eta: float
    variant: str = "normalized"
    _: KW_ONLY
    rank_tol: float = 1e-8

    supports = ("scipy", "map")
    requires = ("third", "loss_min")
    run_state_class = SharpnessReductionRun

    def _check(self):
        choice(self.variant, "variant", tuple(COEFFICIENTS))
        if self.problem.dim > MAX_DENSE_DIM:
            raise ValueError(
                f"SharpnessReductionFlow needs dense Hessians (the tangent space of Γ is the Hessian "
                f"kernel); P = {self.problem.dim} exceeds {MAX_DENSE_DIM}."
            )
        self._set("rank_tol", positive_float(self.rank_tol, "rank_tol"))

    @property
    def name(self) -> str:
        return f"sharpness_reduction_{self.variant}"

    @property
    def loss_min(self) -> float:
        return float(self.problem.loss_min)

    def make_run(self, run):
        pass  # dense spectra only: no tracker

    @property
    def state_size(self) -> int:
        return self.dim

    # --- the manifold -------------------------------------------------------------------
    def project_to_manifold(self, theta0, *, gtol: float = 1e-12, max_time: float = 1e7, run=None) -> np.ndarray:
        """Φ(θ0): the limit of gradient flow from θ0, refined by Newton steps onto Γ."""
        p = self._run(run).problem
        theta = np.array(theta0, dtype=np.float64)
        scale = max(1.0, float(np.linalg.norm(p._grad(theta))))
        t, span = 0.0, 10.0
        while np.linalg.norm(p._grad(theta)) > 1e-6 * scale and t < max_time:
            sol = si.solve_ivp(lambda _t, x: -p._grad(np.ascontiguousarray(x)), (0.0, span), theta,
                               method="LSODA", rtol=1e-10, atol=1e-12)
            theta = sol.y[:, -1]
            t += span
            span *= 4.0
        for _ in range(50):
            g = p._grad(np.ascontiguousarray(theta))
            if np.linalg.norm(g) <= gtol * scale:
                break
            w, V = np.linalg.eigh(p._hessian(np.ascontiguousarray(theta)))
            keep = w > self.rank_tol * max(w[-1], np.finfo(float).tiny)
            theta = theta - V[:, keep] @ ((V[:, keep].T @ g) / w[keep])
        gap = p._loss(np.ascontiguousarray(theta)) - self.loss_min
        if not np.isfinite(gap) or gap > 1e-8 * max(1.0, abs(self.loss_min)):
            raise ValueError(
                f"gradient flow from `theta0` did not reach the minimiser manifold (E − E_min = {gap:.3g}); "
                "start closer to a minimiser or pass a point on the manifold with project=False."
            )
        return theta

    def _initial(self, run, theta0, project: bool = True) -> np.ndarray:
        theta0 = self._theta0(theta0)
        if not isinstance(project, bool):
            raise TypeError(f"`project` must be True or False; got {project!r}.")
        if project:
            return self.project_to_manifold(theta0, run=run)
        gap = run.problem._loss(theta0) - self.loss_min
        if gap > 1e-8 * max(1.0, abs(self.loss_min)):
            raise ValueError(
                f"`theta0` is not on the minimiser manifold (E − E_min = {gap:.3g}); use project=True."
            )
        return theta0

    def _tangent_drift(self, X, run):
        p = run.problem
        X = np.ascontiguousarray(X)
        count_eigensolve(p)
        w, V = np.linalg.eigh(p._hessian(X))
        lam1, v1 = float(w[-1]), np.ascontiguousarray(V[:, -1])
        if lam1 <= 0:
            raise IntegrationError(
                f"SharpnessReductionFlow: the top Hessian eigenvalue {lam1:.3g} at X = {X} is not positive; "
                "X is not at a (non-degenerate) minimiser.", cause="non-finite")
        if run.codim is None:
            run.codim = int(np.sum(w > self.rank_tol * lam1))
        # The codimension of Γ is fixed once (at the start, on Γ): thresholding the spectrum
        # at every call would flicker for eigenvalues that vanish on Γ but not at the
        # integrator's trial points, and make the drift discontinuous.
        normal = V[:, w.size - run.codim:]
        grad_lam = p._third(X, v1[:, None].copy(), np.ones(1))
        tangent = grad_lam - normal @ (normal.T @ grad_lam)
        if self.variant == "normalized":
            tangent = tangent / lam1
        return -COEFFICIENTS[self.variant] * self.eta**2 * tangent, lam1

    def drift(self, k, y, run=None):
        return self._tangent_drift(y, self._run(run))[0]

    def record(self, k, y, run):
        count_eigensolve(run.problem)
        return {"sharpness": float(np.linalg.eigvalsh(run.problem._hessian(np.ascontiguousarray(y)))[-1])}

    def observables(self, k, Y, records=None, run=None):
        Y = np.asarray(Y)
        records = self.records_of(k, Y, run) if records is None else records
        lam = records["sharpness"]
        if self.variant == "normalized":
            amp = np.full(len(Y), 0.5 * self.eta)
        else:
            amp = 0.5 * self.eta * np.sqrt(np.maximum(lam, 0.0) / 2.0)
        return {
            "theta": Y,
            "loss": losses(self.problem, Y),
            "time_avg_loss": self.loss_min + 0.5 * lam * amp**2,
            "sharpness": lam,
            "amplitude": amp,
            "amplitude_subspace": amp.copy(),
            "tau": self.eta**2 * np.asarray(k, dtype=float),
        }

    def _from_handover(self, run, state):
        """From GD's state at step k0: GD's two-step midpoint θ̄ projected on the minimiser
        manifold Γ (the flow lives on Γ; its oscillation amplitude is prescribed, η/2 or
        (η/2)√(λ₁/2), so GD's δ is not used)."""
        return self.project_to_manifold(self._theta0(state.theta_bar), run=run)
