"""Peak memory of the central flow against GD with eigen-tracking on the peer MLP example
(433 parameters, η = 0.1, 1000 steps), each in a fresh process (peak resident set size).

The central flow used to keep Σ as an (n, P, P) array of its saved states (1.4 GB here);
it now records Σ as a factor (P, max_rank) per saved state, and its observables read that.
``baseline`` is a process that only builds the problem and evaluates one gradient and one
Hessian-vector product and third-derivative contractions (JAX's own footprint, compilations included), so the increments compare the runs themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import resource, sys, json, time
sys.path.insert(0, {here!r})
import numpy as np
import effdyn as ed
from peer_mlp import peer_problem, ETA, STEPS
mode = {mode!r}
p, theta0 = peer_problem()
p.grad(theta0); p.hvp(theta0, theta0); p.third(theta0, np.ones((p.dim, 1))); p.third(theta0, np.ones((p.dim, 3)))
t0 = time.process_time()
out = {{}}
if mode == "gd":
    traj = ed.gd(p, theta0, ETA, STEPS, eig_every=1, n_eigs=5, progress=False)
    out["sharpness_last"] = float(traj.sharpness[-1])
elif mode == "central":
    sol = ed.solve(ed.models.CentralFlow(p, ETA), theta0, STEPS, solver="map", progress=False)
    out["sharpness_last"] = float(sol.sharpness[-1]); out["loss_last"] = float(sol.time_avg_loss[-1])
    out["eigensolves"] = sol.stats.eigensolves; _ = sol.observables
    out["eigensolves_after_observables"] = sol.stats.eigensolves
out["cpu_s"] = time.process_time() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def measure(mode: str) -> dict:
    code = _CHILD.format(here=str(HERE), mode=mode)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    import os

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env},
                         timeout=3600)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    rows = {mode: measure(mode) for mode in ("baseline", "gd", "central")}
    base = rows["baseline"]["peak_rss_mb"]
    for mode, r in rows.items():
        r["increment_mb"] = r["peak_rss_mb"] - base
    rows["ratio_peak"] = rows["central"]["peak_rss_mb"] / rows["gd"]["peak_rss_mb"]
    rows["ratio_increment"] = rows["central"]["increment_mb"] / max(rows["gd"]["increment_mb"], 1e-9)
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
