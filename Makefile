# Two commands a fresh machine needs: `make demo` and `make test`. Everything else sets them up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LINTED := rotator tests $(wildcard examples bench scripts)

.PHONY: demo test lint typecheck unit bench image clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

.venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rotator demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The suite mostly waits (real servers, daemons with real ticks, grace periods), so it runs on more
# workers than the machine has cores: each xdist worker is a process with its own session servers
# (OpenBao, moto, Pushgateway, sandbox) on free ports. TEST_WORKERS=0 runs it in one process, as does
# a plain `pytest tests/...` for one file. The slow scenarios come first (tests/conftest.py) and are
# handed out one test at a time to whichever worker is free (--maxschedchunk 1), so no worker is left
# with a queue of long scenarios at the end while the others wait.
TEST_WORKERS ?= 4
test: lint typecheck
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 1 $(PYTEST_ARGS)

# The edit loop (well under a minute): the tests that start no server (tests/unit, tests/static),
# without the slow scenarios. `make test` runs everything, tests/integration and tests/contract included.
unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/static -m 'not slow' $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run.py

# The container image: Docker when its daemon answers, else podman (scripts/build-image says how,
# and builds a Debian base with mmdebstrap when python:3.11-slim-bookworm cannot be pulled).
# PYTHON_IMAGE=... picks the base, IMAGE=... the name (default rotator:<__version__>).
image:
	scripts/build-image

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
