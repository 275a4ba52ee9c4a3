"""Run every benchmark and write JSON, a markdown summary and a plot (``make bench``).

    python benchmarks/run_all.py                 # full run (a few minutes), results/ updated
    python benchmarks/run_all.py --quick             # tiny sizes, written to a temp folder
    python benchmarks/run_all.py --only drift kinetic   # a subset

Thread counts are pinned *before* numpy, numba or JAX are imported (default: one thread
for BLAS, numba and XLA), because on a shared machine multithreaded BLAS and numba
thread pools that spin-wait can be slowed down by two orders of magnitude by other
processes, which says nothing about the kernels. ``--threads N`` measures with N threads.
See README.md beside this file for how to read the results.
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(n: int) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()


BENCHES = ("drift", "kinetic", "end_to_end", "eigs", "compile")
HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs (no meaningful timings)")
    ap.add_argument("--out", default=None,
                    help="output folder (default: benchmarks/results; with --quick: effdyn-bench-quick in the temp dir)")
    ap.add_argument("--only", nargs="+", choices=BENCHES, default=None, help="run only these benchmarks")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for BLAS, numba and XLA (default 1; 0 leaves the environment alone)")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument("--in-process", action="store_true",
                    help="run the benchmarks in this process (default: one child process each, so that a crash "
                         "in one of them is recorded and the others still run)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run_one(name: str, quick: bool = False, log=print) -> dict:
    """Run one benchmark here; a benchmark that raises is recorded with its error."""
    import time
    import traceback

    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    mod = __import__(f"bench_{name}")
    t0 = time.perf_counter()
    try:
        out = mod.run(quick=quick, log=log)
    except Exception as exc:  # keep the other benchmarks' results
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        log(f"  FAILED: {type(exc).__name__}: {exc}")
    out["elapsed_s"] = time.perf_counter() - t0
    return out


def _run_child(name: str, quick: bool, threads: int) -> dict:
    """Run one benchmark in a child process (its output streams through) and read its JSON."""
    import json
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--json", path, "--threads", str(threads)]
        if quick:
            cmd.append("--quick")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        if proc.returncode == 0 and os.path.exists(path):
            with open(path) as fh:
                return json.load(fh)
        tail = "\n".join(line for line in proc.stderr.splitlines() if "NumbaWarning" not in line)[-1500:]
        print(f"  FAILED: child process exited with code {proc.returncode}\n{tail}")
        return {"error": f"child process exited with code {proc.returncode}", "stderr": tail,
                "elapsed_s": time.perf_counter() - t0}


def run(quick: bool = False, only=None, log=print, threads: int | None = None) -> dict:
    """Run the selected benchmarks: in this process, or with ``threads`` given, each in a
    child process started with that thread setting."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from _timing import machine

    results = {"quick": quick, "machine": machine(), "benchmarks": {}}
    for name in only or BENCHES:
        mod = __import__(f"bench_{name}")
        log(f"[{name}] {mod.__doc__.strip().splitlines()[0]}")
        if threads is None:
            results["benchmarks"][name] = run_one(name, quick, log)
        else:
            results["benchmarks"][name] = _run_child(name, quick, threads)
    results["targets"] = targets(results["benchmarks"])
    return results


# --- targets ----------------------------------------------------------------------------------
def targets(b: dict) -> list[dict]:
    """Measured figures against the project's performance targets."""
    out = []

    def add(name, target, measured, met, detail=""):
        out.append({"target": name, "goal": target, "measured": measured, "met": bool(met), "detail": detail})

    kin = b.get("kinetic", {})
    if kin.get("records"):
        big = [r for r in kin["records"] if r["N"] >= 10_000]
        if big:
            worst = min(big, key=lambda r: r["fraction_of_matmul"])
            add("kinetic drift rate at N ≥ 10⁴", "≥ 50% of numpy matmul",
                f"{100 * worst['fraction_of_matmul']:.0f}% (worst, r={worst['rank']}, N={worst['N']}; "
                f"{worst['gflops']:.1f} vs {kin['matmul']['gflops_best']:.1f} GFLOP/s)",
                worst["fraction_of_matmul"] >= 0.5)
        for r, s in kin.get("slope", {}).items():
            add(f"kinetic drift time ∝ N (r={r})", "log-log slope ≈ 1 (0.9–1.1)", f"{s:.3f}", 0.9 <= s <= 1.1)
    dr = b.get("drift", {})
    for prob in sorted({r["problem"] for r in dr.get("records", [])}):
        rs = [r for r in dr["records"] if r["problem"] == prob and "jax_over_numba" in r]
        small = [r for r in rs if r["P"] <= 1000]

        if small:
            w = min(small, key=lambda r: r["jax_over_numba"])
            add(f"numba vs JAX-jit drift, {prob}, P ≤ 1000", "numba ≥ 5× faster",
                f"{w['jax_over_numba']:.2f}× (worst, P={w['P']})", w["jax_over_numba"] >= 5)
        large = [r for r in rs if r["P"] >= 50_000]
        if large:
            w = min(large, key=lambda r: r["jax_over_numba"])
            add(f"numba vs JAX-jit drift, {prob}, P ≈ 10⁵", "numba not slower (≥ 1×)",
                f"{w['jax_over_numba']:.2f}× (P={w['P']})", w["jax_over_numba"] >= 1)
    e2e = b.get("end_to_end", {})
    for case in e2e.get("cases", []) + e2e.get("long_cases", []):
        adaptive = [r for r in case["flow"] if r.get("status") == "success" and r["solver"] != "map"]
        if adaptive:
            best = min(adaptive, key=lambda r: r["grad_equivalent_ratio"])
            add(f"θ/Σ flow vs GD, {case['case']} ({case['steps']} steps)", "gradient-equivalents ratio < 1",
                f"{best['grad_equivalent_ratio']:.2f} (best: {best['solver']}; {best['nfev']} drift evaluations "
                f"= {best['nfev'] / case['steps']:.2f} per GD step)", best["grad_equivalent_ratio"] < 1)
    eig = b.get("eigs", {})
    for r in eig.get("records", []):
        add(f"warm vs cold eigen-solves, k={r['k']}", "≥ 3× fewer HVPs warm",
            f"{r['hvp_ratio_cold_over_warm']:.2f}× ({r['cold']['hvp_mean']:.1f} vs {r['warm']['hvp_mean']:.1f})",
            r["hvp_ratio_cold_over_warm"] >= 3)
    comp = b.get("compile", {})
    if comp.get("records"):
        bad = [r for r in comp["records"] if r.get("numba_compiles", 0) or r.get("jax_compiles", 0) or "error" in r]
        add("no recompilation across sweeps", "0 compilations after warm-up",
            "0 everywhere" if not bad else "; ".join(
                f"{r['sweep']}: numba {r.get('numba_compiles', '?')}, JAX {r.get('jax_compiles', '-')}" for r in bad),
            not bad)
    return out


# --- markdown ---------------------------------------------------------------------------------
def _t(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(x, fmt="{:.2f}"):
    return "–" if x is None else fmt.format(x)


def summary_markdown(res: dict) -> str:
    b = res["benchmarks"]
    m = res["machine"]
    out = [f"# Benchmark summary{' (quick: sizes too small to mean anything)' if res['quick'] else ''}", "",
           f"Machine: {m.get('processor')} ({m.get('cpus')} CPUs, load average {m.get('load_average')}), "
           f"threads per library: {res.get('threads', 1)}, clock: {m.get('clock')} time; numpy {m.get('numpy')}, numba {m.get('numba')}, "
           f"jax {m.get('jax')}, diffrax {m.get('diffrax')}. Times are the best of interleaved repeats; "
           "compare ratios, not absolute times.", ""]
    if res.get("targets"):
        out += ["## Targets", "", _t([[t["target"], t["goal"], t["measured"], "yes" if t["met"] else "**no**"]
                                     for t in res["targets"]], ["target", "goal", "measured", "met"]), ""]
    d = b.get("drift", {})
    if d.get("records"):
        out += ["## Free-energy θ-drift (grad + rank-1 third contraction) per evaluation", "",
                _t([[r["problem"], r["size"], r["P"], _f(r["numba_s"] * 1e6, "{:.1f}"), _f(r.get("jax_over_numba")),
                     _f(r.get("numpy_over_numba")), _f(r.get("separate_over_numba")), _f(r.get("third_over_grad")),
                     _f(r["max_rel_diff"], "{:.0e}")]
                    for r in d["records"]],
                   ["problem", "size", "P", "numba µs", "JAX-jit / numba", "NumPy / numba", "separate / numba",
                    "third / grad", "max rel. diff"]), ""]
    elif "error" in d:
        out += ["## Drift kernels", "", f"failed: {d['error']}", ""]
    k = b.get("kinetic", {})
    if k.get("records"):
        out += ["## Mean-field kinetic drift (n = %d, d = %d)" % (k["n"], k["d"]), "",
                f"numpy matmul {k['matmul']['n']}²: {k['matmul']['gflops_best']:.1f} GFLOP/s before, "
                f"{k['matmul_after']['gflops_best']:.1f} after; time ∝ N^slope with slope "
                + ", ".join(f"{s:.3f} (r={r})" for r, s in k["slope"].items()) + ".", "",
                _t([[r["rank"], r["N"], r["P"], _f(r["time_s"] * 1e3), _f(r["gflops"]),
                     _f(100 * r["fraction_of_matmul"], "{:.0f}%"), _f(r["skinny_matmul_gflops"]),
                     _f(100 * r["dense_share"], "{:.0f}%")] for r in k["records"]],
                   ["r", "N", "P", "ms / drift", "GFLOP/s", "of matmul", "(N×d)(d×n) matmul GFLOP/s",
                    "time in dense products"]), ""]
    elif "error" in k:
        out += ["## Mean-field kinetic drift", "", f"failed: {k['error']}", ""]
    e = b.get("end_to_end", {})
    if e.get("cases"):
        out += ["## End to end: θ/Σ flow against GD over the same horizon", "",
                "Gradient-equivalents weight each oracle call by its cost relative to one gradient, measured on "
                "the problem in the same run; \"ratio (whole drift)\" weights each drift evaluation by the cost of "
                "the whole drift, NumPy glue included; \"compiled Σ part\" by the cost of the same drift with its "
                "Σ part compiled (prototype in proposed_kernels.py, checked equal to the library's). Longer horizons "
                "(LSODA only) follow the quick ones.", ""]
        for c in e["cases"] + e.get("long_cases", []):
            w = {n: v["gradients"] for n, v in c["oracle_costs"].items()}
            out += [f"**{c['case']}** (P = {c['P']}, η = {c['eta']}, {c['steps']} steps). GD: "
                    f"{c['steps']} gradients, {c['gd']['wall_s'] * 1e3:.1f} ms ({c['gd']['how']}). Cost in gradients: "
                    + ", ".join(f"{n} {v:.2f}" for n, v in w.items()) + ".", ""]
            rows = []
            for r in c["flow"]:
                if r.get("status") == "error":
                    rows.append([r["solver"], "error", "–", "–", "–", "–", "–", r["error"][:80]])
                    continue
                rows.append([r["solver"], r["status"], r["nfev"], _f(r["grad_equivalents"], "{:.0f}"),
                             _f(r.get("grad_equivalent_ratio")),
                             _f(r.get("drift_equivalents", 0) / c["steps"]),
                             _f(r["drift_compiled_sigma_equivalents"] / c["steps"])
                             if "drift_compiled_sigma_equivalents" in r else "–",
                             _f(r["wall_s"], "{:.2f}") + ("" if "wall_first_s" not in r else
                                                          f" ({r['wall_first_s']:.1f} first)"),
                             _f(r.get("wall_ratio"), "{:.0f}")])
            out += [_t(rows, ["solver", "status", "drift evals", "grad-equiv.", "ratio to GD",
                              "ratio (whole drift)", "ratio (compiled Σ part)", "time s", "time / GD"]), ""]
        ts = e.get("tolerance_study")
        if ts:
            # costs of a drift evaluation (in gradients) measured on the same case and horizon
            same = [c for c in e["cases"] if c["case"] == ts["case"]]
            costs = same[0]["oracle_costs"] if same else {}
            ts_names = [n for n in ("drift", "drift_compiled_sigma") if n in costs]
            ts_w = [costs[n]["gradients"] for n in ts_names]
            ts_names = ["whole drift" if n == "drift" else "compiled Σ part" for n in ts_names]
            out += [f"Tolerance study, {ts['case']} over {ts['steps']} steps (LSODA, atol = 1e-3·rtol): drift "
                    f"evaluations and the largest sharpness error against a reference at rtol {ts['reference_rtol']:g} "
                    f"in {ts.get('reference_coordinates', 'V')} coordinates "
                    f"({ts['reference_nfev']} evaluations; sharpness range {ts['sharpness_range'][0]:.2f}–"
                    f"{ts['sharpness_range'][1]:.2f}). \"log-amplitude\" integrates the same flow in the "
                    "coordinates (θ, log‖V‖, V/‖V‖) (`FreeEnergyFlow(storage='log-factor')`).", "",
                    _t([[r["rtol"], r["coordinates"], r["nfev"], _f(r["max_sharpness_error"], "{:.1e}"),
                         _f(r["nfev"] / ts["steps"])] + [_f(r["nfev"] * w / ts["steps"]) for w in ts_w]
                        for r in ts["rows"]], ["rtol", "coordinates", "drift evals", "max |ΔS|", "evals per GD step"]
                       + [f"ratio to GD, {n}" for n in ts_names]), ""]
    elif "error" in e:
        out += ["## End to end", "", f"failed: {e['error']}", ""]
    g = b.get("eigs", {})
    if g.get("records"):
        out += [f"## Sharpness tracking along GD ({g['problem']}, P = {g['P']}, steps {g['window'][0]}–"
                f"{g['window'][1] - 1}, tol {g['tol']:g})", "",
                _t([[r["k"], r["solves"], _f(r["warm"]["hvp_mean"], "{:.1f}"), _f(r["cold"]["hvp_mean"], "{:.1f}"),
                     _f(r["cold_v0_previous"]["hvp_mean"], "{:.1f}"), _f(r["hvp_ratio_cold_over_warm"]),
                     _f(r["time_ratio_cold_over_warm"]), _f(r["max_eig_diff"], "{:.0e}")]
                    + ([_f(r["proposed"]["hvp_mean"], "{:.1f}")] if "proposed" in r else [])
                    for r in g["records"]],
                   ["k", "solves", "HVPs warm", "HVPs cold", "HVPs cold (v0 = prev.)", "cold / warm HVPs",
                    "cold / warm time", "max |Δλ|"]
                   + ([f"HVPs warm, {g['records'][0]['proposed']['options']}"] if "proposed" in g["records"][0] else [])),
                ""]
    elif "error" in g:
        out += ["## Sharpness tracking", "", f"failed: {g['error']}", ""]
    c = b.get("compile", {})
    if c.get("records"):
        out += ["## Compilations after warm-up across sweeps", "",
                _t([[r["sweep"], ", ".join(r.get("values", [])), r.get("numba_compiles", "–"),
                     r.get("jax_compiles", "–") if "error" not in r else r["error"][:60]] for r in c["records"]],
                   ["sweep", "values", "numba", "JAX"]), ""]
    elif "error" in c:
        out += ["## Compilations", "", f"failed: {c['error']}", ""]
    out += ["Elapsed: " + ", ".join(f"{n} {v.get('elapsed_s', 0):.0f} s" for n, v in b.items()) + "."]
    return "\n".join(out) + "\n"


# --- plot -------------------------------------------------------------------------------------
def plot(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = res["benchmarks"]
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    a = ax[0, 0]
    d = b.get("drift", {}).get("records", [])
    colours = {"numba": "C0", "jax": "C1", "numpy": "C2", "separate": "C4"}
    for prob, style in zip(sorted({r["problem"] for r in d}), ("-o", "--s")):
        rs = sorted([r for r in d if r["problem"] == prob], key=lambda r: r["P"])
        for be, col in colours.items():
            pts = [(r["P"], r[f"{be}_s"]) for r in rs if f"{be}_s" in r]
            if pts:
                a.loglog(*zip(*pts), style, color=col, ms=4, label=f"{be}, {prob}")
    a.set(xlabel="P", ylabel="s per θ-drift", title="θ-drift: grad + third (r = 1)")
    a.legend(fontsize=6)
    a = ax[0, 1]
    k = b.get("kinetic", {})
    for r in sorted({x["rank"] for x in k.get("records", [])}):
        rs = [x for x in k["records"] if x["rank"] == r]
        a.loglog([x["N"] for x in rs], [x["time_s"] for x in rs], "-o", ms=4,
                 label=f"r={r}: slope {k['slope'][str(r)]:.2f}, " + f"{max(x['gflops'] for x in rs):.1f} GFLOP/s max")
    if k.get("records"):
        a.set_title(f"kinetic drift (matmul {k['matmul']['gflops_best']:.1f} GFLOP/s)")
        a.legend(fontsize=7)
    a.set(xlabel="width N", ylabel="s per drift")
    a = ax[1, 0]
    labels, vals = [], []
    e2e = b.get("end_to_end", {})
    for c in e2e.get("cases", []) + e2e.get("long_cases", []):
        for r in c["flow"]:
            if "grad_equivalent_ratio" in r:
                labels.append(f"{c['case']} {c['steps']}\n{r['solver']}")
                vals.append(r["grad_equivalent_ratio"])
    if vals:
        a.barh(range(len(vals)), vals, color=["C2" if v < 1 else "C3" for v in vals])
        a.set_yticks(range(len(vals)), labels, fontsize=6)
        a.axvline(1.0, color="k", lw=1)
        a.set_xscale("log")
    a.set(xlabel="gradient-equivalents, flow / GD", title="end to end (left of the line: cheaper than GD)")
    a = ax[1, 1]
    g = b.get("eigs", {}).get("records", [])
    if g:
        names = ["warm", "cold", "cold_v0_previous"]
        for i, r in enumerate(g):
            a.bar([j + 0.4 * i for j in range(len(names))], [r[n]["hvp_mean"] for n in names], width=0.38,
                  label=f"k={r['k']}")
        a.set_xticks([j + 0.2 for j in range(len(names))], ["warm (tracker)", "cold", "cold, v0=prev."])
        a.legend(fontsize=7)
    a.set(ylabel="HVPs per eigen-solve", title="sharpness tracking along GD")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    try:  # a 256-colour palette keeps the committed PNG small
        from PIL import Image

        with Image.open(path) as im:
            im.convert("RGB").quantize(colors=256).save(path, optimize=True)
    except Exception:  # pragma: no cover - Pillow missing: keep the RGBA file
        pass


def update_readme(md: str, path: str) -> None:
    """Replace the block between the ``latest`` markers of README.md with the summary."""
    start, end = "<!-- latest:start", "<!-- latest:end -->"
    if not os.path.exists(path):
        return
    with open(path) as fh:
        text = fh.read()
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return
    head = text[i:text.index("\n", i) + 1]
    body = "\n".join(("#" + line if line.startswith("## ") else line)
                     for line in md.splitlines() if not line.startswith("# "))
    with open(path, "w") as fh:
        fh.write(text[:i] + head + body.strip() + "\n" + text[j:])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        _pin_threads(args.threads)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import json

    import _timing

    # CPU time is immune to preemption by other processes when everything runs on one thread.
    _timing.set_clock("cpu" if args.threads == 1 else "wall")
    if args.child:
        res = run_one(args.child, args.quick)
        with open(args.json, "w") as fh:
            json.dump(res, fh, default=float)
        return 0
    if args.out:
        out = args.out
    elif args.quick:
        import tempfile

        out = os.path.join(tempfile.gettempdir(), "effdyn-bench-quick")
    else:
        out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    res = run(quick=args.quick, only=args.only, threads=None if args.in_process else args.threads)
    res["threads"] = args.threads
    with open(os.path.join(out, "bench.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    md = summary_markdown(res)
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(md)
    if not args.no_plot:
        plot(res, os.path.join(out, "bench.png"))
    if not args.quick and args.out is None and args.only is None:
        update_readme(md, os.path.join(HERE, "README.md"))
    print()
    print(md)
    print(f"written: {out}/bench.json, summary.md" + ("" if args.no_plot else ", bench.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
