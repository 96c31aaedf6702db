"""The client-side request budget: never ahead of the server's sliding window."""

from __future__ import annotations

import threading
import time

from rotator.clob.budget import SlidingWindowBudget


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def budget(limit: int = 2, window: float = 10.0) -> tuple[SlidingWindowBudget, FakeTime]:
    t = FakeTime()
    return SlidingWindowBudget(limit, window, margin=0.0, clock=t.clock, sleep=t.sleep), t


def test_admits_the_limit_then_waits_a_window_from_the_answer() -> None:
    b, t = budget()
    s1, s2 = b.acquire(), b.acquire()
    assert s1 and s2 and t.slept == []
    t.now += 1.0  # the answers take a second: the server may have stamped them that late
    b.complete(s1)
    b.complete(s2)
    b.acquire()
    assert t.now == 111.0  # a window after the answer, not after the send


def test_a_request_still_in_flight_holds_its_slot() -> None:
    b, t = budget(limit=1)
    slot = b.acquire()
    assert b.acquire(deadline=t.now + 5) is None  # nothing frees while the answer is awaited
    assert slot is not None
    b.complete(slot)
    assert b.acquire(deadline=t.now + 20) is not None


def test_deadline_is_respected_without_taking_a_slot() -> None:
    b, t = budget(limit=1)
    s = b.acquire()
    assert s is not None
    b.complete(s)
    assert b.acquire(deadline=t.now + 3) is None
    assert t.slept == []  # it did not sleep towards a deadline it could not meet


def test_retry_after_blocks_everything_until_it_passes() -> None:
    b, t = budget(limit=3)
    b.penalise(7.0)
    b.acquire()
    assert t.now == 107.0


def test_unlimited() -> None:
    b, t = budget(limit=0)
    for _ in range(1000):
        s = b.acquire()
        assert s is not None
        b.complete(s)
    assert t.slept == []


def _settings(n: int, **daemon: object) -> object:
    from rotator.config import load_settings

    creds = [
        {
            "name": f"c{i}",
            "signer": {"source": "env", "env": "W"},
            "path": f"p/c{i}",
            "rotate_every": "1d",
            "grace": "10m",
        }
        for i in range(n)
    ]
    return load_settings(None, data={"credentials": creds, "daemon": daemon})


def test_the_default_auth_budget_leaves_half_of_the_ip_to_the_bots() -> None:
    from rotator.clob.budget import budget_report

    lines = dict((line.split(":")[0], level) for level, line in budget_report(_settings(60)))  # type: ignore[arg-type]
    assert lines["/auth/* budget"] == "ok"
    text = " ".join(line for _, line in budget_report(_settings(60)))  # type: ignore[arg-type]
    assert "50 per 10s, 50% of the CLOB's 100 per 10s per IP" in text
    assert "needs 120 /auth/* requests" in text and "at least 24s" in text


def test_a_cycle_counts_the_listings_of_read_only_and_builder_credentials_and_audits_skip_them() -> None:
    from rotator.clob.budget import AUDIT_SHARE, AUTH_REQUESTS_PER_AUDIT, audit_interval, budget_report
    from rotator.config import load_settings

    settings = _settings(2, audit_every="1s")
    data = settings.model_dump(mode="json", exclude_unset=True)  # type: ignore[attr-defined]
    for i, kind in enumerate(("readonly", "builder")):
        data["credentials"].append(
            {
                "name": f"k{i}",
                "kind": kind,
                "via": "c0",
                "path": f"p/k{i}",
                "rotate_every": "1d",
                "grace": "1h",
            }
        )
    mixed = load_settings(None, data=data)
    text = " ".join(line for _, line in budget_report(mixed))
    assert "needs 12 /auth/* requests" in text and "two listings for a read-only or builder one" in text
    # two wallets' worth of credentials, one wallet audited per trading credential
    assert (
        audit_interval(mixed) == audit_interval(settings) == 2 * AUTH_REQUESTS_PER_AUDIT / (5 * AUDIT_SHARE)
    )


def test_probes_are_stretched_to_their_share_of_the_probe_endpoint() -> None:
    from rotator.clob.budget import probe_interval

    assert probe_interval(_settings(10)) == 300.0  # type: ignore[arg-type]
    # 1,000 keys at 25% of 200 per 10 s: one check per key every 200 s at most
    assert probe_interval(_settings(1000, probe_every="60s")) == 200.0  # type: ignore[arg-type]


def test_cancel_ends_a_wait_at_once_without_taking_a_slot() -> None:
    """SIGTERM (issue 13, item 15): a request waiting for the budget gives up at once."""
    b = SlidingWindowBudget(1, 10.0)
    b.complete(b.acquire())  # type: ignore[arg-type]
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    assert b.acquire(deadline=started + 30, cancel=cancel) is None
    assert time.monotonic() - started < 1.5
    assert b.acquire(deadline=time.monotonic() + 30, cancel=cancel) is None  # and stays cancelled


# -- issue 22 item 13: one share of /auth/* across the worker's processes -------------------------------
def test_a_daemon_leaves_a_one_shot_run_its_part_of_the_share() -> None:
    from rotator.clob.budget import daemon_auth_limit, one_shot_auth_limit
    from rotator.runtime import Runtime

    s = _settings(1)
    assert (daemon_auth_limit(s), one_shot_auth_limit(s)) == (40, 10)  # type: ignore[arg-type]
    rt = Runtime(s, {})  # type: ignore[arg-type]
    rt.daemon = True
    assert rt.clob.auth_budget.limit == 40


def test_a_one_shot_run_takes_the_smaller_share_only_beside_a_live_daemon() -> None:
    from rotator.clob.budget import LEADER_CLOCK_SLACK, one_shot_auth_budget
    from rotator.errors import Unavailable
    from rotator.stores.base import LeaseRecord

    s = _settings(1)
    now = 1_000_000.0
    asked: list[int] = []

    def limit(record: LeaseRecord | Exception | None) -> int:
        def leader() -> LeaseRecord | None:
            asked.append(1)
            if isinstance(record, Exception):
                raise record
            return record

        b = one_shot_auth_budget(s, leader, wall=lambda: now)  # type: ignore[arg-type]
        assert b.limit == 50 and not asked  # nothing read until the run first needs /auth/*
        for _ in range(3):
            slot = b.acquire()
            assert slot is not None
            b.complete(slot)
        assert len(asked) == 1  # read once
        asked.clear()
        return b.limit

    assert limit(None) == 50  # no daemon ever ran on this store
    assert limit(LeaseRecord("host:1:2", 0.0, 1)) == 50  # released by a graceful stop
    assert limit(LeaseRecord("host:1:2", now + 15, 1)) == 10  # a live leader
    assert limit(LeaseRecord("host:1:2", now - LEADER_CLOCK_SLACK + 1, 1)) == 10  # its clock may be ahead
    assert limit(LeaseRecord("host:1:2", now - LEADER_CLOCK_SLACK - 1, 1)) == 50  # long dead
    assert limit(Unavailable("vault down")) == 10  # cannot tell: the share that overruns nobody
