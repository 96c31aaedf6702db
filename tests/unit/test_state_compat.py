"""The state's compatibility rule (docs/upgrading.md), proven against the previous minor version's
own reader (tests/compat/model_0_1.py, rotator 0.1 verbatim): what this version writes, 0.1 reads
correctly, and what 0.1 then saves, this version reads back; a newer version's additive fields
survive this version's save; a state that raised ``schema`` past what a reader knows is refused by it.
"""

from __future__ import annotations

import json

import pytest

from rotator.model import (
    STATE_FORMAT,
    STATE_SCHEMA,
    CredentialState,
    Key,
    KeyRecord,
    Pause,
    Pending,
    Retiring,
    Secret,
)
from tests.compat import model_0_1 as old

T0 = 1_796_601_600.0


def key(nonce: int, created: float) -> Key:
    return Key(
        f"01a24daa-6b2e-7fa2-8000-{nonce:012d}",
        Secret(f"s{nonce}"),
        Secret(f"p{nonce}"),
        "0xA",
        nonce,
        created,
    )


def a_format_4_state() -> CredentialState:
    """Everything format 4 adds: a pause, records of held and gone keys with reason, trigger and
    worker, an intent's reason and trigger, and a newer version's field kept as it came."""
    cur, old_key = key(7, T0), key(6, T0 - 86400)
    state = CredentialState(
        current=cur,
        retiring=(Retiring(old_key, T0, T0 + 900, "rotated"),),
        pending=Pending(8, T0 + 5, "w-1:1:1", T0 + 300, None, "0xA", reason="forced", trigger="operator"),
        next_nonce=9,
        published_nonce=7,
        rotations=7,
        pause=Pause(T0 + 1, "alice@ops", T0 + 3600, "incident"),
        extra=(("published_path", json.dumps("polymarket/mm1")),),
    )
    state = state.with_issued(old_key, reason="due", trigger="schedule", worker="rotator-0", at=T0 - 86400)
    state = state.with_issued(cur, reason="schedule", trigger="schedule", worker="rotator-0", at=T0)
    state = state.with_published(cur, T0 + 1).with_retired(old_key, T0, "rotated")
    gone = key(5, T0 - 2 * 86400)
    state = state.with_issued(
        gone, reason="emergency", trigger="operator", worker="rotator-1", at=gone.created_at
    )
    return state.with_gone(gone, "deleted", T0 - 86400, worker="rotator-1")


def test_the_previous_version_reads_what_this_one_writes() -> None:
    new = a_format_4_state()
    data = json.loads(json.dumps(new.to_dict()))
    assert data["schema"] == STATE_SCHEMA == old.STATE_SCHEMA  # readable by 0.1: its own schema
    assert data["format"] == STATE_FORMAT > old.STATE_SCHEMA
    read = old.CredentialState.from_dict(data)
    assert read.current is not None and read.current.api_key == new.current.api_key  # type: ignore[union-attr]
    assert [r.key.nonce for r in read.retiring] == [6] and read.next_nonce == 9 and read.rotations == 7
    assert read.pending is not None and read.pending.nonce == 8 and read.pending.address == "0xA"
    assert [(h.key_prefix, h.nonce, h.revoked_at, h.how) for h in read.history] == [
        (new.history[0].key_prefix, 5, T0 - 86400, "deleted")
    ]


def test_what_the_previous_version_saves_is_read_back_losing_only_format_4s_additions() -> None:
    new = a_format_4_state()
    by_old = old.CredentialState.from_dict(json.loads(json.dumps(new.to_dict())))
    # 0.1 revokes the retiring key and saves: its own history record, its own fields.
    entry = by_old.retiring[0]
    saved = json.loads(json.dumps(by_old.with_revoked(entry, "deleted", T0 + 900).to_dict()))
    back = CredentialState.from_dict(saved)
    assert back.current == new.current and back.next_nonce == 9 and back.retiring == ()
    assert [h.nonce for h in back.history] == [5, 6]
    assert back.pause is None and back.provenance == ()  # what 0.1 does not know is dropped: said in docs
    assert back.pending is not None and back.pending.reason is None
    # This version goes on from there: the next revocation is recorded in full.
    again = back.with_revoked(Retiring(key(7, T0), T0 + 1000, T0 + 1000), "deleted", T0 + 2000, worker="w")
    assert again.history[-1].revoked_by == "w" and again.history[-1].reason == "unrecorded"


def test_a_newer_versions_additive_fields_survive_this_ones_save() -> None:
    data = a_format_4_state().to_dict() | {"format": STATE_FORMAT + 1, "leader_hint": {"a": 1}}
    kept = CredentialState.from_dict(data).to_dict()
    assert kept["leader_hint"] == {"a": 1} and kept["published_path"] == "polymarket/mm1"
    assert kept["format"] == STATE_FORMAT  # what this writer knows


@pytest.mark.parametrize("reader", ["this", "0.1"])
def test_a_state_that_raised_its_schema_is_refused_by_older_readers(reader: str) -> None:
    data = a_format_4_state().to_dict() | {"schema": STATE_FORMAT + 1}
    parse = CredentialState.from_dict if reader == "this" else old.CredentialState.from_dict
    with pytest.raises(ValueError, match="upgrade rotator"):
        parse(data)


def test_history_records_keep_the_four_fields_the_previous_version_needs() -> None:
    for record in a_format_4_state().history:
        assert isinstance(record, KeyRecord)
        assert {"key_prefix", "nonce", "revoked_at", "how"} <= set(record.to_dict())
