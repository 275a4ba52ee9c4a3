"""Sweep files: an ``effdyn run`` configuration plus ``[axes]`` and ``[sweep]`` tables.

Parsing expands the axes into points (one full run configuration each), checks every
point with :func:`effdyn.validation.config.config_from_document`, and gives each point an
identity: the hash of its configuration. Nothing here runs GD or a model.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..validation.config import ConfigError

__all__ = ["SweepError", "Axis", "Point", "Sweep", "load_sweep", "canonical_json", "point_key", "RESERVED_DIMS"]

#: Keys of the ``[sweep]`` table.
SWEEP_KEYS = {
    "mode": '"grid" (every combination, the default) or "zip" (the i-th values of every axis together)',
    "name": "prefix of the output files (default: the configuration's `name`, else the file's stem)",
    "checks": "a table: law name = relative tolerance (see effdyn.sweep.LAWS)",
    "period_tol": "relative tolerance of GD's period detection (default 1e-4)",
    "period_max": "largest period looked for, a power of two (default 64)",
    "retries": "times dask may rerun a point whose worker raised or died (default 2)",
}
#: Dimension names the merged dataset uses for itself; an axis that would take one (or a name
#: starting like one of its variables) is renamed.
RESERVED_DIMS = ("model", "metric", "worker", "point", "metrics")
_RESERVED_PREFIXES = ("gd_", "point_", "model_", "check_", "worker_")
#: Parts of a configuration that an axis may not change (they do not change the numbers).
_FROZEN = ("name", "output")
#: Significant digits kept by ``linspace`` (so that 4.5 + 0.05·11 is written 5.05).
LINSPACE_DIGITS = 12


class SweepError(ConfigError):
    """An invalid sweep file; the message names the file, the table, the key and the fix."""


@dataclass(frozen=True)
class Axis:
    """One swept configuration key: its dotted ``key``, parsed ``path``, ``dim`` and ``values``."""

    key: str
    path: tuple
    dim: str
    values: tuple


@dataclass(frozen=True)
class Point:
    """One run of the sweep.

    ``index`` is its position on the grid (one index per axis) or ``(i,)`` in zip mode;
    ``values`` maps each axis key to its value here; ``doc`` is the point's full run
    configuration; ``key`` the hash identifying it; ``cost`` the estimate that orders the
    submission (largest first).
    """

    index: tuple
    values: dict
    doc: dict
    key: str
    cost: float
    seed: int | None = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())


@dataclass
class Sweep:
    """A parsed sweep: the base configuration, its axes and every point (in grid order)."""

    name: str
    source: str
    base: dict
    axes: tuple
    mode: str
    points: list
    checks: dict = field(default_factory=dict)
    period_tol: float = 1e-4
    period_max: int = 64
    retries: int = 2
    document: dict = field(default_factory=dict)
    out_dir: str | None = None

    @property
    def shape(self) -> tuple:
        if self.mode == "zip":
            return (len(self.points),)
        return tuple(len(a.values) for a in self.axes)

    @property
    def dims(self) -> tuple:
        return ("point",) if self.mode == "zip" else tuple(a.dim for a in self.axes)


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def canonical_json(obj) -> str:
    """JSON with sorted keys and no spaces: equal configurations give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def point_key(doc: dict, period_tol: float = 1e-4, period_max: int = 64) -> str:
    """The identity of a run: the SHA-256 (first 16 hex digits) of its configuration as
    canonical JSON, without ``name`` and ``[output]`` (which do not change the numbers),
    together with the settings of GD's period detection (which change the summary)."""
    core = {k: v for k, v in doc.items() if k not in _FROZEN}
    core["__summary__"] = {"period_tol": float(period_tol), "period_max": int(period_max)}
    return hashlib.sha256(canonical_json(core).encode()).hexdigest()[:16]


# --- parsing ------------------------------------------------------------------------------

def _err(src, where, msg) -> SweepError:
    return SweepError(f"{src}: {where}: {msg}")


def _parse_path(src, key, base):
    """Split ``key`` and check it against the base configuration.

    Every part but the last must exist (a table key, or an index into an array such as
    ``models.0``); the last may be a new key inside an existing table (e.g. an option the
    base leaves at its default), but not a new array element.
    """
    where = f'[axes] "{key}"'
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        raise _err(src, where, "an axis key is a dotted path into the configuration, e.g. \"gd.eta\" or "
                               "\"models.0.options.rank\".")
    parts = key.split(".")
    if parts[0] in _FROZEN:
        raise _err(src, where, f"`{parts[0]}` does not change the numbers and cannot be swept; "
                               "sweep [problem], [start], [gd] or [[models]] keys.")
    if parts[0] in ("axes", "sweep"):
        raise _err(src, where, f"[{parts[0]}] is the sweep's own table; axes point into the run configuration.")
    node, path = base, []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        shown = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit():
                raise _err(src, where, f"`{'.'.join(parts[:i])}` is an array; index it with a number, "
                                       f"e.g. \"{'.'.join(parts[:i])}.0\".")
            idx = int(part)
            if idx >= len(node):
                raise _err(src, where, f"`{'.'.join(parts[:i])}` has {len(node)} entries (indices 0..{len(node) - 1}); "
                                       f"index {idx} does not exist.")
            path.append(idx)
            node = node[idx]
        elif isinstance(node, dict):
            if part not in node:
                if last:
                    path.append(part)
                    return tuple(path)
                raise _err(src, where, f"`{shown}` does not exist in the base configuration; an axis may add a "
                                       f"key to an existing table, not a table: add `{part}` to the base "
                                       f"(e.g. `{part} = {{}}`) first.")
            path.append(part)
            node = node[part]
        else:
            raise _err(src, where, f"`{'.'.join(parts[:i])}` is a value, not a table; it has no key `{part}`.")
    if isinstance(node, (dict, list)):
        kind = "table" if isinstance(node, dict) else "array"
        raise _err(src, where, f"`{key}` is a {kind}; sweep one of its values instead (e.g. \"{key}.<key>\").")
    return tuple(path)


def _scalar(v) -> bool:
    return (isinstance(v, (str, bool)) or (isinstance(v, numbers.Real) and math.isfinite(v)))


def _axis_values(src, key, spec):
    where = f'[axes] "{key}"'
    if isinstance(spec, list):
        values = list(spec)
    elif isinstance(spec, dict):
        if set(spec) == {"linspace"}:
            lin = spec["linspace"]
            ok = (isinstance(lin, list) and len(lin) == 3 and all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                                                  for x in lin)
                  and isinstance(lin[2], int) and all(math.isfinite(x) for x in lin[:2]))
            if not ok or lin[2] < 1:
                raise _err(src, where, "`linspace` takes [start, stop, count] with count a positive integer, "
                                       "e.g. `{ linspace = [4.5, 6.5, 41] }` (stop included).")
            values = [float(f"{x:.{LINSPACE_DIGITS}g}") for x in np.linspace(float(lin[0]), float(lin[1]), lin[2])]
        elif set(spec) == {"range"}:
            rng = spec["range"]
            ok = (isinstance(rng, list) and len(rng) in (2, 3)
                  and all(isinstance(x, int) and not isinstance(x, bool) for x in rng))
            if not ok or (len(rng) == 3 and rng[2] == 0):
                raise _err(src, where, "`range` takes [start, stop] or [start, stop, step] of integers, stop "
                                       "excluded as in Python: `{ range = [0, 8] }` is 0, 1, ..., 7.")
            values = list(range(*rng))
        else:
            raise _err(src, where, f"unknown form {sorted(spec)}; write a list `[a, b, c]`, "
                                   "`{ linspace = [start, stop, count] }` or `{ range = [start, stop] }`.")
    else:
        raise _err(src, where, f"axis values must be a list, `{{ linspace = [...] }}` or `{{ range = [...] }}`; "
                               f"got {type(spec).__name__}.")
    if not values:
        raise _err(src, where, "the axis is empty; give at least one value.")
    for v in values:
        if not _scalar(v):
            raise _err(src, where, f"axis values must be numbers, strings or booleans; got {v!r}.")
    kinds = {"str" if isinstance(v, str) else "bool" if isinstance(v, bool) else "num" for v in values}
    if len(kinds) > 1:
        raise _err(src, where, f"axis values must all be of one kind (numbers, strings or booleans); got {values!r}.")
    if len(set(map(canonical_json, values))) != len(values):
        raise _err(src, where, f"axis values repeat: {values!r}; each value may appear once.")
    return tuple(values)


def _dims(keys) -> list:
    """Dimension names: the key's last part, more parts where two axes (or a reserved name)
    would collide ("problem.seed" and "start.seed" become problem_seed and start_seed)."""
    parts = [k.split(".") for k in keys]
    depth = [1] * len(keys)
    while True:
        names = ["_".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = [i for i, n in enumerate(names)
                 if names.count(n) > 1 or n in RESERVED_DIMS or n.startswith(_RESERVED_PREFIXES)
                 or not n.isidentifier() and n[0].isdigit()]
        if not clash:
            return names
        grown = False
        for i in clash:
            if depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            return [n if i not in clash else f"axis{i}_{n}" for i, n in enumerate(names)]


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _cost(cfg) -> float:
    """Estimated relative cost of a point: GD steps × (1 + number of models) × problem dim.

    Both GD and every model cost a number of steps of the same horizon, and a step's cost
    grows with the problem dimension P (at least linearly); the estimate orders the
    submission (largest first) so that the longest points do not start last.
    """
    setup = cfg.setup
    dim = max(1, int(getattr(setup.problem, "dim", 1)))
    return float(setup.steps) * (1 + len(setup.models)) * dim


def load_sweep(source, *, name: str | None = None) -> Sweep:
    """Parse and check a sweep file (a path) or an already-loaded document (a dict).

    Every point's configuration is built and checked before anything can run; a sweep with
    bad points raises one :class:`SweepError` listing all of them.
    """
    from ..validation.config import config_from_document

    if isinstance(source, dict):
        doc, src = source, "<sweep document>"
        stem = "sweep"
    else:
        path = Path(source)
        src, stem = str(path), path.stem
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {src!r} not found; pass a TOML file (see validation/sweeps/).")
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{src}: not valid TOML: {exc}") from None
    document = copy.deepcopy(doc)
    axes_table = doc.get("axes")
    if axes_table is None:
        raise _err(src, "[axes]", 'missing table [axes]; add e.g. `[axes]` with `"gd.eta" = [0.2, 0.3]`.')
    if not isinstance(axes_table, dict) or not axes_table:
        raise _err(src, "[axes]", 'the [axes] table must hold at least one axis, e.g. `"gd.eta" = [0.2, 0.3]`.')
    opts = doc.get("sweep", {})
    if not isinstance(opts, dict):
        raise _err(src, "sweep", "`sweep` must be a table [sweep].")
    for key in opts:
        if key not in SWEEP_KEYS:
            raise _err(src, "[sweep]", f"unknown key `{key}`; valid keys: "
                       + "; ".join(f"`{k}` ({v})" for k, v in SWEEP_KEYS.items()) + ".")
    mode = opts.get("mode", "grid")
    if mode not in ("grid", "zip"):
        raise _err(src, "[sweep]", f"`mode` must be \"grid\" or \"zip\"; got {mode!r}.")
    checks = _checks(src, opts.get("checks", {}))
    period_tol = opts.get("period_tol", 1e-4)
    if not (isinstance(period_tol, numbers.Real) and not isinstance(period_tol, bool) and 0 < period_tol < 1):
        raise _err(src, "[sweep]", f"`period_tol` must be a number in (0, 1), e.g. 1e-4; got {period_tol!r}.")
    period_max = opts.get("period_max", 64)
    if not (isinstance(period_max, int) and not isinstance(period_max, bool) and period_max >= 1
            and period_max & (period_max - 1) == 0):
        raise _err(src, "[sweep]", f"`period_max` must be a power of two (1, 2, 4, ...); got {period_max!r}.")
    retries = opts.get("retries", 2)
    if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
        raise _err(src, "[sweep]", f"`retries` must be an integer >= 0; got {retries!r}.")
    base = {k: copy.deepcopy(v) for k, v in doc.items() if k not in ("axes", "sweep")}
    sweep_name = name or opts.get("name") or base.get("name") or stem
    if not isinstance(sweep_name, str) or not sweep_name.strip() or "/" in sweep_name:
        raise _err(src, "[sweep]", f"`name` must be a non-empty string without '/'; got {sweep_name!r}.")

    keys = list(axes_table)
    paths = [_parse_path(src, k, base) for k in keys]
    for i, p in enumerate(paths):
        for j in range(i):
            if p[: len(paths[j])] == paths[j] or paths[j][: len(p)] == p:
                raise _err(src, f'[axes] "{keys[i]}"', f"overlaps the axis \"{keys[j]}\"; sweep each key once.")
    values = [_axis_values(src, k, axes_table[k]) for k in keys]
    if mode == "zip":
        lengths = {k: len(v) for k, v in zip(keys, values)}
        if len(set(lengths.values())) > 1:
            raise _err(src, "[axes]", "in zip mode every axis needs the same number of values; got "
                       + ", ".join(f'"{k}": {n}' for k, n in lengths.items())
                       + '. Make them equal or use `mode = "grid"` under [sweep].')
    axes = tuple(Axis(k, p, d, v) for k, p, d, v in zip(keys, paths, _dims(keys), values))

    if mode == "grid":
        combos = [(idx, tuple(a.values[i] for a, i in zip(axes, idx)))
                  for idx in itertools.product(*(range(len(a.values)) for a in axes))]
    else:
        combos = [((i,), tuple(a.values[i] for a in axes)) for i in range(len(axes[0].values))]

    points, problems = [], []
    for idx, vals in combos:
        pdoc = copy.deepcopy(base)
        for axis, v in zip(axes, vals):
            _set(pdoc, axis.path, v)
        values_map = {a.key: v for a, v in zip(axes, vals)}
        key = point_key(pdoc, period_tol, period_max)
        label = ", ".join(f"{a.dim}={_fmt(v)}" for a, v in zip(axes, vals))
        try:
            cfg = config_from_document(copy.deepcopy(pdoc), Path(src) if src != "<sweep document>" else Path(stem))
        except ConfigError as exc:
            problems.append(f"  point {len(points) + len(problems)} ({label}) [key {key}]: {exc}")
            continue
        except (TypeError, ValueError) as exc:
            problems.append(f"  point {len(points) + len(problems)} ({label}) [key {key}]: "
                            f"{type(exc).__name__}: {exc}")
            continue
        points.append(Point(idx, values_map, pdoc, key, _cost(cfg), cfg.setup.seed))
    if problems:
        ax = ", ".join(f'"{a.key}"' for a in axes)
        raise SweepError(f"{src}: [axes] {ax}: {len(problems)} of {len(combos)} points have an invalid "
                         "configuration (nothing was run); fix the axis values or the base configuration:\n"
                         + "\n".join(problems))
    dup = {}
    for p in points:
        dup.setdefault(p.key, []).append(p.label)
    same = [v for v in dup.values() if len(v) > 1]
    if same:
        raise _err(src, "[axes]", f"points {same[0]} have the same configuration; remove the repeated values.")
    out_dir = base.get("output", {}).get("dir") if isinstance(base.get("output"), dict) else None
    return Sweep(sweep_name.strip(), src, base, axes, mode, points, checks, float(period_tol), int(period_max),
                 int(retries), document, out_dir)


def _checks(src, table):
    from ._summary import LAWS

    if not isinstance(table, dict):
        raise _err(src, "[sweep]", "`checks` must be a table, e.g. `checks = { valley-amplitude = 0.05 }`.")
    out = {}
    for law, tol in table.items():
        if law not in LAWS:
            raise _err(src, "[sweep.checks]", f"unknown law `{law}`; valid laws: "
                       + "; ".join(f"`{k}` ({v.description})" for k, v in LAWS.items()) + ".")
        if not (isinstance(tol, numbers.Real) and not isinstance(tol, bool) and tol > 0 and math.isfinite(tol)):
            raise _err(src, "[sweep.checks]", f"`{law}` takes a relative tolerance > 0, e.g. `{law} = 0.05`; "
                                              f"got {tol!r}.")
        out[law] = float(tol)
    return out
