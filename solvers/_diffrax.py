"""Adaptive integration with diffrax (JAX, CPU is enough) and a PID step-size controller."""

from __future__ import annotations

import time as _time

import numpy as np

from effdyn._jax import import_jax
from effdyn.solution import Solution, SolveStats

from ._common import DivergenceMonitor, failure, save_grid

SOLVERS = ("Tsit5", "Dopri5", "Dopri8", "Kvaerno5")
#: Right-hand-side evaluations per attempted step (FSAL counted once), for the nfev estimate.
_STAGES = {"Tsit5": 6, "Dopri5": 6, "Dopri8": 12, "Kvaerno5": 7}


def solve_diffrax(model, y0, steps, name, *, rtol, atol, save_every, throw, progress, max_steps, first_step, blowup, seed):
    jax, jnp = import_jax()
    import diffrax

    f = model.jax_drift()
    args = model.jax_args() if hasattr(model, "jax_args") else None
    solver = getattr(diffrax, name)()
    # PI(D) coefficients in the range diffrax's documentation recommends for smooth problems.
    controller = diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.4, dtmin=None)
    grid = save_grid(steps, save_every)
    stats = SolveStats(solver=f"diffrax:{name}")
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    t0 = _time.perf_counter()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), solver, t0=0.0, t1=float(steps), dt0=first_step, y0=jnp.asarray(y0, dtype=jnp.float64),
        args=args, saveat=diffrax.SaveAt(ts=jnp.asarray(grid)), stepsize_controller=controller,
        max_steps=max_steps, throw=False, progress_meter=meter,
    )
    ys = np.asarray(sol.ys, dtype=np.float64)
    stats.wall_time = _time.perf_counter() - t0
    stats.n_accepted = int(sol.stats["num_accepted_steps"])
    stats.n_rejected = int(sol.stats["num_rejected_steps"])
    stats.nfev = int(sol.stats["num_steps"]) * _STAGES[name] + 1  # estimate: stages per attempt
    monitor = DivergenceMonitor(model, np.asarray(y0), blowup)
    n_good = len(grid)
    cause = None
    for i in range(len(grid)):
        cause = monitor.cause(ys[i])
        if cause is not None:
            n_good = i
            break

    def finish():
        return Solution(model, grid[:n_good], ys[:n_good], stats, rtol=rtol, atol=atol, seed=seed)

    ok = sol.result == diffrax.RESULTS.successful
    if cause is not None or not ok:
        t_bad = float(grid[min(n_good, len(grid) - 1)])
        if cause is None:
            text = str(sol.result)
            cause = "step-size underflow" if "step" in text.lower() and "small" in text.lower() else "solver failure"
            message = f"{stats.solver} stopped before k = {t_bad:g}: {text}"
        else:
            message = f"{model.name} diverged before k = {t_bad:g} (GD step {int(t_bad)}): {cause}"
        return failure(stats, finish, throw, step=int(t_bad), time=t_bad, cause=cause, message=message)
    stats.message = "reached the horizon"
    return finish()
