"""Builds the worker's parts from settings, once: store, CLOB adapter, signers, policies.

This is the worker's factory of SDK-backed objects (STYLE.md rule 3); the store is built by
``rotator.stores.factory``, which a bot uses too. The environment arrives as a mapping from
``cli.py``; nothing here reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rotator.clob.adapter import ClobAdapter, ProbeEndpoint, RetryPolicy, SkewPolicy
from rotator.clob.budget import SlidingWindowBudget, daemon_auth_limit, one_shot_auth_budget
from rotator.clob.clock import ClobClock
from rotator.config import CredentialSettings, Settings, env_problem
from rotator.errors import ConfigError
from rotator.metrics import Metrics
from rotator.model import CredentialRef
from rotator.rotation import Policy, Rotator, one_shot_slack
from rotator.signers.base import Signer
from rotator.signers.factory import build_signer, check_signer
from rotator.stores.base import LEADER, Store
from rotator.stores.factory import build_store

if TYPE_CHECKING:
    from rotator.clob.transport import Proxy
    from rotator.schedule import Schedule


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
    _problems: dict[str, str | None] = field(default_factory=dict)
    _schedules: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Fail fast (exit 2) on what stops every credential: the store cannot be built (a missing
        file key), or the CLOB's egress proxy names a password that is not there. What stops one
        credential only (its signer's secret source) is its own :meth:`problem`: its passes fail
        alone, and the others rotate on."""
        self.clob_proxy()  # a proxy password that is not there is a config error, before any pass
        self.store  # noqa: B018 - builds the store: a missing file key is a config error

    def problem(self, cred: CredentialSettings) -> str | None:
        """Why ``cred``'s signer cannot be used, in one line (``signer env NOPE_PK is not set``), or
        None. Checked once per process, without a server: env and file keys are read and their shape
        checked, remote sources' clients built (whether Vault or AWS grant the key is learnt when a
        pass first signs)."""
        if cred.name not in self._problems:
            self._problems[cred.name] = self._check(cred)
        return self._problems[cred.name]

    def _check(self, cred: CredentialSettings) -> str | None:
        if cred.kind != "trading":
            return None  # its calls are signed by its via's key, read from the store (issue 27)
        s = cred.signer
        if s.source == "env" and s.env is not None and (missing := env_problem(self.env, s.env)):
            return f"signer env {s.env} {missing}"
        try:
            check_signer(cred, self.settings, self.env)
        except ConfigError as exc:
            # "credentials[mm1].signer (file /k): cannot read (...)": the line names its credential.
            return str(exc).removeprefix(f"credentials[{cred.name}].")
        return None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = build_store(self.settings, self.env)
            self.metrics.init_credentials((c.name for c in self.settings.credentials), self._store.backend)
            self.metrics.init_hygiene(c.name for c in self.settings.credentials)
            self.metrics.init_kinds((c.name, c.kind, c.via) for c in self.settings.credentials)
        return self._store

    def clob_proxy(self) -> Proxy | None:
        """``clob.proxy`` as the transport takes it (its password checked now, read per connection).

        :raises ConfigError: the password's variable or file is missing.
        """
        p = self.settings.clob.proxy
        if p is None:
            return None
        from rotator.clob.transport import Proxy

        password = p.password_reader(self.env, "clob.proxy")
        if p.scheme == "socks5":
            return Proxy("socks5", p.host, p.port, p.username, password)
        return Proxy("http", p.host, p.port, p.username, password)

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
                proxy=self.clob_proxy(),
            )
        return self._clob

    def _auth_budget(self) -> SlidingWindowBudget:
        """The worker's /auth/* share, split between a daemon and a one-shot run beside it (budget.py)."""
        if self.daemon:
            return SlidingWindowBudget(
                daemon_auth_limit(self.settings), self.settings.clob.rate_limits.auth.per
            )
        return one_shot_auth_budget(self.settings, lambda: self.store.load_lease(LEADER))

    def use_clob(self, adapter: ClobAdapter) -> None:
        """Send this runtime's CLOB calls through ``adapter`` (``rotator doctor``'s, which observes)."""
        self._clob = adapter
        self._rotator = None

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
                clock_measured=lambda: clock.measured,
            )
        return self._rotator

    def signer(self, cred: CredentialSettings) -> Callable[[], Signer]:
        def build() -> Signer:
            if cred.name not in self._signers:
                self._signers[cred.name] = build_signer(cred, self.settings, self.env)
            return self._signers[cred.name]

        return build

    def schedule(self, cred: CredentialSettings) -> Schedule | None:
        """``cred``'s parsed schedule (APScheduler is imported only when one is configured)."""
        if cred.schedule is None:
            return None
        if cred.name not in self._schedules:
            from rotator.schedule import Schedule

            sched = cred.schedule
            self._schedules[cred.name] = Schedule.parse(sched.cron, sched.timezone, sched.window)
        schedule: Schedule = self._schedules[cred.name]
        return schedule

    @property
    def create_window(self) -> float:
        """Seconds after an intent by which its create was answered or given up: the retry deadline
        plus one request's timeout (``Policy.create_window``)."""
        clob = self.settings.clob
        return clob.retry.deadline + clob.timeout

    def policy(self, cred: CredentialSettings, *, probe_every: float | None = None) -> Policy:
        """``probe_every``: None for one-shot runs (each run checks the key once, and takes a key
        within their start-up jitter of ``rotate_every`` as due); the daemon passes its own."""
        return Policy(
            kind=cred.kind,
            via=cred.via,
            create_window=self.create_window,
            probe_every=probe_every or 0.0,
            due_slack=one_shot_slack(cred.rotate_every) if probe_every is None else 0.0,
            schedule=self.schedule(cred),
            max_age=cred.max_age,
            history_limit=cred.history_limit,
            rotate_every=cred.rotate_every,
            grace=cred.grace,
            verify_timeout=cred.verify_timeout
            if cred.verify_timeout is not None
            else self.settings.clob.verify_timeout,
            adopt_existing=cred.adopt_existing,
            start_nonce=cred.start_nonce,
            min_grace=cred.min_grace,
            consumer_ttl=cred.consumer_ttl,
            # Read-only and builder keys coexist by design: rotations overlap them for grace.
            key_model=cred.key_model if cred.kind == "trading" else "several",
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
