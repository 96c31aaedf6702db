"""The built image, run as the chart runs it: uid 10001, read-only root, tmpfs /tmp, no capabilities,
no privilege escalation. What ships: only the virtualenv on the base, nothing writable but /tmp."""

from __future__ import annotations

import json
import re
from importlib import metadata

import pytest
from packaging.utils import canonicalize_name

import rotator
from scripts.lock import IMAGE, read_pins
from tests.image.conftest import ROOT, Built, Engine

#: The first test's setup builds the image (2-3 min cold on a loaded 2-core machine).
pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

#: The image must stay small enough to pull fast on a node (issue 25: under 200 MB). Measured in
#: bench/RESULTS.md, "Container image": 374 MB before the lock and the flattened runtime.
SIZE_BUDGET_MB = 200
#: What a runtime image must not hold: installers, the test runner, and the stray top-level packages
#: some wheels put in site-packages (a `tests` package shadows any other of that name).
ABSENT_MODULES = (
    "pip",
    "setuptools",
    "wheel",
    "pkg_resources",
    "ensurepip",
    "pytest",
    "_pytest",
    "tests",
    "docs",
)
ABSENT_DISTRIBUTIONS = ("pip", "setuptools", "wheel", "pytest", "pluggy", "iniconfig", "pygments")


def test_version_matches_the_package(engine: Engine, image: Built) -> None:
    proc = engine.run(image.ref, ["--version"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert rotator.__version__ in proc.stdout


def test_labels_come_from_the_package_and_the_build(engine: Engine, image: Built) -> None:
    labels = json.loads(engine.inspect(image.ref, "{{json .Config.Labels}}"))
    assert labels["org.opencontainers.image.version"] == rotator.__version__
    assert labels["org.opencontainers.image.title"] == "polymarket-rotator"
    assert labels["org.opencontainers.image.base.name"]  # the PYTHON_IMAGE build arg, in scope
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["org.opencontainers.image.created"])
    config = json.loads(engine.inspect(image.ref, "{{json .Config}}"))
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["rotator"]


@pytest.mark.slow
def test_demo_runs_as_the_chart_runs_the_pod(engine: Engine, image: Built) -> None:
    proc = engine.run(image.ref, ["demo", "--rotations", "2"], timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "demo: OK" in proc.stdout
    assert re.search(r"consumer: \d+ requests, \d+ retried after 401, 0 failed", proc.stdout)


# Walks the image's own filesystem (other mounts are the engine's: /proc, /sys, /dev, /etc/hosts...)
# as uid 10001 and prints every path it may write, and every path of the whole tree.
_WALK = r"""
import json, os
root_dev = os.stat("/").st_dev
writable, paths = [], []
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.lstat(os.path.join(top, d)).st_dev == root_dev]
    for name in dirs + files:
        p = os.path.join(top, name)
        paths.append(p)
        st = os.lstat(p)
        if st.st_dev == root_dev and not os.path.islink(p) and os.access(p, os.W_OK):
            writable.append(p)
print(json.dumps({"uid": os.getuid(), "writable": writable, "paths": paths}))
"""


@pytest.fixture(scope="module")
def tree(engine: Engine, image: Built) -> dict[str, object]:
    # Not read-only here: the question is what the image's permissions allow, not the mount's.
    flags = ("--user", "10001:10001", "--cap-drop", "ALL", "--entrypoint", "python")
    proc = engine.run(image.ref, ["-c", _WALK], flags=flags, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict) and data["uid"] == 10001
    return data


def test_nothing_is_writable_by_the_worker_outside_tmp(tree: dict[str, object]) -> None:
    writable = tree["writable"]
    assert isinstance(writable, list)
    outside = [p for p in writable if p != "/tmp" and not p.startswith("/tmp/")]
    # /var/tmp and the like are world-writable in Debian: the chart's read-only root covers them, but
    # the image must not depend on that.
    assert outside == []


def test_no_source_tree_or_pip_cache_ships(tree: dict[str, object]) -> None:
    paths = tree["paths"]
    assert isinstance(paths, list)
    assert any(p.endswith("/site-packages/rotator/cli.py") for p in paths)  # the walk did see the venv
    banned = re.compile(
        r"^/src(/|$)"  # the build stage's WORKDIR
        r"|/\.git(/|$)|/\.venv(/|$)|/\.pytest_cache(/|$)|/\.mypy_cache(/|$)|/\.ruff_cache(/|$)"
        r"|/\.cache/pip(/|$)|^/root/\.cache(/|$)|^/tmp/pip-|/pip-build-|/pip-req-"
    )
    assert [p for p in paths if banned.search(p)] == []
    # No file of the repository outside the package: the test suite, benchmarks, deploy files,
    # scripts. (Some dependencies ship a top-level `tests` package of their own, py_clob_client's
    # among them: those are theirs, recorded in their RECORD files, and not matched here.)
    ours = {
        str(f.relative_to(ROOT))
        for top in ("tests", "bench", "examples", "deploy", "scripts", ".ci")
        if (ROOT / top).is_dir()
        for f in (ROOT / top).rglob("*")
        if f.is_file() and f.name != "__init__.py" and "__pycache__" not in f.parts
    }
    assert [p for p in paths if any(p.endswith("/" + o) for o in ours)] == []
    top_level = ("pyproject.toml", "Makefile", "Dockerfile", ".dockerignore", "config.example.yaml")
    roots = ("/", "/opt/rotator/", "/opt/rotator/lib/python3.11/site-packages/")
    assert [p for p in paths if any(p == r + name for r in roots for name in top_level)] == []
    # Our own distribution: the code and its metadata, nothing else of the repository.
    site = [p.split("/site-packages/")[1] for p in paths if "/site-packages/" in p]
    assert {p.split("/")[0] for p in site if p.startswith("rotator")} == {
        "rotator",
    }
    assert f"polymarket_rotator-{rotator.__version__}.dist-info" in {p.split("/")[0] for p in site}


def test_image_size_is_within_budget(engine: Engine, image: Built) -> None:
    size_mb = int(engine.inspect(image.ref, "{{.Size}}")) / 1e6
    print(f"image {image.ref}: {size_mb:.0f} MB, built in {image.seconds:.1f} s")
    assert size_mb < SIZE_BUDGET_MB


# Prints what the image's Python can import and which distributions it holds (the venv and the
# base's own site directories), and the executables on PATH.
_INVENTORY = r"""
import importlib.util, json, os, sys
from importlib import metadata
absent = json.loads(sys.argv[1])
sites = ["/opt/rotator/lib/python3.11/site-packages", "/usr/local/lib/python3.11/site-packages",
         "/usr/lib/python3/dist-packages"]
dists = {}
for site in sites:
    for d in metadata.distributions(path=[site]):
        dists.setdefault(d.metadata["Name"], []).append([d.version, site])
path = sorted({n for p in os.environ["PATH"].split(":") if os.path.isdir(p) for n in os.listdir(p)})
print(json.dumps({
    "importable": [m for m in absent if importlib.util.find_spec(m) is not None],
    "dists": dists,
    "path": path,
}))
"""


@pytest.fixture(scope="module")
def inventory(engine: Engine, image: Built) -> dict[str, object]:
    flags = ("--user", "10001:10001", "--cap-drop", "ALL", "--entrypoint", "python")
    proc = engine.run(image.ref, ["-c", _INVENTORY, json.dumps(ABSENT_MODULES)], flags=flags, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    assert "polymarket-rotator" in data["dists"]  # the inventory did see the venv
    return data


def test_no_installer_test_runner_or_stray_package_in_the_runtime(inventory: dict[str, object]) -> None:
    assert inventory["importable"] == []
    dists = inventory["dists"]
    assert isinstance(dists, dict)
    assert [d for d in dists if canonicalize_name(d) in ABSENT_DISTRIBUTIONS] == []
    path = inventory["path"]
    assert isinstance(path, list)
    assert [n for n in path if re.fullmatch(r"pip[0-9.]*|pytest|py\.test|wheel|easy_install.*", n)] == []


def test_the_image_holds_exactly_the_locked_versions_the_suite_ran_with(inventory: dict[str, object]) -> None:
    dists = inventory["dists"]
    assert isinstance(dists, dict)
    venv = {
        canonicalize_name(name): version
        for name, where in dists.items()
        for version, site in where
        if site.startswith("/opt/rotator/")
    }
    assert venv.pop("polymarket-rotator") == rotator.__version__
    locked = read_pins(IMAGE)
    assert venv == locked, "the image's packages are not requirements/image.txt (make lock, make image)"
    # ... and the suite ran with the same: this test's own environment, installed from the lock.
    suite = {name: metadata.version(name) for name in venv}
    assert suite == venv


def test_the_sbom_lists_every_package_in_the_image(
    engine: Engine, image: Built, inventory: dict[str, object]
) -> None:
    flags = ("--user", "10001:10001", "--cap-drop", "ALL", "--entrypoint", "python")
    read = "import sys; sys.stdout.write(open('/opt/rotator/sbom.cdx.json').read())"
    proc = engine.run(image.ref, ["-c", read], flags=flags, timeout=60)
    assert proc.returncode == 0, proc.stderr
    sbom = json.loads(proc.stdout)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    assert sbom["metadata"]["component"]["version"] == rotator.__version__
    purls = {c["purl"] for c in sbom["components"]}
    dists = inventory["dists"]
    assert isinstance(dists, dict)
    python = {f"pkg:pypi/{canonicalize_name(n)}@{v}" for n, where in dists.items() for v, _ in where}
    assert {p for p in purls if p.startswith("pkg:pypi/")} == python
    debs = {p for p in purls if p.startswith("pkg:deb/")}
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in debs)  # the base's packages are listed
    assert not [
        p for p in debs if re.match(r"pkg:deb/debian/python3(\.11)?-(venv|pip-whl|setuptools-whl)@", p)
    ]
