"""Sweep throughput: the same points on a local Dask cluster against one process.

Runs a sweep file (default: the 41-point deep matrix factorisation σ1 sweep,
``validation/sweeps/dmf_sigma1.toml``) twice in one invocation, each time from an empty
output folder:

* **serial**: every point in this process, one after the other (``run_sweep(serial=True)``);
* **dask**: a :func:`effdyn.sweep.local_cluster` of N single-threaded worker processes
  (default 2), the cluster's start-up included in the time.

Throughput = points / wall time; the speed-up is the ratio of the two, measured in the same
run (alternating the order with ``--repeats``). Both include their own start-up costs:
the serial run loads the numba kernels once, each worker loads them once (from numba's
on-disk cache: ``worker_compiles_first_point``) and must not compile again for later
points (``worker_compiles_later_points`` = 0). On a shared machine the load average before
and after is recorded: other processes on the same cores lower the parallel figure; the
CPU-time bound (serial CPU seconds of all points over the busiest worker's CPU seconds)
says what the same split gives on idle cores.

Linux groups processes by session for CPU scheduling (``sched_autogroup``): all processes of
one terminal session share one fair share of the machine. On a machine shared with other
sessions, a local cluster started from one session therefore cannot get more CPU than the
serial run did. ``--own-sessions`` runs the serial reference in a child process with a
session of its own and starts each worker as a ``dask worker`` process in a session of its
own (as workers on other machines would be), attached to a scheduler in this process:
the comparison 1 scheduling group against N.

    .venv/bin/python benchmarks/bench_sweep.py                      # 41 points, 2 workers
    .venv/bin/python benchmarks/bench_sweep.py --quick              # 8 points, 600 steps
    .venv/bin/python benchmarks/bench_sweep.py --workers 2 --repeats 2 --out /tmp/bs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = ROOT / "validation" / "sweeps" / "dmf_sigma1.toml"


def _doc(path, quick):
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    if quick:
        doc["axes"] = {"problem.sigma1": {"linspace": [4.8, 6.5, 8]}}
        doc["gd"]["steps"] = 600
    return doc


def _one(doc, out, t0=None, **kw):
    from effdyn.sweep import run_sweep

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter() if t0 is None else t0
    res = run_sweep(doc, out, log=None, progress=False, **kw)
    wall = time.perf_counter() - t0
    ds = res.dataset
    cpu = ds["point_cpu_time"].values.ravel()
    who = ds["point_worker"].values.ravel()
    per_worker = {w: float(cpu[who == w].sum()) for w in set(who)}
    rec = {"wall_s": wall, "points": res.computed, "failed": res.failed, "throughput_pts_per_s": res.computed / wall,
           "sum_point_wall_s": float(ds["point_wall_time"].sum()),
           "sum_point_cpu_s": float(cpu.sum()), "max_worker_cpu_s": max(per_worker.values()), "workers": int(ds.sizes.get("worker", 0)),
           "worker_points": ds["worker_points"].values.tolist(),
           "worker_compile_count": ds["worker_compile_count"].values.tolist(),
           "worker_compiles_first_point": ds["worker_compiles_first_point"].values.tolist(),
           "worker_compiles_later_points": ds["worker_compiles_later_points"].values.tolist(),
           "periods": ds["gd_period"].values.ravel().tolist()}
    return rec


def _serial_own_session(sweep, quick, out):
    """The serial run in a child process with a session (and so a scheduling group) of its own."""
    res_file = Path(out) / "child.json"
    shutil.rmtree(out, ignore_errors=True)
    Path(out).mkdir(parents=True)
    cmd = [sys.executable, __file__, "--child-serial", str(out), "--sweep", str(sweep)] + (["--quick"] if quick else [])
    subprocess.run(cmd, check=True, start_new_session=True, env={**os.environ, **_blas_env()})
    return json.loads(res_file.read_text())


def _blas_env():
    from effdyn.sweep import BLAS_ENV

    return dict(BLAS_ENV)


def _dask_own_sessions(doc, out, workers):
    """Dask workers started as `dask worker` processes, each in a session of its own (as on
    separate machines), attached to a scheduler in this process; start-up included."""
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=0, processes=True, dashboard_address=":0")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                               "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                              env={**os.environ, **_blas_env()}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    client = Client(cluster)
    try:
        client.wait_for_workers(workers, timeout=120)
        return _one(doc, out, t0=t0, client=client)
    finally:
        client.close()
        cluster.close()
        for p in procs:  # the processes started here, by their id
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def run(sweep=DEFAULT_SWEEP, workers=2, repeats=1, quick=False, out=None, log=print, own_sessions=False):
    doc = _doc(sweep, quick)
    out = Path(out or tempfile.mkdtemp(prefix="effdyn-bench-sweep-"))
    load_before = os.getloadavg()
    runs = []
    for r in range(repeats):
        order = ("serial", "dask") if r % 2 == 0 else ("dask", "serial")
        pair = {}
        for kind in order:
            if own_sessions:
                pair[kind] = (_serial_own_session(sweep, quick, out / kind) if kind == "serial"
                              else _dask_own_sessions(doc, out / kind, workers))
            else:
                kw = {"serial": True} if kind == "serial" else {"n_workers": workers}
                pair[kind] = _one(doc, out / kind, **kw)
            log(f"  repeat {r + 1} {kind:6s}: {pair[kind]['points']} points in {pair[kind]['wall_s']:.1f} s "
                f"({pair[kind]['throughput_pts_per_s']:.3f} points/s); compiles per worker: first point "
                f"{pair[kind]['worker_compiles_first_point']}, later points {pair[kind]['worker_compiles_later_points']}")
        assert pair["serial"]["periods"] == pair["dask"]["periods"], "serial and Dask runs disagree"
        pair["speedup"] = pair["dask"]["throughput_pts_per_s"] / pair["serial"]["throughput_pts_per_s"]
        # what the speed-up would be without other processes on the cores: the serial CPU
        # time of all points over the CPU time of the busiest worker
        pair["speedup_cpu"] = pair["serial"]["sum_point_cpu_s"] / pair["dask"]["max_worker_cpu_s"]
        log(f"  repeat {r + 1}: speed-up {pair['speedup']:.2f}x with {workers} workers (wall clock); "
            f"CPU-time bound {pair['speedup_cpu']:.2f}x")
        runs.append(pair)
    res = {"sweep": str(sweep), "quick": quick, "workers": workers, "own_sessions": own_sessions, "cpu_count": os.cpu_count(),
           "load_before": load_before, "load_after": os.getloadavg(), "runs": runs,
           "speedup_best": max(p["speedup"] for p in runs), "speedup_mean": sum(p["speedup"] for p in runs) / len(runs)}
    (out / "bench_sweep.json").write_text(json.dumps(res, indent=1))
    log(f"speed-up (throughput, {workers} workers / 1 process): best {res['speedup_best']:.2f}x, "
        f"mean {res['speedup_mean']:.2f}x; load average before {load_before}, after {res['load_after']}; "
        f"-> {out / 'bench_sweep.json'}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", default=str(DEFAULT_SWEEP), help="sweep file (default: the DMF σ1 sweep)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="serial/dask pairs, alternating which runs first")
    ap.add_argument("--quick", action="store_true", help="8 points of 600 steps")
    ap.add_argument("--out", default=None, help="folder for the runs and bench_sweep.json (default: a temp folder)")
    ap.add_argument("--own-sessions", action="store_true",
                    help="serial run and each worker in a session of its own (see the module docstring)")
    ap.add_argument("--child-serial", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_serial:
        rec = _one(_doc(args.sweep, args.quick), Path(args.child_serial), serial=True)
        (Path(args.child_serial) / "child.json").write_text(json.dumps(rec))
        return 0
    run(args.sweep, args.workers, args.repeats, args.quick, args.out, own_sessions=args.own_sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
