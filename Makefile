# postkeep: `make run` starts a development instance, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV := var/dev

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "postkeep needs Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  { echo "installing python3-venv"; \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
	    sh -c 'apt-get update -qq && apt-get install -y -qq python3-venv' ; }
	@pkg-config --exists icu-i18n 2>/dev/null && command -v g++ >/dev/null || \
	  { echo "installing libicu-dev, pkg-config and g++ (PyICU builds against ICU)"; \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
	    sh -c 'apt-get update -qq && apt-get install -y -qq libicu-dev pkg-config g++' ; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

run: install
	@if [ ! -f $(DEV)/postkeep.toml ]; then \
	  $(BIN)/postkeep init $(DEV) --hostname localhost --domain example.test \
	    $$( [ "$$(id -u)" = 0 ] && echo "--user root" ) && \
	  $(BIN)/postkeep --dir $(DEV) user add alice@example.test; \
	fi
	$(BIN)/postkeep --dir $(DEV) serve

# ruff, then the layering contracts of pyproject.toml [tool.importlinter] (docs/architecture.md)
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# The gssapi extra builds from source against what test-deps.sh installs (libkrb5-dev, gcc).
# Two test processes (pytest-xdist), each taking whole files (module fixtures are made once):
# much of the suite waits on sockets, subprocesses and deadlines.
test: install lint
	@url=$$(bash scripts/test-deps.sh | tail -n 1) && \
	  { $(BIN)/python -c 'import gssapi' 2>/dev/null || $(BIN)/pip install -q -e '.[gssapi]'; } && \
	  POSTKEEP_TEST_PG_URL="$$url" $(BIN)/pytest -n 2 --dist loadfile

bench: install
	$(BIN)/python bench/smtp_ingest/run.py
	$(BIN)/python bench/imap/run.py
	$(BIN)/python bench/footprint/run.py

clean:
	rm -rf $(VENV) var build src/*.egg-info .pytest_cache .ruff_cache .hypothesis
