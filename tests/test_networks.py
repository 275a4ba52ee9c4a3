"""The network cases: CIFAR-10 class subsets, the CNN builder, the peer MLP, and the cases
that use them (digits-cnn, digits-wide-mlp, cifar10-*, peer-mlp).

CIFAR-10 is never downloaded: the tests write a fake ``cifar-10-batches-py`` folder in the
real format (five pickled dicts, Python-2 protocol, uint8 rows of 3072 channel-major pixels,
labels as a list) and read it through effdyn's restricted unpickler. The peer MLP is tested
on the shared arrays when they exist, otherwise on generated arrays of the same shape.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from effdyn.data import (PEER_MLP_ENV, class_indices, cifar10_images, load_cifar10, load_cifar10_subset,
                         load_peer_mlp, standardize_channels)
from effdyn.validation import CASES, default_cases
from effdyn.validation.config import apply_overrides, config_from_document

EPS = float(np.finfo(np.float64).eps)
ROWS = 40  # images per fake batch
PEER_DATA = Path("/work/shared/data/peer-mlp")
LOSS_AT_P0 = 1.059820448810965  # the peer's README
CIFAR_CASES = ("cifar10-seed-mlp", "cifar10-seed-cnn", "cifar10-cf-mlp", "cifar10-cf-cnn")


def _labels(i):
    """Labels of fake batch i: every class, in an order that differs from batch to batch."""
    return [int(v) for v in np.random.default_rng(10 + i).permutation(np.arange(ROWS) % 10)]


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """A cifar-10-batches-py folder in the real format: 5 batches of ROWS random images."""
    folder = tmp_path_factory.mktemp("networks") / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(1, 6):
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": _labels(i),
                 b"data": rng.integers(0, 256, (ROWS, 3072), dtype=np.uint8),
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(ROWS)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    return folder


# --- class subsets and selection --------------------------------------------------------

def test_first_images_of_the_chosen_classes_in_file_order(fake_cifar):
    data, labels = load_cifar10(fake_cifar)
    assert data.shape == (5 * ROWS, 3072) and labels.tolist() == sum((_labels(i) for i in range(1, 6)), [])
    keep = np.flatnonzero(np.isin(labels, [0, 1, 2, 3]))[:30]
    X, lab = load_cifar10_subset(fake_cifar, n=30, classes=[0, 1, 2, 3], selection="first", standardized=False)
    np.testing.assert_array_equal(X, data[keep] / 255.0)
    np.testing.assert_array_equal(lab, labels[keep])
    # the seed does not matter for "first"
    X2, _ = load_cifar10_subset(fake_cifar, n=30, seed=5, classes=[0, 1, 2, 3], selection="first",
                                standardized=False)
    np.testing.assert_array_equal(X, X2)


def test_random_images_of_the_chosen_classes(fake_cifar):
    data, labels = load_cifar10(fake_cifar)
    X, lab = load_cifar10_subset(fake_cifar, n=25, seed=3, classes=[7, 2], standardized=False)
    assert set(lab.tolist()) <= {2, 7} and len(lab) == 25
    rows = {bytes(r) for r in (X * 255).round().astype(np.uint8)}
    assert len(rows) == 25 and rows <= {bytes(r) for r in data[np.isin(labels, [2, 7])]}
    again, lab2 = load_cifar10_subset(fake_cifar, n=25, seed=3, classes=[7, 2], standardized=False)
    np.testing.assert_array_equal(X, again)
    other, _ = load_cifar10_subset(fake_cifar, n=25, seed=4, classes=[7, 2], standardized=False)
    assert not np.array_equal(X, other)
    # outputs follow the order of `classes`
    assert class_indices(lab, [7, 2]).tolist() == [0 if v == 7 else 1 for v in lab]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"classes": [0, 10]}, ValueError, "0..9"),
    ({"classes": [1, 1]}, ValueError, "distinct"),
    ({"classes": "0123"}, TypeError, "list of CIFAR-10 labels"),
    ({"classes": [0], "n": 21, "selection": "first"}, ValueError, r"exceeds the 20 samples .*labels in \[0\]"),
    ({"classes": [0], "n": 21}, ValueError, "20"),
    ({"selection": "last"}, ValueError, "selection"),
])
def test_bad_subsets_name_the_fix(fake_cifar, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_cifar10_subset(fake_cifar, **{"n": 5, **kwargs})


def test_image_layout_and_channel_standardisation():
    X = np.arange(2 * 3072).reshape(2, 3072)
    img = cifar10_images(X)
    assert img.shape == (2, 32, 32, 3)
    assert img[1, 4, 5, 2] == X[1, 2 * 1024 + 4 * 32 + 5]  # channel-major rows, (row, col, channel) images
    z = standardize_channels(np.random.default_rng(0).normal(3.0, 2.0, (5, 4, 4, 3)))
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-14)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-14)
    with pytest.raises(ValueError, match="4-D"):
        standardize_channels(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="not in `classes`"):
        class_indices([0, 5], [0, 1])


# --- builders -----------------------------------------------------------------------------

def test_builders_shapes_and_sizes(fake_cifar):
    from effdyn.problems.builders import cifar10_cnn, cifar10_mlp, digits_cnn

    p, th = cifar10_mlp(fake_cifar, n=12, classes=[0, 1, 2, 3], selection="first")
    assert p.dim == th.size == 3072 * 32 + 32 + 32 * 4
    p, th = cifar10_cnn(fake_cifar, n=12)
    assert p.dim == th.size == 13018  # 3·9·16+16 + 16·9·16+16 + 1024·10+10
    tree = p.unravel(th)
    assert [layer["w"].shape for layer in tree["conv"]] == [(3, 3, 3, 16), (3, 3, 16, 16)]
    assert tree["dense"]["w"].shape == (8 * 8 * 16, 10)
    p, th = cifar10_cnn(fake_cifar, n=12, classes=[0, 1, 2, 3], selection="first")
    assert p.dim == th.size == 6868 and p.unravel(th)["dense"]["w"].shape == (1024, 4)
    p, th = digits_cnn(n=30)
    assert p.dim == th.size == 1898  # 1·9·8+8 + 8·9·16+16 + 64·10+10


def _reference_loss(params, images, Y, strides, act):
    """The CNN's loss by explicit loops over output pixels (NumPy, float64)."""
    h = images
    for layer, s in zip(params["conv"], strides):
        w, b = np.asarray(layer["w"]), np.asarray(layer["b"])
        k = w.shape[0]
        pad = k // 2
        n, H, W, _ = h.shape
        hp = np.pad(h, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        Ho, Wo = -(-H // s), -(-W // s)
        out = np.empty((n, Ho, Wo, w.shape[-1]))
        for i in range(Ho):
            for j in range(Wo):
                window = hp[:, s * i: s * i + k, s * j: s * j + k, :]
                out[:, i, j, :] = np.einsum("nabc,abco->no", window, w) + b
        h = act(out)
    f = h.reshape(h.shape[0], -1) @ np.asarray(params["dense"]["w"]) + np.asarray(params["dense"]["b"])
    return 0.5 * np.mean(np.sum((f - Y) ** 2, axis=1))


@pytest.mark.parametrize("activation, strides, size", [("tanh", (1, 2), 7), ("swish", (2, 1), 8)])
def test_cnn_loss_equals_a_loop_reference(activation, strides, size):
    from effdyn.problems.builders import cnn_problem

    rng = np.random.default_rng(1)
    images, Y = rng.standard_normal((6, size, size, 2)), rng.standard_normal((6, 3))
    problem, theta0 = cnn_problem(images, Y, channels=(3, 4), strides=strides, activation=activation, seed=2)
    act = np.tanh if activation == "tanh" else (lambda z: z / (1 + np.exp(-z)))
    for theta in (theta0, theta0 + 0.3 * rng.standard_normal(theta0.size)):  # biases non-zero too
        params = problem.unravel(theta)
        ref = _reference_loss(params, images, Y, strides, act)
        assert abs(problem.loss(theta) - ref) <= 1e-12 * abs(ref)


@pytest.mark.parametrize("stride, size", [(1, 7), (2, 7), (2, 8)])
def test_patch_convolution_equals_lax_conv(stride, size):
    from effdyn._jax import import_jax
    from effdyn.problems.builders import _patches

    jax, jnp = import_jax()
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, size, size, 2)), rng.standard_normal((3, 3, 2, 5))
    ours = np.asarray(_patches(jnp, jnp.asarray(x), 3, stride) @ jnp.asarray(w.reshape(-1, 5)))
    ref = np.asarray(jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(w), (stride, stride), ((1, 1), (1, 1)),
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC")))
    assert ours.shape == ref.shape == (3, -(-size // stride), -(-size // stride), 5)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_cnn_derivatives_match_finite_differences():
    from effdyn.problems.builders import digits_cnn

    problem, theta = digits_cnn(n=20, channels=[3, 4], init_scale=0.8)
    rng = np.random.default_rng(5)
    g = problem.grad(theta)
    for _ in range(3):
        v = rng.standard_normal(theta.size)
        v /= np.linalg.norm(v)
        h = 1e-5
        fd = (problem.loss(theta + h * v) - problem.loss(theta - h * v)) / (2 * h)
        assert abs(fd - g @ v) <= 1e-7 * max(1.0, abs(g @ v))
        fd_hv = (problem.grad(theta + h * v) - problem.grad(theta - h * v)) / (2 * h)
        hv = problem.hvp(theta, v)
        assert np.linalg.norm(fd_hv - hv) <= 1e-6 * max(1.0, np.linalg.norm(hv))


# --- the peer MLP ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def peer_folder(tmp_path_factory):
    """The shared peer arrays when present, else generated arrays of the same shapes."""
    if all((PEER_DATA / f).is_file() for f in ("x.npy", "y.npy", "p0.npy")):
        return PEER_DATA
    folder = tmp_path_factory.mktemp("peer")
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((128, 8)))
    np.save(folder / "y.npy", rng.standard_normal(128))
    np.save(folder / "p0.npy", 0.3 * rng.standard_normal(433))
    return folder


def _peer_reference(x, y, p):
    h, i = x, 0
    for j, (a, b) in enumerate(((8, 16), (16, 16), (16, 1))):
        bias, i = p[i: i + b], i + b
        W, i = p[i: i + a * b].reshape(a, b), i + a * b
        h = h @ W + bias
        if j < 2:
            h = h / (1 + np.exp(-h))
    return np.mean((h[:, 0] - y) ** 2)


def test_peer_mlp_builder(peer_folder):
    from effdyn.problems.builders import peer_mlp

    problem, p0 = peer_mlp(peer_folder)
    x, y, p = load_peer_mlp(peer_folder)
    assert problem.dim == p0.size == 433 and np.array_equal(p0, p)
    assert abs(problem.loss(p0) - _peer_reference(x, y, p0)) <= 1e-13
    if peer_folder == PEER_DATA:
        assert abs(problem.loss(p0) - LOSS_AT_P0) <= 1e-12


def test_peer_mlp_refuses_pickles_and_names_missing_files(tmp_path, monkeypatch):
    from effdyn.problems.builders import peer_mlp

    monkeypatch.delenv(PEER_MLP_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="--peer-data PATH"):
        peer_mlp()
    np.save(tmp_path / "x.npy", np.zeros((4, 8)))
    with pytest.raises(FileNotFoundError, match="y.npy"):
        load_peer_mlp(tmp_path)
    np.save(tmp_path / "y.npy", np.array([object()] * 4, dtype=object), allow_pickle=True)
    np.save(tmp_path / "p0.npy", np.zeros(433))
    with pytest.raises(ValueError, match="y.npy.*not a plain numeric"):
        load_peer_mlp(tmp_path)
    np.save(tmp_path / "y.npy", np.zeros(4))
    np.save(tmp_path / "p0.npy", np.zeros(10))
    with pytest.raises(ValueError, match="p0.npy has 10 weights"):
        peer_mlp(tmp_path)


# --- the cases -------------------------------------------------------------------------------

def test_default_suite_skips_cases_without_data_and_says_how(monkeypatch):
    monkeypatch.delenv("EFFDYN_CIFAR10", raising=False)
    monkeypatch.delenv(PEER_MLP_ENV, raising=False)
    names, skipped = default_cases(quick=True)
    assert "digits-cnn" in names and "digits-mlp" in names
    assert set(skipped) == {*CIFAR_CASES, "peer-mlp", "digits-wide-mlp"}
    for name in CIFAR_CASES:
        assert "--cifar PATH" in skipped[name] and "EFFDYN_CIFAR10" in skipped[name]
    assert "--peer-data PATH" in skipped["peer-mlp"] and PEER_MLP_ENV in skipped["peer-mlp"]
    assert "--full" in skipped["digits-wide-mlp"]
    names, skipped = default_cases(quick=False, cifar="/somewhere", peer_data="/elsewhere")
    assert not skipped and {*CIFAR_CASES, "peer-mlp", "digits-wide-mlp"} <= set(names)


@pytest.mark.parametrize("name, P", [("cifar10-seed-mlp", 98656), ("cifar10-seed-cnn", 13018),
                                     ("cifar10-cf-mlp", 98464), ("cifar10-cf-cnn", 6868)])
def test_cifar_cases_build_on_data_of_cifar_shape(fake_cifar, name, P):
    """Each CIFAR case's problem and θ0 from 20 fake images (its models are checked from
    the file: building them computes an eigen-solve each; one case runs in full below)."""
    case = CASES[name]
    assert case.needs_cifar and case.path.stem == name
    doc = apply_overrides(case.document, {"problem.n": 20})
    models = doc.pop("models")
    setup = config_from_document(doc, case.path, mode="quick", cifar=fake_cifar).setup
    assert setup.problem.dim == P and setup.eta == 0.02 and setup.steps == case.quick_steps
    assert setup.config["document"]["problem"]["path"] == str(fake_cifar)
    # the edge-flow floor written in the file is ε_mach·‖θ0‖ (to the last bits: the sum
    # of 1e5 squares depends on the memory alignment)
    floors = [m["options"]["rho_floor"] for m in models if m["type"] == "EdgeFlow"]
    assert len(floors) == 1
    assert floors[0] == pytest.approx(EPS * max(1.0, float(np.linalg.norm(setup.theta0))), rel=1e-14)
    assert [m["label"] for m in models if m.get("only") != "full"] == [
        "gradient flow", "free-energy flow [map]", *(["central flow [map]"] if "cnn" in name else []),
        "edge flow [map]"]
    if name.startswith("cifar10-cf"):
        assert case.document["problem"]["classes"] == [0, 1, 2, 3]
        assert case.document["problem"]["selection"] == "first" and case.document["problem"]["n"] == 1000
    else:
        assert case.document["problem"]["n"] == 500 and "classes" not in case.document["problem"]


def test_a_cifar_case_runs_a_few_steps_on_fake_data(fake_cifar, tmp_path, capsys):
    from effdyn.cli import main

    # the cf-cnn case with 8 images, as a configuration run through the command line
    text = CASES["cifar10-cf-cnn"].path.read_text(encoding="utf-8")
    assert text.count("\nn = 1000\n") == 1
    config = tmp_path / "fake_cf_cnn.toml"
    config.write_text(text.replace("\nn = 1000\n", "\nn = 8\n"), encoding="utf-8")
    out = tmp_path / "out"
    code = main(["validate", "--config", str(config), "--cifar", str(fake_cifar), "--steps", "2", "--out", str(out),
                 "--no-figures", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    report = (out / "report.md").read_text()
    for label in ("GD (reference)", "gradient flow", "free-energy flow [map]", "central flow [map]", "edge flow [map]"):
        assert f"| {label} |" in report
    assert (out / "fake_cf_cnn.nc").is_file()


def test_digits_cnn_case():
    from effdyn.problems.builders import digits_cnn

    case = CASES["digits-cnn"]
    assert not case.needs_cifar and not case.full_only and case.quick_steps == 200
    setup = case.setup(quick=True, steps=3)
    problem, theta0 = digits_cnn(n=200, channels=[4, 8], strides=[2, 2], init_scale=0.35, data_seed=0)
    assert setup.problem.dim == 666 and np.array_equal(setup.theta0, theta0) and setup.eta == 0.4
    assert [m.label for m in setup.models] == ["gradient flow", "free-energy flow [map]", "central flow [map]",
                                               "edge flow [map]"]


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_wide_mlp_case_is_full_only(mode):
    case = CASES["digits-wide-mlp"]
    assert case.full_only and not case.needs_cifar and not case.needs_peer_data
    doc = apply_overrides(case.document, {})
    models = doc.pop("models")
    setup = config_from_document(doc, case.path, mode=mode).setup
    assert setup.problem.dim == 99975 and setup.eta == 0.4
    assert setup.steps == (case.quick_steps if mode == "quick" else case.full_steps)
    floors = [m["options"]["rho_floor"] for m in models if m["type"] == "EdgeFlow"]
    assert floors == [pytest.approx(EPS * float(np.linalg.norm(setup.theta0)), rel=1e-14)]
    assert [m["label"] for m in models] == ["gradient flow", "free-energy flow [map]", "rod flow", "edge flow [map]"]


def test_peer_case(peer_folder, monkeypatch):
    monkeypatch.delenv(PEER_MLP_ENV, raising=False)
    case = CASES["peer-mlp"]
    assert case.needs_peer_data
    with pytest.raises(FileNotFoundError, match="--peer-data PATH"):
        case.setup(quick=True, steps=3)
    setup = case.setup(quick=False, steps=3, peer_data=peer_folder)
    assert setup.problem.dim == 433 and setup.eta == 0.1 and case.full_steps == 1000
    assert [m.label for m in setup.models] == ["gradient flow", "free-energy flow [map]", "central flow [map]"]
    assert setup.config["document"]["problem"]["path"] == str(peer_folder)
    # the environment variable works too
    monkeypatch.setenv(PEER_MLP_ENV, str(peer_folder))
    assert case.setup(quick=True, steps=3).problem.dim == 433


def test_cli_names_the_missing_peer_data(capsys, monkeypatch, tmp_path):
    from effdyn.cli import main

    monkeypatch.delenv(PEER_MLP_ENV, raising=False)
    code = main(["validate", "--cases", "peer-mlp", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--peer-data PATH" in err and PEER_MLP_ENV in err
    code = main(["validate", "--cases", "peer-mlp", "--peer-data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err


def test_report_lists_the_cases_left_out(tmp_path, monkeypatch):
    from effdyn.validation import render_report
    from effdyn.validation.runner import ValidationResult

    monkeypatch.delenv("EFFDYN_CIFAR10", raising=False)
    monkeypatch.delenv(PEER_MLP_ENV, raising=False)
    names, skipped = default_cases(quick=True, cifar=None, peer_data=None)
    text = render_report(ValidationResult([], tmp_path, None, True, skipped=skipped), tmp_path)
    line = next(x for x in text.splitlines() if x.startswith("Not run: "))
    for name in skipped:
        assert f"`{name}`" in line
    assert "--cifar PATH" in line and "--peer-data PATH" in line
