# A fresh machine needs only Python 3.10+ and this file.
# torch is pinned to the CPU build that installs offline here; on a GPU machine, install the torch
# you want first (TORCH="torch" or TORCH= to keep the installed one). The package accepts torch >= 2.4.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup lint test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH) -e ".[test]"

# One formatter and linter configuration (pyproject.toml), checked before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two test processes of one thread each: tiny models spend their time in per-operation overhead,
# which a second thread does not share, so two workers finish about twice as fast as one.
test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2

demo: setup
	$(BIN)/triform demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
