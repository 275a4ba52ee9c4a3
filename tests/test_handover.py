"""Handover from GD (effdyn.handover): GD's state at a step k0 starts any model, whose time
axis then continues GD's; the suite reports both starts and what seeded each row."""

from __future__ import annotations

import functools
import os
import signal

import numpy as np
import pytest

import effdyn as ed
from effdyn.errors import IntegrationError
from effdyn.handover import HandoverState, alternating_filter, seed_label
from effdyn.solvers import resume

pytestmark = pytest.mark.xdist_group("handover")

M = ed.models
VALLEY = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
K_VALLEY = 1472  # GD's EoS onset (1222) + 250: the oscillation is 5e-7 along v1 there


@functools.lru_cache(maxsize=None)
def valley_gd():
    return ed.gd(VALLEY, [0.1, 3.0], eta=0.3, steps=1600, n_eigs=2)


def _rotation(P, seed=3):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(P, P)))
    return q


# --- the handover is GD's own recursion on a frozen quadratic ---------------------------------

def test_free_energy_map_from_handover_is_gds_recursion_on_a_quadratic():
    """E = ½θᵀAθ, A = R diag(λ) Rᵀ, ηλ = (2.2, 1.5, 0.5): in the eigenbasis GD multiplies
    mode i by m_i = 1 − ηλ_i each step, so δ_k = (θ_{k+1} − θ_k)/2 has v_iᵀδ_k = m_i^{k−k0}
    v_iᵀδ_{k0} and the midpoint θ̄_k, linear in the iterates, is multiplied by m_i too. The
    free-energy map from the handover: θ ← θ − η∇F = (I − ηA)θ (the third derivative of a
    quadratic vanishes), so θ_j = m^j θ̄_{k0} = θ̄_{k0+j}; the factor column of an
    oscillating mode (ηλ > 1) is multiplied by |1 − ηλ| = |m_i| (GD's covariance recursion
    Σ ← |M|Σ|M|), so |V_i| = |m_i|^j |v_iᵀδ_{k0}| = |v_iᵀδ_{k0+j}|: the model reproduces
    GD's midpoint and its half-step amplitude in the top-2 subspace at every step."""
    eta, lam = 0.1, np.array([22.0, 15.0, 5.0])
    R = _rotation(3)
    prob = ed.problems.Quadratic(R @ np.diag(lam) @ R.T)
    traj = ed.gd(prob, R @ [1e-3, 1.0, 2.0], eta=eta, steps=70, n_eigs=2)
    k0, n = 21, 40
    state = traj.state_at(k0, filter_order=1)
    np.testing.assert_allclose(state.delta, 0.5 * (traj.theta[k0 + 1] - traj.theta[k0]), rtol=0, atol=0)
    np.testing.assert_allclose(state.eigvals, lam[:2], rtol=1e-12)
    sol = ed.solve(M.FreeEnergyFlow(prob, eta, rank=2), start=state, steps=n, solver="map")
    np.testing.assert_array_equal(sol.k, np.arange(k0, k0 + n + 1))
    mk, mid = traj.midpoint()
    np.testing.assert_allclose(sol.theta, mid[np.searchsorted(mk, sol.k.astype(int))], rtol=1e-12, atol=1e-15)
    _, sub = traj.amplitude(subspace=True)
    np.testing.assert_allclose(sol.amplitude_subspace, sub[k0: k0 + n + 1], rtol=1e-12)
    # mode by mode: |V_i| = |v_iᵀδ_k| of GD, growing at 1.2 per step for the top mode
    V = sol.sigma_factor
    m = 1.0 - eta * lam[:2]
    coeff0 = R[:, :2].T @ state.delta
    for j in (0, 1, 17, n):
        k = k0 + j
        gd_coeff = R[:, :2].T @ (0.5 * (traj.theta[k + 1] - traj.theta[k]))
        # (the eigenvectors of H(θ̄) are computed: rounding of 1e-16 mixes the modes that much)
        np.testing.assert_allclose(np.linalg.norm(V[j], axis=0), np.abs(m) ** j * np.abs(coeff0), rtol=1e-12,
                                   atol=1e-15 * np.abs(m[0]) ** j)
        # GD's own iterates carry round-off of their size (~1e-16·‖θ‖) in the decaying mode
        np.testing.assert_allclose(np.linalg.norm(V[j], axis=0), np.abs(gd_coeff), rtol=1e-12, atol=1e-14)
    # compare: the window starts at k0, model and GD agree to rounding
    met = ed.compare(traj, sol)
    assert met.k0 == k0 and met.k1 == k0 + n
    assert met.distance < 1e-12 and met.amplitude_error < 1e-12 and met.sharpness_error < 1e-12


def test_the_alternating_filter_removes_drift_and_keeps_the_oscillation():
    # θ_j = c + b j + d j² + e j³ + (−1)^j a: order 8 returns −(−1)^k a (the half-step's sign)
    a, b, d, e = np.array([1e-9, 0.0]), np.array([0.3, 1.0]), np.array([-0.02, 0.5]), np.array([1e-3, 0.0])
    j = np.arange(40)[:, None]
    theta = 1.0 + b * j + d * j**2 + e * j**3 + (-1.0) ** j * a
    for k in (11, 12):
        est = alternating_filter(theta[k - 4: k + 5], k, 8)
        np.testing.assert_allclose(est, -(-1.0) ** k * a, rtol=0, atol=1e-12 * np.max(np.abs(theta)))
        half = alternating_filter(theta[k: k + 2], k, 1)
        np.testing.assert_array_equal(half, 0.5 * (theta[k + 1] - theta[k]))
    # on the valley 250 steps after the onset: the half-step measures mostly the drift
    traj = valley_gd()
    s8, s1 = traj.state_at(K_VALLEY), traj.state_at(K_VALLEY, filter_order=1)
    np.testing.assert_array_equal(s8.theta_bar, 0.25 * (traj.theta[K_VALLEY - 1] + 2 * traj.theta[K_VALLEY]
                                                        + traj.theta[K_VALLEY + 1]))
    assert 2e-7 < s8.amplitude < 2e-6 and s1.amplitude_subspace > 100 * s8.amplitude


# --- time axis, compare windows, checkpoints ---------------------------------------------------

def test_time_axis_continues_at_k0_and_compare_uses_the_right_steps():
    traj = valley_gd()
    state = traj.state_at(K_VALLEY)
    model = M.FreeEnergyFlow(VALLEY, 0.3, rank=1)
    ode = ed.solve(model, start=state, steps=100, save_every=0.5, rtol=1e-6, atol=1e-9)
    assert ode.k[0] == K_VALLEY and ode.k[-1] == K_VALLEY + 100 and np.all(np.diff(ode.k) == 0.5)
    np.testing.assert_array_equal(ode.theta[0], state.theta_bar)
    assert ode.extra["handover"]["k0"] == K_VALLEY and ode.theta0 is None
    m = ed.compare(traj, ode)  # default window starts at GD's onset (1222): moved to k0
    assert (m.k0, m.k1) == (K_VALLEY, K_VALLEY + 100)
    assert ed.compare(traj, ode, window="all").k0 == K_VALLEY
    assert (ed.compare(traj, ode, window=(1500, 1550)).k0, ed.compare(traj, ode, window=(1500, 1550)).k1) == \
        (1500, 1550)
    # over these 100 steps (the oscillation grows from 5e-7 to 0.1) the flow handed GD's state
    # is closer to GD than the same flow from θ0, whose onset is set by its own seed (measured:
    # sharpness error 0.0047 against 0.012, distance 0.0046 against 0.026, amplitude 0.13
    # against 0.71; with the former norm-based floor of the flow θ0's were 0.048 and 0.071)
    from_theta0 = ed.solve(model, [0.1, 3.0], steps=K_VALLEY + 100, rtol=1e-6, atol=1e-9)
    base = ed.compare(traj, from_theta0, window=(K_VALLEY, K_VALLEY + 100))
    assert m.sharpness_error < 0.006 < 0.01 < base.sharpness_error
    assert m.distance < 0.006 < 0.02 < base.distance
    assert m.amplitude_error < 0.2 < 0.5 < base.amplitude_error
    mp = ed.solve(model, start=state, steps=100, solver="map", save_every=10)
    np.testing.assert_array_equal(mp.k, np.arange(K_VALLEY, K_VALLEY + 101, 10))
    # a solution from θ0 is still checked against GD's θ0
    gf = ed.solve(M.GradientFlow(VALLEY, 0.3), [0.1, 3.1], steps=1300)
    with pytest.raises(ValueError, match="another θ0"):
        ed.compare(traj, gf)


@pytest.fixture
def interactive_sigint():
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("solver", ["map", "scipy:RK45"])
def test_resume_of_a_handover_run_is_bit_identical(solver, tmp_path, interactive_sigint):
    state = valley_gd().state_at(K_VALLEY)
    kw = dict(solver=solver, rtol=1e-7, atol=1e-9)
    ref = ed.solve(M.EdgeFlow(VALLEY, 0.3), start=state, steps=60, **kw)
    fired = []

    def ctrl_c(k, y):
        if k >= K_VALLEY + 33 and not fired:
            fired.append(k)
            os.kill(os.getpid(), signal.SIGINT)

    path = tmp_path / "h.ckpt"
    with pytest.raises(IntegrationError, match="interrupted"):
        ed.solve(M.EdgeFlow(VALLEY, 0.3), start=state, steps=60, checkpoint=path, checkpoint_every=10,
                 callback=ctrl_c, **kw)
    sol = resume(M.EdgeFlow(VALLEY, 0.3), path)
    assert sol.k[0] == K_VALLEY and np.array_equal(sol.k, ref.k) and np.array_equal(sol.y, ref.y)
    assert sol.extra["handover"]["k0"] == K_VALLEY


# --- refusals ---------------------------------------------------------------------------------

def test_refusals_name_the_argument():
    traj = valley_gd()
    state = traj.state_at(K_VALLEY)
    other = ed.problems.MinimalValley(zeta=1.0, eps=0.02)
    with pytest.raises(ValueError, match="`start`.*another problem"):
        ed.solve(M.GradientFlow(other, 0.3), start=state, steps=5)
    with pytest.raises(ValueError, match="`start`.*eta"):
        ed.solve(M.GradientFlow(VALLEY, 0.31), start=state, steps=5)
    with pytest.raises(ValueError, match="`start`.*replaces `theta0`"):
        ed.solve(M.GradientFlow(VALLEY, 0.3), [0.1, 3.0], start=state, steps=5)
    with pytest.raises(TypeError, match="`start` must be a HandoverState"):
        ed.solve(M.GradientFlow(VALLEY, 0.3), start={"k0": 3}, steps=5)
    with pytest.raises(ValueError, match="n = 1 .*state_at\\(1472, n=2\\)"):
        ed.solve(M.FreeEnergyFlow(VALLEY, 0.3, rank=2), start=traj.state_at(K_VALLEY, n=1), steps=5)
    with pytest.raises(ValueError, match="`problem` is not the problem GD ran on"):
        traj.state_at(K_VALLEY, problem=other)
    with pytest.raises(TypeError, match="`k` must be an integer"):
        traj.state_at(1472.0)
    with pytest.raises(ValueError, match="`k` must lie in \\[4, 1596\\]"):
        traj.state_at(1597)
    with pytest.raises(ValueError, match="`filter_order`"):
        traj.state_at(K_VALLEY, filter_order=0)
    strided = ed.gd(VALLEY, [0.1, 3.0], eta=0.3, steps=40, theta_every=2)
    with pytest.raises(ValueError, match="theta_every=1"):
        strided.state_at(20)
    with pytest.raises(ValueError, match="`eigvecs` must have shape"):
        HandoverState(k0=3, eta=0.3, theta=[0.0, 1.0], theta_bar=[0.0, 1.0], delta=[1.0, 0.0], eigvals=[1.0, 2.0],
                      eigvecs=np.eye(2)[:, :1])


def test_free_energy_handover_falls_back_to_the_floor_for_an_empty_mode():
    # δ along the first direction only: the second column is empty and takes the floor seed
    # √q·v2 (a state built by hand; its directions need not be H's for the mapping)
    traj = valley_gd()
    s = traj.state_at(K_VALLEY)
    v = np.eye(2)
    state = HandoverState(k0=s.k0, eta=0.3, theta=s.theta, theta_bar=s.theta_bar, delta=[-1e-3, 0.0],
                          eigvals=s.eigvals, eigvecs=v, problem_identity=s.problem_identity)
    model = M.FreeEnergyFlow(VALLEY, 0.3, rank=2)
    y0, _ = model.start_from(state)
    V = model.factor_of(y0)
    q = model.floor_at(s.theta_bar)
    np.testing.assert_allclose(np.abs(v.T @ V), np.diag([1e-3, np.sqrt(q)]), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="log-factor"):
        M.FreeEnergyFlow(VALLEY, 0.3, rank=2, floor=0.0).start_from(state)


# --- every model accepts a handover state -------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _scalar_ngd():
    p = ed.problems.ScalarProduct(depth=3, target=1.0)
    return p, ed.gd(p, [2.0, 1.0, 0.6], eta=0.01, steps=300, variant="normalized", n_eigs=1)


@functools.lru_cache(maxsize=None)
def _net_gd():
    from effdyn.problems.two_layer import teacher_student

    net = teacher_student(6, n=12, d=3, seed=0)
    return net, ed.gd(net, net.init(0), eta=6 * 0.5, steps=60, n_eigs=2)


def _valley_case(make, solver, check):
    return lambda: (make(), valley_gd().state_at(K_VALLEY), solver, check)


def _check_theta_bar(sol, state, model):
    np.testing.assert_allclose(sol.theta[0], state.theta_bar, rtol=1e-14)


def _check_fe(sol, state, model):
    _check_theta_bar(sol, state, model)
    assert sol.amplitude_subspace[0] == pytest.approx(np.linalg.norm(state.factor(model.rank)), rel=1e-12)


def _check_edge(sol, state, model):
    _check_theta_bar(sol, state, model)
    assert sol.rho[0] == pytest.approx(state.amplitude, rel=1e-12)
    assert abs(sol.u[0] @ state.eigvecs[:, 0]) == pytest.approx(1.0, rel=1e-14)


def _check_rod(sol, state, model):
    _check_theta_bar(sol, state, model)
    if model.sigma == "rank1":  # the rod's sign: −v1(v1ᵀδ)
        np.testing.assert_allclose(sol.delta[0], -state.factor(1)[:, 0], rtol=1e-12)
    else:
        assert sol.amplitude_subspace[0] == pytest.approx(np.linalg.norm(state.delta), rel=1e-9)


def _check_ss(sol, state, model):
    dagger, _ = model.project(state.theta_bar)
    if model.mode == "constrained":
        np.testing.assert_allclose(sol.theta[0], dagger, rtol=1e-14)
    elif model.mode == "reduced":
        geo = model.geometry(dagger)
        assert sol.x[0] == pytest.approx(geo["v"] @ (state.theta - dagger), rel=1e-10)
    else:  # GD ≈ θ† + w starts at GD's own iterate
        np.testing.assert_allclose(sol.gd_prediction[0], state.theta, rtol=1e-14)


def _check_srf(sol, state, model):
    assert sol.loss[0] == pytest.approx(model.loss_min, abs=1e-10)
    assert np.linalg.norm(sol.theta[0] - state.theta_bar) < 0.05


def _check_mf(sol, state, model):
    theta, U = model.split(sol.y[0])
    np.testing.assert_array_equal(theta, state.theta_bar)
    sign = -1.0 if state.k0 % 2 == 0 else 1.0  # θ_k = θ̄ + (−1)^k u and θ_k ≈ θ̄ − δ
    np.testing.assert_allclose(U, sign * state.factor(model.rank), rtol=1e-14)


CASES = {
    "gradient-flow": _valley_case(lambda: M.GradientFlow(VALLEY, 0.3), "scipy:RK45", _check_theta_bar),
    "free-energy-log-factor": _valley_case(lambda: M.FreeEnergyFlow(VALLEY, 0.3, rank=2), "scipy:LSODA", _check_fe),
    "free-energy-factor-map": _valley_case(lambda: M.FreeEnergyFlow(VALLEY, 0.3, storage="factor"), "map", _check_fe),
    "free-energy-dense": _valley_case(lambda: M.FreeEnergyFlow(VALLEY, 0.3, storage="dense"), "scipy:RK45",
                                      _check_theta_bar),
    "free-energy-chord": _valley_case(lambda: M.FreeEnergyFlow(VALLEY, 0.3, closure="chord"), "scipy:LSODA",
                                      _check_fe),
    "central-flow": _valley_case(lambda: M.CentralFlow(VALLEY, 0.3), "scipy:LSODA", _check_theta_bar),
    **{f"self-stabilization-{mode}": _valley_case((lambda mode: lambda: M.SelfStabilization(VALLEY, 0.3, mode))(mode),
                                                  "map", _check_ss)
       for mode in ("constrained", "predicted", "generalized")},
    "self-stabilization-reduced": _valley_case(lambda: M.SelfStabilization(VALLEY, 0.3, "reduced"), "scipy:DOP853",
                                               _check_ss),
    "rod-flow-rank1": _valley_case(lambda: M.RodFlow(VALLEY, 0.3), "scipy:LSODA", _check_rod),
    "rod-flow-dense": _valley_case(lambda: M.RodFlow(VALLEY, 0.3, "dense"), "scipy:RK45", _check_rod),
    "edge-flow": _valley_case(lambda: M.EdgeFlow(VALLEY, 0.3), "map", _check_edge),
    "sharpness-reduction": lambda: (M.SharpnessReductionFlow(_scalar_ngd()[0], 0.01), _scalar_ngd()[1].state_at(250),
                                    "scipy:LSODA", _check_srf),
    "mean-field": lambda: (M.MeanFieldKinetic(_net_gd()[0], 0.5, rank=2), _net_gd()[1].state_at(41), "map",
                           _check_mf),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_model_accepts_a_handover_state(name):
    model, state, solver, check = CASES[name]()
    sol = ed.solve(model, start=state, steps=6, solver=solver, rtol=1e-7, atol=1e-10)
    assert sol.success and sol.k[0] == state.k0 and sol.k[-1] == state.k0 + 6
    check(sol, state, model)


# --- seeds and the suite ----------------------------------------------------------------------

def test_seed_labels_say_what_started_each_oscillation():
    state = valley_gd().state_at(K_VALLEY)
    fe = M.FreeEnergyFlow(VALLEY, 0.3)
    assert seed_label(fe) == seed_label(fe, {"sigma_seed": "gd"}) == "gd half-step"
    assert seed_label(fe, {"sigma_seed": "floor"}) == "round-off floor"
    assert seed_label(fe, {"sigma_seed": "floor", "seed_scale": 1e-20}) == "floor"
    assert seed_label(fe, {"sigma_seed": "zero"}) == "zero"
    assert seed_label(fe, {"sigma0": np.ones((2, 1))}) == "given"
    assert seed_label(M.EdgeFlow(VALLEY, 0.3)) == seed_label(M.RodFlow(VALLEY, 0.3)) == "gd half-step"
    assert seed_label(M.SelfStabilization(VALLEY, 0.3)) == "projection"
    assert seed_label(M.CentralFlow(VALLEY, 0.3)) == seed_label(M.GradientFlow(VALLEY, 0.3)) == "none"
    assert seed_label(fe, {"sigma_seed": "floor"}, start=state) == "handover"


def test_suite_reports_handover_rows_and_seeds(tmp_path):
    from effdyn.io import load_dataset
    from effdyn.validation import HANDOVER_COLUMNS, ModelSpec, Setup, parse_tables
    from effdyn.validation.report import write_report
    from effdyn.validation.runner import ValidationResult, run_setup

    models = (ModelSpec("gradient flow", "GradientFlow", solver="scipy:RK45"),
              ModelSpec("free-energy flow [map]", "FreeEnergyFlow", {"rank": 1}, {"sigma_seed": "gd"}, solver="map"),
              ModelSpec("edge flow", "EdgeFlow", solver="map"))
    setup = Setup(VALLEY, np.array([0.1, 3.0]), 0.3, 1600, models, gd_options={"n_eigs": 2, "eig_every": 1},
                  notes="valley", handover_offset=250)
    case = run_setup("valley-handover", "valley", setup, out_dir=tmp_path, figures=False, log=lambda m: None)
    assert case.handover_k0 == K_VALLEY
    assert [r.label for r in case.handovers] == [f"{m.label} [handover]" for m in models]
    assert [r.seed for r in case.models] == ["none", "gd half-step", "gd half-step"]
    assert all(r.seed == "handover" and r.status == "success" for r in case.handovers)
    fe0, fe = case.models[1], case.handovers[1]
    assert fe.solution.k[0] == K_VALLEY and (fe.metrics.k0, fe.metrics.k1) == (K_VALLEY, 1599)
    assert fe.baseline.k0 == K_VALLEY and fe.baseline.sharpness_error == pytest.approx(
        ed.compare(case.gd, fe0.solution, window=(K_VALLEY, 1599)).sharpness_error, rel=1e-12)
    # the map handed GD's state tracks GD far better than from θ0 (measured: 2e-4 against 2e-2)
    assert fe.metrics.sharpness_error < 0.1 * fe.baseline.sharpness_error
    text = write_report(ValidationResult([case], tmp_path, None, True), tmp_path / "report.md").read_text()
    rows = {r["model"]: r for r in parse_tables(text)["valley-handover"]}
    assert rows["GD (reference)"]["seed"] == "round-off" and rows["edge flow"]["seed"] == "gd half-step"
    hrows = {r["model"]: r for r in parse_tables(text, HANDOVER_COLUMNS)["valley-handover"]}
    assert float(hrows["free-energy flow [map] [handover]"]["sharpness err handover"]) == pytest.approx(
        fe.metrics.sharpness_error, rel=1e-2)
    ds = load_dataset(tmp_path / "valley-handover.nc")
    assert list(ds["seed"].values) == ["none", "gd half-step", "gd half-step"]
    assert list(ds["handover"].values) == [r.label for r in case.handovers]
    assert ds.attrs["handover_k0"] == K_VALLEY and ds.attrs["handover_offset"] == 250
    metric = list(ds["metric"].values)
    i = metric.index("sharpness_error")
    assert ds["handover_metrics"].values[1, i] == pytest.approx(fe.metrics.sharpness_error, rel=1e-12)
    assert ds["handover_metrics_theta0"].values[1, i] == pytest.approx(fe.baseline.sharpness_error, rel=1e-12)
    assert ds["free_energy_flow_map_handover__k"].values[0] == K_VALLEY


def test_case_files_declare_their_handover_offset():
    from effdyn.validation import get_case
    from effdyn.validation.config import ConfigError, config_from_document

    assert get_case("minimal-valley").setup(True, steps=10).handover_offset == 250
    assert get_case("scalar-product-ngd").setup(True, steps=10).handover_offset is None
    doc = {"case": {"title": "t", "quick_steps": 5, "full_steps": 5, "handover_offset": -1},
           "problem": {"type": "MinimalValley"}, "start": {"theta0": [0.1, 3.0]}, "gd": {"eta": 0.3, "steps": 5}}
    with pytest.raises(ConfigError, match="handover_offset"):
        config_from_document(doc, "doc.toml")
