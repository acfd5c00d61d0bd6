# Quick start: `make demo` and `make test`. Both set up everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
SCIENTIST := $(VENV)/bin/scientist
CANDIDATES := $(wildcard templates/discopop/candidates/*.py)

.PHONY: setup system demo test test-all lint bench clean

setup: system $(VENV)/.installed

system:
	@bash scripts/setup-system.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

# Evaluates the shipped DiscoPOP reference losses through the sandbox and the sealed evaluator.
demo: setup
	$(SCIENTIST) baseline --template discopop
	$(SCIENTIST) eval --template discopop $(addprefix --candidate ,$(CANDIDATES))
	@echo "Results: each run's final_info.json is under .scientist/runs/discopop/; list them with"
	@echo "  $(SCIENTIST) runs --template discopop"

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/discopop_vmap.py
	$(PY) bench/eval_phases.py

clean:
	rm -rf .scientist .pytest_cache
