"""Issue 12: the worker is a guest on the CLOB's shared /auth/* budget (DESIGN.md, "The shared budget").

Every test runs the real CLI against a sandbox that enforces the real limits (100 per 10 s on /auth/*,
200 per 10 s on /balance-allowance) and counts what the worker spent, route by route.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.clob.adapter import ClobAdapter, RetryPolicy
from rotator.clob.budget import SlidingWindowBudget
from rotator.errors import RateLimited
from rotator.rotation import RECHECK_LIVE_KEY
from rotator.sandbox import Sandbox
from tests.harness import SECRETS, Worker, sdk_works

pytestmark = pytest.mark.timeout(180)


def auth_requests(sb: Sandbox) -> collections.Counter[tuple[str, str, int]]:
    return collections.Counter({k: n for k, n in sb.request_counts().items() if k[1].startswith("/auth/")})


def throttled(sb: Sandbox) -> int:
    return sum(n for (_, _, code), n in sb.request_counts().items() if code == 429)


def assert_accounted(w: Worker, sb: Sandbox) -> None:
    """I3: every live key the sandbox holds for the wallet is one the state accounts for."""
    orphans = set(sb.live_keys(w.address)) - w.known_keys()
    assert not orphans, f"orphan keys at the CLOB: {orphans}"


@pytest.fixture
def limited(fresh_sandbox: Sandbox) -> Sandbox:
    fresh_sandbox.configure(auth_limit=100)  # the real limit, per IP
    return fresh_sandbox


def test_a_rotation_cycle_spends_two_auth_requests(limited: Sandbox, tmp_path: Path, wallet: Any) -> None:
    w = Worker(tmp_path, limited.url, *wallet, grace="1s")
    w.rotate()  # bootstrap: derive (is nonce 0 free?) + create
    first = w.published()
    limited.reset_counts()

    w.rotate("--force")  # create; the verification and the check of the old key are L2 reads
    time.sleep(1.2)
    out = w.rotate().stdout  # the revocation pass: delete, confirmed gone by an L2 read
    assert "revoked=1" in out

    spent = auth_requests(limited)
    assert spent == {("POST", "/auth/api-key", 200): 1, ("DELETE", "/auth/api-key", 200): 1}, spent
    assert throttled(limited) == 0
    counts = limited.request_counts()
    # verify the new key, probe the old one, confirm the delete (401), probe the current key; and
    # once per process, the route shown to refuse a wrong signature before its 200s count (401)
    assert counts[("GET", "/balance-allowance", 200)] >= 3
    assert counts[("GET", "/balance-allowance", 401)] == 1 + 2
    current = w.published()
    assert current is not None and first is not None and current.api_key != first.api_key
    assert limited.live_keys(w.address) == [current.api_key]
    assert sdk_works(limited.url, w.private_key, current)
    assert_accounted(w, limited)


def test_a_pass_with_nothing_due_spends_nothing_on_auth(
    limited: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    w = Worker(tmp_path, limited.url, *wallet)
    w.rotate()
    limited.reset_counts()
    out = w.rotate().stdout
    assert "mm1: nothing-due" in out
    assert auth_requests(limited) == {}
    assert limited.request_counts()[("GET", "/balance-allowance", 200)] == 1  # the key is checked off /auth


def _fleet(tmp_path: Path, url: str, n: int) -> tuple[Worker, dict[str, str]]:
    """A worker whose config holds ``n`` credentials on ``n`` wallets (env W0..W{n-1})."""
    from eth_account import Account

    w = Worker(tmp_path, url, *_wallet(), rotate_every="1h", grace="1h")
    keys = {f"W{i}": Account.create().key.hex() for i in range(n)}
    SECRETS.update(keys.values())
    cfg = w.config()
    cfg["credentials"] = [
        {
            "name": f"c{i}",
            "signer": {"source": "env", "env": f"W{i}"},
            "path": f"polymarket/c{i}",
            "rotate_every": "1h",
            "grace": "1h",
        }
        for i in range(n)
    ]
    # No wallet audits unless a test asks (they spend /auth/* by design: their own test below).
    cfg["daemon"] = {"tick": "1s", "jitter": "0.5s", "audit_every": 0}
    cfg["log"] = {"format": "json", "level": "info"}
    w.config_path.write_text(yaml.safe_dump(cfg))
    return w, keys


def _wallet() -> tuple[str, str]:
    from eth_account import Account

    acct = Account.create()
    SECRETS.update((acct.key.hex(), acct.key.hex().removeprefix("0x")))
    return acct.key.hex(), acct.address


@pytest.mark.slow
def test_an_idle_daemon_with_50_credentials_spends_nothing_on_auth(
    fresh_sandbox: Sandbox, tmp_path: Path
) -> None:
    sb = fresh_sandbox  # unlimited while the fleet bootstraps; the real limit while the daemon idles
    w, keys = _fleet(tmp_path, sb.url, 50)
    env = {**w.env(), **keys}
    import subprocess

    setup = subprocess.run(w.argv("rotate", "--all"), env=env, capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    sb.configure(auth_limit=100)
    sb.reset_counts()

    proc = subprocess.Popen(w.argv("run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(30)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    from tests.harness import OUTPUTS

    OUTPUTS.extend((out, err))
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events and not [e for e in events if e.get("outcome") == "failed"], err[-2000:]
    assert auth_requests(sb) == {}, auth_requests(sb)
    assert throttled(sb) == 0
    # The daemon spreads its first check of each key over daemon.probe_every (5 min), then checks
    # none again within it: at most one check per key here, off /auth/*.
    assert sb.request_counts()[("GET", "/balance-allowance", 200)] <= 50


def test_a_server_without_the_probe_endpoint_falls_back_to_the_key_list(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    sb = fresh_sandbox
    sb.configure(unserved=frozenset({"/balance-allowance"}))
    w = Worker(tmp_path, sb.url, *wallet, grace="1s")
    w.rotate()
    proc = w.rotate("--force")  # verify the new key, then probe the old one: both fall back
    said = proc.stderr.count("does not serve the probe endpoint")
    assert said == 1, proc.stderr[-2000:]
    time.sleep(1.2)
    proc = w.rotate()
    assert "revoked=1" in proc.stdout  # the delete is confirmed through the fallback too
    assert sb.request_counts()[("GET", "/balance-allowance", 404)] >= 2
    current = w.published()
    assert current is not None and sb.live_keys(w.address) == [current.api_key]
    assert_accounted(w, sb)


@pytest.mark.slow
def test_a_delete_that_answers_200_but_keeps_the_key_is_not_trusted(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: Any
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, grace="1s")
    w.rotate()
    old = w.published()
    w.rotate("--force")
    time.sleep(1.2)
    sb.inject("DELETE", "/auth/api-key", 200, '"OK"')  # answers 200, deletes nothing
    out = w.rotate().stdout
    assert "revoked=" not in out
    assert old is not None and old.api_key in sb.live_keys(w.address)
    assert [r.key.api_key for r in w.state().retiring] == [old.api_key]  # still accounted for (I3)
    assert not any(h.nonce == old.nonce for h in w.state().history)
    assert_accounted(w, sb)

    # RECHECK_LIVE_KEY later on the CLOB's clock (every deadline the worker keeps is on it): the next
    # attempt really deletes it. The sandbox's clock is moved on rather than waited for.
    sb.configure(clock_offset=RECHECK_LIVE_KEY + 0.5)
    assert "revoked=1" in w.rotate().stdout
    assert old.api_key not in sb.live_keys(w.address)
    assert_accounted(w, sb)


def test_the_sandbox_limits_the_probe_endpoint_like_the_clob(fresh_sandbox: Sandbox, tmp_path: Path) -> None:
    from rotator.model import Secret
    from rotator.signers.local import LocalKeySigner

    sb = fresh_sandbox
    pk, _ = _wallet()
    adapter = ClobAdapter(
        sb.url,
        137,
        retry=RetryPolicy(attempts=1),
        probe_budget=SlidingWindowBudget(0, 10.0),  # no client-side pacing: see the server's limit
    )
    try:
        key = adapter.create_key(LocalKeySigner(Secret(pk), source="test"), 0)
        SECRETS.update((key.api_secret.reveal(), key.api_passphrase.reveal()))
        for _ in range(199):  # and the first one's proof that the route checks auth (a 401)
            adapter.probe_key(key)
        with pytest.raises(RateLimited):
            adapter.probe_key(key)
    finally:
        adapter.close()
    assert sb.request_counts()[("GET", "/balance-allowance", 429)] == 1


@pytest.mark.slow
def test_a_200_credential_fleet_audits_within_its_auth_share(fresh_sandbox: Sandbox, tmp_path: Path) -> None:
    """Issue 16: wallet audits (the key lists of every kind + closed-only, 4 /auth/* each) of a
    200-credential fleet are
    spread over the audit interval, which is stretched to a quarter of the worker's /auth/* budget:
    no burst at start, 0 x 429 at the CLOB's real limit, each wallet audited at most once in it."""
    from rotator.clob.budget import AUDIT_SHARE, AUTH_REQUESTS_PER_AUDIT, audit_interval
    from rotator.config import load_settings

    sb = fresh_sandbox  # unlimited while the fleet bootstraps; the real limit while the daemon audits
    n = 200
    w, keys = _fleet(tmp_path, sb.url, n)
    cfg = yaml.safe_load(w.config_path.read_text())
    cfg["clob"]["rate_limits"] = {"auth": {"requests": 80, "per": "10s"}}
    cfg["daemon"] |= {"audit_every": "1s"}  # wanted every second: the share decides
    w.config_path.write_text(yaml.safe_dump(cfg))
    env = {**w.env(), **keys}
    interval = audit_interval(load_settings(str(w.config_path), env=env))
    assert interval == pytest.approx(n * AUTH_REQUESTS_PER_AUDIT / (80 / 10 * AUDIT_SHARE))  # 400 s
    import subprocess

    setup = subprocess.run(
        w.argv("rotate", "--all"),
        env={**env, "ROTATOR_DAEMON__AUDIT_EVERY": "0"},  # bootstrap only: the daemon audits
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]
    sb.configure(auth_limit=100)
    sb.reset_counts()

    run_for = 30.0
    proc = subprocess.Popen(w.argv("run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(run_for)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    from tests.harness import OUTPUTS

    OUTPUTS.extend((out, err))
    assert proc.returncode == 0, err[-2000:]
    spent = auth_requests(sb)
    assert throttled(sb) == 0, spent
    audits = spent[("GET", "/auth/api-keys", 200)]
    lists = (
        "/auth/api-keys",
        "/auth/ban-status/closed-only",
        "/auth/readonly-api-keys",
        "/auth/builder-api-key",
    )
    assert set(spent) == {("GET", route, 200) for route in lists}
    assert all(spent[("GET", route, 200)] == audits for route in lists)
    # First audits are spread over the 400 s interval: about n * 30/400 = 15 in 30 s, never the
    # whole fleet at start-up, and no wallet twice.
    assert 0 < audits < n / 2, audits
    share = 80 / 10 * AUDIT_SHARE * (run_for + 10)  # the share's requests over the run, with a window's slack
    assert sum(spent.values()) <= 1.6 * share, spent
    assert err.count('"outcome":"audited"') == audits


@pytest.mark.slow
def test_a_manual_run_beside_a_busy_daemon_keeps_to_the_workers_auth_share(
    fresh_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Issue 22 item 13: the daemon revokes 30 keys while an operator runs ``rotate --all --force`` on
    the same config and store. Together they keep to the worker's share of the IP's /auth/* budget
    (``clob.rate_limits.auth``, 50 per 10 s), which the sandbox enforces here: going over it draws
    429s. They used to spend 60 in one window, 50 each."""
    import subprocess

    sb = fresh_sandbox  # unlimited while the fleet is set up
    n = 30
    w, keys = _fleet(tmp_path, sb.url, n)
    cfg = yaml.safe_load(w.config_path.read_text())
    for cred in cfg["credentials"]:
        cred["grace"] = "3s"
    w.config_path.write_text(yaml.safe_dump(cfg))
    env = {**w.env(), **keys}

    def rotate(*flags: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            w.argv("rotate", "--all", *flags), env=env, capture_output=True, text=True, timeout=170
        )
        from tests.harness import OUTPUTS

        OUTPUTS.extend((proc.stdout, proc.stderr))
        return proc

    assert rotate().returncode == 0  # bootstrap
    forced = rotate("--force")  # 30 keys retiring, each due for revocation 3 s from now
    assert forced.returncode == 0, forced.stdout[-2000:] + forced.stderr[-2000:]
    time.sleep(10.5)  # grace over, and the set-up's requests out of the sandbox's window
    sb.configure(auth_limit=50)  # the worker's share: a process or two going over it is refused
    sb.reset_counts()
    daemon = subprocess.Popen(
        w.argv("run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while sb.request_counts()[("DELETE", "/auth/api-key", 200)] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        manual = rotate("--force")  # while the daemon revokes
        time.sleep(2)
    finally:
        daemon.terminate()
        out, err = daemon.communicate(timeout=60)
    from tests.harness import OUTPUTS

    OUTPUTS.extend((out, err))
    assert daemon.returncode == 0, err[-2000:]
    assert manual.returncode == 0, manual.stdout[-2000:] + manual.stderr[-2000:]
    spent = auth_requests(sb)
    assert sum(spent.values()) > 50, spent  # more than one window's share: the budget was tested
    assert throttled(sb) == 0, spent
    assert "a daemon leads this store" in manual.stderr, manual.stderr[-2000:]
