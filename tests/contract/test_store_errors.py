"""The error half of the Store contract (``rotator/stores/base.py``), on every backend.

The same situation raises the same error everywhere: unreadable data is ``Corrupt`` (never an
empty state that a worker would then overwrite), a refused identity is ``AccessDenied``, an
unreachable backend is ``Unavailable``, and a publish that keeps losing races is ``Unavailable``
(the caller named no version, so a ``VersionConflict`` would tell it nothing it could act on).
The backends' fault hooks are in ``conftest.py``.
"""

from __future__ import annotations

import pytest

from rotator.errors import AccessDenied, Corrupt, StoreError, Unavailable
from rotator.model import CredentialState
from rotator.stores.base import Snapshot, Store

from .conftest import Faults, Opener
from .test_store_contract import OTHER, REF, counter_state, make_key


def test_unreadable_data_is_corrupt_never_an_empty_state(store: Store, faults: Faults) -> None:
    faults.corrupt(REF)
    with pytest.raises(Corrupt) as state_error:
        store.load(REF)
    with pytest.raises(Corrupt) as key_error:
        store.read_published(REF)
    for error in (state_error.value, key_error.value):
        assert "\n" not in str(error)
        assert "GARBAGE7F3A" not in str(error)  # never the stored bytes


def test_a_denied_identity_writes_nothing_and_gets_access_denied(store: Store, faults: Faults) -> None:
    version = store.save(REF, counter_state(1), None)
    store.publish(REF, make_key(1))
    denied = faults.denied()
    try:
        with pytest.raises(AccessDenied):
            denied.save(REF, counter_state(2), version)
        with pytest.raises(AccessDenied):
            denied.save(OTHER, counter_state(1), None)
        with pytest.raises(AccessDenied):
            denied.publish(REF, make_key(2))
        with pytest.raises(AccessDenied):
            denied.save_lease("_leader", "a", 1.0, None)
    finally:
        denied.close()
    assert store.load(REF) == Snapshot(counter_state(1), version)
    assert store.load(OTHER) == Snapshot(CredentialState(), None)
    assert store.read_published(REF) == make_key(1)


def test_an_unreachable_backend_is_unavailable_for_every_operation(store: Store, faults: Faults) -> None:
    down = faults.unavailable()
    calls = {
        "load": lambda: down.load(REF),
        "save": lambda: down.save(REF, counter_state(1), None),
        "names": down.names,
        "publish": lambda: down.publish(REF, make_key(1)),
        "read_published": lambda: down.read_published(REF),
        "ever_published": lambda: down.ever_published(REF, [make_key(1)]),
        "acks": lambda: down.acks(REF),
        "report_refusal": lambda: down.report_refusal(REF, "bot-1", "a0000001", 2.0, 1.0, 1),
        "load_lease": lambda: down.load_lease("_leader"),
        "save_lease": lambda: down.save_lease("_leader", "a", 1.0, None),
    }
    raised = {}
    try:
        for name, call in calls.items():
            with pytest.raises(StoreError) as info:
                call()
            raised[name] = type(info.value).__name__
    finally:
        down.close()
    assert raised == dict.fromkeys(calls, Unavailable.__name__)
    assert store.load(REF) == Snapshot(CredentialState(), None)  # nothing reached the data


def test_a_publish_that_keeps_losing_races_is_unavailable(
    store_factory: Opener, faults: Faults, backend: str
) -> None:
    if faults.racing is None:
        pytest.skip(f"{backend}: a publish holds the store's lock over its read and write: no race to lose")
    first = store_factory()
    first.publish(REF, make_key(1))
    racing = faults.racing()
    try:
        with pytest.raises(Unavailable):
            racing.publish(REF, make_key(2))
    finally:
        racing.close()
        first.close()


def test_an_acknowledgement_that_loses_races_is_never_a_version_conflict(
    store: Store, faults: Faults, backend: str
) -> None:
    """Only save and save_lease raise VersionConflict: a consumer acking names no version. Under a
    rival writer of the same record, an acknowledgement either lands (and reads back) or raises
    Unavailable (retry later) and writes nothing of its own."""
    if faults.racing_acks is None:
        pytest.skip(f"{backend}: acknowledgements are written under the store's lock: no race to lose")
    store.publish(REF, make_key(1))  # AWS files acknowledgements on the published secret
    store.ack(REF, "bot-1", "a0000001", 1.0)  # another process of the same consumer id
    racing, rival_writes = faults.racing_acks()
    try:
        racing.ack(REF, "bot-1", "a0000001", 2.0)
        landed = True
    except StoreError as exc:
        assert type(exc) is Unavailable, repr(exc)
        landed = False
    finally:
        racing.close()
    assert rival_writes() > 0, "the rival never wrote: no race was run"
    ours = [a for a in store.acks(REF) if a.consumer_id == "bot-1" and a.at == 2.0]
    assert len(ours) == (1 if landed else 0), store.acks(REF)
