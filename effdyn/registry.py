"""Names of models, problems and validation cases, for configuration files, the CLI and the
suite.

``effdyn run`` and ``effdyn validate`` find what a TOML file or ``--cases`` names here, so a
model or problem defined outside effdyn becomes usable there by registering it::

    import effdyn

    @effdyn.registry.register_model
    class MyFlow(effdyn.models.AbstractModel): ...

    effdyn.registry.register_problem("MyLoss", build_my_loss)   # build(**params) -> problem

The command line imports the modules that register things before it reads anything:
``effdyn --plugin mypackage.effdyn_plugin run config.toml``, the environment variable
``EFFDYN_PLUGINS`` (comma-separated module names), or an entry point of the group
``effdyn.plugins`` in the plugin's own package metadata. A plugin is code the user installed
and named; configuration files themselves never run code.

Built-in entries are resolved lazily (by import path), so ``import effdyn`` stays light.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

__all__ = ["register_model", "register_problem", "register_case", "model_entry", "problem_entry", "model_names",
           "problem_names", "registered_cases", "load_plugins", "ModelEntry", "ProblemEntry", "UnknownNameError"]


class UnknownNameError(ValueError):
    """A name that is not registered (the message lists the registered ones)."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model class. ``takes_eta``: built as ``cls(problem, eta, **options)``
    (True) or ``cls(problem, **options)`` (False: the learning rate is given in other units,
    e.g. the mean-field model's ``eta_mf``, and the model's ``eta`` must equal the run's)."""

    name: str
    target: object  # the class, or "module:attr" until first use
    takes_eta: bool = True

    @property
    def cls(self):
        return _resolve(self.target)


@dataclass(frozen=True)
class ProblemEntry:
    """A registered problem: ``build(**params)`` returns a Problem, or ``(problem, theta0)``
    when the problem comes with its own start (``theta0`` may be None). ``keys`` are the
    accepted parameters (None: the builder's signature)."""

    name: str
    target: object
    keys: tuple | None = None

    @property
    def build(self) -> Callable:
        return _resolve(self.target)

    def parameters(self) -> tuple:
        if self.keys is not None:
            return tuple(self.keys)
        try:
            params = inspect.signature(self.build).parameters
        except (TypeError, ValueError):
            return ()
        return tuple(n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def accepts_any(self) -> bool:
        if self.keys is not None:
            return False
        try:
            return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(self.build).parameters.values())
        except (TypeError, ValueError):
            return True


def _resolve(target):
    if isinstance(target, str):
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)
    return target


_MODELS: dict[str, ModelEntry] = {
    name: ModelEntry(name, f"effdyn.models:{name}")
    for name in ("GradientFlow", "FreeEnergyFlow", "CentralFlow", "SelfStabilization", "SharpnessReductionFlow",
                 "RodFlow", "EdgeFlow")
}
_MODELS["MeanFieldKinetic"] = ModelEntry("MeanFieldKinetic", "effdyn.models:MeanFieldKinetic", takes_eta=False)

_PROBLEMS: dict[str, ProblemEntry] = {
    name: ProblemEntry(name, f"effdyn.problems:{name}")
    for name in ("MinimalValley", "MinimalistTwoLayer", "Quadratic", "ScalarProduct", "TwoLayerNet")
}
_PROBLEMS.update({
    "DeepMatrixFactorization": ProblemEntry("DeepMatrixFactorization", "effdyn.problems.builders:deep_matrix_factorization"),
    "TeacherStudent": ProblemEntry("TeacherStudent", "effdyn.problems.builders:teacher_student_problem"),
    "DigitsMLP": ProblemEntry("DigitsMLP", "effdyn.problems.builders:digits_mlp"),
    "Cifar10MLP": ProblemEntry("Cifar10MLP", "effdyn.problems.builders:cifar10_mlp"),
    "DigitsCNN": ProblemEntry("DigitsCNN", "effdyn.problems.builders:digits_cnn"),
    "Cifar10CNN": ProblemEntry("Cifar10CNN", "effdyn.problems.builders:cifar10_cnn"),
    "PeerMLP": ProblemEntry("PeerMLP", "effdyn.problems.builders:peer_mlp"),
    # a JAX loss named by "package.module:function" references (effdyn.problems.from_config)
    "jax": ProblemEntry("jax", "effdyn.problems.from_config:jax_problem"),
})

#: Validation cases registered from outside effdyn (the built-in ones are the files of
#: validation/cases, loaded by effdyn.validation.cases).
_CASES: dict = {}


def register_model(cls=None, *, name: str | None = None, takes_eta: bool = True):
    """Register a model class (usable as a decorator). ``name`` defaults to the class name."""
    from .models.base import AbstractModel

    def add(c):
        if not (inspect.isclass(c) and issubclass(c, AbstractModel)):
            raise TypeError(f"`cls` must be a subclass of effdyn.models.AbstractModel; got {c!r}.")
        key = name or c.__name__
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"`name` must be an identifier-like string; got {key!r}.")
        if not isinstance(takes_eta, bool):
            raise TypeError(f"`takes_eta` must be True or False; got {takes_eta!r}.")
        _MODELS[key] = ModelEntry(key, c, takes_eta)
        return c

    return add(cls) if cls is not None else add


def register_problem(name: str, build: Callable, *, keys=None) -> None:
    """Register a problem builder ``build(**params) -> Problem`` (or ``(problem, theta0)``)
    under ``name``; ``keys`` lists the accepted parameters (default: the signature)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"`name` must be an identifier-like string; got {name!r}.")
    if not callable(build):
        raise TypeError(f"`build` must be callable (a Problem class or a function); got {type(build).__name__}.")
    if keys is not None:
        keys = tuple(keys)
        if not all(isinstance(k, str) for k in keys):
            raise TypeError("`keys` must be a list of parameter names (strings).")
    _PROBLEMS[name] = ProblemEntry(name, build, keys)


def register_case(case) -> None:
    """Register a validation case (an :class:`effdyn.validation.cases.Case`: a name, a title
    and ``setup(quick, cifar, steps)``); ``effdyn validate --cases NAME`` then runs it."""
    for attr in ("name", "title", "setup", "needs_cifar"):
        if not hasattr(case, attr):
            raise TypeError(f"`case` must be an effdyn.validation.cases.Case (it has no `{attr}`); got "
                            f"{type(case).__name__}.")
    if not isinstance(case.name, str) or not case.name:
        raise ValueError(f"`case.name` must be a non-empty string; got {case.name!r}.")
    _CASES[case.name] = case


def registered_cases() -> dict:
    """Cases registered from outside effdyn, by name (the built-in ones are in
    :data:`effdyn.validation.cases.CASES`; :func:`effdyn.validation.get_case` looks in both)."""
    return dict(_CASES)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise UnknownNameError(f"unknown model type {name!r}; registered: {', '.join(model_names())}.")
    return _MODELS[name]


def problem_entry(name: str) -> ProblemEntry:
    if name not in _PROBLEMS:
        raise UnknownNameError(f"unknown problem type {name!r}; registered: {', '.join(problem_names())}.")
    return _PROBLEMS[name]


def model_names() -> tuple:
    return tuple(_MODELS)


def problem_names() -> tuple:
    return tuple(_PROBLEMS)


def load_plugins(modules=()) -> list[str]:
    """Import the named plugin modules, those in ``$EFFDYN_PLUGINS`` and the entry points of
    the group ``effdyn.plugins``; return the names imported."""
    import os
    from importlib import metadata

    names = [m for m in modules if m]
    names += [m.strip() for m in os.environ.get("EFFDYN_PLUGINS", "").split(",") if m.strip()]
    done = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"plugin module {name!r} could not be imported ({exc}); check the name and that "
                              "its package is installed or on PYTHONPATH.") from exc
        done.append(name)
    for ep in metadata.entry_points(group="effdyn.plugins"):
        ep.load()
        done.append(ep.value)
    return done
