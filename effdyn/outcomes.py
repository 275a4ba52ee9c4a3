"""How a run ended: one vocabulary for solves, GD runs and the validation suite's rows.

``Status`` says what became of a run as a whole; ``Cause`` says why a run stopped early.
Both are string enums, so a status compares equal to its plain value (``sol.status ==
"success"``) and is written to files as that value.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status", "Cause", "status_of"]


class Status(StrEnum):
    """Outcome of a run (or of a row in a validation report)."""

    #: reached the horizon
    SUCCESS = "success"
    #: the state went bad (non-finite, blow-up, a model-specific invalid state)
    DIVERGED = "diverged"
    #: the solver gave up (step-size underflow, too many evaluations, solver failure)
    FAILED = "failed"
    #: Ctrl-C; the partial result is kept
    INTERRUPTED = "interrupted"
    #: the wall-time budget given to the run was used up
    BUDGET = "budget"
    #: a user callback asked the run to stop
    STOPPED = "stopped"
    #: suite rows only: the model raised while being built or run outside the solver
    ERROR = "error"
    #: suite rows only: the model class is not available in this installation
    UNAVAILABLE = "unavailable"
    #: suite rows only: the model cannot be built on this problem (e.g. needs `third`)
    NOT_APPLICABLE = "not applicable"


class Cause(StrEnum):
    """Why a run stopped before its horizon (``IntegrationError.cause``)."""

    NON_FINITE = "non-finite"
    BLOW_UP = "blow-up"
    SIGMA_NOT_PSD = "sigma not PSD"
    SIGMA_NOT_SYMMETRIC = "sigma not symmetric"
    SDCP_FAILED = "sdcp failed"
    STEP_UNDERFLOW = "step-size underflow"
    TOO_MANY_EVALUATIONS = "too many evaluations"
    SOLVER_FAILURE = "solver failure"
    USER_CODE = "user code raised"
    INTERRUPTED = "interrupted"
    TIME_BUDGET = "time budget"
    CALLBACK = "stopped by callback"


_STATUS_OF_CAUSE = {
    Cause.NON_FINITE: Status.DIVERGED,
    Cause.BLOW_UP: Status.DIVERGED,
    Cause.SIGMA_NOT_PSD: Status.DIVERGED,
    Cause.SIGMA_NOT_SYMMETRIC: Status.DIVERGED,
    Cause.SDCP_FAILED: Status.FAILED,
    Cause.STEP_UNDERFLOW: Status.FAILED,
    Cause.TOO_MANY_EVALUATIONS: Status.FAILED,
    Cause.SOLVER_FAILURE: Status.FAILED,
    Cause.USER_CODE: Status.FAILED,
    Cause.INTERRUPTED: Status.INTERRUPTED,
    Cause.TIME_BUDGET: Status.BUDGET,
    Cause.CALLBACK: Status.STOPPED,
}


def status_of(cause) -> Status:
    """The run status that a stopping cause implies (causes are a closed set)."""
    return _STATUS_OF_CAUSE[Cause(cause)]
