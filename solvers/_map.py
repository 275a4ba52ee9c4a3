"""The step-exact map: the model equations stepped with dk = 1 (one GD step).

Continuous models lose GD's discrete-time effects (for instance the slow energy drift of
the self-stabilisation cycle, theory §4); the same equations stepped once per GD step keep
them. Each model defines its own one-step map (``map_step``); models with a compiled JAX map
(``jax_map``) run it in compiled chunks on JAX problems (:mod:`effdyn.engine_jax.map`)."""

from __future__ import annotations

import numpy as np

from effdyn.errors import IntegrationError
from effdyn.outcomes import Cause

from ._checkpoint import deferred_interrupt
from ._run import SolveRun, StopRun


def solve_map(model, y0, run, steps, *, save_every, throw, progress, blowup, seed, checkpoint=None,
              resume_state=None, time_limit=None, callback=None, k0=0, engine="numpy"):
    if engine == "jax":
        # the model's compiled map: chunks of steps in jitted lax.scan calls
        from effdyn.engine_jax.map import solve_map_jax

        return solve_map_jax(model, model.jax_map(), y0, run, steps, save_every=save_every, throw=throw,
                             progress=progress, blowup=blowup, seed=seed, checkpoint=checkpoint,
                             resume_state=resume_state, time_limit=time_limit, k0=k0)
    # y0 is GD step k0 (0, or the step of a handover); the run ends at GD step k0 + steps
    k_first = int(round(k0))
    steps = int(round(steps))
    k_end = k_first + steps
    every = max(1, int(round(save_every)))
    sr = SolveRun(model, y0, run, solver="map", blowup=blowup, throw=throw, progress=progress, seed=seed,
                  time_limit=time_limit, callback=callback, total=steps, desc=f"{model.name} [map]")

    k_start, y = sr.map_start(y0, k_first, resume_state)

    def capture(k, y, complete=False):
        checkpoint.capture(k, {**sr.body(), "complete": complete, "y": y, "k_state": k})

    def interrupted(k):
        msg = f"interrupted at GD step {k} (Ctrl-C); the partial solution is attached"
        if checkpoint is not None:
            msg = f"{msg}; {checkpoint.where()}"
        return sr.stop(Cause.INTERRUPTED, msg, step=k, time=float(k))

    k = k_start
    with deferred_interrupt(checkpoint is not None) as interrupt:
        try:
            if resume_state is None:
                sr.save(k_first, y)
            if checkpoint is not None:
                capture(k_start, y)
                checkpoint.write()
            for k in range(k_start, k_end):
                y = np.asarray(sr.call(model.map_step, k, y, run), dtype=np.float64)
                sr.stats.nfev += 1
                sr.stats.n_accepted += 1
                try:
                    sr.after_step(k + 1, y)
                except StopRun as stop:
                    if stop.cause in (Cause.TIME_BUDGET, Cause.CALLBACK):
                        sr.save(k + 1, y)
                        return sr.stop(stop.cause, stop.message, step=k + 1, time=float(k + 1))
                    sr.ks.append(float(k + 1))  # the bad state, without a record (nothing to evaluate)
                    sr.ys.append(np.array(y))
                    if sr.recs:
                        sr.recs.append({name: np.full_like(np.asarray(v, dtype=float), np.nan)
                                        for name, v in sr.recs[-1].items()})
                    return sr.stop(stop.cause, f"{model.name} map diverged at GD step {k + 1}: "
                                   f"{sr.monitor.describe(stop.cause, y)}", step=k + 1, time=float(k + 1))
                if (k + 1 - k_first) % every == 0 or k + 1 == k_end:
                    sr.save(k + 1, y)
                if sr.bar is not None:
                    sr.bar.update(1)
                if checkpoint is not None and k + 1 < k_end and (interrupt.hit or checkpoint.due(k + 1)):
                    capture(k + 1, y)
                    checkpoint.write()
                if interrupt.hit and k + 1 < k_end:
                    return interrupted(k + 1)
        except IntegrationError as exc:
            if exc.partial is not None:
                raise
            return sr.stop_on(exc)
        except KeyboardInterrupt:
            # Raised inside map_step: y is still the state at step k, but the run state's warm
            # start may already have moved, so the checkpoint is the last one captured.
            if checkpoint is not None and checkpoint.snapshot is not None:
                checkpoint.write()
            return interrupted(k)
    if checkpoint is not None:
        sr.stats.status, sr.stats.message = "success", "reached the horizon"
        capture(k_end, y, complete=True)
        checkpoint.write()
    return sr.finish()
