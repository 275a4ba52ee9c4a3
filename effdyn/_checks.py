"""Argument checks shared by the public entry points.

Each check raises ``TypeError``/``ValueError`` whose message names the argument in
backticks and says how to fix it, before anything is compiled or run.

What counts as a number
-----------------------
* A **real number** is a Python ``int``/``float``, a NumPy integer or floating scalar, or a
  0-d array (NumPy, JAX, ...) of integer or floating dtype. Booleans, complex numbers and
  text are refused with ``TypeError`` even when they would convert (``True``, ``3+0j``,
  ``"0.3"``): a boolean or a string where a learning rate belongs is a mistake in the
  calling code, and a complex value would silently lose its imaginary part.
* An **integer** (counts, sizes, ranks, seeds) is a Python ``int``, a NumPy integer scalar or
  a 0-d integer array. Floats are refused even when whole (``3.0``, ``np.float64(3)``): a
  count computed in floating point may be one off after rounding (``0.1 * 30`` is not 3),
  so the caller converts explicitly with ``int(...)`` or ``round(...)``. Horizons measured in
  GD steps are *times*, not counts: ``effdyn.solve(steps=...)`` takes any positive real number
  (the step-exact map then asks for a whole value), while ``effdyn.gd(steps=...)`` counts
  iterations and takes an integer.
* An **array** argument (θ0, a matrix, data) is anything NumPy reads as a regular array of
  integers or floats, or an object array whose entries are all real numbers. Complex,
  boolean and text arrays, ragged nested lists and object arrays holding anything else are
  refused with ``TypeError``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

_REAL_KINDS = "iuf"
_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "U": "text", "S": "bytes", "M": "dates",
               "m": "time deltas", "V": "structured records", "O": "Python objects"}


def _describe(x) -> str:
    text = repr(x)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} of type {type(x).__name__}"


def _kind_hint(kind: str) -> str:
    if not kind:
        return ""
    if kind == "c":
        return " (complex input is refused rather than dropping its imaginary part; pass `x.real` if that is meant)"
    if kind in "US":
        return " (text is not parsed as numbers; convert it with float(...) first)"
    if kind == "b":
        return " (booleans are not numbers here; convert with .astype(float) if that is meant)"
    return ""


def _is_real_scalar(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _holds_bool(seq) -> bool:
    """Whether a nested list/tuple holds a boolean (which NumPy would turn into 0 or 1)."""
    for e in seq:
        if isinstance(e, (bool, np.bool_)):
            return True
        if isinstance(e, np.ndarray) and e.dtype.kind == "b":
            return True
        if isinstance(e, (list, tuple)) and _holds_bool(e):
            return True
    return False


def real_array(x, name: str, what: str = "a real array") -> np.ndarray:
    """``x`` as a new float64 array of any shape, refusing everything that is not real
    numbers (see the module notes); ``what`` completes "`name` must be ..." in messages.
    Shape and finiteness are left to the caller."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"`{name}` must be {what}; got {_describe(x)}{_kind_hint('U')}.")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nested sequences, objects NumPy cannot read
        raise TypeError(f"`{name}` must be {what}; got {type(x).__name__} that is not a regular array ({exc}).") from None
    kind = arr.dtype.kind
    if kind in _REAL_KINDS and isinstance(x, (list, tuple)) and _holds_bool(x):
        kind = "b"  # NumPy reads [1.0, True] as [1.0, 1.0]
    if kind == "O":
        bad = [e for e in arr.ravel() if not _is_real_scalar(e)][:1]
        if bad:
            bad = bad[0]
            raise TypeError(f"`{name}` must be {what}; it holds {_describe(bad)}"
                            f"{_kind_hint(np.asarray(bad).dtype.kind)}.")
    elif kind not in _REAL_KINDS:
        raise TypeError(f"`{name}` must be {what}; got an array of {_KIND_NAMES.get(kind, arr.dtype.name)}"
                        f"{_kind_hint(kind)}.")
    try:
        return arr.astype(np.float64)
    except OverflowError:
        raise ValueError(f"`{name}` holds an integer too large for float64; pass values below 1.8e308.") from None


def as_vector(x, name: str, dim: int | None = None) -> np.ndarray:
    """Return ``x`` as a finite 1-D float64 array (a copy), checking its length."""
    arr = real_array(x, name, "a real vector of floats")
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D vector; got shape {arr.shape}. Flatten it with `.ravel()`.")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"`{name}` must have length {dim} (the problem's `dim`); got length {arr.shape[0]}.")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
        raise ValueError(f"`{name}` contains non-finite entries at indices {bad}; pass finite values.")
    return arr


def as_matrix(x, name: str, shape: tuple | None = None) -> np.ndarray:
    """Return ``x`` as a finite 2-D float64 array (a copy), checking its shape (None = any)."""
    arr = real_array(x, name, "a real 2-D array")
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array; got shape {arr.shape}.")
    if shape is not None:
        for got, want in zip(arr.shape, shape):
            if want is not None and got != want:
                raise ValueError(f"`{name}` must have shape {tuple('*' if s is None else s for s in shape)}; got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains non-finite entries; pass finite values.")
    return arr


def _real_number(x, name: str, what: str):
    """``x`` if it is one real number (see the module notes), as a Python or NumPy scalar."""
    if _is_real_scalar(x):
        return x
    if not isinstance(x, (str, bytes, bool, np.bool_, numbers.Complex)) and (
            isinstance(x, np.ndarray) or hasattr(x, "__array__")):
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.ndim == 0 and arr.dtype.kind in _REAL_KINDS:
            return arr[()]
        if arr is not None and arr.ndim != 0:
            raise TypeError(f"`{name}` must be {what}; got an array of shape {arr.shape}. Pass a single number.")
        if arr is not None:
            raise TypeError(f"`{name}` must be {what}; got a 0-d array of {_KIND_NAMES.get(arr.dtype.kind, arr.dtype.name)}"
                            f"{_kind_hint(arr.dtype.kind)}.")
    kind = "U" if isinstance(x, (str, bytes)) else "b" if isinstance(x, (bool, np.bool_)) else \
        "c" if isinstance(x, numbers.Complex) else ""
    raise TypeError(f"`{name}` must be {what}; got {_describe(x)}{_kind_hint(kind)}.")


def _float(x, name: str, what: str) -> float:
    x = _real_number(x, name, what)
    try:
        return float(x)
    except OverflowError:
        raise ValueError(f"`{name}` must be finite; got an integer too large for float64.") from None


def _integer(x, name: str, what: str) -> int:
    x = _real_number(x, name, what)
    if isinstance(x, (numbers.Integral, np.integer)):
        return int(x)
    try:
        whole = math.isfinite(float(x)) and float(x) == int(x)
    except (OverflowError, ValueError):
        whole = False
    hint = f" Counts take integer types, not floats even when whole: pass int({x!r})." if whole else ""
    raise TypeError(f"`{name}` must be {what}; got {_describe(x)}.{hint}")


def step_count(x, name: str = "steps") -> int:
    """A number of GD steps (a horizon): an integer >= 0, or a float with an integral value
    (``1e4``), as ``effdyn.solve`` takes its horizon — one rule for ``gd`` and ``solve``.
    Text, booleans and complex numbers are refused like every number."""
    x = _real_number(x, name, "a whole number of GD steps (an integer >= 0)")
    if not isinstance(x, (numbers.Integral, np.integer)):
        value = float(x)
        if not math.isfinite(value) or value != math.floor(value):
            raise ValueError(f"`{name}` must be a whole number of GD steps; got {x!r}. Round it, e.g. "
                             f"`{name}={int(math.floor(value)) if math.isfinite(value) else 1000}`.")
        x = int(value)
    x = int(x)
    if x < 0:
        raise ValueError(f"`{name}` must be >= 0; got {x}.")
    return x


def positive_float(x, name: str) -> float:
    x = _float(x, name, "a positive real number")
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0; got {x!r}.")
    return x


def real_float(x, name: str) -> float:
    x = _float(x, name, "a real number")
    if not np.isfinite(x):
        raise ValueError(f"`{name}` must be finite; got {x!r}.")
    return x


def nonneg_int(x, name: str) -> int:
    x = _integer(x, name, "an integer >= 0")
    if x < 0:
        raise ValueError(f"`{name}` must be >= 0; got {x}.")
    return x


def positive_int(x, name: str) -> int:
    x = _integer(x, name, "an integer >= 1")
    if x < 1:
        raise ValueError(f"`{name}` must be >= 1; got {x}.")
    return x


def choice(x, name: str, options) -> str:
    options = list(options)
    # compare only strings: an array would compare element-wise and fail without naming `name`
    if not isinstance(x, str) or x not in options:
        raise ValueError(f"`{name}` must be one of {options}; got {_describe(x) if not isinstance(x, str) else repr(x)}.")
    return x


def seed_rng(seed, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from ``seed`` (None or an integer >= 0), checked first."""
    if seed is not None:
        seed = _integer(seed, name, "None or an integer >= 0")
        if seed < 0:
            raise ValueError(f"`{name}` must be None or an integer >= 0; got {seed}.")
    return np.random.default_rng(seed)


def checkpoint_path(checkpoint, checkpoint_every):
    """The file of a ``checkpoint=`` argument (of ``effdyn.gd`` and ``effdyn.solve``) as a
    Path, or None when there is none (then ``checkpoint_every`` must be None too)."""
    import os
    from pathlib import Path

    if checkpoint is None or checkpoint is False:
        if checkpoint_every is not None:
            raise ValueError("`checkpoint_every` needs `checkpoint=PATH` (the file to write the checkpoints to).")
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"`checkpoint` must be a file path (str or os.PathLike); got {type(checkpoint).__name__}.")
    path = Path(checkpoint)
    if str(checkpoint) == "" or path.is_dir():
        raise ValueError(f"`checkpoint` must name a file, not a directory; got {str(checkpoint)!r}.")
    if not path.parent.exists():
        raise ValueError(f"`checkpoint`: the folder {str(path.parent)!r} does not exist; create it first.")
    return path
