"""Leader election of daemon replicas: one lease record in the store, renewed by the one that works.

Several ``rotator run`` replicas on one store would each probe and rotate every credential, and
together spend the CLOB's per-IP ``/auth/*`` budget that the bots need. They elect one active
worker instead: the holder of the :data:`~rotator.stores.base.LEADER` lease record, written with
the store's own compare-and-set. The leader renews it every ``renew`` seconds.

No replica compares another machine's clock with its own (issue 22). A standby judges the record by
whether it *changed*: it remembers the record as last seen (holder, deadline, store version) and
the instant, on its own monotonic clock, when it first saw it so; a record unchanged for ``lease``
seconds belongs to a holder that stopped renewing, and is taken over. A released record (graceful
stop) is vacant at once, and so is one whose holder provably died on this host. The wall-clock
``until`` the holder writes is for people (and for replicas of older versions during an upgrade);
it decides nothing here. The holder judges its own lease on its monotonic clock too: valid until
``lease`` seconds after the *start* of its last successful renewal, so it has stopped before any
standby (which first saw that renewal after it started) can count a whole lease of silence.

The lease keeps the fleet's CLOB spend at one worker's; it is not what keeps rotations safe. At
most one rotation per credential is in flight because of the per-credential pending lease and the
state's compare-and-set (I4), which also guard CronJob runs and manual ``rotate``, which take no
leader lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rotator.errors import RotatorError, VersionConflict
from rotator.lease import owner_alive, this_owner
from rotator.stores.base import LEADER, LeaseRecord, Store

if TYPE_CHECKING:
    from prometheus_client import Gauge

log = logging.getLogger("rotator.leader")


class LeaderElector:
    """Decides whether this process is the active replica. ``step()`` once per ``renew`` seconds.

    Thread-safe: ``step`` and ``release`` run on one thread (see :meth:`start`); ``is_leader`` and
    ``problem`` may be read from any.
    """

    def __init__(
        self,
        store: Store,
        *,
        lease: float,
        renew: float,
        holder: str | None = None,
        alive: Callable[[str], bool] = owner_alive,
        gauge: Gauge | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.lease = lease
        self.renew = renew
        self.holder = holder or this_owner()
        self._alive = alive
        self._wall = wall
        self._mono = monotonic
        self._lock = threading.Lock()
        self._record: LeaseRecord | None = None  # the record as we last wrote it, while we hold it
        self._valid_until: float | None = None  # monotonic deadline of our lease; None: standby
        # A standby's view of the holder's record: what it was, and when (monotonic) it was first
        # seen that way. Unchanged for ``lease`` seconds: its holder stopped renewing.
        self._seen: tuple[str, float, object] | None = None
        self._seen_at = 0.0
        self._was_leader = False
        #: Why the last step could not talk to the store (None: it could), for readiness.
        self.problem: str | None = "the leader lease was not read yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if gauge is not None:
            # Read at scrape time, so a lease that ran out while a renewal hangs shows at once.
            gauge.set_function(lambda: 1.0 if self.is_leader else 0.0)

    @property
    def is_leader(self) -> bool:
        with self._lock:
            until = self._valid_until
        return until is not None and self._mono() < until

    def step(self) -> bool:
        """Renew the lease if held, take it if vacant or silent for a lease, else stay standby.
        Returns ``is_leader``."""
        # Our deadline counts from before the store call: a slow renewal must not stretch it past
        # the lease a standby counts from the moment it first sees the record (after it was written).
        started = self._mono()
        # For people and older replicas; it decides nothing here. Always a new value, so that every
        # renewal changes the record (on AWS only this tag changes), whatever the wall clock does.
        with self._lock:
            previous = self._record.until if self._record is not None else 0.0
        until = max(self._wall() + self.lease, previous + 0.001)
        try:
            current = self._store.load_lease(LEADER)
            if current is None:
                won: LeaseRecord | None = self._store.save_lease(LEADER, self.holder, until, None)
            elif current.holder == self.holder or self._vacant(current):
                won = self._store.save_lease(LEADER, self.holder, until, current)
            else:
                won = None  # another replica holds a live lease
            self.problem = None
        except VersionConflict:
            won = None  # another replica renewed or took it between our read and our write
            self.problem = None
        except RotatorError as exc:
            won = None  # a renewal that fails: stop working at once, the lease may lapse meanwhile
            self.problem = str(exc)
            log.warning("leader lease: store unavailable (%s)", exc)
        with self._lock:
            self._record = won
            self._valid_until = started + self.lease if won is not None else None
        if won is not None:
            self._seen = None
        self._observe()
        return won is not None

    def _vacant(self, record: LeaseRecord) -> bool:
        """Whether another holder's ``record`` may be taken over now: released, its holder provably
        dead on this host (a restarted container need not wait out its previous life's lease), or
        unchanged for a whole lease on this replica's own monotonic clock."""
        if not record.holder or record.until <= 0.0:
            return True  # released (graceful stop) or deleted by hand
        if not self._alive(record.holder):
            return True
        # Taken after the read returned: the record was written before that, and its holder's
        # deadline counts from before it wrote, so ours comes later than its own.
        now = self._mono()
        seen = (record.holder, record.until, record.version)
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
            return False
        return now - self._seen_at >= self.lease

    def next_step_in(self) -> float:
        """Seconds until the next :meth:`step`: ``renew``, or sooner when a standby's count of the
        holder's silence ends before that (failover within lease + renew of the last renewal seen)."""
        if self._seen is None or self.is_leader:
            return self.renew
        left = self._seen_at + self.lease - self._mono()
        return min(self.renew, max(left, 0.01))

    def _observe(self) -> None:
        leader = self.is_leader
        if leader != self._was_leader:
            if leader:
                log.info("leader lease: taken; this replica runs the passes (lease %gs)", self.lease)
            else:
                log.warning("leader lease: not held; this replica stands by")
            self._was_leader = leader

    def release(self) -> None:
        """Give the lease up (graceful stop), so a standby takes over at its next step. Best effort."""
        with self._lock:
            record, self._record, self._valid_until = self._record, None, None
        # A graceful stop is not a failover: no "stands by" warning, the release below is said at info.
        self._was_leader = False
        if record is None:
            return
        try:
            self._store.save_lease(LEADER, self.holder, 0.0, record)
            log.info("leader lease: released")
        except RotatorError as exc:
            log.info("leader lease: not released (%s); it lapses in at most %gs", exc, self.lease)

    # -- the background thread ------------------------------------------------------------------

    def start(self) -> None:
        """Step now, then every ``renew`` seconds on a thread of its own (passes never delay it)."""
        self.step()
        self._thread = threading.Thread(target=self._run, name="rotator-leader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.next_step_in()):
            try:
                self.step()
            except Exception:  # a bug must not end elections silently: log, stand by, go on
                log.exception("leader lease: step failed")
                with self._lock:
                    self._record, self._valid_until = None, None
                self._seen = None
                self._observe()

    def stop(self) -> None:
        """Stop renewing and release the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease)
        self.release()
