"""rotator.exporter's health server over a real socket: /readyz, /healthz, /metrics and a 404."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from rotator.exporter import HealthServer
from rotator.metrics import Metrics


@pytest.fixture
def m() -> Metrics:
    metrics = Metrics(CollectorRegistry())
    metrics.init_credentials(["mm1", "mm2"], "file")
    return metrics


# -- the HTTP endpoints, on a real socket ----------------------------------------------------------------


class Probe:
    problem: str | None = "no pass has read the store yet"
    alive = True


@pytest.fixture
def server(m: Metrics) -> Iterator[tuple[HealthServer, Probe]]:
    probe = Probe()
    srv = HealthServer(m.registry, "127.0.0.1", 0, lambda: probe.problem, lambda: probe.alive)
    srv.start()
    yield srv, probe
    srv.stop()


def test_health_endpoints(server: tuple[HealthServer, Probe]) -> None:
    srv, probe = server
    base = f"http://127.0.0.1:{srv.port}"
    r = httpx.get(f"{base}/readyz")
    assert r.status_code == 503 and r.text == "not ready: no pass has read the store yet\n"
    probe.problem = None
    assert httpx.get(f"{base}/readyz").status_code == 200
    assert httpx.get(f"{base}/healthz").status_code == 200
    probe.alive = False
    assert httpx.get(f"{base}/healthz").status_code == 503
    metrics = httpx.get(f"{base}/metrics?x=1")
    assert metrics.status_code == 200 and "rotator_build_info" in metrics.text
    assert httpx.get(f"{base}/other").status_code == 404
