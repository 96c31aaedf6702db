"""What ``rotate --all`` prints while a fleet's passes run: each credential's line as its pass
finishes (a pipe, a CronJob's log: one line each, in finish order, nothing held back), and on a
terminal a progress line on stderr redrawn in place (done / total, failures so far, time left at
the pace so far). Results only, as ``_report`` writes them: never a secret.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rotator.logs import _isatty
from rotator.status import duration

#: Clear the terminal line the cursor is on, and go to its start.
CLEAR = "\r\x1b[K"


class FleetProgress:
    """Prints result lines as passes finish; on a terminal, keeps a progress line under them.

    ``finished`` is called once per credential, from any thread; ``tick`` redraws the progress
    line (the caller calls it about once a second so the time left counts down between results).
    A reader that went away (``rotate --all | head -1``) stops the lines, not the passes: the
    run goes on, and :meth:`close` raises :class:`BrokenPipeError` at the end.
    """

    def __init__(
        self,
        total: int,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: str = "rotate --all",
    ) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.failed = 0
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self.tty = _isatty(self._err) if tty is None else tty
        self._clock = clock
        self._started = clock()
        self._lock = threading.RLock()
        self._drawn = False  # the progress line is on the screen (no newline after it)
        self._out_gone = False

    def finished(self, line: str, ok: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += not ok
            self._clear()
            if not self._out_gone:
                try:
                    print(line, file=self._out, flush=True)
                except BrokenPipeError:
                    self._out_gone = True
            self._draw()

    def tick(self) -> None:
        with self._lock:
            self._draw()

    def text(self) -> str:
        """``rotate --all: 12/60 done, 1 failed, 4m10s left``; the time left at the pace so far."""
        elapsed = self._clock() - self._started
        head = f"{self.label}: {self.done}/{self.total} done, {self.failed} failed"
        if self.done >= self.total:
            return f"{head}, in {duration(elapsed)}"
        if self.done == 0:
            return f"{head}, {duration(elapsed)} so far"
        left = elapsed / self.done * (self.total - self.done)
        return f"{head}, {duration(left)} left"

    def close(self) -> None:
        """The last progress line stays, as a summary. :raises BrokenPipeError: stdout went away."""
        with self._lock:
            if self.tty:
                self._clear()
                print(self.text(), file=self._err, flush=True)
        if self._out_gone:
            raise BrokenPipeError

    @contextmanager
    def logs_above(self) -> Iterator[None]:
        """While it runs, log records on stderr first clear the progress line (redrawn at the next tick)."""
        if not self.tty:
            yield
            return
        handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is self._err
        ]
        wrapper = _Above(self)
        for h in handlers:
            h.setStream(wrapper)
        try:
            yield
        finally:
            for h in handlers:
                h.setStream(self._err)

    def _clear(self) -> None:
        if self._drawn:
            self._err.write(CLEAR)
            self._drawn = False

    def _draw(self) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self._err.write(CLEAR + self.text()[:width])
        self._err.flush()
        self._drawn = True


class _Above:
    """A stderr for log handlers that writes above the progress line."""

    def __init__(self, progress: FleetProgress) -> None:
        self._progress = progress

    def write(self, text: str) -> int:
        with self._progress._lock:
            self._progress._clear()
            return self._progress._err.write(text)

    def flush(self) -> None:
        self._progress._err.flush()
