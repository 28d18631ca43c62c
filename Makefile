# Quick start: `make up` (the whole stack with synthetic traffic), `make test` (the suite).
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,tansu]'
	touch $@

up: $(BIN)/.installed
	$(BIN)/flowlogs up

test: $(BIN)/.installed
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/agent.py

clean:
	rm -rf $(VENV) .flowlogs
