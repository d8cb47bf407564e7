# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'

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
