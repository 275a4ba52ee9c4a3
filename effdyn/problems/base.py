"""The problem protocol: a loss on a flat float64 vector with exact derivatives.

Every model and the GD reference talk to a problem only through this interface:

* ``loss(θ)``, ``grad(θ)``, ``hvp(θ, v)``, ``hessian(θ)`` (small P only);
* ``third(θ, U, s)`` = ∇_θ Σ_r s_r u_rᵀ H(θ) u_r, the third-derivative contraction that
  the free-energy and central flows need (theory §1);
* ``_grad_third(θ, U, s, a, b)`` = a·∇E + b·third(θ, U, s), what the free-energy θ-drift
  evaluates; by default the two calls, overridden where one fused kernel is faster;
* ``dim``, ``init(seed)`` where a natural initialisation exists, ``loss_min`` where the
  infimum of E is known (GD on √(E − E_min) needs it);
* ``identity()``: the problem's class, ``config()`` and a fingerprint of the loss (see
  :meth:`Problem.identity`), which ``compare``, ``resume``, ``resume_gd`` and
  ``effdyn.save`` check; ``from_config(config, arrays)`` where the problem can be rebuilt
  from what a results file stores (``config()`` plus ``config_arrays()``).

Public methods validate their arguments; the underscored ``_loss``/``_grad``/... skip
validation and are what the hot loops call.

Built-in problems are :class:`CompiledProblem` subclasses: they carry numba kernels with
the fixed signature convention below and a JAX version of the loss (``jax_loss``) used
both by the diffrax backend and by the tests as an independent implementation::

    loss(θ, params) -> float          grad(θ, params) -> (P,)
    hvp(θ, v, params) -> (P,)         hessian(θ, params) -> (P, P)
    third(θ, U, s, params) -> (P,)    U: (P, r) C-contiguous, s: (r,)

``params`` is a tuple of float64 arrays, so one compiled kernel serves every parameter
value (no recompilation across sweeps).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Callable, NamedTuple

import numpy as np

from .._checks import as_matrix, as_vector

#: Above this dimension ``hessian`` refuses to build a dense matrix.
MAX_DENSE_DIM = 4096

#: Seed of the probe points of :meth:`Problem.fingerprint` (fixed: part of the definition).
FINGERPRINT_SEED = 20240611
#: Entry scales of the two probe points (θ = scale · z, z ~ N(0, I) from the fixed seed).
FINGERPRINT_SCALES = (0.5, 1.0)
#: Significant digits kept of each probed value before hashing.
FINGERPRINT_DIGITS = 12


class NumbaKernels(NamedTuple):
    """The compiled derivative kernels of a built-in problem and their parameters."""

    loss: Callable
    grad: Callable
    hvp: Callable
    hessian: Callable
    third: Callable
    params: tuple


class Problem(ABC):
    """A twice (thrice) differentiable loss E(θ), θ ∈ R^P, float64 throughout."""

    #: Short identifier used in reports and saved files.
    name: str = "problem"
    #: Known infimum of E (None when unknown); used by ``gd(..., variant="sqrt")``.
    loss_min: float | None = None

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of parameters P."""

    # --- unvalidated hot-path methods (subclasses implement) -------------------------
    @abstractmethod
    def _loss(self, theta: np.ndarray) -> float: ...

    @abstractmethod
    def _grad(self, theta: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    def _hessian(self, theta: np.ndarray) -> np.ndarray:
        P = self.dim
        eye = np.eye(P)
        H = np.empty((P, P))
        for j in range(P):
            H[:, j] = self._hvp(theta, eye[:, j])
        return 0.5 * (H + H.T)

    def _third(self, theta: np.ndarray, U: np.ndarray, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} does not provide `third` (the third-derivative "
            "contraction ∇_θ Σ_r s_r u_rᵀ H u_r). Implement `_third`, or wrap the loss "
            "with `effdyn.problems.from_jax` to get it by autodiff."
        )

    def _grad_third(self, theta: np.ndarray, U: np.ndarray, s: np.ndarray, a: float, b: float) -> np.ndarray:
        """a·∇E(θ) + b·∇_θ Σ_r s_r u_rᵀ H(θ) u_r (U: (P, r) C-contiguous, s: (r,)).

        The free-energy θ-drift is −η times this with a = 1, b = ½. This default makes
        the two calls (each skipped when its coefficient is 0, the contraction also when U
        has no columns); problems with a kernel that shares the work override it.
        """
        g = a * self._grad(theta) if a != 0 else np.zeros(self.dim)
        if b != 0 and U.shape[1]:
            g = g + b * self._third(theta, U, s)
        return g

    @property
    def has_third(self) -> bool:
        """Whether ``third`` is available (models that need it check this first)."""
        return type(self)._third is not Problem._third

    # --- compiled and JAX hooks -------------------------------------------------------
    @property
    def numba_kernels(self) -> NumbaKernels | None:
        """Compiled kernels for the compiled GD loop, or None (then GD loops in Python)."""
        return None

    def jax_loss(self):
        """Return a JAX function θ ↦ E(θ) (float64), or raise if the problem has none."""
        raise NotImplementedError(
            f"{type(self).__name__} has no JAX loss; the diffrax backend needs one. "
            "Use a scipy solver (`solver=\"scipy:LSODA\"`) or the step-exact map (`solver=\"map\"`)."
        )

    def config(self) -> dict:
        """Parameters that reproduce this problem (saved as metadata)."""
        return {"name": self.name, "dim": self.dim}

    # --- identity and rebuilding -------------------------------------------------------
    def config_arrays(self) -> dict:
        """Arrays that, with :meth:`config`, rebuild the problem but are too large for the
        JSON configuration (a data set); saved as variables of results files. Default: none."""
        return {}

    @classmethod
    def from_config(cls, config: dict, arrays: dict | None = None) -> "Problem":
        """Rebuild a problem from its :meth:`config` (and :meth:`config_arrays`), as
        :func:`effdyn.load` does. Built-in problems implement it; others cannot be rebuilt
        from a file, and ``load`` asks for the problem itself (``problem=``)."""
        raise TypeError(
            f"{cls.__name__} cannot be rebuilt from its saved configuration (it implements no `from_config`); "
            "pass the problem itself, e.g. `effdyn.load(path, problem=my_problem)`."
        )

    def fingerprint(self) -> str:
        """A short hash of the loss itself: E and ∇E at two fixed probe points.

        The probe points are θ = s·z for the scales s in :data:`FINGERPRINT_SCALES`, z drawn
        from ``numpy.random.default_rng(FINGERPRINT_SEED)`` (the same for every problem of a
        dimension). Hashed are, per point, E(θ) and ‖∇E(θ)‖ to
        :data:`FINGERPRINT_DIGITS` significant digits and the direction of ∇E through its
        cosines with two fixed random unit vectors, to 1e-12 — all of them insensitive to
        rounding differences of the last bits between kernels (numba, NumPy, JAX), so the
        same loss gives the same fingerprint, and a different loss (another data set,
        another JAX function of the same name and dimension) a different one. Cost: two
        losses and two gradients, computed once per instance. A probe at which the loss
        raises is hashed as the exception's type.
        """
        inner = self.__dict__.get("inner")
        if isinstance(inner, Problem):
            return inner.fingerprint()
        cached = self.__dict__.get("_effdyn_fingerprint")
        if cached is None:
            cached = self.__dict__["_effdyn_fingerprint"] = _fingerprint(self)
        return cached

    def identity(self) -> str:
        """Canonical JSON of ``{"class", "config", "fingerprint"}``: the problem's class name,
        its parameters (:meth:`config`) and :meth:`fingerprint`.

        Two problems with equal identities are the same loss for every purpose effdyn
        checks: ``compare`` refuses a GD trajectory and a solution of different problems,
        ``resume``/``resume_gd`` a checkpoint of another problem and ``effdyn.save`` to
        combine results of different problems (each has ``check=False`` for deliberate
        cross-comparisons). A problem that wraps another (``inner``, as the counting view of
        a run state does) has the identity of the one it wraps.
        """
        inner = self.__dict__.get("inner")
        if isinstance(inner, Problem):
            return inner.identity()
        from .._json import json_default as _json_default

        config = json.loads(json.dumps(self.config(), default=_json_default), parse_float=_plus_zero)
        return json.dumps({"class": type(self).__name__, "config": config, "fingerprint": self.fingerprint()},
                          sort_keys=True)

    # --- validated public API ---------------------------------------------------------
    def loss(self, theta) -> float:
        """E(θ)."""
        return float(self._loss(as_vector(theta, "theta", self.dim)))

    def grad(self, theta) -> np.ndarray:
        """∇E(θ), shape (P,)."""
        return self._grad(as_vector(theta, "theta", self.dim))

    def hvp(self, theta, v) -> np.ndarray:
        """Hessian-vector product H(θ) v, shape (P,)."""
        return self._hvp(as_vector(theta, "theta", self.dim), as_vector(v, "v", self.dim))

    def hessian(self, theta) -> np.ndarray:
        """Dense Hessian H(θ), shape (P, P); only for P <= MAX_DENSE_DIM."""
        if self.dim > MAX_DENSE_DIM:
            raise ValueError(
                f"`hessian` builds a dense {self.dim}x{self.dim} matrix; refused above "
                f"P = {MAX_DENSE_DIM}. Use `hvp` or `effdyn.spectrum.top_eigenpairs` instead."
            )
        return self._hessian(as_vector(theta, "theta", self.dim))

    def third(self, theta, U, s=None) -> np.ndarray:
        """∇_θ Σ_r s_r u_rᵀ H(θ) u_r for the columns u_r of ``U`` (shape (P, r) or (P,))."""
        theta = as_vector(theta, "theta", self.dim)
        U = np.asarray(U, dtype=np.float64)
        if U.ndim == 1:
            U = U[:, None]
        U = np.ascontiguousarray(as_matrix(U, "U", (self.dim, None)))
        if s is None:
            s = np.ones(U.shape[1])
        s = as_vector(s, "s", U.shape[1])
        return self._third(theta, U, s)

    def init(self, seed: int | None = None) -> np.ndarray:
        """A standard initial point for this problem (reproducible from ``seed``)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no standard initialisation; pass `theta0` explicitly."
        )

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k not in ("name",) and np.isscalar(v))
        return f"{type(self).__name__}({cfg})"


def _plus_zero(text: str) -> float:
    # −0.0 and 0.0 are one parameter value (the same loss): one identity
    return float(text) + 0.0


def _round(x: float, digits: int = FINGERPRINT_DIGITS) -> str:
    return format(float(x), f".{digits - 1}e") if np.isfinite(x) else repr(float(x))


def _fingerprint(problem: Problem) -> str:
    P = problem.dim
    rng = np.random.default_rng(FINGERPRINT_SEED)
    parts = [f"P={P}"]
    for scale in FINGERPRINT_SCALES:
        theta = scale * rng.standard_normal(P)
        W = rng.standard_normal((P, 2))
        W /= np.linalg.norm(W, axis=0)
        with np.errstate(all="ignore"):
            try:
                E = float(problem._loss(theta))
                g = np.asarray(problem._grad(theta), dtype=np.float64).reshape(-1)
            except Exception as exc:  # user code: a probe outside its domain is part of the identity
                parts.append(f"raised {type(exc).__name__}")
                continue
            norm = float(np.linalg.norm(g)) if g.shape == (P,) else float("nan")
            cos = (W.T @ g) / norm if np.isfinite(norm) and norm > 0 else np.zeros(2)
        parts.append(f"E={_round(E)} |g|={_round(norm)} cos=" + ",".join(
            f"{round(float(c), 12) + 0.0:.12f}" if np.isfinite(c) else repr(float(c)) for c in cos))
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


def identity_difference(a: str, b: str) -> str:
    """How two :meth:`Problem.identity` strings differ, in words ("" when they are equal)."""
    try:
        x, y = json.loads(a), json.loads(b)
    except (TypeError, ValueError):
        return "" if a == b else "their identities differ"
    if x == y:
        return ""
    if x.get("class") != y.get("class"):
        return f"class {x.get('class')} vs {y.get('class')}"
    cx, cy = x.get("config") or {}, y.get("config") or {}
    keys = sorted(k for k in set(cx) | set(cy) if cx.get(k) != cy.get(k))
    if keys:
        shown = ", ".join(f"{k}: {_short(cx.get(k))} vs {_short(cy.get(k))}" for k in keys[:4])
        return f"parameters differ ({shown}{', ...' if len(keys) > 4 else ''})"
    return (f"same class and parameters but another loss (fingerprint {x.get('fingerprint')} vs "
            f"{y.get('fingerprint')}: E or ∇E differ at the probe points)")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class CompiledProblem(Problem):
    """A problem whose derivatives are closed-form numba kernels (see module docstring)."""

    @property
    @abstractmethod
    def numba_kernels(self) -> NumbaKernels: ...

    def _loss(self, theta):
        k = self.numba_kernels
        return k.loss(theta, k.params)

    def _grad(self, theta):
        k = self.numba_kernels
        return k.grad(theta, k.params)

    def _hvp(self, theta, v):
        k = self.numba_kernels
        return k.hvp(theta, v, k.params)

    def _hessian(self, theta):
        k = self.numba_kernels
        return k.hessian(theta, k.params)

    def _third(self, theta, U, s):
        k = self.numba_kernels
        return k.third(theta, np.ascontiguousarray(U), s, k.params)
