"""The rotation state machine with in-memory ports (the one place fakes of our own ports are allowed).

End-to-end behaviour over real HTTP is in tests/integration; here are the decisions and the rare
paths that are hard to reach through a real server (a crash between saving and publishing, a
verification that never succeeds, a lost race in the middle of a pass).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from dataclasses import replace

import pytest

from rotator.errors import Rejected, Transient, Unauthorized, Unavailable, VersionConflict
from rotator.metrics import Metrics
from rotator.model import (
    Ack,
    AuditRecord,
    CredentialRef,
    CredentialState,
    Key,
    Pending,
    Retiring,
    Secret,
    ack_prefix,
)
from rotator.rotation import Policy, Rotator, due_revocations, lease_blocked, rotation_reason
from rotator.stores.base import Version
from tests.memory_store import MemoryStore as ReferenceStore

REF = CredentialRef("c1", "pub/c1")
POLICY = Policy(
    rotate_every=100.0, grace=10.0, verify_timeout=5.0, min_grace=60.0, consumer_ttl=600.0, verify_backoff=1.0
)


def key(nonce: int, created_at: float = 0.0) -> Key:
    return Key(
        f"id-{nonce:04d}-xxxx", Secret(f"secret-{nonce}"), Secret(f"pass-{nonce}"), "0xA", nonce, created_at
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class MemoryStore(ReferenceStore):
    """The reference store (tests/memory_store.py), driving one credential under any name, with
    shortcuts to it: ``state``/``version``/``published`` read and set it, ``fail_publish`` makes
    publishing fail, ``conflict_on_save = n`` makes the n-th save lose its compare-and-set."""

    def __init__(self) -> None:
        super().__init__()
        self.conflict_on_save: int | None = None
        self.saves = 0

    def _slot(self, ref: CredentialRef) -> str:
        return "c1"

    def _path(self, ref: CredentialRef) -> str:
        return "pub/c1"

    @property
    def state(self) -> CredentialState | None:
        return self.load(REF).state if "c1" in self.data.states else None

    @state.setter
    def state(self, state: CredentialState | None) -> None:
        if state is None:
            self.data.states.pop("c1", None)
        else:
            self.data.states["c1"] = (self.version or 1, json.dumps(state.to_dict()))

    @property
    def version(self) -> int:
        return self.data.states.get("c1", (0, ""))[0]

    @version.setter
    def version(self, version: int) -> None:
        if "c1" in self.data.states:
            self.data.states["c1"] = (version, self.data.states["c1"][1])

    @property
    def published(self) -> Key | None:
        return self.read_published(REF)

    @published.setter
    def published(self, key: Key | None) -> None:
        if key is None:
            self.data.published.pop("pub/c1", None)
        else:
            self.data.published["pub/c1"] = json.dumps(key.to_dict())

    @property
    def fail_publish(self) -> bool:
        return "publish" in self.data.faults

    @fail_publish.setter
    def fail_publish(self, fail: bool) -> None:
        if fail:
            self.data.fail(Unavailable("down"), "publish")
        else:
            self.data.faults.pop("publish", None)

    @property
    def acked(self) -> dict[str, Ack]:
        return self.data.acks.setdefault("c1", {})

    def save(self, ref: CredentialRef, state: CredentialState, expected: Version | None) -> Version:
        self.saves += 1
        if self.conflict_on_save == self.saves:
            raise VersionConflict("moved")
        return super().save(ref, state, expected)


class FakeClob:
    """Keys per nonce; knobs for the failure modes the protocol must survive."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.live: dict[str, Key] = {}
        self.by_nonce: dict[int, Key] = {}
        self.unverifiable: set[int] = set()
        self.lose_create_answer = False
        self.calls: list[str] = []

    def server_time(self) -> float:
        return self.clock.now

    def create_key(self, signer: object, nonce: int) -> Key:
        self.calls.append(f"create:{nonce}")
        if nonce in self.by_nonce:
            raise Rejected("400 Could not create api key", status=400)
        k = key(nonce, self.clock.now)
        self.by_nonce[nonce] = k
        self.live[k.api_key] = k
        if self.lose_create_answer:
            raise Transient("timed out")
        return k

    def derive_key(self, signer: object, nonce: int) -> Key | None:
        self.calls.append(f"derive:{nonce}")
        k = self.by_nonce.get(nonce)
        return k if k is not None and k.api_key in self.live else None

    def list_keys(self, k: Key) -> list[str]:
        self.calls.append(f"list:{k.nonce}")
        if k.api_key not in self.live or k.nonce in self.unverifiable:
            raise Unauthorized("401")
        return list(self.live)

    def probe_key(self, k: Key) -> None:
        self.calls.append(f"probe:{k.nonce}")
        if k.api_key not in self.live or k.nonce in self.unverifiable:
            raise Unauthorized("401")

    def closed_only(self, k: Key) -> bool:
        self.calls.append(f"closed-only:{k.nonce}")
        if k.api_key not in self.live:
            raise Unauthorized("401")
        return False

    def delete_key(self, k: Key) -> None:
        self.calls.append(f"delete:{k.nonce}")
        if k.api_key not in self.live:
            raise Unauthorized("401")
        del self.live[k.api_key]

    # The wallet's read-only and builder key lists (issue 27): this fake wallet holds none.
    def list_readonly_keys(self, k: Key) -> list[str]:
        self.calls.append(f"list-readonly:{k.nonce}")
        return []

    def list_builder_keys(self, k: Key) -> list[object]:
        self.calls.append(f"list-builder:{k.nonce}")
        return []


@pytest.fixture
def world() -> tuple[Clock, MemoryStore, FakeClob, Rotator]:
    clock = Clock()
    store = MemoryStore()
    clob = FakeClob(clock)
    rot = Rotator(
        store, clob, Metrics(), clock=clock, sleep=clock.sleep, owner="me", alive=lambda o: o == "alive"
    )
    return clock, store, clob, rot


class Wallet:
    """The one thing the rotation asks of a signer itself: its address (the fake CLOB signs nothing)."""

    def __init__(self, address: str = "0xA") -> None:
        self.address = address


def run(rot: Rotator, wallet: str = "0xA", **kw: bool):  # type: ignore[no-untyped-def]
    return rot.run_pass(REF, lambda: Wallet(wallet), POLICY, **kw)  # type: ignore[arg-type, return-value]


# -- pure decisions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current_created", "now", "force_nonce", "expected"),
    [
        (None, 0, None, "bootstrap"),
        (0.0, 50, None, None),
        (0.0, 100, None, "due"),
        (0.0, 50, 0, "forced"),
        (600.0, 50, 0, "forced"),  # stamped by a clock running ahead: still the key to replace
        (20.0, 50, 7, None),  # someone rotated after this forced pass read the state: rotate once only
    ],
)
def test_rotation_reason(
    current_created: float | None, now: float, force_nonce: int | None, expected: str | None
) -> None:
    state = CredentialState(current=key(0, current_created) if current_created is not None else None)
    assert rotation_reason(state, now, POLICY, force_nonce) == expected


def test_due_revocations_respect_grace() -> None:
    r1, r2 = Retiring(key(1), 0, 10), Retiring(key(2), 0, 20)
    state = CredentialState(retiring=(r1, r2))
    assert due_revocations(state, 9.99) == []
    assert due_revocations(state, 10) == [r1]
    assert due_revocations(state, 25) == [r1, r2]


@pytest.mark.parametrize(
    ("owner", "lease_until", "now", "blocked"),
    [("me", 100, 50, False), ("alive", 100, 50, True), ("alive", 100, 150, False), ("dead", 100, 50, False)],
)
def test_lease(owner: str, lease_until: float, now: float, blocked: bool) -> None:
    pending = Pending(1, 0, owner, lease_until)
    assert lease_blocked(pending, now, "me", lambda o: o == "alive") is blocked


# -- execution ------------------------------------------------------------------------------------
def test_bootstrap_then_rotate_then_revoke(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    assert run(rot).outcome == "rotated"
    first = store.published
    assert first is not None and first.nonce == 0 and store.state.published_nonce == 0  # type: ignore[union-attr]
    clock.now += 100
    assert run(rot).outcome == "rotated"
    assert store.published.nonce == 1  # type: ignore[union-attr]
    assert [r.key.nonce for r in store.state.retiring] == [0]  # type: ignore[union-attr]
    clock.now += 9
    assert run(rot).outcome == "nothing-due"
    clock.now += 1
    assert run(rot).outcome == "revoked"
    assert first.api_key not in clob.live
    assert store.state.history[-1].how == "deleted"  # type: ignore[union-attr]


def test_publish_interrupted_is_finished_by_the_next_pass(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, _clob, rot = world
    run(rot)
    clock.now += 100
    store.fail_publish = True
    result = run(rot)
    assert result.outcome == "failed" and result.failed_step == "promote"
    assert store.state.current.nonce == 1 and store.published.nonce == 0  # type: ignore[union-attr]
    assert store.state.published_nonce == 0  # type: ignore[union-attr]
    store.fail_publish = False
    run(rot)
    assert store.published.nonce == 1 and store.state.published_nonce == 1  # type: ignore[union-attr]


def test_key_that_never_verifies_is_abandoned_and_revoked(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    published = store.published
    clob.unverifiable.add(1)
    clock.now += 100
    result = run(rot)
    assert result.outcome == "failed" and result.failed_step == "verify"
    assert "did not verify" in (result.error or "")
    assert store.published == published  # I5
    assert store.state.pending is None  # type: ignore[union-attr]
    assert clob.by_nonce[1].api_key not in clob.live  # I3: revoked, not orphaned
    assert store.state.history[-1].nonce == 1  # type: ignore[union-attr]
    clob.unverifiable.clear()
    clock.now += 1
    assert run(rot).outcome == "rotated"
    assert store.published.nonce == 2  # type: ignore[union-attr]


def test_lost_create_answer_is_recovered_by_derive_never_by_creating_again(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, clob, rot = world
    clob.lose_create_answer = True
    assert run(rot).outcome == "rotated"
    assert clob.calls.count("create:0") == 1
    # bootstrap walk, the create whose answer was lost, then the derive that recovers it
    assert clob.calls[:3] == ["derive:0", "create:0", "derive:0"]
    assert store.published == clob.by_nonce[0]


def test_intent_recovered_after_crash_before_create(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    # A dead worker recorded the intent for nonce 0 and died before creating.
    store.state = CredentialState(pending=Pending(0, clock.now, "dead", clock.now + 999), next_nonce=1)
    store.version = 1
    assert run(rot).outcome == "rotated"
    assert store.published.nonce == 0  # type: ignore[union-attr]
    assert clob.calls[:2] == ["derive:0", "create:0"]


def test_live_foreign_lease_blocks_the_pass(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    store.state = CredentialState(pending=Pending(0, clock.now, "alive", clock.now + 999), next_nonce=1)
    store.version = 1
    assert run(rot).outcome == "in-flight-elsewhere"
    assert clob.calls == []
    clock.now += 1000  # lease ran out: take over
    assert run(rot).outcome == "rotated"


def test_lost_race_is_clean(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, clob, rot = world
    store.conflict_on_save = 1
    result = run(rot)
    assert result.outcome == "lost-race" and result.ok
    assert clob.calls == ["derive:0"]  # no key created by the loser


def test_rejected_current_key_rotates_without_waiting(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    old = store.published
    del clob.live[old.api_key]  # type: ignore[union-attr]  # revoked behind our back
    clock.now += 1
    assert run(rot).outcome == "rotated"
    assert store.published.nonce == 1  # type: ignore[union-attr]


def test_emergency_revokes_old_keys_now(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, clob, rot = world
    run(rot)
    old = store.published
    result = run(rot, force=True, emergency=True)
    assert result.outcome == "rotated"
    assert old.api_key not in clob.live  # type: ignore[union-attr]
    assert store.state.retiring == ()  # type: ignore[union-attr]


def test_server_that_keeps_one_key_is_detected(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    old = store.published
    real_create = clob.create_key

    def single_key_create(signer: object, nonce: int) -> Key:
        for k in list(clob.live.values()):
            del clob.live[k.api_key]
        return real_create(signer, nonce)

    clob.create_key = single_key_create  # type: ignore[method-assign]
    clock.now += 100
    result = run(rot)
    assert result.rotated and result.invalidated == 1
    assert store.state.retiring == () and store.state.history[-1].how == "invalidated-by-server"  # type: ignore[union-attr]
    assert rot.metrics.old_key_invalidated.labels(credential="c1")._value.get() == 1
    assert old is not None


def test_bootstrap_skips_nonces_made_by_hand(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, clob, rot = world
    for n in (0, 1):
        clob.create_key(None, n)
    run(rot)
    assert store.published.nonce == 2  # type: ignore[union-attr]
    assert store.state.retiring == ()  # type: ignore[union-attr]


def test_failure_counts_in_metrics(world) -> None:  # type: ignore[no-untyped-def]
    _clock, store, _clob, rot = world
    store.fail_publish = True
    run(rot)
    m = rot.metrics.registry
    assert m.get_sample_value("rotator_rotations_total", {"credential": "c1", "result": "failure"}) == 1
    store.fail_publish = False
    run(rot)  # finishes the interrupted promotion
    assert store.published is not None
    assert run(rot, force=True).rotated
    assert m.get_sample_value("rotator_rotations_total", {"credential": "c1", "result": "success"}) == 1


def test_verify_waits_through_propagation_delay(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    attempts = itertools.count()
    real_probe = clob.probe_key

    def slow(k: Key) -> None:
        if next(attempts) < 2:
            raise Unauthorized("401 not yet")
        real_probe(k)

    clob.probe_key = slow  # type: ignore[method-assign]
    assert run(rot).outcome == "rotated"
    assert clock.now >= 1000 + 1 + 2  # backed off 1 s then 2 s
    assert replace(store.published, created_at=0) is not None  # type: ignore[type-var]


def test_a_stale_publish_is_repaired_before_the_key_is_revoked(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    first = store.published
    clock.now += 100
    run(rot)
    # A stalled worker wakes up and publishes the old key over the new one.
    store.published = first
    clock.now += 10  # the old key's grace is over
    assert run(rot).outcome == "revoked"
    assert store.published == store.state.current  # type: ignore[union-attr]
    assert first.api_key not in clob.live  # type: ignore[union-attr]


def test_a_daemon_checks_the_current_key_once_per_probe_every(world) -> None:  # type: ignore[no-untyped-def]
    clock, _store, clob, rot = world
    policy = replace(POLICY, probe_every=60.0)
    rot.run_pass(REF, lambda: Wallet(), policy)  # bootstrap: the new key was verified just now
    clob.calls.clear()
    for _ in range(5):
        clock.now += 10
        assert rot.run_pass(REF, lambda: Wallet(), policy).outcome == "nothing-due"
    assert clob.calls == []  # nothing at all on the CLOB while the last check is fresh
    clock.now += 15
    rot.run_pass(REF, lambda: Wallet(), policy)
    assert clob.calls == ["probe:0"]
    # A one-shot run (probe_every 0) checks on every pass.
    clob.calls.clear()
    run(rot)
    run(rot)
    assert clob.calls == ["probe:0", "probe:0"]


def test_a_delete_answered_200_is_confirmed_before_the_key_leaves_retiring(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    run(rot)
    run(rot, force=True)
    old = store.state.retiring[0].key
    real_delete = clob.delete_key
    clob.delete_key = lambda k: clob.calls.append(f"delete:{k.nonce}")  # type: ignore[method-assign]
    clock.now += 11  # grace is over
    assert run(rot).revoked == 0
    assert [r.key.api_key for r in store.state.retiring] == [old.api_key]  # still accounted for
    clob.delete_key = real_delete  # type: ignore[method-assign]
    clock.now += 16  # RECHECK_LIVE_KEY later
    assert run(rot).revoked == 1
    assert store.state.retiring == () and old.api_key not in clob.live


def test_a_worker_that_may_not_work_starts_no_step(world) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM, or a daemon replica that lost the leader lease: no new step, nothing half-done."""
    clock, store, clob, rot = world
    run(rot)
    run(rot, force=True)
    clock.now += 11  # the old key's grace is over, and the current key is not due
    stop = True
    rot.stopping = lambda: stop
    clob.calls.clear()
    before = store.state
    result = run(rot, force=True)
    assert result.outcome == "stopped" and result.ok
    assert clob.calls == [] and store.state == before  # no delete, no intent
    stop = False
    assert run(rot).revoked == 1


def test_a_worker_that_may_not_work_starts_no_rotation_when_nothing_is_to_revoke(world) -> None:  # type: ignore[no-untyped-def]
    """Issue 26: the check before the issue step, on its own (no revocation due to stop earlier)."""
    clock, store, clob, rot = world
    run(rot)
    clock.now += POLICY.rotate_every  # the current key is due; nothing retires
    rot.stopping = lambda: True
    clob.calls.clear()
    before = store.state
    result = run(rot)
    assert result.outcome == "stopped" and result.ok
    assert clob.calls == [] and store.state == before  # no intent recorded, no key created


# -- what a pass tells operators ------------------------------------------------------------------
def audit_records(caplog: pytest.LogCaptureFixture, outcome: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rotator.audit" and getattr(r, "outcome", None) == outcome]


def test_a_failed_pass_logs_its_audit_event_as_an_error(world, caplog) -> None:  # type: ignore[no-untyped-def]
    _clock, store, _clob, rot = world
    store.fail_publish = True
    caplog.set_level(logging.INFO, logger="rotator")
    result = run(rot)
    assert result.outcome == "failed" and result.failed_step == "promote"
    [event] = audit_records(caplog, "failed")
    assert event.levelno == logging.ERROR and getattr(event, "step", None) == "promote"


def test_a_failed_revocation_logs_at_warning(world, caplog) -> None:  # type: ignore[no-untyped-def]
    clock, _store, clob, rot = world
    run(rot)
    run(rot, force=True)
    clock.now += 11

    def down(k: Key) -> None:
        raise Transient("503")

    clob.delete_key = down  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="rotator")
    assert run(rot).ok
    [event] = audit_records(caplog, "failed")
    assert event.levelno == logging.WARNING and getattr(event, "step", None) == "revoke"


def test_dry_run_says_what_it_would_do_why_and_at_which_nonce(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    assert run(rot, dry_run=True).plan == ("would-rotate (bootstrap) nonce 0",)
    run(rot)
    clock.now += 5
    run(rot, force=True)  # nonce 1 current, nonce 0 retiring until +10
    before, calls = store.state, len(clob.calls)
    assert run(rot, dry_run=True).outcome == "nothing-due"
    clock.now += 11
    dry = run(rot, dry_run=True)
    assert (dry.outcome, dry.plan) == ("would-revoke", ("would-revoke nonce 0 (grace over)",))
    assert run(rot, dry_run=True, force=True).plan == (
        "would-rotate (forced) nonce 2",
        "would-revoke nonce 0 (grace over)",
    )
    clock.now += 3 * 3600 + 61
    dry = run(rot, dry_run=True)
    assert dry.outcome == "would-rotate"
    assert dry.plan == ("would-rotate (due, age 3h1m) nonce 2", "would-revoke nonce 0 (grace over)")
    assert store.state == before and len(clob.calls) == calls  # a dry run changes and asks nothing


def test_dry_run_honours_consumer_acknowledgements(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, _clob, rot = world
    policy = replace(POLICY, grace=1000.0, min_grace=5.0, consumer_ttl=30.0)

    def go(**kw: bool):  # type: ignore[no-untyped-def]
        return rot.run_pass(REF, lambda: Wallet(), policy, **kw)  # type: ignore[arg-type, return-value]

    go()
    clock.now += 1
    go(force=True)  # nonce 0 retires, grace 1000 s
    clock.now += 6  # min_grace is over
    store.ack(REF, "bot", ack_prefix(store.state.current.api_key), clock.now)  # type: ignore[union-attr]
    dry = go(dry_run=True)
    assert (dry.outcome, dry.plan) == ("would-revoke", ("would-revoke nonce 0 (consumers confirmed)",))
    assert go().revoked == 1  # what the real pass does
    store.ack(REF, "bot", "someone-else", clock.now)
    assert go(dry_run=True).outcome == "nothing-due"


def test_the_policys_configurable_defaults_have_one_home_the_config() -> None:
    """``verify_timeout``, ``min_grace`` and ``consumer_ttl`` default in ``config.py``; a Policy
    with its own defaults would quietly disagree with the config the day one of them changes."""
    policy_defaults = {f.name: f.default for f in dataclasses.fields(Policy)}
    for name in ("verify_timeout", "min_grace", "consumer_ttl"):
        assert policy_defaults[name] is dataclasses.MISSING, name


# -- consumers' refusal reports (issue 18) -------------------------------------------------------
DAEMON = replace(POLICY, rotate_every=10_000.0, grace=1000.0, probe_every=600.0)


def daemon_pass(rot: Rotator):  # type: ignore[no-untyped-def]
    return rot.run_pass(REF, lambda: Wallet(), DAEMON)  # type: ignore[arg-type]


def test_a_confirmed_report_rotates_at_once_with_reason_rejected(world, caplog) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    daemon_pass(rot)  # bootstrap, verified now: the next scheduled probe is 600 s away
    cur = store.state.current
    store.ack(REF, "bot-1", ack_prefix(cur.api_key), clock.now)
    clock.now += 5
    assert daemon_pass(rot).outcome == "nothing-due"
    del clob.live[cur.api_key]  # deleted behind the worker's back
    clob.calls.clear()
    clock.now += 5
    assert daemon_pass(rot).outcome == "nothing-due" and clob.calls == []  # nobody told it yet
    store.report_refusal(REF, "bot-1", ack_prefix(cur.api_key), clock.now, clock.now - 0.5, 3)
    clock.now += 5
    with caplog.at_level(logging.INFO, logger="rotator.audit"):
        assert daemon_pass(rot).outcome == "rotated"
    # One probe of the reported key, a derive at its nonce (nothing there: no lapsed key to revive,
    # issue 24), one look for a restored state (a key at the next nonce? issue 23), then the
    # rotation (whose step 7 probes the old key once more).
    assert clob.calls[: clob.calls.index("create:1")] == ["probe:0", "derive:0", "derive:1"]
    intent = [r for r in caplog.records if getattr(r, "step", None) == "intent"][-1]
    assert intent.reason == "rejected"  # type: ignore[attr-defined]
    assert store.published.nonce == 1  # type: ignore[union-attr]
    recovery = rot.metrics.registry.get_sample_value("rotator_recovery_seconds_sum", {"credential": "c1"})
    assert recovery == pytest.approx(5.5)
    # The stale report names the old key: nothing more happens.
    clob.calls.clear()
    clock.now += 5
    assert daemon_pass(rot).outcome == "nothing-due" and clob.calls == []


def test_reports_the_clob_does_not_confirm_cost_one_probe_per_interval(world, caplog) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    daemon_pass(rot)
    prefix = ack_prefix(store.state.current.api_key)
    clob.calls.clear()
    with caplog.at_level(logging.WARNING, logger="rotator.rotation"):
        for n in range(1, 13):  # a faulty bot reports ever newer refusals, every 5 s, for a minute
            store.report_refusal(REF, "bot-1", prefix, clock.now, clock.now - 300, n)
            clock.now += 5
            assert daemon_pass(rot).outcome == "nothing-due"
    # A probe on the first report, then one per REPORT_PROBE_EVERY (30 s): never one per pass.
    assert clob.calls == ["probe:0"] * 2
    assert sum("but the CLOB accepts it" in r.getMessage() for r in caplog.records) == 2


def test_after_a_false_report_a_later_one_still_replaces_a_key_that_really_died(world) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 item 11: a report the CLOB did not confirm does not switch recovery off for the key."""
    clock, store, clob, rot = world
    daemon_pass(rot)
    cur = store.state.current
    prefix = ack_prefix(cur.api_key)
    first = clock.now - 300
    store.report_refusal(REF, "bot-skewed", prefix, clock.now, first, 1)
    clock.now += 5
    clob.calls.clear()
    assert daemon_pass(rot).outcome == "nothing-due"  # probed: the CLOB accepts it
    assert clob.calls == ["probe:0"]
    for n in range(2, 20):  # the same bot, the same first refusal, counted on: nothing new
        store.report_refusal(REF, "bot-skewed", prefix, clock.now, first, n)
        clock.now += 5
        assert daemon_pass(rot).outcome == "nothing-due"
    assert clob.calls == ["probe:0"]
    del clob.live[cur.api_key]  # now it really dies, and a bot that worked until now says so
    store.report_refusal(REF, "bot-healthy", prefix, clock.now, clock.now - 0.5, 1)
    clock.now += 5
    assert daemon_pass(rot).outcome == "rotated"
    # The probe, whether it only lapsed (derive at its nonce, issue 24), whether the next nonce is taken.
    assert clob.calls[1:4] == ["probe:0", "derive:0", "derive:1"]
    assert "create:1" in clob.calls[4:]


def test_reports_are_one_store_read_per_pass_and_once_a_minute_without_live_consumers(world) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 item 12: every pass while the worker is new to the credential (bots starting with the
    daemon), then once a minute while nobody acknowledges; every pass once a consumer is seen."""
    from rotator.rotation import REPORTS_COLD_START, REPORTS_WITHOUT_CONSUMERS

    clock, store, clob, rot = world

    def reads() -> float:
        labels = {"backend": "memory", "operation": "acks", "result": "success"}
        return rot.metrics.registry.get_sample_value("rotator_store_operations_total", labels) or 0.0

    daemon_pass(rot)  # the bootstrap
    clock.now += 5
    daemon_pass(rot)  # the first read: nobody acknowledges yet
    started = clock.now
    before = reads()
    passes = 0
    while clock.now + 5 - started < REPORTS_COLD_START:
        clock.now += 5
        daemon_pass(rot)
        passes += 1
    assert reads() - before == passes  # the cold start: nobody yet, and every pass reads
    clock.now += 5
    daemon_pass(rot)  # the cold start is over: read, nobody: not again for a minute
    quiet = reads()
    for _ in range(int(REPORTS_WITHOUT_CONSUMERS // 5) - 1):
        clock.now += 5
        daemon_pass(rot)
    assert reads() == quiet
    store.ack(REF, "bot-1", ack_prefix(store.state.current.api_key), clock.now)
    clock.now += 5
    for _ in range(3):
        daemon_pass(rot)
        clock.now += 5
    assert reads() - quiet == 3  # a live consumer: every pass
    assert clob.calls.count("probe:0") == 1  # the bootstrap's verification only


def test_a_storm_of_reports_is_one_probe_and_one_rotation(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    daemon_pass(rot)
    cur = store.state.current
    del clob.live[cur.api_key]
    for i in range(200):
        store.report_refusal(REF, f"bot-{i}", ack_prefix(cur.api_key), clock.now, clock.now - 1, 1)
    clob.calls.clear()
    clock.now += 5
    assert daemon_pass(rot).outcome == "rotated"
    clock.now += 5
    assert daemon_pass(rot).outcome == "nothing-due"
    # The derives ask whether a lapsed key is there to revive (issue 24), then whether the state
    # was restored (issue 23).
    assert clob.calls[: clob.calls.index("create:1")] == ["probe:0", "derive:0", "derive:1"]
    assert [c for c in clob.calls if c.startswith("create")] == ["create:1"]


def test_a_reported_rotation_cut_short_is_measured_when_a_later_pass_completes_it(world) -> None:  # type: ignore[no-untyped-def]
    clock, store, clob, rot = world
    daemon_pass(rot)
    cur = store.state.current
    del clob.live[cur.api_key]
    store.report_refusal(REF, "bot-1", ack_prefix(cur.api_key), clock.now, clock.now, 1)
    clob.unverifiable.add(1)  # the new key never verifies: this pass fails after the probe
    clock.now += 5
    assert daemon_pass(rot).outcome == "failed"
    clob.unverifiable.clear()
    clock.now += 5
    assert daemon_pass(rot).outcome == "rotated"
    count = rot.metrics.registry.get_sample_value("rotator_recovery_seconds_count", {"credential": "c1"})
    assert count == 1


# -- issue 22 item 3: recorded times a wrong clock wrote are clamped when read ---------------------
def test_clamp_brings_absurd_times_back_and_never_shortens_a_grace() -> None:
    from rotator.rotation import CLAMP_AHEAD, clamp_deadlines

    now = 1_800_000_000.0
    sane = CredentialState(
        current=key(3, now - 50),
        retiring=(Retiring(key(2), now - 5, now + POLICY.grace, "rotated"),),
        pending=Pending(4, now, "w", now + POLICY.lease, address="0xA"),
        next_nonce=5,
        audit=AuditRecord(now - 60),
    )
    assert clamp_deadlines(sane, now, POLICY) == (sane, [])
    edge = replace(sane, current=key(3, now + CLAMP_AHEAD))  # a worker on its own clock, a bit ahead
    assert clamp_deadlines(edge, now, POLICY) == (edge, [])
    # A long grace, and a recheck without a signer (10 min), are no clock error.
    long_grace = replace(POLICY, grace=86_400.0)
    graced = replace(sane, retiring=(Retiring(key(2), now, now + 86_400, "rotated"),))
    assert clamp_deadlines(graced, now, long_grace) == (graced, [])
    recheck = replace(sane, retiring=(Retiring(key(2), now, now + 600, "retired"),))
    assert clamp_deadlines(recheck, now, POLICY) == (recheck, [])

    poisoned = replace(
        sane,
        current=key(3, now + 86_400),
        retiring=(
            Retiring(key(1), now, now * 1000, "rotated"),  # a /time in milliseconds
            Retiring(key(2), now, float("nan"), "emergency"),
        ),
        pending=Pending(4, now, "w", now + 86_400, key=key(4, float("inf")), address="0xA"),
        audit=AuditRecord(now * 1000),  # "last audited" in the year 58,900: no audit until then
    )
    healed, said = clamp_deadlines(poisoned, now, POLICY)
    assert len(said) == 6
    assert healed.audit is not None and healed.audit.at == 0.0  # taken as never: the next run audits
    assert healed.current is not None and healed.current.created_at == now
    assert [r.revoke_after for r in healed.retiring] == [now + POLICY.grace, now]  # a whole grace (I2)
    assert healed.pending is not None and healed.pending.lease_until == now + POLICY.lease
    assert healed.pending.key is not None and healed.pending.key.created_at == now
    assert clamp_deadlines(healed, now, POLICY) == (healed, [])


def test_a_pass_clamps_once_and_only_on_a_measured_clock(world, caplog) -> None:  # type: ignore[no-untyped-def]
    clock, store, _clob, rot = world
    run(rot)
    run(rot, force=True)
    state = store.state
    store.state = replace(state, retiring=(replace(state.retiring[0], revoke_after=clock.now * 1000),))
    rot.clock_measured = lambda: False  # this host's clock, a guess: it may be the one behind
    caplog.set_level(logging.INFO, logger="rotator")
    run(rot)
    assert store.state.retiring[0].revoke_after == clock.now * 1000
    rot.clock_measured = lambda: True
    run(rot)
    assert store.state.retiring[0].revoke_after == clock.now + POLICY.grace
    assert len(audit_records(caplog, "clamped")) == 1
    run(rot)
    assert len(audit_records(caplog, "clamped")) == 1  # healed: said once
    clock.now += POLICY.grace
    assert run(rot).revoked == 1
