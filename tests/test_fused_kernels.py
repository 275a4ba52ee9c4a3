"""The fused free-energy θ-drift kernel ``_grad_third`` (a·∇E + b·contraction in one call).

For deep matrix factorisation it must equal the separate kernels ``a·_grad + b·_third_reference``
to round-off, including above ``SMALL_D`` where the d×d products go through BLAS, and JAX
autodiff of the problem's own ``jax_loss``; the problem's ``third`` (the fused kernel with
a = 0, b = 1) and the free-energy drift must follow. Problems without a fused kernel get the
base-class default, which is the two calls.
"""

from __future__ import annotations

import numpy as np
import pytest

from effdyn import compile_count
from effdyn._jax import import_jax
from effdyn.kernels import matrix_factorization as K
from effdyn.models import FreeEnergyFlow
from effdyn.problems import DeepMatrixFactorization, MinimalValley

DEPTHS = (2, 3, 4)
DS = (1, 2, 3, 7, 10)  # 7 and 10 are above SMALL_D: the BLAS branch


def rel_err(a, b, floor=1e-3):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), floor)


def dmf_problem(depth, d):
    """A DMF problem with a random (fixed) target."""
    rng = np.random.default_rng([depth, d])
    return DeepMatrixFactorization(d, depth, rng.standard_normal((d, d)))


def dmf_case(depth, d, r, seed):
    """The problem of (depth, d), and random θ, U (P, r), s, a, b."""
    p = dmf_problem(depth, d)
    rng = np.random.default_rng([depth, d, r, seed])
    theta = rng.standard_normal(p.dim) / np.sqrt(d)  # factors of norm ~1: products stay O(1)
    U = np.ascontiguousarray(rng.standard_normal((p.dim, r)))
    s = rng.standard_normal(r)
    a, b = rng.uniform(-2.0, 2.0, size=2)
    return p, theta, U, s, float(a), float(b)


def test_small_d_threshold_splits_the_tested_sizes():
    # both branches of the d×d products (loops up to SMALL_D, BLAS above) are exercised
    assert min(DS) <= K.SMALL_D < max(DS)


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("depth", (1,) + DEPTHS)
def test_fused_equals_separate_kernels(depth, d, r):
    for seed in range(2):
        p, theta, U, s, a, b = dmf_case(depth, d, r, seed)
        params = p.numba_kernels.params
        want = a * K._grad(theta, params) + b * K._third_reference(theta, U, s, params)
        assert rel_err(K._grad_third(theta, U, s, a, b, params), want) <= 1e-12
        assert rel_err(p._grad_third(theta, U, s, a, b), want) <= 1e-12
        # the problem's third is the fused kernel with a = 0, b = 1
        assert rel_err(p.third(theta, U, s), K._third_reference(theta, U, s, params)) <= 1e-12
        # b = 0: the gradient alone; a = 0: the contraction alone
        assert rel_err(K._grad_third(theta, U, s, a, 0.0, params), a * K._grad(theta, params)) <= 1e-12
        assert rel_err(K._grad_third(theta, U, s, 0.0, b, params),
                       b * K._third_reference(theta, U, s, params)) <= 1e-12


def test_fused_skips_zero_weights_and_empty_directions():
    p, theta, U, s, a, b = dmf_case(3, 2, 2, 0)
    params = p.numba_kernels.params
    g = K._grad(theta, params)
    np.testing.assert_array_equal(K._grad_third(theta, U, np.zeros(2), a, b, params),
                                  K._grad_third(theta, U, s, a, 0.0, params))
    assert rel_err(K._grad_third(theta, np.zeros((p.dim, 0)), np.zeros(0), a, b, params), a * g) <= 1e-15
    np.testing.assert_array_equal(K._grad_third(theta, U, s, 0.0, 0.0, params), np.zeros(p.dim))


def jax_reference(p):
    """Jitted (θ, U, s, a, b) ↦ a·∇E + b·∇_θ Σ_q s_q u_qᵀHu_q from the problem's own
    ``jax_loss`` (dense Hessian route, as in test_problems.py)."""
    jax, jnp = import_jax()
    f = p.jax_loss()
    hess = jax.hessian(f)

    def curvature(th, U, s):
        return jnp.einsum("pr,pq,qr,r->", U, hess(th), U, s)

    grad, third = jax.grad(f), jax.grad(curvature)
    return jax.jit(lambda th, U, s, a, b: a * grad(th) + b * third(th, U, s))


@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_fused_matches_jax_autodiff(depth, d):
    ref = jax_reference(dmf_problem(depth, d))
    for seed in range(2):
        # r = 2 always (one JAX compilation per problem); seed 1 has s_2 = 0, i.e. r = 1.
        p, theta, U, s, a, b = dmf_case(depth, d, 2, seed)
        if seed == 1:
            s[1] = 0.0
        want = np.asarray(ref(theta, U, s, a, b))
        assert rel_err(p._grad_third(theta, U, s, a, b), want) <= 1e-9
        assert rel_err(p.third(theta, U, s), np.asarray(ref(theta, U, s, 0.0, 1.0))) <= 1e-9


# --- the base-class default and the free-energy drift -----------------------------------------
def test_default_grad_third_is_grad_plus_third():
    p = MinimalValley(zeta=0.7, eps=0.02)
    assert type(p)._grad_third is not DeepMatrixFactorization._grad_third  # the default
    rng = np.random.default_rng(3)
    for r in (1, 2):
        theta = rng.standard_normal(2)
        U = np.ascontiguousarray(rng.standard_normal((2, r)))
        s = rng.standard_normal(r)
        a, b = rng.uniform(-2.0, 2.0, size=2)
        want = a * p._grad(theta) + b * p._third(theta, U, s)
        np.testing.assert_allclose(p._grad_third(theta, U, s, a, b), want, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(p._grad_third(theta, U, s, a, 0.0), a * p._grad(theta))
        np.testing.assert_array_equal(p._grad_third(theta, U, s, 0.0, b), b * p._third(theta, U, s))
        np.testing.assert_array_equal(p._grad_third(theta, np.zeros((2, 0)), np.zeros(0), a, b),
                                      a * p._grad(theta))


@pytest.mark.parametrize("make", [lambda: MinimalValley(zeta=0.7, eps=0.02), lambda: dmf_problem(3, 2),
                                  lambda: dmf_problem(2, 7)], ids=["minimal_valley", "dmf_d2", "dmf_d7"])
def test_free_energy_theta_drift_uses_grad_and_half_third(make):
    p = make()
    eta = 0.05
    rng = np.random.default_rng(4)
    theta = rng.standard_normal(p.dim) / 2
    for rank, storage in ((1, "factor"), (2, "factor"), (2, "dense")):
        model = FreeEnergyFlow(p, eta, rank=rank, storage=storage)
        V = rng.standard_normal((p.dim, rank))
        S = V if storage == "factor" else V @ V.T
        want = -eta * (p._grad(theta) + 0.5 * p.third(theta, V))
        assert rel_err(model.theta_drift(theta, S), want) <= 1e-12
        # Σ = 0 (a factor with no columns in dense storage): gradient flow
        if storage == "dense":
            np.testing.assert_allclose(model.theta_drift(theta, np.zeros((p.dim, p.dim))), -eta * p._grad(theta),
                                       rtol=1e-14, atol=0)


def test_grad_third_does_not_recompile_across_targets_and_coefficients():
    def exercise(p, theta):
        U = np.ones((p.dim, 2))
        p._grad_third(theta, U, np.ones(2), 1, 0.5)  # an int coefficient is cast, not compiled for
        p._grad_third(theta, U, np.ones(2), -0.05, -0.025)
        p.third(theta, U)

    exercise(DeepMatrixFactorization(2, 3, np.eye(2)), np.ones(12))
    before = compile_count()
    exercise(DeepMatrixFactorization(3, 2, np.diag([4.0, 1.0, 2.0])), np.ones(18))
    exercise(DeepMatrixFactorization(8, 2, np.eye(8)), np.ones(128))
    assert compile_count() == before
