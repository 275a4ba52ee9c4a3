"""The GD reference as arbiter: its eigen-tracker on a wide period-two orbit of a deep linear
network (checked against dense eigvalsh), the subspace half-step amplitude, the step-count
rule and the first cause of a divergence."""

from __future__ import annotations

import numpy as np
import pytest

import effdyn as ed
from effdyn.kernels.gd_loop import compiled_chunk, python_chunk

pytestmark = pytest.mark.xdist_group("gd")

ETA = 0.077  # 2/η ≈ 25.97; a mode σ of the depth-3 product sits at the edge for 3σ^{4/3} = 2/η, σ ≈ 5.05
SIGMA = (5.3, 5.5, 5.7, 1.0, 1.0)


@pytest.fixture(scope="module")
def dln_orbit():
    """d = 5, depth 3 (P = 75), target diag(SIGMA), W_i = 0.5·I at the start.

    The three modes with σ above 5.05 each settle on a period-two oscillation; by step 200
    θ_{k+2} = θ_k holds exactly (the diagonal structure is preserved by GD). The top
    eigenvalue alternates between 41.71 and 45.34 and the two tops belong to different
    singular modes, whose Hessian eigenvectors form mutually invariant blocks: a warm
    Krylov subspace grown inside one block never reaches the other.
    """
    prob = ed.problems.DeepMatrixFactorization(5, 3, np.diag(SIGMA), init="identity", init_scale=0.5)
    pre = ed.gd(prob, prob.init(), ETA, 300, eig_every=None)
    assert np.array_equal(pre.theta[-1], pre.theta[-3])  # on the orbit
    assert np.linalg.norm(pre.theta[-1] - pre.theta[-2]) > 0.9  # a wide one
    return prob, pre.theta[-1]


def dense_top(prob, thetas, n):
    return np.array([np.linalg.eigvalsh(prob.hessian(t))[::-1][:n] for t in thetas])


def test_dln_orbit_tracker_without_defences_misses_every_other_top(dln_orbit):
    """The defect, reproduced: warm starts alone report an interior eigenvalue at odd steps."""
    prob, theta = dln_orbit
    off = dict(probe=0, check_every=None, check_jump=None)
    traj = ed.gd(prob, theta, ETA, 20, dense_max=0, eig_options=off)
    truth = dense_top(prob, traj.theta, 1)[:, 0]
    np.testing.assert_allclose(truth[::2], 41.70577866, rtol=1e-8)
    np.testing.assert_allclose(truth[1::2], 45.34143787, rtol=1e-8)
    miss = np.abs(traj.sharpness - truth) > 1e-6 * truth
    assert miss[1::2].all() and not miss[::2].any()
    assert np.all(traj.sharpness[1::2] < 0.7 * truth[1::2])  # far from the top: 14.6 instead of 45.3


@pytest.mark.parametrize("n_eigs", [1, 3])
@pytest.mark.parametrize("options", [{}, {"check_every": None, "check_jump": None}], ids=["default", "probe-only"])
def test_dln_orbit_recorded_eigenvalues_equal_dense_eigvalsh(dln_orbit, n_eigs, options):
    prob, theta = dln_orbit
    traj = ed.gd(prob, theta, ETA, 40, n_eigs=n_eigs, dense_max=0, eig_options=options)
    assert traj.n_hvp > 0  # the Lanczos path (P = 75 > dense_max = 0)
    truth = dense_top(prob, traj.theta, n_eigs)
    np.testing.assert_allclose(traj.eigs, truth, rtol=0, atol=1e-10 * truth[0, 0])
    assert traj.eig_corrections == 0
    if not options:
        assert traj.eig_checks >= 1  # update 0 is cold; the first warm one jumps by 8.7 % and is checked


def test_dln_transient_and_orbit_from_the_start(dln_orbit):
    """From W_i = 0.5·I: a degenerate start, sharpness ×6 in 10 steps, crossings between the
    modes, then the orbit. Every recorded top eigenvalue must be the dense one."""
    prob, _ = dln_orbit
    traj = ed.gd(prob, prob.init(), ETA, 250, dense_max=0)
    truth = dense_top(prob, traj.theta, 1)[:, 0]
    np.testing.assert_allclose(traj.sharpness, truth, rtol=1e-10)
    assert 0 < traj.eig_checks < 60


def test_spot_check_counts_and_repairs_a_miss(dln_orbit):
    """With the probe off, the periodic spot check is what finds the odd-step top; once found,
    the warm history keeps it."""
    prob, theta = dln_orbit
    traj = ed.gd(prob, theta, ETA, 30, dense_max=0,
                 eig_options=dict(probe=0, check_every=5, check_jump=None))
    truth = dense_top(prob, traj.theta, 1)[:, 0]
    miss = np.flatnonzero(np.abs(traj.sharpness - truth) > 1e-8 * truth)
    assert traj.eig_checks == 6 and traj.eig_corrections == 1  # updates 5, 10, ..., 30; update 5 corrected
    np.testing.assert_array_equal(miss, [1, 3])  # wrong only before the correction at update 5
    ds = traj.to_xarray()
    assert ds.attrs["eig_checks"] == 6 and ds.attrs["eig_corrections"] == 1


def test_subspace_amplitude_on_the_wide_orbit(dln_orbit):
    """On this orbit v1 belongs to a different mode at each iterate: the top-mode amplitude
    reads 0.268 / 0.322 at even / odd steps, the top-3 subspace amplitude 0.335 / 0.322."""
    prob, theta = dln_orbit
    traj = ed.gd(prob, theta, ETA, 6, n_eigs=3, dense_max=0)
    _, top = traj.amplitude()
    _, sub = traj.amplitude(subspace=True)
    # independent: dense eigenvectors and the recorded iterates
    for k in range(6):
        w, U = np.linalg.eigh(prob.hessian(traj.theta[k]))
        step = traj.theta[k + 1] - traj.theta[k]
        assert sub[k] == pytest.approx(0.5 * np.linalg.norm(U[:, -3:].T @ step), rel=1e-10)
        assert top[k] == pytest.approx(0.5 * abs(U[:, -1] @ step), rel=1e-10)
    np.testing.assert_allclose(top[:2], [0.26809127, 0.32182046], rtol=1e-7)
    np.testing.assert_allclose(sub[:2], [0.33468299, 0.32182046], rtol=1e-7)
    assert abs(sub[0] / sub[1] - 1) < 0.05 < abs(top[0] / top[1] - 1)


def test_subspace_amplitude_compiled_equals_numpy_loop_and_top_for_one_eig():
    prob = ed.problems.DeepMatrixFactorization(2, 3, np.diag([5.5, 1.0]), init="small", init_scale=0.5)
    theta0 = prob.init(3)
    fast = ed.gd(prob, theta0, 0.077, 300, n_eigs=3)
    slow = ed.gd(prob, theta0, 0.077, 300, n_eigs=3, compiled=False)
    np.testing.assert_allclose(fast.half_amp_subspace, slow.half_amp_subspace, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fast.half_amp, slow.half_amp, rtol=1e-12, atol=1e-15)
    assert np.all(fast.half_amp_subspace >= fast.half_amp - 1e-15)
    one = ed.gd(prob, theta0, 0.077, 300, n_eigs=1)
    np.testing.assert_array_equal(one.half_amp_subspace, one.half_amp)
    # the chunk functions themselves: a 2-column basis by hand
    V = np.linalg.qr(np.random.default_rng(0).standard_normal((prob.dim, 2)))[0]
    g = prob.grad(theta0)
    for chunk, params in ((compiled_chunk(prob.numba_kernels.loss, prob.numba_kernels.grad), prob.numba_kernels.params),
                          (python_chunk(lambda t, _: float(prob._loss(t)), lambda t, _: prob._grad(t)), ())):
        amp, sub = np.zeros(1), np.zeros(1)
        chunk(params, theta0.copy(), theta0.copy(), 0.1, 0, 0.0, 1e10, np.ascontiguousarray(V), 0, 1, False, 1,
              False, np.zeros(2), np.zeros(2), amp, sub, np.zeros((2, prob.dim)), np.zeros((1, prob.dim)))
        assert amp[0] == pytest.approx(0.05 * abs(V[:, 0] @ g), rel=1e-12)
        assert sub[0] == pytest.approx(0.05 * np.linalg.norm(V.T @ g), rel=1e-12)


def test_amplitude_subspace_errors():
    prob = ed.problems.MinimalValley(1.0, 0.01)
    traj = ed.gd(prob, [0.1, 3.0], 0.3, 5)
    with pytest.raises(TypeError, match="`subspace`"):
        traj.amplitude(subspace="yes")
    traj.half_amp_subspace = None
    with pytest.raises(ValueError, match="half_amp_subspace"):
        traj.amplitude(subspace=True)


# --- steps: one rule with effdyn.solve --------------------------------------------------------


@pytest.mark.parametrize("steps", [20, 20.0, np.int64(20), np.float64(20.0), np.array(20), np.array(20.0)])
def test_steps_accepts_integral_values(steps):
    prob = ed.problems.MinimalValley(1.0, 0.01)
    traj = ed.gd(prob, [0.1, 3.0], 0.3, steps)
    assert traj.steps == 20 and isinstance(traj.config["steps"], int)


@pytest.mark.parametrize("steps, exc", [(1e4 + 0.5, ValueError), (np.inf, ValueError), (-2.0, ValueError),
                                        ("20", TypeError), (True, TypeError), (np.array([20]), TypeError),
                                        (20 + 0j, TypeError)])
def test_steps_refuses_non_integral_values(steps, exc):
    prob = ed.problems.MinimalValley(1.0, 0.01)
    with pytest.raises(exc, match="`steps`"):
        ed.gd(prob, [0.1, 3.0], 0.3, steps)


def test_eig_options_are_checked():
    prob = ed.problems.MinimalValley(1.0, 0.01)
    with pytest.raises(ValueError, match="`eig_options`.*bogus"):
        ed.gd(prob, [0.1, 3.0], 0.3, 5, eig_options={"bogus": 1})
    with pytest.raises(TypeError, match="`eig_options`"):
        ed.gd(prob, [0.1, 3.0], 0.3, 5, eig_options=[("probe", 1)])
    with pytest.raises(ValueError, match="`probe`"):
        ed.gd(prob, [0.1, 3.0], 0.3, 5, eig_options={"probe": -1})


# --- divergence: the first cause is named ---------------------------------------------------


def test_overflowing_iterate_is_reported_as_a_loss_failure():
    """η∇E overflows to ±inf in θ_1 while E(θ_0) and ∇E(θ_0) were finite: the eigen-solve at θ_1
    meets the overflow first, but the cause is the loss, not the Hessian."""
    prob = ed.problems.MinimalValley(1.0, 0.01)
    traj = ed.gd(prob, [2.0, 3.0], 1e308, 5, loss_bound=np.inf, throw=False)
    assert traj.status == "diverged" and traj.cause == "non-finite" and traj.diverged_at == 1
    assert "non-finite loss" in traj.message and "Hessian" not in traj.message
    with pytest.raises(ed.IntegrationError, match="non-finite loss"):
        ed.gd(prob, [2.0, 3.0], 1e308, 5, loss_bound=np.inf)
