"""Issue 22 item 3: one bad ``GET /time`` answer poisons no deadline, and a state an older version
let one poison heals when read. The real CLI against the sandbox over HTTP, its ``/time`` faked.

Each test ends with the I3 check (tests/conftest.py): every key the sandbox holds for the wallet is
accounted for in the worker's state.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rotator.model import CredentialState, Key
from rotator.rotation import CLAMP_AHEAD
from rotator.sandbox import Sandbox
from tests.harness import Worker

GRACE = 30.0
#: Enough answers for every /time a run asks (its clock, its signing checks, their retries).
ALL_RUN = 50


def lies_about_time(sb: Sandbox, body: str) -> None:
    sb.inject("GET", "/time", 200, body, times=ALL_RUN)


def farthest_ahead(state: CredentialState) -> float:
    """The latest time the state records for the future (deadlines, key ages)."""
    times = [r.revoke_after for r in state.retiring]
    times += [k.created_at for k in (state.current,) if k is not None]
    times += [state.audit.at] if state.audit is not None else []
    if state.pending is not None:
        times.append(state.pending.lease_until)
        if state.pending.key is not None:
            times.append(state.pending.key.created_at)
    return max(times, default=0.0)


def assert_no_poison(w: Worker) -> None:
    """No deadline or age the last run wrote lies further ahead than any this protocol writes."""
    limit = time.time() + GRACE + 2 * CLAMP_AHEAD
    assert farthest_ahead(w.state()) < limit, w.state()


def retiring_first_key(w: Worker) -> Key:
    """Bootstrap, then a forced rotation: the first key is retiring, within its grace. Returns it."""
    w.rotate()
    old = w.published()
    w.rotate("--force")
    assert old is not None
    return old


@pytest.fixture
def worker(fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    return Worker(tmp_path, fresh_sandbox.url, *wallet, grace=f"{GRACE:g}s")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda: f"{time.time() * 1000:.0f}", id="milliseconds"),
        pytest.param(lambda: f"{time.time() + 86_400:.0f}", id="a-day-ahead"),
    ],
)
def test_a_wrong_time_answer_for_a_whole_run_writes_no_deadline(
    worker: Worker, fresh_sandbox: Sandbox, answer: object
) -> None:
    """The old key is retiring, within its grace. One run sees /time in milliseconds, or a day off:
    it must neither revoke early nor write any deadline from that answer, say what is wrong in one
    line, and the next run on a sound answer carries on as if nothing happened."""
    sb = fresh_sandbox
    w = worker
    old = retiring_first_key(w)
    before = w.state()

    lies_about_time(sb, answer())  # type: ignore[operator]
    proc = w.run("rotate", "--all")
    assert_no_poison(w)
    after = w.state()
    assert [r.revoke_after for r in after.retiring] == [r.revoke_after for r in before.retiring]
    assert after.pending is None and after.current == before.current
    assert old.api_key in sb.live_keys(w.address), "the grace was cut short"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "/time: answered" in proc.stderr  # said: what the answer was, and why it was not taken

    sb.clear_faults()
    sb.configure(clock_offset=GRACE + 1)  # the grace is over, on a truthful clock
    assert "revoked=1" in w.rotate().stdout
    assert old.api_key not in sb.live_keys(w.address)


def test_a_time_answer_that_is_no_number_ends_in_one_line_not_a_traceback(
    worker: Worker, fresh_sandbox: Sandbox
) -> None:
    """JSON's NaN and Infinity, and an integer no float holds (the other odd answers are unit tests,
    tests/unit/test_clob_clock.py): every command says what /time answered, none ends in a traceback,
    and nothing is rotated on a clock nobody can read (I5)."""
    sb = fresh_sandbox
    w = worker
    w.rotate()
    key = w.published()
    runs = [(body, ("rotate", "--all", "--force")) for body in ("NaN", "Infinity", "1" + "0" * 400)]
    runs += [("NaN", ("status",)), ("NaN", ("check",))]
    for body, args in runs:
        sb.clear_faults()
        lies_about_time(sb, body)
        proc = w.run(*args)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, (body, args, out)
        assert proc.returncode in (0, 1), (body, args, out)
        assert "/time: answered" in out, (body, args, out)
    # A forced run may record its intent (on this host's clock, said) before its create fails:
    # nothing can be signed without the CLOB's time. No deadline from the answer, nothing published.
    assert_no_poison(w)
    assert w.published() == key


def poison(w: Worker, change: object) -> None:
    """Rewrite the stored state as an older version that took a bad /time answer would have."""
    store = w.store()
    snap = store.load(w.ref)
    store.save(w.ref, change(snap.state), snap.version)  # type: ignore[operator]


def test_a_state_poisoned_by_an_older_version_is_clamped_said_and_heals(
    worker: Worker, fresh_sandbox: Sandbox
) -> None:
    sb = fresh_sandbox
    w = worker
    old = retiring_first_key(w)
    now = time.time()
    # revoke_after in the year 58,900 (a /time in milliseconds), the current key a day old... ahead.
    assert w.state().audit is not None  # the first run audited the wallet
    poison(
        w,
        lambda s: replace(
            s,
            current=replace(s.current, created_at=now + 86_400),
            retiring=tuple(replace(r, revoke_after=now * 1000 + 15) for r in s.retiring),
            audit=replace(s.audit, at=now * 1000),  # "last audited" far ahead: no audit until then
        ),
    )

    dry = w.run("rotate", "--all", "--dry-run")
    assert dry.returncode == 0 and "clamped (dry run: not saved)" in dry.stderr
    assert w.state().retiring[0].revoke_after > now * 1000  # a dry run changes nothing

    proc = w.rotate()
    clamps = [ln for ln in proc.stderr.splitlines() if "clamped" in ln]
    warnings = [ln for ln in clamps if '"logger":"rotator.rotation"' in ln]
    events = [json.loads(ln) for ln in clamps if '"outcome":"clamped"' in ln]
    assert len(warnings) == 1, clamps
    assert "revoke_after" in warnings[0] and "created_at" in warnings[0] and "last audit" in warnings[0]
    assert len(events) == 1 and events[0]["step"] == "read" and len(events[0]["clamped"]) == 3
    assert f"audit {w.name}:" in proc.stdout, proc.stdout  # the audit held off by the poison runs
    state = w.state()
    healed = time.time()
    # A whole grace from now for the retired key (I2), and the current key's age starts now.
    assert now + GRACE <= state.retiring[0].revoke_after <= healed + GRACE
    assert state.current is not None and now <= state.current.created_at <= healed
    assert old.api_key in sb.live_keys(w.address)

    again = w.rotate()
    assert "clamped" not in again.stderr  # healed: said once
    sb.configure(clock_offset=GRACE + 1)
    assert "revoked=1" in w.rotate().stdout
    assert old.api_key not in sb.live_keys(w.address)


def test_an_orphans_poisoned_deadline_is_clamped_to_a_day_and_its_key_revoked_then(
    worker: Worker, fresh_sandbox: Sandbox
) -> None:
    """A credential removed from the config keeps its retiring keys served (orphans.serve). One whose
    deadline an older version wrote from a bad /time (the year 58,900) was never revoked; its grace
    left with its config, so the clamp gives it a day (orphans.ORPHAN_CLAMP) and then revokes it."""
    import yaml

    from rotator.orphans import ORPHAN_CLAMP

    sb = fresh_sandbox
    w = worker
    old = retiring_first_key(w)
    now = time.time()
    poison(w, lambda s: replace(s, retiring=tuple(replace(r, revoke_after=now * 1000) for r in s.retiring)))
    cfg = w.config()
    cfg["credentials"][0]["name"] = "placeholder"  # the credential leaves the config: an orphan
    cfg["credentials"][0]["path"] = "polymarket/placeholder"
    w.config_path.write_text(yaml.safe_dump(cfg))

    proc = w.rotate()
    clamps = [ln for ln in proc.stderr.splitlines() if "clamped" in ln and w.name in ln]
    assert any("revoke_after" in ln for ln in clamps), proc.stderr[-3000:]
    healed = time.time()
    [entry] = w.state().retiring
    assert now + ORPHAN_CLAMP.grace <= entry.revoke_after <= healed + ORPHAN_CLAMP.grace
    assert "clamped" not in w.rotate().stderr  # said once
    assert old.api_key in sb.live_keys(w.address)
    sb.configure(clock_offset=ORPHAN_CLAMP.grace + 60)  # a day later, on the CLOB's clock
    w.rotate()
    assert old.api_key not in sb.live_keys(w.address)
    assert w.state().retiring == ()


def test_a_pending_lease_a_day_ahead_is_clamped_to_one_lease(worker: Worker, fresh_sandbox: Sandbox) -> None:
    """A rotation in flight whose owner (on another host: not provably dead) wrote its lease a day
    ahead: every run, --force included, said in-flight-elsewhere for a day. Now the lease runs one
    lease from the run that read it, then the rotation is taken over and completed."""
    from rotator.model import Pending

    sb = fresh_sandbox
    w = worker
    w.rotate()
    first = w.published()
    assert first is not None
    now = time.time()
    poison(
        w,
        lambda s: replace(
            s,
            pending=Pending(
                nonce=s.next_nonce,
                started_at=now + 86_400,
                owner="another-pod/0badcafe:1:1",
                lease_until=now + 86_400 + 130,
                address=w.address,
            ),
            next_nonce=s.next_nonce + 1,
        ),
    )
    proc = w.rotate("--force")
    assert "in-flight-elsewhere" in proc.stdout
    assert "lease_until" in proc.stderr and "clamped" in proc.stderr
    lease = 10 + 120  # verify_timeout (the harness's 10 s) + the lease margin
    assert w.state().pending is not None
    assert w.state().pending.lease_until <= time.time() + lease  # type: ignore[union-attr]
    sb.configure(clock_offset=lease + 1)  # one lease later on the CLOB's clock: the owner is gone
    out = w.rotate().stdout
    assert "mm1: rotated" in out
    published = w.published()
    assert published is not None and published.nonce == first.nonce + 1


def test_a_run_on_its_own_clock_behind_the_clobs_shortens_no_grace(
    worker: Worker, fresh_sandbox: Sandbox
) -> None:
    """The CLOB's clock is an hour ahead of this host's; one run cannot measure it (/time down)
    and falls back to this host's clock. The state's times then look an hour ahead: that is this
    host being behind, not a wrong clock having written them, so nothing is clamped (a clamp to
    this host's now would cut the retired key's grace by an hour)."""
    sb = fresh_sandbox
    w = worker
    sb.configure(clock_offset=3600.0)
    old = retiring_first_key(w)
    before = w.state()
    sb.inject("GET", "/time", 503, '{"error": "down"}', times=ALL_RUN)
    proc = w.run("rotate", "--all")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "clamped" not in proc.stderr
    assert w.state().retiring == before.retiring and w.state().current == before.current
    sb.clear_faults()
    w.rotate()
    assert old.api_key in sb.live_keys(w.address), "the grace was cut short"
