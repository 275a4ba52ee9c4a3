"""The inner GD loop: a compiled version for built-in problems and its NumPy reference.

Both advance GD from step ``k0`` to ``k1`` and write the per-step records into
preallocated arrays (see :func:`_numpy_chunk` for the contract). The compiled one is built
by :func:`compiled_chunk`, which closes the loop over a problem's numba ``loss``/``grad``
kernels and jit-compiles it once per kernel pair and process:

* closing over the kernels instead of passing them as arguments avoids numba re-typing
  two dispatcher arguments on every call, which costs more than a short chunk of steps;
* a function bound to other dispatchers cannot be cached on disk, hence ``cache=False``;
  parameter values travel in ``params`` and never trigger a recompilation;
* the body uses explicit element loops rather than array expressions, which numba
  compiles several times faster.

:func:`python_chunk` is the NumPy version for problems without numba kernels (whole-array
operations, so large P stays cheap in Python) and the reference the tests compare the
compiled loop with. Neither validates: ``effdyn.gd`` does.

Status codes returned: 0 ok, 1 non-finite loss or gradient, 2 |loss| above the bound.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit

#: Names of the update rules, in the order of their integer codes.
VARIANTS = ("gd", "normalized", "sqrt")
STATUS_OK, STATUS_NONFINITE, STATUS_BLOWUP = 0, 1, 2


def python_chunk(loss_fn, grad_fn):
    """The NumPy chunk function bound to ``loss_fn(θ, params)`` and ``grad_fn(θ, params)``."""

    def _numpy_chunk(params, theta, prev, eta, variant, loss_min, loss_bound, vecs, k0, k1, final, theta_every,
                     record_mid, loss_out, gnorm_out, amp_out, amp_sub_out, theta_out, mid_out):
        """GD steps k0 → k1; returns (status, k, value, θ_k1, θ_{k1−1}).

        For each k in [k0, k1) it records E(θ_k), ‖∇E(θ_k)‖, the half-step amplitude
        along the top eigenvector a_k = |v1ᵀ(θ_{k+1} − θ_k)|/2 = c_k|v1ᵀ∇E(θ_k)|/2 (v1 =
        ``vecs[:, 0]``) and in the tracked subspace ‖Vᵀ(θ_{k+1} − θ_k)‖/2 = c_k‖Vᵀ∇E(θ_k)‖/2
        (V = ``vecs``, orthonormal columns, so this is the norm of the projection), stores
        θ_{k+1} in row
        (k+1)/theta_every of ``theta_out`` when that is an integer and, with
        ``record_mid``, the two-step midpoint ¼(θ_{k−1} + 2θ_k + θ_{k+1}) in row
        k/theta_every of ``mid_out`` (k >= 1). With ``final`` it also records E and ‖∇E‖
        at θ_k1.

        The step is θ_{k+1} = θ_k − c_k ∇E(θ_k) with c_k = η (variant 0, plain GD),
        η/‖∇E‖ (1, normalised GD) or η/(2√(E − E_min)) (2, GD on √(E − E_min), whose
        gradient is ∇E/(2√(E − E_min))). Where that factor is undefined (zero gradient,
        E <= E_min) the step is 0.

        On failure ``k`` is the step whose loss or gradient failed and ``value`` the
        offending loss (or gradient norm); nothing is recorded for that step.
        """
        for k in range(k0, k1 + (1 if final else 0)):
            E = loss_fn(theta, params)
            g = grad_fn(theta, params)
            gn = np.sqrt(np.sum(g * g))
            if not np.isfinite(E):
                return STATUS_NONFINITE, k, E, theta, prev
            if not np.isfinite(gn):
                return STATUS_NONFINITE, k, gn, theta, prev
            if abs(E) > loss_bound:
                return STATUS_BLOWUP, k, E, theta, prev
            loss_out[k] = E
            gnorm_out[k] = gn
            if k == k1:
                break
            if variant == 0:
                c = eta
            elif variant == 1:
                c = eta / gn if gn > 0.0 else 0.0
            else:
                gap = E - loss_min
                c = eta / (2.0 * np.sqrt(gap)) if gap > 0.0 else 0.0
            new = theta - c * g
            proj = vecs.T @ g
            amp_out[k] = 0.5 * c * abs(proj[0])
            amp_sub_out[k] = 0.5 * c * np.sqrt(np.sum(proj * proj))
            if record_mid and k >= 1 and k % theta_every == 0:
                mid_out[k // theta_every] = 0.25 * (prev + 2.0 * theta + new)
            prev, theta = theta, new
            if (k + 1) % theta_every == 0:
                theta_out[(k + 1) // theta_every] = theta
        return STATUS_OK, k1, 0.0, theta, prev

    return _numpy_chunk


def _make_compiled_chunk(loss_fn, grad_fn):
    """Same contract as the NumPy chunk, written with element loops for numba."""

    def _chunk(params, theta, prev, eta, variant, loss_min, loss_bound, vecs, k0, k1, final, theta_every,
               record_mid, loss_out, gnorm_out, amp_out, amp_sub_out, theta_out, mid_out):
        P = theta.shape[0]
        r = vecs.shape[1]
        theta = theta.copy()
        prev = prev.copy()
        status, k_stop, value = STATUS_OK, k1, 0.0
        for k in range(k0, k1 + (1 if final else 0)):
            E = loss_fn(theta, params)
            g = grad_fn(theta, params)
            gn2 = 0.0
            for i in range(P):
                gn2 += g[i] * g[i]
            gn = np.sqrt(gn2)
            if not np.isfinite(E):
                status, k_stop, value = STATUS_NONFINITE, k, E
                break
            if not np.isfinite(gn):
                status, k_stop, value = STATUS_NONFINITE, k, gn
                break
            if abs(E) > loss_bound:
                status, k_stop, value = STATUS_BLOWUP, k, E
                break
            loss_out[k] = E
            gnorm_out[k] = gn
            if k == k1:
                break
            if variant == 0:
                c = eta
            elif variant == 1:
                c = eta / gn if gn > 0.0 else 0.0
            else:
                gap = E - loss_min
                c = eta / (2.0 * np.sqrt(gap)) if gap > 0.0 else 0.0
            sub2 = 0.0
            top = 0.0
            for j in range(r):
                proj = 0.0
                for i in range(P):
                    proj += vecs[i, j] * g[i]
                if j == 0:
                    top = proj
                sub2 += proj * proj
            amp_out[k] = 0.5 * c * abs(top)
            amp_sub_out[k] = 0.5 * c * np.sqrt(sub2)
            mid = record_mid and k >= 1 and k % theta_every == 0
            row = k // theta_every
            for i in range(P):
                new = theta[i] - c * g[i]
                if mid:
                    mid_out[row, i] = 0.25 * (prev[i] + 2.0 * theta[i] + new)
                prev[i] = theta[i]
                theta[i] = new
            if (k + 1) % theta_every == 0:
                row = (k + 1) // theta_every
                for i in range(P):
                    theta_out[row, i] = theta[i]
        return status, k_stop, value, theta, prev

    return _chunk


_COMPILED: dict = {}


def compiled_chunk(loss_fn, grad_fn):
    """The compiled chunk function for a pair of numba kernels (built once per process)."""
    key = (loss_fn, grad_fn)
    if key not in _COMPILED:
        _COMPILED[key] = jit(_make_compiled_chunk(loss_fn, grad_fn), cache=False)
    return _COMPILED[key]
