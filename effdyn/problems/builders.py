"""Problems built from a few numbers: what a configuration file (or a registered name) can
ask for besides the problem classes themselves.

Each builder takes keyword parameters (TOML values) and returns a problem, or
``(problem, theta0)`` when the problem comes with its own initial point (the MLPs draw
their weights with the data's seed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["deep_matrix_factorization", "teacher_student_problem", "digits_mlp", "cifar10_mlp", "mlp_problem",
           "cnn_problem", "digits_cnn", "cifar10_cnn", "peer_mlp", "ACTIVATIONS"]

#: Activations of :func:`cnn_problem` (smooth, so that every derivative effdyn takes exists).
ACTIVATIONS = ("tanh", "swish")


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
                name: str = "Cifar10MLP", classes=None, selection: str = "random"):
    """A two-layer tanh MLP on ``n`` standardised CIFAR-10 training images read from the
    local ``cifar-10-batches-py`` folder ``path``; returns ``(problem, theta0)``.

    ``classes`` (e.g. ``[0, 1, 2, 3]``) keeps those labels only, with one output per class
    kept; ``selection`` is "random" (drawn with ``data_seed``) or "first" (file order), as in
    :func:`effdyn.data.load_cifar10_subset`.
    """
    from ..data import class_indices, load_cifar10_subset, one_hot

    X, labels = load_cifar10_subset(path, n=n, seed=data_seed, classes=classes, selection=selection)
    Y = one_hot(labels) if classes is None else one_hot(class_indices(labels, classes), len(classes))
    return mlp_problem(X, Y, width, init_scale=init_scale, seed=data_seed, name=name)


# --- convolutional networks ----------------------------------------------------------------

def _int_tuple(value, name, *, lo=1):
    from .._checks import positive_int

    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"`{name}` must be a list of integers, one per convolution layer, e.g. [8, 8]; got {value!r}.")
    out = tuple(positive_int(v, name) for v in value)
    if not out or min(out) < lo:
        raise ValueError(f"`{name}` must list at least one integer >= {lo}; got {list(out)}.")
    return out


def _patches(jnp, x, k, stride):
    """The k×k neighbourhoods of every output pixel of a stride-``stride`` convolution, as
    (n, H_out, W_out, k·k·C) (zero padding of k//2 on each side: output pixel (i, j) is
    centred on input pixel (stride·i, stride·j), the convention of PyTorch's padding=k//2).

    A convolution is then one matrix product with the (k·k·C, C_out) kernel: in float64 on
    a CPU this is several times faster than ``lax.conv_general_dilated``, for every
    derivative effdyn takes (HVP 5×, gradient 8× on the digits CNN)."""
    n, H, W, C = x.shape
    pad = k // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    Ho, Wo = -(-H // stride), -(-W // stride)
    cols = [xp[:, i: i + stride * (Ho - 1) + 1: stride, j: j + stride * (Wo - 1) + 1: stride, :]
            for i in range(k) for j in range(k)]
    return jnp.concatenate(cols, axis=-1)


def cnn_problem(images, Y, channels=(8, 8), strides=(1, 2), *, kernel: int = 3, activation: str = "tanh",
                init_scale: float = 1.0, seed: int = 0, name: str = "cnn", chunk_size: int | None = None):
    """A convolutional network with squared loss on vector targets, as a JAX-autodiff problem.

    Layers: for each entry of ``channels`` a ``kernel`` × ``kernel`` convolution (stride from
    ``strides``, zero padding kernel//2, with bias) followed by the activation; then a dense
    layer (with bias) from the flattened last feature map to the targets.
    ``E = (1/2n) Σ_k ‖f(x_k) − y_k‖²``. The parameters are the pytree
    ``{"conv": [{"b", "w"}, ...], "dense": {"b", "w"}}`` (kernels ``w`` of shape
    (kernel, kernel, C_in, C_out)), given to :func:`effdyn.problems.from_jax` with the data,
    so θ is its flat float64 vector (``problem.unravel(θ)`` gives the pytree back).

    Parameters
    ----------
    images : array (n, H, W, C)
        Inputs, channel last.
    Y : array (n, c)
        Targets (e.g. one-hot labels).
    channels, strides : lists of int, same length
        Output channels and stride of each convolution layer.
    kernel : int
        Odd kernel size.
    activation : {"tanh", "swish"}
        Applied after every convolution (swish: x·sigmoid(x)).
    init_scale : float
        Every weight is init_scale·N(0, 1/fan-in) (fan-in = kernel²·C_in for a convolution,
        the flattened size for the dense layer); biases start at 0. Drawn from ``seed``.
    chunk_size : int, optional
        Samples per chunk of the data (memory bound; see ``from_jax``).

    Returns
    -------
    problem : effdyn.problems.JaxProblem
    theta0 : ndarray
    """
    from .._checks import choice, nonneg_int, positive_float, positive_int
    from .._jax import import_jax
    from .jax_problem import from_jax

    images = np.asarray(images, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape (n, height, width, channels); got {images.shape}.")
    if Y.ndim != 2 or Y.shape[0] != images.shape[0]:
        raise ValueError(f"`Y` must have shape (n, outputs) with n = {images.shape[0]} rows; got {Y.shape}.")
    channels = _int_tuple(channels, "channels")
    strides = _int_tuple(strides, "strides")
    if len(strides) != len(channels):
        raise ValueError(f"`strides` must have one entry per convolution layer ({len(channels)}, as `channels`); "
                         f"got {list(strides)}.")
    kernel = positive_int(kernel, "kernel")
    if kernel % 2 == 0:
        raise ValueError(f"`kernel` must be odd (the padding centres each window on a pixel); got {kernel}.")
    activation = choice(activation, "activation", ACTIVATIONS)
    init_scale = positive_float(init_scale, "init_scale")
    seed = nonneg_int(seed, "seed")

    jax, jnp = import_jax()
    act = jnp.tanh if activation == "tanh" else jax.nn.silu

    rng = np.random.default_rng(seed)
    n, H, W, C = images.shape
    conv = []
    for c_out, s in zip(channels, strides):
        fan_in = kernel * kernel * C
        conv.append({"b": np.zeros(c_out),
                     "w": init_scale * rng.standard_normal((kernel, kernel, C, c_out)) / np.sqrt(fan_in)})
        H, W, C = -(-H // s), -(-W // s), c_out
    features = H * W * C
    dense = {"b": np.zeros(Y.shape[1]),
             "w": init_scale * rng.standard_normal((features, Y.shape[1])) / np.sqrt(features)}
    params = {"conv": conv, "dense": dense}

    def forward(p, x):
        h = x
        for layer, s in zip(p["conv"], strides):
            w = layer["w"]
            h = act(_patches(jnp, h, kernel, s) @ w.reshape(-1, w.shape[-1]) + layer["b"])
        return h.reshape(h.shape[0], -1) @ p["dense"]["w"] + p["dense"]["b"]

    def loss(p, batch):
        x, y = batch
        return 0.5 * jnp.mean(jnp.sum((forward(p, x) - y) ** 2, axis=1))

    problem = from_jax(loss, params=params, data=(images, Y), chunk_size=chunk_size, name=name, loss_min=0.0)
    return problem, problem.init()


def digits_cnn(n: int = 500, channels=(8, 16), strides=(2, 2), activation: str = "tanh", init_scale: float = 1.0,
               data_seed: int = 0, name: str = "DigitsCNN", chunk_size: int | None = None):
    """A small CNN (:func:`cnn_problem`) on ``n`` scikit-learn digits as 8 × 8 × 1 images
    (grey levels standardised over the subset, one mean and one scale for all pixels) with
    one-hot targets; returns ``(problem, theta0)`` with weights drawn from ``data_seed``.

    The defaults: conv 3×3 1 → 8 (stride 2, 4×4 map) → conv 3×3 8 → 16 (stride 2, 2×2 map)
    → dense 64 → 10, P = 1898. (Stride 1 in the first layer quadruples the cost of every
    derivative: on a CPU in float64 the activations, not the products, dominate.)
    """
    from ..data import load_digits_subset, one_hot, standardize_channels

    X, labels = load_digits_subset(n, seed=data_seed, standardized=False)
    images = standardize_channels(X.reshape(-1, 8, 8, 1))
    return cnn_problem(images, one_hot(labels), channels, strides, activation=activation, init_scale=init_scale,
                       seed=data_seed, name=name, chunk_size=chunk_size)


def cifar10_cnn(path, n: int = 500, channels=(16, 16), strides=(2, 2), activation: str = "tanh",
                init_scale: float = 1.0, data_seed: int = 0, classes=None, selection: str = "random",
                name: str = "Cifar10CNN", chunk_size: int | None = None):
    """A CNN (:func:`cnn_problem`) on ``n`` CIFAR-10 training images (32 × 32 × 3, each
    colour channel standardised over the subset) read from the local
    ``cifar-10-batches-py`` folder ``path``; returns ``(problem, theta0)``.

    ``classes`` keeps those labels only, with one output per class kept; ``selection`` is
    "random" (drawn with ``data_seed``) or "first" (file order). The defaults: conv 3×3
    3 → 16 (stride 2, 16×16) → conv 3×3 16 → 16 (stride 2, 8×8) → dense 1024 → 10,
    P = 13 018.
    """
    from ..data import cifar10_images, class_indices, load_cifar10_subset, one_hot, standardize_channels

    X, labels = load_cifar10_subset(path, n=n, seed=data_seed, standardized=False, classes=classes,
                                    selection=selection)
    images = standardize_channels(cifar10_images(X))
    Y = one_hot(labels) if classes is None else one_hot(class_indices(labels, classes), len(classes))
    return cnn_problem(images, Y, channels, strides, activation=activation, init_scale=init_scale, seed=data_seed,
                       name=name, chunk_size=chunk_size)


# --- the peer MLP ----------------------------------------------------------------------------

def peer_mlp(path=None, hidden=(16, 16), name: str = "PeerMLP"):
    """The example problem of the public JAX central-flow code, from the arrays in the local
    folder ``path`` (or ``$EFFDYN_PEER_MLP``; :func:`effdyn.data.load_peer_mlp`): an MLP
    d → 16 → 16 → 1 with swish activations and the mean squared error
    ``E = mean((f(θ, x) − y)²)`` (no ½) on its synthetic data; returns ``(problem, p0)``.

    θ holds, layer by layer, the bias (out,) then the kernel (in, out) row-major, and a layer
    computes ``h @ W + b``: the peer's flat layout, so ``p0.npy`` is θ0 unchanged.
    """
    from .._jax import import_jax
    from ..data import load_peer_mlp
    from .jax_problem import from_jax

    x, y, p0 = load_peer_mlp(path)
    hidden = _int_tuple(hidden, "hidden")
    sizes = (x.shape[1], *hidden, 1)
    layers = tuple(zip(sizes[:-1], sizes[1:]))
    P = sum(o + i * o for i, o in layers)
    if p0.size != P:
        raise ValueError(f"peer-MLP data: p0.npy has {p0.size} weights but the MLP {' → '.join(map(str, sizes))} "
                         f"has {P}.")
    jax, jnp = import_jax()

    def loss(theta, batch):
        xb, yb = batch
        h, i = xb, 0
        for j, (n_in, n_out) in enumerate(layers):
            b = theta[i: i + n_out]
            i += n_out
            W = theta[i: i + n_in * n_out].reshape(n_in, n_out)
            i += n_in * n_out
            h = h @ W + b
            if j < len(layers) - 1:
                h = jax.nn.swish(h)
        return jnp.mean((h[:, 0] - yb) ** 2)

    problem = from_jax(loss, dim=P, data=(x, y), name=name, loss_min=0.0)
    return problem, p0
