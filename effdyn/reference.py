"""Discrete gradient descent: the reference every effective model is judged against.

``gd`` runs θ_{k+1} = θ_k − η∇E(θ_k) (or one of its variants) and records, per step k, the
loss, the gradient norm and the half-step amplitude (along the top Hessian eigenvector and in
the span of the top ``n_eigs`` eigenvectors); θ
every ``theta_every`` steps; and the top Hessian eigenvalues every ``eig_every`` steps
(theory §1 for the conventions: time in GD steps, sharpness = λ_max(H)).

Built-in problems (those with ``numba_kernels``) step in a compiled loop
(:mod:`effdyn.kernels.gd_loop`) between eigen-solves; any other problem runs the same loop
as plain Python. Eigenpairs come from an :class:`effdyn.spectrum.EigenTracker` (dense for
small P, warm-started Krylov otherwise).

Divergence never passes silently: a non-finite loss or gradient, or ``|E| > loss_bound``,
stops the run at that step (also when it is first met by an eigen-solve: the message names
the loss or gradient, the first cause, rather than the Hessian). By default (``throw=True``, as for ``effdyn.solve``) this raises
:class:`effdyn.IntegrationError` carrying the partial trajectory; with ``throw=False`` the
partial trajectory is returned with ``status == "diverged"``. The partial record holds
exactly what a run of ``diverged_at − 1`` steps would hold, so every value in it is finite.
"""

from __future__ import annotations

import json
import numbers
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ._checks import as_vector, choice, nonneg_int, positive_float, positive_int
from .errors import IntegrationError
from .kernels.gd_loop import STATUS_BLOWUP, STATUS_NONFINITE, VARIANTS
from .problems.base import Problem

__all__ = ["gd", "GDTrajectory", "VARIANTS"]

#: Above this many steps (and on a terminal) a progress bar is shown by default.
PROGRESS_MIN_STEPS = 20_000
#: Steps per compiled call when no eigen-solves split the run (keeps the bar and Ctrl-C alive).
_CHUNK_NO_EIGS = 5_000


@dataclass
class GDTrajectory:
    """A recorded GD run. Time is the GD step k (theory §1).

    Attributes
    ----------
    k : ndarray of int, shape (K + 1,)
        Steps 0..K at which ``loss`` and ``grad_norm`` are recorded (K = ``steps`` unless the
        run diverged, then K = ``diverged_at − 1``).
    loss, grad_norm : ndarray, shape (K + 1,)
        E(θ_k) and ‖∇E(θ_k)‖ (of E itself, also for the variants).
    theta : ndarray, shape (n_theta, P)
        θ at the steps ``theta_k`` (every ``theta_every``-th step).
    theta_k : ndarray of int, shape (n_theta,)
    eig_k : ndarray of int, shape (n_eig,)
        Steps at which the Hessian eigenvalues were computed (every ``eig_every``-th).
    eigs : ndarray, shape (n_eig, n_eigs)
        Top Hessian eigenvalues of E, descending.
    sharpness : ndarray, shape (n_eig,)
        ``eigs[:, 0]``.
    top_eigvec : ndarray, shape (n_eig, P) or None
        The top eigenvector at ``eig_k`` (None with ``record_eigvecs=False``).
    half_amp : ndarray, shape (K,)
        a_k = |v1ᵀ(θ_{k+1} − θ_k)|/2 for k = 0..K−1, v1 the most recent top eigenvector.
        Use :meth:`amplitude`.
    half_amp_subspace : ndarray, shape (K,), or None
        ‖P_k(θ_{k+1} − θ_k)‖/2 for k = 0..K−1, P_k the orthogonal projector on the most
        recent top-``n_eigs`` eigenvectors (equal to ``half_amp`` when ``n_eigs = 1``).
        Unlike ``half_amp`` it does not depend on which vector of a (near-)degenerate or
        rotating top eigenspace is called v1. Use ``amplitude(subspace=True)``. None for
        trajectories built without it.
    eta, variant : float, str
    status : str
        "success", "diverged", "failed" (an eigen-solve raised) or "interrupted" (Ctrl-C).
    message : str
    diverged_at : int or None
        Step whose loss, gradient or eigen-solve failed.
    cause : str or None
        "non-finite", "blow-up", "solver failure" or "interrupted" (the causes of
        :class:`effdyn.IntegrationError`).
    problem_config : dict
    config : dict
        The ``gd`` arguments (saved as metadata).
    wall_time : float
        Seconds.
    n_hvp : int
        Hessian-vector products used by the eigen-solves (0 on the dense path).
    eig_checks, eig_corrections : int
        Spot checks of the warm eigen-tracker against a cold solve, and how many of them
        found a different top-``n_eigs`` spectrum (whose cold answer was recorded instead);
        see :class:`effdyn.spectrum.EigenTracker` (``check_every``, ``check_jump``). 0 on the
        dense path.
    loss_min : float or None
        The problem's infimum (``problem.loss_min``) when it declares one; ``compare`` uses
        it as the zero of the loss scale.
    """

    k: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    theta: np.ndarray
    theta_k: np.ndarray
    eig_k: np.ndarray
    eigs: np.ndarray
    top_eigvec: np.ndarray | None
    half_amp: np.ndarray
    eta: float
    variant: str
    status: str = "success"
    message: str = ""
    diverged_at: int | None = None
    cause: str | None = None
    problem_config: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    wall_time: float = 0.0
    n_hvp: int = 0
    half_amp_subspace: np.ndarray | None = None
    eig_checks: int = 0
    eig_corrections: int = 0
    loss_min: float | None = None
    _mid: np.ndarray | None = field(default=None, repr=False)
    _mid_k: np.ndarray | None = field(default=None, repr=False)

    # ---- derived series -------------------------------------------------------------
    @property
    def sharpness(self) -> np.ndarray:
        """λ_max(H(θ_k)) at the steps ``eig_k``."""
        return self.eigs[:, 0] if self.eigs.ndim == 2 and self.eigs.shape[1] else np.empty(0)

    @property
    def steps(self) -> int:
        """Last recorded step K."""
        return int(self.k[-1]) if len(self.k) else -1

    @property
    def success(self) -> bool:
        return self.status == "success"

    def midpoint(self):
        """Two-step midpoint θ̄_k = ¼(θ_{k−1} + 2θ_k + θ_{k+1}) for k = 1..K−1.

        Returns
        -------
        k : ndarray of int
        theta_bar : ndarray, shape (len(k), P)
            With ``theta_every > 1`` only at the recorded steps (computed during the run).
        """
        if self._mid is not None:
            return self._mid_k.copy(), self._mid.copy()
        th = self.theta
        if len(th) < 3:
            return np.empty(0, dtype=np.int64), np.empty((0, th.shape[1]))
        return self.theta_k[1:-1].copy(), 0.25 * (th[:-2] + 2.0 * th[1:-1] + th[2:])

    def loss_average(self):
        """Two-step loss average ½(E_k + E_{k+1}) for k = 0..K−1, as (k, values)."""
        return self.k[:-1].copy(), 0.5 * (self.loss[:-1] + self.loss[1:])

    def amplitude(self, subspace: bool = False):
        """Half-step amplitude for k = 0..K−1, as (k, values).

        ``subspace=False``: a_k = |v1ᵀ(θ_{k+1} − θ_k)|/2 along the top eigenvector.
        ``subspace=True``: ‖P_k(θ_{k+1} − θ_k)‖/2 in the span of the top ``n_eigs``
        eigenvectors (robust when v1 differs between the two iterates of a wide orbit).
        """
        if not isinstance(subspace, bool):
            raise TypeError(f"`subspace` must be True or False; got {subspace!r}.")
        if len(self.eig_k) == 0 and len(self.half_amp):
            raise ValueError("this run computed no eigenvectors (`eig_every=None`), so it has no amplitude.")
        if subspace:
            if self.half_amp_subspace is None:
                raise ValueError("this trajectory has no subspace amplitude (`half_amp_subspace` is None); "
                                 "rerun `effdyn.gd` to record it, or use `amplitude()` (top eigenvector).")
            return self.k[:-1].copy(), self.half_amp_subspace.copy()
        return self.k[:-1].copy(), self.half_amp.copy()

    def sharpness_at(self, k):
        """Sharpness linearly interpolated between the eigen-solve steps ``eig_k``."""
        k_arr = np.asarray(k, dtype=np.float64)
        if len(self.eig_k) == 0:
            raise ValueError("this run computed no eigenvalues (`eig_every=None`).")
        lo, hi = self.eig_k[0], self.eig_k[-1]
        if np.any(k_arr < lo) or np.any(k_arr > hi) or not np.all(np.isfinite(k_arr)):
            raise ValueError(f"`k` must lie within the eigen-solve steps [{lo}, {hi}]; got {k!r}.")
        out = np.interp(k_arr, self.eig_k, self.sharpness)
        return float(out) if out.ndim == 0 else out

    def eos_onset(self):
        """First eigen-solve step with sharpness > 2/η (Edge of Stability onset), or None."""
        above = np.flatnonzero(self.sharpness > 2.0 / self.eta)
        return int(self.eig_k[above[0]]) if above.size else None

    def to_xarray(self):
        """The run as an ``xarray.Dataset``; configuration and status go into JSON attributes."""
        import xarray as xr

        P = self.theta.shape[1]
        data = {
            "loss": (("k",), self.loss),
            "grad_norm": (("k",), self.grad_norm),
            "half_amp": (("k_half",), self.half_amp),
            "theta": (("theta_k", "param"), self.theta),
            "eigs": (("eig_k", "eig_index"), self.eigs),
            "sharpness": (("eig_k",), self.sharpness),
        }
        if self.half_amp_subspace is not None:
            data["half_amp_subspace"] = (("k_half",), self.half_amp_subspace)
        if self.top_eigvec is not None:
            data["top_eigvec"] = (("eig_k", "param"), self.top_eigvec)
        if self._mid is not None:
            data["theta_mid"] = (("mid_k", "param"), self._mid)
        coords = {"k": self.k, "k_half": self.k[:-1], "theta_k": self.theta_k, "eig_k": self.eig_k,
                  "param": np.arange(P), "eig_index": np.arange(self.eigs.shape[1])}
        if self._mid is not None:
            coords["mid_k"] = self._mid_k
        from .io import metadata

        attrs = metadata(self.problem_config, self.config.get("seed"))
        attrs.update({
            "kind": "effdyn.GDTrajectory",
            "eta": self.eta,
            "variant": self.variant,
            "status": self.status,
            "message": self.message,
            "diverged_at": -1 if self.diverged_at is None else int(self.diverged_at),
            "cause": self.cause or "",
            "wall_time": self.wall_time,
            "n_hvp": int(self.n_hvp),
            "eig_checks": int(self.eig_checks),
            "eig_corrections": int(self.eig_corrections),
            "loss_min": np.nan if self.loss_min is None else float(self.loss_min),
            "problem_config": json.dumps(self.problem_config, default=_json_default),
            "gd_config": json.dumps(self.config, default=_json_default),
        })
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def __repr__(self) -> str:
        return (f"GDTrajectory(steps={self.steps}, eta={self.eta}, variant={self.variant!r}, "
                f"status={self.status!r}, P={self.theta.shape[1]}, n_eig={len(self.eig_k)})")


def _first_cause(problem, theta, loss_bound):
    """(status, value, message) of the loss and gradient at θ: status 0 when both are finite
    and |E| is within the bound, else the code and message the GD loop would report."""
    with np.errstate(all="ignore"):
        try:
            E = float(problem._loss(theta))
        except (ArithmeticError, ValueError):
            E = float("nan")
        if not np.isfinite(E):
            what = "θ itself" if not np.all(np.isfinite(theta)) else "the loss"
            return STATUS_NONFINITE, E, f"non-finite loss ({E!r}; {what} overflowed)"
        try:
            gn = float(np.linalg.norm(problem._grad(theta)))
        except (ArithmeticError, ValueError):
            gn = float("nan")
    if not np.isfinite(gn):
        return STATUS_NONFINITE, gn, f"non-finite gradient (‖∇E‖ = {gn!r}; the loss is {E!r})"
    if abs(E) > loss_bound:
        return STATUS_BLOWUP, E, ""
    return 0, 0.0, ""


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def _step_count(steps) -> int:
    """``steps`` as an int (integral floats such as ``1e4`` too, as ``effdyn.solve`` takes them)."""
    from ._checks import step_count

    return step_count(steps, "steps")


#: Options of :class:`effdyn.spectrum.EigenTracker` that ``gd(eig_options=...)`` passes on.
EIG_OPTIONS = ("guard", "history", "probe", "check_every", "check_jump", "refresh_every", "seed")


def _validate(problem, theta0, eta, steps, variant, eig_every, n_eigs, theta_every, loss_bound, throw,
              progress, compiled):
    if not isinstance(problem, Problem):
        raise TypeError(
            "`problem` must be an effdyn Problem (e.g. `effdyn.problems.MinimalValley()`, or a "
            f"subclass of `effdyn.problems.Problem`); got {type(problem).__name__}."
        )
    P = problem.dim
    theta0 = as_vector(theta0, "theta0", P)
    eta = positive_float(eta, "eta")
    steps = _step_count(steps)
    if not isinstance(variant, str):
        raise TypeError(f"`variant` must be a string, one of {list(VARIANTS)}; got {variant!r}.")
    variant = choice(variant, "variant", VARIANTS)
    if variant == "sqrt" and problem.loss_min is None:
        raise ValueError(
            "`variant=\"sqrt\"` runs GD on √(E − E_min) and needs the problem's infimum, but "
            f"{type(problem).__name__}.loss_min is None. Set `problem.loss_min` (or pass "
            "`loss_min=` to `from_jax`), or use another variant."
        )
    if eig_every is not None:
        eig_every = positive_int(eig_every, "eig_every")
    n_eigs = positive_int(n_eigs, "n_eigs")
    if n_eigs > P:
        raise ValueError(f"`n_eigs` must be between 1 and the problem dimension P = {P}; got {n_eigs}.")
    theta_every = positive_int(theta_every, "theta_every")
    if isinstance(loss_bound, bool) or not isinstance(loss_bound, numbers.Real) or not loss_bound > 0:
        raise ValueError(f"`loss_bound` must be a number > 0 (np.inf disables the check); got {loss_bound!r}.")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None (automatic); got {progress!r}.")
    if compiled is not None and not isinstance(compiled, bool):
        raise TypeError(f"`compiled` must be True, False or None (automatic); got {compiled!r}.")
    if compiled and problem.numba_kernels is None:
        raise ValueError(
            f"`compiled=True` needs numba kernels, but {type(problem).__name__} has none "
            "(`numba_kernels` is None); use `compiled=None` to loop in Python."
        )
    return theta0, eta, steps, variant, eig_every, n_eigs, theta_every, float(loss_bound)


def gd(problem, theta0, eta, steps, *, variant: str = "gd", eig_every: int | None = 1, n_eigs: int = 1,
       theta_every: int = 1, loss_bound: float = 1e10, throw: bool = True, progress: bool | None = None,
       record_eigvecs: bool = True, dense_max: int | None = None, eig_tol: float | None = None,
       compiled: bool | None = None, seed: int | None = None, eig_options: dict | None = None) -> GDTrajectory:
    """Run gradient descent and record what the effective models are compared with.

    Parameters
    ----------
    problem : Problem
        The loss.
    theta0 : array_like, shape (P,)
        Initial point.
    eta : float
        Step size η > 0.
    steps : int
        Number of GD steps (θ_0..θ_steps are visited). A float with an integral value
        (``1e4``) is accepted; ``1e4 + 0.5`` is refused.
    variant : {"gd", "normalized", "sqrt"}
        "gd": θ ← θ − η∇E. "normalized": θ ← θ − η∇E/‖∇E‖ (no step at a zero gradient).
        "sqrt": GD on √(E − E_min), θ ← θ − η∇E/(2√(E − E_min)) (needs
        ``problem.loss_min``; no step where E <= E_min).
    eig_every : int or None, default 1
        Compute the top ``n_eigs`` Hessian eigenpairs of E at steps 0, eig_every, ... .
        None skips all eigen-solves (then there is no sharpness and no amplitude).
    n_eigs : int, default 1
        Number of eigenvalues recorded (1 <= n_eigs <= P); their eigenvectors span the
        subspace of ``amplitude(subspace=True)``.
    theta_every : int, default 1
        Record θ every this many steps (a stride for large P). With a stride the two-step
        midpoints at the recorded steps are computed during the run.
    loss_bound : float, default 1e10
        The run stops as diverged when |E| exceeds this (np.inf: only non-finite values stop it).
    throw : bool, default True
        On divergence (or a failed eigen-solve) raise :class:`effdyn.IntegrationError`
        (with ``.partial``, ``.step``, ``.cause``); with False return the partial trajectory
        with ``status="diverged"`` (``"failed"``).
    progress : bool or None
        tqdm progress bar; None shows one when ``steps >= 20000`` and stderr is a terminal.
    record_eigvecs : bool, default True
        Keep the top eigenvector at every eigen-solve (n_eig × P floats).
    dense_max, eig_tol : optional
        Passed to :class:`effdyn.spectrum.EigenTracker` (``dense_max``, ``tol``).
    compiled : bool or None
        Force (True) or forbid (False) the compiled loop; None uses it when the problem
        has numba kernels.
    seed : int, optional
        The seed that produced ``theta0`` (e.g. ``problem.init(seed)``); GD itself is
        deterministic, so it is only recorded (``config["seed"]`` and the saved attrs).
    eig_options : dict, optional
        Further :class:`effdyn.spectrum.EigenTracker` options for the Krylov path, among
        ``guard``, ``history``, ``probe``, ``check_every``, ``check_jump``,
        ``refresh_every`` and ``seed`` (the tracker's own seed). The defaults probe the
        complement of the warm subspace at every update and spot-check against a cold solve
        every 50 updates and on jumps of the top eigenvalue by more than 5 %; the checks
        made and the corrections they forced are in ``eig_checks`` / ``eig_corrections``.

    Returns
    -------
    GDTrajectory

    Raises
    ------
    IntegrationError
        On divergence with ``throw=True``, and always on Ctrl-C (``cause="interrupted"``),
        carrying the partial trajectory.

    Examples
    --------
    >>> import effdyn as ed
    >>> traj = ed.gd(ed.problems.MinimalValley(1.0, 0.01), [0.1, 3.0], eta=0.3, steps=2000)
    >>> traj.eos_onset()
    1222
    """
    theta0, eta, steps, variant, eig_every, n_eigs, theta_every, loss_bound = _validate(
        problem, theta0, eta, steps, variant, eig_every, n_eigs, theta_every, loss_bound, throw, progress, compiled)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0; got {seed!r}.")
    if eig_tol is not None:
        eig_tol = positive_float(eig_tol, "eig_tol")
    if dense_max is not None:
        dense_max = nonneg_int(dense_max, "dense_max")
    if eig_options is None:
        eig_options = {}
    elif not isinstance(eig_options, dict):
        raise TypeError(f"`eig_options` must be a dict of EigenTracker options or None; got {type(eig_options).__name__}.")
    unknown = sorted(set(eig_options) - set(EIG_OPTIONS))
    if unknown:
        raise ValueError(f"`eig_options` has unknown keys {unknown}; valid keys: {list(EIG_OPTIONS)}.")
    from scipy.sparse.linalg import ArpackError

    from .spectrum import DENSE_MAX, TOL, EigenTracker

    tracker = None
    if eig_every is not None:
        tracker = EigenTracker(problem, n_eigs, dense_max=DENSE_MAX if dense_max is None else dense_max,
                               tol=TOL if eig_tol is None else eig_tol, **eig_options)
    config = {"seed": seed, "eta": eta, "steps": steps, "variant": variant, "eig_every": eig_every, "n_eigs": n_eigs,
              "theta_every": theta_every, "loss_bound": loss_bound,
              "dense_max": tracker.dense_max if tracker else None, "eig_tol": tracker.tol if tracker else None,
              "eig_options": dict(eig_options)}

    kernels = problem.numba_kernels if compiled is not False else None
    if kernels is not None:
        from .kernels.gd_loop import compiled_chunk

        chunk_fn, params = compiled_chunk(kernels.loss, kernels.grad), kernels.params
    else:
        from .kernels.gd_loop import python_chunk

        def loss_fn(theta, _params):
            return float(problem._loss(theta))

        def grad_fn(theta, _params):
            return np.asarray(problem._grad(theta), dtype=np.float64)

        chunk_fn, params = python_chunk(loss_fn, grad_fn), ()

    P = problem.dim
    n_theta = steps // theta_every + 1
    n_eig = 0 if eig_every is None else steps // eig_every + 1
    loss = np.empty(steps + 1)
    gnorm = np.empty(steps + 1)
    amp = np.empty(steps)
    amp_sub = np.empty(steps)
    theta_rec = np.empty((n_theta, P))
    theta_rec[0] = theta0
    record_mid = theta_every > 1
    mid = np.full((n_theta, P), np.nan) if record_mid else np.empty((1, P))
    eigs = np.empty((n_eig, n_eigs))
    eigvecs = np.empty((n_eig, P)) if (record_eigvecs and n_eig) else None
    # Columns: the most recent top-n_eigs eigenvectors (zeros before the first solve).
    V = np.zeros((P, n_eigs))

    chunk = eig_every if eig_every is not None else _CHUNK_NO_EIGS
    show = progress if progress is not None else (steps >= PROGRESS_MIN_STEPS and sys.stderr.isatty())
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"GD ({variant}, eta={eta:g})", unit="step")

    variant_code = VARIANTS.index(variant)
    loss_min = 0.0 if problem.loss_min is None else float(problem.loss_min)
    t0 = time.perf_counter()
    status, fail_step, fail_value, eig_fail = 0, None, 0.0, None
    theta = np.ascontiguousarray(theta0.copy())
    prev = theta.copy()
    k, done, last_eig = 0, False, -1
    interrupted = False
    try:
        while True:
            if tracker is not None and k % eig_every == 0 and k != last_eig:
                last_eig = k
                try:
                    vals, vecs = tracker._update(theta)
                    ok = bool(np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs)))
                except (np.linalg.LinAlgError, ArpackError, ArithmeticError, ValueError) as exc:
                    ok, eig_fail = False, f"the eigen-solve failed ({type(exc).__name__}: {exc})"
                if not ok:
                    # The eigen-solve meets θ_k before the loop evaluates E(θ_k): when E or ∇E
                    # is already non-finite or beyond the bound, that is the cause to report.
                    status, fail_value, first = _first_cause(problem, theta, loss_bound)
                    fail_step = k
                    if status == 0:
                        status = STATUS_NONFINITE
                        eig_fail = eig_fail or "non-finite Hessian eigenpairs (the loss and gradient are finite)"
                    else:
                        eig_fail = first
                    break
                i = k // eig_every
                eigs[i] = vals
                V = np.ascontiguousarray(vecs[:, :n_eigs])
                if eigvecs is not None:
                    eigvecs[i] = V[:, 0]
            if done:
                break
            k1 = min(steps, k + chunk)
            done = k1 == steps
            status, k_end, fail_value, theta, prev = chunk_fn(
                params, theta, prev, eta, variant_code, loss_min, loss_bound, V,
                k, k1, done, theta_every, record_mid, loss, gnorm, amp, amp_sub, theta_rec, mid)
            if bar is not None:
                bar.update(k_end - k)
            if status != 0:
                fail_step = k_end
                break
            k = k1
    except KeyboardInterrupt:
        interrupted = True
        fail_step = k
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0

    # Truncate to the last valid step K so that the record is a complete shorter run.
    K = steps if fail_step is None else fail_step - 1
    n_th = K // theta_every + 1 if K >= 0 else 0
    n_ei = (K // eig_every + 1 if K >= 0 else 0) if eig_every is not None else 0
    if eig_fail is not None and eig_fail.startswith("the eigen-solve"):
        cause, run_status = "solver failure", "failed"
        message = f"GD stopped at step {fail_step}: {eig_fail}."
    elif status == STATUS_NONFINITE:
        cause = "non-finite"
        what = eig_fail if eig_fail else f"non-finite loss or gradient ({fail_value!r})"
        message = f"GD diverged at step {fail_step}: {what}."
        run_status = "diverged"
    elif status == STATUS_BLOWUP:
        cause = "blow-up"
        message = f"GD diverged at step {fail_step}: |loss| = {abs(fail_value):.3e} exceeds loss_bound = {loss_bound:.3e}."
        run_status = "diverged"
    elif interrupted:
        cause, run_status = "interrupted", "interrupted"
        message = f"GD interrupted at step {fail_step}; the record holds steps 0..{K}."
    else:
        cause, run_status, message = None, "success", f"GD completed {steps} steps."
    if run_status in ("diverged", "failed"):
        message += f" The record holds steps 0..{K}."

    mid_k = mid_arr = None
    if record_mid:
        rows = np.arange(n_th)
        valid = (rows * theta_every >= 1) & (rows * theta_every <= K - 1)
        mid_k = (rows[valid] * theta_every).astype(np.int64)
        mid_arr = mid[rows[valid]].copy()

    traj = GDTrajectory(
        k=np.arange(max(K + 1, 0), dtype=np.int64),
        loss=loss[: K + 1].copy(),
        grad_norm=gnorm[: K + 1].copy(),
        theta=theta_rec[:n_th].copy(),
        theta_k=np.arange(n_th, dtype=np.int64) * theta_every,
        eig_k=np.arange(n_ei, dtype=np.int64) * (eig_every or 1),
        eigs=eigs[:n_ei].copy(),
        top_eigvec=None if eigvecs is None else eigvecs[:n_ei].copy(),
        half_amp=amp[: max(K, 0)].copy(),
        eta=eta,
        variant=variant,
        status=run_status,
        message=message,
        diverged_at=fail_step if run_status in ("diverged", "failed") else None,
        cause=cause,
        problem_config=problem.config(),
        config=config,
        wall_time=wall,
        n_hvp=tracker.n_hvp if tracker is not None else 0,
        half_amp_subspace=amp_sub[: max(K, 0)].copy(),
        eig_checks=tracker.n_checks if tracker is not None else 0,
        eig_corrections=tracker.n_corrections if tracker is not None else 0,
        loss_min=None if problem.loss_min is None else float(problem.loss_min),
        _mid=mid_arr,
        _mid_k=mid_k,
    )
    if interrupted:
        raise IntegrationError(message, step=fail_step, time=float(fail_step), cause="interrupted", partial=traj)
    if run_status in ("diverged", "failed") and throw:
        raise IntegrationError(message, step=fail_step, time=float(fail_step), cause=cause, partial=traj)
    return traj

