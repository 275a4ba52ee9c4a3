"""The JAX engine: eigen-tracker and gd_jax.

References: NumPy ``eigvalsh`` of dense Hessians (tight tolerance), ``effdyn.gd`` on the
same problem (the NumPy path: θ bit for bit, sharpness from ARPACK/Davidson at 1e-8) along
a whole EoS trajectory of a small digits MLP, and closed forms of the records.
"""

from __future__ import annotations

import numpy as np
import pytest

import effdyn as ed
from effdyn._jax import import_jax
from effdyn.engine_jax import (TIGHT_RTOL, EigenTrackerJax, gd_jax, state_from_dict, state_to_dict)
from effdyn.errors import IntegrationError
from effdyn.problems import DeepMatrixFactorization, from_jax

jax, jnp = import_jax()

ETA = 1.0
STEPS = 100


def _mlp(n=200, h=8, seed=0, chunk_size=None):
    from effdyn.data import load_digits_subset, one_hot

    X, labels = load_digits_subset(n, seed=0)
    Y = one_hot(labels)
    rng = np.random.default_rng(seed)
    params = {"W1": 0.5 * rng.standard_normal((64, h)) / 8, "b1": np.zeros(h),
              "W2": 0.5 * rng.standard_normal((h, 10)) / np.sqrt(h), "b2": np.zeros(10)}

    def loss(p, batch):
        x, y = batch
        return 0.5 * jnp.mean(jnp.sum((jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"] - y) ** 2, axis=1))

    return from_jax(loss, params=params, data=(X, Y), chunk_size=chunk_size, loss_min=0.0)


@pytest.fixture(scope="module")
def mlp():
    return _mlp()


@pytest.fixture(scope="module")
def mlp_runs(mlp):
    """The same EoS run (η = 1: sharpness 3.6 at the start, then at 2/η) on both engines."""
    ref = ed.gd(mlp, mlp.init(), ETA, STEPS, n_eigs=2)
    new = gd_jax(mlp, mlp.init(), ETA, STEPS, n_eigs=2, chunk=64)
    return ref, new


@pytest.fixture(scope="module")
def dmf():
    q = DeepMatrixFactorization(d=2, depth=3, target=DeepMatrixFactorization.spectral_target(3.0),
                                init="balanced", init_scale=0.3)
    return from_jax(q.jax_loss(), q.dim, loss_min=0.0), q.init(0)


# --- tracker -------------------------------------------------------------------------------

def _cluster_matrix(P=240, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
    ev = np.concatenate([[10.0, 9.9, 9.8, 9.75, 9.6, 9.5], rng.uniform(-1.0, 2.0, P - 6)])
    return (Q * ev) @ Q.T


def test_tight_tracker_equals_eigvalsh_cold_and_warm(mlp):
    H0 = mlp.hessian(mlp.init())
    th1 = mlp.init() - 0.3 * mlp.grad(mlp.init())
    H1 = mlp.hessian(th1)
    tr = EigenTrackerJax(k=4, block=10, rtol=TIGHT_RTOL)
    update = jax.jit(lambda st, H: tr.update(st, lambda v: H @ v, scale=4.0))
    st = tr.init(mlp.dim)
    colds = []
    for H in (H0, H1, H0):
        st, res = update(st, jnp.asarray(H))
        colds.append(bool(res.cold))
        ref = np.linalg.eigvalsh(H)[::-1][:4]
        assert np.max(np.abs(np.asarray(res.vals) - ref)) <= 1e-10 * 4.0
        assert bool(res.converged)
        V = np.asarray(res.vecs)
        np.testing.assert_allclose(H @ V, V * np.asarray(res.vals), atol=1e-9)
    # the first update is cold; the third starts from the block of the first (history=2),
    # at the same matrix, and is warm
    assert colds[0] and not colds[2] and int(st.n_cold) == sum(colds)


def test_dense_path_equals_eigvalsh(dmf):
    p, th = dmf
    tr = EigenTrackerJax(k=3)
    assert tr.is_dense(p.dim)
    st, res = jax.jit(lambda st: tr.update(st, lambda v: p.pure_hvp(jnp.asarray(th), v, None)))(tr.init(p.dim))
    np.testing.assert_allclose(np.asarray(res.vals), np.linalg.eigvalsh(p.hessian(th))[::-1][:3], atol=1e-12)
    assert int(res.n_hvp) == p.dim


def test_counters_count_and_state_round_trips():
    A = _cluster_matrix()
    tr = EigenTrackerJax(k=2, block=8, rtol=TIGHT_RTOL, history=1)
    update = jax.jit(lambda st, M, thr: tr.update(st, lambda v: M @ v, threshold=thr, scale=10.0))
    st = tr.init(A.shape[0], seed=3)
    st, r0 = update(st, jnp.asarray(A), 9.7)
    assert bool(r0.cold) and int(r0.n_hvp) >= tr.krylov_steps(A.shape[0])
    # the same matrix again: the carried block (H·Y, orthonormalised) spans the converged
    # eigenvectors, so Rayleigh–Ritz on it converges with the block's HVPs only.
    st, r1 = update(st, jnp.asarray(A), 9.7)
    assert not bool(r1.cold) and int(r1.n_hvp) == 8 and int(r1.n_iter) == 0
    assert int(r1.n_above) == 4 and not bool(r1.saturated)
    assert int(st.n_updates) == 2 and int(st.n_hvp) == int(r0.n_hvp) + int(r1.n_hvp) and int(st.n_cold) == 1
    # a threshold below more eigenvalues than the non-guard room (8 − 2 = 6) saturates
    st2, r2 = update(st, jnp.asarray(A), 1.5)
    assert bool(r2.saturated) and int(st2.n_saturated) == 1
    # round trip through a dict of NumPy arrays, then identical next updates
    d = state_to_dict(st)
    assert all(isinstance(v, np.ndarray) for v in d.values())
    back = state_from_dict(d)
    B = A + 1e-3 * np.diag(np.linspace(0, 1, A.shape[0]))
    _, ra = update(st, jnp.asarray(B), 9.7)
    _, rb = update(back, jnp.asarray(B), 9.7)
    np.testing.assert_array_equal(np.asarray(ra.vals), np.asarray(rb.vals))
    with pytest.raises(ValueError, match="`d`"):
        state_from_dict({"basis": d["basis"]})


def test_tracker_bad_input():
    for kwargs, name in [({"k": 0}, "k"), ({"k": 3, "block": 2}, "block"), ({"rtol": 2.0}, "rtol"),
                         ({"criterion": "x"}, "criterion"), ({"history": 3}, "history"),
                         ({"hvp_batch": "pmap"}, "hvp_batch")]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            EigenTrackerJax(**kwargs)
    tr = EigenTrackerJax()
    with pytest.raises(TypeError, match="`hvp`"):
        tr.update(tr.init(100), lambda v: v[:3])


# --- gd_jax ---------------------------------------------------------------------------------

def test_gd_jax_equals_numpy_gd_along_an_eos_trajectory(mlp_runs):
    ref, new = mlp_runs
    assert new.status == "success" and new.theta.shape == ref.theta.shape
    np.testing.assert_allclose(new.theta, ref.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(new.loss, ref.loss, rtol=1e-12, atol=0)
    np.testing.assert_allclose(new.grad_norm, ref.grad_norm, rtol=1e-12, atol=0)
    # it is an EoS run: sharpness above 2/η at the start, then hovering at 2/η
    assert ref.sharpness[0] > 1.5 * 2 / ETA and abs(np.median(ref.sharpness[50:]) - 2 / ETA) < 0.15
    # default accuracy: eigenvalue error <= 1e-4 · 2/η at every step
    assert np.max(np.abs(new.eigs - ref.eigs)) <= 1e-4 * 2 / ETA
    # the amplitude along v1 (sign-free) with the tracker's vector
    # (v1 is ill-conditioned where λ1 ≈ λ2, so the comparison is absolute)
    np.testing.assert_allclose(new.half_amp, ref.half_amp, rtol=0, atol=2e-3 * ref.half_amp.max())
    assert new.eig_info["n_unconverged"] == 0


def test_counters_and_subspace_amplitude(mlp, mlp_runs):
    _, new = mlp_runs
    info = new.eig_info
    assert len(info["n_hvp"]) == STEPS + 1 and new.n_hvp == int(info["n_hvp"].sum())
    assert info["n_cold"] == int(info["cold"].sum()) >= 1 and bool(info["cold"][0])
    assert new.tracker_state["n_updates"] == STEPS + 1
    # ‖Q_kᵀ(θ_{k+1} − θ_k)‖/2 from the recorded θ and a dense eigh at a few steps
    for k in (0, 40, 90):
        vals, vecs = np.linalg.eigh(mlp.hessian(new.theta[k]))
        Q = vecs[:, ::-1][:, :2]
        expected = np.linalg.norm(Q.T @ (new.theta[k + 1] - new.theta[k])) / 2
        assert new.half_amp_subspace[k] == pytest.approx(expected, rel=1e-3, abs=1e-10)
    assert np.all(new.half_amp_subspace >= new.half_amp - 1e-15)


def test_strided_records_match_numpy_gd(dmf):
    p, th0 = dmf
    P = p.dim
    ref = ed.gd(p, th0, 0.077, 60, n_eigs=2, theta_every=4, eig_every=3)
    # a budget of 8 θ rows (with midpoints) forces a stride; eigenvectors strided too
    new = gd_jax(p, th0, 0.077, 60, n_eigs=2, eig_every=3, record_bytes=8 * 16 * P, chunk=16)
    assert new.config["theta_every"] > 1 and new.top_eigvec is None
    te = new.config["theta_every"]
    ref = ed.gd(p, th0, 0.077, 60, n_eigs=2, theta_every=te, eig_every=3)
    np.testing.assert_allclose(new.theta, ref.theta, atol=1e-12, rtol=0)
    k_mid, mid = new.midpoint()
    k_ref, mid_ref = ref.midpoint()
    np.testing.assert_array_equal(k_mid, k_ref)
    np.testing.assert_allclose(mid, mid_ref, atol=1e-12, rtol=0)
    np.testing.assert_allclose(new.eigs, ref.eigs, atol=1e-10)
    rows = new.top_eigvec_k // 3
    assert len(rows) * P * 8 <= 8 * 16 * P
    np.testing.assert_allclose(new.top_eigvec_strided, ref.top_eigvec[rows], atol=1e-8)


@pytest.mark.parametrize("eta, cause, eig_every", [(0.5, "blow-up", 1), (40.0, "non-finite", None),
                                                   (40.0, "non-finite", 1)])  # θ overflows: named first
def test_divergence_keeps_the_partial_record_like_numpy_gd(dmf, eta, cause, eig_every):
    p, th0 = dmf
    bound = 50.0 if cause == "blow-up" else np.inf
    ref = ed.gd(p, th0, eta, 400, throw=False, loss_bound=bound, eig_every=eig_every)
    new = gd_jax(p, th0, eta, 400, throw=False, loss_bound=bound, chunk=32, eig_every=eig_every)
    assert ref.status == new.status == ("failed" if cause == "solver failure" else "diverged")
    assert new.cause == ref.cause == cause
    assert new.diverged_at == ref.diverged_at
    np.testing.assert_allclose(new.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(new.theta, ref.theta, atol=1e-10, rtol=1e-12)
    assert np.all(np.isfinite(new.theta)) and len(new.half_amp_subspace) == len(new.half_amp)
    with pytest.raises(IntegrationError) as info:
        gd_jax(p, th0, eta, 400, loss_bound=bound, chunk=32, eig_every=eig_every)
    assert info.value.cause == cause and info.value.partial.diverged_at == ref.diverged_at


def test_chunked_data_run_equals_unchunked():
    whole, chunked = _mlp(n=60, h=4), _mlp(n=60, h=4, chunk_size=16)
    a = gd_jax(whole, whole.init(), ETA, 8, eig_every=None)
    b = gd_jax(chunked, chunked.init(), ETA, 8, eig_every=None)
    np.testing.assert_allclose(b.theta, a.theta, atol=1e-12, rtol=0)


def test_gd_jax_bad_input(dmf):
    p, th0 = dmf
    cases = [
        (TypeError, "problem", lambda: gd_jax(DeepMatrixFactorization(2, 3, np.eye(2)), th0, 0.1, 5)),
        (ValueError, "theta0", lambda: gd_jax(p, th0[:3], 0.1, 5)),
        (ValueError, "eta", lambda: gd_jax(p, th0, -1.0, 5)),
        (ValueError, "eig_tol", lambda: gd_jax(p, th0, 0.1, 5, eig_tol=2.0)),
        (ValueError, "eig_block", lambda: gd_jax(p, th0, 0.1, 5, n_eigs=3, eig_block=2)),
        (ValueError, "eig_criterion", lambda: gd_jax(p, th0, 0.1, 5, eig_criterion="exact")),
        (ValueError, "tracker.k", lambda: gd_jax(p, th0, 0.1, 5, n_eigs=2, tracker=EigenTrackerJax(k=1))),
        (ValueError, "chunk", lambda: gd_jax(p, th0, 0.1, 5, chunk=0)),
    ]
    for exc, name, call in cases:
        with pytest.raises(exc, match=f"`{name}`"):
            call()


@pytest.mark.skipif(jax.default_backend() == "cpu", reason="no accelerator: JAX's default backend is the CPU")
def test_device_smoke_digits_mlp():
    p = _mlp(n=1797, h=32)
    traj = gd_jax(p, p.init(), 0.5, 50)
    assert traj.success and np.all(np.isfinite(traj.sharpness))
    ref = ed.gd(p, p.init(), 0.5, 50, eig_every=None)
    np.testing.assert_allclose(traj.loss, ref.loss, rtol=1e-9)
