# The two commands of the README: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest webtest web web-if-node bench schema clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@$(MAKE) --no-print-directory web-if-node
	$(BIN)/creditline migrate
	$(BIN)/creditline demo
	@echo "GraphiQL: $${CREDITLINE_PUBLIC_URL:-http://127.0.0.1:8000}/graphql"
	$(BIN)/creditline serve

# The My Credit page (web/, README "My Credit page"): built into web/dist when a source, package.json or the
# lockfile is newer than the last build; node_modules again when the lockfile changed. Needs Node.js 20+.
NODE_OK := node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null
WEB_SOURCES := $(shell find web -path web/node_modules -prune -o -path web/dist -prune -o -type f -print 2>/dev/null)
WEB_BUILT := web/dist/.built

web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	npm --prefix web ci --no-audit --no-fund
	touch $@

$(WEB_BUILT): web/node_modules/.package-lock.json $(WEB_SOURCES)
	npm --prefix web run build
	touch $@

web:
	@$(NODE_OK) && command -v npm >/dev/null || { echo "the My Credit page needs Node.js 20 or newer and npm:" \
		"apt-get install nodejs npm (Debian 13), or https://nodejs.org"; exit 1; }
	@$(MAKE) --no-print-directory $(WEB_BUILT)

# make run without Node.js (or with a build that fails) still serves the API, and says how to get the page.
web-if-node:
	@if $(NODE_OK) && command -v npm >/dev/null; then \
		$(MAKE) --no-print-directory $(WEB_BUILT) || echo "The My Credit page did not build (above); serving the API without it."; \
	else \
		echo "Node.js 20+ and npm not found: serving the API without the My Credit page."; \
		echo "To get the page: apt-get install nodejs npm (or https://nodejs.org), then make run again."; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# One test process per core (pytest-xdist); each makes its own databases and Redis channel. PYTEST_WORKERS=0
# runs the suite in this process. Bytecode is written even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): the tests start hundreds of CLI and server processes, each of which would compile
# every module again.
PYTEST_WORKERS ?= auto
pytest: install
	@$(MAKE) --no-print-directory web-if-node
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# The page's unit tests (Vitest); its browser tests are in pytest (tests/web/), against the build.
# Without Node.js they are skipped, saying so, except where CREDITLINE_REQUIRE_SERVICES=1 (CI) fails instead.
webtest:
	@if $(NODE_OK) && command -v npm >/dev/null; then \
		$(MAKE) --no-print-directory web && npm --prefix web test; \
	elif [ "$${CREDITLINE_REQUIRE_SERVICES:-}" = 1 ]; then \
		echo "make test: the My Credit page's tests need Node.js 20 or newer and npm"; exit 1; \
	else \
		echo "Node.js 20+ and npm not found: the My Credit page's unit tests are skipped (apt-get install nodejs npm)"; \
	fi

test: lint typecheck webtest pytest

# Regenerate the checked-in schema.graphql after changing the schema (a test fails while it is stale).
schema: install
	$(BIN)/python -c "from creditline.graphql import schema_sdl; open('schema.graphql', 'w').write(schema_sdl())"

# Throughput of spendCredits over HTTP against the raw-SQL ceiling; load comes from wrk (Debian package).
bench: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || \
		{ echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) creditline.sqlite3* .mypy_cache .ruff_cache .pytest_cache .import_linter_cache web/dist \
		web/node_modules test-artifacts
