"""The small SDCP solver behind the central flow (effdyn.models.sdcp)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effdyn.models.sdcp import SDCPError, kkt_residuals, operator_matrix, smat, solve_sdcp, svec


def _random_instance(seed, singular=False, degenerate=False):
    """An SDCP with a known solution: pick complementary X*, Z* ⪰ 0 and set A = Z* − B[X*]."""
    rng = np.random.default_rng(seed)
    r = int(rng.integers(2, 6))
    n = r * (r + 1) // 2
    q = int(rng.integers(1, n)) if singular else n + 2
    T = rng.standard_normal((q, r, r))
    T = T + T.transpose(0, 2, 1)
    B = 0.5 * np.einsum("pij,pkl->ijkl", T, T)
    Q, _ = np.linalg.qr(rng.standard_normal((r, r)))
    m = int(rng.integers(0, r + 1))
    dx, dz = np.zeros(r), np.zeros(r)
    dx[:m] = rng.exponential(size=m) + 0.1
    dz[m:] = rng.exponential(size=r - m) + 0.1
    if degenerate and m < r:
        dz[m] = 0.0  # strict complementarity fails
    Xs, Zs = (Q * dx) @ Q.T, (Q * dz) @ Q.T
    A = Zs - np.einsum("ijkl,kl->ij", B, Xs)
    return 0.5 * (A + A.T), B, Xs


def _check_kkt(A, B, X, tol):
    k = kkt_residuals(A, B, X)
    scale = max(np.linalg.norm(A), 1.0) * max(1.0, np.linalg.norm(X))
    assert k["min_eig_X"] >= -tol * max(1.0, np.linalg.norm(X))
    assert k["min_eig_Z"] >= -tol * scale
    assert abs(k["complementarity"]) <= tol * scale


def test_svec_is_an_isometry():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((2, 4, 4))
    X, Y = X + X.T, Y + Y.T
    assert svec(X) @ svec(Y) == pytest.approx(np.sum(X * Y), rel=1e-14)
    np.testing.assert_allclose(smat(svec(X), 4), X, rtol=0, atol=1e-15)


def test_identity_operator_gives_the_psd_part_of_minus_A():
    # B[X] = X: the solution is X = (−A)₊, Z = A₊ (Moreau decomposition).
    B = np.einsum("ik,jl->ijkl", np.eye(3), np.eye(3))
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 3))
    A = A + A.T
    w, Q = np.linalg.eigh(A)
    res = solve_sdcp(A, B)
    np.testing.assert_allclose(res.X, (Q * np.maximum(-w, 0)) @ Q.T, atol=1e-12)
    np.testing.assert_allclose(res.Z, (Q * np.maximum(w, 0)) @ Q.T, atol=1e-12)


def test_trivial_cases():
    B = np.einsum("ik,jl->ijkl", np.eye(2), np.eye(2))
    assert solve_sdcp(np.diag([1.0, 2.0]), B).method == "zero"
    res = solve_sdcp(np.array([[-3.0]]), np.full((1, 1, 1, 1), 2.0))
    assert res.method == "scalar" and res.X[0, 0] == pytest.approx(1.5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_random_instances_satisfy_kkt(seed, degenerate):
    A, B, _ = _random_instance(seed, degenerate=degenerate)
    res = solve_sdcp(A, B)
    _check_kkt(A, B, res.X, 1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_singular_operator_instances_satisfy_kkt(seed):
    # Singular B (fewer data than r(r+1)/2): X is not unique but must still be a solution.
    A, B, _ = _random_instance(seed, singular=True)
    res = solve_sdcp(A, B)
    k = kkt_residuals(A, B, res.X)
    assert k["min_eig_X"] >= -1e-9 * max(1.0, np.linalg.norm(res.X))
    # Singular problems may stall slightly above tol (returned up to 1000·tol).
    assert res.residual <= 1e-7


def test_unique_solution_is_recovered_and_warm_start_is_exact():
    A, B, Xs = _random_instance(7)
    res = solve_sdcp(A, B)
    np.testing.assert_allclose(res.X, Xs, atol=1e-8)
    again = solve_sdcp(A, B, X0=res.X + 1e-4)
    assert again.method == "polish" and again.iterations == 0
    np.testing.assert_allclose(again.X, Xs, atol=1e-10)


def test_operator_matrix_matches_einsum():
    rng = np.random.default_rng(1)
    T = rng.standard_normal((5, 3, 3))
    T = T + T.transpose(0, 2, 1)
    B = np.einsum("pij,pkl->ijkl", T, T)
    X = rng.standard_normal((3, 3))
    X = X + X.T
    np.testing.assert_allclose(smat(operator_matrix(B) @ svec(X), 3), np.einsum("ijkl,kl->ij", B, X), atol=1e-12)


def test_no_solution_raises_with_reason():
    with pytest.raises(SDCPError, match="no solution") as info:
        solve_sdcp(np.diag([-1.0, 2.0]), np.zeros((2, 2, 2, 2)))
    assert info.value.reason == "unbounded"
    # B vanishes on the direction where A is negative: the eigenvalue cannot be lowered.
    B = np.zeros((2, 2, 2, 2))
    B[1, 1, 1, 1] = 1.0
    with pytest.raises(SDCPError, match="does not respond") as info:
        solve_sdcp(np.diag([-1.0, -2.0]), B)
    assert info.value.reason == "unbounded"
    with pytest.raises(SDCPError, match="no solution"):
        solve_sdcp(np.array([[-1.0]]), np.zeros((1, 1, 1, 1)))


@pytest.mark.parametrize(
    "A, B, match",
    [
        (np.array([[1.0, 2.0], [0.0, 1.0]]), np.zeros((2, 2, 2, 2)), "symmetric"),
        (np.eye(2), np.zeros((3, 3, 3, 3)), "shape"),
        (np.eye(2), -np.einsum("ik,jl->ijkl", np.eye(2), np.eye(2)), "positive semidefinite"),
        (np.eye(2), np.full((2, 2, 2, 2), np.nan), "non-finite"),
    ],
)
def test_bad_input(A, B, match):
    with pytest.raises(ValueError, match=match):
        solve_sdcp(A, B)
