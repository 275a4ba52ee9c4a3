"""The free-energy θ/Σ flow (theory §2): the model (:mod:`.model`), its storage layouts
(:mod:`.layouts`) and its equations written once for NumPy and JAX (:mod:`.dynamics`)."""

from .model import FreeEnergyFlow

__all__ = ["FreeEnergyFlow"]
