"""The Store contract (``rotator/stores/base.py``), one suite run against every backend.

Versions are opaque here: only the file store's unit tests may assume they are integers.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from typing import Any

import pytest

from rotator.errors import VersionConflict
from rotator.model import Ack, CredentialRef, CredentialState, Key, Pending, Retiring, Revoked, Secret
from rotator.stores.base import Snapshot, Store, Version

from .conftest import Opener

REF = CredentialRef("market-maker-1", "rotator/market-maker-1")
OTHER = CredentialRef("market-maker-2", "rotator/market-maker-2")
T0 = 1_700_000_000.25


def make_key(nonce: int, tag: str = "a") -> Key:
    return Key(
        api_key=f"{tag}{nonce:07d}-1111-4222-8333-444455556666",
        api_secret=Secret(f"c2VjcmV0LXNlY3JldC1{tag}{nonce}LXNlY3JldA=="),
        api_passphrase=Secret(f"passphrase-{tag}-{nonce}-0123456789abcdef"),
        address="0x" + "ab" * 20,
        nonce=nonce,
        created_at=T0 + nonce,
    )


def full_state(pending_key: bool) -> CredentialState:
    return CredentialState(
        current=make_key(3),
        pending=Pending(
            nonce=4,
            started_at=T0 + 10,
            owner="worker-a:4242",
            lease_until=T0 + 70,
            key=make_key(4) if pending_key else None,
        ),
        retiring=(
            Retiring(make_key(2), retired_at=T0 + 5, revoke_after=T0 + 905, reason="rotated"),
            Retiring(make_key(1, "b"), retired_at=T0 + 3, revoke_after=T0 + 3, reason="unverified"),
        ),
        next_nonce=5,
        published_nonce=3,
        rotations=3,
        history=(Revoked("a0000000", 0, T0 + 1, "deleted"), Revoked("b0000000", 0, T0 + 2, "already-gone")),
    )


def counter_state(n: int) -> CredentialState:
    """A state whose fields all encode ``n``, so a torn or mixed write would show."""
    return CredentialState(
        current=make_key(n - 1) if n > 0 else None,
        next_nonce=n,
        published_nonce=n - 1 if n > 0 else None,
        rotations=n,
    )


def check_counter(state: CredentialState) -> int:
    n = state.next_nonce
    assert state == counter_state(n)
    return n


def increment(store: Store, ref: CredentialRef, times: int) -> tuple[int, list[Version]]:
    """Add one ``times`` times, retrying lost compare-and-sets. Returns (conflicts, versions won)."""
    conflicts = 0
    versions: list[Version] = []
    while len(versions) < times:
        snap = store.load(ref)
        try:
            versions.append(store.save(ref, counter_state(check_counter(snap.state) + 1), snap.version))
        except VersionConflict:
            conflicts += 1
    return conflicts, versions


# -- single writer ------------------------------------------------------------------------------


def test_empty_store_reads_empty_state_and_no_version(store: Store) -> None:
    assert store.load(REF) == Snapshot(CredentialState(), None)


@pytest.mark.parametrize("pending_key", [True, False], ids=["pending-with-key", "pending-intent-only"])
def test_save_then_load_round_trips_the_full_state(store_factory: Opener, pending_key: bool) -> None:
    state = full_state(pending_key)
    writer = store_factory()
    version = writer.save(REF, state, None)
    assert writer.load(REF) == Snapshot(state, version)
    reader = store_factory()  # another instance, as another process would see it
    assert reader.load(REF) == Snapshot(state, version)
    writer.close()
    reader.close()


def test_save_with_a_stale_version_conflicts_and_writes_nothing(store: Store) -> None:
    v1 = store.save(REF, counter_state(1), None)
    v2 = store.save(REF, counter_state(2), v1)
    assert v2 != v1
    with pytest.raises(VersionConflict):
        store.save(REF, counter_state(99), v1)
    assert store.load(REF) == Snapshot(counter_state(2), v2)


def test_create_conflicts_when_a_state_exists(store: Store) -> None:
    v1 = store.save(REF, counter_state(1), None)
    with pytest.raises(VersionConflict):
        store.save(REF, counter_state(99), None)
    assert store.load(REF) == Snapshot(counter_state(1), v1)


def test_update_conflicts_when_nothing_is_stored(store: Store) -> None:
    foreign = store.save(OTHER, counter_state(1), None)
    with pytest.raises(VersionConflict):
        store.save(REF, counter_state(1), foreign)
    assert store.load(REF) == Snapshot(CredentialState(), None)


def test_credentials_have_independent_versions(store: Store) -> None:
    a = store.save(REF, counter_state(1), None)
    b = store.save(OTHER, counter_state(10), None)
    b = store.save(OTHER, counter_state(11), b)
    a = store.save(REF, counter_state(2), a)  # OTHER's writes did not move REF's version
    store.save(OTHER, counter_state(12), b)
    assert store.load(REF) == Snapshot(counter_state(2), a)
    assert store.load(OTHER).state == counter_state(12)


def test_read_published_is_none_before_publish(store: Store) -> None:
    assert store.read_published(REF) is None


def test_publish_round_trips_and_is_idempotent(store_factory: Opener) -> None:
    store = store_factory()
    first, second = make_key(7), make_key(8)
    store.publish(REF, first)
    assert store.read_published(REF) == first
    store.publish(REF, first)
    assert store_factory().read_published(REF) == first
    store.publish(REF, second)
    assert store.read_published(REF) == second
    assert store.read_published(OTHER) is None
    store.close()


def test_ever_published_names_the_keys_published_at_the_path_and_only_the_very_triplet(
    store_factory: Opener,
) -> None:
    """Issue 22 item 6: what a lost state's recovery asks. Every key published at the path is named,
    the current one and the earlier ones; a key with the same id but another secret, a key never
    published, a key published at another path are not."""
    store = store_factory()
    assert store.ever_published(REF, [make_key(1)]) == set()  # nothing published yet
    keys = [make_key(n) for n in (1, 2, 3)]
    for k in keys:
        store.publish(REF, k)
    store.publish(OTHER, make_key(9))
    forged = Key(keys[0].api_key, Secret("c2VjcmV0LWZvcmdlZA=="), keys[0].api_passphrase, "0xAb", 1, T0)
    reader = store_factory()  # another process sees the same history
    assert reader.ever_published(REF, [*keys, make_key(4), make_key(9)]) == {k.api_key for k in keys}
    assert reader.ever_published(REF, [forged]) == set()
    assert reader.ever_published(REF, [keys[0]]) == {keys[0].api_key}
    assert reader.ever_published(REF, []) == set()
    store.close()
    reader.close()


def test_close_is_idempotent(store_factory: Opener) -> None:
    store = store_factory()
    store.save(REF, counter_state(1), None)
    store.close()
    store.close()


# -- concurrent writers -------------------------------------------------------------------------


def test_concurrent_threads_lose_no_increment(store_factory: Opener) -> None:
    threads, times = 8, 20
    barrier = threading.Barrier(threads)
    results: list[tuple[int, list[Version]]] = []
    errors: list[BaseException] = []

    def work() -> None:
        store = store_factory()
        try:
            barrier.wait(30)
            results.append(increment(store, REF, times))
        except BaseException as exc:  # noqa: BLE001 -- surfaced by the assertion below
            errors.append(exc)
        finally:
            store.close()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors
    versions = [v for _, vs in results for v in vs]
    assert len(versions) == threads * times
    assert len(set(versions)) == len(versions)  # no two writers won with the same version
    assert check_counter(store_factory().load(REF).state) == threads * times


def test_publish_does_not_lose_concurrent_saves(store_factory: Opener) -> None:
    times = 20
    keys = [make_key(100 + i) for i in range(times)]

    def publisher() -> None:
        store = store_factory()
        for key in keys:
            store.publish(OTHER, key)

    savers = [threading.Thread(target=increment, args=(store_factory(), REF, times)) for _ in range(2)]
    pub = threading.Thread(target=publisher)
    for t in (*savers, pub):
        t.start()
    for t in (*savers, pub):
        t.join(60)
    store = store_factory()
    assert check_counter(store.load(REF).state) == 2 * times
    assert store.read_published(OTHER) == keys[-1]


def _process_increment(opener: Opener, times: int, barrier: Any, results: Any) -> None:
    store = opener()
    try:
        barrier.wait(60)
        _, versions = increment(store, REF, times)
        results.put(("ok", len(versions)))
    except BaseException as exc:  # noqa: BLE001 -- reported to the parent, which fails the test with it
        results.put(("error", repr(exc)))
    finally:
        store.close()


@pytest.mark.cross_process
def test_concurrent_processes_lose_no_increment(store_factory: Opener) -> None:
    procs, times = 4, 10
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    children = [
        ctx.Process(target=_process_increment, args=(store_factory, times, barrier, results))
        for _ in range(procs)
    ]
    for p in children:
        p.start()
    try:
        outcomes = [results.get(timeout=60) for _ in children]
    finally:
        for p in children:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert outcomes == [("ok", times)] * procs
    assert check_counter(store_factory().load(REF).state) == procs * times


# -- crashes ------------------------------------------------------------------------------------


def _save_until_killed(opener: Opener, ready: Any) -> None:
    store = opener()
    signalled = False
    while True:
        snap = store.load(REF)
        try:
            store.save(REF, counter_state(check_counter(snap.state) + 1), snap.version)
        except VersionConflict:
            continue
        if not signalled:
            ready.set()
            signalled = True


@pytest.mark.cross_process
def test_a_writer_killed_at_any_point_leaves_a_consistent_state(store_factory: Opener) -> None:
    ctx = multiprocessing.get_context("spawn")
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = store_factory()
    last = 0
    for _ in range(8):
        ready = ctx.Event()
        child = ctx.Process(target=_save_until_killed, args=(store_factory, ready), daemon=True)
        child.start()
        try:
            assert ready.wait(60), "the writer never saved"
            time.sleep(rng.uniform(0, 0.04))
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(10)
        finally:
            if child.is_alive():
                child.kill()
        assert child.exitcode == -signal.SIGKILL
        snap = store.load(REF)  # never Corrupt, never a mix of two writes
        n = check_counter(snap.state)
        assert n > last, f"seed {seed}: the counter went from {last} to {n}"
        # The lock died with the writer; but a request it sent just before dying may still land at a
        # remote store (AWS completes a request whose client is gone): then this write loses, once.
        for _ in range(5):
            try:
                store.save(REF, counter_state(n + 1), snap.version)
                break
            except VersionConflict:
                time.sleep(0.2)
                snap = store.load(REF)
                n = check_counter(snap.state)
        else:
            raise AssertionError(f"seed {seed}: the store never settled after the writer died")
        last = n + 1
    assert check_counter(store.load(REF).state) == last
    store.close()


# -- consumer acknowledgements ------------------------------------------------------------------


def test_acks_round_trip_per_consumer_and_never_move_the_state_version(store: Store) -> None:
    v1 = store.save(REF, counter_state(1), None)
    store.publish(REF, make_key(7))  # AWS files acknowledgements on the published secret
    assert store.acks(REF) == []
    store.ack(REF, "bot-1", "a0000007", T0)
    store.ack(REF, "bot-2.eu@host", "a0000007", T0 + 1)
    store.ack(REF, "bot-1", "a0000008", T0 + 2)  # replaces bot-1's earlier one
    assert sorted(store.acks(REF), key=lambda a: a.consumer_id) == [
        Ack("bot-1", "a0000008", T0 + 2),
        Ack("bot-2.eu@host", "a0000007", T0 + 1),
    ]
    assert store.acks(OTHER) == []
    assert store.load(REF) == Snapshot(counter_state(1), v1)
    store.save(REF, counter_state(2), v1)  # the worker's compare-and-set is unaffected


def test_refusal_reports_sit_beside_the_acknowledgement_and_a_later_ack_replaces_them(
    store: Store,
) -> None:
    """Issue 18: a consumer reports a key the CLOB refused where it acknowledges; acks() returns it."""
    v1 = store.save(REF, counter_state(1), None)
    store.publish(REF, make_key(7))  # AWS files reports on the published secret, as acknowledgements
    store.ack(REF, "bot-1", "a0000007", T0)
    store.ack(REF, "bot-2.eu@host", "a0000007", T0 + 1)
    store.report_refusal(REF, "bot-1", "a0000007", T0 + 5, T0 + 4.5, 3)
    reports = {a.consumer_id: a for a in store.acks(REF)}
    assert reports == {
        "bot-1": Ack("bot-1", "a0000007", T0 + 5, T0 + 4.5, 3),
        "bot-2.eu@host": Ack("bot-2.eu@host", "a0000007", T0 + 1),
    }
    assert reports["bot-1"].reported and not reports["bot-2.eu@host"].reported
    store.report_refusal(REF, "bot-1", "a0000007", T0 + 11, T0 + 4.5, 40)  # a later window's report
    assert Ack("bot-1", "a0000007", T0 + 11, T0 + 4.5, 40) in store.acks(REF)
    store.ack(REF, "bot-1", "a0000008", T0 + 12)  # moved on to a new key: the report is over
    assert sorted(store.acks(REF), key=lambda a: a.consumer_id) == [
        Ack("bot-1", "a0000008", T0 + 12),
        Ack("bot-2.eu@host", "a0000007", T0 + 1),
    ]
    assert store.load(REF) == Snapshot(counter_state(1), v1)  # never moves the state's version


def test_names_lists_every_stored_state_and_nothing_else(store: Store) -> None:
    """Issue 13 item 4: a removed credential's state must be found without its config."""
    assert store.names() == []
    store.publish(OTHER, make_key(1))
    store.ack(OTHER, "bot-1", "a0000001", T0)  # acks (Vault: <prefix>/<name>/acks/) without a state
    assert store.names() == []
    store.save(OTHER, counter_state(1), None)
    store.save(REF, counter_state(2), None)
    store.publish(REF, make_key(2))
    store.ack(REF, "bot-1", "a0000002", T0)
    # Records beside the states that are not credentials (the leader lease, say) are skipped.
    store.save(CredentialRef("_leader", "rotator/_leader"), counter_state(1), None)
    assert store.names() == ["market-maker-1", "market-maker-2"]


def test_names_sees_states_written_by_another_process(store_factory: Opener) -> None:
    writer, reader = store_factory(), store_factory()
    try:
        assert reader.names() == []
        writer.save(REF, counter_state(1), None)
        assert reader.names() == [REF.name]
    finally:
        writer.close()
        reader.close()
