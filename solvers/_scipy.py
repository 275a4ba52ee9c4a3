"""Adaptive integration with scipy.integrate's OdeSolver classes, stepped by hand so that
each accepted step can be checked for divergence and reported to a progress bar."""

from __future__ import annotations

import time as _time

import numpy as np
import scipy.integrate as si

from effdyn.errors import IntegrationError
from effdyn.solution import Solution, SolveStats

from ._common import DivergenceMonitor, failure, progress_bar, save_grid

METHODS = {"RK45": si.RK45, "DOP853": si.DOP853, "LSODA": si.LSODA, "Radau": si.Radau, "BDF": si.BDF, "RK23": si.RK23}


def solve_scipy(model, y0, steps, method, *, rtol, atol, save_every, throw, progress, max_step, first_step, blowup, seed):
    cls = METHODS[method]
    grid = save_grid(steps, save_every)
    monitor = DivergenceMonitor(model, y0, blowup)
    stats = SolveStats(solver=f"scipy:{method}")
    calls = [0]

    def fun(k, y):
        calls[0] += 1
        try:
            return model.drift(k, y)
        except IntegrationError as exc:
            exc.time = k if exc.time is None else exc.time
            exc.step = int(k) if exc.step is None else exc.step
            raise

    ks, ys = [0.0], [np.array(y0, dtype=np.float64)]
    n_stages = getattr(cls, "n_stages", None)
    kwargs = dict(rtol=rtol, atol=atol, max_step=max_step)
    if first_step is not None:
        kwargs["first_step"] = first_step
    t0 = _time.perf_counter()
    bar = progress_bar(steps, progress, f"{model.name} [{stats.solver}]")

    def finish():
        stats.wall_time = _time.perf_counter() - t0
        stats.nfev = calls[0]
        if bar is not None:
            bar.close()
        return Solution(model, np.asarray(ks), np.asarray(ys), stats, rtol=rtol, atol=atol, seed=seed)

    try:
        solver = cls(fun, 0.0, y0, float(steps), **kwargs)
        nxt = 1
        while solver.status == "running":
            before = calls[0]
            t_old = solver.t
            message = solver.step()
            if solver.status == "failed":
                cause = "step-size underflow" if "step size" in (message or "") else "solver failure"
                return failure(stats, finish, throw, step=int(solver.t), time=float(solver.t), cause=cause,
                               message=f"{stats.solver} stopped at k = {solver.t:.6g}: {message} ({cause})")
            stats.n_accepted += 1
            if n_stages is not None:
                attempts = max(1, (calls[0] - before) // n_stages)
                stats.n_rejected += attempts - 1
            cause = monitor.cause(solver.y)
            if cause is not None:
                return failure(stats, finish, throw, step=int(solver.t), time=float(solver.t), cause=cause,
                               message=f"{model.name} diverged at k = {solver.t:.6g} (GD step {int(solver.t)}): {cause}")
            if nxt < len(grid) and grid[nxt] <= solver.t:
                dense = solver.dense_output()
                while nxt < len(grid) and grid[nxt] <= solver.t:
                    ks.append(grid[nxt])
                    ys.append(solver.y.copy() if grid[nxt] == solver.t else dense(grid[nxt]))
                    nxt += 1
            if bar is not None:
                bar.update(solver.t - t_old)
        stats.njev = getattr(solver, "njev", 0)
        stats.nlu = getattr(solver, "nlu", 0)
        if n_stages is None:
            stats.n_rejected = -1  # implicit/LSODA solvers do not expose rejected steps
        stats.message = "reached the horizon"
        return finish()
    except KeyboardInterrupt:
        return failure(stats, finish, True, step=int(ks[-1]), time=ks[-1], cause="interrupted",
                       message=f"interrupted at k = {ks[-1]:g}; the partial solution is attached")
