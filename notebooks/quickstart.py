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
# # Quickstart: the Edge of Stability on the minimal valley
#
# Gradient descent with step size η is stable on a quadratic only while the sharpness
# S = λ_max(H) stays below 2/η. On many losses GD first *raises* the sharpness (progressive
# sharpening) until it reaches 2/η; then the iterates start to jump from one side of the
# valley to the other every step, and the sharpness hovers at 2/η instead of growing further:
# the **Edge of Stability** (EoS).
#
# The smallest loss that does this is Berthier's minimal valley,
# E(x, y) = ½(y + ζx)x² − ε(x + y): its sharpness is about y, the drift −ε in y raises it,
# and once GD oscillates in x the term ½y·x² pushes y back down.
#
# This notebook runs GD and three continuous-time models of it, on the same time axis
# (GD steps k):
#
# * **gradient flow** — what GD would do with infinitesimal steps (no EoS at all);
# * the **θ/Σ free-energy flow** (`FreeEnergyFlow`, docs/theory.md) — the mean trajectory θ
#   descends the free energy F = E + ½⟨H, Σ⟩ while the covariance Σ of the fast oscillation
#   grows or shrinks with the sharpness;
# * the **central flow** (`CentralFlow`, Cohen et al.) — θ follows gradient flow projected so
#   that the sharpness stays at 2/η.

# %%
import numpy as np
from threadpoolctl import threadpool_limits

import effdyn as ed

# effdyn's matrices are small (Hessians of a few dozen rows, P × r factors): one BLAS thread
# is the fastest, and much faster than many threads competing on a busy machine.
threadpool_limits(1, user_api="blas")
# %matplotlib inline

# %% [markdown]
# ## Gradient descent
#
# `ed.gd` records the loss at every step and the top Hessian eigenvalue (the sharpness) at
# every step here (`eig_every=1`).

# %%
prob = ed.problems.MinimalValley(zeta=1.0, eps=0.01)
theta0, eta, steps = prob.init(), 0.3, 4000
traj = ed.gd(prob, theta0, eta, steps)
onset = traj.eos_onset()
print(traj)
print(f"2/η = {2 / eta:.3f}; the sharpness first exceeds it at GD step {onset}")

# %% [markdown]
# ## The effective models
#
# All models share one interface and one solver entry point, `ed.solve`. The tolerances
# matter for the free-energy flow: before the onset, Σ is a round-off-sized seed (≈ 1e-16 in
# amplitude, theory §5), and a loose absolute tolerance lets the integrator skip over its
# growth. The step-exact map (`solver="map"`, the same equations stepped once per GD step)
# needs no tolerance at all.

# %%
tol = dict(rtol=1e-8, atol=1e-12, save_every=5)
runs = {
    "gradient flow": ed.solve(ed.models.GradientFlow(prob, eta), theta0, steps, **tol),
    "free-energy flow": ed.solve(ed.models.FreeEnergyFlow(prob, eta), theta0, steps, **tol),
    "free-energy map": ed.solve(ed.models.FreeEnergyFlow(prob, eta), theta0, steps, solver="map", save_every=5),
    "central flow": ed.solve(ed.models.CentralFlow(prob, eta), theta0, steps, **tol),
}
for name, sol in runs.items():
    print(f"{name:18s} {sol}")

# %% [markdown]
# ## Sharpness, distance and amplitude
#
# GD's iterates alternate at the EoS, so the models are compared with GD's *two-step
# midpoint* θ̄_k = ¼(θ_{k−1} + 2θ_k + θ_{k+1}), the mean of the two half-step midpoints on
# either side of θ_k (centred on step k, and free of any period-two alternation), and with
# the half-step amplitude |v₁ᵀ(θ_{k+1} − θ_k)|/2 of the oscillation along the top
# eigenvector v₁. `ed.plot` draws GD and any number of solutions panel by panel: the
# sharpness against 2/η, the distance ‖θ − θ̄_GD‖ of each model to GD's midpoint, and the
# amplitude.

# %%
ed.plot(traj, *runs.values(), labels=list(runs), what=("sharpness", "distance", "amplitude"))

# %% [markdown]
# Gradient flow keeps sharpening past 2/η: without an oscillation nothing holds it back, and
# it drifts away from GD's midpoint. The free-energy flow starts its oscillation from a
# round-off seed when the sharpness crosses 2/η, overshoots (how far depends on the seed's
# size, theory §5), and then settles on the edge with GD's amplitude. The central flow sits
# exactly on the edge from the onset on.
#
# ## Loss: raw, two-step averaged, and the free energy
#
# GD's raw loss jumps between the two sides of the valley. Its two-step average
# ½(E_k + E_{k+1}) is smooth, and it is what the free energy F = E + ½⟨H, Σ⟩ predicts;
# `window="eos"` shows the steps from just before GD's onset on. The band around the
# free-energy flow is its loss envelope E(θ ± √(v₁ᵀΣv₁)·v₁), the two sides GD visits.

# %%
k_la, loss_avg = traj.loss_average()
fe = runs["free-energy flow"]
ed.plot(traj, fe, runs["central flow"], labels=["free-energy flow", "central flow"], what="loss", window="eos")

# %%
print(f"tr Σ of the free-energy flow: {fe.sigma_trace[0]:.1e} at k = 0 (the round-off seed), "
      f"{fe.sigma_trace[-1]:.3g} at the end")

# %% [markdown]
# ## How close? `ed.compare`
#
# `ed.compare` measures each model against GD's time averages over the EoS window (from GD's
# onset to the end): errors of the time-averaged loss, the sharpness (relative to 2/η), the
# amplitude, and the distance of θ to GD's midpoint.

# %%
metrics = {name: ed.compare(traj, sol) for name, sol in runs.items()}
print(f"{'model':18s} {'loss':>8s} {'sharpness':>10s} {'amplitude':>10s} {'distance':>9s}")
for name, m in metrics.items():
    print(f"{name:18s} {m.loss_error:8.4f} {m.sharpness_error:10.4f} {m.amplitude_error:10.4f} {m.distance:9.4f}")

# %% [markdown]
# The first overshoot cycle is where model and GD differ most; after it has damped, the
# free-energy flow follows GD's midpoint closely. These checks keep the notebook honest when
# it runs in the test suite:

# %%
late = ed.compare(traj, runs["free-energy flow"], window=(2500, steps))
assert 1200 <= onset <= 1250
assert metrics["gradient flow"].sharpness_error > 0.1          # no EoS without an oscillation
assert late.sharpness_error < 0.01 and late.distance < 0.01     # the θ/Σ flow after the overshoot
assert metrics["free-energy map"].sharpness_error < 0.01
assert metrics["central flow"].sharpness_error < 0.02
print("late window:", {k: round(v, 4) for k, v in late.as_dict().items() if k.endswith("error")})
