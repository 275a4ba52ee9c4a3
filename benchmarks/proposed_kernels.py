"""Prototype kernels measured by the benchmarks as proposals for the library (not used by
effdyn itself).

``free_energy_sigma_tail`` / ``compiled_free_energy_drift``: the free-energy drift of a
small built-in problem with its Σ part compiled (measured in ``bench_end_to_end.py``).

The deep matrix factorisation prototype ``dmf_fused_drift`` (a·∇E + b·Σ_q s_q ∇_θ(u_qᵀHu_q)
in one call, 2–3× faster than the ``_grad`` + ``_third`` pair) has moved into the library:
it is ``effdyn.kernels.matrix_factorization._grad_third``, which
``DeepMatrixFactorization._grad_third`` and ``FreeEnergyFlow.theta_drift`` use (and
``_third`` with a = 0, b = 1). The old pair is kept there as ``_grad`` and
``_third_reference``; ``bench_drift.py`` times it as the "separate" column.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def free_energy_sigma_tail(H, S, dtheta, eta, threshold, clip, q, n_track):
    """The rest of the free-energy flow's drift after dθ: [dθ, G·V] in one compiled call.

    Log form, factor storage V (P, r), dense eigendecomposition of H (small P): the same
    arithmetic as ``FreeEnergyFlow.rates``, ``_floored`` and the G·V product (theory §2:
    G = log|I − ηH| on the tracked modes above ``threshold``, log(clip) elsewhere; a
    decaying top-r mode is relaxed towards amplitude² q), without NumPy's per-call overhead.
    """
    P, r = S.shape
    w, E = np.linalg.eigh(0.5 * (H + H.T))
    g_off = np.log(clip)
    out = np.empty(P + P * r)
    out[:P] = dtheta
    GS = g_off * S
    c = np.empty(r)
    for j in range(n_track):
        i = P - 1 - j
        lam = w[i]
        g = np.log(max(abs(1.0 - eta * lam), clip)) if lam > threshold else g_off
        for a in range(r):
            acc = 0.0
            for p in range(P):
                acc += E[p, i] * S[p, a]
            c[a] = acc
        if j < r and q > 0.0 and g < 0.0:
            m = 0.0
            for a in range(r):
                m += c[a] * c[a]
            g *= min(max(1.0 - q / max(m, 1e-300), 0.0), 1.0)
        for p in range(P):
            for a in range(r):
                GS[p, a] += (g - g_off) * E[p, i] * c[a]
    out[P:] = GS.ravel()
    return out


def compiled_free_energy_drift(model):
    """A drift y ↦ dy/dk for a small built-in problem with the Σ part compiled, or None.

    Needs numba kernels, the log form, factor storage and the dense eigen path; the floor
    is the model's (a number, or "roundoff": (ε_mach·max(1, ‖θ‖))²). A prototype of what a
    compiled small-P path of ``FreeEnergyFlow.drift`` would cost. dθ comes from the
    problem's ``_grad_third``, as in the library's drift (the fused kernel for deep matrix
    factorisation).
    """
    k = getattr(model.problem, "numba_kernels", None)
    if (k is None or model.sigma_form != "log" or model.storage != "factor" or model.dim > model.dense_max):
        return None
    P, r, eta = model.dim, model.rank, model.eta
    ones = np.ones(r)
    eps = np.finfo(np.float64).eps

    def drift(y):
        theta = y[:P]
        V = np.ascontiguousarray(y[P:].reshape(P, r))
        g = model.problem._grad_third(theta, V, ones, 1.0, 0.5)
        q = (eps * max(1.0, float(np.sqrt(theta @ theta)))) ** 2 if model.floor == "roundoff" else model.floor
        return free_energy_sigma_tail(k.hessian(theta, k.params), V, -eta * g, eta, model.threshold, model.clip, q,
                                      model.n_track)

    return drift
