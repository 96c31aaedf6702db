"""Issue 13 item 8, on every backend: the state carries a schema version; a newer one is refused
(not read and then saved without the fields this version does not know), an older one is upgraded."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.errors import Corrupt
from rotator.model import STATE_FORMAT, STATE_SCHEMA, CredentialState, Pending
from rotator.stores.base import Store

from .test_store_contract import REF, T0, make_key


class _Written(CredentialState):
    """A state as another rotator version writes it: ``raw`` replaces what this one would write."""

    raw: dict[str, Any] = {}  # noqa: RUF012 - set per instance below, read-only afterwards

    def to_dict(self) -> dict[str, Any]:
        return self.raw


def written(raw: dict[str, Any]) -> CredentialState:
    state = _Written()
    object.__setattr__(state, "raw", raw)
    return state


def test_a_state_from_a_newer_schema_is_refused_in_one_line(store: Store) -> None:
    newer = CredentialState(current=make_key(3), next_nonce=4).to_dict()
    newer |= {"schema": STATE_FORMAT + 1, "leader": {"owner": "w-2", "until": T0}}
    store.save(REF, written(newer), None)
    with pytest.raises(Corrupt) as info:
        store.load(REF)
    message = str(info.value)
    assert f"schema {STATE_FORMAT + 1}" in message and "upgrade rotator" in message
    assert "\n" not in message


def test_a_state_without_a_schema_is_read_and_upgraded(store: Store) -> None:
    old = CredentialState(current=make_key(3), pending=Pending(4, T0, "w-1", T0 + 60), next_nonce=5).to_dict()
    del old["schema"]
    del old["pending"]["address"]
    version = store.save(REF, written(old), None)
    snap = store.load(REF)
    assert snap.state.current == make_key(3) and snap.state.pending is not None
    assert snap.state.pending.address is None and snap.state.pending.nonce == 4
    store.save(REF, snap.state, version)
    assert snap.state.to_dict()["schema"] == STATE_SCHEMA
    assert store.load(REF).state == snap.state


def test_the_audit_record_of_schema_3_is_kept(store: Store) -> None:
    """Issue 16: the wallet audit's record (masked ids, nonces, closed-only) survives every backend."""
    from rotator.model import AuditRecord, UnmanagedKey

    record = AuditRecord(
        T0, (UnmanagedKey("01a22d6a…9f3c", 0, T0), UnmanagedKey("01a22d6b…0001", None, T0)), True
    )
    state = CredentialState(current=make_key(3), next_nonce=4, audit=record)
    store.save(REF, state, None)
    assert store.load(REF).state.audit == record
