"""Adaptive integration with scipy.integrate's OdeSolver classes, stepped by hand so that
each accepted step can be checked for divergence, reported to a progress bar and, on
request, checkpointed (see :mod:`effdyn.solvers._checkpoint`)."""

from __future__ import annotations

import time as _time

import numpy as np
import scipy.integrate as si

from effdyn.errors import IntegrationError
from effdyn.outcomes import Cause

from ._checkpoint import capture_scipy, deferred_interrupt, restore_scipy
from ._common import save_grid
from ._run import SolveRun, StopRun

METHODS = {"RK45": si.RK45, "DOP853": si.DOP853, "LSODA": si.LSODA, "Radau": si.Radau, "BDF": si.BDF, "RK23": si.RK23}

#: Consecutive accepted steps shorter than ``min_step`` (or not moving k at all) before the
#: run stops with "step-size underflow".
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


#: Methods that never evaluate a Jacobian (their work per step does not grow with the state).
EXPLICIT = ("RK23", "RK45", "DOP853")


#: A run whose GD steps each take more than a fifth of ``max_evals_per_step`` evaluations,
#: this many steps in a row, is stopped too: such work is sustained, not a passing burst.
_HEAVY_STEPS = 3


def default_max_evals(state_size: int, method: str | None = None) -> int:
    """Default cap on drift evaluations within one GD step.

    Healthy runs stay far below it: the models' rates are O(1) per GD step, and the quick
    validation suite peaks at under 200 evaluations in any GD step (LSODA, its first
    finite-difference Jacobians included). Stiff passages may take a few thousand in one GD
    step (a van der Pol relaxation jump under RK23 at rtol 1e-7: 1800; Radau closing in on
    a square-root singularity: 3400). A run that needs more than a fifth of the cap in
    :data:`_HEAVY_STEPS` GD steps in a row is stiff for the method or running away (GD far
    above the edge: rates of η·λ ≫ 2 per step) and would grind for minutes. Implicit
    methods and LSODA get 50 more per state component for their finite-difference
    Jacobians (one evaluation per component each).
    """
    if method in EXPLICIT:
        return 5000
    return 5000 + 50 * int(state_size)


def solve_scipy(model, y0, run, steps, method, *, rtol, atol, save_every, throw, progress, max_step, first_step,
                blowup, seed, checkpoint=None, resume_state=None, time_limit=None, callback=None, min_step=1e-8,
                max_evals_per_step=None, k0=0.0):
    cls = METHODS[method]
    # y0 is the state at GD step k0 (0, or the step of a handover); the run covers [k0, k0 + steps]
    k0 = float(k0)
    grid = k0 + save_grid(steps, save_every)
    record_run = model.new_run()
    sr = SolveRun(model, y0, run, solver=f"scipy:{method}", blowup=blowup, throw=throw, progress=progress,
                  seed=seed, rtol=rtol, atol=atol, record_run=record_run, time_limit=time_limit, callback=callback,
                  total=steps, desc=f"{model.name} [scipy:{method}]")
    max_evals = default_max_evals(model.state_size, method) if max_evals_per_step is None else int(max_evals_per_step)
    # evaluations of the current GD step [bucket, bucket + 1), first bad drift of the current step
    count = {"calls": 0, "bucket": int(np.floor(k0)), "in_bucket": 0}
    bad_drift = {"k": None, "finite_state": True}

    def fun(k, y):
        count["calls"] += 1
        count["in_bucket"] += 1
        # the budget is also checked inside a step: one step of a stiff or runaway model
        # (step sizes shrinking, each evaluation costly) can take longer than the budget
        if sr.deadline is not None and _time.perf_counter() > sr.deadline:
            raise StopRun(Cause.TIME_BUDGET, f"stopped at k = {k:.6g} (GD step {int(np.floor(k))}), inside a step: time "
                                             f"budget of {time_limit:g} s exceeded", step=int(np.floor(k)),
                          time=float(k))
        if count["in_bucket"] > max_evals:
            b = count["bucket"]
            raise IntegrationError(
                f"{model.name} [scipy:{method}] stopped at k = {k:.6g}: stiff or diverging: {count['in_bucket'] - 1} "
                f"drift evaluations for k in [{b}, {b + 1}) (limit `max_evals_per_step` = {max_evals}); the model "
                "or GD itself may diverge here, or the problem is stiff for this method (try solver='map' or "
                "another method)", step=b, time=float(k), cause=Cause.TOO_MANY_EVALUATIONS)
        out = np.asarray(sr.call(model.drift, k, y, sr.run), dtype=np.float64)
        # A non-finite trial evaluation is not fatal by itself (the step is rejected and
        # retried shorter); it only names the cause if the solver gives up afterwards.
        if bad_drift["k"] is None and not np.all(np.isfinite(out)):
            bad_drift["k"] = float(k)
            bad_drift["finite_state"] = bool(np.all(np.isfinite(y)))
        return out

    n_stages = getattr(cls, "n_stages", None)
    kwargs = dict(rtol=rtol, atol=model.scaled_atol(atol, y0), max_step=max_step)

    def capture(solver, complete=False):
        sr.stats.nfev = count["calls"]
        checkpoint.capture(solver.t, {**sr.body(), "complete": complete, "nxt": nxt, "calls": count["calls"],
                                      "solver_state": capture_scipy(solver)})

    try:
        if resume_state is None:
            nxt = 1
            if first_step is not None:
                kwargs["first_step"] = first_step
            sr.save(k0, y0)
            solver = cls(fun, k0, y0, k0 + float(steps), **kwargs)
        else:
            sr.restore(resume_state)
            from effdyn.models.run_state import RunState

            nxt = int(resume_state["nxt"])
            saved = resume_state["solver_state"]
            # Build a solver to get fresh function references, then overwrite its whole state
            # (first_step is left out: it may exceed the remaining interval and is replaced
            # anyway). The set-up evaluates the drift, which moves the run state's warm
            # starts: the run states are loaded from the checkpoint again afterwards.
            solver = cls(fun, float(saved["t"]), np.array(saved["y"]), k0 + float(steps), **kwargs)
            restore_scipy(solver, saved)
            sr.run = RunState.from_dict(model, resume_state["run"])
            sr.record_run = RunState.from_dict(model, resume_state["record_run"])
            count["calls"] = int(resume_state["calls"])
            count["bucket"] = int(np.floor(solver.t))
            if sr.bar is not None:
                sr.bar.update(float(solver.t))
    except IntegrationError as exc:
        return sr.stop_on(exc)

    def stop(cause, message):
        if checkpoint is not None and cause == Cause.INTERRUPTED:
            message = f"{message}; {checkpoint.where()}"
        sr.stats.nfev = count["calls"]
        return sr.stop(cause, message, step=int(solver.t), time=float(solver.t))

    stalled = heavy = 0
    with deferred_interrupt(checkpoint is not None) as interrupt:
        try:
            if checkpoint is not None:
                capture(solver)
                checkpoint.write()
            while solver.status == "running":
                before = count["calls"]
                bad_drift["k"] = None
                t_old = solver.t
                try:
                    message = solver.step()
                except StopRun as halt:
                    # solver.t and solver.y are still the last accepted step
                    _save_due(sr, solver, grid, nxt, inclusive=True)
                    return stop(halt.cause, halt.message)
                except (ValueError, ArithmeticError, np.linalg.LinAlgError):
                    # BDF/Radau factorise matrices built from the drift: NaN there fails in LAPACK
                    if bad_drift["k"] is None:
                        raise
                    solver.status = "failed"
                    message = "a linear-algebra step failed on non-finite values"
                if solver.status == "failed":
                    return stop(*_failure_cause(solver, method, message, bad_drift, sr.stats.solver))
                # LSODA keeps accepting steps too short to move t (t + h == t) instead of
                # failing; the RK/BDF/Radau classes stop only at 10 ulps of t. A run whose
                # steps stay below `min_step` GD steps is a runaway either way.
                h = solver.t - t_old
                tiny = h < max(min_step, 10 * np.spacing(max(abs(t_old), 1.0)))
                stalled = stalled + 1 if tiny else 0
                if stalled >= _STALL_STEPS:
                    return stop(Cause.STEP_UNDERFLOW,
                                f"{sr.stats.solver} stopped at k = {solver.t:.6g} (GD step {int(solver.t)}): "
                                f"{stalled} steps in a row shorter than `min_step` = {min_step:g} GD steps (last "
                                f"{h:.3g}; step-size underflow): the solution is singular or diverging here")
                if int(np.floor(solver.t)) != count["bucket"]:
                    new_bucket = int(np.floor(solver.t))
                    rate = count["in_bucket"] / max(1, new_bucket - count["bucket"])
                    heavy = heavy + 1 if 5 * rate > max_evals else 0
                    if heavy >= _HEAVY_STEPS:
                        sr.stats.nfev = count["calls"]
                        return stop(Cause.TOO_MANY_EVALUATIONS,
                                    f"{sr.stats.solver} stopped at k = {solver.t:.6g} (GD step {new_bucket}): stiff or "
                                    f"diverging: more than {max_evals // 5} drift evaluations in each of {heavy} GD "
                                    f"steps in a row (a fifth of `max_evals_per_step` = {max_evals}); the model or GD "
                                    "itself may diverge here, or the problem is stiff for this method (try "
                                    "solver='map' or another method)")
                    count["bucket"], count["in_bucket"] = new_bucket, 0
                sr.stats.n_accepted += 1
                if n_stages is not None:
                    attempts = max(1, (count["calls"] - before) // n_stages)
                    sr.stats.n_rejected += attempts - 1
                try:
                    sr.after_step(solver.t, solver.y)
                except StopRun as halt:
                    if halt.cause in (Cause.TIME_BUDGET, Cause.CALLBACK):
                        _save_due(sr, solver, grid, nxt, inclusive=True)
                    return stop(halt.cause, halt.message)
                nxt = _save_due(sr, solver, grid, nxt)
                if sr.bar is not None:
                    sr.bar.update(solver.t - t_old)
                running = solver.status == "running"
                if checkpoint is not None and running and (interrupt.hit or checkpoint.due(solver.t)):
                    capture(solver)
                    checkpoint.write()
                if interrupt.hit:
                    return stop(Cause.INTERRUPTED,
                                f"interrupted at k = {solver.t:g} (Ctrl-C); the partial solution is attached")
            sr.stats.nfev = count["calls"]
            sr.stats.njev = int(getattr(solver, "njev", 0))
            sr.stats.nlu = int(getattr(solver, "nlu", 0))
            if n_stages is None:
                sr.stats.n_rejected = -1  # implicit/LSODA solvers do not expose rejected steps
            if checkpoint is not None:
                sr.stats.status, sr.stats.message = "success", "reached the horizon"
                capture(solver, complete=True)
                checkpoint.write()
            return sr.finish()
        except IntegrationError as exc:
            if exc.partial is not None:
                raise
            sr.stats.nfev = count["calls"]
            return sr.stop_on(exc)
        except KeyboardInterrupt:
            # Raised inside a step: the integrator may be half-updated, so the checkpoint on
            # disk is the last consistent state captured (written again to be sure it exists).
            if checkpoint is not None and checkpoint.snapshot is not None:
                checkpoint.write()
            ks_last = sr.ks[-1]
            msg = f"interrupted at k = {ks_last:g}; the partial solution is attached"
            if checkpoint is not None:
                msg = f"{msg}; {checkpoint.where()}"
            sr.stats.nfev = count["calls"]
            return sr.stop(Cause.INTERRUPTED, msg, step=int(ks_last), time=float(ks_last))


def _save_due(sr, solver, grid, nxt, inclusive=False):
    """Save the grid times the last step passed (dense output between steps); with
    ``inclusive`` also the state where the run stops, if it is not on the grid."""
    if nxt < len(grid) and grid[nxt] <= solver.t:
        dense = solver.dense_output()
        while nxt < len(grid) and grid[nxt] <= solver.t:
            sr.save(grid[nxt], solver.y.copy() if grid[nxt] == solver.t else dense(grid[nxt]))
            nxt += 1
    if inclusive and (not sr.ks or sr.ks[-1] < solver.t):
        sr.save(float(solver.t), solver.y.copy())
    return nxt


def _failure_cause(solver, method, message, bad_drift, name):
    """Cause and message of a solver that gave up (status "failed")."""
    t = float(solver.t)
    if method == "LSODA":
        istate = getattr(solver._lsoda_solver._integrator, "istate", None)
        message = f"LSODA istate {istate}: {_LSODA_ISTATE.get(istate, 'unexpected return code')}"
    if bad_drift["k"] is not None:
        where = "at a finite state" if bad_drift["finite_state"] else "at a non-finite trial state"
        return Cause.NON_FINITE, (f"{name} stopped at k = {t:.6g} (GD step {int(t)}): the model's drift returned "
                              f"NaN/inf {where} (k = {bad_drift['k']:.6g}); solver: {message} (non-finite)")
    if method == "LSODA":
        # LSODA gives up after repeated failures only once its step has shrunk to its floor.
        cause = Cause.STEP_UNDERFLOW if istate in (-4, -5) else Cause.SOLVER_FAILURE
    else:
        cause = Cause.STEP_UNDERFLOW if "step size" in (message or "") else Cause.SOLVER_FAILURE
    return cause, f"{name} stopped at k = {t:.6g} (GD step {int(t)}): {message} ({cause})"
