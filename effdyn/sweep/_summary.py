"""What a sweep keeps of one run: GD's summary (onset, final loss, ηS/2, period, amplitude),
every model's metrics, and the laws checked against GD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["detect_period", "gd_summary", "LAWS", "Law", "regime_name", "PERIOD_RULE"]

PERIOD_RULE = (
    "GD's period p is the smallest p in 1, 2, 4, ..., period_max (at most a third of the window) with "
    "max_k ||x_{k+p} - x_k|| <= period_tol * max_k ||x_k|| over the last third of the run, x = theta "
    "(every step recorded) or else the loss; p = 1 means converged, 0 means no such p (chaotic or "
    "quasi-periodic), -1 undetermined (GD did not finish or the window is too short)."
)


def detect_period(series, *, tol: float = 1e-4, period_max: int = 64, window: str | int = "last-third"):
    """GD's period from a recorded series (θ of shape (K, P), or a loss of shape (K,)).

    Rule: over the window (default the last third of the series) find the smallest
    ``p`` in 1, 2, 4, ..., ``period_max`` such that

        max_k ‖x_{k+p} − x_k‖ ≤ tol · max_k ‖x_k‖          (k and k + p in the window).

    Returns ``(p, residual)``: ``p = 1`` a fixed point (converged), ``p = 2, 4, ...`` a
    periodic orbit, ``p = 0`` no period up to ``period_max`` (chaotic, or quasi-periodic:
    the minimal valley's slow Lotka–Volterra cycle), ``p = -1`` when the window holds fewer
    than 3 points or the series is not finite. ``residual`` is the left side over the right
    side at the returned ``p`` (at the smallest residual when ``p = 0``).

    A slowly converging orbit (near a bifurcation) leaves a residual of the order of its
    remaining transient: the default ``tol = 1e-4`` classifies the deep matrix
    factorisation sweep with 2000 steps unambiguously (residuals below 1e-6 at the period,
    above 5e-3 below it).
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    start = int(round(2 * n / 3)) if window == "last-third" else max(0, n - int(window))
    w = x[start:]
    if len(w) < 3 or not np.all(np.isfinite(w)):
        return -1, float("nan")
    scale = float(np.max(np.linalg.norm(w, axis=1)))
    if scale == 0.0:
        return 1, 0.0
    best_p, best_r = 0, np.inf
    p = 1
    while p <= period_max and p <= len(w) // 3:
        r = float(np.max(np.linalg.norm(w[p:] - w[:-p], axis=1))) / scale
        if r <= tol:
            return p, r
        if r < best_r:
            best_r = r
        p *= 2
    return 0, float(best_r)


def regime_name(period: int) -> str:
    if period == 1:
        return "converged"
    if period == 0:
        return "chaotic"
    if period < 0:
        return "undetermined"
    return f"period-{period}"


def _last_third(k, values):
    k = np.asarray(k, dtype=float)
    values = np.asarray(values, dtype=float)
    if len(k) == 0:
        return values[:0]
    k_end = k[-1]
    return values[k >= 2 * k_end / 3]


def gd_summary(traj, eta: float, *, period_tol: float = 1e-4, period_max: int = 64) -> dict:
    """GD's per-point summary (plain floats and ints, ready for JSON)."""
    out = {"status": str(getattr(traj, "status", "success")), "message": str(getattr(traj, "message", ""))}
    k = np.asarray(traj.k)
    loss = np.asarray(traj.loss, dtype=float)
    out["steps_done"] = int(k[-1]) if len(k) else 0
    onset = traj.eos_onset() if hasattr(traj, "eos_onset") else None
    out["eos_onset"] = -1 if onset is None else int(onset)
    out["final_loss"] = float(loss[-1]) if len(loss) else float("nan")
    tail_loss = _last_third(k, loss)
    out["mean_loss"] = float(np.mean(tail_loss)) if len(tail_loss) else float("nan")
    sharp = _last_third(traj.eig_k, traj.sharpness) if len(getattr(traj, "eig_k", ())) else np.empty(0)
    out["sharpness_ratio"] = float(np.mean(eta * sharp / 2)) if len(sharp) else float("nan")
    out["final_sharpness"] = float(np.asarray(traj.sharpness)[-1]) if len(getattr(traj, "eig_k", ())) else float("nan")
    amp = float("nan")
    try:
        ka, a = traj.amplitude()
        tail = _last_third(ka, a)
        if len(tail):
            amp = float(np.sqrt(np.mean(tail ** 2)))
    except (ValueError, AttributeError):
        pass
    out["amplitude_rms"] = amp
    theta = np.asarray(getattr(traj, "theta", np.empty((0, 0))), dtype=float)
    theta_k = np.asarray(getattr(traj, "theta_k", np.arange(len(theta))))
    every_step = len(theta) == len(k) and len(theta) > 0 and np.array_equal(theta_k, k)
    ok = out["status"] == "success"
    if every_step:
        series, name = theta, "theta"
    else:
        series, name = loss, "loss"
    if ok:
        p, r = detect_period(series, tol=period_tol, period_max=period_max)
    else:
        p, r = -1, float("nan")
    out["period"], out["period_residual"], out["period_series"] = int(p), float(r), name
    out["regime"] = regime_name(int(p))
    return out


# --- laws checked per point ----------------------------------------------------------------

@dataclass(frozen=True)
class Law:
    """A closed-form prediction checked against GD at every point of a sweep.

    ``evaluate(problem, eta, gd)`` returns ``(expected, observed)`` (floats) or None where
    the law does not apply (then the check is recorded as NaN / not applicable).
    """

    name: str
    description: str
    evaluate: Callable


def _valley_amplitude(problem, eta, gd):
    eps = getattr(problem, "eps", None)
    if type(problem).__name__ != "MinimalValley" or eps is None or gd["eos_onset"] < 0:
        return None
    return float(np.sqrt(2 * eps)), gd["amplitude_rms"]


def _balanced_sharpness(problem, eta, gd):
    if type(problem).__name__ != "DeepMatrixFactorization" or gd["period"] != 1:
        return None
    depth = int(problem.depth)
    s1 = float(np.linalg.svd(np.asarray(problem.target), compute_uv=False)[0])
    return depth * s1 ** (2 * (depth - 1) / depth), gd["final_sharpness"]


#: Laws a sweep can check (``[sweep] checks = { name = relative tolerance }``).
LAWS = {
    law.name: law
    for law in (
        Law("valley-amplitude", "minimal valley at EoS: GD's RMS half-step amplitude over the last third equals "
                                "sqrt(2 eps) (theory §5)", _valley_amplitude),
        Law("balanced-sharpness", "deep matrix factorisation, where GD converges: its final sharpness equals the "
                                  "balanced minimum's L*sigma1^(2(L-1)/L) (3 sigma1^(4/3) for depth 3)",
            _balanced_sharpness),
    )
}
