"""Saving results: netCDF through xarray/h5netcdf, written atomically, with metadata.

Every file goes through :func:`save_dataset`, which labels each variable and coordinate with
CF-style ``units`` and ``long_name`` attributes (:func:`annotate_cf`), so that a colleague
opening the file in ncdump, Panoply or xarray can read what each array is without effdyn.
Files are created with the permissions the user's umask gives a new file (usually
``rw-r--r--``), like any file a program writes.
"""

from __future__ import annotations

import fnmatch
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


from ._json import json_default as _json_default  # noqa: E402  (re-exported for old callers)


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``: a crash leaves no partial file.

    The temporary file sits in the target's folder (``os.replace`` is atomic only within
    one file system) and is flushed to disk before the rename, so that after a power loss
    ``path`` holds either the old or the new content, never an empty file. The file gets
    the mode a newly created file would get under the user's umask (``tempfile`` makes its
    files private, mode 0600, which would hide results from colleagues and group jobs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --- CF-style labels ----------------------------------------------------------------------

# (pattern, units, long_name), first match wins. Patterns are fnmatch patterns on the variable
# name; "{model}" in a long name becomes the model's label in case files (variables
# "<slug>__<series>" with the labels on the "model" coordinate). Losses, parameters and
# eigenvalues carry the units of the user's loss and parameters, which effdyn does not know:
# they are written as dimensionless ("1"), as CF asks for pure numbers.
_CF_TABLE = (
    # time axes and indices
    ("k", "1", "GD step k"),
    ("gd_k", "1", "GD step k"),
    ("k_half", "1", "GD step k of the half step from k to k+1"),
    ("theta_k", "1", "GD step k of the saved parameters"),
    ("gd_theta_k", "1", "GD step k of the saved GD parameters"),
    ("eig_k", "1", "GD step k of the Hessian eigen-solves"),
    ("gd_eig_k", "1", "GD step k of the Hessian eigen-solves"),
    ("mid_k", "1", "GD step k of the two-step midpoint"),
    ("gd_mid_k", "1", "GD step k of the two-step midpoint"),
    ("gd_avg_k", "1", "GD step k of the two-step loss average"),
    ("gd_amp_k", "1", "GD step k of the half-step amplitude"),
    ("gd_sharp_k", "1", "GD step k of the two-step averaged sharpness"),
    ("*__k", "1", "GD step k of the saved states of {model}"),
    ("t", "1", "mean-field time t = k * eta_MF"),
    ("param", "1", "parameter index"),
    ("eig", "1", "Hessian eigenvalue index (0 = largest)"),
    ("eig_index", "1", "Hessian eigenvalue index (0 = largest)"),
    ("state_index", "1", "index in the model's state vector"),
    ("model", "", "model label"),
    ("metric", "", "comparison metric name (see effdyn.Metrics)"),
    # GD series in case files
    ("gd_loss", "1", "GD loss E(theta_k)"),
    ("gd_loss_average", "1", "GD two-step loss average (E_k + E_k+1)/2"),
    ("gd_sharpness", "1", "GD sharpness: largest Hessian eigenvalue at theta_k"),
    ("gd_sharpness_average", "1", "GD sharpness averaged over two steps"),
    ("gd_eigs", "1", "top Hessian eigenvalues at theta_k along GD"),
    ("gd_amplitude", "1", "GD half-step amplitude |v1 . (theta_k+1 - theta_k)|/2"),
    ("gd_theta", "1", "GD parameters theta_k"),
    ("gd_midpoint", "1", "GD two-step midpoint (theta_k-1 + 2 theta_k + theta_k+1)/4"),
    # model series in case files
    ("*__loss", "1", "loss E(theta) along {model}"),
    ("*__time_avg_loss", "1", "time-averaged loss predicted by {model}"),
    ("*__sharpness", "1", "sharpness (largest Hessian eigenvalue) along {model}"),
    ("*__amplitude", "1", "oscillation amplitude along the top eigenvector predicted by {model}"),
    ("*__free_energy", "1", "free energy F = E + <H, Sigma>/2 along {model}"),
    ("*__sigma_trace", "1", "trace of the oscillation covariance Sigma of {model}"),
    ("*__envelope_plus", "1", "loss at theta + amplitude * v1 along {model}"),
    ("*__envelope_minus", "1", "loss at theta - amplitude * v1 along {model}"),
    ("*__theta", "1", "parameters theta along {model}"),
    ("*__distance", "1", "distance |theta_model - GD two-step midpoint| for {model}"),
    # per-model table of case files
    ("metrics", "1", "errors of each model against GD (see effdyn.Metrics)"),
    ("status", "", "run status"),
    ("message", "", "run message"),
    ("solver", "", "solver"),
    ("model_class", "", "model class in effdyn.models"),
    ("nfev", "1", "number of drift or map evaluations"),
    ("wall_time", "s", "wall-clock time"),
    # Solution files
    ("state", "1", "model state vector y"),
    ("loss", "1", "loss E(theta)"),
    ("time_avg_loss", "1", "predicted time-averaged loss"),
    ("sharpness", "1", "sharpness: largest Hessian eigenvalue"),
    ("sharpness_centre", "1", "largest Hessian eigenvalue at the centre theta"),
    ("sharpness_mf", "1", "mean-field sharpness S_MF = N * largest Hessian eigenvalue"),
    ("amplitude", "1", "oscillation amplitude along the top eigenvector"),
    ("free_energy", "1", "free energy F = E + <H, Sigma>/2"),
    ("lagrangian", "1", "free energy minus tr(Sigma)/eta"),
    ("sigma_trace", "1", "trace of the oscillation covariance Sigma"),
    ("sigma_factor", "1", "factor V of the oscillation covariance Sigma = V V^T"),
    ("sigma", "1", "oscillation covariance Sigma"),
    ("sigma_rank", "1", "rank of the oscillation covariance"),
    ("n_critical", "1", "number of critical Hessian eigenvalues (at 2/eta)"),
    ("envelope_plus", "1", "loss at theta + amplitude * v1"),
    ("envelope_minus", "1", "loss at theta - amplitude * v1"),
    ("eigs", "1", "top Hessian eigenvalues"),
    ("theta", "1", "parameters theta"),
    # GDTrajectory files
    ("grad_norm", "1", "gradient norm |grad E(theta_k)|"),
    ("half_amp", "1", "half-step amplitude |v1 . (theta_k+1 - theta_k)|/2"),
    ("top_eigvec", "1", "top Hessian eigenvector v1"),
    ("theta_mid", "1", "two-step midpoint of theta"),
)


def _model_labels(ds) -> dict:
    from ._names import slug

    if "model" not in ds.coords:
        return {}
    return {slug(str(label)): str(label) for label in ds.coords["model"].values}


def cf_attributes(name: str, dtype=None, labels: dict | None = None) -> tuple[str, str]:
    """``(units, long_name)`` for a variable called ``name`` (see :func:`annotate_cf`)."""
    for pattern, units, long_name in _CF_TABLE:
        if fnmatch.fnmatchcase(name, pattern):
            if "{model}" in long_name:
                key = name.rsplit("__", 1)[0]
                long_name = long_name.replace("{model}", (labels or {}).get(key, key.replace("_", " ")))
            return units, long_name
    text = dtype is not None and getattr(dtype, "kind", "") in "OUS"
    return ("" if text else "1"), name.replace("__", ": ").replace("_", " ")


def annotate_cf(ds):
    """Give every variable and coordinate of ``ds`` CF-style ``units`` and ``long_name``.

    Attributes already present are kept. Names are looked up in a table of the names effdyn
    writes (case files, ``Solution.to_xarray``, ``GDTrajectory.to_xarray``); a name not in
    the table gets ``units = "1"`` (a pure number; ``""`` for text) and its own name, spelled
    out, as ``long_name``. Text variables (statuses, labels) carry an empty ``units``.

    Parameters
    ----------
    ds : xarray.Dataset
        Modified in place.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself.
    """
    labels = _model_labels(ds)
    prefixes = _object_prefixes(ds)
    for name in list(ds.variables):
        var = ds.variables[name]
        units, long_name = _prefixed_cf(str(name), var.dtype, prefixes) or cf_attributes(str(name), var.dtype, labels)
        var.attrs.setdefault("units", units)
        var.attrs.setdefault("long_name", long_name)
    return ds


def _object_prefixes(ds) -> dict:
    """{prefix: label} of the objects stored under prefixes in a results file."""
    raw = ds.attrs.get("effdyn_contents")
    if not raw:
        return {}
    try:
        objects = json.loads(str(raw)).get("objects", [])
        return {str(o["prefix"]): str(o.get("label", "")) for o in objects if o.get("prefix")}
    except (ValueError, AttributeError, KeyError, TypeError):
        return {}


_EXACT_NAMES = (
    ("run_state", "", "model run state: bytes of a data-only .npz archive (JSON + arrays), read by effdyn.load"),
    ("run_state_byte", "1", "byte index of the run-state archive"),
    ("theta0", "1", "initial parameters theta_0"),
    ("theta0_index", "1", "parameter index"),
    ("record__*", "1", "record of the saved states: {rest}"),
    ("problem__*", "1", "problem data: {rest}"),
)


def _prefixed_cf(name: str, dtype, prefixes: dict):
    """CF labels of a variable of an object stored under a prefix (or of a solution's exact
    data): the label of the unprefixed name, with the object's label."""
    for prefix, label in prefixes.items():
        if name.startswith(prefix):
            inner = name[len(prefix):]
            units, long_name = _exact_cf(inner, dtype) or cf_attributes(inner, dtype)
            return units, f"{long_name} ({label})" if label else long_name
    return _exact_cf(name, dtype)


def _exact_cf(name: str, dtype):
    for pattern, units, long_name in _EXACT_NAMES:
        if fnmatch.fnmatchcase(name, pattern):
            rest = name.split("__", 1)[1].replace("_", " ") if "__" in name else name
            return units, long_name.replace("{rest}", rest)
    return None


# --- files ---------------------------------------------------------------------------------

def save_dataset(ds, path) -> Path:
    """Write an xarray Dataset to netCDF (h5netcdf engine) atomically, CF-labelled.

    ``ds`` itself is left unchanged: the labels go on a shallow copy.
    """
    ds = annotate_cf(ds.copy(deep=False))
    return atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def _open(path, **options):
    import xarray as xr

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path (str or os.PathLike); got {type(path).__name__}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist; pass a .nc file written by effdyn.")
    try:
        with xr.open_dataset(path, engine="h5netcdf", **options) as ds:
            return ds.load()
    except PermissionError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(
            f"`path` {str(path)!r} is not a readable netCDF-4 file: it may be truncated, corrupt or in another "
            f"format ({type(exc).__name__}: {exc}). Write it again with effdyn (sol.save, effdyn validate/run)."
        ) from exc


def load_dataset(path):
    """Read a netCDF result written by effdyn into memory, as an ``xarray.Dataset``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a readable netCDF-4 (HDF5) file, e.g. truncated by a full disk or an
        interrupted copy; the message names the file.
    """
    return _open(path)


def read_exact(path):
    """A netCDF file as stored: no CF decoding of fill values, times or durations (what
    :func:`effdyn.load` reads the exact arrays from)."""
    return _open(path, mask_and_scale=False, decode_times=False, decode_timedelta=False)
