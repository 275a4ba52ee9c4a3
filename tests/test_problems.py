"""Built-in problems and ``from_jax``: every closed-form kernel against JAX autodiff of the
problem's own ``jax_loss`` and against central finite differences of the next-lower kernel,
plus closed-form values at known minima, input validation and compile counting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from effdyn import compile_count
from effdyn._jax import import_jax
from effdyn.problems import (
    DeepMatrixFactorization,
    MinimalistTwoLayer,
    MinimalValley,
    Quadratic,
    ScalarProduct,
    from_jax,
)

jax, jnp = import_jax()

HYP = settings(max_examples=15, deadline=None)

_A3 = np.array([[2.0, 0.5, -1.0], [0.5, -1.0, 0.3], [-1.0, 0.3, 0.7]])  # indefinite

FACTORIES = {
    "quadratic": lambda: Quadratic(_A3, [0.3, -0.2, 1.0]),
    "minimal_valley": lambda: MinimalValley(zeta=0.7, eps=0.02),
    "scalar_product": lambda: ScalarProduct(4, target=1.5),
    "two_layer": lambda: MinimalistTwoLayer(lam1=1.0, lam2=0.05),
    "dmf_d2_L3": lambda: DeepMatrixFactorization(2, 3, DeepMatrixFactorization.spectral_target(5.5, seed=0)),
    "dmf_d3_L2": lambda: DeepMatrixFactorization(3, 2, DeepMatrixFactorization.spectral_target([3.0, 2.0, 0.5], seed=1)),
}
_CACHE: dict = {}


def problem_and_reference(pid):
    """The problem and jitted JAX references built from its ``jax_loss`` (dense Hessian
    route, independent of the jvp route used by ``from_jax``)."""
    if pid not in _CACHE:
        p = FACTORIES[pid]()
        f = p.jax_loss()
        hess = jax.hessian(f)

        def curvature(th, U, s):
            return jnp.einsum("pr,pq,qr,r->", U, hess(th), U, s)

        ref = {
            "loss": jax.jit(f),
            "grad": jax.jit(jax.grad(f)),
            "hvp": jax.jit(lambda th, v: hess(th) @ v),
            "hessian": jax.jit(hess),
            "third": jax.jit(jax.grad(curvature)),
        }
        _CACHE[pid] = (p, ref)
    return _CACHE[pid]


def vectors(shape, bound=2.0):
    return arrays(np.float64, shape, elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False))


def draw_args(data, P, kernel):
    """Arguments after θ for ``kernel``: v for hvp, (U, s) with r ∈ {1, 2} for third."""
    if kernel == "hvp":
        return (data.draw(vectors(P), label="v"),)
    if kernel == "third":
        r = data.draw(st.sampled_from([1, 2]), label="r")
        return data.draw(vectors((P, r)), label="U"), data.draw(vectors(r), label="s")
    return ()


def rel_err(a, b, floor=1e-3):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), floor)


@pytest.mark.parametrize("kernel", ["loss", "grad", "hvp", "hessian", "third"])
@pytest.mark.parametrize("pid", list(FACTORIES))
@HYP
@given(data=st.data())
def test_kernel_matches_jax_autodiff(pid, kernel, data):
    p, ref = problem_and_reference(pid)
    theta = data.draw(vectors(p.dim), label="theta")
    args = draw_args(data, p.dim, kernel)
    got = getattr(p, kernel)(theta, *args)
    if kernel == "third" and args[0].shape[1] == 1:
        # Pad to r = 2 with s = 0 so the JAX reference compiles once per problem.
        args = (np.column_stack([args[0], np.zeros(p.dim)]), np.append(args[1], 0.0))
    want = np.asarray(ref[kernel](theta, *args))
    assert rel_err(got, want) <= 1e-9


def _central(f, x, direction, h):
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


@pytest.mark.parametrize("kernel", ["grad", "hvp", "hessian", "third"])
@pytest.mark.parametrize("pid", list(FACTORIES))
@HYP
@given(data=st.data())
def test_kernel_matches_finite_differences(pid, kernel, data):
    p, _ = problem_and_reference(pid)
    theta = data.draw(vectors(p.dim), label="theta")
    args = draw_args(data, p.dim, kernel)
    h = 1e-5
    eye = np.eye(p.dim)
    if kernel == "grad":
        want = [_central(p.loss, theta, e, h) for e in eye]
    elif kernel == "hvp":
        want = _central(p.grad, theta, args[0], h)
    elif kernel == "hessian":
        want = np.column_stack([_central(p.grad, theta, e, h) for e in eye])
    else:
        U, s = args

        def curvature(th):
            return sum(s[r] * U[:, r] @ p.hvp(th, U[:, r]) for r in range(U.shape[1]))

        want = [_central(curvature, theta, e, h) for e in eye]
    got = getattr(p, kernel)(theta, *args)
    assert rel_err(got, want, floor=1.0) <= 1e-6


@pytest.mark.parametrize("pid", list(FACTORIES))
def test_hessian_is_exactly_symmetric(pid):
    p, _ = problem_and_reference(pid)
    theta = np.random.default_rng(3).uniform(-2, 2, p.dim)
    H = p.hessian(theta)
    assert np.array_equal(H, H.T)


@pytest.mark.parametrize("pid", ["minimal_valley", "dmf_d2_L3"])
@HYP
@given(data=st.data())
def test_third_on_top_eigenvector_is_eigenvalue_gradient(pid, data):
    # Hellmann–Feynman: ∇λ_max = ∇(vᵀH v) with v held fixed = third(θ, v).
    p, _ = problem_and_reference(pid)
    theta = data.draw(vectors(p.dim), label="theta")
    lam, vecs = np.linalg.eigh(p.hessian(theta))
    assume(lam[-1] - lam[-2] > 0.1 * max(1.0, abs(lam[-1])))
    top = lambda th: np.linalg.eigvalsh(p.hessian(th))[-1]  # noqa: E731
    want = [_central(top, theta, e, 1e-6) for e in np.eye(p.dim)]
    assert rel_err(p.third(theta, vecs[:, -1]), want, floor=1.0) <= 1e-6


# --- closed forms at known minima --------------------------------------------------------


@pytest.mark.parametrize("sigma1", [1.5, 4.0, 5.5])
def test_dmf_balanced_minimum_sharpness(sigma1):
    # theory §5: for d = 2, L = 3, M = U diag(σ₁, 1)Vᵀ, the balanced minimum has S = 3σ₁^{4/3}.
    M = DeepMatrixFactorization.spectral_target(sigma1, seed=7)
    U, S, Vt = np.linalg.svd(M)
    rng = np.random.default_rng(0)
    Q1, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    Q2, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    root = np.diag(S ** (1 / 3))
    W = [Q1 @ root @ Vt, Q2 @ root @ Q1.T, U @ root @ Q2.T]
    p = DeepMatrixFactorization(2, 3, M)
    theta = np.concatenate([w.ravel() for w in W])
    assert p.loss(theta) < 1e-25
    assert np.linalg.norm(p.grad(theta)) < 1e-12
    sharpness = np.linalg.eigvalsh(p.hessian(theta))[-1]
    assert sharpness == pytest.approx(3 * sigma1 ** (4 / 3), rel=1e-12)


def test_scalar_product_balanced_minimum_sharpness():
    depth, y = 5, 2.3
    p = ScalarProduct(depth, y)
    theta = np.full(depth, y ** (1 / depth))
    assert p.loss(theta) < 1e-28
    assert np.linalg.eigvalsh(p.hessian(theta))[-1] == pytest.approx(depth * y ** (2 * (depth - 1) / depth), rel=1e-12)


def test_two_layer_minimum_spectrum():
    # At (α, 0, 1/α): H = diag-block with eigenvalues λ1α², 0 and λ2(α² + α⁻²).
    lam1, lam2, alpha = 1.3, 0.05, 0.8
    p = MinimalistTwoLayer(lam1, lam2)
    theta = np.array([alpha, 0.0, 1 / alpha])
    assert p.loss(theta) == 0.0 == p.loss_min
    want = sorted([lam1 * alpha**2, 0.0, lam2 * (alpha**2 + alpha**-2)])
    np.testing.assert_allclose(np.linalg.eigvalsh(p.hessian(theta)), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(p.init(0), [0.5, 0.05, 0.05])


def test_quadratic_loss_min():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((4, 4))
    A = B @ B.T + 0.5 * np.eye(4)
    b = rng.standard_normal(4)
    q = Quadratic(A, b)
    xstar = np.linalg.solve(A, b)
    assert q.loss_min == pytest.approx(q.loss(xstar), rel=1e-13)
    assert q.loss(xstar + 1e-3 * rng.standard_normal(4)) > q.loss_min
    np.testing.assert_allclose(q.grad(xstar), 0.0, atol=1e-13)
    assert Quadratic(_A3).loss_min is None
    assert not np.any(q.third(xstar, rng.standard_normal((4, 2))))


def test_minimal_valley_closed_form():
    p = MinimalValley(zeta=1.0, eps=0.01)
    x, y = 0.1, 3.0
    np.testing.assert_array_equal(p.init(), [x, y])
    assert p.loss([x, y]) == pytest.approx(0.5 * (y + x) * x**2 - 0.01 * (x + y), rel=1e-15)
    np.testing.assert_allclose(p.hessian([x, y]), [[y + 3 * x, x], [x, 0.0]], rtol=1e-15)
    assert p.loss_min is None


# --- initialisations and targets ----------------------------------------------------------


def test_dmf_balanced_init_is_balanced_and_reproducible():
    p = DeepMatrixFactorization(4, 3, np.eye(4), init="balanced", init_scale=0.7)
    theta = p.init(seed=5)
    W = p.factors(theta)
    for i in range(2):
        np.testing.assert_allclose(W[i + 1].T @ W[i + 1], W[i] @ W[i].T, atol=1e-13)
    np.testing.assert_array_equal(theta, p.init(seed=5))
    assert not np.array_equal(theta, p.init(seed=6))


def test_dmf_small_and_identity_inits():
    p = DeepMatrixFactorization(30, 3, np.eye(30), init="small", init_scale=0.2)
    theta = p.init(seed=0)
    assert theta.shape == (2700,) and abs(theta.std() / 0.2 - 1) < 0.05
    q = DeepMatrixFactorization(3, 2, np.eye(3), init="identity", init_scale=0.4)
    np.testing.assert_array_equal(q.factors(q.init()), np.stack([0.4 * np.eye(3)] * 2))


def test_spectral_target():
    M = DeepMatrixFactorization.spectral_target(5.5)
    np.testing.assert_array_equal(M, np.diag([5.5, 1.0]))
    R = DeepMatrixFactorization.spectral_target([3.0, 2.0, 0.5], seed=2)
    np.testing.assert_allclose(np.linalg.svd(R, compute_uv=False), [3.0, 2.0, 0.5], rtol=1e-13)
    assert np.count_nonzero(np.abs(R) > 1e-3) > 3  # rotated, not diagonal


def test_scalar_product_init_is_small_and_positive():
    theta = ScalarProduct(6, 1.0, init_scale=0.1).init(seed=0)
    assert np.all((theta >= 0.05) & (theta <= 0.15))


@pytest.mark.parametrize("pid", list(FACTORIES))
def test_config_is_json(pid):
    p, _ = problem_and_reference(pid)
    cfg = json.loads(json.dumps(p.config()))
    assert cfg["name"] == p.name and cfg["dim"] == p.dim


def test_parameter_sweep_does_not_recompile():
    def exercise(p, theta):
        p.loss(theta), p.grad(theta), p.hvp(theta, theta), p.hessian(theta), p.third(theta, np.ones((p.dim, 2)))

    exercise(MinimalValley(1.0, 0.01), np.array([0.1, 3.0]))
    exercise(DeepMatrixFactorization(2, 3, np.eye(2)), np.ones(12))
    before = compile_count()
    exercise(MinimalValley(2.0, 0.05), np.array([0.3, 1.0]))
    exercise(DeepMatrixFactorization(3, 2, np.diag([4.0, 1.0, 2.0])), np.ones(18))
    assert compile_count() == before


# --- from_jax -----------------------------------------------------------------------------


_a = np.array([0.5, -1.0, 2.0, 0.3])
_c = np.array([1.0, 0.2, -0.4, 0.7])


def _jax_loss(th):
    # Σ log cosh θ_i + ½(a·θ)² + ⅓(c·θ)³
    return jnp.sum(jnp.log(jnp.cosh(th))) + 0.5 * (_a @ th) ** 2 + (_c @ th) ** 3 / 3


def test_from_jax_matches_numpy_formulas():
    p = from_jax(_jax_loss, dim=4, loss_min=None)
    rng = np.random.default_rng(0)
    th, v = rng.standard_normal(4), rng.standard_normal(4)
    U, s = rng.standard_normal((4, 2)), np.array([0.7, -1.3])
    t, ct = np.tanh(th), _c @ th
    sech2 = 1 - t**2
    H = np.diag(sech2) + np.outer(_a, _a) + 2 * ct * np.outer(_c, _c)
    # ∇(uᵀHu) = −2 sech²θ tanhθ ⊙ u² + 2(c·u)² c
    third = sum(s[r] * (-2 * sech2 * t * U[:, r] ** 2 + 2 * (_c @ U[:, r]) ** 2 * _c) for r in range(2))
    assert p.loss(th) == pytest.approx(np.sum(np.log(np.cosh(th))) + 0.5 * (_a @ th) ** 2 + ct**3 / 3, rel=1e-13)
    assert rel_err(p.grad(th), t + (_a @ th) * _a + ct**2 * _c) < 1e-13
    assert rel_err(p.hvp(th, v), H @ v) < 1e-13
    assert rel_err(p.hessian(th), H) < 1e-13
    assert rel_err(p.third(th, U, s), third) < 1e-13
    assert p.has_third and p.numba_kernels is None and p.jax_loss() is _jax_loss
    assert p.name == "_jax_loss" and p.dim == 4


def test_from_jax_agrees_with_builtin_kernels():
    q = DeepMatrixFactorization(2, 3, DeepMatrixFactorization.spectral_target(3.0, seed=4))
    p = from_jax(q.jax_loss(), q.dim, loss_min=0.0)
    rng = np.random.default_rng(2)
    th, v, U = rng.standard_normal(12), rng.standard_normal(12), rng.standard_normal((12, 2))
    assert rel_err(p.hvp(th, v), q.hvp(th, v)) < 1e-12
    assert rel_err(p.third(th, U, [1.0, -0.5]), q.third(th, U, [1.0, -0.5])) < 1e-12
    assert p.loss_min == 0.0


def test_from_jax_traces_once():
    traces = []

    def loss(th):
        traces.append(1)  # runs only while JAX traces
        return jnp.sum(th**4)

    p = from_jax(loss, dim=3)
    p.grad([1.0, 2.0, 3.0])
    n = len(traces)
    for x in (0.5, 1.5, 2.5):
        p.grad([x, -x, 1.0])
        p.grad(np.array([x, x, x]))
    assert len(traces) == n


def test_from_jax_refuses_float32():
    with pytest.raises(TypeError, match="float32.*`loss_fn`|`loss_fn`.*float32"):
        from_jax(lambda th: jnp.sum(th**2).astype(jnp.float32), dim=3)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        ({"dim": 0}, ValueError, "`dim`"),
        ({"dim": -2}, ValueError, "`dim`"),
        ({"dim": 2.5}, TypeError, "`dim`"),
        ({"dim": "3"}, TypeError, "`dim`"),
        ({"dim": 3, "loss_min": float("nan")}, ValueError, "`loss_min`"),
    ],
)
def test_from_jax_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        from_jax(lambda th: jnp.sum(th**2), **kwargs)


def test_from_jax_bad_loss():
    with pytest.raises(ValueError, match="scalar"):
        from_jax(lambda th: th**2, dim=3)
    with pytest.raises(ValueError, match="`dim`"):  # reshape needs 4 entries
        from_jax(lambda th: jnp.sum(th.reshape(2, 2)), dim=3)
    with pytest.raises(TypeError, match="`loss_fn`"):
        from_jax("not a function", dim=3)


# --- input validation --------------------------------------------------------------------


@pytest.mark.parametrize("pid", ["minimal_valley", "dmf_d2_L3"])
def test_bad_theta_and_directions(pid):
    p, _ = problem_and_reference(pid)
    good = np.ones(p.dim)
    bad_theta = [np.ones(p.dim + 1), np.ones((p.dim, 1)), np.r_[np.nan, np.ones(p.dim - 1)], np.r_[np.inf, np.ones(p.dim - 1)]]
    for theta in bad_theta:
        for call in (p.loss, p.grad, p.hessian):
            with pytest.raises(ValueError, match="`theta`"):
                call(theta)
    with pytest.raises(ValueError, match="`v`"):
        p.hvp(good, np.ones(p.dim + 1))
    with pytest.raises(ValueError, match="`U`"):
        p.third(good, np.ones((p.dim + 1, 2)))
    with pytest.raises(ValueError, match="`s`"):
        p.third(good, np.ones((p.dim, 2)), [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "make, exc, word",
    [
        (lambda: Quadratic(np.ones((2, 3))), ValueError, "`A`"),
        (lambda: Quadratic([[1.0, 2.0], [0.0, 1.0]]), ValueError, "`A`"),
        (lambda: Quadratic([[1.0, np.nan], [np.nan, 1.0]]), ValueError, "`A`"),
        (lambda: Quadratic(np.eye(2), [1.0, 2.0, 3.0]), ValueError, "`b`"),
        (lambda: MinimalValley(eps=float("nan")), ValueError, "`eps`"),
        (lambda: MinimalValley(eps=-0.1), ValueError, "`eps`"),
        (lambda: MinimalValley(zeta=float("inf")), ValueError, "`zeta`"),
        (lambda: MinimalValley(zeta="1"), TypeError, "`zeta`"),
        (lambda: ScalarProduct(-1, 1.0), ValueError, "`depth`"),
        (lambda: ScalarProduct(0, 1.0), ValueError, "`depth`"),
        (lambda: ScalarProduct(2.0, 1.0), TypeError, "`depth`"),
        (lambda: ScalarProduct(3, float("inf")), ValueError, "`target`"),
        (lambda: MinimalistTwoLayer(lam1=0.0), ValueError, "`lam1`"),
        (lambda: MinimalistTwoLayer(lam2=-1.0), ValueError, "`lam2`"),
        (lambda: DeepMatrixFactorization(0, 3, np.eye(2)), ValueError, "`d`"),
        (lambda: DeepMatrixFactorization(2, -3, np.eye(2)), ValueError, "`depth`"),
        (lambda: DeepMatrixFactorization(2, 3, np.ones((2, 3))), ValueError, "`target`"),
        (lambda: DeepMatrixFactorization(2, 3, np.eye(3)), ValueError, "`target`"),
        (lambda: DeepMatrixFactorization(2, 3, [[1.0, np.nan], [0.0, 1.0]]), ValueError, "`target`"),
        (lambda: DeepMatrixFactorization(2, 3, np.eye(2), init="random"), ValueError, "`init`"),
        (lambda: DeepMatrixFactorization(2, 3, np.eye(2), init_scale=0.0), ValueError, "`init_scale`"),
        (lambda: DeepMatrixFactorization.spectral_target([2.0, -1.0]), ValueError, "`sigma`"),
        (lambda: DeepMatrixFactorization.spectral_target([2.0, 1.0], d=3), ValueError, "`d`"),
    ],
)
def test_bad_constructor_arguments(make, exc, word):
    with pytest.raises(exc, match=word):
        make()


# --- out-of-bounds indexing (JAX clamps it; from_jax refuses it) ----------------------------


def test_from_jax_refuses_an_index_beyond_dim():
    # t[5] on a vector of length 3 would silently read t[2].
    with pytest.raises(ValueError, match=r"out of bounds.*`dim` \(now 3"):
        from_jax(lambda t: t[5] ** 2 + t[0], dim=3)
    with pytest.raises(ValueError, match="out of bounds"):  # a gather with an index array
        from_jax(lambda t: jnp.sum(t[jnp.array([0, 4])] ** 2), dim=3)
    with pytest.raises(ValueError, match="out of bounds"):  # through the data path
        X = np.ones((6, 3))
        from_jax(lambda t, b: jnp.mean((b[0] @ t[jnp.arange(3)] + t[3]) ** 2), dim=3, data=(X,), chunk_size=2)
    with pytest.raises(ValueError, match="`params`"):  # a pytree loss reading past a leaf
        from_jax(lambda p: p["w"][4] ** 2, params={"w": np.zeros(2)})
    # In bounds (negative indices included) is accepted and computes what it says.
    p = from_jax(lambda t: t[2] ** 2 + t[-3], dim=3)
    np.testing.assert_allclose(p.grad(np.array([1.0, 2.0, 3.0])), [1.0, 0.0, 6.0], rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(1, 6), k=st.integers(0, 9))
def test_from_jax_index_check_fuzz(dim, k):
    loss = lambda t: t[k] ** 2  # noqa: E731
    if k < dim:
        assert from_jax(loss, dim=dim).loss(np.arange(dim, dtype=float)) == float(k) ** 2
    else:
        with pytest.raises(ValueError, match="out of bounds"):
            from_jax(loss, dim=dim)
