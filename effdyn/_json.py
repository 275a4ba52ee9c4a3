"""JSON for effdyn's metadata: NumPy arrays and scalars written as lists and numbers, anything
else as its string (used wherever a configuration becomes text: identities, file attributes)."""

from __future__ import annotations


def json_default(obj):
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):  # NumPy scalars (numbers, booleans, strings) as Python's
        return obj.item()
    return str(obj)
