"""Shared fixtures: the CI skip policy, the sandbox CLOB, throwaway wallets.

Servers (OpenBao, moto, Pushgateway) are started once per session on free ports by the fixtures
in ``tests/servers.py``; a missing tool skips locally with a message naming it and fails in CI.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.sandbox import Sandbox, SandboxSettings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytest_plugins = ["tests.servers"]


def _longest_first(item: pytest.Item) -> int:
    if item.get_closest_marker("slow") is not None:
        return 0
    return 1 if any(part in ("integration", "contract") for part in item.path.parts) else 2


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker (``make test`` runs ``-n``): the slow scenarios first, then the other
    tests that start servers, the quick ones last, each group in its usual order. With ``--dist load
    --maxschedchunk 1`` each test goes to whichever worker is free (longest first): the long ones
    spread over the workers at the start and the short ones fill the gaps at the end, instead of one
    worker working through a queue of 30 s scenarios while the others wait. Every worker collects
    the same order (the sort is stable). A run without xdist keeps the files' order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_longest_first)


def _share_tls_contexts() -> None:
    """The tests call ``httpx.get()`` on local http:// servers (metrics, health, Pushgateway) some
    thousands of times; each call builds a client whose TLS context loads the CA bundle, 60 ms of CPU
    that a 2-core CI machine spends on nothing. Here one context per setting serves them all (an
    SSLContext is meant to be shared). Only this test process: the worker's own clients, and any
    call with a client certificate or a context of its own, are left as they are."""
    from httpx._transports import default

    original = default.create_ssl_context
    shared: dict[tuple[object, ...], ssl.SSLContext] = {}

    def create(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if cert is not None or not isinstance(verify, bool):
            return original(verify=verify, cert=cert, trust_env=trust_env)
        key = (verify, trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in shared:
            shared[key] = original(verify=verify, cert=cert, trust_env=trust_env)
        return shared[key]

    default.create_ssl_context = create  # type: ignore[assignment]


_share_tls_contexts()


def require(ok: bool, what: str) -> None:
    """Skip locally when a tool or server is missing; in CI (CI=true) that is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true forbids skipping", pytrace=False)
    pytest.skip(f"{what} is missing")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"tool {name!r} (on PATH)")
    assert path is not None
    return path


class _Everything(logging.Handler):
    """Keeps every in-process log line, formatted both ways, for the leak check."""

    def emit(self, record: logging.LogRecord) -> None:
        from rotator.logs import JsonFormatter, TextFormatter
        from tests.harness import OUTPUTS

        try:
            OUTPUTS.append(JsonFormatter().format(record))
            OUTPUTS.append(TextFormatter().format(record))
        except Exception:  # noqa: BLE001 - a log line that cannot be formatted is not a leak
            OUTPUTS.append(str(record.msg))


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_output() -> Iterator[None]:
    """I6, for the whole suite: no issued secret, passphrase or wallet key in anything any run printed
    or logged (CLI subprocess output is collected by tests.harness, in-process logs by this handler)."""
    from tests.harness import OUTPUTS, SECRETS, find_leaks

    handler = _Everything(level=logging.DEBUG)
    logging.getLogger().addHandler(handler)
    logging.getLogger("rotator").setLevel(logging.DEBUG)
    yield
    logging.getLogger().removeHandler(handler)
    leaks = find_leaks(OUTPUTS, SECRETS)
    assert not leaks, f"secret material found in test output: {leaks}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


_PASSED = pytest.StashKey[bool]()


@pytest.fixture(scope="session", autouse=True)
def _sandboxes_are_known() -> Iterator[None]:
    """Every sandbox started in the session is found by its URL, for the I3 check."""
    from tests.harness import SANDBOXES

    start = Sandbox.start

    def recording(self: Sandbox, host: str = "127.0.0.1", port: int = 0) -> str:
        url = start(self, host, port)
        SANDBOXES[url.rstrip("/")] = self
        return url

    Sandbox.start = recording  # type: ignore[method-assign]
    yield
    Sandbox.start = start  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def every_key_accounted_for(request: pytest.FixtureRequest) -> Iterator[None]:
    """I3 at the end of every integration test that passed: every key live at a sandbox for a
    worker's wallet is current, retiring, pending or recorded in the worker's store. Workers whose
    store cannot be read any more (a test broke it on purpose) are not judged."""
    from tests.harness import SANDBOXES, WORKERS, unaccounted_keys

    WORKERS.clear()
    yield
    if not request.node.stash.get(_PASSED, False) or "integration" not in str(request.node.path):
        return
    problems = []
    for w in WORKERS:
        sb = SANDBOXES.get(w.clob_url.rstrip("/"))
        if sb is None:
            continue
        try:
            orphans = unaccounted_keys(w, sb)
        except Exception:  # noqa: BLE001, S112 - a store the test broke on purpose: nothing to judge
            continue
        if orphans:
            problems.append(f"{w.name} ({w.address}): {sorted(orphans)}")
    WORKERS.clear()
    assert not problems, f"I3: keys live at the CLOB that no state accounts for: {problems}"


def _remember_secrets(sb: Sandbox) -> None:
    from tests.harness import SECRETS

    SECRETS.update(sb.issued_secrets())


def _running_sandbox() -> Iterator[Sandbox]:
    # No rate limit: tests that exercise it start a limited sandbox of their own.
    sb = Sandbox(SandboxSettings(auth_limit=0))
    sb.start()
    yield sb
    _remember_secrets(sb)
    sb.stop()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox CLOB for the session; tests use distinct wallets so they do not interfere."""
    yield from _running_sandbox()


@pytest.fixture
def fresh_sandbox() -> Iterator[Sandbox]:
    """A sandbox of the test's own, for tests that change its switches."""
    yield from _running_sandbox()


@pytest.fixture
def wallet() -> tuple[str, str]:
    """A throwaway wallet: (private key hex, checksummed address)."""
    from eth_account import Account

    from tests.harness import SECRETS

    acct = Account.create()
    SECRETS.update((acct.key.hex(), acct.key.hex().removeprefix("0x")))
    return acct.key.hex(), acct.address
