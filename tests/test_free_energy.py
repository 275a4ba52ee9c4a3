"""The free-energy θ/Σ flow (issue 3): closed forms, invariants, and GD as the arbiter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

import effdyn as ed
from effdyn.models import FreeEnergyFlow

pytestmark = pytest.mark.xdist_group("free_energy")


def rotated_quadratic(eigs, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))
    return ed.problems.Quadratic((Q * eigs) @ Q.T), Q


# --- closed form on a quadratic (frozen H) ---------------------------------------------

ETA_Q = 1.0
EIGS_Q = np.array([2.7, 2.3, 1.8, 1.3])  # ηλ on both sides of 2, all above 1 (oscillating)


def _gd_covariance(A, sigma0, k):
    M = np.linalg.matrix_power(np.eye(len(A)) - ETA_Q * A, k)
    return M @ sigma0 @ M.T


def test_log_generator_is_log_of_gd_step():
    prob, _ = rotated_quadratic(EIGS_Q, 0)
    model = FreeEnergyFlow(prob, ETA_Q, rank=2, n_track=4)
    lam, Q = model.eigenpairs(np.zeros(4))
    g, g_off = model.rates(lam)
    G = Q @ np.diag(g - g_off) @ Q.T + g_off * (np.eye(4) - Q @ Q.T) + g_off * Q @ Q.T
    A = prob.hessian(np.zeros(4))
    np.testing.assert_allclose(expm(2 * G), np.linalg.matrix_power(np.eye(4) - ETA_Q * A, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("storage", ["factor", "dense"])
def test_log_form_reproduces_gd_covariance_at_even_steps(storage):
    prob, Qe = rotated_quadratic(EIGS_Q, 1)
    A = prob.hessian(np.zeros(4))
    rng = np.random.default_rng(2)
    V0 = rng.normal(size=(4, 2))
    sigma0 = V0 @ V0.T
    model = FreeEnergyFlow(prob, ETA_Q, rank=2, n_track=4, storage=storage)
    theta0 = rng.normal(size=4)
    sol = ed.solve(model, theta0, 10, solver='scipy:DOP853', rtol=1e-13, atol=1e-15, save_every=2, initial={'sigma0': V0 if storage == 'factor' else sigma0})
    for k, y in zip(sol.k, sol.y):
        exact = _gd_covariance(A, sigma0, int(k))
        rel = np.linalg.norm(model.sigma_of(y) - exact) / np.linalg.norm(exact)
        assert rel < 1e-10, (k, rel)
    # directions with ηλ > 2 grow, ηλ < 2 decay (in H's eigenbasis)
    d0 = np.diag(Qe.T @ sigma0 @ Qe)
    d1 = np.diag(Qe.T @ model.sigma_of(sol.y[-1]) @ Qe)
    grows = ETA_Q * EIGS_Q > 2
    assert np.all(d1[grows] > 10 * d0[grows]) and np.all(d1[~grows] < 0.1 * d0[~grows])


def test_step_exact_map_is_gd_covariance_recursion():
    prob, _ = rotated_quadratic(EIGS_Q, 3)
    A = prob.hessian(np.zeros(4))
    V0 = np.random.default_rng(4).normal(size=(4, 1))
    model = FreeEnergyFlow(prob, ETA_Q, rank=1, n_track=4)
    sol = ed.solve(model, np.zeros(4), 7, solver='map', initial={'sigma0': V0})
    for k, y in zip(sol.k, sol.y):
        exact = _gd_covariance(A, V0 @ V0.T, int(k))
        assert np.linalg.norm(model.sigma_of(y) - exact) <= 1e-12 * np.linalg.norm(exact)


# --- invariants ------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(P=st.integers(3, 5), rank=st.integers(1, 3), seed=st.integers(0, 10_000),
       storage=st.sampled_from(["factor", "dense"]))
@example(P=4, rank=3, seed=731, storage="factor")  # once failed on eigvalsh resolution
def test_sigma_stays_psd_and_keeps_rank(P, rank, seed, storage):
    rank = min(rank, P - 1)
    rng = np.random.default_rng(seed)
    prob = ed.problems.ScalarProduct(depth=P, target=1.0)
    theta0 = 1.0 + 0.2 * rng.normal(size=P)
    S0 = ed.spectrum.sharpness(prob, theta0)
    eta = float(rng.uniform(1.5, 2.5) / S0)  # straddle the edge of stability
    clip = 0.25
    model = FreeEnergyFlow(prob, eta, rank=rank, n_track=P, storage=storage, clip=clip, floor=0.0)
    V0 = 0.01 * rng.normal(size=(P, rank))
    steps = 12
    sol = ed.solve(model, theta0, steps, solver='scipy:RK45', rtol=1e-09, atol=1e-14, save_every=3, initial={'sigma0': V0 if storage == 'factor' else V0 @ V0.T})
    smin0 = np.linalg.svd(V0, compute_uv=False)[-1] ** 2
    scale0 = np.max(np.abs(V0 @ V0.T))
    # the factor form keeps PSD and rank by construction (round-off only); a dense Σ keeps
    # them up to the integrator's local error (rtol = 1e-9)
    tol = 1e-12 if storage == "factor" else 1e-8
    for k, y in zip(sol.k, sol.y):
        S = model.sigma_of(y)
        scale = np.max(np.abs(S))
        assert np.max(np.abs(S - S.T)) <= 1e-13 * max(scale, scale0)
        w = np.linalg.eigvalsh(S)
        assert w[0] >= -tol * max(scale, scale0)
        # every rate of G is >= log(clip), so ‖V x‖ >= clip^k ‖V0 x‖: rank r is kept ...
        bound = 0.5 * clip ** (2 * k) * smin0
        if storage == "factor":
            # read off the factor itself: its singular values carry ~1e-16·‖V‖ absolute error,
            # far below the bound, whereas eigvalsh(VVᵀ) cannot resolve values under 1e-16·‖Σ‖
            # (clip^24 ≈ 3.6e-15 at k = 12 is already at that resolution)
            smin = np.linalg.svd(model.factor_of(y), compute_uv=False)[-1] ** 2
            assert smin >= bound
        else:
            # a dense Σ carries the integrator's error: the bound holds up to that resolution
            assert w[-rank] >= bound - tol * max(scale, scale0)
        # ... and the log form does not fill in the remaining directions
        if rank < P:  # round-off relative to the initial size of Σ
            assert w[-rank - 1] <= tol * max(scale, scale0)


def test_zero_sigma_is_gradient_flow_and_F_equals_E():
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    model = FreeEnergyFlow(prob, 0.3, floor=0.0, storage="factor")
    gf = ed.models.GradientFlow(prob, 0.3)
    sol = ed.solve(model, [0.1, 3.0], 300, rtol=1e-10, atol=1e-12, solver='scipy:DOP853', initial={'sigma_seed': 'zero'})
    ref = ed.solve(gf, [0.1, 3.0], 300, rtol=1e-10, atol=1e-12, solver="scipy:DOP853")
    np.testing.assert_allclose(sol.theta, ref.theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(sol.free_energy, sol.loss)


# --- against GD on the minimal valley -------------------------------------------------

@pytest.fixture(scope="module")
def valley_runs():
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    traj = ed.gd(prob, [0.1, 3.0], 0.3, 6000, eig_every=1)
    model = FreeEnergyFlow(prob, 0.3)
    sol = ed.solve(model, [0.1, 3.0], 6000, solver="scipy:LSODA", rtol=1e-8, atol=1e-12)
    return prob, traj, sol


def _gd_midpoint(traj):
    k, mid = traj.midpoint()
    return np.asarray(k), np.asarray(mid)


def test_minimal_valley_tracks_gd_after_onset(valley_runs):
    prob, traj, sol = valley_runs
    onset = traj.eos_onset()
    assert 1200 <= onset <= 1250
    k_mid, mid = _gd_midpoint(traj)
    # the first overshoot cycle depends on the seed size (logarithmically); once GD's
    # cycle has damped (k >= 2000) the model's y averages GD's midpoint within 1e-3
    sel = (k_mid >= 2000) & (k_mid <= 5998)
    y_model = np.interp(k_mid[sel], sol.k, sol.theta[:, 1])
    assert abs(np.mean(y_model) - np.mean(mid[sel, 1])) < 1e-3
    late = (k_mid >= 3000) & (k_mid <= 5998)
    y_late = np.interp(k_mid[late], sol.k, sol.theta[:, 1])
    assert np.mean(np.abs(y_late - mid[late, 1])) < 2e-3
    # amplitude converges within 5% of GD's half-step amplitude
    k_a, a_gd = traj.amplitude()
    late = np.asarray(k_a) >= 4000
    a_model = np.interp(np.asarray(k_a)[late], sol.k, sol.amplitude)
    assert abs(np.mean(a_model) / np.mean(np.asarray(a_gd)[late]) - 1) < 0.05
    assert abs(np.mean(a_model) / np.sqrt(2 * 0.01) - 1) < 0.05
    # F matches GD's two-step averaged loss within 5% of its scale over the last third
    metrics = ed.compare(traj, sol, window="last-third")
    assert metrics.loss_error < 0.05, metrics
    assert metrics.sharpness_error < 0.01, metrics


def test_seed_size_sets_onset_delay_logarithmically():
    """After the onset the amplitude grows like log(a/√q) = ∫ηs dk with s = ηε·(k − k_on):
    the delay Δk until it reaches a* obeys Δk² = (2/(η²ε))·log(a*/√q) (theory §2, §5)."""
    eta, eps, a_star = 0.3, 0.01, 0.01
    prob = ed.problems.MinimalValley(zeta=1.0, eps=eps)
    logs, delays = [], []
    for q in (1e-16, 1e-24, 1e-32):
        sol = ed.solve(FreeEnergyFlow(prob, eta, floor=q), [0.1, 3.0], 1700, rtol=1e-8, atol=1e-14)
        on = np.argmax(sol.theta[:, 1] > 2 / eta)
        k_star = on + np.argmax(sol.amplitude[on:] > a_star)
        logs.append(np.log(a_star / np.sqrt(q)))
        delays.append((sol.k[k_star] - sol.k[on]) ** 2)
    slope = np.polyfit(logs, delays, 1)[0]
    assert abs(slope * eta**2 * eps / 2 - 1) < 0.15, slope


# --- the Lotka–Volterra reduction and the discrete drift -------------------------------

def lv_energy_exact(eta, eps, s, a2):
    """Invariant of the reduced log form da/dk = log(1 + ηs) a, ds/dk = η(ε − a²/2)."""
    F = ((1 + eta * s) * np.log1p(eta * s) - eta * s) / eta**2
    return F + a2 / 4 - (eps / 2) * np.log(a2)


def test_lotka_volterra_energy_conserved_on_valley_zeta0():
    eta, eps = 0.3, 1e-4
    prob = ed.problems.MinimalValley(zeta=0.0, eps=eps)
    y0, a0 = 2 / eta, np.sqrt(eps)
    model = FreeEnergyFlow(prob, eta, floor=0.0)
    sol = ed.solve(model, [eps / y0, y0], 2500, solver='scipy:DOP853', rtol=1e-08, atol=1e-12, initial={'sigma0': np.array([[a0], [0.0]])})
    a2 = sol.amplitude**2
    H = lv_energy_exact(eta, eps, sol.sharpness - 2 / eta, a2)
    # a full cycle: the amplitude goes up and comes back
    i = int(np.argmax(a2))
    assert a2[i] > 2 * a0**2 and 0 < i < len(a2) - 1 and a2[i:].min() < 1.2 * a0**2
    assert np.ptp(H) / np.mean(np.abs(H)) < 1e-6
    # the pieces of H vary by far more than H itself
    assert np.ptp(a2 / 4) / np.ptp(H) > 1e3


def _berthier_energy(eta, eps, y, a):
    y1, a1 = (y - 2 / eta) / np.sqrt(eps), a / np.sqrt(eps)
    return y1**2 / 2 + a1**2 / 4 - 0.5 * np.log(a1**2)


@pytest.mark.parametrize("zeta", [0.0, 0.5, 1.0])
def test_step_exact_map_reproduces_gd_energy_drift(zeta):
    eta, eps, n = 0.3, 1e-4, 8000
    prob = ed.problems.MinimalValley(zeta=zeta, eps=eps)
    y0, a0 = 2 / eta, np.sqrt(eps)
    xbar = eps / y0
    traj = ed.gd(prob, [xbar + a0, y0], eta, n, eig_every=1)
    k_mid, mid = _gd_midpoint(traj)
    k_a, amp = traj.amplitude()
    amp = np.interp(k_mid, np.asarray(k_a), np.asarray(amp))
    drift_gd = np.polyfit(k_mid, _berthier_energy(eta, eps, mid[:, 1], amp), 1)[0]
    model = FreeEnergyFlow(prob, eta, floor=0.0)
    sol = ed.solve(model, [xbar, y0], n, solver='map', initial={'sigma0': np.array([[a0], [0.0]])})
    drift_map = np.polyfit(sol.k, _berthier_energy(eta, eps, sol.theta[:, 1], sol.amplitude), 1)[0]
    assert abs(drift_map / drift_gd - 1) < 0.10, (drift_map, drift_gd)


# --- backends agree; numba drift equals JAX autodiff -----------------------------------

def test_scipy_and_diffrax_agree():
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    model = FreeEnergyFlow(prob, 0.3, floor=0.0)
    kw = dict(sigma0=np.array([[0.05], [0.0]]), rtol=1e-11, atol=1e-13, save_every=50)
    a = ed.solve(model, [0.0, 6.0], 300, solver="scipy:DOP853", **kw)
    b = ed.solve(model, [0.0, 6.0], 300, solver="diffrax:Dopri8", **kw)
    np.testing.assert_allclose(b.y, a.y, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("storage,form", [("factor", "log"), ("log-factor", "log"), ("dense", "log"),
                                          ("dense", "rate")])
def test_numba_drift_equals_jax_drift(storage, form):
    import jax.numpy as jnp

    M = np.array([[5.5, 1.0], [0.0, 1.0]])
    prob = ed.problems.DeepMatrixFactorization(d=2, depth=3, target=M)
    rng = np.random.default_rng(5)
    theta = prob.init(seed=0) + 0.1 * rng.normal(size=prob.dim)
    S0 = ed.spectrum.sharpness(prob, theta)
    model = FreeEnergyFlow(prob, 2.1 / S0, rank=2, storage=storage, sigma_form=form, n_track=3,
                           threshold=0.5 * S0)
    V = 0.05 * rng.normal(size=(prob.dim, 2))
    y = model.initial_state(theta, sigma0=V if storage != "dense" else V @ V.T)
    f = model.jax_drift()
    ref = np.asarray(f(0.0, jnp.asarray(y), model.jax_args()))
    np.testing.assert_allclose(model.drift(0.0, y), ref, rtol=1e-9, atol=1e-12 * np.max(np.abs(ref)))


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=0), "`rank`"),
        (dict(rank=3), "`rank`"),
        (dict(eta=0.0), "`eta`"),
        (dict(eta=-1.0), "`eta`"),
        (dict(sigma_form="cubic"), "`sigma_form`"),
        (dict(sigma_form="rate", storage="factor"), "storage"),
        (dict(clip=1.5), "`clip`"),
        (dict(floor=-1.0), "`floor`"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    prob = ed.problems.MinimalValley()
    args = dict(eta=0.3)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        FreeEnergyFlow(prob, **args)


@pytest.mark.parametrize(
    "sigma0,match",
    [
        (np.array([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 0.0], [0.0, -1.0]]), "positive semi-definite"),
        (np.ones((3, 1)), "`sigma0`"),
        (np.array([[1.0, 0.0], [0.0, 1.0]]), "rank"),
    ],
)
def test_bad_sigma0(sigma0, match):
    model = FreeEnergyFlow(ed.problems.MinimalValley(), 0.3)
    with pytest.raises(ValueError, match=match):
        ed.solve(model, [0.1, 3.0], 10, initial={'sigma0': sigma0})


def test_unknown_solver_lists_valid_ones():
    model = FreeEnergyFlow(ed.problems.MinimalValley(), 0.3)
    with pytest.raises(ValueError, match="scipy:LSODA"):
        ed.solve(model, [0.1, 3.0], 10, solver="euler")


def test_missing_third_is_named():
    class NoThird(ed.problems.Problem):
        name = "no-third"
        dim = 2

        def _loss(self, t):
            return float(t @ t)

        def _grad(self, t):
            return 2 * t

        def _hvp(self, t, v):
            return 2 * v

    with pytest.raises(TypeError, match="third"):
        FreeEnergyFlow(NoThird(), 0.3)


def test_divergence_raises_with_step_and_partial_result():
    prob = ed.problems.Quadratic(np.diag([3.0, 1.0]))
    model = FreeEnergyFlow(prob, 1.0, n_track=2, floor=0.0)  # ηλ = 3: Σ grows by 4 per step
    with pytest.raises(ed.IntegrationError) as info:
        ed.solve(model, [1.0, 1.0], 200, solver='map', blowup=1000000.0, initial={'sigma0': np.array([[1.0], [0.0]])})
    err = info.value
    assert err.cause == "blow-up" and 5 <= err.step <= 25
    assert err.partial is not None and len(err.partial.k) == err.step + 1
    sol = ed.solve(model, [1.0, 1.0], 200, solver='map', blowup=1000000.0, throw=False, initial={'sigma0': np.array([[1.0], [0.0]])})
    assert sol.status == "diverged" and "step" in sol.message


def test_matrix_factorisation_period_two_measured_errors():
    """DMF d=2, depth 3, η=0.077, target diag(5.5, 1): GD settles on a large period-two orbit
    (loss alternating 1.33 / 0.65). Measured (issue 3): amplitude error ≈ 0.10, loss error
    ≈ 0.27 of GD's loss range, midpoint distance ≈ 0.5 %. The model pins λ(θ̄) = 2/η while
    GD's orbit has λ(θ̄) ≈ 25.3 < 2/η = 26.0 (docs/theory.md §6); these bounds guard the
    measured figures against regressions, they are not the 10 % target."""
    eta = 0.077
    prob = ed.problems.DeepMatrixFactorization(2, 3, np.diag([5.5, 1.0]), init="small", init_scale=0.1)
    theta0 = prob.init(0)
    traj = ed.gd(prob, theta0, eta, 3000, eig_every=1)
    sol = ed.solve(FreeEnergyFlow(prob, eta), theta0, 3000, solver="scipy:LSODA", rtol=1e-8, atol=1e-12)
    m = ed.compare(traj, sol, window="last-third")
    assert m.amplitude_error < 0.12 and m.loss_error < 0.32 and m.distance < 0.01, m
    # the model sits exactly on the edge at its centre; GD's midpoint does not
    assert abs(m.mean_sharpness_model * eta / 2 - 1) < 1e-6


def test_relative_sigma_tolerance_converges_through_the_onset():
    """Σ seeded at round-off lies far below atol until the onset; relative error control
    for Σ makes a loose rtol agree with a tight one through the first cycles."""
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    run = lambda rtol: ed.solve(FreeEnergyFlow(prob, 0.3, storage="factor", relative_sigma_tol=True), [0.1, 3.0], 3000,
                                rtol=rtol, atol=1e-12)
    ref, loose = run(1e-10), run(1e-6)
    assert np.max(np.abs(loose.sharpness - ref.sharpness)) < 1e-3
