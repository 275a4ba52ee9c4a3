"""Small hand-written problems with exact derivatives, used by the peer-model tests.

Plain NumPy (no numba, no JAX), so they cost nothing to set up and give independent
implementations of the derivatives the models use.
"""

from __future__ import annotations

import itertools

import numpy as np

from effdyn.problems.base import Problem


class Cubic(Problem):
    """E = b·θ + ½θᵀAθ + (1/6) T[θ, θ, θ] with a symmetric tensor T.

    The Hessian A + T[θ] is affine in θ, so central finite differences of it are exact up
    to rounding: an independent check of anything built from ``third``.
    """

    name = "cubic"

    def __init__(self, b, A, T, loss_min=None):
        self.b = np.asarray(b, dtype=float)
        self.A = np.asarray(A, dtype=float)
        self.T = np.asarray(T, dtype=float)
        self.loss_min = loss_min

    @property
    def dim(self):
        return len(self.b)

    def _loss(self, th):
        return float(self.b @ th + 0.5 * th @ self.A @ th + np.einsum("ijk,i,j,k", self.T, th, th, th) / 6.0)

    def _grad(self, th):
        return self.b + self.A @ th + 0.5 * np.einsum("ijk,i,j->k", self.T, th, th)

    def _hvp(self, th, v):
        return self.A @ v + np.einsum("ijk,i,j->k", self.T, th, v)

    def _hessian(self, th):
        return self.A + np.einsum("ijk,i->jk", self.T, th)

    def _third(self, th, U, s):
        return np.einsum("ijk,ir,jr,r->k", self.T, U, U, s)


def cubic_from_monomials(P, terms, b=None):
    """Cubic with E = Σ c·θ_iθ_jθ_k over ``terms`` = [(c, (i, j, k)), ...] plus b·θ."""
    T = np.zeros((P, P, P))
    for coef, idx in terms:
        perms = set(itertools.permutations(idx))
        for perm in perms:
            T[perm] += 6.0 * coef / len(perms)
    return Cubic(np.zeros(P) if b is None else b, np.zeros((P, P)), T)


def two_valleys(gamma=0.0, eps=(0.01, 0.02)):
    """Two minimal valleys sharing a coupling: θ = (x1, x2, y1, y2),

    E = ½y1x1² + ½y2x2² + γ x1x2(y1 + y2) − ε1y1 − ε2y2.

    Both y grow until the curvatures y1, y2 (the two top eigenvalues) reach 2/η; with
    γ = 0 the central-flow covariance is exactly diag(2ε1, 2ε2) on the x axes there.
    """
    terms = [(0.5, (0, 0, 2)), (0.5, (1, 1, 3)), (gamma, (0, 1, 2)), (gamma, (0, 1, 3))]
    return cubic_from_monomials(4, terms, b=np.array([0.0, 0.0, -eps[0], -eps[1]]))


class Quartic(Problem):
    """E(w) = (S/2)w² − (Q/4)w⁴ in one dimension (the rod-flow check of theory §3)."""

    name = "quartic"

    def __init__(self, S, Q):
        self.S, self.Q = float(S), float(Q)

    @property
    def dim(self):
        return 1

    def _loss(self, th):
        return 0.5 * self.S * th[0] ** 2 - 0.25 * self.Q * th[0] ** 4

    def _grad(self, th):
        return np.array([self.S * th[0] - self.Q * th[0] ** 3])

    def _hvp(self, th, v):
        return (self.S - 3.0 * self.Q * th[0] ** 2) * v

    def _third(self, th, U, s):
        return np.array([np.sum(s * (-6.0 * self.Q * th[0]) * U[0] ** 2)])

    def jax_loss(self):
        S, Q = self.S, self.Q
        return lambda th: 0.5 * S * th[0] ** 2 - 0.25 * Q * th[0] ** 4


class NoThird(Problem):
    """A quadratic bowl that deliberately lacks ``third``, ``jax_loss`` and ``loss_min``."""

    name = "no_third"

    @property
    def dim(self):
        return 2

    def _loss(self, th):
        return 0.5 * float(th @ th)

    def _grad(self, th):
        return th.copy()

    def _hvp(self, th, v):
        return v.copy()
