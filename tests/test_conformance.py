"""The model contract (effdyn/models/base.py), checked for every model and variant.

A new model is covered by adding one :class:`Entry` to ``ENTRIES``: how to build it, where
to start, a solver family to run it with, bad constructor arguments with the name the
error must carry, and an alternative value for *every* parameter (a parameter without one
fails :func:`test_every_parameter_is_part_of_identity`, so nothing that changes the numbers
can be left out of a checkpoint's identity).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import effdyn as ed
from effdyn.errors import IntegrationError
from effdyn.models.run_state import RunState
from effdyn.solvers import resume

pytestmark = pytest.mark.xdist_group("conformance")

M = ed.models
VALLEY = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
DMF = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(5.5),
                                          init="balanced", init_scale=0.3)
SCALAR = ed.problems.ScalarProduct(depth=3, target=1.0)


def _net():
    from effdyn.problems.two_layer import teacher_student

    return teacher_student(6, n=12, d=3, seed=0)


NET = _net()


@dataclass
class Entry:
    id: str
    make: Callable  # **overrides -> model
    theta0: object
    solver: str  # the family the short runs use
    steps: int = 40
    initial: dict = field(default_factory=dict)
    bad: tuple = ()  # ((kwargs, argument name in the message), ...)
    other: dict = field(default_factory=dict)  # parameter -> another valid value
    #: the drift needs nothing fixed at the start (a throwaway run state gives the same numbers)
    start_free: bool = True
    #: the drift or map calls the problem (so a failing problem makes it fail)
    calls_problem: bool = True


def _fe(problem, eta, **kw):
    return lambda **o: M.FreeEnergyFlow(problem, eta, **{**kw, **o})


FE_OTHER = {"eta": 0.29, "rank": 2, "sigma_form": None, "storage": None, "n_track": 2, "threshold": 3.0, "clip": 0.2,
            "floor": 1e-20, "dense_max": 0, "relative_sigma_tol": True, "closure": None}

ENTRIES = [
    Entry("gradient-flow", lambda **o: M.GradientFlow(VALLEY, **{"eta": 0.3, **o}), [0.1, 6.0], "scipy:RK45",
          bad=(({"eta": -1.0}, "eta"),), other={"eta": 0.31}),
    Entry("free-energy-factor", _fe(VALLEY, 0.3, storage="factor"), [0.1, 6.0], "scipy:LSODA",
          bad=(({"rank": 0}, "rank"), ({"clip": 2.0}, "clip"), ({"storage": "x"}, "storage")),
          other={**FE_OTHER, "rank": None, "n_track": None, "storage": "log-factor", "relative_sigma_tol": True}),
    Entry("free-energy-log-factor", _fe(VALLEY, 0.3, storage="log-factor"), [0.1, 6.0], "scipy:LSODA",
          bad=(({"relative_sigma_tol": True}, "relative_sigma_tol"),),
          other={**FE_OTHER, "rank": None, "n_track": None, "storage": "factor", "relative_sigma_tol": None,
                 "closure": "chord"}),
    Entry("free-energy-dense", _fe(VALLEY, 0.3, storage="dense"), [0.1, 6.0], "scipy:RK45",
          bad=(({"closure": "chord"}, "closure"),),
          other={**FE_OTHER, "rank": None, "n_track": None, "storage": "factor"}),
    Entry("free-energy-rate", _fe(VALLEY, 0.3, sigma_form="rate"), [0.1, 6.0], "scipy:RK45",
          bad=(({"storage": "factor"}, "sigma_form"), ({"floor": 1e-9}, "floor")),
          other={**FE_OTHER, "rank": None, "n_track": None, "sigma_form": "log", "storage": None, "floor": None,
                 "relative_sigma_tol": True}),
    Entry("free-energy-chord", _fe(VALLEY, 0.3, storage="log-factor", closure="chord"), [0.1, 6.0], "map",
          bad=(({"rank": 2}, "closure"),),
          other={**FE_OTHER, "rank": None, "n_track": None, "storage": "factor", "relative_sigma_tol": None,
                 "closure": "second-order"}),
    Entry("free-energy-rank2-tracked", _fe(DMF, 0.077, rank=2, dense_max=4), DMF.init(0), "map", steps=20,
          bad=(({"n_track": 1}, "n_track"),),
          other={**FE_OTHER, "eta": 0.076, "rank": 1, "n_track": 4, "dense_max": 64, "storage": "factor",
                 "relative_sigma_tol": None}),
    Entry("central-flow", lambda **o: M.CentralFlow(VALLEY, 0.3, **o), [0.1, 6.0], "scipy:LSODA",
          bad=(({"window": 1.5}, "window"), ({"restoring": -1.0}, "restoring"), ({"max_rank": 0}, "max_rank")),
          other={"eta": 0.31, "max_rank": 1, "window": 0.1, "restoring": 0.5, "sdcp_tol": 1e-9}),
    *[Entry(f"self-stabilization-{mode}",
            (lambda mode: lambda **o: M.SelfStabilization(VALLEY, 0.3, **{"mode": mode, **o}))(mode),
            [0.1, 6.0], "map", bad=(({"mode": "x"}, "mode"), ({"projection_steps": 0}, "projection_steps")),
            other={"eta": 0.31, "mode": "predicted" if mode != "predicted" else "generalized", "projection_steps": 2,
                   "alpha": None, "beta": None})
      for mode in ("constrained", "predicted", "generalized")],
    Entry("self-stabilization-reduced", lambda **o: M.SelfStabilization(VALLEY, 0.3, "reduced", **o), [0.1, 6.0],
          "scipy:DOP853", bad=(({"beta": -1.0}, "beta"),), start_free=False, calls_problem=False,
          other={"eta": 0.31, "mode": "predicted", "projection_steps": 2, "alpha": 0.01, "beta": 1.0}),
    *[Entry(f"sharpness-reduction-{variant}",
            (lambda variant: lambda **o: M.SharpnessReductionFlow(SCALAR, 0.01, **{"variant": variant, **o}))(variant),
            [2.0, 1.0, 0.6], "scipy:LSODA", steps=200,
            bad=(({"variant": "x"}, "variant"), ({"rank_tol": 0.0}, "rank_tol")),
            other={"eta": 0.02, "variant": "sqrt" if variant == "normalized" else "normalized", "rank_tol": 1e-7})
      for variant in ("normalized", "sqrt")],
    Entry("rod-flow-rank1", lambda **o: M.RodFlow(VALLEY, 0.3, **o), [0.1, 6.0], "scipy:LSODA",
          bad=(({"sigma": "x"}, "sigma"), ({"delta_floor": "x"}, "delta_floor"), ({"delta_floor": -1.0}, "delta_floor")),
          other={"eta": 0.31, "sigma": "dense", "delta_floor": None}),
    Entry("rod-flow-dense", lambda **o: M.RodFlow(VALLEY, 0.3, "dense", **o), [0.1, 6.0], "scipy:LSODA",
          other={"eta": 0.31, "sigma": "rank1", "delta_floor": 1e-10}),
    Entry("edge-flow", lambda **o: M.EdgeFlow(VALLEY, 0.3, **o), [0.1, 6.0], "map",
          bad=(({"rho_floor": "x"}, "rho_floor"), ({"rho_floor": -1.0}, "rho_floor")),
          other={"eta": 0.31, "rho_floor": None}),
    *[Entry(f"mean-field-{form}",
            (lambda form: lambda **o: M.MeanFieldKinetic(NET, **{"eta_mf": 0.5, "form": form, **o}))(form),
            NET.init(0), "map", steps=20,
            bad=(({"eta_mf": 0.0}, "eta_mf"), ({"form": "x"}, "form"), ({"clip": 1.5}, "clip")),
            other={"eta_mf": 0.4, "rank": 2, "form": "log" if form == "linear" else "linear", "krylov_dim": 6,
                   "clip": 0.2, "map_substeps": 3, "dense_max": 0, "eig_tol": 1e-8})
      for form in ("linear", "log")],
]
IDS = [e.id for e in ENTRIES]


def _entry(request_id) -> Entry:
    return ENTRIES[IDS.index(request_id)]


def _short(entry, model=None, **kw):
    model = entry.make() if model is None else model
    solver = kw.pop("solver", entry.solver)
    opts = {} if solver == "map" else {"rtol": 1e-6, "atol": 1e-9}
    return ed.solve(model, entry.theta0, entry.steps, solver=solver, initial=entry.initial, progress=False,
                    **opts, **kw)


@pytest.fixture
def interactive_sigint():
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


# --- parameters and identity -----------------------------------------------------------------

@pytest.mark.parametrize("eid", IDS)
def test_a_model_is_a_value(eid):
    entry = _entry(eid)
    model = entry.make()
    assert dataclasses.is_dataclass(model)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.eta = 1.0
    twin = entry.make()
    assert twin == model and twin.identity() == model.identity() and repr(twin) == repr(model)
    cfg = model.config()
    for f in dataclasses.fields(model):
        assert f.name in cfg  # config() is derived from the declaration


@pytest.mark.parametrize("eid", IDS)
def test_every_parameter_is_part_of_identity(eid):
    entry = _entry(eid)
    model = entry.make()
    names = [f.name for f in dataclasses.fields(model) if f.name != "problem"]
    missing = [n for n in names if n not in entry.other]
    assert not missing, f"give ENTRIES[{eid!r}].other a value for {missing}"
    for name, value in entry.other.items():
        if value is None or name not in names:
            continue
        variant = dataclasses.replace(model, **{name: value})
        assert variant.identity() != model.identity(), name
        assert variant != model


@pytest.mark.parametrize("eid", IDS)
def test_bad_constructor_input_names_the_argument(eid):
    entry = _entry(eid)
    for kwargs, arg in entry.bad:
        with pytest.raises((TypeError, ValueError), match=f"`{arg}[`=]"):
            entry.make(**kwargs)


# --- state and dynamics ----------------------------------------------------------------------

@pytest.mark.parametrize("eid", IDS)
def test_drift_and_map_step_shapes(eid):
    entry = _entry(eid)
    model = entry.make()
    y0, run = model.start(entry.theta0, **entry.initial)
    assert isinstance(run, RunState) and y0.dtype == np.float64 and y0.shape == (model.state_size,)
    if "scipy" in model.supports:
        d = model.drift(0.0, y0, run)
        assert d.shape == y0.shape and d.dtype == np.float64 and np.all(np.isfinite(d))
        if entry.start_free:  # a throwaway run state gives the same numbers
            np.testing.assert_array_equal(model.drift(0.0, y0), d)
    if "map" in model.supports:
        y1 = model.map_step(0, y0, run)
        assert y1.shape == y0.shape and y1.dtype == np.float64 and np.all(np.isfinite(y1))


@pytest.mark.parametrize("eid", IDS)
def test_wrong_length_states_are_refused(eid):
    entry = _entry(eid)
    model = entry.make()
    with pytest.raises(ValueError, match="`theta0` must have length"):
        model.start(np.zeros(model.dim + 1), **entry.initial)
    with pytest.raises(ValueError, match="`state0` must have length"):
        ed.solve(model, state0=np.zeros(model.state_size + 1), steps=2, solver=entry.solver)


@pytest.mark.parametrize("eid", IDS)
def test_required_observables_and_work_counters(eid, monkeypatch):
    entry = _entry(eid)
    sol = _short(entry)
    assert sol.success, sol.message
    before = sol.run.to_dict()
    stats = (sol.stats.eigensolves, sol.stats.hvps, sol.stats.gradients)
    # observables read what the solve recorded: no eigen-solve, no dense Hessian
    import effdyn.spectrum as spectrum

    def forbidden(*a, **k):
        raise AssertionError("observables computed a spectrum")

    monkeypatch.setattr(spectrum.EigenTracker, "_update", forbidden)
    monkeypatch.setattr(spectrum, "top_eigenpairs", forbidden)
    monkeypatch.setattr(type(model_problem := sol.model.problem), "_hessian", forbidden, raising=False)
    obs = sol.observables
    n, P = len(sol.k), sol.model.dim
    for name, shape in (("theta", (n, P)), ("loss", (n,)), ("time_avg_loss", (n,)), ("sharpness", (n,)),
                        ("amplitude", (n,)), ("amplitude_subspace", (n,))):
        assert np.shape(obs[name]) == shape, name
        assert np.all(np.isfinite(obs[name])), name
    monkeypatch.undo()
    assert model_problem is sol.model.problem
    # ... and change nothing: the run state is as the solve left it, a second solve is identical
    _assert_same_tree(sol.run.to_dict(), before)
    again = _short(entry)
    np.testing.assert_array_equal(again.y, sol.y)
    for name in sol.records:
        np.testing.assert_array_equal(again.records[name], sol.records[name])
    assert (again.stats.eigensolves, again.stats.hvps, again.stats.gradients) == stats
    assert sol.stats.gradients + sol.stats.hvps > 0  # the work is counted


def _assert_same_tree(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_tree(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


# --- failures inside model code ------------------------------------------------------------

_BUDGET = {"calls": 0, "limit": None}


def _raising_copy(problem):
    """The same problem whose gradient (user code) raises after a budget of calls."""
    cls = type(problem)

    def counted(name):
        inner = getattr(cls, name)

        def method(self, *args, **kwargs):
            _BUDGET["calls"] += 1
            if _BUDGET["limit"] is not None and _BUDGET["calls"] > _BUDGET["limit"]:
                raise FloatingPointError("user code failed")
            return inner(self, *args, **kwargs)

        return method

    names = [n for n in ("_grad", "_grad_third", "_third", "_hessian", "_hvp", "run_kernel") if hasattr(cls, n)]
    raising = type(f"Raising{cls.__name__}", (cls,), {n: counted(n) for n in names})
    out = copy.copy(problem)
    out.__class__ = raising
    return out


@pytest.mark.parametrize("eid", IDS)
def test_errors_inside_drift_or_map_keep_the_partial_solution(eid):
    entry = _entry(eid)
    model = entry.make()
    extra = {}
    if entry.calls_problem:
        problem = _raising_copy(model.problem)
        broken = dataclasses.replace(model, problem=problem)
    else:  # nothing in its drift calls the problem: user code fails in the callback instead
        broken = model

        def callback(k, y):
            _BUDGET["calls"] += 1
            if _BUDGET["calls"] > _BUDGET["limit"]:
                raise FloatingPointError("user code failed")

        extra["callback"] = callback
    _BUDGET.update(calls=0, limit=None)
    broken.start(entry.theta0, **entry.initial)
    start_calls = _BUDGET["calls"]
    limit = start_calls + 5 if entry.calls_problem else 1
    _BUDGET.update(calls=0, limit=limit)
    try:
        with pytest.raises(IntegrationError) as info:
            _short(entry, broken, **extra)
        err = info.value
        assert err.cause == "user code raised" and isinstance(err.__cause__, FloatingPointError)
        assert err.partial is not None and err.partial.status == "failed" and len(err.partial.k) >= 1
        _BUDGET.update(calls=0, limit=limit)
        sol = _short(entry, broken, throw=False, **extra)
        assert sol.status == "failed" and "user code failed" in sol.message
        np.testing.assert_array_equal(sol.k, err.partial.k)
    finally:
        _BUDGET.update(calls=0, limit=None)


# --- checkpoints ----------------------------------------------------------------------------

def _sigint_at(k_stop):
    fired = []

    def callback(k, y):
        if k >= k_stop and not fired:
            fired.append(k)
            os.kill(os.getpid(), signal.SIGINT)

    return callback


@pytest.mark.parametrize("eid", IDS)
def test_checkpoint_resume_is_bit_identical_and_refuses_other_models(eid, tmp_path, interactive_sigint):
    entry = _entry(eid)
    solver = entry.solver if entry.solver in ed.solvers.CHECKPOINT_SOLVERS else "scipy:LSODA"
    ref = _short(entry, solver=solver)
    path = tmp_path / "c.ckpt"
    with pytest.raises(IntegrationError, match="interrupted"):
        _short(entry, solver=solver, checkpoint=path, checkpoint_every=entry.steps / 4,
               callback=_sigint_at(entry.steps / 2))
    sol = resume(entry.make(), path)
    np.testing.assert_array_equal(sol.k, ref.k)
    np.testing.assert_array_equal(sol.y, ref.y)
    for name in ref.records:
        np.testing.assert_array_equal(sol.records[name], ref.records[name])
    model = entry.make()
    for name, value in entry.other.items():
        if value is None:
            continue
        with pytest.raises(ValueError, match=rf"differs from the checkpoint's model in \[.*'{name}'"):
            resume(dataclasses.replace(model, **{name: value}), path)


# --- JAX -------------------------------------------------------------------------------------

@pytest.mark.parametrize("eid", [e.id for e in ENTRIES])
def test_jax_drift_equals_numpy_drift(eid):
    entry = _entry(eid)
    model = entry.make()
    y0, run = model.start(entry.theta0, **entry.initial)
    if "diffrax" not in model.supports:
        with pytest.raises(ValueError, match="`solver`"):
            ed.solve(model, entry.theta0, 2, solver="diffrax:Tsit5", initial=entry.initial)
        return
    import inspect

    from effdyn._jax import import_jax

    _, jnp = import_jax()
    f = model.jax_drift()
    args = model.jax_args(run) if "run" in inspect.signature(model.jax_args).parameters else model.jax_args()
    y1 = y0 + 1e-3 * model.drift(0.0, y0, run)  # a second, generic point
    for y in (y0, y1):
        want = model.drift(0.0, y, run)
        got = np.asarray(f(0.0, jnp.asarray(y), args))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * max(1.0, np.max(np.abs(want))))
