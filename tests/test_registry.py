"""A model, a problem and a case defined outside effdyn, registered by a plugin module, run
through `effdyn run` and `effdyn validate --cases` without editing effdyn."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from effdyn.cli import main
from effdyn.io import load_dataset

PLUGIN = '''
"""An outside plugin: a damped gradient flow, a problem builder and a case."""
from dataclasses import dataclass

import numpy as np

import effdyn
from effdyn.models import AbstractModel
from effdyn.models._shared import losses
from effdyn.problems.base import Problem


@dataclass(frozen=True)
class DampedFlow(AbstractModel):
    """dθ/dk = −c·η∇E: gradient flow slowed by a factor c."""

    problem: Problem
    eta: float
    c: float = 0.5

    name = "damped flow"

    def _check(self):
        if not 0 < self.c <= 1:
            raise ValueError(f"`c` must lie in (0, 1]; got {self.c}.")

    @property
    def state_size(self):
        return self.dim

    def drift(self, k, y, run=None):
        return -self.c * self.eta * self._run(run).problem._grad(y)

    def observables(self, k, Y, records=None, run=None):
        records = self.records_of(k, Y, run) if records is None else records
        E = losses(self.problem, Y)
        zero = np.zeros(len(Y))
        return {"theta": np.asarray(Y), "loss": E, "time_avg_loss": E, "sharpness": records["sharpness"],
                "amplitude": zero, "amplitude_subspace": zero}


def bowl(scale: float = 1.0):
    return effdyn.problems.Quadratic(np.diag([scale, 0.5 * scale]))


effdyn.registry.register_model(DampedFlow)
effdyn.registry.register_problem("Bowl", bowl)


def _build(steps, quick, cifar=None):
    from effdyn.validation.cases import ModelSpec, Setup

    return Setup(bowl(2.0), np.array([1.0, -1.0]), 0.3, steps,
                 (ModelSpec("damped", "DampedFlow", {"c": 0.5}), ModelSpec("gradient flow", "GradientFlow")))


effdyn.registry.register_case(effdyn.validation.cases.Case("outside-case", "A case from a plugin", _build,
                                                           quick_steps=40, full_steps=80))
'''

CONFIG = '''
name = "outside"
[problem]
type = "Bowl"
scale = 2.0
[start]
theta0 = [1.0, -1.0]
[gd]
eta = 0.3
steps = 40
[[models]]
type = "DampedFlow"
options = { c = 0.5 }
solver = "scipy:RK45"
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch, registry_sandbox):
    (tmp_path / "outside_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "outside_plugin"
    sys.modules.pop("outside_plugin", None)


def test_outside_model_runs_through_effdyn_run(plugin, tmp_path, capsys):
    cfg = tmp_path / "outside.toml"
    cfg.write_text(CONFIG)
    code = main(["--plugin", plugin, "run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    ds = load_dataset(tmp_path / "out" / "outside.nc")
    assert list(ds["status"].values) == ["success"] and list(ds["model_class"].values) == ["DampedFlow"]
    # the damped flow is gradient flow in slowed time: θ(k) = exp(−c·η·λ·k) θ0 on the bowl
    k = ds["dampedflow__k"].values
    theta = ds["dampedflow__theta"].values
    np.testing.assert_allclose(theta[:, 0], np.exp(-0.5 * 0.3 * 2.0 * k), rtol=1e-5)
    np.testing.assert_allclose(theta[:, 1], -np.exp(-0.5 * 0.3 * 1.0 * k), rtol=1e-5)


def test_outside_case_runs_through_effdyn_validate(plugin, tmp_path, capsys):
    code = main(["--plugin", plugin, "validate", "--cases", "outside-case", "--out", str(tmp_path / "v"),
                 "--no-figures", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    ds = load_dataset(tmp_path / "v" / "outside-case.nc")
    assert list(ds["status"].values) == ["success", "success"]
    assert "outside-case" in (tmp_path / "v" / "report.md").read_text()
    # and `effdyn cases` lists it
    assert main(["--plugin", plugin, "cases"]) == 0
    assert "outside-case" in capsys.readouterr().out


def test_unknown_names_list_the_registered_ones(plugin, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace('type = "DampedFlow"', 'type = "NoSuchFlow"'))
    assert main(["--plugin", plugin, "run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown model type 'NoSuchFlow'" in err and "DampedFlow" in err
    assert main(["--plugin", "no_such_plugin_module", "cases"]) == 2
    assert "plugin module 'no_such_plugin_module' could not be imported" in capsys.readouterr().err
    # a bad parameter of the outside model is refused before anything runs, naming it
    cfg.write_text(CONFIG.replace("c = 0.5", "c = 3.0"))
    assert main(["--plugin", plugin, "run", str(cfg), "--out", str(tmp_path / "o2")]) == 2
    assert "`c` must lie in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "outside.nc").exists()


def test_register_refuses_what_is_not_a_model(registry_sandbox):
    with pytest.raises(TypeError, match="`cls` must be a subclass of effdyn.models.AbstractModel"):
        registry_sandbox.register_model(int)
    with pytest.raises(ValueError, match="`name`"):
        registry_sandbox.register_problem("not a name", lambda: None)
