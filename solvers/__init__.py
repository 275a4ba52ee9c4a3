"""Integrators for effdyn's effective models, behind one entry point :func:`solve`.

Solver names:

* ``"scipy:<method>"`` — adaptive scipy.integrate methods RK45, RK23, DOP853, LSODA,
  Radau, BDF, stepped one accepted step at a time (divergence checks, progress bar);
* ``"diffrax:<Solver>"`` — diffrax Tsit5, Dopri5, Dopri8, Kvaerno5 with a PID step-size
  controller, on the model's JAX drift (needs the ``jax`` extra);
* ``"map"`` — the step-exact map: the model equations stepped once per GD step (dk = 1).

Time is in GD steps for every backend, so a solution at ``k`` compares with GD at step k.
"""

from __future__ import annotations

import numbers

import numpy as np

from effdyn._validation import as_vector, positive_float

from ._diffrax import SOLVERS as _DIFFRAX_SOLVERS
from ._scipy import METHODS as _SCIPY_METHODS

SOLVER_NAMES = (
    [f"scipy:{m}" for m in _SCIPY_METHODS] + [f"diffrax:{s}" for s in _DIFFRAX_SOLVERS] + ["map"]
)

__all__ = ["solve", "SOLVER_NAMES"]


def solve(
    model,
    theta0=None,
    steps=None,
    *,
    solver: str = "scipy:LSODA",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    save_every: float = 1.0,
    throw: bool = True,
    progress=None,
    max_step: float = np.inf,
    first_step: float | None = None,
    max_steps: int = 1_000_000,
    blowup: float = 1e8,
    state0=None,
    seed: int | None = None,
    **initial_options,
):
    """Integrate ``model`` from ``theta0`` over ``steps`` GD steps.

    Parameters
    ----------
    model : effdyn.models.AbstractModel
        The effective model (its problem and η are part of it).
    theta0 : array_like, shape (P,)
        Initial average parameters. Model-specific initial data (e.g. ``sigma0=`` for the
        free-energy flow) are passed as extra keyword arguments.
    steps : float
        Horizon in GD steps (> 0; an integer for ``solver="map"``).
    solver : str
        One of :data:`SOLVER_NAMES`.
    rtol, atol : float
        Tolerances of the adaptive backends (ignored by ``"map"``).
    save_every : float
        Spacing of saved states in GD steps; the horizon is always saved.
    throw : bool
        On divergence or solver failure raise :class:`effdyn.IntegrationError` (carrying the
        partial solution in ``.partial``); with ``throw=False`` return the partial
        :class:`~effdyn.solution.Solution`, whose ``stats.status`` says what happened.
    progress : bool or None
        tqdm progress bar; None shows one only on a terminal for long runs.
    max_step, first_step : float
        Step-size bounds for scipy (``first_step`` is diffrax's ``dt0``).
    max_steps : int
        Step budget of the diffrax backend.
    blowup : float
        A state entry larger than ``blowup · max(1, max|y0|)`` counts as divergence.
    state0 : array_like, optional
        A full model state (e.g. from a previous solution) instead of ``theta0``.
    seed : int, optional
        Recorded in the solution's metadata (models with random seeding take their own).

    Returns
    -------
    Solution
    """
    from effdyn.models.base import AbstractModel

    if not isinstance(model, AbstractModel):
        raise TypeError(f"`model` must be an effdyn model (effdyn.models.*); got {type(model).__name__}.")
    if not isinstance(solver, str) or not (solver in SOLVER_NAMES):
        raise ValueError(f"`solver` must be one of {SOLVER_NAMES}; got {solver!r}.")
    family = solver.split(":")[0]
    if family not in model.supports:
        raise ValueError(
            f"`solver` {solver!r} is not available for {type(model).__name__}; it supports the "
            f"families {list(model.supports)}."
        )
    if steps is None:
        raise TypeError("`steps` (the horizon in GD steps) is required.")
    steps = positive_float(steps, "steps")
    if family == "map" and steps != int(steps):
        raise ValueError(f"`steps` must be an integer number of GD steps for solver='map'; got {steps}.")
    save_every = positive_float(save_every, "save_every")
    if family != "map":
        rtol = positive_float(rtol, "rtol")
        atol = positive_float(atol, "atol")
    if not isinstance(max_steps, numbers.Integral) or max_steps < 1:
        raise ValueError(f"`max_steps` must be an integer >= 1; got {max_steps!r}.")
    blowup = positive_float(blowup, "blowup")
    if state0 is not None:
        if theta0 is not None or initial_options:
            raise ValueError("Pass either `state0` or `theta0` (with model options), not both.")
        y0 = as_vector(state0, "state0", model.state_size)
    else:
        if theta0 is None:
            raise TypeError("`theta0` (initial parameters, shape (P,)) is required.")
        y0 = np.asarray(model.initial_state(theta0, **initial_options), dtype=np.float64)

    if family == "scipy":
        from ._scipy import solve_scipy

        return solve_scipy(model, y0, steps, solver.split(":")[1], rtol=rtol, atol=atol, save_every=save_every,
                           throw=throw, progress=progress, max_step=max_step, first_step=first_step,
                           blowup=blowup, seed=seed)
    if family == "diffrax":
        from ._diffrax import solve_diffrax

        return solve_diffrax(model, y0, steps, solver.split(":")[1], rtol=rtol, atol=atol, save_every=save_every,
                             throw=throw, progress=progress, max_steps=int(max_steps), first_step=first_step,
                             blowup=blowup, seed=seed)
    from ._map import solve_map

    return solve_map(model, y0, steps, save_every=save_every, throw=throw, progress=progress, blowup=blowup, seed=seed)
