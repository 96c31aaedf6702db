"""Prometheus metrics of the worker (names are an interface: dashboards and alerts use them).

Every metric lives on an injected ``CollectorRegistry`` so tests build a fresh one and read it
with ``get_sample_value``. No secret, key id or address ever goes into a label.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rotator import __version__

CLOB_ENDPOINTS = (
    "/time",
    "/auth/api-key",
    "/auth/derive-api-key",
    "/auth/api-keys",
)
STORE_OPERATIONS = ("load", "save", "publish", "read_published")


class Metrics:
    """The worker's metrics. One instance per process (or per test), on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rotations = Counter(
            "rotator_rotations_total",
            "Rotation passes that rotated or failed.",
            ["credential", "result"],
            registry=r,
        )
        self.rotation_duration = Histogram(
            "rotator_rotation_duration_seconds",
            "Wall time of a rotation, from intent to promotion.",
            ["credential"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.last_success = Gauge(
            "rotator_last_success_timestamp_seconds",
            "When a pass over the credential last succeeded.",
            ["credential"],
            registry=r,
        )
        self.key_created = Gauge(
            "rotator_key_created_timestamp_seconds",
            "Creation time of the credential's current (published) key.",
            ["credential"],
            registry=r,
        )
        self.retiring = Gauge(
            "rotator_retiring_keys",
            "Keys past their rotation still awaiting revocation.",
            ["credential"],
            registry=r,
        )
        self.retiring_deadline = Gauge(
            "rotator_retiring_deadline_timestamp_seconds",
            "Earliest revoke-after deadline among the credential's retiring keys (0 when none).",
            ["credential"],
            registry=r,
        )
        self.next_rotation = Gauge(
            "rotator_next_rotation_timestamp_seconds",
            "When the credential's current key becomes due for rotation.",
            ["credential"],
            registry=r,
        )
        self.revocations = Counter(
            "rotator_revocations_total",
            "Revocations of retiring keys, by result (deleted, already-gone, failure).",
            ["credential", "result"],
            registry=r,
        )
        self.old_key_invalidated = Counter(
            "rotator_old_key_invalidated_total",
            "Old keys found already invalid right after promotion (the server keeps one key per wallet).",
            ["credential"],
            registry=r,
        )
        self.clob_requests = Counter(
            "rotator_clob_requests_total",
            "Requests to the CLOB by endpoint and HTTP status (code 0: no answer).",
            ["endpoint", "code"],
            registry=r,
        )
        self.clock_skew = Gauge(
            "rotator_clock_skew_seconds", "CLOB server clock minus the local clock.", registry=r
        )
        self.store_operations = Counter(
            "rotator_store_operations_total",
            "Store operations by backend, operation and result.",
            ["backend", "operation", "result"],
            registry=r,
        )
        self.build_info = Gauge(
            "rotator_build_info", "Always 1; the version label says which build.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)

    def init_credentials(self, names: Iterable[str], backend: str) -> None:
        """Pre-create every label combination at 0 so rates and alerts see the series from the start."""
        for name in names:
            for result in ("success", "failure"):
                self.rotations.labels(credential=name, result=result)
            for result in ("deleted", "already-gone", "failure"):
                self.revocations.labels(credential=name, result=result)
            self.old_key_invalidated.labels(credential=name)
            self.retiring.labels(credential=name)
            self.rotation_duration.labels(credential=name)
        for op in STORE_OPERATIONS:
            for result in ("success", "failure", "conflict"):
                self.store_operations.labels(backend=backend, operation=op, result=result)
