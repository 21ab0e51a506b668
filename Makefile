# batchfleet: `make demo` and `make test` do all setup on a fresh machine (GNU make, Linux/macOS).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3 || command -v python)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.batchfleet-installed
PYTEST_FLAGS ?=
BENCH_FLAGS ?=

EXAMPLE := examples/score_digits
DEMO_DATA := $(EXAMPLE)/data
DEMO_OUT := out/demo

.PHONY: help venv demo test system-deps lint format bench clean distclean

help:
	@echo "make demo   set up .venv, prepare the digits example and score it with batchfleet"
	@echo "make test   install rabbitmq-server and chromium (as root), set up .venv, then ruff, mypy and pytest (all tiers but soak)"
	@echo "make system-deps  only install the Debian packages the tests need (as root)"
	@echo "make lint   ruff check, ruff format --check, mypy"
	@echo "make format ruff format and ruff check --fix"
	@echo "make bench  run the benchmarks (BENCH_FLAGS='--files 2000' for a quick one)"
	@echo "make clean  remove outputs, example data and caches (distclean: also .venv)"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "no python3 on PATH; install Python 3.11+ or pass PYTHON=/path/to/python3" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "$(PYTHON) is older than 3.11; pass PYTHON=/path/to/python3.11 or newer" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python $(EXAMPLE)/prepare.py --out $(DEMO_DATA)
	rm -rf $(DEMO_OUT)
	$(BIN)/batchfleet run $(EXAMPLE)/component.yaml \
	  --input images_to_score=$(DEMO_DATA)/images \
	  --input trained_model=$(DEMO_DATA)/model/model.pkl \
	  --output scored_dataset=$(DEMO_OUT)
	@echo "$$(wc -l < $(DEMO_OUT)/parallel_run_step.txt) lines in $(DEMO_OUT)/parallel_run_step.txt (1797 expected)"
	@awk '{ label = $$1; sub(/.*_label/, "", label); sub(/\.png$$/, "", label); if (label == $$2) ok++ } \
	  END { printf "%d of %d predictions match the label in the file name\n", ok, NR }' \
	  $(DEMO_OUT)/parallel_run_step.txt

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# As root with apt-get, installs rabbitmq-server and chromium; otherwise says what is missing.
system-deps:
	@bash tests/system-deps.sh

# pytest exits 5 when it collects nothing: fail loudly rather than pass an empty run.
test: system-deps lint
	@rc=0; $(BIN)/pytest -m "not soak" $(PYTEST_FLAGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: check testpaths and -m filters" >&2; fi; \
	exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/w1_files.py $(BENCH_FLAGS)

clean:
	rm -rf out .batchfleet $(DEMO_DATA) .pytest_cache .mypy_cache .ruff_cache test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
