"""Identities: a GD run and a model solution are compared, resumed or filed together only when
they belong to the same problem (parameters and loss), η and start."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import effdyn as ed
from effdyn.models.run_state import Counters, CountingProblem
from effdyn.problems.base import Problem

pytestmark = pytest.mark.xdist_group("identity")

THETA0 = [0.1, 3.0]


@pytest.fixture(scope="module")
def valley():
    """GD on MinimalValley(eps=0.01) and the gradient flow of the same run (short)."""
    p = ed.problems.MinimalValley(eps=0.01)
    traj = ed.gd(p, THETA0, 0.3, 200)
    sol = ed.solve(ed.models.GradientFlow(p, 0.3), THETA0, 200, solver="map")
    return traj, sol


def test_same_run_compares(valley):
    traj, sol = valley
    assert np.isfinite(ed.compare(traj, sol, window="all").loss_error)


def test_a_solution_of_another_problem_is_refused(valley):
    traj, _ = valley
    other = ed.solve(ed.models.GradientFlow(ed.problems.MinimalValley(eps=0.05), 0.3), THETA0, 200, solver="map")
    with pytest.raises(ValueError, match=r"another problem than `gd_trajectory`: parameters differ \(eps: 0.01 vs "
                                         r"0.05\).*check=False"):
        ed.compare(traj, other, window="all")
    assert np.isfinite(ed.compare(traj, other, window="all", check=False).loss_error)


def test_a_solution_from_another_start_is_refused(valley):
    traj, sol = valley
    moved = ed.solve(sol.model, [0.1, 3.01], 200, solver="map")
    with pytest.raises(ValueError, match=r"another θ0 than `gd_trajectory` \(max \|Δθ0\| = 0.01\).*check=False"):
        ed.compare(traj, moved, window="all")
    assert ed.compare(traj, moved, window="all", check=False).distance > 0
    # a handover starts elsewhere by design: from a state (no θ0 recorded), or from GD's
    # state at k0 with the times shifted onto GD's axis
    handed = ed.solve(sol.model, None, 200, solver="map", state0=[0.1, 3.01])
    assert handed.theta0 is None
    ed.compare(traj, handed, window="all")
    k0 = 50
    later = ed.solve(sol.model, traj.theta[k0], 150, solver="map")
    later.k = later.k + k0
    assert ed.compare(traj, later, window=(k0, 200)).distance < 1e-2


def test_eta_is_still_checked(valley):
    traj, _ = valley
    sol = ed.solve(ed.models.GradientFlow(traj._problem, 0.25), THETA0, 200, solver="map")
    with pytest.raises(ValueError, match="eta = 0.25 but `gd_trajectory` has eta = 0.3"):
        ed.compare(traj, sol)
    with pytest.raises(TypeError, match="`check` must be True or False"):
        ed.compare(traj, sol, check="no")


# --- from_jax: the fingerprint tells two losses of one name and dimension apart --------------

@pytest.fixture(scope="module")
def two_jax_losses():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def loss(theta):
        return 0.5 * (theta[1] + theta[0]) * theta[0] ** 2 - 0.01 * (theta[0] + theta[1])

    def loss_other(theta):
        return 0.5 * (theta[1] + theta[0]) * theta[0] ** 2 - 0.02 * (theta[0] + theta[1])

    a = ed.problems.from_jax(loss, dim=2, name="valley")
    b = ed.problems.from_jax(loss_other, dim=2, name="valley")
    return a, b


def test_from_jax_losses_of_one_name_and_dim_differ(two_jax_losses):
    a, b = two_jax_losses
    assert a.config() == b.config()
    assert a.identity() != b.identity() and a.fingerprint() != b.fingerprint()


def test_compare_refuses_another_jax_loss(two_jax_losses):
    a, b = two_jax_losses
    traj = ed.gd(a, THETA0, 0.3, 12)
    sol = ed.solve(ed.models.GradientFlow(b, 0.3), THETA0, 12, solver="map")
    with pytest.raises(ValueError, match=r"same class and parameters but another loss \(fingerprint"):
        ed.compare(traj, sol, window="all")
    ed.compare(traj, sol, window="all", check=False)


def test_resume_refuses_another_jax_loss(two_jax_losses, tmp_path):
    a, b = two_jax_losses
    path = tmp_path / "fe.ckpt"
    ed.solve(ed.models.GradientFlow(a, 0.3), THETA0, 10, solver="map", checkpoint=path, checkpoint_every=5)
    # the model's identity (class and configuration) is the same: only the fingerprint differs
    assert ed.models.GradientFlow(a, 0.3).identity() == ed.models.GradientFlow(b, 0.3).identity()
    with pytest.raises(ValueError, match=r"`model`'s problem is not the problem of the checkpoint .*another loss"):
        ed.resume(ed.models.GradientFlow(b, 0.3), path)
    assert ed.resume(ed.models.GradientFlow(a, 0.3), path).success
    gd_path = tmp_path / "gd.ckpt"
    ed.gd(a, THETA0, 0.3, 10, checkpoint=gd_path)
    with pytest.raises(ValueError, match=r"`problem` is not the problem of the checkpoint .*another loss"):
        ed.resume_gd(b, gd_path)


def test_saving_results_of_different_problems_together_is_refused(valley, tmp_path):
    traj, sol = valley
    other = ed.solve(ed.models.GradientFlow(ed.problems.MinimalValley(eps=0.05), 0.3), THETA0, 200, solver="map")
    with pytest.raises(ValueError, match=r"`objects` mix problems: solution 'b' .*eps: 0.01 vs 0.05.*check=False"):
        ed.save(tmp_path / "mixed.nc", traj, sol, other, labels=["a", "b"])
    assert not (tmp_path / "mixed.nc").exists()
    res = ed.load(ed.save(tmp_path / "mixed.nc", traj, sol, other, labels=["a", "b"], check=False))
    assert list(res.solutions) == ["a", "b"] and res.metrics["a"] is not None


# --- the identity itself ---------------------------------------------------------------------

class CountingQuadratic(Problem):
    name = "counting_quadratic"
    calls = {"loss": 0, "grad": 0}

    def __init__(self, scale=1.0):
        self.scale = scale

    @property
    def dim(self):
        return 3

    def _loss(self, theta):
        self.calls["loss"] += 1
        return 0.5 * self.scale * float(theta @ theta)

    def _grad(self, theta):
        self.calls["grad"] += 1
        return self.scale * theta

    def _hvp(self, theta, v):
        return self.scale * v


def test_identity_costs_two_losses_and_two_gradients_once():
    p = CountingQuadratic()
    CountingQuadratic.calls.update(loss=0, grad=0)
    first = p.identity()
    assert CountingQuadratic.calls == {"loss": 2, "grad": 2}
    assert p.identity() == first and CountingQuadratic.calls == {"loss": 2, "grad": 2}
    # the counting view of a run state has the identity of the problem it wraps, and counts nothing
    counters = Counters()
    assert CountingProblem(CountingQuadratic(), counters).identity() == first
    assert counters.gradients == 0
    # same class and configuration, another loss: another fingerprint
    assert CountingQuadratic(scale=2.0).fingerprint() != p.fingerprint()


PARAMS = st.tuples(st.floats(-3.0, 3.0, allow_nan=False), st.floats(1e-4, 1.0, allow_nan=False))


@example((0.0, 0.01), (-0.0, 0.01))  # −0.0 is 0.0: the same loss, one identity
@given(PARAMS, PARAMS)
def test_identities_of_problem_parameters(a, b):
    pa, pb = ed.problems.MinimalValley(*a), ed.problems.MinimalValley(*b)
    assert (pa.identity() == pb.identity()) == (a == b)
    assert pa.identity() == ed.problems.MinimalValley(*a).identity()  # same parameters, same identity
    if max(abs(a[0] - b[0]), abs(a[1] - b[1])) > 1e-6:
        assert pa.fingerprint() != pb.fingerprint()  # and the loss itself tells them apart


@given(st.integers(1, 6), st.floats(-2.0, 2.0, allow_nan=False), st.integers(1, 6),
       st.floats(-2.0, 2.0, allow_nan=False))
def test_identities_of_scalar_product_parameters(depth_a, target_a, depth_b, target_b):
    pa, pb = ed.problems.ScalarProduct(depth_a, target_a), ed.problems.ScalarProduct(depth_b, target_b)
    assert (pa.identity() == pb.identity()) == ((depth_a, target_a) == (depth_b, target_b))
