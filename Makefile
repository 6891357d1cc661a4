# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sequoia-clinic demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benches/bench_tiles.py
	$(BIN)/python benches/bench_encoder.py
	$(BIN)/python benches/bench_precision.py
	$(BIN)/python benches/bench_train.py
	$(BIN)/python benches/bench_cohort.py
	$(BIN)/python benches/bench_start.py

# Static checks, run first by `make test` (and so by CI): lint, formatting, types.
lint: $(STAMP)
	$(BIN)/ruff check sequoia_clinic tests benches
	$(BIN)/ruff format --check sequoia_clinic tests benches
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
