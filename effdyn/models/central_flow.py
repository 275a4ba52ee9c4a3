"""The central flow of Cohen, Damian, Talwalkar, Kolter and Lee (ICLR 2025; theory §3).

The central flow models the time-averaged GD trajectory at the Edge of Stability. Its
oscillation covariance Σ is not a state: at every instant it is the smallest correction
that keeps the critical Hessian eigenvalues from rising past 2/η, found by solving a
semidefinite complementarity problem (SDCP) on the critical eigenspace U::

    dθ/dk = −η [∇E(θ) + ½ T(θ)[Σ]],     Σ = U X Uᵀ,
    X ⪰ 0,   −UᵀḢU ⪰ 0,   ⟨X, UᵀḢU⟩ = 0,

where Ḣ = dH/dk along the flow, T(θ)[Σ] = ∇_θ⟨H(θ), Σ⟩ (theory §1) and, for fixed U,
(UᵀḢU)_ij = ∇(u_iᵀHu_j)·dθ/dk is linear in X.
"""

from __future__ import annotations

import warnings
from dataclasses import KW_ONLY, dataclass

import numpy as np

from .._checks import positive_float, positive_int, real_float
from ..errors import IntegrationError
from ..problems.base import Problem
from ._shared import losses, tracked_eigenpairs
from .base import AbstractModel
from .run_state import RunState
from .sdcp import SDCPError, smat, solve_sdcp_svec, svec

__all__ = ["CentralFlow"]


@dataclass(eq=False)
class CentralFlowRun(RunState):
    """Run state of :class:`CentralFlow`: the last SDCP solution (the solver's warm start)
    and whether the "all computed eigenvalues are critical" warning was given."""

    last_X: object = None
    warned_rank: bool = False


@dataclass(frozen=True)
class CentralFlow(AbstractModel):
    """Central flow: gradient flow plus the SDCP-determined curvature penalty.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        The loss; must provide ``third`` (``problem.has_third``).
    eta : float
        GD step size (> 0).
    max_rank : int, default 5
        Most critical eigenvalues considered (the top ``max_rank`` eigenpairs are computed
        at every drift evaluation).
    window : float, default 0.05
        An eigenvalue is *critical* when λ ≥ (2/η)(1 − window).
    restoring : float, default 1.0
        Rate κ (per GD step) at which a critical eigenvalue that has drifted away from
        2/η is pulled back. The constraint actually imposed is
        ``UᵀḢU + κ(Λ − (2/η)I) ⪯ 0`` instead of ``UᵀḢU ⪯ 0``: on the edge (Λ = 2/η) both
        coincide, below it an eigenvalue may still rise at up to κ(2/η − λ) per step, and
        above it (overshoot, integration error) it is driven back at rate κ. With κ = 1 and
        the step-exact map (dk = 1) this is the discretisation of the reference code
        (the linearised eigenvalue one step ahead is kept ≤ 2/η). κ = 0 imposes the
        literal SDCP on every eigenvalue in the window (which then also freezes
        eigenvalues slightly below 2/η).
    sdcp_tol : float, default 1e-10
        Relative KKT tolerance of the SDCP solver (:mod:`effdyn.models.sdcp`).

    Notes
    -----
    *Building the SDCP.* With c_p = ∇_θ(u_iᵀH u_j) (times √2 off the diagonal, i.e. svec
    coordinates) obtained from ``problem.third`` — u_iᵀHu_j is ¼ of the difference of the
    quadratic forms along u_i + u_j and u_i − u_j — and C = [c_p], one has T[Σ] = C svec(X)
    and svec(UᵀḢU) = Cᵀ dθ/dk. The SDCP is then ``X ⪰ 0, Z ⪰ 0, ⟨X, Z⟩ = 0`` with
    ``Z = A + B[X]``, ``svec(A) = Cᵀ∇E + (κ/η) svec((2/η)I − Λ)`` and ``B = ½CᵀC`` (PSD),
    i.e. the convex problem ``min_{X⪰0} ½B[X,X] + ⟨A,X⟩``. One critical eigenvalue gives
    the closed form σ² = max(0, 2[⟨−∇E, ∇S⟩ − (κ/η)(2/η − S)]/‖∇S‖²), which for S = 2/η
    is Cohen et al.'s 2⟨−∇E, ∇S⟩/‖∇S‖².

    *Failure.* An SDCP without solution (e.g. a critical eigenvalue above 2/η whose
    gradient vanishes, so no Σ can lower it) raises :class:`effdyn.IntegrationError`
    (cause ``"sdcp failed"``) with the time, θ and the critical eigenvalues.

    *Limits.* Σ is supported on at most ``max_rank`` eigenvectors; the drift is
    non-smooth when an eigenvalue joins or leaves the active set, which adaptive solvers
    handle with smaller steps. The flow has no JAX drift (the SDCP runs in NumPy), so the
    diffrax backend is not available. When several critical eigenvalues give a singular
    B (e.g. r(r+1)/2 > P), Σ is not unique; the drift is.

    Observables: ``theta``, ``loss``, ``time_avg_loss`` = E + tr(Σ)/η, ``sharpness``,
    ``amplitude`` = √(v₁ᵀΣv₁), ``amplitude_subspace`` = √tr Σ, ``sigma_factor`` (n, P,
    max_rank) with Σ = FFᵀ (Σ itself is never expanded to (n, P, P)), ``n_critical``,
    ``sigma_rank``.
    """

    problem: Problem
    eta: float
    _: KW_ONLY
    max_rank: int = 5
    window: float = 0.05
    restoring: float = 1.0
    sdcp_tol: float = 1e-10

    name = "central_flow"
    supports = ("scipy", "map")
    requires = ("third",)
    run_state_class = CentralFlowRun

    def _check(self):
        self._set("max_rank", min(positive_int(self.max_rank, "max_rank"), self.problem.dim))
        window = real_float(self.window, "window")
        if not 0.0 <= window < 1.0:
            raise ValueError(f"`window` must be in [0, 1) (a relative distance below 2/η); got {window}.")
        self._set("window", window)
        restoring = real_float(self.restoring, "restoring")
        if restoring < 0:
            raise ValueError(f"`restoring` must be >= 0 (a rate per GD step); got {restoring}.")
        self._set("restoring", restoring)
        self._set("sdcp_tol", positive_float(self.sdcp_tol, "sdcp_tol"))

    def make_run(self, run):
        from ..spectrum import EigenTracker

        run.tracker = EigenTracker(run.problem, self.max_rank)

    @property
    def state_size(self) -> int:
        return self.dim

    # --- the SDCP ---------------------------------------------------------------------
    def _curvature_gradients(self, problem, theta, U):
        """C (P, r(r+1)/2): columns ∇(u_iᵀHu_j), √2-scaled off the diagonal (svec order)."""
        p = problem
        r = U.shape[1]
        cols = []
        for i in range(r):
            for j in range(i, r):
                if i == j:
                    cols.append(p._third(theta, np.ascontiguousarray(U[:, [i]]), np.ones(1)))
                else:
                    W = np.ascontiguousarray(np.column_stack([U[:, i] + U[:, j], U[:, i] - U[:, j]]))
                    cols.append(np.sqrt(2.0) * p._third(theta, W, np.array([0.25, -0.25])))
        return np.column_stack(cols)

    def solve_sigma(self, theta, k: float | None = None, run=None, *, warm: bool = True):
        """The SDCP at θ (memoised in ``run`` by the exact point).

        Returns
        -------
        dict
            ``U`` (P, r) critical eigenvectors, ``eigenvalues`` (r,), ``X`` (r, r),
            ``C`` (P, r(r+1)/2), ``grad`` (P,), ``A`` (r, r), ``M`` (svec matrix of B),
            ``residual``. r = 0 when no eigenvalue is critical.
        """
        run = self._run(run)
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        hit = run.memo_get("sdcp", theta)
        if hit is not None:
            return hit
        out = self._solve_sigma(theta, k, run, warm)
        run.memo_put("sdcp", theta, out)
        return out

    def _solve_sigma(self, theta, k, run, warm):
        problem = run.problem
        g = problem._grad(theta)
        vals, vecs = tracked_eigenpairs(run, theta)
        threshold = (2.0 / self.eta) * (1.0 - self.window)
        crit = vals >= threshold
        r = int(np.sum(crit))
        if r == self.max_rank and self.max_rank < self.dim and not run.warned_rank:
            warnings.warn(
                f"CentralFlow: all {self.max_rank} computed eigenvalues are critical (>= {threshold:.6g}); "
                "more may be. Increase `max_rank`.", RuntimeWarning, stacklevel=4)
            run.warned_rank = True
        out = {"grad": g, "eigenvalues": vals[crit], "U": vecs[:, crit], "residual": 0.0, "top_value": vals[0],
               "top_vector": vecs[:, 0]}
        if r == 0:
            out.update(X=np.zeros((0, 0)), C=np.zeros((self.dim, 0)), A=np.zeros((0, 0)), M=np.zeros((0, 0)))
            run.last_X = None
            return out
        U = vecs[:, crit]
        C = self._curvature_gradients(problem, theta, U)
        a = C.T @ g
        A = smat(a, r) + (self.restoring / self.eta) * np.diag(2.0 / self.eta - vals[crit])
        M = 0.5 * (C.T @ C)
        X0 = run.last_X if (warm and run.last_X is not None and run.last_X.shape == (r, r)) else None
        try:
            res = solve_sdcp_svec(A, M, tol=self.sdcp_tol, X0=X0)
        except SDCPError as exc:
            when = "" if k is None else f" at k = {k:.6g} (GD step {int(k)})"
            raise IntegrationError(
                f"CentralFlow: the SDCP{when} has no usable solution ({exc.reason}): {exc} "
                f"θ = {np.array2string(theta, precision=6, threshold=20)}, critical eigenvalues "
                f"{np.array2string(vals[crit], precision=6)} (2/η = {2.0 / self.eta:.6g}).",
                step=None if k is None else int(k), time=k, cause="sdcp failed") from exc
        run.last_X = res.X
        out.update(U=U, X=res.X, C=C, A=A, M=M, residual=res.residual)
        return out

    # --- dynamics ---------------------------------------------------------------------
    def drift(self, k, y, run=None):
        sol = self.solve_sigma(y, k, run)
        g = sol["grad"]
        if sol["X"].size == 0:
            return -self.eta * g
        return -self.eta * (g + 0.5 * sol["C"] @ svec(sol["X"]))

    def record(self, k, y, run):
        """Σ of the saved state as a factor F (P, max_rank), Σ = FFᵀ, and its summaries."""
        sol = self.solve_sigma(y, k, run)
        F = np.zeros((self.dim, self.max_rank))
        out = {"sharpness": float(sol["top_value"]), "amplitude": 0.0, "sigma_trace": 0.0, "n_critical": 0.0,
               "sigma_rank": 0.0}
        X = sol["X"]
        if X.size:
            w, Q = np.linalg.eigh(0.5 * (X + X.T))
            r = X.shape[0]
            F[:, :r] = sol["U"] @ (Q * np.sqrt(np.maximum(w, 0.0)))
            out["n_critical"] = float(r)
            out["sigma_rank"] = float(np.sum(w > 1e-12 * max(1.0, np.abs(X).max())))
            out["sigma_trace"] = float(np.trace(X))
            out["amplitude"] = float(np.sqrt(max(float(np.sum((sol["top_vector"] @ F) ** 2)), 0.0)))
        out["sigma_factor"] = F
        return out

    def observables(self, k, Y, records=None, run=None):
        Y = np.asarray(Y)
        records = self.records_of(k, Y, run) if records is None else records
        Theta = Y[:, : self.dim]
        E = losses(self.problem, Theta)
        trace = records["sigma_trace"]
        return {
            "theta": Theta,
            "loss": E,
            "time_avg_loss": E + trace / self.eta,
            "sharpness": records["sharpness"],
            "amplitude": records["amplitude"],
            "amplitude_subspace": np.sqrt(np.maximum(trace, 0.0)),
            "sigma_factor": records["sigma_factor"],
            "n_critical": records["n_critical"].astype(int),
            "sigma_rank": records["sigma_rank"].astype(int),
        }

    def _from_handover(self, run, state):
        """From GD's state at step k0: θ = GD's two-step midpoint θ̄. Σ is not a state of the
        central flow (the SDCP gives it at every instant), so GD's oscillation is not used."""
        return self._theta0(state.theta_bar)
