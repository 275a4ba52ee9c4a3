"""Compilation counts across parameter sweeps: a sweep over η or seeds must not recompile.

Each sweep runs its first value as a warm-up (that one may compile or load kernels from
numba's cache), then counts the compilations triggered by the remaining values:

* numba: :func:`effdyn.compile_count` (specialisations of every kernel made with
  ``effdyn._jit.jit``) before and after;
* JAX: XLA backend compilations, counted with a ``jax.monitoring`` listener.

Sweeps: the free-energy flow (step-exact map) and GD over η and initial seeds on deep
matrix factorisation and the minimal valley; the mean-field kinetic drift over η_MF and
widths; the diffrax backend over η. Expected: 0 after the warm-up everywhere.
"""

from __future__ import annotations

import numpy as np

ETAS = (0.05, 0.077, 0.1, 0.2, 0.3)
SEEDS = (0, 1, 2, 3, 4)


class _JaxCompiles:
    """Counts XLA backend compilations while installed."""

    def __init__(self):
        self.count = 0
        self.active = False
        try:
            import jax

            jax.monitoring.register_event_duration_secs_listener(self._listen)
            self.available = True
        except Exception:  # pragma: no cover - jax missing or API changed
            self.available = False

    def _listen(self, name, duration, **kwargs):
        if self.active and "backend_compile" in name:
            self.count += 1


def _sweep(name, values, run_one, jax_counter=None):
    from effdyn import compile_count

    run_one(values[0])  # warm-up
    before = compile_count()
    jax_before = jax_counter.count if jax_counter is not None else 0
    if jax_counter is not None:
        jax_counter.active = True
    try:
        for v in values[1:]:
            run_one(v)
    finally:
        if jax_counter is not None:
            jax_counter.active = False
    rec = {"sweep": name, "values": [str(v) for v in values], "numba_compiles": compile_count() - before}
    if jax_counter is not None:
        rec["jax_compiles"] = jax_counter.count - jax_before
    return rec


def _gd(problem, theta0, eta, steps):
    try:
        from effdyn import gd

        return gd(problem, theta0, eta, steps, throw=False, progress=False)
    except ImportError:  # pragma: no cover - written by another helper
        theta = np.array(theta0, dtype=np.float64)
        for _ in range(steps):
            theta = theta - eta * problem._grad(theta)
        return theta


def run(quick: bool = False, log=print, diffrax: bool = True) -> dict:
    import effdyn as ed
    from effdyn.models import FreeEnergyFlow
    from effdyn.problems import DeepMatrixFactorization as DMF
    from effdyn.problems import MinimalValley

    steps = 3 if quick else 20
    etas = ETAS[:3] if quick else ETAS
    seeds = SEEDS[:3] if quick else SEEDS
    dmf = DMF(d=2, depth=3, target=DMF.spectral_target(5.5), init="balanced", init_scale=0.3)
    mv = MinimalValley(zeta=1.0, eps=0.01)
    records = []

    def fe_map(problem, theta0, eta):
        m = FreeEnergyFlow(problem, eta, rank=1)
        y0 = m.initial_state(theta0)
        ed.solve(m, state0=y0, steps=steps, solver="map", progress=False, throw=False)

    records.append(_sweep("free-energy map, DMF, η", etas, lambda eta: fe_map(dmf, dmf.init(0), eta)))
    records.append(_sweep("free-energy map, DMF, seed", seeds, lambda s: fe_map(dmf, dmf.init(s), 0.077)))
    records.append(_sweep("free-energy map, minimal valley, η", etas, lambda eta: fe_map(mv, np.array([0.1, 3.0]), eta)))
    records.append(_sweep("free-energy map, DMF, d (problem size)", (2, 3, 4),
                          lambda d: fe_map(DMF(d=d, depth=3, target=np.eye(d)), DMF(d=d, depth=3, target=np.eye(d)).init(0), 0.05)))
    records.append(_sweep("GD, DMF, η", etas, lambda eta: _gd(dmf, dmf.init(0), eta, steps)))
    records.append(_sweep("GD, DMF, seed", seeds, lambda s: _gd(dmf, dmf.init(s), 0.077, steps)))
    try:
        from effdyn.models import MeanFieldKinetic
        from effdyn.problems.two_layer import teacher_student
    except (ImportError, AttributeError):  # pragma: no cover - written by another helper
        log("  mean-field kinetic not available; sweep skipped")
    else:
        def kinetic(eta_mf, width=20):
            p = teacher_student(width, n=30, d=3, seed=0)
            m = MeanFieldKinetic(p, eta_mf=eta_mf, rank=1)
            y = np.concatenate([p.init(0), 1e-3 * np.ones(p.dim)])
            m.drift(0.0, y)

        records.append(_sweep("mean-field kinetic drift, η_MF", (0.25, 0.5, 1.0), kinetic))
        records.append(_sweep("mean-field kinetic drift, width N", (20, 30, 45), lambda N: kinetic(0.5, N)))
    jc = _JaxCompiles() if diffrax else None
    if jc is not None and jc.available:
        def diffrax_run(eta):
            m = FreeEnergyFlow(mv, eta, rank=1)
            y0 = m.initial_state(np.array([0.1, 3.0]))
            ed.solve(m, state0=y0, steps=steps, solver="diffrax:Tsit5", progress=False, throw=False)

        try:
            # each value costs a full diffrax compilation when the sweep does recompile
            records.append(_sweep("diffrax:Tsit5 free-energy flow, minimal valley, η", etas[:2] if quick else etas,
                                  diffrax_run, jc))
        except Exception as exc:  # pragma: no cover - reported, not fatal
            records.append({"sweep": "diffrax:Tsit5 free-energy flow, minimal valley, η", "error": repr(exc)[:300]})
    for rec in records:
        if "error" in rec:
            log(f"  {rec['sweep']:<52} error: {rec['error']}")
        else:
            extra = f", JAX compiles {rec['jax_compiles']}" if "jax_compiles" in rec else ""
            log(f"  {rec['sweep']:<52} numba compiles after warm-up: {rec['numba_compiles']}{extra}")
    return {"records": records, "steps": steps}


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
