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

from ._checkpoint import CHECKPOINT_SOLVERS, check_checkpoint_args, checkpoint_info, resume
from ._diffrax import SOLVERS as _DIFFRAX_SOLVERS
from ._scipy import METHODS as _SCIPY_METHODS

SOLVER_NAMES = (
    [f"scipy:{m}" for m in _SCIPY_METHODS] + [f"diffrax:{s}" for s in _DIFFRAX_SOLVERS] + ["map"]
)

__all__ = ["solve", "resume", "checkpoint_info", "SOLVER_NAMES", "CHECKPOINT_SOLVERS"]


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
    checkpoint=None,
    checkpoint_every: float | None = None,
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
    checkpoint : str or os.PathLike, optional
        File to which the full integrator state is written (atomically) every
        ``checkpoint_every`` GD steps, at the start and at the end of the run, and when the
        run is interrupted with Ctrl-C (the first Ctrl-C lets the current step finish, so
        the checkpoint is exact; a second one stops at once, keeping the last checkpoint).
        Continue with :func:`effdyn.solvers.resume`, which reproduces the uninterrupted run
        bit for bit on the same machine. Supported by :data:`CHECKPOINT_SOLVERS` (the map
        and every scipy method, LSODA included); the diffrax backend refuses it.
    checkpoint_every : float, optional
        Spacing of the checkpoints in GD steps (default: a tenth of the horizon). Each
        checkpoint holds all states saved so far, so very frequent checkpoints of a long
        run cost time.

    Returns
    -------
    Solution

    Raises
    ------
    IntegrationError
        The state became non-finite, exceeded the blow-up bound or failed the model's
        ``check_state`` (e.g. "sigma not PSD"); the step size underflowed; the solver gave
        up; or the run was interrupted (always raised, with the partial solution). The
        error carries ``step``, ``time``, ``cause`` and ``partial``.
    TypeError, ValueError
        Invalid arguments, before anything runs; the message names the argument.
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
    if family == "map" and save_every != int(save_every):
        raise ValueError(f"`save_every` must be a whole number of GD steps for solver='map'; got {save_every}.")
    if family != "map":
        rtol = positive_float(rtol, "rtol")
        atol = positive_float(atol, "atol")
    if not isinstance(max_steps, numbers.Integral) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"`max_steps` must be an integer >= 1; got {max_steps!r}.")
    if isinstance(max_step, bool) or not isinstance(max_step, numbers.Real) or not (max_step > 0):
        raise ValueError(f"`max_step` must be a number > 0 (np.inf for no bound); got {max_step!r}.")
    max_step = float(max_step)
    if first_step is not None:
        first_step = positive_float(first_step, "first_step")
        if first_step > steps:
            raise ValueError(f"`first_step` = {first_step:g} exceeds the horizon `steps` = {steps:g}.")
    blowup = positive_float(blowup, "blowup")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None; got {progress!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0; got {seed!r}.")
    seed = None if seed is None else int(seed)
    ckpt_path, ckpt_every = check_checkpoint_args(checkpoint, checkpoint_every, solver, steps)
    identity = baseline = None
    if ckpt_path is not None:
        from ._checkpoint import model_identity, public_baseline

        # the model as built: initial_state may fill in parameters
        identity, baseline = model_identity(model), public_baseline(model)
    if state0 is not None:
        if theta0 is not None or initial_options:
            raise ValueError("Pass either `state0` or `theta0` (with model options), not both.")
        y0 = as_vector(state0, "state0", model.state_size)
        bad = model.check_state(y0)
        if bad is not None:
            raise ValueError(f"`state0` is not a valid state of {type(model).__name__}: {bad}.")
    else:
        if theta0 is None:
            raise TypeError("`theta0` (initial parameters, shape (P,)) is required.")
        _check_initial_options(model, initial_options)
        y0 = np.asarray(model.initial_state(theta0, **initial_options), dtype=np.float64)

    ckpt = None
    if ckpt_path is not None:
        from ._checkpoint import Checkpointer, make_header

        args = dict(steps=steps, rtol=None if family == "map" else rtol, atol=None if family == "map" else atol,
                    save_every=save_every, max_step=max_step, first_step=first_step, blowup=blowup, seed=seed,
                    y0=y0)
        ckpt = Checkpointer(ckpt_path, ckpt_every, make_header(model, solver, args, ckpt_every, identity), baseline)

    if family == "scipy":
        from ._scipy import solve_scipy

        return solve_scipy(model, y0, steps, solver.split(":")[1], rtol=rtol, atol=atol, save_every=save_every,
                           throw=throw, progress=progress, max_step=max_step, first_step=first_step,
                           blowup=blowup, seed=seed, checkpoint=ckpt)
    if family == "diffrax":
        from ._diffrax import solve_diffrax

        return solve_diffrax(model, y0, steps, solver.split(":")[1], rtol=rtol, atol=atol, save_every=save_every,
                             throw=throw, progress=progress, max_steps=int(max_steps), first_step=first_step,
                             blowup=blowup, seed=seed)
    from ._map import solve_map

    return solve_map(model, y0, steps, save_every=save_every, throw=throw, progress=progress, blowup=blowup, seed=seed,
                     checkpoint=ckpt)


def _check_initial_options(model, options: dict):
    """Extra keywords of ``solve`` go to ``model.initial_state``; name any it does not take."""
    import inspect

    params = list(inspect.signature(model.initial_state).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise TypeError(
            f"`{unknown[0]}` is neither an argument of `solve` nor an initial-data option of "
            f"{type(model).__name__}.initial_state (which takes {allowed or 'none'})."
        )
