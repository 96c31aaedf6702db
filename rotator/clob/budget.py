"""Client-side request budgets, so a fleet rotation paces itself instead of collecting 429s.

The CLOB limits ``/auth/*`` to N requests per sliding 10 s window (clob-auth.md §6). A token bucket
of the same N would allow 2N in the first window (a full bucket plus its refill), so this mirrors
the server instead: a sliding-window log that admits a request only when fewer than N were sent in
the last ``window`` seconds. One budget is shared by every credential of the process.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable


class SlidingWindowBudget:
    """At most ``limit`` acquisitions in any ``window`` seconds; ``limit <= 0`` means unlimited."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        # The server's window starts when it sees the request, a little after we send it: keep a
        # margin so a request admitted here is never early there.
        self.window = window * (1 + margin) if limit > 0 else window
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a slot. Returns False (without taking one) if ``deadline`` (monotonic) would pass."""
        if self.limit <= 0:
            return True
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return True
                wait = self._sent[0] + self.window - now
            if deadline is not None and self._clock() + wait > deadline:
                return False
            self._sleep(max(wait, 0.001))

    def penalise(self, seconds: float) -> None:
        """The server said 429: treat the whole window as used for ``seconds`` from now."""
        if self.limit <= 0:
            return
        with self._lock:
            until = self._clock() + seconds - self.window
            self._sent = collections.deque(max(t, until) for t in self._sent)
            while len(self._sent) < self.limit:
                self._sent.append(until)
            self._sent = collections.deque(sorted(self._sent))
