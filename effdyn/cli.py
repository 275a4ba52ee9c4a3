"""The ``effdyn`` command line (also ``python -m effdyn``).

::

    effdyn validate [--quick | --full] [--cases NAME ...] [--config FILE ...] [--out DIR] [--cifar PATH]
                    [--peer-data PATH]
    effdyn run CONFIG.toml [--out DIR]
    effdyn plot RESULT.nc [--out DIR] [--combined [--facets] [--window K0 K1]]
    effdyn sweep SWEEP.toml [--out DIR] [--scheduler ADDRESS | --workers N | --serial]
    effdyn sweep --plot-only SWEEP.nc [--out DIR]
    effdyn cases

Exit status: 0 when every case ran (a model that diverges or fails is a result and is
reported in the tables), 1 when a case could not run or its GD did not finish, 2 for a
usage or configuration error (nothing is run), 130 after Ctrl-C (what was computed is
saved first and the command says where).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(msg: str) -> None:
    print(f"effdyn: error: {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effdyn",
        description="Effective continuous-time models of gradient descent at the Edge of Stability, "
                    "validated against discrete GD.",
    )
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register models, problems and cases with "
                             "effdyn.registry); repeatable; also $EFFDYN_PLUGINS and the entry points of the "
                             "group effdyn.plugins")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    v = sub.add_parser("validate", help="run the validation cases and write a report",
                       description="Run every model against GD on the validation cases; write report.md, "
                                   "one netCDF file and four figures per case.")
    mode = v.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="quick horizons (default; what `make run` runs, a few minutes)")
    mode.add_argument("--full", dest="quick", action="store_false", help="full horizons and sizes")
    v.add_argument("--cases", nargs="+", metavar="NAME", help="run only these cases (see `effdyn cases`)")
    v.add_argument("--config", nargs="+", action="extend", metavar="FILE",
                   help="run these TOML configurations as cases (their [case], [quick] and [full] tables apply); "
                        "without --cases, only these run")
    v.add_argument("--out", default="effdyn-output", metavar="DIR", help="output folder (default: effdyn-output)")
    v.add_argument("--cifar", metavar="PATH",
                   help="local `cifar-10-batches-py` folder; adds the CIFAR-10 cases (default: $EFFDYN_CIFAR10)")
    v.add_argument("--peer-data", metavar="PATH",
                   help="local folder with the peer MLP's x.npy, y.npy, p0.npy (the JAX central-flow example); adds "
                        "the peer-mlp case (default: $EFFDYN_PEER_MLP)")
    v.add_argument("--steps", type=int, metavar="N", help="override every case's horizon (GD steps)")
    v.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    v.add_argument("--model-budget", type=float, metavar="SECONDS",
                   help="wall-time limit of each model run; 0 for none (default: 15 s with --quick, none with --full; the digits case allows its free-energy map 90 s)")
    _progress_flags(v)

    r = sub.add_parser("run", help="run one problem and its models from a TOML config",
                       description="Run GD and the models of a TOML configuration (see validation/example.toml).")
    r.add_argument("config", metavar="CONFIG.toml")
    r.add_argument("--out", metavar="DIR", help="output folder (default: [output] dir of the config, else effdyn-run)")
    _progress_flags(r)

    p = sub.add_parser("plot", help="redraw the figures of a saved result",
                       description="Draw the PNG figures of a netCDF result written by effdyn: one per panel "
                                   "(what `effdyn validate` draws), or all panels in one figure with --combined.")
    p.add_argument("result", metavar="RESULT.nc")
    p.add_argument("--out", metavar="DIR", help="folder for the figures (default: next to the file)")
    p.add_argument("--combined", action="store_true",
                   help="one figure <name>_panels.png with every panel (effdyn.plot) instead of one file per panel")
    p.add_argument("--facets", action="store_true", help="with --combined: one column of panels per model")
    p.add_argument("--window", nargs=2, type=float, metavar=("K0", "K1"),
                   help="with --combined: show GD steps K0..K1 only")

    _sweep_parser(sub)

    sub.add_parser("cases", help="list the validation cases")
    return parser


def _sweep_parser(sub):
    s = sub.add_parser("sweep", help="run a parameter sweep (on Dask) and draw its phase diagram",
                       description="Run every point of a sweep file (a run configuration plus [axes]; see "
                                   "docs/sweeps.md) on a local cluster of worker processes, an existing Dask "
                                   "scheduler or serially. Rerunning the same command runs only the missing points.")
    s.add_argument("sweep", metavar="SWEEP.toml", help="sweep file (with --plot-only: the merged SWEEP.nc)")
    s.add_argument("--out", metavar="DIR",
                   help="output folder (default: [output] dir of the file, else effdyn-sweep; with --plot-only: "
                        "next to the file)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running Dask scheduler, e.g. tcp://host:8786, or slurm|pbs|sge|lsf to "
                            "start worker jobs with dask-jobqueue (default: $EFFDYN_SCHEDULER, else a local cluster)")
    where.add_argument("--serial", action="store_true", help="run every point in this process, without Dask")
    s.add_argument("--workers", type=int, metavar="N",
                   help="workers of the local cluster (default: the cores), or jobs with --scheduler slurm")
    s.add_argument("--retry-failed", action="store_true", help="also rerun points whose saved record is a failure")
    s.add_argument("--plot-only", action="store_true", help="only draw the phase diagram of a merged SWEEP.nc")
    s.add_argument("--merge-only", action="store_true",
                   help="only merge the saved point records into DIR/<name>.nc (nothing runs)")
    s.add_argument("--no-figures", dest="figures", action="store_false", help="skip the phase-diagram PNG")
    _progress_flags(s)


def _blas_threads(n):
    """Limit BLAS threads for the run (default 1).

    effdyn's linear algebra works on small blocks (P × r factors, Ritz problems, dense
    Hessians of at most a few hundred rows), where a multi-threaded BLAS spends more time
    synchronising than computing; on a busy 2-core machine the warm-started eigen-tracking of
    the digits case ran 15-20 times slower with OpenBLAS's default threads than with one.
    """
    import contextlib

    if n is None:
        n = int(os.environ.get("EFFDYN_BLAS_THREADS", "1") or 1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=max(1, int(n)), user_api="blas")


def _progress_flags(p):
    p.add_argument("--blas-threads", type=int, metavar="N",
                   help="BLAS threads (default 1, or $EFFDYN_BLAS_THREADS): effdyn's matrices are small")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show progress bars (default: only on a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def _cmd_cases(args) -> int:
    from .validation.cases import case_names, get_case

    for case in (get_case(n) for n in case_names()):
        needs = getattr(case, "needs", None)
        extra = f"  (needs {needs})" if needs else ""
        if getattr(case, "full_only", False):
            extra += "  (full suite only)"
        print(f"{case.name:22s} {case.title}; quick {case.quick_steps} / full {case.full_steps} steps{extra}")
    return EXIT_OK


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_validate(args) -> int:
    from .data import CIFAR10_ENV, PEER_MLP_ENV, check_cifar10_folder, check_peer_mlp_folder
    from .validation import UnknownCaseError, ValidationInterrupted, get_case, validate
    from .validation.config import ConfigError

    try:
        names = None
        if args.cases:
            names = []
            for n in args.cases:
                get_case(n)
                if n not in names:
                    names.append(n)
        cifar = args.cifar if args.cifar is not None else (os.environ.get(CIFAR10_ENV) or None)
        needs = [n for n in names or () if get_case(n).needs_cifar]
        if cifar is not None:
            check_cifar10_folder(cifar)
        elif needs:
            _err(f"case{'s' if len(needs) > 1 else ''} {', '.join(needs)} need{'' if len(needs) > 1 else 's'} a local "
                 "CIFAR-10 copy: pass `--cifar PATH` (a `cifar-10-batches-py` folder) or set "
                 f"${CIFAR10_ENV}. effdyn never downloads data.")
            return EXIT_USAGE
        peer_data = args.peer_data if args.peer_data is not None else (os.environ.get(PEER_MLP_ENV) or None)
        needs = [n for n in names or () if getattr(get_case(n), "needs_peer_data", False)]
        if peer_data is not None:
            check_peer_mlp_folder(peer_data)
        elif needs:
            _err(f"case {', '.join(needs)} needs the peer MLP's arrays: pass `--peer-data PATH` (a folder with "
                 f"x.npy, y.npy, p0.npy) or set ${PEER_MLP_ENV}. effdyn never downloads data.")
            return EXIT_USAGE
        if args.steps is not None and args.steps < 1:
            _err(f"`--steps` must be a positive number of GD steps; got {args.steps}.")
            return EXIT_USAGE
        budget = "auto"
        if args.model_budget is not None:
            if not args.model_budget >= 0:
                _err(f"`--model-budget` must be a number of seconds >= 0 (0: no limit); got {args.model_budget}.")
                return EXIT_USAGE
            budget = args.model_budget or None
        # every configuration is parsed and its models built before anything runs
        config_cases = [_config_case(path, args.quick, cifar, peer_data) for path in (args.config or [])]
    except UnknownCaseError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except (FileNotFoundError, ConfigError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    taken = set(names or ())
    for case in config_cases:
        if case.name in taken:
            _err(f"--config: two cases are called {case.name!r}; give the configurations different `name`s.")
            return EXIT_USAGE
        taken.add(case.name)
    if config_cases and names is None:
        names = []

    problem = _output_folder_problem(Path(args.out))
    if problem is not None:
        _err(problem)
        return EXIT_USAGE
    mode = "quick" if args.quick else "full"
    _log(f"effdyn validate ({mode}) -> {args.out}")
    with _registered(config_cases):
        try:
            result = validate(None if names is None else names + [c.name for c in config_cases], quick=args.quick,
                              out_dir=args.out, cifar=cifar, steps=args.steps, progress=args.progress, log=_log,
                              figures=args.figures, model_budget=budget, peer_data=peer_data)
        except ValidationInterrupted as exc:
            res = exc.result
            _err(f"interrupted; results computed so far are saved in {res.out_dir} (report: {res.report}).")
            return EXIT_INTERRUPTED
    print(f"Report: {result.report}")
    print(f"Total wall time: {result.wall_time:.1f} s")
    failed = [c for c in result.cases if c.status != "ok"]
    for c in failed:
        _err(f"case {c.name}: {c.status}: {c.message}")
    return EXIT_OK if not failed else EXIT_FAILED


def _config_case(path, quick: bool, cifar, peer_data=None):
    """A validation case from a TOML configuration (checked now; its setup is reused)."""
    import dataclasses

    from .validation.cases import Case, case_names
    from .validation.config import ConfigError, load_config

    cfg = load_config(path, mode="quick" if quick else "full", cifar=cifar, peer_data=peer_data)
    if cfg.name in case_names():
        raise ConfigError(f"{cfg.path}: name: {cfg.name!r} is already a validation case; set another `name`.")
    table = cfg.case
    quick_steps = int(table.get("quick_steps", cfg.setup.steps))
    full_steps = int(table.get("full_steps", cfg.setup.steps))

    def build(steps, quick, cifar=None, _setup=cfg.setup):
        return dataclasses.replace(_setup, steps=int(steps))

    title = str(table.get("title", f"{cfg.name} ({cfg.path.name})"))
    return Case(cfg.name, title, build, needs_cifar=bool(table.get("needs_cifar", False)),
                quick_steps=quick_steps, full_steps=full_steps)


class _registered:
    """Register configuration cases for one validate call, and forget them afterwards."""

    def __init__(self, cases):
        self.cases = cases

    def __enter__(self):
        from . import registry

        for case in self.cases:
            registry.register_case(case)

    def __exit__(self, *exc):
        from . import registry

        for case in self.cases:
            registry._CASES.pop(case.name, None)
        return False


def _cmd_run(args) -> int:
    from .validation.config import ConfigError, load_config
    from .validation.report import write_report
    from .validation.runner import CaseInterrupted, ValidationResult, run_setup

    try:
        cfg = load_config(args.config)
    except (ConfigError, FileNotFoundError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    out_dir = Path(args.out or cfg.out_dir or "effdyn-run")
    problem = _output_folder_problem(out_dir)
    if problem is not None:
        _err(problem)
        return EXIT_USAGE
    _log(f"effdyn run {cfg.path} -> {out_dir}")
    t0 = time.perf_counter()
    result = ValidationResult([], out_dir, None, quick=False)
    try:
        case = run_setup(cfg.name, f"{cfg.name} ({cfg.path.name})", cfg.setup, out_dir=out_dir,
                         progress=args.progress, log=_log, figures=cfg.figures)
    except CaseInterrupted as exc:
        result.cases.append(exc.result)
        result.interrupted = True
        result.wall_time = time.perf_counter() - t0
        report = write_report(result, out_dir / f"{cfg.name}_report.md")
        _err(f"interrupted; results computed so far are saved in {out_dir} (report: {report}).")
        return EXIT_INTERRUPTED
    result.cases.append(case)
    result.wall_time = time.perf_counter() - t0
    report = write_report(result, out_dir / f"{cfg.name}_report.md")
    print(f"Report: {report}")
    if case.status != "ok":
        _err(f"{case.status}: {case.message}")
        return EXIT_FAILED
    return EXIT_OK


def _output_folder_problem(out_dir: Path) -> str | None:
    """Create the output folder and check that a file can be written in it; a one-line
    reason when that is impossible (checked before anything runs)."""
    import tempfile

    if out_dir.exists() and not out_dir.is_dir():
        return f"`--out` {str(out_dir)!r} is a file, not a folder; pass a folder for the results."
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"`--out` {str(out_dir)!r} cannot be created ({exc.strerror or exc}); pass a writable folder."
    # os.access answers yes to root even on read-only or virtual file systems: try a file
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".effdyn-write-test-"):
            pass
    except OSError as exc:
        return f"`--out` {str(out_dir)!r} is not writable ({exc.strerror or exc}); pass a writable folder."
    return None


def _cmd_plot(args) -> int:
    from .plotting import plot, plot_result

    if (args.facets or args.window) and not args.combined:
        _err("`--facets` and `--window` apply to the combined figure: add `--combined`.")
        return EXIT_USAGE
    try:
        if args.combined:
            from .io import atomic_write

            src = Path(args.result)
            fig = plot(src, window=None if args.window is None else tuple(args.window), facets=args.facets)
            out = (src.parent if args.out is None else Path(args.out)) / f"{src.stem}_panels.png"
            paths = [atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))]
        else:
            paths = plot_result(args.result, args.out)
    except (FileNotFoundError, ValueError, TypeError, OSError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    for p in paths:
        print(p)
    return EXIT_OK


def _cmd_sweep(args) -> int:
    from .sweep import JOBQUEUE_KINDS, SCHEDULER_ENV, SweepError, SweepInterrupted, load_sweep, merge_sweep, plot_sweep, run_sweep

    if args.plot_only:
        try:
            paths = plot_sweep(args.sweep, args.out)
        except (FileNotFoundError, ValueError, OSError) as exc:
            _err(str(exc))
            return EXIT_USAGE
        for p in paths:
            print(p)
        return EXIT_OK
    if args.workers is not None and args.workers < 1:
        _err(f"`--workers` must be a positive number of worker processes; got {args.workers}.")
        return EXIT_USAGE
    where = args.scheduler or os.environ.get(SCHEDULER_ENV)
    if args.workers is not None and (args.serial or (where and where not in JOBQUEUE_KINDS)):
        _err("`--workers` sizes the local cluster (or the jobs of `--scheduler slurm|pbs|sge|lsf`); it cannot be "
             f"combined with --serial or a scheduler address (size an existing cluster where it runs).")
        return EXIT_USAGE
    if where in JOBQUEUE_KINDS and args.workers is None and not args.serial:
        _err(f"`--scheduler {where}` starts worker jobs through dask-jobqueue: say how many with `--workers N`.")
        return EXIT_USAGE
    try:
        sweep = load_sweep(args.sweep)
    except (SweepError, FileNotFoundError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    if args.merge_only:
        path, ds = merge_sweep(sweep, args.out)
        print(path)
        _log(f"{ds.attrs['n_done']} of {ds.attrs['n_points']} points on disk, {ds.attrs['n_failed']} failed")
        return EXIT_OK
    try:
        result = run_sweep(sweep, args.out, scheduler=args.scheduler, n_workers=args.workers, serial=args.serial,
                           retry_failed=args.retry_failed, progress=args.progress, log=_log)
    except SweepInterrupted as exc:
        _err(str(exc))
        return EXIT_INTERRUPTED
    except OSError as exc:  # e.g. no scheduler at the given address
        _err(f"could not reach the Dask scheduler: {exc}")
        return EXIT_FAILED
    except ImportError as exc:  # dask / dask-jobqueue not installed
        _err(str(exc))
        return EXIT_USAGE
    print(result.path)
    if args.figures:
        try:
            for p in plot_sweep(result.dataset, result.path.parent, prefix=sweep.name):
                print(p)
        except Exception as exc:  # noqa: BLE001 - the results are saved; a figure failure is reported only
            _err(f"drawing the phase diagram failed: {type(exc).__name__}: {exc}")
    errors = int((result.dataset["point_status"].values == "error").sum())
    if errors:
        _err(f"{errors} point(s) failed with an error; their messages are in {result.path} (variable `point_message`); "
             "rerun with --retry-failed after fixing the cause.")
        return EXIT_FAILED
    return EXIT_OK


def main(argv=None) -> int:
    """Entry point of the ``effdyn`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = {"validate": _cmd_validate, "run": _cmd_run, "plot": _cmd_plot, "sweep": _cmd_sweep,
               "cases": _cmd_cases}[args.command]
    try:
        from .registry import load_plugins

        load_plugins(args.plugin)
    except Exception as exc:
        _err(f"{exc}")
        return EXIT_USAGE
    try:
        with _blas_threads(getattr(args, "blas_threads", None)):
            return handler(args)
    except KeyboardInterrupt:
        _err("interrupted before any result was computed.")
        return EXIT_INTERRUPTED
