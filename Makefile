# The two commands of the README: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest bench schema clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/creditline migrate
	$(BIN)/creditline demo
	@echo "GraphiQL: http://127.0.0.1:8000/graphql"
	$(BIN)/creditline serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# One test process per core (pytest-xdist); each makes its own databases and Redis channel. PYTEST_WORKERS=0
# runs the suite in this process.
PYTEST_WORKERS ?= auto
pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS)

test: lint typecheck pytest

# Regenerate the checked-in schema.graphql after changing the schema (a test fails while it is stale).
schema: install
	$(BIN)/python -c "from creditline.graphql import schema_sdl; open('schema.graphql', 'w').write(schema_sdl())"

# Throughput of spendCredits over HTTP against the raw-SQL ceiling; load comes from wrk (Debian package).
bench: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || \
		{ echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) creditline.sqlite3* .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
