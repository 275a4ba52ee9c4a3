"""Timing helpers shared by the benchmarks.

The machines these benchmarks run on are shared and noisy, so every comparison is made
inside one run and between candidates timed *interleaved*: each repeat times every
candidate once, in rotating order, and a candidate's figure is its best repeat (the least
disturbed one). Ratios of best times are what the reports state; absolute times are given
for orientation only.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def _per_call(fn, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def calibrate(fn, min_time: float) -> int:
    """Number of calls per sample so that one sample lasts about ``min_time`` seconds."""
    fn()  # warm-up: compilation, caches, first-touch allocation
    inner = 1
    while True:
        dt = _per_call(fn, inner) * inner
        if dt >= min_time or inner >= 1 << 20:
            return inner
        inner = max(2 * inner, int(inner * 1.2 * min_time / max(dt, 1e-9)))


def interleaved(fns: dict, *, repeats: int = 15, min_time: float = 0.003) -> dict:
    """Best and median seconds per call of each callable in ``fns``, timed interleaved.

    Samples are kept short (``min_time``, a few ms) on purpose: on a loaded machine a short
    sample has a fair chance of running inside one scheduler time slice, and the best of
    many such samples estimates the undisturbed cost. Returns
    ``{name: {"best": s, "median": s, "inner": calls per sample}}``.
    """
    inner = {name: calibrate(fn, min_time) for name, fn in fns.items()}
    names = list(fns)
    samples = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            samples[name].append(_per_call(fns[name], inner[name]))
    return {name: {"best": float(min(s)), "median": float(np.median(s)), "inner": inner[name]}
            for name, s in samples.items()}


def matmul_rate(n: int = 1024, *, repeats: int = 5) -> dict:
    """numpy's float64 matmul rate (GFLOP/s) on square n×n matrices: the machine's limit
    for dense work as the installed BLAS reaches it (2n³ flops per product)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    C = np.empty((n, n))
    t = interleaved({"matmul": lambda: np.matmul(A, B, out=C)}, repeats=repeats, min_time=0.05)["matmul"]
    return {"n": n, "gflops_best": 2.0 * n**3 / t["best"] / 1e9, "gflops_median": 2.0 * n**3 / t["median"] / 1e9}


def machine() -> dict:
    """What the numbers were measured on (recorded with every result)."""
    from importlib import metadata as md

    info = {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        pass
    for pkg in ("numpy", "scipy", "numba", "jax", "jaxlib", "diffrax"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "not installed"
    try:
        import numba

        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:  # pragma: no cover
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (the scaling exponent)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])
