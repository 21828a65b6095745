# `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo demo-tenants demo-api test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,mysql,server,proxy,bench,openfeature,reports]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.codec.demo

demo-tenants: $(STAMP)
	$(BIN)/python -m examples.tenants.demo

demo-api: $(STAMP)
	$(BIN)/python -m examples.api.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers: the suite spends much of its time waiting on servers and subprocesses.
test: lint
	$(BIN)/python -m pytest -n 2

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache cutover-demo.db* cutover-tenants-demo reports
