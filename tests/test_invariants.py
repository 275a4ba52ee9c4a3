"""Invariants that hold whatever the parameters (issue 8), checked along random runs.

* Σ stays symmetric PSD and keeps its rank along the step-exact map (dense and factor
  storage agree) and along the diffrax backend;
* F = E + ½⟨H, Σ⟩, so F = E when Σ = 0 (against a dense Hessian computed separately);
* with Σ = 0 the step-exact map *is* GD, bit for bit, and the default model follows
  gradient flow while the sharpness is below 2/η;
* the reduced self-stabilisation system conserves its Lotka–Volterra energy;
* parameter sweeps (η, seeds, problem parameters) never trigger a recompilation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import effdyn as ed
from effdyn.models import FreeEnergyFlow
from effdyn.models.self_stabilization import reduced_energy

pytestmark = pytest.mark.xdist_group("invariants")

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _edge_setup(P, seed):
    """A scalar-product loss with η straddling the edge (1.5 to 2.5 over the sharpness)."""
    rng = np.random.default_rng(seed)
    prob = ed.problems.ScalarProduct(depth=P, target=1.0)
    theta0 = 1.0 + 0.2 * rng.normal(size=P)
    eta = float(rng.uniform(1.5, 2.5) / ed.spectrum.sharpness(prob, theta0))
    return prob, theta0, eta, rng


# --- Σ along the map --------------------------------------------------------------------------

@settings(max_examples=15, **SETTINGS)
@given(P=st.integers(3, 5), rank=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_map_keeps_sigma_psd_with_constant_rank(P, rank, seed):
    rank = min(rank, P - 1)
    prob, theta0, eta, rng = _edge_setup(P, seed)
    V0 = 0.01 * rng.normal(size=(P, rank))
    steps, clip = 25, 0.5
    kw = dict(rank=rank, n_track=P, clip=clip, floor=0.0)
    # GD's own map can run away on this loss (ηλ up to ~15 in a step); the invariants are
    # checked on the states before any divergence
    dense = ed.solve(FreeEnergyFlow(prob, eta, storage='dense', **kw), theta0, steps, solver='map', throw=False, initial={'sigma0': V0 @ V0.T})
    factor_model = FreeEnergyFlow(prob, eta, **kw)
    factor = ed.solve(factor_model, theta0, steps, solver='map', throw=False, initial={'sigma0': V0})
    n = min(len(dense.k), len(factor.k)) - (0 if dense.success and factor.success else 1)
    assert n >= 2
    smin0 = np.linalg.svd(V0, compute_uv=False)[-1] ** 2
    for k, yd, yf in zip(dense.k[:n], dense.y[:n], factor.y[:n]):
        S = dense.model.sigma_of(yd)
        scale = np.max(np.abs(S))
        assert np.max(np.abs(S - S.T)) <= 1e-14 * scale
        w = np.linalg.eigvalsh(S)
        assert w[0] >= -1e-13 * scale
        # each step multiplies every tracked direction by |1 − ηλ| >= clip: rank r is kept
        # (checked while that bound is above round-off) ...
        bound = 0.5 * clip ** (2 * k) * smin0
        if bound > 1e-10 * scale:
            assert w[-rank] >= bound
        # ... and the other directions stay empty (a congruence cannot create rank)
        assert w[-rank - 1] <= 1e-13 * scale
        # two storage layouts, one recursion: Σ_dense = V Vᵀ (up to round-off amplified by
        # the violent steps of this loss)
        np.testing.assert_allclose(S, factor_model.sigma_of(yf), rtol=0, atol=1e-9 * scale)
        np.testing.assert_allclose(yd[:P], yf[:P], rtol=1e-9, atol=1e-12)


# --- Σ along diffrax --------------------------------------------------------------------------

def test_diffrax_keeps_sigma_psd_and_agrees_with_scipy():
    P, rank = 3, 1
    prob, theta0, eta, rng = _edge_setup(P, 7)
    V0 = 0.05 * rng.normal(size=(P, rank))
    model = FreeEnergyFlow(prob, eta, rank=rank, n_track=P, storage="dense", floor=0.0)
    kw = dict(rtol=1e-10, atol=1e-13, save_every=2, sigma0=V0 @ V0.T)
    sol = ed.solve(model, theta0, 30, solver="diffrax:Tsit5", **kw)
    ref = ed.solve(model, theta0, 30, solver="scipy:DOP853", **kw)
    assert sol.success and np.array_equal(sol.k, ref.k)
    for y, y_ref in zip(sol.y, ref.y):
        S = model.sigma_of(y)
        scale = np.max(np.abs(S))
        # a dense Σ integrated by Runge–Kutta keeps symmetry exactly (the drift is
        # symmetric) and PSD / rank up to the local error
        assert np.max(np.abs(S - S.T)) <= 1e-14 * scale
        w = np.linalg.eigvalsh(S)
        assert w[0] >= -1e-8 * scale and w[-2] <= 1e-8 * scale and w[-1] > 0
        np.testing.assert_allclose(y, y_ref, rtol=1e-7, atol=1e-9 * max(1.0, scale))


# --- F = E + ½⟨H, Σ⟩ ----------------------------------------------------------------------------

PROBLEMS = {
    "scalar_product": lambda: ed.problems.ScalarProduct(depth=4, target=1.0),
    "dmf": lambda: ed.problems.DeepMatrixFactorization(2, 3, np.diag([5.0, 1.0])),
    "minimalist": lambda: ed.problems.MinimalistTwoLayer(1.0, 0.05),
    "valley": lambda: ed.problems.MinimalValley(1.0, 0.01),
}


@settings(max_examples=20, **SETTINGS)
@given(name=st.sampled_from(sorted(PROBLEMS)), seed=st.integers(0, 10_000), rank=st.integers(1, 2))
def test_free_energy_is_loss_plus_half_curvature(name, seed, rank):
    prob = PROBLEMS[name]()
    rng = np.random.default_rng(seed)
    theta = prob.init(seed) if name in ("dmf", "scalar_product") else rng.normal(size=prob.dim)
    model = FreeEnergyFlow(prob, 0.1, rank=rank, storage="factor")
    V = 0.1 * rng.normal(size=(prob.dim, rank))
    obs = model.observables(np.zeros(2), np.stack([np.concatenate([theta, V.ravel()]),
                                                   np.concatenate([theta, np.zeros(V.size)])]))
    H = prob.hessian(theta)
    E = prob.loss(theta)
    expected = E + 0.5 * np.trace(H @ V @ V.T)
    assert obs["free_energy"][0] == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert obs["lagrangian"][0] == pytest.approx(expected - np.sum(V**2) / 0.1, rel=1e-12, abs=1e-14)
    assert obs["free_energy"][1] == obs["loss"][1] == E  # Σ = 0: F = E exactly


# --- Σ = 0: the map is GD, the flow is gradient flow below the edge -------------------------------

@settings(max_examples=10, **SETTINGS)
@given(zeta=st.floats(0.0, 2.0), eps=st.floats(1e-3, 0.05), x0=st.floats(-0.3, 0.3), y0=st.floats(2.0, 8.0))
def test_map_without_sigma_is_gd_bit_for_bit(zeta, eps, x0, y0):
    prob = ed.problems.MinimalValley(zeta=zeta, eps=eps)
    steps = 400  # below, at and past the edge 2/η = 6.67: Σ = 0 stays 0 and GD has no say
    traj = ed.gd(prob, [x0, y0], 0.3, steps, eig_every=None, throw=False)
    sol = ed.solve(FreeEnergyFlow(prob, 0.3, floor=0.0, storage="factor"), [x0, y0], steps, solver='map', throw=False, initial={'sigma_seed': 'zero'})
    n = min(len(traj.k), len(sol.k))
    assert n > 1
    assert np.array_equal(sol.theta[:n], traj.theta[:n])
    np.testing.assert_array_equal(sol.free_energy, sol.loss)


def test_default_model_follows_gradient_flow_below_the_edge():
    # the default round-off floor, seeded at the floor (Σ0 = q v vᵀ, q ~ 1e-31): Σ stays at
    # the round-off level while S < 2/η, so θ is gradient flow until the onset (k ≈ 1220)
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    kw = dict(solver="scipy:LSODA", rtol=1e-11, atol=1e-13, save_every=10)
    sol = ed.solve(FreeEnergyFlow(prob, 0.3), [0.1, 3.0], 1000, **kw, initial={'sigma_seed': 'floor'})
    ref = ed.solve(ed.models.GradientFlow(prob, 0.3), [0.1, 3.0], 1000, **kw)
    assert np.all(sol.sharpness < 2 / 0.3)
    assert np.max(sol.sigma_trace) < 1e-28
    np.testing.assert_allclose(sol.theta, ref.theta, rtol=1e-8, atol=1e-10)


# --- the reduced self-stabilisation cycle conserves its energy ----------------------------------

@settings(max_examples=10, **SETTINGS)
@given(alpha=st.floats(0.005, 0.05), beta=st.floats(0.5, 2.0), x0=st.floats(0.05, 0.3),
       y0=st.floats(-0.3, 0.3), eta=st.floats(0.1, 0.5), sign=st.sampled_from([-1.0, 1.0]))
def test_reduced_self_stabilization_conserves_lotka_volterra_energy(alpha, beta, x0, y0, eta, sign):
    prob = ed.problems.MinimalValley(zeta=0.0, eps=0.01)
    model = ed.models.SelfStabilization(prob, eta, "reduced", alpha=alpha, beta=beta)
    period = 2 * np.pi / (eta * np.sqrt(2 * alpha))  # small-cycle period; larger cycles are slower
    steps = float(np.ceil(3 * period))
    sol = ed.solve(model, [0.1, 3.0], steps, solver='scipy:DOP853', rtol=1e-12, atol=1e-14, save_every=steps / 60, initial={'x0': sign * x0, 'y0': y0})
    x, y = sol.y[:, 0], sol.y[:, 1]
    energy = reduced_energy(x, y, alpha, beta)
    assert np.max(np.abs(energy - energy[0])) <= 1e-9 * max(1.0, abs(energy[0]))
    np.testing.assert_allclose(sol.energy, energy, rtol=1e-12, atol=1e-14)
    assert np.all(np.sign(x) == sign)  # x = 0 is invariant: the cycle never crosses it
    # the same ODE written out here and integrated by scipy directly
    rhs = lambda k, u: [eta * u[1] * u[0], eta * (alpha - 0.5 * beta * u[0] ** 2)]  # noqa: E731
    ref = solve_ivp(rhs, (0.0, steps), [sign * x0, y0], method="DOP853", t_eval=sol.k, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sol.y, ref.y.T, rtol=1e-7, atol=1e-9)


# --- no recompilation across sweeps ---------------------------------------------------------------

def test_parameter_sweeps_do_not_recompile():
    def sweep_once(eta, seed, zeta, eps):
        valley = ed.problems.MinimalValley(zeta=zeta, eps=eps)
        rng = np.random.default_rng(seed)
        theta0 = np.array([0.1, 3.0]) + 0.01 * rng.normal(size=2)
        ed.gd(valley, theta0, eta, 50)
        model = FreeEnergyFlow(valley, eta)
        ed.solve(model, theta0, 20, solver="map")
        ed.solve(model, theta0, 20, solver="scipy:LSODA")
        dmf = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(
            5.0 + seed, seed=seed))
        ed.solve(FreeEnergyFlow(dmf, eta / 4, rank=2), dmf.init(seed), 10, solver="map")
        quad = ed.problems.Quadratic(np.diag(rng.uniform(0.5, 2.0, size=3 + seed % 2)))
        ed.gd(quad, quad.init(seed), eta, 30)
        model = FreeEnergyFlow(quad, eta, rank=2)
        ed.solve(model, quad.init(seed), 10, solver="map")

    sweep_once(0.3, 0, 1.0, 0.01)  # warm-up: compiles (or loads from the cache) every kernel
    before = ed.compile_count()
    for eta, seed, zeta, eps in [(0.25, 1, 0.5, 0.02), (0.31, 2, 0.0, 0.005), (0.2, 3, 2.0, 0.1)]:
        sweep_once(eta, seed, zeta, eps)
    assert ed.compile_count() == before


def test_jax_problem_sweeps_do_not_retrace():
    from effdyn._jax import import_jax

    _, jnp = import_jax()
    prob = ed.problems.from_jax(lambda t: jnp.sum(t**4) / 4 + 0.5 * jnp.sum(t**2), dim=3)
    rng = np.random.default_rng(0)
    ed.gd(prob, rng.normal(size=3), 0.1, 5)
    fns = (prob._jit_loss, prob._jit_grad, prob._jit_hvp, prob._jit_hessian)
    sizes = [f._cache_size() for f in fns]
    for eta in (0.05, 0.2):
        ed.gd(prob, rng.normal(size=3), eta, 5)
    assert [f._cache_size() for f in fns] == sizes
