"""What every backend does around its integrator: the saved states and their records, the
model's run state, divergence checks, budgets, progress, calls into model (user) code, and
the partial solution when a run stops early.

A backend creates one :class:`SolveRun`, calls :meth:`SolveRun.call` for every drift or map
evaluation (which turns any exception raised there into an
:class:`~effdyn.errors.IntegrationError` with the step, time and partial solution attached),
:meth:`SolveRun.save` for every saved state, :meth:`SolveRun.after_step` after every
accepted step (divergence, time budget, user callback) and ends with :meth:`finish` or
:meth:`stop`.
"""

from __future__ import annotations

import time as _time
import warnings

import numpy as np

from effdyn.errors import IntegrationError
from effdyn.models.base import stack_records
from effdyn.outcomes import Cause, Status, status_of
from effdyn.solution import Solution, SolveStats

from ._common import DivergenceMonitor, progress_bar


class StopRun(Exception):
    """Raised inside a backend's loop to end the run with ``cause`` and ``message``."""

    def __init__(self, cause, message, step=None, time=None):
        super().__init__(message)
        self.cause, self.message, self.step, self.time = Cause(cause), message, step, time


class SolveRun:
    """Bookkeeping of one solve (see the module docstring).

    ``run`` is the model's run state threaded through the drift/map calls; ``record_run``
    the one the records of saved states use: the same object for the step-exact map (its
    record of a state and its next step share one spectral evaluation through the memo), a
    separate one for the adaptive backends (whose saved states are interpolated, so their
    spectral evaluations must not move the drift's warm starts).
    """

    def __init__(self, model, y0, run, *, solver, blowup, throw, progress, seed, rtol=None, atol=None,
                 record_run=None, time_limit=None, callback=None, total=None, desc=None):
        self.model = model
        self.y0 = np.asarray(y0, dtype=np.float64)
        self.run = run
        self.record_run = run if record_run is None else record_run
        self.stats = SolveStats(solver=solver)
        self.monitor = DivergenceMonitor(model, self.y0, blowup)
        self.throw, self.seed, self.rtol, self.atol = throw, seed, rtol, atol
        self.ks: list[float] = []
        self.ys: list[np.ndarray] = []
        self.recs: list[dict] = []
        self.time_limit, self.callback = time_limit, callback
        self.t0 = _time.perf_counter()
        self.wall_before = 0.0
        self.bar = None if total is None else progress_bar(total, progress, desc or model.name)
        self.deadline = None if time_limit is None else self.t0 + float(time_limit)

    # --- resume ---------------------------------------------------------------------------
    def restore(self, state: dict) -> None:
        """Saved states, records and counters from a checkpoint body."""
        self.ks = [float(k) for k in np.asarray(state["ks"], dtype=float)]
        self.ys = list(np.asarray(state["ys"], dtype=np.float64))
        recs = state.get("records") or {}
        self.recs = [{name: values[i] for name, values in recs.items()} for i in range(len(self.ks))]
        for key, value in state["stats"].items():
            setattr(self.stats, key, value)
        self.wall_before = self.stats.wall_time

    def map_start(self, y0, k_first: int, resume_state):
        """``(k, y)`` a step-exact map starts from: (k_first, y0), or where the checkpoint
        ``resume_state`` of a map run left off (its records restored, the bar advanced)."""
        if resume_state is None:
            return k_first, np.array(y0, dtype=np.float64)
        self.restore(resume_state)
        if self.bar is not None:
            self.bar.update(int(resume_state["k_state"]) - k_first)
        return int(resume_state["k_state"]), np.array(resume_state["y"], dtype=np.float64)

    def body(self) -> dict:
        """What a checkpoint stores of this run (besides the backend's own state)."""
        self.update_stats()
        return {"ks": np.asarray(self.ks, dtype=float), "ys": np.asarray(self.ys), "records": stack_records(self.recs),
                "stats": self.stats.as_dict(), "run": self.run.to_dict(),
                "record_run": None if self.record_run is self.run else self.record_run.to_dict()}

    # --- calls into the model -------------------------------------------------------------
    def call(self, fn, k, *args):
        """``fn(k, *args)`` (a drift, map step or record); exceptions become IntegrationError."""
        try:
            return fn(k, *args)
        except IntegrationError as exc:
            exc.time = float(k) if exc.time is None else exc.time
            exc.step = int(np.floor(float(k))) if exc.step is None else exc.step
            raise
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            name = getattr(fn, "__name__", "model code")
            raise IntegrationError(
                f"{self.model.name}: {name} raised at k = {float(k):.6g} (GD step {int(np.floor(float(k)))}): "
                f"{type(exc).__name__}: {exc} (user code raised; the original exception is chained, the partial "
                "solution is attached)",
                step=int(np.floor(float(k))), time=float(k), cause=Cause.USER_CODE) from exc

    def save(self, k: float, y: np.ndarray) -> None:
        """Keep a saved state and its record (spectral quantities, see ``model.record``)."""
        y = np.array(y, dtype=np.float64)
        rec = self.call(self.model.record, float(k), y, self.record_run)
        self.ks.append(float(k))
        self.ys.append(y)
        self.recs.append(rec)

    # --- checks after each accepted step ----------------------------------------------------
    def after_step(self, k: float, y: np.ndarray) -> None:
        """Raise :class:`StopRun` when the state is bad, the time is up or the callback says so."""
        cause = self.monitor.cause(y)
        if cause is not None:
            raise StopRun(cause, f"{self.model.name} diverged at k = {k:.6g} (GD step {int(k)}): "
                                 f"{self.monitor.describe(cause, y)}", step=int(k), time=float(k))
        if self.deadline is not None and _time.perf_counter() > self.deadline:
            raise StopRun(Cause.TIME_BUDGET, f"stopped at k = {k:g} (GD step {int(k)}): time budget of "
                                             f"{self.time_limit:g} s exceeded", step=int(k), time=float(k))
        if self.callback is not None:
            verdict = self.call(lambda kk, yy: self.callback(kk, yy), float(k), np.array(y))
            if verdict:
                raise StopRun(Cause.CALLBACK, f"stopped at k = {k:g} (GD step {int(k)}) by the callback: {verdict}",
                              step=int(k), time=float(k))

    # --- ending -------------------------------------------------------------------------
    def update_stats(self) -> None:
        self.stats.wall_time = self.wall_before + _time.perf_counter() - self.t0
        work = self.run.counters if self.record_run is self.run else self.run.counters.add(self.record_run.counters)
        self.stats.set_work(work)

    def solution(self) -> Solution:
        self.update_stats()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        ys = np.asarray(self.ys) if self.ys else np.empty((0, self.model.state_size))
        return Solution(self.model, np.asarray(self.ks, dtype=float), ys,
                        self.stats, rtol=self.rtol, atol=self.atol, seed=self.seed, records=stack_records(self.recs),
                        run=self.run)

    def finish(self, message: str = "reached the horizon") -> Solution:
        self.stats.status, self.stats.message, self.stats.cause = Status.SUCCESS, message, ""
        found = stalled_oscillation(self.model, self.ks, self.recs, self.ys)
        if found is not None:
            self.stats.warnings.append(found)
            warnings.warn(f"{self.model.name}: {found}", RuntimeWarning, stacklevel=4)
        return self.solution()

    def stop(self, cause, message: str, *, step, time, throw=None) -> Solution:
        """End early: raise IntegrationError carrying the partial solution, or return it.

        Ctrl-C always raises; the other causes follow ``throw``.
        """
        cause = Cause(cause)
        self.stats.status, self.stats.message, self.stats.cause = status_of(cause), message, cause
        partial = self.solution()
        throw = self.throw if throw is None else throw
        if throw or cause == Cause.INTERRUPTED:
            raise IntegrationError(message, step=step, time=time, cause=cause, partial=partial)
        return partial

    def stop_on(self, exc: IntegrationError) -> Solution:
        """End on an IntegrationError raised by model code: keep its cause, attach the partial."""
        cause = Cause(exc.cause) if exc.cause in Cause._value2member_map_ else Cause.SOLVER_FAILURE
        self.stats.status, self.stats.message, self.stats.cause = status_of(cause), str(exc), cause
        partial = self.solution()
        exc.partial, exc.cause = partial, cause
        if self.throw or cause == Cause.INTERRUPTED:
            raise exc
        return partial


#: A model whose sharpness stays above (2/η)·(1 + STALL_MARGIN) for STALL_STEPS GD steps in a
#: row while its oscillation amplitude stays below STALL_AMPLITUDE·max(1, ‖θ‖) and grows by
#: less than a factor STALL_GROWTH over some STALL_STEPS of that stretch has an oscillation
#: that should be growing but is not (above that edge a mode grows at least
#: (1 + 2·STALL_MARGIN)^STALL_STEPS ≈ 117-fold): typically a fluctuation seeded below the
#: integrator's absolute tolerance, whose growth the error control never sees. The growth is
#: measured over a sliding window, so an amplitude that wanders at the tolerance's noise
#: level (up and down by orders of magnitude) is caught as well as one that sits still; an
#: onset overshoot, where the amplitude is tiny but growing, is not flagged.
STALL_MARGIN = 0.05
STALL_STEPS = 50
STALL_AMPLITUDE = 1e-8
STALL_GROWTH = 2.0


def stalled_oscillation(model, ks, recs, ys) -> str | None:
    """A message when the run sat above the edge without an oscillation (see STALL_*),
    read from the records of the saved states (models with an oscillation only)."""
    if not getattr(model, "has_oscillation", True) or len(ks) < 2 or not recs:
        return None
    if "sharpness" not in recs[0] or "amplitude" not in recs[0]:
        return None
    edge = (2.0 / model.eta) * (1.0 + STALL_MARGIN)
    stretch = []   # (k, amplitude) of the current run of records above the edge with a tiny amplitude
    for k, rec, y in zip(ks, recs, ys):
        scale = max(1.0, float(np.linalg.norm(np.asarray(y)[: model.dim])))  # θ comes first in a state
        amp = float(rec["amplitude"])
        bad = float(rec["sharpness"]) > edge and amp < STALL_AMPLITUDE * scale
        if bad:
            stretch.append((k, amp))
            start = stretch[0][0]
            if k - start >= STALL_STEPS:
                # the amplitude STALL_STEPS ago (the last record at or before k − STALL_STEPS)
                a_then = next(a for kk, a in reversed(stretch) if kk <= k - STALL_STEPS)
                if amp < STALL_GROWTH * a_then:
                    return (f"stalled oscillation: the sharpness stayed above 2/η·(1 + {STALL_MARGIN:g}) from k = "
                            f"{start:g} to {k:g} while the oscillation amplitude stayed below {STALL_AMPLITUDE:g}·max(1, "
                            f"‖θ‖) and grew by less than {STALL_GROWTH:g}× over {STALL_STEPS} steps (a fluctuation that "
                            "should grow did not; if Σ was seeded at round-off size, use storage='log-factor' or "
                            "tighter tolerances, or check against GD)")
        else:
            stretch = []
    return None
