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

from dataclasses import KW_ONLY, dataclass

import numpy as np

from ..._checks import as_matrix, choice, nonneg_int, positive_float, positive_int
from ...problems.base import Problem
from .._shared import cached_jax_drift, top_eig
from ..base import AbstractModel
from . import dynamics as _dyn
from .layouts import layout_for

__all__ = ["FreeEnergyFlow", "TRACK_GUARD"]

#: Eigenpairs tracked beyond the rank above ``dense_max`` (the whole top cluster of a
#: multi-class network, in practice): see ``n_track``.
TRACK_GUARD = 5
#: Columns of Σ's factor with ``rank="auto"``.
AUTO_RANK = 4


@dataclass(frozen=True)
class FreeEnergyFlow(AbstractModel):
    """Free-energy θ/Σ flow of GD at the Edge of Stability.

    Parameters
    ----------
    problem : effdyn.problems.Problem
        Must provide ``third`` (closed-form kernels for built-ins, autodiff for ``from_jax``).
    eta : float
        GD learning rate η; time is in GD steps.
    rank : int or "auto"
        Rank r of Σ = VVᵀ (number of oscillating modes carried), 1 <= r <= P. "auto":
        ``min(P, AUTO_RANK)`` columns, so that every mode that starts to oscillate has a
        column (a mode below the threshold keeps its column at the floor); costs one third
        contraction per column per drift. Use it when several directions oscillate at once
        (several singular values or classes at the edge), rank 1 when one does.
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
        Number of top eigenpairs of H computed per drift evaluation. Default: every
        eigenpair when P <= ``dense_max`` (a dense ``eigh`` gives them all at no extra
        cost), r + :data:`TRACK_GUARD` above. Σ's rates switch off continuously at the
        threshold (log|1 − ηλ| meets log(clip) at ηλ = 1), but a mode leaving the *tracked
        set* switches its rate abruptly; a tracked set that cuts through a cluster of
        near-degenerate eigenvalues (multi-class networks, several modes at the edge) makes
        the drift discontinuous at every crossing and stalls adaptive solvers (measured:
        deep matrix factorisation with target diag(5.3, 5.2), rank 2, LSODA stopped by its
        evaluation limit at step 192 of 3000 with n_track = 3, ran to the end in 4860
        evaluations with all 12).
    threshold : float, optional
        Eigenvalues above it count as oscillating (default 1/η).
    clip : float
        Lower bound on |1 − ηλ| in the log form, and the per-step damping factor of the
        non-oscillating directions (rate log(clip)). Default 0.25.
    floor : "roundoff", float or None
        Persistent seed q >= 0: a decaying top-r mode relaxes towards amplitude² q instead of
        towards 0. The default "roundoff" is the round-off that seeds GD's own oscillation:
        in the continuous flow, GD's coordinate-wise rounding projected on each top mode,
        q_i = ε_mach² Σ_p v_{i,p}² θ_p²; in the step-exact map (and for the "floor" seeds)
        the larger q = (ε_mach·max(1, ‖θ‖))², which keeps Σ ahead of the round-off of the
        map's own θ (docs/theory.md §5); 0 gives the pure model (Σ = 0 invariant). None
        means "roundoff" for the log form and 0 for the rate form (no floor there).
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

    problem: Problem
    eta: float
    rank: int = 1
    _: KW_ONLY
    sigma_form: str = "log"
    storage: str | None = None
    n_track: int | None = None
    threshold: float | None = None
    clip: float = 0.25
    floor: object = None
    dense_max: int = 64
    relative_sigma_tol: bool = False
    closure: str = "second-order"

    name = "free-energy flow"
    requires = ("hvp", "third")

    #: kept for readers of the old attribute; the value lives in the dynamics module
    CHORD_MIN_AMPLITUDE = _dyn.CHORD_MIN_AMPLITUDE

    def _check(self):
        P = self.dim
        rank = min(P, AUTO_RANK) if isinstance(self.rank, str) and self.rank == "auto" else self.rank
        if isinstance(rank, str):
            raise ValueError(f"`rank` must be a positive integer or 'auto'; got {rank!r}.")
        rank = positive_int(rank, "rank")
        if rank > P:
            raise ValueError(f"`rank` must be <= the problem dimension P = {P}; got {self.rank}.")
        self._set("rank", rank)
        choice(self.sigma_form, "sigma_form", ("log", "rate"))
        storage = self.storage
        if storage is None:
            storage = "dense" if self.sigma_form == "rate" else "log-factor"
        self._set("storage", choice(storage, "storage", ("factor", "log-factor", "dense")))
        if self.sigma_form == "rate" and self.storage != "dense":
            raise ValueError(
                "`sigma_form='rate'` fills in the rank of Σ and cannot be stored as a factor; "
                "pass `storage='dense'` (small P) or use `sigma_form='log'`."
            )
        dense_max = nonneg_int(self.dense_max, "dense_max")
        if self.n_track is None:
            n_track = P if P <= dense_max else min(P, rank + TRACK_GUARD)
        else:
            n_track = positive_int(self.n_track, "n_track")
        if not rank <= n_track <= P:
            raise ValueError(f"`n_track` must lie in [rank, P] = [{rank}, {P}]; got {self.n_track}.")
        self._set("n_track", n_track)
        self._set("threshold", 1.0 / self.eta if self.threshold is None else positive_float(self.threshold, "threshold"))
        clip = positive_float(self.clip, "clip")
        if clip >= 1:
            raise ValueError(f"`clip` must lie in (0, 1) (a per-step damping factor); got {self.clip}.")
        self._set("clip", clip)
        floor = self.floor
        if floor is None:  # the floor is implemented for the log form only
            floor = "roundoff" if self.sigma_form == "log" else 0.0
        if isinstance(floor, str):
            choice(floor, "floor", ("roundoff",))
        else:
            if isinstance(floor, bool) or not isinstance(floor, (int, float, np.integer, np.floating)):
                raise TypeError(f"`floor` must be 'roundoff' or a number >= 0; got {floor!r}.")
            floor = float(floor)
            if not (np.isfinite(floor) and floor >= 0):
                raise ValueError(f"`floor` must be 'roundoff' or a finite number >= 0; got {self.floor!r}.")
        if floor != 0 and self.sigma_form == "rate":
            raise ValueError("`floor` is implemented for the log form only; use `sigma_form='log'` or floor=0.")
        self._set("floor", floor)
        self._set("dense_max", nonneg_int(self.dense_max, "dense_max"))
        if not isinstance(self.relative_sigma_tol, bool):
            raise TypeError(f"`relative_sigma_tol` must be True or False; got {self.relative_sigma_tol!r}.")
        if self.relative_sigma_tol and self.storage == "log-factor":
            raise ValueError("`relative_sigma_tol` is not needed with `storage='log-factor'` (its amplitude "
                             "coordinates are already controlled relatively); drop it.")
        choice(self.closure, "closure", tuple(_dyn.CLOSURES))
        if self.closure == "chord" and (self.rank != 1 or self.storage == "dense"):
            raise ValueError(
                "`closure='chord'` is implemented for rank 1 with the log form and factor storage "
                f"(got rank={self.rank}, sigma_form={self.sigma_form!r}, storage={self.storage!r}); use "
                "rank=1 with storage='factor' or 'log-factor', or closure='second-order'."
            )
        self._set("_layout", layout_for(self.storage, P, self.rank))

    def make_run(self, run):
        from ...spectrum import EigenTracker

        # above dense_max the tracked eigenpairs come from a warm-started tracker
        run.tracker = EigenTracker(run.problem, self.n_track, dense_max=self.dense_max)

    @property
    def _factored(self) -> bool:
        return self._layout.factored

    def _params(self) -> dict:
        return {"eta": self.eta, "clip": self.clip, "threshold": self.threshold,
                "floor": -1.0 if self.floor == "roundoff" else self.floor}

    def _oracle(self, run):
        return _dyn.NumpyOracle(run.problem, lambda theta: _dyn.numpy_eigenpairs(run, theta, self.n_track,
                                                                                 self.dense_max))

    # --- state layout -----------------------------------------------------------------
    @property
    def sigma_size(self) -> int:
        return self._layout.sigma_size

    @property
    def state_size(self) -> int:
        return self.dim + self.sigma_size

    def split(self, y):
        """(θ, S) with S the factor V (P, r) or the dense Σ (P, P)."""
        return self._layout.unpack(np, y)

    def log_parts(self, y):
        """(θ, ρ, v̂) of a ``storage="log-factor"`` state: V = v̂·diag(e^ρ)."""
        return self._layout.parts(y)

    def to_log_factor(self, V) -> np.ndarray:
        """[ρ, v̂] of a factor V (P, r): ρ_j = log‖V_j‖, v̂_j = V_j/‖V_j‖ (a zero column gives
        ρ = −inf, which the solvers stop on as non-finite)."""
        return layout_for("log-factor", self.dim, self.rank).pack(np, np.empty(0), np.asarray(V, dtype=np.float64))

    def sigma_of(self, y) -> np.ndarray:
        """Dense Σ (P, P) of a state."""
        return self._layout.sigma(np, self.split(y)[1])

    def factor_of(self, y) -> np.ndarray:
        """A factor U with Σ = UUᵀ (P, r'), for the third-derivative contraction."""
        return self._layout.factor(np, self.split(y)[1])

    # --- spectrum and rates (for readers and tests; the dynamics module has the equations)
    def eigenpairs(self, theta, run=None):
        """Top ``n_track`` eigenpairs (descending) of H(θ)."""
        return _dyn.numpy_eigenpairs(self._run(run), np.asarray(theta, dtype=np.float64), self.n_track,
                                     self.dense_max)

    def rates(self, lam):
        """Per-step log-amplitude rates g_i of the tracked modes and g_off of the rest."""
        return _dyn.rates(np, np.asarray(lam), self._params())

    def floor_at(self, theta) -> float:
        """Floor q at θ of the step-exact map and the seeds: the number given, or
        (ε_mach·max(1, ‖θ‖))² for "roundoff" (the continuous flow's per-mode floor is
        :func:`.dynamics.mode_floor`)."""
        return float(_dyn.floor_value(np, np.asarray(theta), self._params()["floor"]))

    def theta_drift(self, theta, S, run=None) -> np.ndarray:
        """dθ/dk = −η(∇E + ½∇_θ⟨H, Σ⟩) of the second-order closure (S as in :meth:`split`)."""
        oracle = self._oracle(self._run(run))
        return _dyn.second_order(np, oracle, theta, self._layout.factor(np, S), None, self._params())[0]

    # --- dynamics ---------------------------------------------------------------------
    def drift(self, k, y, run=None):
        run = self._run(run)
        if self._warm_jax_drift_applies():
            return self._warm_jax_drift(k, y, run)
        return self._numpy_drift(k, y, run)

    def _numpy_drift(self, k, y, run):
        return _dyn.drift(np, self._oracle(run), self._layout, _dyn.CLOSURES[self.closure], self.sigma_form,
                          self.rank, y, self._params())

    # --- the drift of a JAX network for the host solvers (scipy) -------------------------
    def _warm_jax_drift_applies(self) -> bool:
        """A JAX problem above ``dense_max``: the drift is one compiled call with a warm
        eigen-tracker instead of NumPy glue around one jitted HVP per Lanczos step."""
        from ...problems.jax_problem import JaxProblem

        return isinstance(self.problem, JaxProblem) and self.dim > self.dense_max

    def _warm_jax_drift(self, k, y, run):
        """The same equations (:mod:`.dynamics`) in one jitted call per evaluation, the JAX
        eigen-tracker's state carried in ``run.jax_state`` from one evaluation to the next.

        Consecutive evaluations of an adaptive solver lie close together (the stages of one
        step, then the next step), so the tracker starts from the last block
        (``history=1``) and converges within a few LOBPCG iterations. On the peer MLP
        (P = 433, 1000 GD steps, RK45) this took 12.8 HVPs and ~3 ms per evaluation against
        ~31 HVPs through jitted single calls and the host tracker: 28.7 s against 89.8 s wall
        (docs/jax_engine.md §6)."""
        from ...engine_jax.compiled import from_host, to_host

        fn, template = cached_jax_drift(self.problem, self._warm_key(), self._build_warm_jax_drift)
        _, jnp = _jax()
        # The live JAX run state rides along on the run object (not a field: checkpoints
        # save run.jax_state); it is rebuilt whenever run.jax_state was replaced.
        live = run.__dict__.get("_warm_jax_run")
        if live is not None and live[0] is run.jax_state:
            jrun = live[1]
        else:
            try:
                jrun = template if run.jax_state is None else from_host(run.jax_state, template)
            except ValueError:  # the run state of a compiled map, or of another configuration
                jrun = template
        dy, jrun = fn(jnp.asarray(y, dtype=jnp.float64), jrun, self._params(), self.problem.data_args)
        state, counts = to_host(jrun)
        jrun = {**jrun, "counts": template["counts"]}
        run.jax_state = state
        run.__dict__["_warm_jax_run"] = (state, jrun)
        c = run.counters
        for name, value in counts.items():
            setattr(c, name, getattr(c, name) + value)
        return np.asarray(dy, dtype=np.float64)

    def _warm_key(self) -> str:
        return f"free_energy_warm:{self.rank}:{self.n_track}:{self.storage}:{self.sigma_form}:{self.closure}"

    def _build_warm_jax_drift(self):
        import jax as _jax_mod

        from ...engine_jax.compiled import PureOracle, Spectrum, bump, fresh_run

        _, jnp = _jax()
        problem, P, rank = self.problem, self.dim, self.rank
        layout, closure, form = self._layout, _dyn.CLOSURES[self.closure], self.sigma_form
        # An adaptive solver's error control needs a drift that is a deterministic function of
        # y well below its tolerance. With the map's tolerances (1e-6, and 1e-4 for the
        # rate-only pairs) the tracker's remainders depend on where it started, and RK45
        # rejected steps on them: 5498 evaluations for 200 peer-MLP steps against 2432 with
        # these (12 HVPs per evaluation; 1e-10 for both: 13).
        spectrum = Spectrum(n=self.n_track, dense=False, k=rank, rtol=WARM_DRIFT_RTOL, rest_rtol=10 * WARM_DRIFT_RTOL,
                            history=1)
        n_dirs = layout.factor(jnp, layout.unpack(jnp, jnp.zeros(self.state_size))[1]).shape[1]

        def drift(y, jrun, p, data):
            theta = layout.unpack(jnp, y)[0]
            lam, Q, jrun = spectrum.solve(jrun, problem, theta, data, threshold=_tracked_threshold(jnp, p),
                                          scale=2.0 / p["eta"])
            dy = _dyn.drift(jnp, PureOracle(problem, data, (lam, Q)), layout, closure, form, rank, y, p)
            if self.closure == "chord":
                return dy, bump(jrun, gradients=2, hvps=1)
            return dy, bump(jrun, gradients=1, thirds=n_dirs)

        return _jax_mod.jit(drift), fresh_run(**spectrum.init(P, 0))

    def map_step(self, k, y, run=None):
        """One GD step: θ by an explicit Euler step of length 1; Σ by GD's own covariance
        recursion on the oscillating modes, Σ ← |I − ηH| Σ |I − ηH| (the exact one-step
        solution of the log form for frozen H, and explicit Euler of the rate form)."""
        run = self._run(run)
        return _dyn.map_step(np, self._oracle(run), self._layout, _dyn.CLOSURES[self.closure], self.sigma_form,
                             self.rank, y, self._params())

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

    def magnitude(self, y):
        """max|θ| and the largest entry of the factor V (with log-factor storage V = v̂ e^ρ,
        whose ρ grows only linearly while the oscillation it stands for explodes)."""
        if self.storage != "log-factor":
            return super().magnitude(y)
        theta, V = self.split(np.asarray(y, dtype=np.float64))
        with np.errstate(over="ignore"):
            return float(max(np.max(np.abs(theta)), np.max(np.abs(V))))

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
    def _initial(self, run, theta0, sigma0=None, *, sigma_seed: str = "gd", seed_scale: float | None = None):
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
                lam, Q = self.eigenpairs(theta0, run)
                Q = Q[:, :r]
                if seed == "gd":
                    half_step = -0.5 * self.eta * run.problem._grad(theta0)
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
        return self._layout.pack(np, theta0, S0)

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
        """η, clip, threshold and floor as arrays, and the problem's data (``from_jax`` with
        ``data=``; None otherwise), so that neither is compiled into the drift."""
        args = self._jax_params()
        args["data"] = getattr(self.problem, "data_args", None)
        return args

    def _jax_params(self):
        _, jnp = _jax()
        return {name: jnp.asarray(value, dtype=jnp.float64) for name, value in self._params().items()}

    def jax_drift(self):
        """Pure-JAX drift: the same equations (:mod:`.dynamics`) with the problem's JAX
        derivatives and its eigenpairs from a dense eigendecomposition of H up to
        ``dense_max``, from the JAX eigen-tracker solving cold above (a diffrax drift carries
        no warm start; the compiled map, :meth:`jax_map`, does).

        Built once per problem and structural configuration (η, clip, floor, threshold and
        the data are arguments), so a sweep over models does not retrace or recompile it.
        """
        dense = self.dim <= self.dense_max
        key = f"free_energy:{self.rank}:{self.n_track}:{self.storage}:{self.sigma_form}:{self.closure}:{dense}"
        return cached_jax_drift(self.problem, key, self._build_jax_drift)

    def _build_jax_drift(self):
        from ...engine_jax.compiled import PureOracle, Spectrum, derivatives_of, fresh_run

        _, jnp = _jax()
        d = derivatives_of(self.problem, type(self).__name__)
        P = self.dim
        layout, closure, form, rank = self._layout, _dyn.CLOSURES[self.closure], self.sigma_form, self.rank
        # every pair to a residual of 1e-6·(2/η): an adaptive solver's error control sees the
        # tracker's remainders, and the map's looser rate-only tolerance was measured only for
        # the map (the scipy path's warm drift is tighter still, WARM_DRIFT_RTOL)
        spectrum = Spectrum(n=self.n_track, dense=P <= self.dense_max, k=rank)

        def drift(k, y, args):
            data = args.get("data")
            theta = layout.unpack(jnp, y)[0]
            lam, Q, _ = spectrum.solve(fresh_run(**spectrum.init(P)), d, theta, data,
                                       threshold=_tracked_threshold(jnp, args), scale=2.0 / args["eta"])
            return _dyn.drift(jnp, PureOracle(d, data, (lam, Q)), layout, closure, form, rank, y, args)

        return drift

    # --- JAX engine: the compiled step-exact map (effdyn.engine_jax) ----------------------
    def jax_map(self):
        """The step-exact map of :meth:`map_step` (the equations of :mod:`.dynamics`) as pure
        JAX functions, for every storage, form and closure.

        The eigenpairs come from a dense ``eigh`` of the Hessian up to ``dense_max`` (as the
        NumPy map) and above it from the JAX eigen-tracker: its block holds ``n_track`` pairs
        plus two guards, the top ``rank`` are converged (residual 1e-6·(2/η)), and so is
        the eigenvalue of every other pair that lies where its rate differs from the rate of
        the untracked directions, i.e. above the threshold with |1 − ηλ| > clip (above
        (1 + clip)/η for the default threshold 1/η), to 1e-4·(2/η) by the eigenvalue
        criterion (``MODEL_RATE_RTOL``: these pairs enter only through their rate). Pairs
        below that are returned unconverged but only enter with the untracked rate, so they
        do not change Σ.
        """
        from ...engine_jax.compiled import (MODEL_RATE_RTOL, CompiledMap, PureOracle, Spectrum, bump, fresh_run,
                                            require_jax_problem, tracker_report)

        _, jnp = _jax()
        problem = require_jax_problem(self)
        P, r = self.dim, self.rank
        layout, closure, form = self._layout, _dyn.CLOSURES[self.closure], self.sigma_form
        spectrum = Spectrum(n=self.n_track, dense=P <= self.dense_max, k=r, rest_rtol=MODEL_RATE_RTOL)
        chord = self.closure == "chord"

        def evaluate(k, y, jrun, p, data):
            theta = layout.unpack(jnp, y)[0]
            lam, Q, jrun = spectrum.solve(jrun, problem, theta, data, threshold=_tracked_threshold(jnp, p),
                                          scale=2.0 / p["eta"])
            return {"lam": lam, "Q": Q}, jrun

        def record(k, y, ev, jrun, p, data):
            theta, S = layout.unpack(jnp, y)
            U = layout.factor(jnp, S)
            lam, v = ev["lam"], ev["Q"][:, 0]
            s = jnp.sum((v @ U) ** 2)
            a = jnp.sqrt(s)
            out = {"sharpness": lam[0], "eigs": lam, "amplitude": a,
                   "envelope_plus": problem.pure_loss(theta + a * v, data),
                   "envelope_minus": problem.pure_loss(theta - a * v, data)}
            jrun = bump(jrun, losses=2)
            if chord:
                V = S[:, 0]
                (top_p, n_p), (top_m, n_m) = (spectrum.top_value(problem, theta + V, data, 2.0 / p["eta"]),
                                              spectrum.top_value(problem, theta - V, data, 2.0 / p["eta"]))
                out["sharpness_centre"] = lam[0]
                out["sharpness"] = 0.5 * (top_p + top_m)
                jrun = bump(jrun, eigensolves=2, **({"hessians": 2} if spectrum.dense else {"hvps": n_p + n_m}))
            return out, jrun

        def advance(k, y, ev, jrun, p, data):
            oracle = PureOracle(problem, data, (ev["lam"], ev["Q"]))
            y_new = _dyn.map_step(jnp, oracle, layout, closure, form, r, y, p)
            if chord:
                V = layout.unpack(jnp, y)[1][:, 0]
                theta = y[:P]
                big = V @ V > (_dyn.CHORD_MIN_AMPLITUDE * jnp.maximum(1.0, jnp.linalg.norm(theta))) ** 2
                return y_new, bump(jrun, gradients=2, hvps=big.astype(jnp.int64))
            n_dirs = layout.factor(jnp, layout.unpack(jnp, y)[1]).shape[1]
            return y_new, bump(jrun, gradients=1, thirds=n_dirs)

        def magnitude(y):
            theta, V = layout.unpack(jnp, y)
            return jnp.maximum(jnp.max(jnp.abs(theta)), jnp.max(jnp.abs(V)))

        key = ("FreeEnergyFlow", r, self.n_track, self.storage, self.sigma_form, self.closure, spectrum)
        return CompiledMap(key=key, params=self._jax_params(),
                           init_run=lambda y0, seed: fresh_run(**spectrum.init(P, seed)),
                           evaluate=evaluate, record=record, advance=advance,
                           magnitude=magnitude if self.storage == "log-factor" else _max_abs, causes={},
                           report=tracker_report)

    # --- records and observables --------------------------------------------------------
    def record(self, k, y, run):
        """Spectrum at a saved state and what depends on it: sharpness, tracked eigenvalues,
        amplitude along v₁ and the predicted loss envelope E(θ ± √s v₁)."""
        problem = run.problem
        theta, S = self.split(np.asarray(y, dtype=np.float64))
        U = self._layout.factor(np, S)
        lam, Q = self.eigenpairs(theta, run)
        v = Q[:, 0]
        s = float(np.sum((v @ U) ** 2))
        out = {"sharpness": float(lam[0]), "eigs": np.asarray(lam, dtype=np.float64), "amplitude": np.sqrt(s),
               "envelope_plus": problem._loss(theta + np.sqrt(s) * v),
               "envelope_minus": problem._loss(theta - np.sqrt(s) * v)}
        if self.closure == "chord":
            # the model's cycle is θ± = θ ± V: its prediction of GD's two-step averaged
            # sharpness is the average over the two points (on a wide orbit λ(θ) is not)
            V = S[:, 0]
            out["sharpness_centre"] = out["sharpness"]
            out["sharpness"] = 0.5 * (self._top_value(problem, theta + V) + self._top_value(problem, theta - V))
        return out

    def _top_value(self, problem, theta):
        theta = np.ascontiguousarray(theta)
        if self.dim <= self.dense_max:
            return float(np.linalg.eigh(problem._hessian(theta))[0][-1])
        return float(top_eig(problem, theta, 1)[0][0])

    def observables(self, k, Y, records=None, run=None):
        P = self.dim
        Y = np.asarray(Y, dtype=np.float64)
        records = self.records_of(k, Y, run) if records is None else records
        prob = self.problem
        n = len(Y)
        loss, free, trace = np.empty(n), np.empty(n), np.empty(n)
        Theta, S = self.split(Y)
        for i in range(n):
            theta = Theta[i]
            U = self._layout.factor(np, S[i])
            E = prob._loss(theta)
            curv = sum(float(U[:, j] @ prob._hvp(theta, np.ascontiguousarray(U[:, j]))) for j in range(U.shape[1]))
            loss[i], free[i], trace[i] = E, E + 0.5 * curv, float(np.sum(U**2))
        out = {"theta": np.array(Theta), "loss": loss, "free_energy": free, "lagrangian": free - trace / self.eta,
               "sigma_trace": trace, "amplitude_subspace": np.sqrt(trace), "time_avg_loss": free}
        out.update({name: records[name] for name in ("sharpness", "eigs", "amplitude", "envelope_plus",
                                                      "envelope_minus")})
        if self.closure == "chord":
            out["sharpness_centre"] = records["sharpness_centre"]
            V = S[:, :, 0]
            out["time_avg_loss"] = np.array([0.5 * (prob._loss(t + v) + prob._loss(t - v))
                                             for t, v in zip(out["theta"], V)])
        if self._factored:
            out["sigma_factor"] = S
        elif P <= 64:
            out["sigma"] = S
        return out

    def _from_handover(self, run, state):
        """From GD's state at step k0: θ = GD's two-step midpoint θ̄ and Σ's factor from GD's
        half-step projected on the top-r eigenvectors of H(θ̄), V_i = v_i (v_iᵀδ)
        (``state.factor(rank)``; the state needs n >= rank directions). A column whose
        square is below the floor q (zero included) falls back to the floor seed √q·v_i,
        as ``sigma_seed="gd"`` does at θ0; with ``storage="log-factor"`` and no floor a zero
        column is refused (log-amplitudes need nonzero columns)."""
        theta = self._theta0(state.theta_bar)
        V = np.array(state.factor(self.rank), dtype=np.float64)
        q = self.floor_at(theta)
        if q > 0:
            weak = np.sum(V**2, axis=0) < q
            V[:, weak] = np.sqrt(q) * state.eigvecs[:, : self.rank][:, weak]
        if self.storage == "log-factor":
            zero = np.flatnonzero(np.linalg.norm(V, axis=0) == 0)
            if zero.size:
                raise ValueError(
                    f"`start`: GD's half-step has no component along eigenvector(s) {zero.tolist()} of H(θ̄), and "
                    "`storage='log-factor'` needs every column of the factor nonzero; use the default floor, "
                    "storage='factor', or hand over at another step.")
        return self._layout.pack(np, theta, V if self._factored else V @ V.T)


def _jax():
    from ..._jax import import_jax

    return import_jax()


#: Residual tolerance (relative to 2/η) of the eigen-tracker inside the warm JAX drift
#: (:meth:`FreeEnergyFlow._warm_jax_drift`); the rate-only pairs get 10 times it.
WARM_DRIFT_RTOL = 1e-9


def _tracked_threshold(jnp, p):
    """Where the tracker must converge every eigenpair: above the threshold, except where
    the rate log max(|1 − ηλ|, clip) equals the untracked rate log(clip), i.e. up to
    (1 + clip)/η when the threshold lies within [(1 − clip)/η, (1 + clip)/η]."""
    lo, hi = (1.0 - p["clip"]) / p["eta"], (1.0 + p["clip"]) / p["eta"]
    return jnp.where((p["threshold"] >= lo) & (p["threshold"] <= hi), hi, p["threshold"])


def _max_abs(y):
    _, jnp = _jax()
    return jnp.max(jnp.abs(y))
