# pwgf-book: `make book` builds the site, `make test` runs every test. Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Parallel test workers (pytest-xdist); CI has 2 cores.
JOBS ?= 2
# The library works on small tensors, where torch's intra-op threads only contend with the parallel
# workers and kernels (measured: 5 ms per REINFORCE estimate with one thread, 23 ms with two under load).
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS
# Pinned CPU code paths (pwgf.experiments.vae_training.numerics): AVX-512 and AVX2 kernels round differently, so
# without these a run's bits depend on the machine; with them every x86-64 machine with AVX2 gives the same bits,
# which the replay of the committed long runs checks.
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2,STRICT
export ONEDNN_MAX_CPU_ISA := AVX2

CHAPTERS := $(sort $(wildcard book/*.md))
EXPERIMENTS := $(patsubst notebooks/%.md,%,$(sort $(wildcard notebooks/*.md)))
LIBRARY := $(sort $(wildcard src/pwgf/*.py src/pwgf/*/*.py))
# The execution cache keys on cell source only; this fingerprint of the library, the pinned
# environment and the experiments' summaries (which chapters may read) clears it (and Sphinx's
# environment) whenever one of them changes.
FINGERPRINT = $(shell cat $(LIBRARY) requirements.txt pyproject.toml $(wildcard $(RESULTS_DIR)/*/summary.json $(LONG_RUNS)/manifest.json) | sha256sum | cut -c1-16)
# Experiments write to $(RESULTS_DIR)/NAME; chapters read the summaries from $$PWGF_RESULTS_DIR/NAME.
RESULTS_DIR := results
TEST_DIR := _build/test
TEST_RESULTS_DIR := $(CURDIR)/$(TEST_DIR)/results
# The test-scale site is built from a copy of the root (symlinks) whose experiments/ holds the
# test-scale runs, and is then moved to _build/html with this marker, so the next `make book`
# rewrites every page.
TEST_SITE := $(TEST_DIR)/site
TEST_SITE_MARKER := _build/html/.test-scale

.PHONY: help setup book experiments long-runs replay chapters-ipynb cache-guard test test-unit lint test-notebooks test-build test-site bench notebooks-branch clean

help:
	@echo "make setup        create $(VENV) and install the pinned environment (requirements.txt) and pwgf"
	@echo "make book         run the experiments at book scale, then build the site into _build/html"
	@echo "make test         unit tests for src/pwgf, nbval over every chapter and experiment notebook, then the"
	@echo "                  whole site built from those executions into _build/html (test scale)"
	@echo "make lint         ruff and mypy over the library (part of make test)"
	@echo "make test-site    open every page of _build/html in headless Chromium and check it"
	@echo "make experiments  run only the experiment notebooks at book scale (results/, experiments/)"
	@echo "make long-runs    run or resume Table 2 at convergence ($(LONG_PARAMS)) into $(LONG_RUNS): hours; commit the files"
	@echo "make clean        remove _build (results/ and experiments/ are kept: sweeps resume)"

setup: $(STAMP)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# --- experiments: MyST source -> .ipynb (jupytext) -> parameters injected and executed (papermill) ---
# The cell papermill injects is bookkeeping: the page shows it behind a toggle (hide-input), as the parameters cell.
HIDE_INJECTED = $(BIN)/python -c 'import sys, nbformat; nb = nbformat.read(sys.argv[1], 4); \
  [c.metadata.setdefault("tags", []).append("hide-input") for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]; \
  nbformat.write(nb, sys.argv[1])'
experiments: $(EXPERIMENTS:%=experiments/%.ipynb)

experiments/%.ipynb: notebooks/%.md notebooks/params/%.book.yaml $(LIBRARY) $(STAMP)
	@mkdir -p _build/papermill experiments
	$(BIN)/jupytext --quiet --to ipynb --output _build/papermill/$*.ipynb $<
	$(BIN)/papermill --cwd . -f notebooks/params/$*.book.yaml -p output_dir $(RESULTS_DIR)/$* \
	  _build/papermill/$*.ipynb _build/papermill/$*.executed.ipynb
	@$(HIDE_INJECTED) _build/papermill/$*.executed.ipynb
	@mv _build/papermill/$*.executed.ipynb $@

# --- Table 2 at convergence: long runs committed under $(LONG_RUNS), replayed by every build ---
LONG_PARAMS := notebooks/params/bernoulli_vae.long.yaml
LONG_RUNS := results/bernoulli_vae_long
# Steps of each replayed run: `make book` replays the whole trace (pwgf.experiments.vae_training.TRACE_STEPS), `make test`
# fewer; the report is what the Verdict chapter cites.
REPLAY_STEPS ?= 500
TEST_REPLAY_STEPS := 100
REPLAY_REPORT ?= $(RESULTS_DIR)/replay.json
long-runs: $(STAMP)
	$(BIN)/python -m pwgf.experiments.long_runs run $(LONG_PARAMS)

replay: $(STAMP)
	$(BIN)/python -m pwgf.experiments.long_runs verify $(LONG_RUNS) --steps $(REPLAY_STEPS) --report $(REPLAY_REPORT)

# --- the site ---
chapters-ipynb: $(STAMP)
	$(BIN)/jupytext --quiet --to ipynb $(CHAPTERS)

cache-guard:
	@mkdir -p _build
	@if [ "$$(cat _build/.fingerprint 2>/dev/null)" != "$(FINGERPRINT)" ]; then \
	  echo "library or environment changed since the last build: clearing the execution cache"; \
	  rm -rf _build/.jupyter_cache _build/.doctrees _build/jupyter_execute _build/html; \
	  echo "$(FINGERPRINT)" > _build/.fingerprint; \
	fi
	@if [ -e $(TEST_SITE_MARKER) ]; then echo "replacing the test-scale site in _build/html"; rm -rf _build/html; fi

book: $(STAMP) replay experiments chapters-ipynb cache-guard
	PWGF_RESULTS_DIR=$(CURDIR)/$(RESULTS_DIR) $(BIN)/jupyter-book build . --warningiserror --keep-going --builder html
	@echo "site: $(CURDIR)/_build/html/index.html"

# Publish generated notebooks on the branch the launch buttons open (repository.branch in _config.yml).
notebooks-branch: experiments chapters-ipynb
	@index=$$(mktemp -u); \
	GIT_INDEX_FILE=$$index git read-tree HEAD; \
	GIT_INDEX_FILE=$$index git add --force book/*.ipynb experiments/*.ipynb; \
	tree=$$(GIT_INDEX_FILE=$$index git write-tree); rm -f $$index; \
	git update-ref refs/heads/notebooks $$(git commit-tree $$tree -p HEAD -m "Executed notebooks for launch buttons"); \
	echo "branch 'notebooks' updated: push it to publish"

# --- tests ---
test: test-unit test-notebooks test-build

test-unit: $(STAMP) lint
	$(BIN)/python -m pytest -n $(JOBS) tests

# The library and its tests stay clean under ruff (lint) and mypy (strict; configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/pwgf

# Chapters are converted into a scratch folder; experiment notebooks get their small test
# parameters injected by papermill (--prepare-only). nbval then executes each once, experiments
# first (chapters may read their summaries), and keeps every executed notebook (tests/executed_notebooks.py).
NBVAL = PYTHONPATH=tests PWGF_RESULTS_DIR=$(TEST_RESULTS_DIR) $(BIN)/python -m pytest -n $(JOBS) --dist loadfile \
  -p no:cacheprovider -p executed_notebooks --nbval-lax --nbval-cell-timeout=600 -o testpaths= --rootdir=$(TEST_DIR)

test-notebooks: $(STAMP)
	@rm -rf $(TEST_DIR) && mkdir -p $(TEST_DIR)/book $(TEST_DIR)/notebooks $(TEST_RESULTS_DIR)
	@$(MAKE) --no-print-directory replay REPLAY_STEPS=$(TEST_REPLAY_STEPS) REPLAY_REPORT=$(TEST_RESULTS_DIR)/replay.json
	@for md in $(CHAPTERS); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(TEST_DIR)/book/$$(basename $${md%.md}).ipynb $$md; \
	done
	@for name in $(EXPERIMENTS); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(TEST_DIR)/notebooks/$$name.source.ipynb notebooks/$$name.md; \
	  $(BIN)/papermill --prepare-only -f notebooks/params/$$name.test.yaml \
	    -p output_dir $(TEST_RESULTS_DIR)/$$name \
	    $(TEST_DIR)/notebooks/$$name.source.ipynb $(TEST_DIR)/notebooks/$$name.ipynb; \
	  $(HIDE_INJECTED) $(TEST_DIR)/notebooks/$$name.ipynb; \
	  rm $(TEST_DIR)/notebooks/$$name.source.ipynb; \
	done
	@n=$$(ls $(TEST_DIR)/book/*.ipynb $(TEST_DIR)/notebooks/*.ipynb | wc -l); \
	 want=$$(( $(words $(CHAPTERS)) + $(words $(EXPERIMENTS)) )); \
	 [ "$$n" -eq "$$want" ] || { echo "expected $$want notebooks to test, found $$n"; exit 1; }
	$(NBVAL) --executed-dir $(TEST_DIR)/executed/experiments $(TEST_DIR)/notebooks
	$(NBVAL) --executed-dir $(TEST_DIR)/executed/book $(TEST_DIR)/book

# The whole site, with -W, from the executions above: chapters through the build's execution cache
# (the build fails if it had to execute one again), experiment pages from their test-scale runs.
test-build: test-notebooks chapters-ipynb
	@rm -rf $(TEST_SITE) && mkdir -p $(TEST_SITE)/experiments
	@for entry in *; do \
	  case $$entry in _build|experiments|results) ;; *) ln -s $(CURDIR)/$$entry $(TEST_SITE)/$$entry;; esac; \
	done
	@cp $(TEST_DIR)/executed/experiments/*.ipynb $(TEST_SITE)/experiments/
	$(BIN)/python tests/executed_notebooks.py cache $(TEST_SITE)/_build/.jupyter_cache $(TEST_DIR)/executed/book/*.ipynb
	PWGF_RESULTS_DIR=$(TEST_RESULTS_DIR) $(BIN)/jupyter-book build $(TEST_SITE) --warningiserror --keep-going --builder html
	$(BIN)/python tests/executed_notebooks.py check $(TEST_SITE)/_build/.jupyter_cache
	@rm -rf _build/html && mv $(TEST_SITE)/_build/html _build/html && touch $(TEST_SITE_MARKER)
	@echo "test-scale site: $(CURDIR)/_build/html/index.html"

# Opens every page of _build/html (from `make test` or `make book`) in headless Chromium.
test-site: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/site

bench: $(STAMP)
	$(BIN)/python -m pwgf.experiments.bench --output _build/bench.json
	$(BIN)/python -m pwgf.experiments.bench_sweep --output _build/bench_sweep.json

clean:
	rm -rf _build
