# One entry point for developers and CI. `make demo` and `make test` work on a fresh machine
# with only Python 3.11+ and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt

.PHONY: constraints demo test check lint format typecheck imports unit e2e quick golden bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-examples: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install --quiet -e '.[examples,kfp,serve,grpc]' playwright 'tritonclient[grpc]' -c $(CONSTRAINTS)
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]' -c $(CONSTRAINTS)
	touch $@ $(VENV)/.installed-examples

## demo: set up and run the whole product on the bundled example
demo: $(VENV)/.installed-examples
	bash scripts/demo.sh

## test: set up and run lint, types, layering and the whole test suite
test: $(VENV)/.installed-dev check chromium
	$(BIN)/python -m pytest -n 2 --timeout 600

## chromium: Debian's chromium for the web UI tests (installed as root when missing; never
## Playwright's own browser download)
chromium: $(VENV)/.installed-dev
	PYTHON=$(BIN)/python bash scripts/install-chromium.sh

check: lint typecheck imports

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

## quick: the fast tests only (no end-to-end, no slow, no browser)
quick: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2 -m "not slow and not e2e and not ui"

## golden: rewrite the golden files after a reviewed change
golden: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/golden --update-golden

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache

## constraints: record the versions of the working .venv as the ones make installs
constraints: $(VENV)/.installed-dev
	{ sed -n '1,4p' $(CONSTRAINTS); $(PIP) freeze --exclude-editable | grep -v '^cellpipe'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
