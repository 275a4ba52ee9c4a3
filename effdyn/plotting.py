"""Figures of GD against effective models, from objects in memory or from saved files.

Two ways in, one way of drawing:

* :func:`plot` takes what a script or notebook holds (``traj = ed.gd(...)``,
  ``sol = ed.solve(...)``; also a saved case file or its Dataset) and returns a
  ``matplotlib.figure.Figure`` with one panel per quantity, or one column per model with
  ``facets=True``;
* :func:`plot_case`, :func:`plot_solution` and :func:`plot_result` write the PNG files of a
  saved result (``effdyn validate``, ``effdyn run``, ``effdyn plot RESULT.nc``).

Both turn their input into the same series (GD's raw and two-step averaged series, each
model's series) and hand them to the same panel functions, so a figure drawn from objects
and one redrawn from the file they were saved to look the same.

Panels
------
``loss``
    GD's loss (faint) and its two-step average ½(E_k + E_{k+1}) (bold), each model's
    predicted time-averaged loss (``time_avg_loss``, F = E + ½⟨H, Σ⟩ for the free-energy
    flow) and, shaded, the loss range E(θ ± a·v₁) a model predicts GD to visit
    (``envelope_minus`` .. ``envelope_plus``) where the model provides it. Log scale when the
    loss is positive and spans two decades (``logy="auto"``).
``sharpness``
    GD's sharpness (faint) and its two-step average (bold), each model's sharpness and the
    stability threshold 2/η. For mean-field networks (``TwoLayerNet`` with mean-field
    scaling) the panel is in mean-field units, as in the docs: S_MF = N·λ_max and 2/η_MF,
    with η_MF = η/N.
``amplitude``
    GD's half-step amplitude |v₁·(θ_{k+1} − θ_k)|/2 and each model's predicted amplitude
    (log scale).
``distance``
    ‖θ_model(k) − θ̄_GD(k)‖ at GD's two-step midpoints θ̄_k (log scale).

Colours and line styles
-----------------------
GD is black: its every-step series thin and faint, its time averages bold. Each model
*family* (the model class: every ``FreeEnergyFlow`` run, whatever its closure, storage or
solver) has one colour; runs of the same family are told apart by line style, in order of
appearance: solid, dashed, dash-dot, dotted, then denser dashes. The 2/η line is a crimson
dotted line. Colours are fixed for the built-in models, so a model keeps its colour from
figure to figure.

matplotlib is imported here only, through ``matplotlib.figure.Figure`` (no pyplot): figures
are drawn without a display and the user's backend is never changed.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ._names import slug

__all__ = ["plot", "plot_case", "plot_solution", "plot_result", "CASE_FIGURES", "PANELS", "FAMILY_COLORS",
           "LINESTYLES"]

#: Quantities :func:`plot` can draw, in their default order.
PANELS = ("loss", "sharpness", "amplitude", "distance")
#: Names of the per-case figures written by :func:`plot_case`, in order.
CASE_FIGURES = PANELS

#: Colour of each built-in model family (model class name).
FAMILY_COLORS = {
    "FreeEnergyFlow": "#1f77b4",
    "CentralFlow": "#ff7f0e",
    "GradientFlow": "#2ca02c",
    "SelfStabilization": "#9467bd",
    "RodFlow": "#8c564b",
    "EdgeFlow": "#e377c2",
    "SharpnessReductionFlow": "#bcbd22",
    "MeanFieldKinetic": "#17becf",
}
# further families, in order of appearance (none of them grey or red: GD and 2/η)
_EXTRA_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
#: Line styles of the runs within one family, in order of appearance.
LINESTYLES = ("-", "--", "-.", ":", (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 1)), (0, (8, 2)))

_GD_COLOR = "black"
_EDGE_COLOR = "crimson"


# --- the series every figure is drawn from -------------------------------------------------

@dataclass
class _GD:
    """GD's series, each (k, values) or None."""

    loss: tuple | None = None
    loss_average: tuple | None = None
    sharpness: tuple | None = None
    sharpness_average: tuple | None = None
    amplitude: tuple | None = None
    variant: str = "gd"


@dataclass
class _Model:
    """One model run: its label, family (model class) and series (name -> (k, values))."""

    label: str
    family: str
    status: str = "success"
    series: dict = field(default_factory=dict)
    color: str = "C0"
    linestyle: object = "-"

    @property
    def legend(self) -> str:
        return self.label if self.status in ("", "success") else f"{self.label} ({self.status})"


@dataclass
class _Data:
    """What a figure shows: GD (or None), the models, η and the sharpness units."""

    gd: _GD | None
    models: list
    eta: float = float("nan")
    title: str = ""
    width: int | None = None  # N of a mean-field network: sharpness shown as S_MF = N·λ
    onset: float | None = None
    xlim: tuple | None = None  # the window, when one was asked for

    @property
    def sharp_factor(self) -> float:
        return float(self.width) if self.width else 1.0

    @property
    def edge(self) -> float:
        """Stability threshold in the units of the sharpness panel (NaN: none to draw)."""
        if not np.isfinite(self.eta) or (self.gd is not None and self.gd.variant != "gd"):
            return float("nan")  # the normalised and √E variants drift far below 2/η
        return 2.0 / self.eta * self.sharp_factor  # 2/η_MF = 2N/η


def _curve(k, v):
    k = np.asarray(k, dtype=float).ravel()
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or len(k) != len(v) or not len(k):
        return None
    return k, v


def _assign_styles(models) -> None:
    """One colour per family, one line style per run within a family (module notes)."""
    colors, counts, extra = {}, {}, iter(_EXTRA_COLORS * 4)
    for m in models:
        if m.family not in colors:
            colors[m.family] = FAMILY_COLORS.get(m.family) or next(extra)
        i = counts.get(m.family, 0)
        counts[m.family] = i + 1
        m.color, m.linestyle = colors[m.family], LINESTYLES[i % len(LINESTYLES)]


def _mean_field_width(problem_config) -> int | None:
    """N when the problem is a two-layer network in mean-field scaling (S_MF = N·λ)."""
    if isinstance(problem_config, dict) and problem_config.get("scaling") == "mean-field":
        width = problem_config.get("width")
        if isinstance(width, (int, np.integer)) and width > 0:
            return int(width)
    return None


# --- from objects ------------------------------------------------------------------------------

def _is_trajectory(obj) -> bool:
    return all(hasattr(obj, a) for a in ("midpoint", "loss_average", "eig_k", "half_amp"))


def _is_solution(obj) -> bool:
    return all(hasattr(obj, a) for a in ("observables", "model", "k", "y", "stats"))


def _gd_from_trajectory(traj):
    gd = _GD(variant=str(getattr(traj, "variant", "gd")))
    gd.loss = _curve(traj.k, traj.loss)
    if len(traj.k) >= 2:
        gd.loss_average = _curve(*traj.loss_average())
    eig_k = np.asarray(traj.eig_k, dtype=float)
    sharp = np.asarray(traj.sharpness, dtype=float)
    if len(eig_k):
        gd.sharpness = _curve(eig_k, sharp)
        if len(eig_k) > 1 and np.all(np.diff(eig_k) == 1):  # every step: average two steps
            gd.sharpness_average = _curve(eig_k[:-1], 0.5 * (sharp[:-1] + sharp[1:]))
        else:
            gd.sharpness_average = gd.sharpness
        try:
            gd.amplitude = _curve(*traj.amplitude())
        except ValueError:
            pass
    mid_k, mid = traj.midpoint()
    return gd, (np.asarray(mid_k, dtype=float), np.asarray(mid, dtype=float))


def _distance(mid_k, mid, k, theta):
    """‖θ_model(k) − θ̄_GD(k)‖ at GD's midpoint steps within the model's time span."""
    k = np.asarray(k, dtype=float)
    theta = np.asarray(theta, dtype=float)
    if len(k) < 2 or not len(mid_k) or theta.ndim != 2 or theta.shape[1] != mid.shape[1]:
        return None
    sel = (mid_k >= k[0]) & (mid_k <= k[-1])
    if not np.any(sel):
        return None
    tm = np.stack([np.interp(mid_k[sel], k, theta[:, j]) for j in range(theta.shape[1])], axis=1)
    return mid_k[sel], np.sqrt(np.sum((tm - mid[sel]) ** 2, axis=1))


_MODEL_SERIES = ("loss", "time_avg_loss", "sharpness", "amplitude", "envelope_plus", "envelope_minus")


def _model_from_solution(sol, label, midpoint):
    model = sol.model
    m = _Model(label, type(model).__name__, str(getattr(sol, "status", "success")))
    if len(sol.k) == 0:
        return m
    try:
        obs = sol.observables
    except Exception as exc:  # e.g. a diverged run ending on non-finite states
        warnings.warn(f"plot: the observables of {label!r} could not be computed ({type(exc).__name__}: {exc}); "
                      "it is left out of the figure.", RuntimeWarning, stacklevel=3)
        return m
    for name in _MODEL_SERIES:
        if name in obs:
            c = _curve(sol.k, obs[name])
            if c is not None:
                m.series[name] = c
    if midpoint is not None:
        theta = obs["theta"] if "theta" in obs else sol.theta
        d = _distance(*midpoint, sol.k, theta)
        if d is not None:
            m.series["distance"] = d
    return m


def _default_labels(sols):
    names = [str(getattr(s.model, "name", type(s.model).__name__)) for s in sols]
    labels = []
    for s, name in zip(sols, names):
        if names.count(name) > 1:  # several runs of one model: say which solver made each
            solver = str(getattr(s.stats, "solver", ""))
            name = f"{name} [{solver.split(':')[-1]}]" if solver else name
        labels.append(name)
    counts = {label: labels.count(label) for label in labels}
    seen = {}
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label} #{seen[label]}"
    return labels


def _data_from_objects(traj, sols, labels) -> _Data:
    gd, midpoint, eta, width = None, None, float("nan"), None
    if traj is not None:
        gd, midpoint = _gd_from_trajectory(traj)
        eta = float(traj.eta)
        width = _mean_field_width(getattr(traj, "problem_config", None))
    labels = list(labels) if labels is not None else _default_labels(sols)
    models = [_model_from_solution(s, lab, midpoint) for s, lab in zip(sols, labels)]
    if sols and not np.isfinite(eta):
        eta = float(sols[0].model.eta)
    if width is None:
        for s in sols:
            problem = getattr(s.model, "problem", None)
            try:
                width = _mean_field_width(problem.config()) if problem is not None else None
            except Exception:
                width = None
            if width:
                break
    onset = traj.eos_onset() if traj is not None and hasattr(traj, "eos_onset") else None
    return _Data(gd, models, eta=eta, width=width, onset=onset)


# --- from saved files ------------------------------------------------------------------------

def _ds_curve(ds, name):
    if name not in ds:
        return None
    var = ds[name]
    if var.ndim != 1:
        return None
    return _curve(var[var.dims[0]].values, var.values)


def _json_attr(ds, key):
    try:
        return json.loads(str(ds.attrs.get(key, "{}")))
    except (TypeError, ValueError):
        return {}


def _data_from_case(ds) -> _Data:
    """The series of a validation case file (:func:`effdyn.validation.runner.case_dataset`)."""
    gd = _GD(variant=str(ds.attrs.get("gd_variant", "gd")))
    gd.loss = _ds_curve(ds, "gd_loss")
    gd.loss_average = _ds_curve(ds, "gd_loss_average")
    gd.sharpness = _ds_curve(ds, "gd_sharpness")
    gd.sharpness_average = _ds_curve(ds, "gd_sharpness_average")
    gd.amplitude = _ds_curve(ds, "gd_amplitude")
    models = []
    if "model" in ds.coords:
        for i, label in enumerate(ds.coords["model"].values):
            label = str(label)
            s = slug(label)
            if f"{s}__k" not in ds.coords:
                continue  # a model that produced nothing (unavailable, not applicable, error)
            family = str(ds["model_class"].values[i]) if "model_class" in ds else label
            status = str(ds["status"].values[i]) if "status" in ds else ""
            m = _Model(label, family, status)
            for name in (*_MODEL_SERIES, "distance"):
                c = _ds_curve(ds, f"{s}__{name}")
                if c is not None:
                    m.series[name] = c
            models.append(m)
    onset = int(ds.attrs.get("eos_onset", -1))
    config = _json_attr(ds, "config")
    width = _mean_field_width(config.get("problem")) if isinstance(config, dict) else None
    return _Data(gd, models, eta=float(ds.attrs.get("eta", np.nan)), title=str(ds.attrs.get("title", "")),
                 width=width, onset=onset if onset >= 0 else None)


def _data_from_solution_ds(ds) -> _Data:
    """The series of a saved Solution (``Solution.save``): one model, no GD."""
    config = _json_attr(ds, "config")
    family = str(ds.attrs.get("model", "model"))
    label = str(config.get("model", family)) if isinstance(config, dict) else family
    m = _Model(label, family, str(ds.attrs.get("status", "success")))
    for name in _MODEL_SERIES:
        c = _ds_curve(ds, name)
        if c is not None:
            m.series[name] = c
    width = _mean_field_width(config.get("problem")) if isinstance(config, dict) else None
    return _Data(None, [m], eta=float(ds.attrs.get("eta", np.nan)), title=label, width=width)


def _data_from_trajectory_ds(ds) -> _Data:
    """The series of a saved GD run (``GDTrajectory.to_xarray``): GD alone."""
    gd = _GD(variant=str(ds.attrs.get("variant", "gd")))
    gd.loss = _ds_curve(ds, "loss")
    if gd.loss is not None and len(gd.loss[0]) >= 2:
        k, v = gd.loss
        gd.loss_average = (k[:-1], 0.5 * (v[:-1] + v[1:]))
    gd.sharpness = gd.sharpness_average = _ds_curve(ds, "sharpness")
    if gd.sharpness is not None and len(gd.sharpness[0]) > 1 and np.all(np.diff(gd.sharpness[0]) == 1):
        k, v = gd.sharpness
        gd.sharpness_average = (k[:-1], 0.5 * (v[:-1] + v[1:]))
    gd.amplitude = _ds_curve(ds, "half_amp") if "eig_k" in ds.coords and ds.sizes.get("eig_k", 0) else None
    eta = float(ds.attrs.get("eta", np.nan))
    onset = None
    if gd.sharpness is not None and np.isfinite(eta):
        above = np.flatnonzero(gd.sharpness[1] > 2 / eta)
        onset = float(gd.sharpness[0][above[0]]) if above.size else None
    width = _mean_field_width(_json_attr(ds, "problem_config"))
    return _Data(gd, [], eta=eta, width=width, onset=onset)


def _is_trajectory_dataset(ds) -> bool:
    return str(ds.attrs.get("kind", "")) == "effdyn.GDTrajectory" and "loss" in ds


def _is_case_dataset(ds) -> bool:
    return "gd_loss" in ds


def _is_solution_dataset(ds) -> bool:
    return "state" in ds and "k" in ds.coords


def _data_from_dataset(ds, source="the dataset") -> _Data:
    if _is_case_dataset(ds):
        return _data_from_case(ds)
    if _is_solution_dataset(ds):
        return _data_from_solution_ds(ds)
    if _is_trajectory_dataset(ds):
        return _data_from_trajectory_ds(ds)
    raise ValueError(
        f"{source} is not an effdyn result: expected a validation case file (with `gd_loss`), a saved Solution "
        "(with `state`) or a saved GD trajectory; pass a .nc file written by `effdyn validate`, `effdyn run`, "
        "Solution.save or GDTrajectory.to_xarray."
    )


# --- windows ---------------------------------------------------------------------------------

def _window_bounds(window, data: _Data):
    if window is None:
        return None
    if isinstance(window, str):
        if window != "eos":
            raise ValueError(f"`window` must be None, 'eos' or a pair (k0, k1) of GD steps; got {window!r}.")
        if data.gd is None or data.gd.loss is None:
            raise ValueError("`window='eos'` needs a GD trajectory (GD's EoS onset starts the window).")
        last = float(data.gd.loss[0][-1])
        if data.onset is None:
            return None  # GD never reached the edge: show everything
        lead = 0.05 * (last - data.onset)  # a little before the onset, so the crossing shows
        return max(0.0, data.onset - lead), last
    try:
        k0, k1 = window
        k0, k1 = float(k0), float(k1)
    except (TypeError, ValueError):
        raise TypeError(f"`window` must be None, 'eos' or a pair (k0, k1) of GD steps; got {window!r}.") from None
    if not (np.isfinite(k0) and np.isfinite(k1) and k0 < k1):
        raise ValueError(f"`window` must satisfy k0 < k1 (finite GD steps); got {window!r}.")
    return k0, k1


def _clip(c, bounds):
    if c is None or bounds is None:
        return c
    k, v = c
    sel = (k >= bounds[0]) & (k <= bounds[1])
    return (k[sel], v[sel]) if np.any(sel) else None


def _windowed(data: _Data, bounds) -> _Data:
    if bounds is None:
        return data
    gd = None
    if data.gd is not None:
        gd = _GD(**{f: _clip(getattr(data.gd, f), bounds) for f in
                    ("loss", "loss_average", "sharpness", "sharpness_average", "amplitude")},
                 variant=data.gd.variant)
    models = []
    for m in data.models:
        series = {n: c for n, c in ((n, _clip(c, bounds)) for n, c in m.series.items()) if c is not None}
        models.append(replace(m, series=series))
    return replace(data, gd=gd, models=models, xlim=tuple(bounds))


# --- panels ----------------------------------------------------------------------------------
# Each panel function draws one quantity of `data` into `ax`. Every artist gets a gid that
# says what it is ("gd:raw", "gd:average", "edge", "model:<label>", "envelope:<label>"), so
# that a figure can be inspected (and tested) without relying on colours.

def _values(*curves):
    vals = [np.ravel(c[1]) for c in curves if c is not None and np.size(c[1])]
    if not vals:
        return np.empty(0)
    vals = np.concatenate(vals)
    return vals[np.isfinite(vals)]


def _gd_raw(ax, c, label, factor=1.0):
    if c is not None:
        ax.plot(c[0], c[1] * factor, color=_GD_COLOR, lw=0.5, alpha=0.3, label=label, gid="gd:raw", zorder=2)


def _gd_average(ax, c, label, factor=1.0):
    # wider than the model lines, which are drawn on top: GD shows as a dark rim around a
    # model that follows it
    if c is not None:
        ax.plot(c[0], c[1] * factor, color=_GD_COLOR, lw=2.6, label=label, gid="gd:average", zorder=2.5)


def _alternates(c) -> bool:
    """Whether a series saved every GD step flips from step to step (a step-exact map in a
    period-two orbit) much more than its two-step average moves."""
    k, v = c
    if len(k) < 8 or not np.allclose(np.diff(k), 1.0):
        return False
    v = v[np.isfinite(v)]
    if len(v) < 8:
        return False
    flips = np.mean(np.abs(np.diff(v)))
    avg = 0.5 * (v[:-1] + v[1:])
    drift = np.mean(np.abs(np.diff(avg)))
    return bool(flips > 5 * drift and flips > 1e-9 * (np.max(np.abs(v)) + 1e-300))


def _model_line(ax, m, c, factor=1.0):
    """A model's series in its family colour and run line style. A series that alternates
    every step is drawn like GD's: faint as it is, and its two-step average in the model's
    style."""
    k, v = c
    if _alternates(c):
        ax.plot(k, v * factor, color=m.color, lw=0.5, alpha=0.3, gid=f"model-raw:{m.label}", zorder=1.5)
        k, v = k[:-1], 0.5 * (v[:-1] + v[1:])
    ax.plot(k, v * factor, color=m.color, ls=m.linestyle, lw=1.3, label=m.legend, gid=f"model:{m.label}", zorder=3)


def _loss_scale(logy, vals):
    """y-scale of the loss panel: ("linear" | "log" | "symlog", linthresh).

    ``logy="auto"``: "log" when the loss is positive and either spans two decades or has
    spikes above 10 times its median; "symlog" when it takes values <= 0 but spikes reach 30
    times its median size (the minimal valley's loss is negative, its catapults positive),
    linear around zero up to 3 times that median size. ``logy=True`` asks for a log scale
    (symlog when values <= 0 occur).
    """
    if logy is False or not vals.size:
        return "linear", None
    positive = bool(np.all(vals > 0))
    if positive and (logy is True or vals.max() / vals.min() >= 100 or vals.max() / np.median(vals) >= 10):
        return "log", None
    size = float(np.median(np.abs(vals)))
    if size <= 0:
        size = float(np.max(np.abs(vals))) or 1.0
    if logy is True or (not positive and np.max(np.abs(vals)) / size >= 30):
        return "symlog", 3 * size
    return "linear", None


def _limit_to(ax, vals, log):
    """Keep the y-range near the reference values, so that one runaway model cannot flatten
    the panel (a model that leaves the range is still drawn up to the edge)."""
    vals = vals[np.isfinite(vals)]
    if log:
        vals = vals[vals > 0]
    if not vals.size:
        return
    cur = ax.get_ylim()
    if log:
        ax.set_ylim(max(cur[0], vals.min() / 3), min(cur[1], vals.max() * 3))
        return
    lo, hi = vals.min(), vals.max()
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    ax.set_ylim(max(cur[0], lo - pad), min(cur[1], hi + pad))


def _panel_loss(ax, data: _Data, logy="auto"):
    gd = data.gd
    if gd is not None:
        _gd_raw(ax, gd.loss, "GD")
        _gd_average(ax, gd.loss_average, "GD, two-step average")
    band_label = "predicted range E(θ ± a·v₁)"
    shown = []
    for m in data.models:
        lo, hi = m.series.get("envelope_minus"), m.series.get("envelope_plus")
        if lo is not None and hi is not None and len(lo[0]) == len(hi[0]):
            ax.fill_between(lo[0], lo[1], hi[1], color=m.color, alpha=0.12, lw=0, gid=f"envelope:{m.label}",
                            label=band_label, zorder=1)
            band_label = "_" + band_label  # one legend entry for all bands
            shown.extend([lo, hi])
        c = m.series.get("time_avg_loss") or m.series.get("loss")
        if c is not None:
            _model_line(ax, m, c)
            shown.append(c)
    ref = _values(gd.loss, gd.loss_average) if gd is not None else _values(*shown)
    scale, linthresh = _loss_scale(logy, ref)
    if scale == "log":
        ax.set_yscale("log")
    elif scale == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
    if gd is not None:
        _limit_to(ax, ref, scale == "log")
    ax.set_ylabel("loss")


def _panel_sharpness(ax, data: _Data):
    f = data.sharp_factor
    mf = data.width is not None
    gd = data.gd
    ref = []
    if gd is not None:
        _gd_raw(ax, gd.sharpness, "GD", f)
        _gd_average(ax, gd.sharpness_average, "GD, two-step average", f)
        ref = [gd.sharpness, gd.sharpness_average]
    for m in data.models:
        c = m.series.get("sharpness")
        if c is not None:
            _model_line(ax, m, c, f)
    edge = data.edge
    if np.isfinite(edge):
        ax.axhline(edge, color=_EDGE_COLOR, lw=1.0, ls=":", label="2/η_MF" if mf else "2/η", gid="edge", zorder=2.2)
    if gd is not None:
        vals = _values(*ref) * f
        _limit_to(ax, np.append(vals, edge) if np.isfinite(edge) else vals, False)
    ax.set_ylabel("S_MF = N·λ_max(H)" if mf else "sharpness λ_max(H)")


def _positive_log(ax, vals, ref=None):
    """Log scale over the positive values; the top is kept within 10 times the reference
    values (GD's, or the models that finished) so that a diverged run cannot squash the rest."""
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not vals.size:
        return
    ax.set_yscale("log")
    top = vals.max()
    if ref is not None:
        ref = ref[np.isfinite(ref) & (ref > 0)]
        if ref.size and top > 10 * ref.max():
            top = 10 * ref.max()
            ax.set_ylim(top=top)
    ax.set_ylim(bottom=max(vals.min(), top * 1e-17) / 2)


def _finished(models):
    return [m for m in models if m.status in ("", "success")]


def _panel_amplitude(ax, data: _Data):
    shown = []
    gd = data.gd.amplitude if data.gd is not None else None
    if gd is not None:
        ax.plot(gd[0], gd[1], color=_GD_COLOR, lw=2.6, label="GD half-step amplitude", gid="gd:average", zorder=2.5)
        shown.append(gd)
    for m in data.models:
        c = m.series.get("amplitude")
        if c is not None and np.any(c[1] > 0):
            _model_line(ax, m, c)
            shown.append(c)
    ref = _values(gd) if gd is not None else _values(*[m.series.get("amplitude") for m in _finished(data.models)])
    _positive_log(ax, _values(*shown), ref)
    ax.set_ylabel("amplitude along v₁")


def _panel_distance(ax, data: _Data):
    shown = []
    for m in data.models:
        c = m.series.get("distance")
        if c is not None and np.any(np.isfinite(c[1])):
            _model_line(ax, m, c)
            shown.append(c)
    _positive_log(ax, _values(*shown), _values(*[m.series.get("distance") for m in _finished(data.models)]))
    if not shown:
        why = "needs a GD run and model trajectories" if data.gd is None or not data.models else \
            "no model trajectories saved"
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_ylabel("‖θ_model − θ̄_GD‖")


_PANEL_FUNCS = {"loss": _panel_loss, "sharpness": _panel_sharpness, "amplitude": _panel_amplitude,
                "distance": _panel_distance}
_PANEL_TITLES = {"loss": "loss", "sharpness": "sharpness", "amplitude": "oscillation amplitude",
                 "distance": "distance to GD's two-step midpoint"}


def _draw_panel(ax, name, data: _Data, logy="auto"):
    if name == "loss":
        _panel_loss(ax, data, logy)
    else:
        _PANEL_FUNCS[name](ax, data)
    if data.xlim is not None:
        ax.set_xlim(*data.xlim)
    ax.grid(alpha=0.3)


def _legend(fig, axes, outside=True):
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if not labels:
        return None
    kw = dict(fontsize=8, frameon=False)
    if outside:
        return fig.legend([handles[lab] for lab in labels], labels, loc="outside right upper", **kw)
    return axes[0].legend([handles[lab] for lab in labels], labels, **kw)


# --- the public figure -------------------------------------------------------------------------

def _check_what(what):
    if isinstance(what, str):
        what = (what,)
    try:
        what = tuple(what)
    except TypeError:
        raise TypeError(f"`what` must be a panel name or a sequence of them from {list(PANELS)}; got {what!r}.") \
            from None
    if not what:
        raise ValueError(f"`what` must name at least one panel from {list(PANELS)}.")
    for w in what:
        if not isinstance(w, str) or w not in PANELS:
            raise ValueError(f"`what` must hold panel names from {list(PANELS)}; got {w!r}.")
    return what


def _split_runs(runs):
    """(trajectory or None, solutions, dataset or None) from plot's positional arguments."""
    if len(runs) == 1 and not (_is_trajectory(runs[0]) or _is_solution(runs[0])):
        obj = runs[0]
        if isinstance(obj, (str, Path)):
            from .io import load_dataset

            return None, [], load_dataset(obj), f"{str(obj)!r}"
        if hasattr(obj, "data_vars") and hasattr(obj, "attrs"):
            return None, [], obj, "the dataset"
    traj, sols = None, []
    for i, r in enumerate(runs):
        if _is_trajectory(r):
            if traj is not None or i != 0:
                raise TypeError("`runs`: pass at most one GD trajectory, first: plot(traj, sol1, sol2, ...).")
            traj = r
        elif _is_solution(r):
            sols.append(r)
        else:
            raise TypeError(f"`runs` must be a GDTrajectory followed by Solutions (or one saved result: a path or "
                            f"an xarray Dataset); argument {i + 1} is {type(r).__name__}.")
    if traj is None and not sols:
        raise TypeError("`runs`: nothing to plot; pass plot(traj, sol1, sol2, ...).")
    if traj is not None:
        for s in sols:
            if not np.isclose(float(s.model.eta), float(traj.eta), rtol=1e-12, atol=0):
                raise ValueError(f"`runs`: a {type(s.model).__name__} solution has η = {s.model.eta:g} but the GD "
                                 f"trajectory has η = {traj.eta:g}; compare runs of one η.")
    return traj, sols, None, None


def plot(*runs, what=PANELS, labels=None, window=None, facets: bool = False, logy="auto", ax=None,
         title: str | None = None):
    """Draw GD and effective-model runs side by side.

    Parameters
    ----------
    *runs : GDTrajectory, Solution, ... or one saved result
        ``plot(traj, sol1, sol2, ...)``: a GD trajectory (``ed.gd``; optional, first) and
        any number of solutions (``ed.solve``) of the same η. Or a single saved result:
        a case file, a saved Solution or a saved GD trajectory (path), or the xarray
        Dataset read from one.
    what : str or sequence of str
        Panels, in order, from ``"loss"``, ``"sharpness"``, ``"amplitude"``, ``"distance"``
        (see the module notes). Default: all four.
    labels : sequence of str, optional
        Legend labels of the solutions, in order (default: each model's ``name``, with the
        solver added where one model appears several times).
    window : None, "eos" or (k0, k1)
        GD steps to show. ``"eos"``: from just before GD's Edge-of-Stability onset to the
        end. The y-ranges follow the data inside the window.
    facets : bool
        One column of panels per model, each with GD, instead of every model in one panel.
    logy : "auto", True or False
        Log scale of the loss panel. ``"auto"``: log when GD's loss is positive and spans
        two decades or spikes above 10 times its median (catapults would otherwise flatten
        the rest); a symmetric
        log scale (linear near zero) when the loss takes values <= 0 and its spikes reach
        30 times its median size. True: log (symmetric log if values <= 0 occur); False:
        linear.
    ax : matplotlib Axes or sequence of Axes, optional
        Draw into these (one per panel of ``what``; not with ``facets``) instead of a new
        figure.
    title : str, optional
        Figure title (default: a saved case's title; none for objects).

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot: a notebook shows it as the cell's value;
        ``fig.savefig("runs.png")`` writes it; ``fig.axes`` are the panels, which can be
        restyled.

    Examples
    --------
    >>> traj = ed.gd(p, theta0, 0.3, 3000)                               # doctest: +SKIP
    >>> fe = ed.solve(ed.models.FreeEnergyFlow(p, 0.3), theta0, 3000, solver="map")
    >>> cf = ed.solve(ed.models.CentralFlow(p, 0.3), theta0, 3000)
    >>> fig = ed.plot(traj, fe, cf, window="eos")
    >>> fig.savefig("valley.png")
    """
    what = _check_what(what)
    if not isinstance(facets, bool):
        raise TypeError(f"`facets` must be True or False; got {facets!r}.")
    if not (logy == "auto" if isinstance(logy, str) else isinstance(logy, bool)):
        raise ValueError(f"`logy` must be 'auto', True or False; got {logy!r}.")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"`title` must be a string; got {type(title).__name__}.")
    traj, sols, ds, source = _split_runs(runs)
    if ds is not None:
        if labels is not None:
            raise ValueError("`labels` applies to Solutions; a saved result keeps the labels it was saved with.")
        data = _data_from_dataset(ds, source)
    else:
        if labels is not None:
            if isinstance(labels, str) or not all(isinstance(lab, str) for lab in labels):
                raise TypeError(f"`labels` must be a sequence of strings, one per solution; got {labels!r}.")
            labels = list(labels)
            if len(labels) != len(sols):
                raise ValueError(f"`labels` has {len(labels)} entries for {len(sols)} solutions; give one per solution.")
            if len(set(labels)) != len(labels):
                raise ValueError(f"`labels` must be distinct; got {labels}.")
        data = _data_from_objects(traj, sols, labels)
    if title is not None:
        data.title = title
    _assign_styles(data.models)
    data = _windowed(data, _window_bounds(window, data))
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        # a diverged run holds values near overflow: draw it anyway, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        if ax is not None:
            return _draw_into(ax, what, data, facets, logy)
        return _draw_figure(what, data, facets, logy)


def _draw_into(ax, what, data, facets, logy):
    if facets:
        raise ValueError("`ax` cannot be combined with `facets=True`; let plot() make the figure.")
    axes = [ax] if hasattr(ax, "plot") else list(ax)
    if len(axes) != len(what) or not all(hasattr(a, "plot") for a in axes):
        raise ValueError(f"`ax` must hold one Axes per panel of `what` ({len(what)}); got {len(axes)}.")
    for a, name in zip(axes, what):
        _draw_panel(a, name, data, logy)
        a.set_xlabel("GD step k")
    _legend(axes[0].figure, axes, outside=False)
    return axes[0].figure


def _draw_figure(what, data, facets, logy):
    from matplotlib.figure import Figure

    columns = [data] if not facets or not data.models else [replace(data, models=[m]) for m in data.models]
    nrow, ncol = len(what), len(columns)
    width = 8.6 if ncol == 1 else 2.8 * ncol + 2.4
    fig = Figure(figsize=(width, 2.5 * nrow + 0.7), dpi=110, layout="constrained")
    grid = fig.subplots(nrow, ncol, sharex=True, sharey="row" if ncol > 1 else False, squeeze=False)
    for j, col in enumerate(columns):
        for i, name in enumerate(what):
            a = grid[i][j]
            _draw_panel(a, name, col, logy)
            if i == nrow - 1:
                a.set_xlabel("GD step k")
            if j > 0:
                a.set_ylabel("")
        if facets and col.models:
            grid[0][j].set_title(col.models[0].legend, fontsize=9, color=col.models[0].color)
    if ncol > 1:
        # a log scale chosen in one column holds for the row (shared y)
        for i in range(nrow):
            if any(grid[i][j].get_yscale() == "log" for j in range(ncol)):
                for j in range(ncol):
                    grid[i][j].set_yscale("log")
    if data.title:
        fig.suptitle(data.title, fontsize=11)
    _legend(fig, [a for row in grid for a in row])
    return fig


# --- files -------------------------------------------------------------------------------------

def _save(fig, path: Path) -> Path:
    from .io import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _panel_figure(data: _Data, name: str, title: str, logy="auto"):
    """One panel as its own figure (the PNG files of a saved result)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    _draw_panel(ax, name, data, logy)
    ax.set_xlabel("GD step k")
    ax.set_title(f"{title}: {_PANEL_TITLES[name]}", fontsize=10)
    _legend(fig, [ax])
    return fig


def plot_case(ds, out_dir, prefix: str | None = None) -> list[Path]:
    """Draw the four case figures of a validation dataset into ``out_dir``.

    The panels are those of :func:`plot` (same series, colours and line styles), one PNG
    per panel.

    Parameters
    ----------
    ds : xarray.Dataset
        A case dataset (``effdyn validate`` / ``effdyn run`` output).
    out_dir : str or Path
        Folder for the PNG files (created if needed).
    prefix : str, optional
        File-name prefix (default: the dataset's ``case`` attribute).

    Returns
    -------
    list of Path
        ``<prefix>_<figure>.png`` in the order of :data:`CASE_FIGURES`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or str(ds.attrs.get("case", "case"))
    data = _data_from_case(ds)
    _assign_styles(data.models)
    title = data.title or prefix
    paths = []
    # a diverged GD run holds values near overflow: the figures are still drawn, quietly
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in CASE_FIGURES:
            paths.append(_save(_panel_figure(data, name, title), out_dir / f"{prefix}_{name}.png"))
    return paths


def plot_solution(ds, out_dir, prefix: str = "solution") -> list[Path]:
    """Figures of a single saved solution (``Solution.save``): loss, sharpness, amplitude
    (those it has), drawn by the panels of :func:`plot`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _data_from_solution_ds(ds)
    _assign_styles(data.models)
    paths = []
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in ("loss", "sharpness", "amplitude"):
            series = data.models[0].series
            if name == "loss" and not ("loss" in series or "time_avg_loss" in series):
                continue
            if name != "loss" and name not in series:
                continue
            paths.append(_save(_panel_figure(data, name, data.title), out_dir / f"{prefix}_{name}.png"))
    return paths


def plot_result(path, out_dir=None) -> list[Path]:
    """Redraw the figures of a saved result (a case file or a single solution file).

    Parameters
    ----------
    path : str or Path
        netCDF file written by ``effdyn validate``/``effdyn run`` or ``Solution.save``.
    out_dir : str or Path, optional
        Where to write the PNGs (default: next to the file).
    """
    from .io import atomic_write, load_dataset

    path = Path(path)
    ds = load_dataset(path)
    out_dir = path.parent if out_dir is None else Path(out_dir)
    if "sweep_name" in ds.attrs or "gd_period" in ds:
        from .sweep import plot_sweep  # a phase diagram of `effdyn sweep`

        return plot_sweep(ds, out_dir)
    if _is_case_dataset(ds):
        return plot_case(ds, out_dir, prefix=path.stem)
    if _is_solution_dataset(ds):
        return plot_solution(ds, out_dir, prefix=path.stem)
    if ds.attrs.get("effdyn_format") == "effdyn-results":
        # GD and/or solutions written by ed.save / GDTrajectory.save: redraw them from the objects
        from .results import Results, load

        obj = load(path)
        runs = ([obj.gd] if obj.gd is not None else []) + list(obj.solutions.values()) \
            if isinstance(obj, Results) else [obj]
        fig = plot(*runs)
        out = out_dir / f"{path.stem}_panels.png"
        return [atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))]
    raise ValueError(
        f"{str(path)!r} is not an effdyn result: expected a validation case file (with `gd_loss`) or a saved "
        "Solution (with `state`); pass a .nc file written by `effdyn validate`, `effdyn run` or Solution.save."
    )
