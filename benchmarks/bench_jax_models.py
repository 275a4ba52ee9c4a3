"""The models' compiled step-exact maps on JAX problems (issue 12, item 8).

Three problems, one thread per library, CPU time of this process (wall time where the
target is a wall time):

* ``digits``: the 64 → h → 10 tanh MLP of :mod:`bench_jax_engine` (MSE on one-hot labels,
  all 1797 digits, ``from_jax(params=..., data=...)``, η = 0.5) at P ≈ 2·10⁴ (``--large``:
  also 2·10⁵, at η = 0.1 because its sharpness at initialisation is 17; ``--only-large``:
  that one alone). GD runs to the EoS first; from there, per step and as a ratio to a plain
  jitted ``lax.scan`` GD step on the same loss in the same process: ``gd_jax`` with the
  sharpness every step, the free-energy map (``FreeEnergyFlow``, rank 1, defaults) and the
  central-flow map (``CentralFlow``, defaults), each compiled on a first run and timed on a
  second one (the model's start, a NumPy eigen-solve for the free energy's seed of Σ, is
  outside the timing); HVPs, gradients and third contractions per step from ``sol.stats``.
* ``peer``: the 433-parameter MLP of the public JAX central-flow code
  (/work/shared/data/peer-mlp, η = 0.1, 1000 steps; its central flow took 89 s wall): wall
  time of the whole ``ed.solve`` (compilation included) for the central-flow map, the
  free-energy map and the free-energy flow with RK45.
* ``cifar``: the seed paper's CIFAR MLP shape on random data (n = 500, 3072 inputs, tanh,
  10 outputs, width 32: P = 98 666, η = 0.02): GD with the sharpness, the free-energy map
  and the central-flow map over ``--cifar-steps`` steps (default 100) from the start,
  extrapolated to 2000 steps. Random data never nears 2/η, so this measures no EoS step.
* ``cifar-eos``: the same network on CIFAR-shaped digits (:func:`cifar_shaped_digits`: 500
  digits images upsampled to 32 × 32 × 3), which at η = 0.02 catapults to 2/η = 100 and
  stays there: the three runs at the EoS after 200 GD steps, extrapolated to 2000 steps.

Run: ``.venv/bin/python benchmarks/bench_jax_models.py [--only digits,peer,cifar,cifar-eos] [--large [--only-large]]
[--steps N] [--out FILE]``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_jax_engine import ETA, WIDTHS, digits_mlp, plain_scan  # noqa: E402

cpu, wall = time.process_time, time.perf_counter


def _unit(p, theta, steps):
    plain = plain_scan(p, steps)
    plain(theta)
    t0 = cpu()
    plain(theta)
    return (cpu() - t0) / steps


def _gd(p, theta, eta, steps, chunk=32):
    from effdyn.engine_jax import gd_jax

    gd_jax(p, theta, eta, min(chunk, steps), chunk=chunk)          # compile
    t0, w0 = cpu(), wall()
    tr = gd_jax(p, theta, eta, steps, chunk=chunk)
    dt, dw = cpu() - t0, wall() - w0
    nh = np.asarray(tr.eig_info["n_hvp"])[1:]
    return {"cpu_per_step": dt / (steps + 1), "wall": dw, "hvp_per_step": float(nh.mean()),
            "sharpness": [float(tr.sharpness.min()), float(tr.sharpness.max())]}


def _model(model, theta, steps):
    """Compile on a first run of two steps, time a second one from the same start (start
    excluded)."""
    import effdyn as ed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y0, run0 = model.start(theta)
        base = run0.counters.to_dict()
        t0 = wall()
        # two steps compile the same chunk function (same chunk length and save stride)
        ed.solve(model, state0=y0, run=model.start(theta)[1], steps=min(steps, 2), solver="map", save_every=steps,
                 progress=False)
        first = wall() - t0
        c0, w0 = cpu(), wall()
        sol = ed.solve(model, state0=y0, run=run0, steps=steps, solver="map", save_every=steps, progress=False)
        dt, dw = cpu() - c0, wall() - w0
    assert sol.run.jax_state is not None, "the compiled map did not run"
    s = sol.stats
    out = {"cpu_per_step": dt / steps, "wall": dw, "first_run_wall": first, "steps": steps,
           "hvp_per_step": (s.hvps - base["hvps"]) / steps, "grads_per_step": (s.gradients - base["gradients"]) / steps,
           "thirds_per_step": (s.thirds - base["thirds"]) / steps,
           "eigensolves_per_step": (s.eigensolves - base["eigensolves"]) / steps}
    if "n_critical" in sol.records:
        out["n_critical"] = [int(v) for v in sol.records["n_critical"]]
    return out


#: η of the P ≈ 2·10⁵ digits MLP: its sharpness at initialisation is 17.3, so η = 0.5 (2/η = 4)
#: diverges within five steps; 2/η = 20 lies just above it.
ETA_LARGE = 0.1


def _at_the_eos(p, theta0, eta, pre_steps, steps, log):
    """GD runs ``pre_steps`` to the EoS; from there GD with the sharpness every step, the
    free-energy map and the central-flow map, each per step and as a ratio to a plain step."""
    import effdyn as ed
    from effdyn.engine_jax import gd_jax

    theta = gd_jax(p, theta0, eta, pre_steps, eig_every=None, theta_every=pre_steps).theta[-1]
    unit = _unit(p, theta, max(steps, 50))
    rec = {"P": p.dim, "eta": eta, "plain_step_s": unit, "steps": steps, "pre_steps": pre_steps}
    rec["gd"] = _gd(p, theta, eta, steps)
    log(f"  plain {unit * 1e3:.2f} ms; GD + sharpness {rec['gd']['cpu_per_step'] / unit:.1f}× "
        f"({rec['gd']['hvp_per_step']:.1f} HVPs/step; sharpness {rec['gd']['sharpness']}, 2/η = {2 / eta:g})")
    for name, model in (("free_energy_map", ed.models.FreeEnergyFlow(p, eta)),
                        ("central_flow_map", ed.models.CentralFlow(p, eta))):
        rec[name] = _model(model, theta, steps)
        r = rec[name]
        log(f"  {name}: {r['cpu_per_step'] / unit:.1f}× ({r['hvp_per_step']:.1f} HVPs, {r['grads_per_step']:.1f} grads, "
            f"{r['thirds_per_step']:.1f} thirds per step; {r['wall'] / steps:.2f} s wall per step; compile run "
            f"{r['first_run_wall']:.1f} s; critical {r.get('n_critical')})")
    return rec


def digits(width, steps, log, eta=ETA):
    p = digits_mlp(width)
    log(f"digits MLP: P = {p.dim}, η = {eta}")
    return _at_the_eos(p, p.init(), eta, 600, steps, log)


def peer(log):
    import effdyn as ed
    from peer_mlp import ETA as PETA, STEPS, peer_problem

    p, theta0 = peer_problem()
    rec = {"P": p.dim, "steps": STEPS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make, solver in (("central_flow_map", lambda: ed.models.CentralFlow(p, PETA), "map"),
                                   ("free_energy_map", lambda: ed.models.FreeEnergyFlow(p, PETA), "map"),
                                   ("free_energy_rk45", lambda: ed.models.FreeEnergyFlow(p, PETA), "scipy:RK45")):
            c0, w0 = cpu(), wall()
            sol = ed.solve(make(), theta0, STEPS, solver=solver, save_every=10, progress=False, throw=False,
                           time_limit=600)
            rec[name] = {"wall": wall() - w0, "cpu": cpu() - c0, "status": str(sol.stats.status.value),
                         "nfev": sol.stats.nfev, "hvps": sol.stats.hvps, "final_loss": float(sol.loss[-1]),
                         "max_sharpness": float(np.nanmax(sol.sharpness))}
            if solver == "map":
                # a second run in the same process: compiled code cached on the problem
                c0, w0 = cpu(), wall()
                ed.solve(make(), theta0, STEPS, solver=solver, save_every=10, progress=False, throw=False)
                rec[name]["wall_compiled"], rec[name]["cpu_compiled"] = wall() - w0, cpu() - c0
            log(f"  peer {name}: {rec[name]['wall']:.1f} s wall ({rec[name]['cpu']:.1f} s CPU), "
                f"{sol.stats.status.value}, nfev {sol.stats.nfev}, hvps {sol.stats.hvps}; second run "
                f"{rec[name].get('wall_compiled', np.nan):.1f} s wall ({rec[name].get('cpu_compiled', np.nan):.1f} s CPU)")
    return rec


def cifar(steps, log, width=32, n=500):
    import effdyn as ed
    from effdyn.problems.builders import mlp_problem

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3072))
    Y = np.eye(10)[rng.integers(0, 10, n)]
    p, theta0 = mlp_problem(X, Y, width, seed=0, name="cifar_shaped")
    eta = 0.02
    log(f"CIFAR-shaped MLP: P = {p.dim}, n = {n}, η = {eta}")
    unit = _unit(p, theta0, 50)
    rec = {"P": p.dim, "eta": eta, "steps": steps, "plain_step_s": unit}
    t0 = wall()
    rec["gd"] = _gd(p, theta0, eta, steps)
    rec["gd"]["total_wall"] = wall() - t0
    log(f"  plain {unit * 1e3:.2f} ms; GD + sharpness {rec['gd']['cpu_per_step'] / unit:.1f}×, "
        f"{rec['gd']['wall']:.1f} s wall for {steps} steps")
    for name, model in (("free_energy_map", ed.models.FreeEnergyFlow(p, eta)),
                        ("central_flow_map", ed.models.CentralFlow(p, eta))):
        t0 = wall()
        rec[name] = _model(model, theta0, steps)
        rec[name]["total_wall"] = wall() - t0
        r = rec[name]
        log(f"  {name}: {r['cpu_per_step'] / unit:.1f}×, {r['wall']:.1f} s wall for {steps} steps "
            f"(compile run {r['first_run_wall']:.1f} s), {r['hvp_per_step']:.1f} HVPs/step")
    per_step = sum(rec[k]["wall"] / steps for k in ("gd", "free_energy_map", "central_flow_map"))
    rec["extrapolated_2000_steps_wall_min"] = per_step * 2000 / 60
    log(f"  extrapolated to 2000 steps (all three): {rec['extrapolated_2000_steps_wall_min']:.1f} min")
    return rec


def cifar_shaped_digits(n=500, width=32):
    """A CIFAR-shaped problem that reaches the EoS: n digits images upsampled to 32 × 32 ×
    3 (each pixel a 4 × 4 block, the grey value in all three channels), standardised,
    one-hot labels, the MLP 3072 → width → 10 of the CIFAR cases (P = 98 656 for width 32).
    Random data of this shape memorises at once and never nears 2/η; these images start at
    sharpness ≈ 300 and, at η = 0.02 (the seed paper's), catapult to and hover at 2/η = 100."""
    from effdyn.data import load_digits_subset, one_hot
    from effdyn.problems.builders import mlp_problem

    X8, labels = load_digits_subset(n, seed=0)
    up = np.kron(X8.reshape(-1, 8, 8), np.ones((4, 4)))
    X = np.repeat(up[..., None], 3, axis=3).reshape(n, -1)
    X = (X - X.mean()) / X.std()
    return mlp_problem(X, one_hot(labels), width, seed=0, name="cifar_shaped_digits")


def cifar_eos(steps, log, pre_steps=200, eta=0.02):
    """GD + sharpness, the free-energy map and the central-flow map at the EoS of the
    CIFAR-shaped digits MLP (``pre_steps`` GD steps first), per step as ratios to a plain
    step, and the three extrapolated to 2000 steps (the seed paper's horizon)."""
    p, theta0 = cifar_shaped_digits()
    log(f"CIFAR-shaped digits MLP: P = {p.dim}, n = 500, η = {eta}")
    rec = _at_the_eos(p, theta0, eta, pre_steps, steps, log)
    per_step_cpu = rec["gd"]["cpu_per_step"] + sum(rec[k]["cpu_per_step"] for k in ("free_energy_map", "central_flow_map"))
    per_step_wall = sum(rec[k]["wall"] / steps for k in ("gd", "free_energy_map", "central_flow_map"))
    rec["extrapolated_2000_steps_cpu_min"] = per_step_cpu * 2000 / 60
    rec["extrapolated_2000_steps_wall_min"] = per_step_wall * 2000 / 60
    log(f"  extrapolated to 2000 steps (all three): {rec['extrapolated_2000_steps_cpu_min']:.1f} min CPU, "
        f"{rec['extrapolated_2000_steps_wall_min']:.1f} min wall")
    return rec


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[args.index("--only") + 1].split(",") if "--only" in args else ["digits", "peer", "cifar"]
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 30
    csteps = int(args[args.index("--cifar-steps") + 1]) if "--cifar-steps" in args else 100
    out = args[args.index("--out") + 1] if "--out" in args else None
    res = {}

    def log(msg):
        print(msg, flush=True)

    if "digits" in only:
        res["digits"] = [] if "--only-large" in args else [digits(WIDTHS["2e4"], steps, log)]
        if "--large" in args:
            res["digits"].append(digits(WIDTHS["2e5"], max(5, steps // 3), log, eta=ETA_LARGE))
    if "peer" in only:
        res["peer"] = peer(log)
    if "cifar" in only:
        res["cifar"] = cifar(csteps, log)
    if "cifar-eos" in only:
        res["cifar_eos"] = cifar_eos(csteps, log)
    if out:
        with open(out, "w") as fh:
            json.dump(res, fh, indent=1)
