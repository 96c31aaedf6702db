"""The daemon: APScheduler wiring. It wires; the rotation decides.

One job per credential (``max_instances=1``, ``coalesce=True``), ticking every ``daemon.tick`` with
jitter so a fleet does not hit the CLOB at once. SIGTERM cancels the CLOB calls in flight (the
passes end within seconds, starting no new rotation), then stops.
"""

from __future__ import annotations

import datetime
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.config import CredentialSettings, Settings
    from rotator.runtime import Runtime

log = logging.getLogger("rotator.scheduler")


#: Seconds between two looks for states of credentials removed from the config (at the default tick).
ORPHANS_EVERY = 60.0
#: Passes per second the whole fleet may start: a pass with nothing due is one store read.
MAX_PASSES_PER_SECOND = 20.0


def pass_interval(settings: Settings, cred: CredentialSettings) -> float:
    """Seconds between passes over ``cred``.

    ``daemon.tick``, shortened for cadences and graces shorter than it. A pass with nothing due reads
    the store and spends nothing on the CLOB, so the only floor is the store's load: at most
    :data:`MAX_PASSES_PER_SECOND` passes a second across the fleet.
    """
    floor = max(1.0, len(settings.credentials) / MAX_PASSES_PER_SECOND)
    wanted = min(settings.daemon.tick, cred.rotate_every / 4, cred.grace / 4)
    return max(floor, wanted)


class Daemon:
    def __init__(self, rt: Runtime) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.rt = rt
        rt.daemon = True  # its /auth/* share leaves a one-shot run room beside it (clob/budget.py)
        self.stop_event = threading.Event()
        workers = max(1, min(16, len(rt.settings.credentials)))
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers)}, timezone="UTC"
        )
        # Readiness: the config loaded (we got here) and the store answered the last read (the
        # leader lease's on a standby, which runs no passes but must stay ready to take over).
        self.store_problem: str | None = None
        self.started = False
        from rotator.leader import LeaderElector

        leader = rt.settings.daemon.leader
        self.leader = LeaderElector(
            rt.store, lease=leader.lease, renew=leader.renew, gauge=rt.metrics.enable_leader()
        )
        # A replica that loses the lease stops starting steps at once, mid-pass included.
        rt.may_work = lambda: self.leader.is_leader
        # credential -> when (monotonic) this daemon audits its wallet next (issue 16)
        self._audit_next: dict[str, float] = {}
        # Trading credentials whose first pass has ended: their dependents' first passes follow it.
        self._vias_done: set[str] = set()

    def _job(self, cred: CredentialSettings) -> None:
        if self.stop_event.is_set() or not self.leader.is_leader:
            return  # a standby spends nothing on the CLOB
        try:
            self._pass(cred)
        finally:
            self._start_dependents(cred)

    def _pass(self, cred: CredentialSettings) -> None:
        rt = self.rt
        from rotator.clob.budget import probe_interval

        policy = rt.policy(cred, probe_every=probe_interval(rt.settings))
        # A credential whose signer cannot be used fails alone; the others rotate on.
        result = rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), policy, problem=rt.problem(cred))
        # Only a failed read says the store is unreachable; a CLOB failure later in the pass does not
        # make the worker unready (the metrics endpoint must stay in the Service to alert on it).
        if result.failed_step == "read":
            self.store_problem = result.error or "store read failed"
        else:
            self.store_problem = None
        self._audit_if_due(cred)

    def _start_dependents(self, cred: CredentialSettings) -> None:
        """After a trading credential's first pass, the first passes of the read-only and builder
        credentials ``via`` it (issue 27): their calls are signed with the key that pass may have just
        issued. They wait for nothing else: from then on each runs on its own interval."""
        if cred.name in self._vias_done:
            return
        self._vias_done.add(cred.name)
        for dep in self.rt.settings.credentials:
            if dep.via == cred.name and not self.stop_event.is_set():
                job = self.scheduler.get_job(f"rotate:{dep.name}")
                if job is not None:
                    job.modify(next_run_time=_soon(self.rt.settings.daemon.jitter))

    def _audit_if_due(self, cred: CredentialSettings) -> None:
        """Issue 16: audit the credential's wallet (unmanaged keys, closed-only) every
        :func:`rotator.clob.budget.audit_interval`, after its pass and in the same job, so an audit
        never runs beside a pass over the same credential; reap afterwards when ``reap_unmanaged``."""
        from rotator.clob.budget import audit_interval

        interval = audit_interval(self.rt.settings)
        if interval <= 0 or self.stop_event.is_set() or not self.leader.is_leader:
            return
        if cred.kind != "trading":
            return  # its wallet is audited through its via (issue 27)
        now = time.monotonic()
        due = self._audit_next.get(cred.name)
        if due is None:
            due = self._audit_next[cred.name] = now + self._first_audit_in(cred, interval)
        if now < due:
            return
        self._audit_next[cred.name] = now + interval
        from rotator.hygiene import audit, reap_after

        rt = self.rt
        found = audit(rt.rotator, rt.ref(cred))
        if cred.reap_unmanaged and not self.stop_event.is_set():
            reap_after(rt.rotator, rt.ref(cred), rt.signer(cred), found, start_nonce=cred.start_nonce)

    def _first_audit_in(self, cred: CredentialSettings, interval: float) -> float:
        """Seconds until this daemon first audits ``cred``: when its last recorded audit (by any
        worker, a CronJob run included) falls due; a random point of one interval when there is none
        or it is overdue, so a fleet's first audits are spread out, not sent at start-up."""
        import random

        from rotator.errors import RotatorError

        spread = random.uniform(0, interval)  # noqa: S311 - spreading load, not crypto
        try:
            rot, ref = self.rt.rotator, self.rt.ref(cred)
            record = rot.store_call("load", lambda: rot.store.load(ref)).state.audit
        except RotatorError:
            return spread
        if record is None:
            return spread
        left = record.at + interval - self.rt.rotator.clock()
        return left if 0 < left <= interval else spread

    def _orphans_job(self) -> None:
        """Revoke on schedule the retiring keys of credentials removed from the config (their states
        stay in the store until ``rotator retire``). Listed afresh each time: another worker's
        ``retire`` or a config change elsewhere may have changed the set."""
        if self.stop_event.is_set() or not self.leader.is_leader:
            return  # a standby lists nothing and revokes nothing
        from rotator.errors import RotatorError
        from rotator.orphans import orphan_names, serve

        rt = self.rt
        try:
            names = orphan_names(rt.rotator, (c.name for c in rt.settings.credentials))
        except RotatorError as exc:
            log.warning("cannot list the states of credentials removed from the config: %s", exc)
            return
        for name in names:
            if self.stop_event.is_set():
                return
            serve(rt.rotator, name)

    def ready(self) -> str | None:
        if self.leader.problem is not None:
            return self.leader.problem
        return self.store_problem if self.leader.is_leader else None

    def alive(self) -> bool:
        """Liveness: false only if the scheduler died under a running daemon (not starting or stopping)."""
        if not self.started or self.stop_event.is_set():
            return True
        return bool(self.scheduler.running)

    def start(self) -> None:
        self.leader.start()  # first step now: the first passes below already know who works
        tick = self.rt.settings.daemon.tick
        jitter = self.rt.settings.daemon.jitter
        for cred in self.rt.settings.credentials:
            self.scheduler.add_job(
                self._job,
                "interval",
                seconds=pass_interval(self.rt.settings, cred),
                jitter=jitter,
                args=[cred],
                id=f"rotate:{cred.name}",
                name=cred.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(max(tick, 1)),
                replace_existing=True,
                next_run_time=None,
            )
        self.scheduler.add_job(
            self._orphans_job,
            "interval",
            # Listing the states is a LIST (Vault) or ListSecrets (AWS): once a minute is on time
            # for grace deadlines and light on the store.
            seconds=max(tick, min(ORPHANS_EVERY, 12 * tick)),
            jitter=jitter,
            id="orphans",
            name="states of removed credentials",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(max(tick, 1)),
            replace_existing=True,
            next_run_time=None,
        )
        self.scheduler.start()
        self.started = True
        # First pass right away, spread by the job's jitter; a read-only or builder credential's
        # right after its via's (_start_dependents), or on its interval if that never comes.
        names = {c.name for c in self.rt.settings.credentials}
        waits = {f"rotate:{c.name}" for c in self.rt.settings.credentials if c.via in names}
        for job in self.scheduler.get_jobs():
            if job.id not in waits:
                job.modify(next_run_time=_soon(jitter))

    def shutdown(self) -> None:
        self.stop_event.set()
        # Passes in flight end within seconds: CLOB waits and requests are cut short, and no new
        # rotation starts; store writes already under way finish (each is one atomic CAS).
        self.rt.clob.cancel()
        self.scheduler.shutdown(wait=True)  # waits for the passes in flight
        self.leader.stop()  # then hands the lease over: a standby takes over at its next step


def _soon(jitter: float) -> datetime.datetime:
    import random

    delay = random.uniform(0, jitter)  # noqa: S311 - spreading load, not crypto
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)


def run_daemon(rt: Runtime) -> int:
    from rotator.exporter import HealthServer

    daemon = Daemon(rt)
    server = None
    if rt.settings.metrics.port:
        server = HealthServer(
            rt.metrics.registry,
            rt.settings.metrics.host,
            rt.settings.metrics.port,
            daemon.ready,
            daemon.alive,
        )
        server.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the passes in flight", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    log.info("daemon started: %d credential(s)", len(rt.settings.credentials))
    stop.wait()
    daemon.shutdown()
    if server is not None:
        server.stop()
    log.info("daemon stopped")
    return 0
