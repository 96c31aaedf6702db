"""Guards the mutation list found missing (issue 26, ``make mutants``): each test here fails when one
safety line of the protocol breaks, where the happy path of the other tests could not tell.

Same in-memory ports as tests/unit/test_rotation.py.
"""

from __future__ import annotations

from rotator.errors import Transient, Unauthorized
from rotator.model import Key
from tests.unit.test_rotation import run, world

__all__ = ["world"]


def on_auth(calls: list[str]) -> list[str]:
    """The fake CLOB's calls that spend ``/auth/*`` (all but probes, which are L2 reads elsewhere)."""
    return [c for c in calls if not c.startswith("probe:")]


def test_a_new_key_that_refuses_its_own_delete_stays_retiring_until_confirmed_gone(world) -> None:  # type: ignore[no-untyped-def]
    """Steps 2 and 5, I3: a key that never verifies is revoked at once; while it still propagates it
    answers its own DELETE with 401 and derive still finds it, so it stays retiring (tried again in
    15 s), never recorded as gone while it lives. Once it answers, the next pass revokes it."""
    clock, store, clob, rot = world
    run(rot)
    clob.unverifiable.add(1)
    delete = clob.delete_key

    def refused_while_propagating(k: Key) -> None:
        if k.nonce in clob.unverifiable:
            clob.calls.append(f"delete:{k.nonce}")
            raise Unauthorized("401 Unauthorized/Invalid api key")
        delete(k)

    clob.delete_key = refused_while_propagating  # type: ignore[method-assign]
    clock.now += 100
    result = run(rot)
    assert result.outcome == "failed" and result.failed_step == "verify"
    new = clob.by_nonce[1]
    assert new.api_key in clob.live
    [entry] = store.state.retiring  # type: ignore[union-attr]
    assert entry.key.api_key == new.api_key and entry.reason == "unverified"
    assert entry.revoke_after > clock.now  # tried again later, not every pass
    assert [h.nonce for h in store.state.history] == []  # type: ignore[union-attr]

    clob.unverifiable.clear()  # propagated: it works, and its DELETE does too
    clock.now += 16
    run(rot)
    assert new.api_key not in clob.live
    assert all(r.key.api_key != new.api_key for r in store.state.retiring)  # type: ignore[union-attr]
    assert [(h.nonce, h.how) for h in store.state.history] == [(1, "deleted")]  # type: ignore[union-attr]


def test_a_rotation_cycle_spends_one_create_and_one_delete_on_auth(world) -> None:  # type: ignore[no-untyped-def]
    """The /auth/* budget: a rotation is one create, at a nonce never used before (the intent moves
    next_nonce on), and its old key's revocation after grace one DELETE; every check in between is
    a probe, off /auth/*."""
    clock, store, clob, rot = world
    run(rot)
    clob.calls.clear()
    clock.now += 100
    assert run(rot).outcome == "rotated"
    assert on_auth(clob.calls) == ["create:1"]
    assert store.state.next_nonce == 2  # type: ignore[union-attr]
    clob.calls.clear()
    clock.now += 10
    assert run(rot).outcome == "revoked"
    assert on_auth(clob.calls) == ["delete:0"]
    clob.calls.clear()
    clock.now += 100
    assert run(rot).outcome == "rotated"
    assert on_auth(clob.calls) == ["create:2"]


def test_an_emergency_revocation_that_fails_is_retried_by_the_next_pass_not_after_grace(world) -> None:  # type: ignore[no-untyped-def]
    """An emergency makes the old key due now: when its DELETE fails, it stays retiring due now, and
    the very next pass revokes it, well inside what would have been its grace."""
    clock, store, clob, rot = world
    run(rot)
    leaked = store.published
    delete = clob.delete_key

    def down(k: Key) -> None:
        raise Transient("503")

    clob.delete_key = down  # type: ignore[method-assign]
    assert run(rot, force=True, emergency=True).outcome == "rotated"
    [entry] = store.state.retiring  # type: ignore[union-attr]
    assert entry.key == leaked and entry.reason == "emergency" and entry.revoke_after <= clock.now
    assert leaked.api_key in clob.live  # type: ignore[union-attr]

    clob.delete_key = delete  # type: ignore[method-assign]
    clock.now += 1  # the grace is 10 s
    assert run(rot).revoked == 1
    assert leaked.api_key not in clob.live  # type: ignore[union-attr]
    assert store.state.retiring == ()  # type: ignore[union-attr]


def test_force_replaces_a_key_stamped_a_few_minutes_ahead_by_its_identity(world) -> None:  # type: ignore[no-untyped-def]
    """Step 4: --force replaces the key current when the pass read the state, whatever its
    created_at says. A key stamped by a clock 4 min ahead is not absurd (no clamp brings it back),
    so only the identity check makes this pass rotate it."""
    clock, store, _clob, rot = world
    clock.now += 240
    run(rot)
    stamped = store.published
    clock.now -= 240
    assert run(rot, force=True).outcome == "rotated"
    assert store.published.nonce == stamped.nonce + 1  # type: ignore[union-attr]
    assert run(rot, force=False).outcome == "nothing-due"  # and only once
