# A fresh machine needs only Python 3.10+ and this file.
# torch is pinned to the CPU build that installs offline here; on a GPU machine, install the torch
# you want first (TORCH="torch" or TORCH= to keep the installed one). The package accepts torch >= 2.4.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup lint browser test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH) -e ".[test]"

# One formatter and linter configuration (pyproject.toml), checked before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The playground's test drives Debian's Chromium (tests/test_playground.py): installed here when missing,
# where apt-get can (as root); elsewhere the test is skipped and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "browser: installing chromium and chromium-driver for the playground test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| echo "browser: could not install chromium; the playground test will be skipped"; \
	else echo "browser: no chromium, and apt-get needs root; the playground test will be skipped"; fi

# Two test processes of one thread each: tiny models spend their time in per-operation overhead,
# which a second thread does not share, so two workers finish about twice as fast as one.
test: lint browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -rs

demo: setup
	$(BIN)/triform demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
