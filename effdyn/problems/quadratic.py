"""The quadratic loss E(θ) = ½θᵀAθ − bᵀθ: constant Hessian, zero third derivative."""

from __future__ import annotations

import numpy as np

from .._checks import as_matrix, as_vector, seed_rng
from ..kernels import quadratic as _k
from .base import CompiledProblem, NumbaKernels


class Quadratic(CompiledProblem):
    """E(θ) = ½ θᵀAθ − bᵀθ with a symmetric matrix A.

    The Hessian is A everywhere, so GD with step η is stable exactly when
    η λ_max(A) < 2; useful as a problem whose every quantity is known in closed form.

    Parameters
    ----------
    A : array_like, shape (P, P)
        Symmetric, finite matrix. Asymmetry beyond rounding (relative 1e-10) is refused;
        the stored matrix is the exact symmetric part ½(A + Aᵀ).
    b : array_like, shape (P,), optional
        Linear term (zero by default).

    Attributes
    ----------
    loss_min : float or None
        −½ bᵀA⁻¹b when A is positive definite, otherwise None.
    """

    name = "quadratic"

    def __init__(self, A, b=None):
        A = as_matrix(A, "A")
        if A.shape[0] != A.shape[1] or A.shape[0] == 0:
            raise ValueError(f"`A` must be a non-empty square matrix; got shape {A.shape}.")
        scale = max(np.max(np.abs(A)), np.finfo(float).tiny)
        if np.max(np.abs(A - A.T)) > 1e-10 * scale:
            raise ValueError(
                "`A` must be symmetric (it is the Hessian); got max |A - Aᵀ| = "
                f"{np.max(np.abs(A - A.T)):.3g}. Pass ½(A + Aᵀ)."
            )
        n = A.shape[0]
        b = np.zeros(n) if b is None else as_vector(b, "b", n)
        self.A = np.ascontiguousarray(0.5 * (A + A.T))
        self.b = np.ascontiguousarray(b)
        eig = np.linalg.eigvalsh(self.A)
        self.loss_min = None
        if eig[0] > 0:
            self.loss_min = float(-0.5 * self.b @ np.linalg.solve(self.A, self.b))
        self._kernels = NumbaKernels(_k._loss, _k._grad, _k._hvp, _k._hessian, _k._third, (self.A, self.b))

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def numba_kernels(self) -> NumbaKernels:
        return self._kernels

    def jax_loss(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        A = jnp.asarray(self.A)
        b = jnp.asarray(self.b)

        def loss(theta):
            return 0.5 * theta @ (A @ theta) - b @ theta

        return loss

    def config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "A": self.A.tolist(), "b": self.b.tolist()}

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "Quadratic":
        # A was stored symmetric, so ½(A + Aᵀ) gives it back bit for bit
        return cls(np.array(config["A"], dtype=np.float64), np.array(config["b"], dtype=np.float64))

    def init(self, seed: int | None = None) -> np.ndarray:
        """Standard normal θ₀ (no preferred start exists for a quadratic)."""
        return seed_rng(seed).standard_normal(self.dim)
