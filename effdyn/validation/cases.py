"""The validation cases: each is a problem, a learning rate, a horizon and a list of models.

A :class:`Case` builds its :class:`Setup` (problem, θ0, η, horizon, GD options) for either
the quick horizon (``effdyn validate --quick``, what ``make run`` runs) or the full one.
Models are named by their class in :mod:`effdyn.models` (:class:`ModelSpec`), so a model
that is not implemented yet is skipped with a note instead of breaking the suite.

Choices made here, and why (numbers measured with :func:`effdyn.gd` on this code):

* minimal valley (theory §5): η = 0.3, ζ = 1, ε = 0.01 from (0.1, 3); GD's sharpness first
  exceeds 2/η at step 1222, overshoots (two-step average 7.64 against 2/η = 6.67) and then
  holds ≈ 2/η with |x| oscillating at ≈ √(2ε). Quick runs 4000 steps (onset plus ≈ 2800
  steps at EoS), full 6000.
* deep matrix factorisation, d = 2, depth 3, η = 0.077 (2/η ≈ 25.97), diagonal targets
  diag(σ1, 1), balanced initialisation with scale 0.3 from seed 0. GD leaves the small
  initialisation with a catapult: sharpness 27.5 (σ1 = 5.0) or 41.7 (σ1 = 5.5) above 2/η
  within 20 steps. With σ1 = 5.0 it then converges to the balanced minimum of sharpness
  3σ1^{4/3} = 25.65 < 2/η; with σ1 = 5.5 (3σ1^{4/3} = 29.1 > 2/η) it locks into a period-two
  orbit whose sharpness alternates between 13.1 and 41.7. Quick 500 steps, full 2000.
* minimalist two-layer network (seed 004): η = 2 from (0.5, 0.05, 0.05); ηS crosses 2 at
  step 22, overshoots to 2.235, and GD converges with ηS = 1.902 after a late burst
  (steps 100–200) of the oscillation. Quick 400 steps, full 1000.
* mean-field teacher–student (theory §4–5): mean-field step η_MF = 0.5, i.e. GD with
  η = N·η_MF on the mean-field-scaled network, init seed 1. Quick: N = 40, 1000 steps
  (S_MF crosses 4 at step 344, peaks at ≈ 4.33 near step 600, holds ≈ 4.02 after 900);
  full: N = 200, 3000 steps.
* digits: a two-layer tanh MLP (64 → 32 → 10, hidden bias, P = 2400) with squared loss on
  one-hot labels of n = 500 standardised scikit-learn digits, initial weights
  0.25·N(0, 1/fan_in), η = 0.4. GD shows progressive sharpening: ηS rises from 0.51 and
  crosses 2 at step 215; the oscillation needs ≈ 130 more steps to grow, so the two-step
  averaged ηS peaks at 2.58 (step 349) before falling back, and over steps 400–2000 it stays
  in [1.98, 2.15] (mean 2.06). With the usual 1/√fan_in weights GD starts at ηS ≈ 1.2–3 and
  shows no sharpening phase. Quick 500 steps, full 2000.
* CIFAR-10 (seed paper's setting): n = 500 images, 3072 → 32 → 10 tanh MLP, η = 0.02; run
  only with a local copy of the data (``--cifar PATH`` or ``$EFFDYN_CIFAR10``). Its
  initial scale was not tuned on the real images (none were available offline), and it is
  slow (see ``_cifar``). Quick 100 steps, full 1000.

* scalar product ½(θ1θ2θ3 − 1)² (seed 002), η = 0.01, from (2, 1, 0.6), run with
  normalised GD and with GD on √E instead of plain GD: both reach the minimiser manifold
  ∏θ = 1 within ~50 steps and then drift along it while oscillating across it, the
  sharpness falling from 4.94 to 3.95 (NGD) or 3.53 (√E) over 20 000 steps (quick and
  full). The sharpness-reduction flow of that variant is compared with them, gradient flow
  as the baseline that stops on the manifold; the EoS models of plain GD do not apply.

Every free-energy flow uses its default persistent floor ("roundoff"); see
:func:`default_models` for the seeds of all models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..problems.builders import mlp_problem

__all__ = ["Case", "ModelSpec", "Setup", "CASES", "case_names", "get_case", "mlp_problem", "default_models",
           "UnknownCaseError"]


class UnknownCaseError(ValueError):
    """A case name that is not in the registry (the message lists the valid names)."""


@dataclass(frozen=True)
class ModelSpec:
    """One effective model to run against GD.

    Parameters
    ----------
    label : str
        Row name in the report and key in the saved files.
    cls : str
        Class name in :mod:`effdyn.models` (e.g. ``"FreeEnergyFlow"``).
    options : dict
        Constructor keyword arguments (besides ``problem`` and ``eta``).
    initial : dict
        Keyword arguments of ``model.initial_state`` (passed through ``effdyn.solve``).
    solver, rtol, atol, save_every :
        Passed to :func:`effdyn.solve`.
    pass_eta : bool, optional
        Construct as ``cls(problem, eta, **options)`` or, for models whose learning rate is
        given in other units (MeanFieldKinetic's ``eta_mf``), ``cls(problem, **options)``;
        the model's ``eta`` must then equal the case's. Default: what the model's
        registration says (:mod:`effdyn.registry`).
    budget : float, optional
        Wall-time limit in seconds for this model's run, overriding the run's default
        (see :func:`effdyn.validation.validate`); the run stops there with status "failed"
        and the partial solution is compared and saved.
    """

    label: str
    cls: str
    options: dict = field(default_factory=dict)
    initial: dict = field(default_factory=dict)
    solver: str = "scipy:LSODA"
    rtol: float = 1e-7
    atol: float = 1e-10
    save_every: float = 1.0
    pass_eta: bool | None = None
    budget: float | None = None

    def __post_init__(self):
        if self.pass_eta is None:
            from ..registry import UnknownNameError, model_entry

            try:
                takes = model_entry(self.cls).takes_eta
            except UnknownNameError:
                takes = True
            object.__setattr__(self, "pass_eta", takes)

    def config(self) -> dict:
        return {"label": self.label, "cls": self.cls, "options": dict(self.options), "initial": dict(self.initial),
                "solver": self.solver, "rtol": self.rtol, "atol": self.atol, "save_every": self.save_every,
                "pass_eta": self.pass_eta, "budget": self.budget}


@dataclass
class Setup:
    """Everything a case run needs: the problem, where GD starts and for how long."""

    problem: object
    theta0: np.ndarray
    eta: float
    steps: int
    models: tuple
    seed: int | None = None
    gd_options: dict = field(default_factory=dict)
    notes: str = ""
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """A named validation case.

    ``build(steps, quick, cifar)`` returns the :class:`Setup`; ``cifar`` is the CIFAR-10
    folder (or None) and is only used by cases with ``needs_cifar``. ``quick`` selects the
    smaller problem size where a case has one (the mean-field width).
    """

    name: str
    title: str
    build: Callable
    needs_cifar: bool = False
    quick_steps: int = 0
    full_steps: int = 0

    def setup(self, quick: bool = True, cifar=None, steps: int | None = None) -> Setup:
        """The case's setup; ``steps`` overrides the quick/full horizon (GD steps)."""
        if steps is None:
            steps = self.quick_steps if quick else self.full_steps
        return self.build(int(steps), quick, cifar)


# --- models ------------------------------------------------------------------------------

def default_models(theta0, *, small: bool = True, save_every: float = 1.0, rod: bool = True, extra=(),
                   big_budget: float | None = None) -> tuple:
    """The standard model list of a case.

    Seeding: Σ = 0 (or ρ = 0) is invariant, so every oscillation model needs a seed
    (theory §2). The free-energy flow starts from Σ0 = GD's first half-step projected on the
    top eigenvector (``sigma_seed="gd"``) and keeps its default persistent floor
    ``"roundoff"``, q = (ε_mach·max(1, ‖θ‖))²: the size of the round-off that seeds GD's
    own oscillation. The edge-flow reconstruction gets the same magnitude floor,
    ρ >= ε_mach·max(1, ‖θ0‖). The other models use their own defaults.

    ``small`` problems (P up to a few dozen) run every model, the free-energy flow both
    adaptively (LSODA, in log-amplitude coordinates, ``storage="log-factor"``, so that the
    round-off-sized seed is integrated with relative accuracy; also with the chord closure)
    and as the step-exact map. Larger ones run gradient flow, the
    free-energy flow as the step-exact map only (each of its drift evaluations is a
    warm-started Lanczos solve, and LSODA needs tens of thousands of them on the mean-field
    case), and the rod and edge flows (gradients and Hessian-vector products only); the
    central flow and self-stabilisation, which need several eigenpairs and third
    derivatives per evaluation, are left to small problems. ``save_every`` thins the saved
    states (each saved state costs an eigen-solve for the observables). ``rod=False`` leaves
    out the rod flow (the quick runs of the MLP cases, where it costs as much as GD).
    ``big_budget`` is the time budget (s) of the free-energy map on large problems, whose
    every step is a Lanczos solve.
    """
    rho_floor = float(np.finfo(np.float64).eps * max(1.0, float(np.linalg.norm(theta0))))
    fe = {"rank": 1}
    seed = {"sigma_seed": "gd"}
    se = float(save_every)
    if small:
        fe_log = {**fe, "storage": "log-factor"}
        tol = {"rtol": 1e-6, "atol": 1e-9}  # relative accuracy of the amplitude at every size
        return (
            ModelSpec("gradient flow", "GradientFlow", save_every=se),
            ModelSpec("free-energy flow", "FreeEnergyFlow", fe_log, seed, save_every=se, **tol),
            ModelSpec("free-energy flow [chord]", "FreeEnergyFlow", {**fe_log, "closure": "chord"}, seed,
                      save_every=se, **tol),
            ModelSpec("free-energy flow [map]", "FreeEnergyFlow", fe, seed, solver="map", save_every=se),
            ModelSpec("central flow", "CentralFlow", save_every=se),
            ModelSpec("self-stabilization", "SelfStabilization", solver="map", save_every=se),
            ModelSpec("rod flow", "RodFlow", save_every=se),
            ModelSpec("edge flow", "EdgeFlow", {"rho_floor": rho_floor}, save_every=se),
        ) + tuple(extra)
    # LSODA estimates Jacobians by finite differences, P drift evaluations each: on large
    # problems the explicit RK45 (GD-step time is not stiff here: rates are O(1) per step)
    # is far cheaper. The edge-flow reconstruction has its own step-exact map.
    rk = {"solver": "scipy:RK45", "rtol": 1e-6, "atol": 1e-9, "save_every": se}
    return (
        ModelSpec("gradient flow", "GradientFlow", **rk),
        ModelSpec("free-energy flow [map]", "FreeEnergyFlow", fe, seed, solver="map", save_every=se,
                  budget=big_budget),
        *((ModelSpec("rod flow", "RodFlow", **rk),) if rod else ()),
        ModelSpec("edge flow [map]", "EdgeFlow", {"rho_floor": rho_floor}, solver="map", save_every=se),
    ) + tuple(extra)


# --- case builders -----------------------------------------------------------------------

def _minimal_valley(steps, quick, cifar=None):
    from ..problems import MinimalValley

    p = MinimalValley(zeta=1.0, eps=0.01)
    theta0 = np.array([0.1, 3.0])
    return Setup(p, theta0, 0.3, steps, default_models(theta0), seed=None,
                 gd_options={"n_eigs": 2, "eig_every": 1},
                 notes="E = ½(y + ζx)x² − ε(x + y), ζ = 1, ε = 0.01, from (x, y) = (0.1, 3).",
                 config={"zeta": 1.0, "eps": 0.01, "theta0": [0.1, 3.0]})


def _dmf(sigma1):
    def build(steps, quick, cifar=None):
        from ..problems import DeepMatrixFactorization as DMF

        target = DMF.spectral_target(sigma1)
        p = DMF(d=2, depth=3, target=target, init="balanced", init_scale=0.3)
        seed = 0
        theta0 = p.init(seed)
        return Setup(p, theta0, 0.077, steps, default_models(theta0), seed=seed,
                     gd_options={"n_eigs": 2, "eig_every": 1},
                     notes=f"E = ½‖W3W2W1 − diag({sigma1}, 1)‖², balanced init (scale 0.3, seed 0); "
                           f"balanced-minimum sharpness 3σ1^(4/3) = {3 * sigma1 ** (4 / 3):.2f}.",
                     config={"sigma1": sigma1, "init": "balanced", "init_scale": 0.3})
    return build


def _minimalist(steps, quick, cifar=None):
    from ..problems import MinimalistTwoLayer

    p = MinimalistTwoLayer(lam1=1.0, lam2=0.05)
    theta0 = np.array([0.5, 0.05, 0.05])
    return Setup(p, theta0, 2.0, steps, default_models(theta0),
                 gd_options={"n_eigs": 2, "eig_every": 1},
                 notes="E = ½λ1α²β1² + ½λ2(αβ2 − 1)², λ1 = 1, λ2 = 0.05, from (α, β1, β2) = (0.5, 0.05, 0.05).",
                 config={"lam1": 1.0, "lam2": 0.05, "theta0": [0.5, 0.05, 0.05]})


def _mean_field(steps, quick, cifar=None):
    from ..problems.two_layer import teacher_student

    width = 40 if quick else 200
    eta_mf = 0.5
    seed = 1
    p = teacher_student(width, n=100, d=5, seed=0)
    theta0 = p.init(seed)
    mfk = {"eta_mf": eta_mf, "rank": 1}
    # the kinetic model's adaptive run needs ~50 000 drift evaluations at N = 40: full runs only
    extra = (ModelSpec("mean-field kinetic [map]", "MeanFieldKinetic", mfk, solver="map", save_every=5,
                       pass_eta=False),)
    if not quick:
        extra = (ModelSpec("mean-field kinetic", "MeanFieldKinetic", mfk, save_every=5, pass_eta=False),) + extra
    return Setup(p, theta0, width * eta_mf, steps, default_models(theta0, small=False, save_every=5, extra=extra),
                 seed=seed, gd_options={"n_eigs": 1, "eig_every": 1, "eig_tol": 1e-6},
                 notes=f"Teacher–student (n = 100, d = 5, data seed 0), tanh student of width N = {width}, "
                       f"mean-field scaling, η_MF = {eta_mf} (GD step η = N·η_MF = {width * eta_mf:g}); "
                       f"init seed {seed}.",
                 config={"width": width, "eta_mf": eta_mf, "n": 100, "d": 5, "data_seed": 0})


def _digits(steps, quick, cifar=None):
    from ..data import load_digits_subset, one_hot

    X, labels = load_digits_subset(500, seed=0)
    width, scale, seed = 32, 0.25, 0
    p, theta0 = mlp_problem(X, one_hot(labels), width, init_scale=scale, seed=seed, name="digits_mlp")
    return Setup(p, theta0, 0.4, steps, default_models(theta0, small=False, save_every=10, rod=not quick,
                                                    big_budget=90.0),
                 seed=seed, gd_options={"n_eigs": 1, "eig_every": 1, "eig_tol": 1e-6},
                 notes=f"Two-layer tanh MLP 64 → {width} → 10 (P = {p.dim}), squared loss on one-hot labels, "
                       f"n = 500 standardised digits (subset seed 0), init scale {scale}.",
                 config={"n": 500, "width": width, "init_scale": scale, "data_seed": 0})


def _scalar_product(variant):
    def build(steps, quick, cifar=None):
        from ..problems import ScalarProduct

        p = ScalarProduct(depth=3, target=1.0)
        theta0 = np.array([2.0, 1.0, 0.6])
        # the flow starts at Φ(θ0), the gradient-flow limit of θ0 on the manifold
        models = (ModelSpec("gradient flow", "GradientFlow", save_every=20.0),
                  ModelSpec("sharpness-reduction flow", "SharpnessReductionFlow", {"variant": variant},
                            save_every=20.0))
        name = "normalised GD" if variant == "normalized" else "GD on √E"
        # sharpness at every step: its two-step average needs consecutive steps (≈ 3 s here)
        return Setup(p, theta0, 0.01, steps, models, gd_options={"variant": variant, "n_eigs": 1, "eig_every": 1},
                     notes=f"E = ½(θ1θ2θ3 − 1)², {name} (not plain GD) from (2, 1, 0.6); minimiser manifold "
                           "θ1θ2θ3 = 1, on which the sharpness-reduction flow of the variant drifts.",
                     config={"depth": 3, "target": 1.0, "variant": variant, "theta0": [2.0, 1.0, 0.6]})
    return build


def _cifar(steps, quick, cifar=None):
    # Expensive: P ≈ 98 000 and every Hessian-vector product is a pass over 500 images
    # (20–50 ms here). On generated (random) images an eigen-solve took 80–130 products, so
    # GD tracks the sharpness every 5th step (odd, so that the samples alternate between the
    # two phases of a period-two oscillation) and the free-energy map costs ≈ 9 s per step.
    from ..data import load_cifar10_subset, one_hot

    X, labels = load_cifar10_subset(cifar, n=500, seed=0)
    width, seed = 32, 0
    p, theta0 = mlp_problem(X, one_hot(labels), width, init_scale=1.0, seed=seed, name="cifar10_mlp")
    return Setup(p, theta0, 0.02, steps, default_models(theta0, small=False, save_every=10, rod=not quick),
                 seed=seed, gd_options={"n_eigs": 1, "eig_every": 5, "eig_tol": 1e-5},
                 notes=f"Two-layer tanh MLP 3072 → {width} → 10 (P = {p.dim}), squared loss on one-hot labels, "
                       "n = 500 standardised CIFAR-10 training images (subset seed 0).",
                 config={"n": 500, "width": width, "init_scale": 1.0, "data_seed": 0, "cifar": str(cifar)})


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("minimal-valley", "Minimal valley (Berthier), η = 0.3", _minimal_valley, quick_steps=4000,
             full_steps=6000),
        Case("dmf-converge", "Deep matrix factorisation, σ1 = 5.0 (converges), η = 0.077", _dmf(5.0),
             quick_steps=500, full_steps=2000),
        Case("dmf-period2", "Deep matrix factorisation, σ1 = 5.5 (period two), η = 0.077", _dmf(5.5),
             quick_steps=500, full_steps=2000),
        Case("minimalist-two-layer", "Minimalist two-layer network, η = 2", _minimalist, quick_steps=400,
             full_steps=1000),
        Case("mean-field", "Mean-field teacher–student, η_MF = 0.5", _mean_field, quick_steps=1000,
             full_steps=3000),
        Case("digits-mlp", "Digits, two-layer tanh MLP, η = 0.4", _digits, quick_steps=500, full_steps=2000),
        Case("scalar-product-ngd", "Scalar product, normalised GD, η = 0.01", _scalar_product("normalized"),
             quick_steps=20000, full_steps=20000),
        Case("scalar-product-sqrt", "Scalar product, GD on √E, η = 0.01", _scalar_product("sqrt"),
             quick_steps=20000, full_steps=20000),
        Case("cifar10-mlp", "CIFAR-10 (n = 500), two-layer tanh MLP, η = 0.02", _cifar, needs_cifar=True,
             quick_steps=100, full_steps=1000),
    )
}


def case_names() -> list[str]:
    """Names of all cases (built-in, then registered), in run order."""
    from ..registry import case_names as names

    return list(names())


def get_case(name: str) -> Case:
    """The case ``name`` (built-in or registered); an unknown name raises with the list of
    valid ones."""
    from ..registry import get_case as lookup

    return lookup(name)


def cifar_folder(path=None) -> Path | None:
    """The CIFAR-10 folder from ``path`` or ``$EFFDYN_CIFAR10`` (None when neither is set)."""
    from ..data import cifar10_path

    return cifar10_path(path)
