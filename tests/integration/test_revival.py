"""Issue 24 item 5: keys that are not usable at once, and keys that lapse and come back.

- A new key that answers 401 for its first seconds (clob-client #311, the sandbox's propagation
  delay) is waited for until ``verify_timeout``, and how long it took is recorded and shown.
- A published key that lapses (401, py-clob-client-v2 #40; the sandbox's ``key_ttl``) and comes back,
  identical, on a create at its nonce (the sandbox's ``revive``) is revived in place: no new key, no
  orphan, said once as such. A retiring key that lapsed is revived to be deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.config import load_settings
from rotator.runtime import Runtime
from rotator.sandbox import Sandbox, SandboxSettings
from tests.harness import SECRETS, Worker, log_events

TTL = 4.0


@pytest.fixture
def lapsing() -> Iterator[Sandbox]:
    sb = Sandbox(SandboxSettings(auth_limit=0, key_ttl=TTL, revive=True))
    sb.start()
    yield sb
    SECRETS.update(sb.issued_secrets())
    sb.stop()


def test_a_key_that_answers_401_for_its_first_seconds_is_waited_for_and_measured(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    fresh_sandbox.configure(propagation_delay=3.0)
    w = Worker(tmp_path, fresh_sandbox.url, *wallet)  # verify_timeout 10s
    proc = w.rotate()
    verified = log_events(proc.stderr, outcome="verified")
    assert len(verified) == 1 and float(verified[0]["live_after"]) >= 2.5  # type: ignore[arg-type]
    state = w.state()
    assert state.current is not None and state.pending is None and state.retiring == ()
    assert state.key_model is not None and (state.key_model.propagation or 0) >= 2.5
    assert (
        "new keys live after 3s" in w.run("status").stdout
        or "new keys live after 2s" in w.run("status").stdout
    )


@pytest.mark.slow
def test_a_lapsed_published_key_is_revived_in_place_and_said_once(
    lapsing: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, lapsing.url, *wallet, grace="2s")
    w.rotate()
    first = w.published()
    assert first is not None
    time.sleep(TTL + 0.5)  # the key lapses: 401 on every read, derive still finds it
    lapsing.reset_counts()
    proc = w.rotate()
    assert "mm1: nothing-due" in proc.stdout, proc.stdout
    assert len(log_events(proc.stderr, outcome="revived")) == 1
    assert "came back, identical, on a create at its nonce" in proc.stderr  # said, the first time
    assert w.published() == first and w.state().current == first  # the bots' key, unchanged
    records = lapsing.keys(wallet[1])
    assert [(r.api_key, r.revivals, r.revoked_at) for r in records] == [(first.api_key, 1, None)]
    assert lapsing.request_counts()[("POST", "/auth/api-key", 200)] == 1  # no new key made
    state = w.state()
    assert state.key_model is not None and state.key_model.revives is True
    assert "lapsed keys revived" in w.run("status").stdout

    # In-process from here, built ahead: the forced rotation below must come while the key is alive.
    rt = Runtime(load_settings(w.config_path, env=w.env()), w.env())
    rt.validate()
    cred = rt.settings.credentials[0]
    rt.signer(cred)()
    time.sleep(TTL + 0.5)  # it lapses again
    again = w.rotate()
    assert len(log_events(again.stderr, outcome="revived")) == 1
    assert "came back, identical" not in again.stderr  # said once, not at every revival
    assert [r.revivals for r in lapsing.keys(wallet[1])] == [2]

    # Rotated away, then lapsed while retiring: revived to be deleted, not left for ever.
    try:
        assert rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred), force=True).rotated
    finally:
        rt.close()
    time.sleep(TTL + 0.5)
    last = w.rotate()
    assert "revoked=1" in last.stdout, last.stdout + "\n".join(x[:300] for x in last.stderr.splitlines())
    state = w.state()
    assert state.retiring == () and state.history[-1].how == "deleted"
    gone = next(r for r in lapsing.keys(wallet[1]) if r.api_key == first.api_key)
    assert gone.revoked_by == "delete"
