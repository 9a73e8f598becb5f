# BBER — the two commands of the README, and JupyterLab.
#   make reproduce   set up, then run every notebook in order on the demo profile (PROFILE=smoke|demo|paper)
#   make test        set up, then run the test suite (it executes every notebook on the smoke profile)
#   make lab         set up, then open JupyterLab on notebooks/
#   make browser-check  notebook 09 in JupyterLab in headless Chromium (runs the smoke profile first if needed)
# A virtual environment (.venv) is created and used unless one is already active.
# On a machine without an NVIDIA GPU the CPU build of torch 2.13.0 is installed first; to take it from
# PyTorch's CPU index instead of PyPI: make reproduce TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

SHELL := /bin/bash
.DEFAULT_GOAL := help
PROFILE ?= demo
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
SYSTEM_TOOLS := espeak-ng ffmpeg

# Bit-identical CPU runs for a seed: MKL must take the same code path whatever ran before (set before torch loads).
export MKL_CBWR ?= COMPATIBLE

ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.bber-installed

.PHONY: help setup system-tools reproduce test lab clean browser-check

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'

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

$(STAMP): pyproject.toml | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	  else echo "no NVIDIA GPU: installing the CPU build torch==$(TORCH_VERSION)"; \
	       $(PY) -m pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS); fi; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name bber --display-name "Python 3 (bber)" >/dev/null
	@touch $(STAMP)

setup: system-tools $(STAMP)

reproduce: setup
	$(BIN)/bber reproduce --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: setup
	$(BIN)/jupyter lab --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/

browser-check: setup
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install chromium first:  sudo apt-get install -y chromium"; exit 1; fi; }
	@[ -f runs/smoke/notebooks/summary.csv ] || $(BIN)/bber reproduce --profile smoke
	$(PY) tools/browser_check.py --workdir runs/smoke --profile smoke --screenshot figures/jupyterlab_09_widget.png

clean:
	rm -rf runs .pytest_cache
