"""The discrete GD reference: closed forms, published benchmark behaviour, failure handling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import effdyn as ed
from effdyn import IntegrationError
from effdyn.problems.base import Problem

pytestmark = pytest.mark.xdist_group("gd")


class PyQuadratic(Problem):
    """E = ½θᵀAθ written from scratch in NumPy (no numba kernels: GD loops in Python)."""

    name = "py_quadratic"

    def __init__(self, A):
        self.A = np.asarray(A, dtype=float)
        self.loss_min = 0.0 if np.linalg.eigvalsh(self.A)[0] > 0 else None

    @property
    def dim(self):
        return self.A.shape[0]

    def _loss(self, theta):
        return 0.5 * theta @ self.A @ theta

    def _grad(self, theta):
        return self.A @ theta

    def _hvp(self, theta, v):
        return self.A @ v


def spd_matrix(eigs, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    return (Q * eigs) @ Q.T, Q


def reference_gd(problem, theta0, eta, steps, variant="gd"):
    """A deliberately plain loop through the public, validated problem API."""
    theta = np.array(theta0, dtype=float)
    out = [theta.copy()]
    for _ in range(steps):
        g = problem.grad(theta)
        if variant == "gd":
            step = eta * g
        elif variant == "normalized":
            step = eta * g / np.linalg.norm(g)
        else:
            step = eta * g / (2.0 * np.sqrt(problem.loss(theta) - problem.loss_min))
        theta = theta - step
        out.append(theta.copy())
    return np.array(out)


# --- closed form on a quadratic ----------------------------------------------------------

EIGS = np.array([3.0, 2.2, 1.0, 0.5, 0.25])  # η = 0.6: ηλ = 1.8 (oscillating, stable) ... 0.15
ETA = 0.6


@pytest.mark.parametrize("path", ["compiled", "python"])
def test_gd_on_quadratic_equals_closed_form(path):
    A, Q = spd_matrix(EIGS)
    problem = ed.problems.Quadratic(A) if path == "compiled" else PyQuadratic(A)
    theta0 = np.random.default_rng(1).standard_normal(5)
    steps = 80
    traj = ed.gd(problem, theta0, ETA, steps, n_eigs=2, compiled=(path == "compiled") or None)
    M = np.eye(5) - ETA * A
    exact = np.array([np.linalg.matrix_power(M, k) @ theta0 for k in range(steps + 1)])
    np.testing.assert_allclose(traj.theta, exact, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(traj.k, np.arange(steps + 1))
    np.testing.assert_allclose(traj.loss, 0.5 * np.einsum("ki,ij,kj->k", exact, A, exact), atol=1e-12)
    np.testing.assert_allclose(traj.grad_norm, np.linalg.norm(exact @ A, axis=1), atol=1e-12)
    np.testing.assert_allclose(traj.eigs, np.tile(EIGS[:2], (steps + 1, 1)), atol=1e-12)
    # half-step amplitude: a_k = |v1ᵀ(θ_{k+1} − θ_k)|/2 = ηλ1|v1ᵀθ_k|/2
    k, amp = traj.amplitude()
    np.testing.assert_array_equal(k, np.arange(steps))
    np.testing.assert_allclose(amp, 0.5 * ETA * EIGS[0] * np.abs(exact[:-1] @ Q[:, 0]), atol=1e-12)
    k, mid = traj.midpoint()
    np.testing.assert_array_equal(k, np.arange(1, steps))
    np.testing.assert_allclose(mid, 0.25 * (exact[:-2] + 2 * exact[1:-1] + exact[2:]), atol=1e-12)
    k, la = traj.loss_average()
    np.testing.assert_allclose(la, 0.5 * (traj.loss[:-1] + traj.loss[1:]), atol=0)
    assert traj.status == "success" and traj.diverged_at is None
    assert traj.eos_onset() is None  # S = 3 < 2/η
    assert traj.n_hvp == 0  # P = 5: dense eigen-solves


def test_compiled_and_python_loops_agree_and_stride_records():
    A, _ = spd_matrix(EIGS, seed=2)
    theta0 = np.random.default_rng(3).standard_normal(5)
    full = ed.gd(ed.problems.Quadratic(A), theta0, ETA, 60)
    py = ed.gd(ed.problems.Quadratic(A), theta0, ETA, 60, compiled=False)
    np.testing.assert_allclose(py.theta, full.theta, atol=1e-14)
    np.testing.assert_allclose(py.half_amp, full.half_amp, atol=1e-14)
    strided = ed.gd(ed.problems.Quadratic(A), theta0, ETA, 60, theta_every=7, eig_every=5, n_eigs=3)
    np.testing.assert_array_equal(strided.theta_k, np.arange(0, 61, 7))
    np.testing.assert_allclose(strided.theta, full.theta[::7], atol=1e-14)
    np.testing.assert_array_equal(strided.eig_k, np.arange(0, 61, 5))
    np.testing.assert_allclose(strided.eigs, np.tile(EIGS[:3], (13, 1)), atol=1e-12)
    k_full, mid_full = full.midpoint()
    k_str, mid_str = strided.midpoint()
    np.testing.assert_array_equal(k_str, np.arange(7, 60, 7))
    np.testing.assert_allclose(mid_str, mid_full[k_str - 1], atol=1e-14)
    np.testing.assert_allclose(strided.loss, full.loss, atol=0)


# --- variants ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["normalized", "sqrt"])
@pytest.mark.parametrize("which", ["two-layer (compiled)", "quadratic (python)"])
def test_variants_match_a_hand_written_loop(variant, which):
    if which.startswith("two-layer"):
        problem, theta0, eta, steps = ed.problems.MinimalistTwoLayer(1.0, 0.05), [0.5, 0.05, 0.05], 0.02, 40
    else:
        problem = PyQuadratic(spd_matrix(EIGS, seed=4)[0])
        theta0, eta, steps = np.random.default_rng(5).standard_normal(5), 0.05, 40
    traj = ed.gd(problem, theta0, eta, steps, variant=variant)
    ref = reference_gd(problem, theta0, eta, steps, variant)
    np.testing.assert_allclose(traj.theta, ref, rtol=1e-11, atol=1e-13)
    assert traj.variant == variant
    if variant == "normalized":
        step_norms = np.linalg.norm(np.diff(traj.theta, axis=0), axis=1)
        np.testing.assert_allclose(step_norms, eta, rtol=1e-12)


def test_sqrt_variant_needs_loss_min():
    with pytest.raises(ValueError, match="`variant=\"sqrt\"`.*loss_min"):
        ed.gd(ed.problems.MinimalValley(1.0, 0.01), [0.1, 3.0], 0.3, 10, variant="sqrt")


# --- published benchmarks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def valley_run():
    return ed.gd(ed.problems.MinimalValley(zeta=1.0, eps=0.01), [0.1, 3.0], 0.3, 6000, eig_every=1)


def test_minimal_valley_eos_onset_and_amplitude(valley_run):
    traj = valley_run
    eta, eps = 0.3, 0.01
    y = traj.theta[:, 1]
    first = int(np.argmax(y > 2 / eta))
    onset = traj.eos_onset()
    k, amp = traj.amplitude()
    ref = np.sqrt(2 * eps)
    window = k >= 3000  # the self-stabilisation cycle has relaxed by then
    dev = np.max(np.abs(amp[window] / ref - 1))
    late = np.mean(amp[k >= 4000]) / ref - 1
    print(f"valley: first y > 2/η at k = {first}, sharpness onset {onset}; amplitude over k in "
          f"[3000, 6000): max |a/√(2ε) − 1| = {dev:.3f}, mean deviation over [4000, 6000) {late:+.4f}")
    assert 1200 <= first <= 1250
    # S = λ_max([[y + 3ζx, x], [x, 0]]) differs from y by O(x): the two onsets are steps apart
    assert onset is not None and 1200 <= onset <= 1250 and abs(onset - first) <= 5
    assert dev < 0.05
    # x carries the oscillation: its half-step amplitude equals |x_{k+1} − x_k|/2 (v1 ≈ e_x)
    x = traj.theta[:, 0]
    np.testing.assert_allclose(amp[window], 0.5 * np.abs(np.diff(x))[window], rtol=0.02)
    # the two-step loss average is smooth where E itself alternates
    _, la = traj.loss_average()
    assert np.max(np.abs(np.diff(la[4000:]))) < 0.05 * np.max(np.abs(np.diff(traj.loss[4000:])))


def test_minimalist_two_layer_sharpens_then_self_stabilises():
    eta = 2.0
    traj = ed.gd(ed.problems.MinimalistTwoLayer(lam1=1.0, lam2=0.05), [0.5, 0.05, 0.05], eta, 600)
    S = traj.sharpness
    increases = int(np.sum(np.diff(traj.loss) > 0))
    print(f"two-layer: EoS onset k = {traj.eos_onset()}, max ηS = {eta * S.max():.4f}, final ηS = "
          f"{eta * S[-1]:.4f}, loss increases in {increases} steps, final loss {traj.loss[-1]:.2e}")
    assert traj.eos_onset() is not None and eta * S.max() > 2.0
    assert increases > 0
    assert traj.loss[-1] < 1e-20 and traj.grad_norm[-1] < 1e-12
    assert 1.85 <= eta * S[-1] <= 1.95


def test_deep_matrix_factorisation_converges_below_and_oscillates_above():
    DMF = ed.problems.DeepMatrixFactorization
    eta, steps = 0.077, 1500
    below = DMF(2, 3, np.diag([5.0, 1.0]), init="small", init_scale=0.1)
    traj = ed.gd(below, below.init(0), eta, steps, eig_every=50)
    # converged to a nearly balanced minimum (small init); the balanced minimum has the
    # smallest sharpness among the minima, 3σ₁^{4/3} (theory §5), just below 2/η = 25.97
    assert traj.loss[-1] < 1e-20
    S_balanced = 3 * 5.0 ** (4 / 3)
    assert S_balanced * (1 - 1e-12) <= traj.sharpness[-1] <= S_balanced * (1 + 1e-4)

    above = DMF(2, 3, np.diag([5.5, 1.0]), init="small", init_scale=0.1)
    traj = ed.gd(above, above.init(0), eta, steps, eig_every=None)
    th = traj.theta[-200:]
    one = np.linalg.norm(np.diff(th, axis=0), axis=1)
    two = np.linalg.norm(th[2:] - th[:-2], axis=1)
    print(f"dmf σ1 = 5.5: late |θ(k+1) − θ(k)| = {one.min():.3f}, |θ(k+2) − θ(k)| <= {two.max():.1e}, "
          f"loss alternates {traj.loss[-2]:.3f} / {traj.loss[-1]:.3f}")
    assert one.min() > 0.1  # the oscillation does not vanish
    assert two.max() < 1e-9 * one.min()  # ... and repeats every two steps
    assert traj.loss[-200:].min() > 0.1


def test_no_recompilation_across_eta():
    problem = ed.problems.MinimalValley(1.0, 0.01)
    ed.gd(problem, [0.1, 3.0], 0.3, 5)
    before = ed.compile_count()
    ed.gd(problem, [0.1, 2.0], 0.2, 50, eig_every=3, theta_every=2, variant="normalized")
    ed.gd(ed.problems.MinimalValley(0.5, 0.02), [0.1, 2.0], 0.25, 50)
    assert ed.compile_count() == before


# --- divergence --------------------------------------------------------------------------


def test_divergence_stops_with_a_partial_record():
    problem = ed.problems.Quadratic(np.diag([3.0, 1.0]))  # η = 1: ηλ1 = 3 > 2
    traj = ed.gd(problem, [1e3, 1.0], 1.0, 100, throw=False)
    # E_k = 1.5e6·4^k exceeds 1e10 first at k = 7
    assert traj.status == "diverged" and traj.cause == "blow-up" and traj.diverged_at == 7
    assert "step 7" in traj.message and "loss_bound" in traj.message
    np.testing.assert_array_equal(traj.k, np.arange(7))
    assert traj.theta.shape == (7, 2) and len(traj.half_amp) == 6 and len(traj.eig_k) == 7
    np.testing.assert_allclose(traj.theta[:, 0], 1e3 * (-2.0) ** np.arange(7))
    assert np.all(np.isfinite(traj.loss)) and np.all(np.isfinite(traj.theta))

    with pytest.raises(IntegrationError, match="step 7") as info:
        ed.gd(problem, [1e3, 1.0], 1.0, 100)  # throw=True is the default
    err = info.value
    assert err.step == 7 and err.cause == "blow-up" and err.time == 7.0
    assert err.partial.status == "diverged" and len(err.partial.loss) == 7


def test_overflow_is_reported_as_non_finite():
    problem = ed.problems.Quadratic(np.diag([3.0, 1.0]))
    traj = ed.gd(problem, [1.0, 1.0], 1.0, 2000, throw=False, loss_bound=np.inf)
    # θ_k = ((−2)^k, 0): the gradient norm √(9·4^k) overflows (at k = 511) before the loss
    with np.errstate(over="ignore"):
        x = (-2.0) ** np.arange(2000.0)
        gnorm = np.sqrt((3 * x) * (3 * x))
        loss = 1.5 * x * x
    first_bad = int(np.argmax(~(np.isfinite(gnorm) & np.isfinite(loss))))
    assert traj.cause == "non-finite" and traj.diverged_at == first_bad == 511
    assert np.all(np.isfinite(traj.loss)) and np.all(np.isfinite(traj.theta))


class NaNAt(PyQuadratic):
    """A quadratic whose loss turns NaN once θ_0 drops below a threshold."""

    def _loss(self, theta):
        return np.nan if theta[0] < 0.3 else super()._loss(theta)


def test_nan_loss_in_user_code_stops_the_run():
    traj = ed.gd(NaNAt(np.eye(2)), [1.0, 1.0], 0.5, 10, throw=False)  # θ_0 = 0.5^k
    assert traj.diverged_at == 2 and traj.cause == "non-finite" and "step 2" in traj.message
    assert traj.status == "diverged" and len(traj.loss) == 2


class Interrupting(PyQuadratic):
    def _grad(self, theta):
        if theta[0] < 0.1:
            raise KeyboardInterrupt
        return super()._grad(theta)


def test_ctrl_c_returns_the_partial_trajectory():
    with pytest.raises(IntegrationError) as info:
        ed.gd(Interrupting(np.eye(2)), [1.0, 1.0], 0.5, 50, throw=False)
    assert info.value.cause == "interrupted"
    partial = info.value.partial
    assert partial.status == "interrupted" and 0 < len(partial.loss) <= 5


class NaNHessian(PyQuadratic):
    def _hvp(self, theta, v):
        return np.full_like(v, np.nan) if theta[0] < 0.3 else super()._hvp(theta, v)


def test_non_finite_hessian_stops_the_run():
    traj = ed.gd(NaNHessian(np.eye(2)), [1.0, 1.0], 0.5, 10, throw=False)
    assert traj.status == "diverged" and traj.diverged_at == 2 and "Hessian" in traj.message
    assert len(traj.eig_k) == 2 and np.all(np.isfinite(traj.eigs))


def test_lanczos_tracking_inside_gd_matches_dense():
    rng = np.random.default_rng(0)
    prob = ed.problems.DeepMatrixFactorization(5, 3, rng.standard_normal((5, 5)), init="small", init_scale=0.4)
    theta0 = prob.init(1)
    dense = ed.gd(prob, theta0, 0.05, 60, n_eigs=2, dense_max=1000)
    krylov = ed.gd(prob, theta0, 0.05, 60, n_eigs=2, dense_max=0)
    assert dense.n_hvp == 0 and krylov.n_hvp > 0
    np.testing.assert_allclose(krylov.eigs, dense.eigs, rtol=1e-12)
    # |Δa_k| <= η‖∇E‖·‖Δv1‖/2, and ‖Δv1‖ ~ tol/gap with the default tol = 1e-8
    bound = 1e-7 * 0.05 * dense.grad_norm[:-1]
    assert np.all(np.abs(krylov.half_amp - dense.half_amp) <= bound)


def test_gd_is_the_function_after_importing_its_module():
    import effdyn.reference  # noqa: F401  (importing the module must not shadow ed.gd)

    traj = ed.gd(ed.problems.Quadratic(np.eye(2)), [1.0, 1.0], 0.5, 3)
    assert isinstance(traj, ed.GDTrajectory)


# --- bad input ---------------------------------------------------------------------------


BAD_INPUTS = [
    (dict(problem="valley"), TypeError, "`problem`"),
    (dict(theta0=[0.1, 3.0, 1.0]), ValueError, "`theta0`"),
    (dict(theta0=[[0.1, 3.0]]), ValueError, "`theta0`"),
    (dict(theta0=[np.nan, 3.0]), ValueError, "`theta0`"),
    (dict(eta=0.0), ValueError, "`eta`"),
    (dict(eta=-0.1), ValueError, "`eta`"),
    (dict(eta=np.inf), ValueError, "`eta`"),
    (dict(eta="0.3"), TypeError, "`eta`"),
    (dict(steps=-1), ValueError, "`steps`"),
    (dict(steps=10.5), ValueError, "`steps`"),
    (dict(variant="adam"), ValueError, r"`variant`.*\['gd', 'normalized', 'sqrt'\]"),
    (dict(variant="sqrt"), ValueError, "`variant"),
    (dict(eig_every=0), ValueError, "`eig_every`"),
    (dict(n_eigs=0), ValueError, "`n_eigs`"),
    (dict(n_eigs=3), ValueError, "`n_eigs`"),
    (dict(theta_every=0), ValueError, "`theta_every`"),
    (dict(loss_bound=0.0), ValueError, "`loss_bound`"),
    (dict(throw="yes"), TypeError, "`throw`"),
    (dict(progress="auto"), TypeError, "`progress`"),
    (dict(compiled="yes"), TypeError, "`compiled`"),
]


@pytest.mark.parametrize("change, exc, match", BAD_INPUTS, ids=lambda x: str(x)[:40])
def test_bad_input_names_the_argument_before_running(change, exc, match):
    args = dict(problem=ed.problems.MinimalValley(1.0, 0.01), theta0=[0.1, 3.0], eta=0.3, steps=10)
    args.update(change)
    before = ed.compile_count()
    with pytest.raises(exc, match=match):
        ed.gd(args.pop("problem"), args.pop("theta0"), args.pop("eta"), args.pop("steps"), **args)
    assert ed.compile_count() == before


def test_compiled_true_without_kernels_is_refused():
    with pytest.raises(ValueError, match="`compiled=True`"):
        ed.gd(PyQuadratic(np.eye(2)), [1.0, 1.0], 0.1, 5, compiled=True)


# --- outputs -----------------------------------------------------------------------------


def test_trajectory_helpers_and_xarray(valley_run):
    traj = valley_run
    assert traj.sharpness_at(100.5) == pytest.approx(0.5 * (traj.sharpness[100] + traj.sharpness[101]))
    with pytest.raises(ValueError, match="`k`"):
        traj.sharpness_at(6001)
    ds = traj.to_xarray()
    np.testing.assert_array_equal(ds["loss"].values, traj.loss)
    np.testing.assert_array_equal(ds["theta"].values, traj.theta)
    np.testing.assert_array_equal(ds["sharpness"].values, traj.sharpness)
    assert json.loads(ds.attrs["problem_config"]) == {"name": "minimal_valley", "dim": 2, "zeta": 1.0, "eps": 0.01}
    assert json.loads(ds.attrs["gd_config"])["eta"] == 0.3 and ds.attrs["status"] == "success"


def test_steps_zero_and_progress_bar(capsys, monkeypatch):
    traj = ed.gd(ed.problems.MinimalValley(1.0, 0.01), [0.1, 3.0], 0.3, 0)
    assert traj.theta.shape == (1, 2) and len(traj.loss) == 1 and len(traj.half_amp) == 0
    assert traj.eigs.shape == (1, 1) and traj.midpoint()[1].shape == (0, 2)
    # off a terminal (pytest captures stderr) progress=True writes status lines
    monkeypatch.setenv("EFFDYN_PROGRESS_EVERY", "0")
    ed.gd(ed.problems.MinimalValley(1.0, 0.01), [0.1, 3.0], 0.3, 50, progress=True)
    assert "50/50" in capsys.readouterr().err


def test_import_effdyn_does_not_import_heavy_backends():
    code = (
        "import sys, effdyn as ed; ed.gd; ed.spectrum; ed.GDTrajectory; "
        "import effdyn.demo; "
        "bad = [m for m in ('jax', 'xarray', 'matplotlib', 'diffrax') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
