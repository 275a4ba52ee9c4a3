"""The example notebooks run from top to bottom (issue 8).

Each notebook ends with checks of its own story (plain ``assert`` cells), so a notebook
whose numbers drift fails here like any other test. They are executed with nbclient in a
fresh kernel, in a temporary working directory, without writing outputs back.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["quickstart.ipynb", "matrix_factorization.ipynb", "mean_field.ipynb", "custom_loss.ipynb"]


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(f"notebook-{n}")) for n in NAMES])
def test_notebook_runs(name, tmp_path, monkeypatch):
    # the kernel inherits the environment: one BLAS thread (effdyn's matrices are small)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name} failed:\n{exc}", pytrace=False)
    elapsed = time.perf_counter() - start
    print(f"{name}: {elapsed:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 1, f"{name} drew no figure"


@pytest.mark.xdist_group("notebook-quickstart.ipynb")
def test_notebooks_match_their_generator(tmp_path):
    # the notebooks are written by notebooks/_build.py; an edit to one but not the other is
    # caught here
    built = _build_module().build(tmp_path)
    assert sorted(p.name for p in built) == sorted(NAMES)
    for path in built:
        fresh = nbformat.read(path, as_version=4)
        committed = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        assert [(c.cell_type, c.source) for c in fresh.cells] == [(c.cell_type, c.source) for c in committed.cells], \
            f"{path.name} differs from notebooks/_build.py; run `python notebooks/_build.py`"
        assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), \
            f"{path.name} has committed outputs"
