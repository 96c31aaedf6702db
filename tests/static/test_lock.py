"""The one lock (requirements/lock.txt, requirements/image.txt; `make lock`): CI fails when it drifts.

* from pyproject.toml: a dependency added, dropped or re-ranged without `make lock` (the lock records
  the digest of the tables it was resolved from), or a locked version outside a declared range;
* from the suite: this test run's own environment holds another version of a locked package, or a
  package the lock does not know (so the suite always proves the versions the image ships);
* inside the lock: the image's part with another version than the whole, or without a hash;
* the install hints of rotator/extras.py: each module's distribution comes with the extra it names.

The image's side (the versions inside the built image) is tests/image/test_image.py.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from rotator.extras import EXTRA_OF
from scripts import lock

#: The lock's platform, as a marker this interpreter is checked against.
PLATFORM = (
    f"python_version == '{lock.ENVIRONMENT['python_version']}' and sys_platform == 'linux'"
    f" and platform_machine == '{lock.ENVIRONMENT['platform_machine']}'"
)
#: Installed alongside the project by the venv itself, not by its requirements.
TOOLING = {"pip", "setuptools", "wheel", lock.PROJECT}


def test_the_lock_matches_pyproject() -> None:
    assert lock.problems() == []


def _copy(tmp_path: Path) -> Path:
    (tmp_path / "requirements").mkdir()
    for rel in (
        "pyproject.toml",
        "requirements/lock.txt",
        "requirements/image.txt",
        "requirements/worker.txt",
    ):
        shutil.copy(lock.ROOT / rel, tmp_path / rel)
    return tmp_path


def test_a_dependency_added_without_relocking_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(
        text.replace('vault = ["hvac>=2.1"]', 'vault = ["hvac>=2.1", "PySocks>=1.7"]')
    )
    found = lock.problems(root)
    assert any("resolved from other dependencies" in p and "make lock" in p for p in found), found
    assert any(p.startswith("PySocks>=1.7 ([vault]) is not in requirements/lock.txt") for p in found), found


def test_a_locked_version_outside_its_range_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    pins = lock.read_pins(root / "requirements" / "lock.txt")
    text = (root / "requirements" / "lock.txt").read_text(encoding="utf-8")
    (root / "requirements" / "lock.txt").write_text(
        text.replace(f"hvac=={pins['hvac']}\n", "hvac==1.0.0\n"), encoding="utf-8"
    )
    found = lock.problems(root)
    assert found == [
        "hvac>=2.1 ([vault]): the lock holds 1.0.0: run `make lock`",
        f"requirements/image.txt has hvac=={pins['hvac']}, lock.txt 1.0.0: run `make lock`",
    ]


def test_the_image_lock_is_a_part_of_the_lock_each_with_a_hash() -> None:
    whole = lock.read_pins(lock.LOCK)
    image = lock.read_pins(lock.IMAGE)
    assert image and set(image) < set(whole)
    assert {n: whole[n] for n in image} == image
    text = lock.IMAGE.read_text(encoding="utf-8")
    assert text.count("--hash=sha256:") == len(image)
    # The worker's own, and none of the suite's tools, nor a bot SDK.
    # tzdata: schedules name IANA zones, and the image has no system zone database.
    assert {
        "py-clob-client",
        "apscheduler",
        "prometheus-client",
        "hvac",
        "boto3",
        "coincurve",
        "tzdata",
    } <= set(image)
    assert not {"pytest", "pip", "setuptools", "moto", "polymarket-client", "py-clob-client-v2"} & set(image)
    # The demo's: the worker's part of the image, without the Vault and AWS clients.
    worker = lock.read_pins(lock.WORKER)
    assert set(worker) < set(image) and {n: whole[n] for n in worker} == worker
    assert {"py-clob-client", "cryptography"} <= set(worker) and not {"hvac", "boto3", "pytest"} & set(worker)


def test_the_suite_runs_on_the_locked_versions() -> None:
    """This environment (`make .venv`: pip install -c requirements/lock.txt) is the lock, exactly, on
    the lock's platform; on another Python, every package both hold has the locked version (its
    markers may ask for a package more or less)."""
    locked = lock.read_pins(lock.LOCK)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed = {n: v for n, v in installed.items() if n not in TOOLING}
    other = {n: (v, locked[n]) for n, v in installed.items() if n in locked and locked[n] != v}
    assert other == {}, f"installed, locked (make .venv, or make lock): {other}"
    if Marker(PLATFORM).evaluate():  # this interpreter is the lock's platform
        assert sorted(set(installed) - set(locked)) == [], "installed but not locked (make lock)"
        assert sorted(set(locked) - set(installed)) == [], "locked but not installed (make .venv)"


@functools.cache
def _owners() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def _locked_metadata() -> dict[str, lock.Locked]:
    pins = lock.read_pins(lock.LOCK)
    return {n: lock.Locked(n, v, tuple(metadata.requires(n) or ()), None) for n, v in pins.items()}


@pytest.mark.parametrize(("module", "extra"), sorted(EXTRA_OF.items()))
def test_each_install_hint_names_the_extra_that_brings_the_module(module: str, extra: str) -> None:
    owners = _owners().get(module, [])
    assert owners, f"{module}: no installed distribution provides it"
    reached = lock.closure(lock.project_requirements(lock.PYPROJECT, [extra]), _locked_metadata())
    assert {canonicalize_name(o) for o in owners} & reached, (module, owners, extra)


def test_check_mode_exits_1_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock.main(["--check"]) == 0
    root = _copy(tmp_path)
    (root / "requirements" / "image.txt").unlink()
    monkeypatch.setattr(lock, "ROOT", root)
    assert lock.main(["--check"]) == 1
    assert capsys.readouterr().err == "lock: requirements/image.txt is missing: run `make lock`\n"
