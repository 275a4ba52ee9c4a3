"""Smoke test of the benchmarks (issue 7): every benchmark runs at tiny sizes and returns
well-formed records. No timing is asserted (timings at these sizes mean nothing); the
numbers asserted are the ones a benchmark relies on to be measuring the right thing:
the three drift implementations agree, the oracle counts match the solver's evaluation
count, warm and cold eigen-solves agree, and parameter sweeps do not recompile."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_compile  # noqa: E402
import bench_drift  # noqa: E402
import bench_eigs  # noqa: E402
import bench_end_to_end  # noqa: E402
import bench_kinetic  # noqa: E402
import run_all  # noqa: E402

pytestmark = pytest.mark.xdist_group("benchmarks")


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def results():
    """All benchmarks at their quick sizes (diffrax left out of the compile sweep: each
    diffrax compilation costs seconds)."""
    b = {"drift": bench_drift.run(quick=True, log=quiet), "kinetic": bench_kinetic.run(quick=True, log=quiet),
         "end_to_end": bench_end_to_end.run(quick=True, log=quiet), "eigs": bench_eigs.run(quick=True, log=quiet),
         "compile": bench_compile.run(quick=True, log=quiet, diffrax=False)}
    return {"quick": True, "machine": {"processor": "test"}, "benchmarks": b, "targets": run_all.targets(b)}


def _finite_positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_numpy_reference_of_the_dmf_drift_matches_the_kernels():
    p, theta = bench_drift.dmf_problem(3)
    U = np.random.default_rng(5).standard_normal((p.dim, 2))
    s = np.array([0.7, -1.3])
    M = p.target
    np.testing.assert_allclose(bench_drift.dmf_numpy_grad(theta, M), p.grad(theta), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(bench_drift.dmf_numpy_third(theta, U, s, M), p.third(theta, U, s), rtol=1e-11, atol=1e-12)


def test_drift_records(results):
    recs = results["benchmarks"]["drift"]["records"]
    assert {r["problem"] for r in recs} >= {"dmf depth 3"}
    for r in recs:
        assert r["P"] > 0 and r["rank"] == 1
        for key in ("numba_s", "jax_s", "numpy_s", "grad_s", "third_s"):
            assert _finite_positive(r[key]), key
        assert r["jax_over_numba"] == pytest.approx(r["jax_s"] / r["numba_s"])
        # the three implementations compute the same drift
        assert r["max_rel_diff"] < 1e-10


def test_kinetic_records(results):
    k = results["benchmarks"]["kinetic"]
    assert _finite_positive(k["matmul"]["gflops_best"])
    for r in k["records"]:
        assert _finite_positive(r["time_s"]) and _finite_positive(r["gflops"])
        fl = bench_kinetic.kinetic_flops(r["N"], r["n"], r["d"], r["rank"])
        assert r["flops"] == fl["total"]
        assert fl["dense"] == r["N"] * r["n"] * 2 * r["d"] * (2 + 2 * r["rank"])
    assert math.isfinite(k["slope"]["1"])


def test_end_to_end_counts_match_solver_evaluations(results):
    cases = results["benchmarks"]["end_to_end"]["cases"]
    assert [c["case"] for c in cases] == [name for name, _ in bench_end_to_end.QUICK_CASES]
    for c in cases:
        assert c["gd"]["grad_equivalents"] == c["steps"]
        assert c["oracle_costs"]["grad"]["gradients"] == 1.0
        for r in c["flow"]:
            assert r["status"] == "success", r
            assert r["reached"] == c["steps"]
            # the solve's own counters: one gradient, one contraction and one eigen-solve per
            # drift evaluation, plus the start (GD's first half-step seeds Σ: one gradient,
            # one eigen-solve) and the records of the saved states (the map shares its
            # eigen-solves with them; an adaptive solve's saved states are interpolated)
            n_saves = c["steps"] // max(1, c["steps"] // 200) + 1
            assert r["counts"]["grad"] == r["nfev"] + 1, r["solver"]
            assert r["counts"]["third_columns"] == r["nfev"], r["solver"]
            if r["solver"] == "map":
                assert r["nfev"] == c["steps"] and r["counts"]["eig"] == r["nfev"] + 1
            else:
                assert r["nfev"] <= r["counts"]["eig"] <= r["nfev"] + 1 + n_saves, r["solver"]
            assert r["grad_equivalents"] >= r["nfev"]


def test_warm_and_cold_eigensolves_agree(results):
    for r in results["benchmarks"]["eigs"]["records"]:
        assert r["max_eig_diff"] < 1e-8
        assert r["warm"]["hvp_mean"] > 0 and r["cold"]["hvp_mean"] > 0


def test_sweeps_do_not_recompile(results):
    recs = results["benchmarks"]["compile"]["records"]
    assert len(recs) >= 6
    for r in recs:
        assert r["numba_compiles"] == 0, r


def test_outputs_render(results, tmp_path):
    md = run_all.summary_markdown(results)
    for title in ("## Targets", "θ-drift", "kinetic", "End to end", "Sharpness tracking", "Compilations"):
        assert title in md
    assert all(set(t) >= {"target", "goal", "measured", "met"} for t in results["targets"])
    json.dumps(results, default=float)
    run_all.plot(results, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_command_line_quick_subset(tmp_path):
    assert run_all.main(["--quick", "--only", "eigs", "--out", str(tmp_path), "--no-plot", "--threads", "0",
                         "--in-process"]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["quick"] is True and "eigs" in data["benchmarks"]
    assert (tmp_path / "summary.md").read_text().startswith("# Benchmark summary")


def test_tracker_tolerance_study_runs_and_its_configurations_agree(capsys):
    # the study of the models' tracker tolerances on a tiny digits MLP (P = 385): every
    # configuration runs, and the loose ones stay within their stated accuracy of the tight one
    import bench_tracker_tolerances as btt

    rows = btt.main(["5", "3", "tight,rest1e-4,eig1e-7all", "fe"])
    assert [r["config"] for r in rows] == ["tight", "rest1e-4", "eig1e-7all"]
    assert all(r["hvp_per_step"] > 0 for r in rows)
    for r in rows[1:]:
        assert r["d_sharpness"] <= 1e-4 and r["d_state"] <= 1e-4 and r["d_amplitude"] <= 1e-3
    assert "reference: tight" in capsys.readouterr().out
