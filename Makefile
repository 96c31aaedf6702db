# Two commands a fresh machine needs: `make demo` and `make test`. Everything else sets them up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LINTED := rotator tests $(wildcard examples bench scripts)
# Every third-party version comes from the one lock (scripts/lock.py, `make lock`): the suite, the
# demo, the SDK matrix and the image install the same ones.
LOCK   := requirements/lock.txt
# Two stages of one venv: what the worker runs with (`make demo`: the worker and its file store, no
# test tool, no bot SDK, installed from requirements/worker.txt without resolving anything), then
# everything the suite needs (every extra, resolved under the lock).
WORKER_STAMP := $(VENV)/.installed-worker
STAMP        := $(VENV)/.installed
DEV_EXTRAS   := worker,file,vault,aws,v1,v2,unified,test

.PHONY: demo test lint typecheck unit mutants bench image sbom lock template clean

$(WORKER_STAMP): pyproject.toml requirements/worker.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# --no-compile: a demo imports a fraction of what it installs; the rest compiles when first used.
	$(PY) -m pip install --quiet --no-compile --no-deps --requirement requirements/worker.txt
	touch $@

$(STAMP): $(WORKER_STAMP) $(LOCK)
	@# A checkout from before the rename has the project installed as `rotator`: one owner of rotator/.
	$(PY) -m pip uninstall --quiet --yes rotator 2>/dev/null || true
	$(PY) -m pip install --quiet --constraint $(LOCK) --editable '.[$(DEV_EXTRAS)]'
	@# The suite starts the worker and the bots as subprocesses a few thousand times: each must find
	@# its dependencies' bytecode ready (the worker stage installs with --no-compile, and an
	@# environment with PYTHONDONTWRITEBYTECODE set never writes any), or it compiles them from source
	@# every time.
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null
	touch $@

.venv: $(STAMP)

# The checkout's sources on the worker's dependencies (the project itself is installed by `make .venv`).
demo: $(WORKER_STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m rotator demo

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
	@# The checkout's own bytecode, for the same reason (cheap: only changed files are compiled).
	$(PY) -m compileall -q -j 0 rotator tests $(wildcard examples) >/dev/null
	@# Bytecode is written (an empty PYTHONDONTWRITEBYTECODE turns it off): pytest caches its rewritten
	@# test modules, and the worker's subprocesses their imports, instead of compiling them each time.
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 1 $(PYTEST_ARGS)

# The edit loop (well under a minute): the tests that start no server (tests/unit, tests/static),
# without the slow scenarios. `make test` runs everything, tests/integration and tests/contract included.
unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/static -m 'not slow' $(PYTEST_ARGS)

# Mutation checking (tests/README.md): each curated break of a safety line in scripts/mutants.toml is
# applied in place, the tests that guard it run, the file is restored; every mutant must be caught.
# A few minutes, and it edits rotator/, so it is not part of `make test`. MUTANTS=lease reap: only
# the mutants whose id starts with one of these.
mutants: $(STAMP)
	$(PY) scripts/mutants.py $(MUTANTS)

bench: $(STAMP)
	$(PY) bench/run.py

# The container image: Docker when its daemon answers, else podman (scripts/build-image says how,
# and builds a Debian base with mmdebstrap when python:3.11-slim-bookworm cannot be pulled).
# PYTHON_IMAGE=... picks the base, IMAGE=... the name (default rotator:<__version__>).
image:
	scripts/build-image

# The image's SBOM (CycloneDX JSON, written into the image at build time: every Debian and Python
# package in it, with versions), copied out to build/sbom.cdx.json.
sbom:
	scripts/build-image --sbom build/sbom.cdx.json

# Re-resolves every dependency range of pyproject.toml and rewrites requirements/lock.txt and
# requirements/image.txt (tests/static/test_lock.py fails while they are stale); then reinstall.
lock: $(STAMP)
	$(PY) scripts/lock.py
	$(MAKE) $(STAMP)

# Renders the chart offline with the engine the tests use (helm-python-sdk), with every install-time
# check of the chart: `make template VALUES=my-values.yaml [RELEASE=rotator NAMESPACE=default]`.
template: $(STAMP)
	$(PY) scripts/template.py $(if $(VALUES),--values $(VALUES)) --name $(or $(RELEASE),rotator) --namespace $(or $(NAMESPACE),default)

clean:
	rm -rf $(VENV) .venv-sdk .pytest_cache .mypy_cache .ruff_cache build *.egg-info
