"""Mean-field kinetic drift: achieved floating-point rate against numpy's matmul.

One evaluation of ``MeanFieldKinetic.drift`` (θ̄-drift with the rank-r third-derivative
contraction, and ηHU − 2U) on a width-N tanh network with n samples in d input
dimensions. Its cost is counted from the formulas of theory §4 per (particle, sample)
pair (see :func:`kinetic_flops`), divided by the measured time, and compared with the
float64 matmul rate measured in the same run — both on a large square product (what the
installed BLAS reaches: the machine's limit for dense work) and on the skinny product
(N × d)·(d × n) that the drift's dense part consists of.

The time of one evaluation must grow linearly in N (the log-log slope is fitted).
"""

from __future__ import annotations

import numpy as np

from _timing import interleaved, loglog_slope, matmul_rate

WIDTHS = (1000, 3000, 10000, 30000, 100000)
RANKS = (1, 2)
N_SAMPLES, INPUT_DIM = 500, 64
QUICK = {"widths": (40, 80), "ranks": (1,), "n": 20, "d": 4}
ETA_MF = 0.5


def kinetic_flops(N: int, n: int, d: int, r: int) -> dict:
    """Floating-point operations of one kinetic drift evaluation, from the formulas.

    Per (particle i, sample k) pair:

    * dense part (inner products and the back-projection onto the inputs): z = w·x and
      p_q = v_q·x (2d each), Σ_k C^w_ik x_k for the θ̄-drift and for each (H u_q) (2d each),
      i.e. 2d(2 + 2r) — counted once, although the kernel recomputes z and p in its
      backward pass;
    * element-wise part: 8 flops for σ, σ', σ'', σ''' of tanh from one exponential (the
      exponential counted as one flop), 3 for f, then per mode 4 for Df, 7 for D²f, 12 and
      22 for the a- and w-coefficients of the third contraction, 5 and 10 for those of Hu,
      and 5 for the gradient's coefficients and the drift's weights: 16 + 60r.
    """
    pairs = float(N) * n
    dense = pairs * 2 * d * (2 + 2 * r)
    elementwise = pairs * (16 + 60 * r)
    return {"dense": dense, "elementwise": elementwise, "total": dense + elementwise}


def _problem(N, n, d, seed=0):
    from effdyn.problems import TwoLayerNet

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = np.tanh(X @ rng.standard_normal(d))
    return TwoLayerNet(X, y, width=N, activation="tanh", scaling="mean-field"), rng


def kinetic_drift_fn(problem, rank, eta_mf=ETA_MF):
    """(drift callable y ↦ dy/dk, state y, source) through MeanFieldKinetic when it exists."""
    try:
        from effdyn.models import MeanFieldKinetic

        model = MeanFieldKinetic(problem, eta_mf=eta_mf, rank=rank)
        fn, source = (lambda y: model.drift(0.0, y)), "MeanFieldKinetic.drift"
    except (ImportError, AttributeError):  # pragma: no cover - written by another helper
        from effdyn.kernels import kinetic as k

        eta = problem.width * eta_mf
        P = problem.dim

        def fn(y):
            U = np.ascontiguousarray(y[P:].reshape(P, rank))
            return k._kinetic_drift(y[:P], U, eta, problem.params)

        source = "kernels.kinetic._kinetic_drift"
    rng = np.random.default_rng(1)
    theta = problem.init(0)
    U = 1e-3 * rng.standard_normal((problem.dim, rank))
    return fn, np.concatenate([theta, U.ravel()]), source


def kinetic_record(N, n, d, rank, *, repeats=3, min_time=0.003, square=None):
    """Time one drift evaluation and, in the same interleaved loop, the dense products it
    is built on: the forward product (N × d)·(d × n) and the back-projection (N × n)·(n × d)."""
    p, rng = _problem(N, n, d)
    drift, y, source = kinetic_drift_fn(p, rank)
    A, B = rng.standard_normal((N, d)), rng.standard_normal((d, n))
    C, X = rng.standard_normal((N, n)), rng.standard_normal((n, d))
    AB, CX = np.empty((N, n)), np.empty((N, d))
    t = interleaved({"drift": lambda: drift(y), "forward": lambda: np.matmul(A, B, out=AB),
                     "back": lambda: np.matmul(C, X, out=CX)}, repeats=repeats, min_time=min_time)
    fl = kinetic_flops(N, n, d, rank)
    best = t["drift"]["best"]
    # The products the kernel performs: z and p_q in the forward pass and again in the
    # backward pass (2(1 + r) forward products) and 1 + r back-projections.
    dense_s = 2 * (1 + rank) * t["forward"]["best"] + (1 + rank) * t["back"]["best"]
    rec = {"N": N, "n": n, "d": d, "rank": rank, "P": p.dim, "source": source,
           "threads": int(getattr(p, "threads", 1)),
           "time_s": best, "time_median_s": t["drift"]["median"],
           "flops": fl["total"], "dense_flops": fl["dense"],
           "gflops": fl["total"] / best / 1e9,
           "skinny_matmul_gflops": 2.0 * N * n * d / t["forward"]["best"] / 1e9,
           "dense_part_s": dense_s, "dense_share": dense_s / best}
    if square is not None:
        rec["fraction_of_matmul"] = rec["gflops"] / square
    rec["fraction_of_skinny_matmul"] = rec["gflops"] / rec["skinny_matmul_gflops"]
    return rec


def run(quick: bool = False, log=print) -> dict:
    cfg = QUICK if quick else {"widths": WIDTHS, "ranks": RANKS, "n": N_SAMPLES, "d": INPUT_DIM}
    mm = matmul_rate(64, repeats=2, min_time=0.002) if quick else matmul_rate(1024, repeats=7)
    log(f"  numpy matmul {mm['n']}x{mm['n']}: {mm['gflops_best']:.1f} GFLOP/s (best)")
    records, slopes = [], {}
    for r in cfg["ranks"]:
        for N in cfg["widths"]:
            reps = 2 if quick or N * cfg["n"] >= 10**7 else 3
            rec = kinetic_record(N, cfg["n"], cfg["d"], r, repeats=reps, square=mm["gflops_best"])
            records.append(rec)
            log(f"  r={r} N={N:>6} P={rec['P']:>8}  {rec['time_s'] * 1e3:9.2f} ms  {rec['gflops']:6.2f} GFLOP/s  "
                f"= {100 * rec['fraction_of_matmul']:5.1f}% of matmul; its dense products take "
                f"{100 * rec['dense_share']:4.1f}% of the time")
        rs = [x for x in records if x["rank"] == r]
        slopes[r] = loglog_slope([x["N"] for x in rs], [x["time_s"] for x in rs])
        log(f"  r={r}: time ∝ N^{slopes[r]:.3f}")
    # after the drifts, to see whether the machine's rate drifted during the run
    mm_after = matmul_rate(64, repeats=2, min_time=0.002) if quick else matmul_rate(1024, repeats=7)
    return {"records": records, "matmul": mm, "matmul_after": mm_after, "slope": {str(k): v for k, v in slopes.items()},
            "n": cfg["n"], "d": cfg["d"], "eta_mf": ETA_MF,
            "notes": "achieved GFLOP/s = formula flops / best time; matmul measured in the same run"}


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
