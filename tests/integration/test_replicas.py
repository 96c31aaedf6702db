"""Replicas act as one (issue 12): several ``rotator run`` daemons on one store, one active.

Real processes against a sandbox CLOB at the real ``/auth/*`` limit (100 per 10 s) and a real store
(the file store shared across processes, OpenBao, moto). Short lease, renewal and tick keep it quick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.sandbox import Sandbox, SandboxSettings
from rotator.stores.base import Store
from tests.harness import OUTPUTS, SECRETS, Worker, sdk_works, wait_for
from tests.servers import free_port

pytestmark = pytest.mark.slow

LEASE, RENEW, TICK = 3.0, 1.0, 1.0
WINDOW = 8.0  # seconds over which one daemon's and the fleet's CLOB requests are compared


@dataclass
class FleetWorker(Worker):
    """A :class:`Worker` whose store section (and its environment) the test chooses."""

    store_section: dict[str, Any] = field(default_factory=dict)
    store_env: dict[str, str] = field(default_factory=dict)
    opener: Any = None
    lease: float = LEASE

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.store_section:
            cfg["store"] = self.store_section
        cfg["daemon"] = {
            "tick": f"{TICK}s",
            "jitter": 0,
            # A key check on every pass (an L2 read, off /auth/*), so the active daemon spends something
            # in every window and a standby's spend would show.
            "probe_every": 0,
            "leader": {"lease": f"{self.lease}s", "renew": f"{RENEW}s"},
        }
        cfg["log"] = {"format": "json", "level": "info"}
        return cfg

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.store_env}

    def store(self) -> Store:  # type: ignore[override]
        return self.opener() if self.opener is not None else super().store()


@dataclass
class Replica:
    worker: FleetWorker
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        OUTPUTS.append(text)
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    def leader(self) -> float:
        return self.metrics()[("rotator_leader", frozenset())]

    def clob_requests(self) -> float:
        return sum(v for (name, _), v in self.metrics().items() if name == "rotator_clob_requests_total")

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_replica(w: FleetWorker, n: int) -> Replica:
    port = free_port()
    w.extra = {"metrics": {"port": port, "host": "127.0.0.1"}}
    w.config_path.parent.mkdir(parents=True, exist_ok=True)
    path = w.tmp / f"replica-{n}.yaml"
    cfg = w.config()
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    log = w.tmp / f"replica-{n}.log"
    argv = [*w.argv("run")]
    argv[argv.index(str(w.config_path))] = str(path)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=w.env(), stdout=out, stderr=subprocess.STDOUT)
    return Replica(w, port, proc, log)


@pytest.fixture
def fleet_worker(request: pytest.FixtureRequest, tmp_path: Path, wallet: tuple[str, str]) -> FleetWorker:
    name = f"rep-{uuid.uuid4().hex[:8]}"
    sb = Sandbox(SandboxSettings())  # the real /auth/* limit: 100 per 10 s
    sb.start()

    def stop() -> None:
        SECRETS.update(sb.issued_secrets())
        sb.stop()

    request.addfinalizer(stop)
    kw: dict[str, Any] = {"name": name, "grace": "2s", "cred_extra": {"verify_timeout": "10s"}}
    if request.param == "vault":
        from rotator.config import VaultSettings
        from rotator.stores.vault import build_vault_store

        bao = request.getfixturevalue("openbao")
        SECRETS.add(bao.root_token)
        prefix = f"state-{name}"
        section = {
            "url": bao.url,
            "state_prefix": prefix,
            "auth": {"method": "token", "token_env": "VAULT_TOKEN"},
        }
        if bao.ca_cert:
            section["tls"] = {"ca_cert": bao.ca_cert}
        kw["store_section"] = {"backend": "vault", "vault": section}
        kw["store_env"] = {"VAULT_TOKEN": bao.root_token}
        settings = VaultSettings(**{**section, "auth": {"method": "token", "token_env": "ROOT"}})
        kw["opener"] = lambda: build_vault_store(settings, {"ROOT": bao.root_token})
    elif request.param == "aws":
        from rotator.config import AwsStoreSettings
        from rotator.stores.aws import AwsStore, make_client

        url = request.getfixturevalue("moto_server")
        aws = {"region": "us-east-1", "endpoint_url": url, "state_prefix": f"state/{name}/"}
        kw["store_section"] = {"backend": "aws", "aws": aws}
        kw["opener"] = lambda: AwsStore(
            make_client(AwsStoreSettings(**aws)), state_prefix=aws["state_prefix"]
        )
    w = FleetWorker(tmp_path, sb.url, *wallet, **kw)
    w.sandbox = sb  # type: ignore[attr-defined]
    return w


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        if r.alive():
            r.proc.send_signal(signal.SIGTERM)
            try:
                r.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        OUTPUTS.append(r.log.read_text(errors="replace"))


def total_requests(sb: Sandbox) -> int:
    return sum(sb.request_counts().values())


# Two and three replicas, each backend at least once; the whole matrix would add a minute and a half.
@pytest.mark.parametrize(
    ("fleet_worker", "count"),
    [("file", 2), ("file", 3), ("vault", 3), ("aws", 2)],
    indirect=["fleet_worker"],
)
def test_replicas_act_as_one_and_fail_over(
    fleet_worker: FleetWorker, replicas: list[Replica], count: int
) -> None:
    w = fleet_worker
    sb: Sandbox = w.sandbox  # type: ignore[attr-defined]
    first = start_replica(w, 0)
    replicas.append(first)
    wait_for(lambda: first.ready() and first.leader() == 1, timeout=30)
    wait_for(lambda: w.published() is not None, timeout=30)

    # One daemon alone: its CLOB requests over WINDOW seconds.
    before = total_requests(sb)
    time.sleep(WINDOW)
    alone = total_requests(sb) - before

    for n in range(1, count):
        replicas.append(start_replica(w, n))
    wait_for(lambda: all(r.ready() for r in replicas), timeout=30)  # a standby is ready too
    before = total_requests(sb)
    time.sleep(WINDOW)
    together = total_requests(sb) - before

    assert [r.leader() for r in replicas] == [1] + [0] * (count - 1)
    assert all(r.clob_requests() == 0 for r in replicas[1:]), "a standby spent CLOB requests"
    assert alone > 0
    assert together <= 1.25 * alone + 1, (together, alone)  # +1: a window's edge may catch one pass more
    assert not [k for k in sb.request_counts() if k[2] == 429], sb.request_counts()

    # SIGKILL the leader, and force a rotation (which takes no leader lease) during the takeover.
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    killed = time.monotonic()
    old = w.published()
    assert old is not None
    w.rotate("--force")
    standbys = replicas[1:]

    def someone_works() -> bool:
        return any(r.leader() == 1 and r.clob_requests() > 0 for r in standbys)

    wait_for(someone_works, timeout=LEASE + RENEW + TICK + 10, interval=0.1)
    took = time.monotonic() - killed
    # The lease, one renewal step of the standby that notices, one tick to its next pass; the rest
    # is process scheduling on a busy 2-core machine.
    assert took <= LEASE + RENEW + TICK + 1.5, took
    assert sum(r.leader() for r in standbys) == 1

    # One published working key, and no orphan (I3): every key the CLOB holds is accounted for.
    def settled() -> bool:
        key = w.published()
        return (
            key is not None and key.api_key != old.api_key and set(sb.live_keys(w.address)) <= w.known_keys()
        )

    wait_for(settled, timeout=30)
    key = w.published()
    assert key is not None and sdk_works(sb.url, w.private_key, key)
    state = w.state()
    assert state.current is not None and state.current.api_key == key.api_key
    wait_for(lambda: sb.live_keys(w.address) == [key.api_key], timeout=LEASE + 15)  # grace 2s: old revoked
    assert not [k for k in sb.request_counts() if k[2] == 429], sb.request_counts()


@pytest.mark.parametrize("fleet_worker", ["file"], indirect=True)
def test_a_graceful_stop_hands_the_lease_over_at_once(
    fleet_worker: FleetWorker, replicas: list[Replica]
) -> None:
    """SIGTERM releases the lease: a standby takes over at its next renewal step, not after the lease."""
    w = fleet_worker
    w.lease = 12.0  # long, so a takeover by lapse could not pass the check below
    first, second = start_replica(w, 0), start_replica(w, 1)
    replicas.extend((first, second))
    wait_for(lambda: first.ready() and second.ready() and first.leader() + second.leader() == 1, timeout=30)
    leader, standby = (first, second) if first.leader() == 1 else (second, first)
    leader.proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert leader.proc.wait(timeout=30) == 0
    wait_for(lambda: standby.leader() == 1, timeout=12.0, interval=0.1)
    assert time.monotonic() - stopped < 12.0 / 2, "the standby waited for the lease to lapse"
    assert "leader lease: released" in leader.log.read_text()
