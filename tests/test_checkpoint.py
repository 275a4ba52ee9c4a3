"""Checkpoint and resume (issue 8): a resumed run equals the uninterrupted one bit for bit."""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import pytest

import effdyn as ed
from effdyn.errors import IntegrationError
from effdyn.io import atomic_write
from effdyn.models import FreeEnergyFlow
from effdyn.models.base import AbstractModel
from effdyn.solvers import CHECKPOINT_SOLVERS, checkpoint_info, resume

pytestmark = pytest.mark.xdist_group("checkpoint")


class VanDerPol(AbstractModel):
    """A cheap, mildly stiff oscillator (μ = 5): order and method changes in BDF/LSODA,
    many rejected steps in the explicit methods, i.e. a non-trivial integrator state.

    ``interrupt_at``: send SIGINT (a real Ctrl-C) or raise KeyboardInterrupt from inside
    the drift once k reaches it."""

    name = "van der Pol"

    def __init__(self, problem, eta, mu=5.0):
        super().__init__(problem, eta)
        self.mu = mu
        self.interrupt_at = None
        self.interrupt_how = "signal"

    @property
    def state_size(self):
        return 2

    def initial_state(self, theta0):
        return self._theta0(theta0)

    def _maybe_interrupt(self, k):
        if self.interrupt_at is not None and k >= self.interrupt_at:
            self.interrupt_at = None
            if self.interrupt_how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt

    def drift(self, k, y):
        self._maybe_interrupt(k)
        return np.array([y[1], self.mu * (1.0 - y[0] ** 2) * y[1] - y[0]])

    def map_step(self, k, y):
        # a step of length 0.05 so that the map follows the oscillator too
        self._maybe_interrupt(k)
        return y + 0.05 * np.array([y[1], self.mu * (1.0 - y[0] ** 2) * y[1] - y[0]])

    def observables(self, k, Y):
        z = np.zeros(len(k))
        return {"theta": Y, "loss": z, "time_avg_loss": z, "sharpness": z, "amplitude": z}

    def config(self):
        return {**super().config(), "mu": self.mu}


@pytest.fixture
def interactive_sigint(monkeypatch):
    """Ctrl-C handled by Python as in an interactive session (test runners may differ)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


PROBLEM_2D = ed.problems.Quadratic(np.eye(2))
T_VDP = 20


def _same(a, b):
    assert np.array_equal(a.k, b.k)
    assert a.y.shape == b.y.shape and np.array_equal(a.y, b.y)


@pytest.mark.parametrize("solver", CHECKPOINT_SOLVERS)
def test_resume_after_ctrl_c_is_bit_identical(solver, tmp_path, interactive_sigint):
    steps = 600 if solver == "map" else T_VDP
    kw = dict(solver=solver, save_every=1 if solver == "map" else 0.25, rtol=1e-7, atol=1e-9)
    ref = ed.solve(VanDerPol(PROBLEM_2D, 0.1), [2.0, 0.0], steps, **kw)
    assert ref.success

    model = VanDerPol(PROBLEM_2D, 0.1)
    model.interrupt_at = 0.55 * steps
    path = tmp_path / "run.ckpt"
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [2.0, 0.0], steps, checkpoint=path, checkpoint_every=steps // 7, **kw)
    err = info.value
    assert err.cause == "interrupted" and err.partial.status == "interrupted"
    assert str(path) in str(err) and "resume" in str(err)
    # the first Ctrl-C lets the step finish and checkpoints exactly there
    meta = checkpoint_info(path)
    assert not meta["complete"] and meta["solver"] == solver
    assert 0.55 * steps <= meta["k"] < steps and meta["k"] == err.time
    np.testing.assert_array_equal(err.partial.k, ref.k[: len(err.partial.k)])
    np.testing.assert_array_equal(err.partial.y, ref.y[: len(err.partial.k)])

    sol = resume(VanDerPol(PROBLEM_2D, 0.1), path)
    _same(sol, ref)
    assert sol.success and sol.stats.nfev == ref.stats.nfev and sol.stats.n_accepted == ref.stats.n_accepted
    # the run ends with a complete checkpoint, which gives the result back without work
    assert checkpoint_info(path)["complete"]
    again = resume(VanDerPol(PROBLEM_2D, 0.1), path, checkpoint=False)
    _same(again, ref)
    assert again.stats.nfev == ref.stats.nfev


@pytest.mark.parametrize("solver", ["scipy:BDF", "scipy:LSODA", "map"])
def test_interrupt_inside_a_step_falls_back_to_last_checkpoint(solver, tmp_path):
    # KeyboardInterrupt raised from the drift (e.g. a second Ctrl-C): the integrator may be
    # half-updated (BDF rescales its difference array in place before evaluating the drift),
    # so the last captured checkpoint is kept, and resuming from it is still exact.
    steps = 600 if solver == "map" else T_VDP
    kw = dict(solver=solver, rtol=1e-7, atol=1e-9)
    ref = ed.solve(VanDerPol(PROBLEM_2D, 0.1), [2.0, 0.0], steps, **kw)
    model = VanDerPol(PROBLEM_2D, 0.1)
    model.interrupt_at, model.interrupt_how = 0.7 * steps, "raise"
    path = tmp_path / "run.ckpt"
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, [2.0, 0.0], steps, checkpoint=path, checkpoint_every=steps / 4, **kw)
    assert info.value.cause == "interrupted"
    k_ckpt = checkpoint_info(path)["k"]
    assert steps / 2 <= k_ckpt <= 0.7 * steps and f"k = {k_ckpt:g}" in str(info.value)
    # resuming to another file leaves the original checkpoint as it was
    before = path.read_bytes()
    _same(resume(VanDerPol(PROBLEM_2D, 0.1), path, checkpoint=tmp_path / "next.ckpt"), ref)
    assert path.read_bytes() == before and checkpoint_info(tmp_path / "next.ckpt")["complete"]


@pytest.mark.parametrize("options", [{}, {"storage": "log-factor"}, {"storage": "log-factor", "closure": "chord"}])
def test_free_energy_flow_lsoda_resume_on_the_valley(options, tmp_path, interactive_sigint):
    # the real model across the EoS onset (start close to the edge, 2/η = 6.67)
    prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)

    class Interrupted(FreeEnergyFlow):
        at = None

        def drift(self, k, y):
            if self.at is not None and k >= self.at:
                self.at = None
                os.kill(os.getpid(), signal.SIGINT)
            return super().drift(k, y)

    kw = dict(solver="scipy:LSODA", rtol=1e-8, atol=1e-10)
    ref = ed.solve(Interrupted(prob, 0.3, **options), [0.1, 6.0], 500, **kw)
    assert ref.sharpness.max() > 2 / 0.3  # the run crosses the edge
    model = Interrupted(prob, 0.3, **options)
    model.at = 310.0
    path = tmp_path / "fe.ckpt"
    with pytest.raises(IntegrationError, match=r"checkpoint at k = 3\d\d"):
        ed.solve(model, [0.1, 6.0], 500, checkpoint=path, checkpoint_every=100, **kw)
    _same(resume(Interrupted(prob, 0.3, **options), path), ref)


def test_lanczos_warm_start_is_part_of_the_checkpoint(tmp_path):
    # P = 30 > dense_max = 8: eigenpairs by Lanczos started from the last top eigenvector,
    # so the model carries state between steps (a different start changes the last bits);
    # resuming must restore it for exactness.
    rng = np.random.default_rng(5)
    B = rng.normal(size=(30, 30))
    A = B @ B.T / 30
    prob = ed.problems.Quadratic(A)
    theta0 = rng.normal(size=30)
    eta = 1.9 / np.linalg.eigvalsh(A)[-1]  # top mode oscillates (ηλ > 1) and is stable

    class Crash(FreeEnergyFlow):
        crash_at = None

        def map_step(self, k, y):
            if k == self.crash_at:
                raise KeyboardInterrupt
            return super().map_step(k, y)

    def model():
        return Crash(prob, eta, rank=1, dense_max=8)

    ref = ed.solve(model(), theta0, 120, solver="map")
    path = tmp_path / "lz.ckpt"
    crashing = model()
    crashing.crash_at = 90
    with pytest.raises(IntegrationError):
        ed.solve(crashing, theta0, 120, solver="map", checkpoint=path, checkpoint_every=40)
    state = pickle.loads(path.read_bytes())
    assert state["k"] == 80 and state["model_state"]["_warm"]["value"].shape == (30, 2)
    _same(resume(model(), path), ref)
    # without the warm start the continuation differs (so the test above can fail)
    state["model_state"] = {}
    path.write_bytes(pickle.dumps(state))
    cold = resume(model(), path)
    assert not np.array_equal(cold.y, ref.y)
    np.testing.assert_allclose(cold.y, ref.y, rtol=0, atol=1e-12)
    # a model of another class is refused
    with pytest.raises(ValueError, match="`model` is a FreeEnergyFlow but the checkpoint was written by a Crash"):
        resume(FreeEnergyFlow(prob, eta, rank=1, dense_max=8), path)


def test_checkpoint_argument_errors(tmp_path):
    prob = ed.problems.MinimalValley()
    m = FreeEnergyFlow(prob, 0.3)
    with pytest.raises(ValueError, match=r"`checkpoint` is not supported for solver='diffrax:Tsit5'.*scipy:LSODA"):
        ed.solve(m, [0.1, 3.0], 10, solver="diffrax:Tsit5", checkpoint=tmp_path / "x")
    with pytest.raises(ValueError, match="`checkpoint_every` needs `checkpoint=PATH`"):
        ed.solve(m, [0.1, 3.0], 10, checkpoint_every=5)
    with pytest.raises(ValueError, match="`checkpoint` must name a file"):
        ed.solve(m, [0.1, 3.0], 10, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="`checkpoint` must be a file path"):
        ed.solve(m, [0.1, 3.0], 10, checkpoint=3)
    with pytest.raises(ValueError, match="`checkpoint_every` must be a finite number > 0"):
        ed.solve(m, [0.1, 3.0], 10, checkpoint=tmp_path / "x", checkpoint_every=-1)
    with pytest.raises(ValueError, match="`checkpoint_every` must be a whole number"):
        ed.solve(m, [0.1, 3.0], 10, solver="map", checkpoint=tmp_path / "x", checkpoint_every=2.5)
    assert not (tmp_path / "x").exists()  # nothing ran


def test_resume_refuses_other_model_and_other_files(tmp_path):
    prob = ed.problems.MinimalValley()
    path = tmp_path / "a.ckpt"
    ed.solve(FreeEnergyFlow(prob, 0.3), [0.1, 3.0], 20, solver="map", checkpoint=path)
    with pytest.raises(ValueError, match=r"differs from the checkpoint's model in \['eta', 'threshold'\]"):
        resume(FreeEnergyFlow(prob, 0.31), path)
    with pytest.raises(TypeError, match="`model` must be an effdyn model"):
        resume("model", path)
    with pytest.raises(FileNotFoundError, match="`path`"):
        resume(FreeEnergyFlow(prob, 0.3), tmp_path / "missing.ckpt")
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="is not an effdyn checkpoint"):
        resume(FreeEnergyFlow(prob, 0.3), other)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    other.write_bytes(pickle.dumps({"format": "effdyn-checkpoint", "version": 1, "x": Evil()}))
    with pytest.raises(ValueError, match="does not load"):
        resume(FreeEnergyFlow(prob, 0.3), other)


def test_checkpoint_files_are_written_atomically(tmp_path):
    target = tmp_path / "c.bin"
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"first"))

    def broken(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["c.bin"]  # no temporary file left behind
    # a run leaves exactly its checkpoint file
    ed.solve(FreeEnergyFlow(ed.problems.MinimalValley(), 0.3), [0.1, 3.0], 30, solver="scipy:LSODA",
             checkpoint=tmp_path / "run.ckpt", checkpoint_every=5)
    assert sorted(os.listdir(tmp_path)) == ["c.bin", "run.ckpt"]


def test_resume_restores_parameters_filled_in_by_initial_state(tmp_path, interactive_sigint):
    # the reduced self-stabilisation model takes α and β from θ0 in initial_state: the
    # checkpoint compares the model as built and carries α, β along
    prob = ed.problems.MinimalValley(zeta=0.0, eps=0.01)

    class Interrupted(ed.models.SelfStabilization):
        def drift(self, k, y):
            if k > 150 and getattr(self, "armed", False):
                self.armed = False
                os.kill(os.getpid(), signal.SIGINT)
            return super().drift(k, y)

    kw = dict(solver="scipy:DOP853", rtol=1e-10, atol=1e-12)
    ref = ed.solve(Interrupted(prob, 0.3, "reduced"), [0.1, 6.0], 300, **kw)
    model = Interrupted(prob, 0.3, "reduced")
    model.armed = True
    path = tmp_path / "ss.ckpt"
    with pytest.raises(IntegrationError, match="interrupted"):
        ed.solve(model, [0.1, 6.0], 300, checkpoint=path, checkpoint_every=50, **kw)
    fresh = Interrupted(prob, 0.3, "reduced")
    assert fresh.alpha is None
    sol = resume(fresh, path)
    _same(sol, ref)
    assert (fresh.alpha, fresh.beta) == (model.alpha, model.beta)
    np.testing.assert_array_equal(sol.energy, ref.energy)
    # the finished run's checkpoint gives the solution back, observables included
    done = resume(Interrupted(prob, 0.3, "reduced"), path)
    np.testing.assert_array_equal(done.energy, ref.energy)


def _all_models():
    from effdyn.problems.two_layer import teacher_student

    valley = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
    dmf = ed.problems.DeepMatrixFactorization(2, 3, ed.problems.DeepMatrixFactorization.spectral_target(5.0))
    net = teacher_student(20)
    M = ed.models
    return {
        "GradientFlow": (lambda: M.GradientFlow(valley, 0.3), [0.1, 6.0], "map"),
        "CentralFlow": (lambda: M.CentralFlow(valley, 0.3), [0.1, 6.0], "map"),
        "SelfStabilization": (lambda: M.SelfStabilization(valley, 0.3), [0.1, 6.0], "map"),
        "SharpnessReductionFlow": (lambda: M.SharpnessReductionFlow(dmf, 0.077), dmf.init(0), "map"),
        "RodFlow": (lambda: M.RodFlow(valley, 0.3), [0.1, 6.0], "scipy:LSODA"),
        "EdgeFlow": (lambda: M.EdgeFlow(valley, 0.3), [0.1, 6.0], "map"),
        "MeanFieldKinetic": (lambda: M.MeanFieldKinetic(net, 0.5, form="log"), net.init(0), "map"),
    }


@pytest.mark.parametrize("name", ["GradientFlow", "CentralFlow", "SelfStabilization", "SharpnessReductionFlow",
                                  "RodFlow", "EdgeFlow", "MeanFieldKinetic"])
def test_every_model_resumes_exactly(name, tmp_path, interactive_sigint):
    # the run-time state each model keeps (eigen-trackers, SDCP warm starts, the previous
    # eigenvector for sign continuity, Krylov bases ...) is found and restored generically
    make, theta0, solver = _all_models()[name]
    ref = ed.solve(make(), theta0, 200, solver=solver)
    model = make()
    hook = "map_step" if solver == "map" else "drift"
    original = getattr(model, hook)
    fired = []

    def interrupting(k, y):
        if k >= 120 and not fired:
            fired.append(k)
            os.kill(os.getpid(), signal.SIGINT)
        return original(k, y)

    setattr(model, hook, interrupting)
    path = tmp_path / "run.ckpt"
    with pytest.raises(IntegrationError, match="interrupted"):
        ed.solve(model, theta0, 200, solver=solver, checkpoint=path, checkpoint_every=50)
    assert 120 <= checkpoint_info(path)["k"] < 200
    _same(resume(make(), path), ref)
