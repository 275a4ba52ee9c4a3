"""Hostile input and runaway runs: what effdyn refuses, and how runs that cannot succeed end.

One test per case of the issue "Hostile input and runaway runs", then one property test per
class under the deterministic "gate" profile (tests/conftest.py). Each comment says how the
code before the fix behaved (the commit named is the last one without the fix).
"""

from __future__ import annotations

import math
import os
import pickle
import re
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import effdyn as ed
from effdyn.cli import main
from effdyn.errors import IntegrationError
from effdyn.outcomes import Cause
from effdyn.problems.base import Problem
from effdyn.solvers._scipy import default_max_evals
from effdyn.validation.config import ConfigError, check_name, config_from_document

pytestmark = pytest.mark.xdist_group("cli")

def fuzz(examples: int):
    """Settings of the property tests: the loaded profile ("gate": derandomised) with a
    fixed number of examples."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

BASE_TOML = """
name = "NAME"
[problem]
type = "MinimalValley"
[start]
theta0 = [0.1, 3.0]
[gd]
eta = 0.3
steps = 20
[output]
figures = false
"""


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def no_gd(monkeypatch):
    """Fail the test if GD is started (the checks must come first)."""
    import effdyn.validation.runner as runner

    def refuse(*args, **kwargs):
        raise AssertionError("GD ran although the configuration is invalid")

    monkeypatch.setattr(runner, "_run_gd", refuse)


# --- (2) output names cannot leave the output folder --------------------------------------

@pytest.mark.parametrize("name", ["../../escaped", "/abs", "a/b", "..", "", "a\\b", "./x"])
def test_output_name_traversal_is_refused(capsys, tmp_path, no_gd, name):
    # Before 97fbb4a `name` went into the file paths unchecked: "../../escaped" wrote
    # escaped.nc two folders above --out, "/abs" at the root of the file system.
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    cfg = work / "c.toml"
    cfg.write_text(BASE_TOML.replace('"NAME"', f"'{name}'"))  # a TOML literal string: no escapes
    code, _, err = _run(capsys, "run", cfg, "--out", work / "out")
    assert code == 2
    assert "name" in err and "must be" in err
    assert _files(tmp_path) == ["a/b/c.toml"]  # nothing written, inside --out or outside it
    assert not Path("/abs.nc").exists()


# --- (7) the CLI checks every model before GD runs -------------------------------------------

@pytest.mark.parametrize("model, needle", [
    ('type = "FreeEnergyFlow"\noptions = { rank = 99 }', "`rank` must be <= the problem dimension P = 2; got 99"),
    ('type = "FreeEnergyFlow"\ninitial = { sigma_seed = "bogus" }', "`sigma_seed` must be one of"),
    ('type = "RodFlow"\nsolver = "map"', "`solver` 'map' is not available for RodFlow"),
])
def test_bad_model_is_refused_before_gd(capsys, tmp_path, no_gd, model, needle):
    # Before 97fbb4a the models were built after GD had run (minutes on real problems), and
    # these mistakes surfaced as a failed row of the report, or a traceback.
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE_TOML.replace("NAME", "bad") + "[[models]]\n" + model + "\n")
    code, _, err = _run(capsys, "run", cfg, "--out", tmp_path / "out")
    assert code == 2 and needle in err and "[[models]]" in err
    assert not (tmp_path / "out").exists()


def test_one_parameter_problem_runs_with_default_n_eigs(capsys, tmp_path):
    # The default n_eigs = 2 exceeds P = 1: before 97fbb4a GD refused the config's defaults.
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent("""
        name = "one"
        [problem]
        type = "ScalarProduct"
        depth = 1
        [start]
        theta0 = [3.0]
        [gd]
        eta = 0.3
        steps = 10
        [output]
        figures = false
    """))
    code, _, err = _run(capsys, "run", cfg, "--out", tmp_path / "out")
    assert code == 0, err
    from effdyn.io import load_dataset

    ds = load_dataset(tmp_path / "out" / "one.nc")
    assert ds["gd_theta"].shape == (11, 1)
    # E = ½(θ - 1)²: θ_k - 1 = 2·(1 - η)^k
    np.testing.assert_allclose(ds["gd_theta"].values[-1], [1 + 2 * 0.7 ** 10], rtol=1e-12)


def _unwritable_folders(tmp_path):
    folders = [Path("/proc")]  # exists, and nobody (root included) can create files in it
    if os.geteuid() != 0:  # root writes into read-only permission bits anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        folders.append(ro)
    return folders


def test_out_must_be_a_writable_folder(capsys, tmp_path, no_gd):
    # Before this change `--out /proc` passed the os.access check for root: GD and every
    # model ran, then saving failed with a traceback.
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE_TOML.replace("NAME", "w"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, needle in [(afile, "is a file, not a folder"), (afile / "sub", "cannot be created")] + [
            (f, "is not writable") for f in _unwritable_folders(tmp_path)]:
        code, _, err = _run(capsys, "run", cfg, "--out", out)
        assert code == 2, out
        assert needle in err and len(err.strip().splitlines()) == 1
        code, _, err = _run(capsys, "validate", "--cases", "minimal-valley", "--out", out)
        assert code == 2 and needle in err


# --- (8) complex numbers and text are refused ------------------------------------------------

@pytest.mark.parametrize("arg, bad", [("X", "complex"), ("y", "complex"), ("X", "text"), ("y", "text")])
def test_two_layer_net_refuses_complex_and_text(arg, bad):
    # Before this change X + 1j was cast to its real part (a ComplexWarning at most) and
    # text such as "1.5" was parsed into numbers.
    from effdyn.problems import TwoLayerNet

    data = {"X": np.ones((4, 2)), "y": np.linspace(0, 1, 4)}
    data[arg] = data[arg] + 1j if bad == "complex" else data[arg].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning on the way
        with pytest.raises(TypeError, match=rf"`{arg}` must be a real"):
            TwoLayerNet(data["X"], data["y"], width=3)


def test_minimalist_two_layer_init_checks_its_seed():
    # Before this change any seed was ignored, "bogus" included.
    p = ed.problems.MinimalistTwoLayer()
    np.testing.assert_array_equal(p.init(0), p.init(7))
    np.testing.assert_array_equal(p.init(None), [0.5, 0.05, 0.05])
    with pytest.raises(TypeError, match="`seed`"):
        p.init("bogus")
    with pytest.raises(ValueError, match="`seed`"):
        p.init(-1)


# --- CIFAR-10 batches cannot run code ---------------------------------------------------------

class _Payload:
    """Unpickling this runs exec(...), which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def _cifar_folder(folder, rows=2, payload=None, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8), b"labels": [0, 9][:rows],
                 b"filenames": [b"a.png"] * rows, b"batch_label": b"training batch"}
        if payload is not None and i == 3:
            batch[b"labels"] = payload
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=protocol))
    return folder


def test_crafted_cifar_batch_cannot_run_code(tmp_path):
    from effdyn.data import load_cifar10

    marker = tmp_path / "marker"
    folder = _cifar_folder(tmp_path / "cifar-10-batches-py", payload=_Payload(marker))
    # the crafted file is live: pickle.load (what the old reader called) runs the payload
    decoy = tmp_path / "decoy"
    pickle.loads(pickle.dumps(_Payload(decoy)))
    assert decoy.read_text() == "code ran"
    with pytest.raises(ValueError, match=r"data_batch_3.*refused global (__builtin__|builtins)\.exec"):
        load_cifar10(folder)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_genuine_cifar_layouts_still_load(tmp_path, protocol):
    from effdyn.data import load_cifar10

    folder = _cifar_folder(tmp_path / "c", protocol=protocol)
    data, labels = load_cifar10(folder)
    assert data.shape == (10, 3072) and data.dtype == np.uint8 and labels.tolist() == [0, 9] * 5
    # the real files were written by Python 2 with NumPy 1: numpy.core.multiarray names
    raw = (folder / "data_batch_1").read_bytes()
    if protocol == 2:
        (folder / "data_batch_1").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
        again, _ = load_cifar10(folder)
        np.testing.assert_array_equal(again, data)


# --- (5) runaway set-ups end quickly, with a named cause and the partial result ------------

def _setup(kind, factor):
    if kind == "valley":
        p, th = ed.problems.MinimalValley(zeta=1.0, eps=0.01), np.array([0.1, 3.0])
    elif kind == "quadratic":
        p, th = ed.problems.Quadratic(np.diag([3.0, 1.0])), np.array([1.0, 1.0])
    else:
        p = ed.problems.ScalarProduct(depth=2)
        th = p.init(0)
    lam = float(np.linalg.eigvalsh(p.hessian(th))[-1])
    return p, th, factor * 2.0 / lam  # η = factor × the GD stability threshold 2/λ


def _gd_diverges(p, th, eta, steps=3):
    for _ in range(steps):
        th = th - eta * p.grad(th)
    return not np.all(np.abs(th) < 1e3)


_MODELS = {"free-energy": (ed.models.FreeEnergyFlow, {"sigma_seed": "gd"}), "edge": (ed.models.EdgeFlow, {}),
           "central": (ed.models.CentralFlow, {})}

RUNAWAYS = [  # (model, problem, η / (2/λ), solver, causes it may end with)
    ("free-energy", "valley", 1000, "scipy:RK45", {Cause.STEP_UNDERFLOW}),
    ("free-energy", "valley", 1000, "scipy:BDF", {Cause.STEP_UNDERFLOW}),
    ("free-energy", "quadratic", 20, "scipy:LSODA", {Cause.BLOW_UP}),
    ("edge", "valley", 1000, "scipy:RK45", {Cause.STEP_UNDERFLOW}),
    ("edge", "quadratic", 20, "scipy:BDF", {Cause.NON_FINITE, Cause.BLOW_UP}),  # ρ = e^{log ρ} bounded
    ("edge", "product", 20, "scipy:LSODA", {Cause.TOO_MANY_EVALUATIONS}),
    ("central", "valley", 1000, "scipy:RK45", {Cause.TOO_MANY_EVALUATIONS}),
    ("central", "product", 20, "scipy:BDF", {Cause.SDCP_FAILED}),
    ("central", "product", 20, "scipy:LSODA", {Cause.SDCP_FAILED}),
]

NAMED = {Cause.TOO_MANY_EVALUATIONS, Cause.STEP_UNDERFLOW, Cause.BLOW_UP, Cause.NON_FINITE, Cause.SDCP_FAILED}


def _check_runaway(model_name, p, th, eta, solver, causes, steps=40):
    cls, initial = _MODELS[model_name]
    model = cls(p, eta)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to the blow-up
        with pytest.raises(IntegrationError) as info:
            # The wall-clock bound is the solver's own limit (60 s, far above the seconds
            # these runs take); the work bound below (evaluations per GD step) is the check.
            ed.solve(model, th, steps, solver=solver, initial=initial, time_limit=60.0)
    wall = time.perf_counter() - t0
    exc = info.value
    sol = exc.partial
    assert exc.cause in causes, (exc.cause, str(exc))
    assert sol is not None and sol.stats.cause == exc.cause and sol.stats.status in ("failed", "diverged")
    # the solver's own counters bound the work: at most the cap in every GD step begun
    cap = default_max_evals(model.state_size, solver.split(":")[1])
    assert sol.stats.nfev <= (math.floor(exc.time) + 1) * cap + 1, (sol.stats.nfev, exc.time)
    if exc.cause == Cause.TOO_MANY_EVALUATIONS:
        assert f"`max_evals_per_step` = {cap}" in str(exc)
    # the partial result: the states saved before the stop, all finite, ending before the stop
    assert len(sol.k) >= 1 and sol.k[0] == 0.0 and sol.k[-1] <= exc.time < steps
    assert np.all(np.isfinite(np.asarray(sol.theta)))
    assert exc.cause != Cause.TIME_BUDGET, wall
    return exc


@pytest.mark.parametrize("model_name, kind, factor, solver, causes", RUNAWAYS,
                         ids=[f"{m}-{k}-{s}" for m, k, _, s, _ in RUNAWAYS])
def test_runaway_ends_with_a_named_cause(model_name, kind, factor, solver, causes):
    # Before this change (one cap, 10000 + 50·n evaluations per GD step) the central flow
    # on the valley under RK45 (1000-3500 evaluations in every GD step) and the edge flow on
    # the product problem under LSODA (~3600) ground on for over a minute: those two fail
    # at 761df07. They now stop on sustained work (three GD steps in a row above a fifth of
    # the cap). The other set-ups pin the mechanisms that already stopped them (blow-up,
    # non-finite, step-size underflow, SDCP failure).
    p, th, eta = _setup(kind, factor)
    assert _gd_diverges(p, th, eta)
    _check_runaway(model_name, p, th, eta, solver, causes)


def test_time_limit_holds_inside_a_step():
    # Before this change time_limit was looked at after accepted steps only: a step of a
    # stiff model that keeps shrinking (each evaluation slow) outlived it.
    class Slow(ed.models.GradientFlow):
        def drift(self, k, y, run=None):
            time.sleep(0.02)
            return super().drift(k, y, run)

    p = ed.problems.Quadratic(np.diag([1.0, 1e6]))  # stiff: RK45 steps of ~1e-6 GD steps
    model = Slow(p, 0.5 * 2 / 1e6)
    t0 = time.perf_counter()
    sol = ed.solve(model, np.ones(2), 50, solver="scipy:RK45", throw=False, time_limit=0.5,
                   first_step=1.0, max_evals_per_step=10**6)
    assert sol.stats.cause == Cause.TIME_BUDGET and time.perf_counter() - t0 < 5.0  # 0.5 s + one evaluation, with slack for a busy machine
    assert len(sol.k) >= 1


# --- property tests, one per class -------------------------------------------------------------

@fuzz(200)
@given(st.text(alphabet=st.sampled_from("ab.-_/\\:é😀 \x00\n\t~$*?"), max_size=12) | st.text(max_size=12))
@example("../../escaped")
@example("..")
@example(".hidden")
def test_fuzz_output_names_stay_inside_out_dir(tmp_path, name):
    out = (tmp_path / "out").resolve()
    try:
        slug = check_name(name)
    except ValueError as exc:
        assert "`name`" in str(exc)
        return
    target = (out / f"{slug}_report.md").resolve()
    assert target.parent == out and not slug.startswith(".")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", slug) and ".." not in slug


_DOC = {"name": "fz", "problem": {"type": "MinimalValley", "zeta": 1.0, "eps": 0.01},
        "start": {"theta0": [0.1, 3.0]}, "gd": {"eta": 0.3, "steps": 10},
        "models": [{"type": "FreeEnergyFlow", "solver": "map", "options": {"rank": 1},
                    "initial": {"sigma_seed": "gd"}}], "output": {"figures": False}}
_KEYS = {"": ["name", "problem", "start", "gd", "models", "output", "case", "quick", "full", "zz"],
         "problem": ["type", "zeta", "eps", "loss", "dim", "params", "data", "x"], "start": ["theta0", "seed", "q"],
         "gd": ["eta", "steps", "n_eigs", "eig_every", "theta_every", "variant", "eig_tol", "dense_max", "loss_bound"],
         "models.0": ["type", "label", "solver", "options", "initial", "rtol", "atol", "save_every", "budget", "only"],
         "models.0.options": ["rank", "floor", "closure", "storage", "zz"],
         "models.0.initial": ["sigma_seed", "sigma0", "zz"], "output": ["dir", "figures", "x"],
         "case": ["title", "quick_steps", "full_steps", "notes", "needs_cifar", "x"]}
_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
            | st.sampled_from(["map", "scipy:RK45", "gd", "FreeEnergyFlow", "CentralFlow", "jax", "os:system"]))
_VALUES = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                       max_size=3), max_leaves=5)


@fuzz(150)
@given(edits=st.lists(st.tuples(st.sampled_from(sorted(_KEYS)), st.data()), min_size=1, max_size=3))
def test_fuzz_config_documents_raise_config_errors_naming_a_key(no_gd, edits):
    # Found by this test before the fix: `type = []` (TypeError: unhashable) and integers
    # beyond float64/int64 (TypeError from np.isfinite) escaped as tracebacks.
    import copy

    doc = copy.deepcopy(_DOC)
    for where, data in edits:
        node = doc
        for part in [p for p in where.split(".") if p]:
            node = (node[0] if isinstance(node, list) and node else None) if part.isdigit() else (
                node.setdefault(part, {}) if isinstance(node, dict) else None)
            if not isinstance(node, (dict, list)):
                break
        if isinstance(node, dict):
            key, value = data.draw(st.sampled_from(_KEYS[where])), data.draw(_VALUES)
            if value is None:
                node.pop(key, None)
            else:
                node[key] = value
    try:
        config_from_document(doc, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.toml") and re.search(r"`[^`]+`|\[[^\]]+\]", str(exc)), str(exc)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    model = ed.models.FreeEnergyFlow(ed.problems.MinimalValley(), 0.3)
    ed.solve(model, np.array([0.1, 3.0]), 20, solver="scipy:LSODA", initial={"sigma_seed": "gd"},
             checkpoint=path, checkpoint_every=10)
    return model, path.read_bytes()


@fuzz(120)
@given(st.data())
def test_fuzz_damaged_checkpoints_are_value_errors(tmp_path, real_checkpoint, data):
    # Found by this test before the fix: damaged zip fields raised NotImplementedError from
    # zipfile ("compressed patched data", "zip file version") instead of a ValueError.
    model, raw = real_checkpoint
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / f"m{data.draw(st.integers(0, 10**9))}.ckpt"
    path.write_bytes(bytes(raw))
    try:
        sol = ed.resume(model, path, checkpoint=False)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:  # a byte nothing reads (zip timestamps, padding): the run is the original one
        assert sol.k[-1] == 20


def test_checkpoint_with_a_pickled_payload_is_refused(tmp_path, real_checkpoint):
    import io
    import zipfile

    model, raw = real_checkpoint
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename != "header.npy":
                buf = io.BytesIO()
                np.save(buf, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
                body = buf.getvalue()
            dst.writestr(item, body)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        ed.resume(model, path, checkpoint=False)
    assert not marker.exists()


@fuzz(12)
@given(factor=st.floats(5.0, 2000.0), setup=st.sampled_from([("free-energy", "valley"), ("edge", "valley"),
                                                              ("free-energy", "quadratic")]),
       solver=st.sampled_from(["scipy:RK45", "scipy:LSODA"]))
def test_fuzz_runaways_end_within_the_limits(factor, setup, solver):
    # (the edge flow on the quadratic is left out: at η·λ = 10 it stays finite over the
    # horizon, a model result rather than a runaway)
    model_name, kind = setup
    p, th, eta = _setup(kind, factor)
    assert _gd_diverges(p, th, eta, steps=6)
    _check_runaway(model_name, p, th, eta, solver, NAMED)


class _Quartic(Problem):
    """E = ½|θ|² + ¼Σθ⁴ in plain NumPy, whose gradient raises at call number ``fail_at``."""

    name = "quartic"

    def __init__(self, fail_at):
        self.fail_at, self.calls = fail_at, None

    @property
    def dim(self):
        return 2

    def _loss(self, theta):
        return float(0.5 * theta @ theta + 0.25 * np.sum(theta ** 4))

    def _grad(self, theta):
        if self.calls is not None:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError(f"user gradient failed at call {self.calls}")
        return theta + theta ** 3

    def _hvp(self, theta, v):
        return (1 + 3 * theta ** 2) * v

    def _hessian(self, theta):
        return np.diag(1 + 3 * theta ** 2)

    def _third(self, theta, U, s):
        return 6 * theta * (U ** 2 @ s)


@fuzz(15)
@given(fail_at=st.integers(1, 60), solver=st.sampled_from(["scipy:RK45", "scipy:LSODA", "map"]),
       model_name=st.sampled_from(["GradientFlow", "FreeEnergyFlow"]))
def test_fuzz_user_code_that_raises(fail_at, solver, model_name):
    p = _Quartic(fail_at)
    model = getattr(ed.models, model_name)(p, 0.5)
    y0, run = model.start(np.array([0.6, -0.4]))  # η·λ < 2: the run itself is healthy
    p.calls = 0  # armed once the run starts
    with pytest.raises(IntegrationError) as info:
        ed.solve(model, state0=y0, run=run, steps=80, solver=solver)
    exc = info.value
    assert exc.cause == Cause.USER_CODE and "user gradient failed at call" in str(exc)
    assert isinstance(exc.__cause__, RuntimeError)  # the original exception is chained
    assert exc.partial is not None and exc.partial.stats.cause == Cause.USER_CODE
    assert all(k <= exc.time for k in exc.partial.k)


# --- following a long run from a script ----------------------------------------------------------

def test_solver_progress_lines_in_scripts(monkeypatch, capsys):
    # Before this change the solvers drew a tqdm bar or nothing: progress=True in a script
    # whose stderr is a log file filled it with carriage returns, and status lines were GD's only.
    import effdyn.progress as prog

    monkeypatch.setenv(prog.ENV_EVERY, "0")
    monkeypatch.setattr(prog.logger, "propagate", False)  # no logging handler: lines go to stderr
    model = ed.models.GradientFlow(ed.problems.MinimalValley(), 0.3)
    ed.solve(model, np.array([0.1, 3.0]), 50, solver="map", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("effdyn: ") for line in lines) and "\r" not in "".join(lines)
    assert "finished 50/50 steps" in lines[-1]
    ed.solve(model, np.array([0.1, 3.0]), 50, solver="map", progress=False)
    assert capsys.readouterr().err == ""
