# Two commands on a fresh machine: `make demo` and `make test` (README.md). Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gilab-installed
# torch first and pinned: an unpinned torch (also pulled in by gsplat) would download a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Tests and benchmarks find the data through GILAB_DATA; this workplace keeps it beside the checkout.
GILAB_DATA ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export GILAB_DATA
# Idle OpenMP threads wait passively: spinning ones slowed small renders 30x when the cores were shared.
export OMP_WAIT_POLICY ?= PASSIVE
PIP_QUIET := 2>&1 | { grep -v -e 'is ignored: it is neither' || true; }

.PHONY: setup demo test test-fast test-gpu gpu-check lab bench notebooks figures clean
setup: $(STAMP)

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH) $(PIP_QUIET)
	$(BIN)/python -m pip install -q -e ".[dev]" $(PIP_QUIET)
	@touch $(STAMP)

demo: setup  ## fit the embedded photograph, write out/demo/
	$(BIN)/gilab demo

test: setup  ## the whole suite (GPU tests skip without CUDA)
	$(BIN)/python -m pytest -n 2 -q

test-fast: setup
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not browser"

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

gpu-check:  ## on a CUDA machine: GPU tests, CUDA benchmark rows, one full fit -> figures/ (about 8 min)
	bash scripts/gpu_check.sh

lab: setup
	$(BIN)/jupyter lab notebooks/

notebooks: setup  ## re-execute the committed notebooks in place (normal mode)
	cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace [0-9][0-9]_*.ipynb

figures: setup  ## refresh the widget screenshots (playground, fit monitor, placement explorer, start comparison)
	GILAB_UPDATE_FIGURES=1 $(BIN)/python -m pytest -q tests/test_browser.py

bench: setup
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/rasterizer.py
	$(BIN)/python benchmarks/placement.py

clean:
	rm -rf $(VENV) out .pytest_cache
