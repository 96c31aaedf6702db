"""Prometheus metrics of the worker (names are an interface: dashboards and alerts use them).

Every metric lives on an injected ``CollectorRegistry`` so tests build a fresh one and read it
with ``get_sample_value``. No secret, key id or address ever goes into a label: the only
per-credential label is the credential's configured name, so cardinality is bounded by the config.

Points in time are exported as ``*_timestamp_seconds`` and configured durations as ``*_seconds``
gauges, so PromQL computes ages and lateness (``time() - rotator_key_created_timestamp_seconds >
rotator_rotate_every_seconds``) and the alert rules need no copy of the config.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from rotator import __version__

_TIER = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")

if TYPE_CHECKING:
    from rotator.model import AuditRecord, CredentialState

#: The credential kinds (rotator.model.KINDS, kept here so the metrics load no model at import).
KINDS = ("trading", "readonly", "builder")

CLOB_ENDPOINTS = (
    "/time",
    "/auth/api-key",
    "/auth/derive-api-key",
    "/auth/api-keys",
    "/auth/ban-status/closed-only",
    "/balance-allowance",
)
#: At most this many distinct rate-limit tiers become label values; more are counted as ``other``.
MAX_TIERS = 8
STORE_OPERATIONS = ("load", "save", "publish", "read_published", "acks")
REVOCATION_RESULTS = ("deleted", "already-gone", "failure")
KEY_MODELS = ("several", "one", "unknown")


class Metrics:
    """The worker's metrics. One instance per process (or per test), on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # rotate_every per credential, remembered so next_rotation follows the key on every pass.
        self._rotate_every: dict[str, float] = {}
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
            "When a pass over the credential last succeeded (rotated, revoked or found nothing due).",
            ["credential"],
            registry=r,
        )
        self.last_failure = Gauge(
            "rotator_last_failure_timestamp_seconds",
            "When a pass over the credential last failed.",
            ["credential"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "rotator_consecutive_failures",
            "Passes over the credential that failed in a row since the last successful one "
            "(carried across CronJob runs through the Pushgateway).",
            ["credential"],
            registry=r,
        )
        self.key_created = Gauge(
            "rotator_key_created_timestamp_seconds",
            "Creation time of the credential's current (published) key.",
            ["credential"],
            registry=r,
        )
        self.rotate_every = Gauge(
            "rotator_rotate_every_seconds",
            "Configured rotation period of the credential (rotate_every).",
            ["credential"],
            registry=r,
        )
        self.grace = Gauge(
            "rotator_grace_seconds",
            "Configured grace window of the credential: how long a replaced key stays valid.",
            ["credential"],
            registry=r,
        )
        self.next_rotation = Gauge(
            "rotator_next_rotation_timestamp_seconds",
            "When the credential's current key becomes due for rotation.",
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
        self.revocations = Counter(
            "rotator_revocations_total",
            "Revocations of retiring keys, by result (deleted, already-gone, failure).",
            ["credential", "result"],
            registry=r,
        )
        self.revocations_forced = Counter(
            "rotator_revocations_forced_total",
            "Retiring keys revoked at the end of grace while a consumer seen within consumer_ttl still "
            "held another key (the worker's log names the consumer).",
            ["credential"],
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
        self.recovery = Histogram(
            "rotator_recovery_seconds",
            "From the first refusal a consumer reported for the current key (its clock) to the new key "
            "published, for rotations such a report started.",
            ["credential"],
            buckets=(1, 2.5, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self._init_edge()
        self.build_info = Gauge(
            "rotator_build_info", "Always 1; the version label says which build.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        self._init_hygiene()
        self._init_kinds()
        self._init_operations()
        # Only a daemon has it (see enable_leader): a CronJob run pushing a 0 would look like a
        # replica without the lease.
        self.leader: Gauge | None = None
        # The rate-limit alert uses increase() over the 429 series: it must exist before the first 429,
        # or the first burst of throttling is invisible to increase().
        for endpoint in CLOB_ENDPOINTS:
            self.clob_requests.labels(endpoint=endpoint, code="429")

    def _init_edge(self) -> None:
        """Issue 24: edge blocks, the wallet's key model, new keys' propagation and revivals."""
        r = self.registry
        self.clob_blocked = Gauge(
            "rotator_clob_blocked",
            "1 when the credential's last pass failed because the CLOB's edge (Cloudflare) refuses this "
            "worker's egress with a 403 page; 0 once a pass got through. The remedy is clob.proxy.",
            ["credential"],
            registry=r,
        )
        self.key_model = Gauge(
            "rotator_key_model",
            "1 for how the credential's wallet keeps keys, as last learned: several (a rotation overlaps "
            "old and new keys for grace), one (creating a key invalidates the others: rotations publish "
            "the new key at once, without overlap) or unknown.",
            ["credential", "model"],
            registry=r,
        )
        self.key_propagation = Gauge(
            "rotator_key_propagation_seconds",
            "How long the credential's newest key answered 401 after its creation before the CLOB "
            "accepted it (0: at once).",
            ["credential"],
            registry=r,
        )
        self.keys_revived = Counter(
            "rotator_keys_revived_total",
            "Keys that had lapsed (401, nothing at their nonce) and came back on a create at their nonce "
            "(py-clob-client-v2 #40).",
            ["credential"],
            registry=r,
        )

    def observe_unmanaged(self, name: str, record: AuditRecord) -> None:
        """What an audit of ``name``'s wallet found unmanaged, in all and by kind. ``kind="trading"``
        is always set (the audited credential's series, 0 included); a read-only or builder count
        only while above 0, and removed when it is back to 0: most wallets have none of those, and
        a daemon of 1,000 credentials would otherwise carry 2,000 series of zeros."""
        self.unmanaged_keys.labels(credential=name).set(len(record.unmanaged))
        for kind in KINDS:
            count = sum(1 for u in record.unmanaged if u.kind == kind)
            if count or kind == "trading":
                self.unmanaged_by_kind.labels(credential=name, kind=kind).set(count)
            else:
                with contextlib.suppress(KeyError):  # never set, or removed by an earlier audit
                    self.unmanaged_by_kind.remove(name, kind)

    def init_kinds(self, credentials: Iterable[tuple[str, str, str | None]]) -> None:
        """``rotator_credential_info`` for each configured (name, kind, via): 1, so any per-credential
        series can be filtered by kind with ``* on(credential) group_left(kind) rotator_credential_info``
        while its own labels stay as they were (dashboards and alerts match on them)."""
        for name, kind, via in credentials:
            self.credential_info.labels(credential=name, kind=kind, via=via or "").set(1)
            if kind == "builder":  # only a builder key can lose its secret: no series for the others
                self.lost_keys.labels(credential=name)

    def observe_key_model(self, name: str, model: str) -> None:
        """``model``: several, one or unknown."""
        for each in KEY_MODELS:
            self.key_model.labels(credential=name, model=each).set(1 if each == model else 0)

    def _init_kinds(self) -> None:
        """Issue 27: read-only and builder credentials."""
        r = self.registry
        self.credential_info = Gauge(
            "rotator_credential_info",
            "1 for each configured credential: its kind (trading, readonly, builder) and, for a read-only "
            "or builder one, the trading credential whose key manages it (via). Join on credential.",
            ["credential", "kind", "via"],
            registry=r,
        )
        self.lost_keys = Gauge(
            "rotator_lost_keys",
            "Live keys the worker made but cannot revoke: builder keys whose create's answer was lost "
            "with their secret (retiring, reason lost-secret). An operator revokes them in the web UI. "
            "Builder credentials only.",
            ["credential"],
            registry=r,
        )

    def _init_hygiene(self) -> None:
        """Issue 16: the wallet audit, the account's closed-only flag and the CLOB's rate-limit tier."""
        r = self.registry
        self.unmanaged_keys = Gauge(
            "rotator_unmanaged_keys",
            "Keys the credential's wallet holds at the CLOB that rotator does not manage (not current, "
            "retiring or pending), as the last audit found them.",
            ["credential"],
            registry=r,
        )
        self.unmanaged_by_kind = Gauge(
            "rotator_unmanaged_keys_by_kind",
            "rotator_unmanaged_keys by the kind of key (trading, readonly, builder): the same count, split "
            "by the list it was found in. kind=trading is always there; readonly and builder only above 0.",
            ["credential", "kind"],
            registry=r,
        )
        self.closed_only = Gauge(
            "rotator_account_closed_only",
            "1 when the last audit found the credential's account in closed-only mode (no new orders).",
            ["credential"],
            registry=r,
        )
        self.audits = Counter(
            "rotator_audits_total",
            "Audits of the credential's wallet (unmanaged keys, closed-only) by result (success, failure).",
            ["credential", "result"],
            registry=r,
        )
        self.reaped = Counter(
            "rotator_reaped_keys_total",
            "Unmanaged keys revoked by a reap (each confirmed gone).",
            ["credential"],
            registry=r,
        )
        self.rate_limit_tier = Gauge(
            "rotator_clob_rate_limit_tier_info",
            "1 for the rate-limit tier the CLOB's last answer carrying Poly-RateLimit-Tier applied, 0 for "
            "tiers seen before it.",
            ["tier"],
            registry=r,
        )
        self.rate_limit_warnings = Counter(
            "rotator_clob_rate_limit_warnings_total",
            "CLOB answers carrying Poly-RateLimit-Warning: true (the request would have been refused "
            "under live enforcement), by endpoint.",
            ["endpoint"],
            registry=r,
        )
        self._tiers: list[str] = []

    def _init_operations(self) -> None:
        """Issue 23: per-credential readiness, pauses, and what the alerts need of each schedule."""
        r = self.registry
        self.ready = Gauge(
            "rotator_credential_ready",
            "1 when the worker can serve the credential: its signer's secret source and its state can "
            "be read; 0 when one cannot (the worker's log names it), while the others rotate on.",
            ["credential"],
            registry=r,
        )
        self.paused = Gauge(
            "rotator_paused",
            "1 while an operator's pause (rotator pause) holds the credential's scheduled rotations.",
            ["credential"],
            registry=r,
        )
        self.paused_since = Gauge(
            "rotator_paused_since_timestamp_seconds",
            "When the pause in force began (0 when not paused).",
            ["credential"],
            registry=r,
        )
        self.max_key_age = Gauge(
            "rotator_max_key_age_seconds",
            "The age past which the credential's key is rotated whatever its schedule says: rotate_every "
            "without a schedule, max_age with one.",
            ["credential"],
            registry=r,
        )
        self.schedule_interval = Gauge(
            "rotator_schedule_interval_seconds",
            "The longest time between two of the credential's scheduled rotation windows (0: no "
            "schedule): how long a CronJob run on that schedule may be apart from the next.",
            ["credential"],
            registry=r,
        )
        self.next_window = Gauge(
            "rotator_next_window_timestamp_seconds",
            "When the credential's current or next rotation window opens (set only with a schedule).",
            ["credential"],
            registry=r,
        )

    def observe_rate_limit_tier(self, tier: str) -> None:
        """The CLOB said which rate-limit tier it applied. Label values stay bounded: a tier that is
        not a short plain word, or one past :data:`MAX_TIERS` distinct ones, counts as ``other``."""
        label = tier if _TIER.match(tier) else "other"
        if label not in self._tiers and len(self._tiers) >= MAX_TIERS:
            label = "other"
        if label not in self._tiers:
            self._tiers.append(label)
        for seen in self._tiers:
            self.rate_limit_tier.labels(tier=seen).set(1 if seen == label else 0)

    def init_hygiene(self, names: Iterable[str]) -> None:
        """Pre-create the audit counters of every credential (the gauges wait for an audit)."""
        for name in names:
            for result in ("success", "failure"):
                self.audits.labels(credential=name, result=result)
            self.reaped.labels(credential=name)

    def enable_leader(self) -> Gauge:
        """Register ``rotator_leader`` (0 until this daemon holds the leader lease). Idempotent."""
        if self.leader is None:
            self.leader = Gauge(
                "rotator_leader",
                "1 while this daemon holds the leader lease and runs passes; 0 on a standby.",
                registry=self.registry,
            )
        return self.leader

    def init_credentials(self, names: Iterable[str], backend: str) -> None:
        """Pre-create every counter label combination at 0 so rates and alerts see the series from the start.

        State gauges (key created, retiring keys, timestamps) are left unset until a pass has read
        the state: a made-up 0 would claim "no retiring key" or "key created in 1970".
        """
        for name in names:
            for result in ("success", "failure"):
                self.rotations.labels(credential=name, result=result)
            for result in REVOCATION_RESULTS:
                self.revocations.labels(credential=name, result=result)
            self.old_key_invalidated.labels(credential=name)
            self.revocations_forced.labels(credential=name)
            self.rotation_duration.labels(credential=name)
            self.consecutive_failures.labels(credential=name).set(0)
            self.recovery.labels(credential=name)
            self.clob_blocked.labels(credential=name).set(0)
            self.keys_revived.labels(credential=name)
        for op in STORE_OPERATIONS:
            for result in ("success", "failure", "conflict"):
                self.store_operations.labels(backend=backend, operation=op, result=result)

    def set_policy(
        self,
        name: str,
        rotate_every: float,
        grace: float,
        *,
        max_age: float | None = None,
        interval: float = 0.0,
    ) -> None:
        """Export the credential's configured cadence, so alerts compare ages against it: ``max_age``,
        the age past which it never waits (default ``rotate_every``); ``interval``, its schedule's
        longest gap between windows (0: none)."""
        self._rotate_every[name] = rotate_every
        self.rotate_every.labels(credential=name).set(rotate_every)
        self.grace.labels(credential=name).set(grace)
        self.max_key_age.labels(credential=name).set(max_age if max_age is not None else rotate_every)
        self.schedule_interval.labels(credential=name).set(interval)

    def set_ready(self, name: str, ready: bool) -> None:
        self.ready.labels(credential=name).set(1 if ready else 0)

    def observe_pass(
        self,
        name: str,
        *,
        failed: bool,
        now: float,
        state: CredentialState | None,
        next_rotation: float | None = None,
        next_window: float | None = None,
        ready: bool | None = None,
    ) -> None:
        """Record the end of a pass. ``state`` is what the pass left in the store, or None when the
        pass could not read the state (then the state gauges keep their last known values).
        ``next_rotation``: when the key falls due (default: its creation plus ``rotate_every``);
        ``next_window``: when its next rotation window opens; ``ready``: whether the credential can
        be served (None: unknown, say a store that is down: the gauge keeps its value)."""
        if ready is not None:
            self.set_ready(name, ready)
        if next_window is not None:
            self.next_window.labels(credential=name).set(next_window)
        if failed:
            self.last_failure.labels(credential=name).set(now)
            self.consecutive_failures.labels(credential=name).inc()
        else:
            self.last_success.labels(credential=name).set(now)
            self.consecutive_failures.labels(credential=name).set(0)
        if state is None:
            return
        pause = state.paused(now)
        self.paused.labels(credential=name).set(1 if pause else 0)
        self.paused_since.labels(credential=name).set(pause.at if pause else 0)
        if state.current is not None:
            created = state.current.created_at
            self.key_created.labels(credential=name).set(created)
            every = self._rotate_every.get(name)
            if next_rotation is not None:
                self.next_rotation.labels(credential=name).set(next_rotation)
            elif every is not None:
                self.next_rotation.labels(credential=name).set(created + every)
        self.retiring.labels(credential=name).set(len(state.retiring))
        if state.kind == "builder":
            self.lost_keys.labels(credential=name).set(
                sum(1 for r in state.retiring if r.reason == "lost-secret")
            )
        self.retiring_deadline.labels(credential=name).set(
            min((r.revoke_after for r in state.retiring), default=0)
        )
        if state.audit is not None:
            # The record a pass may have added to (a key walked past, or found by a recovery) is the
            # count: said at once, and a one-shot run that audits some credentials pushes the last
            # known count for the others rather than 0.
            self.observe_unmanaged(name, state.audit)

    def carry_failures(self, previous: dict[str, float]) -> None:
        """One-shot runs: continue the failure streak a previous run left in the Pushgateway.

        A CronJob run is a fresh process whose streak starts at 0; adding what the last run pushed
        makes ``rotator_consecutive_failures`` count failed runs in a row, as it counts passes in the
        daemon. A credential whose pass succeeded here stays at 0.
        """
        for name, before in previous.items():
            mine = self.registry.get_sample_value("rotator_consecutive_failures", {"credential": name})
            if mine:
                self.consecutive_failures.labels(credential=name).set(mine + before)


class _Filtered(Collector):
    """A read-only view of a registry: only the samples ``keep`` accepts, and no empty families.

    Empty families are dropped on purpose: a family absent from a Pushgateway POST keeps the value
    an earlier run pushed (``rotator_last_success_timestamp_seconds`` survives a failed run).
    """

    def __init__(self, registry: CollectorRegistry, keep: str | None) -> None:
        self._registry = registry
        self._keep = keep  # a credential name; None keeps the samples without a credential label

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            samples = [s for s in family.samples if s.labels.get("credential") == self._keep]
            if not samples:
                continue
            view = Metric(family.name, family.documentation, family.type, family.unit)
            view.samples = samples
            yield view


def view(registry: CollectorRegistry, credential: str | None) -> CollectorRegistry:
    """A registry exposing only ``credential``'s series (or, with None, the process-wide ones)."""
    out = CollectorRegistry(auto_describe=False)
    out.register(_Filtered(registry, credential))
    return out
