"""Handing GD's state over to an effective model.

A model started at θ0 has to find the Edge of Stability by itself, and when its oscillation
takes off is set by a seed (round-off for GD, a floor or GD's first half-step for the
models; docs/theory.md §5). That onset timing dominates the errors of the first cycles. A
*handover* starts the model instead from GD's own state at a step k0 inside the run, so
that what is compared afterwards is the model's dynamics, not its onset.

:meth:`effdyn.GDTrajectory.state_at` builds a :class:`HandoverState`;
``effdyn.solve(model, start=state, steps=n)`` runs any model from it, with the solution's
time axis continuing GD's (``sol.k`` runs from k0 to k0 + n), so ``effdyn.compare(traj,
sol)`` compares the right steps. Each model maps the state to its own initial state in
``_from_handover`` (the model's docstring of that method says how).

Conventions (theory §1):

* ``theta_bar`` θ̄ = ¼(θ_{k0−1} + 2θ_{k0} + θ_{k0+1}), GD's two-step midpoint;
* ``delta`` δ = (θ_{k0+1} − θ_{k0})/2, GD's half-step displacement at k0. For a period-two
  orbit θ_k = c + (−1)^k a this is δ = −(−1)^{k0} a, so θ_{k0} = θ̄ − δ and
  θ_{k0+1} = θ̄ + δ: **the iterate at k0 sits at θ̄ − δ**. (The rod flow writes its
  half-step with the other sign, θ_k = w̄ + δ; the mean-field kinetic model writes
  θ_k = θ̄ + (−1)^k u. Both map accordingly; no observable depends on the sign.)
* ``eigvals``, ``eigvecs``: the top ``n`` eigenpairs of H(θ̄), computed from the problem
  when the state is built (GD records only the top eigenvector, and at θ_k, not at θ̄);
* ``factor(r)``: Σ's factor from GD's oscillation projected on that subspace, one column
  per mode, V_i = v_i (v_iᵀδ), so VVᵀ is the diagonal (in the eigenbasis) part of the
  projected δδᵀ and ‖V‖_F = ‖Pδ‖, GD's half-step amplitude in the top-n subspace. It is
  the same construction as the free-energy flow's ``sigma_seed="gd"`` at θ0.
* ``problem_identity`` and ``eta``: a model on another problem or with another η is
  refused (:meth:`HandoverState.check`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ._checks import as_vector, positive_int

__all__ = ["HandoverState", "handover_state", "alternating_filter", "seed_label", "SEED_KINDS", "FILTER_ORDER"]

#: What seeds a model's oscillation, as reported in the suite's "seed" column.
SEED_KINDS = {
    "none": "the model has no oscillation state (gradient flow; the central flow, whose Σ solves an SDCP at "
            "every instant; the sharpness-reduction flow, whose amplitude is prescribed)",
    "gd half-step": "GD's first half-step displacement at θ0, (θ1 − θ0)/2 = −η∇E(θ0)/2 (projected on the "
                    "top eigenvectors where the model carries modes)",
    "round-off floor": "a floor of round-off size along the top eigenvectors (GD's coordinate-wise rounding "
                       "projected on them in the continuous free-energy flow, ε_mach·max(1, ‖θ‖) otherwise)",
    "floor": "a floor of a given size along the top eigenvectors",
    "projection": "θ0 minus its projection on the stable set (self-stabilisation)",
    "given": "initial data passed explicitly (sigma0, u0, delta0, x0, ...)",
    "gd filtered": "GD's oscillation read from its iterates with an alternating filter (mean-field kinetic)",
    "zero": "no seed (Σ = 0 is invariant: the model follows gradient flow past 2/η)",
    "handover": "GD's own state at a step k0 (HandoverState): θ̄, δ and Σ's factor",
}


@dataclass(frozen=True, eq=False)
class HandoverState:
    """GD's state at step ``k0``, in the form the effective models start from.

    Attributes
    ----------
    k0 : int
        The GD step handed over; a solve started from this state begins at k = k0.
    eta : float
        GD's step size.
    theta : ndarray, shape (P,)
        GD's iterate θ_{k0}.
    theta_bar : ndarray, shape (P,)
        GD's two-step midpoint θ̄_{k0} = ¼(θ_{k0−1} + 2θ_{k0} + θ_{k0+1}).
    delta : ndarray, shape (P,)
        GD's half-step displacement δ = (θ_{k0+1} − θ_{k0})/2 (θ_{k0} ≈ θ̄ − δ).
    eigvals : ndarray, shape (n,)
        Top n eigenvalues of H(θ̄), descending.
    eigvecs : ndarray, shape (P, n)
        Their orthonormal eigenvectors.
    problem_identity : str or None
        :meth:`effdyn.problems.Problem.identity` of GD's problem (None: not checked).
    variant : str
        GD's variant ("gd", "normalized", "sqrt").

    ``to_dict()``/``from_dict()`` give plain data (a solution started from a handover keeps
    it in ``sol.extra["handover"]``).
    """

    k0: int
    eta: float
    theta: np.ndarray
    theta_bar: np.ndarray
    delta: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    problem_identity: str | None = None
    variant: str = "gd"

    def __post_init__(self):
        k0 = self.k0
        if isinstance(k0, bool) or not isinstance(k0, numbers.Integral) or k0 < 1:
            raise ValueError(f"`k0` must be an integer GD step >= 1; got {k0!r}.")
        object.__setattr__(self, "k0", int(k0))
        from ._checks import positive_float

        object.__setattr__(self, "eta", positive_float(self.eta, "eta"))
        theta = as_vector(self.theta, "theta")
        P = theta.shape[0]
        for name in ("theta", "theta_bar", "delta"):
            arr = as_vector(getattr(self, name), name, P)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"`{name}` of a handover state must be finite; GD had diverged at step {k0}?")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        vals = np.array(self.eigvals, dtype=np.float64).reshape(-1)
        vecs = np.array(self.eigvecs, dtype=np.float64)
        if vecs.ndim != 2 or vecs.shape != (P, vals.shape[0]) or vals.shape[0] < 1:
            raise ValueError(f"`eigvecs` must have shape (P, n) = ({P}, {vals.shape[0]}) matching `eigvals` (n >= 1); "
                             f"got {vecs.shape}.")
        if not (np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs))):
            raise ValueError("`eigvals` and `eigvecs` must be finite.")
        vals.setflags(write=False)
        vecs.setflags(write=False)
        object.__setattr__(self, "eigvals", vals)
        object.__setattr__(self, "eigvecs", vecs)
        if self.problem_identity is not None and not isinstance(self.problem_identity, str):
            raise TypeError(f"`problem_identity` must be a string or None; got {type(self.problem_identity).__name__}.")

    # --- derived quantities ---------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of parameters P."""
        return self.theta.shape[0]

    @property
    def n(self) -> int:
        """Number of eigen-directions carried."""
        return self.eigvals.shape[0]

    @property
    def sharpness(self) -> float:
        """λ₁(H(θ̄))."""
        return float(self.eigvals[0])

    def coefficients(self) -> np.ndarray:
        """v_iᵀδ for the n eigenvectors (GD's half-step along each mode)."""
        return self.eigvecs.T @ self.delta

    def factor(self, r: int | None = None) -> np.ndarray:
        """Σ's factor (P, r) from GD's oscillation: columns V_i = v_i (v_iᵀδ), i < r.

        ``r`` defaults to n; asking for more modes than the state carries is refused (build
        the state with ``traj.state_at(k, n=r)``).
        """
        r = self.n if r is None else positive_int(r, "r")
        if r > self.n:
            raise ValueError(f"this handover state carries n = {self.n} eigen-directions but {r} are needed; build it "
                             f"with `traj.state_at({self.k0}, n={r})`.")
        return self.eigvecs[:, :r] * self.coefficients()[:r]

    @property
    def amplitude(self) -> float:
        """|v₁ᵀδ|: GD's half-step amplitude along the top eigenvector of H(θ̄)."""
        return float(abs(self.coefficients()[0]))

    @property
    def amplitude_subspace(self) -> float:
        """‖Pδ‖: GD's half-step amplitude in the top-n eigen-subspace of H(θ̄)."""
        return float(np.linalg.norm(self.coefficients()))

    # --- checks -------------------------------------------------------------------------------
    def check(self, model, name: str = "start") -> None:
        """Refuse a model whose η or problem differ from GD's (ValueError naming ``name``)."""
        if model.dim != self.dim:
            raise ValueError(f"`{name}` is a handover state of a problem with P = {self.dim} parameters, but the "
                             f"model's problem has P = {model.dim}.")
        if not np.isclose(float(model.eta), self.eta, rtol=1e-12, atol=0.0):
            raise ValueError(f"`{name}` comes from GD with eta = {self.eta:g}, but the model has eta = {model.eta:g}; "
                             "hand over to a model with GD's step size.")
        if self.problem_identity:
            from .problems.base import identity_difference

            diff = identity_difference(self.problem_identity, model.problem.identity())
            if diff:
                raise ValueError(f"`{name}` comes from GD on another problem than the model's: {diff}. Hand over to a "
                                 "model built on GD's problem.")

    # --- data ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"k0": self.k0, "eta": self.eta, "theta": np.array(self.theta), "theta_bar": np.array(self.theta_bar),
                "delta": np.array(self.delta), "eigvals": np.array(self.eigvals), "eigvecs": np.array(self.eigvecs),
                "problem_identity": self.problem_identity or "", "variant": self.variant}

    @classmethod
    def from_dict(cls, d: dict) -> "HandoverState":
        d = dict(d)
        d["problem_identity"] = d.get("problem_identity") or None
        return cls(**{k: d[k] for k in ("k0", "eta", "theta", "theta_bar", "delta", "eigvals", "eigvecs",
                                         "problem_identity", "variant") if k in d})

    def __repr__(self) -> str:
        return (f"HandoverState(k0={self.k0}, eta={self.eta:g}, P={self.dim}, n={self.n}, "
                f"sharpness={self.sharpness:.6g}, amplitude={self.amplitude:.3g})")


#: Default order of the alternating filter that reads δ from GD's iterates (see
#: :func:`alternating_filter`): 8 removes a smooth drift of θ up to degree 7.
FILTER_ORDER = 8


def filter_window(k: int, order: int) -> tuple[int, int]:
    """First and last GD step the order-``order`` estimate of δ at step ``k`` reads."""
    first = k - order // 2 if order > 1 else k
    return first, first + max(order, 1)


def alternating_filter(thetas, k: int, order: int) -> np.ndarray:
    """δ at step ``k`` from the iterates ``thetas`` = θ_{j0}, ..., θ_{j0+m} (m = ``order``,
    j0 = :func:`filter_window`): δ = −(−1)^{k−j0} 2^{−m} Σ_j (−1)^j C(m, j) θ_{j0+j}.

    It passes a period-two oscillation θ_j = c + (−1)^j a unchanged (δ = −(−1)^k a, the
    half-step's sign) and removes a polynomial drift of θ of degree < m; m = 1 is GD's
    half-step (θ_{k+1} − θ_k)/2 itself.
    """
    import math

    j0, _ = filter_window(k, order)
    w = np.array([(-1.0) ** j * math.comb(order, j) for j in range(order + 1)]) / 2.0**order
    return -((-1.0) ** (k - j0)) * np.tensordot(w, np.asarray(thetas, dtype=np.float64), axes=1)


def handover_state(traj, k, *, n: int | None = None, problem=None, filter_order: int = FILTER_ORDER) -> HandoverState:
    """GD's state at step ``k`` of ``traj`` (see :meth:`effdyn.GDTrajectory.state_at`)."""
    from .problems.base import Problem, identity_difference
    from .spectrum import top_eigenpairs

    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"`k` must be an integer GD step; got {k!r}.")
    k = int(k)
    order = positive_int(filter_order, "filter_order")
    first, last = filter_window(k, order)
    first, last = min(first, k - 1), max(last, k + 1)
    K = int(traj.k[-1]) if len(traj.k) else -1
    if first < 0 or last > K:
        lo, hi = k - first, last - k
        raise ValueError(f"`k` must lie in [{lo}, {K - hi}]: the midpoint and δ (filter_order={order}) at k need GD's "
                         f"iterates at k − {lo} .. k + {hi} (this run holds steps 0..{K}); got {k}.")
    theta_k = np.asarray(traj.theta_k)
    rows = {}
    for j in range(first, last + 1):
        hit = np.flatnonzero(theta_k == j)
        if hit.size == 0:
            every = int(theta_k[1] - theta_k[0]) if len(theta_k) > 1 else 0
            raise ValueError(f"the trajectory has no θ at step {j} (it recorded θ every {every} steps); a "
                             f"handover at step k needs θ at every step from k − {k - first} to k + {last - k}: run "
                             "effdyn.gd with `theta_every=1`.")
        rows[j] = np.asarray(traj.theta[hit[0]], dtype=np.float64)
    prev, theta, nxt = rows[k - 1], rows[k], rows[k + 1]
    j0, j1 = filter_window(k, order)
    delta = alternating_filter([rows[j] for j in range(j0, j1 + 1)], k, order)
    P = theta.shape[0]
    own = getattr(traj, "_problem", None)
    if problem is None:
        problem = own
        if problem is None:
            raise ValueError("this trajectory carries no problem (e.g. it was read from a file); pass the problem GD "
                             "ran on as `problem=` (the eigenvectors of H(θ̄) are computed from it).")
    elif not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be an effdyn Problem; got {type(problem).__name__}.")
    if problem.dim != P:
        raise ValueError(f"`problem` has P = {problem.dim} parameters but the trajectory's θ has {P}.")
    ident = traj.problem_identity if hasattr(traj, "problem_identity") else None
    if ident and problem is not own:
        diff = identity_difference(ident, problem.identity())
        if diff:
            raise ValueError(f"`problem` is not the problem GD ran on: {diff}.")
    if n is None:
        eigs = np.asarray(getattr(traj, "eigs", np.empty((0, 1))))
        n = int(eigs.shape[1]) if eigs.ndim == 2 and eigs.shape[1] else 1
    n = positive_int(n, "n")
    if n > P:
        raise ValueError(f"`n` must be at most the problem dimension P = {P}; got {n}.")
    bar = 0.25 * (prev + 2.0 * theta + nxt)
    vals, vecs = top_eigenpairs(problem, bar, k=n)
    return HandoverState(k0=k, eta=float(traj.eta), theta=theta, theta_bar=bar, delta=delta,
                         eigvals=vals, eigvecs=vecs, problem_identity=ident or problem.identity(),
                         variant=str(getattr(traj, "variant", "gd")))


def seed_label(model, initial: dict | None = None, start=None) -> str:
    """What seeds ``model``'s oscillation in a run started with the initial-data options
    ``initial`` (or from a handover state ``start``): one of the keys of :data:`SEED_KINDS`.

    The defaults, and why (docs/theory.md, "Seeds"): the free-energy flow takes GD's first
    half-step projected on the top eigenvectors (``sigma_seed="gd"``) and keeps a round-off
    floor; the edge and rod flows take GD's first half-step; the mean-field kinetic model a
    floor q = 1e-3; self-stabilisation the residual of θ0's projection on the stable set;
    gradient flow, the central flow and the sharpness-reduction flow have no oscillation
    state to seed.
    """
    if start is not None:
        return "handover"
    initial = dict(initial or {})
    name = type(model).__name__
    if name == "FreeEnergyFlow":
        if initial.get("sigma0") is not None:
            return "given"
        seed = initial.get("sigma_seed", "gd")
        if seed == "gd":
            return "gd half-step"
        if seed == "zero":
            return "zero"
        return "round-off floor" if initial.get("seed_scale") is None and model.floor == "roundoff" else "floor"
    if name == "EdgeFlow":
        return "given" if initial.get("rho0") is not None else "gd half-step"
    if name == "RodFlow":
        return "given" if initial.get("delta0") is not None or initial.get("sigma0") is not None else "gd half-step"
    if name == "MeanFieldKinetic":
        if initial.get("u0") is not None:
            return "given"
        return "gd filtered" if initial.get("seed_from") is not None else "floor"
    if name == "SelfStabilization":
        if getattr(model, "mode", None) == "constrained":
            return "none"
        return "given" if initial.get("x0") is not None else "projection"
    if name in ("GradientFlow", "CentralFlow", "SharpnessReductionFlow"):
        return "none"
    return "given" if initial else "default"
