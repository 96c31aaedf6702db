"""Issue 24: the CLOB through an egress proxy, and the CLOB's edge refusing this worker's address.

Real proxies (tinyproxy for HTTP CONNECT, microsocks for SOCKS5, both asking for a password) leave
from 127.0.0.3; the sandbox's edge refuses 127.0.0.1, the worker's own address, with Cloudflare's
403 page. So in the proxy scenarios a single request that went direct would fail, and none did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.config import load_settings
from rotator.runtime import Runtime
from rotator.sandbox import Sandbox, SandboxSettings
from tests.harness import OUTPUTS, SECRETS, Worker
from tests.servers import EgressProxy

DIRECT = "127.0.0.1/32"


class ProxiedWorker(Worker):
    """A worker whose CLOB traffic goes through ``proxy`` (None: direct), its password in the env."""

    proxy: EgressProxy | None = None
    proxy_password: str | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.proxy_password is not None:
            env["T_PROXY_PASSWORD"] = self.proxy_password
        return env


def proxied(
    tmp: Path, sb: Sandbox, wallet: tuple[str, str], proxy: EgressProxy | None, password: str | None = None
) -> ProxiedWorker:
    w = ProxiedWorker(tmp, sb.url, *wallet)
    w.proxy = proxy
    if proxy is not None:
        w.proxy_password = password if password is not None else proxy.password
        SECRETS.update((proxy.password, w.proxy_password))
        clob = w.config()["clob"]
        clob["proxy"] = {"url": proxy.url, "username": proxy.username, "password_env": "T_PROXY_PASSWORD"}
        w.extra = {"clob": clob}
        w.write_config()
    return w


@pytest.fixture
def edge_sandbox() -> Iterator[Sandbox]:
    """A sandbox whose edge refuses the worker's own address: only a proxy gets through."""
    sb = Sandbox(SandboxSettings(auth_limit=0, edge_block=(DIRECT,)))
    sb.start()
    yield sb
    SECRETS.update(sb.issued_secrets())
    sb.stop()


def _counts(sb: Sandbox, method: str, path: str, status: int) -> int:
    return sb.request_counts()[(method, path, status)]


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_bootstrap_rotation_and_revocation_go_through_the_proxy(
    kind: str,
    request: pytest.FixtureRequest,
    edge_sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
) -> None:
    proxy: EgressProxy = request.getfixturevalue("http_proxy" if kind == "http" else "socks_proxy")
    tunnels = proxy.tunnels()
    w = proxied(tmp_path, edge_sandbox, wallet, proxy)
    first = w.rotate()
    assert "mm1: rotated" in first.stdout
    w.rotate("--force")
    time.sleep(2.5)  # grace (2 s) over
    last = w.rotate()
    assert "revoked=1" in last.stdout, last.stdout
    # Every request went through the proxy: one direct request would have met the edge's 403.
    assert edge_sandbox.edge_refusals() == 0
    assert _counts(edge_sandbox, "POST", "/auth/api-key", 200) == 2
    assert _counts(edge_sandbox, "DELETE", "/auth/api-key", 200) == 1
    assert proxy.tunnels() >= tunnels + 3  # at least one per run (each run a process of its own)
    state = w.state()
    assert state.current is not None and state.current.nonce == 1 and state.retiring == ()


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_wrong_proxy_password_fails_the_pass_naming_the_proxy_never_the_password(
    kind: str,
    request: pytest.FixtureRequest,
    edge_sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
) -> None:
    proxy: EgressProxy = request.getfixturevalue("http_proxy" if kind == "http" else "socks_proxy")
    wrong = "wrong-" + proxy.password[::-1]
    w = proxied(tmp_path, edge_sandbox, wallet, proxy, password=wrong)
    tunnels = proxy.tunnels()
    started = time.monotonic()
    proc = w.run("rotate", "--all")
    took = time.monotonic() - started
    print(f"{kind}: wrong password failed the pass in {took:.2f}s")  # shown with -rP
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("mm1:"))
    assert "failed" in line and f"via proxy {kind}://{proxy.username}@127.0.0.1:{proxy.port}" in line
    assert "refused the credentials" in line
    everything = proc.stdout + proc.stderr
    assert wrong not in everything and proxy.password not in everything
    # No retry storm through the proxy: a refusal of the credentials is not retried (the clock
    # check and the bootstrap's derive asked once each; microsocks logs none of them).
    assert proxy.tunnels() - tunnels <= 2
    assert sum(edge_sandbox.request_counts().values()) == 0  # nothing reached the CLOB at all
    assert w.state().current is None


def test_an_edge_block_fails_the_pass_with_blocked_in_seconds_without_a_retry_storm(
    edge_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = proxied(tmp_path, edge_sandbox, wallet, None)
    started = time.monotonic()
    proc = w.run("rotate", "--all")
    took = time.monotonic() - started
    print(f"edge block: the pass failed in {took:.2f}s")  # shown with -rP
    assert proc.returncode == 1
    line = next(x for x in proc.stdout.splitlines() if x.startswith("mm1:"))
    assert "failed" in line and "blocked by the CLOB's edge" in line, line
    assert "403 Cloudflare block page" in line and "clob.proxy" in line
    # Three identical answers make a block (the clock check's); the derive after it needs the
    # clock to sign, so it fails on the same block without a request; nothing after that.
    assert edge_sandbox.edge_refusals() == 3
    assert w.state().current is None and w.state().pending is None


def _runtime(sb: Sandbox, tmp: Path, wallet: tuple[str, str], proxy: EgressProxy | None) -> Runtime:
    from rotator.stores.file import generate_file_key

    SECRETS.update((wallet[0], wallet[0].removeprefix("0x")))
    names = ("mm1", "mm2", "mm3")
    clob: dict[str, Any] = {
        "host": sb.url,
        "verify_timeout": "10s",
        "retry": {"attempts": 6, "base": 0.05, "cap": 0.2, "deadline": "20s"},
    }
    env = {"T_WALLET_KEY": wallet[0], "T_FILE_KEY": generate_file_key()}
    if proxy is not None:
        clob["proxy"] = {"url": proxy.url, "username": proxy.username, "password_env": "T_PX"}
        env["T_PX"] = proxy.password
        SECRETS.add(proxy.password)
    settings = load_settings(
        None,
        data={
            "clob": clob,
            "store": {"backend": "file", "file": {"path": str(tmp / "keys.enc"), "key_env": "T_FILE_KEY"}},
            "credentials": [
                {
                    "name": n,
                    "signer": {"source": "env", "env": "T_WALLET_KEY"},
                    "path": f"p/{n}",
                    "rotate_every": "1h",
                    "grace": "1m",
                    "start_nonce": 10 * i,
                }
                for i, n in enumerate(names)
            ],
        },
        env=env,
    )
    rt = Runtime(settings, env)
    rt.validate()
    return rt


def test_the_blocked_metric_follows_the_edge_and_a_proxy_clears_it(
    edge_sandbox: Sandbox, http_proxy: EgressProxy, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    """A fleet on a blocked egress: the first pass meets three identical 403 pages, the others fail
    on the block without a request; every credential's rotator_clob_blocked is 1. With clob.proxy,
    the same credentials rotate, and the gauge goes back to 0."""
    rt = _runtime(edge_sandbox, tmp_path, wallet, None)
    try:
        creds = rt.settings.credentials
        results = [rt.rotator.run_pass(rt.ref(c), rt.signer(c), rt.policy(c)) for c in creds]
        reg = rt.metrics.registry
        assert [r.outcome for r in results] == ["failed"] * 3
        assert all("blocked by the CLOB's edge" in (r.error or "") for r in results)
        assert edge_sandbox.edge_refusals() == 3  # the second and third asked nothing
        for c in rt.settings.credentials:
            assert reg.get_sample_value("rotator_clob_blocked", {"credential": c.name}) == 1
    finally:
        rt.close()
    rt = _runtime(edge_sandbox, tmp_path, wallet, http_proxy)
    try:
        for c in rt.settings.credentials:
            assert rt.rotator.run_pass(rt.ref(c), rt.signer(c), rt.policy(c)).outcome == "rotated"
            assert rt.metrics.registry.get_sample_value("rotator_clob_blocked", {"credential": c.name}) == 0
        assert edge_sandbox.edge_refusals() == 3
    finally:
        rt.close()
    _forget(edge_sandbox, wallet[1])


def _forget(sb: Sandbox, address: str) -> None:
    """This test's worker is no harness Worker: revoke its keys so the I3 check has nothing to judge."""
    for r in sb.keys(address):
        if r.revoked_at is None:
            sb.invalidate(r.api_key)


def test_http_proxy_variables_are_ignored_and_said_so_once(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = proxied(tmp_path, sandbox, wallet, None)
    env = {**w.env(), "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "localhost"}
    import subprocess

    proc = subprocess.run(w.argv("check"), env=env, capture_output=True, text=True, timeout=60)
    OUTPUTS.extend((proc.stdout, proc.stderr))
    warned = [x for x in proc.stdout.splitlines() if "HTTPS_PROXY" in x]
    assert len(warned) == 1 and "ignored" in warned[0] and "clob.proxy" in warned[0], proc.stdout
    # The CLOB was reached directly, not through the (dead) proxy the variable names.
    assert "ok    clob" in proc.stdout
