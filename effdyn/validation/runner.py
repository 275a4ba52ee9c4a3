"""Running validation cases: GD, every model, the comparison, and the files they produce.

For each case :func:`run_case` runs discrete GD (the arbiter) with sharpness tracking, then
each model of the case through :func:`effdyn.solve`, compares it with GD
(:func:`effdyn.compare`) and saves the case as one netCDF file plus PNG figures. Nothing in
a case can stop the others: a model that is missing, not applicable or fails becomes a row
with its status and message; a case whose GD diverges is reported as such.

A case with a ``handover_offset`` also starts every model from GD's own state at step
k_h = (GD's EoS onset) + offset (``traj.state_at(k_h)``, ``solve(model, start=...)``): rows
"<model> [handover]" in :attr:`CaseResult.handovers`, compared over [k_h, end] together with
the same model's run from θ0 over that window (``ModelResult.baseline``). A model started at
θ0 has to find the onset from its seed; from the handover only its dynamics are compared.
Every row records what seeded its oscillation (``ModelResult.seed``, see
:func:`effdyn.handover.seed_label`).

A keyboard interrupt saves what was computed so far (the current case's partial results and
the report) and raises :class:`ValidationInterrupted`, which says where the files are.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._names import slug  # re-exported: effdyn.validation.runner.slug stays importable
from ..errors import IntegrationError
from ..outcomes import Cause, Status
from .cases import CASES, Case, ModelSpec, Setup, get_case

__all__ = ["validate", "run_case", "run_setup", "ModelResult", "CaseResult", "ValidationResult",
           "ValidationInterrupted", "CaseInterrupted", "case_dataset", "distance_series", "slug"]

#: θ trajectories are stored in the netCDF files up to this many parameters.
THETA_SAVE_MAX = 256
#: Default wall-time budget (s) of one model run in quick mode.
QUICK_MODEL_BUDGET = 15.0


class ValidationInterrupted(KeyboardInterrupt):
    """Ctrl-C during a validation run; ``result`` holds what was saved and where."""

    def __init__(self, result):
        super().__init__(f"interrupted; partial results saved in {result.out_dir}")
        self.result = result


@dataclass
class ModelResult:
    """One model's row of a case: status, comparison metrics and cost."""

    label: str
    model: str
    solver: str
    status: str  # success | diverged | failed | budget | interrupted | error | unavailable | not applicable
    message: str = ""
    metrics: object = None  # effdyn.Metrics or None
    nfev: int = 0
    wall_time: float = 0.0
    solution: object = None  # effdyn.Solution (possibly partial) or None
    #: what seeded the model's oscillation (a key of effdyn.handover.SEED_KINDS; "" unknown)
    seed: str = ""
    #: handover rows: the GD step handed over, and the metrics of the same model's run from
    #: θ0 over the handover row's window (None when that run cannot be compared there)
    k0: int | None = None
    baseline: object = None

    @property
    def compared(self) -> bool:
        return self.metrics is not None


@dataclass
class CaseResult:
    """Everything one case produced."""

    name: str
    title: str
    status: str  # ok | gd-diverged | error | interrupted
    message: str = ""
    setup: Setup | None = None
    gd: object = None  # GDTrajectory
    gd_wall: float = 0.0
    models: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    wall_time: float = 0.0
    #: the rows of the runs started from GD's state (see the module docstring)
    handovers: list = field(default_factory=list)
    #: the GD step handed over (None: no handover) and why there is none when one was asked for
    handover_k0: int | None = None
    handover_note: str = ""

    @property
    def eos_onset(self):
        if self.gd is None or not hasattr(self.gd, "eos_onset"):
            return None
        return self.gd.eos_onset()


@dataclass
class ValidationResult:
    """The outcome of :func:`validate`: the cases, the output folder, the report path."""

    cases: list
    out_dir: Path
    report: Path | None
    quick: bool
    wall_time: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when every case ran to the end with GD finishing (model failures are results)."""
        return not self.interrupted and all(c.status == "ok" for c in self.cases)


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- running -----------------------------------------------------------------------------

def _model_class(name: str):
    """The registered model class ``name``, or the reason it is unavailable."""
    from .. import registry

    try:
        return registry.model_entry(name).cls, None
    except (ImportError, AttributeError, ValueError) as exc:
        return None, f"{name} is not available in this installation ({type(exc).__name__}: {exc})"


def _run_gd(setup: Setup, progress):
    import inspect

    from .. import gd

    options = dict(setup.gd_options)
    if "progress" in inspect.signature(gd).parameters:
        options.setdefault("progress", progress)
    t0 = time.perf_counter()
    try:
        traj = gd(setup.problem, setup.theta0, setup.eta, setup.steps, throw=False, **options)
    except IntegrationError as exc:  # interrupted GD carries its partial trajectory
        traj = exc.partial
        if exc.cause == "interrupted":
            raise _GDInterrupted(traj, time.perf_counter() - t0) from exc
        if traj is None:
            raise
    return traj, time.perf_counter() - t0


def _run_model(spec: ModelSpec, setup: Setup, traj, progress, log, budget=None, start=None) -> ModelResult:
    from .. import compare, solve
    from ..handover import seed_label

    from .config import build_model

    label = spec.label if start is None else handover_label(spec.label)
    row = ModelResult(label, spec.cls, spec.solver, Status.ERROR, k0=None if start is None else start.k0)
    cls, why = _model_class(spec.cls)
    if cls is None:
        row.status, row.message = Status.UNAVAILABLE, why
        log(f"    {spec.label}: skipped, {why}")
        return row
    try:
        model = build_model(cls, spec, setup)
    except Exception as exc:  # a model that cannot handle this problem is a result, not a crash
        row.status, row.message = Status.NOT_APPLICABLE, f"{type(exc).__name__}: {exc}"
        log(f"    {label}: not applicable ({row.message})")
        return row
    row.seed = seed_label(model, spec.initial, start)
    budget = spec.budget if spec.budget is not None else budget
    if start is None:
        where = dict(theta0=setup.theta0, steps=setup.steps, initial=spec.initial)
    else:
        where = dict(start=start, steps=setup.steps - start.k0)
    t0 = time.perf_counter()
    try:
        sol = solve(model, solver=spec.solver, rtol=spec.rtol, atol=spec.atol, save_every=spec.save_every,
                    throw=False, progress=progress, seed=setup.seed,
                    time_limit=None if budget is None else float(budget), **where)
    except IntegrationError as exc:
        sol = exc.partial
        row.status = Status.INTERRUPTED if exc.cause == Cause.INTERRUPTED else Status.FAILED
        row.message = str(exc)
        if exc.cause == Cause.INTERRUPTED:
            row.solution, row.wall_time = _finite_prefix(sol), time.perf_counter() - t0
            row.nfev = int(sol.stats.nfev) if sol is not None else 0
            _attach_metrics(row, traj, compare)
            raise _ModelInterrupted(row) from exc
    except Exception as exc:
        row.status, row.message = "error", f"{type(exc).__name__}: {exc}"
        row.wall_time = time.perf_counter() - t0
        log(f"    {label}: error, {row.message}")
        return row
    else:
        row.status = Status(sol.stats.status)
        row.message = sol.stats.message
        if row.status == Status.BUDGET:
            row.message = (f"stopped at k = {sol.k[-1]:g} of {setup.steps}: time budget of {budget:g} s exceeded "
                           "(raise it with --model-budget)")
        if sol.stats.warnings:  # e.g. a stalled oscillation: the row says so, not just "success"
            row.message = "; ".join(["warning: " + w for w in sol.stats.warnings] + ([row.message] if row.message
                                                                                         and row.status != Status.SUCCESS
                                                                                         else []))
    row.wall_time = time.perf_counter() - t0
    row.solution = sol = _finite_prefix(sol)
    if sol is not None:
        row.nfev = int(sol.stats.nfev)
        row.wall_time = float(sol.stats.wall_time) or row.wall_time
    _attach_metrics(row, traj, compare)
    log(f"    {label}: {row.status}, {row.nfev} rhs evaluations, {row.wall_time:.2f} s"
        + (f", sharpness error {row.metrics.sharpness_error:.3g}" if row.metrics is not None else ""))
    return row


def handover_label(label: str) -> str:
    """Row label of a model's run started from GD's state."""
    return f"{label} [handover]"


def _run_handovers(result: CaseResult, setup: Setup, traj, progress, log, budget) -> None:
    """Every model of the case again, from GD's state at onset + ``handover_offset``."""
    from .. import compare

    onset = result.eos_onset
    if onset is None:
        result.handover_note = "GD never reaches the EoS: no handover"
        log(f"    handover: skipped, {result.handover_note}")
        return
    k_h = onset + setup.handover_offset
    n = max([int(traj.eigs.shape[1]) if np.ndim(traj.eigs) == 2 else 1]
            + [int(spec.options.get("rank", 1)) for spec in setup.models
               if isinstance(spec.options.get("rank", 1), int)])
    try:
        if setup.steps - k_h < 2:
            raise ValueError(f"the handover step {k_h} leaves fewer than 2 of the {setup.steps} steps")
        state = traj.state_at(k_h, n=min(n, setup.problem.dim))
    except (ValueError, TypeError) as exc:
        result.handover_note = f"no handover at step {k_h} (onset {onset} + {setup.handover_offset}): {exc}"
        log(f"    handover: skipped, {result.handover_note}")
        return
    result.handover_k0 = k_h
    log(f"  handover at GD step {k_h} (EoS onset {onset} + {setup.handover_offset}; GD's half-step amplitude "
        f"{state.amplitude:.3g} along v1)")
    by_label = {row.label: row for row in result.models}
    for spec in setup.models:
        row = _run_model(spec, setup, traj, progress, log, budget, start=state)
        base = by_label.get(spec.label)
        if row.metrics is not None and base is not None and base.solution is not None and len(base.solution.k) >= 2:
            try:
                row.baseline = compare(traj, base.solution, window=(row.metrics.k0, row.metrics.k1))
            except Exception:  # the θ0 run stopped before the window: no baseline
                row.baseline = None
        result.handovers.append(row)


def _finite_prefix(sol):
    """A diverged run may end on non-finite states, where observables cannot be evaluated:
    keep the saved states before the first non-finite one (the run's status says the rest)."""
    if sol is None or len(sol.k) == 0:
        return sol
    finite = np.all(np.isfinite(sol.y), axis=1)
    if finite.all():
        return sol
    return sol.head(int(np.argmin(finite)))


class CaseInterrupted(KeyboardInterrupt):
    """Ctrl-C inside one case; ``result`` is the partial (already saved) CaseResult."""

    def __init__(self, result):
        super().__init__(f"case {result.name} interrupted")
        self.result = result


class _GDInterrupted(KeyboardInterrupt):
    def __init__(self, traj, wall):
        super().__init__("interrupted")
        self.traj, self.wall = traj, wall


class _ModelInterrupted(KeyboardInterrupt):
    def __init__(self, row):
        super().__init__("interrupted")
        self.row = row


def _attach_metrics(row: ModelResult, traj, compare) -> None:
    sol = row.solution
    if sol is None or len(sol.k) < 2:
        return
    try:
        row.metrics = compare(traj, sol)
    except Exception as exc:  # e.g. a model that stopped before GD's EoS onset
        note = f"not compared: {type(exc).__name__}: {exc}"
        row.message = f"{row.message}; {note}" if row.message else note


def run_setup(name: str, title: str, setup: Setup, *, out_dir=None, progress=None, log=_log_default,
              figures: bool = True, setup_time: float = 0.0, model_budget: float | None = None) -> CaseResult:
    """Run GD and every model of ``setup``; save ``<out_dir>/<name>.nc`` and figures.

    An interrupt (Ctrl-C) saves the partial case, then raises :class:`CaseInterrupted`
    carrying it. The case's ``wall_time`` covers the runs, saving and figures (plus
    ``setup_time``, the time spent building the setup).
    """
    t0 = time.perf_counter()
    result = CaseResult(name, title, "ok", setup=setup)
    log(f"  GD: P = {setup.problem.dim}, η = {setup.eta:g} (2/η = {2 / setup.eta:.4g}), {setup.steps} steps")
    interrupted = False
    try:
        traj, result.gd_wall = _run_gd(setup, progress)
        result.gd = traj
        status = getattr(traj, "status", "success")
        onset = result.eos_onset
        log(f"    GD: {status}, {result.gd_wall:.2f} s, EoS onset "
            + ("never" if onset is None else f"at step {onset}"))
        if status != "success":
            result.status = "gd-diverged" if status == "diverged" else "error"
            result.message = getattr(traj, "message", "") or f"GD stopped: {status}"
            log(f"    GD did not finish ({result.message}); models skipped for this case.")
        else:
            for spec in setup.models:
                result.models.append(_run_model(spec, setup, traj, progress, log, model_budget))
            if setup.handover_offset is not None:
                _run_handovers(result, setup, traj, progress, log, model_budget)
    except _GDInterrupted as exc:
        result.gd, result.gd_wall = exc.traj, exc.wall
        interrupted = True
    except _ModelInterrupted as exc:
        (result.handovers if exc.row.k0 is not None else result.models).append(exc.row)
        interrupted = True
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        result.status, result.message = "interrupted", "interrupted by the user (Ctrl-C); partial results saved"
    result.wall_time = time.perf_counter() - t0  # provisional: the saved file holds the run time
    if out_dir is not None and result.gd is not None:
        _save_case(result, Path(out_dir), figures=figures, log=log)
    result.wall_time = time.perf_counter() - t0 + setup_time
    log(f"  {name}: {result.status} in {result.wall_time:.1f} s"
        + (f" -> {result.files['netcdf']}" if "netcdf" in result.files else ""))
    if interrupted:
        raise CaseInterrupted(result)
    return result


def run_case(case: Case | str, *, quick: bool = True, steps: int | None = None, cifar=None, out_dir=None,
             progress=None, log=_log_default, figures: bool = True, model_budget: float | None = None) -> CaseResult:
    """Run one registered case (see :func:`run_setup` for what is produced)."""
    if isinstance(case, str):
        case = get_case(case)
    t0 = time.perf_counter()
    try:
        setup = case.setup(quick, cifar=cifar, steps=steps)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}"
        log(f"  setup failed: {msg}")
        return CaseResult(case.name, case.title, "error", msg, wall_time=time.perf_counter() - t0)
    return run_setup(case.name, case.title, setup, out_dir=out_dir, progress=progress, log=log, figures=figures,
                     setup_time=time.perf_counter() - t0, model_budget=model_budget)


def _save_case(result: CaseResult, out_dir: Path, *, figures: bool, log) -> None:
    from ..io import save_dataset

    try:
        ds = case_dataset(result)
        result.files["netcdf"] = save_dataset(ds, out_dir / f"{result.name}.nc")
        if figures:
            from ..plotting import plot_case

            result.files["figures"] = plot_case(ds, out_dir, prefix=result.name)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # saving must not lose the rest of the run
        result.message = (result.message + "; " if result.message else "") + f"saving failed: {exc}"
        log(f"    saving {result.name} failed: {type(exc).__name__}: {exc}")


def validate(cases=None, *, quick: bool = True, out_dir="effdyn-output", cifar=None, steps=None, progress=None,
             log=_log_default, figures: bool = True, model_budget="auto") -> ValidationResult:
    """Run validation cases against GD and write the report.

    Parameters
    ----------
    cases : list of str, optional
        Case names (default: every case; the CIFAR-10 case only when a CIFAR folder is
        given by ``cifar`` or ``$EFFDYN_CIFAR10``). Unknown names raise
        :class:`~effdyn.validation.cases.UnknownCaseError` listing the valid ones, before
        anything runs.
    quick : bool
        Quick horizons (and the smaller mean-field width) instead of the full ones.
    out_dir : str or Path
        Output folder: ``report.md``, ``<case>.nc``, ``<case>_<figure>.png``.
    cifar : str or Path, optional
        Local ``cifar-10-batches-py`` folder.
    steps : int or dict, optional
        Horizon override in GD steps, for every case (int) or per case name (dict).
    progress : bool or None
        Progress bars of the long runs (None: only on a terminal).
    log : callable
        Receives one line of progress text at a time (default: stderr).
    figures : bool
        Draw the PNG figures.
    model_budget : float, None or "auto"
        Wall-time limit (s) of each model run; a model that reaches it stops with status
        "budget" and is compared over what it computed. "auto": 15 s for quick runs (so
        that one slow model cannot hold up `make run`), none for full runs. Cases may set
        larger budgets for models known to be slow (:class:`ModelSpec` ``budget``).

    Returns
    -------
    ValidationResult

    Raises
    ------
    ValidationInterrupted
        On Ctrl-C, after saving the partial results and the report.
    """
    from ..data import cifar10_path
    from .report import write_report

    cifar = cifar10_path(cifar)
    if cases is None:
        names = [n for n, c in CASES.items() if not c.needs_cifar or cifar is not None]
    else:
        names = list(cases)
        for n in names:
            get_case(n)
    if isinstance(steps, dict):
        for n in steps:
            get_case(n)
    if model_budget == "auto":
        model_budget = QUICK_MODEL_BUDGET if quick else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = ValidationResult([], out_dir, None, quick)
    mode = "quick" if quick else "full"
    try:
        for i, name in enumerate(names, 1):
            case = get_case(name)
            log(f"[{i}/{len(names)}] {name}: {case.title} ({mode})")
            n_steps = steps.get(name) if isinstance(steps, dict) else steps
            try:
                result.cases.append(run_case(case, quick=quick, steps=n_steps, cifar=cifar, out_dir=out_dir,
                                             progress=progress, log=log, figures=figures,
                                             model_budget=model_budget))
            except CaseInterrupted as exc:
                result.cases.append(exc.result)
                raise
    except KeyboardInterrupt:
        result.interrupted = True
        result.wall_time = time.perf_counter() - t0
        result.report = write_report(result, out_dir / "report.md")
        raise ValidationInterrupted(result) from None
    result.wall_time = time.perf_counter() - t0
    result.report = write_report(result, out_dir / "report.md")
    return result


# --- datasets ----------------------------------------------------------------------------

def distance_series(mid_k, mid, sol):
    """‖θ_model(k) − θ̄_GD(k)‖ at GD's midpoint steps ``mid_k`` (NaN past the model's end)."""
    theta = np.asarray(sol.theta, dtype=float)
    ks = np.asarray(sol.k, dtype=float)
    out = np.full(len(mid_k), np.nan)
    sel = (mid_k >= ks[0]) & (mid_k <= ks[-1])
    if len(ks) >= 2 and np.any(sel):
        tm = np.stack([np.interp(mid_k[sel], ks, theta[:, j]) for j in range(theta.shape[1])], axis=1)
        out[sel] = np.sqrt(np.sum((tm - mid[sel]) ** 2, axis=1))
    return out


_METRIC_FIELDS = ("loss_error", "sharpness_error", "amplitude_error", "distance", "distance_abs",
                  "mean_loss_model", "mean_loss_gd", "mean_sharpness_model", "mean_sharpness_gd",
                  "mean_amplitude_model", "mean_amplitude_gd", "loss_scale", "sharpness_scale", "amplitude_scale",
                  "k0", "k1", "amplitude_error_top", "amplitude_scale_top", "mean_amplitude_model_top",
                  "mean_amplitude_gd_top", "loss_ref", "envelope_error", "n_spikes_gd", "n_spikes_model",
                  "n_spikes_matched", "spike_timing_error", "spike_height_error", "distance_scale")


def case_dataset(result: CaseResult):
    """The case as one xarray Dataset (GD series, each model's series, metrics, metadata).

    Layout (P = problem dimension; θ saved only for P <= ``THETA_SAVE_MAX``):

    * GD: ``gd_loss(gd_k)``, ``gd_theta(gd_theta_k, param)`` (every ``theta_every`` steps), ``gd_sharpness(gd_eig_k)``,
      ``gd_eigs(gd_eig_k, eig)``, and its time averages ``gd_loss_average(gd_avg_k)``,
      ``gd_amplitude(gd_amp_k)``, ``gd_amplitude_subspace(gd_amp_k)`` (in the top-``n_eigs``
      eigenspace), ``gd_midpoint(gd_mid_k, param)``,
      ``gd_sharpness_average(gd_sharp_k)``.
    * model ``m`` (slug of its label): ``m__k``, ``m__loss``, ``m__time_avg_loss``,
      ``m__sharpness``, ``m__amplitude``, ``m__amplitude_subspace``, and where the model has
      them ``m__envelope_plus`` / ``m__envelope_minus`` (the loss at θ ± the oscillation),
      ``m__free_energy``, ``m__sigma_trace``,
      ``m__theta``, ``m__distance(gd_mid_k)`` = ‖θ_model − θ̄_GD‖.
    * per model (dimension ``model``, labels as coordinate): ``status``, ``message``,
      ``solver``, ``model_class``, ``nfev``, ``wall_time``, ``seed`` (what seeded the
      oscillation, :data:`effdyn.handover.SEED_KINDS`) and ``metrics(model, metric)``.
    * the runs started from GD's state (dimension ``handover``, labels "<model> [handover]";
      only for cases with ``handover_offset``): ``handover_metrics(handover, metric)`` over
      [k_h, end], ``handover_metrics_theta0(handover, metric)`` (the same model from θ0,
      same window), ``handover_status``, ``handover_message``, ``handover_solver``,
      ``handover_model_class``, ``handover_seed``, ``handover_nfev``, ``handover_wall_time``;
      their series like the models' (``<slug>__k`` starting at k_h). Attributes
      ``handover_offset``, ``handover_k0`` (-1: none) and ``handover_note``.
    * attributes: effdyn's metadata (config JSON, versions, git commit, seed) plus case,
      eta, steps, gd_status, gd_message, eos_onset (-1: never), gd_wall_time and the
      handover attributes above.
    * the GD trajectory and each model's solution as stored by ``traj.save``/``sol.save``,
      under the prefixes ``gd__`` and ``s0__``, ``s1__``, ... (:func:`effdyn.results.add_results`),
      so that ``effdyn.load(path)`` gives them back (``.gd``, ``.solutions``, ``.metrics``).
    """
    import xarray as xr

    from ..diagnostics import gd_time_averages
    from ..io import metadata

    setup, traj = result.setup, result.gd
    P = setup.problem.dim
    save_theta = P <= THETA_SAVE_MAX
    data, coords = {}, {}
    k = np.asarray(traj.k, dtype=float)
    coords["gd_k"] = k
    data["gd_loss"] = (("gd_k",), np.asarray(traj.loss, dtype=float))
    theta = np.asarray(traj.theta, dtype=float)
    theta_k = np.asarray(getattr(traj, "theta_k", k[: len(theta)]), dtype=float)
    if save_theta and len(theta_k) == len(theta):
        coords["gd_theta_k"] = theta_k
        data["gd_theta"] = (("gd_theta_k", "param"), theta)
    eig_k = np.asarray(traj.eig_k, dtype=float)
    coords["gd_eig_k"] = eig_k
    data["gd_sharpness"] = (("gd_eig_k",), np.asarray(traj.sharpness, dtype=float))
    eigs = getattr(traj, "eigs", None)
    if eigs is not None and np.ndim(eigs) == 2 and len(eigs) == len(eig_k):
        data["gd_eigs"] = (("gd_eig_k", "eig"), np.asarray(eigs, dtype=float))
    mid_k = np.empty(0)
    mid = np.empty((0, P))
    if len(k) >= 3:
        avg = gd_time_averages(traj)
        mid_k, mid = avg["midpoint"]
        for key, var, dim in (("loss_average", "gd_loss_average", "gd_avg_k"),
                              ("amplitude", "gd_amplitude", "gd_amp_k"),
                              ("sharpness", "gd_sharpness_average", "gd_sharp_k")):
            kk, vv = avg[key]
            coords[dim] = kk
            data[var] = ((dim,), np.asarray(vv, dtype=float))
        sub_k, sub = avg["amplitude_subspace"]
        if np.array_equal(sub_k, coords["gd_amp_k"]):
            data["gd_amplitude_subspace"] = (("gd_amp_k",), np.asarray(sub, dtype=float))
        coords["gd_mid_k"] = mid_k
        if save_theta:
            data["gd_midpoint"] = (("gd_mid_k", "param"), mid)

    labels, rows = [], []
    for row in result.models + result.handovers:
        if row.k0 is None:
            labels.append(row.label)
            rows.append(row)
        sol = row.solution
        if sol is None or len(sol.k) < 1:
            continue
        s = slug(row.label)
        try:
            obs = sol.observables
        except Exception as exc:  # keep the file: the row's message says why the series are missing
            row.message = (row.message + "; " if row.message else "") + f"observables failed: {exc}"
            continue
        dim = f"{s}__k"
        coords[dim] = np.asarray(sol.k, dtype=float)
        for name in ("loss", "time_avg_loss", "sharpness", "amplitude", "amplitude_subspace", "envelope_plus",
                     "envelope_minus", "free_energy", "sigma_trace"):
            if name in obs and np.shape(obs[name]) == (len(sol.k),):
                data[f"{s}__{name}"] = ((dim,), np.asarray(obs[name], dtype=float))
        if save_theta:
            data[f"{s}__theta"] = ((dim, "param"), np.asarray(sol.theta, dtype=float))
        if len(mid_k):
            data[f"{s}__distance"] = (("gd_mid_k",), distance_series(mid_k, mid, sol))
    if labels:
        coords["model"] = np.array(labels, dtype=object)
        coords["metric"] = np.array(_METRIC_FIELDS, dtype=object)
        M = np.full((len(rows), len(_METRIC_FIELDS)), np.nan)
        for i, row in enumerate(rows):
            if row.metrics is not None:
                d = row.metrics.as_dict()
                M[i] = [float(d[f]) for f in _METRIC_FIELDS]
        data["metrics"] = (("model", "metric"), M)
        for name, values in (("status", [str(r.status) for r in rows]), ("message", [r.message for r in rows]),
                             ("solver", [r.solver for r in rows]), ("model_class", [r.model for r in rows])):
            data[name] = (("model",), np.array(values, dtype=object))
        data["nfev"] = (("model",), np.array([r.nfev for r in rows], dtype=np.int64))
        data["wall_time"] = (("model",), np.array([r.wall_time for r in rows], dtype=float))
        data["seed"] = (("model",), np.array([r.seed for r in rows], dtype=object))
    if result.handovers:
        hrows = result.handovers
        coords["handover"] = np.array([r.label for r in hrows], dtype=object)
        coords.setdefault("metric", np.array(_METRIC_FIELDS, dtype=object))
        for var, attr in (("handover_metrics", "metrics"), ("handover_metrics_theta0", "baseline")):
            M = np.full((len(hrows), len(_METRIC_FIELDS)), np.nan)
            for i, row in enumerate(hrows):
                m = getattr(row, attr)
                if m is not None:
                    d = m.as_dict()
                    M[i] = [float(d[f]) for f in _METRIC_FIELDS]
            data[var] = (("handover", "metric"), M)
        for name, values in (("handover_status", [str(r.status) for r in hrows]),
                             ("handover_message", [r.message for r in hrows]),
                             ("handover_solver", [r.solver for r in hrows]),
                             ("handover_model_class", [r.model for r in hrows]),
                             ("handover_seed", [r.seed for r in hrows])):
            data[name] = (("handover",), np.array(values, dtype=object))
        data["handover_nfev"] = (("handover",), np.array([r.nfev for r in hrows], dtype=np.int64))
        data["handover_wall_time"] = (("handover",), np.array([r.wall_time for r in hrows], dtype=float))

    config = {"case": result.name, "title": result.title, "eta": setup.eta, "steps": setup.steps,
              "theta0": np.asarray(setup.theta0).tolist() if P <= THETA_SAVE_MAX else f"<{P} values>",
              "problem": setup.problem.config(), "gd_options": setup.gd_options, "case_config": setup.config,
              "models": [m.config() for m in setup.models], "notes": setup.notes}
    attrs = metadata(config, setup.seed)
    onset = result.eos_onset
    attrs.update({"case": result.name, "title": result.title, "eta": float(setup.eta), "steps": int(setup.steps),
                  "dim": int(P), "case_status": result.status, "case_message": result.message,
                  "gd_variant": str(getattr(traj, "variant", "gd")),
                  "gd_status": str(getattr(traj, "status", "success")), "gd_message": str(getattr(traj, "message", "")),
                  "eos_onset": -1 if onset is None else int(onset), "gd_wall_time": float(result.gd_wall),
                  "notes": setup.notes,
                  "handover_offset": -1 if setup.handover_offset is None else int(setup.handover_offset),
                  "handover_k0": -1 if result.handover_k0 is None else int(result.handover_k0),
                  "handover_note": result.handover_note})
    from ..results import add_results  # the GD run and the solutions, stored exactly for effdyn.load

    return add_results(xr.Dataset(data, coords=coords, attrs=attrs), traj,
                       {r.label: r.solution for r in rows + result.handovers})
