"""Adaptive integration with scipy.integrate's OdeSolver classes, stepped by hand so that
each accepted step can be checked for divergence, reported to a progress bar and, on
request, checkpointed (see :mod:`effdyn.solvers._checkpoint`)."""

from __future__ import annotations

import time as _time

import numpy as np
import scipy.integrate as si

from effdyn.errors import IntegrationError
from effdyn.solution import Solution, SolveStats

from ._checkpoint import (capture_scipy, deferred_interrupt, model_runtime_state, restore_model_runtime_state,
                          restore_scipy)
from ._common import DivergenceMonitor, failure, progress_bar, save_grid

METHODS = {"RK45": si.RK45, "DOP853": si.DOP853, "LSODA": si.LSODA, "Radau": si.Radau, "BDF": si.BDF, "RK23": si.RK23}

#: Consecutive accepted steps that do not advance k before the run counts as stalled.
_STALL_STEPS = 50

#: LSODA's return codes (scipy keeps them in the integrator's ``istate``).
_LSODA_ISTATE = {
    -1: "excess work done on this call",
    -2: "excess accuracy requested (tolerances too small)",
    -3: "illegal input",
    -4: "repeated error test failures",
    -5: "repeated convergence failures",
    -6: "error weight became zero",
    -7: "internal workspace insufficient",
}


def solve_scipy(model, y0, steps, method, *, rtol, atol, save_every, throw, progress, max_step, first_step, blowup,
                seed, checkpoint=None, resume_state=None):
    cls = METHODS[method]
    grid = save_grid(steps, save_every)
    monitor = DivergenceMonitor(model, y0, blowup)
    stats = SolveStats(solver=f"scipy:{method}")
    calls = [0]
    # first drift evaluation of the current step that returned NaN/inf, and whether its state was finite
    bad_drift = {"k": None, "finite_state": True}

    def fun(k, y):
        calls[0] += 1
        try:
            out = np.asarray(model.drift(k, y), dtype=np.float64)
        except IntegrationError as exc:
            exc.time = k if exc.time is None else exc.time
            exc.step = int(k) if exc.step is None else exc.step
            raise
        # A non-finite trial evaluation is not fatal by itself (the step is rejected and
        # retried shorter); it only names the cause if the solver gives up afterwards.
        if bad_drift["k"] is None and not np.all(np.isfinite(out)):
            bad_drift["k"] = float(k)
            bad_drift["finite_state"] = bool(np.all(np.isfinite(y)))
        return out

    n_stages = getattr(cls, "n_stages", None)
    kwargs = dict(rtol=rtol, atol=model.scaled_atol(atol, y0), max_step=max_step)
    t0 = _time.perf_counter()
    wall_before = 0.0
    bar = progress_bar(steps, progress, f"{model.name} [{stats.solver}]")

    def finish():
        stats.wall_time = wall_before + _time.perf_counter() - t0
        stats.nfev = calls[0]
        if bar is not None:
            bar.close()
        return Solution(model, np.asarray(ks, dtype=float), np.asarray(ys), stats, rtol=rtol, atol=atol, seed=seed)

    def capture(solver, complete=False):
        stats.wall_time = wall_before + _time.perf_counter() - t0
        stats.nfev = calls[0]
        checkpoint.capture(solver.t, {
            "complete": complete, "ks": np.asarray(ks, dtype=float), "ys": np.asarray(ys), "nxt": nxt,
            "calls": calls[0], "stats": stats.as_dict(), "solver_state": capture_scipy(solver),
            "model_state": model_runtime_state(model, checkpoint.baseline)})

    if resume_state is None:
        ks, ys = [0.0], [np.array(y0, dtype=np.float64)]
        nxt = 1
        if first_step is not None:
            kwargs["first_step"] = first_step
        solver = cls(fun, 0.0, y0, float(steps), **kwargs)
    else:
        ks, ys = list(resume_state["ks"]), list(resume_state["ys"])
        nxt = int(resume_state["nxt"])
        for key, value in resume_state["stats"].items():
            setattr(stats, key, value)
        wall_before = stats.wall_time
        saved = resume_state["solver_state"]
        # Build a solver to get fresh function references, then overwrite its whole state
        # (first_step is left out: it may exceed the remaining interval and is replaced anyway).
        # The model state is restored before (the set-up evaluates the drift) and again after
        # (to undo what those evaluations changed, e.g. a warm start).
        restore_model_runtime_state(model, resume_state["model_state"])
        solver = cls(fun, float(saved["t"]), np.array(saved["y"]), float(steps), **kwargs)
        restore_scipy(solver, saved)
        restore_model_runtime_state(model, resume_state["model_state"])
        calls[0] = int(resume_state["calls"])

    def stop(cause, message):
        if checkpoint is not None and cause == "interrupted":
            message = f"{message}; {checkpoint.where()}"
        return failure(stats, finish, throw or cause == "interrupted", step=int(solver.t), time=float(solver.t),
                       cause=cause, message=message)

    stalled = 0
    with deferred_interrupt(checkpoint is not None) as interrupt:
        try:
            if checkpoint is not None:
                capture(solver)
                checkpoint.write()
            while solver.status == "running":
                before = calls[0]
                bad_drift["k"] = None
                t_old = solver.t
                try:
                    message = solver.step()
                except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                    # BDF/Radau factorise matrices built from the drift: NaN there fails in LAPACK
                    if bad_drift["k"] is None:
                        raise
                    solver.status = "failed"
                    message = "a linear-algebra step failed on non-finite values"
                if solver.status == "failed":
                    return stop(*_failure_cause(solver, method, message, bad_drift, stats.solver))
                # LSODA keeps accepting steps too short to move t (t + h == t) instead of
                # failing; the RK/BDF/Radau classes stop at 10 ulps themselves.
                stalled = stalled + 1 if solver.t - t_old < 10 * np.spacing(max(abs(t_old), 1.0)) else 0
                if stalled >= _STALL_STEPS:
                    return stop("step-size underflow", f"{stats.solver} stopped at k = {solver.t:.6g} (GD step "
                                f"{int(solver.t)}): {stalled} steps in a row did not move k (step size below the "
                                "spacing of floating-point numbers; step-size underflow)")
                stats.n_accepted += 1
                if n_stages is not None:
                    attempts = max(1, (calls[0] - before) // n_stages)
                    stats.n_rejected += attempts - 1
                cause = monitor.cause(solver.y)
                if cause is not None:
                    return stop(cause, f"{model.name} diverged at k = {solver.t:.6g} (GD step {int(solver.t)}): "
                                       f"{monitor.describe(cause, solver.y)}")
                if nxt < len(grid) and grid[nxt] <= solver.t:
                    dense = solver.dense_output()
                    while nxt < len(grid) and grid[nxt] <= solver.t:
                        ks.append(grid[nxt])
                        ys.append(solver.y.copy() if grid[nxt] == solver.t else dense(grid[nxt]))
                        nxt += 1
                if bar is not None:
                    bar.update(solver.t - t_old)
                running = solver.status == "running"
                if checkpoint is not None and running and (interrupt.hit or checkpoint.due(solver.t)):
                    capture(solver)
                    checkpoint.write()
                if interrupt.hit:
                    return stop("interrupted",
                                f"interrupted at k = {solver.t:g} (Ctrl-C); the partial solution is attached")
            stats.njev = int(getattr(solver, "njev", 0))
            stats.nlu = int(getattr(solver, "nlu", 0))
            if n_stages is None:
                stats.n_rejected = -1  # implicit/LSODA solvers do not expose rejected steps
            stats.message = "reached the horizon"
            if checkpoint is not None:
                capture(solver, complete=True)
                checkpoint.write()
            return finish()
        except KeyboardInterrupt:
            # Raised inside a step: the integrator may be half-updated, so the checkpoint on
            # disk is the last consistent state captured (written again to be sure it exists).
            if checkpoint is not None and checkpoint.snapshot is not None:
                checkpoint.write()
            ks_last = ks[-1]
            msg = f"interrupted at k = {ks_last:g}; the partial solution is attached"
            if checkpoint is not None:
                msg = f"{msg}; {checkpoint.where()}"
            return failure(stats, finish, True, step=int(ks_last), time=float(ks_last), cause="interrupted",
                           message=msg)


def _failure_cause(solver, method, message, bad_drift, name):
    """Cause and message of a solver that gave up (status "failed")."""
    t = float(solver.t)
    if method == "LSODA":
        istate = getattr(solver._lsoda_solver._integrator, "istate", None)
        message = f"LSODA istate {istate}: {_LSODA_ISTATE.get(istate, 'unexpected return code')}"
    if bad_drift["k"] is not None:
        where = "at a finite state" if bad_drift["finite_state"] else "at a non-finite trial state"
        return "non-finite", (f"{name} stopped at k = {t:.6g} (GD step {int(t)}): the model's drift returned "
                              f"NaN/inf {where} (k = {bad_drift['k']:.6g}); solver: {message} (non-finite)")
    if method == "LSODA":
        # LSODA gives up after repeated failures only once its step has shrunk to its floor.
        cause = "step-size underflow" if istate in (-4, -5) else "solver failure"
    else:
        cause = "step-size underflow" if "step size" in (message or "") else "solver failure"
    return cause, f"{name} stopped at k = {t:.6g} (GD step {int(t)}): {message} ({cause})"
