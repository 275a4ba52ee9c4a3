"""θ-drift of the free-energy flow, −η(∇E + ½∇_θ⟨H, VVᵀ⟩), through several implementations.

For each problem size the same drift is computed by

* ``numba``: the library's path, exactly as the model calls it
  (``FreeEnergyFlow.theta_drift``: one ``problem._grad_third``, which is a fused kernel
  for both problems here: ``effdyn.kernels.matrix_factorization._grad_third`` and
  ``effdyn.kernels.two_layer._grad_third``; problems without one make the two calls
  ``_grad`` and a rank-r ``_third``);
* ``separate``: the two separate compiled calls the library made before the fused kernel,
  as a reference: ``_grad`` and ``_third_reference`` for deep matrix factorisation, the
  base-class default ``_grad`` + ``_third`` for the two-layer network;
* ``jax``: autodiff of ``problem.jax_loss()`` under ``jax.jit`` on CPU: ∇E by reverse
  mode and ∇_θ Σ_q u_qᵀHu_q as the gradient of forward-over-reverse HVPs (``jvp`` of the
  gradient); inputs are already JAX arrays, so the figure excludes host-to-device copies
  (the most favourable setting for JAX);
* ``numpy``: a plain NumPy implementation (matrix products): for deep matrix
  factorisation the one below, written from the definition, for the two-layer network the
  NumPy references shipped with its kernels.

All are checked to agree before being timed (``max_rel_diff``), so the timings are
of the same numbers. Sizes: deep matrix factorisation at depth 3 with growing d
(P = 3d²) and the teacher–student two-layer network (n = 100, d = 5) with growing
width N (P = 6N), P from ~10 to ~10⁵.
"""

from __future__ import annotations

import numpy as np

from _timing import interleaved

#: d of the depth-3 factorisation: P = 3d² = 12 ... 100 467.
DMF_D = (2, 4, 6, 10, 18, 32, 58, 100, 183)
#: Width N of the teacher–student network: P = 6N = 12 ... 100 002.
TWO_LAYER_N = (2, 17, 167, 1667, 16667)
QUICK_DMF_D = (2,)
QUICK_TWO_LAYER_N = (3,)
ETA = 0.05


# --- NumPy reference for deep matrix factorisation ----------------------------------------
def _pmul(a, b):
    """Product of matrix polynomials in t truncated after t²: (a0, a1, a2)·(b0, b1, b2)."""
    return (a[0] @ b[0], a[0] @ b[1] + a[1] @ b[0], a[0] @ b[2] + a[1] @ b[1] + a[2] @ b[0])


def _pT(a):
    return tuple(c.T for c in a)


def dmf_numpy_grad(theta, M):
    """∇E of E = ½‖W_L⋯W_1 − M‖² by prefix and suffix products (θ = W_1, ..., W_L row-major)."""
    d = M.shape[0]
    W = theta.reshape(-1, d, d)
    L = W.shape[0]
    right = [np.eye(d)]
    for i in range(L):
        right.append(W[i] @ right[-1])
    left = [np.eye(d)] * L
    for i in range(L - 1, 0, -1):
        left[i - 1] = left[i] @ W[i]
    rho = right[L] - M
    return np.concatenate([(left[i].T @ rho @ right[i].T).ravel() for i in range(L)])


def dmf_numpy_third(theta, U, s, M):
    """∇_θ Σ_q s_q u_qᵀH(θ)u_q = Σ_q s_q ∂²_t ∇E(θ + t u_q)|_{t=0}.

    Along θ + t u every partial product is a polynomial in t; the gradient
    Lt_iᵀ (P − M) Rt_iᵀ is expanded to order t² by truncated polynomial products and the
    t² coefficient (times 2) is the contraction.
    """
    d = M.shape[0]
    W = theta.reshape(-1, d, d)
    L = W.shape[0]
    Z, I = np.zeros((d, d)), np.eye(d)
    out = np.zeros(theta.size)
    for q in range(U.shape[1]):
        V = U[:, q].reshape(L, d, d)
        F = [(W[i], V[i], Z) for i in range(L)]
        right = [(I, Z, Z)]
        for i in range(L):
            right.append(_pmul(F[i], right[-1]))
        left = [(I, Z, Z)] * L
        for i in range(L - 1, 0, -1):
            left[i - 1] = _pmul(left[i], F[i])
        rho = (right[L][0] - M, right[L][1], right[L][2])
        parts = [2.0 * _pmul(_pmul(_pT(left[i]), rho), _pT(right[i]))[2] for i in range(L)]
        out += s[q] * np.concatenate([p.ravel() for p in parts])
    return out


# --- the drifts ----------------------------------------------------------------------------
def jax_theta_drift(problem):
    """Jitted JAX θ-drift (θ, U, η) ↦ −η(∇E + ½∇_θ Σ_q u_qᵀHu_q) from ``problem.jax_loss()``."""
    from effdyn._jax import import_jax

    jax, jnp = import_jax()
    grad = jax.grad(problem.jax_loss())

    def curvature(theta, U):
        HU = jax.vmap(lambda u: jax.jvp(grad, (theta,), (u,))[1], in_axes=1, out_axes=1)(U)
        return jnp.sum(U * HU)

    third = jax.grad(curvature)
    return jax.jit(lambda theta, U, eta: -eta * (grad(theta) + 0.5 * third(theta, U)))


def dmf_problem(d, seed=0):
    from effdyn.problems import DeepMatrixFactorization as DMF

    target = DMF.spectral_target(np.linspace(2.0, 1.0, d), seed=seed)
    p = DMF(d=d, depth=3, target=target, init="balanced", init_scale=0.8)
    return p, p.init(seed)


def two_layer_problem(width, seed=0):
    from effdyn.problems.two_layer import teacher_student

    p = teacher_student(width, n=100, d=5, seed=0)
    return p, p.init(seed)


def numpy_theta_drift(problem):
    """Plain NumPy θ-drift (θ, U, η) for the problems that have one, else None."""
    name = type(problem).__name__
    if name == "DeepMatrixFactorization":
        M = problem.target
        return lambda th, U, eta: -eta * (dmf_numpy_grad(th, M) + 0.5 * dmf_numpy_third(th, U, np.ones(U.shape[1]), M))
    if name == "TwoLayerNet":
        from effdyn.kernels import two_layer_reference as k

        X, y, c, code = problem.X, problem.y, problem.c, problem.act.code
        return lambda th, U, eta: -eta * (k.reference_grad(th, X, y, c, code)
                                          + 0.5 * k.reference_third(th, U, np.ones(U.shape[1]), X, y, c, code))
    return None


def separate_theta_drift(problem):
    """The θ-drift (θ, U, η) from two separate compiled kernels, where the library now uses
    one fused kernel, or None.

    The pair of calls ``FreeEnergyFlow`` made before the fused ``_grad_third`` moved into
    the library. Deep matrix factorisation: ``_grad`` and ``_third_reference``. Two-layer
    network: the base-class ``Problem._grad_third``, i.e. the problem's ``_grad`` and
    ``_third`` (two forward and two backward passes).
    """
    name = type(problem).__name__
    if name == "DeepMatrixFactorization":
        from effdyn.kernels import matrix_factorization as k

        params = problem.numba_kernels.params
        return lambda th, U, eta: -eta * (k._grad(th, params)
                                          + 0.5 * k._third_reference(th, U, np.ones(U.shape[1]), params))
    if name == "TwoLayerNet":
        from effdyn.problems.base import Problem

        return lambda th, U, eta: -eta * Problem._grad_third(problem, th, U, np.ones(U.shape[1]), 1.0, 0.5)
    return None


def drift_record(problem, theta, *, rank=1, eta=ETA, repeats=15, min_time=0.003, label=None, size=None,
                 backends=("numba", "separate", "jax", "numpy")):
    """Time one θ-drift evaluation per backend (interleaved, best of ``repeats``).

    Returns a flat record: seconds per evaluation of each backend (``<backend>_s``), the
    ratios to numba (``<backend>_over_numba``), the cost of ``_grad`` and ``_third`` alone
    (the problem's own kernels), and the largest relative disagreement between the
    backends' results.
    """
    from effdyn.models import FreeEnergyFlow

    rng = np.random.default_rng(1)
    P = problem.dim
    U = rng.standard_normal((P, rank))
    U = np.ascontiguousarray(U / np.linalg.norm(U, axis=0))
    model = FreeEnergyFlow(problem, eta, rank=rank)
    fns = {"numba": lambda: model.theta_drift(theta, U)}
    ref = model.theta_drift(theta, U)
    results = {"numba": ref}
    if "jax" in backends:
        from effdyn._jax import import_jax

        _, jnp = import_jax()
        f = jax_theta_drift(problem)
        th_j, U_j, eta_j = jnp.asarray(theta), jnp.asarray(U), jnp.asarray(eta)
        fns["jax"] = lambda: f(th_j, U_j, eta_j).block_until_ready()
        results["jax"] = np.asarray(f(th_j, U_j, eta_j))
    g_sep = separate_theta_drift(problem) if "separate" in backends else None
    if g_sep is not None:
        fns["separate"] = lambda: g_sep(theta, U, eta)
        results["separate"] = g_sep(theta, U, eta)
    g_np = numpy_theta_drift(problem) if "numpy" in backends else None
    if g_np is not None:
        fns["numpy"] = lambda: g_np(theta, U, eta)
        results["numpy"] = g_np(theta, U, eta)
    ones = np.ones(rank)
    fns["grad"] = lambda: problem._grad(theta)
    fns["third"] = lambda: problem._third(theta, U, ones)
    t = interleaved(fns, repeats=repeats, min_time=min_time)
    scale = max(np.max(np.abs(ref)), 1e-300)
    rec = {"problem": label or problem.name, "size": size, "P": P, "rank": rank,
           "max_rel_diff": float(max((np.max(np.abs(v - ref)) / scale for v in results.values()), default=0.0))}
    for name, v in t.items():
        rec[f"{name}_s"] = v["best"]
        rec[f"{name}_median_s"] = v["median"]
    for name in ("jax", "numpy", "separate"):
        if name in t:
            rec[f"{name}_over_numba"] = t[name]["best"] / t["numba"]["best"]
    rec["third_over_grad"] = t["third"]["best"] / t["grad"]["best"]
    return rec


def run(quick: bool = False, log=print) -> dict:
    """All drift records: deep matrix factorisation (depth 3) and the two-layer network."""
    reps, mt = (2, 0.001) if quick else (15, 0.003)
    records = []
    for d in (QUICK_DMF_D if quick else DMF_D):
        p, th = dmf_problem(d)
        rec = drift_record(p, th, repeats=reps, min_time=mt, label="dmf depth 3", size=f"d={d}")
        records.append(rec)
        log(_line(rec))
    try:
        from effdyn.problems import TwoLayerNet  # noqa: F401
    except (ImportError, AttributeError):  # pragma: no cover - written by another helper
        log("  two-layer network not available; skipped")
    else:
        for N in (QUICK_TWO_LAYER_N if quick else TWO_LAYER_N):
            p, th = two_layer_problem(N)
            rec = drift_record(p, th, repeats=reps, min_time=mt, label="two-layer tanh (n=100, d=5)", size=f"N={N}")
            records.append(rec)
            log(_line(rec))
    return {"records": records, "eta": ETA, "rank": 1,
            "notes": "seconds per θ-drift evaluation (grad + rank-1 third), best of interleaved repeats"}


def _line(rec) -> str:
    return (f"  {rec['problem']:<28} {rec['size']:>8} P={rec['P']:>7}  numba {rec['numba_s'] * 1e6:10.1f} µs  "
            f"jax/numba {rec.get('jax_over_numba', float('nan')):6.2f}  "
            f"numpy/numba {rec.get('numpy_over_numba', float('nan')):6.2f}  "
            f"separate/numba {rec.get('separate_over_numba', float('nan')):6.2f}  diff {rec['max_rel_diff']:.1e}")


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv)
