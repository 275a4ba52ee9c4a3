"""The example problem of the public JAX central-flow code (../shared/data/peer-mlp/), as an
effdyn problem: MLP 8 → 16 → 16 → 1 with swish activations, mean squared error on 128
synthetic points, float64, η = 0.1 (2/η = 20), 1000 steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "peer-mlp"
LAYERS = ((8, 16), (16, 16), (16, 1))
ETA = 0.1
STEPS = 1000
#: E(p0) from the data's README
LOSS_AT_P0 = 1.059820448810965


def peer_problem(data_dir=DATA):
    """(problem, θ0) of the peer example; θ holds, layer by layer, the bias (out,) then the
    kernel (in, out) row-major, and a layer computes h @ W + b."""
    import effdyn as ed
    from effdyn._jax import import_jax

    jax, jnp = import_jax()
    x = jnp.asarray(np.load(Path(data_dir) / "x.npy"), dtype=jnp.float64)
    y = jnp.asarray(np.load(Path(data_dir) / "y.npy"), dtype=jnp.float64)
    p0 = np.asarray(np.load(Path(data_dir) / "p0.npy"), dtype=np.float64)

    def loss(theta):
        h, i = x, 0
        for j, (n_in, n_out) in enumerate(LAYERS):
            b = theta[i: i + n_out]
            i += n_out
            W = theta[i: i + n_in * n_out].reshape(n_in, n_out)
            i += n_in * n_out
            h = h @ W + b
            if j < len(LAYERS) - 1:
                h = jax.nn.swish(h)
        return jnp.mean((h[:, 0] - y) ** 2)

    return ed.problems.from_jax(loss, dim=p0.size, name="peer_mlp", loss_min=0.0), p0
