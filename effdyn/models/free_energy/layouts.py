"""How the free-energy flow stores Σ in its flat state (one small object per choice).

Every layout packs and unpacks ``y = [θ, <Σ part>]`` with the same code for NumPy and JAX
(``xp`` is ``numpy`` or ``jax.numpy``), so the flow's drift and its JAX twin share it:

* :class:`FactorLayout` — Σ = VVᵀ with the factor V (P × r) stored as is;
* :class:`LogFactorLayout` — the same factor in log-amplitude coordinates, each column
  V_j = e^{ρ_j} v̂_j (state ``[θ, ρ (r), v̂ (P × r)]``): the amplitude spans ~15 decades
  between its round-off seed and the Edge of Stability, and in these coordinates an
  adaptive integrator controls its error relatively at every size;
* :class:`DenseLayout` — the symmetric Σ (P × P) itself (small P; also the rate form).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FactorLayout", "LogFactorLayout", "DenseLayout", "layout_for"]


class FactorLayout:
    """Σ = VVᵀ, state ``[θ, V.ravel()]``."""

    storage = "factor"
    factored = True

    def __init__(self, P: int, r: int):
        self.P, self.r = P, r

    @property
    def sigma_size(self) -> int:
        return self.P * self.r

    def unpack(self, xp, y):
        """(θ, S): S is the factor V (..., P, r) (or Σ (..., P, P) for the dense layout)."""
        P = self.P
        return y[..., :P], y[..., P:].reshape(y.shape[:-1] + (P, self.r))

    def pack(self, xp, theta, S):
        return xp.concatenate([theta, S.ravel()])

    def pack_rate(self, xp, y, dtheta, dS):
        """The state's rate from dθ/dk and dS/dk (dS in the coordinates of ``unpack``)."""
        return xp.concatenate([dtheta, dS.ravel()])

    def factor(self, xp, S):
        """A factor U with Σ = UUᵀ (what the third-derivative contraction takes)."""
        return S

    def map_factor(self, xp, theta, y, F):
        """The state [θ, F(V)] for a map F that acts on each column of the factor linearly
        (the step-exact map's Σ update)."""
        return self.pack(xp, theta, F(self.unpack(xp, y)[1]))

    def sigma(self, xp, S):
        return S @ xp.swapaxes(S, -1, -2)


class LogFactorLayout(FactorLayout):
    """Σ = VVᵀ with V_j = e^{ρ_j} v̂_j, state ``[θ, ρ, v̂.ravel()]``.

    A zero column has ρ = −inf, which the solvers stop on as non-finite; every column of
    the initial factor must therefore be nonzero.
    """

    storage = "log-factor"

    @property
    def sigma_size(self) -> int:
        return self.r + self.P * self.r

    def parts(self, y):
        """(θ, ρ, v̂) with v̂ of shape (..., P, r)."""
        P, r = self.P, self.r
        return y[..., :P], y[..., P:P + r], y[..., P + r:].reshape(y.shape[:-1] + (P, r))

    def unpack(self, xp, y):
        theta, rho, Vhat = self.parts(y)
        return theta, Vhat * xp.exp(rho)[..., None, :]

    def pack(self, xp, theta, S):
        norms = xp.linalg.norm(S, axis=0)
        if xp is np:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.concatenate([theta, np.log(norms), (S / norms).ravel()])
        return xp.concatenate([theta, xp.log(norms), (S / norms).ravel()])

    def pack_rate(self, xp, y, dtheta, dS):
        # V = v̂ e^ρ: with D = dV e^{−ρ}, dρ = v̂ᵀD/‖v̂‖² and dv̂ = D − v̂ dρ (dv̂ ⟂ v̂, so ‖v̂‖
        # stays put up to the integrator's error; V is exact either way).
        _, rho, Vhat = self.parts(y)
        D = dS * xp.exp(-rho)
        drho = xp.sum(Vhat * D, axis=0) / xp.sum(Vhat**2, axis=0)
        return xp.concatenate([dtheta, drho, (D - Vhat * drho).ravel()])

    def map_factor(self, xp, theta, y, F):
        # F is linear per column: apply it to the unit directions and add the log of the
        # gain to ρ, so that an amplitude below what a float can hold (the norm of e^ρ v̂
        # underflows near ρ ≈ −372, reached with floor = 0) keeps decaying instead of
        # becoming log(0) = −inf.
        _, rho, Vhat = self.parts(y)
        D = F(Vhat)
        gain = xp.linalg.norm(D, axis=0)
        return xp.concatenate([theta, rho + xp.log(gain), (D / gain).ravel()])


class DenseLayout(FactorLayout):
    """The symmetric Σ (P × P), state ``[θ, Σ.ravel()]``."""

    storage = "dense"
    factored = False

    @property
    def sigma_size(self) -> int:
        return self.P * self.P

    def unpack(self, xp, y):
        P = self.P
        return y[..., :P], y[..., P:].reshape(y.shape[:-1] + (P, P))

    def factor(self, xp, S):
        w, E = xp.linalg.eigh(0.5 * (S + S.T))
        if xp is np:
            # only the nonzero part: the contraction's cost grows with the columns
            keep = w > 1e-300
            return np.ascontiguousarray(E[:, keep] * np.sqrt(w[keep]))
        return E * xp.sqrt(xp.maximum(w, 0.0))

    def sigma(self, xp, S):
        return S


def layout_for(storage: str, P: int, r: int) -> FactorLayout:
    return {"factor": FactorLayout, "log-factor": LogFactorLayout, "dense": DenseLayout}[storage](P, r)
