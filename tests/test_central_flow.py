"""Central flow (Cohen et al. 2025): SDCP conditions, closed forms, minimal valley, GD."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peer_problems import NoThird, two_valleys

import effdyn as ed
from effdyn.errors import IntegrationError, MissingFeatureError
from effdyn.models.central_flow import CentralFlow

ETA = 0.3


@pytest.fixture(scope="module")
def valley():
    return ed.problems.MinimalValley(1.0, 0.01)


def _sharpness_gradient_fd(problem, theta, h=1e-6):
    """∇λ_max by central differences of a dense eigen-solve (independent of `third`)."""
    def lam(x):
        return np.linalg.eigvalsh(problem.hessian(x))[-1]

    return np.array([(lam(theta + h * e) - lam(theta - h * e)) / (2 * h) for e in np.eye(len(theta))])


@settings(max_examples=20, deadline=None)
@given(x=st.floats(-0.2, 0.2), y=st.floats(6.4, 7.2), restoring=st.sampled_from([0.0, 1.0]))
def test_one_critical_eigenvalue_matches_closed_form(valley, x, y, restoring):
    theta = np.array([x, y])
    model = CentralFlow(valley, ETA, restoring=restoring)
    sol = model.solve_sigma(theta, warm=False)
    lam = np.linalg.eigvalsh(valley.hessian(theta))
    if lam[-1] < (2 / ETA) * (1 - model.window):
        assert sol["X"].size == 0
        return
    assert sol["X"].shape == (1, 1)  # the other eigenvalue (≈ −x²/y) is never critical
    dS = _sharpness_gradient_fd(valley, theta)
    g = valley.grad(theta)
    expected = max(0.0, 2 * (-(g @ dS) - (restoring / ETA) * (2 / ETA - lam[-1])) / (dS @ dS))
    assert sol["X"][0, 0] == pytest.approx(expected, rel=1e-6, abs=1e-10)


def test_two_critical_eigenvalues_decoupled_closed_form():
    # γ = 0: two independent valleys; on the edge Σ = diag(2ε1, 2ε2) on the x axes.
    p = two_valleys(gamma=0.0, eps=(0.01, 0.02))
    sol = ed.solve(CentralFlow(p, ETA), [0.01, 0.01, 6.3, 6.2], 600, solver="scipy:LSODA", save_every=100)
    theta = sol.theta[-1]
    lam = np.linalg.eigvalsh(p.hessian(theta))
    np.testing.assert_allclose(lam[-2:], 2 / ETA, atol=1e-8)
    assert sol.n_critical[-1] == 2 and sol.sigma_rank[-1] == 2
    expected = np.zeros((4, 4))
    expected[0, 0], expected[1, 1] = 0.02, 0.04
    np.testing.assert_allclose(sol.covariance(-1), expected, atol=1e-8)
    assert sol.time_avg_loss[-1] == pytest.approx(p.loss(theta) + 0.06 / ETA, rel=1e-12)


@pytest.mark.parametrize("steps", [150, 400])
def test_two_critical_eigenvalues_sdcp_conditions(steps):
    # γ ≠ 0 couples the valleys; check the SDCP at the end of a run with an independent
    # Ḣ: H is affine in θ for a cubic loss, so a central difference along dθ/dk is exact.
    p = two_valleys(gamma=0.001)
    model = CentralFlow(p, ETA)
    sol = ed.solve(model, [0.01, 0.01, 6.3, 6.2], steps, solver="scipy:LSODA", save_every=steps)
    theta = sol.theta[-1]
    out = model.solve_sigma(theta, warm=False)
    U, X, lam = out["U"], out["X"], out["eigenvalues"]
    assert U.shape[1] == 2
    rate = model.drift(float(steps), theta)
    h = 1e-4
    H_dot = (p.hessian(theta + h * rate) - p.hessian(theta - h * rate)) / (2 * h)
    cons = U.T @ H_dot @ U + model.restoring * (np.diag(lam) - 2 / ETA * np.eye(2))
    assert np.linalg.eigvalsh(X)[0] >= -1e-8
    assert np.linalg.eigvalsh(cons)[-1] <= 1e-8
    assert abs(np.sum(X * cons)) <= 1e-8
    assert np.linalg.norm(X @ cons) <= 1e-8
    assert np.trace(X) > 1e-3  # the constraint is active: a non-trivial solution


@pytest.fixture(scope="module")
def gd_valley(valley):
    return ed.gd(valley, [0.1, 3.0], ETA, 6000)


def test_minimal_valley_holds_the_edge(valley, gd_valley):
    sol = ed.solve(CentralFlow(valley, ETA), [0.1, 3.0], 6000, solver="scipy:LSODA", save_every=5)
    S = sol.sharpness
    onset = int(np.argmax(S >= 2 / ETA - 1e-6))
    after = slice(onset + 10, None)
    assert 1200 < sol.k[onset] < 1260  # GD: 1223
    np.testing.assert_allclose(S[after], 2 / ETA, atol=1e-8)
    sigma2 = sol.amplitude[after] ** 2
    # Measured: σ² = 2ε − x̄² with x̄ ≈ −0.003 (relative deviation 4.5e-4).
    np.testing.assert_allclose(sigma2, 0.02, rtol=1e-3)
    np.testing.assert_allclose(sol.theta[after, 1], 2 / ETA, rtol=2e-3)  # y − 2/η ≈ 0.009
    # Before the onset the flow is gradient flow: no covariance.
    assert np.all(sol.amplitude[: onset - 4] == 0.0)
    # Against GD once its first self-stabilisation cycles have died out (measured:
    # sharpness 4.5e-4, amplitude 3.1e-4, distance 6.9e-6, loss 3.6e-3).
    m = ed.compare(gd_valley, sol, window=(4000, 6000))
    assert m.sharpness_error < 2e-3 and m.amplitude_error < 5e-3
    assert m.distance < 1e-4 and m.loss_error < 0.02


def test_minimal_valley_map_is_gd_before_onset(valley, gd_valley):
    sol = ed.solve(CentralFlow(valley, ETA), [0.1, 3.0], 1300, solver="map")
    onset = gd_valley.eos_onset()
    # Σ = 0 below the edge, so the step-exact map (Euler, dk = 1) *is* GD there.
    np.testing.assert_allclose(sol.theta[: onset - 20], gd_valley.theta[: onset - 20], rtol=0, atol=1e-12)
    assert np.all(sol.amplitude[: onset - 20] == 0.0) and sol.amplitude[-1] > 0.1


def test_unsolvable_sdcp_raises_with_time_and_theta():
    # A constant Hessian with an eigenvalue above 2/η: no Σ can lower it (∇λ = 0).
    p = ed.problems.Quadratic(np.diag([8.0, 1.0]))
    with pytest.raises(IntegrationError, match=r"SDCP at k = 0 .*no solution.*θ = \[1\. 1\.\]") as info:
        ed.solve(CentralFlow(p, ETA), [1.0, 1.0], 10, solver="scipy:RK45")
    assert info.value.cause == "sdcp failed" and info.value.time == 0.0


def test_bad_input():
    with pytest.raises(MissingFeatureError, match="problem.third"):
        CentralFlow(NoThird(), ETA)
    p = ed.problems.MinimalValley()
    with pytest.raises(ValueError, match="`eta`"):
        CentralFlow(p, 0.0)
    with pytest.raises(TypeError, match="`eta`"):
        CentralFlow(p, "0.3")
    with pytest.raises(ValueError, match="`window`"):
        CentralFlow(p, ETA, window=1.5)
    with pytest.raises(ValueError, match="`max_rank`"):
        CentralFlow(p, ETA, max_rank=0)
    with pytest.raises(ValueError, match="`restoring`"):
        CentralFlow(p, ETA, restoring=-1.0)
