"""GD on long runs: checkpoints that resume bit for bit, a refusal instead of running out of
memory, and the problem's own exceptions ending the run with the partial trajectory."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

import effdyn as ed
from effdyn import IntegrationError
from effdyn.outcomes import Cause, Status
from effdyn.problems.base import Problem
from effdyn.spectrum import EigenTracker

pytestmark = pytest.mark.xdist_group("gd")

#: Arms a Ctrl-C: at the ``at``-th eigen-solve of a run, SIGINT (a real Ctrl-C) is sent, or
#: (``how="raise"``) the ``at``-th gradient raises KeyboardInterrupt inside the Python loop.
TRIGGER = {"at": None, "how": "signal", "n": 0}


@pytest.fixture(autouse=True)
def _disarm():
    TRIGGER.update(at=None, how="signal", n=0)
    yield
    TRIGGER.update(at=None, how="signal", n=0)


@pytest.fixture
def interactive_sigint():
    """Ctrl-C handled by Python as in an interactive session (test runners may differ)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def sigint_at_eigensolve(monkeypatch):
    original = EigenTracker._update

    def update(self, theta):
        if TRIGGER["at"] is not None and TRIGGER["how"] == "signal":
            TRIGGER["n"] += 1
            if TRIGGER["n"] == TRIGGER["at"]:
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, theta)

    monkeypatch.setattr(EigenTracker, "_update", update)


def _dmf():
    # P = 3·5² = 75 > 64: the eigenpairs come from the warm-started Krylov tracker, whose
    # history, probes and counters must travel with the checkpoint
    rng = np.random.default_rng(0)
    p = ed.problems.DeepMatrixFactorization(5, 3, rng.standard_normal((5, 5)), init="small", init_scale=0.4)
    return p, p.init(1)


RUN = dict(eta=0.05, steps=48, n_eigs=2)
FIELDS = ("k", "loss", "grad_norm", "theta", "theta_k", "eig_k", "eigs", "top_eigvec", "half_amp",
          "half_amp_subspace", "theta0")


def _same(a, b):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert (a.n_hvp, a.eig_checks, a.eig_corrections) == (b.n_hvp, b.eig_checks, b.eig_corrections)
    assert a.config == b.config and a.status == b.status == "success"


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_resume_after_ctrl_c_is_bit_identical(compiled, tmp_path, interactive_sigint, sigint_at_eigensolve):
    p, theta0 = _dmf()
    ref = ed.gd(p, theta0, compiled=compiled, **RUN)
    assert ref.n_hvp > 0  # the Krylov tracker, not the dense path

    path = tmp_path / "gd.ckpt"
    TRIGGER["at"] = 21
    with pytest.raises(IntegrationError) as info:
        ed.gd(p, theta0, compiled=compiled, checkpoint=path, checkpoint_every=9, **RUN)
    err = info.value
    # Ctrl-C during the eigen-solve of step 20: the step finishes, the run checkpoints at
    # step 21 and says where
    assert err.cause == Cause.INTERRUPTED and err.partial.status == Status.INTERRUPTED and err.step == 21
    assert f"Checkpoint at step 21 written to {str(path)!r}" in str(err) and "effdyn.resume_gd(problem" in str(err)
    np.testing.assert_array_equal(err.partial.loss, ref.loss[:21])

    out = ed.resume_gd(p, path)
    _same(out, ref)
    # the finished run leaves a complete checkpoint that gives the result back without work
    again = ed.resume_gd(p, path, checkpoint=False)
    _same(again, ref)


def test_interrupt_inside_a_stretch_falls_back_to_the_last_checkpoint(tmp_path):
    class Raising(ed.problems.Quadratic):
        def _grad(self, theta):
            if TRIGGER["how"] == "raise" and TRIGGER["at"] is not None:
                TRIGGER["n"] += 1
                if TRIGGER["n"] == TRIGGER["at"]:
                    raise KeyboardInterrupt
            return super()._grad(theta)

    p = Raising(np.diag([3.0, 1.0, 0.2]))  # η = 0.6: ηλ = 1.8, the top direction oscillates
    p.identity()  # computed (two gradients) before the trigger counts the run's gradients
    kw = dict(eta=0.6, steps=40, eig_every=4, n_eigs=2, theta_every=3, compiled=False)
    ref = ed.gd(p, [1.0, 1.0, 1.0], **kw)
    path = tmp_path / "q.ckpt"
    TRIGGER.update(at=30, how="raise")
    with pytest.raises(IntegrationError) as info:
        ed.gd(p, [1.0, 1.0, 1.0], checkpoint=path, checkpoint_every=7, **kw)
    # the 30th gradient is step 29, in the stretch 28 → 32: the record and the last
    # checkpoint end at step 28
    assert info.value.cause == "interrupted" and "Checkpoint at step 28" in str(info.value)
    assert len(info.value.partial.loss) == 28
    TRIGGER.update(at=None)
    out = ed.resume_gd(p, path, checkpoint=False)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(out.midpoint()[1], ref.midpoint()[1])


def test_checkpointing_does_not_change_the_run(tmp_path):
    # stretches end at checkpoint steps that are not multiples of eig_every: same bits
    p = ed.problems.MinimalValley()
    kw = dict(eta=0.3, steps=250, eig_every=4, theta_every=3)
    ref = ed.gd(p, [0.1, 3.0], **kw)
    out = ed.gd(p, [0.1, 3.0], checkpoint=tmp_path / "v.ckpt", checkpoint_every=7, **kw)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=name)


def test_resume_gd_refuses_other_problems_and_files(tmp_path):
    p, theta0 = _dmf()
    path = tmp_path / "gd.ckpt"
    ed.gd(p, theta0, eta=0.05, steps=5, checkpoint=path)
    other = ed.problems.DeepMatrixFactorization(5, 3, 2.0 * p.target, init="small", init_scale=0.4)
    with pytest.raises(ValueError, match=r"`problem` is not the problem of the checkpoint .*target"):
        ed.resume_gd(other, path)
    with pytest.raises(TypeError, match="`problem` must be an effdyn Problem"):
        ed.resume_gd("dmf", path)
    # a solve checkpoint is another format, named as such
    model = ed.models.GradientFlow(p, 0.05)
    solve_ckpt = tmp_path / "solve.ckpt"
    ed.solve(model, theta0, 4, solver="map", checkpoint=solve_ckpt)
    with pytest.raises(ValueError, match=r"solve.ckpt' is not an effdyn GD checkpoint"):
        ed.resume_gd(p, solve_ckpt)
    with pytest.raises(FileNotFoundError, match="`path`"):
        ed.resume_gd(p, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="`checkpoint_every` needs `checkpoint=PATH`"):
        ed.gd(p, theta0, eta=0.05, steps=5, checkpoint_every=2)
    with pytest.raises(ValueError, match="`checkpoint`: the folder"):
        ed.gd(p, theta0, eta=0.05, steps=5, checkpoint=tmp_path / "no" / "such.ckpt")


def test_gd_checkpoint_is_data_only(tmp_path):
    p = ed.problems.MinimalValley()
    path = tmp_path / "v.ckpt"
    ed.gd(p, [0.1, 3.0], 0.3, 20, checkpoint=path)
    with np.load(path, allow_pickle=False) as npz:  # no pickle needed to read it
        header = json.loads(str(npz["header"][()]))
    assert header["format"] == "effdyn-gd-checkpoint" and header["version"] == 1
    assert header["problem"]["class"] == "MinimalValley" and header["args"]["theta0"] == [0.1, 3.0]


# --- memory ---------------------------------------------------------------------------------

def test_runs_whose_records_do_not_fit_are_refused_up_front(monkeypatch):
    import effdyn.reference as ref

    monkeypatch.setattr(ref, "_physical_memory", lambda: 8 * 2**30)
    p = ed.problems.DeepMatrixFactorization(4, 3, np.eye(4))  # P = 48
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"need about .* GiB .*`theta_every=\d+`.*`record_eigvecs=False`"):
        ed.gd(p, p.init(0), 0.1, 5e7)
    with pytest.raises(ValueError, match=r"shorten `steps`"):
        ed.gd(p, p.init(0), 0.1, 5e8, eig_every=None, theta_every=10**9)
    assert time.perf_counter() - t0 < 5.0  # refused before anything is allocated or run
    # the option the message names avoids it
    ed.gd(p, p.init(0), 0.1, 10, theta_every=5, record_eigvecs=False)


# --- user code --------------------------------------------------------------------------------

class RaisingQuadratic(Problem):
    """E = ½‖θ‖² whose gradient (or HVP) raises once θ_0 < 0.3 (GD with η = 0.5 halves θ)."""

    name = "raising"

    def __init__(self, where="grad"):
        self.where = where

    @property
    def dim(self):
        return 2

    def _loss(self, theta):
        return 0.5 * float(theta @ theta)

    def _grad(self, theta):
        if self.where == "grad" and 0 < theta[0] < 0.3:
            raise RuntimeError("boom in the gradient")
        return theta.copy()

    def _hvp(self, theta, v):
        if self.where == "hvp" and 0 < theta[0] < 0.3:
            raise RuntimeError("boom in the hvp")
        return v.copy()


@pytest.mark.parametrize("where, eig_every", [("grad", 1), ("grad", None), ("hvp", 1)])
def test_user_code_raising_mid_run_ends_with_the_partial_trajectory(where, eig_every):
    p = RaisingQuadratic(where)
    with pytest.raises(IntegrationError) as info:
        ed.gd(p, [1.0, 1.0], 0.5, 10, eig_every=eig_every)  # θ_0 = 0.5^k: below 0.3 at step 2
    err = info.value
    assert err.cause == Cause.USER_CODE == "user code raised" and err.step == 2
    assert isinstance(err.__cause__, RuntimeError) and f"boom in the {where}" in str(err)
    assert "step 2" in str(err) and err.partial.status == Status.FAILED
    assert len(err.partial.loss) == 2 and np.all(np.isfinite(err.partial.loss))
    traj = ed.gd(p, [1.0, 1.0], 0.5, 10, eig_every=eig_every, throw=False)
    assert traj.status == "failed" and traj.cause == "user code raised" and traj.diverged_at == 2
    np.testing.assert_array_equal(traj.theta, [[1.0, 1.0], [0.5, 0.5]])
