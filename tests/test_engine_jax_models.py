"""The JAX engine for the models: ``ed.gd`` and ``ed.solve(solver="map")`` on JAX problems.

References: the NumPy engine (numba kernels of the built-in problems, or the NumPy map on
the same JAX problem), dense ``eigvalsh``, the NumPy SDCP solver (effdyn.models.sdcp), the
closed form of the central flow's σ² for one critical eigenvalue. Every run starts inside
the Edge of Stability with an oscillation seeded by GD's own first step, so that round-off
is never amplified from zero (an onset from round-off differs between any two
implementations) and the engines must agree to rounding.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import effdyn as ed
from effdyn._jax import import_jax
from effdyn.errors import IntegrationError
from effdyn.models.run_state import RunState
from effdyn.problems import DeepMatrixFactorization, MinimalValley, from_jax
from effdyn.solvers import resume

jax, jnp = import_jax()
M = ed.models

VALLEY = MinimalValley(zeta=1.0, eps=0.01)
DMF = DeepMatrixFactorization(2, 3, DeepMatrixFactorization.spectral_target(5.5), init="balanced", init_scale=0.3)


def _mlp_problem(n=40, d=4, h=5, c=2, seed=0, scale=0.8):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = np.eye(c)[rng.integers(0, c, n)]
    params = {"W1": scale * rng.standard_normal((d, h)), "b1": np.zeros(h),
              "W2": scale * rng.standard_normal((h, c)), "b2": np.zeros(c)}

    def mse(p, batch):
        x, y = batch
        return 0.5 * jnp.mean(jnp.sum((jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"] - y) ** 2, axis=1))

    return from_jax(mse, params=params, data=(X, Y), loss_min=0.0, name="small_mlp")


@pytest.fixture(scope="module")
def jax_problems():
    """The built-in problems wrapped with from_jax, and a small MLP (P = 37)."""
    return {"valley": from_jax(VALLEY.jax_loss(), dim=2), "dmf": from_jax(DMF.jax_loss(), DMF.dim),
            "mlp": _mlp_problem()}


# (problem, model, η, start, steps): every model on at least two problems; the MLP's
# central flow has two critical eigenvalues (the JAX SDCP solver), the valley's one.
CASES = [
    ("valley", "gradient", 0.3, [0.1, 6.9], 600),
    ("valley", "edge", 0.3, [0.1, 6.9], 600),
    ("valley", "free-energy", 0.3, [0.1, 6.9], 600),
    ("valley", "central", 0.3, [0.1, 6.9], 600),
    ("dmf", "gradient", 0.077, None, 300),
    ("dmf", "free-energy-chord", 0.077, None, 300),
    ("dmf", "free-energy-rank2", 0.077, None, 300),
    ("mlp", "edge", 0.65, None, 200),
    ("mlp", "free-energy", 0.65, None, 200),
    ("mlp", "central", 0.65, None, 200),
]

MODELS = {
    "gradient": lambda p, eta: M.GradientFlow(p, eta),
    "edge": lambda p, eta: M.EdgeFlow(p, eta),
    "free-energy": lambda p, eta: M.FreeEnergyFlow(p, eta),
    "free-energy-chord": lambda p, eta: M.FreeEnergyFlow(p, eta, storage="factor", closure="chord"),
    "free-energy-rank2": lambda p, eta: M.FreeEnergyFlow(p, eta, rank=2, storage="factor"),
    "central": lambda p, eta: M.CentralFlow(p, eta),
}


def _sigma(model, sol):
    """Σ (n, P, P) of every saved state, whatever the model stores."""
    if isinstance(model, M.FreeEnergyFlow):
        return np.array([model.sigma_of(y) for y in sol.y])
    if isinstance(model, M.CentralFlow):
        F = sol.records["sigma_factor"]
        return F @ np.swapaxes(F, 1, 2)
    return None


@pytest.mark.parametrize("pname, mname, eta, start, steps", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_compiled_map_equals_numpy_engine(jax_problems, pname, mname, eta, start, steps):
    pj = jax_problems[pname]
    builtin = {"valley": VALLEY, "dmf": DMF}.get(pname, pj)   # the MLP: the NumPy map on the same problem
    theta0 = start if start is not None else (DMF.init(0) if pname == "dmf" else pj.init())
    ref_model, model = MODELS[mname](builtin, eta), MODELS[mname](pj, eta)
    ref = ed.solve(ref_model, theta0, steps, solver="map", save_every=10, engine="numpy")
    sol = ed.solve(model, theta0, steps, solver="map", save_every=10)
    assert sol.run.jax_state is not None, "the compiled map did not run"
    assert ref.success and sol.success and np.array_equal(sol.k, ref.k)
    scale = max(1.0, np.max(np.abs(ref.y)))
    np.testing.assert_allclose(sol.y, ref.y, rtol=0, atol=1e-9 * scale)
    S_ref, S = _sigma(ref_model, ref), _sigma(model, sol)
    if S is not None:
        np.testing.assert_allclose(S, S_ref, rtol=0, atol=1e-9 * max(1.0, np.max(np.abs(S_ref))))
    for name in ("loss", "time_avg_loss", "sharpness", "amplitude"):
        a, b = getattr(sol, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * max(1.0, np.max(np.abs(b))), err_msg=name)
    for name in set(ref.records) - {"sigma_factor"}:   # a factor's columns have arbitrary signs
        np.testing.assert_allclose(sol.records[name], ref.records[name], rtol=0,
                                   atol=1e-9 * max(1.0, np.max(np.abs(ref.records[name]))), err_msg=name)
    # the compiled loop's own counts: one step per GD step, the work per step of the model
    assert sol.stats.nfev == sol.stats.n_accepted == steps
    if mname == "gradient":
        assert sol.stats.gradients == steps and sol.stats.eigensolves == len(sol.k)
    if mname == "central":
        n_crit = sol.records["n_critical"]
        assert n_crit.max() == (2 if pname == "mlp" else 1)      # the SDCP and the closed form were used
        assert sol.stats.gradients == steps + 1 and sol.stats.eigensolves == steps + 1


def test_tracker_path_equals_dense_path_and_resumes_exactly(tmp_path, monkeypatch):
    """Above ``dense_max`` the eigenpairs come from the JAX tracker (block = n_track + 2
    guards, the top pair converged to a residual of 1e-6·2/η, every other pair above
    (1 + clip)/η to an eigenvalue error of 1e-4·2/η): the flow follows the dense one to that
    accuracy; a checkpoint written at a chunk's end resumes bit for bit."""
    p = _mlp_problem(n=60, d=6, h=12, seed=1)                     # P = 110
    eta, steps = 0.6, 64
    theta0 = p.init()
    tracked, dense = M.FreeEnergyFlow(p, eta, n_track=6, dense_max=0), M.FreeEnergyFlow(p, eta, n_track=6, dense_max=200)
    sol = ed.solve(tracked, theta0, steps, solver="map", save_every=10)
    ref = ed.solve(dense, theta0, steps, solver="map", save_every=10)
    exact = np.array([np.linalg.eigvalsh(p.hessian(th))[::-1][:6] for th in sol.theta])
    assert np.max(np.abs(sol.records["eigs"][:, 0] - exact[:, 0])) <= 1e-6 * 2 / eta
    # every eigenvalue above (1 + clip)/η, where the rates differ from the untracked ones
    rated = exact > (1 + tracked.clip) / eta
    assert rated.sum() >= 2 and np.max(np.abs(sol.records["eigs"] - exact)[rated]) <= 1e-4 * 2 / eta
    np.testing.assert_allclose(sol.theta, ref.theta, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sol.amplitude, ref.amplitude, rtol=1e-4, atol=1e-8)
    # one eigen-solve per evaluated state (steps + 1) in the compiled map, plus the start's: the
    # default seed of Σ projects GD's first half-step on the top eigenvectors at θ0 (on the host)
    state = sol.run.jax_state["tracker"]
    _, run0 = tracked.start(theta0)
    assert run0.counters.eigensolves == 1 and run0.counters.gradients == 1
    assert int(state["n_updates"]) == steps + 1 and sol.stats.eigensolves == steps + 2
    assert sol.stats.gradients == steps + 1
    assert sol.stats.hvps == int(state["n_hvp"]) + run0.counters.hvps and int(state["n_hvp"]) > 6 * steps
    assert sol.stats.thirds == steps and sol.stats.losses == 2 * len(sol.k)

    # a Ctrl-C during the third chunk (of 16 steps): that chunk finishes, its end is checkpointed
    from effdyn.engine_jax import map as jmap

    monkeypatch.setattr(jmap, "DEFAULT_CHUNK", 16)
    full = ed.solve(tracked, theta0, steps, solver="map", save_every=10)
    build = jmap._build_chunk

    def interrupting(*args):
        fn, calls = build(*args), []

        def run(*a):
            out = fn(*a)
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return out
        return run

    monkeypatch.setattr(jmap, "_build_chunk", interrupting)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        path = tmp_path / "fe.ckpt"
        p.__dict__.pop(jmap._CACHE_ATTR, None)   # rebuild through the interrupting builder
        with pytest.raises(IntegrationError) as info:
            ed.solve(tracked, theta0, steps, solver="map", save_every=10, checkpoint=path, checkpoint_every=16)
    finally:
        signal.signal(signal.SIGINT, old)
    assert info.value.cause == "interrupted" and info.value.time == 48
    back = resume(M.FreeEnergyFlow(p, eta, n_track=6, dense_max=0), path)
    assert np.array_equal(back.k, full.k) and np.array_equal(back.y, full.y)
    for name in full.records:
        np.testing.assert_array_equal(back.records[name], full.records[name])
    assert back.stats.hvps == full.stats.hvps


def test_warm_jax_drift_for_host_solvers_equals_the_numpy_drift():
    """Above ``dense_max`` the free-energy drift of a JAX problem is one compiled call with
    the JAX tracker carried in ``run.jax_state`` (tight tolerance, history 1): equal to the
    NumPy drift with dense eigenpairs, counted, and an RK45 solve through it follows the
    dense one; a run state of the compiled map is not mistaken for it."""
    p = _mlp_problem(n=60, d=6, h=12, seed=1)                     # P = 110
    eta = 0.6
    theta0 = p.init()
    warm, dense = M.FreeEnergyFlow(p, eta, n_track=6, dense_max=0), M.FreeEnergyFlow(p, eta, n_track=6, dense_max=200)
    assert warm._warm_jax_drift_applies() and not dense._warm_jax_drift_applies()
    y0, run = warm.start(theta0)
    ref = dense._numpy_drift(0.0, y0, dense.start(theta0)[1])
    rng = np.random.default_rng(3)
    before = run.counters.to_dict()
    for i in range(3):   # warm starts from the previous evaluation, nearby states
        y = y0 * (1 + 1e-6 * rng.standard_normal(y0.size))
        d_warm = warm.drift(0.0, y, run)
        d_ref = dense._numpy_drift(0.0, y, dense.start(theta0)[1])
        np.testing.assert_allclose(d_warm, d_ref, rtol=1e-7, atol=1e-9 * np.max(np.abs(ref)))
    assert set(run.jax_state) == {"tracker"} and int(run.jax_state["tracker"]["n_updates"]) == 3
    after = run.counters.to_dict()
    assert after["eigensolves"] - before["eigensolves"] == 3 and after["gradients"] - before["gradients"] == 3
    assert after["hvps"] - before["hvps"] == int(run.jax_state["tracker"]["n_hvp"]) > 0
    sol = ed.solve(warm, theta0, 40, solver="scipy:RK45", save_every=10)
    ref_sol = ed.solve(dense, theta0, 40, solver="scipy:RK45", save_every=10)
    assert sol.run.jax_state is not None and sol.stats.hvps > 0
    np.testing.assert_allclose(sol.theta, ref_sol.theta, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sol.amplitude, ref_sol.amplitude, rtol=1e-5, atol=1e-10)
    # a compiled map's run state (history 2) has another shape: the drift starts afresh
    mapped = ed.solve(warm, theta0, 3, solver="map")
    run2 = mapped.run
    np.testing.assert_allclose(warm.drift(0.0, y0, run2), ref, rtol=1e-7, atol=1e-9 * np.max(np.abs(ref)))


def test_run_state_is_data_and_a_run_continues(jax_problems):
    p = jax_problems["valley"]
    model = M.CentralFlow(p, 0.3)
    whole = ed.solve(model, [0.1, 6.9], 80, solver="map", save_every=10)
    first = ed.solve(model, [0.1, 6.9], 40, solver="map", save_every=10)
    d = first.run.to_dict()
    assert set(d["jax_state"]["value"]) == {"X", "r", "n_full"}
    assert all(isinstance(v, np.ndarray) for v in d["jax_state"]["value"].values())
    run = RunState.from_dict(model, d)
    second = ed.solve(model, state0=first.y[-1], run=run, steps=40, solver="map", save_every=10)
    np.testing.assert_array_equal(second.y, whole.y[4:])
    assert second.stats.gradients == whole.stats.gradients + 1      # the state at 40 is evaluated twice
    # a run state of another model is refused by name
    from effdyn.engine_jax.compiled import from_host

    with pytest.raises(ValueError, match="run.jax_state"):
        from_host({"X": np.zeros((3, 3)), "r": np.array(0), "n_full": np.array(0)},
                  model.jax_map().init_run(np.zeros(2), 0))


def test_central_flow_closed_form_and_diffrax(jax_problems):
    """One critical eigenvalue: σ² = max(0, 2[⟨−∇E, ∇S⟩ − (κ/η)(2/η − S)]/‖∇S‖²) with ∇S from
    a dense eigendecomposition and central differences; diffrax runs the JAX drift."""
    p, eta = jax_problems["valley"], 0.3
    model = M.CentralFlow(p, eta, restoring=0.5)
    sol = ed.solve(model, [0.1, 6.9], 30, solver="map", save_every=10)
    for theta, trace in zip(sol.theta, sol.records["sigma_trace"]):
        S = np.linalg.eigvalsh(VALLEY.hessian(theta))[-1]
        h = 1e-6
        dS = np.array([(np.linalg.eigvalsh(VALLEY.hessian(theta + h * e))[-1]
                        - np.linalg.eigvalsh(VALLEY.hessian(theta - h * e))[-1]) / (2 * h) for e in np.eye(2)])
        g = VALLEY.grad(theta)
        sigma2 = max(0.0, 2 * (-(g @ dS) - (0.5 / eta) * (2 / eta - S)) / (dS @ dS))
        assert trace == pytest.approx(sigma2, rel=1e-7, abs=1e-12)
    assert np.max(sol.records["sigma_trace"]) > 0
    a = ed.solve(model, [0.1, 6.9], 150, solver="diffrax:Tsit5", save_every=50, rtol=1e-9, atol=1e-11)
    b = ed.solve(model, [0.1, 6.9], 150, solver="scipy:DOP853", save_every=50, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.y, b.y, rtol=0, atol=1e-6)


def test_jax_sdcp_matches_the_numpy_solver():
    from effdyn.engine_jax.sdcp import solve_sdcp_jax
    from effdyn.models.sdcp import SDCPError, solve_sdcp_svec, svec

    R = 5
    pairs = [(i, j) for i in range(R) for j in range(i, R)]
    solve = jax.jit(lambda A, Mm, r, X0: solve_sdcp_jax(A, Mm, r, X0))
    rng = np.random.default_rng(0)
    n_unique = n_singular = n_failed = 0
    for _ in range(80):
        r = int(rng.integers(2, R + 1))
        m = r * (r + 1) // 2
        C = rng.standard_normal((int(rng.integers(1, 3 * m)), m))
        Mr = 0.5 * C.T @ C
        A = rng.standard_normal((r, r))
        A = 0.5 * (A + A.T)
        idx = [pairs.index((i, j)) for i in range(r) for j in range(i, r)]
        Mp = np.zeros((len(pairs), len(pairs)))
        Mp[np.ix_(idx, idx)] = Mr
        Ap = np.zeros((R, R))
        Ap[:r, :r] = A
        X, res, ok, _ = solve(jnp.asarray(Ap), jnp.asarray(Mp), r, jnp.zeros((R, R)))
        X = np.asarray(X)
        assert np.all(X[r:] == 0) and np.all(X[:, r:] == 0)
        try:
            ref = solve_sdcp_svec(A, Mr)
        except SDCPError:
            assert not bool(ok), "the JAX solver accepted an SDCP the NumPy solver finds without solution"
            n_failed += 1
            continue
        assert bool(ok) and float(res) <= 1e-7
        # B[X] (what the drift sees) is unique; X itself where B is non-singular
        BX, BX_ref = Mr @ svec(X[:r, :r]), Mr @ svec(ref.X)
        assert np.max(np.abs(BX - BX_ref)) <= 1e-7 * (np.max(np.abs(BX_ref)) + np.linalg.norm(A))
        if C.shape[0] >= m:
            n_unique += 1
            assert np.max(np.abs(X[:r, :r] - ref.X)) <= 1e-7 * max(1.0, np.max(np.abs(ref.X)))
        else:
            n_singular += 1
    assert n_unique > 12 and n_singular > 12 and n_failed > 3


def test_sdcp_failure_stops_like_the_numpy_engine():
    # a critical eigenvalue above 2/η whose gradient vanishes (a quadratic): no Σ restores it
    p = from_jax(lambda th: 2.0 * th[0] ** 2 + 0.5 * th[1] ** 2, dim=2)
    for engine in ("numpy", "jax"):
        sol = ed.solve(M.CentralFlow(p, 0.6), [1.0, 1.0], 10, solver="map", engine=engine, throw=False)
        assert sol.stats.cause == "sdcp failed" and sol.stats.status == "failed" and len(sol.k) == 0


def test_divergence_is_caught_at_the_same_step(jax_problems):
    p = jax_problems["valley"]
    for cause, kw in (("blow-up", {"blowup": 1e3}), ("non-finite", {"blowup": np.finfo(float).max})):
        a = ed.solve(M.GradientFlow(p, 0.5), [0.5, 6.0], 300, solver="map", engine="numpy", throw=False, **kw)
        b = ed.solve(M.GradientFlow(p, 0.5), [0.5, 6.0], 300, solver="map", throw=False, **kw)
        assert a.stats.cause == b.stats.cause == cause
        assert np.array_equal(a.k, b.k) and np.allclose(a.y[:-1], b.y[:-1], rtol=1e-12, atol=0)
        with pytest.raises(IntegrationError) as info:
            ed.solve(M.GradientFlow(p, 0.5), [0.5, 6.0], 300, solver="map", **kw)
        assert info.value.cause == cause and info.value.step == a.k[-1]


def test_gd_dispatches_jax_problems_to_the_jax_engine(jax_problems):
    p = jax_problems["mlp"]
    auto = ed.gd(p, p.init(), 0.65, 100, n_eigs=2)
    ref = ed.gd(p, p.init(), 0.65, 100, n_eigs=2, engine="numpy")
    assert auto.config["engine"] == "jax" and "engine" not in ref.config
    np.testing.assert_allclose(auto.theta, ref.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(auto.eigs, ref.eigs, rtol=0, atol=1e-4 * 2 / 0.65)
    np.testing.assert_allclose(auto.half_amp_subspace, ref.half_amp_subspace, rtol=0, atol=1e-10)
    assert auto.loss_min == 0.0 and np.array_equal(auto.theta0, p.init())
    assert auto.problem_identity == ref.problem_identity and auto.eig_checks == 0
    # eig_tol: the tracker's residual bound relative to 2/η
    tight = ed.gd(p, p.init(), 0.65, 20, n_eigs=2, eig_tol=1e-10)
    np.testing.assert_allclose(tight.eigs, ref.eigs[:21], rtol=0, atol=1e-10 * 2 / 0.65)
    # options only the NumPy engine has: "auto" takes it, "jax" refuses
    ckpt = ed.gd(p, p.init(), 0.65, 5, eig_options={"check_every": None})
    assert "engine" not in ckpt.config
    for kwargs, name in (({"engine": "torch"}, "engine"), ({"engine": "jax", "eig_options": {"probe": 0}}, "eig_options")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            ed.gd(p, p.init(), 0.65, 5, **kwargs)
    with pytest.raises(ValueError, match="`engine"):
        ed.gd(VALLEY, [0.1, 3.0], 0.3, 5, engine="jax")


def test_engine_argument_of_solve(jax_problems):
    p = jax_problems["valley"]
    with pytest.raises(ValueError, match="`engine`"):
        ed.solve(M.GradientFlow(p, 0.3), [0.1, 3.0], 5, solver="map", engine="gpu")
    with pytest.raises(ValueError, match="`engine`"):
        ed.solve(M.GradientFlow(p, 0.3), [0.1, 3.0], 5, solver="scipy:RK45", engine="jax")
    with pytest.raises(ValueError, match="not a JAX problem"):
        ed.solve(M.GradientFlow(VALLEY, 0.3), [0.1, 3.0], 5, solver="map", engine="jax")
    with pytest.raises(ValueError, match="`callback`"):
        ed.solve(M.GradientFlow(p, 0.3), [0.1, 3.0], 5, solver="map", engine="jax", callback=lambda k, y: None)
    # with a callback "auto" runs the NumPy map
    seen = []
    sol = ed.solve(M.GradientFlow(p, 0.3), [0.1, 3.0], 5, solver="map", callback=lambda k, y: seen.append(k))
    assert seen == [1, 2, 3, 4, 5] and sol.run.jax_state is None


def test_models_without_a_compiled_map_fall_back_to_the_numpy_engine(jax_problems):
    """Rod flow (no map at all), self-stabilisation and the sharpness-reduction flow have no
    compiled map: on a JAX problem engine='auto' runs their NumPy code, engine='jax' is refused
    with the reason."""
    p = jax_problems["valley"]
    sol = ed.solve(M.RodFlow(p, 0.3), [0.1, 6.9], 20, solver="scipy:RK45", save_every=10)
    assert sol.success and sol.run.jax_state is None
    # its compiled form is the pure-JAX drift under diffrax
    fast = ed.solve(M.RodFlow(p, 0.3), [0.1, 6.9], 20, solver="diffrax:Tsit5", save_every=10, rtol=1e-9, atol=1e-11)
    ref = ed.solve(M.RodFlow(VALLEY, 0.3), [0.1, 6.9], 20, solver="scipy:DOP853", save_every=10, rtol=1e-9,
                   atol=1e-11)
    np.testing.assert_allclose(fast.y, ref.y, rtol=0, atol=1e-8)
    ss = M.SelfStabilization(p, 0.3)
    if "map" in ss.supports:
        sol = ed.solve(ss, [0.1, 6.9], 20, solver="map", save_every=10)
        assert sol.success and sol.run.jax_state is None
        with pytest.raises(ValueError, match="engine='jax'.*not available"):
            ed.solve(ss, [0.1, 6.9], 20, solver="map", engine="jax")
    with pytest.raises(ValueError, match="`engine`"):
        ed.solve(M.RodFlow(p, 0.3), [0.1, 6.9], 20, solver="scipy:RK45", engine="jax")


def test_handover_start_runs_on_the_jax_engine(jax_problems):
    """solve(start=traj.state_at(k0)) on the compiled map: the time axis continues at k0 and
    the states are those of the NumPy engine."""
    p = jax_problems["valley"]
    traj = ed.gd(p, [0.1, 6.9], 0.3, 60, engine="numpy")
    state = traj.state_at(40)
    model = M.FreeEnergyFlow(p, 0.3)
    a = ed.solve(model, steps=30, start=state, solver="map", save_every=10, engine="numpy")
    b = ed.solve(model, steps=30, start=state, solver="map", save_every=10)
    assert b.run.jax_state is not None and np.array_equal(a.k, b.k) and a.k[0] == 40 and a.k[-1] == 70
    np.testing.assert_allclose(b.y, a.y, rtol=0, atol=1e-9 * max(1.0, np.max(np.abs(a.y))))


def _accelerators():
    return [d for d in jax.devices() if d.platform in ("gpu", "tpu", "cuda", "rocm")]


@pytest.mark.skipif(not _accelerators(), reason="no accelerator: jax.devices() has no GPU or TPU")
def test_device_smoke_gd_free_energy_and_central_flow_on_a_digits_mlp():
    """On a GPU/TPU: GD, the free-energy map and the central-flow map for 50 steps on a digits
    MLP (all 1797 images), on the default device (nothing in the JAX path pins the CPU)."""
    from effdyn.problems.builders import digits_mlp

    p, theta0 = digits_mlp(n=1797, width=32)
    eta = 0.5
    traj = ed.gd(p, theta0, eta, 50)
    assert traj.config["engine"] == "jax" and traj.success and np.all(np.isfinite(traj.sharpness))
    for model in (M.FreeEnergyFlow(p, eta), M.CentralFlow(p, eta)):
        sol = ed.solve(model, theta0, 50, solver="map", save_every=10)
        assert sol.success and sol.run.jax_state is not None and np.all(np.isfinite(sol.y))
    np.testing.assert_allclose(sol.theta[0], traj.theta[0])
    g = jax.jit(p.pure_grad)(jnp.asarray(theta0), p.data_args)
    assert {d.platform for d in g.devices()} <= {d.platform for d in _accelerators()}
