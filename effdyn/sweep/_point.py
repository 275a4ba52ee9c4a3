"""One sweep point, run where a worker runs it: GD, the models, the comparison, the summary.

:func:`run_point` takes and returns plain data (dicts of numbers and strings), so the same
function runs in this process (serial sweeps), in a local worker process or on a remote
Dask worker, and its result is written as JSON by the client.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback

__all__ = ["run_point", "worker_identity", "BLAS_ENV"]

#: Thread-count variables set in every worker's environment: one BLAS / OpenMP / numba
#: thread per single-threaded worker process, so that n workers use n cores.
BLAS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


def worker_identity() -> dict:
    """Where this call runs: host, process id, and the Dask worker address (if any)."""
    address = ""
    try:
        from distributed import get_worker

        address = str(get_worker().address)
    except (ImportError, ValueError):
        pass
    return {"host": socket.gethostname(), "pid": os.getpid(), "address": address}


def _finite(x):
    """JSON has no NaN or infinity: non-finite floats are written as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    return _finite(obj)


def _quiet(msg: str) -> None:
    pass


def run_point(task: dict) -> dict:
    """Run one point and return its record (a JSON-ready dict).

    ``task`` holds ``doc`` (the run configuration), ``source`` (for messages), ``key``,
    ``index``, ``values``, ``period_tol``, ``period_max`` and ``run``. Any
    failure inside the run becomes ``status = "error"`` with the message: a point never
    raises, so one bad point cannot stop a sweep.
    """
    import effdyn

    from ..validation.config import config_from_document
    from ..validation.runner import run_setup
    from ._summary import LAWS, gd_summary

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    started = time.time()
    compiles_before = effdyn.compile_count()
    rec = {"key": task["key"], "index": list(task["index"]), "values": task["values"], "run": task.get("run", ""),
           "status": "error", "message": "", "seed": None, "gd": None, "models": [], "checks": {}}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        threadpool_limits = None
    try:
        limits = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
        try:
            from pathlib import Path

            cfg = config_from_document(task["doc"], Path(task.get("source", "sweep")))
            setup = cfg.setup
            rec["seed"] = None if setup.seed is None else int(setup.seed)
            case = run_setup(cfg.name, cfg.name, setup, out_dir=None, progress=False, log=_quiet, figures=False)
        finally:
            if limits is not None:
                limits.restore_original_limits()
        rec["status"] = "ok" if case.status == "ok" else case.status
        rec["message"] = case.message
        if case.gd is not None:
            gd = gd_summary(case.gd, setup.eta, period_tol=task.get("period_tol", 1e-4),
                            period_max=task.get("period_max", 64))
            gd["wall_time"] = float(case.gd_wall)
            rec["gd"] = gd
            # every law, applicable or not, so that a check added later needs no rerun
            for law in LAWS.values():
                res = law.evaluate(setup.problem, setup.eta, gd)
                if res is not None:
                    exp, obs = float(res[0]), float(res[1])
                    rel = abs(obs / exp - 1.0) if exp != 0 else abs(obs - exp)
                    rec["checks"][law.name] = {"expected": exp, "observed": obs, "rel_error": rel}
        for row in case.models:
            rec["models"].append({
                "label": row.label, "model": row.model, "solver": row.solver, "status": row.status,
                "message": row.message, "nfev": int(row.nfev), "wall_time": float(row.wall_time),
                "metrics": None if row.metrics is None else dict(row.metrics.as_dict()),
            })
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a point records its failure, it never stops the sweep
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        rec["status"] = "error"
        rec["message"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = "".join(tb[-6:])
    rec["wall_time"] = time.perf_counter() - t0
    rec["cpu_time"] = time.process_time() - cpu0
    rec["started"] = started
    rec["finished"] = time.time()
    rec["compiles_before"] = int(compiles_before)
    rec["compiles_after"] = int(effdyn.compile_count())
    rec["worker"] = worker_identity()
    return _clean(rec)
