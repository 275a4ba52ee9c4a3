"""The step-exact map: the model equations stepped with dk = 1 (one GD step).

Continuous models lose GD's discrete-time effects (for instance the slow energy drift of
the self-stabilisation cycle, theory §4); the same equations stepped once per GD step keep
them. Each model defines its own one-step map (``map_step``)."""

from __future__ import annotations

import time as _time

import numpy as np

from effdyn.errors import IntegrationError
from effdyn.solution import Solution, SolveStats

from ._checkpoint import deferred_interrupt, model_runtime_state, restore_model_runtime_state
from ._common import DivergenceMonitor, failure, progress_bar


def solve_map(model, y0, steps, *, save_every, throw, progress, blowup, seed, checkpoint=None, resume_state=None):
    steps = int(round(steps))
    every = max(1, int(round(save_every)))
    monitor = DivergenceMonitor(model, y0, blowup)
    stats = SolveStats(solver="map")
    t0 = _time.perf_counter()
    wall_before = 0.0
    bar = progress_bar(steps, progress, f"{model.name} [map]")

    if resume_state is None:
        ks, ys = [0], [np.array(y0, dtype=np.float64)]
        k_start, y = 0, ys[0]
    else:
        ks, ys = [int(k) for k in resume_state["ks"]], list(resume_state["ys"])
        k_start, y = int(resume_state["k"]), np.array(resume_state["y"], dtype=np.float64)
        for key, value in resume_state["stats"].items():
            setattr(stats, key, value)
        wall_before = stats.wall_time
        restore_model_runtime_state(model, resume_state["model_state"])
        if bar is not None:
            bar.update(k_start)

    def finish():
        stats.wall_time = wall_before + _time.perf_counter() - t0
        if bar is not None:
            bar.close()
        return Solution(model, np.asarray(ks, dtype=float), np.asarray(ys), stats, seed=seed)

    def capture(k, y, complete=False):
        stats.wall_time = wall_before + _time.perf_counter() - t0
        checkpoint.capture(k, {"complete": complete, "ks": np.asarray(ks, dtype=float), "ys": np.asarray(ys),
                               "y": y, "stats": stats.as_dict(),
                               "model_state": model_runtime_state(model, checkpoint.baseline)})

    def interrupted(k):
        msg = f"interrupted at GD step {k} (Ctrl-C); the partial solution is attached"
        if checkpoint is not None:
            msg = f"{msg}; {checkpoint.where()}"
        return failure(stats, finish, True, step=k, time=float(k), cause="interrupted", message=msg)

    k = k_start
    with deferred_interrupt(checkpoint is not None) as interrupt:
        try:
            if checkpoint is not None:
                capture(k_start, y)
                checkpoint.write()
            for k in range(k_start, steps):
                try:
                    y = np.asarray(model.map_step(k, y), dtype=np.float64)
                except IntegrationError as exc:
                    exc.step = k if exc.step is None else exc.step
                    exc.time = float(k) if exc.time is None else exc.time
                    raise
                stats.nfev += 1
                stats.n_accepted += 1
                cause = monitor.cause(y)
                if cause is not None:
                    ks.append(k + 1)
                    ys.append(y)
                    message = f"{model.name} map diverged at GD step {k + 1}: {monitor.describe(cause, y)}"
                    return failure(stats, finish, throw, step=k + 1, time=float(k + 1), cause=cause, message=message)
                if (k + 1) % every == 0 or k + 1 == steps:
                    ks.append(k + 1)
                    ys.append(y)
                if bar is not None:
                    bar.update(1)
                if checkpoint is not None and k + 1 < steps and (interrupt.hit or checkpoint.due(k + 1)):
                    capture(k + 1, y)
                    checkpoint.write()
                if interrupt.hit and k + 1 < steps:
                    return interrupted(k + 1)
        except KeyboardInterrupt:
            # Raised inside map_step: y is still the state at step k, but the model's warm
            # start may already have moved, so the checkpoint is the last one captured.
            if checkpoint is not None and checkpoint.snapshot is not None:
                checkpoint.write()
            return interrupted(k)
    stats.message = "reached the horizon"
    if checkpoint is not None:
        capture(steps, y, complete=True)
        checkpoint.write()
    return finish()
