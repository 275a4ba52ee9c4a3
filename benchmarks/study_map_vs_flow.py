"""Which form to use: the step-exact map or the continuous flow (issue: fidelity, items 3
and 9). On the minimal valley (theory §5) GD's oscillation after the EoS onset is a slow
Lotka–Volterra cycle whose loss peaks we detect with effdyn's spike rule; we compare the
peaks' spacing and height for GD, the free-energy flow (map and LSODA), the edge flow (map
and LSODA) and the central flow, over a long horizon. Prints a table (and writes JSON with
--out)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import effdyn as ed
from effdyn.diagnostics import detect_spikes


def spikes_of(k, avg_loss, ref):
    ks, hs = detect_spikes(k, avg_loss, ref=ref)
    return np.asarray(ks, float), np.asarray(hs, float)


def summary(name, ks, hs, t0, t1):
    sel = (ks >= t0) & (ks <= t1)
    ks, hs = ks[sel], hs[sel]
    gaps = np.diff(ks)
    return {"model": name, "n": int(ks.size), "first_gaps": gaps[:4].tolist(), "last_gaps": gaps[-4:].tolist(),
            "mean_gap": float(gaps.mean()) if gaps.size else float("nan"),
            "first_heights": hs[:3].tolist(), "last_heights": hs[-3:].tolist()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    p = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    eta, th0, T = 0.3, [0.1, 3.0], args.steps
    traj = ed.gd(p, th0, eta, T, eig_every=10, theta_every=1)
    kk, avg = traj.loss_average()
    ref = float(np.min(traj.loss))
    onset = int(np.argmax(np.asarray(traj.sharpness) > 2 / eta)) * 10
    rows = [summary("GD", *spikes_of(kk, avg, ref), onset, T)]
    runs = [("free-energy flow [map]", ed.models.FreeEnergyFlow(p, eta), "map"),
            ("free-energy flow [LSODA]", ed.models.FreeEnergyFlow(p, eta), "scipy:LSODA"),
            ("edge flow [map]", ed.models.EdgeFlow(p, eta), "map"),
            ("edge flow [LSODA]", ed.models.EdgeFlow(p, eta), "scipy:LSODA"),
            ("central flow [LSODA]", ed.models.CentralFlow(p, eta), "scipy:LSODA")]
    for name, model, solver in runs:
        t = time.process_time()
        kw = {} if solver == "map" else {"rtol": 1e-9, "atol": 1e-12}
        sol = ed.solve(model, th0, T, solver=solver, throw=False, progress=False, **kw)
        row = summary(name, *spikes_of(sol.k, sol.time_avg_loss, ref), onset, T)
        row.update(status=str(sol.status), cpu_s=time.process_time() - t, nfev=int(sol.stats.nfev))
        rows.append(row)
    for r in rows:
        print(f"{r['model']:26s} n={r['n']:3d} mean gap={r['mean_gap']:7.1f} first gaps={r['first_gaps']} "
              f"last gaps={r['last_gaps']} heights {np.round(r['first_heights'], 4).tolist()} -> "
              f"{np.round(r['last_heights'], 4).tolist()}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"onset": onset, "steps": T, "rows": rows}, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
