# Two commands do all set-up from nothing but python3:
#   make run   create .venv, install effdyn with all extras, run the main job
#   make test  create .venv if missing, install, run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-explore bench notebooks install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m effdyn validate --quick --out effdyn-output

# Two pytest workers fill the two cores; one BLAS thread each avoids oversubscription.
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup -p no:cacheprovider

# The same suite with fresh random examples for the property tests (tests/conftest.py).
test-explore: $(STAMP)
	HYPOTHESIS_PROFILE=explore OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The notebooks are pairs: notebooks/<story>.py (percent format, the source to edit) and the
# executed .ipynb. Sync each pair (the newer file wins), execute the .ipynb in place in a
# fresh kernel so that it carries current outputs, then sync again so the scripts are not
# older than their notebooks. jupyter-execute is nbclient's; it is run through $(PY) so the
# venv's own interpreter executes it.
notebooks: $(STAMP)
	$(PY) -m jupytext --sync notebooks/*.py
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) $(VENV)/bin/jupyter-execute --inplace --timeout=1200 notebooks/*.ipynb
	$(PY) -m jupytext --sync notebooks/*.py

clean:
	rm -rf $(VENV) effdyn-output build *.egg-info
