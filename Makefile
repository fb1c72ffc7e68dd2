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

CHAPTERS := $(sort $(wildcard book/*.md))
EXPERIMENTS := $(patsubst notebooks/%.md,%,$(sort $(wildcard notebooks/*.md)))
LIBRARY := $(sort $(wildcard src/pwgf/*.py))
# The execution cache keys on cell source only; this fingerprint of the library and the pinned
# environment clears it (and Sphinx's environment) whenever either changes.
FINGERPRINT = $(shell cat $(LIBRARY) requirements.txt pyproject.toml | sha256sum | cut -c1-16)
TEST_DIR := _build/test

.PHONY: help setup book experiments chapters-ipynb cache-guard test test-unit test-notebooks bench notebooks-branch clean

help:
	@echo "make setup        create $(VENV) and install the pinned environment (requirements.txt) and pwgf"
	@echo "make book         run the experiments at book scale, then build the site into _build/html"
	@echo "make test         unit tests for src/pwgf, then nbval over every chapter and experiment notebook"
	@echo "make experiments  run only the experiment notebooks at book scale (results/, experiments/)"
	@echo "make clean        remove _build (results/ and experiments/ are kept: sweeps resume)"

setup: $(STAMP)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# --- experiments: MyST source -> .ipynb (jupytext) -> parameters injected and executed (papermill) ---
experiments: $(EXPERIMENTS:%=experiments/%.ipynb)

experiments/%.ipynb: notebooks/%.md notebooks/params/%.book.yaml $(LIBRARY) $(STAMP)
	@mkdir -p _build/papermill experiments
	$(BIN)/jupytext --quiet --to ipynb --output _build/papermill/$*.ipynb $<
	$(BIN)/papermill --cwd . -f notebooks/params/$*.book.yaml _build/papermill/$*.ipynb _build/papermill/$*.executed.ipynb
	@mv _build/papermill/$*.executed.ipynb $@

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

book: $(STAMP) experiments chapters-ipynb cache-guard
	$(BIN)/jupyter-book build . --warningiserror --keep-going --builder html
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
test: test-unit test-notebooks

test-unit: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) tests

# Chapters are converted into a scratch folder; experiment notebooks get their small test
# parameters injected by papermill (--prepare-only) and are then executed once, by nbval.
test-notebooks: $(STAMP)
	@rm -rf $(TEST_DIR) && mkdir -p $(TEST_DIR)/book $(TEST_DIR)/notebooks $(TEST_DIR)/results
	@for md in $(CHAPTERS); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(TEST_DIR)/book/$$(basename $${md%.md}).ipynb $$md; \
	done
	@for name in $(EXPERIMENTS); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(TEST_DIR)/notebooks/$$name.source.ipynb notebooks/$$name.md; \
	  $(BIN)/papermill --prepare-only -f notebooks/params/$$name.test.yaml \
	    -p output_dir $(CURDIR)/$(TEST_DIR)/results/$$name \
	    $(TEST_DIR)/notebooks/$$name.source.ipynb $(TEST_DIR)/notebooks/$$name.ipynb; \
	  rm $(TEST_DIR)/notebooks/$$name.source.ipynb; \
	done
	@n=$$(ls $(TEST_DIR)/book/*.ipynb $(TEST_DIR)/notebooks/*.ipynb | wc -l); \
	 want=$$(( $(words $(CHAPTERS)) + $(words $(EXPERIMENTS)) )); \
	 [ "$$n" -eq "$$want" ] || { echo "expected $$want notebooks to test, found $$n"; exit 1; }
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -p no:cacheprovider --nbval-lax --nbval-cell-timeout=600 \
	  -o testpaths= --rootdir=$(TEST_DIR) $(TEST_DIR)/book $(TEST_DIR)/notebooks

bench: $(STAMP)
	$(BIN)/python -m pwgf.bench --output _build/bench.json
	$(BIN)/python -m pwgf.bench_sweep --output _build/bench_sweep.json

clean:
	rm -rf _build
