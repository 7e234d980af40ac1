# One command to set up and run the pipeline, one to set up and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup repro test

$(BIN)/mmaffect: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(BIN)/mmaffect

# dvc starts each stage's cmd (`mmaffect ...`) with the caller's PATH: put the venv first, as
# `source .venv/bin/activate` does for the commands the README shows.
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q
