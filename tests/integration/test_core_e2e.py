"""Issue 13 (core items) through the real CLI against the sandbox over HTTP: workers on shifted
clocks (libfaketime), a state from a newer rotator, a lost state, a wallet change mid-rotation.

Each test ends with the I3 check: every key the sandbox holds for the wallet is current, retiring,
pending or revoked in the worker's state.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from rotator.sandbox import Sandbox
from tests.conftest import require
from tests.harness import OUTPUTS, Worker, sdk_works, wait_for

pytestmark = pytest.mark.timeout(120)

FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
)


def faketime_lib() -> str:
    lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    require(lib is not None, "libfaketime (Debian package faketime)")
    assert lib is not None
    return lib


def run_shifted(w: Worker, shift: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on a clock shifted by ``shift`` (libfaketime syntax, e.g. ``+10m``, ``-1h``)."""
    env = w.env() | {"LD_PRELOAD": faketime_lib(), "FAKETIME": shift, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    proc = subprocess.run(w.argv(*args), env=env, capture_output=True, text=True, timeout=60)
    OUTPUTS.extend((proc.stdout, proc.stderr))
    return proc


def assert_i3(w: Worker, sb: Sandbox, foreign: frozenset[str] = frozenset()) -> None:
    """I3: every key live at the CLOB for this wallet is current, retiring or pending (a recorded
    triplet, or an intent naming this wallet and the key's nonce)."""
    known = w.known_keys()
    pending = w.state().pending
    if pending is not None and pending.key is None and (pending.address or "").lower() == w.address.lower():
        known |= {r.api_key for r in sb.keys(w.address) if r.nonce == pending.nonce}
    orphans = set(sb.live_keys(w.address)) - known - foreign
    assert not orphans, f"orphan keys at the CLOB: {orphans}"


@pytest.fixture
def worker(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    return Worker(tmp_path, sandbox.url, *wallet)


# -- item 1: --force and --emergency replace the key by identity ---------------------------------
def test_emergency_revokes_a_key_made_by_a_worker_whose_clock_ran_ahead(
    worker: Worker, sandbox: Sandbox
) -> None:
    proc = run_shifted(worker, "+10m", "rotate", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    leaked = worker.published()
    assert leaked is not None
    proc = worker.run("revoke", "--credential", "mm1", "--emergency")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mm1: rotated" in proc.stdout
    assert leaked.api_key not in sandbox.live_keys(worker.address)
    assert not sdk_works(sandbox.url, worker.private_key, leaked)
    published = worker.published()
    assert published is not None and published.nonce == leaked.nonce + 1
    assert_i3(worker, sandbox)


def test_force_from_a_clock_an_hour_behind_rotates(worker: Worker, sandbox: Sandbox) -> None:
    worker.rotate()
    before = worker.published()
    assert before is not None
    proc = run_shifted(worker, "-1h", "rotate", "--all", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mm1: rotated" in proc.stdout
    after = worker.published()
    assert after is not None and after.nonce == before.nonce + 1
    assert_i3(worker, sandbox)


# -- item 9: deadlines on the CLOB's clock ------------------------------------------------------
def test_a_forward_clock_jump_does_not_cut_the_grace_short(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet, grace="60s")
    w.rotate()
    old = w.published()
    w.rotate("--force")
    assert old is not None and [r.key.api_key for r in w.state().retiring] == [old.api_key]
    proc = run_shifted(w, "+120s", "rotate", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "revoked" not in proc.stdout
    assert old.api_key in sandbox.live_keys(w.address), "grace cut short by the local clock"
    assert sdk_works(sandbox.url, w.private_key, old)
    # Every deadline written is on the CLOB's clock, not the jumped one.
    entry = w.state().retiring[0]
    assert entry.revoke_after <= time.time() + 61
    assert_i3(w, sandbox)


def test_keys_are_stamped_on_the_clob_clock(worker: Worker, sandbox: Sandbox) -> None:
    proc = run_shifted(worker, "+10m", "rotate", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = worker.state()
    assert state.current is not None and abs(state.current.created_at - time.time()) < 30
    # The next pass on a correct clock does not see a key from the future (nor one 10 min old).
    assert "mm1: nothing-due" in worker.rotate().stdout
    assert_i3(worker, sandbox)


# -- item 8: a state from a newer rotator is refused ---------------------------------------------
def test_a_state_written_by_a_newer_schema_is_refused_in_one_line(worker: Worker, sandbox: Sandbox) -> None:
    worker.rotate()
    store = worker.store()
    snap = store.load(worker.ref)
    raw = snap.state.to_dict() | {"schema": 99, "leader": {"owner": "other"}}

    # Write it as a newer rotator would: the file store keeps each state as a raw JSON object.
    from tests.contract.test_state_schema import written

    store.save(worker.ref, written(raw), snap.version)
    proc = worker.run("rotate", "--all", "--force")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "schema 99" in proc.stdout and "upgrade rotator" in proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    # Nothing was rewritten: the newer fields are still there.
    contents = store._read()  # the raw entry, as the newer rotator would read it
    assert json.dumps(contents.credentials[worker.name].state).count('"leader"') == 1
    assert_i3_raw(worker, sandbox, raw)


def assert_i3_raw(w: Worker, sb: Sandbox, raw: dict[str, object]) -> None:
    current = raw["current"]
    assert isinstance(current, dict)
    assert set(sb.live_keys(w.address)) == {current["api_key"]}


# -- item 6: the intent records its wallet -------------------------------------------------------
@pytest.mark.slow
def test_a_crash_then_a_wallet_change_never_orphans_the_old_wallets_key(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    from eth_account import Account

    from tests.harness import SECRETS

    old = Worker(tmp_path, sandbox.url, *wallet)
    old.rotate()
    hold = sandbox.hold("POST", "/auth/api-key", "after")
    proc = old.start("rotate", "--all", "--force")
    try:
        assert hold.reached.wait(30), "the worker never created its key"
        old.kill(proc)  # the key exists at (old wallet, nonce 1); the state only has the intent
    finally:
        hold.release()
    assert len(sandbox.live_keys(old.address)) == 2

    acct = Account.create()
    SECRETS.update((acct.key.hex(), acct.key.hex().removeprefix("0x")))
    new = Worker(tmp_path, sandbox.url, acct.key.hex(), acct.address, file_key=old.file_key)
    proc = new.run("rotate", "--all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert old.address in proc.stdout and new.address in proc.stdout and "(resume)" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert sandbox.live_keys(new.address) == []  # nothing made with the new wallet
    pending = new.state().pending
    assert pending is not None and pending.nonce == 1 and pending.address == old.address
    assert_i3(old, sandbox)  # the intent still accounts for the old wallet's key

    # The old wallet's signer, once more: the resume finds its key and completes.
    old.write_config()
    old.rotate()
    published = old.published()
    assert published is not None and published.nonce == 1 and published.address == old.address
    assert_i3(old, sandbox)

    # Now the wallet change goes through, and the old wallet's keys are revoked after grace.
    new.write_config()
    new.rotate("--force")
    published = new.published()
    assert published is not None and published.address == new.address
    time.sleep(2.2)
    new.rotate()
    assert sandbox.live_keys(old.address) == []
    assert_i3(new, sandbox)


# -- item 7: a lost state is recovered from the published secret ---------------------------------
def lose_state(w: Worker) -> None:
    """The state is force-deleted; the published secret stays (file store: drop the state entry)."""
    store = w.store()
    with store._locked():
        contents = store._read_copy()
        del contents.credentials[w.name]
        store._write(contents)
    assert w.store().load(w.ref).version is None and w.published() is not None


@pytest.mark.slow
@pytest.mark.parametrize("adopt_existing", [False, True], ids=["default", "adopt_existing"])
def test_a_lost_state_recovers_the_published_key(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], adopt_existing: bool
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet, cred_extra={"adopt_existing": adopt_existing})
    w.rotate()
    w.rotate("--force")  # nonce 0 retiring (grace 2 s), nonce 1 current and published
    keys = {r.nonce: r.api_key for r in sandbox.keys(w.address)}
    lose_state(w)

    proc = w.rotate()
    assert "mm1: rotated" in proc.stdout
    state = w.state()
    assert state.current is not None and state.current.nonce == 2
    retiring = {r.key.nonce for r in state.retiring}
    # Both are provably ours, adopt_existing or not: the published key (derive finds it), and the one
    # below it, which the store published before (issue 22 item 6; tests/integration/test_key_trace.py
    # has a key made by hand there, which is left and reported).
    assert retiring == {0, 1}
    foreign: frozenset[str] = frozenset()
    assert_i3(w, sandbox, foreign)
    time.sleep(2.2)
    w.rotate()
    assert keys[1] not in sandbox.live_keys(w.address)
    assert set(sandbox.live_keys(w.address)) == {state.current.api_key} | foreign
    assert_i3(w, sandbox, foreign)


# -- item 19: a probe that cannot tell is "unknown" ----------------------------------------------
def test_a_probe_answering_500s_is_unknown_not_a_failed_pass(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, fresh_sandbox.url, *wallet)
    w.rotate()
    before = w.published()
    body = '{"error":"internal error"}'
    # Every attempt the worker's retry policy allows, on either read the probe may use.
    for path in ("/auth/api-keys", "/balance-allowance"):
        fresh_sandbox.inject("GET", path, 500, body, {"Content-Type": "application/json"}, times=10)
    proc = w.run("rotate", "--all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("mm1: nothing-due")
    assert '"outcome":"unknown"' in proc.stderr
    assert w.published() == before
    fresh_sandbox.clear_faults()
    assert_i3(w, fresh_sandbox)


@pytest.mark.slow
def test_a_daemon_whose_clock_jumps_forward_keeps_the_grace(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    """Item 9, in one process: the clock jumps while the daemon runs (libfaketime re-reads the
    offset file on every call). 90 s keeps the jumped signatures inside the CLOB's 120 s window."""
    daemon = {"daemon": {"tick": "1s", "jitter": "0s", "probe_every": 0}}  # a key check every pass
    w = Worker(tmp_path, fresh_sandbox.url, *wallet, grace="60s", extra=daemon)
    w.rotate()
    old = w.published()
    w.rotate("--force")  # old: retiring until the real now + 60 s
    assert old is not None
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = w.env() | {
        "LD_PRELOAD": faketime_lib(),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    proc = subprocess.Popen(w.argv("run"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def passes() -> int:
            counts = fresh_sandbox.request_counts().items()
            return sum(n for (m, p, _), n in counts if p == "/balance-allowance")

        start = passes()
        wait_for(lambda: passes() >= start + 2, timeout=30)  # passes on the right clock
        offset.write_text("+90\n")
        jumped = passes()
        wait_for(lambda: passes() >= jumped + 3, timeout=30)  # passes on the jumped clock
        assert proc.poll() is None, "the daemon died"
        assert old.api_key in fresh_sandbox.live_keys(w.address), "grace cut short by the local clock jump"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        OUTPUTS.extend((out, err))
    assert "revoke" not in "".join(ln for ln in err.splitlines() if '"step":"revoke"' in ln)
    assert_i3(w, fresh_sandbox)
