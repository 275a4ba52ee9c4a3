"""Checkpoint and resume (issue 8): a resumed run equals the uninterrupted one bit for bit."""

from __future__ import annotations

import dataclasses
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
from effdyn.problems.base import Problem
from effdyn.solvers import CHECKPOINT_SOLVERS, checkpoint_info, resume
from effdyn.solvers import _checkpoint as ckpt_format

pytestmark = pytest.mark.xdist_group("checkpoint")

#: When k reaches ``at``, the next drift/map evaluation sends SIGINT (a real Ctrl-C) or raises
#: KeyboardInterrupt ("how"); the trigger lives outside the models, which are values.
TRIGGER = {"at": None, "how": "signal"}


@pytest.fixture(autouse=True)
def _disarm():
    TRIGGER.update(at=None, how="signal")
    yield
    TRIGGER.update(at=None, how="signal")


def _maybe_interrupt(k):
    if TRIGGER["at"] is not None and k >= TRIGGER["at"]:
        TRIGGER["at"] = None
        if TRIGGER["how"] == "signal":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            raise KeyboardInterrupt


@dataclasses.dataclass(frozen=True)
class VanDerPol(AbstractModel):
    """A cheap, mildly stiff oscillator (μ = 5): order and method changes in BDF/LSODA,
    many rejected steps in the explicit methods, i.e. a non-trivial integrator state."""

    problem: Problem
    eta: float
    mu: float = 5.0

    name = "van der Pol"

    @property
    def state_size(self):
        return 2

    def make_run(self, run):
        pass

    def drift(self, k, y, run=None):
        _maybe_interrupt(k)
        return np.array([y[1], self.mu * (1.0 - y[0] ** 2) * y[1] - y[0]])

    def map_step(self, k, y, run=None):
        # a step of length 0.05 so that the map follows the oscillator too
        _maybe_interrupt(k)
        return y + 0.05 * np.array([y[1], self.mu * (1.0 - y[0] ** 2) * y[1] - y[0]])

    def record(self, k, y, run):
        return {}

    def observables(self, k, Y, records=None, run=None):
        z = np.zeros(len(k))
        return {"theta": Y, "loss": z, "time_avg_loss": z, "sharpness": z, "amplitude": z}


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
    TRIGGER["at"] = 0.55 * steps
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
    TRIGGER.update(at=0.7 * steps, how="raise")
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

    kw = dict(solver="scipy:LSODA", rtol=1e-8, atol=1e-10)
    ref = ed.solve(FreeEnergyFlow(prob, 0.3, **options), [0.1, 6.0], 500, **kw)
    assert ref.sharpness.max() > 2 / 0.3  # the run crosses the edge
    path = tmp_path / "fe.ckpt"
    with pytest.raises(IntegrationError, match=r"checkpoint at k = 3\d\d"):
        ed.solve(FreeEnergyFlow(prob, 0.3, **options), [0.1, 6.0], 500, checkpoint=path, checkpoint_every=100,
                 callback=_sigint_at(310.0), **kw)
    sol = resume(FreeEnergyFlow(prob, 0.3, **options), path)
    _same(sol, ref)
    for name in ref.records:  # the records of the saved states too
        np.testing.assert_array_equal(sol.records[name], ref.records[name])
    assert sol.stats.eigensolves == ref.stats.eigensolves and sol.stats.thirds == ref.stats.thirds


def _sigint_at(k_stop):
    """A solve callback that presses Ctrl-C once k reaches ``k_stop``."""
    fired = []

    def callback(k, y):
        if k >= k_stop and not fired:
            fired.append(k)
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_lanczos_warm_start_is_part_of_the_checkpoint(tmp_path):
    # P = 30 > dense_max = 8: eigenpairs from the run's warm-started tracker, so the run
    # carries state between steps (a different start changes the last bits); resuming must
    # restore it for exactness.
    rng = np.random.default_rng(5)
    B = rng.normal(size=(30, 30))
    A = B @ B.T / 30
    prob = ed.problems.Quadratic(A)
    theta0 = rng.normal(size=30)
    eta = 1.9 / np.linalg.eigvalsh(A)[-1]  # top mode oscillates (ηλ > 1) and is stable

    @dataclasses.dataclass(frozen=True)
    class Crash(FreeEnergyFlow):
        def map_step(self, k, y, run=None):
            _maybe_interrupt(k)
            return super().map_step(k, y, run)

    def model():
        return Crash(prob, eta, rank=1, dense_max=8)

    ref = ed.solve(model(), theta0, 120, solver="map")
    path = tmp_path / "lz.ckpt"
    TRIGGER.update(at=90, how="raise")
    with pytest.raises(IntegrationError):
        ed.solve(model(), theta0, 120, solver="map", checkpoint=path, checkpoint_every=40)
    header, tree = ckpt_format.read_tree(path)
    past = tree["run"]["tracker"]["state"]["_past"]
    assert tree["k"] == 80 and len(past) == 3 and past[0].shape == (30, model().n_track + 1)  # plus a guard
    _same(resume(model(), path), ref)
    # without the warm start the continuation differs (so the test above can fail)
    tree["run"]["tracker"]["state"]["_past"] = []
    ckpt_format.write_tree(path, header, *ckpt_format.encode(tree))
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
    other.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not an effdyn checkpoint"):
        resume(FreeEnergyFlow(prob, 0.3), other)
    # another option than at the checkpoint (an option that changes the numbers) is refused
    with pytest.raises(ValueError, match=r"differs from the checkpoint's model in \['storage'\]"):
        resume(FreeEnergyFlow(prob, 0.3, storage="factor"), path)


class _Evil:
    def __reduce__(self):
        marker = os.environ["EFFDYN_TEST_MARKER"]
        return (os.system, (f"touch {marker}",))


def test_loading_a_crafted_checkpoint_executes_nothing(tmp_path, monkeypatch):
    """Checkpoints are data only: a pickle inside (or instead of) one never runs."""
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EFFDYN_TEST_MARKER", str(marker))
    prob = ed.problems.MinimalValley()
    good = tmp_path / "good.ckpt"
    ed.solve(FreeEnergyFlow(prob, 0.3), [0.1, 3.0], 20, solver="map", checkpoint=good)
    # 1. the old format: a pickle that would run a command when unpickled
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"format": "effdyn-checkpoint", "version": 1, "x": _Evil()}))
    with pytest.raises(ValueError, match="is not an effdyn checkpoint"):
        resume(FreeEnergyFlow(prob, 0.3), evil)
    # 2. a valid checkpoint with an object array (a pickle) slipped into the archive
    with np.load(good, allow_pickle=False) as npz:
        entries = {name: npz[name] for name in npz.files}
    entries["a0"] = np.array([_Evil()], dtype=object)
    with open(evil, "wb") as fh:
        np.savez(fh, **entries)
    with pytest.raises(ValueError, match="is not an effdyn checkpoint"):
        resume(FreeEnergyFlow(prob, 0.3), evil)
    # 3. a header naming a class to rebuild that effdyn does not rebuild
    header, tree = ckpt_format.read_tree(good)
    skeleton, arrays = ckpt_format.encode(tree)
    skeleton["__dict__"]["x"] = {"__object__": "os.system", "attrs": {}}
    ckpt_format.write_tree(evil, header, skeleton, arrays)
    with pytest.raises(ValueError, match="does not rebuild"):
        resume(FreeEnergyFlow(prob, 0.3), evil)
    # 4. another format version is refused before anything else is decoded
    ckpt_format.write_tree(evil, {**header, "version": 1}, *ckpt_format.encode(tree))
    with pytest.raises(ValueError, match="format version 1"):
        resume(FreeEnergyFlow(prob, 0.3), evil)
    assert not marker.exists()
    assert resume(FreeEnergyFlow(prob, 0.3), good).success  # the genuine file still loads


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


def test_resume_restores_quantities_fixed_at_the_start(tmp_path, interactive_sigint):
    # the reduced self-stabilisation model takes α and β from θ0 at the start: they live in
    # the run state, which the checkpoint carries
    prob = ed.problems.MinimalValley(zeta=0.0, eps=0.01)
    kw = dict(solver="scipy:DOP853", rtol=1e-10, atol=1e-12)
    model = ed.models.SelfStabilization(prob, 0.3, "reduced")
    ref = ed.solve(model, [0.1, 6.0], 300, **kw)
    assert model.alpha is None and ref.run.alpha is not None  # the model itself is untouched
    path = tmp_path / "ss.ckpt"
    with pytest.raises(IntegrationError, match="interrupted"):
        ed.solve(model, [0.1, 6.0], 300, checkpoint=path, checkpoint_every=50, callback=_sigint_at(150), **kw)
    sol = resume(ed.models.SelfStabilization(prob, 0.3, "reduced"), path)
    _same(sol, ref)
    assert (sol.run.alpha, sol.run.beta) == (ref.run.alpha, ref.run.beta)
    np.testing.assert_array_equal(sol.energy, ref.energy)
    # the finished run's checkpoint gives the solution back, observables included
    done = resume(ed.models.SelfStabilization(prob, 0.3, "reduced"), path)
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
    # the run state each model keeps (eigen-trackers, SDCP warm starts, the previous
    # eigenvector for sign continuity, quantities fixed at the start ...) travels in the
    # checkpoint through its own to/from-dict
    make, theta0, solver = _all_models()[name]
    ref = ed.solve(make(), theta0, 200, solver=solver)
    path = tmp_path / "run.ckpt"
    with pytest.raises(IntegrationError, match="interrupted"):
        ed.solve(make(), theta0, 200, solver=solver, checkpoint=path, checkpoint_every=50, callback=_sigint_at(120))
    assert 120 <= checkpoint_info(path)["k"] < 200
    sol = resume(make(), path)
    _same(sol, ref)
    for key in ref.records:
        np.testing.assert_array_equal(sol.records[key], ref.records[key])


def test_free_energy_warm_jax_drift_resumes_bit_identical(tmp_path, interactive_sigint):
    # a JAX problem above dense_max: RK45 drives the compiled drift whose eigen-tracker state
    # lives in run.jax_state; a checkpoint keeps it, so the resumed run is the same run
    import jax.numpy as jnp

    from effdyn.problems import from_jax

    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((60, 6)), np.eye(2)[rng.integers(0, 2, 60)]
    params = {"W1": 0.8 * rng.standard_normal((6, 12)), "b1": np.zeros(12),
              "W2": 0.8 * rng.standard_normal((12, 2)), "b2": np.zeros(2)}

    def mse(p, batch):
        x, y = batch
        return 0.5 * jnp.mean(jnp.sum((jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"] - y) ** 2, axis=1))

    prob = from_jax(mse, params=params, data=(X, Y), loss_min=0.0)    # P = 110
    make = lambda: FreeEnergyFlow(prob, 0.6, n_track=6, dense_max=0)   # noqa: E731
    theta0 = prob.init()
    kw = dict(solver="scipy:RK45", save_every=5)
    ref = ed.solve(make(), theta0, 60, **kw)
    assert make()._warm_jax_drift_applies() and ref.run.jax_state is not None
    path = tmp_path / "warm.ckpt"
    with pytest.raises(IntegrationError, match="checkpoint at k = "):
        ed.solve(make(), theta0, 60, checkpoint=path, checkpoint_every=20, callback=_sigint_at(35.0), **kw)
    sol = resume(make(), path)
    _same(sol, ref)
    for name in ref.records:
        np.testing.assert_array_equal(sol.records[name], ref.records[name])
    assert sol.stats.hvps == ref.stats.hvps and sol.stats.nfev == ref.stats.nfev
