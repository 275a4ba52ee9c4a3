"""Argument checks shared by the public entry points.

Each check raises ``TypeError``/``ValueError`` whose message names the argument in
backticks and says how to fix it, before anything is compiled or run.
"""

from __future__ import annotations

import numbers

import numpy as np


def as_vector(x, name: str, dim: int | None = None) -> np.ndarray:
    """Return ``x`` as a finite 1-D float64 array (a copy), checking its length."""
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be a real array of floats; got {type(x).__name__} ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D vector; got shape {arr.shape}. Flatten it with `.ravel()`.")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"`{name}` must have length {dim} (the problem's `dim`); got length {arr.shape[0]}.")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
        raise ValueError(f"`{name}` contains non-finite entries at indices {bad}; pass finite values.")
    return arr


def as_matrix(x, name: str, shape: tuple | None = None) -> np.ndarray:
    """Return ``x`` as a finite 2-D float64 array, checking its shape (None = any)."""
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be a real 2-D array; got {type(x).__name__} ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array; got shape {arr.shape}.")
    if shape is not None:
        for i, (got, want) in enumerate(zip(arr.shape, shape)):
            if want is not None and got != want:
                raise ValueError(f"`{name}` must have shape {tuple('*' if s is None else s for s in shape)}; got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains non-finite entries; pass finite values.")
    return arr


def positive_float(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"`{name}` must be a positive real number; got {x!r} of type {type(x).__name__}.")
    x = float(x)
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0; got {x!r}.")
    return x


def real_float(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {x!r} of type {type(x).__name__}.")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"`{name}` must be finite; got {x!r}.")
    return x


def nonneg_int(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= 0; got {x!r} of type {type(x).__name__}.")
    if x < 0:
        raise ValueError(f"`{name}` must be >= 0; got {x}.")
    return int(x)


def positive_int(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= 1; got {x!r} of type {type(x).__name__}.")
    if x < 1:
        raise ValueError(f"`{name}` must be >= 1; got {x}.")
    return int(x)


def choice(x, name: str, options) -> str:
    options = list(options)
    if x not in options:
        raise ValueError(f"`{name}` must be one of {options}; got {x!r}.")
    return x


def seed_rng(seed, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from ``seed`` (None or an integer >= 0), checked first."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`{name}` must be None or an integer >= 0; got {seed!r}.")
    return np.random.default_rng(seed)
