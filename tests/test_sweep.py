"""Sweep files: parsing, refusal of bad files before anything runs, period detection,
serial runs, resume after an interruption, recomputation after a changed base config."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from effdyn.cli import main
from effdyn.sweep import (SweepError, SweepInterrupted, detect_period, load_sweep, plot_sweep, point_key,
                          run_sweep)

pytestmark = pytest.mark.xdist_group("sweep")

#: A tiny deep-matrix-factorisation sweep: 4 σ1 values (converged, period two, period four,
#: chaos at η = 0.077) × 2 initial scales = 8 points of 240 GD steps and two cheap models.
#: (Initial seed 0: other seeds leave a slow drift that needs longer runs to settle.)
TINY = {
    "name": "tiny",
    "problem": {"type": "DeepMatrixFactorization", "d": 2, "depth": 3, "sigma1": 5.0, "init": "balanced",
                "init_scale": 0.3},
    "start": {"seed": 0},
    "gd": {"eta": 0.077, "steps": 240},
    "models": [
        {"type": "GradientFlow", "label": "gradient flow"},
        {"type": "FreeEnergyFlow", "label": "fe map", "solver": "map", "options": {"rank": 1},
         "initial": {"sigma_seed": "gd"}},
    ],
    "axes": {"problem.sigma1": [4.8, 5.5, 6.0, 6.4], "problem.init_scale": [0.25, 0.35]},
}


def tiny(**changes):
    doc = copy.deepcopy(TINY)
    for key, value in changes.items():
        doc[key] = value
    return doc


# --- parsing -------------------------------------------------------------------------------

def test_grid_points_values_dims_and_keys():
    doc = tiny(axes={"problem.sigma1": {"linspace": [4.5, 6.5, 41]}, "start.seed": {"range": [0, 3]}})
    sw = load_sweep(doc)
    assert sw.dims == ("sigma1", "seed") and sw.shape == (41, 3) and len(sw.points) == 123
    sig = sw.axes[0].values
    assert sig[0] == 4.5 and sig[-1] == 6.5 and sig[11] == 5.05  # stop included, written as typed
    assert sw.axes[1].values == (0, 1, 2)  # range: stop excluded
    p = sw.points[11 * 3 + 2]
    assert p.index == (11, 2) and p.doc["problem"]["sigma1"] == 5.05 and p.doc["start"]["seed"] == 2
    assert TINY["problem"]["sigma1"] == 5.0  # the base document is not modified
    keys = {q.key for q in sw.points}
    assert len(keys) == 123 and p.key == point_key(p.doc)
    # the key ignores name and [output] but sees everything that changes the numbers
    assert point_key({**p.doc, "name": "other", "output": {"dir": "x"}}) == p.key
    changed = copy.deepcopy(p.doc)
    changed["models"][1]["options"]["rank"] = 2
    assert point_key(changed) != p.key
    assert point_key(p.doc, period_tol=1e-6) != p.key  # the period detection is part of the result


def test_zip_mode_and_dimension_names():
    doc = tiny(axes={"problem.sigma1": [5.0, 5.5], "start.seed": [3, 4]}, sweep={"mode": "zip"})
    sw = load_sweep(doc)
    assert sw.dims == ("point",) and sw.shape == (2,)
    assert [(p.doc["problem"]["sigma1"], p.doc["start"]["seed"]) for p in sw.points] == [(5.0, 3), (5.5, 4)]
    # colliding last parts take more of the key; reserved names are renamed too
    doc = tiny(axes={"models.0.options.rank": [1, 2], "models.1.options.rank": [1, 2]})
    doc["models"][0]["options"] = {}
    with pytest.raises(SweepError):  # GradientFlow has no `rank`: refused at validation
        load_sweep(doc)
    doc = tiny(axes={"models.1.options.rank": [1, 2], "gd.n_eigs": [2, 3]})
    assert load_sweep(doc).dims == ("rank", "n_eigs")  # n_eigs: a new leaf in an existing table


@pytest.mark.parametrize("axes, sweep, needle", [
    ({"gd.eta": []}, {}, '"gd.eta"'),  # empty axis
    ({"gd.eta": {"range": [3, 3]}}, {}, '"gd.eta"'),
    ({"gd.eta": {"linspace": [0.1, 0.2]}}, {}, "linspace"),
    ({"problem.nonexistent.x": [1, 2]}, {}, "problem.nonexistent"),
    ({"models.5.options.rank": [1, 2]}, {}, "index 5 does not exist"),
    ({"output.dir": ["a", "b"]}, {}, "output"),
    ({"gd": [1, 2]}, {}, "table"),
    ({"gd.eta": [0.1, 0.1]}, {}, "repeat"),
    ({"gd.eta": [0.1, 0.2], "start.seed": [1, 2, 3]}, {"mode": "zip"}, "same number of values"),
    ({"gd.eta": [0.1, 0.2]}, {"mode": "diagonal"}, "`mode`"),
    ({"gd.eta": [0.1, 0.2]}, {"workers": 3}, "unknown key `workers`"),
    ({"gd.eta": [0.1, 0.2]}, {"checks": {"no-such-law": 0.1}}, "unknown law `no-such-law`"),
])
def test_bad_sweep_files_are_refused_naming_the_key(axes, sweep, needle):
    doc = tiny(axes=axes)
    if sweep:
        doc["sweep"] = sweep
    with pytest.raises(SweepError) as info:
        load_sweep(doc)
    assert needle in str(info.value)


def test_every_invalid_point_is_listed_before_anything_runs(tmp_path, capsys):
    doc = tiny(axes={"gd.eta": [0.077, -0.1, 0.0], "start.seed": [0, 1]})
    with pytest.raises(SweepError) as info:
        run_sweep(doc, tmp_path / "out", serial=True, log=None)
    msg = str(info.value)
    assert "4 of 6 points have an invalid configuration" in msg and "nothing was run" in msg
    assert msg.count("`eta` must be a number > 0") == 4
    for sw_point in ("eta=-0.1, seed=0", "eta=-0.1, seed=1", "eta=0, seed=0", "eta=0, seed=1"):
        assert sw_point in msg
    assert "[key " in msg
    assert not (tmp_path / "out").exists()  # nothing written, nothing submitted
    # the command line: exit 2, the file, the table and the key named
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[problem]\ntype = "MinimalValley"\n[start]\ntheta0 = [0.1, 3.0]\n'
                    '[gd]\neta = 0.3\nsteps = 10\n[axes]\n"gd.etaa" = [0.1, 0.2]\n')
    code = main(["sweep", str(path), "--out", str(tmp_path / "cli"), "--serial"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "[gd]" in err and "unknown key `etaa`" in err
    assert not (tmp_path / "cli").exists()


# --- period detection ----------------------------------------------------------------------

def test_detect_period_on_known_orbits():
    k = np.arange(600)
    assert detect_period(np.ones((600, 3)))[0] == 1
    assert detect_period(np.exp(-k / 20.0)[:, None] + 1.0)[0] == 1  # converging: fixed point
    assert detect_period(np.stack([(-1.0) ** k, np.ones(600)], axis=1))[0] == 2
    x4 = np.array([1.0, 2.0, -1.0, 0.5])[k % 4]
    assert detect_period(x4)[0] == 4
    assert detect_period(np.array([0.1, 0.4, 0.7, 0.2, 0.9, 0.3, 0.6, 0.8])[k % 8])[0] == 8
    x = np.empty(600)
    x[0] = 0.3
    for i in range(599):  # logistic map at r = 3.9: chaotic
        x[i + 1] = 3.9 * x[i] * (1 - x[i])
    p, r = detect_period(x)
    assert p == 0 and r > 1e-2
    # a period-two orbit approached like 1e-3·0.99^k: period two within tol, not below it
    y = (-1.0) ** k * (1 + 1e-3 * 0.99 ** k)
    assert detect_period(y, tol=1e-4)[0] == 2 and detect_period(y, tol=1e-8)[0] == 0
    assert detect_period(np.full(600, np.nan))[0] == -1


# --- running serially: results, resume, changed base ----------------------------------------

def _numbers(ds):
    """The result variables that must agree number for number between two runs."""
    skip = {"point_wall_time", "point_cpu_time", "model_wall_time", "gd_wall_time", "point_compiles_before", "point_compiles_after",
            "point_worker"}
    return {v: ds[v].values for v in ds.data_vars if ds[v].dims and "worker" not in ds[v].dims and v not in skip}


def test_serial_sweep_resume_and_changed_base(tmp_path):
    out = tmp_path / "s"
    seen = []

    def stop_after_three(state):
        seen.append(dict(state))
        if state["done"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as info:
        run_sweep(tiny(), out, serial=True, log=None, callback=stop_after_three)
    partial = info.value.result
    assert (partial.computed, partial.missing) == (3, 5)
    first = {json.loads(f.read_text())["key"] for f in (out / "tiny.points").glob("*.json")}
    assert len(first) == 3 and seen[-1]["done"] == 3
    from effdyn.io import load_dataset

    ds = load_dataset(out / "tiny.nc")  # merged at the interruption: 3 done, 5 missing
    assert ds.attrs["n_done"] == 3 and ds.attrs["n_missing"] == 5
    assert int((ds["point_status"].values == "missing").sum()) == 5

    res = run_sweep(tiny(), out, serial=True, log=None)  # the same command again
    assert (res.reused, res.computed, res.missing, res.failed) == (3, 5, 0, 0)
    assert set(res.keys_run) == {q.key for q in load_sweep(tiny()).points} - first  # only the missing ones
    ds = res.dataset
    assert ds.sizes["sigma1"] == 4 and ds.sizes["init_scale"] == 2
    assert list(ds["model"].values) == ["gradient flow", "fe map"]
    assert np.all(ds["point_status"].values == "ok")
    # GD's phases along σ1: converged, period two, period four, chaos
    assert list(ds["gd_period"].sel(init_scale=0.25).values) == [1, 2, 4, 0]
    assert list(ds["gd_regime"].sel(init_scale=0.35).values) == ["converged", "period-2", "period-4", "chaotic"]
    onset = ds["gd_eos_onset"]
    assert np.all(onset.sel(sigma1=[5.5, 6.0, 6.4]).values > 0)  # the catapult crosses 2/η early
    assert int(onset.sel(sigma1=4.8, init_scale=0.25)) == -1  # never above 2/η: -1
    ratio = ds["gd_sharpness_ratio"].sel(init_scale=0.25).values
    assert ratio[0] < 1 < ratio[1] < ratio[2] < ratio[3]  # ηS/2 below 1 only where GD converges
    assert np.all(np.isfinite(ds["metrics"].sel(metric="sharpness_error").values))
    assert np.all(ds["point_seed"].values == 0)  # recorded per point
    assert ds["worker_compiles_later_points"].values.tolist() == [0] * ds.sizes["worker"]

    again = run_sweep(tiny(), out, serial=True, log=None)  # complete: nothing runs
    assert (again.computed, again.reused) == (0, 8)
    for name, values in _numbers(again.dataset).items():
        np.testing.assert_array_equal(values, _numbers(ds)[name], err_msg=name)

    changed = tiny(gd={"eta": 0.077, "steps": 246})  # a changed base config: every point is new
    res2 = run_sweep(changed, out, serial=True, log=None)
    assert (res2.reused, res2.computed) == (0, 8)
    assert np.all(res2.dataset["gd_steps_done"].values == 246)
    assert len(list((out / "tiny.points").glob("*.json"))) == 16  # old records kept, not used

    figs = plot_sweep(out / "tiny.nc", tmp_path / "fig")  # two axes: heat maps
    assert [f.name for f in figs] == ["tiny_phase.png"] and figs[0].stat().st_size > 10_000


def test_point_errors_are_recorded_and_do_not_stop_the_sweep(tmp_path, monkeypatch):
    import effdyn.validation.runner as runner

    real = runner.run_setup

    def flaky(name, title, setup, **kw):
        if setup.problem.target[0, 0] == 5.5:
            raise RuntimeError("boom at 5.5")
        return real(name, title, setup, **kw)

    monkeypatch.setattr(runner, "run_setup", flaky)
    doc = tiny(axes={"problem.sigma1": [5.0, 5.5, 6.0]})
    res = run_sweep(doc, tmp_path, serial=True, log=None)
    ds = res.dataset
    assert list(ds["point_status"].values) == ["ok", "error", "ok"] and res.failed == 1 and res.missing == 0
    assert "RuntimeError: boom at 5.5" in ds["point_message"].values[1]
    assert ds["gd_period"].values[1] == -1 and np.isnan(ds["gd_final_loss"].values[1])
    assert list(ds["model_status"].sel(model="fe map").values) == ["success", "missing", "success"]
    assert np.all(np.isfinite(ds["metrics"].sel(model="gradient flow", metric="loss_error").values[[0, 2]]))
    # a rerun keeps the recorded failure unless asked to retry it
    monkeypatch.setattr(runner, "run_setup", real)
    assert run_sweep(doc, tmp_path, serial=True, log=None).computed == 0
    res = run_sweep(doc, tmp_path, serial=True, log=None, retry_failed=True)
    assert res.computed == 1 and list(res.dataset["point_status"].values) == ["ok"] * 3
    figs = plot_sweep(res.path)  # one axis: period, ηS/2 and model errors against σ1
    assert figs == [tmp_path / "tiny_phase.png"] and figs[0].stat().st_size > 10_000


def test_shipped_sweeps_parse():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "validation" / "sweeps"
    found = {f.stem: load_sweep(f) for f in sorted(folder.glob("*.toml"))}
    assert found["dmf_sigma1"].shape == (41,) and found["dmf_sigma1"].axes[0].values[11] == 5.05
    assert found["valley_eta"].checks == {"valley-amplitude": 0.02}
    assert found["mean_field_seed"].dims == ("seed",)
    assert all(len({p.key for p in s.points}) == len(s.points) for s in found.values())


def test_cli_scheduler_and_workers_usage(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EFFDYN_SCHEDULER", raising=False)
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[problem]\ntype = "MinimalValley"\n[start]\ntheta0 = [0.1, 3.0]\n'
                    '[gd]\neta = 0.3\nsteps = 10\n[axes]\n"gd.eta" = [0.1, 0.2]\n')
    assert main(["sweep", str(path), "--scheduler", "slurm", "--out", str(tmp_path / "o")]) == 2
    assert "--workers N" in capsys.readouterr().err
    assert main(["sweep", str(path), "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"]) == 2
    assert main(["sweep", str(path), "--workers", "0"]) == 2
    assert main(["sweep", "--plot-only", str(tmp_path / "none.nc")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_laws_checked_per_point_without_rerunning(tmp_path):
    doc = {"name": "valley", "problem": {"type": "MinimalValley", "zeta": 1.0, "eps": 0.01},
           "start": {"theta0": [0.1, 3.0]}, "gd": {"eta": 0.3, "steps": 1800},
           "axes": {"gd.eta": [0.4, 0.45, 0.5]}}
    res = run_sweep(doc, tmp_path, serial=True, log=None)
    assert res.computed == 3 and "check_valley_amplitude_ok" not in res.dataset
    onset = res.dataset["gd_eos_onset"].values
    np.testing.assert_allclose(onset, (2 / np.array([0.4, 0.45, 0.5]) - 3) / (np.array([0.4, 0.45, 0.5]) * 0.01),
                               rtol=0.01)  # y grows by ηε per step from 3 until it passes 2/η
    doc["sweep"] = {"checks": {"valley-amplitude": 0.01, "balanced-sharpness": 1e-3}}
    again = run_sweep(doc, tmp_path, serial=True, log=None)  # checks are not part of the key
    ds = again.dataset
    assert again.computed == 0
    assert np.all(ds["check_valley_amplitude_expected"].values == np.sqrt(0.02))
    amp = ds["check_valley_amplitude_observed"].values
    assert np.all(np.abs(amp / np.sqrt(0.02) - 1) < 0.01) and ds["check_valley_amplitude_ok"].values.tolist() == [1] * 3
    assert ds["check_balanced_sharpness_ok"].values.tolist() == [-1] * 3  # not a matrix factorisation
    doc["sweep"] = {"checks": {"valley-amplitude": 1e-6}}
    assert run_sweep(doc, tmp_path, serial=True, log=None).dataset["check_valley_amplitude_ok"].values.tolist() == [0] * 3


def test_effdyn_plot_draws_a_sweep_file(tmp_path, capsys):
    from effdyn.cli import main

    res = run_sweep(tiny(axes={"gd.eta": [0.07, 0.077]}), tmp_path, serial=True, log=None)
    assert main(["plot", str(res.path), "--out", str(tmp_path / "figs")]) == 0
    written = capsys.readouterr().out.split()
    assert written and all(p.endswith(".png") and (tmp_path / "figs").exists() for p in written)
