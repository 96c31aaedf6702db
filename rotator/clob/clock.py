"""The CLOB's clock, for every deadline the rotation computes (DESIGN.md "Time").

Grace deadlines, leases and key ages are written into the shared state and compared by other
workers, so they must not depend on any one machine's clock. The CLOB's answer to ``GET /time`` is
carried forward on the monotonic clock, which a wall-clock jump (NTP step, VM resume, an operator's
``date -s``) does not move, and measured again every ``refresh_every`` seconds.

One answer is not trusted on its own word (issue 22): a deadline computed from a ``/time`` in
milliseconds lands in the year 58,900, one from an answer a day ahead keeps a lease for a day.
:class:`TimeCheck` takes an answer as the CLOB's clock only when it is a finite Unix time in seconds
and another witness vouches for it; anything else is a failed measurement, like no answer at all.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable

from rotator.errors import Blocked, ClobError, Transient

log = logging.getLogger("rotator.clob")

#: A /time answer outside [2020, 2100) is no Unix time in seconds: milliseconds are 1000x larger.
EARLIEST = 1_577_836_800.0  # 2020-01-01T00:00:00Z
LATEST = 4_102_444_800.0  # 2100-01-01T00:00:00Z
#: How close a /time answer must come to one witness: the answer's own ``Date`` header, the last
#: accepted measurement carried forward, or this host's clock. The CLOB answers whole seconds and a
#: request may take ``clob.timeout``; a minute leaves room for both and still catches an answer in
#: the wrong unit, time zone or day. Not a setting: no honest clock needs more.
AGREE = 60.0


def _span(seconds: float) -> str:
    left = abs(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if left >= size:
            return f"{left / size:.1f}{unit}"
    return f"{left:.0f}s"


def unix_seconds(answer: object) -> float:
    """``answer`` as Unix seconds. :raises ValueError: (one line) when it is none: not a number,
    not finite (JSON's ``NaN``/``Infinity``), or outside [2020, 2100) (milliseconds, say)."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise ValueError(f"answered {str(answer)[:40]!r}, not a number")
    try:
        seconds = float(answer)
    except OverflowError:
        raise ValueError(f"answered a number of {len(str(answer))} digits, not a Unix time") from None
    if not EARLIEST <= seconds < LATEST:  # NaN and the infinities fail it too
        unit = " (milliseconds?)" if EARLIEST * 1000 <= seconds < LATEST * 1000 else ""
        raise ValueError(f"answered {seconds:.0f}, not a Unix time in seconds between 2020 and 2100{unit}")
    return seconds


class TimeCheck:
    """Decides whether a ``/time`` answer is the CLOB's clock. Thread-safe.

    Taken when it lies within :data:`AGREE` of at least one witness: the ``Date`` header of the same
    answer (from the CLOB's web front, a clock of its own), the last answer taken, carried forward on
    this host's monotonic clock, or this host's wall clock. A host whose clock is far off is vouched
    for by the ``Date`` header and by its own last measurement, so it still runs on the CLOB's
    clock; an answer that contradicts every witness is a failed measurement, which writes no deadline.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (answer taken, monotonic instant)

    def accept(self, answer: object, *, local: float, date: str | None = None) -> float:
        """The answer as Unix seconds, once a witness vouches for it. ``local``: this host's clock
        during the request; ``date``: the answer's ``Date`` header, if any.

        :raises ValueError: one line saying why the answer is not taken.
        """
        seconds = unix_seconds(answer)
        mono = self._monotonic()
        with self._lock:
            last = self._last
        witnesses: list[tuple[str, float]] = []
        header = _http_date(date)
        if header is not None:
            witnesses.append(("its Date header", header))
        if last is not None:
            witnesses.append(("the last measurement", last[0] + (mono - last[1])))
        if EARLIEST <= local < LATEST:  # a host that never set its clock (1970) vouches for nothing
            witnesses.append(("this host's clock", local))
        if witnesses and not any(abs(seconds - at) <= AGREE for _, at in witnesses):
            off = ", ".join(
                f"{_span(seconds - at)} {'ahead of' if seconds > at else 'behind'} {name}"
                for name, at in witnesses
            )
            raise ValueError(f"answered {seconds:.0f}, {off}: not taken as the CLOB's time")
        with self._lock:
            self._last = (seconds, mono)
        return seconds


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    stamp = parsed.timestamp()
    return stamp if EARLIEST <= stamp < LATEST else None


class ClobClock:
    """Unix seconds on the CLOB's clock. Callable, so it fits ``Rotator(clock=...)``."""

    def __init__(
        self,
        server_time: Callable[[], float],
        *,
        refresh_every: float = 300.0,
        retry_after: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        local: Callable[[], float] = time.time,
    ) -> None:
        self._server_time = server_time
        self._refresh_every = refresh_every
        self._monotonic = monotonic
        self._local = local
        self._lock = threading.Lock()
        self._anchor: tuple[float, float] | None = None  # (CLOB time, monotonic time) at one instant
        # After a failed measurement, ask again only after this long: each ask may spend the
        # adapter's whole retry deadline, and a pass reads the clock several times.
        self._retry_after = retry_after
        self._failed_at: float | None = None
        self._last = float("-inf")

    @property
    def measured(self) -> bool:
        """Whether the CLOB's clock was ever measured (else this is the local clock, a guess)."""
        with self._lock:
            return self._anchor is not None

    def refresh(self) -> None:
        """Ask the CLOB for its time now. :raises ClobError: when it cannot answer."""
        before, local_before = self._monotonic(), self._local()
        try:
            # The adapter checks its answers (TimeCheck); any other source gets the unit check here.
            server = unix_seconds(self._server_time())
        except ValueError as exc:
            raise Transient(f"GET /time: {exc}", endpoint="/time") from None
        after, local_after = self._monotonic(), self._local()
        # The CLOB answers whole seconds, truncated, at some instant of the round trip: its clock
        # read between server - local_after and server + 1 - local_before seconds off ours.
        width = 1.0 if server.is_integer() else 0.0
        if server - local_after <= 0.0 <= server + width - local_before:
            # Our clock agrees within what the answer can tell: keep its sub-second precision
            # (workers on synchronised clocks then compute identical deadlines).
            estimate = (local_before + local_after) / 2
        else:
            estimate = server + width / 2
        with self._lock:
            self._anchor = (estimate, (before + after) / 2)

    def __call__(self) -> float:
        with self._lock:
            anchor = self._anchor
        mono = self._monotonic()
        stale = anchor is None or mono - anchor[1] >= self._refresh_every
        backing_off = self._failed_at is not None and mono - self._failed_at < self._retry_after
        if stale and backing_off:
            return self._local() if anchor is None else self._forward(anchor[0] + (mono - anchor[1]))
        if stale:
            try:
                self.refresh()
                self._failed_at = None
            except (ClobError, Blocked) as exc:  # a blocked edge: the next request says so
                self._failed_at = self._monotonic()
                if anchor is None:
                    # Never measured: the local clock is all there is. A CLOB that cannot answer
                    # /time will not answer the DELETE or create either, so no deadline passes
                    # on this guess alone; failing the pass here would fail passes that are fine.
                    log.warning("CLOB time unavailable, using the local clock for now: %s", exc)
                    return self._local()
                log.warning("CLOB time unavailable, carrying the last measurement forward: %s", exc)
            with self._lock:
                anchor = self._anchor
        assert anchor is not None
        server, at = anchor
        return self._forward(server + (self._monotonic() - at))

    def _forward(self, now: float) -> float:
        # A new measurement may land a little behind the last reading; deadlines computed from
        # successive readings must never see time run backwards.
        with self._lock:
            self._last = max(self._last, now)
            return self._last
