"""Comparing an effective model with discrete GD, the arbiter of every model.

GD oscillates with period two at the Edge of Stability, so a continuous model is compared
with GD's *time averages* (theory §1): the two-step midpoint θ̄_k, the two-step loss
average ½(E_k + E_{k+1}), the half-step amplitude (in the tracked top eigenspace and along
the top eigenvector), the sharpness averaged over two steps, GD's loss spikes and the
envelope max/min(E_k, E_{k+1}) of each two-step pair.

:func:`compare` returns a :class:`Metrics`; :func:`detect_spikes` and :func:`match_spikes`
are the spike rule on its own, for any series.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Metrics", "compare", "check_same_run", "gd_time_averages", "detect_spikes", "match_spikes", "LOSS_FLOOR",
           "SPIKE_PROMINENCE", "SPIKE_FLOOR", "SPIKE_DISTANCE", "SPIKE_TOLERANCE"]

#: Loss-scale floor, as a fraction of GD's initial excess loss |E(θ_0) − E_ref|.
LOSS_FLOOR = 1e-6
#: A spike must rise above its baseline by at least this fraction of the baseline's excess loss.
SPIKE_PROMINENCE = 0.5
#: ... and by at least this fraction of the loss scale (so round-off wiggles of a converged
#: run are never spikes).
SPIKE_FLOOR = 1e-3
#: Minimum separation of two spikes, in GD steps.
SPIKE_DISTANCE = 10
#: A model spike matches a GD spike when it lies within this many steps of it.
SPIKE_TOLERANCE = 25


@dataclass
class Metrics:
    """Errors of a model against GD over a window of GD steps ``[k0, k1]``.

    Each ``*_error`` is a mean absolute deviation over the GD steps of the window divided by
    a stated scale, so 0.05 reads "5 % of the scale".

    Loss
        ``loss_error``: model ``time_avg_loss`` vs GD's two-step loss average
        ℓ_k = ½(E_k + E_{k+1}). Scale ``loss_scale`` = max(R, M, F) with
        R = max − min of GD's loss over the window (the size of its EoS oscillations and
        spikes), M = mean of |ℓ_k − E_ref| over the window (the size of the compared
        quantity itself) and F = 1e-6·|E(θ_0) − E_ref| (:data:`LOSS_FLOOR`; GD's initial
        excess loss). E_ref (``loss_ref``) is the problem's infimum when it declares one
        (``loss_min``), else the lowest loss GD recorded. R alone vanishes when GD converges
        (a range of 1e-27 made every model look wrong by 10²…10⁸); M keeps the scale at the
        size of the loss on a plateau, and F keeps it finite when the loss itself goes to
        E_ref, where differences below a millionth of the initial loss mean nothing. When
        all three are 0 the error is absolute (scale 1).
    Sharpness
        ``sharpness_error``: model sharpness vs GD's two-step averaged sharpness; scale
        ``sharpness_scale`` = 2/η for plain GD (the edge it hovers at), GD's mean sharpness
        for the normalised and √E variants, whose sharpness is not tied to 2/η.
    Amplitude
        ``amplitude_error`` (the headline): the model's ``amplitude_subspace`` (√tr Σ, or
        ‖δ‖ / ρ for half-step models; its ``amplitude`` when it has no such observable)
        vs GD's half-step amplitude in its tracked subspace ‖P_k(θ_{k+1} − θ_k)‖/2, P_k the
        projector on GD's top ``n_eigs`` eigenvectors (run GD with ``n_eigs`` at least the
        model's rank). ``amplitude_error_top``: the model's ``amplitude`` vs GD's
        |v1ᵀ(θ_{k+1} − θ_k)|/2 along the top eigenvector, which is ill-defined on wide orbits
        whose two iterates have different v1. Scales ``amplitude_scale`` /
        ``amplitude_scale_top`` = GD's mean amplitude over the window (the error is absolute,
        in parameter units, when that mean is below 1e-12, i.e. GD does not oscillate).
        A model that predicts no oscillation at all scores exactly 1, so an amplitude error
        above 1 means the prediction is further from GD than "no oscillation" (the model
        oscillates where GD does not, or more than twice as much).
    Envelope
        ``envelope_error``: GD's max(E_k, E_{k+1}) and min(E_k, E_{k+1}) against the larger
        and the smaller of the model's ``envelope_plus``/``envelope_minus`` (E(θ ± √s v) of
        the free-energy flow), mean of the two absolute deviations, over ``loss_scale``.
        NaN when the model has no envelope observables.
    Spikes (see :func:`detect_spikes` for the rule)
        ``n_spikes_gd`` spikes of GD's two-step loss average in the window, ``n_spikes_model``
        of the model's ``time_avg_loss`` (same rule), ``n_spikes_matched`` GD spikes with a
        model spike within ``SPIKE_TOLERANCE`` steps (one-to-one, nearest first);
        ``spike_timing_error``: mean |k_model − k_GD| over matched spikes, in GD steps;
        ``spike_height_error``: mean |h_model − h_GD|/|h_GD| over matched spikes, heights
        measured from E_ref. NaN when nothing is matched.
    Distance
        ``distance``: RMS over the window of ‖θ_model − θ̄_GD‖ divided by the RMS of ‖θ̄_GD‖
        (``distance_abs`` is the RMS distance itself, ``distance_scale`` the RMS of ‖θ̄_GD‖;
        the distance is absolute when that is 0).

    ``mean_*`` fields hold the window means of the compared quantities, model and GD.
    """

    k0: int
    k1: int
    loss_error: float
    sharpness_error: float
    amplitude_error: float
    distance: float
    distance_abs: float
    loss_scale: float
    sharpness_scale: float
    amplitude_scale: float
    mean_loss_model: float
    mean_loss_gd: float
    mean_sharpness_model: float
    mean_sharpness_gd: float
    mean_amplitude_model: float
    mean_amplitude_gd: float
    amplitude_error_top: float = math.nan
    amplitude_scale_top: float = math.nan
    mean_amplitude_model_top: float = math.nan
    mean_amplitude_gd_top: float = math.nan
    loss_ref: float = math.nan
    envelope_error: float = math.nan
    n_spikes_gd: int = 0
    n_spikes_model: int = 0
    n_spikes_matched: int = 0
    spike_timing_error: float = math.nan
    spike_height_error: float = math.nan
    distance_scale: float = math.nan

    # ---- readable forms ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """All fields as a plain dict (field name → number)."""
        return asdict(self)

    as_dict = to_dict

    def to_frame(self, name: str | None = None):
        """A one-row ``pandas.DataFrame`` of all fields (row label ``name``)."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas comes with xarray
            raise ImportError("`Metrics.to_frame()` needs pandas: `pip install pandas` "
                              "(or use `to_dict()`).") from None
        return pd.DataFrame([self.to_dict()], index=[name if name is not None else "model"])

    def _rows(self):
        """(quantity, error, scale, model mean, GD mean) of the main columns."""
        return [
            ("time-avg loss", self.loss_error, self.loss_scale, self.mean_loss_model, self.mean_loss_gd),
            ("sharpness", self.sharpness_error, self.sharpness_scale, self.mean_sharpness_model,
             self.mean_sharpness_gd),
            ("amplitude (subspace)", self.amplitude_error, self.amplitude_scale, self.mean_amplitude_model,
             self.mean_amplitude_gd),
            ("amplitude (top)", self.amplitude_error_top, self.amplitude_scale_top, self.mean_amplitude_model_top,
             self.mean_amplitude_gd_top),
            ("envelope", self.envelope_error, self.loss_scale, math.nan, math.nan),
            ("distance", self.distance, self.distance_scale, math.nan, math.nan),
        ]

    def _spike_line(self) -> str:
        line = f"spikes: GD {self.n_spikes_gd}, model {self.n_spikes_model}, matched {self.n_spikes_matched}"
        if self.n_spikes_matched:
            line += (f"; timing error {self.spike_timing_error:.3g} steps, "
                     f"height error {100 * self.spike_height_error:.3g} %")
        return line

    def __str__(self) -> str:
        head = ("quantity", "error", "scale", "model mean", "GD mean")
        rows = [head] + [(q, *map(_num, vals)) for q, *vals in self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"Metrics over GD steps [{self.k0}, {self.k1}] (error = mean |model − GD| / scale)"]
        for j, r in enumerate(rows):
            lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))))
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append(self._spike_line())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        cells = "".join(f"<th>{h}</th>" for h in ("quantity", "error", "scale", "model mean", "GD mean"))
        body = "".join("<tr><td style='text-align:left'>" + html.escape(q) + "</td>"
                       + "".join(f"<td>{_num(v)}</td>" for v in vals) + "</tr>" for q, *vals in self._rows())
        return (f"<div><b>Metrics over GD steps [{self.k0}, {self.k1}]</b>"
                f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{html.escape(self._spike_line())}</p></div>")


def format_number(x, digits: int = 3, small: float = 1e-3) -> str:
    """A number for a table: ``digits`` significant digits, scientific notation at or above
    1e4 and below ``small``, "–" for None or NaN; anything else as ``str``."""
    if x is None:
        return "–"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < small:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _num(x) -> str:
    return format_number(x, 4, 1e-2)


# --------------------------------------------------------------------------------------
# spikes
# --------------------------------------------------------------------------------------
def detect_spikes(k, series, *, ref: float = 0.0, prominence: float = SPIKE_PROMINENCE, floor: float = 0.0,
                  distance: int = SPIKE_DISTANCE):
    """Loss spikes of a series: local maxima that stand out from their running baseline.

    The rule: ``scipy.signal.find_peaks`` finds the local maxima at least ``distance``
    samples apart (the higher one wins) and their prominences p (height above the higher of
    the two lowest points that separate the peak from higher ground on either side: the
    running baseline b = peak − p). A maximum is a spike when
    ``p >= prominence · |b − ref|`` and ``p >= floor``: it rises above its baseline by at
    least that fraction of the baseline's excess over ``ref`` (1.5 × the baseline for the
    default 0.5 when ref = 0), and by an absolute amount ``floor``.

    Apply it to the two-step averaged loss of GD (the period-two oscillation would
    otherwise make every other step a maximum).

    Parameters
    ----------
    k, series : array_like, shape (n,)
        Steps (increasing) and values.
    ref : float
        Zero of the relative prominence (the loss infimum).
    prominence : float
        Relative prominence threshold (>= 0).
    floor : float
        Absolute prominence threshold (>= 0).
    distance : int
        Minimum separation of two spikes, in samples (>= 1).

    Returns
    -------
    k_spikes, heights : ndarray
        Steps and values of the spikes, in order.
    """
    from scipy.signal import find_peaks, peak_prominences

    k = np.asarray(k, dtype=float)
    y = np.asarray(series, dtype=float)
    if k.shape != y.shape or y.ndim != 1:
        raise ValueError(f"`k` and `series` must be 1-D arrays of the same length; got {k.shape} and {y.shape}.")
    if not (prominence >= 0 and floor >= 0):
        raise ValueError(f"`prominence` and `floor` must be >= 0; got {prominence!r}, {floor!r}.")
    if isinstance(distance, bool) or not isinstance(distance, (int, np.integer)) or distance < 1:
        raise ValueError(f"`distance` must be an integer >= 1 (samples); got {distance!r}.")
    if y.size < 3 or not np.all(np.isfinite(y)):
        return np.empty(0), np.empty(0)
    peaks, _ = find_peaks(y, distance=int(distance))
    if peaks.size == 0:
        return np.empty(0), np.empty(0)
    prom = peak_prominences(y, peaks)[0]
    base = y[peaks] - prom
    keep = (prom >= prominence * np.abs(base - ref)) & (prom >= floor) & (prom > 0)
    return k[peaks[keep]], y[peaks[keep]]


def match_spikes(k_gd, h_gd, k_model, h_model, *, tolerance: float = SPIKE_TOLERANCE, ref: float = 0.0) -> dict:
    """Match model spikes to GD spikes: each GD spike takes the nearest free model spike
    within ``tolerance`` steps, closest pairs first (one-to-one).

    Returns a dict with ``n_gd``, ``n_model``, ``n_matched``, ``timing_error`` (mean
    |k_model − k_GD| in steps) and ``height_error`` (mean |h_model − h_GD|/|h_GD − ref|),
    NaN when nothing matched, and ``pairs`` (list of (i_gd, i_model)).
    """
    k_gd, h_gd = np.asarray(k_gd, dtype=float), np.asarray(h_gd, dtype=float)
    k_m, h_m = np.asarray(k_model, dtype=float), np.asarray(h_model, dtype=float)
    cand = sorted((abs(k_m[j] - k_gd[i]), i, j) for i in range(k_gd.size) for j in range(k_m.size)
                  if abs(k_m[j] - k_gd[i]) <= tolerance)
    used_g, used_m, pairs = set(), set(), []
    for _, i, j in cand:
        if i not in used_g and j not in used_m:
            used_g.add(i)
            used_m.add(j)
            pairs.append((i, j))
    pairs.sort()
    if pairs:
        gi, mj = np.array(pairs).T
        timing = float(np.mean(np.abs(k_m[mj] - k_gd[gi])))
        denom = np.abs(h_gd[gi] - ref)
        rel = np.abs(h_m[mj] - h_gd[gi]) / np.where(denom > 0, denom, 1.0)
        height = float(np.mean(rel))
    else:
        timing = height = math.nan
    return {"n_gd": int(k_gd.size), "n_model": int(k_m.size), "n_matched": len(pairs), "timing_error": timing,
            "height_error": height, "pairs": pairs}


# --------------------------------------------------------------------------------------
# GD's time averages and the comparison
# --------------------------------------------------------------------------------------
def _with_axis(value, default_k):
    """GDTrajectory methods return (k, values); accept a bare array aligned with default_k."""
    if isinstance(value, tuple) and len(value) == 2:
        return np.asarray(value[0], dtype=float), np.asarray(value[1], dtype=float)
    value = np.asarray(value, dtype=float)
    return np.asarray(default_k[: len(value)], dtype=float), value


def _window(traj, window, last_k):
    onset = traj.eos_onset() if hasattr(traj, "eos_onset") else None
    if window is None or window == "eos":
        k0 = onset if onset is not None else 0
        return int(k0), int(last_k)
    if window == "all":
        return 0, int(last_k)
    if window == "last-third":
        return int(round(2 * last_k / 3)), int(last_k)
    try:
        k0, k1 = window
    except (TypeError, ValueError):
        raise ValueError(
            f"`window` must be None, 'eos', 'all', 'last-third' or a pair (k0, k1) of GD steps; got {window!r}."
        ) from None
    if not (0 <= k0 < k1):
        raise ValueError(f"`window` must satisfy 0 <= k0 < k1; got {window!r}.")
    return int(k0), int(min(k1, last_k))


def _subspace_amplitude(traj, k_all):
    if getattr(traj, "half_amp_subspace", None) is None:
        return _with_axis(traj.amplitude(), k_all)
    return _with_axis(traj.amplitude(subspace=True), k_all)


def gd_time_averages(traj) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GD's time-averaged series, each as (k, values).

    Keys: ``midpoint`` θ̄, ``loss_average`` ½(E_k + E_{k+1}), ``amplitude`` (half-step
    amplitude along the top eigenvector), ``amplitude_subspace`` (in the top-``n_eigs``
    eigenspace; the top one for trajectories that lack it), ``sharpness`` (two-step
    average when recorded every step), ``envelope_max`` / ``envelope_min``
    (max/min(E_k, E_{k+1})).
    """
    k_all = np.asarray(traj.k, dtype=float)
    mid_k, mid = _with_axis(traj.midpoint(), k_all[1:])
    la_k, la = _with_axis(traj.loss_average(), k_all)
    amp_k, amp = _with_axis(traj.amplitude(), k_all)
    sub_k, sub = _subspace_amplitude(traj, k_all)
    eig_k = np.asarray(traj.eig_k, dtype=float)
    sharp = np.asarray(traj.sharpness, dtype=float)
    if len(eig_k) > 1 and np.all(np.diff(eig_k) == 1):  # recorded every step: average two steps
        eig_k, sharp = eig_k[:-1], 0.5 * (sharp[:-1] + sharp[1:])
    loss = np.asarray(traj.loss, dtype=float)
    return {"midpoint": (mid_k, mid), "loss_average": (la_k, la), "amplitude": (amp_k, amp),
            "amplitude_subspace": (sub_k, sub), "sharpness": (eig_k, sharp),
            "envelope_max": (k_all[:-1], np.maximum(loss[:-1], loss[1:])),
            "envelope_min": (k_all[:-1], np.minimum(loss[:-1], loss[1:]))}


def _loss_reference(traj) -> float:
    loss_min = getattr(traj, "loss_min", None)
    if loss_min is not None and np.isfinite(loss_min):
        return float(loss_min)
    loss = np.asarray(traj.loss, dtype=float)
    return float(np.min(loss)) if loss.size else 0.0


def check_same_run(gd_trajectory, solution) -> None:
    """Refuse a GD trajectory and a solution that do not describe the same run.

    Checked: the problem (:meth:`effdyn.problems.Problem.identity`: class, parameters and
    a fingerprint of the loss), η, and θ0 — the latter only for a solution that starts at
    k = 0 and records the θ0 it was started from (``effdyn.solve(model, theta0, ...)``). A
    handover — a solution started later from GD's state, its times shifted to GD's
    (``sol.k + k0``), or started from a state (``state0=``) — starts elsewhere by design.
    Identities unknown on either side (objects built by hand, files of older versions) are
    not checked.
    """
    from .problems.base import identity_difference

    eta = float(solution.model.eta)
    if not np.isclose(eta, float(gd_trajectory.eta)):
        raise ValueError(f"`solution` has eta = {eta} but `gd_trajectory` has eta = {gd_trajectory.eta}. Pass "
                         "check=False to compare them anyway.")
    gd_id = getattr(gd_trajectory, "problem_identity", None)
    problem = getattr(solution.model, "problem", None)
    if gd_id and hasattr(problem, "identity"):
        diff = identity_difference(gd_id, problem.identity())
        if diff:
            raise ValueError(f"`solution` was computed on another problem than `gd_trajectory`: {diff}. Compare runs "
                             "of one problem, or pass check=False for a deliberate cross-comparison.")
    theta0_gd = getattr(gd_trajectory, "theta0", None)
    theta0_sol = getattr(solution, "theta0", None)
    starts_at_zero = len(solution.k) > 0 and float(solution.k[0]) == 0.0
    if theta0_gd is not None and theta0_sol is not None and starts_at_zero:
        a, b = np.asarray(theta0_gd, dtype=float), np.asarray(theta0_sol, dtype=float)
        scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
        if a.shape != b.shape or not np.all(np.abs(a - b) <= 1e-12 * scale):
            gap = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
            raise ValueError(f"`solution` starts from another θ0 than `gd_trajectory` (max |Δθ0| = {gap:.3g}). "
                             "Compare runs from one start, or pass check=False for a deliberate cross-comparison.")


def compare(gd_trajectory, solution, window=None, *, spike_tolerance: float = SPIKE_TOLERANCE,
            check: bool = True) -> Metrics:
    """Errors of an effective-model ``solution`` against a GD run on the same problem.

    Parameters
    ----------
    gd_trajectory : effdyn.GDTrajectory
        Reference run (``effdyn.gd``) with the same problem and η; run it with ``n_eigs``
        at least the model's rank for the subspace amplitude.
    solution : effdyn.solution.Solution
        Output of ``effdyn.solve``; its observables are interpolated to GD's integer steps
        (save densely enough to resolve spikes).
    window : None | "eos" | "all" | "last-third" | (k0, k1)
        GD steps to compare over. None/"eos": from GD's EoS onset (first step with sharpness
        above 2/η; step 0 if it never gets there) to the end of the shorter run. Every
        window starts no earlier than the solution's first saved step (a solution handed
        over from GD at step k0, ``solve(model, start=traj.state_at(k0))``, is compared
        from k0 on).
    spike_tolerance : float
        Largest |k_model − k_GD| (GD steps) at which a model spike matches a GD spike.
    check : bool, default True
        Refuse runs that do not belong together: another problem (class, parameters or a
        fingerprint of the loss differ), another η, or another θ0 (see
        :func:`check_same_run`). False compares them anyway, for deliberate
        cross-comparisons.

    Returns
    -------
    Metrics
        Normalised errors; see :class:`Metrics` for each scale.
    """
    if not hasattr(gd_trajectory, "midpoint"):
        raise TypeError(f"`gd_trajectory` must be an effdyn.GDTrajectory; got {type(gd_trajectory).__name__}.")
    if not hasattr(solution, "observables"):
        raise TypeError(f"`solution` must be an effdyn Solution; got {type(solution).__name__}.")
    if isinstance(spike_tolerance, bool) or not isinstance(spike_tolerance, (int, float, np.integer, np.floating)) \
            or not spike_tolerance >= 0:
        raise ValueError(f"`spike_tolerance` must be a number of GD steps >= 0; got {spike_tolerance!r}.")
    if not isinstance(check, bool):
        raise TypeError(f"`check` must be True or False; got {check!r}.")
    if len(solution.k) < 2:
        raise ValueError("`solution` has fewer than two saved states; nothing to compare.")
    if check:
        check_same_run(gd_trajectory, solution)
    eta = float(solution.model.eta)
    avg = gd_time_averages(gd_trajectory)
    last = min(avg["midpoint"][0][-1], avg["loss_average"][0][-1], solution.k[-1])
    k0, k1 = _window(gd_trajectory, window, last)
    # a solution that starts later (a handover from GD's state at k0, sol.k[0] = k0) is
    # compared from its first step on: before it there is nothing of the model to compare
    k0 = max(k0, int(math.ceil(float(solution.k[0]))))
    if k1 <= k0:
        raise ValueError(f"the comparison window [{k0}, {k1}] is empty (GD or the model stopped too early).")
    obs = solution.observables
    ks = solution.k

    def model_at(name, kk):
        return np.interp(kk, ks, np.asarray(obs[name], dtype=float))

    def in_window(series):
        kk, vv = series
        sel = (kk >= k0) & (kk <= k1)
        return kk[sel], vv[sel]

    def rel_error(model, gd, scale, tiny=0.0):
        if gd.size == 0:
            return math.nan
        return float(np.mean(np.abs(model - gd)) / (scale if scale > tiny else 1.0))

    # time-averaged loss and its scale
    kk, lgd = in_window(avg["loss_average"])
    loss_k = np.asarray(gd_trajectory.k, dtype=float)
    loss_all = np.asarray(gd_trajectory.loss, dtype=float)
    raw = loss_all[(loss_k >= k0) & (loss_k <= k1)]
    ref = _loss_reference(gd_trajectory)
    loss_range = float(np.ptp(raw)) if raw.size else 0.0
    loss_mean = float(np.mean(np.abs(lgd - ref))) if lgd.size else 0.0
    loss_floor = LOSS_FLOOR * abs(float(loss_all[0]) - ref) if loss_all.size else 0.0
    loss_scale = max(loss_range, loss_mean, loss_floor)
    lm = model_at("time_avg_loss", kk)
    loss_error = rel_error(lm, lgd, loss_scale)

    # sharpness
    kk_s, sgd = in_window(avg["sharpness"])
    sm = model_at("sharpness", kk_s)
    if getattr(gd_trajectory, "variant", "gd") == "gd":
        sharp_scale = 2.0 / eta
    else:  # NGD and √E-GD drift along their minimisers far below 2/η
        sharp_scale = float(np.mean(np.abs(sgd))) if kk_s.size else float("nan")
    sharp_err = float(np.mean(np.abs(sm - sgd)) / sharp_scale) if kk_s.size else float("nan")

    # amplitude: in GD's tracked subspace (headline) and along the top eigenvector
    kk_a, agd = in_window(avg["amplitude_subspace"])
    am = model_at("amplitude_subspace" if "amplitude_subspace" in obs else "amplitude", kk_a)
    amp_scale = float(np.mean(agd)) if agd.size else 0.0
    amp_err = rel_error(am, agd, amp_scale, 1e-12)
    kk_t, tgd = in_window(avg["amplitude"])
    tm = model_at("amplitude", kk_t)
    top_scale = float(np.mean(tgd)) if tgd.size else 0.0
    top_err = rel_error(tm, tgd, top_scale, 1e-12)

    # envelope of each two-step pair against the model's E(θ ± √s v)
    if "envelope_plus" in obs and "envelope_minus" in obs:
        kk_e, emax = in_window(avg["envelope_max"])
        _, emin = in_window(avg["envelope_min"])
        ep, em = model_at("envelope_plus", kk_e), model_at("envelope_minus", kk_e)
        dev = 0.5 * (np.abs(np.maximum(ep, em) - emax) + np.abs(np.minimum(ep, em) - emin))
        env_err = float(np.mean(dev)) / (loss_scale if loss_scale > 0 else 1.0) if dev.size else math.nan
    else:
        env_err = math.nan

    # spikes of the two-step averaged loss, GD against the model's time-averaged loss
    floor = SPIKE_FLOOR * loss_scale
    sk_gd, sh_gd = detect_spikes(kk, lgd, ref=ref, floor=floor)
    sk_m, sh_m = detect_spikes(kk, lm, ref=ref, floor=floor)
    spikes = match_spikes(sk_gd, sh_gd, sk_m, sh_m, tolerance=spike_tolerance, ref=ref)

    # midpoint trajectory distance
    kk_m, mid = in_window(avg["midpoint"])
    theta = np.asarray(obs["theta"], dtype=float)
    tmid = np.stack([np.interp(kk_m, ks, theta[:, j]) for j in range(theta.shape[1])], axis=1)
    dist_abs = float(np.sqrt(np.mean(np.sum((tmid - mid) ** 2, axis=1))))
    dist_ref = float(np.sqrt(np.mean(np.sum(mid**2, axis=1))))

    def mean(x):
        return float(np.mean(x)) if np.size(x) else math.nan

    return Metrics(
        k0=k0, k1=k1, loss_error=loss_error, sharpness_error=sharp_err, amplitude_error=amp_err,
        distance=dist_abs / dist_ref if dist_ref > 0 else dist_abs, distance_abs=dist_abs, loss_scale=loss_scale,
        sharpness_scale=sharp_scale, amplitude_scale=amp_scale, mean_loss_model=mean(lm), mean_loss_gd=mean(lgd),
        mean_sharpness_model=mean(sm), mean_sharpness_gd=mean(sgd),
        mean_amplitude_model=mean(am), mean_amplitude_gd=amp_scale,
        amplitude_error_top=top_err, amplitude_scale_top=top_scale, mean_amplitude_model_top=mean(tm),
        mean_amplitude_gd_top=top_scale, loss_ref=ref, envelope_error=env_err,
        n_spikes_gd=spikes["n_gd"], n_spikes_model=spikes["n_model"], n_spikes_matched=spikes["n_matched"],
        spike_timing_error=spikes["timing_error"], spike_height_error=spikes["height_error"],
        distance_scale=dist_ref,
    )
