# BBER — the two commands of the README, and JupyterLab.
#   make reproduce   set up, then run every notebook in order on the demo profile (PROFILE=smoke|demo|paper)
#   make test        set up, then run the test suite (it executes every notebook on the smoke profile)
#   make lab         set up, then open JupyterLab on notebooks/
#   make lock        regenerate the lock files requirements/cpu.lock and gpu.lock from pyproject.toml (uv)
#   make mutants     set up, then run the mutation check (each README "we differ" row and fixed defect put back)
#   make real-text   set up, then run the real-text benchmark (real MELD texts from ../shared, official dev split)
#   make real-audio  set up, then run the real-audio benchmark (real Polish speech from ../shared, by speaker)
#   make browser-check  notebook 09 in JupyterLab in headless Chromium (runs the smoke profile first if needed)
# A virtual environment (.venv) is created and used unless one is already active. Setup installs the exact,
# hash-checked versions of requirements/cpu.lock (gpu.lock where nvidia-smi works); LOCK=0 uses pyproject's ranges.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PROFILE ?= demo
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
LOCK ?= 1
CPU_LOCK := requirements/cpu.lock
GPU_LOCK := requirements/gpu.lock
# Where pip and uv find PyTorch's CPU wheel (torch==2.13.0+cpu is not on PyPI): pip's own find-links if set,
# else PyTorch's wheel page.
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/torch/)
LOCK_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_28
PYTEST_ARGS ?=
SYSTEM_TOOLS := espeak-ng ffmpeg

# The CPU code paths (the same bytes for a seed on every x86-64 CPU with AVX2) are pinned by each entry point
# itself (bber, the notebook kernels, pytest): bber_utils/core/cpu.py. `python -m bber_utils.core.cpu CMD` runs
# any other command pinned.

ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.bber-installed

.PHONY: help setup system-tools browser reproduce test lab lock mutants clean real-text real-audio browser-check

help:
	@sed -n '2,10p' Makefile | sed 's/^# \{0,1\}//'

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system tools:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_TOOLS) >/dev/null; \
	  else \
	    echo "missing system tools:$$missing"; \
	    echo "install them, then run make again:  sudo apt-get install -y $(SYSTEM_TOOLS)"; \
	    echo "(conda users: conda env create -f environment.yml)"; exit 1; \
	  fi; \
	fi

$(PY):
	python3 -m venv $(VENV)

ifeq ($(LOCK),0)
$(STAMP): pyproject.toml | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	  else echo "no NVIDIA GPU: installing the CPU build torch==$(TORCH_VERSION)"; \
	       $(PY) -m pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS); fi; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name bber --display-name "Python 3 (bber)" >/dev/null
	@touch $(STAMP)
else
# Locked install: torch first (the CPU build comes from PyTorch's wheels, not PyPI), then every other pinned,
# hash-checked package, then the project itself without dependencies.
$(STAMP): pyproject.toml $(CPU_LOCK) $(GPU_LOCK) | $(PY)
	@lock=$(CPU_LOCK); command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && lock=$(GPU_LOCK); \
	echo "installing the locked environment $$lock"; \
	awk '/^torch==/{p=1; print; next} p && /^ /{print; next} {p=0}' $$lock > $(VENV)/.bber-torch.lock && \
	$(PY) -m pip install -q --no-deps --require-hashes -r $(VENV)/.bber-torch.lock --find-links $(TORCH_FIND_LINKS) $(TORCH_PIP_ARGS) && \
	$(PY) -m pip install -q --require-hashes -r $$lock && \
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name bber --display-name "Python 3 (bber)" >/dev/null
	@touch $(STAMP)
endif

# Regenerate both locks from pyproject.toml; versions already in a lock are kept unless UPGRADE=1.
lock: | $(PY)
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install -q uv
	echo "torch==$(TORCH_VERSION)+cpu" > requirements/torch-cpu.txt
	echo "torch==$(TORCH_VERSION)" > requirements/torch-gpu.txt
	@[ -f $(GPU_LOCK) ] || cp $(CPU_LOCK) $(GPU_LOCK)
	$(PY) -m uv pip compile -q pyproject.toml --extra dev --generate-hashes $(LOCK_PLATFORM) \
	  --find-links $(TORCH_FIND_LINKS) --override requirements/torch-cpu.txt $(if $(UPGRADE),--upgrade) \
	  --custom-compile-command "make lock" -o $(CPU_LOCK)
	$(PY) -m uv pip compile -q pyproject.toml --extra dev --extra cuda --generate-hashes $(LOCK_PLATFORM) \
	  --override requirements/torch-gpu.txt $(if $(UPGRADE),--upgrade) --custom-compile-command "make lock" \
	  -o $(GPU_LOCK)

setup: system-tools $(STAMP)

reproduce: setup
	$(BIN)/bber reproduce --profile $(PROFILE)

# Headless Chromium for the browser test (tests/notebook/test_browser.py skips with the reason where it cannot be installed).
browser:
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: the browser test will skip (sudo apt-get install -y chromium)"; fi; }

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

real-text: setup
	$(PY) -m bber_utils.core.cpu $(PY) benchmarks/real_text.py

real-audio: setup
	MKL_CBWR=COMPATIBLE $(PY) benchmarks/real_audio.py

mutants: setup
	$(PY) -m tools.mutants

lab: setup
	$(PY) -m bber_utils.core.cpu $(BIN)/jupyter lab --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/

browser-check: setup browser
	@[ -f runs/smoke/notebooks/summary.csv ] || $(BIN)/bber reproduce --profile smoke
	$(PY) tools/browser_check.py --workdir runs/smoke --profile smoke --screenshot figures/jupyterlab_09_widget.png

clean:
	rm -rf runs .pytest_cache
