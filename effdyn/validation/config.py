"""Run configurations from TOML files (``effdyn run CONFIG.toml``).

A configuration describes one problem, where GD starts, η and the horizon, and the models
to compare with GD. ``validation/example.toml`` is a commented example. Layout::

    name = "my-run"                 # optional: file prefix (default: the file's stem)

    [problem]
    type = "MinimalValley"          # a class of effdyn.problems or a builder below
    zeta = 1.0                      # the other keys are the constructor's parameters
    eps = 0.01

    [start]                         # optional: theta0 = [...] or seed = 0 (problem.init)
    theta0 = [0.1, 3.0]

    [gd]
    eta = 0.3                       # required
    steps = 4000                    # required (GD steps; also every model's horizon)
    n_eigs = 2                      # optional options of effdyn.gd (also eig_every,
    eig_every = 1                   # eig_tol, dense_max, theta_every, variant, loss_bound)

    [[models]]                      # one table per model (none: GD only)
    type = "FreeEnergyFlow"         # a class of effdyn.models
    label = "free-energy flow"      # optional
    solver = "scipy:LSODA"          # optional: solve() options, and budget (seconds)
    options = { rank = 1 }                 # constructor keyword arguments
    initial = { sigma_seed = "gd" }        # initial_state keyword arguments

    [output]
    dir = "effdyn-run"              # optional (the CLI's --out wins)
    figures = true

Problem types are the names in :mod:`effdyn.registry`: the classes of effdyn.problems, the
builders ``TeacherStudent`` (width, n, d, data_seed, activation, scaling), ``DigitsMLP``
(n, width, init_scale, data_seed), ``Cifar10MLP`` (path, n, width, init_scale, data_seed),
``DeepMatrixFactorization`` (also with ``sigma1``, ``target_seed`` instead of ``target``),
``jax`` (a JAX loss named by ``loss = "package.module:function"``, with ``dim`` or
``params``, and an optional ``data`` builder that receives the table's other keys: see
:mod:`effdyn.problems.from_config`), and whatever a plugin registered. Model types likewise (the classes of effdyn.models and
registered ones).

A validation case is a configuration with a ``[case]`` table (``title``, ``quick_steps``,
``full_steps``, ``notes``, ``needs_cifar``, ``handover_offset``: GD steps after GD's EoS
onset at which every model is also started from GD's state) and optional ``[quick]`` / ``[full]`` tables of
overrides keyed by dotted paths (``"problem.width" = 200``, ``"gd.eta" = 100.0``); a model
with ``only = "full"`` (or ``"quick"``) runs in that mode only.

Every mistake raises :class:`ConfigError` naming the file, the table and the key, and
saying how to fix it, before anything runs: every model is built and its solver and
initial data are checked (its initial state is computed) before GD starts.
"""

from __future__ import annotations

import copy
import inspect
import numbers
import re
import tomllib
from pathlib import Path

import numpy as np

from .. import registry
from .spec import ModelSpec, Setup

__all__ = ["ConfigError", "load_config", "config_from_document", "RunConfig", "PROBLEM_TYPES", "MODEL_TYPES",
           "apply_overrides", "check_name"]

_TOP_KEYS = {"name": "a name for the output files", "problem": "a table", "start": "a table", "gd": "a table",
             "models": "an array of tables ([[models]])", "output": "a table", "case": "a table",
             "quick": "a table of overrides", "full": "a table of overrides"}
_GD_KEYS = ("eta", "steps", "n_eigs", "eig_every", "theta_every", "variant", "eig_tol", "dense_max", "loss_bound")
_MODEL_KEYS = ("type", "label", "solver", "rtol", "atol", "save_every", "budget", "options", "initial", "only")
_OUTPUT_KEYS = ("dir", "figures")
_CASE_KEYS = ("title", "quick_steps", "full_steps", "notes", "needs_cifar", "handover_offset")


def __getattr__(name):
    # the registered names, as of now (plugins may add more)
    if name == "PROBLEM_TYPES":
        return registry.problem_names()
    if name == "MODEL_TYPES":
        return registry.model_names()
    raise AttributeError(name)


class ConfigError(ValueError):
    """An invalid run configuration; the message names the key and the fix."""


class RunConfig:
    """A parsed configuration: ``name``, ``setup`` (a :class:`Setup`), ``out_dir``,
    ``figures``, ``path`` (the file, or the source label of a document) and ``case`` (the
    ``[case]`` table, empty for a plain run)."""

    def __init__(self, name, setup, out_dir, figures, path, case=None):
        self.name, self.setup, self.out_dir, self.figures, self.path = name, setup, out_dir, figures, path
        self.case = dict(case or {})


def _err(path, where, msg) -> ConfigError:
    return ConfigError(f"{path}: {where}: {msg}")


def _check_keys(path, where, table, allowed):
    for key in table:
        if key not in allowed:
            raise _err(path, where, f"unknown key `{key}`; valid keys: {', '.join(allowed)}.")


def _table(path, doc, key, required=False):
    value = doc.get(key, None)
    if value is None:
        if required:
            raise _err(path, f"[{key}]", f"missing table [{key}]; add it (see validation/example.toml).")
        return {}
    if not isinstance(value, dict):
        raise _err(path, key, f"`{key}` must be a table [{key}], got {type(value).__name__}.")
    return value


def _number(path, where, key, value, *, integer=False, positive=True):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if integer:
        ok = ok and isinstance(value, numbers.Integral)
    if ok:
        try:  # Python integers beyond float64 (TOML allows 64-bit ones, documents built in code any)
            ok = bool(np.isfinite(float(value))) and (not integer or abs(value) < 2**63)
        except OverflowError:
            ok = False
    if not ok or (positive and value <= 0):
        kind = "a positive integer" if integer else ("a number > 0" if positive else "a finite number")
        raise _err(path, where, f"`{key}` must be {kind}; got {value!r}. Write e.g. `{key} = "
                   f"{'100' if integer else '0.1'}`.")
    return value


def _signature_check(path, where, cls, kwargs, skip=("self", "problem", "eta")):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n not in skip and p.kind != p.VAR_POSITIONAL]
    for key in kwargs:
        if key not in valid:
            raise _err(path, where, f"`{key}` is not a parameter of {cls.__qualname__}; valid: {', '.join(valid) or 'none'}.")


def _build_problem(path, spec):
    where = "[problem]"
    spec = dict(spec)
    kind = spec.pop("type", None)
    names = registry.problem_names()
    if kind is None:
        raise _err(path, where, f"missing `type`; set e.g. `type = \"MinimalValley\"` (one of {', '.join(names)}).")
    if not isinstance(kind, str):
        raise _err(path, where, f"`type` must be a string, one of {', '.join(names)}; got {kind!r}.")
    try:
        entry = registry.problem_entry(kind)
    except registry.UnknownNameError:
        raise _err(path, where, f"unknown problem type {kind!r}; valid types: {', '.join(names)}.") from None
    if kind == "TwoLayerNet":
        raise _err(path, where, "TwoLayerNet needs data arrays, which TOML cannot hold; use "
                                "`type = \"TeacherStudent\"` (the mean-field benchmark) or build it in Python.")
    if not entry.accepts_any():
        valid = entry.parameters()
        for key in spec:
            if key not in valid:
                raise _err(path, where, f"`{key}` is not a parameter of {kind}; valid: {', '.join(valid) or 'none'}.")
    try:
        built = entry.build(**spec)
    except ConfigError:
        raise
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise _err(path, where, f"{kind}: {exc}") from None
    problem, theta0 = built if isinstance(built, tuple) else (built, None)
    from ..problems.base import Problem

    if not isinstance(problem, Problem):
        raise _err(path, where, f"the builder of {kind!r} returned a {type(problem).__name__}, not an effdyn Problem.")
    return problem, theta0


def _theta0(path, problem, default, start):
    where = "[start]"
    _check_keys(path, where, start, ("theta0", "seed"))
    if "theta0" in start and "seed" in start:
        raise _err(path, where, "give either `theta0` or `seed`, not both.")
    if "theta0" in start:
        try:
            theta0 = np.asarray(start["theta0"], dtype=np.float64)
        except (TypeError, ValueError):
            raise _err(path, where, f"`theta0` must be a list of {problem.dim} numbers.") from None
        if theta0.shape != (problem.dim,) or not np.all(np.isfinite(theta0)):
            raise _err(path, where, f"`theta0` must be a list of {problem.dim} finite numbers (the problem's dim); "
                                    f"got shape {theta0.shape}.")
        return theta0, None
    seed = start.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _err(path, where, f"`seed` must be an integer >= 0; got {seed!r}.")
    if default is not None:
        return default, seed
    try:
        return np.asarray(problem.init(seed), dtype=np.float64), seed
    except NotImplementedError:
        raise _err(path, where, f"{type(problem).__name__} has no standard initialisation; give `theta0 = [...]` "
                                f"({problem.dim} numbers).") from None


def _models(path, entries, mode=None):
    from ..solvers import SOLVER_NAMES

    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _err(path, "models", "`models` must be an array of tables: write each model as [[models]].")
    specs, labels = [], set()
    for i, entry in enumerate(entries, 1):
        where = f"[[models]] #{i}"
        _check_keys(path, where, entry, _MODEL_KEYS)
        kind = entry.get("type")
        names = registry.model_names()
        if kind is None:
            raise _err(path, where, f"missing `type`; one of {', '.join(names)}.")
        if not isinstance(kind, str):
            raise _err(path, where, f"`type` must be a string, one of {', '.join(names)}; got {kind!r}.")
        try:
            reg = registry.model_entry(kind)
        except registry.UnknownNameError:
            raise _err(path, where, f"unknown model type {kind!r}; valid types: {', '.join(names)}.") from None
        only = entry.get("only")
        if only is not None and only not in ("quick", "full"):
            raise _err(path, where, f"`only` must be \"quick\" or \"full\"; got {only!r}.")
        label = entry.get("label", kind)
        if not isinstance(label, str) or not label or label in labels:
            raise _err(path, where, f"`label` must be a non-empty string unique among the models; got {label!r}.")
        labels.add(label)
        solver = entry.get("solver", "scipy:LSODA")
        if solver not in SOLVER_NAMES:
            raise _err(path, where, f"`solver` {solver!r} is not known; valid solvers: {', '.join(SOLVER_NAMES)}.")
        kw = {}
        for key in ("rtol", "atol", "save_every", "budget"):
            if key in entry:
                kw[key] = float(_number(path, where, key, entry[key]))
        options, initial = entry.get("options", {}), entry.get("initial", {})
        for key, value in (("options", options), ("initial", initial)):
            if not isinstance(value, dict):
                raise _err(path, where, f"`{key}` must be an inline table, e.g. `{key} = {{ rank = 1 }}`.")
        try:
            cls = reg.cls
        except (ImportError, AttributeError):
            cls = None  # not in this installation: the run reports it as unavailable
        if cls is not None:
            skip = ("self", "problem", "eta") if reg.takes_eta else ("self", "problem")
            _signature_check(path, f"{where} options", cls, options, skip=skip)
            allowed = cls.initial_options()
            for key in initial:
                if key not in allowed:
                    raise _err(path, f"{where} initial", f"`{key}` is not an initial-data option of {kind}; valid: "
                                                         f"{', '.join(allowed) or 'none'}.")
        if only is not None and mode is not None and only != mode:
            continue
        specs.append(ModelSpec(label, kind, dict(options), dict(initial), solver=solver, pass_eta=reg.takes_eta,
                               **kw))
    return tuple(specs)


def _check_models_build(path, setup):
    """Build every model on the problem, check its solver and initial data (computing its
    initial state) — so that nothing runs when a model's configuration is wrong."""
    for i, spec in enumerate(setup.models, 1):
        where = f"[[models]] {spec.label!r}"
        try:
            cls = registry.model_entry(spec.cls).cls
        except (ImportError, AttributeError):
            continue
        try:
            model = build_model(cls, spec, setup)
        except Exception as exc:
            raise _err(path, f"{where} options", f"{type(exc).__name__}: {exc}") from None
        family = spec.solver.split(":")[0]
        if family not in model.supports:
            raise _err(path, where, f"`solver` {spec.solver!r} is not available for {spec.cls}; it supports "
                                    f"{', '.join(model.supports)} (e.g. solver = \"map\").")
        if family == "diffrax":
            try:
                model.jax_drift()
            except Exception as exc:
                raise _err(path, where, f"`solver` {spec.solver!r}: {exc}") from None
        try:
            model.start(setup.theta0, **spec.initial)
        except Exception as exc:
            raise _err(path, f"{where} initial", f"{type(exc).__name__}: {exc}") from None


def build_model(cls, spec, setup):
    """``cls(problem, eta, **options)``, or for a model whose learning rate comes in other
    units, ``cls(problem, **options)`` with its ``eta`` checked against the run's."""
    if spec.pass_eta:
        return cls(setup.problem, setup.eta, **spec.options)
    model = cls(setup.problem, **spec.options)
    if not np.isclose(model.eta, setup.eta, rtol=1e-12, atol=0.0):
        raise ValueError(f"the model's GD step η = {model.eta:g} differs from the run's η = {setup.eta:g}")
    return model


def _handover_offset(path, case: dict):
    """The case's ``handover_offset`` (GD steps after the EoS onset, an integer >= 0) or None."""
    value = case.get("handover_offset")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _err(path, "[case]", f"`handover_offset` must be an integer >= 0 (GD steps after GD's EoS onset at which "
                                   f"the models are also started from GD's state), e.g. `handover_offset = 50`; got "
                                   f"{value!r}.")
    return int(value)


def check_name(name, where="name") -> str:
    """An output name: a non-empty slug of letters, digits, '-', '_', '.' — no path
    separators and no '..', so every file stays inside the output folder."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"`{where}` must be a non-empty string; got {name!r}.")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise ValueError(f"`{where}` = {name!r} must be a plain file-name prefix (letters, digits, '-', '_', '.'; no "
                         f"'/', '\\' or '..'), e.g. {re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('.-') or 'run'!r}.")
    return name


def apply_overrides(doc: dict, overrides: dict, source: str = "overrides") -> dict:
    """A copy of ``doc`` with values replaced at dotted paths (``"problem.width"``,
    ``"models.0.options.rank"``). The parent table (or array) must exist."""
    out = copy.deepcopy(doc)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for j, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: j + 1]), source, key)
        last = parts[-1]
        if isinstance(node, list):
            idx = _index(node, last, key, source)
            node[idx] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"{source}: `{key}`: {'.'.join(parts[:-1])} is not a table.")
    return out


def _child(node, part, where, source, key):
    if isinstance(node, list):
        return node[_index(node, part, key, source)]
    if not isinstance(node, dict) or part not in node:
        raise ConfigError(f"{source}: `{key}`: the configuration has no `{where}`.")
    return node[part]


def _index(node, part, key, source):
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{source}: `{key}`: `{part}` is not an index of an array of length {len(node)}.")
    return int(part)


def load_config(path, *, mode: str | None = None, cifar=None) -> RunConfig:
    """Parse and check a run configuration (see the module docstring for the layout).

    ``mode`` ("quick" or "full") applies the file's ``[quick]``/``[full]`` overrides and
    model filters (validation cases); None applies none. ``cifar`` fills ``problem.path``
    of a case that needs CIFAR-10.

    Raises
    ------
    ConfigError
        With the file, the table, the key and the fix.
    FileNotFoundError
        When ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found; pass a TOML file (see validation/example.toml).")
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_document(doc, path, mode=mode, cifar=cifar)


def config_from_document(doc: dict, source, *, mode: str | None = None, cifar=None) -> RunConfig:
    """Check an already-loaded configuration ``doc`` (the dict TOML gives) and build it.

    ``source`` names where the document came from (a path, or a label such as
    ``"sweep.toml, point eta=0.3"``); it prefixes every error message and supplies the
    default ``name`` (its stem). ``mode`` applies a case's ``[quick]``/``[full]`` overrides
    and model filters; ``cifar`` fills ``problem.path`` of a case that needs CIFAR-10. The
    checks and errors are those of :func:`load_config`.
    """
    path = source if isinstance(source, Path) else Path(str(source))
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the configuration must be a table (a TOML document); got {type(doc).__name__}.")
    _check_keys(path, "top level", doc, tuple(_TOP_KEYS))
    case = _table(path, doc, "case")
    _check_keys(path, "[case]", case, _CASE_KEYS)
    for key in ("quick_steps", "full_steps"):
        if key in case:
            _number(path, "[case]", key, case[key], integer=True)
    for key in ("title", "notes"):
        if key in case and not isinstance(case[key], str):
            raise _err(path, "[case]", f"`{key}` must be a string; got {case[key]!r}.")
    if "needs_cifar" in case and not isinstance(case["needs_cifar"], bool):
        raise _err(path, "[case]", f"`needs_cifar` must be true or false; got {case['needs_cifar']!r}.")
    _handover_offset(path, case)
    if mode is not None:
        if mode not in ("quick", "full"):
            raise ValueError(f"`mode` must be 'quick', 'full' or None; got {mode!r}.")
        overrides = _table(path, doc, mode)
        doc = apply_overrides({k: v for k, v in doc.items() if k not in ("quick", "full")}, overrides,
                              f"{path}: [{mode}]")
    if cifar is not None and case.get("needs_cifar"):
        doc = apply_overrides(doc, {"problem.path": str(cifar)}, f"{path}")
    name = doc.get("name", path.stem)
    try:
        name = check_name(name)
    except ValueError as exc:
        raise _err(path, "name", str(exc)) from None
    problem, default = _build_problem(path, _table(path, doc, "problem", required=True))
    theta0, seed = _theta0(path, problem, default, _table(path, doc, "start"))
    gd = _table(path, doc, "gd", required=True)
    _check_keys(path, "[gd]", gd, _GD_KEYS)
    for key, example in (("eta", "eta = 0.1"), ("steps", "steps = 1000")):
        if key not in gd:
            raise _err(path, "[gd]", f"missing `{key}`; add e.g. `{example}` under [gd].")
    eta = float(_number(path, "[gd]", "eta", gd["eta"]))
    steps = int(_number(path, "[gd]", "steps", gd["steps"], integer=True))
    gd_options = {"n_eigs": 2, "eig_every": 1}
    for key in ("n_eigs", "eig_every", "theta_every"):
        if key in gd:
            gd_options[key] = int(_number(path, "[gd]", key, gd[key], integer=True))
    if gd_options["n_eigs"] > problem.dim:
        if "n_eigs" in gd:
            raise _err(path, "[gd]", f"`n_eigs` = {gd_options['n_eigs']} exceeds the problem dimension "
                                     f"P = {problem.dim}; use n_eigs <= {problem.dim}.")
        gd_options["n_eigs"] = problem.dim  # the default adapts to small problems
    for key in ("eig_tol", "loss_bound"):
        if key in gd:
            gd_options[key] = float(_number(path, "[gd]", key, gd[key]))
    if "dense_max" in gd:
        gd_options["dense_max"] = int(_number(path, "[gd]", "dense_max", gd["dense_max"], integer=True, positive=False))
    if "variant" in gd:
        from ..reference import VARIANTS

        if gd["variant"] not in VARIANTS:
            raise _err(path, "[gd]", f"`variant` must be one of {', '.join(VARIANTS)}; got {gd['variant']!r}.")
        gd_options["variant"] = gd["variant"]
    models = _models(path, doc.get("models", []), mode)
    output = _table(path, doc, "output")
    _check_keys(path, "[output]", output, _OUTPUT_KEYS)
    out_dir = output.get("dir")
    figures = output.get("figures", True)
    if not isinstance(figures, bool):
        raise _err(path, "[output]", f"`figures` must be true or false; got {figures!r}.")
    cfg = {"file": str(path), "document": doc}
    notes = case.get("notes", f"Configuration {path.name}: {type(problem).__name__} (P = {problem.dim}).")
    # read after the [quick]/[full] overrides, which may move it ("case.handover_offset" = ...)
    offset = _handover_offset(path, _table(path, doc, "case"))
    setup = Setup(problem, theta0, eta, steps, models, seed=seed, gd_options=gd_options, notes=str(notes), config=cfg,
                  handover_offset=offset)
    _check_models_build(path, setup)
    return RunConfig(name, setup, out_dir, figures, path, case)
