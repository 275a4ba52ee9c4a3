"""The checkpoint file of :func:`effdyn.solve`: data only, written atomically.

A checkpoint holds everything needed to continue a run as if it had never stopped:

* the solve arguments (horizon, tolerances, save grid, step bounds, divergence bound, seed,
  the initial state) and the model's identity (class and ``config()``);
* the integrator's full internal state: for scipy's ``OdeSolver`` classes every instance
  attribute except the function references (``t``, ``y``, ``h_abs``, ``f``, the stage
  matrix ``K`` of the Runge–Kutta methods, the difference array ``D`` and order of BDF, the
  Newton and LU data and dense output of Radau, LSODA's work arrays ``rwork``/``iwork`` and
  the arrays in which scipy keeps its C LSODA state); for the map, ``k`` and ``y``;
* the states and records saved so far, the counters of
  :class:`~effdyn.solution.SolveStats`, and the model's run state
  (:meth:`effdyn.models.run_state.RunState.to_dict`: warm starts, eigen-tracker, quantities
  fixed at the start, work counters);

so that :func:`effdyn.resume` reproduces an uninterrupted run bit for bit on the same
machine and library versions.

**Format.** A NumPy ``.npz`` archive: one entry ``header`` holding a JSON document (format
tag and version first, then the tree of the checkpoint with every array replaced by a
reference to another entry of the archive) and one entry per array. It is read with
``numpy.load(..., allow_pickle=False)`` and ``json``: nothing in a checkpoint can run code
when it is loaded (no pickle anywhere). Objects of scipy's integrators are stored as their
data attributes and rebuilt only for a fixed list of scipy classes (:data:`_OBJECTS`). Files
are written to a temporary file in the target folder, then renamed over the target, so a
crash while writing leaves the previous checkpoint intact. A checkpoint is meant for
continuing a run on the same installation; results are archived with ``Solution.save``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import struct
import threading
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np

from effdyn.io import atomic_write

FORMAT = "effdyn-checkpoint"
VERSION = 2

#: Solver names that support ``checkpoint=``.
CHECKPOINT_SOLVERS = ("map", "scipy:RK45", "scipy:RK23", "scipy:DOP853", "scipy:Radau", "scipy:BDF",
                      "scipy:LSODA")

_FUNCTION_TYPES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)


def _scipy_objects() -> dict:
    """The scipy classes a checkpoint may rebuild (by name), and nothing else."""
    from scipy.integrate._ivp.bdf import BdfDenseOutput
    from scipy.integrate._ivp.radau import RadauDenseOutput
    from scipy.integrate._ode import lsoda

    return {"scipy.RadauDenseOutput": RadauDenseOutput, "scipy.BdfDenseOutput": BdfDenseOutput,
            "scipy.lsoda": lsoda}


# --- argument checks ------------------------------------------------------------------

def check_checkpoint_args(checkpoint, checkpoint_every, solver: str, steps: float):
    """Validate ``checkpoint=``/``checkpoint_every=`` of :func:`effdyn.solve`.

    Returns ``(Path or None, every)`` with ``every`` in GD steps (default: a tenth of the
    horizon, at least one step).
    """
    from effdyn._checks import checkpoint_path

    path = checkpoint_path(checkpoint, checkpoint_every)
    if path is None:
        return None, None
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
        from effdyn._checks import positive_float

        every = positive_float(checkpoint_every, "checkpoint_every")
        if solver == "map" and every != int(every):
            raise ValueError(f"`checkpoint_every` must be a whole number of GD steps for solver='map'; got {every}.")
    return path, every


def _lsoda_state_is_visible() -> bool:
    from scipy.integrate._ode import lsoda

    return "state_doubles" in vars(lsoda())


# --- the data-only tree encoding ------------------------------------------------------------

def encode(tree) -> tuple[object, dict]:
    """Split a tree (dicts with string keys, lists, tuples, numbers, strings, None, NumPy
    arrays and scalars, and the scipy objects of :data:`_OBJECTS`) into a JSON-able skeleton
    and a dict of arrays. Arrays are copied, so the result is a snapshot."""
    arrays: dict[str, np.ndarray] = {}
    objects = {cls: name for name, cls in _scipy_objects().items()}
    # An array met twice is stored once and decoded as one object: integrators keep the
    # same work array under two names (LSODA's rwork in its call_args), and a copy that
    # broke the link would change the continuation.
    seen: dict[int, tuple] = {}

    def put(value) -> dict:
        if isinstance(value, np.ndarray) and id(value) in seen:
            return {"__array__": seen[id(value)][0]}
        key = f"a{len(arrays)}"
        arrays[key] = np.array(value, copy=True)
        if isinstance(value, np.ndarray):
            seen[id(value)] = (key, value)  # keep the object alive so its id stays unique
        return {"__array__": key}

    def walk(x):
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, (int, float)) and type(x) in (int, float):
            return x
        if isinstance(x, (np.ndarray, np.generic)):
            if np.asarray(x).dtype == object:
                raise TypeError("object arrays cannot be stored in a checkpoint")
            out = put(x)
            if isinstance(x, np.generic):
                out["scalar"] = True
            return out
        if isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise TypeError("dict keys of a checkpoint must be strings")
            return {"__dict__": {k: walk(v) for k, v in x.items()}}
        if isinstance(x, list):
            return {"__list__": [walk(v) for v in x]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if type(x) in objects:
            attrs = {k: walk(v) for k, v in vars(x).items() if not isinstance(v, _FUNCTION_TYPES)}
            return {"__object__": objects[type(x)], "attrs": attrs}
        raise TypeError(f"a {type(x).__name__} cannot be stored in a checkpoint (data only)")

    return walk(tree), arrays


def decode(skeleton, arrays):
    """Inverse of :func:`encode`. Only data is created, and scipy objects of the fixed list."""
    objects = _scipy_objects()

    def walk(x):
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, list):  # never produced by encode at the top of a value
            raise ValueError("malformed checkpoint (bare list)")
        if not isinstance(x, dict) or len(x) == 0:
            raise ValueError("malformed checkpoint")
        if "__array__" in x:
            arr = arrays[x["__array__"]]
            return arr[()] if x.get("scalar") else arr
        if "__dict__" in x:
            return {str(k): walk(v) for k, v in x["__dict__"].items()}
        if "__list__" in x:
            return [walk(v) for v in x["__list__"]]
        if "__tuple__" in x:
            return tuple(walk(v) for v in x["__tuple__"])
        if "__object__" in x:
            cls = objects.get(x["__object__"])
            if cls is None:
                raise ValueError(f"checkpoint refers to {x['__object__']!r}, which effdyn does not rebuild")
            obj = cls.__new__(cls)
            vars(obj).update({k: walk(v) for k, v in x["attrs"].items()})
            return obj
        raise ValueError("malformed checkpoint")

    return walk(skeleton)


def write_tree(path, header: dict, skeleton, arrays: dict) -> Path:
    """Write ``header`` (format, version, ...) and an encoded tree atomically to ``path``."""
    doc = json.dumps({**header, "tree": skeleton}, allow_nan=True)

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, header=np.array(doc), **arrays)

    return atomic_write(path, write)


def read_tree(path, *, fmt: str = FORMAT, version: int = VERSION, what: str = "checkpoint"):
    """(header, tree) of a file written by :func:`write_tree`; the format tag and version are
    checked before anything else is decoded."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path (str or os.PathLike); got {type(path).__name__}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist; pass the file given as `checkpoint=` to solve.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            doc = json.loads(str(npz["header"][()]))
            if not isinstance(doc, dict) or doc.get("format") != fmt:
                raise ValueError("wrong format tag")
            if doc.get("version") != version:
                raise _VersionError(doc.get("version"))
            arrays = {name: npz[name] for name in npz.files if name != "header"}
        tree = decode(doc.pop("tree"), arrays)
    except _VersionError as exc:
        raise ValueError(f"{what} {str(path)!r} has format version {exc.args[0]}; this effdyn reads "
                         f"{version}.") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, json.JSONDecodeError,
            EOFError, NotImplementedError, RuntimeError, OverflowError, struct.error, zlib.error) as exc:
        # a damaged zip can fail in zipfile with NotImplementedError (unknown compression or
        # version fields), RuntimeError ("encrypted"), struct or zlib errors; a damaged tree
        # with KeyError/TypeError/AttributeError: all of them mean "not a checkpoint"
        raise ValueError(f"`path` {str(path)!r} is not an effdyn {what} ({type(exc).__name__}: {exc}).") from None
    return doc, tree


class _VersionError(Exception):
    pass


# --- scipy OdeSolver state ----------------------------------------------------------------

def capture_scipy(solver) -> dict:
    """Every attribute of a scipy OdeSolver except function references."""
    state = {}
    for name, value in vars(solver).items():
        if name == "_lsoda_solver":
            # scipy.integrate.ode wrapper: its position and the integrator object, whose
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
            fresh = ode._integrator
            vars(fresh).update(vars(value["_integrator"]))  # keep the fresh object's class methods
        else:
            setattr(solver, name, value)
    if "K_extended" in state:
        # DOP853 steps in K, a view of the first n_stages + 1 rows of K_extended that its
        # dense output reads; stored apart, so tie them together again.
        solver.K = solver.K_extended[: solver.n_stages + 1]


# --- writing ------------------------------------------------------------------------------

class Checkpointer:
    """Periodic, atomic checkpoint writer of one run.

    ``capture`` encodes the current state into memory (so the last *consistent* state is
    always at hand, even if an exception later tears the integrator apart mid-step) and
    ``write`` puts the last captured state on disk.
    """

    def __init__(self, path: Path, every: float, header: dict):
        self.path = Path(path)
        self.every = float(every)
        self.header = header
        self.snapshot = None
        self.k: float | None = None
        self.next_due = self.every

    def due(self, k: float) -> bool:
        return k >= self.next_due

    def capture(self, k: float, body: dict):
        self.snapshot = encode({**body, "k": float(k)})
        self.k = float(k)
        self.next_due = (np.floor(k / self.every) + 1.0) * self.every

    def write(self) -> Path:
        skeleton, arrays = self.snapshot
        return write_tree(self.path, self.header, skeleton, arrays)

    def where(self) -> str:
        return (f"checkpoint at k = {self.k:g} written to {str(self.path)!r}; continue with "
                f"effdyn.resume(model, {str(self.path)!r})")


def make_header(model, solver: str, args: dict, every: float) -> dict:
    """Fixed part of every checkpoint of a run (format tag and version come first)."""
    from effdyn.io import versions

    # the initial state travels as a JSON list (floats round-trip exactly through repr)
    args = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    return {"format": FORMAT, "version": VERSION, "solver": solver, "model": json.loads(model.identity()),
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

def load_checkpoint(path) -> dict:
    """Read and check a checkpoint file written by :func:`effdyn.solve`: its header (format,
    version, solver, model identity, arguments, versions) merged with its body."""
    header, tree = read_tree(path)
    return {**header, **tree}


def checkpoint_info(path) -> dict:
    """Summary of a checkpoint: solver, model, horizon, the time reached and whether the run
    was complete."""
    state = load_checkpoint(path)
    return {"solver": state["solver"], "model": state["model"]["class"], "steps": state["args"]["steps"],
            "k": state["k"], "complete": bool(state["complete"]), "status": state["stats"]["status"],
            "versions": state["versions"]}

