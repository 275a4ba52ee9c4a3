"""The result of ``effdyn.solve``: saved states of a model on a GD-step time axis."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ._json import json_default as _json_default
from .outcomes import Status


@dataclass
class SolveStats:
    """Counters of one integration (scipy/diffrax vocabulary) and the work it did.

    ``nfev`` counts right-hand-side (drift or map) evaluations; ``gradients``, ``hvps``,
    ``thirds`` (third-derivative contractions, one per direction), ``hessians`` (dense
    Hessians) and ``eigensolves`` count the problem's oracle calls made by the solve — the
    initial state, every drift evaluation and the records of the saved states — also for
    an interrupted run. The diffrax backend's drift runs inside one compiled call and is
    not counted there (its records are).
    """

    solver: str
    nfev: int = 0
    njev: int = 0
    nlu: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    wall_time: float = 0.0
    status: str = Status.SUCCESS
    message: str = ""
    cause: str = ""
    losses: int = 0
    gradients: int = 0
    hvps: int = 0
    thirds: int = 0
    hessians: int = 0
    eigensolves: int = 0
    #: findings about a run that reached its horizon but may not mean what it seems (see
    #: :func:`effdyn.solvers._run.stalled_oscillation`): short messages, also warned about
    warnings: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (str(v) if k in ("status", "cause") else list(v) if k == "warnings" else v)
                for k, v in self.__dict__.items()}

    def set_work(self, counters) -> None:
        """Copy a run's :class:`~effdyn.models.run_state.Counters` into the stats."""
        for name, value in counters.to_dict().items():
            setattr(self, name, int(value))


@dataclass
class Solution:
    """Saved states ``y`` at times ``k`` (GD steps) of ``model``.

    Observables (``theta``, ``loss``, ``time_avg_loss``, ``sharpness``, ``amplitude`` and
    model-specific ones such as ``free_energy`` or ``sigma_factor``) are computed on first
    access from the saved states and the ``records`` the solve made at each of them
    (everything spectral: sharpness, amplitudes, Σ factors), through
    ``model.observables``; reading them costs no eigen-solve and changes nothing.
    ``run`` is the run state at the end of the solve (warm starts, counters, quantities
    fixed at the start), from which the run could be continued.

    ``seed`` is the seed given to ``solve`` (or, failing that, one found in the model's or
    problem's configuration); ``to_xarray``/``save`` always record it (-1 when there is none)
    together with the configuration, library versions and git commit.

    ``theta0`` is the initial point given to ``solve`` (None when the solve started from a
    state, ``state0=``, e.g. handed over from GD); ``compare`` checks it against GD's.

    ``save(path)`` writes everything the solution is made of (states, records, run state,
    stats, the model's class and parameters, its problem's configuration and identity) and
    ``Solution.load(path)`` (or :func:`effdyn.load`) rebuilds it: the same arrays, and the same
    observables, recomputed from them by the same code. ``metadata`` then holds the file's
    metadata (``config``, library ``versions``, ``git_commit``, ``seed``, ``path``).
    """

    model: object
    k: np.ndarray
    y: np.ndarray
    stats: SolveStats
    rtol: float | None = None
    atol: float | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    run: object = None
    theta0: np.ndarray | None = None
    metadata: dict = field(default_factory=dict, repr=False)

    @property
    def success(self) -> bool:
        return self.stats.status == Status.SUCCESS

    @property
    def status(self) -> str:
        return self.stats.status

    @property
    def message(self) -> str:
        return self.stats.message

    @cached_property
    def observables(self) -> dict[str, np.ndarray]:
        if len(self.k) == 0:
            return {}
        records = self.records if self.records else None
        obs = self.model.observables(self.k, self.y, records, self.run)
        return self.model.check_observables(self.k, obs)

    def head(self, n: int) -> "Solution":
        """The first ``n`` saved states (with their records), same stats and run state."""
        return Solution(self.model, self.k[:n], self.y[:n], self.stats, rtol=self.rtol, atol=self.atol, seed=self.seed,
                        extra=self.extra, records={name: v[:n] for name, v in self.records.items()}, run=self.run,
                        theta0=self.theta0, metadata=self.metadata)

    def __getattr__(self, name):
        # Observables read like attributes: sol.loss, sol.free_energy, sol.sigma_factor, ...
        if name.startswith("_") or name in ("model", "k", "y", "stats", "extra", "records", "run", "theta0",
                                            "metadata"):
            raise AttributeError(name)
        obs = self.observables
        if name in obs:
            return obs[name]
        raise AttributeError(
            f"Solution of {type(self.model).__name__} has no observable {name!r}; available: {sorted(obs)}"
        )

    @property
    def theta(self) -> np.ndarray:
        return self.observables["theta"] if len(self.k) else self.model.theta_of(self.y)

    def covariance(self, i: int = -1) -> np.ndarray:
        """The model's oscillation covariance Σ (P × P) at saved state ``i``, expanded from
        what the model keeps (a factor, a half-step δ, the per-particle amplitudes, or Σ)."""
        obs = self.observables
        if "sigma" in obs:
            return np.array(obs["sigma"][i])
        for name in ("sigma_factor", "u"):
            if name in obs:
                F = np.asarray(obs[name][i]).reshape(self.model.dim, -1)
                return F @ F.T
        if "delta" in obs and np.ndim(obs["delta"]) == 2:
            d = np.asarray(obs["delta"][i])
            return np.outer(d, d)
        raise AttributeError(f"{type(self.model).__name__} carries no oscillation covariance.")

    def at(self, k: float) -> np.ndarray:
        """State at a saved time (nearest saved point)."""
        return self.y[int(np.argmin(np.abs(self.k - k)))]

    def to_xarray(self):
        """xarray Dataset with the time axis ``k`` (GD steps), observables and metadata, and
        everything :meth:`from_xarray` needs to rebuild the solution exactly.

        Variables: ``state(k, state_index)``; the observables; ``record__<name>`` (the
        records of the saved states); ``theta0``; ``run_state`` (the run state's
        :meth:`~effdyn.models.run_state.RunState.to_dict` data as bytes of a data-only
        ``.npz`` archive: JSON plus arrays, read without pickle); ``problem__<name>`` (the
        problem's :meth:`~effdyn.problems.Problem.config_arrays`, e.g. a data set).
        Attributes: metadata (config, versions, git commit, seed), the stats, and JSON of
        the model's identity, the problem's class, configuration and identity.
        """
        import xarray as xr

        from .io import metadata
        from .results import RESERVED_SOLUTION_NAMES, encode_blob

        data = {"state": (("k", "state_index"), self.y)}
        for name, arr in self.observables.items():
            arr = np.asarray(arr)
            if arr.ndim == 0 or arr.shape[0] != len(self.k) or _reserved(name, RESERVED_SOLUTION_NAMES):
                continue
            dims = ("k",) + tuple(f"{name}_dim{i}" for i in range(1, arr.ndim))
            data[name] = (dims, arr)
        for name, arr in self.records.items():
            arr = np.asarray(arr, dtype=np.float64)
            var = f"record__{name}"
            data[var] = (("k",) + tuple(f"{var}_dim{i}" for i in range(1, arr.ndim)), arr)
        if self.theta0 is not None:
            data["theta0"] = (("theta0_index",), np.asarray(self.theta0, dtype=np.float64))
        tree = {"run": None if self.run is None else self.run.to_dict(), "extra": _data_only(self.extra)}
        data["run_state"] = (("run_state_byte",), encode_blob(tree))
        problem = self.model.problem
        for name, arr in problem.config_arrays().items():
            arr = np.asarray(arr)
            var = f"problem__{name}"
            data[var] = (tuple(f"{var}_dim{i}" for i in range(arr.ndim)), arr)
        config = self.model.config()
        attrs = metadata(config, self.seed if self.seed is not None else _config_seed(config))
        attrs.update(
            {
                "kind": "effdyn.Solution",
                "model": type(self.model).__name__,
                "solver": self.stats.solver,
                "status": str(self.stats.status),
                "message": self.stats.message,
                "cause": str(self.stats.cause),
                "nfev": self.stats.nfev,
                "n_accepted": self.stats.n_accepted,
                "n_rejected": self.stats.n_rejected,
                "wall_time": self.stats.wall_time,
                **{f"n_{name}": int(getattr(self.stats, name)) for name in
                   ("gradients", "hvps", "thirds", "hessians", "eigensolves")},
                "rtol": -1.0 if self.rtol is None else self.rtol,
                "atol": -1.0 if self.atol is None else self.atol,
                "eta": self.model.eta,
                "stats": json.dumps(self.stats.as_dict(), allow_nan=True),
                "solution": json.dumps({"rtol": self.rtol, "atol": self.atol, "seed": self.seed}),
                "model_identity": self.model.identity(),
                "problem_class": type(problem).__name__,
                "problem_config": json.dumps(problem.config(), default=_json_default, sort_keys=True),
                "problem_identity": problem.identity(),
            }
        )
        return xr.Dataset(data, coords={"k": self.k}, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds, problem=None, *, check: bool = True) -> "Solution":
        """The solution held by a dataset of :meth:`to_xarray` (see :func:`effdyn.load` for
        ``problem`` and ``check``)."""
        from .results import solution_from_dataset

        return solution_from_dataset(ds, problem=problem, check=check)

    def save(self, path):
        """Write the solution to netCDF (atomically) and return the path; read it back with
        :meth:`load` or :func:`effdyn.load`."""
        from .results import save_object

        return save_object(path, self)

    @classmethod
    def load(cls, path, problem=None, *, check: bool = True) -> "Solution":
        """Read a solution written by :meth:`save`.

        The model is rebuilt from its registered class and saved parameters, its problem
        from the saved configuration (built-in problems) or taken from ``problem`` (required
        for ``from_jax`` and other problems effdyn cannot rebuild; its identity must match
        the saved one unless ``check=False``). Refuses any other file, naming it.
        """
        from .results import load_object

        return load_object(path, cls, problem=problem, check=check)

    def __repr__(self) -> str:
        span = f"k in [{self.k[0]:g}, {self.k[-1]:g}]" if len(self.k) else "empty"
        return (
            f"Solution({type(self.model).__name__}, {span}, {len(self.k)} saved, "
            f"solver={self.stats.solver!r}, status={self.stats.status!r}, nfev={self.stats.nfev})"
        )


def _config_seed(config):
    """A seed recorded in a model's (or its problem's) configuration, if any: models with
    random initial data keep their seed there when ``solve`` was not given one."""
    if not isinstance(config, dict):
        return None
    seed = config.get("seed")
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    for value in config.values():
        found = _config_seed(value) if isinstance(value, dict) else None
        if found is not None:
            return found
    return None


def _reserved(name: str, reserved) -> bool:
    return name in reserved or name.startswith(("record__", "problem__"))


def _data_only(extra: dict) -> dict:
    """The entries of ``extra`` a results file can hold (data); others are left out, with a warning."""
    from .models.run_state import _is_data

    kept = {k: v for k, v in (extra or {}).items() if isinstance(k, str) and _is_data(v)}
    dropped = sorted(str(k) for k in (extra or {}) if k not in kept)
    if dropped:
        warnings.warn(f"Solution.extra entries {dropped} are not data (arrays, numbers, strings, containers) and are "
                      "not saved.", stacklevel=3)
    return kept
