"""The inner GD loop, shared by the compiled and the pure-Python paths of ``effdyn.gd``.

:func:`_gd_chunk_py` advances GD from step ``k0`` to ``k1`` and writes the per-step records
into preallocated arrays. It is written with whole-array NumPy operations that numba also
compiles, so the very same function is

* run as plain Python for problems without numba kernels (``loss_fn``/``grad_fn`` are
  Python callables there), and
* compiled as :func:`_gd_chunk` for built-in problems, with the problem's numba kernels
  passed as arguments. numba specialises the loop on the kernels' types, so it compiles
  once per problem class and process (dispatcher arguments cannot be cached on disk,
  hence ``cache=False``); parameter values travel in ``params`` and never recompile.

The function does not validate: ``effdyn.gd`` does.

Status codes returned: 0 ok, 1 non-finite loss or gradient, 2 |loss| above the bound.
"""

from __future__ import annotations

import numpy as np

from .._jit import jit

#: Names of the update rules, in the order of their integer codes.
VARIANTS = ("gd", "normalized", "sqrt")
STATUS_OK, STATUS_NONFINITE, STATUS_BLOWUP = 0, 1, 2


def _gd_chunk_py(loss_fn, grad_fn, params, theta, prev, eta, variant, loss_min, loss_bound, v1,
                 k0, k1, final, theta_every, record_mid, loss_out, gnorm_out, amp_out, theta_out, mid_out):
    """GD steps k0 → k1 (θ_k1 is returned, with θ_{k1−1} as ``prev``).

    For each k in [k0, k1) it records E(θ_k), ‖∇E(θ_k)‖ and the half-step amplitude
    a_k = |v1ᵀ(θ_{k+1} − θ_k)|/2, stores θ_{k+1} when (k+1) is a multiple of
    ``theta_every`` and, when ``record_mid``, the two-step midpoint
    ¼(θ_{k−1} + 2θ_k + θ_{k+1}) at the recorded k ≥ 1. With ``final`` it also records E and
    ‖∇E‖ at θ_k1.

    The step is θ_{k+1} = θ_k − c_k ∇E(θ_k) with c_k = η (plain GD), η/‖∇E‖ (normalised
    GD) or η/(2√(E − E_min)) (GD on √(E − E_min), whose gradient is ∇E/(2√(E − E_min))).
    Where the normalising factor is undefined (zero gradient, E <= E_min) the step is 0.

    Returns
    -------
    (status, k, value, theta, prev)
        ``k`` is the step where the run stopped (k1 on success) and ``value`` the offending
        loss (or gradient norm) when ``status`` is not 0.
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
        amp_out[k] = 0.5 * abs(np.sum(v1 * (new - theta)))
        if record_mid and k >= 1 and k % theta_every == 0:
            mid_out[k // theta_every] = 0.25 * (prev + 2.0 * theta + new)
        prev = theta
        theta = new
        if (k + 1) % theta_every == 0:
            theta_out[(k + 1) // theta_every] = theta
    return STATUS_OK, k1, 0.0, theta, prev


_gd_chunk = jit(_gd_chunk_py, cache=False)
