"""The free-energy θ/Σ flow (theory §2): the average trajectory θ of GD coupled with the
time-averaged covariance Σ of its fast period-two oscillation.

    dθ/dk = −η ∇_θ F(θ, Σ),    F(θ, Σ) = E(θ) + ½⟨H(θ), Σ⟩
    log form  : dΣ/dk = GΣ + ΣG,  G = log|I − ηH(θ)|   (Σ = VVᵀ, dV/dk = G V)
    rate form : dΣ/dk = MΣM − Σ,  M = I − ηH(θ)        (= −η(HΣ+ΣH) + η²HΣH)

Both Σ equations act only on the *oscillating* part of the spectrum: the tracked top
eigenpairs of H with λ above ``threshold`` (default 1/η, where 1 − ηλ changes sign and an
oscillation can alternate). Everything else is not an oscillation but part of the mean,
so Σ is damped there at the rate of the clip, ``log(clip)`` per step. The same clip bounds
|1 − ηλ| from below, so the log form stays finite at ηλ = 1.

Σ = 0 is invariant: a model started without fluctuations follows gradient flow past 2/η and
never self-stabilises. Two seeds are offered (see :meth:`FreeEnergyFlow.initial_state`):
Σ from GD's first half-step displacement, or a floor q along the top eigenvectors. With
``floor=q > 0`` the floor also persists in time: a decaying top mode relaxes towards
amplitude² q instead of towards 0. This stands in for the round-off and forcing that keep
GD's own oscillation alive before the onset; the sharpness overshoot after the onset grows
like √log(1/q) (measured in the tests).

``closure="chord"`` (rank 1; effdyn's own extension, not from the seed paper) replaces the
second-order averages by the two points of the cycle θ± = θ ± V: dθ/dk = −η(∇E(θ+) +
∇E(θ−))/2 (the centre update the edge-flow reconstruction also uses), and the top rate
uses the chord curvature Vᵀ(∇E(θ+) − ∇E(θ−))/(2‖V‖²) in place of the curvature at θ. An
exact period-two orbit of GD satisfies both conditions exactly (∇E(θ+) + ∇E(θ−) = 0 and
chord curvature 2/η), so it is a rest point of this closure; the second-order closure agrees
with it to O(‖V‖⁴) in the drift and O(‖V‖²) in the rate (theory §6).
"""

from __future__ import annotations

import numpy as np

from .._validation import as_matrix, choice, nonneg_int, positive_float, positive_int
from ..errors import MissingFeatureError
from .base import AbstractModel
from .gradient_flow import two_point_gradients


class FreeEnergyFlow(AbstractModel):
    """Free-energy θ/Σ flow of GD at the Edge of Stability.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        Must provide ``third`` (closed-form kernels for built-ins, autodiff for ``from_jax``).
    eta : float
        GD learning rate η; time is in GD steps.
    rank : int
        Rank r of Σ = VVᵀ (number of oscillating modes carried), 1 <= r <= P.
    sigma_form : {"log", "rate"}
        Covariance equation. "log" (default) is exact every two GD steps for frozen H and
        keeps the rank of Σ; "rate" is the small-step form and needs ``storage="dense"``.
    storage : {"factor", "log-factor", "dense"}
        Σ stored as its factor V (P × r, default), as the same factor in log-amplitude
        coordinates, or as a dense P × P matrix (small P). "log-factor" keeps each column as
        V_j = e^{ρ_j} v̂_j (state: θ, ρ (r), v̂ (P × r)), the same vector field written for
        log-amplitudes: the oscillation amplitude spans ~15 decades between its round-off
        seed and the Edge of Stability, and in these coordinates an adaptive integrator
        controls its error relatively at every size, so loose tolerances stay accurate
        through the onset (see :meth:`atol_weights`). Log form only; every column of the
        initial factor must be nonzero.
    n_track : int, optional
        Number of top eigenpairs of H computed per drift evaluation (default r + 1).
    threshold : float, optional
        Eigenvalues above it count as oscillating (default 1/η).
    clip : float
        Lower bound on |1 − ηλ| in the log form, and the per-step damping factor of the
        non-oscillating directions (rate log(clip)). Default 0.25.
    floor : "roundoff", float or None
        Persistent seed q >= 0: a decaying top-r mode relaxes towards amplitude² q instead of
        towards 0. The default "roundoff" uses q = (ε_mach·max(1, ‖θ‖))², the size of the
        round-off that seeds GD's own oscillation; 0 gives the pure model (Σ = 0 invariant).
        None means "roundoff" for the log form and 0 for the rate form (no floor there).
    dense_max : int
        Dense eigendecomposition of H up to this P, Lanczos (warm-started) above.
    relative_sigma_tol : bool
        Control the integration error of Σ relatively (its ``atol`` scaled by 1e-20). Σ
        seeded at round-off size lies far below any ``atol`` until the onset, so without
        this the first cycles after the onset depend on the tolerance (see
        :meth:`atol_weights`); with it they converge, at a higher cost. Default False.
    closure : {"second-order", "chord"}
        How the oscillation enters the mean and its rate. "second-order" (default): F = E +
        ½⟨H, Σ⟩ and the rates from the Hessian at θ, as derived in theory §1–2. "chord"
        (rank 1, factor storage): the two-point form of the module docstring, whose rest
        points are GD's exact period-two orbits; ``time_avg_loss`` and ``sharpness`` are then
        the averages over θ± (½(E(θ+) + E(θ−)), ½(λ₁(θ+) + λ₁(θ−)), GD's two-step averages
        at a rest point), and ``sharpness_centre`` is λ₁(θ).
        Uses two gradients and one Hessian-vector product per evaluation instead of a
        gradient and a third-derivative contraction.
    """

    name = "free-energy flow"

    def __init__(self, problem, eta, rank: int = 1, *, sigma_form: str = "log", storage: str | None = None,
                 n_track: int | None = None, threshold: float | None = None, clip: float = 0.25,
                 floor=None, dense_max: int = 64, relative_sigma_tol: bool = False,
                 closure: str = "second-order"):
        super().__init__(problem, eta)
        if not problem.has_third:
            raise MissingFeatureError(
                f"FreeEnergyFlow needs `problem.third` (∇_θ⟨H, Σ⟩); {type(problem).__name__} does not "
                "implement `_third`. Wrap the loss with effdyn.problems.from_jax to get it by autodiff."
            )
        P = self.dim
        self.rank = positive_int(rank, "rank")
        if self.rank > P:
            raise ValueError(f"`rank` must be <= the problem dimension P = {P}; got {rank}.")
        self.sigma_form = choice(sigma_form, "sigma_form", ("log", "rate"))
        if storage is None:
            storage = "dense" if sigma_form == "rate" else "factor"
        self.storage = choice(storage, "storage", ("factor", "log-factor", "dense"))
        # factor and log-factor storage carry V (Σ = VVᵀ); log-factor only changes coordinates
        self._factored = self.storage != "dense"
        if self.sigma_form == "rate" and self.storage != "dense":
            raise ValueError(
                "`sigma_form='rate'` fills in the rank of Σ and cannot be stored as a factor; "
                "pass `storage='dense'` (small P) or use `sigma_form='log'`."
            )
        self.n_track = min(P, self.rank + 1) if n_track is None else positive_int(n_track, "n_track")
        if not self.rank <= self.n_track <= P:
            raise ValueError(f"`n_track` must lie in [rank, P] = [{self.rank}, {P}]; got {n_track}.")
        self.threshold = 1.0 / self.eta if threshold is None else positive_float(threshold, "threshold")
        self.clip = positive_float(clip, "clip")
        if self.clip >= 1:
            raise ValueError(f"`clip` must lie in (0, 1) (a per-step damping factor); got {clip}.")
        if floor is None:  # the floor is implemented for the log form only
            floor = "roundoff" if self.sigma_form == "log" else 0.0
        if isinstance(floor, str):
            choice(floor, "floor", ("roundoff",))
            self.floor = floor
        else:
            self.floor = float(floor)
            if not (np.isfinite(self.floor) and self.floor >= 0):
                raise ValueError(f"`floor` must be 'roundoff' or a finite number >= 0; got {floor!r}.")
        if self.floor != 0 and self.sigma_form == "rate":
            raise ValueError("`floor` is implemented for the log form only; use `sigma_form='log'` or floor=0.")
        self.dense_max = nonneg_int(dense_max, "dense_max")
        if not isinstance(relative_sigma_tol, bool):
            raise TypeError(f"`relative_sigma_tol` must be True or False; got {relative_sigma_tol!r}.")
        if relative_sigma_tol and self.storage == "log-factor":
            raise ValueError("`relative_sigma_tol` is not needed with `storage='log-factor'` (its amplitude "
                             "coordinates are already controlled relatively); drop it.")
        self.relative_sigma_tol = relative_sigma_tol
        self.closure = choice(closure, "closure", ("second-order", "chord"))
        if self.closure == "chord":
            if self.rank != 1 or not self._factored:  # (factor storage implies the log form)
                raise ValueError(
                    "`closure='chord'` is implemented for rank 1 with the log form and factor storage "
                    f"(got rank={self.rank}, sigma_form={self.sigma_form!r}, storage={self.storage!r}); use "
                    "rank=1 with storage='factor' or 'log-factor', or closure='second-order'."
                )
        self._warm = None  # last tracked eigenvectors, a warm start for Lanczos

    # --- state layout -----------------------------------------------------------------
    @property
    def sigma_size(self) -> int:
        P = self.dim
        if self.storage == "log-factor":
            return self.rank + P * self.rank
        return P * self.rank if self.storage == "factor" else P * P

    @property
    def state_size(self) -> int:
        return self.dim + self.sigma_size

    def split(self, y):
        """(θ, S) with S the factor V (P, r) or the dense Σ (P, P)."""
        P = self.dim
        if self.storage == "log-factor":
            theta, rho, Vhat = self.log_parts(y)
            return theta, Vhat * np.exp(rho)[..., None, :]
        shape = (P, self.rank) if self.storage == "factor" else (P, P)
        return y[..., :P], y[..., P:].reshape(y.shape[:-1] + shape)

    def log_parts(self, y):
        """(θ, ρ, v̂) of a ``storage="log-factor"`` state: V = v̂·diag(e^ρ)."""
        P, r = self.dim, self.rank
        return y[..., :P], y[..., P:P + r], y[..., P + r:].reshape(y.shape[:-1] + (P, r))

    def to_log_factor(self, V) -> np.ndarray:
        """[ρ, v̂] of a factor V (P, r): ρ_j = log‖V_j‖, v̂_j = V_j/‖V_j‖ (a zero column gives
        ρ = −inf, which the solvers stop on as non-finite)."""
        norms = np.linalg.norm(V, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.concatenate([np.log(norms), (V / norms).ravel()])

    def _log_factor_rate(self, y, dV) -> np.ndarray:
        """(dρ, dv̂) from dV with V = v̂ e^ρ: D = dV e^{−ρ}, dρ = v̂ᵀD/‖v̂‖², dv̂ = D − v̂ dρ
        (dv̂ ⟂ v̂, so ‖v̂‖ stays put up to the integrator's error; V is exact either way)."""
        _, rho, Vhat = self.log_parts(y)
        D = dV * np.exp(-rho)
        drho = np.sum(Vhat * D, axis=0) / np.sum(Vhat**2, axis=0)
        return np.concatenate([drho, (D - Vhat * drho).ravel()])

    def sigma_of(self, y) -> np.ndarray:
        """Dense Σ (P, P) of a state."""
        _, S = self.split(y)
        return S @ np.swapaxes(S, -1, -2) if self._factored else S

    def factor_of(self, y) -> np.ndarray:
        """A factor U with Σ = UUᵀ (P, r'), for the third-derivative contraction."""
        _, S = self.split(y)
        return S if self._factored else self._factor_dense(S)

    # --- eigenpairs and the covariance generator ---------------------------------------
    def eigenpairs(self, theta):
        """Top ``n_track`` eigenpairs (descending) of H(θ)."""
        if self.dim <= self.dense_max:
            w, Q = np.linalg.eigh(self.problem._hessian(theta))
            return w[::-1][: self.n_track], Q[:, ::-1][:, : self.n_track]
        from ..spectrum import top_eigenpairs

        v0 = None if self._warm is None else self._warm[:, 0]
        w, Q = top_eigenpairs(self.problem, theta, k=self.n_track, v0=v0, dense_max=self.dense_max)
        self._warm = Q
        return w, Q

    def rates(self, lam):
        """Per-step log-amplitude rates g_i of the tracked modes and g_off of the rest."""
        g_off = np.log(self.clip)
        osc = lam > self.threshold
        g = np.where(osc, np.log(np.maximum(np.abs(1.0 - self.eta * lam), self.clip)), g_off)
        return g, g_off

    def floor_at(self, theta) -> float:
        """Floor q at θ: the number given, or (ε_mach·max(1, ‖θ‖))² for "roundoff"."""
        if self.floor == "roundoff":
            return float((np.finfo(np.float64).eps * max(1.0, float(np.linalg.norm(theta)))) ** 2)
        return self.floor

    def _floored(self, g, Q, S, q):
        """Rates with the persistent floor: a decaying top mode relaxes towards amplitude² q."""
        if q <= 0:
            return g
        g = g.copy()
        r = min(self.rank, len(g))
        if self._factored:
            m = np.sum((Q[:, :r].T @ S) ** 2, axis=1)
        else:
            m = np.einsum("pi,pq,qi->i", Q[:, :r], S, Q[:, :r])
        with np.errstate(divide="ignore"):
            shrink = np.clip(1.0 - q / np.maximum(m, 1e-300), 0.0, 1.0)
        g[:r] = np.where(g[:r] < 0, g[:r] * shrink, g[:r])
        return g

    # --- dynamics ---------------------------------------------------------------------
    def theta_drift(self, theta, S) -> np.ndarray:
        """dθ/dk = −η(∇E + ½∇_θ⟨H, Σ⟩)."""
        U = S if self._factored else self._factor_dense(S)
        # One call for ∇E + ½∇_θ Σ_r u_rᵀHu_r (a fused kernel where the problem has one;
        # a = 1, b = ½ keep the default path's arithmetic identical to two calls).
        g = self.problem._grad_third(theta, np.ascontiguousarray(U), np.ones(U.shape[1]), 1.0, 0.5)
        return -self.eta * g

    @staticmethod
    def _factor_dense(S):
        w, Q = np.linalg.eigh(0.5 * (S + S.T))
        keep = w > 1e-300
        return np.ascontiguousarray(Q[:, keep] * np.sqrt(w[keep]))

    #: Below this amplitude (relative to max(1, ‖θ‖)) the chord correction of the top
    #: curvature is left out: it is O(‖V‖²) there (≤ 1e-8 relative), while the difference
    #: ∇E(θ+) − ∇E(θ−) it is computed from would be dominated by round-off.
    CHORD_MIN_AMPLITUDE = 1e-4

    def _chord(self, theta, S, lam):
        """θ-drift and top eigenvalue of the chord closure (rank 1, V = S[:, 0])."""
        V = np.ascontiguousarray(S[:, 0])
        g_plus, g_minus = two_point_gradients(self.problem, theta, V)
        dtheta = -0.5 * self.eta * (g_plus + g_minus)
        a2 = float(V @ V)
        if a2 > (self.CHORD_MIN_AMPLITUDE * max(1.0, float(np.linalg.norm(theta)))) ** 2:
            chord = float(V @ (g_plus - g_minus)) / (2.0 * a2)
            centre = float(V @ self.problem._hvp(theta, V)) / a2
            lam = lam.copy()
            lam[0] += chord - centre  # the curvature along V, averaged over the chord θ− → θ+
        return dtheta, lam

    def _theta_drift_and_eigs(self, theta, S):
        lam, Q = self.eigenpairs(theta)
        if self.closure == "chord":
            dtheta, lam = self._chord(theta, S, lam)
        else:
            dtheta = self.theta_drift(theta, S)
        return dtheta, lam, Q

    def drift(self, k, y):
        theta, S = self.split(y)
        dtheta, lam, Q = self._theta_drift_and_eigs(theta, S)
        if self.sigma_form == "log":
            g, g_off = self.rates(lam)
            g = self._floored(g, Q, S, self.floor_at(theta))
            GS = Q @ ((g - g_off)[:, None] * (Q.T @ S)) + g_off * S  # G applied to V (or Σ)
            dS = GS if self._factored else GS + GS.T
        else:
            MS = self._apply_M(lam, Q, S)
            dS = self._apply_M(lam, Q, MS.T).T - S
        if self.storage == "log-factor":
            return np.concatenate([dtheta, self._log_factor_rate(y, dS)])
        return np.concatenate([dtheta, dS.ravel()])

    def _apply_M(self, lam, Q, S):
        # M = I − ηH on oscillating tracked modes and 0 elsewhere (non-oscillating
        # directions are not part of the fluctuation: the rate form damps them at rate 1).
        m = np.where(lam > self.threshold, 1.0 - self.eta * lam, 0.0)
        return Q @ (m[:, None] * (Q.T @ S))

    def map_step(self, k, y):
        """One GD step: θ by an explicit Euler step of length 1; Σ by GD's own covariance
        recursion on the oscillating modes, Σ ← |I − ηH| Σ |I − ηH| (the exact one-step
        solution of the log form for frozen H, and explicit Euler of the rate form)."""
        theta, S = self.split(y)
        dtheta, lam, Q = self._theta_drift_and_eigs(theta, S)
        theta_new = theta + dtheta
        if self.sigma_form == "log":
            g, g_off = self.rates(lam)
            g = self._floored(g, Q, S, self.floor_at(theta))
            f, f_off = np.exp(g), np.exp(g_off)
            FS = Q @ ((f - f_off)[:, None] * (Q.T @ S)) + f_off * S
            S_new = FS if self._factored else (Q @ ((f - f_off)[:, None] * (Q.T @ FS.T)) + f_off * FS.T).T
        else:
            MS = self._apply_M(lam, Q, S)
            S_new = self._apply_M(lam, Q, MS.T).T
        if self.storage == "log-factor":
            return np.concatenate([theta_new, self.to_log_factor(S_new)])
        return np.concatenate([theta_new, S_new.ravel()])

    def atol_weights(self, y0):
        """With ``relative_sigma_tol=True``, relative error control for Σ (``atol · 1e-20``).

        Before the EoS onset Σ sits at the size of its seed (round-off, ~1e-30 for the
        default floor), far below any useful ``atol``. With a plain ``atol`` the integrator
        would not resolve its growth and the first cycles after the onset would depend on
        the tolerance (measured: sharpness off by 1.2 on the minimal valley at rtol 1e-7);
        with this weight rtol = 1e-7 agrees with rtol = 1e-10 to 2e-5. It is off by default
        because on large period-two orbits (matrix factorisation, σ₁ = 5.5) it makes the
        integrator crawl through every eigenvalue crossing.
        """
        if not self.relative_sigma_tol:
            return None
        w = np.ones(self.state_size)
        w[self.dim:] = 1e-20
        return w

    def check_state(self, y):
        if not np.all(np.isfinite(y)):
            return "non-finite"
        if self.storage == "dense":
            _, S = self.split(y)
            if np.max(np.abs(S - S.T), initial=0.0) > 1e-8 * max(1.0, np.max(np.abs(S))):
                return "sigma not symmetric"
            if np.linalg.eigvalsh(0.5 * (S + S.T))[0] < -1e-8 * max(1.0, np.max(np.abs(S))):
                return "sigma not PSD"
        return None

    # --- initial state ------------------------------------------------------------------
    def initial_state(self, theta0, sigma0=None, *, sigma_seed: str = "gd", seed_scale: float | None = None):
        """Initial (θ, Σ).

        Parameters
        ----------
        theta0 : array_like (P,)
        sigma0 : array_like, optional
            Σ0 given explicitly: a factor V0 of shape (P, r) or a symmetric PSD (P, P)
            matrix (rank <= r for factor storage).
        sigma_seed : {"gd", "floor", "zero"}
            Used when ``sigma0`` is None. "gd": V0 = the projection of GD's first half-step
            displacement −η∇E(θ0)/2 on the top-r eigenvectors (falls back to "floor" where
            that projection vanishes). "floor": V0 = √q·v_i along the top-r eigenvectors with
            q = ``seed_scale`` or the model's ``floor``. "zero": Σ0 = 0 (gradient flow).
        """
        theta0 = self._theta0(theta0)
        P, r = self.dim, self.rank
        if sigma0 is not None:
            S0 = self._validate_sigma0(sigma0)
        else:
            seed = choice(sigma_seed, "sigma_seed", ("gd", "floor", "zero"))
            q = self.floor_at(theta0) if seed_scale is None else positive_float(seed_scale, "seed_scale")
            V = np.zeros((P, r))
            if seed != "zero":
                lam, Q = self.eigenpairs(theta0)
                Q = Q[:, :r]
                if seed == "gd":
                    half_step = -0.5 * self.eta * self.problem._grad(theta0)
                    V = Q * (Q.T @ half_step)
                if q > 0:
                    weak = np.sum(V**2, axis=0) < q
                    V[:, weak] = np.sqrt(q) * Q[:, weak]
                elif seed == "floor":
                    raise ValueError(
                        "`sigma_seed='floor'` needs a floor size: pass `seed_scale=q` (q > 0) or build the "
                        "model with `floor=q`."
                    )
            S0 = V if self._factored else V @ V.T
        if self.storage == "log-factor":
            zero = np.flatnonzero(np.linalg.norm(S0, axis=0) == 0)
            if zero.size:
                raise ValueError(
                    f"`storage='log-factor'` needs every column of the initial factor nonzero (column(s) "
                    f"{zero.tolist()} are zero); seed with sigma_seed='gd' or 'floor', or pass a sigma0 of "
                    f"rank {self.rank}."
                )
            return np.concatenate([theta0, self.to_log_factor(S0)])
        return np.concatenate([theta0, S0.ravel()])

    def _validate_sigma0(self, sigma0):
        P, r = self.dim, self.rank
        arr = np.asarray(sigma0, dtype=np.float64)
        if arr.ndim == 2 and arr.shape == (P, r) and r != P:
            V = as_matrix(arr, "sigma0", (P, r))
            return V if self._factored else V @ V.T
        S = as_matrix(arr, "sigma0", (P, P))
        scale = max(1.0, float(np.max(np.abs(S))))
        if np.max(np.abs(S - S.T)) > 1e-12 * scale:
            raise ValueError("`sigma0` must be symmetric (Σ is a covariance); symmetrise it with (S + S.T)/2.")
        w, Q = np.linalg.eigh(S)
        if w[0] < -1e-12 * scale:
            raise ValueError(f"`sigma0` must be positive semi-definite; its smallest eigenvalue is {w[0]:.3g}.")
        if self.storage == "dense":
            return 0.5 * (S + S.T)
        if np.sum(w > 1e-12 * scale) > r:
            raise ValueError(
                f"`sigma0` has rank {int(np.sum(w > 1e-12 * scale))} > `rank` = {r}; raise the model's rank or "
                "pass a factor of shape (P, rank)."
            )
        w, Q = w[::-1][:r], Q[:, ::-1][:, :r]
        return Q * np.sqrt(np.maximum(w, 0.0))

    # --- JAX drift (diffrax backend) ------------------------------------------------------
    def jax_args(self):
        _, jnp = _jax()
        return {"eta": jnp.asarray(self.eta), "clip": jnp.asarray(self.clip), "floor": jnp.asarray(-1.0 if self.floor == "roundoff" else self.floor),
                "threshold": jnp.asarray(self.threshold)}

    def jax_drift(self):
        """Pure-JAX drift: autodiff of the problem's JAX loss, dense eigh of H (small P).

        Built once per problem and structural configuration (η, clip, floor, threshold are
        arguments), so a sweep over models does not retrace or recompile it.
        """
        from .gradient_flow import cached_jax_drift

        key = f"free_energy:{self.rank}:{self.n_track}:{self.storage}:{self.sigma_form}:{self.closure}"
        return cached_jax_drift(self.problem, key, self._build_jax_drift)

    def _build_jax_drift(self):
        jax, jnp = _jax()
        loss = self.problem.jax_loss()
        P, r, n_track, storage, form = self.dim, self.rank, self.n_track, self.storage, self.sigma_form
        chord_closure, chord_min = self.closure == "chord", self.CHORD_MIN_AMPLITUDE
        grad = jax.grad(loss)
        hess = jax.hessian(loss)

        def curvature(theta, U):  # Σ_r u_rᵀ H(θ) u_r by forward-over-reverse
            hvp = jax.vmap(lambda u: jax.jvp(grad, (theta,), (u,))[1], in_axes=1, out_axes=1)(U)
            return jnp.sum(U * hvp)

        third = jax.grad(curvature)

        def drift(k, y, args):
            eta, clip, floor, thr = args["eta"], args["clip"], args["floor"], args["threshold"]
            theta = y[:P]
            if storage == "log-factor":
                rho, Vhat = y[P:P + r], y[P + r:].reshape((P, r))
                S = Vhat * jnp.exp(rho)
            else:
                S = y[P:].reshape((P, r) if storage == "factor" else (P, P))
            if storage != "dense":
                U = S
            else:
                w, E = jnp.linalg.eigh(0.5 * (S + S.T))
                U = E * jnp.sqrt(jnp.maximum(w, 0.0))
            H = hess(theta)
            w, E = jnp.linalg.eigh(H)
            lam, Q = w[::-1][:n_track], E[:, ::-1][:, :n_track]
            if chord_closure:  # as _chord (rank 1)
                V = U[:, 0]
                g_plus, g_minus = grad(theta + V), grad(theta - V)
                dtheta = -0.5 * eta * (g_plus + g_minus)
                a2 = V @ V
                big = a2 > (chord_min * jnp.maximum(1.0, jnp.linalg.norm(theta))) ** 2
                safe = jnp.where(big, a2, 1.0)
                correction = (V @ (g_plus - g_minus)) / (2.0 * safe) - (V @ (H @ V)) / safe
                lam = lam.at[0].add(jnp.where(big, correction, 0.0))
            else:
                dtheta = -eta * (grad(theta) + 0.5 * third(theta, U))
            if form == "log":
                g_off = jnp.log(clip)
                g = jnp.where(lam > thr, jnp.log(jnp.maximum(jnp.abs(1 - eta * lam), clip)), g_off)
                rr = min(r, n_track)
                if storage != "dense":
                    m = jnp.sum((Q[:, :rr].T @ S) ** 2, axis=1)
                else:
                    m = jnp.einsum("pi,pq,qi->i", Q[:, :rr], S, Q[:, :rr])
                q = jnp.where(floor < 0, (jnp.finfo(jnp.float64).eps * jnp.maximum(1.0, jnp.linalg.norm(theta))) ** 2, floor)
                shrink = jnp.where(q > 0, jnp.clip(1.0 - q / jnp.maximum(m, 1e-300), 0.0, 1.0), 1.0)
                g = g.at[:rr].set(jnp.where(g[:rr] < 0, g[:rr] * shrink, g[:rr]))
                GS = Q @ ((g - g_off)[:, None] * (Q.T @ S)) + g_off * S
                dS = GS if storage != "dense" else GS + GS.T
            else:
                mm = jnp.where(lam > thr, 1 - eta * lam, 0.0)
                MS = Q @ (mm[:, None] * (Q.T @ S))
                dS = (Q @ (mm[:, None] * (Q.T @ MS.T))).T - S
            if storage == "log-factor":  # as _log_factor_rate
                D = dS * jnp.exp(-rho)
                drho = jnp.sum(Vhat * D, axis=0) / jnp.sum(Vhat**2, axis=0)
                return jnp.concatenate([dtheta, drho, (D - Vhat * drho).ravel()])
            return jnp.concatenate([dtheta, dS.ravel()])

        return drift

    # --- observables --------------------------------------------------------------------
    def observables(self, k, Y):
        P = self.dim
        n = len(k)
        prob = self.problem
        out = {name: np.empty(n) for name in
               ("loss", "free_energy", "lagrangian", "sharpness", "amplitude", "sigma_trace",
                "envelope_plus", "envelope_minus")}
        out["eigs"] = np.empty((n, self.n_track))
        warm = self._warm
        for i in range(n):
            theta, S = self.split(Y[i])
            U = S if self._factored else self._factor_dense(S)
            E = prob._loss(theta)
            curv = sum(float(U[:, j] @ prob._hvp(theta, U[:, j])) for j in range(U.shape[1]))
            lam, Q = self.eigenpairs(theta)
            v = Q[:, 0]
            s = float(np.sum((v @ U) ** 2))
            trace = float(np.sum(U**2))
            out["loss"][i] = E
            out["free_energy"][i] = E + 0.5 * curv
            out["lagrangian"][i] = E + 0.5 * curv - trace / self.eta
            out["sharpness"][i] = lam[0]
            out["eigs"][i] = lam
            out["amplitude"][i] = np.sqrt(s)
            out["sigma_trace"][i] = trace
            out["envelope_plus"][i] = prob._loss(theta + np.sqrt(s) * v)
            out["envelope_minus"][i] = prob._loss(theta - np.sqrt(s) * v)
        self._warm = warm
        out["theta"] = np.asarray(Y[:, :P])
        out["time_avg_loss"] = out["free_energy"]
        if self.closure == "chord":
            # the model's cycle is θ± = θ ± V: its predictions of GD's two-step averages are
            # the averages over the two points (for a wide orbit λ(θ) is not λ's average)
            V = self.split(Y)[1][:, :, 0]
            out["time_avg_loss"] = np.array([0.5 * (prob._loss(t + v) + prob._loss(t - v))
                                             for t, v in zip(out["theta"], V)])
            out["sharpness_centre"] = out["sharpness"].copy()
            warm = self._warm  # observables must not move the Lanczos warm start (checkpoints)
            out["sharpness"] = np.array([0.5 * (self.eigenpairs(t + v)[0][0] + self.eigenpairs(t - v)[0][0])
                                         for t, v in zip(out["theta"], V)])
            self._warm = warm
        if self._factored:
            out["sigma_factor"] = self.split(Y)[1]
        elif P <= 64:
            out["sigma"] = self.split(Y)[1]
        return out

    def config(self):
        cfg = super().config()
        cfg.update(rank=self.rank, sigma_form=self.sigma_form, storage=self.storage, n_track=self.n_track,
                   threshold=self.threshold, clip=self.clip, floor=self.floor, closure=self.closure)
        return cfg


def _jax():
    from .._jax import import_jax

    return import_jax()
