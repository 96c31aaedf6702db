"""Issue 13, items 15-18: a bad or absent CLOB ends the pass in time, says why in one line, leaves
the published key alone and keeps memory bounded; SIGTERM cuts a pass stuck on the CLOB short.

The worker first bootstraps against the sandbox; then its ``clob.host`` points at a
:class:`tests.badserver.BadServer` (or at nothing) and ``rotate --force`` runs as a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rotator.sandbox import Sandbox
from tests.badserver import BadServer
from tests.harness import OUTPUTS, Worker, sdk_works, wait_for
from tests.integration.test_rotation_e2e import assert_consistent

pytestmark = pytest.mark.timeout(300)

TIMEOUT = 1.0  # clob.timeout: one whole request
DEADLINE = 2.5  # clob.retry.deadline: one call with its retries


@pytest.fixture
def worker(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    return w


def point_at(w: Worker, host: str, timeout: float = TIMEOUT, deadline: float | None = DEADLINE) -> None:
    """``deadline`` None: the default retry policy (six attempts, about 15 s of waits in all)."""
    clob = {k: v for k, v in w.config()["clob"].items() if k != "retry"}
    clob.update(host=host, timeout=f"{timeout}s")
    if deadline is not None:
        clob["retry"] = {"attempts": 6, "base": 0.05, "cap": 0.2, "deadline": f"{deadline}s"}
    w.extra = {**w.extra, "clob": clob}
    w.write_config()


#: Runs the command as its own child and writes that child's peak RSS (KiB) to the file named first.
#: A process's peak RSS counts the process it was forked from until it exec'd: a child forked
#: straight from a pytest worker that has grown to 300 MB would report those 300 MB as its own.
#: Forked from this small launcher instead, the command's peak is its own.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def run_measured(w: Worker, tmp: Path, *args: str, limit: float = 120) -> tuple[int, str, str, float, float]:
    """Run the CLI; (exit code, stdout, stderr, seconds, peak RSS in MiB of that process alone)."""
    out_path, err_path, rss_path = tmp / "out.txt", tmp / "err.txt", tmp / "rss.txt"
    argv = [sys.executable, "-c", _LAUNCHER, str(rss_path), *w.argv(*args)]
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=w.env(), stdout=out, stderr=err, start_new_session=True)
        timer = threading.Timer(limit, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
    stdout, stderr = out_path.read_text(), err_path.read_text()
    OUTPUTS.extend((stdout, stderr))
    return proc.returncode, stdout, stderr, elapsed, int(rss_path.read_text()) / 1024


def refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


CAUSES: dict[str, str] = {
    "html": "not a number",
    "non-json": "not a number",
    "missing-fields": "lacks apikey",
    "giant": "larger than",
    "slowloris": "timed out",
    "slow-headers": "timed out",
    "refused": "connection refused",
    "dns": "cannot resolve",
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CAUSES))
def test_bad_server_ends_the_pass_in_time_with_one_clear_line(
    worker: Worker, sandbox: Sandbox, tmp_path: Path, mode: str
) -> None:
    before = worker.published()
    assert before is not None
    if mode == "refused":
        host, bad = refused_url(), None
    elif mode == "dns":
        host, bad = "http://clob.invalid", None
    else:
        bad = BadServer(mode)  # type: ignore[arg-type]
        bad.__enter__()
        host = bad.url
    try:
        # Item 16: no connection at all is not retried, so these keep the default retry policy.
        point_at(worker, host, deadline=None if bad is None else DEADLINE)
        code, out, err, elapsed, rss = run_measured(worker, tmp_path, "rotate", "--all", "--force")
    finally:
        if bad is not None:
            bad.__exit__(None, None, None)
    # One call's retry deadline (the create and its lost-answer recovery share the failed clock
    # check), plus the interpreter's start-up (about 1.5 s here).
    assert elapsed < DEADLINE + TIMEOUT + 6, f"{mode}: the pass took {elapsed:.1f}s"
    assert rss < 250, f"{mode}: peak RSS {rss:.0f} MiB"
    lines = [line for line in out.splitlines() if line.startswith("mm1:")]
    assert code == 1, out + err
    assert len(lines) == 1, out
    line = lines[0].lower()
    assert "failed" in line and host.removeprefix("http://") in line and CAUSES[mode] in line, line
    assert "Traceback" not in out + err
    # I5: the published key is untouched and works; the recorded intent is resumed by the next pass.
    assert worker.published() == before
    assert sdk_works(sandbox.url, worker.private_key, before)
    point_at(worker, sandbox.url, timeout=10, deadline=20)
    worker.rotate()
    assert_consistent(worker, sandbox)


def test_cancel_cuts_a_stuck_pass_short_and_records_no_new_intent(worker: Worker, sandbox: Sandbox) -> None:
    """Item 15, in process: a pass waiting on a silent CLOB ends within seconds of the cancel, and
    the rotation it would have started next is not started (no intent recorded after the signal)."""
    from rotator.config import load_settings
    from rotator.runtime import Runtime

    worker.rotate("--force")  # nonce 1 current, nonce 0 retiring for 2 s
    time.sleep(2.2)
    before = worker.state()
    with BadServer("hang") as bad:
        point_at(worker, bad.url, timeout=60, deadline=120)
        rt = Runtime(load_settings(worker.config_path), worker.env())
        cred = rt.settings.credentials[0]
        results = []
        thread = threading.Thread(
            target=lambda: results.append(
                rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred), force=True)
            ),
            daemon=True,
        )
        thread.start()
        wait_for(lambda: bad.requests, timeout=10)  # the revocation is waiting on the CLOB
        cancelled = time.monotonic()
        rt.clob.cancel()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the pass did not end after cancel"
        assert time.monotonic() - cancelled < 3
        rt.close()
    [result] = results
    assert result.outcome == "stopped"  # cut short on purpose: not a failure
    failures = rt.metrics.registry.get_sample_value(
        "rotator_rotations_total", {"credential": cred.name, "result": "failure"}
    )
    revoke_failures = rt.metrics.registry.get_sample_value(
        "rotator_revocations_total", {"credential": cred.name, "result": "failure"}
    )
    assert not failures and not revoke_failures
    after = worker.state()
    assert after.pending is None and after.next_nonce == before.next_nonce  # no new intent
    assert after.current == before.current and worker.published() == before.current
    assert [r.key.nonce for r in after.retiring] == [r.key.nonce for r in before.retiring]
    point_at(worker, sandbox.url, timeout=10, deadline=20)
    worker.rotate()
    assert_consistent(worker, sandbox)


@pytest.mark.slow
def test_sigterm_stops_a_daemon_stuck_on_the_clob_within_seconds(worker: Worker, sandbox: Sandbox) -> None:
    """Item 15: SIGTERM while the daemon waits on a silent CLOB: exit 0 in seconds, no new step."""
    worker.rotate("--force")
    time.sleep(2.2)  # the old key is due for revocation: the daemon's pass will ask the CLOB
    worker.rotate_every = "3s"  # and a rotation is due right after it: the step SIGTERM must not start
    before = worker.state()
    with BadServer("hang") as bad:
        point_at(worker, bad.url, timeout=60, deadline=120)
        worker.extra = {**worker.extra, "daemon": {"tick": "1s", "jitter": "0.1s"}}
        worker.write_config()
        proc = worker.start("run")
        try:
            wait_for(lambda: bad.requests, timeout=20)
            time.sleep(0.5)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, out, err = worker.finish(proc, timeout=30)
            stopped = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                worker.finish(proc)
    assert code == 0, out + err
    assert stopped < 5, f"the daemon took {stopped:.1f}s to stop"
    assert not [line for line in (out + err).splitlines() if "intent recorded" in line]
    after = worker.state()
    assert after.pending is None and after.next_nonce == before.next_nonce
    assert worker.published() == before.current
    point_at(worker, sandbox.url, timeout=10, deadline=20)
    worker.rotate()
    assert_consistent(worker, sandbox)


def test_a_failed_clock_check_is_not_waited_out_twice_in_a_row(wallet: tuple[str, str]) -> None:
    """The lost-answer recovery right after a create whose clock check timed out fails at once
    instead of spending another retry deadline on the same silent server (item 17)."""
    from rotator.clob.adapter import ClobAdapter, RetryPolicy
    from rotator.errors import Transient
    from rotator.model import Secret
    from rotator.signers.local import LocalKeySigner

    signer = LocalKeySigner(Secret(wallet[0]), source="test")
    with BadServer("slowloris") as bad:
        clob = ClobAdapter(bad.url, 137, timeout=TIMEOUT, retry=RetryPolicy(6, 0.05, 0.2, DEADLINE))
        started = time.monotonic()
        with pytest.raises(Transient, match="timed out"):
            clob.create_key(signer, 1)
        assert DEADLINE - 0.5 < time.monotonic() - started < DEADLINE + 0.5
        asked = len(bad.requests)
        started = time.monotonic()
        with pytest.raises(Transient, match="timed out"):
            clob.derive_key(signer, 1)
        assert time.monotonic() - started < 0.5 and len(bad.requests) == asked
        clob.close()
