"""Data loaders: scikit-learn digits and the local CIFAR-10 reader (on generated pickles)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from effdyn.data import (CIFAR10_BATCHES, CIFAR10_ENV, check_cifar10_folder, load_cifar10, load_cifar10_subset,
                         load_digits_subset, one_hot, standardize)


# --- digits --------------------------------------------------------------------------------

def test_digits_subset_rows_are_sklearn_rows_standardised():
    from sklearn.datasets import load_digits

    full = load_digits()
    Xs, labels = load_digits_subset(200, seed=3)
    raw, labels_raw = load_digits_subset(200, seed=3, standardized=False)
    assert Xs.shape == (200, 64) and Xs.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, labels_raw)
    # every raw row is a row of the data set with the same label
    for row, lab in zip(raw[:25], labels[:25]):
        hits = np.flatnonzero(np.all(full.data == row, axis=1))
        assert hits.size >= 1 and lab in full.target[hits]
    # standardisation: zero mean, unit variance on non-constant columns, constant ones only centred
    std = raw.std(axis=0)
    live = std > 0
    np.testing.assert_allclose(Xs.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Xs[:, live].std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(Xs[:, ~live], 0.0)
    np.testing.assert_allclose(Xs[:, live], (raw[:, live] - raw[:, live].mean(0)) / std[live], rtol=1e-12)


def test_digits_subset_is_reproducible_and_seed_dependent():
    a, la = load_digits_subset(50, seed=1)
    b, lb = load_digits_subset(50, seed=1)
    c, _ = load_digits_subset(50, seed=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_digits_subset_rejects_too_many():
    with pytest.raises(ValueError, match=r"`n` = 5000 exceeds the 1797"):
        load_digits_subset(5000)


def test_one_hot_and_standardize():
    Y = one_hot(np.array([2, 0, 9]), 10)
    assert Y.shape == (3, 10)
    np.testing.assert_array_equal(Y.argmax(axis=1), [2, 0, 9])
    np.testing.assert_array_equal(Y.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="`labels` must lie in"):
        one_hot(np.array([10]), 10)
    with pytest.raises(ValueError, match="2-D"):
        standardize(np.ones(3))


# --- CIFAR-10 from generated files -----------------------------------------------------------

def _write_cifar(folder, rows=12, seed=0, skip=()):
    """Five batch files in the CIFAR-10 python format; returns the data and labels written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    datas, labels = [], []
    for name in CIFAR10_BATCHES:
        data = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, size=rows).tolist()  # the real files hold a list of ints
        datas.append(data)
        labels += lab
        if name in skip:
            continue
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": lab,
                         b"filenames": [b"x.png"] * rows}, fh, protocol=2)
    return np.concatenate(datas), np.array(labels)


def test_cifar_loader_reads_all_batches(tmp_path):
    data, labels = _write_cifar(tmp_path / "cifar-10-batches-py")
    got, got_labels = load_cifar10(tmp_path / "cifar-10-batches-py")
    assert got.dtype == np.uint8 and got.shape == (60, 3072)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar_subset_rows_and_channel_layout(tmp_path, monkeypatch):
    data, labels = _write_cifar(tmp_path / "c10", rows=10, seed=4)
    monkeypatch.setenv(CIFAR10_ENV, str(tmp_path / "c10"))  # no path: the environment variable
    X, lab = load_cifar10_subset(n=15, seed=2, standardized=False)
    assert X.shape == (15, 3072) and X.dtype == np.float64
    assert X.min() >= 0 and X.max() <= 1
    for row, label in zip(X, lab):
        idx = np.flatnonzero(np.all(data == np.rint(row * 255).astype(np.uint8), axis=1))
        assert idx.size == 1 and labels[idx[0]] == label
        # channel-major: the red plane is the first 1024 values, row-major 32 x 32
        img = row.reshape(3, 32, 32)
        np.testing.assert_array_equal(np.rint(img[0, 1, :] * 255), data[idx[0], 32:64])
        np.testing.assert_array_equal(np.rint(img[2, 0, :] * 255), data[idx[0], 2048:2080])
    Xs, lab2 = load_cifar10_subset(tmp_path / "c10", n=15, seed=2)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_allclose(Xs, standardize(X), rtol=1e-12, atol=1e-12)


def test_cifar_missing_file_names_it(tmp_path):
    _write_cifar(tmp_path / "c10", skip=("data_batch_3",))
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.*not found"):
        load_cifar10(tmp_path / "c10")
    with pytest.raises(FileNotFoundError, match=r"data_batch_3"):
        check_cifar10_folder(tmp_path / "c10")


def test_cifar_missing_folder_and_no_path(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*data_batch_1"):
        load_cifar10(tmp_path / "nowhere")
    monkeypatch.delenv(CIFAR10_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=CIFAR10_ENV):
        load_cifar10()


def test_cifar_unreadable_or_malformed_file(tmp_path):
    _write_cifar(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"Could not read CIFAR-10 file .*data_batch_2"):
        load_cifar10(tmp_path / "c10")
    with open(tmp_path / "c10" / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, fh)
    with pytest.raises(ValueError, match=r"data_batch_2.*\(rows, 3072\)"):
        load_cifar10(tmp_path / "c10")
    with open(tmp_path / "c10" / "data_batch_2", "wb") as fh:
        pickle.dump({b"images": 1}, fh)
    with pytest.raises(ValueError, match=r"data_batch_2.*b'data' and b'labels'"):
        load_cifar10(tmp_path / "c10")
