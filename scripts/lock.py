"""The one lock: every third-party version the suite runs against and the image ships (``make lock``).

    python scripts/lock.py           # resolve pyproject.toml afresh, write requirements/*.txt
    python scripts/lock.py --check   # exit 1, naming what to do, when they do not match pyproject.toml

One resolution of every extra together (the worker's, the stores', the bots' SDKs, the suite's), by
pip itself (``pip install --dry-run --report``), so the image and the suite cannot settle on
different versions: polymarket-client caps eth-utils below 6, and that cap holds for the worker too.
It writes three files from that one resolution:

* ``requirements/lock.txt``: ``name==version`` for every package: the constraints ``make .venv``,
  the SDK matrix and a bot's test install use (``pip install -c``);
* ``requirements/image.txt``: the image's part of it (what ``polymarket-rotator[worker,vault,aws]``
  needs), each with the sha256 of the wheel pip chose, installed with ``--require-hashes --no-deps``;
* ``requirements/worker.txt``: the part ``polymarket-rotator[worker]`` needs, which ``make demo``
  installs with ``--no-deps`` (no resolution: a third of the time), pins only, so it installs on
  any Python the project supports.

Both carry the digest of the dependency tables they were resolved from; tests/static/test_lock.py
fails when pyproject.toml's dependencies no longer match it, when a locked version stops satisfying
a declared range, and when the suite's environment holds another version than the lock.

Resolved for CPython 3.11 on Linux x86_64, the image's platform and CI's: on another platform the
constraints still hold, and the image's hashes are those of the x86_64 wheels.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "lock.txt"
IMAGE = ROOT / "requirements" / "image.txt"
PROJECT = "polymarket-rotator"
#: What the image installs: the worker and every store it can publish to.
IMAGE_EXTRAS = ("worker", "vault", "aws")
#: What the demo needs: the worker and its file store.
WORKER_EXTRAS = ("worker",)
WORKER = ROOT / "requirements" / "worker.txt"
#: The platform the lock is resolved for (pip resolves for the interpreter that runs it).
ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
#: Declared dependencies the image leaves out, each with why: nothing imports them at run time.
IMAGE_EXCLUDED: Mapping[str, str] = {
    # py-order-utils and poly-eip712-structs (py-clob-client's) list pytest among their runtime
    # requirements; it drags in pygments, pluggy and iniconfig, and is a test runner in a worker image.
    "pytest": "declared by py-order-utils and poly-eip712-structs, imported by neither at run time",
}


def inputs_digest(pyproject: Path = PYPROJECT) -> str:
    """sha256 of what the resolution depends on: requires-python and every dependency table."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "image-extras": IMAGE_EXTRAS,
        "worker-extras": WORKER_EXTRAS,
        "image-excluded": sorted(IMAGE_EXCLUDED),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def extras(pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return sorted(project.get("optional-dependencies", {}))


@dataclass(frozen=True)
class Locked:
    name: str  # canonical
    version: str
    requires: tuple[str, ...]  # Requires-Dist, markers included
    sha256: str | None  # of the archive pip chose, when the index gave one


def resolve(root: Path = ROOT) -> list[Locked]:
    """Every package pip installs for the project with all its extras, on a clean slate (the index's
    newest versions that satisfy every range together)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        target = f"{root}[{','.join(extras(root / 'pyproject.toml'))}]"
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed"]
        subprocess.run([*pip, "--report", str(report), target], check=True)
        data = json.loads(report.read_text(encoding="utf-8"))
    out = []
    for item in data["install"]:
        meta = item["metadata"]
        name = canonicalize_name(meta["name"])
        if name == PROJECT:
            continue
        info = item.get("download_info", {})
        sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        url = info.get("url", "")
        if sha is None and url.startswith("file://"):  # a local mirror's link without a hash fragment
            sha = hashlib.sha256(Path(urllib.parse.unquote(url[7:])).read_bytes()).hexdigest()
        out.append(Locked(name, meta["version"], tuple(meta.get("requires_dist", [])), sha))
    return sorted(out, key=lambda p: p.name)


def applies(req: Requirement, extra: str) -> bool:
    return req.marker is None or req.marker.evaluate({**ENVIRONMENT, "extra": extra})


def closure(
    roots: Iterable[Requirement], locked: Mapping[str, Locked], excluded: Iterable[str] = ()
) -> set[str]:
    """The locked packages ``roots`` need, following each one's requirements (with their extras)."""
    skip = {canonicalize_name(n) for n in excluded}
    seen: set[str] = set()
    todo = [(r, "") for r in roots]
    while todo:
        req, extra = todo.pop()
        if not applies(req, extra):
            continue
        name = canonicalize_name(req.name)
        if name in skip:
            continue
        pkg = locked.get(name)
        if pkg is None:
            raise SystemExit(f"lock: {req} is needed but was not resolved")
        first = name not in seen
        seen.add(name)
        for wanted in ([""] if first else []) + sorted(req.extras):
            todo.extend((Requirement(r), wanted) for r in pkg.requires)
    return seen


def project_requirements(pyproject: Path, wanted: Iterable[str]) -> list[Requirement]:
    """The project's core requirements and those of the ``wanted`` extras."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in wanted:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def header(digest: str, what: str) -> str:
    return (
        f"# {what}\n"
        "# Written by `make lock` (scripts/lock.py) from pyproject.toml; do not edit by hand.\n"
        "# Resolved for CPython 3.11 on Linux x86_64 (the image's and CI's platform).\n"
        f"# inputs: {digest}\n"
    )


def write(locked: list[Locked], root: Path = ROOT) -> None:
    by_name = {p.name: p for p in locked}
    digest = inputs_digest(root / "pyproject.toml")
    image = closure(project_requirements(root / "pyproject.toml", IMAGE_EXTRAS), by_name, IMAGE_EXCLUDED)
    worker = closure(project_requirements(root / "pyproject.toml", WORKER_EXTRAS), by_name, IMAGE_EXCLUDED)
    lock = header(digest, "Every version the suite runs against and the image ships.")
    lock += "".join(f"{p.name}=={p.version}\n" for p in locked)
    img = header(digest, "The image's packages: polymarket-rotator[worker,vault,aws], hash-checked.")
    img += "".join(f"# left out: {n}: {why}\n" for n, why in IMAGE_EXCLUDED.items())
    for p in locked:
        if p.name not in image:
            continue
        if p.sha256 is None:
            raise SystemExit(f"lock: the index gave no sha256 for {p.name} {p.version}")
        img += f"{p.name}=={p.version} \\\n    --hash=sha256:{p.sha256}\n"
    work = header(digest, "The worker's packages (polymarket-rotator[worker]), for `make demo`: --no-deps.")
    work += "".join(f"# left out: {n}: {why}\n" for n, why in IMAGE_EXCLUDED.items())
    work += "".join(f"{p.name}=={p.version}\n" for p in locked if p.name in worker)
    (root / "requirements").mkdir(exist_ok=True)
    (root / "requirements" / "worker.txt").write_text(work, encoding="utf-8")
    (root / "requirements" / "lock.txt").write_text(lock, encoding="utf-8")
    (root / "requirements" / "image.txt").write_text(img, encoding="utf-8")


def read_pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file this script wrote."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("--"):
            continue
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def read_digest(path: Path) -> str | None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# inputs: "):
            return line.removeprefix("# inputs: ").strip()
    return None


def problems(root: Path = ROOT) -> list[str]:
    """What makes the lock files disagree with pyproject.toml or with each other (empty: none)."""
    pyproject = root / "pyproject.toml"
    out = []
    parts = ("image.txt", "worker.txt")
    for path in [root / "requirements" / name for name in ("lock.txt", *parts)]:
        if not path.exists():
            return [f"{path.relative_to(root)} is missing: run `make lock`"]
        if read_digest(path) != inputs_digest(pyproject):
            out.append(
                f"{path.relative_to(root)} was resolved from other dependencies than pyproject.toml "
                "declares now: run `make lock`"
            )
    lock = read_pins(root / "requirements" / "lock.txt")
    for extra in ["", *extras(pyproject)]:
        for req in project_requirements(pyproject, [extra] if extra else []):
            if not applies(req, ""):
                continue
            have = lock.get(canonicalize_name(req.name))
            where = f"[{extra}]" if extra else "dependencies"
            if have is None:
                out.append(f"{req} ({where}) is not in requirements/lock.txt: run `make lock`")
            elif not req.specifier.contains(have, prereleases=True):
                out.append(f"{req} ({where}): the lock holds {have}: run `make lock`")
    for part in parts:
        for name, version in read_pins(root / "requirements" / part).items():
            if lock.get(name) != version:
                out.append(
                    f"requirements/{part} has {name}=={version}, lock.txt {lock.get(name)}: run `make lock`"
                )
    return out


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = problems(ROOT)
        for p in found:
            print(f"lock: {p}", file=sys.stderr)
        return 1 if found else 0
    if argv:
        print("usage: scripts/lock.py [--check]", file=sys.stderr)
        return 2
    write(resolve())
    print(f"lock: wrote {LOCK.relative_to(ROOT)}, {IMAGE.relative_to(ROOT)} and {WORKER.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
