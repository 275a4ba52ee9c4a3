"""The `effdyn` command line: bad input (messages and exit codes), `run` and `plot`."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

import effdyn.models
from effdyn.cli import main
from effdyn.data import CIFAR10_ENV
from effdyn.io import load_dataset
from effdyn.validation import parse_tables

pytestmark = pytest.mark.xdist_group("cli")

GOOD_CONFIG = """
name = "tiny"
[problem]
type = "MinimalValley"
zeta = 1.0
eps = 0.01
[start]
theta0 = [0.1, 3.0]
[gd]
eta = 0.3
steps = 300
[[models]]
type = "GradientFlow"
[[models]]
type = "FreeEnergyFlow"
label = "fe map"
solver = "map"
options = { rank = 1, floor = 1e-30 }
initial = { sigma_seed = "gd" }
"""


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_case_lists_valid_ones(capsys, tmp_path):
    code, out, err = _run(capsys, "validate", "--cases", "minimal-valley", "no-such-case", "--out", str(tmp_path))
    assert code == 2
    assert "unknown case 'no-such-case'" in err
    assert "valid cases: minimal-valley, dmf-converge, dmf-period2, minimalist-two-layer" in err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_cifar_case_without_data(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    code, _, err = _run(capsys, "validate", "--cases", "cifar10-seed-mlp", "--out", str(tmp_path))
    assert code == 2 and "--cifar PATH" in err and CIFAR10_ENV in err
    code, _, err = _run(capsys, "validate", "--cifar", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert code == 2 and "does not exist" in err and "data_batch_1" in err
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, fh)
    code, _, err = _run(capsys, "validate", "--cases", "cifar10-seed-mlp", "--cifar", str(folder), "--out", str(tmp_path))
    assert code == 2 and "data_batch_2" in err and "not found" in err


def test_unreadable_cifar_batch_fails_the_case(capsys, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, fh)
    (folder / "data_batch_4").write_bytes(b"\x00garbage")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "validate", "--cases", "cifar10-seed-mlp", "--cifar", str(folder), "--out", str(out))
    assert code == 1
    assert "case cifar10-seed-mlp: error" in err and "data_batch_4" in err
    report = (out / "report.md").read_text()
    assert "**Case status: error.**" in report and "data_batch_4" in report
    assert f"Report: {out / 'report.md'}" in stdout


@pytest.mark.parametrize("body, expected", [
    ('[problem]\ntype = "MinimalValley"\nzetaa = 1.0\n[gd]\neta = 0.3\nsteps = 10\n',
     "[problem]: `zetaa` is not a parameter of MinimalValley; valid: zeta, eps"),
    ('[problem]\ntype = "MinimalValley"\n[gd]\netta = 0.3\nsteps = 10\n',
     "[gd]: unknown key `etta`; valid keys: eta, steps"),
    ('[problem]\ntype = "MinimalValley"\n[gd]\nsteps = 10\n', "[gd]: missing `eta`; add e.g. `eta = 0.1`"),
    ('[problem]\ntype = "MinimalValley"\n[gd]\neta = -1\nsteps = 10\n', "`eta` must be a number > 0"),
    ('[problem]\ntype = "Valley"\n[gd]\neta = 0.3\nsteps = 10\n',
     "unknown problem type 'Valley'; valid types: MinimalValley"),
    ('[problem]\ntype = "MinimalValley"\n[gd]\neta = 0.3\nsteps = 10\n[[models]]\ntype = "CentralFlo"\n',
     "[[models]] #1: unknown model type 'CentralFlo'; valid types: GradientFlow, FreeEnergyFlow"),
    ('[problem]\ntype = "MinimalValley"\n[gd]\neta = 0.3\nsteps = 10\n[[models]]\ntype = "FreeEnergyFlow"\n'
     'options = { rnk = 1 }\n', "`rnk` is not a parameter of FreeEnergyFlow; valid: rank"),
    ('[problem]\ntype = "MinimalValley"\n[start]\ntheta0 = [1.0]\n[gd]\neta = 0.3\nsteps = 10\n',
     "[start]: `theta0` must be a list of 2 finite numbers"),
    ('[problem]\ntype = "MinimalValley"\n[gd]\neta = 0.3\nsteps = 10\n[outptu]\n',
     "top level: unknown key `outptu`"),
    ('[problem\n', "not valid TOML"),
])
def test_bad_config_names_the_key(capsys, tmp_path, body, expected):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    code, _, err = _run(capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert expected in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_run_and_plot(capsys, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(GOOD_CONFIG)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "run", str(cfg), "--out", str(out))
    assert code == 0, err
    assert f"Report: {out / 'tiny_report.md'}" in stdout
    rows = parse_tables((out / "tiny_report.md").read_text())["tiny"]
    assert [r["model"] for r in rows] == ["GD (reference)", "GradientFlow", "fe map"]
    assert all(r["status"] == "success" for r in rows)
    ds = load_dataset(out / "tiny.nc")
    from effdyn.problems import MinimalValley

    p = MinimalValley()
    th = np.array([0.1, 3.0])
    for _ in range(300):
        th = th - 0.3 * p.grad(th)
    np.testing.assert_allclose(ds["gd_theta"].values[-1], th, rtol=1e-12)
    for f in out.glob("tiny_*.png"):
        f.unlink()
    code, stdout, _ = _run(capsys, "plot", str(out / "tiny.nc"))
    assert code == 0
    written = stdout.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == [f"tiny_{n}.png" for n in ("loss", "sharpness", "amplitude",
                                                                                    "distance")]
    assert all((out / p.rsplit("/", 1)[-1]).read_bytes()[:4] == b"\x89PNG" for p in written)


def test_plot_bad_input(capsys, tmp_path):
    code, _, err = _run(capsys, "plot", str(tmp_path / "missing.nc"))
    assert code == 2 and "does not exist" in err
    import xarray as xr

    xr.Dataset({"x": ("t", [1.0, 2.0])}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    code, _, err = _run(capsys, "plot", str(tmp_path / "other.nc"))
    assert code == 2 and "is not an effdyn result" in err


def test_ctrl_c_saves_and_exits_130(capsys, monkeypatch, tmp_path, registry_sandbox):
    class Interrupting(effdyn.models.GradientFlow):
        def map_step(self, k, y, run=None):
            if k == 50:
                raise KeyboardInterrupt
            return super().map_step(k, y, run)

    registry_sandbox.register_model(Interrupting, name="GradientFlow")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(GOOD_CONFIG.replace('type = "GradientFlow"', 'type = "GradientFlow"\nsolver = "map"'))
    code, _, err = _run(capsys, "run", str(cfg), "--out", str(tmp_path / "out"))
    assert code == 130
    assert "interrupted; results computed so far are saved in" in err and str(tmp_path / "out") in err
    ds = load_dataset(tmp_path / "out" / "tiny.nc")
    assert ds.attrs["case_status"] == "interrupted" and ds["gradientflow__k"].values[-1] == 50
    assert "interrupted" in (tmp_path / "out" / "tiny_report.md").read_text()


def test_module_entry_point():
    # `python -m effdyn` is the same program: listing cases works, a bad name exits with 2
    ok = subprocess.run([sys.executable, "-m", "effdyn", "cases"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "minimal-valley" in ok.stdout and "cifar10-seed-mlp" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "effdyn", "validate", "--cases", "x"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "valid cases:" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "effdyn", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
