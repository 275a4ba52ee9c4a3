"""What one run of the suite (or of `effdyn run`) is: a problem, where GD starts, η, the
horizon and the models to compare — shared by the configuration parser (config.py) and the
cases (cases.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ModelSpec", "Setup"]


@dataclass(frozen=True)
class ModelSpec:
    """One effective model to run against GD.

    Parameters
    ----------
    label : str
        Row name in the report and key in the saved files.
    cls : str
        Class name in :mod:`effdyn.models` (e.g. ``"FreeEnergyFlow"``).
    options : dict
        Constructor keyword arguments (besides ``problem`` and ``eta``).
    initial : dict
        Keyword arguments of ``model.initial_state`` (passed through ``effdyn.solve``).
    solver, rtol, atol, save_every :
        Passed to :func:`effdyn.solve`.
    pass_eta : bool, optional
        Construct as ``cls(problem, eta, **options)`` or, for models whose learning rate is
        given in other units (MeanFieldKinetic's ``eta_mf``), ``cls(problem, **options)``;
        the model's ``eta`` must then equal the case's. Default: what the model's
        registration says (:mod:`effdyn.registry`).
    budget : float, optional
        Wall-time limit in seconds for this model's run, overriding the run's default
        (see :func:`effdyn.validation.validate`); the run stops there with status "failed"
        and the partial solution is compared and saved.
    """

    label: str
    cls: str
    options: dict = field(default_factory=dict)
    initial: dict = field(default_factory=dict)
    solver: str = "scipy:LSODA"
    rtol: float = 1e-7
    atol: float = 1e-10
    save_every: float = 1.0
    pass_eta: bool | None = None
    budget: float | None = None

    def __post_init__(self):
        if self.pass_eta is None:
            from ..registry import UnknownNameError, model_entry

            try:
                takes = model_entry(self.cls).takes_eta
            except UnknownNameError:
                takes = True
            object.__setattr__(self, "pass_eta", takes)

    def config(self) -> dict:
        return {"label": self.label, "cls": self.cls, "options": dict(self.options), "initial": dict(self.initial),
                "solver": self.solver, "rtol": self.rtol, "atol": self.atol, "save_every": self.save_every,
                "pass_eta": self.pass_eta, "budget": self.budget}


@dataclass
class Setup:
    """Everything a case run needs: the problem, where GD starts and for how long."""

    problem: object
    theta0: np.ndarray
    eta: float
    steps: int
    models: tuple
    seed: int | None = None
    gd_options: dict = field(default_factory=dict)
    notes: str = ""
    config: dict = field(default_factory=dict)
    #: GD steps after GD's EoS onset at which every model is also started from GD's state
    #: (``traj.state_at``; rows "<model> [handover]"); None: no handover runs.
    handover_offset: int | None = None
