"""Issue 24, without a server: what counts as the CLOB's edge refusing us, the proxy settings, the key
model as the rotation reads it, and the single-key and revival strategies on the fake CLOB."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from rotator.clob.adapter import edge_answer
from rotator.config import ignored_proxy_env, load_settings
from rotator.errors import ConfigError
from rotator.model import CredentialState, KeyModel, Pending
from rotator.rotation import keeps_one_key, key_model
from tests.unit.test_rotation import POLICY, REF, Clock, FakeClob, MemoryStore, Wallet, world

__all__ = ["world"]

BLOCK_PAGE = b"<title>Attention Required! | Cloudflare</title><h1>Sorry, you have been blocked</h1>"
CHALLENGE_PAGE = b"<title>Just a moment...</title><script src='/cdn-cgi/challenge-platform/x'></script>"


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind"),
    [
        (403, {"content-type": "text/html; charset=UTF-8", "cf-ray": "8f1c-AMS"}, BLOCK_PAGE, "block"),
        (403, {"content-type": "text/html"}, b"<html>forbidden</html>", "block"),
        (403, {"cf-mitigated": "challenge", "content-type": "text/html"}, b"", "challenge"),
        (503, {"content-type": "text/html"}, CHALLENGE_PAGE, "challenge"),
        (403, {"content-type": "application/json"}, b'{"error":"forbidden"}', None),  # the CLOB's own
        (401, {"content-type": "application/json"}, b'{"error":"Unauthorized/Invalid api key"}', None),
        (429, {"content-type": "text/html"}, CHALLENGE_PAGE, None),  # rate limited, handled as such
        (200, {"content-type": "text/html"}, CHALLENGE_PAGE, None),
    ],
)
def test_what_an_edge_refusal_looks_like(
    status: int, headers: dict[str, str], body: bytes, kind: str
) -> None:
    edge = edge_answer(status, httpx.Headers(headers), body)
    assert (edge.kind if edge else None) == kind
    if edge is not None and "cf-ray" in headers:
        assert edge.ray == "8f1c-AMS" and "ray 8f1c-AMS" in edge.text


@pytest.mark.parametrize(
    ("proxy", "problem"),
    [
        ({"url": "http://proxy.internal:3128"}, None),
        ({"url": "socks5://10.0.0.7:1080", "username": "rot", "password_env": "PX"}, None),
        ({"url": "socks5h://10.0.0.7:1080"}, None),
        ({"url": "http://rot:hunter2@proxy:3128"}, "must not carry credentials"),
        ({"url": "https://proxy:3128"}, "must be http://HOST:PORT or socks5://HOST:PORT"),
        ({"url": "http://proxy"}, "with a port"),
        ({"url": "http://proxy:3128/path"}, "with a port, nothing after it"),
        ({"url": "http://proxy:3128", "username": "rot"}, "needs password_env or password_file"),
        ({"url": "http://proxy:3128", "password_env": "PX"}, "need username"),
        ({"url": "http://p:1", "username": "a:b", "password_env": "PX"}, "no ':'"),
        ({"url": "http://p:1", "username": "u", "password_env": "PX", "password_file": "/f"}, "not both"),
    ],
)
def test_clob_proxy_settings(proxy: dict[str, str], problem: str | None) -> None:
    if problem is None:
        assert load_settings(None, data={"clob": {"proxy": proxy}}, env={}).clob.proxy is not None
        return
    with pytest.raises(ConfigError) as info:
        load_settings(None, data={"clob": {"proxy": proxy}}, env={})
    assert problem in str(info.value) and str(info.value).startswith("clob.proxy")
    assert "hunter2" not in str(info.value)


def test_the_store_proxies_take_http_connect_only() -> None:
    data = {"store": {"backend": "aws", "aws": {"region": "us-east-1", "proxy": {"url": "socks5://p:1"}}}}
    with pytest.raises(ConfigError, match=r"store\.aws\.proxy: .*no SOCKS support"):
        load_settings(None, data=data, env={})


def test_the_proxy_password_is_checked_at_start_and_read_per_connection(tmp_path: Path) -> None:
    s = load_settings(
        None, data={"clob": {"proxy": {"url": "http://p:1", "username": "u", "password_env": "PX"}}}, env={}
    )
    assert s.clob.proxy is not None
    with pytest.raises(
        ConfigError, match=r"clob\.proxy\.password_env: the environment variable PX is not set"
    ):
        s.clob.proxy.password_reader({}, "clob.proxy")
    read = s.clob.proxy.password_reader({"PX": "pw-1"}, "clob.proxy")
    assert read is not None and read() == "pw-1"
    pw = tmp_path / "pw"
    pw.write_text("first\n")
    f = load_settings(
        None,
        data={"clob": {"proxy": {"url": "http://p:1", "username": "u", "password_file": str(pw)}}},
        env={},
    )
    assert f.clob.proxy is not None
    read = f.clob.proxy.password_reader({}, "clob.proxy")
    assert read is not None and read() == "first"
    pw.write_text("second\n")  # a mounted Secret changed: the next connection uses the new one
    assert read() == "second"


def test_proxy_variables_in_the_environment_are_named_once_with_what_they_do_not_reach() -> None:
    env = {"HTTPS_PROXY": "http://p:1", "no_proxy": "localhost", "HTTP_PROXY": ""}
    settings = load_settings(None, data={}, env={})
    line = ignored_proxy_env(settings, env)
    assert line is not None and line.startswith("HTTPS_PROXY, NO_PROXY are set and ignored")
    assert "the CLOB (clob.proxy)" in line and "Vault" not in line
    proxied = load_settings(None, data={"clob": {"proxy": {"url": "http://p:1"}}}, env={})
    assert ignored_proxy_env(proxied, env) is None  # the one client in use has its proxy
    assert ignored_proxy_env(settings, {"PATH": "/bin"}) is None


@pytest.mark.parametrize(
    ("configured", "learned", "model", "at_once"),
    [
        ("auto", None, "unknown", False),
        ("auto", "several", "several", False),
        ("auto", "one", "one", True),
        ("one", None, "one", True),
        ("several", "one", "several", False),  # the operator's word over what was learned
    ],
)
def test_the_key_model_the_rotation_goes_by(
    configured: str, learned: str | None, model: str, at_once: bool
) -> None:
    state = CredentialState(key_model=KeyModel(keys=learned) if learned else None)
    policy = replace(POLICY, key_model=configured)
    assert key_model(state, policy) == model and keeps_one_key(state, policy) is at_once


def test_the_key_model_survives_a_round_trip_and_old_readers_see_no_new_schema() -> None:
    model = KeyModel("one", "doctor", 10.0, 2.5, True, 12.0)
    state = CredentialState(key_model=model)
    data = state.to_dict()
    assert data["schema"] == 3 and CredentialState.from_dict(data).key_model == model
    assert "key_model" not in CredentialState().to_dict()  # unchanged for states that never learned


Rig = tuple[Clock, MemoryStore, FakeClob, object]


class SingleKeyClob(FakeClob):
    """A CLOB that keeps one key per wallet: creating a key invalidates the others."""

    def create_key(self, signer: object, nonce: int):  # type: ignore[no-untyped-def]
        made = super().create_key(signer, nonce)
        for other in [k for k in self.live if k != made.api_key]:
            del self.live[other]
        return made


def test_a_wallet_known_to_keep_one_key_publishes_in_the_step_that_creates() -> None:
    clock = Clock()
    store = MemoryStore()
    clob = SingleKeyClob(clock)
    from rotator.metrics import Metrics
    from rotator.rotation import Rotator

    rot = Rotator(store, clob, Metrics(), clock=clock, sleep=clock.sleep, owner="me")
    published: list[str] = []
    real_publish = store.publish

    def watch(ref, k):  # type: ignore[no-untyped-def]
        published.append(f"publish:{k.nonce}")
        clob.calls.append(f"publish:{k.nonce}")
        real_publish(ref, k)

    store.publish = watch  # type: ignore[method-assign]
    assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[arg-type]
    # Unknown model: as several (verify, then publish); step 7 finds the old key dead... there is none.
    clock.now += 200
    clob.calls.clear()
    assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[arg-type]
    assert clob.calls.index("probe:1") < clob.calls.index("publish:1")  # verified before published
    assert store.state is not None and store.state.key_model is not None
    assert store.state.key_model.keys == "one"  # step 7 found the old key dead at once
    metrics = rot.metrics.registry
    assert metrics.get_sample_value("rotator_key_model", {"credential": "c1", "model": "one"}) == 1
    clock.now += 200
    clob.calls.clear()
    assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[arg-type]
    # Known to keep one key: published right after the create, verified after that.
    assert clob.calls.index("create:2") < clob.calls.index("publish:2") < clob.calls.index("probe:2")
    assert store.state.current is not None and store.state.current.nonce == 2
    assert store.state.retiring == ()  # the old key is history (invalidated), not waiting for grace


def test_a_key_dead_before_the_rotation_teaches_nothing(world: Rig, caplog: pytest.LogCaptureFixture) -> None:
    clock, store, clob, rot = world
    assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[attr-defined]
    clock.now += 5
    del clob.live[store.state.current.api_key]  # type: ignore[union-attr]  # revoked behind its back
    with caplog.at_level(logging.INFO, logger="rotator.audit"):
        assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[attr-defined]  # rejected
    assert store.state is not None and store.state.key_model is None  # not "one": it died before
    assert (
        rot.metrics.registry.get_sample_value("rotator_key_model", {"credential": "c1", "model": "unknown"})
        == 1
    )


def test_a_lapsed_key_is_revived_when_derive_still_finds_it(world: Rig) -> None:
    clock, store, clob, rot = world
    assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[attr-defined]
    cur = store.state.current  # type: ignore[union-attr]
    # Lapsed: reads refuse it, derive still finds it, and a create at its nonce brings it back.
    clob.unverifiable.add(cur.nonce)

    def revive(signer: object, nonce: int):  # type: ignore[no-untyped-def]
        clob.calls.append(f"create:{nonce}")
        clob.unverifiable.discard(nonce)
        return clob.by_nonce[nonce]

    clob.create_key = revive  # type: ignore[method-assign]
    clock.now += 5
    clob.calls.clear()
    result = rot.run_pass(REF, Wallet, POLICY)  # type: ignore[attr-defined]
    assert result.outcome == "nothing-due" and not result.rotated
    assert clob.calls == ["probe:0", "derive:0", "create:0", "probe:0"]
    state = store.state
    assert state is not None and state.current == cur and state.pending is None and state.next_nonce == 1
    assert state.key_model is not None and state.key_model.revives is True
    assert rot.metrics.registry.get_sample_value("rotator_keys_revived_total", {"credential": "c1"}) == 1


def test_a_resumed_revival_does_not_retire_the_key_it_brought_back(world: Rig) -> None:
    """A worker died right after a revival's create: its intent is at the current key's own nonce,
    and derive finds that very key. The resume makes it current again; it must not retire it."""
    clock, store, clob, rot = world
    assert rot.run_pass(REF, Wallet, POLICY).rotated  # type: ignore[attr-defined]
    state = store.state
    assert state is not None and state.current is not None
    cur = state.current
    intent = Pending(cur.nonce, clock.now, "dead-owner", clock.now - 1, address="0xA")
    store.state = replace(state, pending=intent)
    clock.now += 5
    result = rot.run_pass(REF, Wallet, POLICY)  # type: ignore[attr-defined]
    assert result.ok, result.error
    after = store.state
    assert after is not None and after.pending is None and after.current is not None
    assert after.current.api_key == cur.api_key and after.retiring == ()
    assert all(h.key_prefix != cur.masked for h in after.history)  # not recorded as gone either
    assert cur.api_key in clob.live


def test_a_key_published_at_once_that_never_verifies_is_not_revoked(world: Rig) -> None:
    """On a wallet that keeps one key the new key is published at its creation; if it then never
    answers, revoking it would leave the bots nothing (the old key died at the create)."""
    clock, store, clob, rot = world
    one = replace(POLICY, key_model="one")
    assert rot.run_pass(REF, Wallet, one).rotated  # type: ignore[attr-defined]
    clock.now += 200
    clob.unverifiable.add(1)
    result = rot.run_pass(REF, Wallet, one)  # type: ignore[attr-defined]
    assert result.outcome == "failed" and result.failed_step == "verify"
    state = store.state
    assert state is not None and state.current is not None and state.current.nonce == 1
    assert store.published is not None and store.published.nonce == 1
    assert "delete:1" not in clob.calls and state.current.api_key in clob.live
