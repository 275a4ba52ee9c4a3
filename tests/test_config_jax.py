"""Configuration files that name a JAX loss: ``[problem] type = "jax"`` (effdyn.problems.from_config).

The loss, the example parameters and the data builder live in a tiny module written to
``tmp_path`` and put on ``sys.path``; everything runs in process through ``effdyn.cli.main``.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")

from effdyn.cli import main  # noqa: E402
from effdyn.io import load_dataset  # noqa: E402

pytestmark = pytest.mark.xdist_group("cli")

MODULE = "effdyn_test_userloss"

SOURCE = textwrap.dedent('''
    import jax.numpy as jnp
    import numpy as np

    CALLS = []


    def make_data(scale=1.0, n=3):
        CALLS.append(("data", scale, n))
        return {"A": scale * np.diag(np.arange(1.0, n + 1.0)), "c": np.ones(n)}


    def init_params():
        return {"w": np.full(3, 0.5), "b": np.array(0.2)}


    def loss(params, data):
        w = params["w"]
        return 0.5 * w @ data["A"] @ w + 0.25 * jnp.sum(w ** 4) + params["b"] ** 2 * jnp.sum(data["c"])


    def flat_loss(theta):
        return 0.5 * jnp.sum(theta ** 2) + 0.25 * jnp.sum(theta ** 4)


    NOT_A_FUNCTION = 3
''')

CONFIG = '''
name = "jaxq"
[problem]
type = "jax"
loss = "{module}:loss"
params = "{module}:init_params"
data = "{module}:make_data"
scale = 2.0
[gd]
eta = 0.3
steps = 40
[[models]]
type = "GradientFlow"
[[models]]
type = "FreeEnergyFlow"
solver = "map"
initial = {{ sigma_seed = "gd" }}
[output]
figures = false
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "userpkg"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield MODULE
    sys.modules.pop(MODULE, None)


def _numpy_gd(theta, eta, steps, scale=2.0):
    # the same loss by hand, on the flat vector in ravel_pytree's order: b, then w (sorted keys)
    A = scale * np.diag([1.0, 2.0, 3.0])
    for _ in range(steps):
        b, w = theta[0], theta[1:]
        grad = np.concatenate([[2 * b * 3.0], A @ w + w ** 3])
        theta = theta - eta * grad
    return theta


def test_run_config_with_jax_loss_params_and_data(user_module, tmp_path, capsys):
    cfg = tmp_path / "jax.toml"
    cfg.write_text(CONFIG.format(module=user_module))
    out = tmp_path / "out"
    code = main(["run", str(cfg), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sys.modules[user_module].CALLS == [("data", 2.0, 3)]  # other keys went to the data builder, once
    ds = load_dataset(out / "jaxq.nc")
    theta0 = np.array([0.2, 0.5, 0.5, 0.5])  # params() flattened is the default start
    np.testing.assert_allclose(ds["gd_theta"].values[0], theta0, rtol=0, atol=0)
    np.testing.assert_allclose(ds["gd_theta"].values[-1], _numpy_gd(theta0, 0.3, 40), rtol=1e-12)
    assert "GradientFlow" in (out / "jaxq_report.md").read_text()
    # the case file carries the subspace amplitudes and the free-energy flow's loss envelope
    sub, top = ds["gd_amplitude_subspace"].values, ds["gd_amplitude"].values
    assert np.all(sub >= top - 1e-12) and np.any(sub > 0)  # the top-n_eigs span contains v1
    for name in ("amplitude_subspace", "envelope_plus", "envelope_minus"):
        assert f"freeenergyflow__{name}" in ds, name
    lo, hi = ds["freeenergyflow__envelope_minus"].values, ds["freeenergyflow__envelope_plus"].values
    fe_loss = ds["freeenergyflow__loss"].values
    ok = np.isfinite(lo) & np.isfinite(hi)
    # E is convex here: the mean of the two envelope ends lies above the loss at the centre
    assert ok.any() and np.all(0.5 * (lo + hi)[ok] >= fe_loss[ok] - 1e-12)


def test_flat_dim_form_and_validate_config(user_module, tmp_path, capsys):
    cfg = tmp_path / "flat.toml"
    cfg.write_text(textwrap.dedent(f'''
        name = "flat-jax"
        [case]
        title = "a flat JAX loss"
        quick_steps = 12
        full_steps = 30
        [problem]
        type = "jax"
        loss = "{user_module}:flat_loss"
        dim = 2
        [start]
        theta0 = [0.5, -0.25]
        [gd]
        eta = 0.5
        steps = 99
        [[models]]
        type = "GradientFlow"
    '''))
    out = tmp_path / "val"
    code = main(["validate", "--config", str(cfg), "--out", str(out), "--no-figures"])
    err = capsys.readouterr().err
    assert code == 0, err
    ds = load_dataset(out / "flat-jax.nc")
    assert ds["gd_k"].values[-1] == 12  # the [case] quick horizon, not [gd] steps
    th = np.array([0.5, -0.25])
    for _ in range(12):
        th = th - 0.5 * (th + th ** 3)
    np.testing.assert_allclose(ds["gd_theta"].values[-1], th, rtol=1e-12)
    report = (out / "report.md").read_text()
    assert "a flat JAX loss" in report
    # the case is forgotten afterwards: the registry holds only what it held before
    from effdyn.validation.cases import case_names

    assert "flat-jax" not in case_names()


@pytest.mark.parametrize("change, needle", [
    ({"loss": '"os:system"'}, "`loss` = 'os:system' names a function of 'os'"),
    ({"loss": '"subprocess:call"'}, "`loss` = 'subprocess:call' names a function of 'subprocess'"),
    ({"loss": '"__import__(\'os\').system(\'x\')"'}, "`loss` must be a string \"package.module:function\""),
    ({"loss": '"MOD:NOT_A_FUNCTION"'}, "is a int, not a function"),
    ({"loss": '"MOD:nothing_here"'}, "has no attribute 'nothing_here'"),
    ({"loss": '"no_such_module_xyz:f"'}, "module 'no_such_module_xyz' could not be imported"),
    ({"loss": "3"}, "`loss` must be a string"),
    ({"params": '"MOD:__dict__"'}, "special attribute"),
    ({"data": None, "scale": "2.0"}, "`scale` is not a key of the jax problem type"),
    ({"data": '"MOD:make_data"', "colour": '"red"'}, "`data` = 'MOD:make_data' does not take the keys ['colour', 'scale']"),
    ({"dim": "4"}, "give exactly one of `dim = P`"),
    ({"loss": '"MOD:flat_loss"', "params": None, "data": None, "scale": None, "dim": "0"}, "`dim` must be"),
])
def test_jax_config_refusals_name_the_key(user_module, tmp_path, capsys, change, needle):
    lines = CONFIG.format(module=user_module).splitlines()
    table = {"loss": f'"{user_module}:loss"', "params": f'"{user_module}:init_params"',
             "data": f'"{user_module}:make_data"', "scale": "2.0"}
    for key, value in change.items():
        table[key] = None if value is None else value.replace("MOD", user_module)
    start = lines.index("[problem]")
    body = [f"{k} = {v}" for k, v in table.items() if v is not None]
    lines = lines[:start + 2] + body + lines[start + 6:]
    cfg = tmp_path / "bad.toml"
    cfg.write_text("\n".join(lines))
    code = main(["run", str(cfg), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "[problem]" in err and needle.replace("MOD", user_module) in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_validate_config_refusals(tmp_path, capsys):
    code = main(["validate", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")])
    assert code == 2 and "missing.toml" in capsys.readouterr().err
    clash = tmp_path / "clash.toml"
    clash.write_text('name = "minimal-valley"\n[problem]\ntype = "MinimalValley"\n[gd]\neta = 0.3\nsteps = 5\n')
    code = main(["validate", "--config", str(clash), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "'minimal-valley' is already a validation case" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[case]\nquick_steps = "many"\n[problem]\ntype = "MinimalValley"\n[gd]\neta = 0.3\nsteps = 5\n')
    code = main(["validate", "--config", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "[case]: `quick_steps` must be a positive integer" in err
    assert not (tmp_path / "out").exists()
