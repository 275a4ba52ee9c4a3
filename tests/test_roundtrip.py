"""Results a researcher can reload: every object saved and read back equal array for array,
comparisons of reloaded results equal to those made in memory, and files that are not
effdyn results (or are crafted) refused without running anything."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

import effdyn as ed
from effdyn.io import load_dataset, save_dataset
from effdyn.outcomes import Status

pytestmark = pytest.mark.xdist_group("roundtrip")

VALLEY = ed.problems.MinimalValley()
THETA0 = [0.1, 6.5]  # near the edge: EoS within a few dozen steps
STEPS = 120


def assert_tree_equal(a, b, where="tree"):
    """Equal nested data: dicts, lists, tuples, arrays (dtype and bits), numbers, strings."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            assert_tree_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert np.asarray(a).dtype == np.asarray(b).dtype, f"{where}: dtype"
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} vs {b!r}"


def assert_same_metrics(a, b):
    np.testing.assert_equal(a.to_dict(), b.to_dict())


@pytest.fixture(scope="module")
def valley_gd():
    return ed.gd(VALLEY, THETA0, 0.3, STEPS, n_eigs=2)


# --- GD trajectories -----------------------------------------------------------------------

GD_FIELDS = ("k", "loss", "grad_norm", "theta", "theta_k", "eig_k", "eigs", "top_eigvec", "half_amp",
             "half_amp_subspace", "theta0", "_mid", "_mid_k")


@pytest.mark.parametrize("options", [
    {"n_eigs": 2},
    {"theta_every": 3, "eig_every": 5, "record_eigvecs": False, "compiled": False},
    {"eig_every": None},
    {"loss_bound": 50.0, "throw": False},  # diverges: a partial record
], ids=["default", "strides", "no-eigs", "diverged"])
def test_gd_trajectory_round_trip(options, tmp_path):
    eta = 0.5 if "loss_bound" in options else 0.3  # 2/η = 4 below the sharpness 6.5: blows up at step 6
    traj = ed.gd(VALLEY, THETA0, eta, STEPS, **options)
    back = ed.GDTrajectory.load(traj.save(tmp_path / "gd.nc"))
    assert type(back) is ed.GDTrajectory and type(ed.load(tmp_path / "gd.nc")) is ed.GDTrajectory
    for name in GD_FIELDS:
        x, y = getattr(traj, name), getattr(back, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    for name in ("eta", "variant", "status", "message", "diverged_at", "cause", "n_hvp", "eig_checks",
                 "eig_corrections", "loss_min", "problem_config", "problem_identity"):
        assert getattr(back, name) == getattr(traj, name), name
    assert isinstance(back.status, Status)
    assert back.metadata["path"] == str(tmp_path / "gd.nc") and back.metadata["git_commit"]
    assert back.metadata["versions"]["numpy"] == np.__version__
    assert back.config == json.loads(json.dumps(traj.config))
    if "loss_bound" in options:
        assert back.status == "diverged" and back.cause == "blow-up" and back.diverged_at == traj.diverged_at
    for method in ("midpoint", "loss_average", "amplitude"):
        if options.get("eig_every", 1) is None and method == "amplitude":
            continue
        for x, y in zip(getattr(traj, method)(), getattr(back, method)()):
            np.testing.assert_array_equal(x, y)


# --- solutions -----------------------------------------------------------------------------

def _dmf():
    p = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(3.0),
                                            init="identity", init_scale=1.0)
    return p, p.init(0)


def _teacher():
    p = ed.problems.teacher_student(4, n=12)
    return p, p.init(1)


SOLUTIONS = {
    "gradient flow [map]": lambda: (ed.models.GradientFlow(VALLEY, 0.3), THETA0, "map"),
    "free energy [map]": lambda: (ed.models.FreeEnergyFlow(VALLEY, 0.3), THETA0, "map"),
    "free energy [LSODA]": lambda: (ed.models.FreeEnergyFlow(VALLEY, 0.3, storage="log-factor"), THETA0,
                                    "scipy:LSODA"),
    "central flow": lambda: (ed.models.CentralFlow(VALLEY, 0.3), THETA0, "scipy:LSODA"),
    "self-stabilization": lambda: (ed.models.SelfStabilization(VALLEY, 0.3), THETA0, "map"),
    "rod flow": lambda: (ed.models.RodFlow(VALLEY, 0.3), THETA0, "scipy:RK45"),
    "edge flow": lambda: (ed.models.EdgeFlow(VALLEY, 0.3), THETA0, "scipy:LSODA"),
    "sharpness reduction": lambda: (ed.models.SharpnessReductionFlow(_dmf()[0], 0.3), _dmf()[1], "map"),
    "mean field": lambda: (ed.models.MeanFieldKinetic(_teacher()[0], 0.5), _teacher()[1], "map"),
}


@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_solution_round_trip_gives_the_same_comparison(name, tmp_path):
    model, theta0, solver = SOLUTIONS[name]()
    steps = STEPS if model.problem is VALLEY else 15
    sol = ed.solve(model, theta0, steps, solver=solver, save_every=1 if solver == "map" else 2.5, seed=7)
    back = ed.Solution.load(sol.save(tmp_path / "sol.nc"))
    assert type(back.model) is type(model) and back.model.identity() == model.identity()
    assert back.model.problem.identity() == model.problem.identity()
    for field in ("k", "y", "theta0"):
        x, y = getattr(sol, field), getattr(back, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), field
    assert_tree_equal(sol.records, back.records, "records")
    assert_tree_equal(sol.run.to_dict(), back.run.to_dict(), "run")
    assert sol.stats.as_dict() == back.stats.as_dict()
    assert (back.rtol, back.atol, back.seed) == (sol.rtol, sol.atol, 7) and back.metadata["seed"] == 7
    assert back.metadata["config"]["model"] == model.name and back.metadata["config"]["eta"] == model.eta
    assert_tree_equal(dict(sol.observables), dict(back.observables), "observables")
    # compare(load(a), load(b)) equals the comparison made in memory, exactly
    traj = ed.gd(model.problem, theta0, model.eta, steps, n_eigs=2)
    gd_back = ed.load(traj.save(tmp_path / "gd.nc"))
    assert_same_metrics(ed.compare(gd_back, back, window="all"), ed.compare(traj, sol, window="all"))


def test_combined_file_holds_gd_and_several_solutions(valley_gd, tmp_path):
    s_fe = ed.solve(ed.models.FreeEnergyFlow(VALLEY, 0.3), THETA0, STEPS, solver="map")
    s_cf = ed.solve(ed.models.CentralFlow(VALLEY, 0.3), THETA0, STEPS, solver="scipy:LSODA", save_every=2)
    s_gf = ed.solve(ed.models.GradientFlow(VALLEY, 0.3), THETA0, STEPS, solver="map")
    path = ed.save(tmp_path / "all.nc", s_fe, valley_gd, s_cf, labels=["fe", "cf"])
    res = ed.load(path)
    assert isinstance(res, ed.Results) and list(res.solutions) == ["fe", "cf"] and res.path == path
    for name in GD_FIELDS:
        x, y = getattr(valley_gd, name), getattr(res.gd, name)
        assert (x is None and y is None) or np.array_equal(x, y), name
    for label, sol in (("fe", s_fe), ("cf", s_cf)):
        np.testing.assert_array_equal(res[label].y, sol.y)
        assert_tree_equal(res[label].run.to_dict(), sol.run.to_dict(), label)
        in_memory = ed.compare(valley_gd, sol)
        assert_same_metrics(ed.compare(res.gd, res[label]), in_memory)
        assert_same_metrics(res.metrics[label], in_memory)  # the stored table
        assert_same_metrics(res.compare(label), in_memory)
    # the objects share one rebuilt problem
    assert res["fe"].model.problem is res["cf"].model.problem
    # default labels: the models' names, numbered when they repeat
    res2 = ed.load(ed.save(tmp_path / "two.nc", s_gf, s_gf))
    assert list(res2.solutions) == ["gradient_flow", "gradient_flow (2)"] and res2.gd is None
    # the file is self-describing netCDF with CF labels
    ds = load_dataset(path)
    assert ds.attrs["effdyn_format"] == "effdyn-results" and ds.attrs["effdyn_format_version"] == 1
    assert ds["s1__state"].attrs["long_name"] == "model state vector y (cf)"
    assert ds["gd__loss"].attrs["long_name"] == "loss E(theta) (GD)"
    with pytest.raises(ValueError, match="holds several results, not a Solution; read it with effdyn.load"):
        ed.Solution.load(path)


def test_validation_case_file_loads_as_results(tmp_path):
    from effdyn.validation.cases import ModelSpec, Setup
    from effdyn.validation.runner import run_setup

    models = (ModelSpec("gradient flow", "GradientFlow", solver="map"),
              ModelSpec("fe map", "FreeEnergyFlow", {"rank": 1}, {"sigma_seed": "gd"}, solver="map"),
              ModelSpec("rod", "RodFlow", solver="map"))  # not applicable: a row without a solution
    setup = Setup(VALLEY, np.array(THETA0), 0.3, 60, models, gd_options={"n_eigs": 2})
    result = run_setup("tiny", "tiny valley", setup, out_dir=tmp_path, log=lambda msg: None, figures=False)
    res = ed.load(tmp_path / "tiny.nc")
    assert list(res.solutions) == ["gradient flow", "fe map"] and res.attrs["case"] == "tiny"
    np.testing.assert_array_equal(res.gd.loss, result.gd.loss)
    for row in result.models:
        if row.solution is None:
            assert res.metrics[row.label] is None
            continue
        np.testing.assert_array_equal(res[row.label].y, row.solution.y)
        assert_same_metrics(ed.compare(res.gd, res[row.label]), row.metrics)
        assert_same_metrics(res.metrics[row.label], row.metrics)
    # the suite's own series stay where the figures and reports read them
    assert "gd_loss" in load_dataset(tmp_path / "tiny.nc") and "fe_map__time_avg_loss" in load_dataset(
        tmp_path / "tiny.nc")


def test_two_layer_net_is_rebuilt_from_its_data(tmp_path):
    p, theta0 = _teacher()
    sol = ed.solve(ed.models.GradientFlow(p, 2.0), theta0, 10, solver="map")
    back = ed.load(sol.save(tmp_path / "net.nc"))
    assert back.model.problem is not p
    np.testing.assert_array_equal(back.model.problem.X, p.X)
    np.testing.assert_array_equal(back.model.problem.y, p.y)
    assert back.model.problem.identity() == p.identity()
    np.testing.assert_array_equal(back.loss, sol.loss)


# --- problems effdyn cannot rebuild ----------------------------------------------------------

def test_from_jax_solutions_need_their_problem(tmp_path):
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def loss(theta):
        return 0.5 * (theta[1] + theta[0]) * theta[0] ** 2 - 0.01 * (theta[0] + theta[1])

    def other(theta):
        return 0.5 * (theta[1] + theta[0]) * theta[0] ** 2 - 0.03 * (theta[0] + theta[1])

    p = ed.problems.from_jax(loss, dim=2, name="valley")
    q = ed.problems.from_jax(other, dim=2, name="valley")
    traj = ed.gd(p, THETA0, 0.3, 12)
    sol = ed.solve(ed.models.GradientFlow(p, 0.3), THETA0, 12, solver="map")
    path = ed.save(tmp_path / "jax.nc", traj, sol)
    with pytest.raises(TypeError, match=r"on a problem of class JaxProblem, which effdyn cannot rebuild .*`problem=`"):
        ed.load(path)
    with pytest.raises(ValueError, match=r"`problem` is not the problem of the results in .*jax.nc.*another loss"):
        ed.load(path, problem=q)
    res = ed.load(path, problem=p)
    assert res["gradient_flow"].model.problem is p
    assert_same_metrics(ed.compare(res.gd, res["gradient_flow"], window="all"),
                        ed.compare(traj, sol, window="all"))
    assert ed.load(path, problem=q, check=False)["gradient_flow"].model.problem is q
    with pytest.raises(TypeError, match="`problem` must be an effdyn Problem"):
        ed.load(path, problem="valley")


# --- refusals ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, valley_gd):
    folder = tmp_path_factory.mktemp("saved")
    sol = ed.solve(ed.models.GradientFlow(VALLEY, 0.3), THETA0, 30, solver="map")
    return valley_gd.save(folder / "gd.nc"), sol.save(folder / "sol.nc")


def _rewrite(src, dst, change):
    ds = load_dataset(src)
    change(ds)
    return save_dataset(ds, dst)


def test_other_files_and_versions_are_refused_by_name(saved, tmp_path):
    gd_path, sol_path = saved
    with pytest.raises(FileNotFoundError, match="`path` '.*missing.nc' does not exist"):
        ed.load(tmp_path / "missing.nc")
    with pytest.raises(TypeError, match="`path` must be a file path"):
        ed.load(42)
    import xarray as xr

    plain = save_dataset(xr.Dataset({"x": ("k", [1.0, 2.0])}), tmp_path / "plain.nc")
    with pytest.raises(ValueError, match=r"`path` '.*plain.nc' is not an effdyn results file"):
        ed.load(plain)
    newer = _rewrite(sol_path, tmp_path / "newer.nc", lambda ds: ds.attrs.update(effdyn_format_version=99))
    with pytest.raises(ValueError, match=r"`path` '.*newer.nc' has results format version 99; this effdyn reads "
                                         r"version 1"):
        ed.load(newer)
    (tmp_path / "garbage.nc").write_bytes(b"not a netCDF file" * 10)
    with pytest.raises(ValueError, match=r"`path` '.*garbage.nc' is not a readable netCDF-4 file"):
        ed.load(tmp_path / "garbage.nc")
    with pytest.raises(ValueError, match=r"gd.nc' holds a GDTrajectory, not a Solution"):
        ed.Solution.load(gd_path)
    with pytest.raises(ValueError, match=r"sol.nc' holds a Solution, not a GDTrajectory"):
        ed.GDTrajectory.load(sol_path)


def test_crafted_files_execute_nothing(saved, tmp_path, monkeypatch):
    _, sol_path = saved
    calls = []

    def no_pickle(*args, **kwargs):
        calls.append(args)
        raise AssertionError("pickle used while loading")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    # a class named in the file is looked up in effdyn's tables, never imported
    odd = _rewrite(sol_path, tmp_path / "odd.nc", lambda ds: ds.attrs.update(problem_class="os:system"))
    with pytest.raises(TypeError, match=r"problem of class os:system, which effdyn cannot rebuild"):
        ed.load(odd)
    ident = json.loads(load_dataset(sol_path).attrs["model_identity"])
    ident["class"] = "subprocess.Popen"
    model = _rewrite(sol_path, tmp_path / "model.nc", lambda ds: ds.attrs.update(model_identity=json.dumps(ident)))
    with pytest.raises(ValueError, match=r"model class subprocess.Popen, which is not registered"):
        ed.load(model)

    # a run state holding a pickled object array is refused, not unpickled
    def pickled_run_state(ds):
        buf = io.BytesIO()
        doc = json.dumps({"format": "effdyn-run-state", "version": 1, "tree": {"__array__": "a0"}})
        np.savez(buf, header=np.array(doc), a0=np.array([print], dtype=object))
        ds["run_state"] = ("run_state_byte2", np.frombuffer(buf.getvalue(), dtype=np.uint8))

    bad = _rewrite(sol_path, tmp_path / "bad.nc", pickled_run_state)
    with pytest.raises(ValueError, match=r"bad.nc': the saved run state cannot be read .*allow_pickle"):
        ed.load(bad)
    assert calls == []


def test_save_refuses_bad_arguments(valley_gd, tmp_path):
    sol = ed.solve(ed.models.GradientFlow(VALLEY, 0.3), THETA0, 10, solver="map")
    path = tmp_path / "x.nc"
    with pytest.raises(TypeError, match="`objects`: nothing to save"):
        ed.save(path)
    with pytest.raises(TypeError, match="`objects` holds two GD trajectories"):
        ed.save(path, valley_gd, valley_gd)
    with pytest.raises(TypeError, match="`objects` must be GDTrajectory and Solution objects; argument 3 is a dict"):
        ed.save(path, valley_gd, {})
    with pytest.raises(ValueError, match="`labels` has 2 entries for 1 solutions"):
        ed.save(path, sol, labels=["a", "b"])
    with pytest.raises(ValueError, match="`labels` must be distinct"):
        ed.save(path, sol, sol, labels=["a", "a"])
    with pytest.raises(TypeError, match="`labels` must be a list of strings"):
        ed.save(path, sol, labels="a")
    assert not path.exists()
