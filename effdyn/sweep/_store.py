"""Point files (JSON, one per point, written atomically) and the merged netCDF Dataset.

``DIR/<name>.points/<key>.json`` holds one point's record; nothing else is needed to
rebuild the sweep's Dataset, so an interrupted sweep loses at most the points that were
running. Records are read with :mod:`json` only: nothing read back can execute code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import atomic_write
from ._spec import canonical_json, point_key
from ._summary import PERIOD_RULE

__all__ = ["points_dir", "write_record", "read_records", "sweep_dataset", "save_sweep_dataset"]

#: Float fields of GD's summary, stored as ``gd_<field>``.
GD_FLOATS = ("final_loss", "mean_loss", "sharpness_ratio", "final_sharpness", "amplitude_rms", "period_residual",
             "wall_time")
#: Integer fields of GD's summary (-1 where missing).
GD_INTS = ("eos_onset", "period", "steps_done")
#: String fields of GD's summary ("" where missing).
GD_STRS = ("status", "regime", "period_series", "message")


def points_dir(out_dir, name) -> Path:
    return Path(out_dir) / f"{name}.points"


def write_record(folder, record: dict) -> Path:
    """Write one point's record as ``<key>.json`` atomically."""
    text = json.dumps(record, sort_keys=True, indent=1, allow_nan=False)
    return atomic_write(Path(folder) / f"{record['key']}.json", lambda tmp: Path(tmp).write_text(text))


def read_records(folder, sweep) -> dict:
    """The records of ``sweep``'s points found in ``folder``, by key.

    A file whose key is not a point of this sweep (a stale result of a changed base
    configuration) or that cannot be read is ignored. A record is accepted only if its
    stored configuration hashes to its key and the key is one of the sweep's points.
    """
    keys = {p.key: p for p in sweep.points}
    out = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for f in folder.glob("*.json"):
        key = f.stem
        if key not in keys:
            continue
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or rec.get("key") != key:
            continue
        doc = rec.get("doc")
        if doc is None or (point_key(doc, sweep.period_tol, sweep.period_max) != key
                           or canonical_json(doc) != canonical_json(keys[key].doc)):
            continue
        out[key] = rec
    return out


def _coord(values):
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _num(x, default=np.nan):
    return default if x is None else x


def sweep_dataset(sweep, records: dict, *, extra_attrs: dict | None = None):
    """The sweep as one xarray Dataset (missing points: NaN, -1, status "missing").

    Dimensions: one per axis (grid mode; named by :attr:`Axis.dim`) or ``point`` (zip
    mode, with every axis as a coordinate along it), plus ``model``, ``metric`` and
    ``worker``. See docs/sweeps.md for every variable.
    """
    import xarray as xr

    from ..io import metadata

    dims = sweep.dims
    shape = sweep.shape
    coords = {}
    if sweep.mode == "zip":
        coords["point"] = np.arange(len(sweep.points))
        for a in sweep.axes:
            coords[a.dim] = ("point", _coord(list(a.values)))
    else:
        for a in sweep.axes:
            coords[a.dim] = _coord(list(a.values))

    recs = [records.get(p.key) for p in sweep.points]
    labels, metrics = [], []
    for r in recs:
        for m in (r or {}).get("models", []):
            if m["label"] not in labels:
                labels.append(m["label"])
            for name in (m.get("metrics") or {}):
                if name not in metrics:
                    metrics.append(name)

    def full(fill, dtype, extra=()):
        return np.full(shape + tuple(extra), fill, dtype=dtype)

    data = {}
    status, message, key = full("missing", object), full("", object), full("", object)
    wall, cpu, seed = full(np.nan, float), full(np.nan, float), full(-1, np.int64)
    cb, ca = full(-1, np.int64), full(-1, np.int64)
    wlabel = full("", object)
    gdf = {f: full(np.nan, float) for f in GD_FLOATS}
    gdi = {f: full(-1, np.int64) for f in GD_INTS}
    gds = {f: full("", object) for f in GD_STRS}
    M = full(np.nan, float, (len(labels), len(metrics)))
    mstatus = full("missing", object, (len(labels),))
    mmsg = full("", object, (len(labels),))
    mnfev = full(-1, np.int64, (len(labels),))
    mwall = full(np.nan, float, (len(labels),))
    checks = {law: {f: full(np.nan, float) for f in ("expected", "observed", "rel_error")} | {"ok": full(-1, np.int8)}
              for law in sweep.checks}
    workers = {}
    for p, r in zip(sweep.points, recs):
        i = p.index
        key[i] = p.key
        if r is None:
            continue
        status[i], message[i] = r.get("status", "error"), r.get("message", "")
        wall[i], cpu[i] = _num(r.get("wall_time")), _num(r.get("cpu_time"))
        seed[i] = _num(r.get("seed"), -1)
        cb[i], ca[i] = _num(r.get("compiles_before"), -1), _num(r.get("compiles_after"), -1)
        w = r.get("worker") or {}
        wid = f"{w.get('host', '?')}:{w.get('pid', '?')}@{str(r.get('run', ''))[:8]}"
        wlabel[i] = wid
        workers.setdefault(wid, []).append(r)
        gd = r.get("gd") or {}
        for f in GD_FLOATS:
            gdf[f][i] = _num(gd.get(f))
        for f in GD_INTS:
            gdi[f][i] = _num(gd.get(f), -1)
        for f in GD_STRS:
            gds[f][i] = str(gd.get(f, ""))
        for m in r.get("models", []):
            j = labels.index(m["label"])
            mstatus[i + (j,)], mmsg[i + (j,)] = m.get("status", ""), m.get("message", "")
            mnfev[i + (j,)], mwall[i + (j,)] = _num(m.get("nfev"), -1), _num(m.get("wall_time"))
            for name, v in (m.get("metrics") or {}).items():
                try:
                    M[i + (j, metrics.index(name))] = float(_num(v))
                except (TypeError, ValueError):
                    pass
        for law, c in (r.get("checks") or {}).items():
            if law in checks:  # every law is evaluated at every point; the tolerance applies here
                for f in ("expected", "observed", "rel_error"):
                    checks[law][f][i] = _num(c.get(f))
                rel = c.get("rel_error")
                checks[law]["ok"][i] = -1 if rel is None else int(rel <= sweep.checks[law])

    data["point_status"] = (dims, status)
    data["point_message"] = (dims, message)
    data["point_key"] = (dims, key)
    data["point_wall_time"] = (dims, wall)
    data["point_cpu_time"] = (dims, cpu)
    data["point_seed"] = (dims, seed)
    data["point_compiles_before"] = (dims, cb)
    data["point_compiles_after"] = (dims, ca)
    data["point_worker"] = (dims, wlabel)
    for f in GD_FLOATS:
        data[f"gd_{f}"] = (dims, gdf[f])
    for f in GD_INTS:
        data[f"gd_{f}"] = (dims, gdi[f])
    for f in GD_STRS:
        data[f"gd_{f}"] = (dims, gds[f])
    if labels:
        coords["model"] = np.array(labels, dtype=object)
        coords["metric"] = np.array(metrics, dtype=object)
        data["metrics"] = (dims + ("model", "metric"), M)
        data["model_status"] = (dims + ("model",), mstatus)
        data["model_message"] = (dims + ("model",), mmsg)
        data["model_nfev"] = (dims + ("model",), mnfev)
        data["model_wall_time"] = (dims + ("model",), mwall)
    for law, c in checks.items():
        v = law.replace("-", "_")
        for f, arr in c.items():
            data[f"check_{v}_{f}"] = (dims, arr)

    # Per worker process: points run, its compile counter at the end, and the compilations
    # its points after the first one caused (0: no per-point recompilation).
    if workers:
        wids = sorted(workers)
        coords["worker"] = np.array(wids, dtype=object)
        npts, last, first_c, later_c = [], [], [], []
        for wid in wids:
            rs = sorted(workers[wid], key=lambda r: r.get("finished", 0.0))
            npts.append(len(rs))
            last.append(_num(rs[-1].get("compiles_after"), -1))
            d = [_num(r.get("compiles_after"), 0) - _num(r.get("compiles_before"), 0) for r in rs]
            first_c.append(d[0])
            later_c.append(int(sum(d[1:])))
        data["worker_points"] = (("worker",), np.array(npts, dtype=np.int64))
        data["worker_compile_count"] = (("worker",), np.array(last, dtype=np.int64))
        data["worker_compiles_first_point"] = (("worker",), np.array(first_c, dtype=np.int64))
        data["worker_compiles_later_points"] = (("worker",), np.array(later_c, dtype=np.int64))

    n = len(sweep.points)
    done = sum(r is not None for r in recs)
    failed = sum(r is not None and r.get("status") != "ok" for r in recs)
    attrs = metadata({"sweep": sweep.document}, None)
    attrs.update({
        "sweep_name": sweep.name, "sweep_source": sweep.source, "mode": sweep.mode,
        "axes": json.dumps([{"key": a.key, "dim": a.dim, "values": list(a.values)} for a in sweep.axes]),
        "base_config": json.dumps(sweep.base, sort_keys=True),
        "checks": json.dumps(sweep.checks), "period_tol": sweep.period_tol, "period_max": sweep.period_max,
        "period_rule": PERIOD_RULE, "n_points": n, "n_done": done, "n_failed": failed, "n_missing": n - done,
    })
    attrs.update(extra_attrs or {})
    return xr.Dataset(data, coords=coords, attrs=attrs)


def save_sweep_dataset(ds, path) -> Path:
    from ..io import save_dataset

    return save_dataset(ds, path)
