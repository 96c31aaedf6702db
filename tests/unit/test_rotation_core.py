"""Issue 13 (core items): decisions by identity, the CLOB's clock, schema versions, wallet-bound intents,
recovery of a lost state, probe errors that cannot tell, and per-step audit durations.

Fakes of our own ports (from test_rotation) only; the end-to-end proofs are in
tests/integration/test_core_e2e.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from rotator.errors import Transient
from rotator.model import CredentialState, Pending
from tests.unit.test_rotation import (  # noqa: F401
    POLICY,
    REF,
    Clock,
    FakeClob,
    MemoryStore,
    Wallet,
    key,
    run,
    world,
)

__all__ = ["world"]


def test_transient_probe_error_is_unknown_not_a_failed_pass(world, caplog) -> None:  # type: ignore[no-untyped-def]
    """Item 19: three 500s on the key probe cannot tell whether the key works: nothing-due, no failure."""
    clock, store, clob, rot = world
    run(rot)
    before = store.published

    def flaky(k: object) -> None:
        raise Transient("GET /balance-allowance: 500 server error", status=500)

    clob.probe_key = flaky  # type: ignore[method-assign]
    clock.now += 1
    with caplog.at_level(logging.INFO, logger="rotator.audit"):
        result = run(rot)
    assert result.outcome == "nothing-due" and result.ok
    assert store.published == before
    m = rot.metrics.registry
    failures = m.get_sample_value("rotator_rotations_total", {"credential": "c1", "result": "failure"})
    assert failures in (None, 0)
    probe = [r for r in caplog.records if getattr(r, "step", None) == "probe"]
    assert [getattr(r, "outcome", None) for r in probe] == ["unknown"]


def test_each_audit_event_carries_its_own_steps_duration(world, caplog) -> None:  # type: ignore[no-untyped-def]
    """Item 22: a slow create followed by a failure is not logged with the whole pass's elapsed time."""
    _clock, _store, clob, rot = world
    ticks = {"t": 0.0}
    rot.timer = lambda: ticks["t"]  # type: ignore[method-assign]
    real_derive, real_create = clob.derive_key, clob.create_key

    def slow_derive(signer: object, nonce: int):  # type: ignore[no-untyped-def]
        ticks["t"] += 100.0  # the bootstrap walk takes 100 s
        return real_derive(signer, nonce)

    def slow_create(signer: object, nonce: int):  # type: ignore[no-untyped-def]
        ticks["t"] += 30.0
        return real_create(signer, nonce)

    clob.derive_key = slow_derive  # type: ignore[method-assign]
    clob.create_key = slow_create  # type: ignore[method-assign]
    clob.unverifiable.add(0)

    def verify_fails(k: object) -> None:
        ticks["t"] += 5.0
        raise Transient("boom")

    clob.probe_key = verify_fails  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="rotator.audit"):
        result = run(rot)
    assert result.outcome == "failed"
    durations = {(r.step, r.outcome): r.duration for r in caplog.records if hasattr(r, "duration")}  # type: ignore[attr-defined]
    assert durations[("create", "created")] == 30.0
    assert durations[("intent", "recorded")] == 100.0
    # The failure event is the failing step's (verify), not the pass's 135 s.
    failed = durations[("verify", "failed")]
    assert failed < 100.0


def test_emergency_replaces_a_key_stamped_by_a_clock_running_ahead(world) -> None:  # type: ignore[no-untyped-def]
    """Item 1: a key created by a worker whose clock ran 10 min ahead is still the one to replace."""
    clock, store, clob, rot = world
    clock.now += 600
    run(rot)
    leaked = store.published
    clock.now -= 600  # this worker's clock is right
    result = run(rot, force=True, emergency=True)
    assert result.outcome == "rotated"
    assert leaked.api_key not in clob.live  # type: ignore[union-attr]
    assert store.published.nonce == 1  # type: ignore[union-attr]


def test_force_with_a_clock_behind_still_rotates_once(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, _clob, rot = world
    run(rot)
    clock.now -= 3600
    assert run(rot, force=True).outcome == "rotated"
    assert store.published.nonce == 1  # type: ignore[union-attr]


def test_the_intent_records_the_wallet(world) -> None:  # type: ignore[no-untyped-def]
    """Item 6: the intent names the wallet, so a resume knows which wallet may hold its key."""
    _clock, store, clob, rot = world
    clob.lose_create_answer = True
    real_derive = clob.derive_key
    seen: list[str | None] = []

    def derive(signer: object, nonce: int):  # type: ignore[no-untyped-def]
        seen.append(store.state.pending.address if store.state and store.state.pending else None)
        return real_derive(signer, nonce)

    clob.derive_key = derive  # type: ignore[method-assign]
    assert run(rot, wallet="0xWalletA").outcome == "rotated"
    assert seen[-1] == "0xWalletA"  # recorded before the create's lost answer was recovered


@pytest.mark.parametrize("key_recorded", [False, True], ids=["intent-only", "key-recorded"])
def test_a_resume_with_another_wallet_refuses_and_touches_nothing(world, key_recorded: bool) -> None:  # type: ignore[no-untyped-def]
    """Item 6: crash, then a wallet change under the same name: never derive/create with the new wallet."""
    clock, store, clob, rot = world
    k = key(0, clock.now) if key_recorded else None
    if k is not None:  # the crashed pass had created and recorded it
        clob.by_nonce[0] = clob.live[k.api_key] = k
    store.state = CredentialState(
        pending=Pending(0, clock.now, "dead", clock.now + 999, key=k, address="0xOld"), next_nonce=1
    )
    store.version = 1
    before = store.state
    result = run(rot, wallet="0xNew")
    assert result.outcome == "failed" and result.failed_step == "resume"
    assert "0xOld" in (result.error or "") and "0xNew" in (result.error or "")
    assert [c for c in clob.calls if not c.startswith("list")] == []
    assert store.state.pending.nonce == 0 and store.state.pending.wallet == "0xOld"  # type: ignore[union-attr]
    assert store.published is None and before.next_nonce == store.state.next_nonce  # type: ignore[union-attr]
    # Same wallet (any letter case) completes it.
    assert run(rot, wallet="0xOLD").outcome == "rotated"
    assert store.published.nonce == 0  # type: ignore[union-attr]


def _lose_state_after_two_rotations(world):  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    clock.now += 100
    run(rot)  # nonce 0 retiring, nonce 1 current and published
    store.state, store.version = None, 0  # the state is force-deleted; the published secret stays
    return clob.by_nonce[0], clob.by_nonce[1]


def test_a_lost_state_adopts_the_published_key_and_retires_the_one_its_store_published(world) -> None:  # type: ignore[no-untyped-def]
    """Item 7: the bootstrap after a lost state recovers the published key, never walks past it; the
    key below it was published by this store before: provably ours, it retires with its grace."""
    clock, store, clob, rot = world
    retiring, published = _lose_state_after_two_rotations(world)
    result = run(rot)
    assert result.outcome == "rotated"
    state = store.state
    assert state.current.nonce == 2 and store.published.nonce == 2  # type: ignore[union-attr]
    # The published key is ours (derive proves it): it retires with its grace, as consumers hold it.
    assert sorted((r.key.api_key, r.reason) for r in state.retiring) == [  # type: ignore[union-attr]
        (retiring.api_key, "recovered"),
        (published.api_key, "rotated"),
    ]
    assert {r.revoke_after for r in state.retiring} == {clock.now + 10}  # type: ignore[union-attr]
    assert state.audit is None  # nothing unmanaged  # type: ignore[union-attr]
    clock.now += 10
    run(rot)
    assert set(clob.live) == {state.current.api_key}  # revoked after grace: not orphaned  # type: ignore[union-attr]


def test_a_lost_state_names_and_reports_a_key_below_that_its_store_never_published(world, caplog) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 item 6: a key below the published one that the store never published (made by hand,
    walked past by the bootstrap) cannot be told from ours: left live, named, reported unmanaged."""
    clock, store, clob, rot = world
    hand = key(0, clock.now)
    clob.by_nonce[0] = clob.live[hand.api_key] = hand
    run(rot)  # walks past nonce 0
    clock.now += 100
    run(rot)  # 1 retiring, 2 current
    assert store.state.audit.unmanaged[0].key_prefix == hand.masked  # type: ignore[union-attr]
    store.state, store.version = None, 0
    with caplog.at_level(logging.WARNING, logger="rotator.rotation"):
        assert run(rot).outcome == "rotated"
    state = store.state
    assert sorted((r.key.nonce, r.reason) for r in state.retiring) == [(1, "recovered"), (2, "rotated")]  # type: ignore[union-attr]
    assert hand.api_key in clob.live
    assert [(u.key_prefix, u.nonce) for u in state.audit.unmanaged] == [(hand.masked, 0)]  # type: ignore[union-attr]
    assert state.audit.at == 0.0  # type: ignore[union-attr]  # no audit yet: the first one stays due
    assert any("nonce 0" in r.getMessage() and hand.masked in r.getMessage() for r in caplog.records)
    gauge = rot.metrics.registry.get_sample_value("rotator_unmanaged_keys", {"credential": "c1"})
    assert gauge == 1


def test_a_lost_state_with_adopt_existing_retires_the_keys_below_too(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    retiring, published = _lose_state_after_two_rotations(world)
    policy = replace(POLICY, adopt_existing=True)
    assert rot.run_pass(REF, lambda: Wallet(), policy).outcome == "rotated"  # type: ignore[arg-type]
    assert {r.key.api_key for r in store.state.retiring} == {retiring.api_key, published.api_key}  # type: ignore[union-attr]
    clock.now += 10
    rot.run_pass(REF, lambda: Wallet(), policy)  # type: ignore[arg-type]
    assert set(clob.live) == {store.state.current.api_key}  # type: ignore[union-attr]


def test_a_published_key_that_is_not_live_is_not_adopted(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, clob, rot = world
    _retiring, published = _lose_state_after_two_rotations(world)
    for k in (published, _retiring):  # both revoked behind our back; the server frees their nonces
        del clob.live[k.api_key], clob.by_nonce[k.nonce]
    assert run(rot).outcome == "rotated"
    assert store.state.retiring == () and store.published.nonce == 0  # type: ignore[union-attr]
    assert "derive:1" in clob.calls  # it did ask
