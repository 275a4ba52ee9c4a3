"""The validation cases as data (validation/cases/*.toml, installed as effdyn.suite).

Every file must parse in both modes; its horizons must agree with its [case] table; the
setups built from the files must be the ones the former Python builders produced (their
values are written out below for two cases, and the model lists are checked against
`default_models` for the others); the files must be found through the installed package;
and a broken file must be reported with its path and the offending key.
"""

from __future__ import annotations

import functools
import pickle
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from effdyn.validation import CASES, Case, ModelSpec, default_models
from effdyn.validation.cases import SUITE, case_files
from effdyn.validation.config import ConfigError, apply_overrides, config_from_document, load_config

ROOT = Path(__file__).resolve().parents[1]
EPS = float(np.finfo(np.float64).eps)
# cases that build without local data; the wide MLP (P ≈ 1e5, an eigen-solve per model
# to build) is checked in tests/test_networks.py with the other network cases
LOCAL = [n for n in SUITE if not CASES[n].needs_cifar and not CASES[n].needs_peer_data and n != "digits-wide-mlp"]


@functools.lru_cache(maxsize=None)
def _setup(name, quick):
    """A case's default setup, built once per test session (the tests only read it)."""
    return CASES[name].setup(quick=quick)


def _doc(name):
    with open(CASES[name].path, "rb") as fh:
        return tomllib.load(fh)


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """A cifar-10-batches-py folder of random images (5 × 4 of them)."""
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, 4)]}, fh)
    return folder


# --- discovery and packaging -------------------------------------------------------------

def test_cases_come_from_the_package_data_in_suite_order():
    folder = resources.files("effdyn.suite") / "cases"
    stems = sorted(Path(str(f)).stem for f in folder.iterdir() if f.name.endswith(".toml"))
    assert stems == sorted(SUITE)
    assert list(CASES) == ["minimal-valley", "dmf-converge", "dmf-period2", "minimalist-two-layer", "mean-field",
                           "digits-mlp", "digits-cnn", "scalar-product-ngd", "scalar-product-sqrt", "digits-wide-mlp",
                           "peer-mlp", "cifar10-seed-mlp", "cifar10-seed-cnn", "cifar10-cf-mlp", "cifar10-cf-cnn"]
    assert [p.stem for p in case_files()] == list(CASES)
    for name, case in CASES.items():
        assert case.build is None and case.path.is_file() and case.path.stem == name
        assert Path(str(folder / f"{name}.toml")).read_bytes() == case.path.read_bytes()


def test_packaging_covers_every_case_file():
    """pyproject installs validation/ as effdyn.suite with the case files as package data,
    so a regular (non-editable) install finds them too."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        setuptools = tomllib.load(fh)["tool"]["setuptools"]
    assert setuptools["package-dir"]["effdyn.suite"] == "validation"
    assert {"effdyn.suite", "effdyn.suite.cases"} <= set(setuptools["packages"])
    assert "*.toml" in setuptools["package-data"]["effdyn.suite.cases"]
    files = sorted(p.name for p in (ROOT / "validation" / "cases").iterdir())
    assert files == sorted(f"{n}.toml" for n in SUITE)  # nothing the *.toml glob would miss


# --- every file parses, in both modes ----------------------------------------------------

@pytest.mark.parametrize("mode", ["quick", "full"])
@pytest.mark.parametrize("name", LOCAL)
def test_case_file_parses(name, mode):
    case = CASES[name]
    cfg = load_config(case.path, mode=mode)
    assert cfg.name == name and cfg.case["title"] == case.title
    # the file's own horizon agrees with its [case] table (what `effdyn cases` lists)
    assert cfg.setup.steps == (case.quick_steps if mode == "quick" else case.full_steps)
    setup = case.setup(quick=mode == "quick", steps=7)
    assert setup.steps == 7 and setup.eta == cfg.setup.eta
    assert [m.label for m in setup.models] == [m.label for m in cfg.setup.models]


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_cifar_case_parses_with_local_data(fake_cifar, mode):
    # n = 20 images instead of 500 (the fake folder holds 20); everything else as in the file
    case = CASES["cifar10-seed-mlp"]
    doc = apply_overrides(_doc("cifar10-seed-mlp"), {"problem.n": 20})
    setup = config_from_document(doc, case.path, mode=mode, cifar=fake_cifar).setup
    assert setup.problem.dim == 3072 * 32 + 32 + 32 * 10
    assert setup.steps == (100 if mode == "quick" else 1000) and setup.eta == 0.02
    assert setup.gd_options == {"n_eigs": 1, "eig_every": 5, "eig_tol": 1e-5}
    expected = default_models(setup.theta0, small=False, save_every=10, rod=mode == "full")
    assert [m.config() for m in setup.models] == [m.config() for m in expected]
    assert setup.config["document"]["problem"]["path"] == str(fake_cifar)


def test_cifar_case_without_a_folder_names_the_fix(monkeypatch):
    monkeypatch.delenv("EFFDYN_CIFAR10", raising=False)
    with pytest.raises(FileNotFoundError, match="--cifar PATH"):
        CASES["cifar10-seed-mlp"].setup(quick=True)


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("name", LOCAL)
def test_edge_flow_floor_is_the_round_off_of_theta0(name, quick):
    """The files write ρ_floor = ε_mach·max(1, ‖θ0‖) as a literal: it must be that float."""
    setup = _setup(name, quick)
    floors = [m.options["rho_floor"] for m in setup.models if m.cls == "EdgeFlow"]
    assert len(floors) == (0 if name.startswith("scalar-product") else 1)
    for floor in floors:
        assert floor == EPS * max(1.0, float(np.linalg.norm(setup.theta0)))


# --- the setups equal those of the former Python builders --------------------------------

# minimal-valley, as the former builder wrote it
_VALLEY_FLOOR = 6.66503786375278e-16
_FE, _SEED, _TOL = {"rank": 1}, {"sigma_seed": "gd"}, {"rtol": 1e-6, "atol": 1e-9}
_FE_LOG = {"rank": 1, "storage": "log-factor"}


def _small_models(floor):
    """The small-problem model list of the former default_models(theta0)."""
    return (
        ModelSpec("gradient flow", "GradientFlow", save_every=1.0),
        ModelSpec("free-energy flow", "FreeEnergyFlow", _FE_LOG, _SEED, save_every=1.0, **_TOL),
        ModelSpec("free-energy flow [chord]", "FreeEnergyFlow", {**_FE_LOG, "closure": "chord"}, _SEED,
                  save_every=1.0, **_TOL),
        ModelSpec("free-energy flow [map]", "FreeEnergyFlow", _FE, _SEED, solver="map", save_every=1.0),
        ModelSpec("central flow", "CentralFlow", save_every=1.0),
        ModelSpec("self-stabilization", "SelfStabilization", solver="map", save_every=1.0),
        ModelSpec("rod flow", "RodFlow", save_every=1.0),
        ModelSpec("edge flow", "EdgeFlow", {"rho_floor": floor}, save_every=1.0),
    )


@pytest.mark.parametrize("quick, steps", [(True, 4000), (False, 6000)])
def test_minimal_valley_matches_the_former_builder(quick, steps):
    from effdyn.problems import MinimalValley

    setup = _setup("minimal-valley", quick)
    assert type(setup.problem) is MinimalValley
    assert setup.problem.config() == MinimalValley(zeta=1.0, eps=0.01).config()
    assert setup.theta0.dtype == np.float64 and setup.theta0.tolist() == [0.1, 3.0]
    assert setup.eta == 0.3 and setup.steps == steps and setup.seed is None
    assert setup.gd_options == {"n_eigs": 2, "eig_every": 1}
    assert setup.models == _small_models(_VALLEY_FLOOR)
    assert setup.notes == "E = ½(y + ζx)x² − ε(x + y), ζ = 1, ε = 0.01, from (x, y) = (0.1, 3)."


@pytest.mark.parametrize("quick", [True, False])
def test_mean_field_matches_the_former_builder(quick):
    from effdyn.problems import TwoLayerNet
    from effdyn.problems.two_layer import teacher_student

    width, eta, steps, floor = (40, 20.0, 1000, 3.174637093389453e-15) if quick else \
        (200, 100.0, 3000, 7.658600258387996e-15)
    setup = _setup("mean-field", quick)
    ref = teacher_student(width, n=100, d=5, seed=0)
    assert type(setup.problem) is TwoLayerNet and setup.problem.config() == ref.config()
    assert np.array_equal(setup.theta0, ref.init(1)) and setup.seed == 1
    assert setup.eta == eta and setup.steps == steps
    assert setup.gd_options == {"n_eigs": 1, "eig_every": 1, "eig_tol": 1e-6}
    rk = {"solver": "scipy:RK45", "rtol": 1e-6, "atol": 1e-9, "save_every": 5.0}
    mfk = {"eta_mf": 0.5, "rank": 1}
    kinetic = (ModelSpec("mean-field kinetic", "MeanFieldKinetic", mfk, save_every=5, pass_eta=False),)
    expected = (
        ModelSpec("gradient flow", "GradientFlow", **rk),
        ModelSpec("free-energy flow [map]", "FreeEnergyFlow", _FE, _SEED, solver="map", save_every=5.0),
        ModelSpec("rod flow", "RodFlow", **rk),
        ModelSpec("edge flow [map]", "EdgeFlow", {"rho_floor": floor}, solver="map", save_every=5.0),
        *(() if quick else kinetic),
        ModelSpec("mean-field kinetic [map]", "MeanFieldKinetic", mfk, solver="map", save_every=5, pass_eta=False),
    )
    assert setup.models == expected
    assert all(m.pass_eta is False for m in setup.models if m.cls == "MeanFieldKinetic")


# the arguments the former builders passed to default_models, case by case
_DEFAULTS = {
    "minimal-valley": lambda q: {}, "dmf-converge": lambda q: {}, "dmf-period2": lambda q: {},
    "minimalist-two-layer": lambda q: {},
    "digits-mlp": lambda q: {"small": False, "save_every": 10, "rod": not q, "big_budget": 90.0},
}


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("name", sorted(_DEFAULTS))
def test_model_lists_are_the_default_models(name, quick):
    setup = _setup(name, quick)
    expected = default_models(setup.theta0, **_DEFAULTS[name](quick))
    assert setup.models == expected


@pytest.mark.parametrize("sigma1, name", [(5.0, "dmf-converge"), (5.5, "dmf-period2")])
def test_dmf_problem_and_start(sigma1, name):
    from effdyn.problems import DeepMatrixFactorization as DMF

    setup = _setup(name, True)
    ref = DMF(d=2, depth=3, target=np.diag([sigma1, 1.0]), init="balanced", init_scale=0.3)
    assert setup.problem.config() == ref.config()
    assert np.array_equal(setup.theta0, ref.init(0)) and setup.seed == 0 and setup.eta == 0.077


@pytest.mark.parametrize("variant, name", [("normalized", "scalar-product-ngd"), ("sqrt", "scalar-product-sqrt")])
def test_scalar_product_runs_the_variant(variant, name):
    setup = _setup(name, True)
    assert setup.gd_options == {"variant": variant, "n_eigs": 1, "eig_every": 1}
    assert setup.theta0.tolist() == [2.0, 1.0, 0.6] and setup.eta == 0.01 and setup.steps == 20000
    assert setup.models == (ModelSpec("gradient flow", "GradientFlow", save_every=20.0),
                            ModelSpec("sharpness-reduction flow", "SharpnessReductionFlow", {"variant": variant},
                                      save_every=20.0))


def test_digits_problem_and_start():
    from effdyn.problems.builders import digits_mlp

    setup = _setup("digits-mlp", True)
    problem, theta0 = digits_mlp(n=500, width=32, init_scale=0.25, data_seed=0, name="digits_mlp")
    assert setup.problem.dim == 2400 and setup.problem.config() == problem.config()
    assert np.array_equal(setup.theta0, theta0) and setup.seed == 0 and setup.eta == 0.4
    assert setup.gd_options == {"n_eigs": 1, "eig_every": 1, "eig_tol": 1e-6}


# --- broken files are reported with their path and key -----------------------------------

def _write(tmp_path, text, name="broken-case"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


_VALID = CASES["minimal-valley"].path.read_text(encoding="utf-8")


@pytest.mark.parametrize("old, new, key", [
    ("quick_steps = 4000", "quick_steps = \"many\"", "`quick_steps`"),
    ("title = \"Minimal valley (Berthier), η = 0.3\"", "titel = \"x\"", "`title`"),
    ("full_steps = 6000", "full_steps = 0", "`full_steps`"),
])
def test_malformed_case_table(tmp_path, old, new, key):
    assert old in _VALID
    path = _write(tmp_path, _VALID.replace(old, new))
    with pytest.raises(ConfigError) as info:
        Case.from_file(path)
    assert str(path) in str(info.value) and "[case]" in str(info.value) and key in str(info.value)


@pytest.mark.parametrize("quick, old, new, key", [
    (True, "options = { rho_floor = 6.6650378637527801e-16 }", "options = { rho_flor = 1e-16 }", "`rho_flor`"),
    (True, "eig_every = 1 ", "eig_evry = 1 ", "`eig_evry`"),
    (False, "\"gd.steps\" = 6000", "\"gd.steps\" = 6000\n\"problem.zetta\" = 2.0", "`zetta`"),
    (True, "type = \"CentralFlow\"", "type = \"CentralFlo\"", "'CentralFlo'"),
])
def test_malformed_case_body(tmp_path, quick, old, new, key):
    assert old in _VALID
    path = _write(tmp_path, _VALID.replace(old, new))
    case = Case.from_file(path)  # the [case] table is fine: the rest is checked when set up
    with pytest.raises(ConfigError) as info:
        case.setup(quick=quick)
    assert str(path) in str(info.value) and key in str(info.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = _write(tmp_path, _VALID.replace("[gd]", "[gd"))
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        Case.from_file(path)
    assert str(path) in str(info.value)


def test_a_case_is_a_file_or_a_builder(tmp_path):
    with pytest.raises(TypeError, match="either `build`"):
        Case("nothing", "no file, no builder")
    # a Case made from a path alone reads its file when set up
    path = _write(tmp_path, _VALID, name="valley-copy")
    setup = Case("valley-copy", "copy", path=path, quick_steps=4000, full_steps=6000).setup(quick=False, steps=9)
    assert setup.steps == 9 and setup.theta0.tolist() == [0.1, 3.0]
