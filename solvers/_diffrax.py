"""Adaptive integration with diffrax (JAX, CPU is enough) and a PID step-size controller.

The whole integration is one compiled call, so divergence is diagnosed afterwards from
the saved states, and the run cannot be checkpointed part-way.
"""

from __future__ import annotations

import time as _time

import numpy as np

from effdyn._jax import import_jax
from effdyn.solution import Solution, SolveStats

from ._common import DivergenceMonitor, failure, save_grid

SOLVERS = ("Tsit5", "Dopri5", "Dopri8", "Kvaerno5")
#: Right-hand-side evaluations per attempted step (FSAL counted once), for the nfev estimate.
_STAGES = {"Tsit5": 6, "Dopri5": 6, "Dopri8": 12, "Kvaerno5": 7}
#: A step shorter than this many units in the last place of the horizon cannot move the
#: time forward near the end; the controller stops there with a "minimum step" result
#: (diffrax would otherwise retry the same step until ``max_steps`` is used up).
_DTMIN_ULPS = 4.0


def solve_diffrax(model, y0, steps, name, *, rtol, atol, save_every, throw, progress, max_steps, first_step, blowup, seed):
    jax, jnp = import_jax()
    import diffrax

    f = model.jax_drift()
    args = model.jax_args() if hasattr(model, "jax_args") else None
    solver = getattr(diffrax, name)()
    dtmin = _DTMIN_ULPS * np.finfo(np.float64).eps * max(1.0, float(steps))
    # PI(D) coefficients in the range diffrax's documentation recommends for smooth problems.
    controller = diffrax.PIDController(rtol=rtol, atol=jnp.asarray(model.scaled_atol(atol, y0)), pcoeff=0.3, icoeff=0.4, dtmin=dtmin, force_dtmin=False)
    grid = save_grid(steps, save_every)
    stats = SolveStats(solver=f"diffrax:{name}")
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    t0 = _time.perf_counter()
    try:
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(f), solver, t0=0.0, t1=float(steps), dt0=first_step, y0=jnp.asarray(y0, dtype=jnp.float64),
            args=args, saveat=diffrax.SaveAt(ts=jnp.asarray(grid)), stepsize_controller=controller,
            max_steps=max_steps, throw=False, progress_meter=meter,
        )
    except KeyboardInterrupt:
        stats.wall_time = _time.perf_counter() - t0
        return failure(stats, lambda: Solution(model, grid[:1], np.asarray(y0)[None], stats, rtol=rtol, atol=atol,
                                               seed=seed),
                       True, step=0, time=0.0, cause="interrupted",
                       message="interrupted during the compiled diffrax call; no intermediate states are available")
    ys = np.asarray(sol.ys, dtype=np.float64)
    ts = np.asarray(sol.ts, dtype=np.float64)
    stats.wall_time = _time.perf_counter() - t0
    stats.n_accepted = int(sol.stats["num_accepted_steps"])
    stats.n_rejected = int(sol.stats["num_rejected_steps"])
    stats.nfev = int(sol.stats["num_steps"]) * _STAGES[name] + 1  # estimate: stages per attempt
    monitor = DivergenceMonitor(model, np.asarray(y0), blowup)
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

    def finish():
        return Solution(model, grid[:n_good], ys[:n_good], stats, rtol=rtol, atol=atol, seed=seed)

    ok = sol.result == diffrax.RESULTS.successful
    if cause is not None:
        t_bad = float(grid[n_good])
        message = (f"{model.name} diverged before k = {t_bad:g} (GD step {int(t_bad)}): "
                   f"{monitor.describe(cause, ys[n_good])}")
        return failure(stats, finish, throw, step=int(t_bad), time=t_bad, cause=cause, message=message)
    if not ok:
        t_last = float(grid[n_good - 1]) if n_good else 0.0
        text = str(sol.result)  # "diffrax._solution.RESULTS<message>"
        if "<" in text and text.endswith(">"):
            text = text[text.index("<") + 1: -1]
        lowered = text.lower()
        if n_good and not np.all(np.isfinite(np.asarray(f(t_last, jnp.asarray(ys[n_good - 1]), args)))):
            cause = "non-finite"
            detail = f"the model's drift is NaN/inf at the last saved state (k = {t_last:g})"
        elif "minimum step" in lowered or ("step" in lowered and "small" in lowered):
            cause = "step-size underflow"
            detail = (f"the step size fell below {dtmin:.3g} (a few ulps of the horizon) after k = {t_last:g}: "
                      "the solution is singular there, or the drift is NaN/inf or discontinuous just beyond")
        elif "max" in lowered and "steps" in lowered:
            cause = "solver failure"
            detail = f"all `max_steps` = {max_steps} steps were used after k = {t_last:g}; raise `max_steps`"
        else:
            cause = "solver failure"
            detail = f"after k = {t_last:g}"
        message = f"{stats.solver} stopped: {text.strip()} ({detail}; {cause})"
        return failure(stats, finish, throw, step=int(t_last), time=t_last, cause=cause, message=message)
    stats.message = "reached the horizon"
    return finish()
