"""Exceptions raised by effdyn."""

from __future__ import annotations


class IntegrationError(RuntimeError):
    """A run (GD or an effective model) stopped before its horizon.

    Attributes
    ----------
    step : int or None
        Last GD step index reached (time in GD steps, rounded down).
    time : float or None
        Model time in GD steps at which the run stopped.
    cause : str
        Short machine-readable cause: ``"non-finite"``, ``"blow-up"``,
        ``"step-size underflow"``, ``"sigma not PSD"``, ``"solver failure"``,
        ``"interrupted"``.
    partial : object or None
        What was computed up to the failure (a ``GDTrajectory`` or ``Solution``).
    """

    def __init__(self, message: str, *, step=None, time=None, cause: str = "", partial=None):
        super().__init__(message)
        self.step = step
        self.time = time
        self.cause = cause
        self.partial = partial


class MissingFeatureError(TypeError):
    """A model needs a derivative or feature that the problem does not provide."""
