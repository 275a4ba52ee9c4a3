"""The scalar product of depth L: a one-dimensional deep linear network."""

from __future__ import annotations

import numpy as np

from .._checks import positive_float, positive_int, real_float, seed_rng
from ..kernels import scalar_product as _k
from .base import CompiledProblem, NumbaKernels


class ScalarProduct(CompiledProblem):
    """E(θ) = ½(θ₁θ₂⋯θ_L − y)², θ ∈ R^L.

    The minimisers form the hypersurface ∏θᵢ = y; on it the sharpness is ‖q‖² with
    qᵢ = ∏_{k≠i}θ_k, smallest at the balanced point |θᵢ| = |y|^{1/L}.

    Parameters
    ----------
    depth : int
        Number of factors L ≥ 1 (the dimension P).
    target : float
        The target y (finite).
    init_scale : float
        Typical size of the entries drawn by :meth:`init`.
    """

    name = "scalar_product"
    loss_min = 0.0

    def __init__(self, depth: int, target: float = 1.0, init_scale: float = 0.5):
        self.depth = positive_int(depth, "depth")
        self.target = real_float(target, "target")
        self.init_scale = positive_float(init_scale, "init_scale")
        self._kernels = NumbaKernels(
            _k._loss, _k._grad, _k._hvp, _k._hessian, _k._third, (np.array([self.target]),)
        )

    @property
    def dim(self) -> int:
        return self.depth

    @property
    def numba_kernels(self) -> NumbaKernels:
        return self._kernels

    def jax_loss(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        y = jnp.asarray(self.target)

        def loss(theta):
            return 0.5 * (jnp.prod(theta) - y) ** 2

        return loss

    def config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "depth": self.depth, "target": self.target,
                "init_scale": self.init_scale}

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "ScalarProduct":
        return cls(depth=config["depth"], target=config["target"], init_scale=config["init_scale"])

    def init(self, seed: int | None = None) -> np.ndarray:
        """Small positive start: entries ``init_scale · U(0.5, 1.5)``, independent."""
        return self.init_scale * seed_rng(seed).uniform(0.5, 1.5, self.depth)
