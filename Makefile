# micar - two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test demo lint clean-venv

setup: $(STAMP)

# The venv is rebuilt when the dependency files change (the stamp is older than them).
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/micar demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check micar pipelines tests benchmarks
	$(BIN)/ruff format --check micar pipelines tests benchmarks

clean-venv:
	rm -rf $(VENV)
