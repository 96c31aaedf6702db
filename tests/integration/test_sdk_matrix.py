"""The bots' SDK ranges (pyproject.toml's ``v2`` and ``unified`` extras), proven at both ends.

The newest allowed version of each SDK is the lock's (`make lock` resolves the newest release in the
range), and the whole suite runs on it; a release newer than the lock is refused at run time by the
unified wrapper's private-name check (tests/unit/test_sdk_private_names.py) if it renamed what the
wrapper uses. The oldest is proven here: an overlay environment holds the
floor of every range and sees the suite's own environment behind it (a ``.pth`` adds its
site-packages, editable rotator included), so building it installs two wheels, not a venv; it is
kept in ``.venv-sdk/`` and rebuilt only when the lock or a floor changes. The SDK tests then run in
that environment, in a child pytest: the bots on every SDK through ten rotations, the key handover,
the refused fallback, and the private names the unified wrapper uses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from scripts.lock import LOCK, PYPROJECT, ROOT, read_pins

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: The bots' SDKs: pyproject extra -> distribution.
SDK_EXTRAS = {"unified": "polymarket-client", "v2": "py-clob-client-v2"}
OVERLAY = ROOT / ".venv-sdk" / "oldest"
#: The SDK tests, in the overlay (about 30 s): every SDK through ten rotations on the file store, the
#: handover order, the refused fallback, the adapters, and the private-name check on the real SDK.
CHILD_TESTS = (
    "tests/integration/test_consumer_sdks.py::test_bots_on_every_sdk_ride_through_ten_rotations[file]",
    "tests/integration/test_consumer_sdks.py::test_a_new_key_is_in_service_before_the_source_acknowledges_it",
    "tests/integration/test_consumer_sdks.py::"
    "test_a_unified_bot_started_on_a_revoked_key_ends_on_the_published_key_not_a_nonce_0_one",
    "tests/integration/test_consumer_sdks.py::"
    "test_the_sdk_alone_falls_back_to_a_nonce_0_key_which_is_why_the_wrapper_exists",
    "tests/unit/test_consumer_sdk.py",
)


def floors() -> dict[str, str]:
    """distribution -> the lower bound of its range (``>=``), which must be a release."""
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    out = {}
    for extra, dist in SDK_EXTRAS.items():
        (req,) = [Requirement(r) for r in extras[extra] if Requirement(r).name == dist]
        (low,) = [s.version for s in req.specifier if s.operator == ">="]
        out[dist] = low
    return out


def overlay_python() -> Path:
    """The overlay's interpreter, (re)built under a lock when the lock file or the floors changed."""
    wanted = floors()
    digest = hashlib.sha256(
        json.dumps([wanted, LOCK.read_text(encoding="utf-8"), sys.prefix], sort_keys=True).encode()
    ).hexdigest()
    python = OVERLAY / "bin" / "python"
    stamp = OVERLAY / ".stamp"
    OVERLAY.parent.mkdir(exist_ok=True)
    with (OVERLAY.parent / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # xdist workers build it once between them
        if stamp.exists() and stamp.read_text() == digest and python.exists():
            return python
        shutil.rmtree(OVERLAY, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(OVERLAY)], check=True, timeout=120)
        site = Path(
            subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True, timeout=60,
            ).stdout.strip()
        )  # fmt: skip
        # Behind the overlay's own site-packages: the suite's, with its .pth files (editable rotator).
        suite_site = sysconfig.get_paths()["purelib"]
        (site / "_suite.pth").write_text(f"import site; site.addsitedir({suite_site!r})\n", encoding="utf-8")
        pins = [f"{dist}=={version}" for dist, version in wanted.items()]
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", *pins],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        stamp.write_text(digest)
    return python


@pytest.fixture(scope="module")
def oldest() -> Path:
    return overlay_python()


def test_the_floors_are_releases_at_or_below_the_locked_newest() -> None:
    locked = read_pins(LOCK)
    for dist, low in floors().items():
        assert Version(low) <= Version(locked[dist]), (dist, low, locked[dist])
    # At least one range spans two releases today, or this file would prove nothing the suite does not.
    assert any(Version(low) < Version(locked[d]) for d, low in floors().items())


def test_the_oldest_allowed_sdks_pass_the_sdk_tests(oldest: Path) -> None:
    versions = subprocess.run(
        [str(oldest), "-c", "import json, importlib.metadata as m; "
         f"print(json.dumps({{d: m.version(d) for d in {sorted(SDK_EXTRAS.values())!r}}}))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    got = {d: Version(v) for d, v in json.loads(versions.stdout).items()}
    assert got == {d: Version(v) for d, v in floors().items()}
    # The private names the unified wrapper uses are there at the floor (else it refuses to build).
    check = subprocess.run(
        [str(oldest), "-c", "from rotator.sdk.unified import check_sdk; print(check_sdk())"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-2000:]
    assert Version(check.stdout.strip()) == got["polymarket-client"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    pytest_args = ["-q", "-p", "no:cacheprovider", "-n", "0", "-o", "addopts=", *CHILD_TESTS]
    proc = subprocess.run(
        [str(oldest), "-m", "pytest", *pytest_args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and " skipped" not in tail and " failed" not in tail, tail
