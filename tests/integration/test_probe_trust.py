"""Issue 22 items 9 and 10: a probe's 200 vouches for a key only from a route that checks L2 auth,
and a probe route that answers 404 once is tried again later.

Real processes throughout: the CLI and the daemon as subprocesses, the sandbox CLOB over HTTP, the
file store. The sandbox serves unauthenticated routes as the real CLOB does (``GET /ok``, ``GET /``),
and an injected answer is sent whatever the request's headers: a route that stopped checking them.
"""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.sandbox import Sandbox
from tests.harness import OUTPUTS, Worker, log_events, wait_for

pytestmark = pytest.mark.timeout(180)

PROBE = "/balance-allowance"


def configure(w: Worker, probe: dict[str, Any] | None = None, daemon: dict[str, Any] | None = None) -> None:
    cfg = w.config()
    if probe is not None:
        cfg["clob"]["probe"] = probe
    if daemon is not None:
        cfg["daemon"] = daemon
    w.config_path.write_text(yaml.safe_dump(cfg))


def auth_requests(sb: Sandbox) -> int:
    return sum(n for (_, path, _), n in sb.request_counts().items() if path.startswith("/auth/"))


# -- item 9: refused at config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["//balance-allowance?asset_type=COLLATERAL", "/", "/balance-allowance//x", "/./balance-allowance"],
)
def test_a_probe_endpoint_a_client_could_read_as_a_host_is_refused_at_start(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], endpoint: str
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    configure(w, probe={"endpoint": endpoint})
    for command in (("check", "--offline"), ("rotate", "--all"), ("run",)):
        proc = w.run(*command, timeout=30)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "clob.probe.endpoint" in lines[0], (command, proc.stderr)
        assert "Traceback" not in proc.stderr
    # The same through the environment, named by its variable.
    configure(w)
    proc = subprocess.run(
        w.argv("check", "--offline"),
        env={**w.env(), "ROTATOR_CLOB__PROBE__ENDPOINT": endpoint},
        capture_output=True,
        text=True,
        timeout=30,
    )
    OUTPUTS.extend((proc.stdout, proc.stderr))
    assert proc.returncode == 2
    assert proc.stderr.startswith("rotator: config error: ROTATOR_CLOB__PROBE__ENDPOINT: clob.probe.endpoint")
    assert sandbox.live_keys(w.address) == []  # nothing ran


# -- item 9: an answer to headers nobody checked vouches for nothing --------------------------------


@pytest.mark.parametrize("endpoint", ["/ok", "/time"])
def test_a_probe_route_without_l2_auth_never_keeps_a_dead_key_published(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], endpoint: str
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, rotate_every="24h", grace="1h")
    configure(w, probe={"endpoint": endpoint})  # passes validation: a path outside /auth/*
    w.rotate()
    dead = w.published()
    assert dead is not None
    sb.invalidate(dead.api_key)
    sb.reset_counts()
    proc = w.rotate()
    # The route answered 200 to a deliberately wrong signature: its 200 says nothing about a key, so
    # the check went through GET /auth/api-keys, which refused the dead key.
    assert "mm1: rotated" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert [e["reason"] for e in log_events(proc.stderr, step="intent")] == ["rejected"]
    assert proc.stderr.count("does not check L2 auth") == 1, proc.stderr[-3000:]
    published = w.published()
    assert published is not None and published.api_key != dead.api_key
    assert sb.request_counts()[("GET", "/auth/api-keys", 401)] >= 1


@pytest.mark.slow
def test_a_probe_route_that_stops_checking_auth_is_caught_by_a_running_daemon(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, rotate_every="24h", grace="1h")
    configure(w, daemon={"tick": "1s", "jitter": "0.2s", "probe_every": "1s", "audit_every": 0})
    proc = w.start("run")
    try:
        wait_for(lambda: w.published() is not None, timeout=30)
        first = w.published()
        assert first is not None
        # The route has refused the daemon's wrong signature once (it checks auth)...
        wait_for(lambda: sb.request_counts()[("GET", PROBE, 401)] >= 1, timeout=30)
        # ...then starts answering everything, like the CLOB's root route: the key dies meanwhile.
        sb.inject("GET", PROBE, 200, '"OK"', times=100_000)
        sb.invalidate(first.api_key)
        wait_for(lambda: (p := w.published()) is not None and p.api_key != first.api_key, timeout=60)
    finally:
        sb.clear_faults()
        proc.terminate()
        code, _out, err = w.finish(proc)
    assert code == 0, err[-2000:]
    assert "does not check L2 auth" in err
    assert [e["reason"] for e in log_events(err, step="intent")] == ["bootstrap", "rejected"]


# -- item 10: one 404 is not for life ----------------------------------------------------------------


@pytest.mark.slow
def test_after_the_probe_route_answers_404_an_idle_daemon_returns_to_zero_auth_requests(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, rotate_every="24h", grace="1h")
    w.rotate()  # bootstrapped before the daemon starts: its passes have nothing due
    configure(w, daemon={"tick": "1s", "jitter": "0.2s", "probe_every": "1s", "audit_every": 0})
    sb.configure(unserved=frozenset({PROBE}))  # a CLOB deploy that lost the route for a moment
    sb.reset_counts()
    proc = w.start("run")
    try:
        # The daemon's checks fall back to GET /auth/api-keys while the route is missing...
        wait_for(lambda: sb.request_counts()[("GET", "/auth/api-keys", 200)] >= 2, timeout=30)
        sb.configure(unserved=frozenset())
        # ...and it tries the route again after a back-off, finds it served, and stays on it.
        wait_for(lambda: sb.request_counts()[("GET", PROBE, 200)] >= 1, timeout=60)
        back = auth_requests(sb)
        served = sb.request_counts()[("GET", PROBE, 200)]
        wait_for(lambda: sb.request_counts()[("GET", PROBE, 200)] >= served + 5, timeout=30)
        spent = auth_requests(sb) - back
    finally:
        proc.terminate()
        code, _out, err = w.finish(proc)
    assert code == 0, err[-2000:]
    assert spent == 0, collections.Counter(
        {k: n for k, n in sb.request_counts().items() if k[1].startswith("/auth/")}
    )
    assert err.count("does not serve the probe endpoint") == 1, err[-3000:]
    assert not log_events(err, outcome="failed")
