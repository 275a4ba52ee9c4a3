"""Names shared by the validation suite, the saved files and the figures.

Kept apart from :mod:`effdyn.validation.runner` and :mod:`effdyn.plotting` so that each can
import it without importing the other.
"""

from __future__ import annotations

import re

__all__ = ["slug"]


def slug(label: str) -> str:
    """A file- and variable-name-safe version of a label ("free-energy flow [map]" ->
    "free_energy_flow_map")."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(label)).strip("_").lower()
