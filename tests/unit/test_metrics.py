"""rotator.metrics and rotator.exporter on a fresh registry: names, pre-created series, what a pass
records, the per-credential views a one-shot run pushes. The health endpoints, over a real socket, are in
tests/integration/test_health_server.py."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rotator.metrics import CLOB_ENDPOINTS, Metrics, view
from rotator.model import CredentialState, Key, Retiring, Secret

ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"
API_KEY = "0190b1e2-7c3d-7aaa-8bbb-1234567890ab"


def key(created_at: float, api_key: str = API_KEY) -> Key:
    return Key(api_key, Secret("c2VjcmV0" * 5), Secret("ab" * 32), ADDRESS, 3, created_at)


@pytest.fixture
def m() -> Metrics:
    metrics = Metrics(CollectorRegistry())
    metrics.init_credentials(["mm1", "mm2"], "file")
    return metrics


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_design_names_and_types() -> None:
    families = {f.name: f.type for f in Metrics().registry.collect()}
    expected = {
        "rotator_rotations": "counter",
        "rotator_rotation_duration_seconds": "histogram",
        "rotator_last_success_timestamp_seconds": "gauge",
        "rotator_key_created_timestamp_seconds": "gauge",
        "rotator_retiring_keys": "gauge",
        "rotator_revocations": "counter",
        "rotator_old_key_invalidated": "counter",
        "rotator_clob_requests": "counter",
        "rotator_clock_skew_seconds": "gauge",
        "rotator_store_operations": "counter",
        "rotator_build_info": "gauge",
        # operator additions
        "rotator_last_failure_timestamp_seconds": "gauge",
        "rotator_consecutive_failures": "gauge",
        "rotator_rotate_every_seconds": "gauge",
        "rotator_grace_seconds": "gauge",
        "rotator_next_rotation_timestamp_seconds": "gauge",
        "rotator_retiring_deadline_timestamp_seconds": "gauge",
    }
    # Other features may add metrics; these must stay, with these types, and all under rotator_.
    assert {k: families.get(k) for k in expected} == expected
    assert all(name.startswith("rotator_") for name in families)


def test_counters_are_precreated_at_zero_and_state_gauges_are_not(m: Metrics) -> None:
    for cred in ("mm1", "mm2"):
        for result in ("success", "failure"):
            assert value(m, "rotator_rotations_total", credential=cred, result=result) == 0
        for result in ("deleted", "already-gone", "failure"):
            assert value(m, "rotator_revocations_total", credential=cred, result=result) == 0
        assert value(m, "rotator_old_key_invalidated_total", credential=cred) == 0
        assert value(m, "rotator_consecutive_failures", credential=cred) == 0
        assert value(m, "rotator_rotation_duration_seconds_count", credential=cred) == 0
        # unknown until a pass read the state: no made-up 0 ("no retiring key", "key from 1970")
        assert value(m, "rotator_key_created_timestamp_seconds", credential=cred) is None
        assert value(m, "rotator_retiring_keys", credential=cred) is None
        assert value(m, "rotator_last_success_timestamp_seconds", credential=cred) is None
    for endpoint in CLOB_ENDPOINTS:
        assert value(m, "rotator_clob_requests_total", endpoint=endpoint, code="429") == 0
    assert (
        value(m, "rotator_store_operations_total", backend="file", operation="save", result="conflict") == 0
    )
    assert value(m, "rotator_build_info", version=__import__("rotator").__version__) == 1


def test_a_good_pass_records_the_state(m: Metrics) -> None:
    m.set_policy("mm1", rotate_every=3600, grace=600)
    old = key(500, api_key="0190aaaa-0000-7000-8000-000000000000")
    state = CredentialState(
        current=key(1000),
        retiring=(Retiring(old, 1000, 1600), Retiring(old, 1000, 1300)),
    )
    m.observe_pass("mm1", failed=False, now=1001, state=state)
    assert value(m, "rotator_last_success_timestamp_seconds", credential="mm1") == 1001
    assert value(m, "rotator_key_created_timestamp_seconds", credential="mm1") == 1000
    assert value(m, "rotator_next_rotation_timestamp_seconds", credential="mm1") == 4600
    assert value(m, "rotator_rotate_every_seconds", credential="mm1") == 3600
    assert value(m, "rotator_grace_seconds", credential="mm1") == 600
    assert value(m, "rotator_retiring_keys", credential="mm1") == 2
    assert value(m, "rotator_retiring_deadline_timestamp_seconds", credential="mm1") == 1300
    m.observe_pass("mm1", failed=False, now=2000, state=CredentialState(current=key(1000)))
    assert value(m, "rotator_retiring_keys", credential="mm1") == 0
    assert value(m, "rotator_retiring_deadline_timestamp_seconds", credential="mm1") == 0


def test_failures_count_a_streak_that_a_success_resets(m: Metrics) -> None:
    state = CredentialState(current=key(1000))
    m.observe_pass("mm1", failed=False, now=1000, state=state)
    for i in range(1, 4):
        m.observe_pass("mm1", failed=True, now=1000 + i, state=state)
        assert value(m, "rotator_consecutive_failures", credential="mm1") == i
    assert value(m, "rotator_last_failure_timestamp_seconds", credential="mm1") == 1003
    assert value(m, "rotator_last_success_timestamp_seconds", credential="mm1") == 1000  # untouched
    m.observe_pass("mm1", failed=False, now=2000, state=state)
    assert value(m, "rotator_consecutive_failures", credential="mm1") == 0
    assert value(m, "rotator_consecutive_failures", credential="mm2") == 0


def test_a_pass_that_could_not_read_the_state_keeps_the_last_known_gauges(m: Metrics) -> None:
    old = key(500, api_key="0190aaaa-0000-7000-8000-000000000000")
    m.observe_pass(
        "mm1", failed=False, now=1000, state=CredentialState(key(900), retiring=(Retiring(old, 900, 1200),))
    )
    m.observe_pass("mm1", failed=True, now=1100, state=None)
    assert value(m, "rotator_retiring_keys", credential="mm1") == 1
    assert value(m, "rotator_key_created_timestamp_seconds", credential="mm1") == 900


def test_carry_failures_continues_only_a_failing_streak(m: Metrics) -> None:
    state = CredentialState(current=key(1000))
    m.observe_pass("mm1", failed=True, now=1000, state=state)
    m.observe_pass("mm2", failed=False, now=1000, state=state)
    m.carry_failures({"mm1": 4, "mm2": 7})
    assert value(m, "rotator_consecutive_failures", credential="mm1") == 5
    assert value(m, "rotator_consecutive_failures", credential="mm2") == 0


def test_no_key_id_address_or_secret_in_any_label(m: Metrics) -> None:
    k = key(1000)
    m.set_policy("mm1", 3600, 600)
    m.observe_pass(
        "mm1", failed=False, now=1000, state=CredentialState(current=k, retiring=(Retiring(k, 1, 2),))
    )
    m.rotations.labels(credential="mm1", result="success").inc()
    m.clob_requests.labels(endpoint="/auth/api-key", code="200").inc()
    text = generate_latest(m.registry).decode()
    for forbidden in (
        API_KEY,
        API_KEY[:8],
        ADDRESS,
        ADDRESS.lower(),
        k.api_secret.reveal(),
        k.api_passphrase.reveal(),
    ):
        assert forbidden not in text
    allowed = {"credential", "result", "endpoint", "code", "backend", "operation", "version", "le"}
    for family in m.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample


def test_views_split_the_registry_by_credential(m: Metrics) -> None:
    state = CredentialState(current=key(1000))
    m.observe_pass("mm1", failed=False, now=1000, state=state)
    m.observe_pass("mm2", failed=True, now=1000, state=None)
    m.clock_skew.set(1.5)

    mm1 = {s.name: s.labels for f in view(m.registry, "mm1").collect() for s in f.samples}
    assert all(labels.get("credential") == "mm1" for labels in mm1.values())
    assert "rotator_last_success_timestamp_seconds" in mm1

    mm2 = {s.name for f in view(m.registry, "mm2").collect() for s in f.samples}
    # A failed run pushes no success timestamp (the Pushgateway keeps the last good one) and no
    # state gauge it could not read.
    assert "rotator_last_success_timestamp_seconds" not in mm2
    assert "rotator_key_created_timestamp_seconds" not in mm2
    assert "rotator_last_failure_timestamp_seconds" in mm2

    process = {s.name: s.labels for f in view(m.registry, None).collect() for s in f.samples}
    assert all("credential" not in labels for labels in process.values())
    assert {"rotator_clock_skew_seconds", "rotator_build_info", "rotator_clob_requests_total"} <= set(process)
    for family in view(m.registry, None).collect():
        assert family.samples, f"empty family {family.name} in a push"


def test_pushgateway_urls_lose_their_credentials_in_logs() -> None:
    from rotator.exporter import safe_url

    assert safe_url("https://user:s3cret@pg.example:9091/") == "https://pg.example:9091"
    assert safe_url("pg.monitoring.svc:9091") == "http://pg.monitoring.svc:9091"


def test_unmanaged_keys_by_kind_always_has_trading_and_the_other_kinds_only_above_zero(m: Metrics) -> None:
    from rotator.model import KINDS, AuditRecord, UnmanagedKey

    def audit(*kinds: str) -> AuditRecord:
        return AuditRecord(1.0, tuple(UnmanagedKey(f"k{i}", None, 1.0, kind) for i, kind in enumerate(kinds)))

    def by_kind() -> dict[str, float | None]:
        return {k: value(m, "rotator_unmanaged_keys_by_kind", credential="mm1", kind=k) for k in KINDS}

    m.observe_unmanaged("mm1", audit())
    assert by_kind() == {"trading": 0.0, "readonly": None, "builder": None}
    m.observe_unmanaged("mm1", audit("builder", "builder", "readonly", "trading"))
    assert by_kind() == {"trading": 1.0, "readonly": 1.0, "builder": 2.0}
    assert value(m, "rotator_unmanaged_keys", credential="mm1") == 4.0
    m.observe_unmanaged("mm1", audit("readonly"))  # the builder keys were revoked in the web UI
    assert by_kind() == {"trading": 0.0, "readonly": 1.0, "builder": None}
