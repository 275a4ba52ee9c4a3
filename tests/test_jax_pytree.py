"""``from_jax`` with parameter pytrees and chunked data.

References are independent of the pytree machinery: a hand-sliced flat-vector version of
the same loss (for dict / nested-dict / Equinox parameters), the unchunked problem for the
chunked one, and the forward-over-reverse HVP route for the forward-over-forward third
contraction.
"""

from __future__ import annotations

import numpy as np
import pytest

from effdyn._jax import import_jax
from effdyn.problems import from_jax

jax, jnp = import_jax()

RNG = np.random.default_rng(7)
N, D, H, C = 23, 3, 4, 2
X = RNG.standard_normal((N, D))
Y = RNG.standard_normal((N, C))
PARAMS = {"W": RNG.standard_normal((D, H)), "b": 0.1 * RNG.standard_normal(H), "V": RNG.standard_normal((H, C))}


def net(p, x):
    return jnp.tanh(x @ p["W"] + p["b"]) @ p["V"]


def tree_loss(p):
    return 0.5 * jnp.mean(jnp.sum((net(p, X) - Y) ** 2, axis=1))


def batch_loss(p, batch):
    x, y = batch
    return 0.5 * jnp.mean(jnp.sum((net(p, x) - y) ** 2, axis=1))


def flat_loss(theta):
    # jax.tree_util orders dict keys: "V", "W", "b".
    V = theta[: H * C].reshape(H, C)
    W = theta[H * C: H * C + D * H].reshape(D, H)
    b = theta[H * C + D * H:]
    return tree_loss({"W": W, "b": b, "V": V})


def flat_theta(p):
    return np.concatenate([np.ravel(p["V"]), np.ravel(p["W"]), np.ravel(p["b"])])


def _probe(p, seed=0):
    rng = np.random.default_rng(seed)
    P = p.dim
    return rng.standard_normal(P), rng.standard_normal(P), rng.standard_normal((P, 3)), rng.standard_normal(3)


def _all_derivatives(p, theta, v, U, s):
    return {"loss": p.loss(theta), "grad": p.grad(theta), "hvp": p.hvp(theta, v),
            "hessian": p.hessian(theta), "third": p.third(theta, U, s)}


def _assert_close(a, b, tol):
    for key in a:
        err = np.max(np.abs(np.asarray(a[key]) - np.asarray(b[key])))
        scale = max(1.0, np.max(np.abs(np.asarray(b[key]))))
        assert err <= tol * scale, (key, err)


def test_dict_params_equal_the_flat_loss():
    p = from_jax(tree_loss, params=PARAMS)
    q = from_jax(flat_loss, dim=D * H + H + H * C)
    assert p.dim == q.dim == D * H + H + H * C
    np.testing.assert_array_equal(p.init(), flat_theta(PARAMS))
    theta, v, U, s = _probe(p)
    _assert_close(_all_derivatives(p, theta, v, U, s), _all_derivatives(q, theta, v, U, s), 1e-13)


def test_ravel_unravel_round_trip():
    p = from_jax(tree_loss, params=PARAMS)
    theta = _probe(p)[0]
    tree = p.unravel(theta)
    assert set(tree) == {"W", "b", "V"} and tree["W"].shape == (D, H)
    assert tree["W"].dtype == jnp.float64
    np.testing.assert_array_equal(p.ravel(tree), theta)
    np.testing.assert_array_equal(flat_theta(tree), theta)


def test_flax_style_nested_dict_and_float32_leaves_promoted():
    nested = {"params": {"dense": {"kernel": PARAMS["W"].astype(np.float32), "bias": PARAMS["b"]},
                         "head": {"kernel": PARAMS["V"]}}}

    def loss(tree):
        q = tree["params"]
        return tree_loss({"W": q["dense"]["kernel"], "b": q["dense"]["bias"], "V": q["head"]["kernel"]})

    p = from_jax(loss, params=nested)
    ref = from_jax(tree_loss, params={k: np.asarray(v, np.float32).astype(np.float64) if k == "W" else v
                                      for k, v in PARAMS.items()})
    # Same parameters in another order: compare through the pytrees.
    th = p.init()
    tree = p.unravel(th)["params"]
    assert tree["dense"]["kernel"].dtype == jnp.float64
    g_tree = p.unravel(p.grad(th))["params"]
    g_ref = ref.unravel(ref.grad(ref.init()))
    np.testing.assert_allclose(g_tree["dense"]["kernel"], g_ref["W"], rtol=0, atol=1e-14)
    np.testing.assert_allclose(g_tree["head"]["kernel"], g_ref["V"], rtol=0, atol=1e-14)


def test_equinox_module_array_leaves_are_the_parameters():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(D, C, 5, 1, activation=jnp.tanh, key=jax.random.PRNGKey(0))

    def loss(m):
        return 0.5 * jnp.mean(jnp.sum((jax.vmap(m)(jnp.asarray(X)) - Y) ** 2, axis=1))

    p = from_jax(loss, params=model)
    params, _ = eqx.partition(model, eqx.is_array)
    n_ref = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert p.dim == n_ref == D * 5 + 5 + 5 * C + C
    # Gradient against Equinox's own filtered autodiff, flattened the same way.
    g_eqx = eqx.filter_grad(loss)(model)
    flat_ref = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(eqx.filter(g_eqx, eqx.is_array))])
    np.testing.assert_allclose(p.grad(p.init()), flat_ref, rtol=1e-13, atol=1e-15)
    assert isinstance(p.unravel(p.init()), type(model))


@pytest.mark.parametrize("chunk_size", [5, N])
def test_chunked_data_equals_the_unchunked_problem(chunk_size):
    whole = from_jax(tree_loss, params=PARAMS)
    chunked = from_jax(batch_loss, params=PARAMS, data=(X, Y), chunk_size=chunk_size)
    assert chunked.n_samples == N and chunked.chunk_size == chunk_size
    theta, v, U, s = _probe(whole, seed=3)
    _assert_close(_all_derivatives(chunked, theta, v, U, s), _all_derivatives(whole, theta, v, U, s), 1e-12)
    # jax_loss stays a function of the flat vector, data summed inside.
    assert float(chunked.jax_loss()(jnp.asarray(theta))) == pytest.approx(whole.loss(theta), rel=1e-13)


def test_flat_vector_loss_with_data():
    def loss(theta, batch):
        x, y = batch
        return 0.5 * jnp.mean((x @ theta - y[:, 0]) ** 2)

    p = from_jax(loss, dim=D, data=(X, Y), chunk_size=4)
    theta = RNG.standard_normal(D)
    # closed form: ∇E = Xᵀ(Xθ − y)/n, H = XᵀX/n
    np.testing.assert_allclose(p.grad(theta), X.T @ (X @ theta - Y[:, 0]) / N, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(p.hessian(theta), X.T @ X / N, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(p.third(theta, np.eye(D)), np.zeros(D), atol=1e-13)


def test_forward_over_forward_third_equals_the_hvp_route():
    p = from_jax(tree_loss, params=PARAMS)
    theta, _, U, s = _probe(p, seed=5)
    fwd = p.third(theta, U, s)
    via_hvp = np.asarray(jax.jit(p.pure_third_via_hvp)(theta, U, s, p.data_args))
    np.testing.assert_allclose(fwd, via_hvp, rtol=1e-10, atol=1e-12)
    # and against central differences of the quadratic forms uᵀH(θ)u
    e = 1e-5
    dirs = np.random.default_rng(1).standard_normal((3, p.dim))
    def quad(th):
        Hm = p.hessian(th)
        return sum(s[r] * U[:, r] @ Hm @ U[:, r] for r in range(3))
    for d in dirs:
        fd = (quad(theta + e * d) - quad(theta - e * d)) / (2 * e)
        assert fd == pytest.approx(fwd @ d, rel=1e-6, abs=1e-8)


# --- bad input ---------------------------------------------------------------------------

def _raises(exc, name, fn):
    with pytest.raises(exc) as info:
        fn()
    assert f"`{name}`" in str(info.value)
    return str(info.value)


def test_pytree_loss_given_only_dim_says_pass_params():
    msg = _raises(ValueError, "loss_fn", lambda: from_jax(tree_loss, dim=D * H + H + H * C))
    assert "params=" in msg


def test_bad_arguments_name_themselves():
    assert "params=" in str(pytest.raises(TypeError, from_jax, tree_loss).value)
    _raises(ValueError, "dim", lambda: from_jax(tree_loss, dim=5, params=PARAMS))
    _raises(ValueError, "chunk_size", lambda: from_jax(tree_loss, params=PARAMS, chunk_size=4))
    _raises(ValueError, "chunk_size", lambda: from_jax(batch_loss, params=PARAMS, data=(X, Y), chunk_size=N + 1))
    _raises(TypeError, "chunk_size", lambda: from_jax(batch_loss, params=PARAMS, data=(X, Y), chunk_size=2.5))
    _raises(ValueError, "data", lambda: from_jax(batch_loss, params=PARAMS, data=(X, Y[:-1])))
    _raises(TypeError, "params", lambda: from_jax(tree_loss, params={"W": np.ones(2, complex)}))
    _raises(ValueError, "params", lambda: from_jax(tree_loss, params={"n": 3}))
    _raises(ValueError, "loss_fn", lambda: from_jax(lambda p: p["W"] ** 2, params=PARAMS))
    p = from_jax(tree_loss, params=PARAMS)
    _raises(ValueError, "tree", lambda: p.ravel({"W": PARAMS["W"]}))
    _raises(ValueError, "theta", lambda: p.unravel(np.zeros(3)))
