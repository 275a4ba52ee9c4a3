"""Saved files a colleague can read: CF labels on every variable, the user's umask, clear
errors for corrupt files; and progress reports for scripts (effdyn.progress)."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pytest

import effdyn as ed
from effdyn import progress as prog
from effdyn.io import annotate_cf, atomic_write, load_dataset, save_dataset


# --- CF attributes -------------------------------------------------------------------------------

def _assert_labelled(ds, path):
    missing = [str(n) for n in ds.variables
               if "units" not in ds[n].attrs or not str(ds[n].attrs.get("long_name", "")).strip()]
    assert not missing, f"{path}: variables without units/long_name: {missing}"


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    """A short minimal-valley case (GD and two models) saved as a case file."""
    from effdyn.validation.cases import ModelSpec, Setup
    from effdyn.validation.runner import run_setup

    p = ed.problems.MinimalValley()
    models = (ModelSpec("gradient flow", "GradientFlow", solver="map"),
              ModelSpec("fe map", "FreeEnergyFlow", {"rank": 1}, {"sigma_seed": "gd"}, solver="map"))
    setup = Setup(p, np.array([0.1, 3.0]), 0.3, 300, models, gd_options={"n_eigs": 2, "eig_every": 1})
    out = tmp_path_factory.mktemp("case")
    result = run_setup("tiny", "tiny valley", setup, out_dir=out, log=lambda msg: None, figures=False)
    return result, out / "tiny.nc"


def test_case_file_has_cf_attributes_on_every_variable(tiny_case):
    result, path = tiny_case
    ds = load_dataset(path)
    _assert_labelled(ds, path)
    assert ds["gd_k"].attrs["long_name"] == "GD step k"
    assert ds["gd_sharpness"].attrs["units"] == "1" and "Hessian" in ds["gd_sharpness"].attrs["long_name"]
    # model series are labelled with the model's own label, not its slug
    assert ds["fe_map__time_avg_loss"].attrs["long_name"] == "time-averaged loss predicted by fe map"
    assert ds["wall_time"].attrs["units"] == "s" and ds["wall_time"].dtype == np.float64  # not decoded as a timedelta


def test_solution_file_has_cf_attributes_on_every_variable(tmp_path):
    p = ed.problems.MinimalValley()
    sol = ed.solve(ed.models.FreeEnergyFlow(p, 0.3), [0.1, 3.0], 30, solver="map")
    ds0 = sol.to_xarray()
    path = sol.save(tmp_path / "sol.nc")
    assert "units" not in ds0["loss"].attrs  # save_dataset labels a copy, not the caller's dataset
    ds = load_dataset(path)
    _assert_labelled(ds, path)
    assert ds["k"].attrs == {"units": "1", "long_name": "GD step k"}
    assert ds["sharpness"].attrs["long_name"] == "sharpness: largest Hessian eigenvalue"


def test_annotate_cf_keeps_given_attributes_and_falls_back():
    import xarray as xr

    ds = xr.Dataset({"loss": ("k", [1.0, 2.0], {"units": "nats"}), "odd_name": ("k", [0, 1]),
                     "note": ("k", np.array(["a", "b"], dtype=object))}, coords={"k": [0, 1]})
    annotate_cf(ds)
    assert ds["loss"].attrs == {"units": "nats", "long_name": "loss E(theta)"}
    assert ds["odd_name"].attrs == {"units": "1", "long_name": "odd name"}
    assert ds["note"].attrs == {"units": "", "long_name": "note"}


# --- file modes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    import xarray as xr

    old = os.umask(umask)
    try:
        png = atomic_write(tmp_path / "a.bin", lambda tmp: open(tmp, "wb").write(b"x"))
        nc = save_dataset(xr.Dataset({"x": ("k", [1.0])}), tmp_path / "a.nc")
    finally:
        os.umask(old)
    assert oct(png.stat().st_mode & 0o777) == oct(mode)
    assert oct(nc.stat().st_mode & 0o777) == oct(mode)


# --- corrupt files -------------------------------------------------------------------------------

def test_corrupt_files_name_the_file(tmp_path):
    import xarray as xr

    good = save_dataset(xr.Dataset({"x": ("k", np.arange(2000.0))}), tmp_path / "good.nc")
    data = good.read_bytes()
    for name, content in (("garbage.nc", b"not a netCDF file" * 20), ("truncated.nc", data[: len(data) // 2]),
                          ("empty.nc", b"")):
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=f"`path` '.*{name}' is not a readable netCDF-4 file"):
            load_dataset(bad)
    with pytest.raises(FileNotFoundError, match="`path`"):
        load_dataset(tmp_path / "missing.nc")
    assert load_dataset(good)["x"].shape == (2000,)
    # effdyn.load reads results files only, and says which file is something else
    with pytest.raises(ValueError, match="`path` '.*good.nc' is not an effdyn results file"):
        ed.load(good)


# --- progress ------------------------------------------------------------------------------------

class _Pipe(io.StringIO):
    """stderr redirected to a file: not a terminal."""

    def isatty(self):
        return False


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(meter, n=5):
    with meter:
        for i in range(n):
            meter.update(10)
            meter.set_postfix(loss=0.5 / (i + 1))
    return meter


def test_progress_off_a_terminal_writes_status_lines_to_logging(caplog, monkeypatch):
    monkeypatch.delenv(prog.ENV_EVERY, raising=False)
    caplog.set_level(logging.INFO, logger="effdyn")
    stream = _Pipe()
    meter = _run(prog.progress_meter(50, True, desc="GD (gd, eta=0.3)", every=0, stream=stream))
    lines = [r.getMessage() for r in caplog.records if r.name == "effdyn"]
    assert len(lines) == 6 and stream.getvalue() == ""  # one per update (every=0) and the closing line
    assert lines[0].startswith("effdyn: GD (gd, eta=0.3): 10/50 steps (20%)")
    assert "loss=0.25" in lines[2]  # the postfix set after the second update
    assert lines[-1].startswith("effdyn: GD (gd, eta=0.3): finished 50/50 steps in")
    assert meter.closed


def test_progress_env_var_turns_lines_on_and_stderr_without_logging(monkeypatch):
    monkeypatch.setattr(prog.logger, "propagate", False)  # no handler anywhere: lines go to the stream
    stream = _Pipe()
    monkeypatch.delenv(prog.ENV_EVERY, raising=False)
    assert not prog.progress_meter(50, None, stream=stream).active  # default: quiet in scripts
    monkeypatch.setenv(prog.ENV_EVERY, "0")
    _run(prog.progress_meter(50, None, desc="free-energy flow [map]", stream=stream))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6 and lines[2].startswith("effdyn: free-energy flow [map]: 30/50 steps (60%)")
    monkeypatch.setenv(prog.ENV_EVERY, "3600")  # an hour between lines: a short run says nothing
    stream = _Pipe()
    _run(prog.progress_meter(50, True, stream=stream))
    assert stream.getvalue() == ""
    monkeypatch.setenv(prog.ENV_EVERY, "soon")
    with pytest.raises(ValueError, match=prog.ENV_EVERY):
        prog.progress_meter(50, True, stream=stream)


def test_progress_on_a_terminal_is_a_bar(monkeypatch):
    monkeypatch.setenv(prog.ENV_EVERY, "0")
    term = _Terminal()
    meter = _run(prog.progress_meter(50, True, desc="GD", stream=term))
    assert type(meter).__name__ == "_BarMeter" and "50/50" in term.getvalue()
    # None: a bar only for long runs; False: nothing at all
    assert not prog.progress_meter(50, None, stream=term, min_total=1000).active
    with prog.progress_meter(5000, None, stream=term, min_total=1000) as meter:
        assert meter.active
    assert not prog.progress_meter(5000, False, stream=term).active
    with pytest.raises(TypeError, match="`progress`"):
        prog.progress_meter(50, "auto")
