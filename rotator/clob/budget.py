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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.config import Settings
    from rotator.stores.base import LeaseRecord

#: /auth/* requests one rotation cycle of one credential needs: create the new key, delete the old.
AUTH_REQUESTS_PER_CYCLE = 2
#: The same for a read-only or builder credential (issue 27): a listing before the create (what a
#: lost answer is found again against), the create, the DELETE, a listing that confirms it gone.
AUTH_REQUESTS_PER_LISTED_CYCLE = 4


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


class SettledBudget(SlidingWindowBudget):
    """A budget whose limit is settled by ``settle()`` just before its first request (a one-shot run's
    /auth/* share depends on whether a daemon leads the store: asked only by a run that needs it)."""

    def __init__(self, limit: int, window: float, settle: Callable[[], int]) -> None:
        super().__init__(limit, window)
        self._settle: Callable[[], int] | None = settle
        self._settling = threading.Lock()

    def acquire(self, deadline: float | None = None, cancel: threading.Event | None = None) -> Slot | None:
        if self._settle is not None:
            with self._settling:
                if self._settle is not None:
                    self.limit, self._settle = self._settle(), None
        return super().acquire(deadline, cancel)


#: A leader lease whose deadline passed less than this long ago (on this host's clock) still counts
#: as live here: another host's clock may be that far ahead, and the cost of the doubt is only that
#: a one-shot run paces itself at its smaller share for a minute after a daemon died.
LEADER_CLOCK_SLACK = 60.0


def daemon_auth_limit(settings: Settings) -> int:
    """The daemon's /auth/* requests per window: the worker's share less what it leaves a one-shot run."""
    auth = settings.clob.rate_limits.auth
    if auth.requests <= 0:
        return auth.requests
    return max(1, auth.requests - one_shot_auth_limit(settings))


def one_shot_auth_limit(settings: Settings) -> int:
    """A one-shot run's /auth/* requests per window while a daemon leads the store."""
    auth = settings.clob.rate_limits.auth
    return max(1, int(auth.requests * auth.one_shot_share)) if auth.requests > 0 else auth.requests


def one_shot_auth_budget(
    settings: Settings, leader: Callable[[], LeaseRecord | None], wall: Callable[[], float] = time.time
) -> SettledBudget:
    """The /auth/* budget of a one-shot run (rotate, revoke, retire, reap): the whole share, unless a
    daemon leads the store when the run first needs /auth/* (``leader()`` reads its lease), then the
    share the daemon leaves free, so together they keep to one share of the IP's budget (issue 22
    item 13). Two one-shot runs at once with no daemon (a CronJob run and a manual one) each take the
    whole share: docs/how-it-works.md says so, and ``rotator check`` too."""
    import logging

    from rotator.errors import RotatorError

    auth = settings.clob.rate_limits.auth

    def settle() -> int:
        if auth.requests <= 0:
            return auth.requests  # unlimited: nothing to split
        try:
            record = leader()
        except RotatorError as exc:
            # Cannot tell: the smaller share is the one that cannot overrun a daemon's.
            logging.getLogger("rotator.clob").warning(
                "cannot read the daemon's leader lease (%s): this run paces /auth/* at %d per %gs, the "
                "share it takes beside a daemon",
                exc,
                one_shot_auth_limit(settings),
                auth.per,
            )
            return one_shot_auth_limit(settings)
        if record is None or record.until + LEADER_CLOCK_SLACK <= wall():
            return auth.requests
        logging.getLogger("rotator.clob").info(
            "a daemon leads this store (%s): this run paces /auth/* at %d per %gs "
            "(clob.rate_limits.auth.one_shot_share) and leaves the daemon its %d",
            record.holder,
            one_shot_auth_limit(settings),
            auth.per,
            daemon_auth_limit(settings),
        )
        return one_shot_auth_limit(settings)

    return SettledBudget(auth.requests, auth.per, settle)


def probe_interval(settings: Settings) -> float:
    """Seconds between two checks of one credential's current key by the daemon.

    ``daemon.probe_every``, stretched so the fleet's probes stay within ``clob.probe.share`` of the
    probe endpoint's limit (the bots behind the same IP read it too).
    """
    probe = settings.clob.probe
    wanted = settings.daemon.probe_every
    if probe.requests <= 0:
        return wanted
    per_second = probe.requests * probe.share / probe.per
    return max(wanted, len(settings.credentials) / per_second)


#: /auth/* requests one wallet audit spends: the key list and the closed-only flag (issue 16), and
#: the lists of read-only and builder keys (issue 27).
AUTH_REQUESTS_PER_AUDIT = 4
#: The part of the worker's own /auth/* budget (clob.rate_limits.auth) that audits may take on
#: average, so rotations due meanwhile are not kept waiting behind them.
AUDIT_SHARE = 0.25


def audit_interval(settings: Settings) -> float:
    """Seconds between two audits of one credential by the daemon; 0 when audits are off.

    ``daemon.audit_every``, stretched so the fleet's audits take at most :data:`AUDIT_SHARE` of the
    worker's ``/auth/*`` budget, as :func:`probe_interval` stretches the key checks.
    """
    wanted = settings.daemon.audit_every
    auth = settings.clob.rate_limits.auth
    if wanted <= 0 or auth.requests <= 0:
        return wanted
    per_second = auth.requests * AUDIT_SHARE / auth.per
    # A read-only or builder credential's wallet is audited through its trading credential.
    wallets = sum(1 for c in settings.credentials if c.kind == "trading")
    return max(wanted, wallets * AUTH_REQUESTS_PER_AUDIT / per_second)


def one_shot_audits(settings: Settings) -> int:
    """How many credentials one ``rotate`` run audits at most (the stalest first): what
    :data:`AUDIT_SHARE` of one window of the worker's ``/auth/*`` budget allows, at least one."""
    auth = settings.clob.rate_limits.auth
    if auth.requests <= 0:
        return len(settings.credentials)
    return max(1, int(auth.requests * AUDIT_SHARE / AUTH_REQUESTS_PER_AUDIT))


def budget_report(settings: Settings) -> list[tuple[str, str]]:
    """What the fleet takes of the CLOB's per-IP budgets, as ``(level, line)`` for ``rotator check``."""
    from rotator.config import CLOB_AUTH_LIMIT as LIMIT
    from rotator.config import CLOB_AUTH_WINDOW as WINDOW

    n = len(settings.credentials)
    auth, probe = settings.clob.rate_limits.auth, settings.clob.probe
    if auth.requests <= 0:
        return [("warn", "clob.rate_limits.auth.requests is 0: the worker does not pace /auth/* at all")]
    share = (auth.requests / auth.per) / (LIMIT / WINDOW)
    ip = f"{LIMIT} per {WINDOW:g}s per IP"
    lines = [
        (
            "warn" if share > 0.8 else "ok",
            f"/auth/* budget: the worker takes up to {auth.requests} per {auth.per:g}s, {share:.0%} of the "
            f"CLOB's {ip}, which the bots behind the same IP share when they start",
        )
    ]
    if n:
        listed = sum(1 for c in settings.credentials if c.kind != "trading")
        cycle = AUTH_REQUESTS_PER_CYCLE * (n - listed) + AUTH_REQUESTS_PER_LISTED_CYCLE * listed
        pace = cycle / auth.requests * auth.per
        each = "create + delete each"
        if listed:
            each += ", and two listings for a read-only or builder one"
        lines.append(
            (
                "ok",
                f"a rotation cycle of the {n} credential(s) needs {cycle} /auth/* requests ({each}), "
                f"{cycle / LIMIT:.0%} of one {WINDOW:g}s window of the IP's budget; all due "
                f"at once, they take at least {pace:.0f}s at the worker's pace. An idle worker spends none.",
            )
        )
    lines.append(
        (
            "ok",
            f"/auth/* across processes: a daemon takes {daemon_auth_limit(settings)} per {auth.per:g}s and "
            f"leaves {one_shot_auth_limit(settings)} to a one-shot run (rotate, revoke, retire, reap) beside "
            "it; two one-shot runs at once with no daemon (a CronJob run and a manual one) take "
            f"{auth.requests} each: do not overlap them",
        )
    )
    if n and probe.requests > 0:
        every = probe_interval(settings)
        used = n / every * probe.per / probe.requests
        endpoint = probe.endpoint.partition("?")[0]
        lines.append(
            (
                "ok",
                f"key checks: the daemon checks each key every {every:.0f}s on GET {endpoint} (outside "
                f"/auth/*), {used:.1%} of its {probe.requests} per {probe.per:g}s; a one-shot run checks "
                "each key once",
            )
        )
    if n and settings.daemon.audit_every > 0:
        every = audit_interval(settings)
        lines.append(
            (
                "ok",
                f"wallet audits: the daemon audits each wallet every {every:.0f}s ({AUTH_REQUESTS_PER_AUDIT} "
                f"/auth/* requests each: the wallet's keys of every kind and the closed-only flag), at most "
                f"{AUDIT_SHARE:.0%} of the worker's /auth/* budget",
            )
        )
    return lines
