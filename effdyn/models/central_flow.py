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
from ._shared import cached_jax_drift, losses, tracked_eigenpairs
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
    handle with smaller steps. When several critical eigenvalues give a singular
    B (e.g. r(r+1)/2 > P), Σ is not unique; the drift is.

    *JAX.* :meth:`jax_drift` (diffrax) and :meth:`jax_map` (the compiled step-exact map
    for problems from ``from_jax``) evaluate the same equations in JAX: one critical
    eigenvalue by the closed form, more by :func:`effdyn.engine_jax.sdcp.solve_sdcp_jax`
    on a static ``max_rank × max_rank`` problem; the eigenpairs from a dense ``eigh`` for
    P <= 64 and from the JAX eigen-tracker above (warm-started along the map; solved cold
    at every evaluation of the diffrax drift, which carries no run state).

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
    supports = ("scipy", "diffrax", "map")
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

    # --- JAX: the diffrax drift and the compiled step-exact map (effdyn.engine_jax) -------
    def jax_args(self):
        """η, window and restoring rate as arrays, and the problem's data (``from_jax`` with
        ``data=``; None otherwise), so that none of them is compiled into the drift."""
        args = self._jax_params()
        args["data"] = getattr(self.problem, "data_args", None)
        return args

    def _jax_params(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        return {"eta": jnp.asarray(self.eta, jnp.float64), "window": jnp.asarray(self.window, jnp.float64),
                "restoring": jnp.asarray(self.restoring, jnp.float64)}

    def _jax_spectrum(self):
        from ..engine_jax.compiled import Spectrum
        from ..spectrum import DENSE_MAX

        # The top pair is always wanted (sharpness, amplitude), and so is every critical one.
        # Their vectors enter the SDCP, but the eigenvalue criterion at 1e-7·(2/η) is enough
        # there: on the digits MLP at P ≈ 2·10⁴ at the EoS (five critical eigenvalues) it
        # took 85 HVPs per step against 208 for residuals of 1e-6·(2/η) (5 cold solves in 11
        # steps against 1), with θ within 1.5e-6 relative, the sharpness within 4e-6·(2/η)
        # and the amplitude within 3e-4 relative of them after 10 steps.
        return Spectrum(n=self.max_rank, dense=self.dim <= DENSE_MAX, k=1, rtol=CENTRAL_FLOW_RTOL,
                        criterion="eigenvalue")

    def jax_drift(self):
        """Pure-JAX drift for diffrax: the eigenpairs solved cold at every evaluation (dense
        ``eigh`` for P <= 64, the JAX eigen-tracker above), the SDCP from X = 0. A failed
        SDCP makes the drift NaN, which stops the solve as non-finite."""
        from ..engine_jax.compiled import derivatives_of

        d = derivatives_of(self.problem, type(self).__name__)
        spectrum = self._jax_spectrum()
        R, tol, P = self.max_rank, self.sdcp_tol, self.dim

        def build():
            from .._jax import import_jax
            from ..engine_jax.compiled import fresh_run

            _, jnp = import_jax()

            def f(k, y, args):
                data = args.get("data")
                vals, U, _ = spectrum.solve(fresh_run(**spectrum.init(P)), d, y, data,
                                            threshold=_critical(args), scale=2.0 / args["eta"])
                g, C, X, _, ok, _ = _sigma_jax(d, y, data, vals, U, args, jnp.zeros((R, R)), -1, R=R, tol=tol)
                dy = -args["eta"] * (g + 0.5 * C @ _svec(X))
                return jnp.where(ok, dy, jnp.nan)

            return f

        return cached_jax_drift(self.problem, f"central_flow:{R}:{tol!r}:{spectrum}", build)

    def jax_map(self, general: bool = False):
        """The step-exact map (θ ← θ − η[∇E + ½T(θ)[Σ]], Σ from the SDCP at θ) as pure JAX
        functions; the JAX run state carries the tracker and the last SDCP solution (the
        next one's warm start, as ``last_X`` in the NumPy run state). A failed SDCP stops
        the solve with cause "sdcp failed"."""
        from .._jax import import_jax
        from ..engine_jax.compiled import RETRY, CompiledMap, bump, fresh_run, require_jax_problem, tracker_report
        from ..outcomes import Cause

        _, jnp = import_jax()
        problem = require_jax_problem(self)
        spectrum = self._jax_spectrum()
        R, tol, P = self.max_rank, self.sdcp_tol, self.dim
        full_rank_possible = R < P

        def evaluate(k, y, jrun, p, data):
            vals, U, jrun = spectrum.solve(jrun, problem, y, data, threshold=_critical(p), scale=2.0 / p["eta"])
            g, C, X, r, ok, retry = _sigma_jax(problem, y, data, vals, U, p, jrun["X"], jrun["r"], R=R, tol=tol,
                                               general=general)
            jrun = bump({**jrun, "X": X, "r": r,
                         "n_full": jrun["n_full"] + ((r == R) & full_rank_possible).astype(jnp.int64),
                         "status": jnp.where(retry, RETRY, jnp.where(ok, jrun["status"], 1))},
                        gradients=1, thirds=r * (r + 1) // 2)
            return {"vals": vals, "U": U, "g": g, "C": C, "X": X, "r": r}, jrun

        def record(k, y, ev, jrun, p, data):
            X, r = ev["X"], ev["r"]
            act = jnp.arange(R) < r
            # inactive rows pushed below every eigenvalue of the real block, so that the
            # last r eigenvectors are the block's, in the order numpy's eigh of it gives
            w, Q = jnp.linalg.eigh(X - jnp.diag(jnp.where(act, 0.0, 1.0 + jnp.max(jnp.abs(X)))))
            F = jnp.roll(ev["U"] @ (Q * jnp.sqrt(jnp.maximum(w, 0.0))), r - R, axis=1)
            scale = jnp.maximum(1.0, jnp.max(jnp.abs(X)))
            return {"sharpness": ev["vals"][0],
                    "amplitude": jnp.sqrt(jnp.maximum(jnp.sum((ev["U"][:, 0] @ F) ** 2), 0.0)),
                    "sigma_trace": jnp.trace(X), "n_critical": r.astype(jnp.float64),
                    "sigma_rank": jnp.sum((jnp.arange(R) >= R - r) & (w > 1e-12 * scale)).astype(jnp.float64),
                    "sigma_factor": F}, jrun

        def advance(k, y, ev, jrun, p, data):
            return y - p["eta"] * (ev["g"] + 0.5 * ev["C"] @ _svec(ev["X"])), jrun

        def init_run(y0, seed):
            return fresh_run(**spectrum.init(P, seed), X=jnp.zeros((R, R)), r=jnp.asarray(-1, jnp.int64),
                             n_full=jnp.zeros((), jnp.int64))

        def report(state):
            out = tracker_report(state)
            n = int(np.asarray(state.get("n_full", 0)))
            if n:
                out.append(f"at {n} evaluations all {R} computed eigenvalues were critical (more may be); increase "
                           "`max_rank`")
            return out

        from ..engine_jax.compiled import max_abs

        return CompiledMap(key=("CentralFlow", R, tol, spectrum, general), params=self._jax_params(),
                           init_run=init_run, evaluate=evaluate, record=record, advance=advance, magnitude=max_abs,
                           causes={1: (Cause.SDCP_FAILED, "the SDCP has no usable solution")}, report=report,
                           upgrade=None if general else (lambda: self.jax_map(general=True)))

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


# --- the JAX evaluation (shared by jax_drift and jax_map) --------------------------------------

def _critical(p):
    """Eigenvalues at or above this are critical: (2/η)(1 − window)."""
    return (2.0 / p["eta"]) * (1.0 - p["window"])


def _svec(X):
    from ..engine_jax.sdcp import svec

    return svec(X)


#: Tolerance of the central flow's tracker (eigenvalue criterion, relative to 2/η) on the
#: JAX engine above the dense limit (see ``_jax_spectrum``).
CENTRAL_FLOW_RTOL = 1e-7


def _sigma_jax(d, theta, data, vals, U, p, X0, r0, *, R, tol, general=True):
    """(∇E, C, X, r, ok, retry) at θ from its top eigenpairs (vals descending, U (P, R)).

    The first r = #{vals >= (2/η)(1 − window)} pairs are critical. C (P, R(R+1)/2) holds the
    curvature gradients ∇(u_iᵀHu_j) of the critical pairs in svec order of the static R × R
    problem (√2 off the diagonal; zero columns for the rest), each a mixed second
    directional derivative (one direction's cost); X solves the SDCP with
    A = smat(Cᵀ∇E) + (κ/η)(2/η − Λ) and B = ½CᵀC: zero for r = 0, the closed form for r = 1,
    and for r >= 2 the JAX SDCP solver (warm-started from X0 when the previous r0 equals r)
    — or, with ``general=False``, nothing but ``retry`` set (the solver is then not compiled).
    """
    from .._jax import import_jax
    from ..engine_jax.compiled import mixed_third
    from ..engine_jax.sdcp import smat, solve_sdcp_jax, svec_pairs

    jax, jnp = import_jax()
    eta, kappa = p["eta"], p["restoring"]
    g = d.pure_grad(theta, data)
    crit = vals >= _critical(p)
    r = jnp.sum(crit).astype(jnp.int64)
    I, J, W = svec_pairs(R)
    Ij, Jj, Wj = jnp.asarray(I), jnp.asarray(J), jnp.asarray(W)
    mixed = mixed_third(d)

    def column(q):
        i, j = Ij[q], Jj[q]
        return jax.lax.cond((i < r) & (j < r), lambda _: Wj[q] * mixed(theta, U[:, i], U[:, j], data),
                            lambda _: jnp.zeros_like(theta), None)

    C = jax.lax.map(column, jnp.arange(len(I))).T
    a = C.T @ g
    A = smat(a, R) + (kappa / eta) * jnp.diag(jnp.where(crit, 2.0 / eta - vals, 0.0))
    M = 0.5 * (C.T @ C)
    no = jnp.zeros((), bool)

    def none(_):
        return jnp.zeros((R, R)), jnp.ones((), bool), no

    def one(_):
        # σ² = −A/B = max(0, 2[⟨−∇E, ∇S⟩ − (κ/η)(2/η − S)]/‖∇S‖²); no Σ can restore a critical
        # eigenvalue above the edge whose gradient vanishes (B = 0 with A < 0)
        a00, b = A[0, 0], M[0, 0]
        x = jnp.where(a00 < 0, -a00 / jnp.where(b > 0, b, 1.0), 0.0)
        return jnp.zeros((R, R)).at[0, 0].set(x), (a00 >= 0) | (b > 0), no

    def many(_):
        if not general:
            return jnp.zeros((R, R)), jnp.ones((), bool), jnp.ones((), bool)
        X, _, ok, _ = solve_sdcp_jax(A, M, r, jnp.where(r0 == r, X0, 0.0), tol=tol)
        return X, ok, no

    X, ok, retry = jax.lax.switch(jnp.minimum(r, 2), [none, one, many], None)
    return g, C, X, r, ok, retry
