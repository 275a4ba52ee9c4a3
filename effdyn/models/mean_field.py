"""Mean-field kinetic (weight, fluctuation) description of a wide two-layer network at the
Edge of Stability (theory §4; docs/mean_field.md).

Each neuron i is a particle carrying two things: its two-step average weights θ̄_i and
the amplitude u_i ∈ R^{p×r} of its sign-alternating oscillation, so that GD's iterates
read θ_{i,k} ≈ θ̄_{i,k} + (−1)^k u_{i,k}. In GD steps k, with η = N·η_MF the GD step of
the finite-width loss L_N,

    dθ̄/dk = −η [∇L_N(θ̄) + ½ Σ_q ∇³L_N(θ̄)[u_q, u_q]]        (gradient of F at fixed Σ)
    du_q/dk = η ∇²L_N(θ̄) u_q − 2 u_q                          (linearised form)
    du_q/dk = g(∇²L_N(θ̄)) u_q,  g(λ) = log|1 − ηλ| for ηλ > 1   (log form, Krylov)

where u_q ∈ R^P is the q-th column of the stacked particle amplitudes. Both right-hand
sides are mean-field functionals of the empirical measure of (θ̄_i, u_i): a particle's
drift depends on the others only through the network outputs f_k and the output
fluctuations Df_k, D²f_k (sums over particles). The mean-field time is t = k·η_MF.

The linearised rate ηλ − 2 is the expansion at ηλ = 2, where the oscillating modes live,
of the exact two-step rate log|1 − ηλ| of a small oscillation: both grow a mode with
ηλ > 2 and damp one with 1 < ηλ < 2. They differ on the bulk of the spectrum (ηλ ≈ 0),
where the linear form damps at rate 2 and the log form, restricted to ηλ > 1, at
log(clip). Stepped once per GD step (the step-exact map, ``solver="map"``), the
linearised equation gives u ← (ηH − I)u, which is exactly GD's one-step map of a small
oscillation, up to the sign convention of u.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import KW_ONLY, dataclass

import numpy as np

from .._checks import as_vector, choice, positive_float, positive_int
from ..errors import MissingFeatureError
from ..kernels import kinetic as _k
from ..problems.two_layer import TwoLayerNet
from ._shared import count_eigensolve, tracked_eigenpairs
from .base import AbstractModel


@dataclass(frozen=True)
class MeanFieldKinetic(AbstractModel):
    """Kinetic (θ̄, u) flow of mean-field GD on a finite-width two-layer network.

    Parameters
    ----------
    problem : effdyn.problems.TwoLayerNet
        The finite-width network (its width N fixes η = N·η_MF).
    eta_mf : float
        Mean-field learning rate η_MF > 0; EoS is at η_MF·S_MF = 2.
    rank : int
        Number r of oscillating modes carried by each particle (u_i ∈ R^{(d+1)×r}).
    form : {"linear", "log"}
        Fluctuation equation: the linearised rate ηH − 2 (default; compiled kernel, one
        fused evaluation per drift) or the log form g(H), g(λ) = log max(|1 − ηλ|, clip)
        on the oscillating modes (ηλ > 1) and log(clip) on the others, applied matrix-free
        by a Krylov (Lanczos) approximation with ``krylov_dim`` Hessian-vector products
        per mode.
    krylov_dim : int
        Krylov dimension of the log form.
    clip : float
        Log form only: lower bound on |1 − ηλ| inside the log (singular at ηλ = 1), and
        the per-step factor by which the non-oscillating modes (ηλ <= 1) of u are damped:
        there GD's displacement does not alternate and belongs to θ̄, not to u.
    map_substeps : int
        Euler sub-steps of θ̄ per GD step in :meth:`map_step` (>= 2 keeps θ̄ from
        re-developing GD's own period-two instability; see there).
    dense_max : int
        Problems with P <= dense_max use dense eigendecompositions for the observables'
        sharpness; larger ones use warm-started Lanczos.
    eig_tol : float
        Relative residual tolerance of the sharpness eigen-solves.

    Notes
    -----
    State layout: ``y = [θ̄ (P), U.ravel()]`` with U of shape (P, r) in θ's ordering, so
    ``U.reshape(N, d + 1, r)[i]`` is particle i's u_i. Time is in GD steps; the observable
    ``t`` converts to mean-field time.

    Examples
    --------
    >>> import effdyn as ed
    >>> from effdyn.problems.two_layer import teacher_student
    >>> p = teacher_student(width=50)
    >>> m = ed.models.MeanFieldKinetic(p, eta_mf=0.5)
    >>> m.eta
    25.0
    """

    problem: TwoLayerNet
    eta_mf: float
    rank: int = 1
    _: KW_ONLY
    form: str = "linear"
    krylov_dim: int = 12
    clip: float = 0.25
    map_substeps: int = 2
    dense_max: int = 64
    eig_tol: float = 1e-9

    name = "mean-field kinetic"
    requires = ("hvp", "third")

    def _check(self):
        if not isinstance(self.problem, TwoLayerNet):
            raise TypeError(
                "`problem` must be an effdyn.problems.TwoLayerNet (the particles are its neurons); "
                f"got {type(self.problem).__name__}. For other losses use effdyn.models.FreeEnergyFlow."
            )
        self._set("eta_mf", positive_float(self.eta_mf, "eta_mf"))
        rank = positive_int(self.rank, "rank")
        if rank > self.problem.dim:
            raise ValueError(f"`rank` must be <= the problem dimension P = {self.problem.dim}; got {self.rank}.")
        self._set("rank", rank)
        choice(self.form, "form", ("linear", "log"))
        self._set("krylov_dim", positive_int(self.krylov_dim, "krylov_dim"))
        clip = positive_float(self.clip, "clip")
        if clip >= 1:
            raise ValueError(f"`clip` must lie in (0, 1); got {self.clip}.")
        self._set("clip", clip)
        self._set("map_substeps", positive_int(self.map_substeps, "map_substeps"))
        dense_max = self.dense_max
        if isinstance(dense_max, bool) or not isinstance(dense_max, numbers.Integral) or dense_max < 0:
            raise ValueError(f"`dense_max` must be an integer >= 0; got {dense_max!r}.")
        self._set("dense_max", int(dense_max))
        self._set("eig_tol", positive_float(self.eig_tol, "eig_tol"))

    @property
    def eta(self) -> float:
        """The GD step of the finite-width loss, η = N·η_MF."""
        return self.problem.width * self.eta_mf

    @property
    def supports(self) -> tuple:
        return ("scipy", "diffrax", "map") if self.form == "linear" else ("scipy", "map")

    def make_run(self, run):
        from ..spectrum import EigenTracker

        run.tracker = EigenTracker(run.problem, k=1, dense_max=self.dense_max, tol=self.eig_tol)

    # --- state layout -----------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.problem.width

    @property
    def state_size(self) -> int:
        return self.dim * (1 + self.rank)

    def split(self, y):
        """(θ̄, U) of a state (or of saved states, with leading axes); U is (..., P, r)."""
        P = self.dim
        return y[..., :P], y[..., P:].reshape(y.shape[:-1] + (P, self.rank))

    def particles_of(self, y):
        """Per-particle views: θ̄ as (N, p) and u as (N, p, r)."""
        theta, U = self.split(np.asarray(y))
        N, p = self.width, self.problem.particle_dim
        return theta.reshape(N, p), U.reshape(N, p, self.rank)

    def pack(self, theta, U) -> np.ndarray:
        return np.concatenate([theta, np.asarray(U).ravel()])

    # --- initial state ----------------------------------------------------------------
    def _initial(self, run, theta0, u0=None, *, seed_from=None, at=None, filter_order=None, q=None,
                 project: bool = True):
        """Initial (θ̄, u): u given, from GD's oscillation, or a seed floor.

        Parameters
        ----------
        theta0 : array_like, shape (P,)
            Initial average weights θ̄ (e.g. GD's two-step midpoint at the EoS onset).
        u0 : array_like, shape (P,) or (P, r), optional
            Explicit fluctuation amplitudes.
        seed_from : GDTrajectory or pair of arrays, optional
            GD iterates from which the oscillation is read: two consecutive iterates
            ``(θ_k, θ_{k+1})`` or a trajectory holding every iterate around step ``at``
            (default ``at``: the trajectory's EoS onset). The estimate is projected on the
            top r eigenvectors of H(θ̄): u_q = v_q (v_qᵀ δ) (``project=False``, r = 1: u = δ).
        filter_order : int, optional
            How δ is read from the iterates: the alternating binomial filter
            ``δ = 2^{-m} Σ_j (−1)^{j0+j} C(m, j) θ_{j0+j}``, j0 = at − ⌊m/2⌋, which passes a
            period-two oscillation (−1)^k u unchanged and removes a smooth drift of θ up to
            degree m − 1. m = 1 is GD's half-step displacement (θ_k − θ_{k+1})/2 (up to the
            sign (−1)^k), the only choice for a pair; m = 2 is θ_k − θ̄_k. Default: 1 for a
            pair, 8 for a trajectory. At the EoS onset the oscillation is still at round-off
            level and the half-step displacement mostly measures the drift of θ, which
            over-seeds u by orders of magnitude (see docs/mean_field.md).
        q : float, optional
            Seed floor: u_q = q·v_q (amplitude q along each of the top r eigenvectors).
            Used, with q = 1e-3, when neither ``u0`` nor ``seed_from`` is given: u = 0 is
            invariant and would never self-stabilise (theory §2).
        project : bool
            Project the GD estimate on the top eigenvectors (default True).

        Returns
        -------
        ndarray, shape (P·(1 + r),)
            The state; the sign of u follows θ_k = θ̄ + (−1)^k u (no observable depends on it).
        """
        theta = self._theta0(theta0)
        P, r = self.dim, self.rank
        given = [name for name, v in (("u0", u0), ("seed_from", seed_from), ("q", q)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"Pass only one of `u0`, `seed_from` and `q`; got {given}.")
        if (at is not None or filter_order is not None) and seed_from is None:
            raise ValueError("`at` and `filter_order` describe `seed_from`; pass `seed_from=` as well.")
        if not isinstance(project, bool):
            raise TypeError(f"`project` must be True or False; got {project!r}.")
        if u0 is not None:
            U = np.array(u0, dtype=np.float64)
            if U.ndim == 1:
                U = U[:, None]
            if U.shape != (P, r):
                raise ValueError(f"`u0` must have shape ({P},) (rank 1) or ({P}, {r}); got {np.shape(u0)}.")
            if not np.all(np.isfinite(U)):
                raise ValueError("`u0` contains non-finite entries; pass finite amplitudes.")
            return self.pack(theta, U)
        if seed_from is not None:
            delta = self._gd_oscillation(seed_from, at, filter_order)
            if not project:
                if r != 1:
                    raise ValueError("`project=False` (u = δ) needs rank 1; project on the top eigenvectors for rank > 1.")
                return self.pack(theta, delta[:, None])
            V = self._top_vectors(run, theta, r)
            return self.pack(theta, V * (V.T @ delta))
        q = 1e-3 if q is None else positive_float(q, "q")
        return self.pack(theta, q * self._top_vectors(run, theta, r))

    def _gd_oscillation(self, seed_from, at, order):
        """The alternating-filter estimate δ of u (see :meth:`initial_state`)."""
        P = self.dim
        if order is not None:
            order = positive_int(order, "filter_order")
        if hasattr(seed_from, "theta") and hasattr(seed_from, "k"):
            order = 8 if order is None else order
            ks = np.asarray(getattr(seed_from, "theta_k", seed_from.k))
            thetas = np.asarray(seed_from.theta)
            if at is None:
                at = seed_from.eos_onset() if hasattr(seed_from, "eos_onset") else None
                if at is None:
                    raise ValueError("`seed_from` never reaches the EoS; pass the GD step `at=` explicitly.")
            if isinstance(at, bool) or not isinstance(at, numbers.Integral):
                raise TypeError(f"`at` must be an integer GD step; got {at!r}.")
            if len(ks) != len(thetas):
                raise ValueError("`seed_from.theta` does not match its step axis `theta_k`.")
            j0 = int(at) - order // 2
            rows = []
            for j in range(order + 1):
                hit = np.flatnonzero(ks == j0 + j)
                if hit.size == 0:
                    raise ValueError(
                        f"`seed_from` must hold the GD iterates of steps {j0}..{j0 + order} for `at`={at} and "
                        f"`filter_order`={order}; run GD with theta_every=1 or lower `filter_order`."
                    )
                rows.append(as_vector(thetas[hit[0]], f"seed_from.theta[{j0 + j}]", P))
        else:
            order = 1 if order is None else order
            if order != 1:
                raise ValueError(f"A pair (θ_k, θ_k+1) supports only `filter_order`=1; got {order}. Pass a trajectory.")
            try:
                a, b = seed_from
            except (TypeError, ValueError):
                raise TypeError(
                    "`seed_from` must be a GD trajectory (effdyn.gd(...) with theta_every=1) or a pair "
                    f"(θ_k, θ_k+1) of consecutive GD iterates; got {type(seed_from).__name__}."
                ) from None
            rows = [as_vector(a, "seed_from[0]", P), as_vector(b, "seed_from[1]", P)]
            j0 = 0  # a pair carries no step index: take k even, θ_k = θ̄ + u
        weights = np.array([(-1.0) ** (j0 + j) * math.comb(order, j) for j in range(order + 1)]) / 2.0**order
        return np.tensordot(weights, np.array(rows), axes=1)

    def _top_vectors(self, run, theta, k):
        from ..spectrum import top_eigenpairs

        count_eigensolve(run.problem)
        _, V = top_eigenpairs(run.problem, theta, k=k, dense_max=self.dense_max, tol=self.eig_tol)
        return V

    # --- dynamics ---------------------------------------------------------------------
    def _count_fused(self, run, hvps: bool = True):
        """One fused kernel call: a gradient, r third contractions and (drift) r HVPs."""
        c = run.counters
        c.gradients += 1
        c.thirds += self.rank
        if hvps:
            c.hvps += self.rank

    def drift(self, k, y, run=None):
        run = self._run(run)
        theta, U = self.split(np.asarray(y, dtype=np.float64))
        U = np.ascontiguousarray(U)
        if self.form == "linear":
            self._count_fused(run)
            return self.problem.run_kernel(_k._kinetic_drift, theta, U, self.eta)
        self._count_fused(run, hvps=False)
        G, _ = self.problem.run_kernel(_k._contractions, theta, U, -self.eta, -0.5 * self.eta, 0.0)
        dU = np.column_stack([self._krylov_apply(run, theta, U[:, q], self._log_rate) for q in range(self.rank)])
        return np.concatenate([G, dU.ravel()])

    def map_step(self, k, y, run=None):
        """One GD step: u by GD's one-step map of a small oscillation, θ̄ by sub-steps.

        u: for the linearised form u + (ηH − 2)u = (ηH − I)u, exactly GD's linear map of a
        small oscillation (up to the sign convention of u); for the log form
        exp(g(H))u (Krylov), the same magnitudes on the oscillating modes.

        θ̄: ``map_substeps`` Euler sub-steps of length 1/``map_substeps`` with u frozen (Σ
        changes by a factor |1 − ηλ|² ≈ 1 per step at the EoS). One sub-step would be GD on
        F itself: at η·λ_max > 2 the average trajectory then grows its own period-two
        oscillation, which is what u is there to carry.
        """
        run = self._run(run)
        theta, U = self.split(np.asarray(y, dtype=np.float64))
        theta = theta.copy()
        U = np.ascontiguousarray(U)
        s = self.map_substeps
        if self.form == "linear":
            self._count_fused(run)
            dy = self.problem.run_kernel(_k._kinetic_drift, theta, U, self.eta)
            step = dy[: self.dim] / s
            U1 = U + dy[self.dim:].reshape(U.shape)
        else:
            self._count_fused(run, hvps=False)
            step, _ = self.problem.run_kernel(_k._contractions, theta, U, -self.eta / s, -0.5 * self.eta / s, 0.0)
            U1 = np.column_stack([self._krylov_apply(run, theta, U[:, q], self._growth_factor)
                                  for q in range(self.rank)])
        theta += step
        for _ in range(s - 1):
            self._count_fused(run, hvps=False)
            step, _ = self.problem.run_kernel(_k._contractions, theta, U, -self.eta / s, -0.5 * self.eta / s, 0.0)
            theta += step
        return np.concatenate([theta, U1.ravel()])

    def _log_rate(self, lam):
        """g(λ) = log|1 − ηλ| on oscillating modes (ηλ > 1), log(clip) on the others."""
        return np.log(self._growth_factor(lam))

    def _growth_factor(self, lam):
        x = self.eta * np.asarray(lam)
        return np.where(x > 1.0, np.maximum(np.abs(1.0 - x), self.clip), self.clip)

    def _krylov_apply(self, run, theta, u, fun):
        """fun(H)u by m-step Lanczos with full reorthogonalisation (start vector u)."""
        beta0 = float(np.linalg.norm(u))
        if beta0 == 0.0:
            return np.zeros_like(u)
        m = min(self.krylov_dim, self.dim)
        Q = np.zeros((self.dim, m))
        alpha = np.zeros(m)
        beta = np.zeros(m)
        Q[:, 0] = u / beta0
        j_end = m
        for j in range(m):
            w = run.problem._hvp(theta, np.ascontiguousarray(Q[:, j]))
            alpha[j] = Q[:, j] @ w
            w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
            w -= Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
            if j + 1 == m:
                break
            beta[j] = np.linalg.norm(w)
            scale = max(np.max(np.abs(alpha[: j + 1])), np.max(beta[:j], initial=0.0))
            if beta[j] <= 1e-12 * scale:
                j_end = j + 1  # invariant subspace: the Krylov result is exact
                break
            Q[:, j + 1] = w / beta[j]
        T = np.diag(alpha[:j_end]) + np.diag(beta[: j_end - 1], 1) + np.diag(beta[: j_end - 1], -1)
        lam, S = np.linalg.eigh(T)
        return beta0 * (Q[:, :j_end] @ (S @ (fun(lam) * S[0])))

    def jax_drift(self):
        if self.form != "linear":
            raise MissingFeatureError(
                "MeanFieldKinetic(form='log') has no JAX drift (its Krylov step is NumPy); use "
                "form='linear' for diffrax, or a scipy solver / solver='map'."
            )
        from .._jax import import_jax

        jax, jnp = import_jax()
        loss = self.problem.jax_loss()
        grad = jax.grad(loss)
        P, r, eta = self.dim, self.rank, float(self.eta)

        def hess_cols(theta, U):
            return jax.vmap(lambda u: jax.jvp(grad, (theta,), (u,))[1], in_axes=1, out_axes=1)(U)

        def f(k, y, args):
            theta, U = y[:P], y[P:].reshape(P, r)
            curvature = lambda t: 0.5 * jnp.sum(U * hess_cols(t, U))  # noqa: E731
            dtheta = -eta * (grad(theta) + jax.grad(curvature)(theta))
            return jnp.concatenate([dtheta, (eta * hess_cols(theta, U) - 2.0 * U).ravel()])

        return f

    # --- output -----------------------------------------------------------------------
    def record(self, k, y, run):
        theta, U = self.split(np.asarray(y, dtype=np.float64))
        vals, vecs = tracked_eigenpairs(run, theta)
        return {"sharpness": float(vals[0]), "amplitude": float(np.linalg.norm(U.T @ vecs[:, 0]))}

    def observables(self, k, Y, records=None, run=None):
        """theta, u, loss, curvature (u_qᵀHu_q), free_energy = time_avg_loss, sharpness,
        sharpness_mf = N·sharpness, amplitude = ‖Uᵀv_1‖, amplitude_subspace = ‖U‖_F,
        sigma_trace = tr Σ, t = k·η_MF."""
        k = np.asarray(k, dtype=float)
        Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
        records = self.records_of(k, Y, run) if records is None else records
        thetas, Us = self.split(Y)
        n = len(Y)
        loss = np.empty(n)
        curv = np.empty((n, self.rank))
        for j in range(n):
            theta, U = np.ascontiguousarray(thetas[j]), np.ascontiguousarray(Us[j])
            loss[j], curv[j] = self.problem.run_kernel(_k._quadratic_forms, theta, U)
        free = loss + 0.5 * curv.sum(axis=1)
        sharp = records["sharpness"]
        trace = np.sum(Us**2, axis=(1, 2))
        return {
            "theta": thetas, "u": Us, "loss": loss, "curvature": curv, "free_energy": free,
            "time_avg_loss": free, "sharpness": sharp, "sharpness_mf": self.width * sharp,
            "amplitude": records["amplitude"], "amplitude_subspace": np.sqrt(trace), "sigma_trace": trace,
            "t": k * self.eta_mf,
        }

    def free_energy(self, y) -> float:
        """Macroscopic free energy F = L(μ̄) + ½⟨𝓗, Σ⟩ = L(θ̄) + ½ Σ_q u_qᵀ H(θ̄) u_q."""
        y = as_vector(y, "y", self.state_size)
        theta, U = self.split(y)
        loss, curv = self.problem.run_kernel(_k._quadratic_forms, theta, np.ascontiguousarray(U))
        return float(loss + 0.5 * curv.sum())

    def _from_handover(self, run, state):
        """From GD's state at step k0: θ̄ = GD's two-step midpoint and u from GD's half-step
        projected on the top-r eigenvectors of H(θ̄), u_q = ±v_q (v_qᵀδ) (``state.factor``),
        with the model's sign convention θ_k = θ̄ + (−1)^k u: θ_{k0} ≈ θ̄ − δ gives
        u = (−1)^{k0+1} δ. The projection keeps the oscillation and drops the slow drift that
        δ also holds. Needs a state with n >= rank eigen-directions."""
        theta = self._theta0(state.theta_bar)
        sign = -1.0 if state.k0 % 2 == 0 else 1.0
        return self.pack(theta, sign * state.factor(self.rank))
