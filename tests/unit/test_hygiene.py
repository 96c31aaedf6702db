"""Issue 16, the pure parts of wallet hygiene: when an audit is due, what its record keeps from the
last one, how far the fleet's audits are stretched, the rate-limit tier's bounded labels, and the
state's audit record (schema 3) read back and absent from older states."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rotator.clob.budget import AUDIT_SHARE, AUTH_REQUESTS_PER_AUDIT, audit_interval
from rotator.config import load_settings
from rotator.hygiene import _record, audit_due, managed_nonces
from rotator.metrics import MAX_TIERS, Metrics
from rotator.model import (
    STATE_SCHEMA,
    AuditRecord,
    CredentialState,
    Key,
    MalformedError,
    Pending,
    Retiring,
    Secret,
    UnmanagedKey,
    mask,
)

A = "01a22d6a-0000-7000-8000-00000000aaaa"
B = "01a22d6a-0000-7000-8000-00000000bbbb"


def key(nonce: int) -> Key:
    return Key(f"01a22d6a-0000-7000-8000-{nonce:012d}", Secret("s"), Secret("p"), "0xabc", nonce, 0.0)


@pytest.mark.parametrize(
    ("record", "now", "every", "due"),
    [
        (None, 100.0, 3600.0, True),
        (AuditRecord(at=0.0), 3599.0, 3600.0, False),
        (AuditRecord(at=0.0), 3600.0, 3600.0, True),
        (None, 100.0, 0.0, False),  # audits off
    ],
)
def test_audit_due(record: AuditRecord | None, now: float, every: float, due: bool) -> None:
    assert audit_due(record, now, every) is due


def test_a_record_keeps_first_sightings_and_known_nonces_and_drops_keys_gone() -> None:
    before = AuditRecord(10.0, (UnmanagedKey(mask(A), 0, 10.0), UnmanagedKey("gone…1234", None, 10.0)), True)
    after = _record(before, {A: "trading", B: "readonly"}, 20.0, None)
    assert after.at == 20.0
    assert after.unmanaged == (UnmanagedKey(mask(A), 0, 10.0), UnmanagedKey(mask(B), None, 20.0, "readonly"))
    assert after.closed_only is True  # unknown this time: the last known answer stands
    assert _record(before, {}, 30.0, False) == AuditRecord(30.0, (), False)


def test_managed_nonces_include_a_pending_intent() -> None:
    st = CredentialState(
        current=key(2), retiring=(Retiring(key(1), 0.0, 1.0, "rotated"),), pending=Pending(3, 0.0, "w", 1.0)
    )
    assert managed_nonces(st) == {1, 2, 3}


def _settings(n: int, **sections: Any) -> Any:
    creds = [
        {
            "name": f"c{i}",
            "signer": {"source": "env", "env": "W"},
            "path": f"p/c{i}",
            "rotate_every": "1d",
            "grace": "10m",
        }
        for i in range(n)
    ]
    return load_settings(None, data={"credentials": creds, **sections})


def test_audit_interval_is_audit_every_for_a_small_fleet_and_stretched_for_a_large_one() -> None:
    assert audit_interval(_settings(3)) == 3600.0
    assert audit_interval(_settings(3, daemon={"audit_every": 0})) == 0
    big = _settings(2000, daemon={"audit_every": "1m"})
    per_second = 50 / 10 * AUDIT_SHARE
    assert audit_interval(big) == pytest.approx(2000 * AUTH_REQUESTS_PER_AUDIT / per_second)


def test_rate_limit_tier_labels_stay_bounded() -> None:
    m = Metrics(CollectorRegistry())
    get = m.registry.get_sample_value
    m.observe_rate_limit_tier("tier-1")
    m.observe_rate_limit_tier("tier 2; drop table")  # not a plain word: other
    assert get("rotator_clob_rate_limit_tier_info", {"tier": "tier-1"}) == 0
    assert get("rotator_clob_rate_limit_tier_info", {"tier": "other"}) == 1
    for i in range(3 * MAX_TIERS):
        m.observe_rate_limit_tier(f"t{i}")
    tiers = {
        s.labels["tier"] for f in m.registry.collect() for s in f.samples if s.name.endswith("tier_info")
    }
    assert len(tiers) <= MAX_TIERS
    assert get("rotator_clob_rate_limit_tier_info", {"tier": "other"}) == 1  # the last one, past the cap


def test_the_audit_record_round_trips_and_older_states_have_none() -> None:
    record = AuditRecord(5.0, (UnmanagedKey(mask(A), None, 4.0), UnmanagedKey(mask(B), 0, 5.0)), False)
    st = CredentialState(current=key(1), next_nonce=2, audit=record)
    data = st.to_dict()
    assert data["schema"] == STATE_SCHEMA == 3
    assert CredentialState.from_dict(data) == st
    older = dict(data, schema=2)
    del older["audit"]
    assert CredentialState.from_dict(older).audit is None
    with pytest.raises(MalformedError, match="field audit"):
        CredentialState.from_dict(dict(data, audit={"at": 1.0, "closed_only": "yes"}))
    assert A not in str(data)  # masked ids only


def test_a_one_shot_run_audits_a_quarter_window_of_the_auth_budget_at_most() -> None:
    from rotator.clob.budget import one_shot_audits

    assert one_shot_audits(_settings(200)) == 3  # 50 per 10 s: 12 requests, 4 each (every kind's list)
    assert (
        one_shot_audits(_settings(200, clob={"rate_limits": {"auth": {"requests": 100, "per": "10s"}}})) == 6
    )
    assert one_shot_audits(_settings(200, clob={"rate_limits": {"auth": {"requests": 2, "per": "10s"}}})) == 1
