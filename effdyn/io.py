"""Saving results: netCDF through xarray/h5netcdf, written atomically, with metadata."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path


def versions() -> dict:
    """Versions of the libraries that determine the numbers in a result."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("effdyn", "numpy", "scipy", "numba", "jax", "diffrax", "xarray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str:
    """Commit of the effdyn source tree, or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except Exception:
        return "unknown"


def metadata(config: dict | None = None, seed=None) -> dict:
    """Attributes stored with every saved result (JSON strings where nested)."""
    return {
        "config": json.dumps(config or {}, default=_json_default),
        "versions": json.dumps(versions()),
        "git_commit": git_commit(),
        "seed": -1 if seed is None else int(seed),
    }


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)


def atomic_write(path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: a crash leaves no partial file.

    The temporary file sits in the target's folder (``os.replace`` is atomic only within
    one file system) and is flushed to disk before the rename, so that after a power loss
    ``path`` holds either the old or the new content, never an empty file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_dataset(ds, path) -> Path:
    """Write an xarray Dataset to netCDF (h5netcdf engine) atomically."""
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def load_dataset(path):
    """Read a netCDF result written by effdyn into memory."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist; pass a .nc file written by effdyn.")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()
