"""The example notebooks: each story is a pair, a percent-format script
(``notebooks/<story>.py``, the source to read and edit) and the executed ``.ipynb`` beside it
(what a code-hosting site shows, outputs included), kept together by jupytext.

Three things are checked:

* the pair is in sync: jupytext reads both files and their cells (type and source, markdown
  included) must be equal, so editing one file and not the other fails here, with the
  remedy (``make notebooks``) in the message;
* the committed ``.ipynb`` was executed top to bottom in one fresh kernel (execution counts
  1, 2, …, no error output, at least one figure), and its outputs stay small;
* the notebook runs now, with nbclient in a fresh kernel and a temporary working directory,
  without writing outputs back. Each notebook ends with checks of its own story (plain
  ``assert`` cells), so a notebook whose numbers drift fails like any other test.
"""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STORIES = ["quickstart", "matrix_factorization", "mean_field", "custom_loss"]
PAIRING = "ipynb,py:percent"
REMEDY = "edit notebooks/<story>.py and run `make notebooks` (syncs the pair and executes it)"

#: Bounds on what a committed notebook may carry: text outputs are a few printed lines per
#: cell, figures are a handful of PNGs.
MAX_TEXT_OUTPUT_CHARS = 5_000
MAX_NOTEBOOK_BYTES = 1_500_000


def _group(story):
    return pytest.mark.xdist_group(f"notebook-{story}")


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def pair_differences(script: Path, notebook: Path) -> list[str]:
    """Where the percent script and the notebook disagree (empty when they are in sync)."""
    a = cells(jupytext.read(script, fmt="py:percent"))
    b = cells(jupytext.read(notebook))
    problems = [f"{script.name} has {len(a)} cells, {notebook.name} has {len(b)}"] if len(a) != len(b) else []
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            problems.append(f"cell {i} ({ca[0]} in {script.name}, {cb[0]} in {notebook.name}):\n"
                            f"--- {script.name}\n{ca[1]}\n--- {notebook.name}\n{cb[1]}")
    return problems


def test_every_story_is_a_pair():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == sorted(STORIES)
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(STORIES)


@pytest.mark.parametrize("story", STORIES)
def test_pair_is_in_sync(story):
    script, notebook = NOTEBOOKS / f"{story}.py", NOTEBOOKS / f"{story}.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == PAIRING, f"{notebook.name} is not paired; {REMEDY}"
    differences = pair_differences(script, notebook)
    assert not differences, f"{story}: script and notebook differ; {REMEDY}\n" + "\n".join(differences)


def test_sync_check_sees_a_one_sided_edit(tmp_path):
    # the check above must fail when only one side is edited: a changed number in a code
    # cell, a changed word in a markdown cell, a cell added to the script
    script, notebook = NOTEBOOKS / "quickstart.py", NOTEBOOKS / "quickstart.ipynb"
    text = script.read_text(encoding="utf-8")
    edits = {
        "code": text.replace("eta, steps = prob.init(), 0.3, 4000", "eta, steps = prob.init(), 0.31, 4000"),
        "markdown": text.replace("# ## Gradient descent", "# ## Gradient descent, again"),
        "added cell": text + "\n# %%\nprint('one more cell')\n",
    }
    assert not pair_differences(script, notebook)
    for what, edited in edits.items():
        assert edited != text, f"the {what} edit did not apply; update this test"
        path = tmp_path / f"{what.replace(' ', '_')}.py"
        path.write_text(edited, encoding="utf-8")
        assert pair_differences(path, notebook), f"a one-sided {what} edit went unnoticed"


@pytest.mark.parametrize("story", STORIES)
def test_committed_notebook_is_executed_and_small(story):
    path = NOTEBOOKS / f"{story}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), \
        f"{path.name} was not executed top to bottom in one fresh kernel (counts {counts}); {REMEDY}"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{path.name} carries an error; {REMEDY}"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1, f"{path.name} carries no figure"
    text = sum(len(o.get("text", "")) + len(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert text <= MAX_TEXT_OUTPUT_CHARS, f"{path.name} prints {text} characters; print less"
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size} bytes"


@pytest.mark.parametrize("story", [pytest.param(s, marks=_group(s)) for s in STORIES])
def test_notebook_runs(story, tmp_path, monkeypatch):
    # the kernel inherits the environment: one BLAS thread (effdyn's matrices are small)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    name = f"{story}.ipynb"
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for c in nb.cells:  # run from a clean slate: the committed outputs must not be what is checked
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
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
