"""The CLOB's clock, for every deadline the rotation computes (DESIGN.md "Time").

Grace deadlines, leases and key ages are written into the shared state and compared by other
workers, so they must not depend on any one machine's clock. The CLOB's answer to ``GET /time`` is
carried forward on the monotonic clock, which a wall-clock jump (NTP step, VM resume, an operator's
``date -s``) does not move, and measured again every ``refresh_every`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rotator.errors import Blocked, ClobError

log = logging.getLogger("rotator.clob")


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

    def refresh(self) -> None:
        """Ask the CLOB for its time now. :raises ClobError: when it cannot answer."""
        before, local_before = self._monotonic(), self._local()
        server = self._server_time()
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
