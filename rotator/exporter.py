"""Getting metrics out: an HTTP endpoint for the daemon, a Pushgateway push for one-shot runs.

The daemon serves ``/metrics``, ``/healthz`` (liveness: the process and its scheduler run) and
``/readyz`` (readiness: the config loaded and the store answered) on ``metrics.port``.

A one-shot run (the CronJob) pushes to ``metrics.pushgateway``, one group per credential
(``job``, ``credential``) plus one process-wide group (``job`` alone: CLOB, clock, store, build),
so runs over different credentials never erase each other's series. It pushes with POST, which
replaces only the metric families present in the push: a family the run did not set (say
``rotator_last_success_timestamp_seconds`` after a failed pass) keeps the value an earlier run
pushed. That is what lets an alert say "no success for X" about a CronJob.
"""

from __future__ import annotations

import errno
import logging
import re
import threading
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from rotator.metrics import Metrics
    from rotator.runtime import Runtime

log = logging.getLogger("rotator.exporter")

PUSH_TIMEOUT = 10.0


class HealthServer:
    """``/metrics``, ``/healthz`` (``alive()`` says so) and ``/readyz`` (``ready()`` names no problem)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        ready: Callable[[], str | None],
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    if alive():
                        self._answer(200, b"ok\n")
                    else:
                        self._answer(503, b"scheduler stopped\n")
                elif path == "/readyz":
                    problem = ready()
                    if problem is None:
                        self._answer(200, b"ready\n")
                    else:
                        self._answer(503, f"not ready: {problem}\n".encode())
                else:
                    self._answer(404, b"not found\n")

            def _answer(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would drown the audit log

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except (OSError, OverflowError) as exc:
            from rotator.errors import ConfigError

            reason = getattr(exc, "strerror", None) or type(exc).__name__
            field = "metrics.port" if getattr(exc, "errno", None) == errno.EADDRINUSE else "metrics.host"
            raise ConfigError(f"{field}: cannot listen on {host}:{port} ({reason})") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("serving /metrics, /healthz, /readyz on port %d", self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def safe_url(url: str) -> str:
    """``url`` fit for a log line: any ``user:password@`` part is cut out."""
    return re.sub(r"(?<=://)[^/@]*@", "", _base_url(url))


def previous_failures(url: str, job: str, credentials: Iterable[str]) -> dict[str, float]:
    """``rotator_consecutive_failures`` per credential as the Pushgateway holds it for ``job`` (0 if absent).

    Best effort: a Pushgateway that cannot be read gives {} and the streak restarts from this run.
    """
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(credentials)
    found: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"{_base_url(url)}/metrics", timeout=PUSH_TIMEOUT) as resp:  # noqa: S310 - URL from config
            text = resp.read().decode("utf-8", "replace")
        for family in text_string_to_metric_families(text):
            if family.name != "rotator_consecutive_failures":
                continue
            for sample in family.samples:
                cred = sample.labels.get("credential")
                if sample.labels.get("job") == job and cred in wanted:
                    found[cred] = sample.value
    except (OSError, ValueError) as exc:
        log.warning("pushgateway %s: cannot read the previous failure streak: %s", safe_url(url), exc)
        return {}
    return found


def push(metrics: Metrics, url: str, job: str, credentials: Iterable[str]) -> bool:
    """Push a one-shot run's metrics: one group per credential, one for the process. True if all landed."""
    from prometheus_client import pushadd_to_gateway

    from rotator.metrics import view

    names = list(credentials)
    metrics.carry_failures(previous_failures(url, job, names))
    groups: list[tuple[dict[str, str], str | None]] = [({"credential": n}, n) for n in names]
    groups.append(({}, None))
    failed: list[str] = []
    first_error = ""
    for grouping, credential in groups:
        try:
            pushadd_to_gateway(
                _base_url(url),
                job=job,
                registry=view(metrics.registry, credential),
                grouping_key=grouping,
                timeout=PUSH_TIMEOUT,
            )
        except OSError as exc:
            failed.append(f"credential={credential}" if credential else f"job={job}")
            first_error = first_error or str(exc)
    if failed:
        log.error(
            "pushgateway %s: push failed for group(s) %s: %s", safe_url(url), ", ".join(failed), first_error
        )
        return False
    log.info("pushed metrics to %s (job %s, %d credential group(s))", safe_url(url), job, len(names))
    return True


def push_metrics(rt: Runtime, credentials: list[str]) -> bool:
    """Push after ``rotator rotate``. A failed push is logged, not fatal: the exit code reports the
    rotation, and the stale ``push_time_seconds`` raises the CronJob alert."""
    url = rt.settings.metrics.pushgateway
    assert url is not None
    return push(rt.metrics, url, rt.settings.metrics.job, credentials)
