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

    .venv/bin/python benchmarks/bench_sweep.py                      # 41 points, 2 workers
    .venv/bin/python benchmarks/bench_sweep.py --quick              # 8 points, 600 steps
    .venv/bin/python benchmarks/bench_sweep.py --workers 2 --repeats 2 --out /tmp/bs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def _one(doc, out, **kw):
    from effdyn.sweep import run_sweep

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
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


def run(sweep=DEFAULT_SWEEP, workers=2, repeats=1, quick=False, out=None, log=print):
    doc = _doc(sweep, quick)
    out = Path(out or tempfile.mkdtemp(prefix="effdyn-bench-sweep-"))
    load_before = os.getloadavg()
    runs = []
    for r in range(repeats):
        order = ("serial", "dask") if r % 2 == 0 else ("dask", "serial")
        pair = {}
        for kind in order:
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
    res = {"sweep": str(sweep), "quick": quick, "workers": workers, "cpu_count": os.cpu_count(),
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
    args = ap.parse_args(argv)
    run(args.sweep, args.workers, args.repeats, args.quick, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
