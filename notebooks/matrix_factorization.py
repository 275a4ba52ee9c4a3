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
# # Deep matrix factorisation: converging or period two
#
# A depth-3 linear network fits a 2 × 2 matrix, E(θ) = ½‖W₃W₂W₁ − M‖² with
# M = diag(σ₁, 1). At a *balanced* minimum the sharpness is 3σ₁^{4/3}, so with η = 0.077
# (2/η ≈ 25.97):
#
# * σ₁ = 5.0: 3σ₁^{4/3} = 25.65 < 2/η — a stable minimum exists; GD catapults out of its
#   small initialisation and then converges;
# * σ₁ = 5.5: 3σ₁^{4/3} = 29.2 > 2/η — every balanced minimum is too sharp for this step
#   size; GD locks into a period-two orbit instead of converging.
#
# The quantity to watch is the **effective free energy** F = E + ½⟨H, Σ⟩, the θ/Σ model's
# prediction of GD's loss averaged over two steps: it goes to zero when GD can converge,
# and settles on a plateau when the step size forbids it.

# %%
import numpy as np
from threadpoolctl import threadpool_limits

import effdyn as ed

# effdyn's matrices are small (Hessians of a few dozen rows, P × r factors): one BLAS thread
# is the fastest, and much faster than many threads competing on a busy machine.
threadpool_limits(1, user_api="blas")
# %matplotlib inline

# %%
DMF = ed.problems.DeepMatrixFactorization
eta, steps = 0.077, 500
results = {}
for sigma1 in (5.0, 5.5):
    prob = DMF(d=2, depth=3, target=DMF.spectral_target(sigma1), init="balanced", init_scale=0.3)
    theta0 = prob.init(0)
    traj = ed.gd(prob, theta0, eta, steps, n_eigs=2)
    model = ed.models.FreeEnergyFlow(prob, eta)
    flow = ed.solve(model, theta0, steps, rtol=1e-8, atol=1e-12)
    step_map = ed.solve(model, theta0, steps, solver="map")
    results[sigma1] = (traj, flow, step_map)
    print(f"σ1 = {sigma1}: balanced-minimum sharpness {3 * sigma1 ** (4 / 3):.2f}, onset at step "
          f"{traj.eos_onset()}, GD's last sharpness values {np.round(traj.sharpness[-4:], 2)}")

# %% [markdown]
# ## Sharpness
#
# In both regimes GD's first steps overshoot 2/η (a catapult). With σ₁ = 5.0 the sharpness
# then settles at the balanced minimum, just below the edge. With σ₁ = 5.5 GD's sharpness
# alternates between two values far on either side of 2/η, every step.
#
# The continuous θ/Σ flow averages over the period. For σ₁ = 5.5 it first heads for the
# balanced minimum (sharpness 29.2, above the edge): its oscillation starts from a
# round-off-sized seed and needs about a hundred steps to grow (theory §5). Then Σ pulls
# the sharpness down to 2/η, where it stays.
#
# ## The free energy
#
# GD's raw loss oscillates; its two-step average does not. F is the models' prediction of
# that average. The step-exact map (`solver="map"`: the same equations stepped once per GD
# step) is shown as well. `ed.plot` draws each regime's sharpness (with 2/η) and loss.

# %%
traj, flow, step_map = results[5.0]
ed.plot(traj, flow, step_map, labels=["θ/Σ flow", "step-exact map"], what=("sharpness", "loss"), title="σ₁ = 5.0")

# %%
traj, flow, step_map = results[5.5]
ed.plot(traj, flow, step_map, labels=["θ/Σ flow", "step-exact map"], what=("sharpness", "loss"), title="σ₁ = 5.5")

# %%
for sigma1, (traj, flow, step_map) in results.items():
    for name, sol in (("flow", flow), ("map", step_map)):
        m = ed.compare(traj, sol)
        print(f"σ1 = {sigma1}, {name}: loss error {m.loss_error:.3f}, sharpness error {m.sharpness_error:.4f}, "
              f"mean F = {m.mean_loss_model:.4f} vs GD {m.mean_loss_gd:.4f}")

# %% [markdown]
# * **σ₁ = 5.0.** F follows GD's averaged loss through the catapult and then goes to zero:
#   the oscillation dies and F → E. The continuous flow converges *faster* than GD at the
#   end: near the edge GD contracts by |1 − ηλ| ≈ 0.975 per step, the flow by e^{−ηλ} ≈ e^{−2}.
#   The step-exact map keeps GD's discrete contraction and follows it down.
# * **σ₁ = 5.5.** The flow's F settles on a plateau while its sharpness sits on the edge:
#   GD cannot reach zero loss at this step size. The plateau is about 20 % below GD's
#   two-step average, because GD's period-two orbit is large (its sharpness swings from 13
#   to 42), far outside the second-order expansion behind F (theory §6). The map contains
#   GD's own update of θ: its Σ decays and its θ performs GD's period-two orbit itself, so
#   its F is GD's raw loss.

# %%
(traj5, flow5, map5), (traj55, flow55, map55) = results[5.0], results[5.5]
assert traj5.loss[-1] < 1e-10 and flow5.free_energy[-1] < 1e-10           # converges
assert abs(flow5.sharpness[-1] - 3 * 5.0 ** (4 / 3)) < 1e-2                # at the balanced minimum
k_la, loss_avg = traj5.loss_average()
assert 0.5 < map5.free_energy[-1] / loss_avg[-1] < 2                       # the map keeps GD's rate
assert abs(traj55.sharpness[-1] - traj55.sharpness[-3]) < 1e-6             # GD: period two ...
assert abs(traj55.sharpness[-1] - traj55.sharpness[-2]) > 20               # ... with a large swing
assert abs(flow55.sharpness[-1] - 2 / eta) < 1e-3                          # the flow holds the edge
k_la, loss_avg = traj55.loss_average()
assert 0.6 < flow55.free_energy[-1] / loss_avg[-1] < 0.95                 # below GD's plateau
