"""Issue 22 items 4-7, the state machine's side (fakes of our own ports, from test_rotation): an old
key refused once is not taken for invalidated without derive; a key at the intent's nonce that the
intent did not make is walked past and reported; key ids tell when a key was made; the published
path is recorded. The end-to-end proofs are in tests/integration/test_key_trace.py."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from rotator.errors import Unauthorized
from rotator.hygiene import _reported
from rotator.model import AuditRecord, CredentialState, Key, Pending, Secret, UnmanagedKey
from rotator.rotation import KEY_CLOCK_SLACK, made_before_intent, minted_at
from tests.unit.test_rotation import (  # noqa: F401
    POLICY,
    REF,
    FakeClob,
    MemoryStore,
    Wallet,
    key,
    run,
    world,
)

__all__ = ["world"]


def v7(at: float) -> str:
    """A UUIDv7 id minted at unix time ``at``, as the CLOB makes them."""
    ms = int(at * 1000)
    return str(uuid.UUID(int=ms << 80 | 0x7 << 76 | 0x123 << 64 | 0b10 << 62 | 0x456))


def minted(nonce: int, at: float) -> Key:
    return Key(v7(at), Secret(f"s{nonce}"), Secret(f"p{nonce}"), "0xA", nonce, 0.0)


def test_minted_at_reads_a_uuid7_and_nothing_else() -> None:
    assert minted_at(v7(1_800_000_000.123)) == pytest.approx(1_800_000_000.123)
    assert minted_at(str(uuid.uuid4())) is None
    assert minted_at("id-0001-xxxx") is None
    assert minted_at("") is None


@pytest.mark.parametrize(
    ("made", "started", "current", "before"),
    [
        (1000.0, 1000.0, None, False),  # made as the intent was recorded: its own
        (1000.0 - KEY_CLOCK_SLACK + 1, 1000.0, None, False),  # within the clocks' slack: cannot tell
        (1000.0 - KEY_CLOCK_SLACK - 1, 1000.0, None, True),  # long before the intent
        (900.0, 1000.0, 950.0, True),  # older than the current key, by the CLOB's clock alone
        (949.5, 1000.0, 950.0, False),  # within the CLOB's own clocks' slack of it
        (960.0, 1000.0, 950.0, False),
        (None, 1000.0, 950.0, False),  # no UUIDv7: proves nothing, the intent's own (step 4b)
    ],
)
def test_made_before_intent(made: float | None, started: float, current: float | None, before: bool) -> None:
    found = minted(1, made) if made is not None else key(1)
    pending = Pending(1, started, "w", started + 10)
    cur = minted(0, current) if current is not None else None
    assert made_before_intent(found, pending, cur) is before


def test_a_401_on_the_old_key_that_derive_does_not_confirm_keeps_it_retiring(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    old = store.published
    assert old is not None
    real_probe = clob.probe_key
    refused = {"once": True}

    def hiccup(k: Key) -> None:
        if k.api_key == old.api_key and refused.pop("once", False):
            raise Unauthorized("401 Unauthorized/Invalid api key")
        real_probe(k)

    clob.probe_key = hiccup  # type: ignore[method-assign]
    result = run(rot, force=True)
    assert result.rotated and result.invalidated == 0
    assert [r.key.api_key for r in store.state.retiring] == [old.api_key]  # type: ignore[union-attr]
    assert rot.metrics.old_key_invalidated.labels(credential="c1")._value.get() == 0
    assert f"derive:{old.nonce}" in clob.calls
    clock.now += POLICY.grace
    run(rot)
    assert old.api_key not in clob.live  # DELETEd at grace, as any retiring key
    assert store.state.history[-1].how == "deleted"  # type: ignore[union-attr]


def test_a_fresh_intent_walks_past_a_taken_nonce_and_reports_the_key(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    hand = key(1, clock.now)
    clob.by_nonce[1] = clob.live[hand.api_key] = hand
    assert run(rot, force=True).rotated
    state = store.state
    assert state.current.nonce == 2 and store.published.nonce == 2  # type: ignore[union-attr]
    assert state.next_nonce == 3  # type: ignore[union-attr]
    assert [(u.key_prefix, u.nonce) for u in state.audit.unmanaged] == [(hand.masked, 1)]  # type: ignore[union-attr]
    assert hand.api_key in clob.live and hand.api_key not in {r.key.api_key for r in state.retiring}  # type: ignore[union-attr]
    assert clob.calls.count("create:1") == 1 and "derive:1" in clob.calls and "create:2" in clob.calls


@pytest.mark.parametrize("own", [True, False], ids=["its-own-key", "made-before-it"])
def test_a_resumed_intent_keeps_its_own_key_and_walks_past_an_older_one(world, own: bool) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    current = minted(0, clock.now - 50)
    found = minted(1, clock.now + 1 if own else clock.now - 60)  # made after the intent, or before
    for k in (current, found):
        clob.by_nonce[k.nonce] = clob.live[k.api_key] = k
    store.state = CredentialState(
        current=current,
        pending=Pending(1, clock.now, "dead", clock.now - 1, address="0xA"),
        next_nonce=2,
        published_nonce=0,
    )
    store.published = current
    assert run(rot).rotated
    state = store.state
    if own:
        assert state.current.api_key == found.api_key and state.audit is None  # type: ignore[union-attr]
        assert "create:1" not in clob.calls
    else:
        assert state.current.nonce == 2 and state.current.api_key != found.api_key  # type: ignore[union-attr]
        assert [(u.key_prefix, u.nonce) for u in state.audit.unmanaged] == [(found.masked, 1)]  # type: ignore[union-attr]
        assert found.api_key in clob.live
    assert store.published.api_key == state.current.api_key  # type: ignore[union-attr]


def test_keys_a_pass_noted_stay_new_to_the_next_audit() -> None:
    audited = UnmanagedKey("aaaa…0001", None, 10.0)
    walked = UnmanagedKey("bbbb…0002", 3, 20.0)
    assert _reported(AuditRecord(10.0, (audited, walked))) == {"aaaa…0001"}
    assert _reported(AuditRecord(0.0, (walked,))) == set()
    assert _reported(None) == set()


def test_the_published_path_round_trips_and_is_unknown_when_absent() -> None:
    state = CredentialState(current=key(0), published_nonce=0, published_path="team/mm1")
    raw = state.to_dict()
    assert raw["published_path"] == "team/mm1" and raw["schema"] == 3
    assert CredentialState.from_dict(raw) == state
    raw.pop("published_path")
    assert CredentialState.from_dict(raw) == replace(state, published_path=None)
    assert "published_path" not in replace(state, published_path=None).to_dict()


def test_a_moved_path_is_published_at_once_and_the_old_one_left(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, _clob, rot = world
    run(rot)
    key0 = store.published
    assert store.state.published_path == "pub/c1"  # type: ignore[union-attr]
    store.state = replace(store.state, published_path="old/c1")  # type: ignore[type-var]
    result = run(rot)
    assert result.outcome == "nothing-due"
    assert store.state.published_path == "pub/c1" and store.published == key0  # type: ignore[union-attr]


def test_a_state_without_a_recorded_path_looks_once_and_records_it(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, _clob, rot = world
    run(rot)
    store.state = replace(store.state, published_path=None)  # type: ignore[type-var]
    publishes = []
    real = store.publish
    store.publish = lambda ref, k: publishes.append(k) or real(ref, k)  # type: ignore[method-assign, func-returns-value]
    run(rot)
    assert store.state.published_path == "pub/c1" and publishes == []  # type: ignore[union-attr]


def test_a_lost_states_recovery_leaves_a_key_another_state_of_the_wallet_manages() -> None:
    """Shared wallet: below the lost state's published key sits a key its sibling credential manages.
    Even under ``adopt_existing`` it is the sibling's, never retired; the key the store published
    before is retired (provably ours)."""
    from rotator.metrics import Metrics
    from rotator.model import CredentialRef
    from rotator.rotation import Rotator
    from tests.memory_store import MemoryStore as ReferenceStore
    from tests.unit.test_rotation import Clock

    clock = Clock()
    store, clob = ReferenceStore(), FakeClob(clock)
    rot = Rotator(store, clob, Metrics(), clock=clock, sleep=clock.sleep, owner="me", alive=lambda o: False)
    mine, sibling = CredentialRef("c1", "pub/c1"), CredentialRef("c0", "pub/c0")
    k0, k1, k2 = key(0), key(1), key(2)
    for k in (k0, k1, k2):
        clob.by_nonce[k.nonce] = clob.live[k.api_key] = k
    store.save(sibling, CredentialState(current=k1, next_nonce=2, published_nonce=1), None)
    store.publish(mine, k0)
    store.publish(mine, k2)  # the lost state's current key; k0 was published before it
    result = rot.run_pass(mine, lambda: Wallet(), replace(POLICY, adopt_existing=True))  # type: ignore[arg-type, return-value]
    assert result.rotated
    state = store.load(mine).state
    assert sorted((r.key.nonce, r.reason) for r in state.retiring) == [(0, "recovered"), (2, "rotated")]
    assert state.audit is None and k1.api_key in clob.live
