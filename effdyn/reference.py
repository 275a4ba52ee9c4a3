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
An exception raised by the problem's own code (``_loss``, ``_grad``, ``_hvp`` of a user
problem) ends the run the same way, with ``cause == "user code raised"`` and the exception
chained.

Long runs: ``checkpoint=PATH`` writes the run's whole state (position, records so far and
the eigen-tracker's warm starts) every ``checkpoint_every`` steps and on Ctrl-C, in the
data-only format of ``effdyn.solve``'s checkpoints; :func:`resume_gd` continues it, bit for
bit equal to the uninterrupted run. ``gd`` refuses up front a run whose records would not
fit in memory, and reports progress through :func:`effdyn.progress.progress_meter`.
"""

from __future__ import annotations

import json
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import as_vector, checkpoint_path, choice, nonneg_int, positive_float, positive_int
from ._json import json_default as _json_default
from .errors import IntegrationError
from .kernels.gd_loop import STATUS_BLOWUP, STATUS_NONFINITE, VARIANTS
from .outcomes import Cause, Status
from .problems.base import Problem

__all__ = ["gd", "resume_gd", "GDTrajectory", "VARIANTS", "GD_CHECKPOINT_FORMAT", "GD_CHECKPOINT_VERSION"]

#: Above this many steps (and on a terminal) a progress bar is shown by default.
PROGRESS_MIN_STEPS = 20_000
#: Steps per compiled call when no eigen-solves split the run (keeps the bar and Ctrl-C alive).
_CHUNK_NO_EIGS = 5_000
#: Fraction of the machine's memory the records of one GD run may take before it is refused.
_MEMORY_FRACTION = 0.5
#: Format tag and version of GD checkpoint files.
GD_CHECKPOINT_FORMAT = "effdyn-gd-checkpoint"
GD_CHECKPOINT_VERSION = 1


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
    status : effdyn.outcomes.Status
        "success", "diverged", "failed" (an eigen-solve or the problem's code raised) or
        "interrupted" (Ctrl-C); a string enum, equal to those strings.
    message : str
    diverged_at : int or None
        Step whose loss, gradient or eigen-solve failed.
    cause : effdyn.outcomes.Cause or None
        "non-finite", "blow-up", "solver failure", "user code raised" or "interrupted"
        (the causes of :class:`effdyn.IntegrationError`).
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
    theta0 : ndarray, shape (P,), or None
        The initial point (``compare`` checks that a solution started there).
    problem_identity : str or None
        :meth:`effdyn.problems.Problem.identity` of the problem GD ran on (computed on first
        access from the problem, or read from a file); ``compare`` and ``effdyn.save`` check
        it. None for trajectories built without a problem.
    metadata : dict
        For a trajectory read from a file: the file's metadata (``config``, library
        ``versions``, ``git_commit``, ``seed``, ``path``); empty otherwise.

    ``save(path)`` writes the trajectory to netCDF and ``GDTrajectory.load(path)`` (or
    :func:`effdyn.load`) reads it back, equal array for array.
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
    status: str = Status.SUCCESS
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
    theta0: np.ndarray | None = field(default=None, repr=False)
    metadata: dict = field(default_factory=dict, repr=False)
    _identity: str | None = field(default=None, repr=False)
    _problem: object = field(default=None, repr=False, compare=False)

    @property
    def problem_identity(self) -> str | None:
        """Identity of the problem GD ran on (see :meth:`effdyn.problems.Problem.identity`)."""
        if self._identity is None and self._problem is not None:
            self._identity = self._problem.identity()
        return self._identity

    def __getstate__(self):
        # a pickled trajectory (e.g. sent between the processes of a sweep) carries the
        # problem's identity, not the problem (a JAX loss does not pickle)
        state = dict(self.__dict__)
        if state.get("_problem") is not None:
            state["_identity"] = self.problem_identity
            state["_problem"] = None
        return state

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
        return self.status == Status.SUCCESS

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

    def state_at(self, k, *, n: int | None = None, problem=None, filter_order: int = 8):
        """GD's state at step ``k`` as a :class:`effdyn.handover.HandoverState`, from which
        ``effdyn.solve(model, start=state, steps=...)`` starts any model (its time axis then
        continues at k).

        It holds θ_k, the two-step midpoint θ̄_k = ¼(θ_{k−1} + 2θ_k + θ_{k+1}), GD's
        half-step δ (sign: θ_k ≈ θ̄_k − δ, θ_{k+1} ≈ θ̄_k + δ), the top ``n`` eigenpairs of
        H(θ̄_k) — computed here from the problem, since GD records only the top eigenvector
        and at θ_k — and the problem's identity and η, which ``solve`` checks against the
        model's.

        Parameters
        ----------
        k : int
            GD step; θ must be recorded at every step the estimates read (run ``effdyn.gd``
            with ``theta_every=1``; a stride is refused with that advice).
        n : int, optional
            Number of eigen-directions (default: the run's ``n_eigs``); at least the rank of
            the models handed the state.
        problem : Problem, optional
            The problem GD ran on, for a trajectory that does not carry it (read from a
            file); checked against the trajectory's problem identity.
        filter_order : int, default 8
            How δ is read from the iterates. 1: the half-step (θ_{k+1} − θ_k)/2 itself. m > 1:
            the alternating binomial filter over θ_{k−⌊m/2⌋} .. θ_{k−⌊m/2⌋+m}
            (:func:`effdyn.handover.alternating_filter`), which passes a period-two
            oscillation unchanged and removes a smooth drift of θ of degree < m. Near the
            EoS onset GD's oscillation is still at round-off size and the half-step mostly
            measures the drift (minimal valley, 50 steps after the onset: 3e-12 along v₁,
            where the oscillation is 6e-18), so a handover there needs the filter.
        """
        from .handover import handover_state

        return handover_state(self, k, n=n, problem=problem, filter_order=filter_order)

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
        if self.theta0 is not None:
            data["theta0"] = (("param",), np.asarray(self.theta0, dtype=np.float64))
        from .io import metadata

        attrs = metadata(self.problem_config, self.config.get("seed"))
        identity = self.problem_identity
        attrs.update({
            "kind": "effdyn.GDTrajectory",
            "problem_identity": identity if identity is not None else "",
            "eta": self.eta,
            "variant": self.variant,
            "status": str(self.status),
            "message": self.message,
            "diverged_at": -1 if self.diverged_at is None else int(self.diverged_at),
            "cause": str(self.cause or ""),
            "wall_time": self.wall_time,
            "n_hvp": int(self.n_hvp),
            "eig_checks": int(self.eig_checks),
            "eig_corrections": int(self.eig_corrections),
            "loss_min": np.nan if self.loss_min is None else float(self.loss_min),
            "problem_config": json.dumps(self.problem_config, default=_json_default),
            "gd_config": json.dumps(self.config, default=_json_default),
        })
        return xr.Dataset(data, coords=coords, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds) -> "GDTrajectory":
        """The trajectory held by a dataset of :meth:`to_xarray` (arrays taken as stored)."""
        from .results import gd_from_dataset

        return gd_from_dataset(ds)

    def save(self, path) -> Path:
        """Write the trajectory to netCDF (atomically) and return the path; read it back with
        :meth:`load` or :func:`effdyn.load`."""
        from .results import save_object

        return save_object(path, self)

    @classmethod
    def load(cls, path) -> "GDTrajectory":
        """Read a trajectory written by :meth:`save` (refuses any other file, naming it)."""
        from .results import load_object

        return load_object(path, cls)

    def __repr__(self) -> str:
        return (f"GDTrajectory(steps={self.steps}, eta={self.eta}, variant={self.variant!r}, "
                f"status={self.status!r}, P={self.theta.shape[1]}, n_eig={len(self.eig_k)})")



def _first_cause(problem, theta, loss_bound):
    """(status, value, message) of the loss and gradient at θ: status 0 when both are finite
    and |E| is within the bound, else the code and message the GD loop would report."""
    with np.errstate(all="ignore"):
        try:
            E = float(problem._loss(theta))
        except Exception:
            E = float("nan")
        if not np.isfinite(E):
            what = "θ itself" if not np.all(np.isfinite(theta)) else "the loss"
            return STATUS_NONFINITE, E, f"non-finite loss ({E!r}; {what} overflowed)"
        try:
            gn = float(np.linalg.norm(problem._grad(theta)))
        except Exception:
            gn = float("nan")
    if not np.isfinite(gn):
        return STATUS_NONFINITE, gn, f"non-finite gradient (‖∇E‖ = {gn!r}; the loss is {E!r})"
    if abs(E) > loss_bound:
        return STATUS_BLOWUP, E, ""
    return 0, 0.0, ""


# --------------------------------------------------------------------------------------
# arguments
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
    _check_flags(throw, progress)
    if compiled is not None and not isinstance(compiled, bool):
        raise TypeError(f"`compiled` must be True, False or None (automatic); got {compiled!r}.")
    if compiled and problem.numba_kernels is None:
        raise ValueError(
            f"`compiled=True` needs numba kernels, but {type(problem).__name__} has none "
            "(`numba_kernels` is None); use `compiled=None` to loop in Python."
        )
    return theta0, eta, steps, variant, eig_every, n_eigs, theta_every, float(loss_bound)


def _check_flags(throw, progress):
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None (automatic); got {progress!r}.")


def _physical_memory() -> int:
    """Bytes of physical memory of this machine (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _record_sizes(P, steps, eig_every, n_eigs, theta_every, record_eigvecs) -> dict:
    """Float64 values each record of a run holds (what ``gd`` allocates up front)."""
    n_theta = steps // theta_every + 1
    n_eig = 0 if eig_every is None else steps // eig_every + 1
    return {"per-step series": 4 * (steps + 1),
            "θ": n_theta * P * (2 if theta_every > 1 else 1),  # with a stride, the midpoints too
            "eigenvalues": n_eig * n_eigs,
            "top eigenvectors": n_eig * P if record_eigvecs else 0}


def _check_memory(P, steps, eig_every, n_eigs, theta_every, record_eigvecs) -> None:
    """Refuse a run whose records would not fit in memory (NumPy allocates lazily, so such a
    run would otherwise start, swap and die hours later)."""
    sizes = _record_sizes(P, steps, eig_every, n_eigs, theta_every, record_eigvecs)
    need = 8.0 * sum(sizes.values())
    total = _physical_memory()
    if not total or need <= _MEMORY_FRACTION * total:
        return
    big = ", ".join(f"{name} {8.0 * n / 2**30:.3g} GiB" for name, n in sizes.items() if n)
    hints = []
    if sizes["θ"] * 8.0 > 0.1 * total:
        stride = int(np.ceil(theta_every * sizes["θ"] * 8.0 / (0.1 * total)))
        hints.append(f"record θ less often (e.g. `theta_every={stride}`)")
    if sizes["top eigenvectors"] * 8.0 > 0.1 * total:
        hints.append("pass `record_eigvecs=False`")
    if eig_every is not None and sizes["eigenvalues"] * 8.0 > 0.1 * total:
        hints.append("compute eigenvalues less often (a larger `eig_every`)")
    if sizes["per-step series"] * 8.0 > 0.1 * total or not hints:
        hints.append(f"shorten `steps` (at most about {int(0.1 * total / 32):,} steps keep the per-step series "
                     "within a tenth of the memory), e.g. in pieces with `checkpoint=`")
    raise ValueError(
        f"the records of this GD run ({steps:,} steps, P = {P}) need about {need / 2**30:.1f} GiB ({big}), more "
        f"than half of this machine's {total / 2**30:.1f} GiB; " + "; ".join(hints) + "."
    )


def _checkpoint_args(checkpoint, checkpoint_every, steps):
    """``(Path or None, every)``: the checkpoint file and its spacing in GD steps (default a
    tenth of the run, at least one step)."""
    path = checkpoint_path(checkpoint, checkpoint_every)
    if path is None:
        return None, None
    every = max(1, steps // 10) if checkpoint_every is None else positive_int(checkpoint_every, "checkpoint_every")
    return path, every


# --------------------------------------------------------------------------------------
# the entry points
# --------------------------------------------------------------------------------------
def gd(problem, theta0, eta, steps, *, variant: str = "gd", eig_every: int | None = 1, n_eigs: int = 1,
       theta_every: int | None = None, loss_bound: float = 1e10, throw: bool = True,
       progress: bool | None = None, record_eigvecs: bool = True, dense_max: int | None = None,
       eig_tol: float | None = None, compiled: bool | None = None, seed: int | None = None,
       eig_options: dict | None = None, checkpoint=None, checkpoint_every: int | None = None,
       engine: str = "auto") -> GDTrajectory:
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
    theta_every : int, optional
        Record θ every this many steps (a stride for large P). With a stride the two-step
        midpoints at the recorded steps are computed during the run. Default 1 on the NumPy
        engine; on the JAX engine 1, or the smallest stride that keeps θ and its midpoints
        under 256 MB.
    loss_bound : float, default 1e10
        The run stops as diverged when |E| exceeds this (np.inf: only non-finite values stop it).
    throw : bool, default True
        On divergence, a failed eigen-solve or an exception raised by the problem's code,
        raise :class:`effdyn.IntegrationError` (with ``.partial``, ``.step``, ``.cause``;
        the problem's exception is chained); with False return the partial trajectory with
        ``status="diverged"`` (``"failed"``).
    progress : bool or None
        Progress display (:func:`effdyn.progress.progress_meter`): None shows a bar on a
        terminal for ``steps >= 20000`` and, off a terminal, status lines when
        ``$EFFDYN_PROGRESS_EVERY`` is set; True always reports; False never.
    record_eigvecs : bool, default True
        Keep the top eigenvector at every eigen-solve (n_eig × P floats).
    dense_max, eig_tol : optional
        Passed to :class:`effdyn.spectrum.EigenTracker` (``dense_max``, ``tol``). On the
        JAX engine ``eig_tol`` is the tracker's residual tolerance relative to 2/η (its
        eigenvalues are then within ``eig_tol·2/η``, see
        :class:`effdyn.engine_jax.EigenTrackerJax`); without it the JAX tracker uses its
        default, an eigenvalue error estimate of at most 1e-4·2/η.
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
    checkpoint : str or os.PathLike, optional
        File to write the run's state to every ``checkpoint_every`` steps, at the end and on
        Ctrl-C (which then stops the run after its current stretch of steps and says where
        the file is); :func:`resume_gd` continues from it. Data only (``.npz`` + JSON, the
        format of ``effdyn.solve``'s checkpoints), written atomically.
    checkpoint_every : int, optional
        Steps between checkpoints (default: a tenth of ``steps``). Each checkpoint holds the
        records so far, so very frequent checkpoints of a long run cost time.
    engine : {"auto", "numpy", "jax"}, default "auto"
        "jax" runs :func:`effdyn.engine_jax.gd_jax` (compiled ``lax.scan`` chunks with the
        JAX eigen-tracker inside; problems from :func:`effdyn.problems.from_jax` only);
        "numpy" the loop described above (numba kernels or Python). "auto" takes JAX for
        JAX problems unless an option only the NumPy engine has is given (``checkpoint``,
        ``eig_options``), NumPy otherwise. Both engines give the same θ (to rounding) and
        the same records; the JAX trajectory also carries ``eig_info`` and
        ``tracker_state`` (see :func:`effdyn.engine_jax.gd_jax`).

    Returns
    -------
    GDTrajectory

    Raises
    ------
    IntegrationError
        On divergence or failure with ``throw=True``, and always on Ctrl-C
        (``cause="interrupted"``), carrying the partial trajectory.
    TypeError, ValueError
        Invalid arguments, or records that would not fit in memory (the message says
        which option avoids them: ``theta_every``, ``record_eigvecs=False`` ...), before
        anything runs.

    Examples
    --------
    >>> import effdyn as ed
    >>> traj = ed.gd(ed.problems.MinimalValley(1.0, 0.01), [0.1, 3.0], eta=0.3, steps=2000)
    >>> traj.eos_onset()
    1222
    """
    explicit_stride = theta_every is not None
    theta0, eta, steps, variant, eig_every, n_eigs, theta_every, loss_bound = _validate(
        problem, theta0, eta, steps, variant, eig_every, n_eigs, 1 if theta_every is None else theta_every,
        loss_bound, throw, progress, compiled)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0; got {seed!r}.")
    if not isinstance(record_eigvecs, bool):
        raise TypeError(f"`record_eigvecs` must be True or False; got {record_eigvecs!r}.")
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
    engine = _gd_engine(problem, engine, checkpoint, eig_options)
    ckpt_path, every = _checkpoint_args(checkpoint, checkpoint_every, steps)
    if engine == "jax":
        if explicit_stride:
            _check_memory(problem.dim, steps, eig_every, n_eigs, theta_every, record_eigvecs)
        from .engine_jax.gd import gd_jax

        return gd_jax(problem, theta0, eta, steps, variant=variant, eig_every=eig_every, n_eigs=n_eigs,
                      theta_every=theta_every if explicit_stride else None, loss_bound=loss_bound, throw=throw,
                      progress=progress, seed=seed, record_eigvecs=record_eigvecs,
                      eig_tol=eig_tol, eig_criterion="eigenvalue" if eig_tol is None else "residual",
                      eig_dense_max=dense_max)
    _check_memory(problem.dim, steps, eig_every, n_eigs, theta_every, record_eigvecs)
    from .spectrum import DENSE_MAX, TOL

    args = {"theta0": theta0, "eta": eta, "steps": steps, "variant": variant, "eig_every": eig_every,
            "n_eigs": n_eigs, "theta_every": theta_every, "loss_bound": loss_bound, "record_eigvecs": record_eigvecs,
            "dense_max": DENSE_MAX if dense_max is None else dense_max, "eig_tol": TOL if eig_tol is None else eig_tol,
            "compiled": problem.numba_kernels is not None and compiled is not False,
            "seed": None if seed is None else int(seed), "eig_options": dict(eig_options)}
    ckpt = None
    if ckpt_path is not None:
        ckpt = _GDCheckpointer(ckpt_path, every, _checkpoint_header(problem, args, every))
    return _run(problem, args, throw=throw, progress=progress, checkpoint=ckpt)


#: The engines of :func:`gd`.
GD_ENGINES = ("auto", "numpy", "jax")


def _gd_engine(problem, engine, checkpoint, eig_options) -> str:
    """The engine ``gd`` runs on: "numpy" or "jax" (see its ``engine`` argument)."""
    from .problems.jax_problem import JaxProblem

    if not isinstance(engine, str):
        raise TypeError(f"`engine` must be one of {list(GD_ENGINES)}; got {engine!r}.")
    engine = choice(engine, "engine", GD_ENGINES)
    is_jax = isinstance(problem, JaxProblem)
    numpy_only = [name for name, given in (("checkpoint", checkpoint not in (None, False)),
                                           ("eig_options", bool(eig_options))) if given]
    if engine == "jax":
        if not is_jax:
            raise ValueError(f"`engine=\"jax\"` needs a problem made by `effdyn.problems.from_jax`; "
                             f"{type(problem).__name__} runs on engine=\"numpy\" (or \"auto\").")
        if numpy_only:
            raise ValueError(f"`{numpy_only[0]}` is an option of the NumPy engine only; drop it or pass "
                             "engine=\"numpy\".")
        return "jax"
    if engine == "auto":
        return "jax" if is_jax and not numpy_only else "numpy"
    return "numpy"


def resume_gd(problem, path, *, checkpoint=None, checkpoint_every: int | None = None, throw: bool = True,
              progress: bool | None = None) -> GDTrajectory:
    """Continue a run of :func:`gd` from its checkpoint file.

    The result equals the uninterrupted run's bit for bit (on the same machine and library
    versions): the checkpoint holds the position, the records so far and the eigen-tracker's
    warm starts, and the run continues with the arguments it was started with.

    Parameters
    ----------
    problem : Problem
        The problem of the original run, rebuilt with the same class and parameters: its
        :meth:`~effdyn.problems.Problem.identity` (parameters and a fingerprint of the
        loss) is compared with the checkpoint's and any difference is refused.
    path : str or os.PathLike
        The file given as ``checkpoint=`` to :func:`gd`.
    checkpoint : str, os.PathLike or False, optional
        Where to keep writing checkpoints (default: ``path``); False writes none.
    checkpoint_every : int, optional
        Steps between checkpoints (default: that of the original run).
    throw, progress
        As in :func:`gd`.

    Returns
    -------
    GDTrajectory
        The whole run from step 0. A checkpoint written at the end of a finished run gives
        that run back without computing anything.
    """
    from .io import versions
    from .problems.base import identity_difference
    from .solvers._checkpoint import read_tree

    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be an effdyn Problem (the one the run was started with); "
                        f"got {type(problem).__name__}.")
    _check_flags(throw, progress)
    if isinstance(path, (str, os.PathLike)) and not Path(path).is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist; pass the file given as `checkpoint=` to gd.")
    header, state = read_tree(path, fmt=GD_CHECKPOINT_FORMAT, version=GD_CHECKPOINT_VERSION, what="GD checkpoint")
    saved = json.dumps(header["problem"], sort_keys=True)
    diff = identity_difference(problem.identity(), saved)
    if diff:
        raise ValueError(f"`problem` is not the problem of the checkpoint {str(path)!r}: {diff}. Pass the problem the "
                         "run was started with.")
    now = versions()
    changed = sorted(k for k in set(now) | set(header["versions"]) if now.get(k) != header["versions"].get(k))
    if changed:
        warnings.warn(f"the GD checkpoint was written with other versions of {changed}; the resumed run may differ "
                      "from an uninterrupted one in the last bits.", stacklevel=2)
    args = dict(header["args"])
    args["theta0"] = np.asarray(args["theta0"], dtype=np.float64)
    if args["compiled"] and problem.numba_kernels is None:
        raise ValueError("the checkpointed run used the compiled loop, but `problem` has no numba kernels.")
    if checkpoint is None:
        checkpoint = path
    every = checkpoint_every
    if checkpoint is not False and every is None:
        every = header["checkpoint_every"]
    ckpt_path, every = _checkpoint_args(checkpoint, every, args["steps"])
    ckpt = None
    if ckpt_path is not None:
        ckpt = _GDCheckpointer(ckpt_path, every, {**header, "checkpoint_every": every})
    return _run(problem, args, throw=throw, progress=progress, checkpoint=ckpt, resume_state=state)


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------
def _checkpoint_header(problem, args, every) -> dict:
    from .io import versions

    # θ0 travels as a JSON list (floats round-trip exactly through repr)
    stored = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    return {"format": GD_CHECKPOINT_FORMAT, "version": GD_CHECKPOINT_VERSION,
            "problem": json.loads(problem.identity()), "args": stored, "checkpoint_every": int(every),
            "versions": versions()}


class _GDCheckpointer:
    """The periodic, atomic writer of :func:`effdyn.solve` (``Checkpointer``) for GD runs:
    captures a consistent state in memory, writes the last captured one."""

    def __init__(self, path, every, header):
        from .solvers._checkpoint import Checkpointer

        self._inner = Checkpointer(path, every, header)
        self.path = self._inner.path

    @property
    def snapshot(self):
        return self._inner.snapshot

    def next_due(self) -> int:
        return int(np.ceil(self._inner.next_due))

    def due(self, k) -> bool:
        return self._inner.due(k)

    def capture(self, k, body):
        self._inner.capture(k, body)

    def write(self):
        return self._inner.write()

    def where(self) -> str:
        return (f"checkpoint at step {int(self._inner.k)} written to {str(self.path)!r}; continue with "
                f"effdyn.resume_gd(problem, {str(self.path)!r})")


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def _chunk_function(problem, compiled):
    """(chunk_fn, params): the compiled loop over the problem's kernels or the NumPy loop."""
    if compiled:
        from .kernels.gd_loop import compiled_chunk

        kernels = problem.numba_kernels
        return compiled_chunk(kernels.loss, kernels.grad), kernels.params
    from .kernels.gd_loop import python_chunk

    def loss_fn(theta, _params):
        return float(problem._loss(theta))

    def grad_fn(theta, _params):
        return np.asarray(problem._grad(theta), dtype=np.float64)

    return python_chunk(loss_fn, grad_fn), ()


def _run(problem, a, *, throw, progress, checkpoint=None, resume_state=None) -> GDTrajectory:
    from scipy.sparse.linalg import ArpackError

    from .progress import progress_meter
    from .solvers._checkpoint import deferred_interrupt
    from .spectrum import EigenTracker

    steps, eta, variant = a["steps"], a["eta"], a["variant"]
    eig_every, n_eigs, theta_every = a["eig_every"], a["n_eigs"], a["theta_every"]
    loss_bound, theta0 = a["loss_bound"], a["theta0"]
    tracker = None
    if eig_every is not None:
        tracker = EigenTracker(problem, n_eigs, dense_max=a["dense_max"], tol=a["eig_tol"], **a["eig_options"])
    config = {"seed": a["seed"], "eta": eta, "steps": steps, "variant": variant, "eig_every": eig_every,
              "n_eigs": n_eigs, "theta_every": theta_every, "loss_bound": loss_bound,
              "dense_max": tracker.dense_max if tracker else None, "eig_tol": tracker.tol if tracker else None,
              "eig_options": dict(a["eig_options"])}
    compiled = a["compiled"]
    chunk_fn, params = _chunk_function(problem, compiled)

    P = problem.dim
    n_theta = steps // theta_every + 1
    n_eig = 0 if eig_every is None else steps // eig_every + 1
    loss = np.empty(steps + 1)
    gnorm = np.empty(steps + 1)
    amp = np.empty(steps)
    amp_sub = np.empty(steps)
    theta_rec = np.empty((n_theta, P))
    record_mid = theta_every > 1
    mid = np.full((n_theta, P), np.nan) if record_mid else np.empty((1, P))
    eigs = np.empty((n_eig, n_eigs))
    eigvecs = np.empty((n_eig, P)) if (a["record_eigvecs"] and n_eig) else None

    complete = False
    if resume_state is None:
        theta_rec[0] = theta0
        theta = np.ascontiguousarray(theta0.copy())
        prev = theta.copy()
        # Columns: the most recent top-n_eigs eigenvectors (zeros before the first solve).
        V = np.zeros((P, n_eigs))
        k, last_eig, wall_before = 0, -1, 0.0
    else:
        st = resume_state
        k, last_eig, wall_before, complete = int(st["step"]), int(st["last_eig"]), float(st["wall_time"]), \
            bool(st["complete"])
        theta = np.ascontiguousarray(np.array(st["theta"], dtype=np.float64))
        prev = np.array(st["prev"], dtype=np.float64)
        V = np.ascontiguousarray(np.array(st["V"], dtype=np.float64))
        for name, out in (("loss", loss), ("gnorm", gnorm), ("amp", amp), ("amp_sub", amp_sub),
                          ("theta_rec", theta_rec), ("eigs", eigs)):
            out[: len(st[name])] = st[name]
        if record_mid:
            mid[: len(st["mid"])] = st["mid"]
        if eigvecs is not None:
            eigvecs[: len(st["eigvecs"])] = st["eigvecs"]
        if tracker is not None:
            tracker.load_state_dict(st["tracker"])

    def body(n_loss, done_flag=False):
        n_eig_done = last_eig // eig_every + 1 if (eig_every is not None and last_eig >= 0) else 0
        rows = k // theta_every + 1
        return {"step": k, "complete": done_flag, "last_eig": last_eig, "theta": theta, "prev": prev, "V": V,
                "loss": loss[:n_loss], "gnorm": gnorm[:n_loss], "amp": amp[:k], "amp_sub": amp_sub[:k],
                "theta_rec": theta_rec[:rows], "mid": mid[:rows] if record_mid else None,
                "eigs": eigs[:n_eig_done], "eigvecs": None if eigvecs is None else eigvecs[:n_eig_done],
                "tracker": None if tracker is None else tracker.state_dict(),
                "wall_time": wall_before + time.perf_counter() - t0}

    chunk = eig_every if eig_every is not None else _CHUNK_NO_EIGS
    meter = progress_meter(steps, progress, desc=f"GD ({variant}, eta={eta:g})", unit="step",
                           min_total=PROGRESS_MIN_STEPS)
    if k:
        meter.update(k)
    variant_code = VARIANTS.index(variant)
    loss_min = 0.0 if problem.loss_min is None else float(problem.loss_min)
    t0 = time.perf_counter()
    status, fail_step, fail_value, eig_fail, user_exc = 0, None, 0.0, None, None
    done, interrupted = complete, False
    if complete:
        k = steps
    with deferred_interrupt(checkpoint is not None) as interrupt:
        try:
            if checkpoint is not None and resume_state is None:
                checkpoint.capture(0, body(0))
                checkpoint.write()
            while not complete:
                if tracker is not None and k % eig_every == 0 and k != last_eig:
                    last_eig = k
                    try:
                        vals, vecs = tracker._update(theta)
                        ok = bool(np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs)))
                    except (np.linalg.LinAlgError, ArpackError, ArithmeticError, ValueError) as exc:
                        ok, eig_fail = False, f"the eigen-solve failed ({type(exc).__name__}: {exc})"
                    except (KeyboardInterrupt, MemoryError):
                        raise
                    except Exception as exc:  # the problem's own hvp/hessian raised
                        user_exc, fail_step = exc, k
                        eig_fail = f"the eigen-solve raised in the problem's code ({type(exc).__name__}: {exc})"
                        break
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
                # stretches end at multiples of `chunk` (the eigen-solve steps) and at the
                # checkpoint steps; where they end does not change a single bit of the run
                k1 = min(steps, (k // chunk + 1) * chunk)
                if checkpoint is not None:
                    k1 = min(k1, max(checkpoint.next_due(), k + 1))
                done = k1 == steps
                if not compiled:
                    # a step whose loss or gradient raises is never recorded: the first NaN
                    # left in this stretch names it
                    loss[k: k1 + 1] = np.nan
                try:
                    status, k_end, fail_value, theta, prev = chunk_fn(
                        params, theta, prev, eta, variant_code, loss_min, loss_bound, V,
                        k, k1, done, theta_every, record_mid, loss, gnorm, amp, amp_sub, theta_rec, mid)
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:
                    user_exc = exc
                    unrecorded = np.flatnonzero(np.isnan(loss[k: k1 + 1])) if not compiled else []
                    fail_step = k + int(unrecorded[0]) if len(unrecorded) else k
                    break
                meter.update(k_end - k)
                if status != 0:
                    fail_step = k_end
                    break
                k = k1
                if checkpoint is not None and not done and (interrupt.hit or checkpoint.due(k)):
                    checkpoint.capture(k, body(k))
                    checkpoint.write()
                if interrupt.hit and not done:
                    interrupted, fail_step = True, k
                    break
        except KeyboardInterrupt:
            # Raised inside a stretch of steps (a second Ctrl-C, or no checkpoint): the record
            # keeps the steps before that stretch, the checkpoint the last state captured.
            interrupted, fail_step = True, k
            if checkpoint is not None and checkpoint.snapshot is not None:
                checkpoint.write()
        finally:
            meter.close()
    wall = wall_before + time.perf_counter() - t0

    # Truncate to the last valid step K so that the record is a complete shorter run.
    K = steps if fail_step is None else fail_step - 1
    cause, run_status, message = _outcome(steps, K, fail_step, status, fail_value, eig_fail, user_exc, interrupted,
                                          loss_bound)
    if checkpoint is not None and run_status == Status.SUCCESS and not complete:
        checkpoint.capture(steps, body(steps + 1, done_flag=True))
        checkpoint.write()
    if interrupted and checkpoint is not None and checkpoint.snapshot is not None:
        message = f"{message} {checkpoint.where()[0].upper()}{checkpoint.where()[1:]}."
    traj = _trajectory(K, steps, loss, gnorm, amp, amp_sub, theta_rec, mid, record_mid, eigs, eigvecs,
                       theta_every, eig_every)
    traj.update(eta=eta, variant=variant, status=run_status, message=message,
                diverged_at=fail_step if run_status in (Status.DIVERGED, Status.FAILED) else None, cause=cause,
                problem_config=problem.config(), config=config, wall_time=wall,
                n_hvp=tracker.n_hvp if tracker is not None else 0,
                eig_checks=tracker.n_checks if tracker is not None else 0,
                eig_corrections=tracker.n_corrections if tracker is not None else 0,
                loss_min=None if problem.loss_min is None else float(problem.loss_min),
                theta0=np.array(theta0, dtype=np.float64), _problem=problem)
    traj = GDTrajectory(**traj)
    if interrupted:
        raise IntegrationError(message, step=fail_step, time=float(fail_step), cause=Cause.INTERRUPTED, partial=traj)
    if run_status in (Status.DIVERGED, Status.FAILED) and throw:
        err = IntegrationError(message, step=fail_step, time=float(fail_step), cause=cause, partial=traj)
        if user_exc is not None:
            raise err from user_exc
        raise err
    return traj


def _outcome(steps, K, fail_step, status, fail_value, eig_fail, user_exc, interrupted, loss_bound):
    """(cause, status, message) of a finished or stopped run."""
    if user_exc is not None:
        cause, run_status = Cause.USER_CODE, Status.FAILED
        where = eig_fail or f"the problem's loss or gradient raised {type(user_exc).__name__}: {user_exc}"
        message = (f"GD stopped at step {fail_step}: {where} (user code raised; the original exception is chained, "
                   "the partial trajectory is attached).")
    elif eig_fail is not None and eig_fail.startswith("the eigen-solve"):
        cause, run_status = Cause.SOLVER_FAILURE, Status.FAILED
        message = f"GD stopped at step {fail_step}: {eig_fail}."
    elif status == STATUS_NONFINITE:
        cause, run_status = Cause.NON_FINITE, Status.DIVERGED
        what = eig_fail if eig_fail else f"non-finite loss or gradient ({fail_value!r})"
        message = f"GD diverged at step {fail_step}: {what}."
    elif status == STATUS_BLOWUP:
        cause, run_status = Cause.BLOW_UP, Status.DIVERGED
        message = f"GD diverged at step {fail_step}: |loss| = {abs(fail_value):.3e} exceeds loss_bound = {loss_bound:.3e}."
    elif interrupted:
        cause, run_status = Cause.INTERRUPTED, Status.INTERRUPTED
        message = f"GD interrupted at step {fail_step}; the record holds steps 0..{K}."
    else:
        cause, run_status, message = None, Status.SUCCESS, f"GD completed {steps} steps."
    if run_status in (Status.DIVERGED, Status.FAILED):
        message += f" The record holds steps 0..{K}."
    return cause, run_status, message


def _trajectory(K, steps, loss, gnorm, amp, amp_sub, theta_rec, mid, record_mid, eigs, eigvecs, theta_every,
                eig_every) -> dict:
    """The records of steps 0..K as GDTrajectory fields (the arrays themselves when the run
    is complete, copies of their first rows otherwise)."""
    n_th = K // theta_every + 1 if K >= 0 else 0
    n_ei = (K // eig_every + 1 if K >= 0 else 0) if eig_every is not None else 0
    full = K == steps

    def head(arr, n):
        return arr if full and len(arr) == n else arr[:n].copy()

    mid_k = mid_arr = None
    if record_mid:
        rows = np.arange(n_th)
        valid = (rows * theta_every >= 1) & (rows * theta_every <= K - 1)
        mid_k = (rows[valid] * theta_every).astype(np.int64)
        mid_arr = mid[rows[valid]].copy()
    return dict(
        k=np.arange(max(K + 1, 0), dtype=np.int64),
        loss=head(loss, K + 1),
        grad_norm=head(gnorm, K + 1),
        theta=head(theta_rec, n_th),
        theta_k=np.arange(n_th, dtype=np.int64) * theta_every,
        eig_k=np.arange(n_ei, dtype=np.int64) * (eig_every or 1),
        eigs=head(eigs, n_ei),
        top_eigvec=None if eigvecs is None else head(eigvecs, n_ei),
        half_amp=head(amp, max(K, 0)),
        half_amp_subspace=head(amp_sub, max(K, 0)),
        _mid=mid_arr,
        _mid_k=mid_k,
    )
