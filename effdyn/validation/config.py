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

Problem builders besides the classes: ``TeacherStudent`` (width, n, d, data_seed,
activation, scaling), ``DigitsMLP`` (n, width, init_scale, data_seed),
``Cifar10MLP`` (path, n, width, init_scale, data_seed); ``DeepMatrixFactorization`` also
accepts ``sigma1`` (and ``target_seed``) instead of ``target``.

Every mistake raises :class:`ConfigError` naming the file, the table and the key, and
saying how to fix it, before anything runs.
"""

from __future__ import annotations

import inspect
import numbers
import tomllib
from pathlib import Path

import numpy as np

from .cases import ModelSpec, Setup, mlp_problem

__all__ = ["ConfigError", "load_config", "config_from_document", "RunConfig", "PROBLEM_TYPES", "MODEL_TYPES"]

_TOP_KEYS = {"name": "a name for the output files", "problem": "a table", "start": "a table", "gd": "a table",
             "models": "an array of tables ([[models]])", "output": "a table"}
_GD_KEYS = ("eta", "steps", "n_eigs", "eig_every", "theta_every", "variant", "eig_tol", "dense_max", "loss_bound")
_MODEL_KEYS = ("type", "label", "solver", "rtol", "atol", "save_every", "budget", "options", "initial")
_OUTPUT_KEYS = ("dir", "figures")
_BUILDERS = {
    "TeacherStudent": ("width", "n", "d", "data_seed", "activation", "scaling"),
    "DigitsMLP": ("n", "width", "init_scale", "data_seed"),
    "Cifar10MLP": ("path", "n", "width", "init_scale", "data_seed"),
}
#: Problem types a configuration can name.
PROBLEM_TYPES = ("MinimalValley", "DeepMatrixFactorization", "MinimalistTwoLayer", "Quadratic", "ScalarProduct",
                 "TwoLayerNet", *_BUILDERS)
#: Model types a configuration can name (the classes of effdyn.models).
MODEL_TYPES = ("GradientFlow", "FreeEnergyFlow", "CentralFlow", "SelfStabilization", "SharpnessReductionFlow",
               "RodFlow", "EdgeFlow", "MeanFieldKinetic")


class ConfigError(ValueError):
    """An invalid run configuration; the message names the key and the fix."""


class RunConfig:
    """A parsed configuration: ``name``, ``setup`` (a :class:`Setup`), ``out_dir``, ``figures``."""

    def __init__(self, name, setup, out_dir, figures, path):
        self.name, self.setup, self.out_dir, self.figures, self.path = name, setup, out_dir, figures, path


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
    if not ok or not np.isfinite(value) or (positive and value <= 0):
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
    import effdyn.problems as problems

    where = "[problem]"
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind is None:
        raise _err(path, where, f"missing `type`; set e.g. `type = \"MinimalValley\"` (one of {', '.join(PROBLEM_TYPES)}).")
    if kind not in PROBLEM_TYPES:
        raise _err(path, where, f"unknown problem type {kind!r}; valid types: {', '.join(PROBLEM_TYPES)}.")
    if kind in _BUILDERS:
        _check_keys(path, where, spec, ("type", *_BUILDERS[kind]))
        return _build_special(path, kind, spec)
    cls = getattr(problems, kind)
    if kind == "DeepMatrixFactorization" and "target" not in spec:
        if "sigma1" not in spec:
            raise _err(path, where, "DeepMatrixFactorization needs `target` (a d×d matrix) or `sigma1` "
                                    "(target diag(σ1, 1, ...) rotated by `target_seed` if given).")
        sigma1 = spec.pop("sigma1")
        tseed = spec.pop("target_seed", None)
        try:
            spec["target"] = cls.spectral_target(sigma1, d=spec.get("d"), seed=tseed)
        except (TypeError, ValueError) as exc:
            raise _err(path, where, f"`sigma1`/`target_seed`: {exc}") from None
    if kind == "TwoLayerNet":
        raise _err(path, where, "TwoLayerNet needs data arrays, which TOML cannot hold; use "
                                "`type = \"TeacherStudent\"` (the mean-field benchmark) or build it in Python.")
    _signature_check(path, where, cls, spec, skip=("self",))
    try:
        return cls(**spec), None
    except (TypeError, ValueError) as exc:
        raise _err(path, where, f"{kind}: {exc}") from None


def _build_special(path, kind, spec):
    where = "[problem]"
    try:
        if kind == "TeacherStudent":
            from ..problems.two_layer import teacher_student

            width = spec.get("width")
            if width is None:
                raise _err(path, where, "TeacherStudent needs `width` (number of neurons N), e.g. `width = 200`.")
            prob = teacher_student(width, n=spec.get("n", 100), d=spec.get("d", 5), seed=spec.get("data_seed", 0),
                                   activation=spec.get("activation", "tanh"), scaling=spec.get("scaling", "mean-field"))
            return prob, None
        from ..data import load_cifar10_subset, load_digits_subset, one_hot

        n = spec.get("n", 500)
        if kind == "DigitsMLP":
            X, labels = load_digits_subset(n, seed=spec.get("data_seed", 0))
        else:
            if "path" not in spec:
                raise _err(path, where, "Cifar10MLP needs `path` = a local `cifar-10-batches-py` folder.")
            X, labels = load_cifar10_subset(spec["path"], n=n, seed=spec.get("data_seed", 0))
        prob, theta0 = mlp_problem(X, one_hot(labels), spec.get("width", 32), init_scale=spec.get("init_scale", 1.0),
                                   seed=spec.get("data_seed", 0), name=kind)
        return prob, theta0
    except ConfigError:
        raise
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise _err(path, where, f"{kind}: {exc}") from None


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


def _models(path, entries):
    from ..solvers import SOLVER_NAMES

    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _err(path, "models", "`models` must be an array of tables: write each model as [[models]].")
    specs, labels = [], set()
    for i, entry in enumerate(entries, 1):
        where = f"[[models]] #{i}"
        _check_keys(path, where, entry, _MODEL_KEYS)
        kind = entry.get("type")
        if kind is None:
            raise _err(path, where, f"missing `type`; one of {', '.join(MODEL_TYPES)}.")
        if kind not in MODEL_TYPES:
            raise _err(path, where, f"unknown model type {kind!r}; valid types: {', '.join(MODEL_TYPES)}.")
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
            import effdyn.models as models

            cls = getattr(models, kind)
        except (ImportError, AttributeError):
            cls = None  # not in this installation: the run reports it as unavailable
        if cls is not None:
            _signature_check(path, f"{where} options", cls, options)
            _signature_check(path, f"{where} initial", cls.initial_state, initial, skip=("self", "theta0"))
        specs.append(ModelSpec(label, kind, dict(options), dict(initial), solver=solver, **kw))
    return tuple(specs)


def load_config(path) -> RunConfig:
    """Parse and check a run configuration (see the module docstring for the layout).

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
    return config_from_document(doc, path)


def config_from_document(doc: dict, source) -> RunConfig:
    """Check an already-loaded configuration ``doc`` (the dict TOML gives) and build it.

    ``source`` names where the document came from (a path, or a label such as
    ``"sweep.toml, point eta=0.3"``); it prefixes every error message and supplies the
    default ``name`` (its stem). The checks and errors are those of :func:`load_config`.
    """
    path = Path(source)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the configuration must be a table (a TOML document); got {type(doc).__name__}.")
    _check_keys(path, "top level", doc, tuple(_TOP_KEYS))
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise _err(path, "name", f"`name` must be a non-empty string; got {name!r}.")
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
    models = _models(path, doc.get("models", []))
    output = _table(path, doc, "output")
    _check_keys(path, "[output]", output, _OUTPUT_KEYS)
    out_dir = output.get("dir")
    figures = output.get("figures", True)
    if not isinstance(figures, bool):
        raise _err(path, "[output]", f"`figures` must be true or false; got {figures!r}.")
    cfg = {"file": str(path), "document": doc}
    setup = Setup(problem, theta0, eta, steps, models, seed=seed, gd_options=gd_options,
                  notes=f"Configuration {path.name}: {type(problem).__name__} (P = {problem.dim}).", config=cfg)
    return RunConfig(name.strip(), setup, out_dir, figures, path)
