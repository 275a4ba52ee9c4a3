"""Wrap any JAX-differentiable loss as a :class:`~effdyn.problems.base.Problem`."""

from __future__ import annotations

import numpy as np

from .._checks import positive_int, real_float
from .base import Problem


class JaxProblem(Problem):
    """A problem whose derivatives come from JAX autodiff of a user loss.

    Build it with :func:`from_jax`. Every derivative is a ``jax.jit``-compiled function
    created once here; θ, v, U and s are passed as float64 arrays, so repeated calls reuse
    the compiled code (a new shape of U, i.e. a new rank r, compiles once more).
    ``numba_kernels`` is None: GD on this problem runs its loop in Python.
    """

    def __init__(self, loss_fn, dim, name=None, loss_min=None):
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be a callable θ -> E(θ) written with jax.numpy; got {type(loss_fn).__name__}.")
        self._dim = positive_int(dim, "dim")
        if name is None:
            name = getattr(loss_fn, "__name__", "jax_problem")
            if not name.isidentifier():  # lambdas are called "<lambda>"
                name = "jax_problem"
        if not isinstance(name, str) or not name:
            raise TypeError(f"`name` must be a non-empty string; got {name!r}.")
        self.name = name
        self.loss_min = None if loss_min is None else real_float(loss_min, "loss_min")

        from .._jax import import_jax

        jax, jnp = import_jax()
        self._check_output(jax, jnp, loss_fn, self._dim)
        self._loss_fn = loss_fn

        grad = jax.grad(loss_fn)

        def hvp(theta, v):
            return jax.jvp(grad, (theta,), (v,))[1]

        def curvature(theta, U, s):
            # Σ_r s_r u_rᵀ H(θ) u_r with H u_r by forward-over-reverse, columns batched.
            HU = jax.vmap(hvp, in_axes=(None, 1), out_axes=1)(theta, U)
            return jnp.sum(s * jnp.sum(U * HU, axis=0))

        self._jit_loss = jax.jit(loss_fn)
        self._jit_grad = jax.jit(grad)
        self._jit_hvp = jax.jit(hvp)
        self._jit_hessian = jax.jit(jax.hessian(loss_fn))
        self._jit_third = jax.jit(jax.grad(curvature))

    @staticmethod
    def _check_output(jax, jnp, loss_fn, dim):
        # Trace abstractly on a float64 vector: checks shape and dtype without computing.
        try:
            out = jax.eval_shape(loss_fn, jax.ShapeDtypeStruct((dim,), jnp.float64))
        except Exception as exc:
            raise ValueError(
                f"`loss_fn` failed on a float64 vector of length `dim` = {dim}: "
                f"{type(exc).__name__}: {exc}. Check `dim` and that `loss_fn` uses jax.numpy only."
            ) from exc
        shape = getattr(out, "shape", None)
        dtype = getattr(out, "dtype", None)
        if shape is None or dtype is None:
            raise TypeError(f"`loss_fn` must return a JAX scalar; got {type(out).__name__}.")
        if tuple(shape) != ():
            raise ValueError(
                f"`loss_fn` must return a scalar loss; got an array of shape {tuple(shape)}. "
                "Reduce it (e.g. with jnp.sum or jnp.mean)."
            )
        if dtype != jnp.float64:
            raise TypeError(
                f"`loss_fn` returns {dtype} on float64 input; effdyn runs in float64 only. "
                "Remove casts to float32 (e.g. `.astype(jnp.float32)`, float32 constants) from `loss_fn`."
            )

    @property
    def dim(self) -> int:
        return self._dim

    def _loss(self, theta):
        return float(self._jit_loss(theta))

    def _grad(self, theta):
        return np.array(self._jit_grad(theta), dtype=np.float64)

    def _hvp(self, theta, v):
        return np.array(self._jit_hvp(theta, v), dtype=np.float64)

    def _hessian(self, theta):
        H = np.array(self._jit_hessian(theta), dtype=np.float64)
        return 0.5 * (H + H.T)

    def _third(self, theta, U, s):
        return np.array(self._jit_third(theta, U, s), dtype=np.float64)

    def jax_loss(self):
        return self._loss_fn

    def config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "loss_min": self.loss_min}


def from_jax(loss_fn, dim, name=None, loss_min=None) -> JaxProblem:
    """Wrap a JAX loss θ ↦ E(θ) on R^dim as a problem with autodiff derivatives.

    Parameters
    ----------
    loss_fn : callable
        Pure function of a float64 vector of length ``dim`` returning a float64 scalar,
        written with ``jax.numpy``.
    dim : int
        Number of parameters P ≥ 1.
    name : str, optional
        Identifier for reports (defaults to the function's name).
    loss_min : float, optional
        Known infimum of E (needed by GD on √(E − E_min)).

    Returns
    -------
    JaxProblem
        grad by ``jax.grad``, hvp as the JVP of the gradient, hessian by ``jax.hessian``,
        third as the gradient of θ ↦ Σ_r s_r u_rᵀ H(θ) u_r; all jit-compiled once.

    Raises
    ------
    TypeError
        If ``loss_fn`` is not callable or returns a non-float64 value.
    ValueError
        If ``dim`` is not a positive integer, ``loss_fn`` fails on a vector of length
        ``dim``, or returns a non-scalar.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> p = from_jax(lambda th: jnp.sum(th**4) / 4, dim=3)
    >>> p.hessian([1.0, 2.0, 0.0]).diagonal().tolist()
    [3.0, 12.0, 0.0]
    """
    return JaxProblem(loss_fn, dim, name=name, loss_min=loss_min)
