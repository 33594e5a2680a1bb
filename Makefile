# NewsPulse: `make demo` runs the whole pipeline on this machine, `make test` runs the tests.
# Both create .venv with the Python found as $(PYTHON) (3.11+) and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# PyTorch, for training (the `train` extra; serving runs on ONNX Runtime without it). pip takes it
# from TORCH_INDEX, PyTorch's CPU wheel index by default, so an ordinary Linux host does not pull
# the multi-GB CUDA build that is PyPI's default Linux wheel. A CUDA host sets the index PyTorch's
# install selector gives for its driver, e.g. `make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128`
# (or TORCH_INDEX=https://pypi.org/simple). An installed torch is kept, and a torch wheel that pip
# already finds without any index (a wheel folder in pip's own configuration) is used as it is.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench report faults install install-dev clean help readme-settings topics-model lock

help:
	@echo "make demo   - train the classifier if needed, replay the bundled news, serve the dashboard"
	@echo "make test   - install dev dependencies and run the test suite"
	@echo "make bench  - run the benchmarks (bench/results/*.json, BENCHMARKS.md)"
	@echo "make report - regenerate BENCHMARKS.md and bench/plots/*.png from bench/results/*.json"
	@echo "make faults - run the fault suite against real peers (bench/results/faults.json; about an hour)"
	@echo "make topics-model - retrain the bundled topic classifier (models/topics/bundled) and measure it"
	@echo "make lock   - re-pin constraints.txt and docker/requirements-serve.txt from .venv (after make test)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then echo "keeping the installed torch"; \
	elif $(BIN)/python -m pip install -q --dry-run --no-deps --no-index "$(TORCH)" >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q "$(TORCH)"; \
	else $(BIN)/python -m pip install -q --extra-index-url "$(TORCH_INDEX)" "$(TORCH)"; fi
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e ".[dashboard,train]"
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,airflow]"
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/newspulse demo

test: install-dev
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: install-dev
	$(BIN)/python bench/run_all.py

# BENCHMARKS.md (targets at a glance, plots, all figures) from the results already measured.
report: install-dev
	$(BIN)/python bench/report.py

# Kill, cut off and poison the real pipeline; one line per scenario (FAULTS_ARGS="--only R1" etc.).
faults: install-dev
	$(BIN)/python bench/faults.py $(FAULTS_ARGS)

# Retrain the committed topic classifier on data/topics, measuring it and the SVM baseline first.
topics-model: install
	$(BIN)/newspulse model train-topics
	$(BIN)/python bench/topics.py

clean:
	rm -rf $(VENV) .cache .pytest_cache

# Regenerate the settings table in README.md from newspulse/settings.py (a test checks it).
readme-settings: install
	$(BIN)/python -c "from pathlib import Path; from newspulse.settings import markdown_table as t; p = Path('README.md'); s = p.read_text(); a = s.index('| variable | default | meaning |'); b = s.index('\n\n', a); p.write_text(s[:a] + t() + s[b:])"

# The pins the images install from (constraints.txt, docker/requirements-serve.txt), read from
# .venv: run it after `make test` passed with the versions to pin (docs/operations.md).
lock: install-dev
	$(BIN)/python docker/lock.py
