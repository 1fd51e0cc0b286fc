# The README's commands. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qg-installed

.PHONY: run test bench clean node browser

$(STAMP): pyproject.toml setup.py src/quota_gateway/_fastpath.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

run: $(STAMP)
	$(BIN)/quota-gateway serve $(ARGS)

test: $(STAMP) node browser
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
