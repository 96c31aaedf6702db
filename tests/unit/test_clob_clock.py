"""The CLOB's clock (issue 13 item 9): measured once, carried on the monotonic clock, immune to
wall-clock jumps, re-measured when stale, and never failing a pass because /time did not answer."""

from __future__ import annotations

from rotator.clob.clock import ClobClock
from rotator.errors import Transient

T = 1_700_000_000.0  # the tests' times are offsets from this plausible Unix time


class Clocks:
    def __init__(self) -> None:
        self.mono = 50.0
        self.wall = T + 1_000.0  # this machine's clock
        self.server = T + 2_000.25  # the CLOB's clock at mono 50 (not whole seconds: no rounding)
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
    assert clock() == T + 2_000.25
    c.wall += 120  # the local clock jumps forward
    c.mono += 5
    assert clock() == T + 2_005.25
    assert c.calls == 1


def test_measures_again_when_stale_and_carries_on_when_the_clob_is_down() -> None:
    c = Clocks()
    clock = make(c)
    clock()
    c.mono += 301
    assert clock() == T + 2_301.25 and c.calls == 2
    c.down = True
    c.mono += 400
    assert clock() == T + 2_701.25  # the last measurement, carried forward


def test_falls_back_to_the_local_clock_only_when_never_measured() -> None:
    c = Clocks()
    c.down = True
    clock = make(c)
    assert clock() == T + 1_000.0
    c.down = False
    c.mono += 31
    assert clock() == T + 2_031.25


def test_a_failed_measurement_is_not_retried_on_every_read() -> None:
    c = Clocks()
    c.down = True
    clock = make(c)
    clock()
    clock()
    assert c.calls == 1  # each ask may cost the adapter's whole retry deadline
    c.down = False
    c.mono += 31
    assert clock() == T + 2_031.25 and c.calls == 2


def test_a_whole_second_answer_is_taken_as_the_middle_of_its_second() -> None:
    clock = ClobClock(lambda: T + 2_000.0, monotonic=lambda: 0.0, local=lambda: 0.0)
    assert clock() == T + 2_000.5


def test_a_new_measurement_never_moves_the_clock_back() -> None:
    c = Clocks()
    clock = make(c)
    clock()
    c.mono += 299
    assert clock() == T + 2_299.25
    c.server -= 3  # the next measurement lands 3 s behind what was carried forward
    c.mono += 1
    assert clock() == T + 2_299.25  # held, not T + 2_297.25
    c.mono += 5
    assert clock() == T + 2_302.25  # the measured clock, once it has caught up


def test_a_local_clock_that_agrees_with_the_clob_keeps_its_precision() -> None:
    """Two workers on synchronised clocks must compute the same deadlines, not each its own
    half-second guess inside the CLOB's whole-second answer."""
    wall = {"t": 1_700_000_123.75}
    clock = ClobClock(lambda: 1_700_000_123.0, monotonic=lambda: 0.0, local=lambda: wall["t"])
    assert clock() == 1_700_000_123.75


# -- issue 22 item 3: one bad /time answer is a failed measurement, never a clock -----------------
import email.utils  # noqa: E402

import pytest  # noqa: E402

from rotator.clob.clock import AGREE, TimeCheck, unix_seconds  # noqa: E402

NOW = 1_764_612_536.0


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (NOW * 1000, "milliseconds?"),
        (NOW * 1_000_000, "not a Unix time in seconds"),
        (float("nan"), "answered nan, not a Unix time"),
        (float("inf"), "answered inf, not a Unix time"),
        (float("-inf"), "answered -inf, not a Unix time"),
        (10**400, "digits, not a Unix time"),
        (0, "not a Unix time in seconds"),
        (-NOW, "not a Unix time in seconds"),
        (True, "not a number"),
        ("1764612536", "not a number"),
        (None, "not a number"),
    ],
)
def test_an_answer_that_is_no_unix_time_in_seconds_is_refused(answer: object, why: str) -> None:
    with pytest.raises(ValueError, match="answered") as caught:
        unix_seconds(answer)
    assert why in str(caught.value)
    with pytest.raises(ValueError):
        TimeCheck().accept(answer, local=NOW)


def date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


def test_an_answer_is_taken_when_one_witness_vouches_for_it() -> None:
    mono = {"t": 0.0}
    check = TimeCheck(monotonic=lambda: mono["t"])
    # This host's clock an hour off: its own Date header vouches for the answer.
    assert check.accept(NOW, local=NOW - 3600, date=date(NOW)) == NOW
    # Later, no Date header: the last measurement carried forward vouches.
    mono["t"] += 300
    assert check.accept(NOW + 300, local=NOW - 3300) == NOW + 300
    # No Date header and no measurement yet: this host's clock.
    assert TimeCheck().accept(NOW + AGREE, local=NOW) == NOW + AGREE
    # A host that never set its clock (1970) and no other witness: nothing contradicts the answer.
    assert TimeCheck().accept(NOW, local=1_000.0) == NOW


@pytest.mark.parametrize("off", [86_400.0, -86_400.0, 3_600.0, AGREE + 2])
def test_an_answer_every_witness_contradicts_is_refused(off: float) -> None:
    mono = {"t": 0.0}
    check = TimeCheck(monotonic=lambda: mono["t"])
    assert check.accept(NOW, local=NOW, date=date(NOW)) == NOW
    mono["t"] += 300
    with pytest.raises(ValueError, match="not taken as the CLOB's time") as caught:
        check.accept(NOW + 300 + off, local=NOW + 300, date=date(NOW + 300))
    for witness in ("its Date header", "the last measurement", "this host's clock"):
        assert witness in str(caught.value)
    # ... and the refused answer is no witness for the next one.
    assert check.accept(NOW + 301, local=NOW + 301) == NOW + 301
    # A fresh worker: the Date header and this host's clock both contradict it.
    with pytest.raises(ValueError):
        TimeCheck().accept(NOW + off, local=NOW, date=date(NOW))


def test_an_unreadable_date_header_is_no_witness() -> None:
    with pytest.raises(ValueError):
        TimeCheck().accept(NOW + 86_400, local=NOW, date="yesterday, probably")
    assert TimeCheck().accept(NOW + 86_400, local=NOW, date=date(NOW + 86_400)) == NOW + 86_400


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), NOW * 1000])
def test_the_clob_clock_never_takes_a_bad_answer(bad: float) -> None:
    answers = [NOW + 0.25, bad]
    mono = {"t": 0.0}
    clock = ClobClock(lambda: answers[0], monotonic=lambda: mono["t"], local=lambda: 0.0)
    assert clock() == NOW + 0.25
    answers.pop(0)
    mono["t"] += 301
    assert clock() == NOW + 301.25  # the last measurement, carried forward
    assert clock.measured
    fresh = ClobClock(lambda: bad, monotonic=lambda: 0.0, local=lambda: NOW)
    assert fresh() == NOW and not fresh.measured  # this host's clock, a guess, said so
