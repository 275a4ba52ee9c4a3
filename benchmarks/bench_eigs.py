"""Sharpness tracking: Hessian-vector products per eigen-solve, warm against cold starts.

Along a GD trajectory through the Edge of Stability (the mean-field teacher–student case
of the validation suite, width N = 200, P = 1200, η_MF = 0.5: GD reaches 2/η near step
500) the top-k eigenpairs are computed at every step of a window around the onset by

* ``warm``: :class:`effdyn.spectrum.EigenTracker` (block Davidson started from the
  previous solutions);
* ``cold``: :func:`effdyn.spectrum.top_eigenpairs` from its fixed random start (ARPACK);
* ``cold, v0 = previous``: the same ARPACK solve started from the previous top
  eigenvector (the cheapest warm start ARPACK itself offers).

Reported: HVPs per solve (mean, median, max), seconds per solve, and the largest
eigenvalue disagreement between warm and cold.
"""

from __future__ import annotations

import numpy as np

from _timing import now

WINDOW = (380, 680)
QUICK_WINDOW = (0, 8)
KS = (1, 2)
TOL = 1e-10
#: Tracker options measured beside the defaults, e.g. {"history": 4} (None: defaults only).
PROPOSED = None


def trajectory(quick: bool):
    """θ_k of GD on the mean-field case over the window (GD itself, no tracking)."""
    from effdyn.validation import get_case

    setup = get_case("mean-field").setup(quick=quick, steps=10)
    p, eta = setup.problem, setup.eta
    lo, hi = QUICK_WINDOW if quick else WINDOW
    try:
        from effdyn import gd
    except ImportError:  # pragma: no cover - written by another helper
        theta = np.array(setup.theta0, dtype=np.float64)
        thetas = []
        for k in range(hi):
            if k >= lo:
                thetas.append(theta.copy())
            theta = theta - eta * p._grad(theta)
    else:
        traj = gd(p, setup.theta0, eta, hi, eig_every=None, progress=False)
        thetas = [np.array(t) for t in traj.theta[lo:hi]]
    return p, eta, thetas, (lo, hi)


def _summary(counts, seconds):
    counts = np.asarray(counts, dtype=float)
    return {"hvp_mean": float(counts.mean()), "hvp_median": float(np.median(counts)), "hvp_max": int(counts.max()),
            "seconds_per_solve": float(np.mean(seconds))}


def track(problem, thetas, k, tol=TOL, proposed=None):
    """Warm, cold and cold-from-previous solves at every θ; ``proposed`` are tracker options
    (e.g. ``{"history": 3}``) measured as a fourth variant."""
    from effdyn.spectrum import EigenTracker, top_eigenpairs

    tracker = EigenTracker(problem, k, dense_max=0, tol=tol)
    warm_vals, warm_t, methods = [], [], []
    for th in thetas:
        t0 = now()
        vals, _ = tracker.update(th)
        warm_t.append(now() - t0)
        warm_vals.append(vals.copy())
        methods.append(tracker.last_info["method"])
    # The first update of the tracker is necessarily cold; count only the warm ones.
    warm_counts = tracker.hvp_counts[1:]
    cold_counts, cold_t, cold_vals = [], [], []
    prev_counts, prev_t = [], []
    v0 = None
    for th in thetas:
        t0 = now()
        vals, vecs, info = top_eigenpairs(problem, th, k, dense_max=0, tol=tol, return_info=True)
        cold_t.append(now() - t0)
        cold_counts.append(info["n_hvp"])
        cold_vals.append(vals)
        if v0 is not None:
            t0 = now()
            _, _, info = top_eigenpairs(problem, th, k, dense_max=0, tol=tol, v0=v0, return_info=True)
            prev_t.append(now() - t0)
            prev_counts.append(info["n_hvp"])
        v0 = vecs[:, 0]
    warm = _summary(warm_counts, warm_t[1:])
    cold = _summary(cold_counts, cold_t)
    rec = {"k": k, "solves": len(thetas), "warm": warm, "cold": cold, "cold_v0_previous": _summary(prev_counts, prev_t),
           "warm_methods": {m: methods[1:].count(m) for m in set(methods[1:])},
           "max_eig_diff": float(np.max(np.abs(np.array(warm_vals) - np.array(cold_vals)))),
           "sharpness_range": [float(np.min(np.array(cold_vals)[:, 0])), float(np.max(np.array(cold_vals)[:, 0]))]}
    rec["hvp_ratio_cold_over_warm"] = cold["hvp_mean"] / warm["hvp_mean"]
    rec["time_ratio_cold_over_warm"] = cold["seconds_per_solve"] / warm["seconds_per_solve"]
    if proposed:
        alt = EigenTracker(problem, k, dense_max=0, tol=tol, **proposed)
        alt_t, alt_vals = [], []
        for th in thetas:
            t0 = now()
            alt_vals.append(alt.update(th)[0].copy())
            alt_t.append(now() - t0)
        rec["proposed"] = {"options": dict(proposed), **_summary(alt.hvp_counts[1:], alt_t[1:]),
                           "max_eig_diff": float(np.max(np.abs(np.array(alt_vals) - np.array(cold_vals))))}
        rec["proposed"]["hvp_ratio_cold_over_warm"] = cold["hvp_mean"] / rec["proposed"]["hvp_mean"]
    return rec


def run(quick: bool = False, log=print) -> dict:
    p, eta, thetas, window = trajectory(quick)
    log(f"  mean-field case: P={p.dim}, η={eta:g}, GD steps {window[0]}..{window[1] - 1}")
    records = []
    for k in (KS[:1] if quick else KS):
        rec = track(p, thetas, k, proposed=PROPOSED)
        records.append(rec)
        log(f"  k={k}: HVPs per solve warm {rec['warm']['hvp_mean']:.1f} (max {rec['warm']['hvp_max']}), "
            f"cold {rec['cold']['hvp_mean']:.1f}, cold from previous v {rec['cold_v0_previous']['hvp_mean']:.1f}: "
            f"cold/warm = {rec['hvp_ratio_cold_over_warm']:.2f} (time {rec['time_ratio_cold_over_warm']:.2f}); "
            f"max |Δλ| {rec['max_eig_diff']:.1e}; sharpness·η in [{rec['sharpness_range'][0] * eta:.3f}, "
            f"{rec['sharpness_range'][1] * eta:.3f}]"
            + (f"; with {PROPOSED}: {rec['proposed']['hvp_mean']:.1f} HVPs "
               f"(cold/warm {rec['proposed']['hvp_ratio_cold_over_warm']:.2f})" if "proposed" in rec else ""))
    return {"problem": "mean-field teacher–student", "P": p.dim, "eta": eta, "window": list(window), "tol": TOL,
            "records": records}


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
