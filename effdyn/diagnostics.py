"""Comparing an effective model with discrete GD, the arbiter of every model.

GD oscillates with period two at the Edge of Stability, so a continuous model is compared
with GD's *time averages* (theory §1): the two-step midpoint θ̄_k, the two-step loss
average ½(E_k + E_{k+1}), the half-step amplitude along the top eigenvector, and the
sharpness averaged over two steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Metrics:
    """Errors of a model against GD over a window of GD steps ``[k0, k1]``.

    Each error is a mean absolute deviation over the GD steps of the window divided by a
    stated scale, so 0.05 reads "5 % of the scale":

    * ``loss_error``: model ``time_avg_loss`` vs GD's two-step loss average; scale = the
      range (max − min) of GD's loss over the window (``loss_scale``).
    * ``sharpness_error``: model sharpness vs GD's two-step averaged sharpness; scale = 2/η
      for plain GD (the edge it hovers at), and GD's mean sharpness over the window for the
      normalised and √E variants, whose sharpness is not tied to 2/η (``sharpness_scale``).
    * ``amplitude_error``: model amplitude vs GD's half-step amplitude; scale = the mean GD
      amplitude over the window (``amplitude_scale``; the error is absolute, in parameter
      units, when GD does not oscillate, i.e. when that mean is below 1e-12).
    * ``distance``: RMS over the window of ‖θ_model − θ̄_GD‖ divided by the RMS of ‖θ̄_GD‖
      (``distance_abs`` is the RMS distance itself).

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

    def as_dict(self) -> dict:
        return asdict(self)


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


def gd_time_averages(traj) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GD's time-averaged series, each as (k, values): midpoint θ̄, loss average,
    half-step amplitude and the two-step averaged sharpness."""
    k_all = np.asarray(traj.k, dtype=float)
    mid_k, mid = _with_axis(traj.midpoint(), k_all[1:])
    la_k, la = _with_axis(traj.loss_average(), k_all)
    amp_k, amp = _with_axis(traj.amplitude(), k_all)
    eig_k = np.asarray(traj.eig_k, dtype=float)
    sharp = np.asarray(traj.sharpness, dtype=float)
    if len(eig_k) > 1 and np.all(np.diff(eig_k) == 1):  # recorded every step: average two steps
        eig_k, sharp = eig_k[:-1], 0.5 * (sharp[:-1] + sharp[1:])
    return {"midpoint": (mid_k, mid), "loss_average": (la_k, la), "amplitude": (amp_k, amp),
            "sharpness": (eig_k, sharp)}


def compare(gd_trajectory, solution, window=None) -> Metrics:
    """Errors of an effective-model ``solution`` against a GD run on the same problem.

    Parameters
    ----------
    gd_trajectory : effdyn.GDTrajectory
        Reference run (``effdyn.gd``) with the same problem and η.
    solution : effdyn.solution.Solution
        Output of ``effdyn.solve``; its observables are interpolated to GD's integer steps.
    window : None | "eos" | "all" | "last-third" | (k0, k1)
        GD steps to compare over. None/"eos": from GD's EoS onset (first step with sharpness
        above 2/η; step 0 if it never gets there) to the end of the shorter run.

    Returns
    -------
    Metrics
        Normalised errors; see :class:`Metrics` for each scale.
    """
    if not hasattr(gd_trajectory, "midpoint"):
        raise TypeError(f"`gd_trajectory` must be an effdyn.GDTrajectory; got {type(gd_trajectory).__name__}.")
    if not hasattr(solution, "observables"):
        raise TypeError(f"`solution` must be an effdyn Solution; got {type(solution).__name__}.")
    if len(solution.k) < 2:
        raise ValueError("`solution` has fewer than two saved states; nothing to compare.")
    eta = float(solution.model.eta)
    if not np.isclose(eta, float(gd_trajectory.eta)):
        raise ValueError(f"`solution` has eta = {eta} but `gd_trajectory` has eta = {gd_trajectory.eta}.")
    avg = gd_time_averages(gd_trajectory)
    last = min(avg["midpoint"][0][-1], avg["loss_average"][0][-1], solution.k[-1])
    k0, k1 = _window(gd_trajectory, window, last)
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

    # time-averaged loss
    kk, lgd = in_window(avg["loss_average"])
    loss_k = np.asarray(gd_trajectory.k, dtype=float)
    raw = np.asarray(gd_trajectory.loss, dtype=float)[(loss_k >= k0) & (loss_k <= k1)]
    loss_scale = float(np.ptp(raw)) if raw.size else 0.0
    lm = model_at("time_avg_loss", kk)
    loss_error = float(np.mean(np.abs(lm - lgd)) / (loss_scale if loss_scale > 0 else 1.0))

    # sharpness
    kk_s, sgd = in_window(avg["sharpness"])
    sm = model_at("sharpness", kk_s)
    if getattr(gd_trajectory, "variant", "gd") == "gd":
        sharp_scale = 2.0 / eta
    else:  # NGD and √E-GD drift along their minimisers far below 2/η
        sharp_scale = float(np.mean(np.abs(sgd))) if kk_s.size else float("nan")
    sharp_err = float(np.mean(np.abs(sm - sgd)) / sharp_scale) if kk_s.size else float("nan")

    # amplitude
    kk_a, agd = in_window(avg["amplitude"])
    am = model_at("amplitude", kk_a)
    amp_scale = float(np.mean(agd)) if agd.size else 0.0
    amp_err = float(np.mean(np.abs(am - agd)) / (amp_scale if amp_scale > 1e-12 else 1.0))

    # midpoint trajectory distance
    kk_m, mid = in_window(avg["midpoint"])
    theta = np.asarray(obs["theta"], dtype=float)
    tm = np.stack([np.interp(kk_m, ks, theta[:, j]) for j in range(theta.shape[1])], axis=1)
    dist_abs = float(np.sqrt(np.mean(np.sum((tm - mid) ** 2, axis=1))))
    ref = float(np.sqrt(np.mean(np.sum(mid**2, axis=1))))
    return Metrics(
        k0=k0, k1=k1, loss_error=loss_error, sharpness_error=sharp_err, amplitude_error=amp_err,
        distance=dist_abs / ref if ref > 0 else dist_abs, distance_abs=dist_abs, loss_scale=loss_scale,
        sharpness_scale=sharp_scale, amplitude_scale=amp_scale, mean_loss_model=float(np.mean(lm)), mean_loss_gd=float(np.mean(lgd)),
        mean_sharpness_model=float(np.mean(sm)) if sm.size else float("nan"),
        mean_sharpness_gd=float(np.mean(sgd)) if sgd.size else float("nan"),
        mean_amplitude_model=float(np.mean(am)), mean_amplitude_gd=amp_scale,
    )
