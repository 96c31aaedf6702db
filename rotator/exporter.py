"""Getting metrics out: an HTTP endpoint for the daemon, a Pushgateway push for one-shot runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from rotator.runtime import Runtime

log = logging.getLogger("rotator.exporter")


class HealthServer:
    """``/metrics``, ``/healthz`` (the process is alive) and ``/readyz`` (``ready()`` says so)."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, ready: Callable[[], str | None]
    ) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._answer(200, b"ok\n")
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
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def push_metrics(rt: Runtime, credentials: list[str]) -> None:
    """Push a one-shot run's metrics, grouped by job and instance so runs do not erase each other."""
    from prometheus_client import pushadd_to_gateway

    url = rt.settings.metrics.pushgateway
    assert url is not None
    grouping = {"instance": ",".join(sorted(credentials))[:200] or "none"}
    try:
        pushadd_to_gateway(
            url, job=rt.settings.metrics.job, registry=rt.metrics.registry, grouping_key=grouping
        )
    except OSError as exc:
        log.error("pushgateway %s: push failed: %s", url, exc)
