"""Issue 24: ``rotator doctor`` against the sandbox: the findings, the key-model probe in multi-key and
single-key modes (its /auth/* requests counted, no key left behind), its crash safety, and a blocked
edge, direct and through a proxy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from rotator.model import Pending
from rotator.sandbox import Sandbox, SandboxSettings
from tests.harness import SECRETS, Worker, wait_for
from tests.servers import EgressProxy


@pytest.fixture
def single_sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(SandboxSettings(auth_limit=0, single_key=True))
    sb.start()
    yield sb
    SECRETS.update(sb.issued_secrets())
    sb.stop()


def _auth(sb: Sandbox) -> dict[tuple[str, str, int], int]:
    return {k: n for k, n in sb.request_counts().items() if k[1].startswith("/auth/")}


def _line(out: str, needle: str) -> str:
    found = [x for x in out.splitlines() if needle in x]
    assert len(found) == 1, out
    return found[0]


def test_the_findings_of_a_healthy_setup(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    before = w.run("doctor")
    assert before.returncode == 0, before.stdout + before.stderr
    for what in ("proxy: none", "dns: ", "tls: none", "edge: GET /time answered 200", "clock: "):
        assert what in before.stdout
    assert "no key yet" in before.stdout and "served (401 unsigned)" in before.stdout
    w.rotate()
    sandbox.set_closed_only(w.address)
    proc = w.run("doctor")
    sandbox.set_closed_only(w.address, False)
    assert proc.returncode == 0
    assert "it accepts the current key" in proc.stdout
    assert _line(proc.stdout, "closed-only").startswith("warn")
    assert "keys per wallet: not known yet" in proc.stdout
    assert all(x[:5] in ("ok   ", "warn ") for x in proc.stdout.splitlines())


def test_the_key_model_probe_on_a_multi_key_wallet_deletes_its_key_again(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    first = w.published()
    assert first is not None
    sandbox.reset_counts()
    proc = w.run("doctor", "--probe-key-model")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "keys per wallet: several (3 /auth/* requests)" in proc.stdout
    # Exactly three /auth/* requests for the probe (the closed-only read is the doctor's own).
    assert _auth(sandbox) == {
        ("POST", "/auth/api-key", 200): 1,
        ("GET", "/auth/api-keys", 200): 1,
        ("DELETE", "/auth/api-key", 200): 1,
        ("GET", "/auth/ban-status/closed-only", 200): 1,
    }
    assert sandbox.live_keys(w.address) == [first.api_key]  # the wallet as it was
    state = w.state()
    assert state.current == first and state.pending is None and state.retiring == ()
    assert state.key_model is not None and (state.key_model.keys, state.key_model.by) == ("several", "doctor")
    assert state.history[-1].how == "deleted" and state.next_nonce == 2
    status = json.loads(w.run("status", "--json").stdout)
    assert status[0]["key_model"]["keys"] == "several" and status[0]["key_model"]["overlap"] is True


def test_the_key_model_probe_on_a_single_key_wallet_publishes_its_key_in_place(
    single_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, single_sandbox.url, *wallet)
    w.rotate()
    first = w.published()
    assert first is not None
    single_sandbox.reset_counts()
    proc = w.run("doctor", "--probe-key-model")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "keys per wallet: one (3 /auth/* requests)" in proc.stdout
    # The create killed the published key: deleting the probe key would leave the wallet no key.
    # The old key's 401 is confirmed by derive before it counts as invalidated (issue 22 item 4).
    assert _auth(single_sandbox) == {
        ("POST", "/auth/api-key", 200): 1,
        ("GET", "/auth/api-keys", 401): 1,
        ("GET", "/auth/derive-api-key", 400): 1,  # no key at that nonce
        ("GET", "/auth/ban-status/closed-only", 200): 1,
    }
    state = w.state()
    published = w.published()
    assert published is not None and state.current == published and published.nonce == 1
    assert single_sandbox.live_keys(w.address) == [published.api_key]  # no extra key
    assert state.key_model is not None and state.key_model.keys == "one"
    assert state.history[-1].how == "invalidated-by-server"
    assert "keys: one per wallet, rotations publish at once, no overlap" in w.run("status").stdout


def test_the_key_model_probe_refuses_to_run_while_a_rotation_is_in_flight(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    store = w.store()
    snap = store.load(w.ref)
    far = time.time() + 3600
    # Another worker's intent (a live lease): its key may exist at nonce 1 unrecorded.
    busy = replace(snap.state, pending=Pending(1, time.time(), "elsewhere:1:1", far, address=w.address))
    version = store.save(w.ref, busy, snap.version)
    sandbox.reset_counts()
    proc = w.run("doctor", "--probe-key-model")
    assert proc.returncode == 1
    assert "FAIL" in _line(proc.stdout, "key model") and "a rotation is in flight (nonce 1)" in proc.stdout
    assert ("POST", "/auth/api-key", 200) not in sandbox.request_counts()
    store.save(w.ref, replace(busy, pending=None), version)


@pytest.mark.slow
def test_a_doctor_killed_after_its_create_leaves_an_intent_the_next_pass_resumes(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    """The probe key's nonce is recorded before it is created: SIGKILL right after the create (the
    answer never read) leaves an intent, and the next pass finds the key there (I3 at the end)."""
    w = Worker(tmp_path, fresh_sandbox.url, *wallet)
    w.rotate()
    hold = fresh_sandbox.hold("POST", "/auth/api-key", phase="after")
    proc = w.start("doctor", "--probe-key-model")
    assert hold.reached.wait(30)
    w.kill(proc)
    hold.release()
    state = w.state()
    assert state.pending is not None and state.pending.nonce == 1 and state.pending.key is None
    assert len(fresh_sandbox.live_keys(w.address)) == 2  # the probe key exists, recorded as an intent
    done = w.rotate()  # the dead doctor's lease is taken over: derive finds its key, a rotation ends it
    assert "mm1: rotated" in done.stdout
    state = w.state()
    assert state.pending is None and state.current is not None and state.current.nonce == 1
    wait_for(lambda: len(fresh_sandbox.live_keys(w.address)) >= 1)


@pytest.fixture
def edge_sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(SandboxSettings(auth_limit=0, edge_block=("127.0.0.1/32",), edge_page="challenge"))
    sb.start()
    yield sb
    SECRETS.update(sb.issued_secrets())
    sb.stop()


def test_against_a_blocked_edge_the_doctor_exits_1_naming_the_block_and_a_proxy_passes(
    edge_sandbox: Sandbox, http_proxy: EgressProxy, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, edge_sandbox.url, *wallet)
    proc = w.run("doctor")
    assert proc.returncode == 1
    edge = _line(proc.stdout, "edge:")
    assert edge.startswith("FAIL") and "blocked by the CLOB's edge" in edge
    assert "403 Cloudflare challenge page" in edge and "clob.proxy" in edge
    assert edge_sandbox.edge_refusals() == 3
    SECRETS.add(http_proxy.password)
    clob = w.config()["clob"]
    clob["proxy"] = {"url": http_proxy.url, "username": http_proxy.username, "password_env": "T_PX"}
    w.extra = {"clob": clob}
    w.write_config()
    env = {**w.env(), "T_PX": http_proxy.password}
    import subprocess

    from tests.harness import OUTPUTS

    ok = subprocess.run(w.argv("doctor"), env=env, capture_output=True, text=True, timeout=60)
    OUTPUTS.extend((ok.stdout, ok.stderr))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _line(ok.stdout, "proxy:").startswith(f"ok    proxy: http://{http_proxy.username}@127.0.0.1")
    assert "dns: 127.0.0.1 (the proxy)" in ok.stdout
    assert edge_sandbox.edge_refusals() == 3
