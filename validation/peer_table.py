"""Every effective model against discrete GD on two benchmark problems, as one markdown table.

Run ``python validation/peer_table.py`` (a few minutes on two cores). The core is
:func:`peer_table`, which the validation suite can call directly.

Cases (theory §5):

* ``minimal_valley`` — E = ½(y + ζx)x² − ε(x + y), ζ = 1, ε = 0.01, η = 0.3, from
  (x, y) = (0.1, 3), 6000 GD steps;
* ``matrix_factorization`` — deep matrix factorisation d = 2, depth 3, M = diag(5.5, 1),
  η = 0.077, 1500 steps from ``init="balanced", init_scale=0.1`` with seed 0. The balanced
  minimum has sharpness 3·5.5^{4/3} ≈ 29.1 > 2/η ≈ 26.0, and GD from this start escapes
  the saddle at the origin around step 40 and ends (from step ≈ 550 on) on a persistent
  period-two orbit whose loss alternates between 1.33 and 0.65.

Errors are those of :func:`effdyn.compare` over its default window (from GD's EoS onset
to the end): time-averaged loss (relative to GD's loss range), sharpness (relative to
2/η), amplitude (relative to GD's mean amplitude) and the RMS distance between the model
trajectory and GD's two-step midpoints (relative to the RMS size of the midpoints).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import effdyn as ed

CASES = ("minimal_valley", "matrix_factorization")


def _case(name: str):
    if name == "minimal_valley":
        problem = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
        return problem, np.array([0.1, 3.0]), 0.3, 6000
    if name == "matrix_factorization":
        problem = ed.problems.DeepMatrixFactorization(2, 3, np.diag([5.5, 1.0]), init="balanced", init_scale=0.1)
        return problem, problem.init(0), 0.077, 1500
    raise ValueError(f"`cases` entries must be among {list(CASES)}; got {name!r}.")


def _models(problem, theta0, eta):
    """(label, model, solver, initial options) for every peer model applicable to the problem."""
    from effdyn.models import CentralFlow, EdgeFlow, GradientFlow, RodFlow, SelfStabilization

    out = [
        ("GradientFlow", GradientFlow(problem, eta), "scipy:LSODA", {}),
        ("CentralFlow", CentralFlow(problem, eta), "scipy:LSODA", {}),
        ("CentralFlow (map)", CentralFlow(problem, eta), "map", {}),
        ("SelfStabilization constrained (map)", SelfStabilization(problem, eta, mode="constrained"), "map", {}),
        ("SelfStabilization generalized (map)", SelfStabilization(problem, eta, mode="generalized"), "map", {}),
        ("RodFlow rank1", RodFlow(problem, eta), "scipy:LSODA", {}),
        ("EdgeFlow", EdgeFlow(problem, eta), "scipy:LSODA", {}),
        ("EdgeFlow (no floor)", EdgeFlow(problem, eta, rho_floor=None), "scipy:LSODA", {}),
    ]
    try:
        from effdyn.models import FreeEnergyFlow
    except (ImportError, AttributeError):  # pragma: no cover - the lead's model may be absent
        FreeEnergyFlow = None
    if FreeEnergyFlow is not None:
        out.insert(1, ("FreeEnergyFlow", FreeEnergyFlow(problem, eta), "scipy:LSODA", {}))
    return out


def peer_table(cases=CASES, quick: bool = True, rtol: float = 1e-8, atol: float = 1e-10) -> list[dict]:
    """Run every peer model on each case and compare with GD.

    Parameters
    ----------
    cases : sequence of str
        Among :data:`CASES`.
    quick : bool
        Save model states every 5 GD steps (True) or every step (False); the comparison
        interpolates, so this mainly changes the cost of the observables.
    rtol, atol : float
        Tolerances of the adaptive solvers.

    Returns
    -------
    list of dict
        One row per (case, model): ``case``, ``model``, ``solver``, ``status``,
        ``loss_error``, ``sharpness_error``, ``amplitude_error``, ``distance``, ``nfev``,
        ``wall_time`` (seconds, integration plus observables) and ``gd_wall_time``.
    """
    rows = []
    save_every = 5 if quick else 1
    for case in cases:
        problem, theta0, eta, steps = _case(case)
        t0 = time.perf_counter()
        traj = ed.gd(problem, theta0, eta, steps)
        gd_time = time.perf_counter() - t0
        for label, model, solver, options in _models(problem, theta0, eta):
            row = {"case": case, "model": label, "solver": solver, "gd_wall_time": gd_time}
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    sol = ed.solve(model, theta0, steps, solver=solver, rtol=rtol, atol=atol,
                                   save_every=save_every, throw=False, **options)
                    if len(sol.k) > 1:
                        sol.observables  # noqa: B018 - computed here so that the timing includes them
            except Exception as exc:  # a failing model is a table entry, not a crash
                row.update(status=f"error: {type(exc).__name__}: {str(exc)[:120]}", nfev=0,
                           wall_time=time.perf_counter() - t0)
                rows.append(row)
                continue
            row.update(status=sol.status, nfev=sol.stats.nfev, wall_time=time.perf_counter() - t0)
            if not sol.success:
                row["status"] = f"{sol.status} at k = {sol.k[-1]:g} ({sol.stats.message.split(': ')[-1][:60]})"
            try:
                m = ed.compare(traj, sol)
                row.update(loss_error=m.loss_error, sharpness_error=m.sharpness_error,
                           amplitude_error=m.amplitude_error, distance=m.distance, window=(m.k0, m.k1))
            except ValueError as exc:
                row["status"] += f" (no comparison: {exc})"
            rows.append(row)
    return rows


def format_table(rows) -> str:
    """The rows as one markdown table."""
    head = ("| case | model | solver | loss err | sharpness err | amplitude err | distance | nfev | wall [s] | "
            "window | status |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    lines = [head]

    def fmt(value):
        return "—" if value is None or not np.isfinite(value) else f"{value:.3g}"

    for r in rows:
        if r["status"] != "success":  # errors of a run that stopped early say nothing
            r = {**r, "loss_error": None, "sharpness_error": None, "amplitude_error": None, "distance": None}
        lines.append(
            f"| {r['case']} | {r['model']} | {r['solver']} | {fmt(r.get('loss_error'))} | "
            f"{fmt(r.get('sharpness_error'))} | {fmt(r.get('amplitude_error'))} | {fmt(r.get('distance'))} | "
            f"{r.get('nfev', 0)} | {r['wall_time']:.2f} | {'–'.join(map(str, r.get('window', ())))} | "
            f"{r['status'].replace('|', '/')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--full", action="store_true", help="save every GD step (slower observables)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = peer_table(args.cases, quick=not args.full)
    print(format_table(rows))
    print()
    print("GD wall time: " + ", ".join(f"{c}: {next(r['gd_wall_time'] for r in rows if r['case'] == c):.2f} s"
                                        for c in dict.fromkeys(r["case"] for r in rows)))
    print(f"Total: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
