"""Adaptive integration with diffrax (JAX, CPU is enough) and a PID step-size controller.

The whole integration is one compiled call, so divergence is diagnosed afterwards from
the saved states, and the run cannot be checkpointed part-way.
"""

from __future__ import annotations

import time as _time

import numpy as np

from effdyn._jax import import_jax
from effdyn.errors import IntegrationError
from effdyn.outcomes import Cause

from ._common import save_grid
from ._run import SolveRun

SOLVERS = ("Tsit5", "Dopri5", "Dopri8", "Kvaerno5")
#: Right-hand-side evaluations per attempted step (FSAL counted once), for the nfev estimate.
_STAGES = {"Tsit5": 6, "Dopri5": 6, "Dopri8": 12, "Kvaerno5": 7}
#: A step shorter than this many units in the last place of the horizon cannot move the
#: time forward near the end; the controller stops there with a "minimum step" result
#: (diffrax would otherwise retry the same step until ``max_steps`` is used up).
_DTMIN_ULPS = 4.0


def solve_diffrax(model, y0, run, steps, name, *, rtol, atol, save_every, throw, progress, max_steps, first_step,
                  blowup, seed, k0=0.0):
    jax, jnp = import_jax()
    import diffrax

    f = model.jax_drift()
    args = model.jax_args(run) if _takes_run(model.jax_args) else model.jax_args()
    solver = getattr(diffrax, name)()
    k0 = float(k0)  # y0 is the state at GD step k0 (0, or the step of a handover)
    dtmin = _DTMIN_ULPS * np.finfo(np.float64).eps * max(1.0, k0 + float(steps))
    # PI(D) coefficients in the range diffrax's documentation recommends for smooth problems.
    controller = diffrax.PIDController(rtol=rtol, atol=jnp.asarray(model.scaled_atol(atol, y0)), pcoeff=0.3, icoeff=0.4, dtmin=dtmin, force_dtmin=False)
    grid = k0 + save_grid(steps, save_every)
    # the drift runs compiled and stateless; the records of the saved states are computed
    # afterwards with their own run state
    sr = SolveRun(model, y0, run, solver=f"diffrax:{name}", blowup=blowup, throw=throw, progress=False, seed=seed,
                  rtol=rtol, atol=atol, record_run=model.new_run())
    stats = sr.stats
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    t0 = _time.perf_counter()
    try:
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(f), solver, t0=k0, t1=k0 + float(steps), dt0=first_step, y0=jnp.asarray(y0, dtype=jnp.float64),
            args=args, saveat=diffrax.SaveAt(ts=jnp.asarray(grid)), stepsize_controller=controller,
            max_steps=max_steps, throw=False, progress_meter=meter,
        )
    except KeyboardInterrupt:
        sr.save(k0, y0)
        return sr.stop(Cause.INTERRUPTED, "interrupted during the compiled diffrax call; no intermediate states "
                       "are available", step=int(k0), time=k0)
    ys = np.asarray(sol.ys, dtype=np.float64)
    ts = np.asarray(sol.ts, dtype=np.float64)
    stats.wall_time = _time.perf_counter() - t0
    stats.n_accepted = int(sol.stats["num_accepted_steps"])
    stats.n_rejected = int(sol.stats["num_rejected_steps"])
    stats.nfev = int(sol.stats["num_steps"]) * _STAGES[name] + 1  # estimate: stages per attempt
    monitor = sr.monitor
    # save times the solver did not reach are filled with inf (or another time) by diffrax
    n_good = len(grid)
    cause = None
    for i in range(len(grid)):
        if ts[i] != grid[i]:
            n_good = i
            break
        cause = monitor.cause(ys[i])
        if cause is not None:
            n_good = i
            break

    try:
        for i in range(n_good):
            sr.save(grid[i], ys[i])
    except IntegrationError as exc:
        return sr.stop_on(exc)

    ok = sol.result == diffrax.RESULTS.successful
    if cause is not None:
        t_bad = float(grid[n_good])
        message = (f"{model.name} diverged before k = {t_bad:g} (GD step {int(t_bad)}): "
                   f"{monitor.describe(cause, ys[n_good])}")
        return sr.stop(cause, message, step=int(t_bad), time=t_bad)
    if not ok:
        t_last = float(grid[n_good - 1]) if n_good else k0
        text = str(sol.result)  # "diffrax._solution.RESULTS<message>"
        if "<" in text and text.endswith(">"):
            text = text[text.index("<") + 1: -1]
        lowered = text.lower()
        if n_good and not np.all(np.isfinite(np.asarray(f(t_last, jnp.asarray(ys[n_good - 1]), args)))):
            cause = Cause.NON_FINITE
            detail = f"the model's drift is NaN/inf at the last saved state (k = {t_last:g})"
        elif "minimum step" in lowered or ("step" in lowered and "small" in lowered):
            cause = Cause.STEP_UNDERFLOW
            detail = (f"the step size fell below {dtmin:.3g} (a few ulps of the horizon) after k = {t_last:g}: "
                      "the solution is singular there, or the drift is NaN/inf or discontinuous just beyond")
        elif "max" in lowered and "steps" in lowered:
            cause = Cause.SOLVER_FAILURE
            detail = f"all `max_steps` = {max_steps} steps were used after k = {t_last:g}; raise `max_steps`"
        else:
            cause = Cause.SOLVER_FAILURE
            detail = f"after k = {t_last:g}"
        message = f"{stats.solver} stopped: {text.strip()} ({detail}; {cause})"
        return sr.stop(cause, message, step=int(t_last), time=t_last)
    return sr.finish()


def _takes_run(fn) -> bool:
    import inspect

    try:
        return "run" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
