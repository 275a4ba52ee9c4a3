"""The chord closure of the free-energy flow (``closure="chord"``, effdyn's extension):
GD's exact period-two orbits are its rest points, it agrees with the second-order closure to
the stated order in the amplitude, and on the persistent period-two orbit of deep matrix
factorisation it reaches GD's time-averaged loss and amplitude where the second-order
closure misses them by 19 % (of GD's mean loss) and 10 %."""

from __future__ import annotations

import numpy as np
import pytest

import effdyn as ed
from effdyn.models import FreeEnergyFlow
from effdyn.validation import get_case

pytestmark = pytest.mark.xdist_group("free_energy")


@pytest.fixture(scope="module")
def period_two():
    """The dmf-period2 validation case and GD over 1000 steps (an exact two-cycle by then)."""
    setup = get_case("dmf-period2").setup(True, steps=1000)
    traj = ed.gd(setup.problem, setup.theta0, setup.eta, setup.steps, n_eigs=2, progress=False)
    return setup, traj


def test_gd_two_cycle_is_a_rest_point(period_two):
    setup, traj = period_two
    p, P = setup.problem, setup.problem.dim
    a, b, c = traj.theta[-3], traj.theta[-2], traj.theta[-1]
    assert np.linalg.norm(a - c) < 1e-11 * np.linalg.norm(c)  # GD has settled on its two-cycle
    mid, V = 0.5 * (b + c), 0.5 * (b - c)
    chord = FreeEnergyFlow(p, setup.eta, closure="chord", storage="factor")
    d = chord.drift(0.0, np.concatenate([mid, V]))
    # ∇E(θ+) + ∇E(θ−) = 0 and the chord curvature is 2/η, so nothing moves
    assert np.linalg.norm(d[:P]) < 1e-11 * np.linalg.norm(p.grad(b))
    assert abs(V @ d[P:]) / (V @ V) < 1e-12
    # the second-order closure does not rest there: it holds λ(θ̄) at 2/η instead
    second = FreeEnergyFlow(p, setup.eta, storage="factor")
    d2 = second.drift(0.0, np.concatenate([mid, V]))
    assert abs(V @ d2[P:]) / (V @ V) > 1e-2


def test_agrees_with_the_second_order_closure_for_small_amplitudes(period_two):
    # θ-drifts differ at O(a⁴) (both are ∇E + ½∇³E[V, V] + O(a⁴)); the top rate at O(a²)
    setup, traj = period_two
    p, P = setup.problem, setup.problem.dim
    b, c = traj.theta[-2], traj.theta[-1]
    mid, v = 0.5 * (b + c), (b - c) / np.linalg.norm(b - c)
    chord = FreeEnergyFlow(p, setup.eta, closure="chord", storage="factor")
    second = FreeEnergyFlow(p, setup.eta, storage="factor")
    dtheta, drate = [], []
    for a in (1e-2, 1e-3):
        y = np.concatenate([mid, a * v])
        dc, ds = chord.drift(0.0, y), second.drift(0.0, y)
        dtheta.append(np.linalg.norm(dc[:P] - ds[:P]))
        drate.append(abs(v @ (dc[P:] - ds[P:])) / a)
    assert 0.5e4 < dtheta[0] / dtheta[1] < 2e4
    assert 50 < drate[0] / drate[1] < 200


def test_reaches_gd_period_two_averages_where_second_order_misses(period_two):
    setup, traj = period_two
    window = (400, setup.steps)
    errors = {}
    for closure in ("second-order", "chord"):
        model = FreeEnergyFlow(setup.problem, setup.eta, storage="log-factor", closure=closure)
        sol = ed.solve(model, setup.theta0, setup.steps, solver="scipy:LSODA", rtol=1e-6, atol=1e-9)
        errors[closure] = ed.compare(traj, sol, window=window)
    ch, so = errors["chord"], errors["second-order"]
    # measured: chord loss 1e-13, amplitude 7e-14 (of the loss scale / GD's mean amplitude),
    # sharpness (its two-point average) 7e-15 of 2/η; second-order 0.19, 0.099 and 0.055.
    # The loss scale is GD's mean loss here (0.99, above its range 0.70), hence 0.19 where
    # the range alone gave 0.27.
    assert ch.loss_error < 1e-6 and ch.amplitude_error < 1e-6 and ch.sharpness_error < 1e-6
    assert ch.envelope_error < 1e-6 and so.envelope_error > 0.1
    assert so.loss_error > 0.15 and so.amplitude_error > 0.05
    assert ch.mean_loss_model == pytest.approx(ch.mean_loss_gd, rel=1e-8)


def test_closures_coincide_on_a_cubic_loss():
    # E cubic (the minimal valley): the two-point average of ∇E is ∇E + ½∇³E[V, V] and the
    # Hessian is affine, so its chord average is H at the midpoint: the closures are the same
    # vector field, and the same map, up to round-off
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    eta = 0.3
    theta0, V0 = np.array([0.0, 2 / eta]), np.array([[np.sqrt(0.02)], [0.0]])
    a = ed.solve(FreeEnergyFlow(prob, eta, closure='chord'), theta0, 200, solver='map', initial={'sigma0': V0})
    b = ed.solve(FreeEnergyFlow(prob, eta), theta0, 200, solver='map', initial={'sigma0': V0})
    assert np.max(np.abs(b.theta[:, 1] - b.theta[0, 1])) > 1e-2  # the state does move
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.amplitude, b.amplitude, rtol=1e-12)
    # the chord closure's time-averaged loss is ½(E(θ+) + E(θ−)), which for a cubic E is
    # E + ½⟨H, Σ⟩ = F exactly
    F = b.observables["free_energy"]
    np.testing.assert_allclose(a.observables["time_avg_loss"], F, rtol=0, atol=1e-12 * np.max(np.abs(F)))


@pytest.mark.parametrize("storage", ["factor", "log-factor"])
def test_jax_drift_equals_numba_drift(period_two, storage):
    # the diffrax path: autodiff of the JAX loss against the compiled kernels, at GD's orbit
    # scaled (chord correction on) and at a tiny amplitude (correction off)
    import jax.numpy as jnp

    setup, traj = period_two
    b, c = traj.theta[-2], traj.theta[-1]
    model = FreeEnergyFlow(setup.problem, setup.eta, storage=storage, closure="chord")
    f = model.jax_drift()
    for scale in (0.7, 1e-6):
        V = scale * 0.5 * (b - c)[:, None]
        y = model.initial_state(0.5 * (b + c), sigma0=V)
        ref = np.asarray(f(0.0, jnp.asarray(y), model.jax_args()))
        np.testing.assert_allclose(model.drift(0.0, y), ref, rtol=1e-9, atol=1e-12 * np.max(np.abs(ref)))


def test_diffrax_matches_scipy():
    prob = ed.problems.DeepMatrixFactorization(d=2, depth=3, target=np.diag([5.5, 1.0]), init="balanced",
                                               init_scale=0.3)
    model = FreeEnergyFlow(prob, 0.077, storage="log-factor", closure="chord")
    kw = dict(rtol=1e-10, atol=1e-12, save_every=20)
    a = ed.solve(model, prob.init(0), 100, solver="scipy:DOP853", **kw)
    b = ed.solve(model, prob.init(0), 100, solver="diffrax:Dopri8", **kw)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.amplitude, a.amplitude, rtol=1e-5)


def test_bad_chord_input_is_refused():
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    with pytest.raises(ValueError, match="`closure='chord'`.*rank 1"):
        FreeEnergyFlow(prob, 0.3, rank=2, closure="chord")
    with pytest.raises(ValueError, match="`closure='chord'`"):
        FreeEnergyFlow(prob, 0.3, storage="dense", closure="chord")
    with pytest.raises(ValueError, match="`closure`"):
        FreeEnergyFlow(prob, 0.3, closure="third-order")
