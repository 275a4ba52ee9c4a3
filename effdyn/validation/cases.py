"""The validation cases: each is a problem, a learning rate, a horizon and a list of models.

The built-in cases are data: one TOML file per case in the top-level ``validation/cases/``
folder (installed with the package as ``effdyn.suite``), in the configuration format that
``effdyn run`` reads (:mod:`effdyn.validation.config`) plus a ``[case]`` table and
``[quick]``/``[full]`` overrides. Each file says, in its comments, why its numbers were
chosen. :data:`CASES` holds them in run order (:data:`SUITE`; files not listed there follow
in alphabetical order).

A :class:`Case` builds its :class:`Setup` (problem, θ0, η, horizon, GD options, models) for
either the quick horizon (``effdyn validate --quick``, what ``make run`` runs) or the full
one. Models are named by their class in :mod:`effdyn.models` (:class:`ModelSpec`), so a
model that is not implemented yet is skipped with a note instead of breaking the suite.
Cases defined in Python (a ``build`` function, e.g. registered by a plugin through
:func:`effdyn.registry.register_case`) work the same way.

:func:`default_models` is the standard model list the built-in files spell out: use it for
cases built in Python.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ..problems.builders import mlp_problem
from .spec import ModelSpec, Setup

__all__ = ["Case", "ModelSpec", "Setup", "CASES", "SUITE", "case_names", "get_case", "mlp_problem", "default_models",
           "case_files", "UnknownCaseError"]

#: Run order of the built-in cases (names = file stems in validation/cases/).
SUITE = ("minimal-valley", "dmf-converge", "dmf-period2", "minimalist-two-layer", "mean-field", "digits-mlp",
         "digits-cnn", "scalar-product-ngd", "scalar-product-sqrt", "digits-wide-mlp", "peer-mlp", "cifar10-seed-mlp",
         "cifar10-seed-cnn", "cifar10-cf-mlp", "cifar10-cf-cnn")


class UnknownCaseError(ValueError):
    """A case name that is not in the registry (the message lists the valid names)."""


@dataclass(frozen=True)
class Case:
    """A named validation case.

    A case is either a TOML file (``path``, see :meth:`from_file`; the built-in ones) or a
    Python function ``build(steps, quick, cifar)`` returning the :class:`Setup`. ``cifar``
    is the CIFAR-10 folder (or None) and is only used by cases with ``needs_cifar``;
    ``quick`` selects the quick or the full settings (the ``[quick]``/``[full]`` tables of
    a file). A file case with ``needs_peer_data`` gets the peer-MLP folder (``peer_data``
    of :meth:`setup`) as ``problem.path``. ``full_only`` cases (``only = "full"`` in the
    ``[case]`` table) are left out of the default quick suite (they still run when named).
    """

    name: str
    title: str
    build: Callable | None = None
    needs_cifar: bool = False
    quick_steps: int = 0
    full_steps: int = 0
    path: Path | None = None
    document: dict | None = field(default=None, compare=False, repr=False)
    needs_peer_data: bool = False
    full_only: bool = False

    def __post_init__(self):
        if (self.build is None) == (self.path is None):
            raise TypeError("a Case needs either `build` (a function returning a Setup) or `path` (a case file; "
                            "see Case.from_file), not both or neither.")

    @classmethod
    def from_file(cls, path) -> "Case":
        """The case described by the TOML file ``path`` (its name is the file's stem).

        Only the ``[case]`` table is checked here; the rest is checked by :meth:`setup`
        (building a problem may load data). Raises :class:`~effdyn.validation.config.ConfigError`
        naming the file and the key.
        """
        from .config import ConfigError

        path = Path(path)
        doc = _read_document(path)
        table = doc.get("case")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [case]: a case file needs a [case] table with `title`, `quick_steps` and "
                              "`full_steps`.")
        title = table.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ConfigError(f"{path}: [case]: `title` must be a non-empty string, e.g. `title = \"My case, "
                              f"η = 0.1\"`; got {title!r}.")
        horizons = {}
        for key in ("quick_steps", "full_steps"):
            value = table.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{path}: [case]: `{key}` must be a positive integer (GD steps), e.g. "
                                  f"`{key} = 1000`; got {value!r}.")
            horizons[key] = value
        needs_cifar = table.get("needs_cifar", False)
        if not isinstance(needs_cifar, bool):
            raise ConfigError(f"{path}: [case]: `needs_cifar` must be true or false; got {needs_cifar!r}.")
        needs_peer = table.get("needs_peer_data", False)
        if not isinstance(needs_peer, bool):
            raise ConfigError(f"{path}: [case]: `needs_peer_data` must be true or false; got {needs_peer!r}.")
        only = table.get("only")
        if only not in (None, "full"):
            raise ConfigError(f"{path}: [case]: `only` must be \"full\" (a case left out of the quick suite) or "
                              f"absent; got {only!r}.")
        return cls(path.stem, title, None, needs_cifar, path=path, document=doc, needs_peer_data=needs_peer,
                   full_only=only == "full", **horizons)

    @property
    def needs(self) -> str | None:
        """What local data the case needs and how to supply it (None: nothing)."""
        from ..data import CIFAR10_ENV, PEER_MLP_ENV

        if self.needs_cifar:
            return f"CIFAR-10 (`--cifar PATH` of a `cifar-10-batches-py` folder, or ${CIFAR10_ENV})"
        if getattr(self, "needs_peer_data", False):
            return f"the peer-MLP arrays (`--peer-data PATH` of a folder with x.npy, y.npy, p0.npy, or ${PEER_MLP_ENV})"
        return None

    def setup(self, quick: bool = True, cifar=None, steps: int | None = None, peer_data=None) -> Setup:
        """The case's setup; ``steps`` overrides the quick/full horizon (GD steps)."""
        if steps is None:
            steps = self.quick_steps if quick else self.full_steps
        if self.build is not None:
            return self.build(int(steps), quick, cifar)
        from .config import config_from_document

        mode = "quick" if quick else "full"
        doc = copy.deepcopy(self.document) if self.document is not None else _read_document(self.path)
        overrides = doc.get(mode, {})
        if isinstance(overrides, dict):  # anything else is reported by config_from_document
            doc[mode] = {**overrides, "gd.steps": int(steps)}
        if self.needs_cifar:
            from ..data import check_cifar10_folder

            cifar = check_cifar10_folder(cifar)  # the folder or $EFFDYN_CIFAR10; names what is missing
        if self.needs_peer_data:
            from ..data import check_peer_mlp_folder

            peer_data = check_peer_mlp_folder(peer_data)  # the folder or $EFFDYN_PEER_MLP
        return config_from_document(doc, self.path, mode=mode, cifar=cifar, peer_data=peer_data).setup


def _read_document(path: Path) -> dict:
    from .config import ConfigError

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


# --- models ------------------------------------------------------------------------------

def default_models(theta0, *, small: bool = True, save_every: float = 1.0, rod: bool = True, extra=(),
                   big_budget: float | None = None) -> tuple:
    """The standard model list of a case.

    Seeding: Σ = 0 (or ρ = 0) is invariant, so every oscillation model needs a seed
    (theory §2). The free-energy flow starts from Σ0 = GD's first half-step projected on the
    top eigenvector (``sigma_seed="gd"``) and keeps its default persistent floor
    ``"roundoff"``: the round-off that seeds GD's own oscillation (GD's coordinate-wise
    rounding along each top mode in the continuous flow, (ε_mach·max(1, ‖θ‖))² in the
    map; theory §5). The edge-flow reconstruction gets the same magnitude floor,
    ρ >= ε_mach·max(1, ‖θ0‖). The other models use their own defaults.

    ``small`` problems (P up to a few dozen) run every model, the free-energy flow both
    adaptively (LSODA, in log-amplitude coordinates, ``storage="log-factor"``, so that the
    round-off-sized seed is integrated with relative accuracy; also with the chord closure)
    and as the step-exact map. Larger ones run gradient flow, the
    free-energy flow as the step-exact map only (each of its drift evaluations is a
    warm-started Lanczos solve, and LSODA needs tens of thousands of them on the mean-field
    case), and the rod and edge flows (gradients and Hessian-vector products only); the
    central flow and self-stabilisation, which need several eigenpairs and third
    derivatives per evaluation, are left to small problems. ``save_every`` thins the saved
    states (each saved state costs an eigen-solve for the observables). ``rod=False`` leaves
    out the rod flow (the quick runs of the MLP cases, where it costs as much as GD).
    ``big_budget`` is the time budget (s) of the free-energy map on large problems, whose
    every step is a Lanczos solve.
    """
    rho_floor = float(np.finfo(np.float64).eps * max(1.0, float(np.linalg.norm(theta0))))
    fe = {"rank": 1}
    seed = {"sigma_seed": "gd"}
    se = float(save_every)
    if small:
        fe_log = {**fe, "storage": "log-factor"}
        tol = {"rtol": 1e-6, "atol": 1e-9}  # relative accuracy of the amplitude at every size
        return (
            ModelSpec("gradient flow", "GradientFlow", save_every=se),
            ModelSpec("free-energy flow", "FreeEnergyFlow", fe_log, seed, save_every=se, **tol),
            ModelSpec("free-energy flow [chord]", "FreeEnergyFlow", {**fe_log, "closure": "chord"}, seed,
                      save_every=se, **tol),
            ModelSpec("free-energy flow [map]", "FreeEnergyFlow", fe, seed, solver="map", save_every=se),
            ModelSpec("central flow", "CentralFlow", save_every=se),
            ModelSpec("self-stabilization", "SelfStabilization", solver="map", save_every=se),
            ModelSpec("rod flow", "RodFlow", save_every=se),
            ModelSpec("edge flow", "EdgeFlow", {"rho_floor": rho_floor}, save_every=se),
        ) + tuple(extra)
    # LSODA estimates Jacobians by finite differences, P drift evaluations each: on large
    # problems the explicit RK45 (GD-step time is not stiff here: rates are O(1) per step)
    # is far cheaper. The edge-flow reconstruction has its own step-exact map.
    rk = {"solver": "scipy:RK45", "rtol": 1e-6, "atol": 1e-9, "save_every": se}
    return (
        ModelSpec("gradient flow", "GradientFlow", **rk),
        ModelSpec("free-energy flow [map]", "FreeEnergyFlow", fe, seed, solver="map", save_every=se,
                  budget=big_budget),
        *((ModelSpec("rod flow", "RodFlow", **rk),) if rod else ()),
        ModelSpec("edge flow [map]", "EdgeFlow", {"rho_floor": rho_floor}, solver="map", save_every=se),
    ) + tuple(extra)


# --- the built-in cases ------------------------------------------------------------------

def case_files() -> list[Path]:
    """The built-in case files, in run order (:data:`SUITE`, then any others by name)."""
    folder = resources.files("effdyn.suite") / "cases"
    found = {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".toml")}
    order = [n for n in SUITE if n in found] + sorted(n for n in found if n not in SUITE)
    return [found[n] for n in order]


CASES: dict[str, Case] = {c.name: c for c in map(Case.from_file, case_files())}


def case_names() -> list[str]:
    """Names of all cases (built-in, then registered with :func:`effdyn.registry.register_case`),
    in run order."""
    from ..registry import registered_cases

    return list(CASES) + [n for n in registered_cases() if n not in CASES]


def get_case(name: str) -> Case:
    """The case ``name`` (built-in or registered); an unknown name raises with the list of
    valid ones."""
    from ..registry import registered_cases

    if name in CASES:
        return CASES[name]
    registered = registered_cases()
    if name in registered:
        return registered[name]
    raise UnknownCaseError(f"unknown case {name!r}; valid cases: {', '.join(case_names())}.")


def cifar_folder(path=None) -> Path | None:
    """The CIFAR-10 folder from ``path`` or ``$EFFDYN_CIFAR10`` (None when neither is set)."""
    from ..data import cifar10_path

    return cifar10_path(path)
