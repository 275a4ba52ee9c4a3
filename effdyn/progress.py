"""Progress of long runs, on a terminal and in scripts.

One helper, :func:`progress_meter`, serves GD and the solvers:

* on a terminal (or in a Jupyter kernel) it is a tqdm bar, as before;
* off a terminal (a script whose stderr goes to a log file, a batch job) a bar would fill
  the log with carriage returns, so instead it writes one status line every ``N`` seconds:
  ``effdyn: GD (gd, eta=0.3): 12000/60000 steps (20%), 35 s elapsed, about 141 s left,
  341 steps/s, loss=0.0123``. The line goes to the logger ``"effdyn"`` when logging is
  configured to show it (a handler on that logger or its parents, e.g. from
  ``logging.basicConfig(level=logging.INFO)``; the record's level is INFO), and to stderr
  otherwise, so that asking for progress always shows it somewhere.

Which one, from ``progress`` and the environment variable ``EFFDYN_PROGRESS_EVERY``
(seconds between status lines, default 30):

==============  ===========================  ==============================================
``progress``    terminal / Jupyter           elsewhere (script, log file)
==============  ===========================  ==============================================
``None``        bar when ``total`` is large  status lines only if EFFDYN_PROGRESS_EVERY is set
``True``        bar                          status lines
``False``       nothing                      nothing
==============  ===========================  ==============================================

"Large" is the caller's ``min_total`` (GD: 20 000 steps; the solvers: 2000), so that short
runs stay quiet on a terminal as they always were.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time

__all__ = ["progress_meter", "ProgressMeter", "ENV_EVERY", "DEFAULT_EVERY"]

#: Environment variable: seconds between status lines off a terminal.
ENV_EVERY = "EFFDYN_PROGRESS_EVERY"
#: Seconds between status lines when ``progress=True`` and the variable is not set.
DEFAULT_EVERY = 30.0

logger = logging.getLogger("effdyn")


def _env_every():
    """The interval from ``EFFDYN_PROGRESS_EVERY``, or None when unset or empty."""
    raw = os.environ.get(ENV_EVERY, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"${ENV_EVERY} must be a number of seconds >= 0 between progress lines; got {raw!r}. "
                         "Unset it to turn the lines off.")
    return value


def _interactive(stream) -> bool:
    """True on a terminal or in a Jupyter kernel (where tqdm.auto draws a widget)."""
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # closed or replaced streams
        pass
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def progress_meter(total, progress=None, desc: str = "", unit: str = "step", *, min_total: float = 0,
                   every: float | None = None, stream=None, **bar_options):
    """A progress display for a run of ``total`` units (see the module notes for the rules).

    Parameters
    ----------
    total : float
        Length of the run, in ``unit`` (GD steps for GD and the solvers).
    progress : bool or None
        True: always report; False: never; None: a bar on a terminal for runs of at least
        ``min_total`` units, and status lines elsewhere only when ``$EFFDYN_PROGRESS_EVERY``
        asks for them.
    desc : str
        What runs (starts every status line and labels the bar).
    unit : str
        Unit of ``total`` and of ``update``.
    min_total : float
        Shortest run that gets a bar with ``progress=None``.
    every : float, optional
        Seconds between status lines (default ``$EFFDYN_PROGRESS_EVERY``, else 30).
        0 writes a line at every update.
    stream : file-like, optional
        Where the bar or the status lines go when logging is not configured (default:
        ``sys.stderr``); also decides whether we are on a terminal.
    **bar_options
        Passed on to ``tqdm`` (``leave``, ``bar_format``, ...).

    Returns
    -------
    ProgressMeter
        With ``update(n)``, ``set_postfix(**values)``, ``close()``; also a context manager.

    Examples
    --------
    >>> with progress_meter(1000, progress=False, desc="demo") as meter:
    ...     for _ in range(10):
    ...         meter.update(100)
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None (automatic); got {progress!r}.")
    try:
        total = float(total)
    except (TypeError, ValueError):
        raise TypeError(f"`total` must be a number of {unit}s; got {total!r}.") from None
    if progress is False:
        return ProgressMeter(total, desc, unit)
    stream = sys.stderr if stream is None else stream
    env = _env_every()
    if _interactive(stream):
        if progress or total >= min_total:
            return _BarMeter(total, desc, unit, stream, bar_options)
        return ProgressMeter(total, desc, unit)
    if progress is None and env is None and every is None:
        return ProgressMeter(total, desc, unit)
    interval = every if every is not None else env if env is not None else DEFAULT_EVERY
    if not (isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval >= 0):
        raise ValueError(f"`every` must be a number of seconds >= 0; got {interval!r}.")
    return _LineMeter(total, desc, unit, stream, float(interval))


class ProgressMeter:
    """Counts progress and shows nothing: the base of the bar and the status lines, and what
    :func:`progress_meter` returns when nothing is to be shown."""

    def __init__(self, total: float, desc: str = "", unit: str = "step"):
        self.total = float(total)
        self.desc = desc
        self.unit = unit
        self.n = 0.0
        self.postfix: dict = {}
        self.closed = False
        self._t0 = time.perf_counter()

    @property
    def active(self) -> bool:
        """Whether anything is displayed."""
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` units (floats allowed: adaptive solvers move by fractions of a step)."""
        self.n += n

    def set_postfix(self, **values) -> None:
        """Values shown after the counts (e.g. ``loss=...``), replacing the previous ones."""
        self.postfix = dict(values)

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _BarMeter(ProgressMeter):
    def __init__(self, total, desc, unit, stream, bar_options):
        super().__init__(total, desc, unit)
        from tqdm.auto import tqdm

        options = {"file": stream, **bar_options}
        self._bar = tqdm(total=total, desc=desc, unit=unit, **options)

    @property
    def active(self) -> bool:
        return True

    def update(self, n: float = 1) -> None:
        super().update(n)
        self._bar.update(n)

    def set_postfix(self, **values) -> None:
        super().set_postfix(**values)
        self._bar.set_postfix(**values)

    def close(self) -> None:
        if not self.closed:
            self._bar.close()
        super().close()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class _LineMeter(ProgressMeter):
    def __init__(self, total, desc, unit, stream, every):
        super().__init__(total, desc, unit)
        self.every = every
        self.stream = stream
        self.lines = 0
        self._last = self._t0

    @property
    def active(self) -> bool:
        return True

    def update(self, n: float = 1) -> None:
        super().update(n)
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._emit(self.status())

    def status(self, done: bool = False) -> str:
        """The status line as it would be written now."""
        elapsed = self.elapsed
        units = self.unit + "s"
        head = f"effdyn: {self.desc}: " if self.desc else "effdyn: "
        if done:
            text = f"{head}finished {self.n:.0f}/{self.total:.0f} {units} in {_duration(elapsed)}"
        else:
            pct = f" ({100 * self.n / self.total:.0f}%)" if self.total > 0 else ""
            text = f"{head}{self.n:.0f}/{self.total:.0f} {units}{pct}, {_duration(elapsed)} elapsed"
            rate = self.n / elapsed if elapsed > 0 else 0.0
            if rate > 0 and self.total > self.n:
                text += f", about {_duration((self.total - self.n) / rate)} left"
            if rate > 0:
                text += f", {rate:.3g} {units}/s"
        if self.postfix:
            text += ", " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        return text

    def _emit(self, text: str) -> None:
        self.lines += 1
        if logger.hasHandlers() and logger.isEnabledFor(logging.INFO):
            logger.info(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        # a closing line only for runs that reported along the way: short runs stay silent
        if not self.closed and self.lines:
            self._emit(self.status(done=True))
        super().close()
