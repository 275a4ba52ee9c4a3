"""End to end: the free-energy θ/Σ flow over a validation horizon against GD itself.

For each case the flow (rank 1, the validation suite's options) is integrated over the
same horizon as GD with every solver family, and compared with GD on two counts:

* wall time, flow / GD (GD run without eigenvalue tracking: just its gradient steps);
* gradient-equivalent evaluations: GD needs one gradient per step; the flow's oracle
  calls are the solve's own counters (``sol.stats``: gradients, third-derivative
  contractions, HVPs and eigen-solves, the initial state and the records of the saved
  states included) weighted by their cost relative to one gradient, measured on the same
  problem in the same run.
  The diffrax backend evaluates a pure-JAX drift whose calls cannot be counted from
  Python: its evaluations are diffrax's step count times the stages of the method, each
  weighted like one NumPy drift evaluation (1 gradient, r contractions, 1 eigen-solve).

A ratio below 1 means the continuous model is cheaper than running GD.
"""

from __future__ import annotations


import numpy as np

from _timing import interleaved, now

SOLVERS = ("scipy:LSODA", "scipy:RK45", "scipy:Radau", "diffrax:Tsit5", "diffrax:Kvaerno5", "map")
QUICK_SOLVERS = ("scipy:LSODA", "map")
#: (validation case, horizon in GD steps; None = the case's quick horizon)
CASES = (("minimal-valley", 6000), ("dmf-period2", None))
QUICK_CASES = (("minimal-valley", 300), ("dmf-period2", 60))
#: Longer horizons, LSODA only: most of the flow's work is at the onset of the Edge of
#: Stability, so its cost relative to GD falls with the horizon.
LONG_CASES = (("minimal-valley", 30000), ("dmf-period2", 2000))
LONG_SOLVERS = ("scipy:LSODA",)


def case_setup(name, steps):
    """Problem, θ0, η, horizon and the free-energy flow's options from the validation case."""
    from effdyn.validation import get_case

    case = get_case(name)
    setup = case.setup(quick=True, steps=steps)
    spec = next(m for m in setup.models if m.cls == "FreeEnergyFlow" and m.solver != "map")
    return setup, spec


def oracle_costs(model, theta, initial=None, *, repeats=15):
    """Seconds per call of the oracles at θ and their cost relative to one gradient."""
    p = model.problem
    r = model.rank
    rng = np.random.default_rng(0)
    U = np.ascontiguousarray(rng.standard_normal((p.dim, r)))
    v = rng.standard_normal(p.dim)
    y = model.initial_state(theta, **(initial or {}))
    fns = {"grad": lambda: p._grad(theta), "third": lambda: p._third(theta, U, np.ones(r)),
           "hvp": lambda: p._hvp(theta, v), "eig": lambda: model.eigenpairs(theta),
           "drift": lambda: model.drift(0.0, y)}
    from proposed_kernels import compiled_free_energy_drift

    lean = compiled_free_energy_drift(model)
    if lean is not None:
        np.testing.assert_allclose(lean(y), model.drift(0.0, y), rtol=1e-10, atol=1e-14)
        fns["drift_compiled_sigma"] = lambda: lean(y)
    t = interleaved(fns, repeats=repeats)
    g = t["grad"]["best"]
    return {name: {"seconds": v["best"], "gradients": v["best"] / g} for name, v in t.items()}


def gd_run(problem, theta0, eta, steps):
    """GD over the horizon without eigenvalue tracking: returns (wall seconds, θ_final, how).

    Uses :func:`effdyn.gd` (its compiled loop for built-in problems) after a short warm-up
    run, so that compilation or cache loading is not timed.
    """
    try:
        from effdyn import gd
    except ImportError:  # pragma: no cover - written by another helper
        gd = None
    if gd is not None:
        kw = dict(eig_every=None, theta_every=steps, progress=False, throw=False)
        gd(problem, theta0, eta, min(steps, 10), **kw)
        t0 = now()
        traj = gd(problem, theta0, eta, steps, **kw)
        return now() - t0, np.asarray(traj.theta)[-1], "effdyn.gd, no eigen-solves"
    theta = np.array(theta0, dtype=np.float64)
    problem._grad(theta)
    t0 = now()
    for _ in range(steps):
        theta = theta - eta * problem._grad(theta)
    return now() - t0, theta, "python loop over problem._grad"


def flow_record(setup, spec, solver, weights, *, log=print):
    """Solve the flow once with ``solver`` and count its work."""
    import effdyn as ed
    from effdyn.models import FreeEnergyFlow

    model = FreeEnergyFlow(setup.problem, setup.eta, **spec.options)
    kw = dict(solver=solver, save_every=max(1, setup.steps // 200), throw=False, progress=False,
              initial=spec.initial)
    if solver != "map":
        kw.update(rtol=spec.rtol, atol=spec.atol)
    rec = {"solver": solver}
    family = solver.split(":")[0]
    try:
        if family == "diffrax":
            t0 = now()
            ed.solve(model, setup.theta0, steps=setup.steps, **kw)  # first call compiles
            rec["wall_first_s"] = now() - t0
        t0 = now()
        sol = ed.solve(model, setup.theta0, steps=setup.steps, **kw)
        rec["wall_s"] = now() - t0
    except Exception as exc:  # a solver that cannot run this case is reported, not fatal
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
        return rec
    st = sol.stats
    rec.update(status=str(st.status), nfev=int(st.nfev), n_accepted=int(st.n_accepted), reached=float(sol.k[-1]))
    if family != "diffrax":
        c = {"grad": st.gradients, "third_columns": st.thirds, "hvp": st.hvps, "eig": st.eigensolves}
        rec["counts"] = dict(c)
        # weights["third"] is the cost of one contraction call with r columns
        rec["grad_equivalents"] = (c["grad"] + c["third_columns"] / model.rank * weights["third"]
                                   + c["hvp"] * weights["hvp"] + c["eig"] * weights["eig"])
        # the whole drift, NumPy glue included (what the wall time sees)
        rec["drift_equivalents"] = st.nfev * weights["drift"]
        if "drift_compiled_sigma" in weights:
            rec["drift_compiled_sigma_equivalents"] = st.nfev * weights["drift_compiled_sigma"]
    else:
        rec["counts"] = {"drift_evaluations_estimate": int(st.nfev)}
        rec["grad_equivalents"] = st.nfev * (1.0 + weights["third"] + weights["eig"])
        rec["drift_equivalents"] = st.nfev * weights["drift"]
    try:
        rec["final_sharpness"] = float(np.asarray(sol.sharpness)[-1])
    except Exception:  # observables are a sanity check only
        pass
    return rec


def case_records(name, steps, solvers, *, log=print):
    from effdyn.models import FreeEnergyFlow

    setup, spec = case_setup(name, steps)
    p, eta = setup.problem, setup.eta
    gd_wall, theta_end, gd_how = gd_run(p, setup.theta0, eta, setup.steps)
    from effdyn.spectrum import top_eigenpairs

    out = {"case": name, "P": p.dim, "eta": eta, "steps": setup.steps, "gd": {
        "wall_s": gd_wall, "grad_equivalents": float(setup.steps), "how": gd_how,
        "final_sharpness": float(top_eigenpairs(p, theta_end, 1)[0][0])}}
    probe = FreeEnergyFlow(p, eta, **spec.options)
    costs = oracle_costs(probe, np.asarray(setup.theta0, dtype=float), spec.initial)
    weights = {k: v["gradients"] for k, v in costs.items()}
    out["oracle_costs"] = costs
    log(f"  {name}: P={p.dim} steps={setup.steps}  GD {gd_wall * 1e3:.1f} ms ({gd_how}); cost in gradients: "
        + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
    rows = []
    for solver in solvers:
        rec = flow_record(setup, spec, solver, weights, log=log)
        if "wall_s" in rec:
            rec["wall_ratio"] = rec["wall_s"] / gd_wall
        if "grad_equivalents" in rec:
            rec["grad_equivalent_ratio"] = rec["grad_equivalents"] / setup.steps
        rows.append(rec)
        if rec["status"] == "error":
            log(f"    {solver:<18} error: {rec['error'][:120]}")
        else:
            log(f"    {solver:<18} {rec['status']:<8} nfev {rec['nfev']:>7}  grad-eq {rec['grad_equivalents']:>10.0f} "
                f"(ratio {rec['grad_equivalent_ratio']:7.3f})  time {rec['wall_s']:7.2f} s (×{rec['wall_ratio']:8.1f} GD)")
    out["flow"] = rows
    return out


def tolerance_study(name="minimal-valley", steps=6000, rtols=(1e-7, 1e-6, 1e-5, 1e-4), ref_rtol=1e-11, log=print):
    """Drift evaluations against accuracy for LSODA at several tolerances (atol = 1e-3·rtol),
    in the state coordinates of the model (V) and in log-amplitude coordinates, against a
    reference solved at ``ref_rtol`` in log-amplitude coordinates (in V coordinates even
    rtol = 1e-12 leaves sharpness errors of ~1e-2 on the minimal valley, while the
    log-amplitude solutions at 1e-10 and 1e-12 agree to ~1e-9). Accuracy: max |ΔS| of the
    sharpness on a 10-step grid."""
    import scipy.integrate as si

    from effdyn.models import FreeEnergyFlow

    setup, spec = case_setup(name, steps)
    models = {coords: FreeEnergyFlow(setup.problem, setup.eta, **{**spec.options, "storage": storage})
              for coords, storage in (("V", "factor"), ("log-amplitude", "log-factor"))}
    if any(m.rank != 1 for m in models.values()):
        raise ValueError("the tolerance study needs a rank-1 flow")
    grid = np.arange(0.0, setup.steps + 1, 10.0)
    P = setup.problem.dim

    def solve(coords, rtol):
        model = models[coords]
        f, z0 = model.drift, model.initial_state(setup.theta0, **spec.initial)
        n = [0]

        def g(k, z):
            n[0] += 1
            return f(k, z)

        t0 = now()
        with np.errstate(all="ignore"):
            s = si.solve_ivp(g, (0.0, setup.steps), z0, method="LSODA", t_eval=grid, rtol=rtol, atol=1e-3 * rtol)
        cpu = now() - t0
        S = np.full(len(grid), np.nan)
        if s.success:
            Y = s.y.T
            S[: len(Y)] = [model.eigenpairs(z[:P])[0][0] for z in Y]
        return S, n[0], cpu, bool(s.success)

    S_ref, n_ref, _, _ = solve("log-amplitude", ref_rtol)
    rows = []
    for rtol in rtols:
        for coords in models:
            S, n, cpu, ok = solve(coords, rtol)
            err = float(np.nanmax(np.abs(S - S_ref))) if ok and np.all(np.isfinite(S)) else float("inf")
            rows.append({"coordinates": coords, "rtol": rtol, "nfev": n, "max_sharpness_error": err,
                         "cpu_s": cpu, "success": ok})
            log(f"    LSODA rtol {rtol:g}, {coords:<13} nfev {n:>6}  max|ΔS| {err:.1e}")
    return {"case": name, "steps": setup.steps, "reference_rtol": ref_rtol, "reference_nfev": n_ref,
            "reference_coordinates": "log-amplitude",
            "sharpness_range": [float(np.min(S_ref)), float(np.max(S_ref))], "rows": rows}


def run(quick: bool = False, log=print) -> dict:
    cases = QUICK_CASES if quick else CASES
    solvers = QUICK_SOLVERS if quick else SOLVERS
    out = {"cases": [case_records(name, steps, solvers, log=log) for name, steps in cases],
           "notes": "gradient-equivalents: oracle calls weighted by measured cost relative to a gradient"}
    if not quick:
        out["long_cases"] = [case_records(name, steps, LONG_SOLVERS, log=log) for name, steps in LONG_CASES]
    log("  tolerance study (minimal valley, LSODA): drift evaluations against accuracy")
    out["tolerance_study"] = (tolerance_study(steps=300, rtols=(1e-5,), ref_rtol=1e-8, log=log) if quick
                              else tolerance_study(log=log))
    return out


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
