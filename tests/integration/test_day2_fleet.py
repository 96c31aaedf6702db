"""Issue 23 item 1 (and issue 22 item 16), over real processes: one bad credential fails alone.

A config with five credentials on one wallet, one whose signer variable is missing and one whose
state was written by a newer rotator (schema 99): ``rotate --all`` and the daemon rotate the other
three on schedule, the two fail with one line each, their ``rotator_credential_ready`` is 0 and
RotatorCredentialNotReady fires on the values the daemon exported (promtool), ``status`` prints all
five rows, ``check`` exits 1 naming both, ``rotate --credential`` needs only that credential's
secrets, and a dry run names the problem a real run would hit.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.model import CredentialRef
from rotator.sandbox import Sandbox
from tests.conftest import require_tool
from tests.contract.test_state_schema import written
from tests.harness import OUTPUTS, Worker, sdk_works, wait_for
from tests.servers import free_port

pytestmark = pytest.mark.slow

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rotator-rules.yaml"
GOOD = ("mm1", "mm2", "mm3")
NO_SIGNER, NEWER = "mm4", "mm5"


@dataclass
class FleetOfFive(Worker):
    """Five credentials on one wallet (start_nonce 100 apart), file store; mm4's signer variable is
    missing, mm5's state is schema 99."""

    names: tuple[str, ...] = (*GOOD, NO_SIGNER, NEWER)
    daemon: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        base = cfg["credentials"][0]
        cfg["credentials"] = [
            {
                **base,
                "name": n,
                "path": f"polymarket/{n}",
                "start_nonce": 100 * i,
                **({"signer": {"source": "env", "env": "NOPE_PK"}} if n == NO_SIGNER else {}),
            }
            for i, n in enumerate(self.names)
        ]
        if self.daemon:
            cfg["daemon"] = self.daemon
        return cfg


def ref(name: str) -> CredentialRef:
    return CredentialRef(name, f"polymarket/{name}")


def lines_of(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{name}:")]


@pytest.fixture
def fleet(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> FleetOfFive:
    w = FleetOfFive(tmp_path, sandbox.url, *wallet, rotate_every="4s", grace="2s")
    newer = {"schema": 99, "current": None, "next_nonce": 400, "from_the_future": {"x": 1}}
    w.store().save(ref(NEWER), written(newer), None)
    return w


def test_a_fleet_with_a_missing_signer_and_a_newer_state_rotates_the_other_three(
    fleet: FleetOfFive, sandbox: Sandbox
) -> None:
    w = fleet
    # A dry run names what a real run would hit, and fails like it.
    dry = w.run("rotate", "--all", "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    [would_fail] = lines_of(dry.stdout, NO_SIGNER)
    assert would_fail.startswith("mm4: would-fail: signer env NOPE_PK is not set; would-rotate (bootstrap)")
    for name in GOOD:
        [line] = lines_of(dry.stdout, name)
        assert line.startswith(f"{name}: would-rotate (bootstrap) nonce "), line

    proc = w.run("rotate", "--all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for name in GOOD:
        [line] = lines_of(proc.stdout, name)
        assert line.startswith(f"{name}: rotated key="), line
    [no_signer] = lines_of(proc.stdout, NO_SIGNER)
    assert no_signer == "mm4: failed error=(signer) signer env NOPE_PK is not set"
    [newer] = lines_of(proc.stdout, NEWER)
    assert (
        newer.startswith("mm5: failed error=(read) ") and "schema 99" in newer and "upgrade rotator" in newer
    )
    # Nothing of the newer state was rewritten.
    assert w.store()._read().credentials[NEWER].state["from_the_future"] == {"x": 1}

    # One credential's run needs only that credential's secrets.
    one = w.run("rotate", "--credential", "mm1", "--force")
    assert one.returncode == 0 and lines_of(one.stdout, "mm1")[0].startswith("mm1: rotated key="), one.stdout

    status = w.run("status")
    assert status.returncode == 1, status.stderr  # one state could not be read: said, rows all there
    table = status.stdout.splitlines()
    assert table[0].startswith("5 credential(s) as of ")
    rows = {line.split()[0]: line for line in table[2:] if line and not line.startswith(" ")}
    assert list(rows) == [*GOOD, NO_SIGNER, NEWER], table
    said = " ".join(status.stdout.split())  # the lines under a row wrap at 100 columns
    assert "NOT READY: signer env NOPE_PK is not set" in said
    assert "STATE UNREADABLE: " in said and "schema 99" in said

    check = w.run("check")
    assert check.returncode == 1, check.stdout
    fails = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith("FAIL  mm4: ") and "NOPE_PK" in line for line in fails), fails
    assert any(line.startswith("FAIL  mm5: store error") and "schema 99" in line for line in fails), fails
    assert not any(f"{name}:" in line for line in fails for name in GOOD), fails

    for name in GOOD:
        published = w.store().read_published(ref(name))
        assert published is not None and sdk_works(sandbox.url, w.private_key, published)


def test_the_daemon_rotates_the_other_three_on_schedule_and_the_alert_fires_for_the_two(
    fleet: FleetOfFive, sandbox: Sandbox
) -> None:
    w = fleet
    port = free_port()
    w.daemon = {"tick": "1s", "jitter": 0, "probe_every": 0}
    w.extra = {"metrics": {"port": port, "host": "127.0.0.1"}, "log": {"format": "json", "level": "info"}}
    w.write_config()
    proc = w.start("run")
    try:

        def rotations() -> dict[str, int]:
            return {n: w.store().load(ref(n)).state.rotations for n in GOOD}

        # rotate_every 4s: each of the three rotates on its own schedule, at least three times.
        wait_for(lambda: min(rotations().values()) >= 3, timeout=60, interval=0.5)
        samples = scrape(port)
        wait_for(lambda: scrape(port)[("rotator_consecutive_failures", NO_SIGNER)] >= 3, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _out, err = w.finish(proc)
    assert code == 0, err[-2000:]
    ready = {n: samples[("rotator_credential_ready", n)] for n in (*GOOD, NO_SIGNER, NEWER)}
    assert ready == {"mm1": 1.0, "mm2": 1.0, "mm3": 1.0, "mm4": 0.0, "mm5": 0.0}
    # Each failing pass is one error line naming the credential and why; no traceback.
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if '"outcome":"failed"' in line]
    assert failed and all('"credential":"mm4"' in f or '"credential":"mm5"' in f for f in failed), failed[:3]
    assert any("signer env NOPE_PK is not set" in f for f in failed)
    assert_not_ready_alert(ready, w.tmp)


def scrape(port: int) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    OUTPUTS.append(text)
    return {
        (s.name, s.labels.get("credential", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def assert_not_ready_alert(ready: dict[str, float], tmp: Path) -> None:
    """RotatorCredentialNotReady, evaluated by promtool on the values the daemon exported: it fires
    for the two credentials at 0 after its 5 minutes, and for no other."""
    promtool = require_tool("promtool")
    expected = [
        {
            "exp_labels": {"severity": "critical", "job": "rotator", "credential": name},
            "exp_annotations": {
                "summary": f"Credential {name}: the worker cannot serve it",
                "description": (
                    f"The worker (job rotator) cannot use credential {name}'s signer or read its state: "
                    "its key is not rotated (retiring keys are still revoked where a probe confirms it). "
                    "Every other credential rotates on. `rotator check` and the pass's failed line "
                    "name the cause."
                ),
                "runbook_url": "docs/runbook.md#rotatorcredentialnotready",
            },
        }
        for name, value in sorted(ready.items())
        if value == 0
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'rotator_credential_ready{{job="rotator",credential="{n}"}}',
                        "values": f"{value:g}+0x20",
                    }
                    for n, value in ready.items()
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "RotatorCredentialNotReady", "exp_alerts": []},
                    {"eval_time": "10m", "alertname": "RotatorCredentialNotReady", "exp_alerts": expected},
                ],
            }
        ],
    }
    path = tmp / "observed.test.yaml"
    path.write_text(yaml.safe_dump(test))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(expected) == 2
