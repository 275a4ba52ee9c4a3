"""Pieces shared by the solver backends: the save grid, divergence checks, progress."""

from __future__ import annotations

import numpy as np

from effdyn.outcomes import Cause


def save_grid(steps: float, save_every: float) -> np.ndarray:
    """Save times 0, save_every, 2·save_every, ..., always ending at ``steps``."""
    grid = np.arange(0.0, steps, save_every)
    if len(grid) == 0 or grid[-1] < steps:
        grid = np.append(grid, float(steps))
    return grid


class DivergenceMonitor:
    """Turns an invalid state into a cause string: non-finite, blow-up, model-specific.

    A state larger than ``blowup · max(1, |y0|)`` counts as a blow-up, the size being the
    model's ``magnitude`` (the largest entry in physical units: a state in log coordinates
    is measured by what it represents); the model's ``check_state`` adds its own causes
    (for instance ``"sigma not PSD"``).
    """

    def __init__(self, model, y0: np.ndarray, blowup: float):
        self.model = model
        self.blowup = blowup
        self.bound = blowup * max(1.0, model.magnitude(y0) if y0.size else 1.0)

    def cause(self, y: np.ndarray) -> str | None:
        if not np.all(np.isfinite(y)):
            return Cause.NON_FINITE
        if y.size and self.model.magnitude(y) > self.bound:
            return Cause.BLOW_UP
        cause = self.model.check_state(y)
        if cause is None:
            return None
        if cause not in Cause._value2member_map_:
            raise TypeError(
                f"{type(self.model).__name__}.check_state returned {cause!r}, which is not a cause of "
                f"effdyn.outcomes.Cause ({', '.join(c.value for c in Cause)}); return one of them or None."
            )
        return Cause(cause)

    def describe(self, cause: str, y: np.ndarray) -> str:
        """The cause with the numbers behind it, for error messages."""
        if cause == "non-finite":
            bad = np.flatnonzero(~np.isfinite(y))
            return f"non-finite state (NaN/inf at state indices {bad[:5].tolist()}{' ...' if len(bad) > 5 else ''})"
        if cause == "blow-up":
            return (f"blow-up (max |y| = {self.model.magnitude(y):.3g} exceeds the bound {self.bound:.3g} = "
                    f"blowup · max(1, max|y0|) with blowup = {self.blowup:g})")
        return cause


def progress_bar(total: float, progress, desc: str):
    """A progress display in units of GD steps (:func:`effdyn.progress.progress_meter`), or
    None when nothing is shown.

    ``progress=None``: a tqdm bar on a terminal for runs of at least 2000 steps (as before),
    status lines in scripts only when ``$EFFDYN_PROGRESS_EVERY`` asks for them; True: a bar
    on a terminal, status lines elsewhere; False: nothing.
    """
    from effdyn.progress import progress_meter

    meter = progress_meter(total, progress, desc, unit="step", min_total=2000, leave=False,
                           bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}]")
    return meter if meter.active else None
