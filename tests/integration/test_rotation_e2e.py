"""Issue 2 acceptance: the whole protocol through the real CLI, against the sandbox over HTTP.

Crashes are real (SIGKILL of the worker process while the sandbox holds one of its requests), and
races are real (two worker processes at once).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rotator.sandbox import Sandbox
from tests.harness import Worker, sdk_works

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def worker(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    return Worker(tmp_path, sandbox.url, *wallet)


def assert_consistent(w: Worker, sb: Sandbox, foreign: frozenset[str] = frozenset()) -> None:
    """I1/I3/I5: the published key is the verified current one, works, and nothing live is unaccounted for."""
    state = w.state()
    published = w.published()
    assert state.pending is None
    assert state.current is not None and published is not None
    assert published.api_key == state.current.api_key
    assert sdk_works(sb.url, w.private_key, published)
    orphans = set(sb.live_keys(w.address)) - w.known_keys() - foreign
    assert not orphans, f"orphan keys at the CLOB: {orphans}"


@pytest.mark.slow
def test_bootstrap_rotate_grace_revoke(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    # A grace that no CLI start-up on a busy machine eats into (2 s did: the pass meant to run inside
    # it ran after it). It ends by moving the sandbox's clock on: the worker keeps its deadlines on
    # the CLOB's clock, so that is the grace passing for it, without waiting for it.
    sandbox = fresh_sandbox
    worker = Worker(tmp_path, sandbox.url, *wallet, grace="60s")
    out = worker.rotate().stdout
    assert "mm1: rotated" in out
    first = worker.published()
    assert first is not None and first.nonce == 0
    assert sdk_works(sandbox.url, worker.private_key, first)

    worker.rotate("--force")
    second = worker.published()
    assert second is not None and second.nonce == 1 and second.api_key != first.api_key
    assert sdk_works(sandbox.url, worker.private_key, second)
    # Inside the grace window the old key still works and is still live.
    assert sdk_works(sandbox.url, worker.private_key, first)
    worker.rotate()
    assert first.api_key in sandbox.live_keys(worker.address)
    assert [r.key.api_key for r in worker.state().retiring] == [first.api_key]

    sandbox.configure(clock_offset=60.5)  # the grace is over on the CLOB's clock
    out = worker.rotate().stdout
    assert "revoked=1" in out
    record = next(r for r in sandbox.keys(worker.address) if r.api_key == first.api_key)
    assert record.revoked_by == "delete"  # a DELETE signed with the old key's own credentials
    assert sandbox.live_keys(worker.address) == [second.api_key]
    assert not sdk_works(sandbox.url, worker.private_key, first)
    assert worker.state().history[-1].how == "deleted"


def test_nothing_due_changes_nothing(worker: Worker, sandbox: Sandbox) -> None:
    worker.rotate()
    before = worker.published()
    out = worker.rotate().stdout
    assert "mm1: nothing-due" in out
    assert worker.published() == before
    assert before is not None
    dry = worker.run("rotate", "--all", "--force", "--dry-run").stdout.strip()
    assert dry.startswith(f"mm1: would-rotate (forced) nonce {before.nonce + 1} key={before.masked}"), dry
    assert worker.published() == before


# (method, path, phase, skip, what the worker has done when it dies)
BOUNDARIES = [
    ("POST", "/auth/api-key", "before", 0, "intent recorded, create not yet processed"),
    ("POST", "/auth/api-key", "after", 0, "key created at the CLOB, answer never received"),
    ("GET", "/balance-allowance", "before", 0, "pending key recorded, verification in flight"),
    ("GET", "/balance-allowance", "after", 0, "verified, not yet promoted"),
    ("GET", "/balance-allowance", "after", 1, "promoted and published, probing the old key"),
    ("DELETE", "/auth/api-key", "after", 0, "old key deleted at the CLOB, not yet recorded"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "phase", "skip", "what"), BOUNDARIES, ids=[b[4] for b in BOUNDARIES]
)
def test_sigkill_at_every_step_boundary(
    worker: Worker, sandbox: Sandbox, method: str, path: str, phase: str, skip: int, what: str
) -> None:
    worker.rotate()
    original = worker.published()
    assert original is not None
    if method == "DELETE":
        worker.rotate("--force")
        time.sleep(2.2)  # the old key's grace is over: the next pass revokes it
        flags: tuple[str, ...] = ()
    else:
        flags = ("--force",)

    hold = sandbox.hold(method, path, phase, skip=skip)  # type: ignore[arg-type]
    proc = worker.start("rotate", "--all", *flags)
    try:
        assert hold.reached.wait(30), f"the worker never reached: {what}"
        worker.kill(proc)
    finally:
        hold.release()

    # I5: right after the crash, whatever consumers read still works.
    published = worker.published()
    assert published is not None and sdk_works(sandbox.url, worker.private_key, published)

    worker.rotate()  # the next run repairs whatever the crash left
    assert_consistent(worker, sandbox)
    if method != "DELETE":
        assert worker.published() != original, "the interrupted rotation was not completed"
    time.sleep(2.2)
    worker.rotate()
    assert_consistent(worker, sandbox)
    assert sandbox.live_keys(worker.address) == [worker.state().current.api_key]  # type: ignore[union-attr]


@pytest.mark.slow
def test_two_racing_forced_runs_rotate_once(worker: Worker, sandbox: Sandbox) -> None:
    worker.rotate()
    for _ in range(3):
        before = worker.state()
        created_before = len(sandbox.keys(worker.address))
        # Racing for real: each run has read the state (its pass then asks the CLOB's clock) before
        # either goes on. Left to the scheduler, a run that starts 0.2 s after the other finished
        # would see the new key and rightly rotate again.
        holds = [sandbox.hold("GET", "/time") for _ in range(2)]
        procs = [worker.start("rotate", "--all", "--force") for _ in range(2)]
        for hold in holds:
            assert hold.reached.wait(30), "a run never asked the CLOB's clock"
        for hold in holds:
            hold.release()
        codes = [worker.finish(p)[0] for p in procs]
        assert codes == [0, 0]
        after = worker.state()
        assert after.rotations == before.rotations + 1
        assert len(sandbox.keys(worker.address)) == created_before + 1
        assert_consistent(worker, sandbox)


def test_single_key_server_records_old_key_invalidated(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    fresh_sandbox.configure(single_key=True)
    w = Worker(tmp_path, fresh_sandbox.url, *wallet)
    w.rotate()
    first = w.published()
    out = w.rotate("--force").stdout
    assert "invalidated-by-server=1" in out
    state = w.state()
    assert state.retiring == ()
    assert state.history[-1].how == "invalidated-by-server"
    assert state.history[-1].nonce == first.nonce  # type: ignore[union-attr]
    assert_consistent(w, fresh_sandbox)
    assert fresh_sandbox.live_keys(w.address) == [state.current.api_key]  # type: ignore[union-attr]


def _hand_made_key(sb: Sandbox, private_key: str) -> str:
    from py_clob_client.client import ClobClient

    creds = ClobClient(
        sb.url, chain_id=137, key=private_key
    ).create_or_derive_api_creds()  # what users do by hand
    return str(creds.api_key)


@pytest.mark.slow
def test_existing_key_at_nonce_0_is_adopted_and_retired(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    hand_made = _hand_made_key(sandbox, wallet[0])
    w = Worker(tmp_path, sandbox.url, *wallet, cred_extra={"adopt_existing": True})
    out = w.rotate().stdout
    assert "mm1: rotated" in out
    state = w.state()
    assert state.current is not None and state.current.nonce == 1
    assert [(r.key.api_key, r.key.nonce) for r in state.retiring] == [(hand_made, 0)]
    time.sleep(2.2)
    w.rotate()
    assert sandbox.live_keys(w.address) == [state.current.api_key]


def test_existing_key_at_nonce_0_is_left_alone_without_adopt(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    hand_made = _hand_made_key(sandbox, wallet[0])
    w = Worker(tmp_path, sandbox.url, *wallet, foreign={hand_made})
    w.rotate()
    state = w.state()
    assert state.current is not None and state.current.nonce == 1
    assert state.retiring == ()
    assert set(sandbox.live_keys(w.address)) == {hand_made, state.current.api_key}
    assert_consistent(w, sandbox, foreign=frozenset({hand_made}))  # not ours: never touched
