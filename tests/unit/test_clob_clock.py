"""The CLOB's clock (issue 13 item 9): measured once, carried on the monotonic clock, immune to
wall-clock jumps, re-measured when stale, and never failing a pass because /time did not answer."""

from __future__ import annotations

from rotator.clob.clock import ClobClock
from rotator.errors import Transient


class Clocks:
    def __init__(self) -> None:
        self.mono = 50.0
        self.wall = 1_000.0  # this machine's clock
        self.server = 2_000.25  # the CLOB's clock at mono 50 (not whole seconds: no rounding)
        self.calls = 0
        self.down = False

    def server_time(self) -> float:
        self.calls += 1
        if self.down:
            raise Transient("GET /time: 503")
        return self.server + (self.mono - 50.0)


def make(c: Clocks) -> ClobClock:
    return ClobClock(c.server_time, refresh_every=300, monotonic=lambda: c.mono, local=lambda: c.wall)


def test_reads_the_clob_time_and_ignores_local_jumps() -> None:
    c = Clocks()
    clock = make(c)
    assert clock() == 2_000.25
    c.wall += 120  # the local clock jumps forward
    c.mono += 5
    assert clock() == 2_005.25
    assert c.calls == 1


def test_measures_again_when_stale_and_carries_on_when_the_clob_is_down() -> None:
    c = Clocks()
    clock = make(c)
    clock()
    c.mono += 301
    assert clock() == 2_301.25 and c.calls == 2
    c.down = True
    c.mono += 400
    assert clock() == 2_701.25  # the last measurement, carried forward


def test_falls_back_to_the_local_clock_only_when_never_measured() -> None:
    c = Clocks()
    c.down = True
    clock = make(c)
    assert clock() == 1_000.0
    c.down = False
    c.mono += 31
    assert clock() == 2_031.25


def test_a_failed_measurement_is_not_retried_on_every_read() -> None:
    c = Clocks()
    c.down = True
    clock = make(c)
    clock()
    clock()
    assert c.calls == 1  # each ask may cost the adapter's whole retry deadline
    c.down = False
    c.mono += 31
    assert clock() == 2_031.25 and c.calls == 2


def test_a_whole_second_answer_is_taken_as_the_middle_of_its_second() -> None:
    clock = ClobClock(lambda: 2_000.0, monotonic=lambda: 0.0, local=lambda: 0.0)
    assert clock() == 2_000.5


def test_a_new_measurement_never_moves_the_clock_back() -> None:
    c = Clocks()
    clock = make(c)
    clock()
    c.mono += 299
    assert clock() == 2_299.25
    c.server -= 3  # the next measurement lands 3 s behind what was carried forward
    c.mono += 1
    assert clock() == 2_299.25  # held, not 2_297.25
    c.mono += 5
    assert clock() == 2_302.25  # the measured clock, once it has caught up


def test_a_local_clock_that_agrees_with_the_clob_keeps_its_precision() -> None:
    """Two workers on synchronised clocks must compute the same deadlines, not each its own
    half-second guess inside the CLOB's whole-second answer."""
    wall = {"t": 1_700_000_123.75}
    clock = ClobClock(lambda: 1_700_000_123.0, monotonic=lambda: 0.0, local=lambda: wall["t"])
    assert clock() == 1_700_000_123.75
