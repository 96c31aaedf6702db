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

test: lint typecheck
	$(PY) -m pytest -q $(PYTEST_ARGS)

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
