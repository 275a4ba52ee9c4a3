"""The step-exact map of a model in compiled chunks (the JAX engine of ``solve(solver="map")``).

A model whose ``jax_map()`` gives a :class:`~effdyn.engine_jax.compiled.CompiledMap` runs
here for JAX problems: every chunk of ``chunk`` GD steps is one jitted ``lax.scan`` that
carries (y, JAX run state), evaluates the model once per step, writes the saved states and
their records into per-chunk buffers (one row per saved step, updated in place) and checks
every new state for non-finite entries and blow-up. The host sees the run once per chunk:
it copies the saved rows into the Solution, updates the progress bar, the run state
(``run.jax_state`` and ``run.counters``), the time budget and the checkpoint.

What differs from the NumPy map (:mod:`effdyn.solvers._map`), by design:

* the model's own ``check_state`` (e.g. "sigma not PSD" of a dense Σ) is evaluated on the
  host at the saved states and at the end of every chunk, not after every step (non-finite
  states and blow-up are checked after every step, inside the loop);
* the time budget is checked at the end of every chunk; a ``callback`` is not available
  (it would have to run on the host at every step);
* Ctrl-C without a checkpoint stops at the start of the running chunk; with a checkpoint
  the chunk finishes first and its end is written.

The compiled chunk is cached on the problem per static configuration (the model's
``CompiledMap.key``, the chunk length, the save stride), so models that differ only in
their numerical parameters (η, clip, ...) and runs from other starts reuse it.
"""

from __future__ import annotations

import time as _time

import numpy as np

from .._jax import import_jax
from ..errors import IntegrationError, MissingFeatureError
from ..outcomes import Cause
from .compiled import RETRY, from_host, to_host

__all__ = ["solve_map_jax", "compiled_map_of", "DEFAULT_CHUNK", "RECORD_BYTES"]

#: Default GD steps per compiled chunk.
DEFAULT_CHUNK = 256
#: Budget of the per-chunk buffers of saved states and records (the chunk is shortened to fit).
RECORD_BYTES = 256 * 2**20

_OK, _NONFINITE, _BLOWUP = 0, 1, 2
#: Model status codes are shifted by this much in the loop's status.
_MODEL = 16
_CACHE_ATTR = "_effdyn_jax_maps"


def compiled_map_of(model):
    """The model's CompiledMap, or the reason (a string) why it has none for its problem."""
    from .compiled import jax_problem_of

    if jax_problem_of(model) is None:
        return f"{type(model.problem).__name__} is not a JAX problem (made by effdyn.problems.from_jax)"
    hook = getattr(model, "jax_map", None)
    if hook is None:
        return f"{type(model).__name__} has no compiled map"
    try:
        return hook()
    except MissingFeatureError as exc:
        return str(exc)


def _chunk_length(chunk, every, row_bytes):
    rows_fit = max(1, RECORD_BYTES // max(row_bytes, 1) - 2)
    return max(1, min(chunk, rows_fit * every))


def _build_chunk(problem, cmap, chunk, every, rec_template, ev_template):
    jax, jnp = import_jax()
    S = None  # filled from y at trace time
    n_rows = chunk // every + 2

    def run(carry, k0, scalars, params, data):
        steps, bound, k_first = scalars
        y, jrun, status, fail_k = carry
        S = y.shape[0]
        bufs = {"k": jnp.zeros(n_rows, jnp.int64), "y": jnp.zeros((n_rows, S)),
                "rec": jax.tree_util.tree_map(lambda t: jnp.zeros((n_rows,) + t.shape, t.dtype), rec_template)}

        def put(buf, idx, row, cond):
            row = jnp.where(cond, row, buf[idx])
            return jax.lax.dynamic_update_index_in_dim(buf, row, idx, 0)

        def body(c, j):
            y, jrun, status, fail_k, bufs, n = c
            k = k0 + j
            active = (status == _OK) & (k <= steps)
            ev, jrun = jax.lax.cond(active, lambda jr: cmap.evaluate(k, y, jr, params, data),
                                    lambda jr: (ev_template, jr), jrun)
            model_fail = active & (jrun["status"] != 0)
            save = active & ~model_fail & (((k - k_first) % every == 0) | (k == steps))
            rec, jrun = jax.lax.cond(save, lambda jr: cmap.record(k, y, ev, jr, params, data),
                                     lambda jr: (rec_template, jr), jrun)
            idx = jnp.minimum(n, n_rows - 1)
            bufs = {"k": put(bufs["k"], idx, k, save), "y": put(bufs["y"], idx, y, save),
                    "rec": jax.tree_util.tree_map(lambda b, r: put(b, idx, r, save), bufs["rec"], rec)}
            n = n + save.astype(jnp.int64)
            take = active & ~model_fail & (k < steps)
            y_new, jrun = jax.lax.cond(take, lambda jr: cmap.advance(k, y, ev, jr, params, data),
                                       lambda jr: (y, jr), jrun)
            nonfinite = take & ~jnp.all(jnp.isfinite(y_new))
            blowup = take & ~nonfinite & (cmap.magnitude(y_new) > bound)
            code = jnp.where(model_fail, _MODEL + jrun["status"],
                             jnp.where(nonfinite, _NONFINITE, jnp.where(blowup, _BLOWUP, _OK)))
            fail_k = jnp.where(code != _OK, jnp.where(model_fail, k, k + 1), fail_k)
            status = jnp.where(code != _OK, code, status)
            return (y_new, jrun, status, fail_k, bufs, n), None

        c0 = (y, jrun, status, fail_k, bufs, jnp.zeros((), jnp.int64))
        (y, jrun, status, fail_k, bufs, n), _ = jax.lax.scan(body, c0, jnp.arange(chunk, dtype=jnp.int64))
        return (y, jrun, status, fail_k), bufs, n

    del S
    return jax.jit(run)


def _templates(cmap, y0, jrun, problem):
    """Zero pytrees shaped like the evaluation and the record (for the skipped branches).

    Cached on the problem by the compiled map's key and the shapes of the state and run
    state: finding them traces the model's evaluation and record (``eval_shape``), which
    for the central flow (tracker, SDCP) took ~2.5 s of Python on every solve, compiled or
    not."""
    jax, jnp = import_jax()
    y = jnp.asarray(y0)
    leaves, tree = jax.tree_util.tree_flatten(jrun)
    key = ("templates", cmap.key, y.shape, str(y.dtype), tree,
           tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__))) for x in leaves))
    cache = problem.__dict__.setdefault(_CACHE_ATTR, {})
    if key not in cache:
        cache[key] = _trace_templates(jax, jnp, cmap, y, jrun, problem)
    return cache[key]


def _trace_templates(jax, jnp, cmap, y, jrun, problem):
    data = problem.data_args
    k = jnp.zeros((), jnp.int64)
    ev_shape, _ = jax.eval_shape(lambda y, jr, p, d: cmap.evaluate(k, y, jr, p, d), y, jrun, cmap.params, data)
    ev_zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), ev_shape)
    rec_shape, _ = jax.eval_shape(lambda y, ev, jr, p, d: cmap.record(k, y, ev, jr, p, d), y, ev_zero, jrun,
                                  cmap.params, data)
    rec_zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), rec_shape)
    return ev_zero, rec_zero


def solve_map_jax(model, cmap, y0, run, steps, *, save_every, throw, progress, blowup, seed, checkpoint=None,
                  resume_state=None, time_limit=None, chunk=None, k0=0):
    """The compiled step-exact map (see the module docstring); returns a Solution as
    :func:`effdyn.solvers._map.solve_map` does. ``y0`` is GD step ``k0`` (0, or the step of a
    handover); the run ends at GD step k0 + steps."""
    from ..solvers._checkpoint import deferred_interrupt
    from ..solvers._run import SolveRun

    jax, jnp = import_jax()
    problem = model.problem
    k_first = int(round(k0))
    n_steps = int(round(steps))
    steps = k_first + n_steps   # the last GD step of the run
    every = max(1, int(round(save_every)))
    sr = SolveRun(model, y0, run, solver="map", blowup=blowup, throw=throw, progress=progress, seed=seed,
                  time_limit=time_limit, callback=None, total=n_steps, desc=f"{model.name} [map, jax]")
    k_start, y = sr.map_start(y0, k_first, resume_state)

    fresh = cmap.init_run(np.asarray(y0, dtype=np.float64), 0 if seed is None else int(seed))
    jax_state = getattr(run, "jax_state", None)
    jrun = fresh if jax_state is None else from_host(jax_state, fresh)
    base = run.counters.to_dict()

    ev_zero, rec_zero = _templates(cmap, y, jrun, problem)
    rec_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(rec_zero))
    length = _chunk_length(DEFAULT_CHUNK if chunk is None else int(chunk), every, 8 * (y.size + 1) + rec_bytes)
    cache = problem.__dict__.setdefault(_CACHE_ATTR, {})

    def compiled(cmap):
        key = (cmap.key, length, every)
        if key not in cache:
            cache[key] = _build_chunk(problem, cmap, length, every, rec_zero, ev_zero)
        return cache[key]

    run_chunk = compiled(cmap)

    data = problem.data_args
    scalars = (jnp.int64(steps), jnp.float64(sr.monitor.bound), jnp.int64(k_first))
    carry = (jnp.asarray(y), jrun, jnp.zeros((), jnp.int64), jnp.zeros((), jnp.int64))

    def sync():
        state, counts = to_host(carry[1])
        run.jax_state = state
        total = {name: base.get(name, 0) + counts.get(name, 0) for name in base}
        vars(run.counters).update(total)   # in place: the counting problem holds this object

    def keep(bufs, n):
        host = jax.device_get(bufs)
        for i in range(int(n)):
            sr.ks.append(float(host["k"][i]))
            sr.ys.append(np.array(host["y"][i], dtype=np.float64))
            sr.recs.append({name: np.array(v[i]) for name, v in host["rec"].items()})

    def capture(k, y_host, complete=False):
        sync()
        checkpoint.capture(k, {**sr.body(), "complete": complete, "y": y_host, "k_state": k})

    k0, taken = k_start, 0
    with deferred_interrupt(checkpoint is not None) as interrupt:
        try:
            if checkpoint is not None and resume_state is None:
                capture(k_start, y)
                checkpoint.write()
            while k0 <= steps:
                try:
                    before = carry
                    carry, bufs, n = run_chunk(carry, jnp.int64(k0), scalars, cmap.params, data)
                    status = int(carry[2])
                    if status == _MODEL + RETRY and cmap.upgrade is not None:
                        # the step needs the richer map: compile it and redo this chunk
                        cmap = cmap.upgrade()
                        run_chunk = compiled(cmap)
                        carry, bufs, n = run_chunk(before, jnp.int64(k0), scalars, cmap.params, data)
                        status = int(carry[2])
                except KeyboardInterrupt:
                    sync()
                    if checkpoint is not None and checkpoint.snapshot is not None:
                        checkpoint.write()
                    msg = f"interrupted at GD step {k0} (Ctrl-C); the partial solution is attached"
                    return sr.stop(Cause.INTERRUPTED, msg, step=k0, time=float(k0))
                keep(bufs, n)
                k_end = min(k0 + length, steps)
                if status != _OK:
                    k_end = int(carry[3])
                taken += max(0, min(k_end, steps) - k0)
                sr.stats.nfev, sr.stats.n_accepted = taken, taken
                if sr.bar is not None:
                    sr.bar.update(max(0, min(k_end, steps) - k0))
                if status != _OK:
                    sync()
                    return _stop(sr, cmap, status, k_end, np.asarray(carry[0], dtype=np.float64))
                y_host = np.asarray(carry[0], dtype=np.float64)
                cause = sr.monitor.cause(y_host) if k_end > k0 else None
                if cause is not None:
                    sync()
                    sr.ks.append(float(k_end))
                    sr.ys.append(y_host)
                    sr.recs.append({name: np.full_like(np.asarray(v, dtype=float), np.nan)
                                    for name, v in sr.recs[-1].items()})
                    return sr.stop(cause, f"{model.name} map diverged by GD step {k_end}: "
                                   f"{sr.monitor.describe(cause, y_host)}", step=k_end, time=float(k_end))
                k0 += length
                if k0 > steps:
                    break
                if sr.deadline is not None and _time.perf_counter() > sr.deadline:
                    # the state reached gets its record, as in the NumPy map
                    last = (jnp.int64(k_end), scalars[1], scalars[2])
                    carry, bufs, n = run_chunk(carry, jnp.int64(k_end), last, cmap.params, data)
                    keep(bufs, n)
                    sync()
                    return sr.stop(Cause.TIME_BUDGET, f"stopped at k = {k_end:g} (GD step {k_end}): time budget of "
                                   f"{time_limit:g} s exceeded", step=k_end, time=float(k_end))
                if checkpoint is not None and (interrupt.hit or checkpoint.due(k_end)):
                    capture(k_end, y_host)
                    checkpoint.write()
                if interrupt.hit:
                    sync()
                    msg = f"interrupted at GD step {k_end} (Ctrl-C); the partial solution is attached"
                    if checkpoint is not None:
                        msg = f"{msg}; {checkpoint.where()}"
                    return sr.stop(Cause.INTERRUPTED, msg, step=k_end, time=float(k_end))
        except IntegrationError as exc:
            if exc.partial is not None:
                raise
            sync()
            return sr.stop_on(exc)
    sync()
    if checkpoint is not None:
        sr.stats.status, sr.stats.message = "success", "reached the horizon"
        capture(steps, np.asarray(carry[0], dtype=np.float64), complete=True)
        checkpoint.write()
    _report(model, cmap, run)
    return sr.finish()


def _stop(sr, cmap, status, k_fail, y_bad):
    model = sr.model
    if status >= _MODEL:
        cause, what = cmap.causes.get(status - _MODEL, (Cause.SOLVER_FAILURE, "the model's evaluation failed"))
        return sr.stop(cause, f"{model.name}: {what} at k = {k_fail:g} (GD step {k_fail})", step=k_fail,
                       time=float(k_fail))
    cause = Cause.NON_FINITE if status == _NONFINITE else Cause.BLOW_UP
    sr.ks.append(float(k_fail))
    sr.ys.append(y_bad)
    if sr.recs:
        sr.recs.append({name: np.full_like(np.asarray(v, dtype=float), np.nan) for name, v in sr.recs[-1].items()})
    return sr.stop(cause, f"{model.name} map diverged at GD step {k_fail}: {sr.monitor.describe(cause, y_bad)}",
                   step=k_fail, time=float(k_fail))


def _report(model, cmap, run):
    """The model's warnings about the finished run (see ``CompiledMap.report``)."""
    import warnings

    if cmap.report is None or run.jax_state is None:
        return
    for message in cmap.report(run.jax_state):
        warnings.warn(f"{type(model).__name__} on the JAX engine: {message}.", RuntimeWarning, stacklevel=4)
