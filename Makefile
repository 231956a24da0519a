# The two set-up commands of the README: `make run` and `make test` (each creates .venv when missing).
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/experiments/airshower_cnn_energy.yaml

.PHONY: run test test-slow test-all smoke lint bench mlflow-ui

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## simulate, train, evaluate and analyse the default experiment
	$(VENV)/bin/reco run $(CONFIG)

# test files run in parallel, one process per core (at most 4), each file's tests in one process
# (module fixtures are shared); PYTEST_WORKERS=0 runs them in this process
PYTEST_WORKERS ?= auto
XDIST = -n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile

test: $(VENV)/.installed  ## the default test run (minutes; no slow tests)
	$(VENV)/bin/pytest -q -m "not slow" $(XDIST)

test-slow: $(VENV)/.installed  ## the slow tests only (whole-chain suites, multi-process chains)
	$(VENV)/bin/pytest -q -m slow

test-all: $(VENV)/.installed
	$(VENV)/bin/pytest -q

smoke: $(VENV)/.installed  ## the whole chain on a tiny dataset, in seconds
	$(VENV)/bin/reco run $(CONFIG) --smoke

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_simulation.py
	$(PY) benchmarks/bench_loader.py

mlflow-ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000
