# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your own loss: `effdyn.problems.from_jax`
#
# Any loss written with `jax.numpy` becomes an effdyn problem: gradients, Hessian-vector
# products, Hessians and the third-derivative contraction ∇_θ⟨H(θ), Σ⟩ that the free-energy
# flow needs all come from JAX autodiff, in float64.
#
# The example: a small tanh network (2 → 8 → 1, with a hidden bias, P = 32) fitting a
# smooth function of 24 random points with the squared loss. Trained with η = 0.5, GD
# sharpens progressively, crosses the edge, is thrown into a flatter region by its growing
# oscillation (a catapult, visible as a loss spike), and sharpens back towards the edge.

# %%
import numpy as np
from threadpoolctl import threadpool_limits

import effdyn as ed

# effdyn's matrices are small (Hessians of a few dozen rows, P × r factors): one BLAS thread
# is the fastest, and much faster than many threads competing on a busy machine.
threadpool_limits(1, user_api="blas")
# %matplotlib inline

# %%
from effdyn._jax import import_jax

jax, jnp = import_jax()  # JAX with float64 enabled

rng = np.random.default_rng(0)
n, d, h = 24, 2, 8
X = rng.normal(size=(n, d))
Y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1])


def mlp_loss(theta):
    W1 = theta[: d * h].reshape(h, d)
    b1 = theta[d * h: d * h + h]
    w2 = theta[d * h + h:]
    f = jnp.tanh(X @ W1.T + b1) @ w2
    return 0.5 * jnp.mean((f - Y) ** 2)


prob = ed.problems.from_jax(mlp_loss, dim=d * h + 2 * h, name="tiny_mlp")
theta0 = np.concatenate([rng.normal(size=d * h) / np.sqrt(d), np.zeros(h), 0.5 * rng.normal(size=h) / np.sqrt(h)])
print(prob, "initial sharpness", ed.spectrum.sharpness(prob, theta0))

# %% [markdown]
# `from_jax` checks the function once on a float64 vector of length `dim` (a non-scalar
# output, a float32 cast, a reshape that needs another length, or an index past the end of
# θ is refused before anything runs), and compiles each derivative once. JAX itself would
# clamp `t[5]` on a vector of length 3 to `t[2]`; `from_jax` evaluates the loss once under
# JAX's index checks to refuse it. A static slice such as `t[1:5]` is clamped by NumPy's
# rules while tracing and cannot be detected: check `dim` against your layout (or pass the
# parameter pytree with `params=`, which fixes every shape).
#
# ## GD against two models

# %%
eta, steps = 0.5, 1200
traj = ed.gd(prob, theta0, eta, steps)
runs = {
    "gradient flow": ed.solve(ed.models.GradientFlow(prob, eta), theta0, steps, solver="scipy:RK45",
                              rtol=1e-7, atol=1e-10, save_every=2),
    "free-energy map": ed.solve(ed.models.FreeEnergyFlow(prob, eta), theta0, steps, solver="map", save_every=2),
}
print("EoS onset at GD step", traj.eos_onset())

# %%
ed.plot(traj, *runs.values(), labels=list(runs), what=("sharpness", "loss"))

# %%
metrics = {name: ed.compare(traj, sol) for name, sol in runs.items()}
for name, m in metrics.items():
    print(f"{name:16s} sharpness error {m.sharpness_error:.4f}  loss error {m.loss_error:.4f}  distance {m.distance:.4f}")

# %% [markdown]
# Gradient flow sharpens past the edge (S keeps rising above 2/η) and takes a different path
# through parameter space. The free-energy flow, stepped once per GD step, lets its
# oscillation grow from a round-off seed after the crossing, as GD's does, and reproduces
# the catapult (the loss spike) and the return towards S = 2/η.
#
# Saving a result keeps the configuration, library versions and seed with the numbers:

# %%
import tempfile
from pathlib import Path

from effdyn.io import load_dataset

with tempfile.TemporaryDirectory() as tmp:
    path = runs["free-energy map"].save(Path(tmp) / "custom_loss.nc")
    saved = load_dataset(path)
print(sorted(saved.data_vars)[:6], "...")
print({k: saved.attrs[k] for k in ("model", "solver", "status", "eta", "seed")})

# %%
assert metrics["free-energy map"].sharpness_error < 0.02
assert metrics["gradient flow"].sharpness_error > 0.1
assert np.max(eta * traj.sharpness) > 2.2                      # GD overshoots the edge,
assert np.min(eta * traj.sharpness[traj.eos_onset():]) < 1.8   # is catapulted below it,
assert abs(np.mean(eta * traj.sharpness[-200:]) - 2) < 0.05    # and sharpens back to it
