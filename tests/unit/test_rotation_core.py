"""Issue 13 (core items): decisions by identity, the CLOB's clock, schema versions, wallet-bound intents,
recovery of a lost state, probe errors that cannot tell, and per-step audit durations.

Fakes of our own ports (from test_rotation) only; the end-to-end proofs are in
tests/integration/test_core_e2e.py.
"""

from __future__ import annotations

import logging

from rotator.errors import Transient
from tests.unit.test_rotation import REF, Clock, FakeClob, MemoryStore, run, world  # noqa: F401

__all__ = ["world"]


def test_transient_probe_error_is_unknown_not_a_failed_pass(world, caplog) -> None:  # type: ignore[no-untyped-def]
    """Item 19: three 500s on the key probe cannot tell whether the key works: nothing-due, no failure."""
    clock, store, clob, rot = world
    run(rot)
    before = store.published

    def flaky(k: object) -> list[str]:
        raise Transient("GET /auth/api-keys: 500 server error", status=500)

    clob.list_keys = flaky  # type: ignore[method-assign]
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

    def verify_fails(k: object) -> list[str]:
        ticks["t"] += 5.0
        raise Transient("boom")

    clob.list_keys = verify_fails  # type: ignore[method-assign]
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
