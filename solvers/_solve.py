"""The two entry points: :func:`solve` runs a model from its initial data, :func:`resume`
continues a checkpointed run."""

from __future__ import annotations

import json
import numbers
import warnings

import numpy as np

from effdyn._checks import as_vector, positive_float

from ._checkpoint import CHECKPOINT_SOLVERS, Checkpointer, check_checkpoint_args, load_checkpoint, make_header
from ._diffrax import SOLVERS as _DIFFRAX_SOLVERS
from ._scipy import METHODS as _SCIPY_METHODS

SOLVER_NAMES = (
    [f"scipy:{m}" for m in _SCIPY_METHODS] + [f"diffrax:{s}" for s in _DIFFRAX_SOLVERS] + ["map"]
)

#: Fraction of the machine's memory the saved states of one solve may take before it is refused.
_MEMORY_FRACTION = 0.5
#: Above this state size the implicit methods (and LSODA, which switches to one) are refused:
#: they estimate the state_size × state_size Jacobian by finite differences, one drift
#: evaluation per component (on the 433-parameter peer MLP, 95 % of LSODA's evaluations).
IMPLICIT_MAX_STATE = 1000
_IMPLICIT = ("scipy:LSODA", "scipy:BDF", "scipy:Radau", "diffrax:Kvaerno5")


def default_solver(model) -> str:
    """The solver ``solve`` uses when none is given: LSODA (stiffness-switching, adaptive) for
    small states, the explicit RK45 above :data:`IMPLICIT_MAX_STATE`, and the step-exact map
    for models that have no continuous form."""
    if "scipy" not in model.supports:
        return "map"
    return "scipy:LSODA" if model.state_size <= IMPLICIT_MAX_STATE else "scipy:RK45"


def solve(
    model,
    theta0=None,
    steps=None,
    *,
    solver: str | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    save_every: float = 1.0,
    throw: bool = True,
    progress=None,
    max_step: float = np.inf,
    first_step: float | None = None,
    max_steps: int = 1_000_000,
    min_step: float = 1e-8,
    max_evals_per_step: int | None = None,
    blowup: float = 1e8,
    initial: dict | None = None,
    state0=None,
    run=None,
    start=None,
    seed: int | None = None,
    checkpoint=None,
    checkpoint_every: float | None = None,
    time_limit: float | None = None,
    callback=None,
    engine: str = "auto",
    **deprecated_initial,
):
    """Integrate ``model`` from ``theta0`` (or from GD's state, ``start=``) over ``steps`` GD steps.

    Parameters
    ----------
    model : effdyn.models.AbstractModel
        The effective model (its problem and η are part of it).
    theta0 : array_like, shape (P,)
        Initial average parameters.
    steps : float
        Horizon in GD steps (> 0; an integer for ``solver="map"``), counted from the start
        (from k0 for ``start=``).
    solver : str, optional
        One of :data:`SOLVER_NAMES`. Default (:func:`default_solver`): ``"scipy:LSODA"`` for
        states of at most :data:`IMPLICIT_MAX_STATE` (= 1000) values, ``"scipy:RK45"`` above
        (implicit methods and LSODA are refused there: their finite-difference Jacobians cost
        one drift evaluation per state component), ``"map"`` for models without a continuous
        form.
    rtol, atol : float
        Tolerances of the adaptive backends (ignored by ``"map"``).
    save_every : float
        Spacing of saved states in GD steps; the horizon is always saved.
    throw : bool
        On divergence or solver failure raise :class:`effdyn.IntegrationError` (carrying the
        partial solution in ``.partial``); with ``throw=False`` return the partial
        :class:`~effdyn.solution.Solution`, whose ``stats.status`` says what happened. This
        holds also for errors raised inside the model's drift or map (an SDCP without
        solution, an exception from user code).
    progress : bool or None
        tqdm progress bar; None shows one only on a terminal for long runs.
    max_step, first_step : float
        Step-size bounds for scipy (``first_step`` is diffrax's ``dt0``).
    max_steps : int
        Step budget of the diffrax backend.
    min_step : float
        Scipy backends: 50 accepted steps in a row shorter than this (in GD steps) stop the
        run with cause "step-size underflow" (a runaway or singular solution).
    max_evals_per_step : int, optional
        Scipy backends: more drift evaluations than this within one GD step, or more
        than a fifth of it in each of three GD steps in a row, stop the run with cause
        "too many evaluations" ("stiff or diverging"); default 5000 for the explicit
        methods (RK23, RK45, DOP853), ``5000 + 50·state_size`` for BDF, Radau and LSODA
        (finite-difference Jacobians).
    blowup : float
        A state entry larger than ``blowup · max(1, max|y0|)`` counts as divergence.
    initial : dict, optional
        The model's initial-data options (e.g. ``{"sigma0": V}`` for the free-energy
        flow; ``model.initial_options()`` lists them). Passing them as extra keyword
        arguments of ``solve`` still works but is deprecated.
    state0 : array_like, optional
        A full model state (e.g. from a previous solution) instead of ``theta0``.
    run : effdyn.models.run_state.RunState, optional
        The run state that goes with ``state0`` (e.g. ``sol.run`` of a previous solution:
        warm starts and quantities fixed at the start); default: a fresh one.
    start : effdyn.handover.HandoverState, optional
        GD's state at a step k0 (``traj.state_at(k0)``) instead of ``theta0``: the model
        maps it to its own initial state (``model.start_from``), a model on another problem
        or with another η is refused, and the solution's time axis continues GD's:
        ``sol.k`` runs from k0 to k0 + ``steps``, so ``effdyn.compare(traj, sol)`` compares
        the same GD steps. The state is kept in ``sol.extra["handover"]``.
    seed : int, optional
        Recorded in the solution's metadata (models with random seeding take their own).
    checkpoint : str or os.PathLike, optional
        File to which the full integrator state is written (atomically, data only) every
        ``checkpoint_every`` GD steps, at the start and at the end of the run, and when the
        run is interrupted with Ctrl-C (the first Ctrl-C lets the current step finish, so
        the checkpoint is exact; a second one stops at once, keeping the last checkpoint).
        Continue with :func:`effdyn.resume`, which reproduces the uninterrupted run bit for
        bit on the same machine. Supported by :data:`CHECKPOINT_SOLVERS` (the map and every
        scipy method, LSODA included); the diffrax backend refuses it.
    checkpoint_every : float, optional
        Spacing of the checkpoints in GD steps (default: a tenth of the horizon).
    time_limit : float, optional
        Wall-time budget in seconds: the run stops after the first step past it (the scipy
        backends also check it at every drift evaluation inside a step), with status
        "budget" and the partial solution (raised only when ``throw=True``).
    callback : callable, optional
        ``callback(k, y)`` after every accepted step (scipy, map); a truthy return value
        (e.g. a message) stops the run with status "stopped" and that message.
    engine : {"auto", "numpy", "jax"}, default "auto"
        The engine of ``solver="map"``. "jax": the model's compiled map
        (``model.jax_map()``, :mod:`effdyn.engine_jax.map`): chunks of GD steps in one jitted
        ``lax.scan`` each, the eigen-tracker inside, on whatever device JAX has; for
        problems from ``from_jax`` and models that have one (gradient, edge, free-energy
        and central flow). It checks non-finite states and blow-up at every step, the
        model's ``check_state`` and the time budget at the end of every chunk, and takes no
        ``callback``. "numpy": the model's ``map_step`` in a Python loop. "auto" (default):
        "jax" where it is available and no ``callback`` is given, "numpy" otherwise. Other
        solvers take "auto" only.

    Returns
    -------
    Solution

    Raises
    ------
    IntegrationError
        The state became non-finite, exceeded the blow-up bound or failed the model's
        ``check_state``; the step size underflowed; the solver gave up or needed too many
        evaluations; model or user code raised; the budget or the callback stopped the run;
        or the run was interrupted (always raised, with the partial solution). The error
        carries ``step``, ``time``, ``cause`` and ``partial``.
    TypeError, ValueError
        Invalid arguments, before anything runs; the message names the argument.
    """
    from effdyn.models.base import AbstractModel

    if not isinstance(model, AbstractModel):
        raise TypeError(f"`model` must be an effdyn model (effdyn.models.*); got {type(model).__name__}.")
    if solver is None:
        solver = default_solver(model)
    if not isinstance(solver, str) or not (solver in SOLVER_NAMES):
        raise ValueError(f"`solver` must be one of {SOLVER_NAMES}; got {solver!r}.")
    if solver in _IMPLICIT and model.state_size > IMPLICIT_MAX_STATE:
        raise ValueError(
            f"`solver` {solver!r} builds a {model.state_size} × {model.state_size} Jacobian (finite differences, or "
            f"forward-mode autodiff for diffrax: one drift evaluation per state component); it is refused above "
            f"{IMPLICIT_MAX_STATE} state values. "
            "Use an explicit method (solver='scipy:RK45', 'scipy:DOP853', 'diffrax:Tsit5') or the step-exact map "
            "(solver='map')."
        )
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
    min_step = positive_float(min_step, "min_step")
    if max_evals_per_step is not None:
        if (isinstance(max_evals_per_step, bool) or not isinstance(max_evals_per_step, numbers.Integral)
                or max_evals_per_step < 1):
            raise ValueError(f"`max_evals_per_step` must be an integer >= 1 (or None); got {max_evals_per_step!r}.")
    blowup = positive_float(blowup, "blowup")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None; got {progress!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0; got {seed!r}.")
    seed = None if seed is None else int(seed)
    if time_limit is not None:
        time_limit = positive_float(time_limit, "time_limit")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be a function callback(k, y); got {type(callback).__name__}.")
    if callback is not None and family == "diffrax":
        raise ValueError("`callback` is not available with the diffrax backend (one compiled call); use a scipy "
                         "solver or solver='map'.")
    engine = _map_engine(model, family, engine, callback)
    initial = _initial_options(model, initial, deprecated_initial)
    ckpt_path, ckpt_every = check_checkpoint_args(checkpoint, checkpoint_every, solver, steps)
    n_saves = int(np.ceil(steps / save_every)) + 1
    _check_memory(model, n_saves)

    k0 = 0.0
    if start is not None:
        if theta0 is not None or state0 is not None or initial or run is not None:
            raise ValueError("`start` (GD's state handed over) replaces `theta0`, `initial`, `state0` and `run`; pass "
                             "it alone.")
        y0, run = model.start_from(start)
        k0 = float(start.k0)
    elif state0 is not None:
        if theta0 is not None or initial:
            raise ValueError("Pass either `state0` (with its `run`) or `theta0` (with `initial`), not both.")
        y0 = as_vector(state0, "state0", model.state_size)
        bad = model.check_state(y0)
        if bad is not None:
            raise ValueError(f"`state0` is not a valid state of {type(model).__name__}: {bad}.")
        run = _check_run(model, run)
    else:
        if theta0 is None:
            raise TypeError("`theta0` (initial parameters, shape (P,)) is required.")
        if run is not None:
            raise ValueError("`run` goes with `state0`; from `theta0` the model makes its own run state.")
        y0, run = model.start(theta0, **initial)
        theta0 = as_vector(theta0, "theta0", model.dim)

    ckpt = None
    if ckpt_path is not None:
        args = dict(steps=steps, rtol=None if family == "map" else rtol, atol=None if family == "map" else atol,
                    save_every=save_every, max_step=max_step, first_step=first_step, blowup=blowup, seed=seed,
                    min_step=min_step, max_evals_per_step=max_evals_per_step, time_limit=time_limit, y0=y0,
                    engine=engine)
        args["theta0"] = theta0  # None from a state: compare then checks no θ0
        args["k0"] = k0
        if start is not None:
            args["handover"] = {key: (v.tolist() if isinstance(v, np.ndarray) else v)
                                for key, v in start.to_dict().items()}
        ckpt = Checkpointer(ckpt_path, ckpt_every, {**make_header(model, solver, args, ckpt_every),
                                                    "problem": json.loads(model.problem.identity())})
    return _started_from(theta0, lambda: _dispatch(
        model, y0, run, solver, steps=steps, rtol=rtol, atol=atol, save_every=save_every, throw=throw,
        progress=progress, max_step=max_step, first_step=first_step, max_steps=int(max_steps), min_step=min_step,
        max_evals_per_step=max_evals_per_step, blowup=blowup, seed=seed, checkpoint=ckpt, time_limit=time_limit,
        callback=callback, k0=k0, engine=engine), None if start is None else start.to_dict())


def _started_from(theta0, run, handover=None):
    """``run()``'s Solution (also a partial one carried by an IntegrationError) with the θ0
    it was started from recorded (None for a start from ``state0`` or a handover, whose
    state goes into ``extra["handover"]``)."""
    from effdyn.errors import IntegrationError

    theta0 = None if theta0 is None else np.array(theta0, dtype=np.float64)

    def mark(sol):
        sol.theta0 = theta0
        if handover is not None:
            sol.extra["handover"] = handover

    try:
        sol = run()
    except IntegrationError as exc:
        if exc.partial is not None:
            mark(exc.partial)
        raise
    mark(sol)
    return sol


def _dispatch(model, y0, run, solver, *, steps, rtol, atol, save_every, throw, progress, max_step, first_step,
              max_steps, min_step, max_evals_per_step, blowup, seed, checkpoint, time_limit, callback,
              resume_state=None, k0=0.0, engine="numpy"):
    # k0: the time of y0 in GD steps (0, or the step handed over); the run covers [k0, k0 + steps]
    family = solver.split(":")[0]
    if family == "scipy":
        from ._scipy import solve_scipy

        return solve_scipy(model, y0, run, steps, solver.split(":")[1], rtol=rtol, atol=atol, save_every=save_every,
                           throw=throw, progress=progress, max_step=max_step, first_step=first_step,
                           blowup=blowup, seed=seed, checkpoint=checkpoint, resume_state=resume_state,
                           time_limit=time_limit, callback=callback, min_step=min_step,
                           max_evals_per_step=max_evals_per_step, k0=k0)
    if family == "diffrax":
        from ._diffrax import solve_diffrax

        return solve_diffrax(model, y0, run, steps, solver.split(":")[1], rtol=rtol, atol=atol,
                             save_every=save_every, throw=throw, progress=progress, max_steps=max_steps,
                             first_step=first_step, blowup=blowup, seed=seed, k0=k0)
    from ._map import solve_map

    return solve_map(model, y0, run, steps, save_every=save_every, throw=throw, progress=progress, blowup=blowup,
                     seed=seed, checkpoint=checkpoint, resume_state=resume_state, time_limit=time_limit,
                     callback=callback, k0=k0, engine=engine)


#: The engines of ``solve(solver="map")``.
MAP_ENGINES = ("auto", "numpy", "jax")


def _map_engine(model, family, engine, callback) -> str:
    """The engine the solve runs on ("numpy" or "jax"; see ``solve``'s ``engine``)."""
    if not isinstance(engine, str) or engine not in MAP_ENGINES:
        raise ValueError(f"`engine` must be one of {list(MAP_ENGINES)}; got {engine!r}.")
    if family != "map":
        if engine != "auto":
            raise ValueError(f"`engine` selects the engine of solver='map'; other solvers take engine='auto' only "
                             f"(got engine={engine!r}).")
        return "numpy"
    if engine == "numpy":
        return "numpy"
    from effdyn.engine_jax.map import compiled_map_of

    reason = compiled_map_of(model)
    available = not isinstance(reason, str)
    if engine == "jax":
        if not available:
            raise ValueError(f"`engine='jax'` is not available here: {reason}.")
        if callback is not None:
            raise ValueError("`callback` runs on the host after every step, which the compiled map does not do; "
                             "drop it or pass engine='numpy'.")
        return "jax"
    return "jax" if available and callback is None else "numpy"


def _initial_options(model, initial, deprecated: dict) -> dict:
    """The model's initial data: ``initial={...}``, or (deprecated) extra keywords of solve."""
    if initial is not None and not isinstance(initial, dict):
        raise TypeError(f"`initial` must be a dict of the model's initial-data options; got {type(initial).__name__}.")
    initial = dict(initial or {})
    if deprecated:
        allowed = model.initial_options()
        unknown = [name for name in deprecated if name not in allowed]
        if unknown:
            raise TypeError(
                f"`{unknown[0]}` is neither an argument of `solve` nor an initial-data option of "
                f"{type(model).__name__} (which takes {list(allowed) or 'none'}; pass them as `initial={{...}}`)."
            )
        warnings.warn(
            f"passing the model's initial data {sorted(deprecated)} as keywords of solve() is deprecated; use "
            f"solve(..., initial={{{', '.join(repr(k) + ': ...' for k in deprecated)}}}).",
            DeprecationWarning, stacklevel=3)
        both = sorted(set(initial) & set(deprecated))
        if both:
            raise TypeError(f"{both} given both in `initial` and as keywords; use `initial` only.")
        initial.update(deprecated)
    allowed = model.initial_options()
    unknown = [name for name in initial if name not in allowed]
    if unknown:
        raise TypeError(f"`initial` has {unknown!r}, which {type(model).__name__} does not take; its initial-data "
                        f"options are {list(allowed) or 'none'}.")
    return initial


def _check_run(model, run):
    from effdyn.models.run_state import RunState

    if run is None:
        return model.new_run()
    if not isinstance(run, model.run_state_class) or not isinstance(run, RunState):
        raise TypeError(f"`run` must be a {model.run_state_class.__name__} of this model (e.g. `sol.run`); "
                        f"got {type(run).__name__}.")
    # continue on a copy: the caller's run state (e.g. sol.run) stays as it was
    return type(run).from_dict(model, run.to_dict())


def _check_memory(model, n_saves: int) -> None:
    """Refuse a solve whose saved states alone would not fit in the machine's memory."""
    need = 8.0 * n_saves * (model.state_size + 2 * model.dim)
    total = _physical_memory()
    if total and need > _MEMORY_FRACTION * total:
        raise ValueError(
            f"the saved states of this solve need about {need / 2**30:.1f} GiB ({n_saves} saves of {model.state_size} "
            f"values), more than half of this machine's {total / 2**30:.1f} GiB; raise `save_every` (e.g. "
            f"save_every={int(np.ceil(need / (0.1 * total))) or 1}) or shorten `steps`."
        )


def _physical_memory() -> int:
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def resume(model, path, *, checkpoint=None, checkpoint_every=None, throw: bool = True, progress=None):
    """Continue a run of :func:`solve` from its checkpoint file.

    The result equals that of the uninterrupted run bit for bit on the same machine and
    library versions, for the step-exact map and every scipy method (RK45, RK23, DOP853,
    Radau, BDF, LSODA). The solve arguments (horizon, tolerances, save grid, step bounds,
    budgets, seed, initial state) come from the checkpoint.

    Parameters
    ----------
    model : effdyn.models.AbstractModel
        The model of the original run, rebuilt with the same class and parameters (its
        ``identity()`` is compared with the checkpoint's; any difference is refused).
    path : str or os.PathLike
        The file given as ``checkpoint=`` to :func:`solve`.
    checkpoint : str, os.PathLike or False, optional
        Where to keep writing checkpoints (default: ``path``); False writes none.
    checkpoint_every : float, optional
        Spacing of the checkpoints in GD steps (default: that of the original run).
    throw, progress
        As in :func:`solve`.

    Returns
    -------
    Solution
        The whole solution from its start (k = 0, or k0 for a handover; states saved before
        the checkpoint included). A checkpoint written at the end of a finished run gives
        back that run's solution.
    """
    from effdyn.io import versions
    from effdyn.models.base import AbstractModel
    from effdyn.models.run_state import RunState
    from effdyn.solution import Solution, SolveStats

    if not isinstance(model, AbstractModel):
        raise TypeError(f"`model` must be an effdyn model (effdyn.models.*); got {type(model).__name__}.")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None; got {progress!r}.")
    state = load_checkpoint(path)
    if "problem" in state:  # the fingerprint sees what the configuration cannot (a JAX loss, a data set)
        from effdyn.problems.base import identity_difference

        diff = identity_difference(model.problem.identity(), json.dumps(state["problem"], sort_keys=True))
        if diff:
            raise ValueError(f"`model`'s problem is not the problem of the checkpoint {str(path)!r}: {diff}. Rebuild "
                             "the model on the problem the run was started with.")
    ident, saved = json.loads(model.identity()), state["model"]
    if ident["class"] != saved["class"]:
        raise ValueError(f"`model` is a {ident['class']} but the checkpoint was written by a {saved['class']}.")
    if ident["config"] != saved["config"]:
        now, then = ident["config"], saved["config"]
        diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        raise ValueError(
            f"`model` differs from the checkpoint's model in {diff}; rebuild it with the original parameters."
        )
    args = state["args"]
    solver = state["solver"]
    now = versions()
    changed = sorted(k for k in set(now) | set(state["versions"]) if now.get(k) != state["versions"].get(k))
    if changed:
        warnings.warn(f"the checkpoint was written with other versions of {changed}; the resumed run may differ "
                      "from an uninterrupted one in the last bits.", stacklevel=2)
    if checkpoint is None:
        checkpoint = path
    every = checkpoint_every
    if checkpoint is not False and every is None:
        every = state["checkpoint_every"]
    ckpt_path, every = check_checkpoint_args(checkpoint, every, solver, args["steps"])
    run = RunState.from_dict(model, state["run"])
    theta0 = args.get("theta0")
    handover = None
    if args.get("handover") is not None:
        from effdyn.handover import HandoverState

        handover = HandoverState.from_dict(args["handover"]).to_dict()
    if state["complete"]:
        stats = SolveStats(**state["stats"])
        done = Solution(model, np.asarray(state["ks"], dtype=float), np.asarray(state["ys"]), stats,
                        rtol=args.get("rtol"), atol=args.get("atol"), seed=args["seed"],
                        records=dict(state["records"]), run=run,
                        theta0=None if theta0 is None else np.asarray(theta0, dtype=np.float64))
        if handover is not None:
            done.extra["handover"] = handover
        return done
    ckpt = None
    if ckpt_path is not None:
        header = {k: state[k] for k in ("format", "version", "solver", "model", "problem", "args", "versions")
                  if k in state}
        header["checkpoint_every"] = every
        ckpt = Checkpointer(ckpt_path, every, header)
    y0 = np.asarray(args["y0"], dtype=np.float64)
    return _started_from(theta0, lambda: _dispatch(
        model, y0, run, solver, steps=args["steps"], rtol=args.get("rtol"), atol=args.get("atol"),
        save_every=args["save_every"], throw=throw, progress=progress, max_step=args["max_step"],
        first_step=args["first_step"], max_steps=1, min_step=args.get("min_step", 1e-8),
        max_evals_per_step=args.get("max_evals_per_step"), blowup=args["blowup"], seed=args["seed"],
        checkpoint=ckpt, time_limit=args.get("time_limit"), callback=None, resume_state=state,
        k0=float(args.get("k0", 0.0)), engine=args.get("engine", "numpy")), handover)


__all__ = ["solve", "resume", "default_solver", "SOLVER_NAMES", "CHECKPOINT_SOLVERS", "IMPLICIT_MAX_STATE",
           "MAP_ENGINES"]
