"""The example problem of the public JAX central-flow code (../shared/data/peer-mlp/), as an
effdyn problem: MLP 8 → 16 → 16 → 1 with swish activations, mean squared error on 128
synthetic points, float64, η = 0.1 (2/η = 20), 1000 steps."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "peer-mlp"
LAYERS = ((8, 16), (16, 16), (16, 1))
ETA = 0.1
STEPS = 1000
#: E(p0) from the data's README
LOSS_AT_P0 = 1.059820448810965


def peer_problem(data_dir=DATA):
    """(problem, θ0) of the peer example, built by the library's own builder
    (:func:`effdyn.problems.builders.peer_mlp`: the peer's flat layout, so p0 is θ0)."""
    from effdyn.problems.builders import peer_mlp

    return peer_mlp(data_dir, name="peer_mlp")
