"""States of credentials removed from the config (issue 13 item 4), over the in-memory ports of
``test_rotation``: the decisions and the paths a real server reaches only by chance (a DELETE that
answers 401 with no signer to ask, an intent recorded before a crash). The same over real HTTP, the
file store, OpenBao and moto is in tests/integration/test_orphans.py."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.metrics import Metrics
from rotator.model import CredentialState, Key, Pending, Retiring
from rotator.orphans import orphan_names, retire, serve
from rotator.rotation import RECHECK_WITHOUT_SIGNER, Rotator

from .test_rotation import Clock, FakeClob, MemoryStore, key


class NamedStore(MemoryStore):
    def names(self) -> list[str]:
        return ["_leader", "gone", "kept"] if self.state else []


@pytest.fixture
def world() -> tuple[Clock, NamedStore, FakeClob, Rotator]:
    clock = Clock()
    store = NamedStore()
    clob = FakeClob(clock)
    rot = Rotator(
        store, clob, Metrics(), clock=clock, sleep=clock.sleep, owner="me", alive=lambda o: o == "alive"
    )
    return clock, store, clob, rot


def live(clob: FakeClob, nonce: int, created_at: float = 0.0) -> Key:
    k = key(nonce, created_at)
    clob.live[k.api_key] = k
    clob.by_nonce[nonce] = k
    return k


def put(store: MemoryStore, state: CredentialState) -> None:
    store.state, store.version = state, 1


def test_orphan_names_are_the_stored_states_the_config_does_not_name(world: Any) -> None:
    _clock, store, _clob, rot = world
    assert orphan_names(rot, ["kept"]) == []
    put(store, CredentialState())
    # "_leader" comes from this fake only: real stores filter it (tests/contract).
    assert orphan_names(rot, ["kept", "_leader"]) == ["gone"]


def test_serve_revokes_retiring_keys_on_schedule_and_leaves_the_current_key(world: Any) -> None:
    clock, store, clob, rot = world
    cur, old, newer = live(clob, 3), live(clob, 2), live(clob, 1)
    put(
        store,
        CredentialState(
            current=cur,
            retiring=(Retiring(old, 0, clock.now + 5), Retiring(newer, 0, clock.now + 50)),
            next_nonce=4,
        ),
    )
    assert serve(rot, "gone").outcome == "nothing-due"
    assert serve(rot, "gone", dry_run=True).outcome == "nothing-due"
    clock.now += 5
    dry = serve(rot, "gone", dry_run=True)
    assert (dry.outcome, dry.plan) == ("would-revoke", (f"would-revoke nonce {old.nonce} (grace over)",))
    assert old.api_key in clob.live  # dry run
    result = serve(rot, "gone")
    assert (result.outcome, result.revoked) == ("revoked", 1)
    assert old.api_key not in clob.live and newer.api_key in clob.live and cur.api_key in clob.live
    assert [r.key.nonce for r in store.state.retiring] == [1]
    assert store.state.current == cur and store.state.history[-1].how == "deleted"
    assert rot.metrics.registry.get_sample_value("rotator_retiring_keys", {"credential": "gone"}) == 1


def test_a_401_without_a_signer_to_confirm_it_keeps_the_key_retiring(world: Any) -> None:
    """A key inside the server's propagation delay refuses its own DELETE with 401 too; only derive
    (L1, the signer) can tell, and an orphan has none: the key must not be recorded as revoked."""
    clock, store, clob, rot = world
    propagating = key(5)  # not live for its own L2 calls yet, so its DELETE answers 401
    put(store, CredentialState(retiring=(Retiring(propagating, 0, clock.now),), next_nonce=6))
    result = serve(rot, "gone")
    assert result.outcome == "nothing-due" and result.revoked == 0
    assert store.state.history == ()
    [entry] = store.state.retiring
    assert entry.key == propagating and entry.revoke_after == clock.now + RECHECK_WITHOUT_SIGNER
    assert not [c for c in clob.calls if c.startswith("derive")]


def test_retire_revokes_current_retiring_and_pending_keys_then_archives(world: Any) -> None:
    clock, store, clob, rot = world
    cur, old, pend = live(clob, 3), live(clob, 2), live(clob, 4)
    before = CredentialState(
        current=cur,
        pending=Pending(4, clock.now, "dead-worker", clock.now + 60, key=pend),
        retiring=(Retiring(old, 0, clock.now + 900),),
        next_nonce=5,
        published_nonce=3,
        rotations=3,
    )
    put(store, before)
    dry = retire(rot, "gone", None, dry_run=True)
    assert dry.outcome == "would-retire" and dry.ok
    assert [(h.role, h.nonce) for h in dry.held] == [("current", 3), ("retiring", 2), ("pending", 4)]
    assert store.state == before and len(clob.live) == 3

    result = retire(rot, "gone", None)
    assert (result.outcome, result.revoked, result.left) == ("retired", 3, [])
    assert clob.live == {}
    after = store.state
    assert (after.current, after.pending, after.retiring) == (None, None, ())
    assert after.next_nonce == 5  # a credential added back under this name goes on from here
    assert sorted(h.nonce for h in after.history) == [2, 3, 4]
    assert {h.how for h in after.history} == {"deleted"}
    saves = store.saves
    assert retire(rot, "gone", None).outcome == "retired" and store.saves == saves  # archived: no write


def test_retire_without_a_signer_cannot_resolve_an_intent_and_says_so(world: Any) -> None:
    _clock, store, clob, rot = world
    cur = live(clob, 3)
    made = live(clob, 4)  # a create that landed before the crash; the state never learnt its key
    put(store, CredentialState(current=cur, pending=Pending(4, 0, "dead", 0), next_nonce=5))
    result = retire(rot, "gone", None)
    assert result.outcome == "incomplete" and not result.ok
    assert [str(h) for h in result.left] == ["pending-intent nonce=4 key=?"]
    assert cur.api_key not in clob.live and made.api_key in clob.live
    assert store.state.pending is not None and store.state.pending.nonce == 4  # not forgotten

    result = retire(rot, "gone", lambda: object())  # type: ignore[arg-type,return-value]
    assert (result.outcome, result.revoked) == ("retired", 1)
    assert clob.live == {} and store.state.pending is None


def test_retire_leaves_a_live_rotation_alone_and_an_empty_name_is_reported(world: Any) -> None:
    clock, store, clob, rot = world
    assert retire(rot, "gone", None).outcome == "nothing-stored"
    cur = live(clob, 3)
    put(store, CredentialState(current=cur, pending=Pending(4, 0, "alive", clock.now + 60), next_nonce=5))
    result = retire(rot, "gone", None)
    assert result.outcome == "in-flight-elsewhere" and "alive" in (result.error or "")
    assert cur.api_key in clob.live
