"""Wrap any JAX-differentiable loss as a :class:`~effdyn.problems.base.Problem`.

Three forms of loss are accepted (see :func:`from_jax`):

* a function of a flat float64 vector θ ∈ R^P (``dim=P``), as before;
* a function of a parameter pytree (``params=example``): plain or nested dicts and lists,
  Flax-style ``{"params": {...}}`` trees, Equinox modules. Every floating-point array leaf
  (and every Python float) is a parameter; other leaves (integer arrays, callables such as
  an Equinox module's activation, strings) are kept fixed. θ is the concatenation of the
  parameter leaves in ``jax.tree_util`` order, as ``jax.flatten_util.ravel_pytree`` makes it;
* either of them with a data set, ``loss_fn(params, batch)`` returning the *mean* loss over
  its batch: ``data`` is a pytree of arrays sharing their leading (sample) axis, cut into
  chunks of ``chunk_size`` samples. E, ∇E, Hv, the Hessian and the third contraction are
  sums over chunks weighted by chunk size / n, so memory is bounded by one chunk while the
  result is the full-batch one.

Every derivative is written once as a pure function of (θ, ..., data) so that the JAX GD
engine (:mod:`effdyn.engine_jax`) can trace it into its own compiled loop with the data as
an argument (never as a compile-time constant); the NumPy-facing methods are those pure
functions jit-compiled here.
"""

from __future__ import annotations


import numpy as np

from .._checks import positive_int, real_float
from .base import Problem

__all__ = ["JaxProblem", "from_jax"]


def _is_param_leaf(x) -> bool:
    """Whether a pytree leaf is a trainable parameter (a real floating-point array or float)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, float):
        return True
    dtype = getattr(x, "dtype", None)
    if dtype is None or not hasattr(x, "shape"):
        return False
    return np.issubdtype(np.dtype(dtype), np.floating) or np.issubdtype(np.dtype(dtype), np.complexfloating)


class _Layout:
    """The map θ ⇄ parameter pytree (identity for a flat loss).

    ``ravel_pytree`` flattens only the parameter leaves; the other leaves are kept as they
    were given and put back in place by ``unravel``.
    """

    def __init__(self, jax, jnp, params=None, dim=None):
        self.flat = params is None
        if self.flat:
            self.dim = dim
            self.unravel = lambda theta: theta
            self.theta0 = None
            return
        from jax.flatten_util import ravel_pytree

        leaves, self.treedef = jax.tree_util.tree_flatten(params)
        self.mask = [_is_param_leaf(x) for x in leaves]
        for i, (x, is_p) in enumerate(zip(leaves, self.mask)):
            if is_p and np.issubdtype(np.dtype(getattr(x, "dtype", np.float64)), np.complexfloating):
                raise TypeError(
                    f"`params` has a complex leaf ({np.dtype(x.dtype)}, leaf {i} in jax.tree_util order); "
                    "effdyn handles real parameters only. Split it into real and imaginary parts."
                )
        # Parameters are promoted to float64 (never demoted): effdyn runs in float64 only.
        self.param_leaves = [jnp.asarray(x, dtype=jnp.float64) for x, is_p in zip(leaves, self.mask) if is_p]
        self.static_leaves = [x for x, is_p in zip(leaves, self.mask) if not is_p]
        if not self.param_leaves:
            raise ValueError(
                "`params` has no floating-point leaves, so there is nothing to differentiate; pass the "
                "pytree of parameters (arrays of floats) the loss is a function of."
            )
        flat, self._unravel_leaves = ravel_pytree(self.param_leaves)
        self.theta0 = np.asarray(flat, dtype=np.float64)
        self.dim = int(self.theta0.size)
        self.shapes = [tuple(x.shape) for x in self.param_leaves]

        def unravel(theta):
            params_it = iter(self._unravel_leaves(theta))
            static_it = iter(self.static_leaves)
            merged = [next(params_it) if is_p else next(static_it) for is_p in self.mask]
            return jax.tree_util.tree_unflatten(self.treedef, merged)

        self.unravel = unravel

    def ravel(self, jax, jnp, tree):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        if treedef != self.treedef:
            raise ValueError(
                "`tree` does not have the structure of the problem's `params` "
                f"(got {treedef}, expected {self.treedef}); pass a pytree shaped like `params`."
            )
        parts = []
        for x, is_p, shape in zip(leaves, self.mask, self._shapes_iter()):
            if not is_p:
                continue
            arr = np.asarray(x, dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"`tree` has a parameter leaf of shape {arr.shape} where `params` has {shape}.")
            parts.append(arr.ravel())
        return np.concatenate(parts) if parts else np.empty(0)

    def _shapes_iter(self):
        shapes = iter(self.shapes)
        return [next(shapes) if is_p else None for is_p in self.mask]


class _Chunks:
    """A data set cut into ``n_full`` chunks of ``m`` samples and a remainder of ``r`` samples.

    ``full`` holds the chunks stacked on a new leading axis (scanned over), ``rest`` the
    remainder (a separate call, so no chunk is padded: the loss is a mean over its batch
    and padding would change it). Weights are chunk size / n.
    """

    def __init__(self, jax, jnp, data, chunk_size):
        leaves = jax.tree_util.tree_leaves(data)
        if not leaves:
            raise ValueError("`data` has no array leaves; pass e.g. `data=(X, Y)` with arrays of samples.")
        arrays = []
        for x in leaves:
            if not hasattr(x, "shape") or not hasattr(x, "dtype"):
                raise TypeError(
                    f"`data` leaves must be arrays with a leading sample axis; got {type(x).__name__}. "
                    "Wrap scalars in the loss instead."
                )
            arrays.append(x)
        sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in arrays}
        if -1 in sizes:
            raise ValueError("`data` leaves must have a leading sample axis; got a 0-d array.")
        if len(sizes) != 1:
            raise ValueError(
                f"`data` leaves must share their leading (sample) axis; got lengths {sorted(sizes)}."
            )
        n = sizes.pop()
        if n < 1:
            raise ValueError("`data` must hold at least one sample; got an empty leading axis.")
        m = n if chunk_size is None else positive_int(chunk_size, "chunk_size")
        if m > n:
            raise ValueError(
                f"`chunk_size` = {m} exceeds the {n} samples in `data`; pass chunk_size <= {n} (or None for one chunk)."
            )

        def cast(x):
            x = jnp.asarray(x)
            # Floating data is promoted to float64 so that no float32 enters the loss.
            return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x

        data = jax.tree_util.tree_map(cast, data)
        self.n, self.m = n, m
        self.n_full, self.r = n // m, n % m
        nf = self.n_full * m
        self.full = jax.tree_util.tree_map(lambda x: x[:nf].reshape((self.n_full, m) + x.shape[1:]), data)
        self.rest = jax.tree_util.tree_map(lambda x: x[nf:], data) if self.r else None
        self.example = jax.tree_util.tree_map(lambda x: x[0], self.full)

    @property
    def args(self):
        return (self.full, self.rest)


class JaxProblem(Problem):
    """A problem whose derivatives come from JAX autodiff of a user loss.

    Build it with :func:`from_jax`. Every derivative is a ``jax.jit``-compiled function
    created once here; θ, v, U and s are passed as float64 arrays, so repeated calls reuse
    the compiled code (a new shape of U, i.e. a new rank r, compiles once more).
    ``numba_kernels`` is None: ``effdyn.gd`` loops in Python on it, and
    :func:`effdyn.engine_jax.gd_jax` runs it in compiled chunks.

    Attributes
    ----------
    params_template : pytree or None
        The ``params`` given to :func:`from_jax` (None for a flat loss).
    n_samples, chunk_size : int or None
        Size of ``data`` and of its chunks (None without data).
    """

    def __init__(self, loss_fn, dim=None, name=None, loss_min=None, *, params=None, data=None, chunk_size=None):
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be a callable θ -> E(θ) written with jax.numpy; got {type(loss_fn).__name__}.")
        if dim is None and params is None:
            raise TypeError(
                "`from_jax` needs the parameter layout: pass `dim=P` for a loss of a flat vector, or "
                "`params=example_pytree` for a loss of a pytree (dict, Equinox module, ...)."
            )
        if dim is not None:
            dim = positive_int(dim, "dim")
        if chunk_size is not None and data is None:
            raise ValueError("`chunk_size` cuts `data` into chunks, but no `data` was given; pass `data=` or drop `chunk_size`.")
        if name is None:
            name = getattr(loss_fn, "__name__", "jax_problem")
            if not isinstance(name, str) or not name.isidentifier():  # lambdas are called "<lambda>"
                name = "jax_problem"
        if not isinstance(name, str) or not name:
            raise TypeError(f"`name` must be a non-empty string; got {name!r}.")
        self.name = name
        self.loss_min = None if loss_min is None else real_float(loss_min, "loss_min")

        from .._jax import import_jax

        jax, jnp = import_jax()
        self._jax, self._jnp = jax, jnp
        self._layout = _Layout(jax, jnp, params=params, dim=dim)
        if params is not None and dim is not None and dim != self._layout.dim:
            raise ValueError(
                f"`dim` = {dim} disagrees with `params`, which has {self._layout.dim} parameters; "
                "drop `dim` (it is inferred from `params`)."
            )
        self._dim = self._layout.dim
        self.params_template = params
        self._chunks = None if data is None else _Chunks(jax, jnp, data, chunk_size)
        self.n_samples = None if self._chunks is None else self._chunks.n
        self.chunk_size = None if self._chunks is None else self._chunks.m
        self._check_output(jax, jnp, loss_fn)
        self._check_indexing(jax, jnp, loss_fn)
        self._loss_fn = loss_fn
        self._build(jax, jnp)

    # --- construction -----------------------------------------------------------------
    def _check_output(self, jax, jnp, loss_fn):
        # Trace abstractly: checks shape and dtype without computing anything.
        lay, chunks = self._layout, self._chunks
        theta = jax.ShapeDtypeStruct((self._dim,), jnp.float64)
        if lay.flat:
            what = f"a float64 vector of length `dim` = {self._dim}"
            hint = (" If `loss_fn` takes a pytree of parameters (a dict, an Equinox module, ...), pass "
                    "`params=example_pytree` instead of `dim`.")
        else:
            what = "the pytree `params`"
            hint = " Check that `params` is the pytree `loss_fn` expects."
        unravel = lay.unravel
        args, fn = (theta,), (lambda th: loss_fn(unravel(th)))
        if chunks is not None:
            args = (theta, jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), chunks.full))
            fn = lambda th, batch: loss_fn(unravel(th), batch)  # noqa: E731
            what += f" and a batch of `data` (chunk of {chunks.m} samples)"
            hint += " With `data`, `loss_fn(params, batch)` must return the mean loss over its batch."
        try:
            out = jax.eval_shape(fn, *args)
        except Exception as exc:
            raise ValueError(
                f"`loss_fn` failed on {what}: {type(exc).__name__}: {exc}.{hint} "
                "Also check that `loss_fn` uses jax.numpy only."
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

    def _check_indexing(self, jax, jnp, loss_fn):
        """Refuse a loss that indexes θ (or anything else) out of bounds.

        JAX clamps an out-of-range index instead of raising (``t[5]`` on a vector of length 3
        reads ``t[2]``), so a wrong ``dim`` would otherwise run. One evaluation under
        ``checkify``'s index checks, at a fixed probe point and on the first chunk of the
        data, catches every gather and dynamic slice that leaves its array. A static slice
        (``t[1:5]``) is clamped by NumPy's rules while tracing and cannot be seen here (the
        docs say so). A loss that ``checkify`` cannot transform is not checked.
        """
        from jax.experimental import checkify

        lay, chunks = self._layout, self._chunks
        theta = jnp.asarray(np.random.default_rng(0).standard_normal(self._dim) * 0.1)
        if chunks is None:
            fn, args = (lambda th: loss_fn(lay.unravel(th))), (theta,)
        else:
            batch = jax.tree_util.tree_map(lambda x: x[0], chunks.full)
            fn, args = (lambda th, b: loss_fn(lay.unravel(th), b)), (theta, batch)
        try:
            err, _ = checkify.checkify(fn, errors=checkify.index_checks)(*args)
            message = err.get()
        except Exception:  # noqa: BLE001 - a transform checkify does not support: skip the check
            return
        if message:
            first = message.strip().splitlines()[0]
            fix = (f"check `dim` (now {self._dim}: the length of θ the loss reads)" if lay.flat
                   else "check that `params` has the shapes `loss_fn` reads")
            raise ValueError(f"`loss_fn` indexes out of bounds on {'θ' if lay.flat else 'its parameters'} "
                             f"or its data: {first} JAX would clamp the index and run silently; {fix}.")

    def _build(self, jax, jnp):
        unravel, loss_fn, chunks = self._layout.unravel, self._loss_fn, self._chunks

        if chunks is None:
            def batch_loss(theta, _batch):
                return loss_fn(unravel(theta))
        else:
            def batch_loss(theta, batch):
                return loss_fn(unravel(theta), batch)

        grad_b = jax.grad(batch_loss)

        def hvp_b(theta, v, batch):
            return jax.jvp(lambda t: grad_b(t, batch), (theta,), (v,))[1]

        def curvature_b(theta, U, s, batch):
            # Σ_r s_r u_rᵀ H(θ) u_r as second directional derivatives d²/dt² E(θ + t u_r),
            # forward-over-forward (no reverse pass inside; see benchmarks/bench_jax_engine.py).
            def d2(u):
                first = lambda t: jax.jvp(lambda x: batch_loss(x, batch), (t,), (u,))[1]
                return jax.jvp(first, (theta,), (u,))[1]

            return jnp.sum(s * jax.vmap(d2, in_axes=1)(U))

        def curvature_hvp_b(theta, U, s, batch):
            # The same sum with H u_r by forward-over-reverse (the former route, kept for the
            # benchmark and as an independent check of the forward-over-forward one).
            HU = jax.vmap(lambda u: hvp_b(theta, u, batch), in_axes=1, out_axes=1)(U)
            return jnp.sum(s * jnp.sum(U * HU, axis=0))

        third_b = jax.grad(curvature_b)
        hessian_b = jax.hessian(batch_loss)

        def value_and_grad_b(theta, batch):
            return jax.value_and_grad(batch_loss)(theta, batch)

        if chunks is None:
            def accumulate(fn):
                return lambda *a: fn(*a[:-1], None)
        else:
            n, m, r, n_full = chunks.n, chunks.m, chunks.r, chunks.n_full

            def accumulate(fn):
                # Σ_c (size_c / n) f(chunk_c): the chunk losses are means over their batches.
                def summed(*a):
                    args, (full, rest) = a[:-1], a[-1]
                    ck = jax.checkpoint(lambda batch: fn(*args, batch))

                    def body(acc, batch):
                        out = ck(batch)
                        return jax.tree_util.tree_map(jnp.add, acc, out), None

                    zero = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(fn, *args, chunks.example))
                    total, _ = jax.lax.scan(body, zero, full)
                    total = jax.tree_util.tree_map(lambda t: t * (m / n), total)
                    if rest is not None:
                        total = jax.tree_util.tree_map(lambda t, x: t + x * (r / n), total, fn(*args, rest))
                    return total
                return summed

        # Pure functions of (..., data); data is `self.data_args` (None without data).
        self.pure_loss = accumulate(batch_loss)
        self.pure_grad = accumulate(grad_b)
        self.pure_value_and_grad = accumulate(value_and_grad_b)
        self.pure_hvp = accumulate(hvp_b)
        self.pure_third = accumulate(third_b)
        self.pure_hessian = accumulate(hessian_b)
        self.pure_third_via_hvp = accumulate(jax.grad(curvature_hvp_b))

        self._jit_loss = jax.jit(self.pure_loss)
        self._jit_grad = jax.jit(self.pure_grad)
        self._jit_hvp = jax.jit(self.pure_hvp)
        self._jit_hessian = jax.jit(self.pure_hessian)
        self._jit_third = jax.jit(self.pure_third)

    # --- the problem protocol -----------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def data_args(self):
        """The data argument of the ``pure_*`` functions: (chunks, remainder), or None."""
        return None if self._chunks is None else self._chunks.args

    @property
    def is_pytree(self) -> bool:
        """Whether the loss takes a parameter pytree (``params=``) rather than a flat vector."""
        return not self._layout.flat

    def _loss(self, theta):
        return float(self._jit_loss(theta, self.data_args))

    def _grad(self, theta):
        return np.array(self._jit_grad(theta, self.data_args), dtype=np.float64)

    def _hvp(self, theta, v):
        return np.array(self._jit_hvp(theta, v, self.data_args), dtype=np.float64)

    def _hessian(self, theta):
        H = np.array(self._jit_hessian(theta, self.data_args), dtype=np.float64)
        return 0.5 * (H + H.T)

    def _third(self, theta, U, s):
        return np.array(self._jit_third(theta, U, s, self.data_args), dtype=np.float64)

    def jax_loss(self):
        """θ ↦ E(θ) on the flat float64 vector (data chunks summed inside), for JAX drifts."""
        if self._layout.flat and self._chunks is None:
            return self._loss_fn
        data, pure = self.data_args, self.pure_loss
        return lambda theta: pure(theta, data)

    # --- pytree helpers -------------------------------------------------------------------
    def unravel(self, theta):
        """The parameter pytree of the flat vector ``theta`` (θ itself for a flat loss)."""
        from .._checks import as_vector

        theta = as_vector(theta, "theta", self.dim)
        return self._layout.unravel(self._jnp.asarray(theta))

    def ravel(self, tree) -> np.ndarray:
        """The flat float64 vector θ of a parameter pytree shaped like ``params``."""
        if self._layout.flat:
            from .._checks import as_vector

            return as_vector(tree, "tree", self.dim)
        return self._layout.ravel(self._jax, self._jnp, tree)

    def init(self, seed=None) -> np.ndarray:
        """θ of the ``params`` pytree given to :func:`from_jax` (``seed`` is not used)."""
        if self._layout.flat:
            return super().init(seed)
        return self._layout.theta0.copy()

    def config(self) -> dict:
        cfg = {"name": self.name, "dim": self.dim, "loss_min": self.loss_min}
        if not self._layout.flat:
            cfg["param_shapes"] = [list(s) for s in self._layout.shapes]
        if self._chunks is not None:
            cfg["n_samples"] = self.n_samples
            cfg["chunk_size"] = self.chunk_size
        return cfg


def from_jax(loss_fn, dim=None, name=None, loss_min=None, *, params=None, data=None, chunk_size=None) -> JaxProblem:
    """Wrap a JAX loss as a problem with autodiff derivatives.

    Parameters
    ----------
    loss_fn : callable
        Pure function written with ``jax.numpy`` returning a float64 scalar: ``loss_fn(θ)``
        of a float64 vector of length ``dim``, or ``loss_fn(params)`` of a pytree shaped
        like ``params``; with ``data``, ``loss_fn(θ or params, batch)`` returning the *mean*
        loss over the batch.
    dim : int, optional
        Number of parameters P >= 1 of a flat-vector loss. Inferred from ``params`` when
        that is given.
    name : str, optional
        Identifier for reports (defaults to the function's name).
    loss_min : float, optional
        Known infimum of E (needed by GD on √(E − E_min)).
    params : pytree, optional
        An example parameter pytree (dicts, lists, tuples, Flax-style nested dicts,
        Equinox modules). Its floating-point leaves are the parameters, in
        ``jax.tree_util`` order (``jax.flatten_util.ravel_pytree``), promoted to float64;
        other leaves stay fixed. ``problem.init()`` returns its flat vector.
    data : pytree of arrays, optional
        Samples along the leading axis of every leaf, e.g. ``(X, Y)``.
    chunk_size : int, optional
        Samples per chunk (default: all of them in one). E, ∇E, Hv, the Hessian and the
        third contraction are accumulated chunk by chunk, weighted by chunk size.

    Returns
    -------
    JaxProblem
        grad by ``jax.grad``, hvp as the JVP of the gradient, hessian by ``jax.hessian``,
        third as the gradient of θ ↦ Σ_r s_r u_rᵀ H(θ) u_r (the quadratic forms by
        forward-over-forward differentiation); all jit-compiled once.
        ``problem.unravel(θ)`` and ``problem.ravel(tree)`` convert between θ and pytrees.

    Raises
    ------
    TypeError
        If ``loss_fn`` is not callable or returns a non-float64 value, if neither ``dim``
        nor ``params`` is given, or ``params`` has complex leaves.
    ValueError
        If ``dim`` is not a positive integer or disagrees with ``params``, ``loss_fn``
        fails on its argument (a pytree loss given only ``dim`` fails here, with a message
        to pass ``params=``), returns a non-scalar, or ``data``/``chunk_size`` are
        inconsistent.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> p = from_jax(lambda th: jnp.sum(th**4) / 4, dim=3)
    >>> p.hessian([1.0, 2.0, 0.0]).diagonal().tolist()
    [3.0, 12.0, 0.0]
    >>> q = from_jax(lambda w: jnp.sum(w["a"] ** 2) + w["b"] ** 2, params={"a": jnp.ones(2), "b": 3.0})
    >>> q.dim, q.grad(q.init()).tolist()
    (3, [2.0, 2.0, 6.0])
    """
    return JaxProblem(loss_fn, dim, name=name, loss_min=loss_min, params=params, data=data, chunk_size=chunk_size)
