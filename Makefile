# Every target makes its own virtualenv: nothing depends on what was installed by hand.
PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed

.PHONY: venv demo demo-serve test lint typecheck bench lock clean

# syncd and what it runs with, no more: a cold `make demo` does not wait for the test,
# lint and type-checking toolchain it never uses.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

# The same virtualenv with the dev toolchain added, for tests, lint, types and bench.
$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(RUN_STAMP)
	$(BIN)/syncd demo

# The demo, then its daemon and simulators stay up with the status page until Ctrl-C.
demo-serve: $(RUN_STAMP)
	$(BIN)/syncd demo --serve

lint: $(STAMP)
	$(BIN)/ruff check syncd tests bench
	$(BIN)/ruff format --check syncd tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers: most tests wait on loopback servers, subprocesses and timers, so a second
# worker halves the wall time on two cores (each test has its own ports, temp dirs and
# database schema; every test already passes with both cores busy).
test: lint typecheck
	$(BIN)/pytest -q -rs -n 2

# The container's and the systemd install's dependencies, by version and hash.
lock: $(STAMP)
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --extra fast --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

bench: $(STAMP)
	$(BIN)/python bench/bench_sync.py --leads $(or $(LEADS),100000)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
