"""The minimalist two-layer network of Liu, Zhang, Du and Zhao (2025), theory §5."""

from __future__ import annotations

import numpy as np

from .._checks import positive_float, seed_rng
from ..kernels import minimalist_two_layer as _k
from .base import CompiledProblem, NumbaKernels


class MinimalistTwoLayer(CompiledProblem):
    """Population loss E(α, β1, β2) = ½λ1α²β1² + ½λ2(αβ2 − 1)².

    This is the expected squared error of f(x) = α(β1x1 + β2x2) on x ~ N(0, diag(λ1, λ2))
    with target y = x2 (as reconstructed in theory §5). With λ1 = 1, λ2 = 0.05, η = 2 and
    the start of :meth:`init`, GD shows progressive sharpening, EoS and self-stabilisation.

    Parameters
    ----------
    lam1, lam2 : float
        Input variances λ1 > 0 (irrelevant feature) and λ2 > 0 (relevant feature).
    """

    name = "minimalist_two_layer"
    loss_min = 0.0

    def __init__(self, lam1: float = 1.0, lam2: float = 0.05):
        self.lam1 = positive_float(lam1, "lam1")
        self.lam2 = positive_float(lam2, "lam2")
        self._kernels = NumbaKernels(
            _k._loss, _k._grad, _k._hvp, _k._hessian, _k._third, (np.array([self.lam1, self.lam2]),)
        )

    @property
    def dim(self) -> int:
        return 3

    @property
    def numba_kernels(self) -> NumbaKernels:
        return self._kernels

    def jax_loss(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        lam1 = jnp.asarray(self.lam1)
        lam2 = jnp.asarray(self.lam2)

        def loss(theta):
            a, b1, b2 = theta[0], theta[1], theta[2]
            return 0.5 * lam1 * (a * b1) ** 2 + 0.5 * lam2 * (a * b2 - 1.0) ** 2

        return loss

    def config(self) -> dict:
        return {"name": self.name, "dim": 3, "lam1": self.lam1, "lam2": self.lam2}

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "MinimalistTwoLayer":
        return cls(lam1=config["lam1"], lam2=config["lam2"])

    def init(self, seed: int | None = None) -> np.ndarray:
        """The benchmark start (α, β1, β2) = (0.5, 0.05, 0.05), the same for every ``seed``
        (None or an integer >= 0, checked like every problem's seed)."""
        seed_rng(seed)
        return np.array([0.5, 0.05, 0.05])
