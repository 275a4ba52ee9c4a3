"""Problems built from a few numbers: what a configuration file (or a registered name) can
ask for besides the problem classes themselves.

Each builder takes keyword parameters (TOML values) and returns a problem, or
``(problem, theta0)`` when the problem comes with its own initial point (the MLPs draw
their weights with the data's seed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["deep_matrix_factorization", "teacher_student_problem", "digits_mlp", "cifar10_mlp", "mlp_problem"]


def deep_matrix_factorization(d: int, depth: int, target=None, *, sigma1=None, target_seed=None,
                              init: str = "balanced", init_scale: float = 0.5):
    """:class:`DeepMatrixFactorization` with either a ``target`` matrix or ``sigma1``: the
    target diag(σ1, 1, ...) (rotated by Haar-random orthogonal matrices from ``target_seed``
    if given)."""
    from .matrix_factorization import DeepMatrixFactorization as DMF

    if target is None:
        if sigma1 is None:
            raise ValueError("DeepMatrixFactorization needs `target` (a d×d matrix) or `sigma1` (target "
                             "diag(σ1, 1, ...), rotated by `target_seed` if given).")
        target = DMF.spectral_target(sigma1, d=d, seed=target_seed)
    elif sigma1 is not None or target_seed is not None:
        raise ValueError("give either `target` or `sigma1` (with `target_seed`), not both.")
    return DMF(d=d, depth=depth, target=target, init=init, init_scale=init_scale)


def teacher_student_problem(width: int, n: int = 100, d: int = 5, data_seed: int = 0, activation: str = "tanh",
                            scaling: str = "mean-field"):
    """The mean-field teacher–student benchmark (theory §5) at width N (``width``)."""
    from .two_layer import teacher_student

    return teacher_student(width, n=n, d=d, seed=data_seed, activation=activation, scaling=scaling)


def mlp_problem(X, Y, width: int, *, init_scale: float = 1.0, seed: int = 0, name: str = "mlp"):
    """Two-layer tanh MLP with squared loss on vector targets, as a JAX-autodiff problem.

    ``f(x) = W2 tanh(W1 x + b1)``, ``E = (1/2n) Σ_k ‖f(x_k) − y_k‖²``, θ = (W1 row-major,
    b1, W2 row-major). :class:`effdyn.problems.TwoLayerNet` has scalar outputs only, so the
    multi-class MLP goes through :func:`effdyn.problems.from_jax` (exact derivatives by
    autodiff, including the third-derivative contraction).

    Returns
    -------
    problem : effdyn.problems.JaxProblem
    theta0 : ndarray
        W1 ~ init_scale·N(0, 1/d), b1 = 0, W2 ~ init_scale·N(0, 1/width), from ``seed``.
    """
    from .._jax import import_jax
    from .jax_problem import from_jax

    jax, jnp = import_jax()
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n, d = X.shape
    c = Y.shape[1]
    h = int(width)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

    def loss(theta):
        W1 = theta[: d * h].reshape(h, d)
        b1 = theta[d * h: d * h + h]
        W2 = theta[d * h + h:].reshape(c, h)
        out = jnp.tanh(Xj @ W1.T + b1) @ W2.T
        return 0.5 * jnp.mean(jnp.sum((out - Yj) ** 2, axis=1))

    problem = from_jax(loss, dim=d * h + h + h * c, name=name, loss_min=0.0)
    rng = np.random.default_rng(seed)
    theta0 = np.concatenate([init_scale * rng.standard_normal(d * h) / np.sqrt(d), np.zeros(h),
                             init_scale * rng.standard_normal(h * c) / np.sqrt(h)])
    return problem, theta0


def digits_mlp(n: int = 500, width: int = 32, init_scale: float = 1.0, data_seed: int = 0, name: str = "DigitsMLP"):
    """A two-layer tanh MLP on ``n`` standardised scikit-learn digits (one-hot targets);
    returns ``(problem, theta0)`` with weights drawn from ``data_seed``."""
    from ..data import load_digits_subset, one_hot

    X, labels = load_digits_subset(n, seed=data_seed)
    return mlp_problem(X, one_hot(labels), width, init_scale=init_scale, seed=data_seed, name=name)


def cifar10_mlp(path, n: int = 500, width: int = 32, init_scale: float = 1.0, data_seed: int = 0,
                name: str = "Cifar10MLP"):
    """A two-layer tanh MLP on ``n`` standardised CIFAR-10 training images read from the
    local ``cifar-10-batches-py`` folder ``path``; returns ``(problem, theta0)``."""
    from ..data import load_cifar10_subset, one_hot

    X, labels = load_cifar10_subset(path, n=n, seed=data_seed)
    return mlp_problem(X, one_hot(labels), width, init_scale=init_scale, seed=data_seed, name=name)
