"""Whether the probe endpoint's answers can be trusted to say anything about a key (DESIGN.md, the
shared /auth/* budget; issue 22 items 9 and 10).

A probe is an L2 read outside ``/auth/*``: a 200 is taken to mean "the CLOB accepts this key". That
holds only on a route that checks the five L2 headers. A route that checks none (the CLOB's root
``GET /``, ``GET /time``, a cache in front of the CLOB, a misconfigured endpoint) answers 200 to
anything, and a dead key would stay published. So a 200 counts once the route has refused a
deliberately wrong signature (401), once per process, and again after it changes behaviour: an
answer that is neither 200 nor 401 (a 404, a 400), a 200 of another shape than before, or an hour
since the last proof (a cache keeps the shape). A route that is missing (404/405) or unauthenticated
is left for a back-off (10 s doubling to 10 min), the checks meanwhile going through
``GET /auth/api-keys``; then the route is tried again, so an idle worker returns to 0 ``/auth/*``
requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

#: A route proven to check auth is proven again after this long (a cache in front of it keeps the
#: shape of its answers, so no change would show).
PROVE_EVERY = 3600.0
#: A route found missing or unauthenticated is tried again after this, doubling up to the cap.
RETRY_FIRST = 10.0
RETRY_CAP = 600.0

#: Why the route is not used for now.
Unusable = Literal["unserved", "unauthenticated"]


def answer_shape(answer: Any) -> str:
    """What a 200 looks like, without its values: a JSON object's sorted keys, else its JSON type."""
    if isinstance(answer, dict):
        return "object:" + ",".join(sorted(str(k) for k in answer))
    return type(answer).__name__


class ProbeRoute:
    """The probe route's standing: proven (with the shape of its 200s), unproven, or left until a
    deadline. Thread-safe; the adapter sends the requests, this only decides and remembers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: Serialises proofs: one wrong-signature request in flight, the other passes wait for its verdict.
        self.proving = threading.Lock()
        self._proven_at: float | None = None
        self._shape: str | None = None  # the shape of the 200s since the proof; None: none seen yet
        self._left_until = 0.0
        self._retry = RETRY_FIRST
        self._why: Unusable | None = None

    def usable(self) -> bool:
        """Whether to send this check to the route (not inside a back-off)."""
        with self._lock:
            return self._clock() >= self._left_until

    def vouches(self, shape: str) -> bool:
        """Whether a 200 of ``shape`` counts: the route was proven, recently enough, and answers as then."""
        with self._lock:
            if self._proven_at is None or self._clock() - self._proven_at >= PROVE_EVERY:
                return False
            if self._shape is None:
                self._shape = shape
            return shape == self._shape

    def proven(self, shape: str) -> bool:
        """The route refused a wrong signature: its 200s of ``shape`` count. Returns whether it was
        left before (unserved or unauthenticated), for the log."""
        with self._lock:
            self._proven_at, self._shape = self._clock(), shape
            was, self._why = self._why, None
            self._retry = RETRY_FIRST
            return was is not None

    def changed(self) -> None:
        """The route answered something that is neither 200 nor 401: prove it again before its next 200."""
        with self._lock:
            self._proven_at, self._shape = None, None

    def leave(self, why: Unusable) -> tuple[bool, float]:
        """Use ``GET /auth/api-keys`` instead for a while. Returns whether this is news (the route was
        in use, or left for another reason), and the seconds until it is tried again."""
        with self._lock:
            news = self._why != why
            after = RETRY_FIRST if news else self._retry
            self._left_until = self._clock() + after
            self._retry = min(after * 2, RETRY_CAP)
            self._why, self._proven_at, self._shape = why, None, None
            return news, after
