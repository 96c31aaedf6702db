"""The leader election (rotator/leader.py) over a real file store, on clocks the test moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from rotator.errors import Unavailable
from rotator.leader import LeaderElector
from rotator.metrics import Metrics
from rotator.stores.base import LEADER, LeaseRecord
from rotator.stores.file import FileStore

KEY = b"rotator-leader-unit-test-key-32b"


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 500.0

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def elector(path: Path, clocks: Clocks, holder: str, **kw: object) -> LeaderElector:
    return LeaderElector(
        FileStore(path, KEY),
        lease=20.0,
        renew=5.0,
        holder=holder,
        wall=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
        **kw,  # type: ignore[arg-type]
    )


def test_one_leader_then_takeover_after_the_lease_lapses(tmp_path: Path, clocks: Clocks) -> None:
    a = elector(tmp_path / "s.enc", clocks, "a")
    b = elector(tmp_path / "s.enc", clocks, "b")
    assert a.step() and a.is_leader
    assert not b.step() and not b.is_leader
    for _ in range(10):  # a renews every 5 s; b keeps standing by
        clocks.advance(5)
        assert a.step() and not b.step()
    # a dies (no more steps): b waits out the lease, then takes it.
    clocks.advance(19)
    assert not b.step()
    clocks.advance(1.5)
    assert b.step() and b.is_leader
    # a comes back: its own deadline passed without a renewal, so it had stopped; and it cannot renew.
    assert not a.is_leader
    assert not a.step() and not a.is_leader
    record = FileStore(tmp_path / "s.enc", KEY).load_lease(LEADER)
    assert record is not None and record.holder == "b"


def test_a_failed_renewal_stops_the_leader_at_once(tmp_path: Path, clocks: Clocks) -> None:
    a = elector(tmp_path / "s.enc", clocks, "a")
    assert a.step()

    def down(name: str) -> LeaseRecord | None:
        raise Unavailable("store down")

    a._store.load_lease = down  # type: ignore[method-assign]
    clocks.advance(5)
    assert not a.step() and not a.is_leader
    assert a.problem is not None and "store down" in a.problem


def test_the_monotonic_deadline_ends_leadership_without_a_renewal(tmp_path: Path, clocks: Clocks) -> None:
    a = elector(tmp_path / "s.enc", clocks, "a")
    assert a.step()
    clocks.mono += 19.9
    assert a.is_leader
    clocks.mono += 0.2  # a hung renewal: nobody told us, the clock did
    assert not a.is_leader


def test_release_hands_over_at_the_standbys_next_step(tmp_path: Path, clocks: Clocks) -> None:
    a = elector(tmp_path / "s.enc", clocks, "a")
    b = elector(tmp_path / "s.enc", clocks, "b")
    assert a.step() and not b.step()
    a.release()
    assert not a.is_leader
    clocks.advance(0.1)
    assert b.step() and b.is_leader


def test_gauge_follows_the_lease(tmp_path: Path, clocks: Clocks) -> None:
    m = Metrics(CollectorRegistry())
    a = elector(tmp_path / "s.enc", clocks, "a", gauge=m.enable_leader())
    assert m.registry.get_sample_value("rotator_leader") == 0
    a.step()
    assert m.registry.get_sample_value("rotator_leader") == 1
    clocks.mono += 21
    assert m.registry.get_sample_value("rotator_leader") == 0


def test_a_oneshot_metrics_registry_has_no_leader_gauge() -> None:
    # CronJob runs push their registry: a 0 there would read as "a replica without the lease".
    assert Metrics(CollectorRegistry()).registry.get_sample_value("rotator_leader") is None


def test_a_holder_that_provably_died_on_this_host_is_replaced_at_once(tmp_path: Path, clocks: Clocks) -> None:
    import subprocess
    import sys

    from rotator.lease import this_owner

    # A real process that started and ended: same host, its pid's start time no longer matches.
    child = subprocess.run(
        [sys.executable, "-c", "from rotator.lease import this_owner; print(this_owner())"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    dead = child.stdout.strip()
    assert dead != this_owner()
    store = FileStore(tmp_path / "s.enc", KEY)
    store.save_lease(LEADER, dead, clocks.wall + 20, None)  # a live-looking deadline
    me = LeaderElector(store, lease=20.0, renew=5.0, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    assert me.step() and me.is_leader
    # A live holder (this process, on this host) is never replaced before its lease runs out.
    other = LeaderElector(
        store,
        lease=20.0,
        renew=5.0,
        holder="elsewhere:1:1",
        wall=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    assert not other.step()
