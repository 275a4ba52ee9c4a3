"""Results files: GD trajectories and model solutions saved to netCDF and read back exactly.

Three kinds of file share one layout and one reader, :func:`load` (``effdyn.load``):

* ``traj.save(path)`` — one :class:`~effdyn.reference.GDTrajectory`;
* ``sol.save(path)`` — one :class:`~effdyn.solution.Solution`;
* ``effdyn.save(path, traj, sol1, sol2, ...)`` and the validation suite's case files — a GD
  trajectory and several solutions in **one dataset**: each object's own variables, with
  their dimensions, under a prefix (``gd__loss``, ``s0__state``, ``s1__record__sharpness``),
  next to a metrics table ``metrics(model, metric)`` (and, in case files, the suite's
  derived series).

Every such file carries three root attributes: ``effdyn_format = "effdyn-results"``,
``effdyn_format_version`` and ``effdyn_contents``, a JSON document listing the objects
(kind, label, prefix and, for objects inside a combined file, their own attributes).
The reader checks the tag and version before anything else and refuses other files,
naming them. What it reads is data only: attributes are parsed with :mod:`json`, a
solution's run state is a ``.npz`` archive read with ``allow_pickle=False``, the model
class is looked up in the registry (:func:`effdyn.registry.model_entry`) and the problem
class in a fixed table of built-in problems (or registered ones); nothing named in a file
is imported or executed.

Loading rebuilds each object from its arrays: a trajectory as stored; a solution from its
states ``y``, times ``k``, ``records``, the run state's ``to_dict`` data and stats, with
the model rebuilt from its class and parameters (its identity must equal the saved one)
and its problem rebuilt from the saved configuration or passed in as ``problem=``. The
observables are then recomputed by the same code from the same arrays, so
``compare(load(a), load(b))`` equals the comparison made in memory, bit for bit.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Results", "save", "load", "save_object", "load_object", "add_results", "RESULTS_FORMAT",
           "RESULTS_VERSION"]

#: Format tag and version of results files (root attributes ``effdyn_format`` and
#: ``effdyn_format_version``).
RESULTS_FORMAT = "effdyn-results"
RESULTS_VERSION = 1
ATTR_FORMAT, ATTR_VERSION, ATTR_CONTENTS = "effdyn_format", "effdyn_format_version", "effdyn_contents"

#: Format tag of the run-state archive inside a solution's ``run_state`` variable.
RUN_STATE_FORMAT = "effdyn-run-state"
RUN_STATE_VERSION = 1

#: Variable names of a solution's dataset that observables may not take.
RESERVED_SOLUTION_NAMES = ("state", "theta0", "run_state", "k")

GD_PREFIX = "gd__"


# --------------------------------------------------------------------------------------
# the loaded object
# --------------------------------------------------------------------------------------
@dataclass
class Results:
    """A GD trajectory and model solutions read from one file (:func:`load`).

    Attributes
    ----------
    gd : GDTrajectory or None
    solutions : dict of str to Solution
        By label (the model labels of a validation case, or ``labels`` of :func:`save`).
    metrics : dict of str to Metrics or None
        The comparisons stored in the file (None for a solution that was not compared).
        :meth:`compare` recomputes them from the loaded objects.
    attrs : dict
        The file's root attributes (metadata: configuration, versions, git commit, seed;
        in case files also the case's name, status and timings).
    not_stored : dict of str to str
        Objects the file could not hold, with the reason (e.g. a run state that is not data).
    path : Path or None
    """

    gd: object = None
    solutions: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    not_stored: dict = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, label: str):
        try:
            return self.solutions[label]
        except KeyError:
            raise KeyError(f"no solution labelled {label!r}; labels: {list(self.solutions)}") from None

    def compare(self, label: str | None = None, **options):
        """``effdyn.compare(self.gd, solution, **options)`` for one label, or a dict over all."""
        from .diagnostics import compare

        if self.gd is None:
            raise ValueError("this file holds no GD trajectory to compare with.")
        if label is not None:
            return compare(self.gd, self[label], **options)
        return {name: compare(self.gd, sol, **options) for name, sol in self.solutions.items()}

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"Results(gd={self.gd!r}, solutions={list(self.solutions)}{where})"


# --------------------------------------------------------------------------------------
# run-state archive
# --------------------------------------------------------------------------------------
def encode_blob(tree) -> np.ndarray:
    """A data tree (see ``effdyn.solvers._checkpoint.encode``) as the bytes (uint8) of a
    ``.npz`` archive: a JSON header with format tag, version and skeleton, plus the arrays."""
    from .solvers._checkpoint import encode

    skeleton, arrays = encode(tree)
    doc = json.dumps({"format": RUN_STATE_FORMAT, "version": RUN_STATE_VERSION, "tree": skeleton}, allow_nan=True)
    buf = io.BytesIO()
    np.savez(buf, header=np.array(doc), **arrays)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()


def decode_blob(blob) -> dict:
    """Inverse of :func:`encode_blob`: JSON and arrays only (``allow_pickle=False``)."""
    from .solvers._checkpoint import decode

    data = np.asarray(blob, dtype=np.uint8).tobytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        doc = json.loads(str(npz["header"][()]))
        if not isinstance(doc, dict) or doc.get("format") != RUN_STATE_FORMAT:
            raise ValueError("the run state is not an effdyn run-state archive")
        if doc.get("version") != RUN_STATE_VERSION:
            raise ValueError(f"the run state has format version {doc.get('version')}; this effdyn reads "
                             f"{RUN_STATE_VERSION}")
        arrays = {name: npz[name] for name in npz.files if name != "header"}
    return decode(doc["tree"], arrays)


# --------------------------------------------------------------------------------------
# objects ⇄ datasets
# --------------------------------------------------------------------------------------
def _json_attr(attrs, name, default=None):
    raw = attrs.get(name)
    if raw is None or (isinstance(raw, str) and raw == ""):
        return default
    return json.loads(str(raw))


def file_metadata(attrs, path=None) -> dict:
    """The metadata every effdyn file carries (see :func:`effdyn.io.metadata`), parsed."""
    seed = attrs.get("seed", -1)
    return {"config": _json_attr(attrs, "config", {}), "versions": _json_attr(attrs, "versions", {}),
            "git_commit": str(attrs.get("git_commit", "unknown")),
            "seed": None if int(seed) < 0 else int(seed), "path": None if path is None else str(path)}


def _int_or_none(value, missing=-1):
    value = int(value)
    return None if value == missing else value


def gd_from_dataset(ds, path=None):
    """A :class:`~effdyn.reference.GDTrajectory` from its dataset (``GDTrajectory.to_xarray``)."""
    from .outcomes import Cause, Status
    from .reference import GDTrajectory

    a = ds.attrs

    def arr(name, dtype=np.float64):
        return np.asarray(ds[name].values, dtype=dtype)

    P = ds.sizes["param"]
    theta = arr("theta").reshape(-1, P)
    loss_min = float(a.get("loss_min", math.nan))
    cause = str(a.get("cause", ""))
    status = str(a.get("status", "success"))
    return GDTrajectory(
        k=arr("k", np.int64), loss=arr("loss"), grad_norm=arr("grad_norm"), theta=theta,
        theta_k=arr("theta_k", np.int64), eig_k=arr("eig_k", np.int64),
        eigs=arr("eigs").reshape(len(ds["eig_k"]), ds.sizes["eig_index"]),
        top_eigvec=arr("top_eigvec").reshape(-1, P) if "top_eigvec" in ds else None,
        half_amp=arr("half_amp"), eta=float(a["eta"]), variant=str(a["variant"]),
        status=Status(status) if status in Status._value2member_map_ else status, message=str(a.get("message", "")),
        diverged_at=_int_or_none(a.get("diverged_at", -1)),
        cause=(Cause(cause) if cause in Cause._value2member_map_ else cause) if cause else None,
        problem_config=_json_attr(a, "problem_config", {}), config=_json_attr(a, "gd_config", {}),
        wall_time=float(a.get("wall_time", 0.0)), n_hvp=int(a.get("n_hvp", 0)),
        half_amp_subspace=arr("half_amp_subspace") if "half_amp_subspace" in ds else None,
        eig_checks=int(a.get("eig_checks", 0)), eig_corrections=int(a.get("eig_corrections", 0)),
        loss_min=None if math.isnan(loss_min) else loss_min,
        _mid=arr("theta_mid").reshape(-1, P) if "theta_mid" in ds else None,
        _mid_k=arr("mid_k", np.int64) if "theta_mid" in ds else None,
        theta0=arr("theta0") if "theta0" in ds else None,
        metadata=file_metadata(a, path),
        _identity=str(a.get("problem_identity", "")) or None,
    )


def rebuild_problem(attrs: dict, arrays: dict, problem=None, *, check: bool = True, where: str = "the file"):
    """The problem of a saved solution: ``problem`` itself (checked against the saved
    identity) or rebuilt from the saved class, configuration and arrays."""
    from .problems.base import Problem, identity_difference

    saved = str(attrs.get("problem_identity", ""))
    cls_name = str(attrs.get("problem_class", ""))
    if problem is not None:
        if not isinstance(problem, Problem):
            raise TypeError(f"`problem` must be an effdyn Problem (the one the results were computed on); "
                            f"got {type(problem).__name__}.")
        diff = identity_difference(problem.identity(), saved) if (check and saved) else ""
        if diff:
            raise ValueError(f"`problem` is not the problem of the results in {where}: {diff}. Pass the problem they "
                             "were computed on (or check=False to use this one anyway).")
        return problem
    config = _json_attr(attrs, "problem_config", {})
    try:
        rebuilt = problem_from_config(cls_name, config, arrays)
    except TypeError as exc:
        why = "from_jax losses are code" if cls_name == "JaxProblem" else str(exc)
        raise TypeError(f"the results in {where} were computed on a problem of class {cls_name}, which effdyn "
                        f"cannot rebuild from a file ({why}); pass it as `problem=`, e.g. "
                        "effdyn.load(path, problem=my_problem).") from None
    diff = identity_difference(rebuilt.identity(), saved) if (check and saved) else ""
    if diff:
        raise ValueError(f"the problem rebuilt from {where} does not match the saved one: {diff}. Pass the problem "
                         "as `problem=` (or check=False to accept the rebuilt one).")
    return rebuilt


def rebuild_model(identity: dict, problem, where: str = "the file"):
    """The model of a saved solution: its registered class (by name) built from the saved
    parameters and ``problem``; its identity must equal the saved one."""
    from .registry import UnknownNameError, _MODELS, model_entry

    cls_name = identity["class"]
    try:
        cls = model_entry(cls_name).cls
    except UnknownNameError:
        cls = next((e.cls for e in _MODELS.values() if getattr(e.cls, "__name__", None) == cls_name), None)
        if cls is None:
            raise ValueError(f"the solution in {where} is of the model class {cls_name}, which is not registered; "
                             "register it (effdyn.registry.register_model) before loading.") from None
    config = identity["config"]
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in config:
            continue
        kwargs[f.name] = problem if f.name == "problem" else config[f.name]
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the {cls_name} of {where} cannot be rebuilt from its saved parameters "
                         f"({type(exc).__name__}: {exc}).") from None
    if json.loads(model.identity()) != json.loads(json.dumps(identity)):
        now = json.loads(model.identity())["config"]
        diff = sorted(k for k in set(now) | set(config) if now.get(k) != config.get(k))
        raise ValueError(f"the {cls_name} rebuilt from {where} differs from the saved one in {diff}.")
    return model


def solution_from_dataset(ds, problem=None, *, check: bool = True, where: str = "the file", path=None,
                          _problems=None):
    """A :class:`~effdyn.solution.Solution` from its dataset (``Solution.to_xarray``)."""
    from .outcomes import Cause, Status
    from .solution import Solution, SolveStats

    a = ds.attrs
    if "model_identity" not in a or "run_state" not in ds:
        raise ValueError(f"{where} holds a solution saved without its model identity and run state (an older "
                         "effdyn); it cannot be rebuilt. Read its arrays with effdyn.io.load_dataset.")
    arrays = {str(n)[len("problem__"):]: np.asarray(ds[n].values) for n in ds.data_vars
              if str(n).startswith("problem__")}
    key = str(a.get("problem_identity", ""))
    if _problems is not None and problem is None and key in _problems:
        prob = _problems[key]
    else:
        prob = rebuild_problem(a, arrays, problem, check=check, where=where)
        if _problems is not None and problem is None:
            _problems[key] = prob
    model = rebuild_model(json.loads(str(a["model_identity"])), prob, where)
    k = np.asarray(ds["k"].values, dtype=np.float64)
    y = np.asarray(ds["state"].values, dtype=np.float64).reshape(len(k), -1)
    records = {str(n)[len("record__"):]: np.asarray(ds[n].values, dtype=np.float64) for n in ds.data_vars
               if str(n).startswith("record__")}
    stats_d = _json_attr(a, "stats", {})
    if stats_d.get("status") in Status._value2member_map_:
        stats_d["status"] = Status(stats_d["status"])
    if stats_d.get("cause") in Cause._value2member_map_:
        stats_d["cause"] = Cause(stats_d["cause"])
    names = {f.name for f in dataclasses.fields(SolveStats)}
    stats = SolveStats(**{n: v for n, v in stats_d.items() if n in names})
    try:
        tree = decode_blob(ds["run_state"].values)
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where}: the saved run state cannot be read ({type(exc).__name__}: {exc}); the file is "
                         "damaged or was not written by effdyn.") from None
    run = None if tree.get("run") is None else model.run_state_class.from_dict(model, tree["run"])
    opts = _json_attr(a, "solution", {})
    return Solution(model, k, y, stats, rtol=opts.get("rtol"), atol=opts.get("atol"), seed=opts.get("seed"),
                    extra=dict(tree.get("extra") or {}), records=records, run=run,
                    theta0=np.asarray(ds["theta0"].values, dtype=np.float64) if "theta0" in ds else None,
                    metadata=file_metadata(a, path))


# --------------------------------------------------------------------------------------
# combining datasets
# --------------------------------------------------------------------------------------
def _prefixed(ds, prefix: str):
    """``ds`` with every variable, coordinate and dimension renamed ``prefix + name``."""
    names = {str(n) for n in ds.variables} | {str(d) for d in ds.dims}
    out = ds.rename({n: prefix + n for n in names})
    out.attrs = {}
    return out


def _unprefixed(ds, prefix: str, attrs: dict):
    """The object stored under ``prefix`` in ``ds``, with its own names and attributes."""
    import xarray as xr

    if not prefix:
        sub = ds.copy()
    else:
        names = [str(n) for n in ds.variables if str(n).startswith(prefix)]
        sub = xr.Dataset({n: ds.variables[n] for n in names})
        sub = sub.rename({n: n[len(prefix):] for n in names} | {str(d): str(d)[len(prefix):] for d in sub.dims
                                                                   if str(d).startswith(prefix)})
    sub.attrs = dict(attrs)
    return sub


def _label_text(label: str) -> str:
    return str(label)


def _object_entry(kind: str, prefix: str, label: str, ds) -> dict:
    return {"kind": kind, "prefix": prefix, "label": label, "attrs": {k: _plain(v) for k, v in ds.attrs.items()}}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _contents_attrs(kind: str, objects: list, not_stored: dict | None = None) -> dict:
    doc = {"kind": kind, "objects": objects, "not_stored": dict(not_stored or {})}
    return {ATTR_FORMAT: RESULTS_FORMAT, ATTR_VERSION: RESULTS_VERSION,
            ATTR_CONTENTS: json.dumps(doc, allow_nan=True)}


def _free_prefix(base: str, taken: set) -> str:
    """``base`` ("gd__", "s0__"), or a variant no name in ``taken`` starts with."""
    prefix, n = base, 1
    while any(t.startswith(prefix) for t in taken):
        n += 1
        prefix = f"{base[:-2]}_{n}__"
    return prefix


def _combine(root, traj, solutions: dict, kind: str, *, strict: bool):
    """``root`` with the trajectory and solutions added under prefixes, and the contents
    attributes. With ``strict=False`` an object that cannot be stored is left out and
    listed under ``not_stored`` (the validation suite must not lose a case file)."""
    import xarray as xr

    taken = {str(n) for n in root.variables} | {str(d) for d in root.dims}
    parts, objects, not_stored = [root], [], {}
    items = ([("GDTrajectory", GD_PREFIX, "GD", traj)] if traj is not None else []) + \
        [("Solution", f"s{i}__", label, sol) for i, (label, sol) in enumerate(solutions.items())]
    for kind_i, base, label, obj in items:
        try:
            ds = obj.to_xarray()
        except Exception as exc:
            if strict:
                raise
            not_stored[label] = f"{type(exc).__name__}: {exc}"
            continue
        prefix = _free_prefix(base, taken)
        part = _prefixed(ds, prefix)
        taken |= {str(n) for n in part.variables} | {str(d) for d in part.dims}
        parts.append(part)
        objects.append(_object_entry(kind_i, prefix, label, ds))
    out = xr.merge(parts, compat="no_conflicts", join="outer", combine_attrs="override")
    out.attrs = dict(root.attrs)
    out.attrs.update(_contents_attrs(kind, objects, not_stored))
    return out


def add_results(ds, traj, solutions: dict):
    """The validation suite's case dataset ``ds`` with the GD trajectory and the models'
    solutions stored exactly (prefixed variables, see the module notes), so that
    :func:`effdyn.load` gives back a :class:`Results`. An object that cannot be stored is
    listed in the file rather than failing the case."""
    sols = {str(label): sol for label, sol in solutions.items() if sol is not None and len(sol.k) >= 1}
    return _combine(ds, traj, sols, "case", strict=False)


def _metrics_table(rows: dict):
    """``metrics(model, metric)`` over every field of :class:`~effdyn.diagnostics.Metrics`."""
    from .diagnostics import Metrics

    fields_ = [f.name for f in dataclasses.fields(Metrics)]
    M = np.full((len(rows), len(fields_)), np.nan)
    for i, m in enumerate(rows.values()):
        if m is not None:
            d = m.to_dict()
            M[i] = [float(d[f]) for f in fields_]
    return M, fields_


def _read_metrics(ds) -> dict:
    from .diagnostics import Metrics

    if "metrics" not in ds or "model" not in ds.coords or "metric" not in ds.coords:
        return {}
    names = [str(m) for m in ds.coords["metric"].values]
    out = {}
    for i, label in enumerate(ds.coords["model"].values):
        row = dict(zip(names, np.asarray(ds["metrics"].values[i], dtype=float)))
        values = {}
        ok = True
        for f in dataclasses.fields(Metrics):
            if f.name not in row:
                if f.default is dataclasses.MISSING:
                    ok = False
                continue
            v = row[f.name]
            if f.type in ("int", int):
                if not np.isfinite(v):
                    ok = False
                    break
                v = int(v)
            values[f.name] = v
        out[str(label)] = Metrics(**values) if ok and not all(
            np.isnan(v) for v in row.values()) else None
    return out


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def save_object(path, obj) -> Path:
    """Write one trajectory or solution (``traj.save`` / ``sol.save``)."""
    from .io import save_dataset

    ds = obj.to_xarray()
    kind = "GDTrajectory" if ds.attrs.get("kind") == "effdyn.GDTrajectory" else "Solution"
    label = "GD" if kind == "GDTrajectory" else str(obj.model.name)
    entry = {"kind": kind, "prefix": "", "label": label}
    ds.attrs.update(_contents_attrs(kind, [entry]))
    return save_dataset(ds, path)


def _default_labels(solutions) -> list:
    labels, seen = [], {}
    for sol in solutions:
        base = str(getattr(sol.model, "name", type(sol.model).__name__))
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return labels


def save(path, *objects, labels=None, check: bool = True, metrics: bool = True) -> Path:
    """Write a GD trajectory and any number of model solutions into one netCDF file.

    Parameters
    ----------
    path : str or os.PathLike
        The file (written atomically).
    *objects : GDTrajectory and Solution
        At most one trajectory, in any position, and the solutions, e.g.
        ``save(path, traj, sol_fe, sol_cf)``.
    labels : list of str, optional
        One label per solution, in order (default: the models' names, numbered when they
        repeat); the keys of :attr:`Results.solutions` when the file is loaded.
    check : bool, default True
        Refuse objects of different problems (their
        :meth:`~effdyn.problems.Problem.identity`); False saves them together anyway, for a
        deliberate cross-comparison.
    metrics : bool, default True
        Also store ``compare(traj, sol)`` for each solution (``check`` passed on; a
        comparison that fails is stored as missing).

    Returns
    -------
    Path

    Examples
    --------
    >>> ed.save("valley.nc", traj, sol_fe, sol_cf, labels=["free energy", "central"])  # doctest: +SKIP
    >>> res = ed.load("valley.nc"); res.solutions["central"], res.metrics["central"]  # doctest: +SKIP
    """
    import xarray as xr

    from .io import metadata, save_dataset
    from .problems.base import identity_difference
    from .reference import GDTrajectory
    from .solution import Solution

    if not isinstance(check, bool):
        raise TypeError(f"`check` must be True or False; got {check!r}.")
    if not isinstance(metrics, bool):
        raise TypeError(f"`metrics` must be True or False; got {metrics!r}.")
    if not objects:
        raise TypeError("`objects`: nothing to save; pass effdyn.save(path, traj, sol1, sol2, ...).")
    traj, sols = None, []
    for i, obj in enumerate(objects):
        if isinstance(obj, GDTrajectory):
            if traj is not None:
                raise TypeError("`objects` holds two GD trajectories; a results file holds at most one (save the "
                                "other to its own file).")
            traj = obj
        elif isinstance(obj, Solution):
            sols.append(obj)
        else:
            raise TypeError(f"`objects` must be GDTrajectory and Solution objects; argument {i + 2} is a "
                            f"{type(obj).__name__}.")
    if labels is None:
        labels = _default_labels(sols)
    else:
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
            raise TypeError(f"`labels` must be a list of strings, one per solution; got {type(labels).__name__}.")
        labels = list(labels)
        if len(labels) != len(sols):
            raise ValueError(f"`labels` has {len(labels)} entries for {len(sols)} solutions; give one per solution.")
        if not all(isinstance(x, str) and x.strip() for x in labels):
            raise ValueError(f"`labels` must be non-empty strings; got {labels!r}.")
        if len(set(labels)) != len(labels):
            raise ValueError(f"`labels` must be distinct; got {labels!r}.")
    if check:
        ids = ([("the GD trajectory", traj.problem_identity)] if traj is not None and traj.problem_identity else [])
        ids += [(f"solution {label!r}", sol.model.problem.identity()) for label, sol in zip(labels, sols)]
        for name, ident in ids[1:]:
            diff = identity_difference(ids[0][1], ident)
            if diff:
                raise ValueError(f"`objects` mix problems: {name} was computed on another problem than "
                                 f"{ids[0][0]} ({diff}). Save them to separate files, or pass check=False to "
                                 "combine them deliberately.")
    solutions = dict(zip(labels, sols))
    root = xr.Dataset()
    if traj is not None and metrics and solutions:
        from .diagnostics import compare

        rows = {}
        for label, sol in solutions.items():
            try:
                rows[label] = compare(traj, sol, check=check)
            except (ValueError, TypeError):
                rows[label] = None
        M, names = _metrics_table(rows)
        root = xr.Dataset({"metrics": (("model", "metric"), M)},
                          coords={"model": np.array(labels, dtype=object), "metric": np.array(names, dtype=object)})
    root.attrs = metadata({"labels": labels}, None)
    ds = _combine(root, traj, solutions, "Results", strict=True)
    return save_dataset(ds, path)


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def _contents(ds, path) -> dict:
    where = f"`path` {str(path)!r}"
    fmt = ds.attrs.get(ATTR_FORMAT)
    if fmt != RESULTS_FORMAT:
        raise ValueError(f"{where} is not an effdyn results file (its `{ATTR_FORMAT}` attribute is {fmt!r}, not "
                         f"{RESULTS_FORMAT!r}): it was written by another program or an older effdyn. Read its "
                         "arrays with effdyn.io.load_dataset(path).")
    version = ds.attrs.get(ATTR_VERSION)
    try:
        version = int(version)
    except (TypeError, ValueError):
        pass
    if version != RESULTS_VERSION:
        raise ValueError(f"{where} has results format version {version!r}; this effdyn reads version "
                         f"{RESULTS_VERSION}. Read its arrays with effdyn.io.load_dataset(path), or use the effdyn "
                         "that wrote it.")
    try:
        doc = json.loads(str(ds.attrs[ATTR_CONTENTS]))
        if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
            raise ValueError("no list of objects")
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{where} is a damaged effdyn results file (`{ATTR_CONTENTS}`: {exc}).") from None
    return doc


def _read(path, problem, check):
    from .io import read_exact

    ds = read_exact(path)
    doc = _contents(ds, path)
    where = repr(str(path))
    cache: dict = {}

    def build(entry):
        prefix = str(entry.get("prefix", ""))
        attrs = ds.attrs if not prefix else entry.get("attrs", {})
        sub = _unprefixed(ds, prefix, attrs)
        if entry["kind"] == "GDTrajectory":
            return gd_from_dataset(sub, path)
        if entry["kind"] == "Solution":
            return solution_from_dataset(sub, problem=problem, check=check, where=where, path=path, _problems=cache)
        raise ValueError(f"`path` {where} holds an object of kind {entry['kind']!r}, which this effdyn does not read.")

    try:
        if doc.get("kind") in ("GDTrajectory", "Solution"):
            return doc["kind"], build(doc["objects"][0])
        res = Results(attrs={k: _plain(v) for k, v in ds.attrs.items() if k not in (ATTR_CONTENTS,)},
                      not_stored=dict(doc.get("not_stored") or {}), path=Path(path), metrics=_read_metrics(ds))
        for entry in doc["objects"]:
            obj = build(entry)
            if entry["kind"] == "GDTrajectory":
                res.gd = obj
            else:
                res.solutions[str(entry["label"])] = obj
        return doc.get("kind", "Results"), res
    except (KeyError, IndexError) as exc:
        raise ValueError(f"`path` {where} is a damaged effdyn results file (missing {exc}).") from None


def load(path, problem=None, *, check: bool = True):
    """Read a results file written by effdyn.

    Parameters
    ----------
    path : str or os.PathLike
        A file of ``traj.save``, ``sol.save``, :func:`save` or the validation suite
        (``effdyn validate`` / ``effdyn run``).
    problem : Problem, optional
        The problem the solutions were computed on. Built-in problems are rebuilt from the
        file; problems effdyn cannot rebuild (``from_jax`` losses, user classes) must be
        passed here. Its identity must match the saved one.
    check : bool, default True
        Check the problem's identity (given or rebuilt) against the saved one.

    Returns
    -------
    GDTrajectory, Solution or Results
        What the file holds: the trajectory of ``traj.save``, the solution of
        ``sol.save``, or a :class:`Results` (``.gd``, ``.solutions``, ``.metrics``) for
        combined and case files.

    Raises
    ------
    FileNotFoundError, ValueError
        No such file, or not an effdyn results file of this format version (the message
        names the file).
    TypeError
        The problem cannot be rebuilt and ``problem`` was not given.
    """
    if problem is not None:
        from .problems.base import Problem

        if not isinstance(problem, Problem):
            raise TypeError(f"`problem` must be an effdyn Problem or None; got {type(problem).__name__}.")
    if not isinstance(check, bool):
        raise TypeError(f"`check` must be True or False; got {check!r}.")
    return _read(path, problem, check)[1]


def load_object(path, cls, problem=None, *, check: bool = True):
    """``cls.load(path)``: like :func:`load`, but the file must hold one object of class ``cls``."""
    kind, obj = _read(path, problem, check)
    if kind != cls.__name__:
        what = "a validation case" if kind == "case" else ("several results" if kind == "Results" else f"a {kind}")
        raise ValueError(f"`path` {str(path)!r} holds {what}, not a {cls.__name__}; read it with effdyn.load(path).")
    return obj


def _problem_base():
    from .problems.base import Problem

    return Problem


#: Built-in problem classes that :func:`problem_from_config` rebuilds, by class name.
BUILTIN_PROBLEMS = {
    "MinimalValley": "effdyn.problems.minimal_valley:MinimalValley",
    "MinimalistTwoLayer": "effdyn.problems.minimalist_two_layer:MinimalistTwoLayer",
    "Quadratic": "effdyn.problems.quadratic:Quadratic",
    "ScalarProduct": "effdyn.problems.scalar_product:ScalarProduct",
    "DeepMatrixFactorization": "effdyn.problems.matrix_factorization:DeepMatrixFactorization",
    "TwoLayerNet": "effdyn.problems.two_layer:TwoLayerNet",
}


def problem_class(name: str):
    """The problem class called ``name``: a built-in one, or a registered problem
    (:func:`effdyn.registry.register_problem`) whose builder is a Problem class of that
    name. None when there is none (the file's problem must then be passed in)."""
    import importlib

    if name in BUILTIN_PROBLEMS:
        module, attr = BUILTIN_PROBLEMS[name].split(":")
        return getattr(importlib.import_module(module), attr)
    from . import registry

    for entry in registry._PROBLEMS.values():
        target = entry.target
        if isinstance(target, type) and issubclass(target, _problem_base()) and target.__name__ == name:
            return target
    return None


def problem_from_config(class_name: str, config: dict, arrays: dict | None = None) -> Problem:
    """Rebuild a saved problem: ``class_name`` looked up by :func:`problem_class` (never
    imported from a name in the file), then ``cls.from_config(config, arrays)``."""
    cls = problem_class(class_name)
    if cls is None:
        raise TypeError(f"the saved problem is a {class_name}, which effdyn cannot rebuild (not a built-in or "
                        "registered Problem class); pass it as `problem=`.")
    return cls.from_config(dict(config), dict(arrays or {}))
