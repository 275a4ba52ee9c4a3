"""Checkpoint and resume for :func:`effdyn.solve` (scipy backends and the step-exact map).

A checkpoint holds everything needed to continue a run as if it had never stopped:

* the solve arguments (horizon, tolerances, save grid, step bounds, divergence bound, seed,
  the initial state) and the model's identity (class name and ``config()``);
* the integrator's full internal state: for scipy's ``OdeSolver`` classes every instance
  attribute except the function references (``t``, ``y``, ``h_abs``, ``f``, the stage
  matrix ``K`` of the Runge–Kutta methods, the difference array ``D`` and order of BDF, the
  Newton and LU data of Radau, LSODA's work arrays ``rwork``/``iwork`` and the arrays in
  which scipy keeps its C LSODA state); for the map, ``k`` and ``y``;
* the states saved so far, the counters of :class:`~effdyn.solution.SolveStats`, the
  index of the next save time, and the model's run-time state (warm starts, eigen-trackers,
  parameters that ``initial_state`` filled in; see :func:`model_runtime_state`);

so that :func:`resume` reproduces an uninterrupted run bit for bit on the same machine and
library versions (the tests check ``np.array_equal`` for the map, RK45, RK23, DOP853, BDF,
Radau and LSODA). LSODA needs scipy >= 1.17, whose C rewrite keeps the solver's state in
Python-visible arrays; with older scipy (state in Fortran COMMON blocks) LSODA
checkpoints are refused. The diffrax backend runs as one compiled call and refuses
checkpointing.

Files are pickles written atomically (temporary file, then ``os.replace``): a crash while
writing leaves the previous checkpoint intact. They are read back by an unpickler that only
accepts NumPy arrays, scipy's integrator classes and plain Python containers, so a
checkpoint cannot run arbitrary code when loaded. They are meant for continuing a run on
the same installation, not as an archive format (use ``Solution.save`` for results).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io as _io
import json
import os
import pickle
import signal
import threading
import types
import warnings
from pathlib import Path

import numpy as np

from effdyn.io import _json_default, atomic_write

FORMAT = "effdyn-checkpoint"
VERSION = 1

#: Solver names that support ``checkpoint=``.
CHECKPOINT_SOLVERS = ("map", "scipy:RK45", "scipy:RK23", "scipy:DOP853", "scipy:Radau", "scipy:BDF",
                      "scipy:LSODA")

_FUNCTION_TYPES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)


# --- argument checks ------------------------------------------------------------------

def check_checkpoint_args(checkpoint, checkpoint_every, solver: str, steps: float):
    """Validate ``checkpoint=``/``checkpoint_every=`` of :func:`effdyn.solve`.

    Returns ``(Path or None, every)`` with ``every`` in GD steps (default: a tenth of the
    horizon, at least one step).
    """
    if checkpoint is None or checkpoint is False:
        if checkpoint_every is not None:
            raise ValueError("`checkpoint_every` needs `checkpoint=PATH` (the file to write the checkpoints to).")
        return None, None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"`checkpoint` must be a file path (str or os.PathLike); got {type(checkpoint).__name__}.")
    path = Path(checkpoint)
    if str(checkpoint) == "" or path.is_dir():
        raise ValueError(f"`checkpoint` must name a file, not a directory; got {str(checkpoint)!r}.")
    if solver not in CHECKPOINT_SOLVERS:
        raise ValueError(
            f"`checkpoint` is not supported for solver={solver!r}: the diffrax backend integrates in one "
            f"compiled call whose state cannot be saved part-way. Checkpointing works with {list(CHECKPOINT_SOLVERS)}."
        )
    if solver == "scipy:LSODA" and not _lsoda_state_is_visible():
        raise ValueError(
            "`checkpoint` with solver='scipy:LSODA' needs scipy >= 1.17, which keeps LSODA's state in Python "
            "arrays (older versions keep it in Fortran COMMON blocks that cannot be saved). Upgrade scipy or "
            f"use another of {list(CHECKPOINT_SOLVERS)}."
        )
    if checkpoint_every is None:
        every = max(1.0, float(steps) / 10.0)
    else:
        from effdyn._validation import positive_float

        every = positive_float(checkpoint_every, "checkpoint_every")
        if solver == "map" and every != int(every):
            raise ValueError(f"`checkpoint_every` must be a whole number of GD steps for solver='map'; got {every}.")
    return path, every


def _lsoda_state_is_visible() -> bool:
    from scipy.integrate._ode import lsoda

    return "state_doubles" in vars(lsoda())


# --- model identity and run-time state ----------------------------------------------------

def model_identity(model) -> dict:
    return {"class": type(model).__name__,
            "config": json.dumps(model.config(), default=_json_default, sort_keys=True)}


def _plain(value) -> bool:
    """Data that pickles without code: numbers, strings, arrays and containers of them."""
    if value is None or isinstance(value, (bool, int, float, complex, str, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def public_baseline(model) -> dict:
    """Pickled values of the model's public plain attributes as built (before
    ``initial_state``), to tell later which of them the run changed."""
    return {name: pickle.dumps(value) for name, value in vars(model).items()
            if not name.startswith("_") and _plain(value)}


def model_runtime_state(model, baseline: dict | None = None) -> dict:
    """What a model carries from one drift call to the next (warm starts and the like).

    A model's own ``checkpoint_state()`` hook wins (restored by
    ``restore_checkpoint_state(state)``). Otherwise the state is every private attribute
    (name starting with "_") that is plain data — the Lanczos warm start ``_warm``, the
    last SDCP solution, the previous eigenvector used for sign continuity, ... —, every
    public plain attribute whose value differs from ``baseline`` (parameters that
    ``initial_state`` filled in, such as the α and β of the reduced self-stabilisation
    model), and every :class:`~effdyn.spectrum.EigenTracker` attribute (its arrays and
    counters, without the problem). The rest is configuration, which ``resume`` checks.
    Without this state a resumed run would start its eigen-solves cold and differ from the
    uninterrupted run in the last bits.
    """
    from effdyn.spectrum import EigenTracker

    hook = getattr(model, "checkpoint_state", None)
    if callable(hook):
        return {"hook": hook()}
    baseline = {} if baseline is None else baseline
    out = {}
    for name, value in vars(model).items():
        if isinstance(value, EigenTracker):
            out[name] = {"eigen_tracker": {k: v for k, v in vars(value).items() if k != "problem"}}
        elif _plain(value) and (name.startswith("_") or pickle.dumps(value) != baseline.get(name)):
            out[name] = {"value": value}
    return out


def restore_model_runtime_state(model, state: dict):
    from effdyn.spectrum import EigenTracker

    if "hook" in state:
        model.restore_checkpoint_state(state["hook"])
        return
    for name, value in list(vars(model).items()):
        if isinstance(value, EigenTracker) and name not in state:
            setattr(model, name, None)  # created after the checkpoint (e.g. by the solver's set-up)
    for name, value in state.items():
        if "eigen_tracker" in value:
            tracker = EigenTracker.__new__(EigenTracker)
            vars(tracker).update(copy.deepcopy(value["eigen_tracker"]))
            tracker.problem = model.problem
            setattr(model, name, tracker)
        else:
            setattr(model, name, copy.deepcopy(value["value"]))


# --- scipy OdeSolver state ----------------------------------------------------------------

def capture_scipy(solver) -> dict:
    """Every attribute of a scipy OdeSolver except function references (copied by pickling)."""
    state = {}
    for name, value in vars(solver).items():
        if name == "_lsoda_solver":
            # scipy.integrate.ode wrapper: keep its position and the integrator object, whose
            # arrays (rwork, iwork, state_doubles, state_ints) hold LSODA's whole state.
            state[name] = {"t": value.t, "_y": value._y, "_integrator": value._integrator}
        elif isinstance(value, _FUNCTION_TYPES):
            continue
        else:
            state[name] = value
    return state


def restore_scipy(solver, state: dict):
    """Overwrite a freshly built OdeSolver's attributes with a captured state."""
    for name, value in state.items():
        if name == "_lsoda_solver":
            ode = solver._lsoda_solver
            ode.t = value["t"]
            ode._y = value["_y"]
            ode._integrator = value["_integrator"]
        else:
            setattr(solver, name, value)
    if "K_extended" in state:
        # DOP853 steps in K, a view of the first n_stages + 1 rows of K_extended that its
        # dense output reads; pickling copies the two apart, so tie them together again.
        solver.K = solver.K_extended[: solver.n_stages + 1]


# --- writing ------------------------------------------------------------------------------

class Checkpointer:
    """Periodic, atomic checkpoint writer of one run.

    ``capture`` pickles the current state into memory (so the last *consistent* state is
    always at hand, even if an exception later tears the integrator apart mid-step) and
    ``write`` puts the last captured state on disk.
    """

    def __init__(self, path: Path, every: float, header: dict, baseline: dict | None = None):
        self.path = Path(path)
        self.every = float(every)
        self.header = header
        self.baseline = baseline or {}
        self.snapshot: bytes | None = None
        self.k: float | None = None
        self.next_due = self.every

    def due(self, k: float) -> bool:
        return k >= self.next_due

    def capture(self, k: float, body: dict):
        payload = dict(self.header)
        payload.update(body)
        payload["k"] = float(k)
        self.snapshot = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        self.k = float(k)
        self.next_due = (np.floor(k / self.every) + 1.0) * self.every

    def write(self) -> Path:
        data = self.snapshot
        return atomic_write(self.path, lambda tmp: Path(tmp).write_bytes(data))

    def where(self) -> str:
        return (f"checkpoint at k = {self.k:g} written to {str(self.path)!r}; continue with "
                f"effdyn.solvers.resume(model, {str(self.path)!r})")


def make_header(model, solver: str, args: dict, every: float, identity: dict | None = None) -> dict:
    """Fixed part of every checkpoint of a run. ``identity`` is the model's class and
    configuration as built, taken before ``initial_state`` (which may fill in parameters,
    e.g. the α and β of the reduced self-stabilisation model)."""
    from effdyn.io import versions

    return {"format": FORMAT, "version": VERSION, "solver": solver,
            "model": model_identity(model) if identity is None else identity,
            "args": args, "checkpoint_every": every, "versions": versions()}


@contextlib.contextmanager
def deferred_interrupt(enabled: bool):
    """While active, a first Ctrl-C only sets ``flag.hit``: the solver finishes its current
    step, writes a checkpoint of that consistent state and stops. A second Ctrl-C
    interrupts at once (the previous handler runs). Only in the main thread and when Ctrl-C
    is handled by Python (the handler is callable)."""
    flag = types.SimpleNamespace(hit=False)
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = signal.getsignal(signal.SIGINT)
    if not callable(old):
        yield flag
        return

    def handler(signum, frame):
        if flag.hit:
            signal.signal(signal.SIGINT, old)
            old(signum, frame)
        flag.hit = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


# --- reading --------------------------------------------------------------------------

_SAFE_BUILTINS = {"complex", "float", "int", "bool", "str", "bytes", "tuple", "list", "dict", "set",
                  "frozenset", "slice", "range"}


class _Unpickler(pickle.Unpickler):
    """Accepts NumPy arrays/scalars, scipy's integrator classes and plain containers only."""

    def find_class(self, module, name):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if module == "copyreg" and name == "_reconstructor":
            return super().find_class(module, name)
        root = module.split(".")[0]
        if root == "numpy" or module.startswith("scipy.integrate"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which effdyn does not load")


def load_checkpoint(path) -> dict:
    """Read and check a checkpoint file written by :func:`effdyn.solve`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path (str or os.PathLike); got {type(path).__name__}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist; pass the file given as `checkpoint=` to solve.")
    try:
        state = _Unpickler(_io.BytesIO(path.read_bytes())).load()
    except Exception as exc:
        raise ValueError(f"`path` {str(path)!r} is not an effdyn checkpoint ({type(exc).__name__}: {exc}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"`path` {str(path)!r} is not an effdyn checkpoint.")
    if state.get("version") != VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has format version {state.get('version')}; "
                         f"this effdyn reads {VERSION}.")
    return state


def checkpoint_info(path) -> dict:
    """Summary of a checkpoint: solver, model, horizon, the time reached and whether the run
    was complete."""
    state = load_checkpoint(path)
    return {"solver": state["solver"], "model": state["model"]["class"], "steps": state["args"]["steps"],
            "k": state["k"], "complete": bool(state["complete"]), "status": state["stats"]["status"],
            "versions": state["versions"]}


def resume(model, path, *, checkpoint=None, checkpoint_every=None, throw: bool = True, progress=None):
    """Continue a run of :func:`effdyn.solve` from its checkpoint file.

    The result equals that of the uninterrupted run bit for bit on the same machine and
    library versions, for the step-exact map and every scipy method (RK45, RK23, DOP853,
    Radau, BDF, LSODA). The solve arguments (horizon, tolerances, save grid, step bounds,
    seed, initial state) come from the checkpoint.

    Parameters
    ----------
    model : effdyn.models.AbstractModel
        The model of the original run, rebuilt with the same class and ``config()``
        (checked; a different model is refused).
    path : str or os.PathLike
        The file given as ``checkpoint=`` to :func:`effdyn.solve`.
    checkpoint : str, os.PathLike or False, optional
        Where to keep writing checkpoints (default: ``path``); False writes none.
    checkpoint_every : float, optional
        Spacing of the checkpoints in GD steps (default: that of the original run).
    throw, progress
        As in :func:`effdyn.solve`.

    Returns
    -------
    Solution
        The whole solution from k = 0 (states saved before the checkpoint included). A
        checkpoint written at the end of a finished run gives back that run's solution.
    """
    from effdyn.models.base import AbstractModel
    from effdyn.solution import Solution, SolveStats

    if not isinstance(model, AbstractModel):
        raise TypeError(f"`model` must be an effdyn model (effdyn.models.*); got {type(model).__name__}.")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None; got {progress!r}.")
    state = load_checkpoint(path)
    ident = model_identity(model)
    saved = state["model"]
    if ident["class"] != saved["class"]:
        raise ValueError(f"`model` is a {ident['class']} but the checkpoint was written by a {saved['class']}.")
    if ident["config"] != saved["config"]:
        now, then = json.loads(ident["config"]), json.loads(saved["config"])
        diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        raise ValueError(
            f"`model` differs from the checkpoint's model in {diff}; rebuild it with the original parameters."
        )
    args = state["args"]
    solver = state["solver"]
    from effdyn.io import versions

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
    if state["complete"]:
        restore_model_runtime_state(model, state["model_state"])  # e.g. parameters the observables need
        return Solution(model, np.asarray(state["ks"], dtype=float), np.asarray(state["ys"]),
                        SolveStats(**state["stats"]), rtol=args.get("rtol"), atol=args.get("atol"),
                        seed=args["seed"])
    ckpt = None
    if ckpt_path is not None:
        ckpt = Checkpointer(ckpt_path, every, make_header(model, solver, args, every, saved),
                            public_baseline(model))
    y0 = np.asarray(args["y0"], dtype=np.float64)
    if solver == "map":
        from ._map import solve_map

        return solve_map(model, y0, args["steps"], save_every=args["save_every"], throw=throw, progress=progress,
                         blowup=args["blowup"], seed=args["seed"], checkpoint=ckpt, resume_state=state)
    from ._scipy import solve_scipy

    return solve_scipy(model, y0, args["steps"], solver.split(":")[1], rtol=args["rtol"], atol=args["atol"],
                       save_every=args["save_every"], throw=throw, progress=progress, max_step=args["max_step"],
                       first_step=args["first_step"], blowup=args["blowup"], seed=args["seed"], checkpoint=ckpt,
                       resume_state=state)
