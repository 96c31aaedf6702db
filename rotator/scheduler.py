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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.config import CredentialSettings, Settings
    from rotator.runtime import Runtime

log = logging.getLogger("rotator.scheduler")


def pass_interval(settings: Settings, cred: CredentialSettings) -> float:
    """Seconds between passes over ``cred``.

    ``daemon.tick``, shortened for cadences and graces shorter than it, but never so short that the
    fleet's key probes (one ``/auth/*`` request per credential per pass) take more than half of the
    auth budget: rotations need the other half.
    """
    budget = settings.clob.rate_limits.auth
    floor = 1.0
    if budget.requests > 0:
        floor = max(floor, len(settings.credentials) * budget.per / (budget.requests / 2))
    wanted = min(settings.daemon.tick, cred.rotate_every / 4, cred.grace / 4)
    return max(floor, wanted)


class Daemon:
    def __init__(self, rt: Runtime) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.rt = rt
        self.stop_event = threading.Event()
        workers = max(1, min(16, len(rt.settings.credentials)))
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(workers)}, timezone="UTC"
        )
        # Readiness: the config loaded (we got here) and the store answered the last read.
        self.store_problem: str | None = "no pass has read the store yet"
        self.started = False

    def _job(self, cred: CredentialSettings) -> None:
        if self.stop_event.is_set():
            return
        rt = self.rt
        result = rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred))
        # Only a failed read says the store is unreachable; a CLOB failure later in the pass does not
        # make the worker unready (the metrics endpoint must stay in the Service to alert on it).
        if result.failed_step == "read":
            self.store_problem = result.error or "store read failed"
        else:
            self.store_problem = None

    def ready(self) -> str | None:
        return self.store_problem

    def alive(self) -> bool:
        """Liveness: false only if the scheduler died under a running daemon (not starting or stopping)."""
        if not self.started or self.stop_event.is_set():
            return True
        return bool(self.scheduler.running)

    def start(self) -> None:
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
        self.scheduler.start()
        self.started = True
        # First pass right away, spread by the job's jitter.
        for job in self.scheduler.get_jobs():
            job.modify(next_run_time=_soon(jitter))

    def shutdown(self) -> None:
        self.stop_event.set()
        # Passes in flight end within seconds: CLOB waits and requests are cut short, and no new
        # rotation starts; store writes already under way finish (each is one atomic CAS).
        self.rt.clob.cancel()
        self.scheduler.shutdown(wait=True)  # waits for the passes in flight


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
