"""The plain data of the rotation: secrets stay masked, states survive a JSON round trip."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import traceback
from dataclasses import replace
from typing import Any

import pytest

from rotator.model import (
    HISTORY_LIMIT,
    PUBLISHED_FIELDS,
    CredentialState,
    Key,
    Pending,
    Retiring,
    Revoked,
    Secret,
    mask,
)

SECRET = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1zaG93LXVw"
PASSPHRASE = "passphrase-that-must-never-show-up"


def make_key(nonce: int = 1, api_key: str = "5f1e7c3a-0d2b-4c6e-9a8b-1f2e3d4c5b6a") -> Key:
    return Key(
        api_key=api_key,
        api_secret=Secret(SECRET),
        api_passphrase=Secret(PASSPHRASE),
        address="0x" + "ef" * 20,
        nonce=nonce,
        created_at=1_700_000_000.5,
    )


# -- secrets stay masked ------------------------------------------------------------------------


def renderings(value: object) -> list[str]:
    try:
        raise RuntimeError(f"rotation failed with {value}")
    except RuntimeError:
        trace = traceback.format_exc()
    percent = "%s" % (value,)  # noqa: UP031 -- the way logging formats its arguments
    return [repr(value), str(value), f"{value}", f"{value!r}", percent, trace, str(ValueError(value))]


@pytest.mark.parametrize(
    "value",
    [
        Secret(SECRET),
        make_key(),
        CredentialState(current=make_key(), pending=Pending(2, 1.0, "w", 2.0, make_key(2))),
    ],
    ids=["secret", "key", "state"],
)
def test_secrets_never_render(value: object) -> None:
    for text in renderings(value):
        assert SECRET not in text
        assert PASSPHRASE not in text


def test_secrets_never_reach_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("rotator.test").info("published %s", make_key())
    assert "Secret('**********')" in caplog.text
    assert SECRET not in caplog.text


def test_secret_reveals_only_on_request_and_compares_by_value() -> None:
    secret = Secret(SECRET)
    assert secret.reveal() == SECRET
    assert secret == Secret(SECRET)
    assert secret != Secret(PASSPHRASE)
    assert secret != SECRET  # a Secret is not a str


@pytest.mark.parametrize("value", [Secret(SECRET), make_key()], ids=["secret", "key"])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_a_secret_is_refused(value: object, protocol: int) -> None:
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(value, protocol=protocol)


def test_copying_a_secret_is_refused_too() -> None:
    # copy goes through __reduce_ex__ as pickle does: a deepcopy of a state fails loudly, not quietly.
    with pytest.raises(TypeError):
        copy.deepcopy(make_key())


def test_mask_shows_only_the_ends_of_the_id() -> None:
    key = make_key()
    assert key.masked == mask(key.api_key) == "5f1e7c3a-0d2b…5b6a"
    assert mask(key.masked) == key.masked  # masking a masked id changes nothing (logs re-mask)


def test_mask_tells_apart_keys_made_in_the_same_minute() -> None:
    # UUIDv7: the first 8 characters are the top of a millisecond timestamp, the same for a minute.
    ids = [
        "01a22d6a-7c3d-7aaa-8bbb-1234567890ab",
        "01a22d6a-81f0-7b12-9c3e-0a1b2c3d9f3c",
        "01a22d6a-9e00-7c99-a001-77665544e210",
    ]
    assert len({mask(i) for i in ids}) == len(ids)
    assert all(i[8:-4] not in mask(i) for i in ids)  # still most of the id left out


# -- Key ----------------------------------------------------------------------------------------


def test_key_round_trips_through_the_published_json() -> None:
    key = make_key(7)
    data = json.loads(json.dumps(key.to_dict()))
    assert tuple(data) == PUBLISHED_FIELDS
    assert data["api_secret"] == SECRET
    assert Key.from_dict(data) == key


def test_key_from_dict_accepts_an_integer_timestamp() -> None:
    data = make_key().to_dict() | {"created_at": 1_700_000_000}
    assert Key.from_dict(data).created_at == 1_700_000_000.0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"api_secret": None}, "api_secret"),
        ({"api_passphrase": ""}, "api_passphrase"),
        ({"api_key": 5}, "api_key"),
        ({"address": ""}, "address"),
        ({"nonce": -1}, "nonce"),
        ({"nonce": True}, "nonce"),
        ({"nonce": "3"}, "nonce"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": False}, "created_at"),
    ],
)
def test_key_from_dict_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        Key.from_dict(make_key().to_dict() | change)
    assert SECRET not in str(info.value)
    assert PASSPHRASE not in str(info.value)


@pytest.mark.parametrize("field", PUBLISHED_FIELDS)
def test_key_from_dict_names_a_missing_field(field: str) -> None:
    data = make_key().to_dict()
    del data[field]
    with pytest.raises(ValueError, match=f"missing field.*{field}"):
        Key.from_dict(data)


@pytest.mark.parametrize("data", [None, [], "key", 3])
def test_key_from_dict_refuses_a_non_object(data: object) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Key.from_dict(data)


# -- CredentialState ----------------------------------------------------------------------------


def full_state(pending_key: bool) -> CredentialState:
    return CredentialState(
        current=make_key(3, "cccccccc-3"),
        pending=Pending(
            4, 1_700_000_010.0, "host:1", 1_700_000_070.0, make_key(4, "dddddddd-4") if pending_key else None
        ),
        retiring=(
            Retiring(make_key(2, "bbbbbbbb-2"), 1_700_000_005.0, 1_700_000_905.0),
            Retiring(make_key(1, "aaaaaaaa-1"), 1_700_000_001.0, 1_700_000_001.0, reason="emergency"),
        ),
        next_nonce=5,
        published_nonce=3,
        rotations=3,
        history=(Revoked("99999999", 0, 1_700_000_000.0, "deleted"),),
    )


@pytest.mark.parametrize(
    "state",
    [CredentialState(), full_state(True), full_state(False)],
    ids=["empty", "pending-with-key", "pending-intent-only"],
)
def test_state_round_trips_through_json(state: CredentialState) -> None:
    assert CredentialState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize("data", [None, [], "state"])
def test_state_from_dict_refuses_a_non_object(data: object) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        CredentialState.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"pending": {"nonce": 1}},
        {"retiring": [{"key": make_key().to_dict()}]},
        {"history": [{"key_prefix": "x"}]},
        {"current": make_key().to_dict() | {"nonce": -1}},
        {"retiring": 5},
    ],
    ids=["pending", "retiring", "history", "current", "retiring-not-a-list"],
)
def test_state_from_dict_refuses_a_malformed_state(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        CredentialState.from_dict(data)
    assert SECRET not in str(info.value)


def test_with_revoked_moves_the_entry_to_history_and_keeps_the_rest() -> None:
    state = full_state(True)
    gone, kept = state.retiring
    after = state.with_revoked(gone, "deleted", now=1_700_001_000.0)
    assert after.retiring == (kept,)
    record = after.history[-1]
    assert after.history[:-1] == state.history
    assert (record.key_prefix, record.nonce, record.revoked_at, record.how) == (
        mask("bbbbbbbb-2"),
        2,
        1_700_001_000.0,
        "deleted",
    )
    # A key issued before history was kept: its age and retirement come from the state.
    issued = (record.issued_at, record.reason, record.retired_why)
    assert issued == (gone.key.created_at, "unrecorded", "rotated")
    assert replace(after, retiring=state.retiring, history=state.history) == state  # nothing else moved
    assert state.retiring == (gone, kept)  # the original is untouched
    assert SECRET not in json.dumps([h.to_dict() for h in after.history])


def test_with_revoked_keeps_only_the_latest_history() -> None:
    many = HISTORY_LIMIT + 5
    state = replace(
        full_state(True), history=tuple(Revoked(f"{i:08d}", i, float(i), "deleted") for i in range(many))
    )
    after = state.with_revoked(state.retiring[0], "already-gone", now=99.0)
    assert len(after.history) == HISTORY_LIMIT
    last = after.history[-1]
    assert (last.key_prefix, last.nonce, last.how) == (mask("bbbbbbbb-2"), 2, "already-gone")
    assert after.history[0].key_prefix == f"{many - HISTORY_LIMIT + 1:08d}"
    # The limit is the credential's (credentials[].history_limit).
    assert len(state.with_revoked(state.retiring[0], "deleted", now=99.0, limit=10).history) == 10


def test_an_ack_reads_with_or_without_a_refusal_report_and_a_bad_report_keeps_the_ack() -> None:
    from rotator.model import Ack

    old = {"consumer_id": "bot-1", "key_prefix": "019d4ec2-1a2b-7c3d", "at": 10.0}
    assert Ack.from_dict(old) == Ack("bot-1", "019d4ec2-1a2b-7c3d", 10.0)
    assert Ack.from_dict(old).to_dict() == old  # records without reports are written as before
    report = Ack("bot-1", "019d4ec2-1a2b-7c3d", 10.0, 9.5, 3)
    assert Ack.from_dict(report.to_dict()) == report and report.reported
    for bad in ({"refused_at": "x", "refusals": 3}, {"refused_at": 9.5, "refusals": 0}, {"refused_at": 9.5}):
        assert Ack.from_dict({**old, **bad}) == Ack("bot-1", "019d4ec2-1a2b-7c3d", 10.0)


# -- issue 27: the published secret per kind -----------------------------------------------------------------
def test_each_kind_publishes_exactly_its_fields_and_reads_back() -> None:
    from rotator.model import Key, Secret

    address = "0x" + "ab" * 20
    ro = Key("ro-id-0123456789abcdef", Secret(""), Secret(""), address, 3, 1.5, "readonly")
    b = Key("b-id", Secret("s" * 44), Secret("p" * 64), address, 4, 2.5, "builder")
    t = Key("t-id", Secret("s" * 44), Secret("p" * 64), address, 5, 3.5)
    assert ro.published() == {"api_key": ro.api_key, "address": address, "created_at": 1.5, "nonce": 3}
    assert b.published() == {
        "key": "b-id",
        "secret": "s" * 44,
        "passphrase": "p" * 64,
        "address": address,
        "created_at": 2.5,
    }
    assert set(t.published()) == {"api_key", "api_secret", "api_passphrase", "address", "nonce", "created_at"}
    for key in (ro, b, t):
        back = Key.from_dict(key.published())  # the kind is told by the fields
        assert (back.kind, back.api_key, back.address) == (key.kind, key.api_key, key.address)
        assert back.api_secret.reveal() == key.api_secret.reveal()
    assert Key.from_dict(b.published()).nonce == 0  # a builder key's serial is not published


@pytest.mark.parametrize(
    ("data", "kind", "expected"),
    [
        (
            {"key": "b", "secret": "", "passphrase": "p", "address": "0xa", "created_at": 1},
            "builder",
            "secret",
        ),
        ({"key": "b", "secret": "s", "address": "0xa", "created_at": 1}, "builder", "passphrase"),
        ({"api_key": "", "address": "0xa", "created_at": 1}, "readonly", "api_key"),
        ({"api_key": "r", "address": "0xa"}, "readonly", "created_at"),
        ({"api_key": "r", "address": "0xa", "created_at": 1}, "admin", "kind"),
    ],
)
def test_a_malformed_key_of_another_kind_names_its_field(
    data: dict[str, object], kind: str, expected: str
) -> None:
    from rotator.model import Key

    with pytest.raises(ValueError, match=expected):
        Key.from_dict(data, kind)


def test_a_lost_builder_key_keeps_no_secret_and_says_so() -> None:
    from rotator.model import Key, Secret

    lost = Key("b-id", Secret(""), Secret(""), "0xa", 2, 1.0, "builder")
    assert lost.lost and lost.to_dict()["secret"] is None
    again = Key.from_dict(lost.to_dict(), "builder")
    assert again.lost and again.nonce == 2
