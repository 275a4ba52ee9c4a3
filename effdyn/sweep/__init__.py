"""Parameter sweeps over ``effdyn run`` configurations, on Dask.

A sweep file is a run configuration (validation/example.toml) plus an ``[axes]`` table
of dotted keys into it and their values, and an optional ``[sweep]`` table::

    [axes]
    "problem.sigma1" = { linspace = [4.5, 6.5, 41] }

    [sweep]
    mode = "grid"                       # or "zip"

:func:`run_sweep` runs every point (GD, its models, the comparison) on a local cluster of
worker processes, an existing Dask scheduler or serially, saves each point as a JSON record
the moment it finishes, and merges them into one netCDF Dataset with a dimension per axis.
Rerunning the same sweep runs only the missing points. :func:`plot_sweep` draws the phase
diagram. Details: docs/sweeps.md.
"""

from ._execute import (JOBQUEUE_KINDS, SCHEDULER_ENV, SweepInterrupted, SweepResult, jobqueue_cluster, local_cluster,
                       merge_sweep, run_sweep)
from ._plot import plot_sweep
from ._point import BLAS_ENV, run_point
from ._spec import Axis, Point, Sweep, SweepError, canonical_json, load_sweep, point_key
from ._summary import LAWS, PERIOD_RULE, Law, detect_period, gd_summary

__all__ = [
    "run_sweep", "load_sweep", "merge_sweep", "plot_sweep", "run_point", "local_cluster", "jobqueue_cluster",
    "Sweep", "Axis", "Point", "SweepResult", "SweepError", "SweepInterrupted",
    "detect_period", "gd_summary", "LAWS", "Law", "PERIOD_RULE", "BLAS_ENV", "SCHEDULER_ENV", "JOBQUEUE_KINDS",
    "canonical_json", "point_key",
]
