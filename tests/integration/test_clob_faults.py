"""Issue 4: the CLOB's failure modes, injected through the sandbox's switches, over real HTTP.

Each test asserts the invariants (the published key works, nothing is orphaned) and, where it
matters, that the worker stayed inside its request budget.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rotator.sandbox import Sandbox, SandboxSettings
from tests.harness import OUTPUTS, SECRETS, Worker, sdk_works, wait_for
from tests.integration.test_rotation_e2e import assert_consistent

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def worker(fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    w = Worker(tmp_path, fresh_sandbox.url, *wallet)
    w.rotate()
    return w


def count(sb: Sandbox, method: str, path: str, status: int) -> int:
    return sb.request_counts()[(method, path, status)]


def test_429_storm_with_retry_after_is_waited_out(worker: Worker, fresh_sandbox: Sandbox) -> None:
    body = json.dumps({"error": "Too Many Requests", "retry_after_seconds": 1})
    fresh_sandbox.inject("POST", "/auth/api-key", 429, body, {"Retry-After": "1"}, times=3)
    started = time.monotonic()
    worker.rotate("--force")
    elapsed = time.monotonic() - started
    assert count(fresh_sandbox, "POST", "/auth/api-key", 429) == 3
    assert elapsed >= 3.0, "the worker retried before the server's Retry-After"
    assert worker.published().nonce == 1  # type: ignore[union-attr]
    assert_consistent(worker, fresh_sandbox)


def test_429_without_retry_after_backs_off_and_succeeds(worker: Worker, fresh_sandbox: Sandbox) -> None:
    fresh_sandbox.inject("POST", "/auth/api-key", 429, '{"error":"Too Many Requests"}', times=4)
    worker.rotate("--force")
    assert count(fresh_sandbox, "POST", "/auth/api-key", 429) == 4
    assert (
        count(fresh_sandbox, "POST", "/auth/api-key", 200) == 2
    )  # bootstrap + this rotation: no blind re-create
    assert_consistent(worker, fresh_sandbox)


def test_endless_429_fails_the_pass_cleanly(worker: Worker, fresh_sandbox: Sandbox) -> None:
    before = worker.published()
    fresh_sandbox.inject("POST", "/auth/api-key", 429, '{"error":"Too Many Requests"}', times=100)
    proc = worker.run("rotate", "--all", "--force")
    assert proc.returncode == 1
    assert "rate limited (429)" in proc.stdout
    assert count(fresh_sandbox, "POST", "/auth/api-key", 429) <= 6  # retries are capped, never a tight loop
    assert worker.published() == before and sdk_works(fresh_sandbox.url, worker.private_key, before)  # type: ignore[arg-type]
    fresh_sandbox.clear_faults()
    worker.rotate()  # the recorded intent is picked up
    assert_consistent(worker, fresh_sandbox)


@pytest.mark.parametrize(
    ("status", "body", "ctype", "times"),
    [
        (503, '{"error":"service unavailable"}', "application/json", 4),
        (425, '{"error":"service not ready"}', "application/json", 4),
        # Two Cloudflare pages in a row pass (a challenge that clears); three are an edge block,
        # its own failure (issue 24, tests/integration/test_clob_egress.py).
        (403, "<html><title>Attention Required! | Cloudflare</title></html>", "text/html", 2),
    ],
    ids=["5xx", "425-engine-restart", "cloudflare-403-passing"],
)
def test_transient_bursts_during_verify_are_waited_out(
    worker: Worker, fresh_sandbox: Sandbox, status: int, body: str, ctype: str, times: int
) -> None:
    fresh_sandbox.inject("GET", "/balance-allowance", status, body, {"Content-Type": ctype}, times=times)
    worker.rotate("--force")
    assert count(fresh_sandbox, "GET", "/balance-allowance", status) == times
    assert worker.published().nonce == 1  # type: ignore[union-attr]
    assert_consistent(worker, fresh_sandbox)


def test_lost_create_answer_is_recovered_by_derive(worker: Worker, fresh_sandbox: Sandbox) -> None:
    fresh_sandbox.inject("POST", "/auth/api-key", 502, '{"error":"bad gateway"}', after=True)
    worker.rotate("--force")
    # The key was created once; the worker derived it instead of creating blind.
    assert count(fresh_sandbox, "POST", "/auth/api-key", 502) == 1
    assert count(fresh_sandbox, "GET", "/auth/derive-api-key", 200) >= 1
    assert [r.nonce for r in fresh_sandbox.keys(worker.address)] == [0, 1]
    assert_consistent(worker, fresh_sandbox)


def test_create_answer_slower_than_timeout_is_recovered(worker: Worker, fresh_sandbox: Sandbox) -> None:
    worker.extra = {"clob": {**worker.config()["clob"], "timeout": "1s"}}
    worker.write_config()
    fresh_sandbox.inject("POST", "/auth/api-key", 200, '{"late":true}', after=True, delay=2.0)
    worker.rotate("--force")
    assert [r.nonce for r in fresh_sandbox.keys(worker.address)] == [0, 1]
    assert_consistent(worker, fresh_sandbox)


@pytest.mark.slow
def test_propagation_delay_longer_than_verify_timeout(worker: Worker, fresh_sandbox: Sandbox) -> None:
    before = worker.published()
    fresh_sandbox.configure(propagation_delay=4.0)
    worker.extra = {"clob": {**worker.config()["clob"], "verify_timeout": "1.5s"}}
    worker.write_config()
    proc = worker.run("rotate", "--all", "--force")
    assert proc.returncode == 1 and "did not verify" in proc.stdout
    assert worker.published() == before  # I5: consumers never saw the unverified key
    time.sleep(max(0.0, before.created_at + 4.2 - time.time()))  # type: ignore[union-attr]  # the switch is retroactive
    assert sdk_works(fresh_sandbox.url, worker.private_key, before)  # type: ignore[arg-type]
    state = worker.state()
    assert state.pending is None
    # I3: the unverified key still exists (it refuses its own DELETE while propagating), so it is
    # kept as retiring, not forgotten.
    unverified = [r for r in state.retiring if r.reason == "unverified"]
    assert len(unverified) == 1 and unverified[0].key.api_key in fresh_sandbox.live_keys(worker.address)
    fresh_sandbox.configure(propagation_delay=0.0)
    worker.extra = {}
    worker.write_config()
    worker.rotate("--force")
    time.sleep(2.2)
    # Past its recheck time, the leftover is revoked for real.
    wait_for(
        lambda: (worker.rotate(), len(fresh_sandbox.live_keys(worker.address)) == 1)[1],
        timeout=40,
        interval=2,
    )
    assert_consistent(worker, fresh_sandbox)


def test_key_invalidated_behind_our_back_is_replaced_in_one_pass(
    worker: Worker, fresh_sandbox: Sandbox
) -> None:
    old = worker.published()
    fresh_sandbox.invalidate(old.api_key)  # type: ignore[union-attr]
    out = worker.rotate().stdout  # no --force: the probe sees the 401
    assert "mm1: rotated" in out
    new = worker.published()
    assert new is not None and new.api_key != old.api_key  # type: ignore[union-attr]
    assert_consistent(worker, fresh_sandbox)


def test_daemon_replaces_an_invalidated_key_within_its_probe_interval(
    worker: Worker, fresh_sandbox: Sandbox
) -> None:
    # Keys are checked every daemon.probe_every (default 5 min, off /auth/*); here every second.
    worker.extra = {"daemon": {"tick": "1s", "jitter": "0.2s", "probe_every": "1s"}}
    worker.write_config()
    proc = worker.start("run")
    try:
        time.sleep(2.5)  # the daemon is up and has passed over the credential once
        old = worker.published()
        fresh_sandbox.invalidate(old.api_key)  # type: ignore[union-attr]
        t0 = time.monotonic()
        wait_for(lambda: worker.published() != old, timeout=5)
        assert time.monotonic() - t0 <= 5
        assert sdk_works(fresh_sandbox.url, worker.private_key, worker.published())  # type: ignore[arg-type]
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, _ = worker.finish(proc)
    assert code == 0


def test_clock_two_minutes_off(tmp_path: Path, wallet: tuple[str, str]) -> None:
    with Sandbox(SandboxSettings(clock_offset=120.0, timestamp_window=30.0, auth_limit=0)) as sb:
        w = Worker(tmp_path, sb.url, *wallet)
        out = w.run("check").stdout
        import re

        assert re.search(r"clock skew \+1(19|20|21)\.\d", out), out  # about +120 s, reported
        w.rotate()
        w.rotate("--force")
        # (The SDK itself signs with the local clock, so it cannot be the judge here: the worker's
        # own verification, with corrected timestamps, promoted the key.)
        state = w.state()
        assert state.current is not None and state.current.nonce == 1 and state.pending is None
        assert w.published() == state.current
        assert set(sb.live_keys(w.address)) == w.known_keys()
        # In-process, the skew metric shows it.
        from rotator.config import load_settings
        from rotator.runtime import Runtime

        rt = Runtime(load_settings(w.config_path), w.env())
        rt.rotator.run_pass(
            rt.ref(rt.settings.credentials[0]),
            rt.signer(rt.settings.credentials[0]),
            rt.policy(rt.settings.credentials[0]),
            force=True,
        )
        skew = rt.metrics.registry.get_sample_value("rotator_clock_skew_seconds")
        assert skew is not None and 119 <= skew <= 121
        rt.close()
        SECRETS.update(sb.issued_secrets())
        # mode refuse: a clear error, nothing changed.
        before = w.published()
        w.extra = {"clob": {**w.config()["clob"], "clock_skew": {"max": "10s", "mode": "refuse"}}}
        w.write_config()
        proc = w.run("rotate", "--all", "--force")
        assert proc.returncode in (1, 2) and "clock skew" in proc.stdout + proc.stderr
        assert w.published() == before


@pytest.mark.slow
def test_fleet_of_200_paces_itself_under_100_per_10s(tmp_path: Path) -> None:
    """Acceptance: 200 credentials at once, sandbox at 100 req/10 s: no 429, at most 1.2x the minimum."""
    from eth_account import Account

    n = 200
    wallets = [Account.create() for _ in range(n)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env["TEST_FILE_KEY"] = Worker.__dataclass_fields__["file_key"].default_factory()  # type: ignore[misc]
    for i, acct in enumerate(wallets):
        env[f"W{i}"] = acct.key.hex()
        SECRETS.add(acct.key.hex())
    with Sandbox(SandboxSettings(auth_limit=100, auth_window=10.0)) as sb:
        cfg = {
            "clob": {
                "host": sb.url,
                "chain_id": 137,
                "verify_timeout": "30s",
                "concurrency": 16,
                "rate_limits": {"auth": {"requests": 100, "per": "10s"}},
            },
            "store": {
                "backend": "file",
                "file": {"path": str(tmp_path / "keys.enc"), "key_env": "TEST_FILE_KEY"},
            },
            "credentials": [
                {
                    "name": f"bot{i}",
                    "signer": {"source": "env", "env": f"W{i}"},
                    "path": f"pm/bot{i}",
                    "rotate_every": "1h",
                    "grace": "15m",
                }
                for i in range(n)
            ],
            "metrics": {"port": 0},
            "log": {"format": "json", "level": "warning"},
        }
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml.safe_dump(cfg))
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "rotator.cli", "rotate", "-c", str(path), "--all"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        elapsed = time.monotonic() - started
        OUTPUTS.extend((proc.stdout, proc.stderr))
        SECRETS.update(sb.issued_secrets())
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        counts = sb.request_counts()
        too_many = sum(c for (m, p, s), c in counts.items() if s == 429)
        auth_requests = sum(c for (m, p, s), c in counts.items() if p.startswith("/auth/"))
        assert too_many == 0
        assert all(len(sb.live_keys(a.address)) == 1 for a in wallets)
        # The least time the limit allows for these requests: the first window is free, and a sliding
        # window admits the next 100 only once the previous 100 aged out, so 424 requests (the
        # bootstraps and one-shot wallet audits, issue 16) need 4 more windows, not 3.24.
        minimum = ((auth_requests - 1) // 100) * 10.0
        print(
            f"fleet: {auth_requests} /auth requests in {elapsed:.1f}s, minimum {minimum:.1f}s, "
            f"ratio {elapsed / minimum:.2f}"
        )
        # Only a gross regression (passes serialised, a window slept per request) is caught here; how
        # close the fleet runs to the limit is a ratio bench/ measures, not a timed test that a busy
        # machine (the suite runs on several workers) would break.
        assert elapsed <= 2.0 * minimum + 10.0
