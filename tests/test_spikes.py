"""The spike rule (detect_spikes) and the matching (match_spikes) on series with known spikes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effdyn.diagnostics import SPIKE_PROMINENCE, detect_spikes, match_spikes

pytestmark = pytest.mark.xdist_group("metrics")

POSITIONS = np.array([120, 260, 275, 420, 610])
BUMPS = np.array([3.0, 0.8, 0.4, 1.5, 6.0])  # relative to the baseline at the spike


def synthetic(n=800, small=True):
    """A decaying baseline b(k) = 0.2 + e^{−k/300} with triangular spikes of known heights,
    plus (optionally) small wiggles that the rule must ignore."""
    k = np.arange(n, dtype=float)
    base = 0.2 + np.exp(-k / 300.0)
    y = base.copy()
    for pos, rel in zip(POSITIONS, BUMPS):
        width = 4
        tri = np.clip(1 - np.abs(k - pos) / width, 0, None)
        y += rel * base[pos] * tri
    if small:
        y += 0.1 * base * np.clip(1 - np.abs(k - 500) / 3, 0, None)  # 10 % bump: below the 50 % rule
        y += 1e-4 * np.sin(k * 2.1)  # round-off-like wiggle
    return k, y, base


def test_spikes_positions_and_heights_recovered_exactly():
    k, y, base = synthetic()
    ks, hs = detect_spikes(k, y, floor=1e-3)
    expected = [p for p, rel in zip(POSITIONS, BUMPS) if rel >= SPIKE_PROMINENCE]  # the 0.4 bump is too small
    np.testing.assert_array_equal(ks, expected)
    np.testing.assert_array_equal(hs, y[np.array(expected)])
    # the heights are baseline × (1 + bump) up to the wiggle
    rel = {p: r for p, r in zip(POSITIONS, BUMPS)}
    np.testing.assert_allclose(hs, [base[p] * (1 + rel[p]) for p in expected], atol=2e-4)


def test_threshold_and_distance_are_what_they_say():
    k, y, _ = synthetic(small=False)
    # a 0.4 × baseline spike passes a 0.3 relative prominence
    ks, _ = detect_spikes(k, y, prominence=0.3)
    np.testing.assert_array_equal(ks, POSITIONS)
    # spikes 260 and 275 are 15 steps apart: a separation of 20 keeps the higher one only
    ks, _ = detect_spikes(k, y, prominence=0.3, distance=20)
    np.testing.assert_array_equal(ks, [120, 260, 420, 610])
    # an absolute floor above the 1.5 × baseline spike (prominence 1.5·b(420) = 0.63)
    ks, _ = detect_spikes(k, y, prominence=0.0, floor=0.7)
    np.testing.assert_array_equal(ks, [120, 610])
    # no spike in a monotone series or a constant
    assert detect_spikes(k, np.exp(-k))[0].size == 0 and detect_spikes(k, np.ones_like(k))[0].size == 0


def test_relative_prominence_is_measured_from_ref():
    k, y, _ = synthetic(small=False)
    # raising the zero of the loss scale to 0.15 leaves a baseline of only ~0.05 + e^{-k/300}:
    # the 0.4 × b(275) bump now clears 50 % of it
    ks_low, _ = detect_spikes(k, y)
    ks_ref, _ = detect_spikes(k, y, ref=0.15)
    assert 275 not in ks_low and 275 in ks_ref


def test_matching_a_shifted_copy_gives_the_shift():
    k, y, _ = synthetic()
    ks, hs = detect_spikes(k, y)
    for shift in (-6, 0, 7):
        m = match_spikes(ks, hs, ks + shift, hs, tolerance=10)
        assert m["n_matched"] == m["n_gd"] == len(ks)
        assert m["timing_error"] == abs(shift) and m["height_error"] == 0.0
    # a 10 % taller, 5-step late copy
    m = match_spikes(ks, hs, ks + 5, 1.1 * hs, tolerance=10)
    assert m["timing_error"] == 5 and m["height_error"] == pytest.approx(0.1, rel=1e-12)
    # heights measured from ref
    m = match_spikes(ks, hs, ks, hs + 0.05, ref=0.2)
    assert m["height_error"] == pytest.approx(np.mean(0.05 / (hs - 0.2)), rel=1e-12)
    # out of tolerance: nothing matched
    m = match_spikes(ks, hs, ks + 30, hs, tolerance=10)
    assert m["n_matched"] == 0 and math.isnan(m["timing_error"]) and math.isnan(m["height_error"])


def test_matching_is_one_to_one_and_nearest_first():
    m = match_spikes([100, 110], [1.0, 1.0], [104, 108, 300], [1.0, 1.0, 1.0], tolerance=10)
    assert m["pairs"] == [(0, 0), (1, 1)] and m["timing_error"] == 3.0 and m["n_model"] == 3
    m = match_spikes([100, 110], [1.0, 1.0], [106], [1.0], tolerance=10)
    assert m["pairs"] == [(1, 0)] and m["n_matched"] == 1 and m["timing_error"] == 4.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="`k` and `series`"):
        detect_spikes([0, 1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="`distance`"):
        detect_spikes([0, 1, 2], [0.0, 1.0, 0.0], distance=0)
    with pytest.raises(ValueError, match="`prominence`"):
        detect_spikes([0, 1, 2], [0.0, 1.0, 0.0], prominence=-1)
