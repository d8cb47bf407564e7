# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The package is installed editable, so only a change to pyproject.toml (dependencies,
# entry points) needs a new install: each install leaves a stamp in the venv, newer than
# pyproject.toml, and `make run` with nothing changed starts at once, offline too.
install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed

## make run: the daemon on feeds.opml, SQLite in data/, output in public/, served on :8080
run: install
	$(BIN)/aggregator run

## make test: installs test dependencies and runs the whole suite
test: install-test
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m bench

lint: install-test
	$(BIN)/ruff check aggregator tests bench

clean:
	rm -rf $(VENV) data public .pytest_cache *.egg-info
