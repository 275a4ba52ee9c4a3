"""Integrators for effdyn's effective models, behind one entry point :func:`solve` (and
:func:`resume`, which continues a checkpointed solve).

Solver names:

* ``"scipy:<method>"`` — adaptive scipy.integrate methods RK45, RK23, DOP853, LSODA,
  Radau, BDF, stepped one accepted step at a time (divergence checks, budgets, progress
  bar, checkpoints);
* ``"diffrax:<Solver>"`` — diffrax Tsit5, Dopri5, Dopri8, Kvaerno5 with a PID step-size
  controller, on the model's JAX drift (needs the ``jax`` extra);
* ``"map"`` — the step-exact map: the model equations stepped once per GD step (dk = 1).

Time is in GD steps for every backend, so a solution at ``k`` compares with GD at step k.

Modules: ``_solve`` (the entry points and their argument checks), ``_run`` (what every
backend does around its integrator: saved states and records, the run state, budgets,
errors from model code), ``_scipy``, ``_diffrax``, ``_map`` (the backends),
``_checkpoint`` (the data-only checkpoint format), ``_common`` (save grid, divergence
monitor, progress bar).
"""

from __future__ import annotations

from ._checkpoint import CHECKPOINT_SOLVERS, checkpoint_info
from ._solve import IMPLICIT_MAX_STATE, SOLVER_NAMES, default_solver, resume, solve

__all__ = ["solve", "resume", "checkpoint_info", "default_solver", "SOLVER_NAMES", "CHECKPOINT_SOLVERS",
           "IMPLICIT_MAX_STATE"]
