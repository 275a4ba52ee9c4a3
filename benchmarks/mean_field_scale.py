"""Scale and width-convergence measurements of the mean-field kinetic model (not tests).

``python benchmarks/mean_field_scale.py [drift] [N] [n] [d] [repeats]``
    One kinetic-drift evaluation of :class:`effdyn.models.MeanFieldKinetic` at N = 10^5
    particles, n = 500 samples, d = 64 inputs, rank r = 1 (P = 6.5·10^6): its time and its
    FLOP rate, counting the dense products only (12·N·n·d for r = 1: W·Xᵀ and V·Xᵀ in the
    forward pass, again in the backward pass, and the two output products C·X), against
    NumPy's matmul rate on the same products and on a 2000×2000 product, measured in the
    same run.

``python benchmarks/mean_field_scale.py sweep [seeds]``
    Convergence in the width N of the teacher–student problem (theory §5): the same
    mean-field initial law θ_i ~ N(0, I), u_i = 0.1·θ_i for every N, integrated with the
    step-exact map to mean-field time t = 10 (20 GD steps at η_MF = 0.5); loss, S_MF and
    the free energy F at t for N = 100 … 10^4, against a reference at N = 3·10^4. Prints
    the RMS error over seeds, the seed-to-seed spread and the mean's bias, and their
    fitted log–log slopes (−1/2 is Monte-Carlo convergence of the empirical measure).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def best_time(fn, repeats):
    """Minimum and median wall time, and the CPU time (all threads) of the fastest run."""
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best = int(np.argmin(times))
    return times[best], float(np.median(times)), cpu[best]


def _load():
    try:
        import os

        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - platform without getloadavg
        return float("nan")


def drift(N=100_000, n=500, d=64, repeats=3):
    from effdyn.kernels import kinetic
    from effdyn.kernels import two_layer as K
    from effdyn.problems.two_layer import TwoLayerNet

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = np.tanh(X @ rng.standard_normal(d))
    p = TwoLayerNet(X, y, N)
    theta = p.init(seed=1)
    U = np.ascontiguousarray(1e-3 * rng.standard_normal((p.dim, 1)))
    eta = 0.5 * N
    t0 = time.perf_counter()
    dy = p.run_kernel(kinetic._kinetic_drift, theta, U, eta)  # first call: compile or load from cache
    first = time.perf_counter() - t0
    assert dy.shape == (2 * p.dim,) and np.all(np.isfinite(dy))
    tmin, tmed, tcpu = best_time(lambda: p.run_kernel(kinetic._kinetic_drift, theta, U, eta), repeats)

    # The same dense products with NumPy/BLAS, block by block as in the kernel.
    B = max(1, K._BLOCK_ELEMS // n)
    W = rng.standard_normal((B, d))
    XT = np.ascontiguousarray(X.T)
    C = rng.standard_normal((B, n))
    blocks = -(-N // B)

    def numpy_products():
        for _ in range(blocks):
            for _ in range(4):
                W @ XT
            C @ X
            C @ X

    tmm, _, tmm_cpu = best_time(numpy_products, repeats)
    big = rng.standard_normal((2000, 2000))
    tbig, _, _ = best_time(lambda: big @ big, repeats)
    flops = 12.0 * N * n * d
    out = {
        "N": N, "n": n, "d": d, "r": 1, "P": p.dim,
        "first_call_s": first, "drift_min_s": tmin, "drift_median_s": tmed, "drift_cpu_s": tcpu,
        "dense_flops": flops, "drift_gflops": flops / tmin / 1e9,
        "numpy_same_products_s": tmm, "numpy_same_products_cpu_s": tmm_cpu,
        "numpy_same_products_gflops": flops / tmm / 1e9,
        "numpy_square_2000_gflops": 2 * 2000**3 / tbig / 1e9,
        "drift_time_over_numpy_products": tmin / tmm,
        "load_average_1min": _load(),
    }
    print(json.dumps(out, indent=2))
    return out


def _observables_at(N, seed, steps=20, eps=0.1, eta_mf=0.5):
    import effdyn as ed
    from effdyn.models import MeanFieldKinetic
    from effdyn.problems.two_layer import teacher_student

    p = teacher_student(width=N)
    m = MeanFieldKinetic(p, eta_mf)
    theta = p.init(seed)
    sol = ed.solve(m, theta, steps, solver='map', save_every=steps, initial={'u0': eps * theta})
    obs = m.observables(sol.k[-1:], sol.y[-1:])
    return np.array([obs["loss"][0], obs["sharpness_mf"][0], obs["free_energy"][0]])


def sweep(seeds=8, widths=(100, 300, 1000, 3000, 10_000), n_ref=30_000, ref_seeds=4):
    names = ["loss", "S_MF", "F"]
    t0 = time.perf_counter()
    ref_vals = np.array([_observables_at(n_ref, 1000 + s) for s in range(ref_seeds)])
    ref = ref_vals.mean(axis=0)
    rows = []
    for N in widths:
        vals = np.array([_observables_at(N, s) for s in range(seeds)])
        rows.append({
            "N": N,
            "mean": vals.mean(axis=0).tolist(),
            "rms_error": np.sqrt(np.mean((vals - ref) ** 2, axis=0)).tolist(),
            "spread": vals.std(axis=0, ddof=1).tolist(),
            "bias": np.abs(vals.mean(axis=0) - ref).tolist(),
        })
        print(f"N={N:6d}  " + "  ".join(
            f"{nm}: mean {rows[-1]['mean'][j]:.5f} rms {rows[-1]['rms_error'][j]:.2e} spread {rows[-1]['spread'][j]:.2e}"
            for j, nm in enumerate(names)), flush=True)
    logN = np.log(np.array(widths, dtype=float))
    slopes = {}
    for key in ("rms_error", "spread", "bias"):
        arr = np.array([r[key] for r in rows])
        slopes[key] = {nm: float(np.polyfit(logN, np.log(arr[:, j]), 1)[0]) for j, nm in enumerate(names)}
    out = {"reference_N": n_ref, "reference": dict(zip(names, ref.tolist())),
           "reference_spread": dict(zip(names, ref_vals.std(axis=0, ddof=1).tolist())),
           "rows": rows, "slopes": slopes, "seconds": time.perf_counter() - t0}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "sweep":
        sweep(*[int(a) for a in args[1:]])
    else:
        if args and args[0] == "drift":
            args = args[1:]
        drift(*[int(a) for a in args])
