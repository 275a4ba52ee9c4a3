"""Figures of validation results, drawn from the saved netCDF datasets.

Every figure is made from a dataset (:func:`effdyn.validation.runner.case_dataset` or
``Solution.to_xarray()``), so ``effdyn plot RESULT.nc`` redraws exactly what a run drew.
matplotlib is imported here only, and through ``matplotlib.figure.Figure`` (no pyplot), so
plotting works without a display and never changes the user's backend.

Case figures (``<prefix>_<name>.png``):

* ``loss``: GD's loss (thin) with its two-step average, and each model's predicted
  time-averaged loss (``time_avg_loss``; F = E + ½⟨H, Σ⟩ for the free-energy flow);
* ``sharpness``: GD's sharpness (thin) and its two-step average, the models' sharpness and
  the stability threshold 2/η;
* ``amplitude``: GD's half-step amplitude |v·(θ_{k+1} − θ_k)|/2 against each model's
  predicted amplitude √(vᵀΣv) (log scale);
* ``distance``: ‖θ_model(k) − θ̄_GD(k)‖ over time (log scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_case", "plot_solution", "plot_result", "CASE_FIGURES"]

#: Names of the per-case figures, in order.
CASE_FIGURES = ("loss", "sharpness", "amplitude", "distance")

_GD_COLOR = "0.15"


def _figure(title: str, ylabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("GD step k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _models(ds):
    """(label, slug, status) of every model that has saved series in ``ds``."""
    from .validation.runner import slug

    if "model" not in ds.coords:
        return []
    out = []
    for i, label in enumerate(ds.coords["model"].values):
        label = str(label)
        s = slug(label)
        status = str(ds["status"].values[i]) if "status" in ds else ""
        if f"{s}__k" in ds.coords:
            out.append((label, s, status))
    return out


def _series(ds, name):
    var = ds[name]
    return np.asarray(var[var.dims[0]].values, dtype=float), np.asarray(var.values, dtype=float)


def _legend_label(label, status):
    return label if status in ("", "success") else f"{label} ({status})"


def _save(fig, path: Path) -> Path:
    from .io import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _log_if_positive(ax, arrays):
    vals = np.concatenate([np.ravel(a) for a in arrays if np.size(a)]) if arrays else np.empty(0)
    vals = vals[np.isfinite(vals)]
    if vals.size and np.all(vals > 0) and vals.max() / vals.min() > 100:
        ax.set_yscale("log")


def plot_case(ds, out_dir, prefix: str | None = None) -> list[Path]:
    """Draw the four case figures of a validation dataset into ``out_dir``.

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
        The written PNG files, in the order of :data:`CASE_FIGURES`.
    """
    import warnings

    # a diverged GD run holds values near overflow: the figures are still drawn, quietly
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _plot_case(ds, out_dir, prefix)


def _plot_case(ds, out_dir, prefix: str | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or str(ds.attrs.get("case", "case"))
    eta = float(ds.attrs.get("eta", np.nan))
    title = str(ds.attrs.get("title", prefix))
    models = _models(ds)
    paths = []

    # loss
    fig, ax = _figure(f"{title}: loss", "loss")
    shown = []
    k, v = _series(ds, "gd_loss")
    ax.plot(k, v, color=_GD_COLOR, lw=0.4, alpha=0.35, label="GD loss")
    shown.append(v)
    if "gd_loss_average" in ds:
        k, v = _series(ds, "gd_loss_average")
        ax.plot(k, v, color=_GD_COLOR, lw=1.6, label="GD two-step average")
    for label, s, status in models:
        name = f"{s}__time_avg_loss" if f"{s}__time_avg_loss" in ds else f"{s}__loss"
        if name in ds:
            k, v = _series(ds, name)
            ax.plot(k, v, lw=1.1, ls="--", label=_legend_label(label, status))
            shown.append(v)
    _log_if_positive(ax, shown)
    _limit_to_gd(ax, ds, "gd_loss", shown[0])
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out_dir / f"{prefix}_loss.png"))

    # sharpness
    fig, ax = _figure(f"{title}: sharpness", "sharpness λ_max(H)")
    k, v = _series(ds, "gd_sharpness")
    ax.plot(k, v, color=_GD_COLOR, lw=0.4, alpha=0.35, label="GD")
    gd_vals = v
    if "gd_sharpness_average" in ds:
        k, v = _series(ds, "gd_sharpness_average")
        ax.plot(k, v, color=_GD_COLOR, lw=1.6, label="GD two-step average")
    for label, s, status in models:
        if f"{s}__sharpness" in ds:
            k, v = _series(ds, f"{s}__sharpness")
            ax.plot(k, v, lw=1.1, ls="--", label=_legend_label(label, status))
    # the normalised and √E variants drift along their minimisers far below 2/η
    edge = 2 / eta if np.isfinite(eta) and str(ds.attrs.get("gd_variant", "gd")) == "gd" else np.nan
    if np.isfinite(edge):
        ax.axhline(edge, color="crimson", lw=1.0, ls=":", label="2/η")
    _limit_to_gd(ax, ds, "gd_sharpness", np.append(gd_vals, edge))
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out_dir / f"{prefix}_sharpness.png"))

    # amplitude
    fig, ax = _figure(f"{title}: oscillation amplitude", "amplitude along v₁")
    shown = []
    if "gd_amplitude" in ds:
        k, v = _series(ds, "gd_amplitude")
        ax.plot(k, v, color=_GD_COLOR, lw=1.2, label="GD |v·(θ_{k+1} − θ_k)|/2")
        shown.append(v)
    for label, s, status in models:
        if f"{s}__amplitude" in ds:
            k, v = _series(ds, f"{s}__amplitude")
            if np.any(v > 0):
                ax.plot(k, v, lw=1.1, ls="--", label=_legend_label(label, status) + " √(vᵀΣv)")
                shown.append(v)
    _log_scale_positive(ax, shown)
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out_dir / f"{prefix}_amplitude.png"))

    # distance
    fig, ax = _figure(f"{title}: distance to GD's two-step midpoint", "‖θ_model − θ̄_GD‖")
    shown = []
    for label, s, status in models:
        if f"{s}__distance" in ds:
            k, v = _series(ds, f"{s}__distance")
            ax.plot(k, v, lw=1.1, label=_legend_label(label, status))
            shown.append(v)
    _log_scale_positive(ax, shown)
    if shown:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no model trajectories saved", ha="center", va="center", transform=ax.transAxes)
    paths.append(_save(fig, out_dir / f"{prefix}_distance.png"))
    return paths


def _limit_to_gd(ax, ds, name, gd_values):
    """Keep the y-range near GD's values so that one runaway model does not flatten the plot."""
    vals = np.asarray(gd_values, dtype=float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return
    if ax.get_yscale() == "log":
        vals = vals[vals > 0]
        if vals.size:
            cur = ax.get_ylim()
            ax.set_ylim(max(cur[0], vals.min() * 1e-2), min(cur[1], vals.max() * 1e2))
        return
    lo, hi = vals.min(), vals.max()
    pad = 0.25 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    cur = ax.get_ylim()
    ax.set_ylim(max(cur[0], lo - pad), min(cur[1], hi + pad))


def _log_scale_positive(ax, arrays):
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.empty(0)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size:
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(vals.min(), vals.max() * 1e-12))


def plot_solution(ds, out_dir, prefix: str = "solution") -> list[Path]:
    """Figures of a single model solution (``Solution.save`` output): loss, sharpness, amplitude."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eta = float(ds.attrs.get("eta", np.nan))
    model = str(ds.attrs.get("model", "model"))
    paths = []
    k = np.asarray(ds["k"].values, dtype=float)
    for name, ylabel in (("loss", "loss"), ("sharpness", "sharpness λ_max(H)"), ("amplitude", "amplitude √(vᵀΣv)")):
        if name not in ds:
            continue
        fig, ax = _figure(f"{model}: {name}", ylabel)
        ax.plot(k, np.asarray(ds[name].values, dtype=float), lw=1.2, label=model)
        if name == "loss" and "time_avg_loss" in ds:
            ax.plot(k, np.asarray(ds["time_avg_loss"].values, dtype=float), lw=1.2, ls="--",
                    label="time-averaged loss")
        if name == "sharpness" and np.isfinite(eta):
            ax.axhline(2 / eta, color="crimson", lw=1.0, ls=":", label="2/η")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir / f"{prefix}_{name}.png"))
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
    from .io import load_dataset

    path = Path(path)
    ds = load_dataset(path)
    out_dir = path.parent if out_dir is None else Path(out_dir)
    if "gd_loss" in ds:
        return plot_case(ds, out_dir, prefix=path.stem)
    if "state" in ds and "k" in ds.coords:
        return plot_solution(ds, out_dir, prefix=path.stem)
    raise ValueError(
        f"{str(path)!r} is not an effdyn result: expected a validation case file (with `gd_loss`) or a "
        "saved Solution (with `state`); pass a .nc file written by `effdyn validate`, `effdyn run` or Solution.save."
    )
