# SelfPose3d Lab. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench install clean

$(STAMP): pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements-ci.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create the venv and install the project (pinned torch from requirements-ci.txt)

demo: $(STAMP)  ## the main job on the embedded default (synthetic data, local Ray, local MLflow)
	$(VENV)/bin/sp3d demo

test: $(STAMP)  ## the whole suite (CPU, < 15 min)
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check selfpose3d platform tests benchmarks

bench: $(STAMP)  ## speed benchmarks (print measured ratios)
	$(PY) benchmarks/bench_projection.py

clean:
	rm -rf $(VENV) .pytest_cache
