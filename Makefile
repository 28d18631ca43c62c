# Quick start: `make up` (the whole stack with synthetic traffic), `make test` (the suite).
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test bench constraints clean

# The tested versions (constraints.txt) of everything pyproject.toml asks for.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,tansu]'
	touch $@

up: $(BIN)/.installed
	$(BIN)/flowlogs up

test: $(BIN)/.installed
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/agent.py

# The newest versions pyproject.toml allows, resolved in a fresh venv, as the next constraints.txt.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip
	.venv-constraints/bin/pip install --quiet -e '.[test,tansu]'
	head -3 constraints.txt > constraints.new
	.venv-constraints/bin/pip freeze --exclude-editable >> constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-constraints

clean:
	rm -rf $(VENV) .flowlogs
