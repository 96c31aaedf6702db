"""Issue 23 items 4 and 6 over real processes: ``rotator history`` after rotations of different
reasons, and the small things on-call trips over (each with its test):

- ``revoke --emergency`` logs its intent with reason ``emergency``, not ``forced``;
- one masked form of a key id in the worker's logs, ``status``, a consumer's log and a bot's
  summary, the same prefix greppable in all of them;
- a revocation-only pass names the key it revoked, and shows the current one as ``current=``;
- a clean SIGTERM does not log the leader lease as lost (``stands by``), as a failover does.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from pathlib import Path

import pytest

from rotator.consumer import CredentialSource
from rotator.model import ack_prefix, mask
from rotator.sandbox import Sandbox
from tests.harness import Worker, wait_for
from tests.integration.day2_support import json_lines
from tests.servers import free_port


@pytest.fixture
def worker(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    return Worker(tmp_path, sandbox.url, *wallet, rotate_every="1h", grace="1s")


@pytest.mark.slow
def test_history_shows_each_rotation_with_its_reason_trigger_times_and_worker(
    worker: Worker, sandbox: Sandbox
) -> None:
    w = worker
    w.rotate()  # bootstrap
    w.rotate_every = "1s"  # for one run: the key is due by age
    w.write_config()
    time.sleep(1.2)
    w.rotate()  # due
    w.rotate_every = "1h"
    w.write_config()
    w.rotate("--force")  # forced
    emergency = w.run("revoke", "--credential", w.name, "--emergency")
    assert emergency.returncode == 0, emergency.stdout + emergency.stderr
    intents = [e for e in json_lines(emergency.stderr) if e.get("step") == "intent"]
    assert [(e["reason"], e["trigger"]) for e in intents] == [("emergency", "operator")]  # not "forced"
    current = w.state().current
    assert current is not None
    sandbox.invalidate(current.api_key)
    w.rotate()  # rejected, found by the run's own probe
    current = w.state().current
    assert current is not None
    sandbox.invalidate(current.api_key)
    w.store().report_refusal(w.ref, "bot-7", ack_prefix(current.api_key), time.time(), time.time() - 1, 3)
    w.rotate()  # rejected, reported by a consumer, confirmed by a probe
    time.sleep(1.2)
    w.rotate()  # the last retiring key's grace is over: revoked

    proc = w.run("history", "--credential", w.name, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["nonce"], r["reason"], r["trigger"], r["state"]) for r in rows] == [
        (0, "bootstrap", "schedule", "gone"),
        (1, "due", "schedule", "gone"),
        (2, "forced", "operator", "gone"),
        (3, "emergency", "operator", "gone"),
        (4, "rejected", "probe", "gone"),
        (5, "rejected", "consumer-report", "current"),
    ]
    host = socket.gethostname()
    for r in rows:
        assert r["worker"] == host and r["key"] == mask(r["key"]) and "…" in r["key"], r
        assert r["issued_at"] and r["published_at"] and r["issued_at"] <= r["published_at"], r
        assert r["issued_at_iso"].endswith("Z") and r["published_at_iso"].endswith("Z")
    for r in rows[:5]:
        assert r["published_at"] <= r["retired_at"] <= r["revoked_at"] and r["revoked_by"] == host, r
    assert [r["retired_why"] for r in rows[:5]] == ["rotated", "rotated", "emergency", "rotated", "rotated"]
    assert [r["how"] for r in rows[:5]] == [
        "deleted",
        "deleted",
        "deleted",
        "invalidated-by-server",
        "invalidated-by-server",
    ]

    table = w.run("history", "--credential", w.name)
    assert table.returncode == 0 and max(len(line) for line in table.stdout.splitlines()) <= 100
    text = " ".join(table.stdout.split())  # the lines under each key wrap at 100 columns
    for r in rows:
        assert f" {r['key']} " in text and r["reason"] in text
    assert "consumer-report" in text and "revoked " in text and f"by {host}" in text
    # --since: keys with an event since then, and the ones still held.
    later = w.run("history", "--credential", w.name, "--json", "--since", "2999-01-01")
    assert [r["nonce"] for r in json.loads(later.stdout)] == [5]
    bad = w.run("history", "--credential", w.name, "--since", "yesterday")
    assert bad.returncode == 2 and "--since: not a duration" in bad.stderr


def test_one_masked_form_in_the_worker_status_and_a_consumer(
    worker: Worker, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    w = worker
    rotated = w.rotate()
    key = w.published()
    assert key is not None
    shown = mask(key.api_key)
    assert shown.startswith(ack_prefix(key.api_key)[:13]) and shown.endswith(key.api_key[-4:])
    worker_said = {e.get("key") for e in json_lines(rotated.stderr)}
    assert shown in worker_said and f"key={shown}" in rotated.stdout
    source = CredentialSource(w.store(), credential=w.name, path=w.ref.path, consumer_id="bot-1")
    with caplog.at_level(logging.INFO, logger="rotator.consumer"):
        source.refresh()
        source._ack(key)
    assert f"loaded key {shown} " in caplog.text
    status = w.run("status")
    assert "consumer bot-1" in status.stdout and f"key={shown} " in status.stdout, status.stdout
    # The head of every form, the acknowledgement's wire form included, is one grep.
    head = shown.split("…")[0]
    assert head in ack_prefix(key.api_key) and head in status.stdout and head in caplog.text


def test_a_revocation_alone_names_the_key_it_revoked(worker: Worker) -> None:
    w = worker
    w.rotate()
    w.rotate("--force")
    old, new = w.state().retiring[0].key, w.state().current
    assert new is not None
    time.sleep(1.2)
    out = w.rotate().stdout
    line = next(x for x in out.splitlines() if x.startswith(f"{w.name}:"))
    assert line == f"{w.name}: revoked current={new.masked} revoked=1 (nonce {old.nonce} key={old.masked})", (
        line
    )


@pytest.mark.slow
def test_a_clean_sigterm_is_not_logged_as_losing_the_lease(worker: Worker) -> None:
    w = worker
    w.extra = {
        "metrics": {"port": free_port(), "host": "127.0.0.1"},
        "log": {"format": "json", "level": "info"},
    }
    w.write_config()
    proc = w.start("run")
    wait_for(lambda: w.state().current is not None, timeout=30)
    proc.send_signal(signal.SIGTERM)
    code, _out, err = w.finish(proc)
    assert code == 0
    lease = [e for e in json_lines(err) if e.get("logger") == "rotator.leader"]
    assert [e["msg"] for e in lease][-1] == "leader lease: released", lease
    assert not [e for e in lease if e["level"] == "warning"], lease
