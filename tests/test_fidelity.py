"""Fidelity where it is hard (several unstable directions, fluctuations seeded at round-off):
the defaults that keep the models honest, and the warning when one is not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import effdyn as ed

pytestmark = pytest.mark.xdist_group("fidelity")


def _exp_valley():
    """E = ½e^{y}x² − ε(x + y): the curvature along the oscillating x grows exponentially
    with the position y, so a model that misses the onset runs away fast."""
    from effdyn._jax import import_jax

    _, jnp = import_jax()
    return ed.problems.from_jax(lambda t: 0.5 * jnp.exp(t[1]) * t[0] ** 2 - 0.01 * (t[0] + t[1]), dim=2,
                                name="exp_valley")


def test_stalled_oscillation_is_flagged_not_reported_as_success_alone():
    # the plain factor storage with absolute error control never sees Σ grow from its
    # round-off seed: the sharpness runs off while the amplitude stays at ~1e-11
    p, eta, th0 = _exp_valley(), 0.3, [0.1, 0.5]
    traj = ed.gd(p, th0, eta, 1500)
    with pytest.warns(RuntimeWarning, match="stalled oscillation"):
        bad = ed.solve(ed.models.FreeEnergyFlow(p, eta, storage="factor"), th0, 1500, rtol=1e-6, atol=1e-9)
    assert bad.success and bad.stats.warnings and "stalled oscillation" in bad.stats.warnings[0]
    assert bad.sharpness.max() > 10 * 2 / eta  # what the flag is about: far past the edge
    # the default (log-amplitude storage) follows GD through the onset and is not flagged
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        good = ed.solve(ed.models.FreeEnergyFlow(p, eta), th0, 1500, rtol=1e-6, atol=1e-9)
    assert good.stats.warnings == []
    m_bad, m_good = ed.compare(traj, bad), ed.compare(traj, good)
    # measured over steps 468–1500: distance 0.08 / 1.18, sharpness error 0.28 / 5.95
    # (log-factor / factor; the log-factor error is its onset overshoot)
    assert m_good.distance < 0.5 < m_bad.distance and m_good.sharpness_error < 0.1 * m_bad.sharpness_error


def test_two_modes_at_the_edge_run_with_the_default_tracking():
    # two singular values above the edge: three eigenvalues near 31 (two within 0.04) and
    # crossings inside the cluster. Tracking rank + 1 eigenpairs cut through it and stopped
    # LSODA by its evaluation limit near step 190; the default tracks the whole spectrum.
    D = ed.problems.DeepMatrixFactorization
    p = D(2, 3, np.diag([5.3, 5.2]), init="balanced", init_scale=0.3)
    th0, eta = p.init(0), 0.077
    kw = dict(rtol=1e-6, atol=1e-9, throw=False)
    cut = ed.solve(ed.models.FreeEnergyFlow(p, eta, rank=2, n_track=3), th0, 600, **kw)
    assert cut.status == "failed" and cut.stats.cause == "too many evaluations"
    whole = ed.solve(ed.models.FreeEnergyFlow(p, eta, rank="auto"), th0, 600, **kw)
    assert whole.success and whole.model.rank == 4 and whole.model.n_track == p.dim
    traj = ed.gd(p, th0, eta, 600, n_eigs=4)
    m = ed.compare(traj, whole)
    central = ed.compare(traj, ed.solve(ed.models.CentralFlow(p, eta), th0, 600, **kw))
    # within the central flow's errors (measured: loss 0.16 vs 0.15, distance equal to 1e-3)
    assert m.loss_error < 1.5 * central.loss_error and m.distance < 1.5 * central.distance


def test_rod_flow_keeps_a_round_off_floor():
    # below 2/η the rod's half-step decays by hundreds of e-folds; without a floor RK45
    # lets it underflow to exactly 0, after which the rod flow is gradient flow past the edge
    p = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    kw = dict(solver="scipy:RK45", rtol=1e-8, atol=1e-12)
    floored = ed.solve(ed.models.RodFlow(p, 0.3), [0.1, 3.0], 2000, **kw)
    pure = ed.solve(ed.models.RodFlow(p, 0.3, delta_floor=None), [0.1, 3.0], 2000, **kw)
    floor = np.finfo(float).eps * np.maximum(1.0, np.linalg.norm(floored.theta, axis=1))
    assert np.min(floored.amplitude_subspace / floor) > 0.25  # held at the floor (measured: 0.47) ...
    assert floored.amplitude_subspace[-1] > 0.05  # ... and it oscillates at the EoS (GD: ≈ 0.14)
    assert pure.amplitude_subspace[-1] == 0.0 and pure.sharpness[-1] > 1.2 * 2 / 0.3  # measured: 0.0, 9.0


@pytest.mark.parametrize("bad, arg", [("few", "rank"), (0, "rank")])
def test_rank_argument(bad, arg):
    with pytest.raises((TypeError, ValueError), match=f"`{arg}`"):
        ed.models.FreeEnergyFlow(ed.problems.MinimalValley(), 0.3, rank=bad)


def test_stall_detector_on_synthetic_records():
    # above the edge for 300 steps: an amplitude wandering at noise level (up and down by
    # orders of magnitude, as an absolute-tolerance-limited Σ does) is flagged; one that
    # grows at the slowest rate the edge allows, (1 + 2·margin) per step, is not
    from types import SimpleNamespace

    from solvers._run import STALL_MARGIN, stalled_oscillation

    model = SimpleNamespace(eta=0.3, dim=2, has_oscillation=True)
    ks = np.arange(0, 300, 5.0)
    sharp = np.full(ks.size, 2 / 0.3 * 1.2)
    ys = [np.array([1.0, 2.0])] * ks.size
    rng = np.random.default_rng(0)
    wander = 1e-12 * 10 ** rng.uniform(-2, 2, ks.size)
    wander[0] = 1e-19  # a low start: a fixed reference at the first record would miss the stall
    grow = 1e-16 * (1 + 2 * STALL_MARGIN) ** ks
    recs = lambda a: [{"sharpness": s, "amplitude": x} for s, x in zip(sharp, a)]  # noqa: E731
    assert "stalled oscillation" in stalled_oscillation(model, ks, recs(wander), ys)
    assert stalled_oscillation(model, ks, recs(grow), ys) is None
    # below the edge nothing is flagged, however small the amplitude
    below = [{"sharpness": 2 / 0.3 * 0.99, "amplitude": 1e-20} for _ in ks]
    assert stalled_oscillation(model, ks, below, ys) is None


def test_flow_floor_is_gds_coordinatewise_roundoff_and_the_map_keeps_the_norm_floor():
    # per mode i: ε² Σ_p v_{i,p}² θ_p² (GD's rounding of each coordinate, projected), the
    # same in JAX; a given number is used as is; the map and the seeds keep (ε·max(1, ‖θ‖))²
    from effdyn._jax import import_jax
    from effdyn.models.free_energy.dynamics import floor_value, mode_floor

    _, jnp = import_jax()
    eps = np.finfo(np.float64).eps
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(5) * np.array([1e-3, 1.0, 4.0, 0.0, 2.0])
    Q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    q = mode_floor(np, theta, Q, -1.0, 2)
    np.testing.assert_allclose(q, [eps**2 * np.sum(Q[:, i] ** 2 * theta**2) for i in range(2)], rtol=1e-14)
    np.testing.assert_allclose(np.asarray(mode_floor(jnp, jnp.asarray(theta), jnp.asarray(Q), -1.0, 2)), q, rtol=1e-14)
    np.testing.assert_array_equal(mode_floor(np, theta, Q, 1e-20, 2), 1e-20)
    assert float(floor_value(np, theta, -1.0)) == (eps * np.linalg.norm(theta)) ** 2
    # on the minimal valley the oscillating coordinate is small: GD's own seed is ~1000× below
    # the norm-based floor in amplitude
    v = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    th = np.array([0.003, 3.8])
    w, V = np.linalg.eigh(v.hessian(th))
    ratio = np.sqrt(float(floor_value(np, th, -1.0)) / float(mode_floor(np, th, V[:, ::-1], -1.0, 1)[0]))
    assert 300 < ratio < 3000


def test_default_flow_within_the_central_flows_errors_on_the_minimal_valley():
    # the suite's minimal-valley case (η = 0.3 from (0.1, 3), 4000 steps, the case's solver
    # settings), from θ0: the free-energy flow with its defaults (log-factor storage, the
    # round-off floor, GD's half-step seed) is within the central flow's errors on every
    # column (measured: loss 0.0083 / 0.0101, sharpness 0.0039 / 0.013, amplitude 0.21 /
    # 0.39, distance 0.0089 / 0.029); with the former norm-based floor its onset came ~20
    # steps early and its loss error was 0.0117
    v, eta, th0, steps = ed.problems.MinimalValley(zeta=1.0, eps=0.01), 0.3, [0.1, 3.0], 4000
    traj = ed.gd(v, th0, eta, steps, n_eigs=2, eig_every=1)
    fe = ed.solve(ed.models.FreeEnergyFlow(v, eta), th0, steps, rtol=1e-6, atol=1e-9, initial={"sigma_seed": "gd"})
    cf = ed.solve(ed.models.CentralFlow(v, eta), th0, steps)
    m_fe, m_cf = ed.compare(traj, fe), ed.compare(traj, cf)
    for name in ("loss_error", "sharpness_error", "amplitude_error", "distance"):
        assert getattr(m_fe, name) < getattr(m_cf, name), name
    assert m_fe.loss_error < 0.9 * m_cf.loss_error and m_fe.sharpness_error < 0.5 * m_cf.sharpness_error
