"""Issue 23 item 3, over real processes on the file store, OpenBao and moto: ``rotator pause`` and
``rotator resume`` recorded in the store and honoured by a running daemon and by one-shot runs.

While paused the credential is not rotated (the daemon's key stays as it is for the whole pause),
its retiring keys are still revoked on time, ``revoke --emergency`` goes through and says so, the
pause shows in ``status`` and in ``rotator_paused``, and a pause with ``--for`` ends by itself.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from rotator.sandbox import Sandbox
from tests.harness import OUTPUTS, wait_for
from tests.integration.day2_support import BACKENDS, StoreWorker, store_worker
from tests.servers import free_port

pytestmark = pytest.mark.slow

#: Long enough for a status, a scrape and an emergency run inside it on a busy machine.
PAUSE = 20.0


def gauge(port: int, name: str, credential: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    OUTPUTS.append(text)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels.get("credential") == credential:
                return float(s.value)
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_paused_credential_waits_revokes_on_time_takes_an_emergency_and_resumes_by_itself(
    request: pytest.FixtureRequest, backend: str, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    port = free_port()
    w: StoreWorker = store_worker(
        request,
        backend,
        tmp_path,
        sandbox,
        wallet,
        rotate_every="3s",
        grace="2s",
        daemon={"tick": "1s", "jitter": 0, "probe_every": 0, "leader": {"lease": "6s", "renew": "1s"}},
        extra={"metrics": {"port": port, "host": "127.0.0.1"}, "log": {"format": "json", "level": "info"}},
    )
    daemon = w.start("run")
    try:
        # The daemon rotates every 3 s; wait for a retiring key to pause over.
        wait_for(lambda: w.state().rotations >= 2 and bool(w.state().retiring), timeout=60, interval=0.2)
        env = w.env() | {"USER": "alice"}
        import subprocess

        paused = subprocess.run(
            w.argv("pause", "--credential", w.name, "--for", f"{PAUSE:g}s", "--reason", "CLOB incident 42"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        OUTPUTS.extend((paused.stdout, paused.stderr))
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert f"{w.name}: paused until " in paused.stdout and "by alice@" in paused.stdout
        assert "CLOB incident 42" in paused.stdout
        pause = w.state().pause
        assert pause is not None and pause.by.startswith("alice@") and pause.until is not None
        retiring_then = [(r.key.nonce, r.revoke_after) for r in w.state().retiring]

        status = w.run("status")
        assert status.returncode == 0 and "paused by alice@" in status.stdout, status.stdout
        assert "CLOB incident 42" in status.stdout and "paused" in status.stdout.splitlines()[2]
        # An emergency goes through, and the line says the pause was overridden.
        emergency = w.run("revoke", "--credential", w.name, "--emergency")
        assert emergency.returncode == 0, emergency.stdout + emergency.stderr
        assert "rotated" in emergency.stdout and "(paused: rotated anyway, emergency)" in emergency.stdout
        assert time.time() < pause.until, "the machine was too slow to test inside the pause"
        wait_for(lambda: gauge(port, "rotator_paused", w.name) == 1.0, timeout=PAUSE)

        # The pause ends by itself: the daemon rotates again, and the gauge falls back to 0.
        wait_for(lambda: w.state().pause is None or time.time() > pause.until + 1, timeout=30)
        wait_for(
            lambda: any(
                r.reason == "due" and (r.issued_at or 0) > pause.until
                for r in w.state().provenance + w.state().history
            ),
            timeout=30,
            interval=0.3,
        )  # type: ignore[operator]
        wait_for(lambda: gauge(port, "rotator_paused", w.name) == 0.0, timeout=20)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _out, err = w.finish(daemon)
    assert code == 0, err[-3000:]

    state = w.state()
    records = [*state.history, *state.provenance]
    assert pause.until is not None
    # Times in the state are the CLOB's clock as each process measured it from the sandbox's whole
    # seconds: a rotation written just before the pause (the state's compare-and-set orders them) may
    # be stamped up to a second after the pause's own stamp.
    during = sorted(
        (r.reason, r.trigger) for r in records if r.issued_at and pause.at + 1.0 <= r.issued_at < pause.until
    )
    assert during == [("emergency", "operator")], during  # nothing scheduled while paused
    # The key retiring when the pause began was revoked on time (a tick or two past its deadline).
    for nonce, revoke_after in retiring_then:
        [gone] = [r for r in state.history if r.nonce == nonce]
        assert gone.revoked_at is not None and gone.revoked_at <= revoke_after + 8, (gone, revoke_after)
        assert gone.revoked_at < pause.until


@pytest.mark.parametrize("backend", ["file"])
def test_resume_ends_a_pause_without_an_end_and_one_shot_runs_honour_both(
    request: pytest.FixtureRequest, backend: str, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = store_worker(request, backend, tmp_path, sandbox, wallet, rotate_every="1s", grace="1s")
    w.rotate()
    proc = w.run("pause", "--credential", w.name, "--by", "ops-oncall")
    assert proc.returncode == 0 and "paused until resumed by ops-oncall" in proc.stdout, proc.stdout
    time.sleep(1.5)  # the key is due
    dry = w.run("rotate", "--all", "--dry-run")
    assert dry.returncode == 0 and "paused by ops-oncall until resumed" in dry.stdout, dry.stdout
    held = w.rotate()
    assert f"{w.name}: nothing-due" in held.stdout and "(paused)" in held.stdout, held.stdout
    assert w.state().rotations == 1
    bad = w.run("pause", "--credential", w.name, "--reason", "0x" + "ab" * 32)
    assert bad.returncode == 2 and "looks like key material" in bad.stderr
    proc = w.run("resume", "--credential", w.name)
    assert proc.returncode == 0 and f"{w.name}: resumed by " in proc.stdout and "ops-oncall" in proc.stdout
    assert w.state().pause is None
    assert "rotated" in w.rotate().stdout
    again = w.run("resume", "--credential", w.name)
    assert again.returncode == 0 and "not paused; nothing to do" in again.stdout
    unknown = w.run("pause", "--credential", "nope")
    assert unknown.returncode == 2 and "no such credential" in unknown.stderr
    from rotator.model import CredentialRef, CredentialState

    w.store().save(CredentialRef("removed-one", ""), CredentialState(next_nonce=3), None)
    removed = w.run("pause", "--credential", "removed-one")
    assert removed.returncode == 2 and "a removed credential is not rotated" in removed.stderr


@pytest.mark.parametrize("backend", ["file"])
def test_an_emergency_that_loses_the_race_for_the_state_runs_again_and_rotates(
    request: pytest.FixtureRequest,
    backend: str,
    fresh_sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
) -> None:
    """``revoke --emergency`` beside a daemon that writes the same state (seen on a loaded CI machine:
    both revoking the retiring key): a pass that loses the compare-and-set is run again, and the
    operator's line says ``rotated``, never ``lost-race``. The race is made here: the pass is held at
    its DELETE while another writer (a pause) changes the state."""
    sb = fresh_sandbox
    w = store_worker(request, backend, tmp_path, sb, wallet, rotate_every="1h", grace="1h")
    w.rotate()
    w.rotate("--force")  # a current key and a retiring one
    current = w.published()
    assert current is not None and len(w.state().retiring) == 1
    hold = sb.hold("DELETE", "/auth/api-key", "after")
    proc = w.start("revoke", "--credential", w.name, "--emergency")
    try:
        assert hold.reached.wait(60), "the emergency never revoked the retiring key"
        paused = w.run("pause", "--credential", w.name, "--by", "ops-oncall")
        assert paused.returncode == 0, paused.stdout + paused.stderr
    finally:
        hold.release()
    code, out, err = w.finish(proc)
    assert code == 0, out + err
    assert f"{w.name}: rotated" in out and "lost-race" not in out, out
    assert "lost the race for the state" in err
    state = w.state()
    assert state.pause is not None and state.pause.by == "ops-oncall"  # the other writer's change kept
    assert state.current is not None and state.current.api_key != current.api_key
    assert current.api_key not in sb.live_keys(w.address)
    assert not state.retiring
