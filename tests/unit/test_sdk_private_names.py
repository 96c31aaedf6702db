"""The unified wrapper's private SDK names, checked before the first client is built.

rotator/sdk/unified.py reaches into polymarket-client (``_create(validate_credentials=False)`` so the
SDK never mints a nonce-0 key, ``_ensure_wallet_ready``, ``environments._create_environment``,
``Environment._config``). A release that renames one must fail loudly at construction, naming it,
not deep inside a trade, nor by falling back to the behaviour the wrapper exists to prevent. The
"renamed" SDK here is the installed one with those names renamed consistently (so it still works
on its own, as a refactoring release would), under a newer version number.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = pytest.mark.slow  # each test imports the SDK in a fresh process (about 2 s of CPU)


@pytest.fixture(autouse=True)
def _sdk_installed() -> None:
    # Skips locally without the unified extra; fails with CI=true, where it is always installed.
    require(importlib.util.find_spec("polymarket") is not None, "polymarket-client (the unified extra)")


RENAMES = {
    r"\b_create\b": "_build_client",
    r"\b_ensure_wallet_ready\b": "_ensure_wallet",
    r"\b_create_environment\b": "_new_environment",
}

#: Builds a wrapper the way a bot does, against a port nothing listens on: the check must refuse it
#: before any request (so a renamed SDK never reaches the CLOB), and before the store is read.
PROGRAM = textwrap.dedent(
    """
    import json
    from rotator.errors import ConfigError
    from rotator.sdk.unified import RotatingSecureClient, check_sdk, local_environment

    KEY = "0x" + "11" * 32  # a throwaway wallet key: nothing is signed with it

    class NoStore:  # the check comes first: nothing may read it
        def subscribe(self, callback):
            raise AssertionError("the store was used before the SDK was checked")

    out = {}
    for name, attempt in (
        ("check", lambda: check_sdk()),
        ("environment", lambda: local_environment("http://127.0.0.1:9")),
        ("client", lambda: RotatingSecureClient(NoStore(), host="http://127.0.0.1:9", private_key=KEY)),
    ):
        try:
            attempt()
            out[name] = "ok"
        except ConfigError as exc:
            out[name] = str(exc)
        except AssertionError as exc:
            out[name] = "reached: " + str(exc)
    print(json.dumps(out))
    """
)


def fake_sdk(tmp_path: Path, version: str, renames: dict[str, str]) -> Path:
    """A copy of the installed polymarket-client under ``version``, with ``renames`` applied."""
    import polymarket

    src = Path(polymarket.__file__).parent
    root = tmp_path / "site"
    pkg = root / "polymarket"
    shutil.copytree(src, pkg)  # with the bytecode (and the mtimes it checks): edited files recompile
    for path in pkg.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern, new in renames.items():
            text = re.sub(pattern, new, text)
        path.write_text(text, encoding="utf-8")
    meta = root / f"polymarket_client-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: polymarket-client\nVersion: {version}\n")
    return root


def run(site: Path) -> dict[str, str]:
    import json

    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_the_installed_sdk_has_every_private_name(tmp_path: Path) -> None:
    # The same harness on an unchanged copy: what fails below fails for the renames alone.
    out = run(fake_sdk(tmp_path, "0.14.99", {}))
    assert out["check"] == "ok" and out["environment"] == "ok"
    assert out["client"] == "reached: the store was used before the SDK was checked"


def test_a_release_that_renamed_them_fails_at_construction_naming_each(tmp_path: Path) -> None:
    out = run(fake_sdk(tmp_path, "0.15.0", RENAMES))
    for attempt in ("check", "environment", "client"):
        message = out[attempt]
        assert message.startswith("polymarket-client 0.15.0 lacks what the rotating wrapper uses:"), message
        for name in (
            "polymarket.environments._create_environment",
            "polymarket.SecureClient._create",
            "polymarket.SecureClient._ensure_wallet_ready",
            "polymarket.AsyncSecureClient._create",
            "polymarket.AsyncSecureClient._ensure_wallet_ready",
        ):
            assert name in message, (name, message)
        assert "pip install 'polymarket-rotator[unified]'" in message


@pytest.mark.parametrize(
    ("renames", "named"),
    [
        (
            {r"\bvalidate_credentials\b": "check_credentials"},
            "polymarket.SecureClient._create(validate_credentials=...)",
        ),
        ({r"\b_config\b": "_settings"}, "polymarket.environments.Environment._config"),
    ],
)
def test_each_name_alone_is_checked(tmp_path: Path, renames: dict[str, str], named: str) -> None:
    out = run(fake_sdk(tmp_path, "0.15.1", renames))
    assert named in out["check"], out
    assert out["client"] == out["check"]
