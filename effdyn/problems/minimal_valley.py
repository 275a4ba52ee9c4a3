"""Berthier's minimal valley, the two-parameter model of the Edge of Stability (theory §5)."""

from __future__ import annotations

import numpy as np

from .._checks import positive_float, real_float, seed_rng
from ..kernels import minimal_valley as _k
from .base import CompiledProblem, NumbaKernels


class MinimalValley(CompiledProblem):
    """E(x, y) = ½(y + ζx)x² − ε(x + y), θ = (x, y).

    The sharpness is essentially y (the Hessian is [[y + 3ζx, x], [x, 0]]) and the
    gradient in y is ½x² − ε: y grows (progressive sharpening) until the oscillation of x
    at EoS has amplitude ≈ √(2ε). E is unbounded below, so ``loss_min`` is None.

    Parameters
    ----------
    zeta : float
        Cubic coefficient ζ (any finite real; 1 in the benchmark).
    eps : float
        Linear drive ε > 0 (0.01 in the benchmark).
    """

    name = "minimal_valley"
    loss_min = None

    def __init__(self, zeta: float = 1.0, eps: float = 0.01):
        self.zeta = real_float(zeta, "zeta")
        self.eps = positive_float(eps, "eps")
        self._kernels = NumbaKernels(
            _k._loss, _k._grad, _k._hvp, _k._hessian, _k._third, (np.array([self.zeta, self.eps]),)
        )

    @property
    def dim(self) -> int:
        return 2

    @property
    def numba_kernels(self) -> NumbaKernels:
        return self._kernels

    def jax_loss(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        zeta = jnp.asarray(self.zeta)
        eps = jnp.asarray(self.eps)

        def loss(theta):
            x, y = theta[0], theta[1]
            return 0.5 * (y + zeta * x) * x**2 - eps * (x + y)

        return loss

    def config(self) -> dict:
        return {"name": self.name, "dim": 2, "zeta": self.zeta, "eps": self.eps}

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "MinimalValley":
        return cls(zeta=config["zeta"], eps=config["eps"])

    def init(self, seed: int | None = None, *, perturb: float = 0.0) -> np.ndarray:
        """The benchmark start (x, y) = (0.1, 3), optionally perturbed from ``seed``.

        The minimal valley has one standard start, the one the theory and the validation
        case use (GD's EoS onset at step 1222 for η = 0.3), so by default this returns it
        whatever ``seed`` is. ``perturb = s > 0`` adds ``s·N(0, I)`` drawn from
        ``numpy.random.default_rng(seed)``: ensembles of nearby starts, reproducible from
        the seed. ``seed`` is checked in both cases (None or an integer >= 0).
        """
        rng = seed_rng(seed)
        theta = np.array([0.1, 3.0])
        perturb = real_float(perturb, "perturb")
        if perturb < 0:
            raise ValueError(f"`perturb` must be >= 0 (the standard deviation of the perturbation); got {perturb}.")
        if perturb > 0:
            theta += perturb * rng.standard_normal(2)
        return theta
