"""GD for JAX problems in compiled chunks, with the eigen-tracker inside the loop.

:func:`gd_jax` is the JAX twin of :func:`effdyn.gd`: same update rules, same records and the
same :class:`effdyn.reference.GDTrajectory`, but every step runs inside one jitted
``lax.scan`` per chunk of steps (one ``value_and_grad`` per step, the eigen-tracker every
``eig_every`` steps), and the host sees the run once per chunk (records copied into
preallocated NumPy arrays, progress bar updated, Ctrl-C honoured).

Records that grow with P (θ, two-step midpoints, top eigenvectors) are written into
per-chunk buffers inside the scan (one row per recorded step, updated in place) and copied
once into the run's arrays. Their strides default to what keeps each record under
``record_bytes`` (256 MB).

The trajectory fills the fields the NumPy engine fills — ``half_amp_subspace`` (K,):
‖Q_kᵀ(θ_{k+1} − θ_k)‖/2 with Q_k the most recent top-``n_eigs`` eigenvectors (for
n_eigs = 1 it equals ``half_amp``), ``n_hvp``, ``theta0``, ``loss_min`` and the problem's
identity; ``eig_checks`` and ``eig_corrections`` stay 0 (this tracker makes no spot checks
against cold solves; its cold solves are counted in ``eig_info["n_cold"]``). Beyond them it
carries, as plain attributes set here:

* ``eig_info``: dict of per-update arrays (``n_hvp``, ``residual``, ``cold``, ``converged``,
  ``n_above``, ``saturated``, ``block_vals``) and the run's totals (``n_cold``,
  ``n_unconverged``, ``n_saturated``, ``rtol``, ``block``);
* ``top_eigvec_k``: the steps of the rows of ``top_eigvec`` (``eig_k`` unless strided; when
  strided ``top_eigvec`` is None and the rows are in ``top_eigvec_strided``);
* ``tracker_state``: the final tracker state as a dict of arrays (resumable).
"""

from __future__ import annotations

import math
import numbers
import sys
import time

import numpy as np

from .._checks import as_vector, choice, nonneg_int, positive_float, positive_int
from ..errors import IntegrationError
from ..kernels.gd_loop import STATUS_NONFINITE
from ..reference import _first_cause

__all__ = ["gd_jax", "RECORD_BYTES", "DEFAULT_CHUNK"]

#: Default memory budget of each P-sized record (θ with its midpoints; top eigenvectors).
RECORD_BYTES = 256 * 2**20
#: Default steps per compiled chunk (rounded up to a multiple of the record strides).
DEFAULT_CHUNK = 256
#: Above this many steps (and on a terminal) a progress bar is shown by default.
PROGRESS_MIN_STEPS = 20_000

VARIANTS = ("gd", "normalized", "sqrt")
_OK, _NONFINITE, _BLOWUP, _EIGFAIL = 0, 1, 2, 3


def _validate(problem, theta0, eta, steps, variant, eig_every, n_eigs, theta_every, loss_bound, throw, progress,
              chunk, seed, eig_tol, eig_threshold, eig_block, record_eigvecs, record_bytes):
    from ..problems.jax_problem import JaxProblem

    if not isinstance(problem, JaxProblem):
        raise TypeError(
            "`problem` must be a JAX problem made by `effdyn.problems.from_jax`; got "
            f"{type(problem).__name__}. Use `effdyn.gd` for built-in problems."
        )
    P = problem.dim
    theta0 = as_vector(theta0, "theta0", P)
    eta = positive_float(eta, "eta")
    steps = nonneg_int(steps, "steps")
    if not isinstance(variant, str):
        raise TypeError(f"`variant` must be a string, one of {list(VARIANTS)}; got {variant!r}.")
    variant = choice(variant, "variant", VARIANTS)
    if variant == "sqrt" and problem.loss_min is None:
        raise ValueError("`variant=\"sqrt\"` needs the problem's infimum; pass `loss_min=` to `from_jax`.")
    if eig_every is not None:
        eig_every = positive_int(eig_every, "eig_every")
    n_eigs = positive_int(n_eigs, "n_eigs")
    if n_eigs > P:
        raise ValueError(f"`n_eigs` must be between 1 and the problem dimension P = {P}; got {n_eigs}.")
    if theta_every is not None:
        theta_every = positive_int(theta_every, "theta_every")
    if isinstance(loss_bound, bool) or not isinstance(loss_bound, numbers.Real) or not loss_bound > 0:
        raise ValueError(f"`loss_bound` must be a number > 0 (np.inf disables the check); got {loss_bound!r}.")
    if not isinstance(throw, bool):
        raise TypeError(f"`throw` must be True or False; got {throw!r}.")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None (automatic); got {progress!r}.")
    if chunk is not None:
        chunk = positive_int(chunk, "chunk")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be None or an integer >= 0; got {seed!r}.")
    if eig_tol is not None and eig_tol != "tight":
        eig_tol = positive_float(eig_tol, "eig_tol")
        if eig_tol >= 1:
            raise ValueError(f"`eig_tol` is relative to 2/η and must be < 1 (default 1e-4, or \"tight\"); got {eig_tol!r}.")
    if eig_threshold is not None:
        if isinstance(eig_threshold, bool) or not isinstance(eig_threshold, numbers.Real) or not np.isfinite(eig_threshold):
            raise TypeError(f"`eig_threshold` must be a finite number (e.g. 1/eta) or None; got {eig_threshold!r}.")
        eig_threshold = float(eig_threshold)
    if eig_block is not None:
        eig_block = positive_int(eig_block, "eig_block")
        if eig_block < n_eigs:
            raise ValueError(f"`eig_block` must be at least `n_eigs` = {n_eigs}; got {eig_block}.")
    if not isinstance(record_eigvecs, bool):
        raise TypeError(f"`record_eigvecs` must be True or False; got {record_eigvecs!r}.")
    record_bytes = positive_int(record_bytes, "record_bytes")
    return (theta0, eta, steps, variant, eig_every, n_eigs, theta_every, float(loss_bound), chunk, eig_tol,
            eig_threshold, eig_block, record_bytes)


def _default_stride(rows_wanted: int, bytes_per_row: int, budget: int) -> int:
    """Smallest stride s with ceil(rows_wanted / s) rows fitting in ``budget`` bytes."""
    if rows_wanted * bytes_per_row <= budget:
        return 1
    return int(math.ceil(rows_wanted * bytes_per_row / max(budget, bytes_per_row)))


def gd_jax(problem, theta0, eta, steps, *, variant: str = "gd", eig_every: int | None = 1, n_eigs: int = 1,
           theta_every: int | None = None, loss_bound: float = 1e10, throw: bool = True,
           progress: bool | None = None, chunk: int | None = None, seed: int | None = None,
           eig_tol: float | str | None = None, eig_threshold: float | None = None, eig_block: int | None = None,
           eig_criterion: str = "eigenvalue", eig_dense_max: int | None = None, tracker=None,
           record_eigvecs: bool = True, record_bytes: int = RECORD_BYTES):
    """Run GD on a JAX problem in compiled chunks; records as :func:`effdyn.gd`.

    Parameters
    ----------
    problem : JaxProblem
        From :func:`effdyn.problems.from_jax` (flat or pytree parameters, chunked data).
    theta0 : array_like, shape (P,)
        Initial point (``problem.init()`` for a pytree problem).
    eta, steps, variant, eig_every, n_eigs, loss_bound, throw, progress, seed
        As in :func:`effdyn.gd`.
    theta_every : int, optional
        Stride of the θ record; default 1, or the smallest stride keeping θ and its
        midpoints under ``record_bytes``.
    chunk : int, optional
        Steps per compiled call (default 256), rounded up to a multiple of the record strides.
    eig_tol : float or "tight", optional
        Tolerance of the tracker relative to 2/η (default 1e-4; "tight": 1e-10).
    eig_criterion : {"eigenvalue", "residual"}, default "eigenvalue"
        "eigenvalue": eigenvalue error estimate ‖r‖²/δ <= eig_tol·2/η (or residual below
        it); "residual": residual ‖r‖ <= eig_tol·2/η, a rigorous eigenvalue error bound
        (see :class:`EigenTrackerJax`).
    eig_threshold : float, optional
        Eigenvalues at or above it are tracked to ``eig_tol`` too, e.g. ``1/eta`` or
        ``(2/eta)·0.9`` (default: only the top ``n_eigs``).
    eig_block : int, optional
        Vectors carried by the tracker (default ``n_eigs + 3``, at most P; the lowest 2 are
        guards). On the digits MLP at the EoS blocks of 3 to 9 vectors all meet the
        tolerance; with the warm budget of 20 iterations a block of 4 used the fewest HVPs
        (5.5 per step at P ≈ 2·10³, 8.9 at 2·10⁴, against 7.4 and 10.3–11.5 with 6;
        benchmarks/bench_jax_engine.py). With
        ``eig_threshold`` make it hold every eigenvalue above the threshold plus 2
        (``eig_info["saturated"]`` says when it did not).
    eig_dense_max : int, optional
        Up to this P every eigen-solve is a dense ``eigh`` (default 64, the tracker's).
    tracker : EigenTrackerJax, optional
        Full control over the tracker (overrides ``eig_tol`` and ``eig_block``; its ``k``
        must equal ``n_eigs``).
    record_eigvecs : bool, default True
        Keep the top eigenvector (strided when n_eig × P floats exceed ``record_bytes``).
    record_bytes : int
        Memory budget of each P-sized record (default 256 MB).

    Returns
    -------
    GDTrajectory
        With the extra attributes listed in the module docstring.

    Raises
    ------
    IntegrationError
        On divergence with ``throw=True`` and on Ctrl-C, carrying ``.partial``.
    """
    (theta0, eta, steps, variant, eig_every, n_eigs, theta_every, loss_bound, chunk, eig_tol, eig_threshold,
     eig_block, record_bytes) = _validate(problem, theta0, eta, steps, variant, eig_every, n_eigs, theta_every,
                                          loss_bound, throw, progress, chunk, seed, eig_tol, eig_threshold, eig_block,
                                          record_eigvecs, record_bytes)
    from ..reference import GDTrajectory
    from .tracker import DEFAULT_RTOL, TIGHT_RTOL, EigenTrackerJax, state_to_dict

    P = problem.dim
    if tracker is not None:
        if not isinstance(tracker, EigenTrackerJax):
            raise TypeError(f"`tracker` must be an EigenTrackerJax or None; got {type(tracker).__name__}.")
        if tracker.k != n_eigs:
            raise ValueError(f"`tracker.k` = {tracker.k} must equal `n_eigs` = {n_eigs}.")
    elif eig_every is not None:
        rtol = DEFAULT_RTOL if eig_tol is None else (TIGHT_RTOL if eig_tol == "tight" else eig_tol)
        block = min(P, n_eigs + 3) if eig_block is None else min(P, eig_block)
        # Warm starts from two updates back see θ on the same side of the valley only when
        # updates are an odd number of steps apart.
        extra = {} if eig_dense_max is None else {"dense_max": nonneg_int(eig_dense_max, "eig_dense_max")}
        tracker = EigenTrackerJax(k=n_eigs, block=block, guard=min(2, block - n_eigs), rtol=rtol,
                                  criterion=choice(eig_criterion, "eig_criterion", ("residual", "eigenvalue")),
                                  history=2 if eig_every % 2 else 1, **extra)
    if eig_every is None:
        tracker = None

    # ---- record strides and chunk size ------------------------------------------------
    if theta_every is None:
        theta_every = _default_stride(steps + 1, 8 * P, record_bytes)
        if theta_every > 1:  # midpoints are recorded too: halve the rows
            theta_every = _default_stride(steps + 1, 16 * P, record_bytes)
    record_mid = theta_every > 1
    n_eig = 0 if eig_every is None else steps // eig_every + 1
    vec_every = None
    if eig_every is not None and record_eigvecs:
        vec_every = eig_every * _default_stride(n_eig, 8 * P, record_bytes)
    strides = [theta_every] + ([eig_every] if eig_every else []) + ([vec_every] if vec_every else [])
    unit = math.lcm(*strides)
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    chunk = unit * max(1, -(-min(chunk, steps + 1) // unit))

    config = {"seed": seed, "eta": eta, "steps": steps, "variant": variant, "eig_every": eig_every, "n_eigs": n_eigs,
              "theta_every": theta_every, "loss_bound": loss_bound, "engine": "jax", "chunk": chunk,
              "eig_tol": None if tracker is None else tracker.rtol, "eig_threshold": eig_threshold,
              "eig_block": None if tracker is None else tracker.block_size(P),
              "dense_max": None if tracker is None else tracker.dense_max}

    # ---- host records ---------------------------------------------------------------------
    n_theta = steps // theta_every + 1
    loss = np.empty(steps + 1)
    gnorm = np.empty(steps + 1)
    amp = np.empty(steps)
    amp_sub = np.empty(steps)
    theta_rec = np.empty((n_theta, P))
    theta_rec[0] = theta0
    mid = np.full((n_theta, P), np.nan) if record_mid else None
    eigs = np.empty((n_eig, n_eigs))
    n_vec = 0 if vec_every is None else steps // vec_every + 1
    vec_rec = np.empty((n_vec, P)) if vec_every else None
    info_keys = ("n_hvp", "residual", "cold", "converged", "n_above", "saturated")
    info = {"n_hvp": np.zeros(n_eig, np.int64), "residual": np.empty((n_eig, n_eigs)), "cold": np.zeros(n_eig, bool),
            "converged": np.zeros(n_eig, bool), "n_above": np.zeros(n_eig, np.int64),
            "saturated": np.zeros(n_eig, bool)}
    block_vals = None if tracker is None else np.empty((n_eig, tracker.block_size(P)))

    # ---- the compiled chunk -------------------------------------------------------------------
    run_chunk = _chunk_function(problem, tracker, variant, chunk, theta_every, record_mid, eig_every, vec_every,
                                n_eigs, eig_threshold is not None)
    jax, jnp = problem._jax, problem._jnp
    data = problem.data_args
    state = None if tracker is None else tracker.init(P, seed=0 if seed is None else seed)
    theta = jnp.asarray(theta0)
    carry = (theta, theta, state, jnp.zeros((P, n_eigs)), jnp.zeros((), jnp.int64), jnp.zeros((), jnp.int64),
             jnp.zeros((), jnp.float64))
    scalars = (jnp.float64(eta), jnp.float64(loss_bound),
               jnp.float64(0.0 if problem.loss_min is None else problem.loss_min),
               jnp.float64(-np.inf if eig_threshold is None else eig_threshold), jnp.float64(2.0 / eta),
               jnp.int64(steps))

    show = progress if progress is not None else (steps >= PROGRESS_MIN_STEPS and sys.stderr.isatty())
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"GD-jax ({variant}, eta={eta:g})", unit="step")

    t0 = time.perf_counter()
    fail_step, fail_value, status, interrupted = None, 0.0, _OK, False
    k0 = 0
    try:
        while k0 <= steps:
            carry, out = run_chunk(carry, jnp.int64(k0), scalars, data)
            out = jax.device_get(out)
            status = int(carry[4])
            k_end = min(k0 + chunk, steps + 1)          # steps evaluated in this chunk: [k0, k_end)
            if status != _OK:
                fail_step = int(carry[5])
                fail_value = float(carry[6])
                k_end = fail_step
            _store(out, k0, k_end, steps, theta_every, record_mid, eig_every, vec_every, loss, gnorm, amp, amp_sub,
                   theta_rec, mid, eigs, vec_rec, info, block_vals, info_keys)
            if bar is not None:
                bar.update(min(k_end, steps) - min(k0, steps))
            if status != _OK:
                break
            k0 += chunk
    except KeyboardInterrupt:
        interrupted = True
        fail_step = k0
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0

    K = steps if fail_step is None else fail_step - 1
    n_th = K // theta_every + 1 if K >= 0 else 0
    n_ei = (K // eig_every + 1 if K >= 0 else 0) if eig_every is not None else 0
    n_ve = (K // vec_every + 1 if K >= 0 else 0) if vec_every is not None else 0
    if interrupted:
        cause, run_status = "interrupted", "interrupted"
        message = f"GD interrupted at step {fail_step}; the record holds steps 0..{K}."
    elif status == _NONFINITE:
        cause, run_status = "non-finite", "diverged"
        message = (f"GD diverged at step {fail_step}: non-finite loss or gradient ({fail_value!r}). "
                   f"The record holds steps 0..{K}.")
    elif status == _EIGFAIL and _first_cause(problem, np.asarray(carry[0]), loss_bound)[0] != 0:
        # the eigenpairs are non-finite because θ or the loss already is: name that first,
        # as effdyn.gd does
        code, _, what = _first_cause(problem, np.asarray(carry[0]), loss_bound)
        cause, run_status = ("non-finite" if code == STATUS_NONFINITE else "blow-up"), "diverged"
        message = f"GD diverged at step {fail_step}: {what or 'the loss exceeds loss_bound'}. The record holds steps 0..{K}."
    elif status == _EIGFAIL:
        # effdyn.gd reports an eigen-solve that raises this way; compiled code cannot
        # raise, and non-finite eigenpairs are its failure.
        cause, run_status = "solver failure", "failed"
        message = (f"GD stopped at step {fail_step}: the eigen-solve returned non-finite eigenpairs. "
                   f"The record holds steps 0..{K}.")
    elif status == _BLOWUP:
        cause, run_status = "blow-up", "diverged"
        message = (f"GD diverged at step {fail_step}: |loss| = {abs(fail_value):.3e} exceeds loss_bound = "
                   f"{loss_bound:.3e}. The record holds steps 0..{K}.")
    else:
        cause, run_status, message = None, "success", f"GD completed {steps} steps."

    mid_k = mid_arr = None
    if record_mid:
        rows = np.arange(n_th)
        valid = (rows * theta_every >= 1) & (rows * theta_every <= K - 1)
        mid_k = (rows[valid] * theta_every).astype(np.int64)
        mid_arr = mid[rows[valid]]
    aligned = vec_every is not None and vec_every == eig_every
    traj = GDTrajectory(
        k=np.arange(max(K + 1, 0), dtype=np.int64),
        loss=loss[: K + 1],
        grad_norm=gnorm[: K + 1],
        theta=theta_rec[:n_th],
        theta_k=np.arange(n_th, dtype=np.int64) * theta_every,
        eig_k=np.arange(n_ei, dtype=np.int64) * (eig_every or 1),
        eigs=eigs[:n_ei],
        top_eigvec=vec_rec[:n_ve] if aligned else None,
        half_amp=amp[: max(K, 0)],
        eta=eta,
        variant=variant,
        status=run_status,
        message=message,
        diverged_at=fail_step if run_status in ("diverged", "failed") else None,
        cause=cause,
        problem_config=problem.config(),
        config=config,
        wall_time=wall,
        n_hvp=0 if tracker is None else int(carry[2].n_hvp),
        half_amp_subspace=amp_sub[: max(K, 0)],
        loss_min=None if problem.loss_min is None else float(problem.loss_min),
        theta0=np.array(theta0, dtype=np.float64),
        _mid=mid_arr,
        _mid_k=mid_k,
        _problem=problem,
    )
    # Not GDTrajectory fields: see the module docstring.
    traj.top_eigvec_k = (np.arange(n_ve, dtype=np.int64) * vec_every) if vec_every else np.empty(0, np.int64)
    traj.top_eigvec_strided = None if (aligned or vec_rec is None) else vec_rec[:n_ve]
    eig_info = {key: val[:n_ei] for key, val in info.items()}
    if tracker is not None:
        st = carry[2]
        eig_info.update({"block_vals": block_vals[:n_ei], "n_cold": int(st.n_cold),
                         "n_unconverged": int(st.n_unconverged), "n_saturated": int(st.n_saturated),
                         "rtol": tracker.rtol, "block": tracker.block_size(P), "dense": tracker.is_dense(P)})
        traj.tracker_state = state_to_dict(st)
    else:
        traj.tracker_state = None
    traj.eig_info = eig_info
    if interrupted:
        raise IntegrationError(message, step=fail_step, time=float(fail_step), cause="interrupted", partial=traj)
    if run_status in ("diverged", "failed") and throw:
        raise IntegrationError(message, step=fail_step, time=float(fail_step), cause=cause, partial=traj)
    return traj


def _store(out, k0, k_end, steps, te, record_mid, ee, ve, loss, gnorm, amp, amp_sub, theta_rec, mid, eigs, vec_rec,
           info, block_vals, info_keys):
    """Copy the valid part [k0, k_end) of one chunk's output into the run's records."""
    n = k_end - k0
    if n <= 0:
        return
    loss[k0:k_end] = out["loss"][:n]
    gnorm[k0:k_end] = out["grad_norm"][:n]
    n_step = min(k_end, steps) - k0       # steps actually taken (θ_{k+1} exists)
    if n_step > 0:
        amp[k0:k0 + n_step] = out["amp"][:n_step]
        amp_sub[k0:k0 + n_step] = out["amp_sub"][:n_step]
        # θ_{k+1} rows for (k+1) % te == 0, k in [k0, k0 + n_step)
        r0, r1 = k0 // te + 1, (k0 + n_step) // te + 1
        theta_rec[r0:r1] = out["theta"][: r1 - r0]
        if record_mid:
            m0, m1 = k0 // te, (k0 + n_step - 1) // te + 1
            mid[m0:m1] = out["mid"][: m1 - m0]
    if ee is not None:
        e0, e1 = -(-k0 // ee), -(-k_end // ee)     # eigen-solve steps in [k0, k_end)
        if e1 > e0:
            sel = slice(0, e1 - e0)
            eigs[e0:e1] = out["eigs"][sel]
            for key in info_keys:
                info[key][e0:e1] = out[key][sel]
            if block_vals is not None:
                block_vals[e0:e1] = out["block_vals"][sel]
        if ve is not None:
            v0, v1 = -(-k0 // ve), -(-k_end // ve)
            if v1 > v0:
                vec_rec[v0:v1] = out["vecs"][: v1 - v0]


_CACHE_ATTR = "_gd_jax_chunks"


def _chunk_function(problem, tracker, variant, chunk, te, record_mid, ee, ve, n_eigs, has_threshold):
    """The jitted chunk of GD steps for this problem and static configuration (cached on
    the problem, so a sweep over η, seeds or θ0 compiles once)."""
    key = (tracker, variant, chunk, te, record_mid, ee, ve, n_eigs, has_threshold)
    cache = problem.__dict__.setdefault(_CACHE_ATTR, {})
    if key not in cache:
        cache[key] = _build_chunk(problem, *key)
    return cache[key]


def _build_chunk(problem, tracker, variant, chunk, te, record_mid, ee, ve, n_eigs, has_threshold):
    jax, jnp = problem._jax, problem._jnp
    vg, hvp_fn = problem.pure_value_and_grad, problem.pure_hvp
    P = problem.dim
    var = VARIANTS.index(variant)
    n_th, n_mid = chunk // te, chunk // te
    n_ei = 0 if ee is None else chunk // ee
    n_ve = 0 if ve is None else chunk // ve
    b = 0 if tracker is None else tracker.block_size(P)

    def write_row(buf, idx, row, cond):
        # One row updated in place (no copy of the buffer): the old row when not recording.
        idx = jnp.clip(idx, 0, buf.shape[0] - 1)
        row = jnp.where(cond, row, buf[idx])
        return jax.lax.dynamic_update_slice(buf, row[None], (idx, 0))

    def run(carry, k0, scalars, data):
        eta, loss_bound, loss_min, threshold, scale, steps = scalars
        theta, prev, tstate, Q, status, fail_k, fail_v = carry
        bufs = {"theta": jnp.zeros((max(n_th, 1), P)),
                "mid": jnp.zeros((max(n_mid, 1), P)) if record_mid else None,
                "vecs": jnp.zeros((max(n_ve, 1), P)) if ve else None}

        def body(c, j):
            theta, prev, tstate, Q, status, fail_k, fail_v, bufs = c
            k = k0 + j
            active = (status == _OK) & (k <= steps)
            # The steps of the last chunk past `steps` (and after a failure) are not
            # recorded: skip their gradient (a whole chunk of them on a short run).
            E, g = jax.lax.cond(active, lambda th: vg(th, data),
                                lambda th: (jnp.zeros((), th.dtype), jnp.zeros_like(th)), theta)
            gn = jnp.sqrt(jnp.sum(g * g))
            nonfinite = ~jnp.isfinite(E) | ~jnp.isfinite(gn)
            blowup = jnp.abs(E) > loss_bound
            bad = active & (nonfinite | blowup)
            out = {"loss": E, "grad_norm": gn}
            if tracker is not None:
                # Solved even when the loss failed: as in effdyn.gd, whose eigen-solve at θ_k
                # comes first, a failing eigen-solve is what stops such a step.
                do_eig = active & (k % ee == 0)

                def solve(ts):
                    return tracker.update(ts, lambda v: hvp_fn(theta, v, data),
                                          threshold=threshold if has_threshold else None, scale=scale)

                def skip(ts):
                    return ts, _empty_result(jnp, P, n_eigs, b)

                tstate, res = jax.lax.cond(do_eig, solve, skip, tstate)
                eig_bad = do_eig & ~(jnp.all(jnp.isfinite(res.vals)) & jnp.all(jnp.isfinite(res.vecs)))
                Q = jnp.where(do_eig & ~eig_bad, res.vecs, Q)
                out.update({"eigs": res.vals, "n_hvp": res.n_hvp, "residual": res.residuals, "cold": res.cold,
                            "converged": res.converged, "n_above": res.n_above, "saturated": res.saturated,
                            "block_vals": res.block_vals})
                if ve:
                    bufs = dict(bufs)
                    bufs["vecs"] = write_row(bufs["vecs"], (k - k0) // ve, Q[:, 0], do_eig & (k % ve == 0))
            else:
                eig_bad = jnp.zeros((), bool)
            fail_now = bad | (active & eig_bad)
            code = jnp.where(eig_bad, _EIGFAIL, jnp.where(nonfinite, _NONFINITE, _BLOWUP))
            status = jnp.where(fail_now, code, status)
            fail_k = jnp.where(fail_now, k, fail_k)
            fail_v = jnp.where(fail_now, jnp.where(nonfinite & jnp.isfinite(E), gn, E), fail_v)
            take = active & ~fail_now & (k < steps)
            if var == 0:
                c = eta
            elif var == 1:
                c = jnp.where(gn > 0, eta / jnp.where(gn > 0, gn, 1.0), 0.0)
            else:
                gap = E - loss_min
                c = jnp.where(gap > 0, eta / (2.0 * jnp.sqrt(jnp.where(gap > 0, gap, 1.0))), 0.0)
            new = theta - c * g
            qg = Q.T @ g
            out["amp"] = 0.5 * c * jnp.abs(qg[0])
            out["amp_sub"] = 0.5 * c * jnp.sqrt(jnp.sum(qg * qg))
            bufs = dict(bufs)
            if record_mid:
                bufs["mid"] = write_row(bufs["mid"], (k - k0) // te, 0.25 * (prev + 2.0 * theta + new),
                                        take & (k >= 1) & (k % te == 0))
            bufs["theta"] = write_row(bufs["theta"], (k + 1 - k0) // te - 1, new, take & ((k + 1) % te == 0))
            theta, prev = jnp.where(take, new, theta), jnp.where(take, theta, prev)
            return (theta, prev, tstate, Q, status, fail_k, fail_v, bufs), out

        c0 = (theta, prev, tstate, Q, status, fail_k, fail_v, bufs)
        (theta, prev, tstate, Q, status, fail_k, fail_v, bufs), per_step = jax.lax.scan(
            body, c0, jnp.arange(chunk, dtype=jnp.int64))
        out = dict(per_step)
        if tracker is not None:
            # keep only the eigen-solve steps (k0 is a multiple of ee)
            out.update({key: per_step[key][::ee] for key in ("eigs", "n_hvp", "residual", "cold", "converged",
                                                             "n_above", "saturated", "block_vals")})
        out["theta"] = bufs["theta"]
        if record_mid:
            out["mid"] = bufs["mid"]
        if ve:
            out["vecs"] = bufs["vecs"]
        return (theta, prev, tstate, Q, status, fail_k, fail_v), out

    return jax.jit(run, donate_argnums=())


def _empty_result(jnp, P, k, b):
    from .tracker import TrackResult

    z = jnp.zeros((), jnp.int64)
    f = jnp.zeros((), bool)
    return TrackResult(vals=jnp.zeros(k), vecs=jnp.zeros((P, k)), residuals=jnp.zeros(k), n_hvp=z, n_iter=z, cold=f,
                       converged=f, n_above=z, saturated=f, block_vals=jnp.zeros(b), block_vecs=jnp.zeros((P, b)))
