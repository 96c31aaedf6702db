"""The daemon: APScheduler wiring. It wires; the rotation decides.

One job per credential (``max_instances=1``, ``coalesce=True``), ticking every ``daemon.tick`` with
jitter so a fleet does not hit the CLOB at once. SIGTERM lets the pass in flight finish, then stops.
"""

from __future__ import annotations

import datetime
import logging
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.config import CredentialSettings
    from rotator.runtime import Runtime

log = logging.getLogger("rotator.scheduler")


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
        self.store_problem: str | None = "not started"

    def _job(self, cred: CredentialSettings) -> None:
        if self.stop_event.is_set():
            return
        rt = self.rt
        result = rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred))
        if result.failed_step in ("read",):
            self.store_problem = result.error
        elif result.ok:
            self.store_problem = None

    def ready(self) -> str | None:
        return self.store_problem

    def start(self) -> None:
        tick = self.rt.settings.daemon.tick
        jitter = self.rt.settings.daemon.jitter
        for cred in self.rt.settings.credentials:
            self.scheduler.add_job(
                self._job,
                "interval",
                seconds=min(tick, max(1.0, cred.rotate_every / 4), max(1.0, cred.grace / 4)),
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
        # First pass right away, spread by the job's jitter.
        for job in self.scheduler.get_jobs():
            job.modify(next_run_time=_soon(jitter))

    def shutdown(self) -> None:
        self.stop_event.set()
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
            rt.metrics.registry, rt.settings.metrics.host, rt.settings.metrics.port, daemon.ready
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
