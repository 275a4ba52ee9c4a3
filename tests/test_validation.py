"""The validation suite run in-process on short horizons: report tables, netCDF contents,
figures, failure rows, GD divergence and interruption."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import effdyn
import effdyn.models
from effdyn.io import load_dataset
from effdyn.validation import (CASES, Case, ModelSpec, Setup, ValidationInterrupted, get_case,
                               parse_tables, validate)
from effdyn.validation.runner import slug

pytestmark = pytest.mark.xdist_group("validation")

MV_STEPS = 2500          # past the minimal valley's EoS onset (step 1222), overshoot and first cycles
MTL_STEPS = 150          # minimalist network: onset at step 22
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STATUSES = {"success", "diverged", "failed", "budget", "interrupted", "error", "unavailable", "not applicable"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    lines = []
    result = validate(["minimal-valley", "minimalist-two-layer"], quick=True, out_dir=out,
                      steps={"minimal-valley": MV_STEPS, "minimalist-two-layer": MTL_STEPS},
                      progress=False, log=lines.append, model_budget=8.0)
    return result, out, lines


def test_report_tables(small_run):
    result, out, lines = small_run
    assert result.ok and result.report == out / "report.md"
    text = result.report.read_text()
    tables = parse_tables(text)
    assert set(tables) == {"minimal-valley", "minimalist-two-layer"}
    for name, rows in tables.items():
        labels = [r["model"] for r in rows]
        expected = [m.label for m in get_case(name).setup(True, steps=10).models]
        assert labels == ["GD (reference)", *expected]
        gd = rows[0]
        assert gd["status"] == "success" and gd["nfev"] == str(MV_STEPS if name == "minimal-valley" else MTL_STEPS)
        for row in rows[1:]:
            assert row["status"] in STATUSES
            if row["status"] == "unavailable":  # a model not installed is a row with a note
                assert "not available" in row["note"]
    mv = {r["model"]: r for r in tables["minimal-valley"]}
    assert "EoS onset at step 122" in mv["GD (reference)"]["note"]
    # the free-energy flow tracks GD at the edge; gradient flow sails past 2/η
    # (measured at 2500 steps: sharpness err 0.017 / 0.012 (map) against 0.27 for gradient
    # flow; distance 0.031 / 0.025 against 0.32)
    fe = mv["free-energy flow"]
    assert fe["status"] == "success" and int(fe["nfev"]) > 100
    assert float(fe["sharpness err"]) < 0.03 and float(fe["distance"]) < 0.06
    assert 0.97 < float(fe["mean ηS/2"]) < 1.05
    gf = mv["gradient flow"]
    assert gf["status"] == "success" and float(gf["sharpness err"]) > 0.15 and float(gf["distance"]) > 0.2
    assert float(gf["mean ηS/2"]) > 1.2
    assert float(mv["free-energy flow [map]"]["sharpness err"]) < 0.03
    assert f"[sharpness](minimal-valley_sharpness.png)" in text
    assert any("minimal-valley" in line for line in lines)


def test_netcdf_gd_series_match_a_fresh_run(small_run):
    result, out, _ = small_run
    ds = load_dataset(out / "minimal-valley.nc")
    from effdyn.problems import MinimalValley

    p = MinimalValley(zeta=1.0, eps=0.01)
    # an independent GD loop: θ_{k+1} = θ_k − η∇E(θ_k)
    theta = np.empty((MV_STEPS + 1, 2))
    theta[0] = (0.1, 3.0)
    for k in range(MV_STEPS):
        theta[k + 1] = theta[k] - 0.3 * p.grad(theta[k])
    np.testing.assert_allclose(ds["gd_theta"].values, theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds["gd_loss"].values, [p.loss(t) for t in theta], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ds["gd_k"].values, np.arange(MV_STEPS + 1))
    # sharpness: the largest eigenvalue of the dense Hessian
    idx = [0, 700, 1222, MV_STEPS]
    kk = ds["gd_eig_k"].values
    for k in idx:
        j = int(np.flatnonzero(kk == k)[0])
        assert ds["gd_sharpness"].values[j] == pytest.approx(np.linalg.eigvalsh(p.hessian(theta[k]))[-1], rel=1e-9)
    # two-step averages as defined in theory §1
    la = ds["gd_loss_average"]
    loss = ds["gd_loss"].values
    k = int(la["gd_avg_k"].values[100])
    assert la.values[100] == pytest.approx(0.5 * (loss[k] + loss[k + 1]), rel=1e-12)
    mid = ds["gd_midpoint"]
    k = int(mid["gd_mid_k"].values[1400])
    np.testing.assert_allclose(mid.values[1400], 0.25 * (theta[k - 1] + 2 * theta[k] + theta[k + 1]), rtol=1e-12)
    # metadata
    assert ds.attrs["eos_onset"] == 1222 or ds.attrs["eos_onset"] in (1221, 1223, 1224)
    assert ds.attrs["eta"] == 0.3 and ds.attrs["steps"] == MV_STEPS and ds.attrs["gd_status"] == "success"
    cfg = json.loads(ds.attrs["config"])
    assert cfg["eta"] == 0.3 and cfg["problem"]["eps"] == 0.01 and cfg["theta0"] == [0.1, 3.0]
    assert "numpy" in json.loads(ds.attrs["versions"])
    assert isinstance(ds.attrs["git_commit"], str) and ds.attrs["git_commit"]


def test_netcdf_model_series_and_metrics(small_run):
    result, out, _ = small_run
    ds = load_dataset(out / "minimal-valley.nc")
    case = next(c for c in result.cases if c.name == "minimal-valley")
    labels = list(ds["model"].values)
    assert labels == [r.label for r in case.models]
    for row in case.models:
        i = labels.index(row.label)
        assert ds["status"].values[i] == row.status
        assert ds["nfev"].values[i] == row.nfev
        if row.metrics is None:
            assert np.all(np.isnan(ds["metrics"].values[i]))
            continue
        # saved metrics are those of effdyn.compare on the live objects
        fresh = effdyn.compare(case.gd, row.solution)
        saved = dict(zip(ds["metric"].values, ds["metrics"].values[i]))
        assert saved["sharpness_error"] == pytest.approx(fresh.sharpness_error, rel=1e-12)
        assert saved["loss_error"] == pytest.approx(fresh.loss_error, rel=1e-12)
        assert saved["k0"] == fresh.k0 and saved["k1"] == fresh.k1
        # the saved distance series is ‖θ_model − θ̄_GD‖ at GD's midpoint steps
        s = slug(row.label)
        mk = ds["gd_mid_k"].values
        j = len(mk) // 2
        th = np.array([np.interp(mk[j], ds[f"{s}__k"].values, ds[f"{s}__theta"].values[:, c]) for c in range(2)])
        assert ds[f"{s}__distance"].values[j] == pytest.approx(np.linalg.norm(th - ds["gd_midpoint"].values[j]),
                                                               rel=1e-10, abs=1e-14)
        # and the model's loss series is E at the saved θ
        from effdyn.problems import MinimalValley

        p = MinimalValley()
        th_end = ds[f"{s}__theta"].values[-1]
        assert ds[f"{s}__loss"].values[-1] == pytest.approx(p.loss(th_end), rel=1e-12, abs=1e-15)
    fe = labels.index("free-energy flow")
    # the free-energy flow's time-averaged loss is F = E + ½⟨H, Σ⟩ >= E where H ⪰ 0 on Σ
    s = slug("free-energy flow")
    assert ds[f"{s}__time_avg_loss"].shape == ds[f"{s}__loss"].shape
    assert ds["metrics"].values[fe][list(ds["metric"].values).index("mean_sharpness_gd")] == pytest.approx(
        2 / 0.3, rel=0.05)


def test_figures_are_pngs(small_run):
    result, out, _ = small_run
    for case in result.cases:
        figs = case.files["figures"]
        assert [p.name for p in figs] == [f"{case.name}_{n}.png" for n in ("loss", "sharpness", "amplitude",
                                                                             "distance")]
        for p in figs:
            data = p.read_bytes()
            assert data[:8] == PNG_MAGIC and len(data) > 10_000


def _custom_case(monkeypatch, name, build):
    monkeypatch.setitem(CASES, name, Case(name, f"test case {name}", build, quick_steps=100, full_steps=100))


def test_diverging_gd_is_reported_and_other_cases_run(monkeypatch, tmp_path):
    from effdyn.problems import Quadratic

    def build(steps, quick, cifar=None):
        p = Quadratic(np.diag([10.0, 1.0]))
        # η·λ = 5: GD multiplies the first coordinate by −4 per step and overflows
        return Setup(p, np.array([1.0, 1.0]), 0.5, 2000, (ModelSpec("gradient flow", "GradientFlow"),),
                     notes="diverging quadratic")

    def build_fine(steps, quick, cifar=None):
        return Setup(Quadratic(np.diag([1.0, 0.5])), np.array([1.0, 1.0]), 0.5, 50,
                     (ModelSpec("gradient flow", "GradientFlow"),))

    _custom_case(monkeypatch, "diverging", build)
    _custom_case(monkeypatch, "fine", build_fine)
    result = validate(["diverging", "fine"], out_dir=tmp_path, progress=False, log=lambda m: None)
    assert [c.status for c in result.cases] == ["gd-diverged", "ok"] and not result.ok
    tables = parse_tables(result.report.read_text())
    assert tables["diverging"][0]["status"] == "diverged"
    assert len(tables["diverging"]) == 1  # models are skipped when GD diverges
    assert "**Case status: gd-diverged.**" in result.report.read_text()
    assert load_dataset(tmp_path / "diverging.nc").attrs["gd_status"] == "diverged"
    assert [r["status"] for r in tables["fine"]] == ["success", "success"]


def test_model_failures_become_rows(monkeypatch, tmp_path, registry_sandbox):
    from effdyn.problems import MinimalValley

    class Exploding(effdyn.models.GradientFlow):
        def map_step(self, k, y, run=None):
            return np.full_like(y, np.inf) if k > 5 else super().map_step(k, y, run)

    registry_sandbox.register_model(Exploding, name="ExplodingFlow")

    class Slow(effdyn.models.GradientFlow):
        def map_step(self, k, y, run=None):
            time.sleep(0.02)
            return super().map_step(k, y, run)

    registry_sandbox.register_model(Slow, name="SlowFlow")

    def build(steps, quick, cifar=None):
        return Setup(MinimalValley(), np.array([0.1, 3.0]), 0.3, 50, (
            ModelSpec("missing", "NoSuchModel"),
            ModelSpec("too big", "FreeEnergyFlow", {"rank": 5}),
            ModelSpec("bad solver", "GradientFlow", solver="scipy:Nope"),
            ModelSpec("exploding", "ExplodingFlow", solver="map"),
            ModelSpec("fine", "GradientFlow"),
            ModelSpec("slow", "SlowFlow", solver="map", budget=0.3),
        ))

    _custom_case(monkeypatch, "failing", build)
    result = validate(["failing"], out_dir=tmp_path, progress=False, log=lambda m: None)
    rows = {r["model"]: r for r in parse_tables(result.report.read_text())["failing"]}
    assert rows["missing"]["status"] == "unavailable" and "NoSuchModel" in rows["missing"]["note"]
    assert rows["too big"]["status"] == "not applicable" and "rank" in rows["too big"]["note"]
    assert rows["bad solver"]["status"] == "error" and "solver" in rows["bad solver"]["note"]
    assert rows["exploding"]["status"] == "diverged"
    assert rows["fine"]["status"] == "success" and rows["fine"]["sharpness err"] != "–"
    # 50 steps of 20 ms cannot fit in 0.3 s: stopped by its budget, compared on what it ran
    assert rows["slow"]["status"] == "budget" and "time budget of 0.3 s" in rows["slow"]["note"]
    assert 5 <= int(rows["slow"]["nfev"]) < 50 and rows["slow"]["sharpness err"] != "–"
    ds = load_dataset(tmp_path / "failing.nc")
    assert list(ds["status"].values) == ["unavailable", "not applicable", "error", "diverged", "success", "budget"]
    assert 5 <= ds["slow__k"].values[-1] < 50
    assert result.ok  # model failures are results, not a failed run


def test_interrupt_saves_partial_results(monkeypatch, tmp_path, registry_sandbox):
    from effdyn.problems import MinimalValley

    class Interrupting(effdyn.models.GradientFlow):
        def map_step(self, k, y, run=None):
            if k == 20:
                raise KeyboardInterrupt
            return super().map_step(k, y, run)

    registry_sandbox.register_model(Interrupting, name="InterruptingFlow")

    def build(steps, quick, cifar=None):
        return Setup(MinimalValley(), np.array([0.1, 3.0]), 0.3, 60, (
            ModelSpec("gradient flow", "GradientFlow", solver="map"),
            ModelSpec("interrupting", "InterruptingFlow", solver="map"),
            ModelSpec("never run", "GradientFlow"),
        ))

    _custom_case(monkeypatch, "interrupted", build)
    with pytest.raises(ValidationInterrupted) as info:
        validate(["interrupted", "minimal-valley"], out_dir=tmp_path, progress=False, log=lambda m: None)
    res = info.value.result
    assert res.interrupted and [c.name for c in res.cases] == ["interrupted"]
    text = (tmp_path / "report.md").read_text()
    assert "interrupted by the user" in text
    rows = {r["model"]: r for r in parse_tables(text)["interrupted"]}
    assert rows["gradient flow"]["status"] == "success" and rows["interrupting"]["status"] == "interrupted"
    assert "never run" not in rows
    ds = load_dataset(tmp_path / "interrupted.nc")
    assert ds.attrs["case_status"] == "interrupted"
    assert ds["interrupting__k"].values[-1] == 20  # the partial model run is kept
    assert not (tmp_path / "minimal-valley.nc").exists()


def test_case_registry_and_setups():
    assert list(CASES)[:4] == ["minimal-valley", "dmf-converge", "dmf-period2", "minimalist-two-layer"]
    with pytest.raises(ValueError, match=r"unknown case 'nope'; valid cases: minimal-valley, dmf-converge"):
        get_case("nope")
    mv = get_case("minimal-valley").setup(True)
    assert mv.steps == 4000 and mv.eta == 0.3 and get_case("minimal-valley").setup(False).steps == 6000
    dmf = get_case("dmf-period2").setup(True)
    M = dmf.problem.target
    assert np.allclose(np.linalg.svd(M, compute_uv=False), [5.5, 1.0]) and dmf.eta == 0.077
    # GD on the period-two target reaches the edge: the dense-Hessian sharpness along a few
    # steps of an independent GD loop exceeds 2/η within 20 steps
    th = dmf.theta0.copy()
    top = 0.0
    for _ in range(20):
        top = max(top, np.linalg.eigvalsh(dmf.problem.hessian(th))[-1])
        th = th - dmf.eta * dmf.problem.grad(th)
    assert top > 2 / dmf.eta


def test_sharpness_reduction_case_runs_against_normalized_gd(tmp_path):
    # The case's reference is normalised GD, not plain GD: GD never nears 2/η = 200, the
    # window is the whole run, and the sharpness error is relative to GD's mean sharpness.
    steps = 8000
    result = validate(["scalar-product-ngd"], quick=True, out_dir=tmp_path, steps=steps, progress=False,
                      log=lambda *_: None)
    assert result.ok
    case = result.cases[0]
    assert case.gd.variant == "normalized" and case.eos_onset is None
    # an independent normalised-GD loop reproduces the reference's last iterate
    setup = case.setup
    th = setup.theta0.copy()
    for _ in range(steps):
        g = setup.problem.grad(th)
        th = th - setup.eta * g / np.linalg.norm(g)
    assert np.allclose(case.gd.theta[-1], th, rtol=0, atol=1e-10)
    rows = {r["model"]: r for r in parse_tables(result.report.read_text())["scalar-product-ngd"]}
    assert rows["GD (reference)"]["note"] == "EoS onset never"
    srf, gf = rows["sharpness-reduction flow"], rows["gradient flow"]
    assert srf["status"] == "success" and gf["status"] == "success"
    # measured at 8000 steps: sharpness err 0.005 for the flow, 0.10 for gradient flow,
    # which stops on the manifold while NGD keeps lowering the sharpness
    assert float(srf["sharpness err"]) < 0.02 and float(gf["sharpness err"]) > 5 * float(srf["sharpness err"])
    # NGD oscillates across the manifold at half-amplitude η/2, as the flow predicts
    assert float(srf["amplitude err"]) < 0.01
    ds = load_dataset(tmp_path / "scalar-product-ngd.nc")
    assert ds.attrs["gd_variant"] == "normalized"
    metric = list(ds["metric"].values)
    i = list(ds["model"].values).index("sharpness-reduction flow")
    row = ds["metrics"].values[i]
    s_gd = ds["gd_sharpness_average"].values
    assert row[metric.index("sharpness_scale")] == pytest.approx(np.mean(s_gd[: int(row[metric.index("k1")]) + 1]),
                                                                 rel=1e-3)
    assert row[metric.index("sharpness_scale")] < 0.05 * 2 / setup.eta
