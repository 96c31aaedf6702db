"""Issue 23 item 2 over the real CLOB sandbox and file store: CronJob start-up jitter, and a schedule
with a window over a simulated week.

- A CronJob-like loop: ten ``rotator rotate --all`` processes, one per period, ``rotate_every`` equal
  to the period, each started late by 0-2 s. The worker's clock and the CLOB's move on by one period
  per run (libfaketime for the process, the sandbox's clock offset for the CLOB), so a one-hour
  period takes seconds. Every run rotates: none finds its key a few seconds short of due.
- A week of passes every 15 minutes on an injected clock, ``schedule: 0 3 * * * Europe/London`` with
  a one-hour window: every rotation falls in a window, one per window, but the one for a key the
  CLOB rejected and the emergency, which never wait; and no key is left unaccounted for.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator.config import load_settings
from rotator.rotation import Rotator
from rotator.runtime import Runtime
from rotator.sandbox import Sandbox
from tests.harness import OUTPUTS, Worker, sdk_works
from tests.integration.test_core_e2e import faketime_lib

pytestmark = pytest.mark.slow

HOUR = 3600.0


@pytest.mark.parametrize("jitter", [0.0, 2.0], ids=["on-time", "0-2s-late"])
def test_a_cronjob_whose_period_is_rotate_every_rotates_on_every_run(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], jitter: float
) -> None:
    w = Worker(tmp_path, fresh_sandbox.url, *wallet, rotate_every="1h", grace="15m")
    lib = faketime_lib()
    rng = random.Random(7)
    # The late starts include the worst pairs: a run 2 s late, then one on time.
    lates = [jitter * x for x in (0.0, 1.0, 0.0, 1.0, 0.0)] + [rng.uniform(0, jitter) for _ in range(5)]
    outcomes = []
    for run, late in enumerate(lates):
        shift = run * HOUR + late
        fresh_sandbox.configure(clock_offset=shift)
        env = w.env() | {"LD_PRELOAD": lib, "FAKETIME": f"{shift:+.3f}", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        import subprocess

        proc = subprocess.run(w.argv("rotate", "--all"), env=env, capture_output=True, text=True, timeout=60)
        OUTPUTS.extend((proc.stdout, proc.stderr))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outcomes.append(proc.stdout.split()[1])
    assert outcomes == ["rotated"] * 10, outcomes
    state = w.state()
    assert state.rotations == 10 and len(state.retiring) == 1  # the last one's predecessor, in its grace
    fresh_sandbox.configure(clock_offset=0.0)  # the SDK below signs on this machine's clock
    published = w.published()
    assert published is not None and sdk_works(fresh_sandbox.url, w.private_key, published)


def test_a_week_on_a_schedule_rotates_only_in_its_windows_but_a_rejected_key_and_an_emergency(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sandbox = fresh_sandbox
    schedule = {"cron": "0 3 * * *", "timezone": "Europe/London", "window": "1h"}
    w = Worker(
        tmp_path, sandbox.url, *wallet, rotate_every="24h", grace="15m", cred_extra={"schedule": schedule}
    )
    settings = load_settings(w.config_path, env=w.env())
    rt = Runtime(settings, w.env())
    cred = settings.credentials[0]
    monday = datetime(2026, 12, 7, 0, 5, tzinfo=UTC).timestamp()  # London is on UTC in December
    fake = {"now": monday}
    rot = Rotator(rt.store, rt.clob, rt.metrics, clock=lambda: fake["now"], owner="sim-worker:1:1")
    policy = rt.policy(cred)  # a one-shot run's policy: each pass checks the key
    made: list[tuple[float, str]] = []
    try:
        for step in range(7 * 96):
            now = fake["now"]
            # The CLOB's clock is the simulated one: it stamps key ids (UUIDv7) with it, and a key
            # whose id predates its intent is someone else's (issue 22 item 5).
            sandbox.configure(clock_offset=now - time.time())
            rt.clob.server_time()  # and the worker signs on it: measured again after each jump
            forced = step == 3 * 96 + 44  # Thursday 11:05: revoke --emergency
            if step == 96 + 56:  # Tuesday 14:05: the key is revoked behind the worker's back
                current = w.state().current
                assert current is not None
                sandbox.invalidate(current.api_key)
            result = rot.run_pass(rt.ref(cred), rt.signer(cred), policy, force=forced, emergency=forced)
            assert result.ok, result
            if result.rotated:
                made.append((now, result.reason or "?"))
            fake["now"] = now + 900
    finally:
        rt.close()
    window = replace(policy).schedule
    assert window is not None
    inside = [(window.window_at(t), why) for t, why in made if window.window_at(t) is not None]
    outside = sorted(why for t, why in made if window.window_at(t) is None)
    assert outside == ["bootstrap", "emergency", "rejected"], [
        (datetime.fromtimestamp(t, UTC).isoformat(), why) for t, why in made
    ]
    assert [why for _, why in inside] == ["schedule"] * 7, made  # Monday's window to Sunday's, one each
    assert len({opened for opened, _ in inside}) == 7
    assert made[0][1] == "bootstrap"  # the first pass, Monday 00:05: no key yet: it never waits
    history = {r.nonce: r for r in w.state().history}
    assert {r.reason for r in history.values()} >= {"bootstrap", "schedule", "rejected", "emergency"}
