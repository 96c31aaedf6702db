"""The leader election (rotator/leader.py) over a real file store, on clocks the test moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# -- issue 22 items 1-2: no replica judges the lease by another machine's clock --------------------


class Host:
    """One replica's machine: a wall clock ``skew`` seconds off the true time, and a monotonic
    clock with an origin of its own; both run at the true rate."""

    def __init__(self, world: World, skew: float, mono_origin: float) -> None:
        self.world, self.skew, self.mono_origin = world, skew, mono_origin

    def wall(self) -> float:
        return self.world.t + self.skew

    def mono(self) -> float:
        return self.world.t - 1_700_000_000.0 + self.mono_origin


class World:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0


def on_host(path: Path, host: Host, holder: str, store: FileStore | None = None) -> LeaderElector:
    return LeaderElector(
        store or FileStore(path, KEY),
        lease=20.0,
        renew=5.0,
        holder=holder,
        wall=host.wall,
        monotonic=host.mono,
    )


@pytest.mark.parametrize(("skew_a", "skew_b"), [(0, 60), (0, -60), (60, 0), (-60, 0), (600, -600)])
def test_a_renewed_lease_is_never_taken_and_a_silent_one_is_within_lease_and_renew(
    tmp_path: Path, skew_a: float, skew_b: float
) -> None:
    world = World()
    a = on_host(tmp_path / "s.enc", Host(world, skew_a, 10.0), "a")
    b = on_host(tmp_path / "s.enc", Host(world, skew_b, 99_999.0), "b")
    assert a.step()
    for i in range(40):  # 200 s of renewals, b stepping in between at another phase
        world.t += 2.5
        assert not b.step() and not b.is_leader, f"b took a renewed lease at {i}"
        world.t += 2.5
        assert a.step() and a.is_leader
    # a dies right after its last renewal; b saw that renewal 2.5 s later at its next step.
    died = world.t
    while not b.step():
        assert world.t - died <= 20.0 + 5.0, "failover slower than lease + renew"
        world.t += min(b.next_step_in(), 5.0)
    assert world.t - died <= 20.0 + 5.0
    assert not a.is_leader  # its own monotonic deadline passed before b took over


def test_a_standby_counts_the_silence_from_when_it_first_saw_the_record(tmp_path: Path) -> None:
    world = World()
    store = FileStore(tmp_path / "s.enc", KEY)
    # A record left by a replica of another host that is gone: its wall-clock deadline says nothing.
    store.save_lease(LEADER, "gone-host:1:1", world.t + 10_000, None)
    b = on_host(tmp_path / "s.enc", Host(world, 0, 0), "b")
    assert not b.step()
    assert b.next_step_in() == 5.0
    world.t += 17.0
    assert not b.step()
    assert b.next_step_in() == pytest.approx(3.0)  # wakes when the lease of silence ends
    world.t += 3.0
    assert b.step() and b.is_leader


def test_a_renewal_changes_the_record_even_on_a_frozen_wall_clock(tmp_path: Path) -> None:
    world = World()
    frozen = Host(world, 0, 0)
    frozen.wall = lambda: 1_700_000_000.0  # type: ignore[method-assign]
    a = on_host(tmp_path / "s.enc", frozen, "a")
    b = on_host(tmp_path / "s.enc", Host(world, 0, 0), "b")
    assert a.step()
    written = []
    for _ in range(10):
        world.t += 5
        assert a.step() and not b.step()
        record = a._store.load_lease(LEADER)
        assert record is not None
        written.append(record.until)
    # Each renewal writes a later deadline: on AWS a renewal changes nothing else a standby sees.
    assert written == sorted(set(written)) and len(written) == 10


class SlowStore(FileStore):
    """A store whose lease write lands at once but whose answer takes ``delay`` seconds of the
    world's time; ``meanwhile`` runs right after the write landed (another replica looking)."""

    delay = 0.0
    world: World
    meanwhile: Any = None

    def save_lease(self, name: str, holder: str, until: float, expected: LeaseRecord | None) -> LeaseRecord:
        record = super().save_lease(name, holder, until, expected)
        if self.meanwhile is not None:
            self.meanwhile()
        self.world.t += self.delay
        return record


def test_a_slow_renewal_does_not_stretch_the_holders_deadline(tmp_path: Path) -> None:
    """Issue 26: the holder's deadline counts from the start of its renewal, never from its end. A
    standby that saw the renewal land counts a lease from then; the holder must be done by then."""
    world = World()
    store = SlowStore(tmp_path / "s.enc", KEY)
    store.world = world
    a = on_host(tmp_path / "s.enc", Host(world, 0, 0), "a", store=store)
    b = on_host(tmp_path / "s.enc", Host(world, 0, 0), "b")
    assert a.step()
    store.delay, store.meanwhile = 8.0, b.step  # the renewal lands, b sees it, the answer takes 8 s
    world.t += 5
    assert a.step()
    while not b.step():
        assert not b.is_leader
        world.t += 0.5
    assert b.is_leader
    assert not a.is_leader, "two leaders: the slow renewal stretched the holder's deadline"


def test_an_owner_is_judged_by_proc_only_in_its_own_pid_namespace() -> None:
    """Two containers may share a host name (hostNetwork pods on one node): a pid in another pid
    namespace is not this /proc's to judge, so such an owner counts as alive."""
    import socket

    from rotator.lease import _where, owner_alive, this_owner

    me = this_owner()
    host = socket.gethostname()
    assert me.startswith(f"{host}/{_where()}:")
    gone = 2**22 + 7  # above pid_max's default: no such process here
    assert not owner_alive(f"{host}/{_where()}:{gone}:1")  # here, and gone
    assert owner_alive(f"{host}/0badcafe:{gone}:1")  # same name, another namespace or machine
    assert owner_alive(f"{host}:{gone}:1")  # an older version's id: cannot say where it ran
    assert owner_alive(f"elsewhere/{_where()}:{gone}:1")
    assert owner_alive(me)
