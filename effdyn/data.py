"""Small real data sets for the validation suite, read from local files only.

* :func:`load_digits_subset`: scikit-learn's 8×8 handwritten digits (1797 × 64), which ship
  inside the scikit-learn wheel, so they work offline.
* :func:`load_cifar10` / :func:`load_cifar10_subset`: CIFAR-10 from a local copy of the
  "python version" folder ``cifar-10-batches-py`` (pickled dicts ``data_batch_1`` ..
  ``data_batch_5``, each with ``b'data'``: uint8 (rows, 3072), channel-major (the 1024 red
  pixels, then green, then blue, each row-major 32 × 32) and ``b'labels'``: rows ints in
  0..9). The batches are read with a restricted unpickler (:func:`read_pickled_batch`) that
  admits only what genuine batches hold, so a crafted file cannot run code. Nothing is ever
  downloaded: the folder is given by the caller, or by the
  environment variable ``EFFDYN_CIFAR10``.
* :func:`load_peer_mlp`: the arrays of the public JAX central-flow example (``x.npy``,
  ``y.npy``, ``p0.npy`` in a local folder given by the caller or ``EFFDYN_PEER_MLP``),
  read with ``allow_pickle=False``.

Features are standardised column by column (zero mean, unit variance over the chosen
subset; constant columns are only centred), which keeps the input scale, and hence the
initial sharpness of a network, independent of the data set's pixel units.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ._checks import choice, nonneg_int, positive_int

__all__ = ["load_digits_subset", "load_cifar10", "load_cifar10_subset", "one_hot", "standardize",
           "standardize_channels", "cifar10_images", "class_indices", "cifar10_path", "check_cifar10_folder",
           "read_pickled_batch", "CIFAR10_ENV", "CIFAR10_BATCHES", "CIFAR10_CLASSES",
           "PEER_MLP_ENV", "PEER_MLP_FILES", "peer_mlp_path", "check_peer_mlp_folder", "load_peer_mlp"]

#: Environment variable naming a local ``cifar-10-batches-py`` folder.
CIFAR10_ENV = "EFFDYN_CIFAR10"
#: The training batch files the CIFAR-10 loader reads, in order.
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
#: Environment variable naming a local folder with the peer MLP's arrays.
PEER_MLP_ENV = "EFFDYN_PEER_MLP"
#: The files :func:`load_peer_mlp` reads (NumPy .npy, no pickles).
PEER_MLP_FILES = ("x.npy", "y.npy", "p0.npy")
#: CIFAR-10's class names, by label.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def standardize(X) -> np.ndarray:
    """Columns of ``X`` shifted to zero mean and scaled to unit variance (float64 copy).

    Columns with zero variance are only centred.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a 2-D array (samples × features); got shape {X.shape}.")
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    return (X - mean) / std


def standardize_channels(images) -> np.ndarray:
    """Images (n, H, W, C) shifted and scaled per channel: zero mean and unit variance over
    all images and pixels of each channel (float64 copy; a constant channel is only centred).

    Unlike :func:`standardize`, which treats every pixel as its own feature, this keeps the
    relative grey levels within an image, which is what a convolution sees.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"`images` must be a 4-D array (n, height, width, channels); got shape {images.shape}.")
    mean = images.mean(axis=(0, 1, 2))
    std = images.std(axis=(0, 1, 2))
    std[std == 0] = 1.0
    return (images - mean) / std


def cifar10_images(X) -> np.ndarray:
    """CIFAR-10 rows (n, 3072), channel-major as in the files, as images (n, 32, 32, 3)
    (height, width, RGB channel last: the layout of :func:`effdyn.problems.builders.cnn_problem`)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 3072:
        raise ValueError(f"`X` must have shape (n, 3072) (CIFAR-10 rows); got {X.shape}.")
    return X.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def class_indices(labels, classes) -> np.ndarray:
    """Each label's position in ``classes`` (e.g. labels 3, 0 with classes (0, 3) give 1, 0),
    so that ``one_hot(class_indices(labels, classes), len(classes))`` has one column per
    class kept. Every label must be one of ``classes``."""
    position = {int(c): i for i, c in enumerate(classes)}
    labels = np.asarray(labels)
    missing = sorted(set(labels.tolist()) - set(position))
    if missing:
        raise ValueError(f"`labels` hold {missing}, which are not in `classes` = {list(position)}.")
    return np.array([position[int(v)] for v in labels], dtype=np.int64)


def one_hot(labels, num_classes: int = 10) -> np.ndarray:
    """One-hot float64 matrix (n, num_classes) of integer ``labels`` in [0, num_classes)."""
    num_classes = positive_int(num_classes, "num_classes")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be a 1-D integer array; got dtype {labels.dtype}, shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"`labels` must lie in [0, {num_classes}); got values in [{labels.min()}, {labels.max()}].")
    out = np.zeros((labels.size, num_classes))
    out[np.arange(labels.size), labels] = 1.0
    return out


def _subset_indices(total: int, n: int, seed, name: str) -> np.ndarray:
    n = positive_int(n, "n")
    if n > total:
        raise ValueError(f"`n` = {n} exceeds the {total} samples available in {name}; pass n <= {total}.")
    seed = None if seed is None else nonneg_int(seed, "seed")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=False))


def _check_classes(classes) -> tuple | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise TypeError(f"`classes` must be a list of CIFAR-10 labels (integers in 0..9), e.g. [0, 1, 2, 3]; "
                        f"got {classes!r}.")
    out = tuple(nonneg_int(c, "classes") for c in classes)
    if not out or any(c > 9 for c in out) or len(set(out)) != len(out):
        raise ValueError(f"`classes` must be distinct CIFAR-10 labels in 0..9, at least one; got {list(out)}.")
    return out


def load_digits_subset(n: int = 500, seed: int | None = 0, *, standardized: bool = True):
    """A random subset of scikit-learn's handwritten digits.

    Parameters
    ----------
    n : int
        Number of images (1 <= n <= 1797), drawn without replacement.
    seed : int or None
        Seed of the subset draw (None: fresh entropy, not reproducible).
    standardized : bool
        Standardise the 64 pixel columns over the subset (see :func:`standardize`);
        otherwise the raw grey levels 0..16 as float64.

    Returns
    -------
    X : ndarray, shape (n, 64), float64
    labels : ndarray, shape (n,), int64 in 0..9

    Examples
    --------
    >>> X, labels = load_digits_subset(100, seed=1)
    >>> X.shape, labels.shape
    ((100, 64), (100,))
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = _subset_indices(len(digits.target), n, seed, "scikit-learn's digits")
    X = np.asarray(digits.data[idx], dtype=np.float64)
    labels = np.asarray(digits.target[idx], dtype=np.int64)
    return (standardize(X) if standardized else X), labels


def cifar10_path(path=None) -> Path | None:
    """The CIFAR-10 folder to use: ``path`` if given, else ``$EFFDYN_CIFAR10``, else None."""
    if path is None:
        path = os.environ.get(CIFAR10_ENV) or None
    return None if path is None else Path(path).expanduser()


def check_cifar10_folder(path=None) -> Path:
    """The CIFAR-10 folder, after checking that it exists and holds every batch file.

    Cheap (no file is read): meant for failing fast before a long run. Raises
    FileNotFoundError naming the folder or the first missing file.
    """
    folder = cifar10_path(path)
    if folder is None:
        raise FileNotFoundError(
            f"No CIFAR-10 folder given: pass the path of a local `cifar-10-batches-py` folder "
            f"(e.g. `--cifar PATH`) or set ${CIFAR10_ENV}. effdyn never downloads data."
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 folder {str(folder)!r} does not exist or is not a directory; expected a "
            f"`cifar-10-batches-py` folder containing {', '.join(CIFAR10_BATCHES)}."
        )
    for name in CIFAR10_BATCHES:
        if not (folder / name).is_file():
            raise FileNotFoundError(_missing_message(folder / name))
    return folder


def _missing_message(file: Path) -> str:
    return (f"CIFAR-10 file {str(file)!r} not found: a `cifar-10-batches-py` folder must contain "
            f"{', '.join(CIFAR10_BATCHES)} (the python version of CIFAR-10, unpacked).")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle refers to something a CIFAR-10 batch never contains (code could run)."""


def _latin1_encode(text, encoding="latin1", errors="strict"):
    # How Python 3 writes bytes under protocols < 3: _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(f"_codecs.encode is admitted only as encode(str, 'latin1'); got encoding "
                                f"{encoding!r}")
    return text.encode("latin1")


def _plain_dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError(f"NumPy dtype {dt} holds Python objects; CIFAR-10 arrays are numeric")
    return dt


def _numpy_names():
    """The (module, name) pairs NumPy's array pickles use, mapped to what loading may call."""
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _plain_dtype,
               ("_codecs", "encode"): _latin1_encode}
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _frombuffer
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Admits dicts, lists, tuples, bytes, str, numbers and numeric NumPy arrays (through
    NumPy's own reconstruction functions); any other global is refused, so nothing outside
    that list can be called while loading."""

    def __init__(self, fh, allowed):
        super().__init__(fh, encoding="bytes")
        self._allowed = allowed

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused global {module}.{name} (a genuine CIFAR-10 batch holds only dicts, "
                                    "lists, bytes, ints and NumPy arrays)") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id (not used by CIFAR-10 batches)")


class _Refused(ValueError):
    pass


def read_pickled_batch(file):
    """Load one ``cifar-10-batches-py`` batch with the restricted unpickler.

    Raises
    ------
    ValueError
        The file is not a pickle of the admitted kinds; the message names the file and what
        was refused. Nothing in the file is executed.
    """
    file = Path(file)
    try:
        with open(file, "rb") as fh:
            return _BatchUnpickler(fh, _numpy_names()).load()
    except UnsafePickleError as exc:
        raise _Refused(f"CIFAR-10 file {str(file)!r} was refused: {exc}. Use the python version of CIFAR-10 "
                         "as distributed (cifar-10-python.tar.gz, unpacked).") from None


def _read_batch(file: Path):
    if not file.is_file():
        raise FileNotFoundError(_missing_message(file))
    try:
        batch = read_pickled_batch(file)
    except _Refused:
        raise
    except Exception as exc:
        raise ValueError(
            f"Could not read CIFAR-10 file {str(file)!r} ({type(exc).__name__}: {exc}); expected a pickled "
            "dict with keys b'data' (uint8, rows × 3072) and b'labels' (the python version of CIFAR-10)."
        ) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(
            f"CIFAR-10 file {str(file)!r} must hold a dict with keys b'data' and b'labels'; got {keys}."
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise ValueError(
            f"CIFAR-10 file {str(file)!r}: b'data' must be uint8 of shape (rows, 3072); "
            f"got {data.dtype} {data.shape}."
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(
            f"CIFAR-10 file {str(file)!r}: b'labels' must be {data.shape[0]} integers in 0..9; "
            f"got shape {labels.shape}."
        )
    return data, labels.astype(np.int64)


def load_cifar10(path=None):
    """All CIFAR-10 training images of a local ``cifar-10-batches-py`` folder.

    Parameters
    ----------
    path : str or Path, optional
        The folder holding ``data_batch_1`` .. ``data_batch_5``; defaults to the
        environment variable ``EFFDYN_CIFAR10``.

    Returns
    -------
    data : ndarray (N, 3072) uint8, channel-major rows (N = 50000 for the real set)
    labels : ndarray (N,) int64

    Raises
    ------
    FileNotFoundError
        No folder given, the folder does not exist, or a batch file is missing (the
        message names the file it expected).
    ValueError
        A batch file is not a pickled CIFAR-10 dict.
    """
    folder = check_cifar10_folder(path)
    parts = [_read_batch(folder / name) for name in CIFAR10_BATCHES]
    return np.concatenate([d for d, _ in parts]), np.concatenate([lab for _, lab in parts])


def load_cifar10_subset(path=None, n: int = 500, seed: int | None = 0, *, standardized: bool = True,
                        classes=None, selection: str = "random"):
    """A subset of CIFAR-10 training images as float64 feature vectors.

    Parameters
    ----------
    path : str or Path, optional
        Local ``cifar-10-batches-py`` folder (default: ``$EFFDYN_CIFAR10``).
    n : int
        Number of images, drawn without replacement from all five batches.
    seed : int or None
        Seed of the draw (not used with ``selection="first"``).
    standardized : bool
        Standardise the 3072 columns over the subset; otherwise pixel values / 255.
    classes : list of int, optional
        Keep only images with these labels (e.g. ``[0, 1, 2, 3]``: airplane, automobile,
        bird, cat); default all ten. The labels returned are CIFAR-10's own;
        :func:`class_indices` maps them to 0..len(classes) − 1.
    selection : {"random", "first"}
        "random": ``n`` images drawn with ``seed`` among those of ``classes``; "first": the
        first ``n`` of them in file order (data_batch_1 first), as papers that train on "the
        first n images" do.

    Returns
    -------
    X : ndarray (n, 3072) float64, channel-major as in the files
        (:func:`cifar10_images` gives (n, 32, 32, 3) images)
    labels : ndarray (n,) int64
    """
    classes = _check_classes(classes)
    selection = choice(selection, "selection", ("random", "first"))
    data, labels = load_cifar10(path)
    pool = np.arange(len(labels)) if classes is None else np.flatnonzero(np.isin(labels, classes))
    where = f"the CIFAR-10 folder {str(cifar10_path(path))!r}"
    if classes is not None:
        where += f" with labels in {list(classes)}"
    if selection == "first":
        n = positive_int(n, "n")
        if n > len(pool):
            raise ValueError(f"`n` = {n} exceeds the {len(pool)} samples available in {where}; pass n <= {len(pool)}.")
        idx = pool[:n]
    else:
        idx = pool[_subset_indices(len(pool), n, seed, where)]
    X = data[idx].astype(np.float64) / 255.0
    return (standardize(X) if standardized else X), labels[idx]


# --- the peer MLP (the example of the public JAX central-flow code) -------------------------

def peer_mlp_path(path=None) -> Path | None:
    """The peer-MLP folder to use: ``path`` if given, else ``$EFFDYN_PEER_MLP``, else None."""
    if path is None:
        path = os.environ.get(PEER_MLP_ENV) or None
    return None if path is None else Path(path).expanduser()


def check_peer_mlp_folder(path=None) -> Path:
    """The peer-MLP folder, after checking that it holds ``x.npy``, ``y.npy`` and ``p0.npy``
    (no file is read). Raises FileNotFoundError naming the folder or the first missing file."""
    folder = peer_mlp_path(path)
    if folder is None:
        raise FileNotFoundError(
            f"No peer-MLP data given: pass the folder holding {', '.join(PEER_MLP_FILES)} (the arrays of the "
            f"JAX central-flow example: `--peer-data PATH` of `effdyn validate`, `path` in a [problem] table) or "
            f"set ${PEER_MLP_ENV}. effdyn never downloads data.")
    if not folder.is_dir():
        raise FileNotFoundError(f"peer-MLP folder {str(folder)!r} does not exist or is not a directory; expected a "
                                f"folder containing {', '.join(PEER_MLP_FILES)}.")
    for name in PEER_MLP_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"peer-MLP file {str(folder / name)!r} not found: the folder must contain "
                                    f"{', '.join(PEER_MLP_FILES)}.")
    return folder


def load_peer_mlp(path=None):
    """The arrays of the peer MLP example: ``x`` (n, d) inputs, ``y`` (n,) targets and ``p0``
    (P,) initial weights, float64, read with ``np.load(allow_pickle=False)`` (a file holding
    Python objects is refused, not unpickled)."""
    folder = check_peer_mlp_folder(path)
    out = []
    for name, ndim in zip(PEER_MLP_FILES, (2, 1, 1)):
        try:
            a = np.load(folder / name, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickles
            raise ValueError(f"peer-MLP file {str(folder / name)!r} is not a plain numeric .npy array: {exc}") from None
        if not isinstance(a, np.ndarray) or a.ndim != ndim or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"peer-MLP file {str(folder / name)!r} must hold a numeric {ndim}-D array; got "
                             f"{getattr(a, 'dtype', type(a))} of shape {getattr(a, 'shape', '?')}.")
        out.append(np.asarray(a, dtype=np.float64))
    x, y, p0 = out
    if len(y) != len(x):
        raise ValueError(f"peer-MLP data: x.npy has {len(x)} rows but y.npy {len(y)} values.")
    return x, y, p0
