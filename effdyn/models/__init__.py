"""Effective models of GD at the Edge of Stability, all on one interface (``base``)."""

from __future__ import annotations

import importlib

from .base import AbstractModel

_LAZY = {
    "FreeEnergyFlow": ".free_energy",
    "GradientFlow": ".gradient_flow",
    "CentralFlow": ".central_flow",
    "SelfStabilization": ".self_stabilization",
    "SharpnessReductionFlow": ".sharpness_reduction",
    "RodFlow": ".rod_flow",
    "EdgeFlow": ".edge_flow",
    "MeanFieldKinetic": ".mean_field",
}

__all__ = ["AbstractModel", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'effdyn.models' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
