"""Bad input at every public entry point (issue 8): a TypeError/ValueError that names the
argument in backticks, raised before anything is compiled or run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import effdyn as ed
from effdyn import cli

pytestmark = pytest.mark.xdist_group("bad_input")

P, M = ed.problems, ed.models
NAN = float("nan")
RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 3))
Y = np.sign(X[:, 0])
MV = P.MinimalValley()
FE = M.FreeEnergyFlow(MV, 0.3)


def _net():
    return P.TwoLayerNet(X, Y, width=4)


# (id, argument named in the message, call)
CASES = [
    # --- problems -----------------------------------------------------------------------
    ("Quadratic-nonsquare", "A", lambda: P.Quadratic(np.ones((2, 3)))),
    ("Quadratic-nan", "A", lambda: P.Quadratic([[NAN, 0], [0, 1]])),
    ("Quadratic-asymmetric", "A", lambda: P.Quadratic([[1.0, 2.0], [0.0, 1.0]])),
    ("Quadratic-b", "b", lambda: P.Quadratic(np.eye(2), [1, 2, 3])),
    ("MinimalValley-eps", "eps", lambda: P.MinimalValley(eps=0)),
    ("MinimalValley-zeta", "zeta", lambda: P.MinimalValley(zeta="1")),
    ("ScalarProduct-depth", "depth", lambda: P.ScalarProduct(depth=2.5)),
    ("ScalarProduct-target", "target", lambda: P.ScalarProduct(depth=3, target=NAN)),
    ("MinimalistTwoLayer-lam1", "lam1", lambda: P.MinimalistTwoLayer(lam1=-1.0)),
    ("DeepMatrixFactorization-target", "target", lambda: P.DeepMatrixFactorization(2, 3, np.eye(3))),
    ("DeepMatrixFactorization-init", "init", lambda: P.DeepMatrixFactorization(2, 3, np.eye(2), init="orthogonal")),
    ("DeepMatrixFactorization-depth", "depth", lambda: P.DeepMatrixFactorization(2, 0, np.eye(2))),
    ("TwoLayerNet-X", "X", lambda: P.TwoLayerNet(np.ones(8), Y, width=4)),
    ("TwoLayerNet-y", "y", lambda: P.TwoLayerNet(X, np.ones(7), width=4)),
    ("TwoLayerNet-X-nan", "X", lambda: P.TwoLayerNet(np.where(X > 1, NAN, X), Y, width=4)),
    ("TwoLayerNet-width", "width", lambda: P.TwoLayerNet(X, Y, width=0)),
    ("TwoLayerNet-activation", "activation", lambda: P.TwoLayerNet(X, Y, width=4, activation="relu6")),
    ("TwoLayerNet-scaling", "scaling", lambda: P.TwoLayerNet(X, Y, width=4, scaling="ntk-ish")),
    ("from_jax-loss_fn", "loss_fn", lambda: P.from_jax(3, dim=2)),
    ("from_jax-dim", "dim", lambda: P.from_jax(lambda t: (t**2).sum(), dim=0)),
    ("from_jax-nonscalar", "loss_fn", lambda: P.from_jax(lambda t: t**2, dim=2)),
    ("from_jax-float32", "loss_fn", lambda: P.from_jax(lambda t: (t**2).sum().astype("float32"), dim=2)),
    ("Problem.loss-theta", "theta", lambda: MV.loss([1.0])),
    ("Problem.hvp-v", "v", lambda: MV.hvp([1.0, 2.0], [1.0, NAN])),
    ("Problem.third-U", "U", lambda: MV.third([1.0, 2.0], np.ones((3, 1)))),
    ("Quadratic.init-seed", "seed", lambda: P.Quadratic(np.eye(2)).init(-1)),
    ("ScalarProduct.init-seed", "seed", lambda: P.ScalarProduct(3).init(1.5)),
    ("DeepMatrixFactorization.init-seed", "seed", lambda: P.DeepMatrixFactorization(2, 3, np.eye(2)).init("zero")),
    ("TwoLayerNet.init-seed", "seed", lambda: _net().init(-3)),
    # --- gd -------------------------------------------------------------------------------
    ("gd-problem", "problem", lambda: ed.gd("valley", [0.1, 3], 0.3, 10)),
    ("gd-theta0", "theta0", lambda: ed.gd(MV, [0.1], 0.3, 10)),
    ("gd-theta0-nan", "theta0", lambda: ed.gd(MV, [NAN, 3], 0.3, 10)),
    ("gd-eta", "eta", lambda: ed.gd(MV, [0.1, 3], -0.3, 10)),
    ("gd-steps", "steps", lambda: ed.gd(MV, [0.1, 3], 0.3, 10.5)),
    ("gd-variant", "variant", lambda: ed.gd(MV, [0.1, 3], 0.3, 10, variant="adam")),
    ("gd-variant-sqrt", 'variant="sqrt"', lambda: ed.gd(MV, [0.1, 3], 0.3, 10, variant="sqrt")),
    ("gd-n_eigs", "n_eigs", lambda: ed.gd(MV, [0.1, 3], 0.3, 10, n_eigs=3)),
    ("gd-throw", "throw", lambda: ed.gd(MV, [0.1, 3], 0.3, 10, throw="no")),
    ("gd-eig_tol", "eig_tol", lambda: ed.gd(MV, [0.1, 3], 0.3, 10, eig_tol=-1.0)),
    ("gd-seed", "seed", lambda: ed.gd(MV, [0.1, 3], 0.3, 10, seed=-2)),
    # --- solve ----------------------------------------------------------------------------
    ("solve-model", "model", lambda: ed.solve("free energy", [0.1, 3], 10)),
    ("solve-theta0", "theta0", lambda: ed.solve(FE, [0.1, 3, 4], 10)),
    ("solve-steps", "steps", lambda: ed.solve(FE, [0.1, 3], 0)),
    ("solve-steps-map", "steps", lambda: ed.solve(FE, [0.1, 3], 10.5, solver="map")),
    ("solve-solver", "solver", lambda: ed.solve(FE, [0.1, 3], 10, solver="scipy:Euler")),
    ("solve-solver-family", "solver", lambda: ed.solve(M.RodFlow(MV, 0.3), [0.1, 3], 10, solver="map")),
    ("solve-rtol", "rtol", lambda: ed.solve(FE, [0.1, 3], 10, rtol=-1e-8)),
    ("solve-save_every", "save_every", lambda: ed.solve(FE, [0.1, 3], 10, save_every=0)),
    ("solve-first_step", "first_step", lambda: ed.solve(FE, [0.1, 3], 10, first_step=20)),
    ("solve-max_step", "max_step", lambda: ed.solve(FE, [0.1, 3], 10, max_step=0)),
    ("solve-throw", "throw", lambda: ed.solve(FE, [0.1, 3], 10, throw=1)),
    ("solve-seed", "seed", lambda: ed.solve(FE, [0.1, 3], 10, seed=-1)),
    ("solve-state0", "state0", lambda: ed.solve(FE, None, 10, state0=[1.0, 2.0])),
    ("solve-option", "bogus", lambda: ed.solve(FE, [0.1, 3], 10, bogus=1)),
    ("solve-sigma0", "sigma0", lambda: ed.solve(FE, [0.1, 3], 10, initial={'sigma0': -np.eye(2)})),
    ("solve-checkpoint", "checkpoint", lambda: ed.solve(FE, [0.1, 3], 10, checkpoint=3.5)),
    # --- models -----------------------------------------------------------------------------
    ("FreeEnergyFlow-eta", "eta", lambda: M.FreeEnergyFlow(MV, 0.0)),
    ("FreeEnergyFlow-rank", "rank", lambda: M.FreeEnergyFlow(MV, 0.3, rank=3)),
    ("FreeEnergyFlow-sigma_form", "sigma_form", lambda: M.FreeEnergyFlow(MV, 0.3, sigma_form="exp")),
    ("FreeEnergyFlow-clip", "clip", lambda: M.FreeEnergyFlow(MV, 0.3, clip=2.0)),
    ("FreeEnergyFlow-dense_max", "dense_max", lambda: M.FreeEnergyFlow(MV, 0.3, dense_max=-2)),
    ("GradientFlow-problem", "problem", lambda: M.GradientFlow(np.eye(2), 0.3)),
    ("GradientFlow-eta", "eta", lambda: M.GradientFlow(MV, NAN)),
    ("CentralFlow-eta", "eta", lambda: M.CentralFlow(MV, "0.3")),
    ("CentralFlow-window", "window", lambda: M.CentralFlow(MV, 0.3, window=1.5)),
    ("SelfStabilization-mode", "mode", lambda: M.SelfStabilization(MV, 0.3, mode="damped")),
    ("SelfStabilization-x0", "x0", lambda: M.SelfStabilization(MV, 0.3, "reduced").initial_state([0.1, 3.0], x0=NAN)),
    ("SharpnessReductionFlow-variant", "variant", lambda: M.SharpnessReductionFlow(MV, 0.3, variant="gd")),
    ("SharpnessReductionFlow-loss_min", "problem.loss_min", lambda: M.SharpnessReductionFlow(MV, 0.3)),
    ("RodFlow-sigma", "sigma", lambda: M.RodFlow(MV, 0.3, sigma="full")),
    ("RodFlow-delta0", "delta0", lambda: M.RodFlow(MV, 0.3).initial_state([0.1, 3.0], delta0=[1.0])),
    ("EdgeFlow-rho_floor", "rho_floor", lambda: M.EdgeFlow(MV, 0.3, rho_floor=-1)),
    ("EdgeFlow-rho0", "rho0", lambda: M.EdgeFlow(MV, 0.3).initial_state([0.1, 3.0], rho0=-1)),
    ("MeanFieldKinetic-problem", "problem", lambda: M.MeanFieldKinetic(MV, 0.3)),
    ("MeanFieldKinetic-eta_mf", "eta_mf", lambda: M.MeanFieldKinetic(_net(), 0.0)),
    ("MeanFieldKinetic-form", "form", lambda: M.MeanFieldKinetic(_net(), 0.3, form="quadratic")),
    ("MeanFieldKinetic-u0", "u0", lambda: M.MeanFieldKinetic(_net(), 0.3).initial_state(_net().init(0), u0=np.ones(3))),
]


@pytest.mark.parametrize("name, arg, call", [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CASES])
def test_bad_input_names_the_argument(name, arg, call):
    try:
        call()
    except (TypeError, ValueError) as exc:
        message = str(exc)
    else:
        message = "<no error raised>"
    assert f"`{arg}`" in message, message


# --- compare ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def valley_pair():
    traj = ed.gd(MV, [0.1, 3.0], 0.3, 40)
    sol = ed.solve(M.FreeEnergyFlow(MV, 0.3), [0.1, 3.0], 40, solver="map")
    other = ed.solve(M.FreeEnergyFlow(MV, 0.2), [0.1, 3.0], 40, solver="map")
    return traj, sol, other


@pytest.mark.parametrize("arg, make", [
    ("gd_trajectory", lambda t, s, o: (s, t)),          # swapped
    ("solution", lambda t, s, o: (t, "solution")),
    ("solution", lambda t, s, o: (t, o)),               # another η
    ("window", lambda t, s, o: (t, s, "middle")),
    ("window", lambda t, s, o: (t, s, (30, 10))),
])
def test_compare_bad_input(valley_pair, arg, make):
    with pytest.raises((TypeError, ValueError), match=f"`{arg}`"):
        ed.compare(*make(*valley_pair))


# --- resume -----------------------------------------------------------------------------

def test_resume_bad_input(tmp_path):
    with pytest.raises(TypeError, match="`model`"):
        ed.solvers.resume(None, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="`path`"):
        ed.solvers.resume(FE, tmp_path / "x")
    with pytest.raises(TypeError, match="`path`"):
        ed.solvers.resume(FE, 12)


# --- the command line ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["validate", "--cases", "no-such-case"], "unknown case 'no-such-case'; valid cases: minimal-valley"),
    (["validate", "--steps", "-5", "--cases", "minimal-valley"], "`--steps`"),
    (["run", "/no/such/config.toml"], "not found"),
    (["plot", "/no/such/result.nc"], "`path`"),
])
def test_cli_usage_errors_exit_2_before_running(argv, needle, capsys, tmp_path):
    assert cli.main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "validate" else [])) == cli.EXIT_USAGE
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_unknown_command_exits_2(capsys):
    assert cli.main(["frobnicate"]) == cli.EXIT_USAGE
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


# --- nothing compiles before the check -----------------------------------------------------

def test_bad_input_raises_before_any_compilation():
    # In a fresh process no numba kernel is compiled (or loaded from its cache) yet, so
    # compile_count() stays 0 exactly when every check ran before the first kernel call.
    code = textwrap.dedent("""
        import numpy as np, effdyn as ed
        P, M = ed.problems, ed.models
        mv, dmf = P.MinimalValley(), P.DeepMatrixFactorization(2, 3, np.eye(2))
        X = np.ones((6, 2)); y = np.ones(6)
        calls = [lambda: ed.gd(mv, [0.1, np.nan], 0.3, 10), lambda: ed.gd(dmf, np.zeros(12), 0.0, 10),
                 lambda: ed.gd(mv, [0.1, 3.0], 0.3, 10, variant="adam"),
                 lambda: ed.solve(M.FreeEnergyFlow(mv, 0.3), [0.1, 3.0], -5),
                 lambda: ed.solve(M.FreeEnergyFlow(mv, 0.3), [0.1, 3.0], 5, solver="rk4"),
                 lambda: ed.solve(M.CentralFlow(mv, 0.3), [0.1], 5),
                 lambda: P.TwoLayerNet(X, y[:5], width=3), lambda: M.FreeEnergyFlow(dmf, 0.3, rank=13)]
        for call in calls:
            try:
                call()
            except (TypeError, ValueError):
                pass
            else:
                raise SystemExit("no error")
        print(ed.compile_count())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
