"""Builds the worker's parts from settings, once: store, CLOB adapter, signers, policies.

This is the worker's factory of SDK-backed objects (STYLE.md rule 3); the store is built by
``rotator.stores.factory``, which a bot uses too. The environment arrives as a mapping from
``cli.py``; nothing here reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rotator.clob.adapter import ClobAdapter, ProbeEndpoint, RetryPolicy, SkewPolicy
from rotator.clob.budget import SlidingWindowBudget, daemon_auth_limit, one_shot_auth_budget
from rotator.clob.clock import ClobClock
from rotator.config import CredentialSettings, Settings
from rotator.metrics import Metrics
from rotator.model import CredentialRef
from rotator.rotation import Policy, Rotator
from rotator.signers.base import Signer
from rotator.signers.factory import build_signer, check_signer
from rotator.stores.base import LEADER, Store
from rotator.stores.factory import build_store


@dataclass
class Runtime:
    """Everything a pass needs, built once per process."""

    settings: Settings
    env: Mapping[str, str]
    metrics: Metrics = field(default_factory=Metrics)
    #: Whether this process may start rotation steps: a daemon replica only while it holds the
    #: leader lease (set by the scheduler); one-shot runs always.
    may_work: Callable[[], bool] = lambda: True
    #: The daemon (``rotator run``); else a one-shot run. Set before the CLOB adapter is built.
    daemon: bool = False
    _store: Store | None = None
    _clob: ClobAdapter | None = None
    _rotator: Rotator | None = None
    _signers: dict[str, Signer] = field(default_factory=dict)

    def validate(self, *, signers: bool = True) -> None:
        """Fail fast (exit 2) on config the file alone cannot show: missing env vars, bad key shapes.
        Remote signer sources are only checked offline here; they are first asked when a pass signs.
        ``signers=False``: for commands that never sign (``status``), which need no wallet key."""
        if signers:
            for cred in self.settings.credentials:
                check_signer(cred, self.settings, self.env)
        self.store  # noqa: B018 - builds the store: a missing file key is a config error

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = build_store(self.settings, self.env)
            self.metrics.init_credentials((c.name for c in self.settings.credentials), self._store.backend)
            self.metrics.init_hygiene(c.name for c in self.settings.credentials)
        return self._store

    @property
    def clob(self) -> ClobAdapter:
        if self._clob is None:
            c = self.settings.clob
            self._clob = ClobAdapter(
                c.host,
                c.chain_id,
                timeout=c.timeout,
                retry=RetryPolicy(c.retry.attempts, c.retry.base, c.retry.cap, c.retry.deadline),
                skew=SkewPolicy(c.clock_skew.max, c.clock_skew.mode, c.clock_skew.recheck_every),
                auth_budget=self._auth_budget(),
                read_budget=SlidingWindowBudget(c.rate_limits.read.requests, c.rate_limits.read.per),
                probe=ProbeEndpoint.parse(c.probe.endpoint),
                probe_budget=SlidingWindowBudget(c.probe.requests, c.probe.per),
                metrics=self.metrics,
            )
        return self._clob

    def _auth_budget(self) -> SlidingWindowBudget:
        """The worker's /auth/* share, split between a daemon and a one-shot run beside it (budget.py)."""
        if self.daemon:
            return SlidingWindowBudget(
                daemon_auth_limit(self.settings), self.settings.clob.rate_limits.auth.per
            )
        return one_shot_auth_budget(self.settings, lambda: self.store.load_lease(LEADER))

    @property
    def rotator(self) -> Rotator:
        if self._rotator is None:
            # Deadlines on the CLOB's clock, not this machine's (DESIGN.md "Time", issue 13 item 9).
            # On SIGTERM (ClobAdapter.cancel) the verify backoff ends early and no new rotation starts.
            clock = ClobClock(self.clob.server_time)
            self._rotator = Rotator(
                self.store,
                self.clob,
                self.metrics,
                clock=clock,
                sleep=self.clob.pause,
                stopping=lambda: self.clob.cancelled() or not self.may_work(),
            )
        return self._rotator

    def signer(self, cred: CredentialSettings) -> Callable[[], Signer]:
        def build() -> Signer:
            if cred.name not in self._signers:
                self._signers[cred.name] = build_signer(cred, self.settings, self.env)
            return self._signers[cred.name]

        return build

    def policy(self, cred: CredentialSettings, *, probe_every: float = 0.0) -> Policy:
        """``probe_every``: 0 for one-shot runs (each run checks the key once); the daemon passes its own."""
        return Policy(
            probe_every=probe_every,
            rotate_every=cred.rotate_every,
            grace=cred.grace,
            verify_timeout=cred.verify_timeout
            if cred.verify_timeout is not None
            else self.settings.clob.verify_timeout,
            adopt_existing=cred.adopt_existing,
            start_nonce=cred.start_nonce,
            min_grace=cred.min_grace,
            consumer_ttl=cred.consumer_ttl,
        )

    @staticmethod
    def ref(cred: CredentialSettings) -> CredentialRef:
        return CredentialRef(cred.name, cred.path)

    def close(self) -> None:
        for signer in self._signers.values():
            close = getattr(signer, "close", None)  # remote sources hold clients (and Vault tokens)
            if close is not None:
                close()
        if self._clob is not None:
            self._clob.close()
        if self._store is not None:
            self._store.close()
