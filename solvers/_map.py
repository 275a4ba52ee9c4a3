"""The step-exact map: the model equations stepped with dk = 1 (one GD step).

Continuous models lose GD's discrete-time effects (for instance the slow energy drift of
the self-stabilisation cycle, theory §2); the same equations stepped once per GD step keep
them. Each model defines its own one-step map (``map_step``)."""

from __future__ import annotations

import time as _time

import numpy as np

from effdyn.errors import IntegrationError
from effdyn.solution import Solution, SolveStats

from ._common import DivergenceMonitor, failure, progress_bar


def solve_map(model, y0, steps, *, save_every, throw, progress, blowup, seed):
    steps = int(round(steps))
    every = max(1, int(round(save_every)))
    monitor = DivergenceMonitor(model, y0, blowup)
    stats = SolveStats(solver="map")
    ks, ys = [0], [np.array(y0, dtype=np.float64)]
    t0 = _time.perf_counter()
    bar = progress_bar(steps, progress, f"{model.name} [map]")

    def finish():
        stats.wall_time = _time.perf_counter() - t0
        if bar is not None:
            bar.close()
        return Solution(model, np.asarray(ks, dtype=float), np.asarray(ys), stats, seed=seed)

    y = ys[0]
    k = 0
    try:
        for k in range(steps):
            try:
                y = model.map_step(k, y)
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
                return failure(stats, finish, throw, step=k + 1, time=float(k + 1), cause=cause,
                               message=f"{model.name} map diverged at GD step {k + 1}: {cause}")
            if (k + 1) % every == 0 or k + 1 == steps:
                ks.append(k + 1)
                ys.append(y)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        return failure(stats, finish, True, step=k, time=float(k), cause="interrupted",
                       message=f"interrupted at GD step {k}; the partial solution is attached")
    stats.message = "reached the horizon"
    return finish()
