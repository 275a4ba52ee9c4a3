"""A one-minute look at the Edge of Stability: GD on Berthier's minimal valley (theory §5).

Run ``python -m effdyn.demo [OUT_DIR]``. GD with η = 0.3 on E = ½(y + ζx)x² − ε(x + y),
ζ = 1, ε = 0.01, from (x, y) = (0.1, 3): the sharpness (≈ y) grows until it reaches 2/η near
step 1220, then stays there while x oscillates with half-step amplitude ≈ √(2ε). The figure
shows the loss with its two-step average, the sharpness against 2/η and the amplitude
against √(2ε).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ETA, ZETA, EPS = 0.3, 1.0, 0.01
THETA0 = (0.1, 3.0)
STEPS = 6000


def main(out_dir: str | Path = "effdyn-output") -> Path:
    """Run the demo, write ``minimal_valley_gd.png`` into ``out_dir`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .reference import gd
    from .problems import MinimalValley

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    traj = gd(MinimalValley(zeta=ZETA, eps=EPS), THETA0, ETA, STEPS, eig_every=1)
    onset = traj.eos_onset()

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True, constrained_layout=True)
    ax = axes[0]
    k_avg, loss_avg = traj.loss_average()
    ax.plot(traj.k, traj.loss, lw=0.4, color="0.6", label="E(θ_k)")
    ax.plot(k_avg, loss_avg, lw=1.2, color="C0", label="½(E_k + E_{k+1})")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")

    ax = axes[1]
    S = traj.sharpness
    ax.plot(traj.eig_k, S, lw=0.4, color="C1", alpha=0.6, label="sharpness λ_max(H)")
    ax.plot(traj.eig_k[:-1], 0.5 * (S[:-1] + S[1:]), lw=1.2, color="C3", label="two-step average")
    ax.axhline(2 / ETA, color="k", ls="--", lw=1, label="2/η")
    if onset is not None:
        ax.axvline(onset, color="0.5", ls=":", lw=1, label=f"EoS onset (k = {onset})")
    ax.set_ylabel("sharpness")
    ax.legend(loc="lower right")

    ax = axes[2]
    k_amp, amp = traj.amplitude()
    ax.plot(k_amp, amp, lw=0.6, color="C2", label="|v₁ᵀ(θ_{k+1} − θ_k)|/2")
    ax.axhline(np.sqrt(2 * EPS), color="k", ls="--", lw=1, label="√(2ε)")
    # the onset transient overshoots to ~7√(2ε); clip it so the plateau stays readable
    ax.set_ylim(0, 3 * np.sqrt(2 * EPS))
    ax.set_ylabel("half-step amplitude (clipped)")
    ax.set_xlabel("GD step k")
    ax.legend(loc="upper right")
    fig.suptitle(f"GD on the minimal valley (η = {ETA}, ζ = {ZETA}, ε = {EPS})")

    path = out_dir / "minimal_valley_gd.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(path)
    return path


if __name__ == "__main__":
    main(*sys.argv[1:2])
