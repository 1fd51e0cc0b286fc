# The README's commands. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qg-installed

.PHONY: run test bench clean node browser web-vendor

$(STAMP): pyproject.toml setup.py src/quota_gateway/_fastpath.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

run: $(STAMP)
	$(BIN)/quota-gateway serve $(ARGS)

# Lint (src/, tests/ and benchmarks/ must stay clean) and types (src/) first, then the tests.
test: $(STAMP) node browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Node.js SDK's tests (clients/node, run by tests/client/test_node_sdk.py) need node and npm.
node:
	@command -v node >/dev/null && command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)

# The web tests drive Debian's headless Chromium through its chromedriver (no browser download).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver fonts-dejavu-core)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf build src/*.egg-info src/quota_gateway/_fastpath.c src/quota_gateway/_fastpath*.so

# The chart and map libraries of the web UI come from npm (web/frontend/package-lock.json) and are
# committed under src/quota_gateway/web/static/vendor with their licences, so a clean clone needs
# no Node to run or test. This target refreshes them.
VENDOR := src/quota_gateway/web/static/vendor
web-vendor:
	cd web/frontend && npm ci --no-audit --no-fund
	cp web/frontend/node_modules/uplot/dist/uPlot.iife.min.js web/frontend/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	cp web/frontend/node_modules/uplot/LICENSE $(VENDOR)/uPlot.LICENSE.txt
	cp web/frontend/node_modules/jsvectormap/dist/jsvectormap.min.js web/frontend/node_modules/jsvectormap/dist/jsvectormap.min.css $(VENDOR)/
	cp web/frontend/node_modules/jsvectormap/dist/maps/world.js $(VENDOR)/jsvectormap-world.js
	cp web/frontend/node_modules/jsvectormap/LICENSE $(VENDOR)/jsvectormap.LICENSE.txt
