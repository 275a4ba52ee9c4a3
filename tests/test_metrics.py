"""effdyn.compare and Metrics: scales that cannot vanish, the subspace amplitude, the envelope,
GD compared with itself, and the readable forms."""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import effdyn as ed
from effdyn.diagnostics import LOSS_FLOOR, Metrics, gd_time_averages

pytestmark = pytest.mark.xdist_group("metrics")

DMF = ed.problems.DeepMatrixFactorization


def stub_solution(eta, k, **observables):
    """A Solution stand-in: what compare reads (k, observables, model.eta)."""
    return SimpleNamespace(k=np.asarray(k, dtype=float), observables=observables, model=SimpleNamespace(eta=eta))


def gd_as_model(traj, shift=0, drop=()):
    """GD's own time averages dressed as a model solution (optionally delayed by `shift` steps)."""
    avg = gd_time_averages(traj)
    k = avg["loss_average"][0]
    mid_k, mid = avg["midpoint"]
    theta = np.vstack([traj.theta[0], mid])  # midpoints start at k = 1
    sk, s = avg["sharpness"]
    obs = {"theta": theta, "time_avg_loss": avg["loss_average"][1], "amplitude": avg["amplitude"][1],
           "amplitude_subspace": avg["amplitude_subspace"][1], "sharpness": np.interp(k, sk, s),
           "envelope_plus": avg["envelope_max"][1], "envelope_minus": avg["envelope_min"][1]}
    for name in drop:
        obs.pop(name)
    return stub_solution(traj.eta, k + shift, **obs)


@pytest.fixture(scope="module")
def converging():
    """d = 2, depth 3, σ1 = 2: the balanced minimum has sharpness 3·2^{4/3} = 7.56 < 2/η, so GD
    converges to zero loss (1.8e-31 by step 1000) and gradient flow follows it."""
    p = DMF(2, 3, DMF.spectral_target(2.0), init="balanced", init_scale=0.5)
    theta0, eta = p.init(0), 0.077
    traj = ed.gd(p, theta0, eta, 2000)
    sol = ed.solve(ed.models.GradientFlow(p, eta), theta0, 2000, solver="scipy:LSODA", rtol=1e-10, atol=1e-14)
    return traj, sol


@pytest.fixture(scope="module")
def chaotic():
    """d = 2, σ1 = 7 at η = 0.077: chaotic EoS with a loss spike every ~15 steps."""
    p = DMF(2, 3, DMF.spectral_target(7.0), init="balanced", init_scale=0.5)
    return ed.gd(p, p.init(0), 0.077, 1200, n_eigs=2)


def test_loss_error_stays_small_when_gd_converges(converging):
    traj, sol = converging
    m = ed.compare(traj, sol, window=(1000, 2000))
    # the old scale, GD's loss range over the window, is round-off
    raw = traj.loss[1000:2001]
    assert np.ptp(raw) < 1e-30
    k, la = traj.loss_average()
    sel = (k >= 1000) & (k <= 2000)
    deviation = np.mean(np.abs(np.interp(k[sel], sol.k, sol.time_avg_loss) - la[sel]))
    assert deviation / np.ptp(raw) > 10  # what the range scale reported: > 1000 % although GF is right
    # the new scale: max(range, mean excess loss, 1e-6 × initial excess loss); here the floor
    assert m.loss_ref == 0.0  # DMF declares loss_min = 0
    assert m.loss_scale == pytest.approx(max(np.ptp(raw), np.mean(la[sel]), LOSS_FLOOR * traj.loss[0]), rel=1e-12)
    assert m.loss_scale == pytest.approx(LOSS_FLOOR * traj.loss[0], rel=1e-12)
    assert m.loss_error < 1e-20
    assert m.loss_error == pytest.approx(deviation / m.loss_scale, rel=1e-12)
    # over the whole run the range (the initial loss) sets the scale, and GF tracks GD to 0.01 %
    full = ed.compare(traj, sol, window="all")
    assert full.loss_scale == pytest.approx(np.ptp(traj.loss), rel=1e-12)
    assert full.loss_error < 1e-3
    assert full.n_spikes_gd == 0 and math.isnan(full.spike_timing_error)
    assert math.isnan(full.envelope_error)  # gradient flow has no envelope observables


def test_loss_reference_without_a_declared_minimum():
    """The valley is unbounded below: the zero of the loss scale is GD's lowest loss."""
    p = ed.problems.MinimalValley(1.0, 0.01)
    traj = ed.gd(p, [0.1, 3.0], 0.3, 1500)
    sol = ed.solve(ed.models.GradientFlow(p, 0.3), [0.1, 3.0], 1500, solver="scipy:LSODA")
    m = ed.compare(traj, sol)
    assert m.loss_ref == traj.loss.min()
    k, la = traj.loss_average()
    sel = (k >= m.k0) & (k <= m.k1)
    expected = max(np.ptp(traj.loss[m.k0:m.k1 + 1]), np.mean(np.abs(la[sel] - traj.loss.min())),
                   LOSS_FLOOR * abs(traj.loss[0] - traj.loss.min()))
    assert m.loss_scale == pytest.approx(expected, rel=1e-12)


def test_gd_compared_with_itself_scores_zero(chaotic):
    m = ed.compare(chaotic, gd_as_model(chaotic), window=(100, 1100))
    assert m.loss_error == 0 and m.amplitude_error == 0 and m.amplitude_error_top == 0
    assert m.envelope_error == 0 and m.sharpness_error == 0 and m.distance == 0
    assert m.n_spikes_gd > 30 and m.n_spikes_matched == m.n_spikes_gd == m.n_spikes_model
    assert m.spike_timing_error == 0 and m.spike_height_error == 0
    # the two amplitudes differ on this wide orbit; the subspace one is at least the top one
    assert m.mean_amplitude_gd >= m.mean_amplitude_gd_top > 0
    assert m.mean_amplitude_gd > 1.05 * m.mean_amplitude_gd_top


def test_spikes_of_a_delayed_copy_are_matched_with_the_delay(chaotic):
    m = ed.compare(chaotic, gd_as_model(chaotic, shift=3), window=(100, 1100))
    assert m.n_spikes_gd > 30
    assert m.n_spikes_matched >= m.n_spikes_gd - 1  # a spike in the last 3 steps has no copy
    assert m.spike_timing_error == 3.0 and m.spike_height_error == 0.0
    far = ed.compare(chaotic, gd_as_model(chaotic, shift=3), window=(100, 1100), spike_tolerance=2)
    assert far.n_spikes_matched == 0 and math.isnan(far.spike_timing_error)


def test_amplitude_fallback_and_the_meaning_of_one(chaotic):
    # no amplitude_subspace observable: the model's top amplitude stands in for it
    m = ed.compare(chaotic, gd_as_model(chaotic, drop=("amplitude_subspace",)), window=(100, 1100))
    _, sub = chaotic.amplitude(subspace=True)
    _, top = chaotic.amplitude()
    expected = np.mean(np.abs(top[100:1101] - sub[100:1101])) / np.mean(sub[100:1101])
    assert m.amplitude_error == pytest.approx(expected, rel=1e-12) and m.amplitude_error_top == 0
    # a model predicting no oscillation scores exactly 1
    quiet = gd_as_model(chaotic)
    quiet.observables["amplitude"] = np.zeros_like(quiet.observables["amplitude"])
    quiet.observables["amplitude_subspace"] = np.zeros_like(quiet.observables["amplitude"])
    m = ed.compare(chaotic, quiet, window=(100, 1100))
    assert m.amplitude_error == pytest.approx(1.0, rel=1e-14) and m.amplitude_error_top == pytest.approx(1.0, rel=1e-14)


def test_envelope_error_is_the_mean_deviation_of_max_and_min(chaotic):
    model = gd_as_model(chaotic)
    model.observables["envelope_plus"] = model.observables["envelope_plus"] + 0.2  # swap roles, shift
    model.observables["envelope_minus"], model.observables["envelope_plus"] = (
        model.observables["envelope_plus"], model.observables["envelope_minus"] - 0.1)
    m = ed.compare(chaotic, model, window=(100, 1100))
    # |max − GD max| = 0.2 wherever the shifted max stays the larger one, |min − GD min| = 0.1
    assert m.envelope_error == pytest.approx(0.15 / m.loss_scale, rel=1e-12)


def test_free_energy_flow_envelope_on_the_valley():
    """The free-energy flow predicts GD's two loss levels on the minimal valley's EoS."""
    p = ed.problems.MinimalValley(1.0, 0.01)
    traj = ed.gd(p, [0.1, 3.0], 0.3, 4000)
    sol = ed.solve(ed.models.FreeEnergyFlow(p, 0.3), [0.1, 3.0], 4000, solver="map")
    m = ed.compare(traj, sol, window=(3000, 4000))
    assert m.envelope_error < 0.05 and m.loss_error < 0.05 and m.amplitude_error < 0.05


def test_readable_forms(converging):
    traj, sol = converging
    m = ed.compare(traj, sol)
    text = str(m)
    lines = text.splitlines()
    assert lines[0].startswith(f"Metrics over GD steps [{m.k0}, {m.k1}]")
    for label in ("time-avg loss", "sharpness", "amplitude (subspace)", "amplitude (top)", "envelope", "distance"):
        assert any(line.startswith(label) for line in lines), label
    assert len({len(line) for line in lines[1:9]}) == 1  # an aligned table
    assert f"{m.sharpness_error:.3e}" in text or f"{m.sharpness_error:.4g}" in text
    assert lines[-1].startswith("spikes: GD 0, model 0, matched 0")
    html = m._repr_html_()
    assert html.count("<tr>") == 7 and "amplitude (subspace)" in html
    d = m.to_dict()
    assert d == m.as_dict() and set(d) == set(Metrics.__dataclass_fields__) and d["loss_error"] == m.loss_error
    frame = m.to_frame("gradient flow")
    assert list(frame.index) == ["gradient flow"] and frame.loc["gradient flow", "k1"] == m.k1
    assert list(frame.columns) == list(Metrics.__dataclass_fields__)


def test_to_frame_without_pandas(converging, monkeypatch):
    traj, sol = converging
    m = ed.compare(traj, sol)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        m.to_frame()


def test_bad_spike_tolerance(converging):
    traj, sol = converging
    with pytest.raises(ValueError, match="`spike_tolerance`"):
        ed.compare(traj, sol, spike_tolerance=-1)
