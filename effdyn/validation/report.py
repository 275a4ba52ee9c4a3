"""The markdown report of a validation run: a summary, then one table per case.

Each case table has one row per model (plus GD, the reference) with what seeded its
oscillation, the errors of :func:`effdyn.compare` over the comparison window, the number of
right-hand-side evaluations, the wall time and the run status. A case with a handover adds
a second table, one row per model started from GD's state at step k_h, its errors over
[k_h, end] beside those of the same model's run from θ0 over the same steps. Tables are
plain GitHub markdown, so the report reads well on a terminal, in an editor and on a
repository page.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

__all__ = ["write_report", "render_report", "case_table", "handover_table", "TABLE_COLUMNS", "HANDOVER_COLUMNS",
           "parse_tables"]

#: Column headers of a case table, in order.
TABLE_COLUMNS = ("model", "status", "seed", "loss err", "sharpness err", "amplitude err", "amp err (top)",
                 "envelope err", "spikes", "spike Δk", "spike height err", "distance", "mean ηS/2", "nfev",
                 "wall [s]", "note")

#: Column headers of a case's handover table: each error from θ0 and from the handover,
#: both over the handover window [k_h, end].
HANDOVER_COLUMNS = ("model", "status", "loss err θ0", "loss err handover", "sharpness err θ0",
                    "sharpness err handover", "amplitude err θ0", "amplitude err handover", "distance θ0",
                    "distance handover", "nfev", "wall [s]", "note")

_SEED_HELP = """**seed**: what seeds a model's oscillation (Σ = 0, ρ = 0 and δ = 0 are invariant, so
something must; docs/theory.md, "Seeds"): `gd half-step` — GD's first half-step −η∇E(θ0)/2
(projected on the top eigenvectors where the model carries modes), `round-off floor` /
`floor` — a floor along the top eigenvectors, `projection` — θ0 minus its projection on the
stable set (self-stabilisation), `given` — explicit initial data, `none` — no oscillation
state (gradient flow, central flow, sharpness-reduction flow), `handover` — GD's own state.
GD's own seed is round-off.
"""

#: Metric columns of a model row, in table order (between "seed" and "nfev").
_N_METRIC_COLUMNS = 10

_METRIC_HELP = """\
Errors are measured against GD's time averages over the comparison window [k0, k1] of GD
steps (from GD's EoS onset, the first step with sharpness above 2/η, to the end; the whole
run when GD never reaches 2/η), see `effdyn.Metrics`:

- **loss err**: mean |model time-averaged loss (F for the free-energy flow) − GD's two-step
  loss average|, divided by the loss scale max(range of GD's loss over the window, mean
  |GD's two-step loss − E_ref|, 10⁻⁶·|E(θ₀) − E_ref|), E_ref the problem's infimum when it
  declares one, else GD's lowest loss (a scale that cannot vanish when GD converges);
- **sharpness err**: mean |model sharpness − GD's two-step averaged sharpness| divided by 2/η
  (by GD's mean sharpness in the cases run with normalised or √E GD);
- **amplitude err**: mean |model oscillation amplitude in its tracked subspace (√tr Σ, ‖δ‖ or ρ)
  − GD's half-step amplitude in its top-`n_eigs` eigenspace ‖P(θ_{k+1} − θ_k)‖/2|, relative to
  GD's mean amplitude (absolute when GD does not oscillate); 1 is what a model predicting no
  oscillation scores, so above 1 is worse than that;
- **amp err (top)**: the same along the top eigenvector only (√(v₁ᵀΣv₁) against
  |v₁·(θ_{k+1} − θ_k)|/2), ill-defined on wide orbits where v₁ differs between the iterates;
- **envelope err**: GD's max and min of (E_k, E_{k+1}) against the model's predicted envelope
  E(θ ± √s v) (free-energy flow only; "–" for the others), mean deviation over the loss scale;
- **spikes**: "matched/GD": GD's loss spikes matched by a model spike within 25 steps, out of
  GD's spikes, and "+n" model spikes that match none (a spike: a peak of the two-step averaged
  loss rising above its baseline by ≥ 50 % of the baseline's excess over E_ref and by ≥ 10⁻³
  of the loss scale, ≥ 10 steps from a higher one); the GD row gives GD's spike count;
  **spike Δk**: mean timing error of the matched spikes in GD steps; **spike height err**:
  mean relative error of their heights above E_ref;
- **distance**: RMS ‖θ_model − θ̄_GD‖ relative to the RMS ‖θ̄_GD‖ (θ̄ the two-step midpoint);
- **mean ηS/2**: the model's mean sharpness over the window in units of 2/η (1 = at the edge;
  far below 1 for the normalised and √E variants, which have no edge at 2/η);
- **nfev**: right-hand-side (drift) evaluations; for GD, the number of steps.

Rows of runs that diverged or failed show no metrics (the netCDF files keep them); a run
stopped by its time budget ("budget") is compared over the steps it computed.
"""


def _fmt(x, digits: int = 3) -> str:
    from ..diagnostics import format_number

    return format_number(x, digits, 1e-3)


def _cell(text, limit: int = 110) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


#: Row statuses whose metrics are shown: finished runs and runs stopped early on purpose
#: (their metrics cover what they computed). A diverged run's numbers measure the blow-up,
#: not the model, and are left in the netCDF file only.
SHOWN = ("success", "budget", "interrupted")


def _shown(row) -> bool:
    return row.metrics is not None and row.status in SHOWN


def case_table(case) -> str:
    """Markdown table (model × metric) of one :class:`~effdyn.validation.runner.CaseResult`."""
    lines = [_row(TABLE_COLUMNS), _row(["---"] * len(TABLE_COLUMNS))]
    setup, gd = case.setup, case.gd
    eta = setup.eta if setup is not None else float("nan")
    if gd is not None:
        onset = case.eos_onset
        status = str(getattr(gd, "status", "success"))
        note = "EoS onset " + ("never" if onset is None else f"at step {onset}")
        if status != "success":
            note = f"{getattr(gd, 'message', '')}; {note}"
        mean_s = _gd_mean_sharpness(case)
        # GD is the reference: its own columns are "–", except the spike column, which says
        # how many spikes there were to match.
        spikes = next((str(r.metrics.n_spikes_gd) for r in case.models if _shown(r)), "–")
        cells = ["–"] * _N_METRIC_COLUMNS
        cells[5] = spikes
        cells[-1] = _fmt(mean_s * eta / 2 if mean_s is not None else None)
        lines.append(_row(["GD (reference)", status, "round-off", *cells, str(len(getattr(gd, "loss", [])) - 1),
                           _fmt(case.gd_wall), _cell(note)]))
    for row in case.models:
        m = row.metrics if _shown(row) else None
        if m is not None:
            vals = [_fmt(m.loss_error), _fmt(m.sharpness_error), _fmt(m.amplitude_error),
                    _fmt(getattr(m, "amplitude_error_top", None)), _fmt(getattr(m, "envelope_error", None)),
                    _spikes(m), _fmt(getattr(m, "spike_timing_error", None)),
                    _fmt(getattr(m, "spike_height_error", None)), _fmt(m.distance),
                    _fmt(m.mean_sharpness_model * eta / 2)]
        else:
            vals = ["–"] * _N_METRIC_COLUMNS
        note = row.message if row.status != "success" or m is None else f"{row.solver}"
        if row.status == "success" and m is not None and row.message and ("not compared" in row.message
                                                                           or row.message.startswith("warning:")):
            note = f"{row.solver}; {row.message}"
        lines.append(_row([_cell(row.label), row.status, getattr(row, "seed", "") or "–", *vals, str(row.nfev),
                           _fmt(row.wall_time), _cell(note)]))
    return "\n".join(lines)


def handover_table(case) -> str:
    """Markdown table of a case's runs started from GD's state (empty string: none)."""
    rows = getattr(case, "handovers", [])
    if not rows:
        return ""
    lines = [_row(HANDOVER_COLUMNS), _row(["---"] * len(HANDOVER_COLUMNS))]
    for row in rows:
        m = row.metrics if _shown(row) else None
        b = getattr(row, "baseline", None) if m is not None else None
        vals = []
        for name in ("loss_error", "sharpness_error", "amplitude_error", "distance"):
            vals += [_fmt(getattr(b, name, None)), _fmt(getattr(m, name, None))]
        note = row.message if row.status != "success" or m is None else row.solver
        if m is not None and b is None:
            note = f"{note}; the run from θ0 does not cover the window"
        lines.append(_row([_cell(row.label), row.status, *vals, str(row.nfev), _fmt(row.wall_time), _cell(note)]))
    return "\n".join(lines)


def _spikes(m) -> str:
    """Spike counts "matched/GD", with "+n" for model spikes that match no GD spike."""
    n_gd, n_m, n_ok = (int(getattr(m, name, 0)) for name in ("n_spikes_gd", "n_spikes_model", "n_spikes_matched"))
    return f"{n_ok}/{n_gd}" + (f" +{n_m - n_ok}" if n_m > n_ok else "")


def _gd_mean_sharpness(case):
    """GD's mean sharpness over the comparison window (from any compared model's metrics)."""
    for row in case.models:
        if _shown(row):
            return row.metrics.mean_sharpness_gd
    gd = case.gd
    try:
        import numpy as np

        s = np.asarray(gd.sharpness, dtype=float)
        k = np.asarray(gd.eig_k, dtype=float)
        onset = case.eos_onset or 0
        sel = k >= onset
        return float(np.mean(s[sel])) if np.any(sel) else None
    except Exception:
        return None


def _case_section(case, out_dir: Path) -> list[str]:
    lines = [f"## {case.name}: {case.title}", ""]
    setup = case.setup
    if setup is not None:
        lines.append(setup.notes)
        lines.append("")
        window = next((f"; comparison window [{r.metrics.k0}, {r.metrics.k1}]" for r in case.models
                       if _shown(r)), "")
        lines.append(f"P = {setup.problem.dim}, η = {setup.eta:g} (2/η = {2 / setup.eta:.4g}), "
                     f"{setup.steps} GD steps{window}; case wall time {case.wall_time:.1f} s.")
        lines.append("")
    if case.status != "ok":
        lines.append(f"**Case status: {case.status}.** {_cell(case.message, 400)}")
        lines.append("")
    if case.gd is not None or case.models:
        lines.append(case_table(case))
        lines.append("")
    table = handover_table(case)
    if table:
        k_h = getattr(case, "handover_k0", None)
        window = next((f"[{r.metrics.k0}, {r.metrics.k1}]" for r in case.handovers if _shown(r)), f"[{k_h}, end]")
        offset = getattr(setup, "handover_offset", None)
        lines.append(f"**Handover.** Every model again, started from GD's state at step {k_h} (EoS onset "
                     f"{case.eos_onset} + {offset}: GD's midpoint θ̄, its half-step δ and Σ's factor, "
                     "`traj.state_at`); errors over GD steps " + window + " from θ0 (the rows above, recomputed "
                     "over this window) and from the handover:")
        lines.append("")
        lines.append(table)
        lines.append("")
    elif getattr(case, "handover_note", ""):
        lines.append(f"Handover: {_cell(case.handover_note, 300)}.")
        lines.append("")
    files = case.files
    if files.get("figures"):
        links = " · ".join(f"[{Path(p).stem.removeprefix(case.name + '_')}]({_rel(p, out_dir)})"
                           for p in files["figures"])
        lines.append(f"Figures: {links}")
    if files.get("netcdf"):
        lines.append(f"Data: [{Path(files['netcdf']).name}]({_rel(files['netcdf'], out_dir)})")
    lines.append("")
    return lines


def _rel(path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def render_report(result, out_dir: Path | None = None) -> str:
    """The report of a :class:`~effdyn.validation.runner.ValidationResult` as markdown text."""
    from ..io import git_commit, versions

    out_dir = Path(out_dir if out_dir is not None else result.out_dir)
    mode = "quick" if result.quick else "full"
    v = versions()
    head = [
        "# effdyn validation report",
        "",
        f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}; mode **{mode}**; "
        f"total wall time {result.wall_time:.1f} s"
        + ("; **interrupted by the user, partial results**" if result.interrupted else "") + ".",
        f"effdyn {v.get('effdyn')}, git commit {git_commit()[:12]}; "
        + ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "scipy", "numba", "jax") if k in v) + ".",
        "",
        "Every model is run from GD's initial point over the same number of GD steps and compared",
        "with discrete GD on the same problem (GD is the arbiter). Cases with a handover also start",
        "every model from GD's own state at a step after the EoS onset (second table of the case).",
        "",
        _METRIC_HELP,
        _SEED_HELP,
        "## Summary",
        "",
        _row(["case", "status", "GD EoS onset", "models compared", "best sharpness err", "wall [s]"]),
        _row(["---"] * 6),
    ]
    for case in result.cases:
        compared = [r for r in case.models if _shown(r)]
        best = min(compared, key=lambda r: r.metrics.sharpness_error, default=None)
        onset = case.eos_onset
        head.append(_row([case.name, case.status, "–" if case.gd is None else ("never" if onset is None else str(onset)),
                          f"{len(compared)}/{len(case.models)}",
                          "–" if best is None else f"{_fmt(best.metrics.sharpness_error)} ({_cell(best.label)})",
                          _fmt(case.wall_time)]))
    head.append("")
    skipped = getattr(result, "skipped", None) or {}
    if skipped:
        head += ["Not run: " + "; ".join(f"`{name}` ({why})" for name, why in skipped.items()) + ".", ""]
    body = []
    for case in result.cases:
        body += _case_section(case, out_dir)
    return "\n".join(head + body)


def write_report(result, path) -> Path:
    """Write ``report.md`` (atomically) and return its path."""
    from ..io import atomic_write

    text = render_report(result, Path(path).parent)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def parse_tables(text: str, columns=TABLE_COLUMNS) -> dict[str, list[dict[str, str]]]:
    """Read the case tables back from a report: {case name: [row dict by column header]}.

    Used by the tests and handy for scripts; it relies only on the ``## <case>:`` headings
    and the table header ``columns`` (:data:`TABLE_COLUMNS`, or :data:`HANDOVER_COLUMNS`
    for the handover tables).
    """
    tables: dict[str, list[dict[str, str]]] = {}
    current = None
    columns = tuple(columns)
    header = _row(columns)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## ") and ":" in line:
            current = line[3:].split(":", 1)[0].strip()
        elif line.strip() == header and current is not None:
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip().replace("\\|", "|") for c in _split_row(lines[i])]
                rows.append(dict(zip(columns, cells)))
                i += 1
            tables[current] = rows
            continue
        i += 1
    return tables


def _split_row(line: str) -> list[str]:
    inner = line.strip()[1:-1]
    cells, buf, esc = [], [], False
    for ch in inner:
        if ch == "|" and not esc:
            cells.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        esc = ch == "\\"
    cells.append("".join(buf))
    return cells

