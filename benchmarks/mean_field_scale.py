"""One kinetic-drift evaluation of the mean-field model at scale (not a test).

Measures, in one run on this machine:

* the time of one drift evaluation of :class:`effdyn.models.MeanFieldKinetic` at
  N = 10^5 particles, n = 500 samples, d = 64 inputs, rank r = 1 (P = 6.5·10^6), with the
  kernels' element-wise loops on one numba thread and on all of them;
* its FLOP rate, counting the dense products only (12·N·n·d for r = 1: the products
  W·Xᵀ and V·Xᵀ in the forward pass, again in the backward pass, and the two output
  products C·X), against NumPy's matmul rate on the same shapes measured in the same run.

Usage: ``python benchmarks/mean_field_scale.py [N] [n] [d] [repeats]``.
"""

from __future__ import annotations

import json
import sys
import time

import numba
import numpy as np


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def main(N=100_000, n=500, d=64, repeats=3):
    from effdyn.kernels import two_layer as K
    from effdyn.problems.two_layer import TwoLayerNet

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = np.tanh(X @ rng.standard_normal(d))
    out = {"N": N, "n": n, "d": d, "r": 1, "numba_threads": numba.get_num_threads()}
    for parallel in (False, True):
        p = TwoLayerNet(X, y, N, parallel=parallel)
        theta = p.init(seed=1)
        U = np.ascontiguousarray(1e-3 * rng.standard_normal((p.dim, 1)))
        eta = 0.5 * N
        t0 = time.perf_counter()
        dy = p.run_kernel(K._kinetic_drift, theta, U, eta)  # first call: compile or load from cache
        first = time.perf_counter() - t0
        assert dy.shape == (2 * p.dim,) and np.all(np.isfinite(dy))
        tmin, tmed = best_time(lambda: p.run_kernel(K._kinetic_drift, theta, U, eta), repeats)
        key = "threads" if parallel else "serial"
        out[key] = {"first_call_s": first, "min_s": tmin, "median_s": tmed}

    # The same dense products with NumPy/BLAS, per block of particles as in the kernel.
    B = max(1, K._BLOCK_ELEMS // n)
    W = rng.standard_normal((B, d))
    XT = np.ascontiguousarray(X.T)
    C = rng.standard_normal((B, n))
    blocks = -(-N // B)

    def numpy_products():
        for _ in range(blocks):
            W @ XT
            W @ XT
            W @ XT
            W @ XT
            C @ X
            C @ X

    tmm, _ = best_time(numpy_products, repeats)
    big = rng.standard_normal((2000, 2000))
    tbig, _ = best_time(lambda: big @ big, repeats)
    flops = 12.0 * N * n * d
    out["dense_flops"] = flops
    out["numpy_same_products_s"] = tmm
    out["numpy_same_products_gflops"] = flops / tmm / 1e9
    out["numpy_square_2000_gflops"] = 2 * 2000**3 / tbig / 1e9
    for key in ("serial", "threads"):
        out[key]["gflops"] = flops / out[key]["min_s"] / 1e9
        out[key]["fraction_of_numpy_same_products"] = tmm / out[key]["min_s"]
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
