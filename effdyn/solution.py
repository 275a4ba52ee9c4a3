"""The result of ``effdyn.solve``: saved states of a model on a GD-step time axis."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class SolveStats:
    """Counters of one integration (scipy/diffrax vocabulary)."""

    solver: str
    nfev: int = 0
    njev: int = 0
    nlu: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    wall_time: float = 0.0
    status: str = "success"  # success | diverged | failed | interrupted
    message: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Solution:
    """Saved states ``y`` at times ``k`` (GD steps) of ``model``.

    Observables (``theta``, ``loss``, ``time_avg_loss``, ``sharpness``, ``amplitude`` and
    model-specific ones such as ``free_energy`` or ``sigma``) are computed on first access
    from the saved states through ``model.observables``.

    ``seed`` is the seed given to ``solve`` (or, failing that, one found in the model's or
    problem's configuration); ``to_xarray``/``save`` always record it (-1 when there is none)
    together with the configuration, library versions and git commit.
    """

    model: object
    k: np.ndarray
    y: np.ndarray
    stats: SolveStats
    rtol: float | None = None
    atol: float | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.stats.status == "success"

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
        return self.model.observables(self.k, self.y)

    def __getattr__(self, name):
        # Observables read like attributes: sol.loss, sol.free_energy, sol.sigma, ...
        if name.startswith("_") or name in ("model", "k", "y", "stats", "extra"):
            raise AttributeError(name)
        obs = self.observables
        if name in obs:
            return obs[name]
        raise AttributeError(
            f"Solution of {type(self.model).__name__} has no observable {name!r}; available: {sorted(obs)}"
        )

    @property
    def theta(self) -> np.ndarray:
        return self.model.theta_of(self.y)

    def at(self, k: float) -> np.ndarray:
        """State at a saved time (nearest saved point)."""
        return self.y[int(np.argmin(np.abs(self.k - k)))]

    def to_xarray(self):
        """xarray Dataset with the time axis ``k`` (GD steps), observables and metadata."""
        import xarray as xr

        from .io import metadata

        data = {"state": (("k", "state_index"), self.y)}
        for name, arr in self.observables.items():
            arr = np.asarray(arr)
            if arr.ndim == 0 or arr.shape[0] != len(self.k):
                continue
            dims = ("k",) + tuple(f"{name}_dim{i}" for i in range(1, arr.ndim))
            data[name] = (dims, arr)
        config = self.model.config()
        attrs = metadata(config, self.seed if self.seed is not None else _config_seed(config))
        attrs.update(
            {
                "model": type(self.model).__name__,
                "solver": self.stats.solver,
                "status": self.stats.status,
                "message": self.stats.message,
                "nfev": self.stats.nfev,
                "n_accepted": self.stats.n_accepted,
                "n_rejected": self.stats.n_rejected,
                "wall_time": self.stats.wall_time,
                "rtol": -1.0 if self.rtol is None else self.rtol,
                "atol": -1.0 if self.atol is None else self.atol,
                "eta": self.model.eta,
            }
        )
        return xr.Dataset(data, coords={"k": self.k}, attrs=attrs)

    def save(self, path):
        """Write the solution to netCDF (atomically) and return the path."""
        from .io import save_dataset

        return save_dataset(self.to_xarray(), path)

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
