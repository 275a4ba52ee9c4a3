"""Deep matrix factorisation: a deep linear network fitting a square matrix."""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import as_matrix, as_vector, choice, positive_float, positive_int, seed_rng
from ..kernels import matrix_factorization as _k
from .base import CompiledProblem, NumbaKernels

_INITS = ("balanced", "small", "identity")


def _haar_orthogonal(rng, d):
    """A Haar-distributed d×d orthogonal matrix (QR of a Gaussian with sign fix)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


class DeepMatrixFactorization(CompiledProblem):
    """E(θ) = ½‖W_L⋯W_1 − M‖_F², W_i ∈ R^{d×d}.

    θ is the concatenation of the row-major flattened W_1, ..., W_L (W_1 first, and
    rightmost in the product), so P = L·d² and ``theta.reshape(L, d, d)[i]`` is W_{i+1}.
    All derivatives, including the third-derivative contraction, are closed-form
    products of partial factor products (see :mod:`effdyn.kernels.matrix_factorization`);
    ∇E and the contraction of the free-energy drift come from one fused kernel
    (``_grad_third``).

    Parameters
    ----------
    d : int
        Size of the square factors.
    depth : int
        Number of factors L ≥ 1.
    target : array_like, shape (d, d)
        The matrix M. :meth:`spectral_target` builds M = U diag(σ₁, 1) Vᵀ.
    init : {"balanced", "small", "identity"}
        What :meth:`init` draws (``init_scale`` = s below):

        * ``"balanced"``: exactly balanced factors (W_{i+1}ᵀW_{i+1} = W_iW_iᵀ) whose
          product is s^L·G, G with iid N(0, 1/d) entries: with G = USVᵀ and Haar-random
          orthogonal Q_1..Q_{L−1} (Q_0 = V, Q_L = U), W_i = s·Q_i S^{1/L} Q_{i−1}ᵀ.
        * ``"small"``: iid entries s·N(0, 1).
        * ``"identity"``: W_i = s·I (deterministic; the seed is ignored).
    init_scale : float
        The scale s above.

    Notes
    -----
    With M = U diag(σ₁, 1) Vᵀ, d = 2, L = 3, the sharpness at the balanced minimum is
    3σ₁^{4/3} (theory §5).
    """

    name = "deep_matrix_factorization"
    loss_min = 0.0

    def __init__(self, d: int, depth: int, target, init: str = "balanced", init_scale: float = 0.5):
        self.d = positive_int(d, "d")
        self.depth = positive_int(depth, "depth")
        M = as_matrix(target, "target")
        if M.shape != (self.d, self.d):
            raise ValueError(
                f"`target` must be a square ({self.d}, {self.d}) matrix matching `d`; got shape {M.shape}."
            )
        self.target = np.ascontiguousarray(M)
        self.init_kind = choice(init, "init", _INITS)
        self.init_scale = positive_float(init_scale, "init_scale")
        self._kernels = NumbaKernels(_k._loss, _k._grad, _k._hvp, _k._hessian, _k._third, (self.target,))

    @property
    def dim(self) -> int:
        return self.depth * self.d * self.d

    @property
    def numba_kernels(self) -> NumbaKernels:
        return self._kernels

    def _grad_third(self, theta, U, s, a, b):
        # One fused kernel for a·∇E + b·contraction: shares the partial products between
        # the two and skips the identity/zero factors at the chain ends (measured 1.8–4×
        # faster than the two separate calls at depth 3; see the kernel module).
        return _k._grad_third(theta, np.ascontiguousarray(U), s, float(a), float(b), self._kernels.params)

    def factors(self, theta) -> np.ndarray:
        """The factors as an array of shape (depth, d, d); ``[i]`` is W_{i+1}."""
        return as_vector(theta, "theta", self.dim).reshape(self.depth, self.d, self.d)

    def jax_loss(self):
        from .._jax import import_jax

        _, jnp = import_jax()
        M = jnp.asarray(self.target)
        d, depth = self.d, self.depth

        def loss(theta):
            W = theta.reshape(depth, d, d)
            prod = W[0]
            for i in range(1, depth):
                prod = W[i] @ prod
            return 0.5 * jnp.sum((prod - M) ** 2)

        return loss

    def config(self) -> dict:
        return {
            "name": self.name, "dim": self.dim, "d": self.d, "depth": self.depth,
            "target": self.target.tolist(), "init": self.init_kind, "init_scale": self.init_scale,
        }

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "DeepMatrixFactorization":
        return cls(d=config["d"], depth=config["depth"], target=np.array(config["target"], dtype=np.float64),
                   init=config["init"], init_scale=config["init_scale"])

    def init(self, seed: int | None = None) -> np.ndarray:
        """θ₀ drawn as described by the ``init`` option (reproducible from ``seed``)."""
        rng = seed_rng(seed)
        d, L, scale = self.d, self.depth, self.init_scale
        if self.init_kind == "identity":
            W = np.broadcast_to(scale * np.eye(d), (L, d, d))
        elif self.init_kind == "small":
            W = scale * rng.standard_normal((L, d, d))
        else:
            U, S, Vt = np.linalg.svd(rng.standard_normal((d, d)) / np.sqrt(d))
            Q = [Vt.T] + [_haar_orthogonal(rng, d) for _ in range(L - 1)] + [U]
            root = np.diag(S ** (1.0 / L))
            W = np.stack([scale * Q[i + 1] @ root @ Q[i].T for i in range(L)])
        return np.ascontiguousarray(W, dtype=np.float64).reshape(-1)

    @staticmethod
    def spectral_target(sigma, d: int | None = None, seed: int | None = None) -> np.ndarray:
        """Target M = U diag(σ) Vᵀ with prescribed singular values.

        Parameters
        ----------
        sigma : float or sequence of float
            A scalar σ₁ gives singular values (σ₁, 1, ..., 1) (length ``d``, default 2);
            a sequence gives the singular values themselves.
        d : int, optional
            Matrix size; must match ``len(sigma)`` when ``sigma`` is a sequence.
        seed : int, optional
            With a seed, U and V are Haar-random orthogonal matrices; without one,
            U = V = I and M is diagonal.
        """
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            n = 2 if d is None else positive_int(d, "d")
            values = np.ones(n)
            values[0] = float(sigma)
        else:
            try:
                values = np.array(sigma, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise TypeError(f"`sigma` must be a real number or a sequence of reals; got {sigma!r}.") from None
            if values.size == 0:
                raise ValueError("`sigma` must not be empty.")
            if d is not None and positive_int(d, "d") != values.size:
                raise ValueError(f"`d` = {d} does not match len(`sigma`) = {values.size}.")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"`sigma` must be finite and >= 0 (singular values); got {values.tolist()}.")
        n = values.size
        if seed is None:
            return np.diag(values)
        rng = np.random.default_rng(seed)
        return _haar_orthogonal(rng, n) @ np.diag(values) @ _haar_orthogonal(rng, n).T
