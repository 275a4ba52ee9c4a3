"""Divergence handling and reproducibility (issue 8).

Every way a run can go wrong is provoked on purpose and must end in
``effdyn.IntegrationError`` with the step, time and cause where it happened (or, with
``throw=False``, in a partial result carrying that status): blow-up and non-finite states
for GD and the models, a drift that returns NaN, step-size underflow at a singularity, and
a covariance that stops being positive semi-definite. Then: same seed, same bits.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest

import effdyn as ed
from effdyn.errors import IntegrationError
from effdyn.io import load_dataset
from effdyn.models import FreeEnergyFlow
from effdyn.models.base import AbstractModel
from effdyn.problems.base import Problem

pytestmark = pytest.mark.xdist_group("reliability")


@dataclasses.dataclass(frozen=True)
class Toy(AbstractModel):
    """dy/dk = f(k, y) with a JAX twin for diffrax; observables are placeholders."""

    problem: Problem
    eta: float
    f: Callable
    jax_f: Callable | None = None

    name = "toy"

    @property
    def state_size(self):
        return self.dim

    def make_run(self, run):
        pass

    def drift(self, k, y, run=None):
        return self.f(k, y)

    def jax_drift(self):
        return self.jax_f

    def record(self, k, y, run):
        return {}

    def observables(self, k, Y, records=None, run=None):
        z = np.zeros(len(k))
        return {"theta": Y, "loss": z, "time_avg_loss": z, "sharpness": z, "amplitude": z}


ONE_D = ed.problems.Quadratic(np.eye(1))


# --- blow-up: GD and the step-exact map at ηλ > 2 ---------------------------------------

A_UNSTABLE = np.diag([1.0, 0.5])
ETA_UNSTABLE = 2.5  # ηλ = 2.5 > 2 on the first axis: |1 − ηλ| = 1.5 per step


def _gd_closed_form(k):
    # GD on a diagonal quadratic: θ_k = (1 − ηλ)^k θ_0 exactly (each factor is exact in binary)
    factors = 1.0 - ETA_UNSTABLE * np.diag(A_UNSTABLE)
    return np.array([factors**j for j in range(k + 1)])


def test_gd_blow_up_at_the_predicted_step():
    prob = ed.problems.Quadratic(A_UNSTABLE)
    theta = _gd_closed_form(60)
    loss = 0.5 * np.sum(np.diag(A_UNSTABLE) * theta**2, axis=1)
    k_star = int(np.argmax(loss > 1e10))  # first step past the default loss_bound
    with pytest.raises(IntegrationError) as info:
        ed.gd(prob, [1.0, 1.0], ETA_UNSTABLE, 200)
    err = info.value
    assert (err.cause, err.step, err.time) == ("blow-up", k_star, float(k_star))
    assert f"step {k_star}" in str(err)
    part = err.partial
    assert part.status == "diverged" and part.k[-1] == k_star - 1
    np.testing.assert_allclose(part.loss, loss[:k_star], rtol=1e-14)
    # throw=False hands back the same partial run
    traj = ed.gd(prob, [1.0, 1.0], ETA_UNSTABLE, 200, throw=False)
    assert (traj.status, traj.diverged_at, traj.cause) == ("diverged", k_star, "blow-up")
    np.testing.assert_array_equal(traj.loss, part.loss)


def test_gd_non_finite_without_a_loss_bound():
    prob = ed.problems.Quadratic(A_UNSTABLE)
    traj = ed.gd(prob, [1.0, 1.0], ETA_UNSTABLE, 2000, loss_bound=np.inf, throw=False, eig_every=None)
    # E_k = ½·1.5^{2k} + ... overflows to inf once 1.5^{2k} > 2·DBL_MAX
    k_inf = int(np.ceil((np.log(2.0) + np.log(np.finfo(float).max)) / (2 * np.log(1.5))))
    assert traj.cause == "non-finite" and abs(traj.diverged_at - k_inf) <= 1
    assert np.all(np.isfinite(traj.loss))


def test_step_exact_map_blow_up_at_the_predicted_step():
    # the gradient-flow map with dk = 1 is GD itself; the solver's bound is
    # blowup · max(1, max|y0|) = 1e8
    prob = ed.problems.Quadratic(A_UNSTABLE)
    model = ed.models.GradientFlow(prob, ETA_UNSTABLE)
    theta = _gd_closed_form(100)
    k_star = int(np.argmax(np.max(np.abs(theta), axis=1) > 1e8))
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [1.0, 1.0], 100, solver="map")
    err = info.value
    assert (err.cause, err.step, err.time) == ("blow-up", k_star, float(k_star))
    assert "exceeds the bound 1e+08" in str(err)
    sol = ed.solve(model, [1.0, 1.0], 100, solver="map", throw=False)
    assert sol.status == "diverged" and sol.k[-1] == k_star and not sol.success
    np.testing.assert_allclose(sol.theta, theta[:k_star + 1], rtol=1e-13)


def test_continuous_blow_up_on_negative_curvature():
    # dθ/dk = −η A θ with A = −1: θ = θ0 e^{ηk} crosses the bound 1e8 at k* = ln(1e8/θ0)/η
    model = ed.models.GradientFlow(ed.problems.Quadratic(-np.eye(1)), 0.5)
    k_star = np.log(1e8 / 1.0) / 0.5
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [1.0], 100, solver="scipy:RK45", max_step=0.5, rtol=1e-10, atol=1e-12)
    err = info.value
    assert err.cause == "blow-up" and k_star <= err.time <= k_star + 0.5 and err.step == int(err.time)
    part = err.partial
    np.testing.assert_allclose(part.theta[:, 0], np.exp(0.5 * part.k), rtol=1e-8)


@pytest.mark.parametrize("name", ["GradientFlow", "FreeEnergyFlow", "CentralFlow", "SelfStabilization", "RodFlow",
                                  "EdgeFlow"])
def test_every_model_stops_on_blow_up(name):
    # a saddle: the negative-curvature axis runs away like e^{ηk} (flow) or 1.5^k (map),
    # from 1e-3 to past the bound 1e8 in about 50-70 steps
    prob = ed.problems.Quadratic(np.diag([-1.0, 0.5]))
    model = getattr(ed.models, name)(prob, 0.5)
    solver = "map" if "map" in model.supports else "scipy:LSODA"
    sol = ed.solve(model, [1e-3, 1.0], 300, solver=solver, throw=False)
    assert sol.status == "diverged" and "blow-up" in sol.message
    assert 40 <= sol.k[-1] <= 80


# --- a drift that returns NaN ---------------------------------------------------------------

def _nan_after_5(k, y):
    return np.array([np.nan if k > 5 else -y[0]])


@pytest.mark.parametrize("solver", ["scipy:RK45", "scipy:BDF", "scipy:Radau", "scipy:LSODA", "map"])
def test_nan_drift_is_reported_as_non_finite(solver):
    model = Toy(ONE_D, 0.1, _nan_after_5)
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [0.5], 10, solver=solver)
    err = info.value
    assert err.cause == "non-finite"
    if solver == "map":
        assert err.step == 7  # the drift at k = 6 is NaN, so the state at step 7 is
    else:
        assert 4.5 <= err.time <= 5.5 and err.step == int(err.time)
        assert "NaN" in str(err)
    sol = ed.solve(model, [0.5], 10, solver=solver, throw=False)
    assert sol.status == "diverged" and np.all(np.isfinite(sol.y[:-1]))
    assert sol.k[-1] <= 7


@pytest.mark.parametrize("solver", ["scipy:RK45", "map"])
def test_model_errors_get_step_and_time(solver):
    # a model may raise IntegrationError itself (e.g. a failed projection); the solver adds
    # where, and attaches the partial solution; throw=False returns it (it used to escape)
    def broken(k, y):
        if k > 3:
            raise IntegrationError("projection failed", cause="solver failure")
        return -0.1 * y

    with pytest.raises(IntegrationError, match="projection failed") as info:
        ed.solve(Toy(ONE_D, 0.1, broken), [1.0], 10, solver=solver)
    err = info.value
    assert err.cause == "solver failure" and 3 < err.time <= 10 and err.step == int(err.time)
    assert err.partial is not None and err.partial.status == "failed" and err.partial.k[-1] <= err.time
    sol = ed.solve(Toy(ONE_D, 0.1, broken), [1.0], 10, solver=solver, throw=False)
    assert sol.status == "failed" and "projection failed" in sol.message and 2 <= sol.k[-1] < 10
    np.testing.assert_array_equal(sol.k, err.partial.k)


@pytest.mark.parametrize("solver", ["scipy:RK45", "scipy:LSODA", "map"])
def test_user_code_that_raises_keeps_the_partial_result(solver):
    # a user's problem or model that raises mid-run (a bug, a NaN guard) ends the run with
    # cause "user code raised", the step, the original exception chained, and the partial
    def flaky(k, y):
        if k > 5:
            raise ZeroDivisionError("user bug")
        return -0.1 * y

    with pytest.raises(IntegrationError) as info:
        ed.solve(Toy(ONE_D, 0.1, flaky), [1.0], 10, solver=solver)
    err = info.value
    assert err.cause == "user code raised" and isinstance(err.__cause__, ZeroDivisionError)
    assert "ZeroDivisionError: user bug" in str(err) and 5 < err.time <= 10
    assert err.partial.status == "failed" and err.partial.k[-1] <= err.time and len(err.partial.k) >= 5
    sol = ed.solve(Toy(ONE_D, 0.1, flaky), [1.0], 10, solver=solver, throw=False)
    assert sol.status == "failed" and sol.stats.cause == "user code raised"


# --- step-size underflow --------------------------------------------------------------------

def _sqrt_singularity(k, y):
    # y = √(1 − k): bounded, but dy/dk = −1/(2y) is infinite at k = 1, so no step size
    # meets the tolerance there
    return -0.5 / y


@pytest.mark.parametrize("solver", ["scipy:RK45", "scipy:Radau", "scipy:LSODA"])
def test_step_size_underflow_at_a_singularity(solver):
    model = Toy(ONE_D, 0.1, _sqrt_singularity)
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [1.0], 2, solver=solver)
    err = info.value
    assert err.cause == "step-size underflow" and abs(err.time - 1.0) < 1e-3
    sol = ed.solve(model, [1.0], 2, solver=solver, throw=False, save_every=0.25)
    assert sol.status == "failed" and sol.k[-1] <= 1.0
    before = sol.k < 1.0
    assert before.sum() == 4
    np.testing.assert_allclose(sol.theta[before, 0], np.sqrt(1.0 - sol.k[before]), rtol=1e-6)


def test_step_size_underflow_diffrax():
    from effdyn._jax import import_jax

    _, jnp = import_jax()
    model = Toy(ONE_D, 0.1, _sqrt_singularity, lambda k, y, args: -0.5 / y)
    sol = ed.solve(model, [1.0], 2, solver="diffrax:Tsit5", throw=False, save_every=0.25)
    assert sol.status == "failed" and "step-size underflow" in sol.message
    assert sol.k[-1] == 1.0  # the last save time reached
    np.testing.assert_allclose(sol.theta[:-1, 0], np.sqrt(1.0 - sol.k[:-1]), rtol=1e-6)


# --- Σ losing positive semi-definiteness -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LeakyRateFlow(FreeEnergyFlow):
    """The rate form with a constant leak −c·I added to dΣ/dk: Σ = (1 + c)e^{−k} − c on a
    problem with no oscillating mode (dΣ/dk = −Σ there), so Σ crosses zero at
    k0 = log((1 + c)/c)."""

    leak = 0.5

    def drift(self, k, y, run=None):
        d = super().drift(k, y, run)
        P = self.dim
        d[P:] -= self.leak * np.eye(P).ravel()
        return d


def test_sigma_losing_psd_stops_the_run():
    prob = ed.problems.Quadratic(np.diag([1.0, 0.5]))  # η = 0.5: ηλ <= 0.5, nothing oscillates
    model = LeakyRateFlow(prob, 0.5, rank=2, sigma_form="rate")
    k0 = np.log(1.5 / 0.5)
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [0.0, 0.0], 5, solver="scipy:RK45", max_step=0.01, initial={"sigma0": np.eye(2)},
                 rtol=1e-10, atol=1e-12)
    err = info.value
    # check_state allows round-off of 1e-8: the first accepted step past k0 + 1e-8/(c e^{−k0})
    assert err.cause == "sigma not PSD" and k0 <= err.time <= k0 + 0.01 + 1e-6
    part = err.partial
    np.testing.assert_allclose(model.sigma_of(part.y[-1]), (1.5 * np.exp(-part.k[-1]) - 0.5) * np.eye(2), atol=1e-9)
    assert part.status == "diverged"


def test_non_psd_initial_sigma_is_refused():
    prob = ed.problems.Quadratic(np.diag([1.0, 0.5]))
    model = FreeEnergyFlow(prob, 0.5, rank=2, sigma_form="rate")
    state0 = np.concatenate([[0.0, 0.0], np.diag([1.0, -0.1]).ravel()])
    with pytest.raises(ValueError, match="`state0` is not a valid state of FreeEnergyFlow: sigma not PSD"):
        ed.solve(model, None, 5, state0=state0)
    with pytest.raises(ValueError, match="`sigma0` must be positive semi-definite"):
        ed.solve(model, [0.0, 0.0], 5, initial={'sigma0': np.diag([1.0, -0.1])})


# --- reproducibility ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_net():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    return ed.problems.TwoLayerNet(X, np.tanh(X @ np.array([1.0, -0.5, 0.3])), width=40)  # P = 160


def test_init_is_reproducible(small_net):
    dmf = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(5.0))
    for prob in (dmf, small_net, ed.problems.Quadratic(np.eye(3)), ed.problems.ScalarProduct(4)):
        a, b, c = prob.init(11), prob.init(11), prob.init(12)
        assert np.array_equal(a, b) and not np.array_equal(a, c), type(prob).__name__


def test_gd_and_solve_are_bit_identical(small_net):
    # P = 160 > 64: eigenpairs by warm-started Krylov iterations, the path most likely to
    # pick up hidden state (the Python loop: the compiled one costs a compilation per process)
    net_theta0 = small_net.init(3)
    eta = 1.9 / ed.spectrum.sharpness(small_net, net_theta0)
    runs = [ed.gd(small_net, net_theta0, eta, 200, eig_every=20, n_eigs=2, compiled=False) for _ in range(2)]
    for name in ("theta", "loss", "eigs", "top_eigvec"):
        assert np.array_equal(getattr(runs[0], name), getattr(runs[1], name)), name
    maps = [ed.solve(FreeEnergyFlow(small_net, eta, dense_max=8), net_theta0, 30, solver="map") for _ in range(2)]
    assert np.array_equal(maps[0].y, maps[1].y)
    # the compiled GD loop (on a quadratic: its loop is compiled for the blow-up test already)
    quad = ed.problems.Quadratic(np.diag([1.0, 0.5]))
    runs = [ed.gd(quad, quad.init(7), 1.9, 300) for _ in range(2)]
    assert np.array_equal(runs[0].theta, runs[1].theta) and np.array_equal(runs[0].loss, runs[1].loss)
    # an adaptive solver, from a seeded initialisation
    dmf = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(5.0))
    theta0 = dmf.init(0)
    sols = [ed.solve(FreeEnergyFlow(dmf, 0.077), theta0, 300, solver="scipy:LSODA", seed=5) for _ in range(2)]
    assert np.array_equal(sols[0].y, sols[1].y) and sols[0].stats.nfev == sols[1].stats.nfev


def test_seed_is_saved_with_the_solution(tmp_path):
    prob = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(5.0))
    sol = ed.solve(FreeEnergyFlow(prob, 0.077), prob.init(42), 20, solver="map", seed=42)
    ds = load_dataset(sol.save(tmp_path / "sol.nc"))
    assert ds.attrs["seed"] == 42 and ds.attrs["model"] == "FreeEnergyFlow" and "numpy" in ds.attrs["versions"]
    np.testing.assert_array_equal(ds["state"].values, sol.y)
    unseeded = ed.solve(FreeEnergyFlow(prob, 0.077), prob.init(42), 5, solver="map")
    assert unseeded.to_xarray().attrs["seed"] == -1


def test_seed_is_saved_with_the_gd_trajectory(tmp_path):
    prob = ed.problems.Quadratic(np.diag([1.0, 0.5]))
    traj = ed.gd(prob, prob.init(42), 0.5, 10, seed=42)
    ds = traj.to_xarray()
    assert ds.attrs["seed"] == 42 and "numpy" in ds.attrs["versions"]
    assert ed.gd(prob, prob.init(42), 0.5, 10).to_xarray().attrs["seed"] == -1


def test_initial_data_as_solve_keywords_is_deprecated_but_works():
    # solve's own keywords and the model's initial data live in separate namespaces now;
    # the old form keeps working for one release, with a warning that shows the new one
    model = FreeEnergyFlow(ed.problems.MinimalValley(), 0.3)
    new = ed.solve(model, [0.1, 3.0], 5, solver="map", initial={"sigma_seed": "floor", "seed_scale": 1e-6})
    with pytest.warns(DeprecationWarning, match=r"initial=\{'sigma_seed': ..., 'seed_scale': ...\}"):
        old = ed.solve(model, [0.1, 3.0], 5, solver="map", sigma_seed="floor", seed_scale=1e-6)
    np.testing.assert_array_equal(old.y, new.y)
    with pytest.raises(TypeError, match="`bogus` is neither an argument of `solve` nor an initial-data option"):
        ed.solve(model, [0.1, 3.0], 5, solver="map", bogus=1)
    with pytest.raises(TypeError, match=r"`initial` has \['bogus'\].*sigma0"):
        ed.solve(model, [0.1, 3.0], 5, solver="map", initial={"bogus": 1})
    with pytest.raises(TypeError, match="both in `initial` and as keywords"):
        with pytest.warns(DeprecationWarning):
            ed.solve(model, [0.1, 3.0], 5, solver="map", initial={"sigma_seed": "gd"}, sigma_seed="gd")


def test_implicit_solvers_are_refused_at_scale_and_the_default_adapts():
    # LSODA/BDF/Radau estimate state_size² Jacobian entries by finite differences: above
    # IMPLICIT_MAX_STATE they are refused with the explicit alternatives named
    from effdyn.solvers import IMPLICIT_MAX_STATE, default_solver

    big = ed.problems.Quadratic(np.eye(IMPLICIT_MAX_STATE + 1))
    small = ed.problems.Quadratic(np.eye(3))
    model = ed.models.GradientFlow(big, 0.1)
    for solver in ("scipy:LSODA", "scipy:BDF", "scipy:Radau"):
        with pytest.raises(ValueError, match=r"`solver` .* refused above 1000 .*scipy:RK45.*solver='map'"):
            ed.solve(model, np.ones(big.dim), 2, solver=solver)
    assert default_solver(model) == "scipy:RK45"
    assert default_solver(ed.models.GradientFlow(small, 0.1)) == "scipy:LSODA"
    assert default_solver(ed.models.SelfStabilization(ed.problems.MinimalValley(), 0.3)) == "map"
    sol = ed.solve(model, np.ones(big.dim), 2)  # the default runs, explicitly
    assert sol.stats.solver == "scipy:RK45"
    np.testing.assert_allclose(sol.theta[-1], np.exp(-0.2) * np.ones(big.dim), rtol=1e-6)
