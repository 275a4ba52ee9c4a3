"""Finite-width two-layer networks with squared loss (theory §4 and §5).

The parameter vector is *particle-major*: ``theta.reshape(N, d + 1)`` has one row per hidden
neuron, ``(w_i, a_i)`` with ``w_i ∈ R^d`` the input weights and ``a_i`` the output weight.
A neuron is a "particle" of the mean-field description: the network is the empirical
measure of its N particles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import as_matrix, as_vector, positive_int, real_array, seed_rng
from ..kernels import two_layer as _k
from .base import CompiledProblem, NumbaKernels


@dataclass(frozen=True)
class Activation:
    """An activation known to the compiled kernels.

    ``order`` is the highest derivative the kernels evaluate exactly; TwoLayerNet needs 3
    (loss, gradient, Hessian and the third-derivative contraction).
    """

    name: str
    code: int | None
    order: int
    jax_name: str
    description: str

    def __call__(self, z) -> np.ndarray:
        """σ(z) element-wise, with NumPy, for the network's outputs at any inputs
        (:meth:`TwoLayerNet.predict`); the compiled kernels evaluate σ themselves, and only
        on the training inputs held in their ``params``."""
        z = np.asarray(z, dtype=np.float64)
        if self.name == "tanh":
            return np.tanh(z)
        if self.name == "softplus":
            return np.logaddexp(0.0, z)
        if self.name == "gelu":
            from scipy.special import erf

            return z * (0.5 * (1 + erf(z / np.sqrt(2))))
        if self.name == "relu":
            return np.maximum(z, 0.0)
        if self.name == "identity":
            return z
        raise ValueError(f"no NumPy form for the activation {self.name!r}.")


#: Registry of activations (name -> Activation). ``relu`` is listed to say why it is refused.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _k.IDENTITY, 3, "identity", "σ(z) = z (linear network)"),
        Activation("tanh", _k.TANH, 3, "tanh", "σ(z) = tanh z"),
        Activation("softplus", _k.SOFTPLUS, 3, "softplus", "σ(z) = log(1 + e^z)"),
        Activation("gelu", _k.GELU, 3, "gelu", "σ(z) = z Φ(z), exact (erf-based) GELU"),
        Activation("relu", None, 1, "relu", "σ(z) = max(z, 0); σ'' is a Dirac mass, so the "
                   "Hessian and third derivative are not available"),
    )
}

#: Derivative order a TwoLayerNet activation must provide.
REQUIRED_ORDER = 3

SCALINGS = {"mean-field": "f = (1/N) Σ a_i σ(w_i·x)", "standard": "f = (1/√N) Σ a_i σ(w_i·x)"}


def get_activation(name) -> Activation:
    """The registered activation ``name``; refuses unknown names and too-rough activations."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        usable = [k for k, a in ACTIVATIONS.items() if a.order >= REQUIRED_ORDER]
        raise ValueError(f"`activation` must be one of {usable}; got {name!r}.")
    act = ACTIVATIONS[name]
    if act.order < REQUIRED_ORDER or act.code is None:
        usable = [k for k, a in ACTIVATIONS.items() if a.order >= REQUIRED_ORDER]
        raise ValueError(
            f"`activation` {name!r} has derivatives only up to order {act.order} ({act.description}); "
            f"TwoLayerNet needs order {REQUIRED_ORDER} for its Hessian and third-derivative "
            f"contraction. Use a smooth activation: one of {usable}."
        )
    return act


def _check_data(X, y):
    # real_array refuses complex numbers, text and booleans: NumPy would drop imaginary
    # parts (with a warning only) and parse strings such as "1.5" into numbers
    Xa = real_array(X, "X", "a real array of shape (n, d)")
    if Xa.ndim != 2 or Xa.shape[0] < 1 or Xa.shape[1] < 1:
        raise ValueError(f"`X` must be a 2-D array of shape (n, d) with n, d >= 1; got shape {Xa.shape}.")
    ya = real_array(y, "y", "a real vector of shape (n,)")
    if ya.ndim == 2 and ya.shape[1] == 1:
        ya = ya[:, 0]
    if ya.ndim != 1 or ya.shape[0] != Xa.shape[0]:
        raise ValueError(
            f"`y` must have shape (n,) = ({Xa.shape[0]},) to match `X` of shape {Xa.shape}; got shape {ya.shape}."
        )
    if not np.all(np.isfinite(Xa)):
        raise ValueError("`X` contains non-finite entries (nan or inf); clean the data first.")
    if not np.all(np.isfinite(ya)):
        raise ValueError("`y` contains non-finite entries (nan or inf); clean the data first.")
    return Xa, ya


class TwoLayerNet(CompiledProblem):
    """Squared loss of a width-N two-layer network on a fixed data set.

    ``L(θ) = (1/2n) Σ_k (f(x_k) − y_k)²`` with ``f(x) = c Σ_i a_i σ(w_i·x)``,
    ``c = 1/N`` (``scaling="mean-field"``) or ``1/√N`` (``scaling="standard"``).

    Parameters
    ----------
    X : array_like, shape (n, d)
        Inputs.
    y : array_like, shape (n,)
        Targets.
    width : int
        Number of hidden neurons N >= 1.
    activation : str
        One of the smooth activations in :data:`ACTIVATIONS` ("identity", "tanh",
        "softplus", "gelu").
    scaling : {"mean-field", "standard"}
        Output scaling c.

    Notes
    -----
    θ is particle-major: ``theta.reshape(N, d + 1)[i] = (w_i, a_i)``, P = N(d + 1).
    Mean-field relations (theory §4): GD on L with step η = N·η_MF is mean-field GD with
    step η_MF, the mean-field sharpness is S_MF = N·λ_max(∇²L) (``width`` times
    :func:`effdyn.spectrum.sharpness`), and EoS is at
    η_MF·S_MF ≈ 2. Every derivative costs O(N·n·d) (see :mod:`effdyn.kernels.two_layer`).

    Examples
    --------
    >>> X, y = teacher_student_data(seed=0)
    >>> p = TwoLayerNet(X, y, width=200)
    >>> theta0 = p.init(seed=1)
    >>> theta0.reshape(200, 6).shape
    (200, 6)
    """

    name = "two_layer_net"
    loss_min = 0.0

    def __init__(self, X, y, width: int, activation: str = "tanh", scaling: str = "mean-field"):
        X, y = _check_data(X, y)
        self.width = positive_int(width, "width")
        self.act = get_activation(activation)
        if not isinstance(scaling, str) or scaling not in SCALINGS:
            raise ValueError(f"`scaling` must be one of {list(SCALINGS)}; got {scaling!r}.")
        self.activation = activation
        self.scaling = scaling
        self.X, self.y = X, y
        self.n_samples, self.input_dim = X.shape
        self.c = 1.0 / self.width if scaling == "mean-field" else 1.0 / math.sqrt(self.width)
        self._params = (np.ascontiguousarray(X), np.ascontiguousarray(X.T), y,
                        np.array([self.c, float(self.act.code)]))
        self._linearisation = None  # (θ, activations) of the last HVP point
        self._kernels = NumbaKernels(_k._loss, _k._grad, _k._hvp, _k._hessian, _k._third, self._params)

    # --- shape helpers ----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.width * (self.input_dim + 1)

    @property
    def particle_dim(self) -> int:
        """p = d + 1 parameters per neuron."""
        return self.input_dim + 1

    def particles(self, theta) -> np.ndarray:
        """θ as an (N, d + 1) array of particles (w_i, a_i) (a view when θ is contiguous)."""
        theta = np.asarray(theta, dtype=np.float64)
        return theta.reshape(self.width, self.particle_dim)

    @property
    def numba_kernels(self) -> NumbaKernels:
        """The compiled kernels and their ``params``."""
        return self._kernels

    def run_kernel(self, kernel, *args):
        """``kernel(*args, params)`` for a kernel of :mod:`effdyn.kernels.two_layer` or
        :mod:`effdyn.kernels.kinetic`."""
        return kernel(*args, self._params)

    def _hvp(self, theta, v):
        # Lanczos and the eigen-trackers call H(θ)v many times at one θ: below
        # CACHE_MAX_PAIRS the activations at θ are computed once and reused.
        if self.width * self.n_samples > _k.CACHE_MAX_PAIRS:
            return self.run_kernel(_k._hvp, theta, v)
        cache = self._linearisation
        if cache is None or not np.array_equal(cache[0], theta):
            cache = (np.array(theta, dtype=np.float64), *_k._linearise(theta, self._params))
            self._linearisation = cache
        return _k._hvp_linearised(np.ascontiguousarray(v, dtype=np.float64), *cache[1:], self._params)

    def _grad_third(self, theta, U, s, a, b):
        # The free-energy θ-drift (a = 1, b = ½) in one compiled call: one forward and one
        # backward pass give ∇L and the weighted contractions together, where the default
        # `_grad` + `_third` makes two of each and evaluates every activation four times
        # (measured 1.6–1.9× faster over P = 12 … 10⁵ on the teacher–student network,
        # "separate / numba" in benchmarks/bench_drift.py). The kernel takes the weights
        # b·s_q per direction, so any s is handled, not only s ∝ 1: no fallback needed.
        return _k._grad_third(theta, np.ascontiguousarray(U, dtype=np.float64),
                              np.ascontiguousarray(s, dtype=np.float64), float(a), float(b), self._params)

    @property
    def params(self) -> tuple:
        """The kernels' ``params`` tuple ``(X, Xᵀ, y, [c, activation code])``."""
        return self._params

    # --- network-specific quantities --------------------------------------------------
    def predict(self, theta, X=None) -> np.ndarray:
        """Network outputs f(x) at the rows of ``X`` (default: the training inputs)."""
        theta = as_vector(theta, "theta", self.dim)
        if X is None:
            X = self.X
        else:
            X = as_matrix(X, "X", (None, self.input_dim))
        W = self.particles(theta)
        return self.c * self.act(X @ W[:, :-1].T) @ W[:, -1]

    def ntk_gram(self, theta) -> np.ndarray:
        """Mean-field NTK Gram matrix K (n, n) of theory §4.

        ``K_kl = (1/n) ∫ [σ(w·x_k)σ(w·x_l) + a² σ'(w·x_k)σ'(w·x_l) x_k·x_l] dμ_N``.
        With J the Jacobian of the outputs, the Gauss–Newton part of the Hessian is
        ``(1/n)JᵀJ``; its nonzero eigenvalues are those of ``(1/n)JJᵀ = (c²N)·K``, so
        ``λ_max(K) = λ_max((1/n)JᵀJ) / (c²N)``: for mean-field scaling N·λ_max(GN) = λ_max(K),
        i.e. S_MF equals λ_max(K) up to the residual part of the Hessian (exactly at zero
        residual).
        """
        theta = as_vector(theta, "theta", self.dim)
        return _k._ntk_gram(theta, self._params)

    # --- JAX and metadata -------------------------------------------------------------
    def jax_loss(self):
        from .._jax import import_jax

        jax, jnp = import_jax()
        X = jnp.asarray(self.X)
        y = jnp.asarray(self.y)
        c = float(self.c)
        N, p = self.width, self.particle_dim
        name = self.act.jax_name

        def sigma(z):
            if name == "tanh":
                return jnp.tanh(z)
            if name == "softplus":
                return jax.nn.softplus(z)
            if name == "gelu":
                return jax.nn.gelu(z, approximate=False)
            return z

        def loss(theta):
            T = theta.reshape(N, p)
            f = c * sigma(X @ T[:, :-1].T) @ T[:, -1]
            return 0.5 * jnp.mean((f - y) ** 2)

        return loss

    def config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "width": self.width, "n_samples": self.n_samples,
                "input_dim": self.input_dim, "activation": self.activation, "scaling": self.scaling}

    def config_arrays(self) -> dict:
        """The data set (X, y): with :meth:`config`, what rebuilds the problem."""
        return {"X": self.X, "y": self.y}

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "TwoLayerNet":
        arrays = arrays or {}
        if "X" not in arrays or "y" not in arrays:
            raise ValueError("a TwoLayerNet is rebuilt from its data set, which the file does not hold (`X`, `y`); "
                             "pass the problem itself as `problem=`.")
        return cls(arrays["X"], arrays["y"], config["width"], activation=config["activation"],
                   scaling=config["scaling"])

    def init(self, seed: int | None = None) -> np.ndarray:
        """Mean-field initialisation (theory §5): w_i ~ N(0, I_d), a_i ~ N(0, 1), i.i.d."""
        rng = seed_rng(seed)
        return rng.standard_normal((self.width, self.particle_dim)).ravel()


def teacher_student_data(n: int = 100, d: int = 5, *, seed: int = 0, coeffs=(1.5, -1.0, 1.2)):
    """Teacher–student data of the mean-field benchmark (theory §5).

    ``X = randn(n, d)·2/√d`` and ``y = Σ_j c_j tanh(U_j·x)`` with teacher weights
    ``U ~ N(0, I_d)`` of shape (len(coeffs), d). One generator seeded with ``seed`` draws X
    first, then U.

    Returns
    -------
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,)
    """
    n = positive_int(n, "n")
    d = positive_int(d, "d")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an integer; got {seed!r}.")
    if seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0; got {seed}.")
    coeffs = as_vector(coeffs, "coeffs")
    if coeffs.size == 0:
        raise ValueError("`coeffs` must contain at least one teacher coefficient.")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 2.0 / math.sqrt(d)
    U = rng.standard_normal((coeffs.size, d))
    y = np.tanh(X @ U.T) @ coeffs
    return X, y


def teacher_student(width: int, *, n: int = 100, d: int = 5, seed: int = 0, activation: str = "tanh",
                    scaling: str = "mean-field") -> TwoLayerNet:
    """The mean-field teacher–student benchmark problem (theory §5) at width N."""
    X, y = teacher_student_data(n, d, seed=seed)
    return TwoLayerNet(X, y, width, activation=activation, scaling=scaling)
