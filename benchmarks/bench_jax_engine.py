"""The JAX engine on a real network: GD steps, sharpness tracking, third contraction.

Problem: a 64 → h → 10 tanh MLP with squared loss on one-hot labels, all 1797 scikit-learn
digits (standardised), through ``from_jax(params=...)``; init W ~ 0.25·N(0, 1/fan_in),
biases 0; η = 0.5, so GD sharpens to 2/η = 4 within a few hundred steps. Widths give
P ≈ 2·10³, 2·10⁴ (and 2·10⁵ with ``--large``).

Measured, as CPU time of this process with one thread per library, ratios within one run:

* ``plain``: one GD step in a jitted ``lax.scan`` (one value_and_grad): the unit;
* ``gd_jax`` without eigen-solves, and with the sharpness every step (default tracker:
  top-1, block 6, eigenvalue criterion, tolerance 1e-4·2/η), from a point at the EoS;
  HVPs per tracked step (mean, median, max) and cold solves; the sharpness against a
  tight solve (ARPACK, tol 1e-10) at sampled steps;
* the tracker alternatives on the same θ sequence: the residual criterion, history 1,
  and ``jax.experimental.sparse.linalg.lobpcg_standard`` warm-started from the previous
  block (it applies H to its whole 3-block basis and again to X: 4·block HVPs per
  iteration, counted from its iteration count);
* ``effdyn.gd`` (NumPy path, ARPACK/Davidson tracker) with the sharpness every step, for
  a few steps;
* HVP cost per column of a block: vmap against a lax.map loop, in gradients;
* the third contraction ∇_θ Σ_r s_r u_rᵀ H u_r: forward-over-forward quadratic forms then
  reverse (the library's route) against reverse of the forward-over-reverse HVP (the
  former route), r = 1 and 4, with their largest relative difference.

Run: ``.venv/bin/python benchmarks/bench_jax_engine.py [--quick] [--large] [--out FILE]``;
with ``--models`` it runs :mod:`bench_jax_models` instead (the models' compiled maps as
ratios to the same plain step, the peer MLP, the CIFAR-shaped MLP).
"""

from __future__ import annotations

import os
import sys

# One thread per library, set before numpy/jax are imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import interleaved, machine, set_clock  # noqa: E402

ETA = 0.5
SCALE = 0.25
WIDTHS = {"2e3": 27, "2e4": 266, "2e5": 2666}


def now():
    return time.process_time()


def digits_mlp(width: int, n: int | None = None):
    from effdyn._jax import import_jax
    from effdyn.data import load_digits_subset, one_hot
    from effdyn.problems import from_jax

    _, jnp = import_jax()
    X, labels = load_digits_subset(1797 if n is None else n, seed=0)
    Y = one_hot(labels)
    rng = np.random.default_rng(0)
    params = {"W1": SCALE * rng.standard_normal((64, width)) / np.sqrt(64), "b1": np.zeros(width),
              "W2": SCALE * rng.standard_normal((width, 10)) / np.sqrt(width), "b2": np.zeros(10)}

    def mse(p, batch):
        x, y = batch
        out = jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))

    return from_jax(mse, params=params, data=(X, Y), loss_min=0.0, name="digits_mlp")


def plain_scan(problem, steps):
    """GD θ ← θ − η∇E in one jitted lax.scan: the unit of cost."""
    jax, jnp = problem._jax, problem._jnp
    vg = problem.pure_value_and_grad

    @jax.jit
    def run(theta, data):
        def body(th, _):
            E, g = vg(th, data)
            return th - ETA * g, E
        return jax.lax.scan(body, theta, None, length=steps)

    return lambda theta: jax.block_until_ready(run(jnp.asarray(theta), problem.data_args))


def per_column_hvp(problem, theta, b=9):
    from effdyn.engine_jax.tracker import _block_apply

    jax, jnp = problem._jax, problem._jnp
    data = problem.data_args
    th = jnp.asarray(theta)
    V = jnp.asarray(np.random.default_rng(1).standard_normal((problem.dim, b)))
    grad = jax.jit(problem.pure_grad)
    fns = {"grad": lambda: jax.block_until_ready(grad(th, data))}
    for how in ("vmap", "map"):
        f = jax.jit(lambda V, th, how=how: _block_apply(jax, jnp, lambda v: problem.pure_hvp(th, v, data),
                                                          problem.dim, how)(V)[0])
        fns[how] = (lambda f=f: jax.block_until_ready(f(V, th)))
    t = interleaved(fns, repeats=5, min_time=0.01)
    return {how: t[how]["best"] / b / t["grad"]["best"] for how in ("vmap", "map")} | {"grad_s": t["grad"]["best"]}


def third_routes(problem, theta, r):
    jax, jnp = problem._jax, problem._jnp
    data = problem.data_args
    rng = np.random.default_rng(2)
    th = jnp.asarray(theta)
    U = jnp.asarray(rng.standard_normal((problem.dim, r)))
    s = jnp.asarray(rng.standard_normal(r))
    fwd = jax.jit(problem.pure_third)
    rev = jax.jit(problem.pure_third_via_hvp)
    grad = jax.jit(problem.pure_grad)
    a, b = np.asarray(fwd(th, U, s, data)), np.asarray(rev(th, U, s, data))
    t = interleaved({"fwd_fwd_rev": lambda: jax.block_until_ready(fwd(th, U, s, data)),
                     "rev_of_hvp": lambda: jax.block_until_ready(rev(th, U, s, data)),
                     "grad": lambda: jax.block_until_ready(grad(th, data))}, repeats=5, min_time=0.01)
    return {"r": r, "fwd_fwd_rev_grads": t["fwd_fwd_rev"]["best"] / t["grad"]["best"],
            "rev_of_hvp_grads": t["rev_of_hvp"]["best"] / t["grad"]["best"],
            "speedup": t["rev_of_hvp"]["best"] / t["fwd_fwd_rev"]["best"],
            "max_rel_diff": float(np.max(np.abs(a - b)) / np.max(np.abs(b)))}


def tracker_variants(problem, thetas, variants, lobpcg_block=None):
    """HVPs per update and CPU seconds per update of tracker configurations on a fixed
    sequence of θ (first update, cold, excluded from the statistics)."""
    from effdyn.engine_jax import EigenTrackerJax

    jax, jnp = problem._jax, problem._jnp
    data = problem.data_args
    ths = jnp.asarray(np.asarray(thetas))
    out = {}
    for name, cfg in variants.items():
        tr = EigenTrackerJax(**cfg)

        @jax.jit
        def track(st, ths, tr=tr):
            def body(st, th):
                st, res = tr.update(st, lambda v: problem.pure_hvp(th, v, data), scale=2 / ETA)
                return st, (res.vals[0], res.n_hvp, res.cold)
            return jax.lax.scan(body, st, ths)

        jax.block_until_ready(track(tr.init(problem.dim), ths))  # compile (same shapes as timed)
        t0 = now()
        st, (lam, nh, cold) = jax.block_until_ready(track(tr.init(problem.dim), ths))
        dt = now() - t0
        nh = np.asarray(nh)[1:]
        out[name] = {"hvp_mean": float(nh.mean()), "hvp_median": float(np.median(nh)), "hvp_max": int(nh.max()),
                     "cold": int(np.sum(np.asarray(cold)[1:])), "seconds_per_update": dt / len(ths),
                     "sharpness": np.asarray(lam)}
    if lobpcg_block:
        from jax.experimental.sparse.linalg import lobpcg_standard

        b = lobpcg_block

        @jax.jit
        def lob(X0, ths):
            def body(X, th):
                A = jax.vmap(lambda v: problem.pure_hvp(th, v, data), in_axes=1, out_axes=1) \
                    if problem.dim <= 4096 else (lambda V: jax.lax.map(lambda v: problem.pure_hvp(th, v, data), V.T).T)
                # tol is relative to LOBPCG's own floating-point estimate (10·n·(|λ| + ‖Av‖)).
                lam, U, it = lobpcg_standard(A, X, m=20, tol=1e-4 * (2 / ETA) / (10 * problem.dim * 2 * (2 / ETA)))
                return U, (lam[0], it)
            return jax.lax.scan(body, X0, ths)

        X0 = jnp.asarray(np.linalg.qr(np.random.default_rng(0).standard_normal((problem.dim, b)))[0])
        jax.block_until_ready(lob(X0, ths))
        t0 = now()
        _, (lam, it) = jax.block_until_ready(lob(X0, ths))
        dt = now() - t0
        hv = b + 4 * b * np.asarray(it)[1:]
        out["lobpcg_standard (warm)"] = {"hvp_mean": float(hv.mean()), "hvp_median": float(np.median(hv)),
                                         "hvp_max": int(hv.max()), "cold": 0, "seconds_per_update": dt / len(ths),
                                         "sharpness": np.asarray(lam)}
    return out


def run_width(label, width, quick, log, warm_steps, track_steps, old_steps):
    import effdyn as ed
    from effdyn.engine_jax import gd_jax
    from effdyn.spectrum import top_eigenpairs

    p = digits_mlp(width, n=200 if quick else None)
    P = p.dim
    log(f"  P = {P} (width {width}, n = {p.n_samples})")
    rec = {"label": label, "P": P, "width": width, "n": p.n_samples}

    # --- to the EoS: plain GD, θ kept every step over the tracking window
    pre = gd_jax(p, p.init(), ETA, warm_steps, eig_every=None, theta_every=warm_steps)
    theta_eos = pre.theta[-1]
    window = gd_jax(p, theta_eos, ETA, track_steps, eig_every=None, theta_every=1)
    thetas = window.theta[:track_steps]

    # --- the unit, and gd_jax without eigen-solves (same number of steps, compiled first)
    n_plain = track_steps
    plain = plain_scan(p, n_plain)
    plain(theta_eos)
    t0 = now()
    plain(theta_eos)
    unit = (now() - t0) / n_plain
    chunk = min(64, track_steps + 1)
    # the chunk function is cached per problem and chunk size: compile it on a first run
    # as long as one chunk, then time a second one
    gd_jax(p, theta_eos, ETA, chunk, eig_every=None, theta_every=1, chunk=chunk)
    t0 = now()
    gd_jax(p, theta_eos, ETA, n_plain, eig_every=None, theta_every=1, chunk=chunk)
    no_eig = (now() - t0) / (n_plain + 1)
    # --- with the sharpness every step (compiled first on two steps: same chunk function)
    gd_jax(p, theta_eos, ETA, chunk, chunk=chunk, theta_every=1)
    t0 = now()
    tr = gd_jax(p, theta_eos, ETA, track_steps, chunk=chunk, theta_every=1)
    tracked = (now() - t0) / (track_steps + 1)
    nh = tr.eig_info["n_hvp"][1:]
    sample = np.unique(np.linspace(1, track_steps, 6 if not quick else 3).astype(int))
    ref = np.array([top_eigenpairs(p, tr.theta[k], 1, dense_max=0, tol=1e-10)[0][0] for k in sample])
    err = np.abs(tr.sharpness[sample] - ref)
    rec["gd"] = {"plain_step_s": unit, "gd_jax_no_eigs_over_plain": no_eig / unit,
                 "gd_jax_sharpness_every_step_over_plain": tracked / unit,
                 "hvp_per_step_mean": float(nh.mean()), "hvp_per_step_median": float(np.median(nh)),
                 "hvp_per_step_max": int(nh.max()), "cold_solves": int(tr.eig_info["cold"][1:].sum()),
                 "steps": track_steps, "block": tr.eig_info["block"],
                 "max_sharpness_err_over_2_eta": float(err.max() / (2 / ETA)),
                 "sharpness_range": [float(tr.sharpness.min()), float(tr.sharpness.max())]}
    log(f"    plain step {unit * 1e3:.2f} ms; gd_jax no eigs {no_eig / unit:.2f}×, sharpness every step "
        f"{tracked / unit:.1f}× ({nh.mean():.1f} HVPs/step, median {np.median(nh):.0f}, max {nh.max()}, "
        f"{rec['gd']['cold_solves']} cold); max |Δλ1|/(2/η) = {err.max() / (2 / ETA):.1e}")

    # --- the old NumPy path, a few steps
    if old_steps:
        t0 = now()
        old = ed.gd(p, theta_eos, ETA, old_steps, n_eigs=1, progress=False)
        old_t = (now() - t0) / (old_steps + 1)
        rec["old_gd"] = {"steps": old_steps, "over_plain": old_t / unit, "hvp_per_step": old.n_hvp / (old_steps + 1)}
        log(f"    effdyn.gd (NumPy/ARPACK, sharpness every step): {old_t / unit:.0f}× "
            f"({old.n_hvp / (old_steps + 1):.0f} HVPs/step)")

    # --- tracker alternatives on the same θ sequence
    base = {"k": 1, "block": 6, "guard": 2, "criterion": "eigenvalue"}
    variants = {"chosen: block 6, eigenvalue crit., history 2": base,
                "residual criterion": base | {"criterion": "residual"},
                "history 1": base | {"history": 1}}
    if not quick:
        variants["block 4"] = base | {"block": 4}
        variants["block 9"] = base | {"block": 9}
    alt = tracker_variants(p, thetas[: min(len(thetas), 40 if not quick else 6)], variants,
                           lobpcg_block=6 if P > 5 * 6 else None)
    rec["tracker"] = {}
    for name, r in alt.items():
        lam = r.pop("sharpness")
        r["hvp_grads_per_step"] = None
        rec["tracker"][name] = r
        log(f"    tracker {name}: {r['hvp_mean']:.1f} HVPs/update (median {r['hvp_median']:.0f}, max {r['hvp_max']}), "
            f"{r['cold']} cold, {r['seconds_per_update'] / unit:.1f} plain steps/update")

    rec["hvp_per_column_in_grads"] = per_column_hvp(p, theta_eos)
    rec["third"] = [third_routes(p, theta_eos, r) for r in (1, 4)]
    h = rec["hvp_per_column_in_grads"]
    log(f"    HVP per column (in gradients): vmap {h['vmap']:.2f}, lax.map {h['map']:.2f}")
    for t in rec["third"]:
        log(f"    third r={t['r']}: fwd-fwd-rev {t['fwd_fwd_rev_grads']:.2f} grads, rev-of-HVP {t['rev_of_hvp_grads']:.2f} "
            f"grads (speed-up {t['speedup']:.2f}×), max rel diff {t['max_rel_diff']:.1e}")
    return rec


def dmf_toy(quick, log):
    """Deep matrix factorisation (depth 3, d = 12, P = 432, target singular values 5.5, 1, ..., 1) from from_jax along GD at the
    EoS: tracker HVPs per step and sharpness error against a tight solve."""
    from effdyn.engine_jax import gd_jax
    from effdyn.problems import DeepMatrixFactorization as DMF, from_jax
    from effdyn.spectrum import top_eigenpairs

    d = 6 if quick else 12
    # σ1 = 5.5 as in the validation case "dmf-period2": balanced-minimum sharpness
    # 3σ1^(4/3) ≈ 29 above 2/η ≈ 26, so GD ends at the EoS
    q = DMF(d=d, depth=3, target=DMF.spectral_target(5.5, d=d), init="balanced", init_scale=0.3)
    p = from_jax(q.jax_loss(), q.dim, loss_min=0.0, name="dmf")
    eta = 0.077
    steps = 100 if quick else 600
    traj = gd_jax(p, q.init(0), eta, steps, n_eigs=2)
    nh = traj.eig_info["n_hvp"][1:]
    ks = np.arange(steps // 2, steps + 1, steps // 10)
    ref = np.array([top_eigenpairs(p, traj.theta[k], 2, dense_max=0, tol=1e-10)[0] for k in ks])
    err = np.max(np.abs(traj.eigs[ks] - ref)) / (2 / eta)
    rec = {"P": p.dim, "eta": eta, "steps": steps, "eos_onset": traj.eos_onset(), "hvp_mean": float(nh.mean()),
           "hvp_median": float(np.median(nh)), "cold": int(traj.eig_info["cold"][1:].sum()),
           "max_eig_err_over_2_eta": float(err)}
    log(f"  DMF toy P = {p.dim}: EoS onset {rec['eos_onset']}, {nh.mean():.1f} HVPs/step "
        f"(median {np.median(nh):.0f}), {rec['cold']} cold, max |Δλ|/(2/η) = {err:.1e}")
    return rec


def run(quick: bool = False, large: bool = False, log=print) -> dict:
    set_clock("cpu")
    res = {"machine": machine(), "eta": ETA, "init_scale": SCALE, "dmf": dmf_toy(quick, log), "mlp": []}
    sizes = [("2e3", 8 if quick else WIDTHS["2e3"])] if quick else [("2e3", WIDTHS["2e3"]), ("2e4", WIDTHS["2e4"])]
    if large:
        sizes.append(("2e5", WIDTHS["2e5"]))
    for label, width in sizes:
        big = label == "2e5"
        res["mlp"].append(run_width(label, width, quick, log, warm_steps=60 if quick else (400 if big else 600),
                                    track_steps=8 if quick else (24 if big else 100),
                                    old_steps=0 if quick else (1 if big else 3)))
    return res


def markdown(res: dict) -> str:
    rows = ["| P | plain step | gd_jax, no eigs | gd_jax, sharpness every step | HVPs/step (mean / median / max) "
            "| cold solves | max \\|Δλ1\\|/(2/η) | effdyn.gd, sharpness every step |",
            "|---|---|---|---|---|---|---|---|"]
    for r in res["mlp"]:
        g, o = r["gd"], r.get("old_gd")
        rows.append(f"| {r['P']} | {g['plain_step_s'] * 1e3:.2f} ms | {g['gd_jax_no_eigs_over_plain']:.2f}× | "
                    f"{g['gd_jax_sharpness_every_step_over_plain']:.1f}× | {g['hvp_per_step_mean']:.1f} / "
                    f"{g['hvp_per_step_median']:.0f} / {g['hvp_per_step_max']} | {g['cold_solves']} / {g['steps']} | "
                    f"{g['max_sharpness_err_over_2_eta']:.1e} | "
                    + (f"{o['over_plain']:.0f}× ({o['hvp_per_step']:.0f} HVPs/step) |" if o else "– |"))
    rows += ["", "| P | tracker | HVPs/update (mean / median / max) | cold | plain steps per update |",
             "|---|---|---|---|---|"]
    for r in res["mlp"]:
        unit = r["gd"]["plain_step_s"]
        for name, t in r["tracker"].items():
            rows.append(f"| {r['P']} | {name} | {t['hvp_mean']:.1f} / {t['hvp_median']:.0f} / {t['hvp_max']} | "
                        f"{t['cold']} | {t['seconds_per_update'] / unit:.1f} |")
    rows += ["", "| P | HVP per column, vmap | HVP per column, lax.map | third r=1: fwd-fwd-rev / rev-of-HVP "
             "| third r=4 | max rel. diff |", "|---|---|---|---|---|---|"]
    for r in res["mlp"]:
        h, t1, t4 = r["hvp_per_column_in_grads"], r["third"][0], r["third"][1]
        rows.append(f"| {r['P']} | {h['vmap']:.2f} grads | {h['map']:.2f} grads | {t1['fwd_fwd_rev_grads']:.2f} / "
                    f"{t1['rev_of_hvp_grads']:.2f} grads | {t4['fwd_fwd_rev_grads']:.2f} / {t4['rev_of_hvp_grads']:.2f} "
                    f"grads | {max(t1['max_rel_diff'], t4['max_rel_diff']):.1e} |")
    d = res["dmf"]
    rows += ["", f"Deep matrix factorisation (from_jax, P = {d['P']}, η = {d['eta']:.3f}, {d['steps']} steps, EoS onset "
             f"{d['eos_onset']}): {d['hvp_mean']:.1f} HVPs/step (median {d['hvp_median']:.0f}), {d['cold']} cold solves, "
             f"max |Δλ|/(2/η) = {d['max_eig_err_over_2_eta']:.1e} (top 2 against ARPACK at tol 1e-10)."]
    return "\n".join(rows)


if __name__ == "__main__":
    if "--models" in sys.argv:
        # the models' compiled maps, the peer MLP and the CIFAR-shaped MLP (bench_jax_models.py)
        import runpy

        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--models"]
        runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_jax_models.py"),
                       run_name="__main__")
        sys.exit(0)
    quick = "--quick" in sys.argv
    large = "--large" in sys.argv
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    res = run(quick=quick, large=large)
    md = markdown(res)
    print(md)
    if out:
        with open(out, "w") as fh:
            json.dump(res, fh, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        with open(os.path.splitext(out)[0] + ".md", "w") as fh:
            fh.write(md + "\n")
