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

#: Clock of the measurements: "cpu" (CPU time of this process, ``time.process_time``) or
#: "wall" (``time.perf_counter``). CPU time is what a single-threaded kernel costs even when
#: other processes preempt it, so it is the default when every library runs on one thread
#: (see ``run_all.py``); with several threads, idle threads that spin would be counted, so
#: wall time is used there.
CLOCK = "wall"


def set_clock(name: str) -> None:
    """Select the clock ("cpu" or "wall") used by every timing helper."""
    global CLOCK
    if name not in ("cpu", "wall"):
        raise ValueError(f"`clock` must be 'cpu' or 'wall'; got {name!r}.")
    CLOCK = name


def now() -> float:
    """Current reading of the selected clock, in seconds."""
    return time.process_time() if CLOCK == "cpu" else time.perf_counter()


def _per_call(fn, inner: int) -> float:
    t0 = now()
    for _ in range(inner):
        fn()
    return (now() - t0) / inner


def calibrate(fn, min_time: float) -> tuple[int, float]:
    """Calls per sample so that one sample lasts about ``min_time`` seconds, and the time
    per call measured on the way (a first sample when one call already takes that long)."""
    fn()  # warm-up: compilation, caches, first-touch allocation
    inner = 1
    while True:
        per_call = _per_call(fn, inner)
        if per_call * inner >= min_time or inner >= 1 << 20:
            return inner, per_call
        inner = max(2 * inner, int(inner * 1.2 * min_time / max(per_call * inner, 1e-9)))


def interleaved(fns: dict, *, repeats: int = 15, min_time: float = 0.003) -> dict:
    """Best and median seconds per call of each callable in ``fns``, timed interleaved.

    Samples are kept short (``min_time``, a few ms) on purpose: on a loaded machine a short
    sample has a fair chance of running inside one scheduler time slice, and the best of
    many such samples estimates the undisturbed cost. A callable that takes longer than
    ``min_time`` per call is sampled one call at a time, and its calibration call counts as
    its first sample (so an expensive function runs ``repeats + 1`` times in all).
    Returns ``{name: {"best": s, "median": s, "inner": calls per sample}}``.
    """
    inner, samples = {}, {}
    for name, fn in fns.items():
        inner[name], first = calibrate(fn, min_time)
        samples[name] = [first] if inner[name] == 1 else []
    names = list(fns)
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            if len(samples[name]) < repeats:
                samples[name].append(_per_call(fns[name], inner[name]))
    return {name: {"best": float(min(s)), "median": float(np.median(s)), "inner": inner[name]}
            for name, s in samples.items()}


def matmul_rate(n: int = 1024, *, repeats: int = 5, min_time: float = 0.05) -> dict:
    """numpy's float64 matmul rate (GFLOP/s) on square n×n matrices: the machine's limit
    for dense work as the installed BLAS reaches it (2n³ flops per product)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    C = np.empty((n, n))
    t = interleaved({"matmul": lambda: np.matmul(A, B, out=C)}, repeats=repeats, min_time=min_time)["matmul"]
    return {"n": n, "gflops_best": 2.0 * n**3 / t["best"] / 1e9, "gflops_median": 2.0 * n**3 / t["median"] / 1e9}


def machine() -> dict:
    """What the numbers were measured on (recorded with every result)."""
    from importlib import metadata as md

    info = {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "clock": CLOCK}
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
