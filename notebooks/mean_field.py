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
# # Mean field: the sharpness plateau does not depend on the width
#
# A two-layer tanh network in mean-field scaling, f(x) = (1/N) Σᵢ aᵢ tanh(wᵢ·x), learns a
# teacher–student task. With the mean-field learning rate η_MF, GD on the width-N network
# uses the step η = N·η_MF, and the natural time is t = k·η_MF. The mean-field sharpness
# S_MF = N·λ_max(H) is the width-independent one, and the Edge of Stability sits at
# η_MF·S_MF = 2: for η_MF = 0.5, S_MF = 4.
#
# Two things to see: GD's S_MF(t) curves converge as N grows, and they all hold the plateau
# S_MF = 4. The mean-field kinetic model (`MeanFieldKinetic`) follows each neuron's average
# weights and oscillation amplitude, and reproduces the plateau.

# %%
import numpy as np
from threadpoolctl import threadpool_limits

import effdyn as ed

# effdyn's matrices are small (Hessians of a few dozen rows, P × r factors): one BLAS thread
# is the fastest, and much faster than many threads competing on a busy machine.
threadpool_limits(1, user_api="blas")
# %matplotlib inline

# %%
from effdyn.problems.two_layer import teacher_student

eta_mf, steps = 0.5, 1000
widths = (20, 40, 80, 160)
runs = {}
for N in widths:
    prob = teacher_student(N, n=100, d=5, seed=0)
    # compiled=False: for runs this short the Python loop beats compiling the GD kernel
    runs[N] = ed.gd(prob, prob.init(0), N * eta_mf, steps, eig_every=10, compiled=False)
    print(f"N = {N:3d}: P = {prob.dim:4d}, η = {N * eta_mf:5.1f}, onset at step {runs[N].eos_onset()}, "
          f"final loss {runs[N].loss[-1]:.2e}")

# %% [markdown]
# `ed.plot` shows a mean-field network's sharpness in mean-field units, S_MF = N·λ_max
# against 2/η_MF, over GD steps k (mean-field time t = k·η_MF = k/2); here the narrowest and
# the widest network:

# %%
from IPython.display import display

for N in (widths[0], widths[-1]):
    display(ed.plot(runs[N], what=("sharpness", "loss"), title=f"GD, width N = {N}"))

# %% [markdown]
# ## Convergence in N
#
# Distance of each S_MF(t) curve from the widest one, and the plateau value (mean S_MF over
# the last third of the run):

# %%
ref = widths[-1] * runs[widths[-1]].sharpness
gaps = {}
for N in widths:
    s_mf = N * runs[N].sharpness
    gaps[N] = np.max(np.abs(s_mf - ref))
    plateau = s_mf[len(s_mf) * 2 // 3:].mean()
    print(f"N = {N:3d}: max |S_MF − S_MF(N={widths[-1]})| = {gaps[N]:.3f}, plateau {plateau:.3f}")

# %% [markdown]
# ## The kinetic model
#
# Each neuron carries its two-step average weights θ̄ᵢ and the amplitude uᵢ of its
# alternating part. Stepped once per GD step (`solver="map"`), the model's fluctuation
# equation is GD's own one-step map of a small oscillation. Started, like GD, from the
# initialisation of the N = 40 network:

# %%
N = 40
prob = teacher_student(N, n=100, d=5, seed=0)
kinetic = ed.solve(ed.models.MeanFieldKinetic(prob, eta_mf), prob.init(0), steps, solver="map", save_every=10)
m = ed.compare(runs[N], kinetic)
display(ed.plot(runs[N], kinetic, labels=["kinetic model"], what=("sharpness", "loss"), title=f"N = {N}"))
print(f"sharpness error {m.sharpness_error:.4f} (of 2/η), loss error {m.loss_error:.3f}")

# %%
for N in widths[1:]:  # the plateau S_MF = 2/η_MF
    s_mf = N * runs[N].sharpness
    assert abs(s_mf[len(s_mf) * 2 // 3:].mean() - 2 / eta_mf) < 0.1
assert gaps[80] < gaps[20]            # the curves approach the widest one as N grows
assert m.sharpness_error < 0.05
