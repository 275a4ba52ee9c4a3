"""Running a sweep: serially, on a local Dask cluster, or on an existing one.

The client (this process) parses and checks the whole sweep, skips the points already on
disk, submits the others (most expensive first), writes each returned record as a JSON
file the moment it arrives, and merges all records into ``DIR/<name>.nc`` at the end, also
after an interruption or a lost scheduler. A rerun of the same command picks up where the
last one stopped.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ._point import BLAS_ENV, run_point
from ._spec import Sweep, load_sweep
from ._store import points_dir, read_records, save_sweep_dataset, sweep_dataset, write_record

__all__ = ["run_sweep", "SweepResult", "SweepInterrupted", "SCHEDULER_ENV", "JOBQUEUE_KINDS", "local_cluster",
           "jobqueue_cluster", "merge_sweep"]

#: Environment variable naming an existing Dask scheduler (``tcp://host:8786``).
SCHEDULER_ENV = "EFFDYN_SCHEDULER"
#: ``scheduler`` values that start a batch-system cluster through dask-jobqueue, configured
#: entirely by the ``jobqueue.<kind>`` section of the Dask configuration (docs/sweeps.md).
JOBQUEUE_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the merged file, and how many points ran, failed, were
    reused from disk or are still missing."""

    sweep: Sweep = field(repr=False)
    path: Path
    points_dir: Path
    n_points: int
    computed: int = 0
    reused: int = 0
    failed: int = 0
    missing: int = 0
    wall_time: float = 0.0
    scheduler: str = "serial"
    n_workers: int = 1
    dataset: object = field(default=None, repr=False)
    keys_run: list = field(default_factory=list, repr=False)

    @property
    def complete(self) -> bool:
        return self.missing == 0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a lost scheduler) during a sweep; ``result`` says what was saved."""

    def __init__(self, result: SweepResult, why: str = "interrupted"):
        super().__init__(f"{why}; {result.n_points - result.missing} of {result.n_points} points saved in "
                         f"{result.points_dir}, merged into {result.path}; run the same command again to finish")
        self.result = result
        self.why = why


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def local_cluster(n_workers: int | None = None, **kwargs):
    """A ``distributed.LocalCluster`` of single-threaded worker processes for sweeps.

    ``n_workers`` defaults to the machine's cores (``os.cpu_count()``). Each worker gets
    one thread and one BLAS/OpenMP/numba thread (:data:`BLAS_ENV` set in its environment
    before it starts), so n workers fill n cores without oversubscription. The scheduler
    hands a worker one point at a time (``worker-saturation = 1``), which keeps the
    "running" count of the progress bar honest and lets a restarted worker take new points.
    """
    import dask
    from distributed import LocalCluster

    n = int(n_workers or os.cpu_count() or 1)
    env = dict(BLAS_ENV)
    # Less background work beside the points, which all compete for the same cores: no
    # statistical profiler (it samples the running thread every 10 ms for the dashboard's
    # profile page), event-loop and system monitors at a slower pace. The scheduler's HTTP
    # endpoint (and the dashboard, where bokeh is installed) takes a free port, not 8787.
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0,
                          "distributed.worker.profile.enabled": False,
                          "distributed.admin.tick.interval": "200ms",
                          "distributed.admin.system-monitor.interval": "2s",
                          "distributed.worker.memory.monitor-interval": "1s",
                          "distributed.nanny.pre-spawn-environ": {**dask.config.get(
                              "distributed.nanny.pre-spawn-environ", {}), **env}}):
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                            env=env, silence_logs=40, **kwargs)


def jobqueue_cluster(kind: str, n_workers: int):
    """A dask-jobqueue cluster of ``n_workers`` batch jobs (``kind``: slurm, pbs, sge, lsf).

    Every setting (queue, account, cores, memory, walltime, the job script's prologue, the
    Python environment) comes from the ``jobqueue.<kind>`` section of the Dask
    configuration, e.g. ``~/.config/dask/jobqueue.yaml``; see docs/sweeps.md for a SLURM
    example. Needs ``pip install "effdyn[cluster]"``.
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise ImportError(f"`scheduler = {kind!r}` needs dask-jobqueue: pip install \"effdyn[cluster]\"") from None
    if not n_workers or n_workers < 1:
        raise ValueError(f"a {kind} cluster needs the number of worker jobs: pass `n_workers` (`--workers N`).")
    cluster = getattr(dask_jobqueue, JOBQUEUE_KINDS[kind])()
    cluster.scale(n=int(n_workers))
    return cluster


def _resolve_out(sweep: Sweep, out_dir):
    return Path(out_dir or sweep.out_dir or "effdyn-sweep")


def merge_sweep(sweep_or_source, out_dir=None, *, extra_attrs=None):
    """Merge the point files of a sweep into ``DIR/<name>.nc`` and return (path, dataset)."""
    sweep = sweep_or_source if isinstance(sweep_or_source, Sweep) else load_sweep(sweep_or_source)
    out = _resolve_out(sweep, out_dir)
    records = read_records(points_dir(out, sweep.name), sweep)
    ds = sweep_dataset(sweep, records, extra_attrs=extra_attrs)
    path = save_sweep_dataset(ds, out / f"{sweep.name}.nc")
    return path, ds


def _task(sweep: Sweep, p, run_id: str) -> dict:
    return {"doc": p.doc, "source": sweep.source if sweep.source != "<sweep document>" else sweep.name,
            "key": p.key, "index": list(p.index), "values": p.values, "period_tol": sweep.period_tol,
            "period_max": sweep.period_max, "run": run_id}


class _Progress:
    """A tqdm bar over points with done / failed / running counts (or log lines)."""

    def __init__(self, total, initial, enabled, log, callback):
        self.total, self.done, self.failed, self.running = total, initial, 0, 0
        self.callback, self.log = callback, log
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="pt", desc="sweep", dynamic_ncols=True,
                            file=sys.stderr)
        self._update()

    def _update(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"failed {self.failed}, running {self.running}", refresh=True)
        if self.callback is not None:
            self.callback({"done": self.done, "failed": self.failed, "running": self.running, "total": self.total})

    def finished(self, rec):
        self.done += 1
        ok = rec.get("status") == "ok"
        self.failed += 0 if ok else 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.log is not None:
            vals = ", ".join(f"{k}={v}" for k, v in rec.get("values", {}).items())
            gd = rec.get("gd") or {}
            self.log(f"  [{self.done}/{self.total}] {vals}: {rec.get('status')}"
                     + (f", GD {gd.get('regime')}" if gd else "")
                     + (f" ({rec.get('message')})" if not ok and rec.get("message") else "")
                     + f", {rec.get('wall_time', 0):.2f} s")
        self._update()

    def set_running(self, n):
        if n != self.running:
            self.running = n
            self._update()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_sweep(source, out_dir=None, *, scheduler=None, n_workers: int | None = None, serial: bool = False,
              retry_failed: bool = False, progress=None, log=_log_default, callback=None,
              client=None) -> SweepResult:
    """Run a parameter sweep and merge it into ``<out_dir>/<name>.nc``.

    Parameters
    ----------
    source : path or dict
        A sweep file (TOML) or its loaded document; see docs/sweeps.md.
    out_dir : path, optional
        Output folder (default: the configuration's ``[output] dir``, else
        ``effdyn-sweep``). Point records go to ``<out_dir>/<name>.points/``.
    scheduler : str, optional
        Address of an existing Dask scheduler, or ``"slurm"`` / ``"pbs"`` / ``"sge"`` /
        ``"lsf"`` to start one through dask-jobqueue (:func:`jobqueue_cluster`) (default:
        ``$EFFDYN_SCHEDULER``, else a new :func:`local_cluster`).
    n_workers : int, optional
        Workers of the local cluster (default: the machine's cores) or batch jobs of a
        dask-jobqueue cluster (required there).
    serial : bool
        Run every point in this process, without Dask (the reference for speed-ups).
    retry_failed : bool
        Rerun points whose saved record is a failure (by default only missing points run).
    progress : bool, optional
        Progress bar (default: only on a terminal); without it one log line per point.
    log : callable or None
        Receives progress text.
    callback : callable, optional
        Called with ``{"done", "failed", "running", "total"}`` whenever they change.
    client : distributed.Client, optional
        Use this client (its cluster is left running).

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        A bad sweep file, before anything runs (every offending point is listed).
    SweepInterrupted
        Ctrl-C or a lost scheduler, after saving and merging what was computed.
    """
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    sweep = source if isinstance(source, Sweep) else load_sweep(source)
    out = _resolve_out(sweep, out_dir)
    folder = points_dir(out, sweep.name)
    folder.mkdir(parents=True, exist_ok=True)
    existing = read_records(folder, sweep)
    if retry_failed:
        existing = {k: r for k, r in existing.items() if r.get("status") == "ok"}
    todo = [p for p in sweep.points if p.key not in existing]
    todo.sort(key=lambda p: -p.cost)  # stable: equal costs keep grid order
    run_id = uuid.uuid4().hex
    result = SweepResult(sweep, out / f"{sweep.name}.nc", folder, len(sweep.points), reused=len(existing))
    if progress is None:
        progress = sys.stderr.isatty()
    log(f"effdyn sweep {sweep.name}: {len(sweep.points)} points ({' x '.join(map(str, sweep.shape))}, "
        f"{sweep.mode}), {len(existing)} on disk, {len(todo)} to run -> {out}")
    bar = _Progress(len(sweep.points), len(existing), progress and bool(todo), None if progress else log, callback)

    def save(rec, p):
        rec = dict(rec)
        rec["doc"] = p.doc
        write_record(folder, rec)
        result.computed += 1
        result.keys_run.append(p.key)
        bar.finished(rec)

    interrupted = None
    own_cluster = None
    try:
        if not todo:
            pass
        elif serial:
            result.scheduler, result.n_workers = "serial", 1
            for p in todo:
                bar.set_running(1)
                save(run_point(_task(sweep, p, run_id)), p)
            bar.set_running(0)
        else:
            try:
                from distributed import Client
            except ImportError:
                raise ImportError("sweeps on Dask need dask.distributed: pip install \"effdyn[sweep]\" "
                                  "(or run serially with `serial=True` / `--serial`)") from None

            address = scheduler or os.environ.get(SCHEDULER_ENV) or None
            if client is None:
                if address in JOBQUEUE_KINDS:
                    own_cluster = jobqueue_cluster(address, n_workers)
                    client = own_client = Client(own_cluster)
                elif address:
                    client = Client(address, timeout="30s")
                    own_client = client
                else:
                    own_cluster = local_cluster(n_workers)
                    client = own_client = Client(own_cluster)
                    from ._dask_plugin import IgnoreCtrlC

                    client.register_plugin(IgnoreCtrlC())
            else:
                own_client = None
            try:
                result.scheduler = str(client.scheduler.address)
                result.n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
                log(f"  Dask scheduler {result.scheduler}, {result.n_workers} workers")
                interrupted = _run_dask(client, sweep, todo, run_id, save, bar)
            finally:
                if own_client is not None:
                    own_client.close()
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    finally:
        bar.close()
        if own_cluster is not None:
            try:
                own_cluster.close()
            except Exception:  # noqa: BLE001 - closing a half-dead cluster must not hide the results
                pass
        records = read_records(folder, sweep)
        result.failed = sum(r.get("status") != "ok" for r in records.values())
        result.missing = len(sweep.points) - len(records)
        result.wall_time = time.perf_counter() - t0
        ds = sweep_dataset(sweep, records, extra_attrs={"scheduler": result.scheduler,
                                                         "n_workers": int(result.n_workers),
                                                         "last_run_wall_time": float(result.wall_time),
                                                         "last_run_computed": int(result.computed)})
        result.path = save_sweep_dataset(ds, result.path)
        result.dataset = ds
    log(f"  {result.computed} computed, {result.reused} reused, {result.failed} failed, {result.missing} missing; "
        f"{result.wall_time:.1f} s -> {result.path}")
    if interrupted:
        raise SweepInterrupted(result, interrupted)
    return result


def _run_dask(client, sweep, todo, run_id, save, bar):
    """Submit ``todo`` and save each record as it arrives; returns None, or why it stopped."""
    from distributed import as_completed

    futures = {}
    n = len(todo)
    for rank, p in enumerate(todo):
        # Higher priority runs first: the order of the (cost-sorted) list.
        fut = client.submit(run_point, _task(sweep, p, run_id), key=f"effdyn-point-{p.key}-{run_id[:8]}",
                            pure=False, retries=sweep.retries, priority=n - rank)
        futures[fut] = p
    ac = as_completed(futures)
    last_poll = 0.0
    try:
        while not ac.is_empty():
            batch = ac.next_batch(block=False)
            if not batch:
                now = time.monotonic()
                if now - last_poll > 1.0:
                    last_poll = now
                    try:
                        # a worker may hold one queued point beside the one it runs
                        threads = client.nthreads()
                        bar.set_running(sum(min(len(v), threads.get(w, 1)) for w, v in client.processing().items()))
                    except Exception:  # noqa: BLE001 - the count is cosmetic; a lost scheduler shows below
                        pass
                    if client.status in ("closed", "closing"):
                        return "lost the Dask scheduler"
                time.sleep(0.1)
                continue
            for fut in batch:
                p = futures[fut]
                if fut.status == "finished":
                    save(fut.result(), p)
                elif fut.status == "error":
                    exc = fut.exception()
                    save({"key": p.key, "index": list(p.index), "values": p.values, "run": run_id,
                          "status": "error", "message": f"{type(exc).__name__}: {exc}", "models": [], "gd": None,
                          "checks": {}, "worker": {}}, p)
                else:  # cancelled: the scheduler went away
                    return f"point {p.label} was {fut.status} (lost the Dask scheduler?)"
                fut.release()
    except KeyboardInterrupt:
        return "interrupted (Ctrl-C)"
    except OSError as exc:
        return f"lost the Dask scheduler ({exc})"
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
    return None
