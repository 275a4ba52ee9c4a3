"""Figures from objects (ed.plot) and from saved files (plot_case): one set of panels.

Artists are found by their gid ("gd:raw", "gd:average", "edge", "model:<label>",
"envelope:<label>"), so the tests check what is drawn, not how it looks.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests (plotting itself never touches pyplot)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import effdyn as ed  # noqa: E402
from effdyn import plotting  # noqa: E402

ETA = 0.3
STEPS = 1700  # GD's EoS onset is at step 1222; the first catapult follows


@pytest.fixture(scope="module")
def valley():
    p = ed.problems.MinimalValley()
    th0 = p.init()
    traj = ed.gd(p, th0, ETA, STEPS, n_eigs=2)
    fe = ed.solve(ed.models.FreeEnergyFlow(p, ETA), th0, STEPS, solver='map', initial={'sigma_seed': 'gd'})
    fe2 = ed.solve(ed.models.FreeEnergyFlow(p, ETA), th0, STEPS, solver='map', initial={'sigma_seed': 'floor'})
    cf = ed.solve(ed.models.CentralFlow(p, ETA), th0, STEPS)
    return traj, fe, fe2, cf


def _lines(ax, prefix):
    return [line for line in ax.get_lines() if (line.get_gid() or "").startswith(prefix)]


def _panel(fig, ylabel_part):
    found = [ax for ax in fig.axes if ylabel_part in ax.get_ylabel()]
    assert len(found) == 1, [ax.get_ylabel() for ax in fig.axes]
    return found[0]


def test_one_line_per_model_colour_per_family(valley):
    traj, fe, fe2, cf = valley
    fig = ed.plot(traj, fe, fe2, cf, labels=["FE gd seed", "FE floor seed", "CF"])
    assert isinstance(fig, Figure) and type(fig.canvas).__name__ == "FigureCanvasBase"  # not pyplot's
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "sharpness λ_max(H)", "amplitude along v₁",
                                                    "‖θ_model − θ̄_GD‖"]
    for ax in fig.axes:
        models = _lines(ax, "model:")
        assert sorted(line.get_gid() for line in models) == ["model:CF", "model:FE floor seed", "model:FE gd seed"]
    ax = fig.axes[1]
    by = {line.get_gid(): line for line in _lines(ax, "model:")}
    a, b, c = by["model:FE gd seed"], by["model:FE floor seed"], by["model:CF"]
    assert a.get_color() == b.get_color() == plotting.FAMILY_COLORS["FreeEnergyFlow"]
    assert a.get_linestyle() == "-" and b.get_linestyle() == "--"  # variants of one family: line style
    assert c.get_color() == plotting.FAMILY_COLORS["CentralFlow"] and c.get_linestyle() == "-"
    # GD: the raw series faint and thin, the two-step average bold
    (raw,), (avg,) = _lines(ax, "gd:raw"), _lines(ax, "gd:average")
    assert raw.get_alpha() < 0.5 and raw.get_linewidth() < avg.get_linewidth()
    np.testing.assert_allclose(raw.get_ydata(), traj.sharpness)
    np.testing.assert_allclose(avg.get_ydata(), 0.5 * (traj.sharpness[:-1] + traj.sharpness[1:]))
    # one legend, outside the panels, with each label once
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == len(set(texts)) and {"CF", "FE gd seed", "FE floor seed", "2/η"} <= set(texts)


def test_edge_line_and_envelope_bands(valley):
    traj, fe, fe2, cf = valley
    fig = ed.plot(traj, fe, cf, what=("loss", "sharpness"))
    loss_ax, sharp_ax = fig.axes
    (edge,) = _lines(sharp_ax, "edge")
    assert np.allclose(edge.get_ydata(), 2 / ETA)
    bands = [c for c in loss_ax.collections if (c.get_gid() or "").startswith("envelope:")]
    assert [c.get_gid() for c in bands] == ["envelope:free-energy flow"]  # the central flow has no envelope
    ys = np.concatenate([p.vertices[:, 1] for p in bands[0].get_paths()])
    lo, hi = np.minimum(fe.envelope_minus, fe.envelope_plus), np.maximum(fe.envelope_minus, fe.envelope_plus)
    assert np.isclose(ys.min(), lo.min()) and np.isclose(ys.max(), hi.max())


def test_distance_is_measured_from_gds_midpoint(valley):
    traj, fe, fe2, cf = valley
    fig = ed.plot(traj, cf, what="distance")
    (line,) = _lines(fig.axes[0], "model:")
    mid_k, mid = traj.midpoint()
    k = 1600
    i = int(np.flatnonzero(mid_k == k)[0])
    theta = np.array([np.interp(k, cf.k, cf.theta[:, j]) for j in range(2)])
    j = int(np.flatnonzero(line.get_xdata() == k)[0])
    assert line.get_ydata()[j] == pytest.approx(np.linalg.norm(theta - mid[i]), rel=1e-12)


def test_default_labels_tell_runs_apart(valley):
    traj, fe, fe2, cf = valley
    fig = ed.plot(traj, fe, fe2, cf, what="sharpness")
    gids = sorted(line.get_gid() for line in _lines(fig.axes[0], "model:"))
    assert gids == ["model:central_flow", "model:free-energy flow [map] #1", "model:free-energy flow [map] #2"]


def test_facets_one_column_per_model(valley):
    traj, fe, fe2, cf = valley
    fig = ed.plot(traj, fe, cf, facets=True, what=("loss", "sharpness"))
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert len(_lines(ax, "model:")) == 1 and len(_lines(ax, "gd:average")) == 1
    assert [ax.get_title() for ax in fig.axes[:2]] == ["free-energy flow", "central_flow"]


def test_window_and_log_scale(valley):
    traj, fe, fe2, cf = valley
    fig = ed.plot(traj, fe, window=(1000, 1500), what=("loss", "sharpness"))
    for ax in fig.axes:
        assert ax.get_xlim() == (1000, 1500)
        for line in ax.get_lines():
            x = np.asarray(line.get_xdata(), dtype=float)
            assert x.size == 0 or (x.min() >= 1000 and x.max() <= 1500) or line.get_gid() == "edge"
    onset = traj.eos_onset()
    fig = ed.plot(traj, fe, window="eos", what="loss")
    assert onset - 50 < fig.axes[0].get_xlim()[0] < onset
    # the valley's loss is negative with positive catapult spikes: a symmetric log scale
    assert fig.axes[0].get_yscale() == "symlog"
    assert ed.plot(traj, fe, what="loss", logy=False).axes[0].get_yscale() == "linear"


def test_loss_scale_rule():
    rule = plotting._loss_scale
    assert rule("auto", np.array([1.0, 2.0, 3.0]))[0] == "linear"
    assert rule("auto", np.array([1e-3, 0.5, 1.0]))[0] == "log"  # two decades
    assert rule("auto", np.r_[np.full(50, 1.0), 30.0])[0] == "log"  # a spike above 10× the median
    assert rule("auto", np.r_[np.full(50, -0.05), 3.0]) == ("symlog", pytest.approx(0.15))
    assert rule("auto", np.array([-1.0, 0.5, 1.0]))[0] == "linear"
    assert rule(True, np.array([1.0, 2.0]))[0] == "log" and rule(False, np.array([1e-9, 1.0]))[0] == "linear"


def test_mean_field_sharpness_in_mf_units():
    from effdyn.problems.two_layer import teacher_student

    N, eta_mf = 6, 0.5
    p = teacher_student(N, n=20, d=3, seed=0)
    th0 = p.init(1)
    traj = ed.gd(p, th0, N * eta_mf, 40, n_eigs=1)
    sol = ed.solve(ed.models.GradientFlow(p, N * eta_mf), th0, 40, solver="map")
    ax = ed.plot(traj, sol, what="sharpness").axes[0]
    assert "S_MF" in ax.get_ylabel()
    (edge,) = _lines(ax, "edge")
    assert np.allclose(edge.get_ydata(), 2 / eta_mf) and edge.get_label() == "2/η_MF"
    np.testing.assert_allclose(_lines(ax, "gd:raw")[0].get_ydata(), N * traj.sharpness)


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    from effdyn.validation.cases import ModelSpec, Setup
    from effdyn.validation.runner import run_setup

    p = ed.problems.MinimalValley()
    models = (ModelSpec("gradient flow", "GradientFlow", solver="map"),
              ModelSpec("fe map", "FreeEnergyFlow", {"rank": 1}, {"sigma_seed": "gd"}, solver="map"))
    setup = Setup(p, np.array([0.1, 3.0]), ETA, 300, models, gd_options={"n_eigs": 2, "eig_every": 1})
    out = tmp_path_factory.mktemp("case")
    result = run_setup("tiny", "tiny valley", setup, out_dir=out, log=lambda msg: None)
    return result, out


def test_case_file_and_objects_draw_the_same_lines(tiny_case):
    result, out = tiny_case
    assert [p.name for p in result.files["figures"]] == [f"tiny_{n}.png" for n in plotting.CASE_FIGURES]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.files["figures"])
    sols = [r.solution for r in result.models]
    from_objects = ed.plot(result.gd, *sols, labels=[r.label for r in result.models])
    from_file = ed.plot(out / "tiny.nc")
    assert from_file.texts[0].get_text() == "tiny valley"  # the case title
    for a, b in zip(from_objects.axes, from_file.axes):
        assert a.get_ylabel() == b.get_ylabel() and a.get_yscale() == b.get_yscale()
        lines_a = {line.get_gid(): line for line in a.get_lines()}
        lines_b = {line.get_gid(): line for line in b.get_lines()}
        assert set(lines_a) == set(lines_b) and any(g.startswith("model:") for g in lines_a)
        for gid, line in lines_a.items():
            assert line.get_color() == lines_b[gid].get_color() and line.get_linestyle() == lines_b[gid].get_linestyle()
            np.testing.assert_allclose(np.asarray(line.get_ydata(), float), np.asarray(lines_b[gid].get_ydata(), float),
                                       rtol=1e-12, err_msg=gid)


def test_draw_into_given_axes(valley):
    traj, fe, fe2, cf = valley
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert ed.plot(traj, cf, what=("sharpness", "amplitude"), ax=axes) is fig
    assert len(_lines(axes[0], "model:")) == 1 and axes[1].get_yscale() == "log"
    with pytest.raises(ValueError, match="`ax`"):
        ed.plot(traj, cf, ax=axes)  # four panels, two axes


@pytest.mark.parametrize("kwargs, exc, arg", [
    (dict(what="energy"), ValueError, "what"),
    (dict(what=()), ValueError, "what"),
    (dict(labels=["a"]), ValueError, "labels"),
    (dict(labels="ab"), TypeError, "labels"),
    (dict(window=(5, 1)), ValueError, "window"),
    (dict(window="late"), ValueError, "window"),
    (dict(facets="yes"), TypeError, "facets"),
    (dict(logy="log"), ValueError, "logy"),
])
def test_bad_arguments_are_named(valley, kwargs, exc, arg):
    traj, fe, fe2, cf = valley
    with pytest.raises(exc, match=f"`{arg}`"):
        ed.plot(traj, fe, cf, **kwargs)


def test_bad_runs(valley, tmp_path):
    traj, fe, fe2, cf = valley
    with pytest.raises(TypeError, match="`runs`"):
        ed.plot(traj, fe, 3)
    with pytest.raises(TypeError, match="`runs`"):
        ed.plot(fe, traj)  # GD comes first
    with pytest.raises(FileNotFoundError, match="`path`"):
        ed.plot(tmp_path / "missing.nc")
    other = ed.solve(ed.models.CentralFlow(ed.problems.MinimalValley(), 0.2), [0.1, 3.0], 10)
    with pytest.raises(ValueError, match="η"):
        ed.plot(traj, other)


def test_cli_plot_combined(tiny_case, capsys):
    from effdyn import cli

    result, out = tiny_case
    code = cli.main(["plot", str(out / "tiny.nc"), "--combined", "--window", "100", "300", "--out", str(out / "fig")])
    printed = capsys.readouterr().out.split()
    assert code == 0 and printed == [str(out / "fig" / "tiny_panels.png")]
    assert (out / "fig" / "tiny_panels.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["plot", str(out / "tiny.nc"), "--facets"]) == cli.EXIT_USAGE
    bad = out / "corrupt.nc"
    bad.write_bytes((out / "tiny.nc").read_bytes()[:1000])
    assert cli.main(["plot", str(bad)]) == cli.EXIT_USAGE
    assert "corrupt.nc' is not a readable netCDF-4 file" in capsys.readouterr().err


def test_saved_trajectory_draws_like_the_object(valley, tmp_path):
    from effdyn.io import save_dataset

    traj = valley[0]
    path = save_dataset(traj.to_xarray(), tmp_path / "gd.nc")
    a, b = ed.plot(traj, what=("loss", "sharpness", "amplitude")), ed.plot(path, what=("loss", "sharpness", "amplitude"))
    for ax_a, ax_b in zip(a.axes, b.axes):
        lines_b = {line.get_gid(): line for line in ax_b.get_lines()}
        assert {line.get_gid() for line in ax_a.get_lines()} == set(lines_b)
        for line in ax_a.get_lines():
            np.testing.assert_allclose(line.get_ydata(), lines_b[line.get_gid()].get_ydata(), rtol=1e-12)


def test_effdyn_plot_draws_files_of_ed_save(tmp_path, capsys):
    from effdyn.cli import main

    p = ed.problems.MinimalValley()
    traj = ed.gd(p, [0.1, 3.0], 0.3, 200)
    sol = ed.solve(ed.models.FreeEnergyFlow(p, 0.3), [0.1, 3.0], 200, solver="map")
    ed.save(tmp_path / "both.nc", traj, sol)
    traj.save(tmp_path / "gd.nc")
    for name in ("both", "gd"):
        assert main(["plot", str(tmp_path / f"{name}.nc")]) == 0
        out = tmp_path / f"{name}_panels.png"
        assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 10_000
