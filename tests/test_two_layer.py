"""TwoLayerNet: compiled kernels against JAX autodiff and NumPy references, the mean-field
relations (GD step, first variation, NTK Gram), the width-1 reduction to the minimalist
two-layer model, the teacher–student data and input validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effdyn import compile_count
from effdyn._jax import import_jax
from effdyn.kernels import kinetic
from effdyn.kernels import two_layer as K
from effdyn.kernels import two_layer_reference as R
from effdyn.problems import MinimalistTwoLayer, TwoLayerNet
from effdyn.problems.two_layer import ACTIVATIONS, teacher_student, teacher_student_data
from effdyn.spectrum import sharpness, top_eigenpairs

jax, jnp = import_jax()

SMOOTH = [name for name, a in ACTIVATIONS.items() if a.order >= 3]
SCALINGS = ["mean-field", "standard"]


def rel_err(a, b):
    """max|a − b| / max|b| (norm-relative, so tiny entries of b do not dominate)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def random_net(act, scaling, N, n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 1.5 / np.sqrt(d)
    y = rng.standard_normal(n)
    p = TwoLayerNet(X, y, N, activation=act, scaling=scaling)
    theta = p.init(seed + 1)
    return p, theta, rng


_JAX_SIGMA = {"identity": lambda z: z, "tanh": jnp.tanh, "softplus": jax.nn.softplus,
              "gelu": lambda z: jax.nn.gelu(z, approximate=False)}


def _make_jax_reference(act):
    """Loss, gradient, HVP, Hessian and third contraction by JAX autodiff of a loss written
    here (independently of the kernels), jitted once per activation: the data and the
    output scale are arguments, so new values do not recompile."""
    sigma = _JAX_SIGMA[act]

    def loss(theta, X, y, c):
        T = theta.reshape(-1, X.shape[1] + 1)
        f = c * sigma(X @ T[:, :-1].T) @ T[:, -1]
        return 0.5 * jnp.mean((f - y) ** 2)

    grad = jax.grad(loss)
    hess = jax.hessian(loss)

    def hvp(theta, v, X, y, c):
        return jax.jvp(lambda t: grad(t, X, y, c), (theta,), (v,))[1]

    def curvature(theta, U, s, X, y, c):
        HU = jax.vmap(lambda u: hvp(theta, u, X, y, c), in_axes=1, out_axes=1)(U)
        return jnp.sum(s * jnp.sum(U * HU, axis=0))

    def all_derivatives(theta, v, U, s, X, y, c):
        return (loss(theta, X, y, c), grad(theta, X, y, c), hvp(theta, v, X, y, c), hess(theta, X, y, c),
                jax.grad(curvature)(theta, U, s, X, y, c))

    return jax.jit(all_derivatives)


_JAX_REFERENCE = {act: _make_jax_reference(act) for act in SMOOTH}
# One fixed shape (N, n, d, r) keeps JAX at one compilation per activation; other shapes
# are covered against the NumPy references below.
SHAPES = [(3, 5, 2, 2)]


@settings(max_examples=24, deadline=None)
@given(act=st.sampled_from(SMOOTH), scaling=st.sampled_from(SCALINGS), shape=st.sampled_from(SHAPES),
       seed=st.integers(0, 2**16))
def test_kernels_match_jax_autodiff(act, scaling, shape, seed):
    N, n, d, r = shape
    p, theta, rng = random_net(act, scaling, N, n, d, seed)
    v = rng.standard_normal(p.dim)
    U = rng.standard_normal((p.dim, r))
    s = rng.uniform(-1.0, 1.0, r)
    out = _JAX_REFERENCE[act](theta, v, U, s, p.X, p.y, p.c)
    L, g, hv, H, t = (np.asarray(o) for o in out)
    assert abs(p.loss(theta) - L) <= 1e-9 * abs(L)
    assert rel_err(p.grad(theta), g) <= 1e-9
    assert rel_err(p.hvp(theta, v), hv) <= 1e-9
    assert rel_err(p.hessian(theta), H) <= 1e-9
    assert rel_err(p.third(theta, U, s), t) <= 1e-9
    # the uncached HVP kernel (used above CACHE_MAX_PAIRS) and the NumPy references
    assert rel_err(K._hvp(theta, v, p.params), hv) <= 1e-9
    c, code = p.c, p.act.code
    assert abs(R.reference_loss(theta, p.X, p.y, c, code) - L) <= 1e-9 * abs(L)
    assert rel_err(R.reference_grad(theta, p.X, p.y, c, code), g) <= 1e-9
    assert rel_err(R.reference_hvp(theta, v, p.X, p.y, c, code), hv) <= 1e-9
    assert rel_err(R.reference_third(theta, U, s, p.X, p.y, c, code), t) <= 1e-9


@settings(max_examples=20, deadline=None)
@given(act=st.sampled_from(SMOOTH), scaling=st.sampled_from(SCALINGS), N=st.integers(1, 6), n=st.integers(1, 8),
       d=st.integers(1, 4), r=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_kernels_match_numpy_reference_any_shape(act, scaling, N, n, d, r, seed):
    p, theta, rng = random_net(act, scaling, N, n, d, seed)
    v = rng.standard_normal(p.dim)
    U = rng.standard_normal((p.dim, r))
    s = rng.uniform(-1.0, 1.0, r)
    c, code = p.c, p.act.code
    assert abs(p.loss(theta) - R.reference_loss(theta, p.X, p.y, c, code)) <= 1e-12 * p.loss(theta)
    assert rel_err(p.grad(theta), R.reference_grad(theta, p.X, p.y, c, code)) <= 1e-12
    assert rel_err(p.hvp(theta, v), R.reference_hvp(theta, v, p.X, p.y, c, code)) <= 1e-12
    assert rel_err(p.third(theta, U, s), R.reference_third(theta, U, s, p.X, p.y, c, code)) <= 1e-12
    H = p.hessian(theta)
    assert np.array_equal(H, H.T)
    assert rel_err(H @ v, p.hvp(theta, v)) <= 1e-12


@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_problem_jax_loss(act, scaling):
    p, theta, rng = random_net(act, scaling, 5, 6, 3, 9)
    assert abs(float(p.jax_loss()(jnp.asarray(theta))) - p.loss(theta)) <= 1e-13 * p.loss(theta)


def test_activation_kernel_matches_reference_on_extreme_inputs():
    z = np.concatenate([np.linspace(-12, 12, 241), [0.0, 1e-12, -1e-9, 3e-5, 40.0, -40.0, 700.0, -745.0]])
    act = K._act
    for name in SMOOTH:
        code = ACTIVATIONS[name].code
        ref = R.reference_activation(z, code)
        got = np.array([act(float(x), code) for x in z]).T
        for m in range(4):
            # absolute error relative to the derivative's scale on the grid
            scale = max(1.0, float(np.max(np.abs(ref[m][np.abs(z) < 50]))))
            err = np.abs(got[m] - ref[m])[np.isfinite(ref[m])]
            assert np.max(err) <= 4e-15 * scale, (name, m, np.max(err))


@pytest.mark.parametrize("act", SMOOTH)
def test_predict_matches_reference_outputs_and_the_loss(act):
    """``predict`` evaluates σ with NumPy (``Activation.__call__``), apart from the kernels:
    at new inputs it gives the NumPy reference's outputs, on the training inputs the
    residual whose mean square is the kernels' loss."""
    p, theta, rng = random_net(act, "standard", 7, 9, 3, 5)
    X_new = 3.0 * rng.standard_normal((4, p.input_dim))
    assert rel_err(p.predict(theta, X_new), R.reference_outputs(theta, X_new, p.c, p.act.code)) <= 1e-15
    r = p.predict(theta) - p.y
    assert abs(0.5 * np.mean(r**2) - p.loss(theta)) <= 1e-13 * p.loss(theta)
    with pytest.raises(ValueError, match="X"):
        p.predict(theta, X_new[:, :2])


def test_multiblock_kernels_match_reference():
    # n = 400 makes blocks of 655 particles, so N = 1500 runs three blocks (one partial).
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 3))
    y = np.sin(X[:, 0])
    p = TwoLayerNet(X, y, 1500, activation="gelu")
    theta = p.init(2)
    U = 0.1 * rng.standard_normal((p.dim, 2))
    v = rng.standard_normal(p.dim)
    c, code = p.c, p.act.code
    assert rel_err(p.grad(theta), R.reference_grad(theta, X, y, c, code)) <= 1e-12
    assert rel_err(K._hvp(theta, v, p.params), R.reference_hvp(theta, v, X, y, c, code)) <= 1e-12
    assert rel_err(p.hvp(theta, v), R.reference_hvp(theta, v, X, y, c, code)) <= 1e-12
    assert rel_err(p.third(theta, U), R.reference_third(theta, U, np.ones(2), X, y, c, code)) <= 1e-12
    assert rel_err(p.run_kernel(kinetic._kinetic_drift, theta, U, 7.0),
                   R.reference_kinetic_drift(theta, U, 7.0, X, y, c, code)) <= 1e-12


def test_cached_hvp_follows_theta():
    p, theta, rng = random_net("tanh", "mean-field", 30, 20, 3, 11)
    v = rng.standard_normal(p.dim)
    theta2 = theta + 0.1 * rng.standard_normal(p.dim)
    for th in (theta, theta2, theta, theta2):
        assert rel_err(p.hvp(th, v), K._hvp(th, v, p.params)) <= 1e-13
    # mutating the array in place must not reuse stale activations
    th = theta.copy()
    first = p.hvp(th, v)
    th += 0.3
    assert rel_err(p.hvp(th, v), K._hvp(th, v, p.params)) <= 1e-13
    assert rel_err(p.hvp(th, v), first) > 1e-3


# --- mean-field relations -------------------------------------------------------------------
def test_gd_step_is_mean_field_gd_on_first_variation():
    """N·∇_{θ_i} L_N = ∇_θ Φ(θ_i; μ_N) with Φ(θ; μ) = (1/n) Σ_k r_k a σ(w·x_k) (theory §4),
    so GD on L_N with η = N·η_MF moves each particle by −η_MF ∇Φ."""
    p, theta, rng = random_net("tanh", "mean-field", 40, 25, 3, 3)
    T = p.particles(theta)
    W, a = T[:, :-1], T[:, -1]
    r = p.predict(theta) - p.y
    Z = W @ p.X.T
    grad_phi = np.column_stack([(a[:, None] * (1 - np.tanh(Z) ** 2) * r) @ p.X / p.n_samples,
                                np.tanh(Z) @ r / p.n_samples])
    assert rel_err(p.width * p.grad(theta), grad_phi.ravel()) <= 1e-13
    eta_mf = 0.5
    step = theta - (p.width * eta_mf) * p.grad(theta)
    assert rel_err(step, (T - eta_mf * grad_phi).ravel()) <= 1e-13


def test_ntk_gram_against_jacobian_and_sharpness():
    p, theta, rng = random_net("softplus", "mean-field", 12, 9, 3, 4)
    N, n = p.width, p.n_samples
    J = np.asarray(jax.jacfwd(lambda t: _jax_outputs(p, t))(jnp.asarray(theta)))
    Kmat = p.ntk_gram(theta)
    # (1/n) J Jᵀ = c² N · K, the exact link between the Gauss–Newton part and the NTK Gram
    assert rel_err(Kmat, J @ J.T / (n * p.c**2 * N)) <= 1e-12
    # with zero residual the Hessian is its Gauss–Newton part: S_MF = λ_max(K) exactly
    q = TwoLayerNet(p.X, p.predict(theta), N, activation="softplus")
    S_mf = N * top_eigenpairs(q, theta, k=1, dense_max=0)[0][0]
    assert abs(S_mf - np.linalg.eigvalsh(q.ntk_gram(theta))[-1]) <= 1e-9 * S_mf
    # otherwise they differ by at most N‖R‖₂, R = H − JᵀJ/n (Weyl)
    H = p.hessian(theta)
    R = H - J.T @ J / n
    S = N * np.linalg.eigvalsh(H)[-1]
    assert abs(S - np.linalg.eigvalsh(Kmat)[-1]) <= N * np.linalg.norm(R, 2) + 1e-12
    assert abs(N * sharpness(p, theta) - S) <= 1e-9 * abs(S)


def _jax_outputs(p, t):
    T = t.reshape(p.width, p.particle_dim)
    return p.c * jax.nn.softplus(jnp.asarray(p.X) @ T[:, :-1].T) @ T[:, -1]


def test_width_one_identity_net_is_the_minimalist_model():
    """f = a(w·x), N = 1, standard scaling, on 4 points with empirical second moment
    diag(λ1, λ2) and y = x2: L = ½λ1a²w1² + ½λ2(aw2 − 1)² exactly (the ½E[y²] = ½λ2
    constant included); θ = (w1, w2, a) ↔ (α, β1, β2) = (a, w1, w2)."""
    lam1, lam2 = 1.0, 0.05
    s1, s2 = np.sqrt(2 * lam1), np.sqrt(2 * lam2)
    X = np.array([[s1, 0.0], [-s1, 0.0], [0.0, s2], [0.0, -s2]])
    net = TwoLayerNet(X, X[:, 1], 1, activation="identity", scaling="standard")
    ref = MinimalistTwoLayer(lam1, lam2)
    alpha0 = np.array([0.5, 0.05, 0.05])
    to_net, to_ref = [1, 2, 0], [2, 0, 1]
    assert abs(net.loss(alpha0[to_net]) - ref.loss(alpha0)) <= 1e-15
    a, b = [alpha0], [alpha0[to_net]]
    for _ in range(200):
        a.append(a[-1] - 2.0 * ref.grad(a[-1]))
        b.append(b[-1] - 2.0 * net.grad(b[-1]))
    a, b = np.array(a), np.array(b)
    assert np.max(np.abs(b[:, to_ref] - a)) <= 1e-10
    # the run is the seed-004 benchmark: EoS, then convergence with η·S ≈ 1.90
    assert 1.85 < 2.0 * np.linalg.eigvalsh(ref.hessian(a[-1]))[-1] < 1.95
    assert max(2.0 * np.linalg.eigvalsh(ref.hessian(t))[-1] for t in a) > 2.0  # it went through the EoS


# --- data, init, validation -----------------------------------------------------------------
def test_teacher_student_data_and_init():
    X, y = teacher_student_data(seed=3)
    X2, y2 = teacher_student_data(seed=3)
    assert X.shape == (100, 5) and y.shape == (100,)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    rng = np.random.default_rng(3)
    Xr = rng.standard_normal((100, 5)) * 2 / np.sqrt(5)
    U = rng.standard_normal((3, 5))
    assert np.array_equal(X, Xr)
    assert np.allclose(y, 1.5 * np.tanh(Xr @ U[0]) - np.tanh(Xr @ U[1]) + 1.2 * np.tanh(Xr @ U[2]), rtol=0, atol=1e-15)
    p = teacher_student(width=4000)
    theta = p.init(seed=7)
    assert np.array_equal(theta, p.init(seed=7))
    T = p.particles(theta)
    assert T.shape == (4000, 6)
    assert abs(T.mean()) < 0.02 and abs(T.var() - 1.0) < 0.03  # i.i.d. N(0, 1) entries


BAD = [
    (lambda: TwoLayerNet(np.ones((5, 2)), np.ones(4), 3), ValueError, "`y`"),
    (lambda: TwoLayerNet(np.ones(5), np.ones(5), 3), ValueError, "`X`"),
    (lambda: TwoLayerNet(np.array([[1.0, np.nan]]), np.ones(1), 3), ValueError, "`X`"),
    (lambda: TwoLayerNet(np.ones((2, 2)), np.array([1.0, np.inf]), 3), ValueError, "`y`"),
    (lambda: TwoLayerNet(np.ones((2, 2)), np.ones(2), 0), ValueError, "`width`"),
    (lambda: TwoLayerNet(np.ones((2, 2)), np.ones(2), 2.5), TypeError, "`width`"),
    (lambda: TwoLayerNet(np.ones((2, 2)), np.ones(2), 2, activation="swish"), ValueError, "'tanh'"),
    (lambda: TwoLayerNet(np.ones((2, 2)), np.ones(2), 2, activation="relu"), ValueError, "order"),
    (lambda: TwoLayerNet(np.ones((2, 2)), np.ones(2), 2, scaling="ntk"), ValueError, "`scaling`"),
    (lambda: teacher_student_data(n=0), ValueError, "`n`"),
]


@pytest.mark.parametrize("make, exc, text", BAD)
def test_bad_input_is_refused_before_compiling(make, exc, text):
    before = compile_count()
    with pytest.raises(exc, match=text):
        make()
    assert compile_count() == before


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        TwoLayerNet(np.ones((2, 2)), np.ones(2), 2, activation="swish")
    for name in SMOOTH:
        assert repr(name) in str(info.value)


def test_one_compiled_kernel_serves_every_activation_width_and_scaling():
    p, theta, _ = random_net("tanh", "mean-field", 3, 4, 2, 0)
    p.grad(theta), p.hvp(theta, theta), p.loss(theta), p.third(theta, theta)
    before = compile_count()
    for act in SMOOTH:
        for scaling in SCALINGS:
            q, th, _ = random_net(act, scaling, 7, 6, 3, 1)
            q.grad(th), q.hvp(th, th), q.loss(th), q.third(th, th)
    assert compile_count() == before


# --- the fused free-energy θ-drift ------------------------------------------------------------
@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("r", [1, 2])
def test_grad_third_equals_grad_plus_third(act, scaling, r):
    """``_grad_third`` (one fused kernel) = a·_grad + b·_third for s ∝ 1 (the free-energy
    drift's s = 1 among them) and for unequal s, zero and negative weights included."""
    p, theta, rng = random_net(act, scaling, 7, 9, 3, 20 + r)
    U = np.ascontiguousarray(rng.standard_normal((p.dim, r)))
    a, b = (float(x) for x in rng.uniform(-2.0, 2.0, 2))
    weights = [np.ones(r), rng.uniform(-2.0, 2.0) * np.ones(r), rng.uniform(-2.0, 2.0, r)]
    if r == 2:
        weights += [np.array([0.0, -1.3]), np.array([0.8, -0.8])]
    for s in weights:
        want = a * p._grad(theta) + b * p._third(theta, U, s)
        assert rel_err(p._grad_third(theta, U, s, a, b), want) <= 1e-12
        assert rel_err(K._grad_third(theta, U, s, a, b, p.params), want) <= 1e-12
    # b = 0 or s = 0 or no directions: the gradient alone; a = 0: the contraction alone
    g = p._grad(theta)
    assert rel_err(p._grad_third(theta, U, np.ones(r), a, 0.0), a * g) <= 1e-14
    assert rel_err(p._grad_third(theta, U, np.zeros(r), a, b), a * g) <= 1e-14
    assert rel_err(p._grad_third(theta, np.zeros((p.dim, 0)), np.zeros(0), a, b), a * g) <= 1e-14
    assert rel_err(p._grad_third(theta, U, np.ones(r), 0.0, b), b * p._third(theta, U, np.ones(r))) <= 1e-12


def test_grad_third_matches_jax_and_is_the_free_energy_drift():
    from effdyn.models import FreeEnergyFlow

    p, theta, rng = random_net("gelu", "standard", 6, 8, 3, 31)
    U = np.ascontiguousarray(rng.standard_normal((p.dim, 2)))
    s = np.array([0.6, -1.1])
    a, b = 0.7, -1.9
    grad = jax.grad(p.jax_loss())

    def curvature(th):
        HU = jax.vmap(lambda u: jax.jvp(grad, (th,), (u,))[1], in_axes=1, out_axes=1)(jnp.asarray(U))
        return jnp.sum(jnp.asarray(s) * jnp.sum(jnp.asarray(U) * HU, axis=0))

    th = jnp.asarray(theta)
    want = a * np.asarray(grad(th)) + b * np.asarray(jax.grad(curvature)(th))
    assert rel_err(p._grad_third(theta, U, s, a, b), want) <= 1e-9
    # the free-energy θ-drift goes through the fused kernel: −η(∇E + ½ Σ_q ∇(u_qᵀHu_q))
    eta = 0.3
    model = FreeEnergyFlow(p, eta, rank=2)
    ref = -eta * (R.reference_grad(theta, p.X, p.y, p.c, p.act.code)
                  + 0.5 * R.reference_third(theta, U, np.ones(2), p.X, p.y, p.c, p.act.code))
    assert rel_err(model.theta_drift(theta, U), ref) <= 1e-12


def test_grad_third_does_not_recompile():
    p, theta, rng = random_net("tanh", "mean-field", 3, 4, 2, 0)
    U = np.ascontiguousarray(rng.standard_normal((p.dim, 2)))
    p._grad_third(theta, U, np.ones(2), 1.0, 0.5)
    before = compile_count()
    for act in SMOOTH:
        for scaling in SCALINGS:
            q, th, rng = random_net(act, scaling, 5, 6, 3, 1)
            V = np.ascontiguousarray(rng.standard_normal((q.dim, 2)))
            q._grad_third(th, V, np.array([1, -2]), 1, 0)  # int weights and coefficients are cast
            q._grad_third(th, V, np.ones(2), -0.05, -0.025)
    assert compile_count() == before
