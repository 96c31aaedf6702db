"""The rotation protocol (DESIGN.md, steps 1-7) over a Store and the CLOB auth port.

Deciding what a credential needs is pure (:func:`rotation_reason`, :func:`due_revocations`);
executing a step is a small method over the injected ports, and every step is idempotent, so a
crash anywhere is repaired by running the pass again. Every write is a compare-and-set on the
state version read at the start of the pass: losing one means another worker moved first, and
this pass stops without touching anything.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from rotator.clob.base import ClobAuth
from rotator.errors import (
    Cancelled,
    ClobError,
    RateLimited,
    Rejected,
    RotationError,
    RotatorError,
    Transient,
    Unauthorized,
    VersionConflict,
)
from rotator.lease import owner_alive, this_owner
from rotator.metrics import Metrics
from rotator.model import (
    Ack,
    CredentialRef,
    CredentialState,
    Event,
    Key,
    Outcome,
    PassResult,
    Pending,
    Retiring,
    Step,
    ack_prefix,
)
from rotator.signers.base import Signer
from rotator.stores.base import Store, Version

T = TypeVar("T")

log = logging.getLogger("rotator.rotation")
audit = logging.getLogger("rotator.audit")

#: How many taken nonces a bootstrap walks past before it gives up.
MAX_NONCE_WALK = 64
#: A lost state's recovery looks this many nonces below the published key for keys still live.
RECOVER_BELOW = 4
#: A key that refuses its own DELETE but still exists (propagating) is tried again after this.
RECHECK_LIVE_KEY = 15.0
#: The same, when no signer can confirm it is gone (a credential removed from the config).
RECHECK_WITHOUT_SIGNER = 600.0
#: A credential whose last read of acknowledgements showed no live consumer has its refusal reports
#: read again after this long rather than every pass (a new consumer is heard within it)...
REPORTS_WITHOUT_CONSUMERS = 60.0
#: ...once this worker has watched it this long: bots started with the daemon (a deploy) may not
#: have acknowledged at its first passes, and a key refused then is replaced within a tick.
REPORTS_COLD_START = 120.0
#: A key the CLOB accepted although consumers reported it refused gets another probe on a later
#: report (a newer refusal, another consumer), at most this often: a faulty or hostile bot can make
#: the worker neither probe in a loop nor ignore the key's real death.
REPORT_PROBE_EVERY = 30.0


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-credential timing and bootstrap choices. What an operator configures has its default in
    ``config.py`` only (``Runtime.policy`` fills it in); what follows has no setting."""

    rotate_every: float
    grace: float
    verify_timeout: float
    # Consumer-confirmed revocation: a retired key goes once min_grace has passed and every
    # consumer seen (acknowledging) within consumer_ttl holds the current key; at grace at the latest.
    min_grace: float
    consumer_ttl: float
    verify_backoff: float = 1.0
    verify_backoff_cap: float = 15.0
    lease_margin: float = 120.0
    adopt_existing: bool = False
    start_nonce: int = 0
    # How often a nothing-due pass checks that the current key still works (an L2 read outside
    # /auth/*): 0 on every pass (one-shot runs), the daemon's stretched probe_every otherwise.
    probe_every: float = 0.0

    @property
    def lease(self) -> float:
        return self.verify_timeout + self.lease_margin


#: Audit outcomes that log at warning: a step that failed or could not tell, with the pass going on.
WARN: dict[Event, int] = {
    outcome: logging.WARNING
    for outcome in (
        "failed",
        "abandoned",
        "unknown",
        "rejected",
        "still-live-after-delete",
        "forced",
        "other-wallet",
        "nonce-taken",
        "unproven-key-left",
    )
}


def _age(seconds: float) -> str:
    """``24h3m``, ``3m20s``, ``45s``: a key's age for people, to its two largest units (hours at most,
    as ``rotate_every`` is usually given)."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts[:2])


def _some(names: Sequence[str], shown: int = 5) -> str:
    """``a, b, c and 197 more``: a list for a log line that stays one line."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


# -- pure decisions --------------------------------------------------------------------------------
def rotation_reason(
    state: CredentialState, now: float, policy: Policy, force_nonce: int | None = None
) -> str | None:
    """Why the credential needs a new key now, or None.

    ``force_nonce``: the nonce of the key that was current when a forced (or emergency) pass read
    the state; that key, and only that one, is replaced whatever its age. Identity, not time: its
    ``created_at`` was stamped by whichever worker made it, on that worker's clock.
    """
    if state.current is None:
        return "bootstrap"
    if force_nonce is not None and state.current.nonce == force_nonce:
        return "forced"
    if now - state.current.created_at >= policy.rotate_every:
        return "due"
    return None


def lagging_consumers(
    state: CredentialState, now: float, acks: Sequence[Ack] | None, policy: Policy
) -> list[Ack]:
    """Consumers seen within ``consumer_ttl`` whose last acknowledged key is not the current one."""
    current = ack_prefix(state.current.api_key) if state.current is not None else None
    return [a for a in acks or () if now - a.at <= policy.consumer_ttl and a.key_prefix != current]


def due_revocations(
    state: CredentialState, now: float, acks: Sequence[Ack] | None = None, policy: Policy | None = None
) -> list[Retiring]:
    """The retiring keys to revoke now: those past ``revoke_after`` (the end of grace), and, given the
    consumers' acknowledgements (``None``: unknown), keys retired by a rotation at least ``min_grace``
    ago once every consumer seen within ``consumer_ttl`` holds the current key. Nobody seen means
    nobody can confirm (bots may read through Vault Agent or a file): then the timer alone decides."""
    early: float | None = None
    if acks is not None and policy is not None and state.current is not None:
        seen = any(now - a.at <= policy.consumer_ttl for a in acks)
        if seen and not lagging_consumers(state, now, acks, policy):
            early = policy.min_grace
    return [
        r
        for r in state.retiring
        if now >= r.revoke_after
        or (early is not None and r.reason == "rotated" and now >= r.retired_at + early)
    ]


def would_revoke(entry: Retiring, now: float, emergency: bool = False) -> str:
    """A dry run's line for a due revocation: ``would-revoke nonce 6 (grace over)``."""
    if emergency:
        why = "emergency"
    elif now < entry.revoke_after:
        why = "consumers confirmed"
    else:
        why = "grace over" if entry.reason in ("rotated", "recovered") else entry.reason
    return f"would-revoke nonce {entry.key.nonce} ({why})"


def lease_blocked(pending: Pending, now: float, me: str, alive: Callable[[str], bool]) -> bool:
    """True when another live worker holds the rotation in flight."""
    return pending.owner != me and now < pending.lease_until and alive(pending.owner)


@dataclass(frozen=True, slots=True)
class _Disputed:
    """A key consumers reported refused and the CLOB accepted: when, and which reports (consumer,
    first refusal) that probe answered."""

    api_key: str
    at: float
    answered: frozenset[tuple[str, float | None]]


# -- execution -------------------------------------------------------------------------------------
class _Stopped(Exception):
    """Internal: the worker may not start another step (SIGTERM, or a replica lost the leader lease)."""


class _Conflict(Exception):
    """Internal: a compare-and-set was lost; the pass stops."""


class _Ctx:
    """One pass's working state. :meth:`begin` names the step under way and starts its clock: a
    failure, a lost race or a stop is reported at that step, with that step's ``duration``."""

    __slots__ = (
        "_step",
        "_timer",
        "acks",
        "invalidated",
        "ref",
        "revoked",
        "signer",
        "state",
        "step_started",
        "version",
    )

    def __init__(
        self,
        ref: CredentialRef,
        state: CredentialState,
        version: Version | None,
        signer: Callable[[], Signer] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ref, self.state, self.version, self.signer = ref, state, version, signer
        self.revoked = 0
        self.invalidated = 0
        self.acks: list[Ack] | None = None  # this pass's read of the acknowledgements, if it made one
        self._timer = timer
        self._step: Step = "read"
        self.step_started = timer()

    @property
    def step(self) -> Step:
        return self._step

    def begin(self, step: Step) -> None:
        self._step = step
        self.step_started = self._timer()


class Rotator:
    """Runs passes over credentials. Thread-safe across credentials; one pass per credential at a time."""

    def __init__(
        self,
        store: Store,
        clob: ClobAuth,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        owner: str | None = None,
        alive: Callable[[str], bool] = owner_alive,
        stopping: Callable[[], bool] = lambda: False,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clob = clob
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.sleep = sleep
        self.owner = owner or this_owner()
        self.alive = alive
        # credential -> (api key last known to work, when it was last checked)
        self._checked: dict[str, tuple[str, float]] = {}
        # Consumers' refusal reports (issue 18). credential -> the last report-made probe the CLOB
        # answered by accepting the key: later reports about that key need to be new, and wait.
        self._report_probed: dict[str, _Disputed] = {}
        # credential -> (refused api key, earliest refused_at reported): a recovery under way.
        self._recovering: dict[str, tuple[str, float]] = {}
        # credential -> clock time before which its reports are not read (no live consumer seen).
        self._reports_quiet_until: dict[str, float] = {}
        # credential -> clock time this worker first read its reports (the cold start's beginning).
        self._reports_watched: dict[str, float] = {}
        # True once the worker may start no new step: SIGTERM, or a replica that lost the leader lease.
        self.stopping = stopping
        self.timer = timer  # durations only (audit, metrics): never a deadline

    # -- store access with metrics ----------------------------------------------------------------
    def _save(self, ctx: _Ctx, state: CredentialState) -> None:
        try:
            ctx.version = self.store.save(ctx.ref, state, ctx.version)
        except VersionConflict:
            self._store_metric("save", "conflict")
            raise _Conflict() from None
        except RotatorError:
            self._store_metric("save", "failure")
            raise
        self._store_metric("save", "success")
        ctx.state = state

    def store_call(self, op: str, call: Callable[[], T]) -> T:
        """``call()``, a store operation, counted in ``rotator_store_operations_total`` as ``op``."""
        try:
            result = call()
        except RotatorError:
            self._store_metric(op, "failure")
            raise
        self._store_metric(op, "success")
        return result

    def _store_metric(self, op: str, result: str) -> None:
        self.metrics.store_operations.labels(backend=self.store.backend, operation=op, result=result).inc()

    def _event(
        self,
        ctx: _Ctx,
        step: Step,
        outcome: Event,
        started: float,
        *,
        level: int | None = None,
        **fields: object,
    ) -> None:
        """One audit event. ``level``: info unless the outcome is one that needs a look (:data:`WARN`);
        a failed pass is logged at error."""
        audit.log(
            level if level is not None else WARN.get(outcome, logging.INFO),
            "%s %s %s",
            ctx.ref.name,
            step,
            outcome,
            extra={
                "credential": ctx.ref.name,
                "step": step,
                "outcome": outcome,
                "duration": self._since(started),
                **fields,
            },
        )

    def _since(self, started: float) -> float:
        return round(self.timer() - started, 4)

    # -- the pass -----------------------------------------------------------------------------------
    def run_pass(
        self,
        ref: CredentialRef,
        signer: Callable[[], Signer],
        policy: Policy,
        *,
        force: bool = False,
        emergency: bool = False,
        dry_run: bool = False,
    ) -> PassResult:
        """One pass over one credential (DESIGN.md steps 1-7). Never raises a RotatorError."""
        t0 = self.timer()
        self.metrics.set_policy(ref.name, policy.rotate_every, policy.grace)
        ctx = _Ctx(ref, CredentialState(), None, signer=signer, timer=self.timer)
        try:
            force_nonce = self._read(ctx, force or emergency)
            now = self.clock()
            pending = ctx.state.pending
            if pending is not None and lease_blocked(pending, now, self.owner, self.alive):
                self._event(ctx, "read", "in-flight-elsewhere", t0, nonce=pending.nonce)
                return self._finish(ctx, "in-flight-elsewhere", t0)
            if dry_run:
                return self._dry_run(ctx, policy, now, force_nonce, emergency, t0)
            self._reconcile_publish(ctx)
            self._revoke_due(ctx, policy, now, emergency)
            if ctx.state.pending is not None:
                self._resume(ctx, signer, policy, emergency)
                self._recovered(ctx)  # a rotation a report started may end in a later pass
                rotated = True
            else:
                rotated = self._rotate_if_due(ctx, signer, policy, now, force_nonce, emergency)
        except _Conflict:
            self._event(ctx, ctx.step, "lost-race", ctx.step_started, pass_duration=self._since(t0))
            return self._finish(ctx, "lost-race", t0)
        except (_Stopped, Cancelled):
            # SIGTERM, or a replica that lost the leader lease: not a failure. What was done is
            # recorded; a rotation cut short stays pending and the next pass (or replica) resumes it.
            self._event(ctx, ctx.step, "stopped", ctx.step_started, pass_duration=self._since(t0))
            return self._finish(ctx, "stopped", t0)
        except RotatorError as exc:
            return self._failed(ctx, exc, t0)
        if rotated:
            self.metrics.rotations.labels(credential=ref.name, result="success").inc()
            return self._finish(ctx, "rotated", t0)
        return self._finish(ctx, "revoked" if ctx.revoked else "nothing-due", t0)

    def _read(self, ctx: _Ctx, forced: bool) -> int | None:
        """Step 1: the state and its version. Returns the nonce of the key a forced (or emergency)
        pass replaces: the one current at this read, by identity (DESIGN.md step 4)."""
        ctx.begin("read")
        snap = self.store_call("load", lambda: self.store.load(ctx.ref))
        ctx.state, ctx.version = snap.state, snap.version
        current = snap.state.current
        return current.nonce if forced and current is not None else None

    def _revoke_due(self, ctx: _Ctx, policy: Policy, now: float, emergency: bool) -> None:
        """Step 2: revoke the retiring keys whose grace is over, or whose consumers all moved on;
        every retiring key at once in an emergency."""
        ctx.begin("revoke")
        if emergency:
            retiring = tuple(replace(r, revoke_after=now, reason="emergency") for r in ctx.state.retiring)
            self._save(ctx, replace(ctx.state, retiring=retiring))
        acks = self._acks(ctx, now, policy)
        due = due_revocations(ctx.state, now, acks, policy)
        if due:
            self._ensure_published_is_current(ctx)
        for entry in due:
            self._may_start(ctx, "revoke")
            late = now >= entry.revoke_after and entry.reason == "rotated"
            self._revoke(ctx, entry, lagging_consumers(ctx.state, now, acks, policy) if late else [])

    def _resume(self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy, emergency: bool) -> None:
        """Step 3: finish the rotation a crashed (or dead) worker left in flight."""
        ctx.begin("resume")
        self._may_start(ctx, "resume")
        self._take_lease(ctx, policy)
        self._complete(ctx, signer, policy, emergency)

    def _rotate_if_due(
        self,
        ctx: _Ctx,
        signer: Callable[[], Signer],
        policy: Policy,
        now: float,
        force_nonce: int | None,
        emergency: bool,
    ) -> bool:
        """Steps 4-7 when a new key is due (by age, forced, or the current key is rejected)."""
        reason = rotation_reason(ctx.state, now, policy, force_nonce)
        reports = self._refusal_reported(ctx, policy) if reason is None else []
        if not reports:
            self._recovering.pop(ctx.ref.name, None)  # this rotation, if any, is not a report's
        if reports:
            ctx.begin("probe")
            reason = self._probe_reported(ctx, reports)
        elif reason is None and self._probe_due(ctx, policy):
            ctx.begin("probe")
            reason = self._probe_current(ctx)
        if reason is None:
            return False
        ctx.begin("issue")
        started = self.timer()
        self._issue(ctx, signer, policy, reason)
        self._complete(ctx, signer, policy, emergency, resumed=False)
        self.metrics.rotation_duration.labels(credential=ctx.ref.name).observe(self.timer() - started)
        self._recovered(ctx)
        return True

    def _failed(self, ctx: _Ctx, exc: RotatorError, t0: float) -> PassResult:
        self.metrics.rotations.labels(credential=ctx.ref.name, result="failure").inc()
        step = exc.step if isinstance(exc, RotationError) else ctx.step
        pending = ctx.state.pending
        self._event(
            ctx,
            step,
            "failed",
            ctx.step_started,
            level=logging.ERROR,
            error=str(exc),
            nonce=pending.nonce if pending else None,
            pass_duration=self._since(t0),
        )
        return self._finish(ctx, "failed", t0, error=str(exc), failed_step=step)

    def _finish(
        self,
        ctx: _Ctx,
        outcome: Outcome,
        t0: float,
        error: str | None = None,
        failed_step: Step | None = None,
        plan: tuple[str, ...] = (),
    ) -> PassResult:
        name = ctx.ref.name
        state = ctx.state
        # A pass that could not read the state knows nothing about it: keep the last known gauges.
        self.metrics.observe_pass(
            name, failed=outcome == "failed", now=self.clock(), state=None if failed_step == "read" else state
        )
        return PassResult(
            credential=name,
            outcome=outcome,
            rotated=outcome == "rotated",
            revoked=ctx.revoked,
            invalidated=ctx.invalidated,
            error=error,
            failed_step=failed_step,
            duration=self.timer() - t0,
            key_prefix=state.current.masked if state.current else None,
            plan=plan,
            audited_at=state.audit.at if state.audit is not None else None,
        )

    def _dry_run(
        self, ctx: _Ctx, policy: Policy, now: float, force_nonce: int | None, emergency: bool, t0: float
    ) -> PassResult:
        """What this pass would do, why, and at which nonce. Changes nothing and asks the CLOB
        nothing (so a rejected current key goes unnoticed); reads the consumers' acknowledgements
        as the real pass does, so it revokes early where the real pass would."""
        state = ctx.state
        plan: list[tuple[Outcome, str]] = []
        if state.pending is not None:
            plan.append(("would-resume", f"would-resume nonce {state.pending.nonce}"))
        elif (reason := rotation_reason(state, now, policy, force_nonce)) is not None:
            if reason == "due" and state.current is not None:
                reason = f"due, age {_age(now - state.current.created_at)}"
            nonce = max(state.next_nonce, policy.start_nonce)
            plan.append(("would-rotate", f"would-rotate ({reason}) nonce {nonce}"))
        due = (
            list(state.retiring)
            if emergency
            else due_revocations(state, now, self._acks(ctx, now, policy), policy)
        )
        plan += [("would-revoke", would_revoke(entry, now, emergency)) for entry in due]
        outcome: Outcome = plan[0][0] if plan else "nothing-due"
        return self._finish(ctx, outcome, t0, plan=tuple(text for _, text in plan))

    # -- steps ------------------------------------------------------------------------------------
    def _reconcile_publish(self, ctx: _Ctx) -> None:
        """Finish a promotion whose publish was interrupted: consumers must see ``current``."""
        cur = ctx.state.current
        if cur is None or ctx.state.published_nonce == cur.nonce:
            return
        t = self.timer()
        self._publish(ctx, cur)
        self._event(ctx, "publish", "republished", t, nonce=cur.nonce, key=cur.masked)

    def _publish(self, ctx: _Ctx, key: Key) -> None:
        """Publish ``key`` and record that it is published."""
        self._store_publish(ctx, key)
        self._save(ctx, replace(ctx.state, published_nonce=key.nonce))

    def _store_publish(self, ctx: _Ctx, key: Key) -> None:
        self.store_call("publish", lambda: self.store.publish(ctx.ref, key))

    def _ensure_published_is_current(self, ctx: _Ctx) -> None:
        """Before any key is revoked, make sure consumers are not reading it (I2).

        A worker that stalled between promoting key N and publishing it can wake after a newer
        rotation and publish N over N+1; its own state write then loses the race, but the stale
        key stays published. This read, done only when a revocation is due, repairs that before
        the stale key is revoked under the consumers' feet.
        """
        cur = ctx.state.current
        if cur is None:
            return
        t = self.timer()
        published = self.store_call("read_published", lambda: self.store.read_published(ctx.ref))
        if published is not None and published.api_key == cur.api_key:
            return
        self._store_publish(ctx, cur)
        self._event(
            ctx,
            "publish",
            "repaired-stale",
            t,
            nonce=cur.nonce,
            key=cur.masked,
            found=published.masked if published else None,
        )

    def _acks(self, ctx: _Ctx, now: float, policy: Policy) -> list[Ack] | None:
        """The consumers' acknowledgements; None when they cannot change this pass's revocations (no
        retiring key is past its grace, nor retired by a rotation at least ``min_grace`` ago) or
        cannot be read. A pass with nothing to decide leaves them to the reports' own read."""
        if not any(
            now >= r.revoke_after or (r.reason == "rotated" and now >= r.retired_at + policy.min_grace)
            for r in ctx.state.retiring
        ):
            return None
        try:
            acks = self.store.acks(ctx.ref)
        except RotatorError as exc:
            self._store_metric("acks", "failure")
            log.warning("%s: consumer acknowledgements unreadable; grace decides: %s", ctx.ref.name, exc)
            return None
        self._store_metric("acks", "success")
        ctx.acks = acks
        return acks

    def _revoke(self, ctx: _Ctx, entry: Retiring, lagging: Sequence[Ack] = ()) -> None:
        """Revoke ``entry``; ``lagging``: live consumers still on another key at the end of grace."""
        t = self.timer()
        name = ctx.ref.name
        try:
            self.clob.delete_key(entry.key)
            how: Event = "deleted"
            if not self._confirm_gone(entry.key):
                # A 200 that left the key working is not a revocation: keep it retiring (I3).
                self._recheck_later(ctx, entry)
                self._event(
                    ctx, "revoke", "still-live-after-delete", t, nonce=entry.key.nonce, key=entry.key.masked
                )
                return
        except Unauthorized:
            # A 401 signed with the key itself usually means it is gone, but a key still inside
            # the server's propagation delay answers 401 too: ask the authority (derive, L1).
            # No signer (a credential removed from the config) means no way to ask: keep it retiring.
            try:
                gone = ctx.signer is not None and self.clob.derive_key(ctx.signer(), entry.key.nonce) is None
            except Cancelled:
                raise  # the worker is stopping: never taken for an answer about a key
            except ClobError:
                gone = False
            if not gone:
                # Without a signer nothing new can be learnt soon: ask again rarely (it costs /auth/*).
                self._recheck_later(ctx, entry, RECHECK_LIVE_KEY if ctx.signer else RECHECK_WITHOUT_SIGNER)
                self._event(
                    ctx, "revoke", "not-yet-revocable", t, nonce=entry.key.nonce, key=entry.key.masked
                )
                return
            how = "already-gone"
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            self.metrics.revocations.labels(credential=name, result="failure").inc()
            self._event(
                ctx, "revoke", "failed", t, nonce=entry.key.nonce, key=entry.key.masked, error=str(exc)
            )
            return  # the key stays retiring; the next pass tries again
        self._save(ctx, ctx.state.with_revoked(entry, how, self.clock()))
        self.metrics.revocations.labels(credential=name, result=how).inc()
        ctx.revoked += 1
        early = self.clock() < entry.revoke_after
        self._event(
            ctx,
            "revoke",
            how,
            t,
            nonce=entry.key.nonce,
            key=entry.key.masked,
            reason=entry.reason,
            trigger="consumers-confirmed" if early else "grace",
        )
        if lagging:
            self.metrics.revocations_forced.labels(credential=name).inc()
            who = ", ".join(f"{a.consumer_id} (holds {a.key_prefix})" for a in lagging)
            log.warning("%s: revoked key %s at the end of grace; lagging: %s", name, entry.key.masked, who)
            self._event(
                ctx, "revoke", "forced", t, key=entry.key.masked, lagging=[a.consumer_id for a in lagging]
            )

    def _may_start(self, ctx: _Ctx, step: Step) -> None:
        """Before a step that starts work on the CLOB: stop here when the worker got SIGTERM or a
        daemon replica lost the leader lease. Nothing is left half-done: a stopped pass changed
        nothing after its last completed step, and the next pass (or replica) takes it from there."""
        if self.stopping():
            ctx.begin(step)
            raise _Stopped()

    def _confirm_gone(self, key: Key) -> bool:
        """After a DELETE answered 200: the key must now be refused by an L2 read (off ``/auth/*``).
        A probe that cannot tell (the CLOB hiccuped) confirms nothing."""
        try:
            self.clob.probe_key(key)
        except Unauthorized:
            return True
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError:
            return False
        return False

    def _recheck_later(self, ctx: _Ctx, entry: Retiring, after: float = RECHECK_LIVE_KEY) -> None:
        """Keep ``entry`` retiring and try its revocation again ``after`` seconds from now."""
        retry_at = self.clock() + after
        retiring = tuple(replace(r, revoke_after=retry_at) if r == entry else r for r in ctx.state.retiring)
        self._save(ctx, replace(ctx.state, retiring=retiring))

    def _probe_due(self, ctx: _Ctx, policy: Policy) -> bool:
        """Whether this pass checks the current key: not when it was checked within ``probe_every``."""
        cur = ctx.state.current
        if cur is None:
            return False
        checked = self._checked.get(ctx.ref.name)
        if checked is None and policy.probe_every > 0:
            # A daemon's first pass: spread the fleet's first checks over one interval rather than
            # sending them all at start-up, as if each key had been checked at a random time before.
            ago = random.uniform(0, policy.probe_every)  # noqa: S311 - spreading load, not crypto
            checked = (cur.api_key, self.clock() - ago)
            self._checked[ctx.ref.name] = checked
        if checked is None or checked[0] != cur.api_key:
            return True
        return self.clock() - checked[1] >= policy.probe_every

    def _checked_ok(self, ctx: _Ctx, key: Key) -> None:
        self._checked[ctx.ref.name] = (key.api_key, self.clock())

    def _probe_current(self, ctx: _Ctx) -> str | None:
        cur = ctx.state.current
        assert cur is not None
        t = self.timer()
        try:
            self.clob.probe_key(cur)
        except Unauthorized:
            self._checked.pop(ctx.ref.name, None)
            self._event(ctx, "probe", "rejected", t, nonce=cur.nonce, key=cur.masked)
            return "rejected"
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            # A probe that cannot tell (5xx, timeouts, 429 after retries) says nothing about the key:
            # "unknown" leaves it in place; only a 401 is a reason to replace it.
            self._event(ctx, "probe", "unknown", t, nonce=cur.nonce, key=cur.masked, error=str(exc))
            log.warning("%s: could not probe the current key %s: %s", ctx.ref.name, cur.masked, exc)
            return None
        self._checked_ok(ctx, cur)
        return None

    # -- consumers' refusal reports (issue 18) ------------------------------------------------------
    def _refusal_reported(self, ctx: _Ctx, policy: Policy) -> list[Ack]:
        """The consumers' reports that the CLOB refuses the current key, when they earn a probe now:
        a report naming it, and, if a report-made probe found the key accepted, a report that probe
        did not answer (a newer refusal, another consumer) at least :data:`REPORT_PROBE_EVERY` later.

        A store read (the acknowledgements, shared with the revocation step when it read them this
        pass), no CLOB request. Credentials whose last read showed no consumer seen within
        ``consumer_ttl`` are read once a minute only, once this worker has watched them for
        :data:`REPORTS_COLD_START`: before that, every pass (bots starting with the daemon)."""
        cur = ctx.state.current
        name = ctx.ref.name
        if cur is None:
            return []
        now = self.clock()
        acks = ctx.acks
        if acks is None:
            if now < self._reports_quiet_until.get(name, 0.0):
                return []
            try:
                acks = self.store.acks(ctx.ref)
            except RotatorError as exc:
                self._store_metric("acks", "failure")
                log.warning("%s: consumer reports unreadable: %s", name, exc)
                return []
            self._store_metric("acks", "success")
            ctx.acks = acks
        watched = self._reports_watched.setdefault(name, now)
        if any(now - a.at <= policy.consumer_ttl for a in acks):
            self._reports_quiet_until.pop(name, None)
        elif now - watched >= REPORTS_COLD_START:
            self._reports_quiet_until[name] = now + min(REPORTS_WITHOUT_CONSUMERS, policy.consumer_ttl)
        prefix = ack_prefix(cur.api_key)
        reports = [a for a in acks if a.refused_at is not None and a.key_prefix == prefix]
        disputed = self._report_probed.get(name)
        if disputed is not None and disputed.api_key == cur.api_key:
            reports = [a for a in reports if (a.consumer_id, a.refused_at) not in disputed.answered]
            if reports and now - disputed.at < REPORT_PROBE_EVERY:
                return []  # heard; probed again once the interval is over, if still reported then
        if not reports:
            return []
        first = min(a.refused_at for a in reports if a.refused_at is not None)
        self._recovering[name] = (cur.api_key, first)
        log.warning(
            "%s: %d consumer(s) report that the CLOB refuses the current key %s (%s): probing it now",
            name,
            len(reports),
            cur.masked,
            _some(sorted(f"{a.consumer_id} x{a.refusals}" for a in reports)),
        )
        return reports

    def _probe_reported(self, ctx: _Ctx, reports: Sequence[Ack]) -> str | None:
        """Probe the current key because consumers reported it refused: ``rejected`` if the CLOB
        confirms. A key the CLOB accepts is probed again only on a report this probe did not answer,
        :data:`REPORT_PROBE_EVERY` later at the earliest; a refused key whose rotation fails, or a probe
        that could not tell (5xx, timeouts), leaves the reports to the next pass."""
        cur = ctx.state.current
        assert cur is not None
        name = ctx.ref.name
        t = self.timer()
        try:
            self.clob.probe_key(cur)
        except Unauthorized:
            # Not remembered: if the rotation fails, the reports still name this key, and the next
            # pass probes it again (it would otherwise wait for probe_every).
            self._checked.pop(name, None)
            self._event(
                ctx, "probe", "rejected", t, nonce=cur.nonce, key=cur.masked, trigger="consumer-report"
            )
            return "rejected"
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            self._recovering.pop(name, None)
            self._event(ctx, "probe", "unknown", t, nonce=cur.nonce, key=cur.masked, error=str(exc))
            log.warning("%s: could not probe the reported key %s: %s", name, cur.masked, exc)
            return None
        before = self._report_probed.get(name)
        answered = {(a.consumer_id, a.refused_at) for a in reports}
        if before is not None and before.api_key == cur.api_key:
            answered |= before.answered
        self._report_probed[name] = _Disputed(cur.api_key, self.clock(), frozenset(answered))
        self._recovering.pop(name, None)
        self._checked_ok(ctx, cur)
        self._event(
            ctx, "probe", "still-valid", t, nonce=cur.nonce, key=cur.masked, trigger="consumer-report"
        )
        log.warning(
            "%s: consumers reported key %s refused, but the CLOB accepts it (a consumer's clock or bug?): "
            "a later report (a newer refusal, another consumer) gets another probe, at most every %gs",
            name,
            cur.masked,
            REPORT_PROBE_EVERY,
        )
        return None

    def _recovered(self, ctx: _Ctx) -> None:
        """After a rotation: if a consumer's report started it, observe the time from the first
        refusal reported to the new key published (``rotator_recovery_seconds``)."""
        recovering = self._recovering.pop(ctx.ref.name, None)
        cur = ctx.state.current
        if recovering is None or cur is None or cur.api_key == recovering[0]:
            return
        seconds = max(0.0, self.clock() - recovering[1])
        self.metrics.recovery.labels(credential=ctx.ref.name).observe(seconds)

    def _take_lease(self, ctx: _Ctx, policy: Policy) -> None:
        pending = ctx.state.pending
        assert pending is not None
        if pending.owner != self.owner:
            t = self.timer()
            previous = pending.owner
            now = self.clock()
            self._save(
                ctx,
                replace(
                    ctx.state, pending=replace(pending, owner=self.owner, lease_until=now + policy.lease)
                ),
            )
            self._event(ctx, "resume", "took-over", t, nonce=pending.nonce, previous_owner=previous)

    def _issue(self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy, reason: str) -> None:
        """Step 4a: find the nonce and durably record the intent before any key exists."""
        self._may_start(ctx, "issue")
        t = self.timer()
        bootstrap = ctx.state.current is None and not ctx.state.history and not ctx.state.retiring
        if bootstrap and self._recover_published(ctx, signer(), policy):
            reason = "recovered"  # a lost state: the published key is ours, adopted (it retires now)
        nonce = max(ctx.state.next_nonce, policy.start_nonce)
        if bootstrap:
            nonce = self._bootstrap_nonce(ctx, signer(), policy, nonce)
            if ctx.state.current is not None and reason != "recovered":
                reason = "adopted"
        now = self.clock()
        pending = Pending(
            nonce=nonce,
            started_at=now,
            owner=self.owner,
            lease_until=now + policy.lease,
            address=signer().address,  # only this wallet can find a key made at this nonce again
        )
        self._save(ctx, replace(ctx.state, pending=pending, next_nonce=nonce + 1))
        self._event(ctx, "intent", "recorded", t, nonce=nonce, reason=reason)

    def _recover_published(self, ctx: _Ctx, signer: Signer, policy: Policy) -> bool:
        """A bootstrap over a published key: the state was lost (deleted by hand, a fresh store
        over an old published path), not never written. Returns True when the key was adopted.

        The published key is ours when this wallet's own L1 derive finds that very key at its
        nonce: then it becomes ``current`` (and this pass retires it with its grace, as consumers
        hold it). Keys still live just below it are probably ours too (retiring when the state
        was lost), but nothing proves it: a key made by hand is live at such a nonce as well. They
        are adopted for revocation when ``adopt_existing`` says keys found on the wallet are ours,
        and otherwise named in a warning, never walked past in silence.
        """
        t = self.timer()
        published = self.store_call("read_published", lambda: self.store.read_published(ctx.ref))
        if published is None:
            return False
        if published.address.lower() != signer.address.lower():
            log.warning(
                "%s: no state, and the published key %s is for wallet %s, not the configured %s: "
                "leaving it alone (revoke it by hand if it is no longer used)",
                ctx.ref.name,
                published.masked,
                published.address,
                signer.address,
            )
            self._event(ctx, "recover", "other-wallet", t, nonce=published.nonce, key=published.masked)
            return False
        live = self.clob.derive_key(signer, published.nonce)
        if live is None or live.api_key != published.api_key:
            self._event(ctx, "recover", "published-not-live", t, nonce=published.nonce, key=published.masked)
            return False
        # Already published as it is: record it (age unknown, so due now) without publishing again.
        adopted = replace(live, created_at=0.0)
        self._save(
            ctx,
            replace(ctx.state, current=adopted, next_nonce=live.nonce + 1, published_nonce=live.nonce),
        )
        self._event(ctx, "recover", "adopted-published", t, nonce=live.nonce, key=live.masked)
        below = range(max(policy.start_nonce, live.nonce - RECOVER_BELOW), live.nonce)
        found = [k for k in (self.clob.derive_key(signer, n) for n in below) if k is not None]
        if not found:
            return True
        if policy.adopt_existing:
            now = self.clock()
            entries = tuple(
                Retiring(replace(k, created_at=0.0), now, now + policy.grace, "recovered") for k in found
            )
            self._save(ctx, replace(ctx.state, retiring=(*ctx.state.retiring, *entries)))
            for k in found:
                self._event(ctx, "recover", "retiring", t, nonce=k.nonce, key=k.masked)
            return True
        for k in found:
            log.warning(
                "%s: state lost; key %s at nonce %d below the published one is live but not provably "
                "ours: left alone (set adopt_existing to retire such keys, or revoke it by hand)",
                ctx.ref.name,
                k.masked,
                k.nonce,
            )
            self._event(ctx, "recover", "unproven-key-left", t, nonce=k.nonce, key=k.masked)
        return True

    def _bootstrap_nonce(self, ctx: _Ctx, signer: Signer, policy: Policy, nonce: int) -> int:
        """No key of ours yet: nonces that already hold a key were made by hand, not by us."""
        for _ in range(MAX_NONCE_WALK):
            existing = self.clob.derive_key(signer, nonce)
            if existing is None:
                return nonce
            if policy.adopt_existing and ctx.state.current is None:
                self._adopt(ctx, existing)
            else:
                log.warning(
                    "%s: nonce %d of this wallet already holds key %s that rotator has no record of: "
                    "left alone (set adopt_existing to adopt and retire it, or revoke it by hand)",
                    ctx.ref.name,
                    nonce,
                    existing.masked,
                )
                self._event(ctx, "bootstrap", "nonce-taken", self.timer(), nonce=nonce, key=existing.masked)
            nonce += 1
        raise RotationError("issue", f"no free nonce in {MAX_NONCE_WALK} tries from {policy.start_nonce}")

    def _adopt(self, ctx: _Ctx, key: Key) -> None:
        t = self.timer()
        if key.api_key not in self.clob.list_keys(key):
            raise RotationError("adopt", f"existing key {key.masked} at nonce {key.nonce} does not verify")
        # Unknown age: created_at 0 makes it due, so this same pass retires it with a grace window.
        adopted = replace(key, created_at=0.0)
        self._save(ctx, replace(ctx.state, current=adopted, next_nonce=key.nonce + 1))
        self._publish(ctx, adopted)
        self._event(ctx, "adopt", "adopted", t, nonce=key.nonce, key=key.masked)

    def _complete(
        self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy, emergency: bool, resumed: bool = True
    ) -> None:
        """Steps 4b-7 for the pending rotation. ``resumed``: the intent was found, not just recorded."""
        pending = ctx.state.pending
        assert pending is not None
        self._check_wallet(pending, signer)
        if pending.key is None:
            key = self._obtain(
                ctx, signer(), pending.nonce, fresh=pending.owner == self.owner and not resumed
            )
            pending = replace(pending, key=key)
            self._save(ctx, replace(ctx.state, pending=pending))
        assert pending.key is not None
        self._verify(ctx, pending.key, policy)
        old = self._promote(ctx, pending.key, policy, emergency)
        if old is not None:
            self._probe_old(ctx, old)
        if emergency:
            ctx.begin("revoke")
            # By reason, not by comparing revoke_after with a later read of the clock.
            due = due_revocations(ctx.state, self.clock())
            for entry in [r for r in ctx.state.retiring if r.reason == "emergency" or r in due]:
                self._revoke(ctx, entry)

    @staticmethod
    def _check_wallet(pending: Pending, signer: Callable[[], Signer]) -> None:
        """A rotation in flight belongs to the wallet that started it. Deriving with another wallet
        would find nothing and create a key there, orphaning the one the crash may have left at
        (old wallet, nonce); promoting a recorded key would publish the old wallet's key."""
        recorded = pending.wallet
        if recorded is None:  # a schema-1 intent: it never said, so nothing to check against
            return
        configured = signer().address
        if configured.lower() != recorded.lower():
            raise RotationError(
                "resume",
                f"the rotation in flight (nonce {pending.nonce}) was started with wallet {recorded}, "
                f"but the configured signer is wallet {configured}: configure that wallet's signer "
                "again until a pass completes it, then change wallets",
            )

    def _obtain(self, ctx: _Ctx, signer: Signer, nonce: int, fresh: bool) -> Key:
        """Step 4b: the key for the recorded intent, stamped on the pass's clock (the CLOB's): its
        ``created_at`` is the start of the key's age, which every worker compares with its own now."""
        key = self._obtain_key(ctx, signer, nonce, fresh)
        return replace(key, created_at=self.clock())

    def _obtain_key(self, ctx: _Ctx, signer: Signer, nonce: int, fresh: bool) -> Key:
        """A resumed intent derives first: its create may have landed before a crash. An intent this
        pass has just recorded cannot have a key yet, so it spares the CLOB that request."""
        ctx.begin("create")
        t = self.timer()
        if not fresh:
            key = self.clob.derive_key(signer, nonce)
            if key is not None:
                self._event(ctx, "create", "recovered", t, nonce=nonce, key=key.masked)
                return key
        try:
            key = self.clob.create_key(signer, nonce)
        except Rejected as exc:
            # 400: a key exists at this nonce after all (our own create whose answer was lost).
            key = self.clob.derive_key(signer, nonce)
            if key is None:
                raise RotationError("create", str(exc)) from exc
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            # The answer may have been lost after the key was made: never create blind, derive.
            key = self.clob.derive_key(signer, nonce)
            if key is None:
                raise RotationError("create", str(exc)) from exc
            self._event(ctx, "create", "recovered-lost-answer", t, nonce=nonce, key=key.masked)
            return key
        self._event(ctx, "create", "created", t, nonce=nonce, key=key.masked)
        return key

    def _verify(self, ctx: _Ctx, key: Key, policy: Policy) -> None:
        """Step 5: the new key must work (L2) before anyone sees it. Retries through propagation delay."""
        ctx.begin("verify")
        t = self.timer()
        deadline = max(key.created_at + policy.verify_timeout, self.clock() + policy.verify_backoff)
        delay = policy.verify_backoff
        attempts = 0
        while True:
            attempts += 1
            try:
                self.clob.probe_key(key)
                self._checked_ok(ctx, key)
                self._event(ctx, "verify", "verified", t, nonce=key.nonce, key=key.masked, attempts=attempts)
                return
            except (Unauthorized, Transient, RateLimited) as exc:
                problem = str(exc)  # not live yet, or the CLOB hiccuped: both are worth waiting out
            if self.clock() + delay > deadline:
                break
            self.sleep(delay)
            delay = min(delay * 2, policy.verify_backoff_cap)
        self._abandon(ctx, key)
        raise RotationError(
            "verify", f"new key {key.masked} did not verify within {policy.verify_timeout:g}s ({problem})"
        )

    def _abandon(self, ctx: _Ctx, key: Key) -> None:
        """A key that never verified is never published; it is revoked like any other (I3, I5)."""
        t = self.timer()
        now = self.clock()
        entry = Retiring(key=key, retired_at=now, revoke_after=now, reason="unverified")
        self._save(ctx, replace(ctx.state, pending=None, retiring=(*ctx.state.retiring, entry)))
        self._event(ctx, "verify", "abandoned", t, nonce=key.nonce, key=key.masked)
        self._revoke(ctx, entry)

    def _promote(self, ctx: _Ctx, key: Key, policy: Policy, emergency: bool) -> Key | None:
        """Step 6: the verified key becomes current; the old one retires with its grace deadline."""
        ctx.begin("promote")
        t = self.timer()
        now = self.clock()
        old = ctx.state.current
        retiring = ctx.state.retiring
        if old is not None:
            revoke_after = now if emergency else now + policy.grace
            retiring = (*retiring, Retiring(old, now, revoke_after, "emergency" if emergency else "rotated"))
        self._save(
            ctx,
            replace(
                ctx.state, current=key, pending=None, retiring=retiring, rotations=ctx.state.rotations + 1
            ),
        )
        self._publish(ctx, key)
        self._event(
            ctx,
            "promote",
            "published",
            t,
            nonce=key.nonce,
            key=key.masked,
            previous=old.masked if old else None,
        )
        return old

    def _probe_old(self, ctx: _Ctx, old: Key) -> None:
        """Step 7: does the server keep one key per wallet? If the old key is already dead, record it."""
        ctx.begin("probe-old")
        t = self.timer()
        try:
            self.clob.probe_key(old)
        except Unauthorized:
            entry = next((r for r in ctx.state.retiring if r.key.api_key == old.api_key), None)
            if entry is not None:
                self._save(ctx, ctx.state.with_revoked(entry, "invalidated-by-server", self.clock()))
            self.metrics.old_key_invalidated.labels(credential=ctx.ref.name).inc()
            ctx.invalidated += 1
            self._event(ctx, "probe-old", "invalidated-by-server", t, nonce=old.nonce, key=old.masked)
            return
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            self._event(ctx, "probe-old", "unknown", t, nonce=old.nonce, key=old.masked, error=str(exc))
            return
        self._event(ctx, "probe-old", "still-valid", t, nonce=old.nonce, key=old.masked)
