"""Phase diagrams of a sweep: GD's period and the models' errors against the swept axes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["plot_sweep"]


def _load(path_or_ds):
    if isinstance(path_or_ds, (str, Path)):
        from ..io import load_dataset

        path = Path(path_or_ds)
        if not path.is_file():
            raise FileNotFoundError(f"`path` {str(path)!r} does not exist; pass the .nc file written by `effdyn sweep`.")
        ds = load_dataset(path)
        return ds, path
    return path_or_ds, None


def _period_level(period, pmax):
    """log2(p) for a period p >= 1; chaotic one level above the largest period; NaN else."""
    p = np.asarray(period, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = p >= 1
    out[ok] = np.log2(p[ok])
    out[p == 0] = np.log2(pmax) + 1
    return out


def _level_ticks(pmax):
    levels = list(range(int(np.log2(pmax)) + 2))
    names = ["converged"] + [f"{2 ** i}" for i in levels[1:-1]] + ["chaotic"]
    return levels, names


def _axis_view(ds):
    """(x-coordinate names, index selection reducing extra axes, note) for plotting."""
    axes = json.loads(ds.attrs.get("axes", "[]"))
    if ds.attrs.get("mode") == "zip":
        return [axes[0]["dim"]], {}, ""
    dims = [a["dim"] for a in axes]
    keep = dims[:2]
    sel = {d: 0 for d in dims[2:]}
    note = ""
    if sel:
        note = " (" + ", ".join(f"{d} = {ds[d].values[0]}" for d in sel) + ")"
    return keep, sel, note


_GOOD = ("success", "reached the horizon", "budget")
_REGIME_COLOURS = {2: "#9ecae1", 4: "#fdae6b", 0: "#fc9272"}


def _shade_regimes(axs, x, period):
    """Shade every panel by GD's regime: period two blue, period four and longer orange,
    chaotic red (converged and undetermined unshaded)."""
    period = np.asarray(period)
    if len(x) < 2:
        return
    edges = np.concatenate([[x[0] - (x[1] - x[0]) / 2], (x[1:] + x[:-1]) / 2, [x[-1] + (x[-1] - x[-2]) / 2]])
    for i, p in enumerate(period):
        colour = _REGIME_COLOURS.get(2 if p == 2 else 4 if p >= 4 else 0 if p == 0 else None)
        if colour is None:
            continue
        for ax in axs:
            ax.axvspan(edges[i], edges[i + 1], color=colour, alpha=0.18, lw=0)


def plot_sweep(path_or_ds, out_dir=None, *, prefix: str | None = None, metrics=("sharpness_error", "loss_error")):
    """Draw the sweep's phase diagram as PNG files; return their paths.

    One swept axis (or a zip sweep, against its first axis): GD's detected period
    (converged, 2, 4, ..., chaotic) and its mean ηS/2 over the last third, and every model's
    ``metrics`` (default: sharpness and loss errors) against the axis, log scale. Two or more
    axes: heat maps over the first two axes (others at their first value) of GD's period
    and of each model's sharpness error.

    Parameters
    ----------
    path_or_ds : path or xarray.Dataset
        The merged ``<name>.nc`` of a sweep, or its Dataset.
    out_dir : path, optional
        Folder of the figures (default: next to the file, or the working folder).
    prefix : str, optional
        File name prefix (default: the sweep's name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds, path = _load(path_or_ds)
    if "gd_period" not in ds:
        raise ValueError("this dataset is not a sweep (no `gd_period`); pass the .nc written by `effdyn sweep`.")
    out = Path(out_dir) if out_dir is not None else (path.parent if path is not None else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or ds.attrs.get("sweep_name", "sweep")
    pmax = int(ds.attrs.get("period_max", 64))
    xs, sel, note = _axis_view(ds)
    view = ds.isel(sel) if sel else ds
    levels, names = _level_ticks(pmax)
    models = list(view["model"].values) if "model" in view.coords else []
    files = []

    if len(xs) == 1:
        x = np.asarray(view[xs[0]].values)
        n_panels = 2 + len(metrics)
        fig, axs = plt.subplots(n_panels, 1, figsize=(7.5, 2.4 * n_panels), sharex=True)
        lv = _period_level(view["gd_period"].values, pmax)
        axs[0].plot(x, lv, "o-", color="k", ms=4, drawstyle="steps-mid")
        axs[0].set_yticks(levels, names)
        axs[0].set_ylabel("GD period")
        axs[0].set_title(f"{prefix}: phase diagram{note}")
        axs[0].grid(alpha=0.3)
        axs[1].plot(x, view["gd_sharpness_ratio"].values, "o-", ms=3, label="GD  ηS/2 (last third)")
        axs[1].axhline(1.0, color="grey", lw=0.8, ls="--")
        axs[1].set_ylabel("ηS/2")
        axs[1].legend(fontsize=8)
        axs[1].grid(alpha=0.3)
        status = view["model_status"].values if "model_status" in view else None
        for ax, metric in zip(axs[2:], metrics):
            if models and metric in list(view["metric"].values):
                for j, m in enumerate(models):
                    y = view["metrics"].sel(model=m, metric=metric).values.astype(float)
                    # a model that diverged or failed is marked at the top edge, not plotted:
                    # its error says nothing but "diverged" and would flatten the others
                    bad = np.zeros(len(x), bool) if status is None else ~np.isin(status[:, j], _GOOD)
                    line, = ax.plot(x, np.where((y > 0) & ~bad, y, np.nan), "o-", ms=3, label=str(m))
                    if bad.any():
                        ax.plot(x[bad], np.ones(bad.sum()), "x", color=line.get_color(), ms=5, clip_on=False,
                                transform=ax.get_xaxis_transform())
                ax.set_yscale("log")
                ax.legend(fontsize=7, ncol=2, title="x at the top: model diverged or failed", title_fontsize=7)
            ax.set_ylabel(metric.replace("_", " "))
            ax.grid(alpha=0.3, which="both")
        _shade_regimes(axs, x, view["gd_period"].values)
        axs[-1].set_xlabel(xs[0])
        fig.tight_layout()
        f = out / f"{prefix}_phase.png"
        fig.savefig(f, dpi=120)
        plt.close(fig)
        files.append(f)
        return files

    xd, yd = xs
    xv, yv = np.asarray(view[xd].values), np.asarray(view[yd].values)
    n = 1 + len(models)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axs = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    lv = _period_level(view["gd_period"].transpose(yd, xd).values, pmax)
    im = axs[0, 0].pcolormesh(xv, yv, lv, shading="nearest", cmap="viridis", vmin=0, vmax=levels[-1])
    cb = fig.colorbar(im, ax=axs[0, 0], ticks=levels)
    cb.ax.set_yticklabels(names)
    axs[0, 0].set_title(f"GD period{note}")
    for i, m in enumerate(models, 1):
        ax = axs[i // cols, i % cols]
        z = view["metrics"].sel(model=m, metric="sharpness_error").transpose(yd, xd).values.astype(float)
        z = np.log10(np.where(z > 0, z, np.nan))
        im = ax.pcolormesh(xv, yv, z, shading="nearest", cmap="magma")
        fig.colorbar(im, ax=ax, label="log10 sharpness error")
        ax.set_title(str(m), fontsize=9)
    for i in range(n, rows * cols):
        axs[i // cols, i % cols].axis("off")
    for ax in axs.flat:
        ax.set_xlabel(xd)
        ax.set_ylabel(yd)
    fig.suptitle(f"{prefix}: phase diagram")
    fig.tight_layout()
    f = out / f"{prefix}_phase.png"
    fig.savefig(f, dpi=120)
    plt.close(fig)
    files.append(f)
    return files
