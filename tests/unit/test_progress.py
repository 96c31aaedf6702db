"""rotator.progress on in-memory streams and a fake clock: the time left at the pace so far, the line
redrawn in place on a terminal and nowhere else, a reader that went away."""

from __future__ import annotations

import io

import pytest

from rotator.progress import CLEAR, FleetProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_left_at_the_current_pace() -> None:
    clock = Clock()
    p = FleetProgress(60, out=io.StringIO(), err=io.StringIO(), tty=True, clock=clock)
    assert p.text() == "rotate --all: 0/60 done, 0 failed, 0s so far"
    clock.now += 30
    for i in range(12):
        p.finished(f"mm{i}: rotated", ok=i != 3)
    assert p.text() == "rotate --all: 12/60 done, 1 failed, 2m00s left"  # 30 s for 12: 2m for 48
    for i in range(12, 60):
        p.finished(f"mm{i}: rotated", ok=True)
    clock.now += 120
    assert p.text() == "rotate --all: 60/60 done, 1 failed, in 2m30s"


def test_terminal_redraws_one_line_and_keeps_results_on_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    p = FleetProgress(2, out=out, err=err, tty=True, clock=Clock())
    p.tick()
    p.finished("mm0: rotated key=0190…ab12", ok=True)
    p.finished("mm1: failed error=(issue) boom", ok=False)
    p.close()
    assert out.getvalue() == "mm0: rotated key=0190…ab12\nmm1: failed error=(issue) boom\n"
    assert err.getvalue().count("\n") == 1  # only the summary ends a line: the rest is redrawn
    assert err.getvalue().endswith(CLEAR + "rotate --all: 2/2 done, 1 failed, in 0s\n")


def test_a_pipe_gets_the_lines_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    p = FleetProgress(1, out=out, err=err, tty=False)
    p.tick()
    p.finished("mm0: nothing-due", ok=True)
    p.close()
    assert out.getvalue() == "mm0: nothing-due\n" and err.getvalue() == ""


class Gone(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_a_reader_that_went_away_stops_the_lines_not_the_run() -> None:
    p = FleetProgress(2, out=Gone(), err=io.StringIO(), tty=False)
    p.finished("mm0: rotated", ok=True)
    p.finished("mm1: rotated", ok=True)  # no second raise: the run goes on
    assert p.done == 2
    with pytest.raises(BrokenPipeError):
        p.close()
