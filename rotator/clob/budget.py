"""Client-side request budgets, so a fleet rotation paces itself instead of collecting 429s.

The CLOB limits ``/auth/*`` to N requests per sliding 10 s window (clob-auth.md §6). A token bucket
of the same N would allow 2N in the first window (a full bucket plus its refill), so this mirrors
the server instead: a sliding-window log that admits a request only when fewer than N were sent in
the last ``window`` seconds. One budget is shared by every credential of the process.

The server stamps a request when it arrives, which is some time after the client took its slot
(thread scheduling, a busy machine). So a slot is stamped again when its answer came back, a time
no earlier than the server's stamp, and a slot whose answer is still awaited counts as taken: the
log is then never behind the server's, however late a request arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Slot:
    """One admitted request: ``at`` is when it was admitted, then when its answer came back."""

    __slots__ = ("at", "done")

    def __init__(self, at: float) -> None:
        self.at = at
        self.done = False


class SlidingWindowBudget:
    """At most ``limit`` requests in any ``window`` seconds; ``limit <= 0`` means unlimited."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        # A little slack on top of the completion stamps, for clock granularity.
        self.window = window * (1 + margin) if limit > 0 else window
        self._slots: list[Slot] = []
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self, deadline: float | None = None, cancel: threading.Event | None = None) -> Slot | None:
        """Wait for a slot and take it. ``None`` (nothing taken) if ``deadline`` (monotonic) would pass
        or ``cancel`` is set (the worker is stopping: the wait ends at once).

        The caller hands the slot back to :meth:`complete` once the answer (or the failure) is in.
        """
        if self.limit <= 0:
            return Slot(self._clock())
        while True:
            if cancel is not None and cancel.is_set():
                return None
            with self._lock:
                now = self._clock()
                self._slots = [s for s in self._slots if not s.done or s.at > now - self.window]
                if len(self._slots) < self.limit:
                    slot = Slot(now)
                    self._slots.append(slot)
                    return slot
                finished = [s.at for s in self._slots if s.done]
                # All in flight: one of them finishing is the earliest a slot can free up.
                wait = min(finished) + self.window - now if finished else 0.01
            if deadline is not None and self._clock() + wait > deadline:
                return None
            if cancel is None:
                self._sleep(max(wait, 0.001))
            elif cancel.wait(max(wait, 0.001)):
                return None

    def complete(self, slot: Slot) -> None:
        """The request of ``slot`` got its answer (or failed): it counts from now."""
        with self._lock:
            slot.at = self._clock()
            slot.done = True

    def penalise(self, seconds: float) -> None:
        """The server said 429: treat the whole window as used for ``seconds`` from now."""
        if self.limit <= 0:
            return
        with self._lock:
            until = self._clock() + seconds - self.window
            while len(self._slots) < self.limit:
                self._slots.append(Slot(until))
            for s in self._slots:
                s.done = True
                s.at = max(s.at, until)
