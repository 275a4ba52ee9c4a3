"""Problems named in configuration files by reference to the user's own code.

``[problem] type = "jax"`` builds a :func:`~effdyn.problems.from_jax` problem from functions
in an importable module, so that any loss a user can script can also be run with
``effdyn run CONFIG.toml``::

    [problem]
    type = "jax"
    loss = "mypkg.losses:mlp_loss"      # loss(θ) -> scalar, or loss(θ, data) with `data`
    params = "mypkg.losses:init_params" # params() -> example pytree or flat vector (or: dim = P)
    data = "mypkg.losses:make_data"     # optional: make_data(**other keys) -> arrays
    n = 24                              # other keys are the data builder's arguments
    data_seed = 0
    name = "tiny_mlp"                   # optional (default: the loss function's name)
    loss_min = 0.0                      # optional (GD on sqrt(E - E_min) needs it)

The calling convention:

* ``params()`` is called without arguments and returns the parameters at a typical
  start: a flat vector of P numbers, or a pytree of arrays (dicts, lists, tuples), which
  is flattened with ``jax.flatten_util.ravel_pytree``. Its value is also GD's default
  start when ``[start]`` gives no ``theta0``. With ``dim = P`` instead, ``loss`` receives
  a flat vector and ``[start] theta0`` is required.
* ``data(**keys)`` receives every key of ``[problem]`` other than the ones above and
  returns whatever the loss needs (an array, a tuple or dict of arrays); the loss is then
  called as ``loss(params, data)`` with that value.
* ``loss`` is called with the parameters in the form ``params()`` returned them (the
  pytree, rebuilt from the flat vector effdyn works on), and must return a float64 scalar.

Only references of the form ``"package.module:function"`` are accepted: the module is
imported by name (it must be installed or on ``PYTHONPATH``) and the function looked up
in it. Nothing in the configuration file is evaluated as code, and modules of the standard
library (``os``, ``subprocess``, ...) and of effdyn are refused. Importing a module runs its
top-level code and the named functions run with the file's values, so a configuration that
names functions deserves the trust one gives a script (as ``--plugin`` does).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys

import numpy as np

__all__ = ["jax_problem", "resolve_reference", "JAX_KEYS"]

#: Keys of a ``type = "jax"`` table that are not arguments of the data builder.
JAX_KEYS = ("loss", "dim", "params", "data", "name", "loss_min")

_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def resolve_reference(value, key: str):
    """The callable named by ``"package.module:attribute"`` (the config key ``key``).

    The module is imported by name; nothing else is evaluated. Anything that is not such a
    string, a module that cannot be imported, a missing attribute or one that is not
    callable raises ValueError naming ``key``.
    """
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value.strip()):
        raise ValueError(f"`{key}` must be a string \"package.module:function\" naming a function in an importable "
                         f"module (e.g. {key} = \"mypkg.losses:{'make_data' if key == 'data' else key}\"); got "
                         f"{value!r}.")
    module_name, attr = value.strip().split(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("effdyn", "__main__"):
        # the functions a loss needs are the user's; a config naming os:system,
        # subprocess:call or shutil:rmtree (with arguments from the file) is refused
        raise ValueError(f"`{key}` = {value!r} names a function of {top!r}; a configuration may name functions of "
                         "your own modules only (a module of your package, or a file on PYTHONPATH).")
    if attr.startswith("__"):
        raise ValueError(f"`{key}` = {value!r} names a special attribute; name a function defined in the module.")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise ValueError(f"`{key}` = {value!r}: module {module_name!r} could not be imported "
                         f"({type(exc).__name__}: {exc}); install its package or put its folder on PYTHONPATH."
                         ) from None
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"`{key}` = {value!r}: module {module_name!r} has no attribute {attr!r}.") from None
    if not callable(target):
        raise ValueError(f"`{key}` = {value!r} is a {type(target).__name__}, not a function.")
    return target


def _call(fn, key, value, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise ValueError(f"`{key}` = {value!r} raised {type(exc).__name__}: {exc}") from None


def jax_problem(loss=None, dim=None, params=None, data=None, name=None, loss_min=None, **data_args):
    """Build the problem of a ``[problem] type = "jax"`` table (see the module docstring).

    Returns ``(problem, theta0)``: ``theta0`` is the flattened ``params()`` (None with
    ``dim``).
    """
    from .._jax import import_jax
    from .jax_problem import from_jax

    if loss is None:
        raise ValueError("missing `loss`; add e.g. `loss = \"mypkg.losses:my_loss\"` (a JAX loss function).")
    if (dim is None) == (params is None):
        raise ValueError("give exactly one of `dim = P` (the loss takes a flat vector of P numbers) or "
                         "`params = \"mypkg.losses:init_params\"` (a function returning example parameters).")
    if data is None and data_args:
        extra = sorted(data_args)[0]
        raise ValueError(f"`{extra}` is not a key of the jax problem type (valid: {', '.join(JAX_KEYS)}); other keys "
                         "are the arguments of the data builder, so add `data = \"mypkg.module:make_data\"` or "
                         f"remove `{extra}`.")
    if name is not None and (not isinstance(name, str) or not name.isidentifier()):
        raise ValueError(f"`name` must be an identifier-like string (e.g. name = \"tiny_mlp\"); got {name!r}.")
    loss_ref = loss
    loss_fn = resolve_reference(loss, "loss")
    params_fn = None if params is None else resolve_reference(params, "params")
    data_fn = None if data is None else resolve_reference(data, "data")
    try:
        jax, jnp = import_jax()
    except ImportError as exc:
        raise ValueError(f"type = \"jax\": {exc}") from None

    closure = None
    if data_fn is not None:
        try:
            inspect.signature(data_fn).bind(**data_args)
        except TypeError as exc:
            raise ValueError(f"`data` = {data!r} does not take the keys {sorted(data_args)} of [problem] ({exc}); "
                             "every key besides " + ", ".join(JAX_KEYS) + " is passed to it by name.") from None
        except ValueError:
            pass  # no signature to check (a builtin): the call below reports any mismatch
        closure = _call(data_fn, "data", data, **data_args)
        try:
            closure = jax.tree_util.tree_map(_as_constant(jnp), closure)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`data` = {data!r} must return arrays (an array, or a tuple/list/dict of arrays); "
                             f"{exc}") from None

    theta0 = None
    unravel = None
    if params_fn is not None:
        example = _call(params_fn, "params", params)
        try:
            leaves = jax.tree_util.tree_leaves(example)
            if not leaves:
                raise ValueError("it holds no arrays")
            for leaf in leaves:
                arr = np.asarray(leaf)
                if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
                    raise ValueError(f"a leaf of dtype {arr.dtype} is not real and finite")
            from jax.flatten_util import ravel_pytree

            flat, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), example))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`params` = {params!r} must return the example parameters as a flat vector or a pytree "
                             f"of real arrays; {exc}") from None
        theta0 = np.asarray(flat, dtype=np.float64)
        dim = theta0.size

    def flat_loss(theta):
        p = theta if unravel is None else unravel(theta)
        return loss_fn(p) if closure is None else loss_fn(p, closure)

    if name is None:
        name = getattr(loss_fn, "__name__", "jax_problem")
        if not isinstance(name, str) or not name.isidentifier():
            name = "jax_problem"
    try:
        problem = from_jax(flat_loss, dim=dim, name=name, loss_min=loss_min)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`loss` = {loss_ref!r}: {exc}") from None
    return problem, theta0


def _as_constant(jnp):
    def convert(leaf):
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"got a leaf of dtype {arr.dtype} (numbers only)")
        return jnp.asarray(arr, dtype=jnp.float64) if arr.dtype.kind == "f" else jnp.asarray(arr)

    return convert
