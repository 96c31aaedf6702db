"""The rotation protocol (DESIGN.md, steps 1-7) over a Store and the CLOB auth port.

Deciding what a credential needs is pure (:func:`rotation_reason`, :func:`due_revocations`);
executing a step is a small method over the injected ports, and every step is idempotent, so a
crash anywhere is repaired by running the pass again. Every write is a compare-and-set on the
state version read at the start of the pass: losing one means another worker moved first, and
this pass stops without touching anything.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from rotator.clob.base import ClobAuth
from rotator.errors import (
    AccessDenied,
    Blocked,
    Cancelled,
    ClobError,
    Corrupt,
    RateLimited,
    Rejected,
    RotationError,
    RotatorError,
    SignerError,
    Transient,
    Unauthorized,
    Unrevocable,
    VersionConflict,
)
from rotator.kinds import KeyOps, Obtained, ops_for
from rotator.lease import owner_alive, owner_host, this_owner
from rotator.metrics import Metrics
from rotator.model import (
    HISTORY_LIMIT,
    KEY_CLOCK_SLACK,
    Ack,
    AuditRecord,
    CredentialRef,
    CredentialState,
    Event,
    Key,
    KeyModel,
    Outcome,
    PassResult,
    Pending,
    Retiring,
    Step,
    UnmanagedKey,
    ack_prefix,
    masked_prefix,
    minted_at,
)
from rotator.signers.base import Signer
from rotator.stores.base import Store, Version

if TYPE_CHECKING:
    from rotator.schedule import Schedule

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
#: A recorded time further ahead than any this protocol writes, by more than this, was written on a
#: clock that was wrong (an older version that took a /time answer in milliseconds or a day ahead;
#: a worker that fell back to its own clock): it is clamped when read (DESIGN.md "Time"). Workers
#: that measured the CLOB's clock agree to within a minute; five leave room for a worker on its own.
CLAMP_AHEAD = 300.0
#: How far the CLOB's own clocks may disagree between two key ids it made one after the other.
KEY_ID_SLACK = 1.0
#: One-shot runs (a CronJob) start a few seconds late, by a different amount each time, and stamp
#: the key they make after that: a key made by the last run can be younger than ``rotate_every``
#: by that much when the next run on the same period looks at it. Within this much of
#: ``rotate_every`` (and at most a quarter of it) a one-shot run takes the key as due.
JITTER_TOLERANCE = 600.0
#: After a restore, how many nonces past the state's next one are looked at for keys it never heard of.
RESTORE_WALK = 8
#: Seconds after an intent by which its create was answered or given up, at the default
#: ``clob.retry.deadline`` (120 s) and ``clob.timeout`` (10 s): see ``Policy.create_window``.
CREATE_WINDOW = 130.0
#: The reasons a key is due by its age or its schedule (not an operator, not the CLOB).
AGE_REASONS = frozenset({"due", "schedule", "max-age"})


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
    # How the wallet keeps keys (issue 24): "auto" follows what the state learned (doctor, or step 7
    # finding the old key dead), "one" or "several" as configured. See keeps_one_key.
    key_model: str = "auto"
    # When rotations may happen (credentials[].schedule): None, whenever a key is due.
    schedule: Schedule | None = None
    # With a schedule, a key this old rotates outside any window (credentials[].max_age).
    max_age: float | None = None
    # A key within this much of rotate_every is due: one-shot runs' start-up jitter (see
    # JITTER_TOLERANCE and one_shot_slack); 0 in the daemon, which passes every tick.
    due_slack: float = 0.0
    # How many gone keys the credential's history keeps (credentials[].history_limit).
    history_limit: int = HISTORY_LIMIT
    # Issue 27: which kind of key the credential holds (its rotator.kinds strategy), and for a
    # read-only or builder credential the trading credential whose key authenticates its calls.
    kind: str = "trading"
    via: str | None = None
    # Seconds after an intent by which its create was answered or given up (clob.retry.deadline
    # plus one request's clob.timeout): a key found by listing after a lost answer was made then.
    create_window: float = CREATE_WINDOW

    @property
    def lease(self) -> float:
        return self.verify_timeout + self.lease_margin

    @property
    def hard_max_age(self) -> float:
        """The age past which a key rotates whatever the schedule says (2 x rotate_every by default)."""
        return self.max_age if self.max_age is not None else 2 * self.rotate_every


def one_shot_slack(rotate_every: float) -> float:
    """How much younger than ``rotate_every`` a key may be and still be due in a one-shot run: a
    CronJob firing every ``rotate_every`` then rotates on every run, not every other one."""
    return min(rotate_every / 4, JITTER_TOLERANCE)


#: What a paused credential's log line says when it rotates anyway, by rotation reason.
_WHY_PAUSE_YIELDS = {
    "rejected": "the CLOB rejects the current key",
    "restored": "the state was restored from a backup and its key is gone",
    "forced": "rotate --force",
    "emergency": "revoke --emergency",
}


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
        "clamped",
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
def key_model(state: CredentialState, policy: Policy) -> str:
    """How this credential's wallet keeps keys, as the rotation goes by it: ``several``, ``one`` or
    ``unknown`` (rotated as ``several``: with overlap, until step 7 learns otherwise)."""
    if policy.key_model in ("one", "several"):
        return policy.key_model
    learned = state.key_model.keys if state.key_model is not None else None
    return learned or "unknown"


def keeps_one_key(state: CredentialState, policy: Policy) -> bool:
    """Whether a rotation publishes the new key in the step that creates it, before verifying it.

    On a wallet that keeps one key the create itself kills the published key: every moment until the
    new one is published is a moment the bots hold a dead key, and there is no overlap to wait for.
    That is the one exception to I1 (consumers read only a verified key): the alternative is a key
    known dead. The new key is verified right after, and a consumer's 401 re-read carries it over.
    """
    return key_model(state, policy) == "one"


def rotation_reason(
    state: CredentialState,
    now: float,
    policy: Policy,
    force_nonce: int | None = None,
    *,
    emergency: bool = False,
) -> str | None:
    """Why the credential needs a new key now (a :data:`rotator.model.Reason`), or None.

    ``force_nonce``: the nonce of the key that was current when a forced (or emergency) pass read
    the state; that key, and only that one, is replaced whatever its age or the schedule. Identity,
    not time: its ``created_at`` was stamped by whichever worker made it, on that worker's clock.
    A pause stops every other reason; forced and emergency rotations never wait, and neither does
    a key the CLOB rejects (found by a probe, after this).

    With a schedule, a key rotates in a window (``schedule``) when it was made before the window
    opened and would reach ``rotate_every`` before the next one opens, so a key made at one window
    is replaced at the next however late in it either run started; outside every window it waits,
    unless it is past ``max_age`` (``max-age``). Without one, it is due at ``rotate_every``, less
    ``due_slack`` (one-shot runs' start-up jitter).
    """
    if force_nonce is not None and state.current is not None and state.current.nonce == force_nonce:
        return "emergency" if emergency else "forced"
    if state.paused(now) is not None:
        return None
    if state.current is None:
        return "bootstrap"
    created = state.current.created_at
    age = now - created
    schedule = policy.schedule
    if schedule is None:
        return "due" if age >= policy.rotate_every - policy.due_slack else None
    if age >= policy.hard_max_age:
        return "max-age"
    window = schedule.window_at(now)
    if window is None or created >= window[0]:
        return None  # between windows, or already rotated in this one
    following = schedule.next_time(window[0])
    return "schedule" if following is None or created + policy.rotate_every <= following else None


def first_due(state: CredentialState, policy: Policy) -> float | None:
    """When the current key became (or becomes) due by its age or its schedule, a pause aside: its
    creation plus ``rotate_every`` (less ``due_slack``), or the window it is replaced in, or
    ``max_age``. None without a key."""
    cur = state.current
    if cur is None:
        return None
    created = cur.created_at
    if policy.schedule is None:
        return created + policy.rotate_every - policy.due_slack
    opens = _window_due(policy.schedule, created, policy.rotate_every)
    cap = created + policy.hard_max_age
    return cap if opens is None else min(opens, cap)


def _window_due(schedule: Schedule, created: float, rotate_every: float) -> float | None:
    """The first window a key made at ``created`` is replaced in: the last scheduled time before it
    reaches ``rotate_every``, or, when none falls after its creation, the first one after that."""
    opens = schedule.previous(created + rotate_every)
    if opens is None or opens <= created:
        opens = schedule.next_time(created)
    return opens


def next_rotation(state: CredentialState, now: float, policy: Policy) -> float | None:
    """When :func:`rotation_reason` will first find the current key due (in the past: overdue), or None
    (no key yet, a pause without an end, or a schedule that never fires again). What ``status`` and
    ``rotator_next_rotation_timestamp_seconds`` show."""
    cur = state.current
    if cur is None:
        return None
    pause = state.paused(now)
    if pause is not None and pause.until is None:
        return None
    start = now if pause is None else max(now, pause.until or now)
    created = cur.created_at
    schedule = policy.schedule
    if schedule is None:
        due = created + policy.rotate_every - policy.due_slack
        return due if pause is None else max(start, due)  # in the past: overdue by that much
    latest = max(start, created + policy.hard_max_age)
    opens = _window_due(schedule, created, policy.rotate_every)
    if opens is not None and opens < start:
        opens = start if schedule.window_at(start) is not None else schedule.next_time(start)
    return latest if opens is None else min(opens, latest)


def _next_window(policy: Policy | None, now: float) -> float | None:
    """When the credential's next rotation window opens (now, inside one); None without a schedule."""
    window = policy.schedule.next_window(now) if policy is not None and policy.schedule is not None else None
    return None if window is None else window[0]


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


def _absurd(at: float, limit: float) -> bool:
    return not math.isfinite(at) or at > limit


def clamp_deadlines(state: CredentialState, now: float, policy: Policy) -> tuple[CredentialState, list[str]]:
    """``state`` with every recorded time that lies absurdly far ahead of ``now`` brought back, and
    one phrase per clamp. Never earlier than the protocol could have meant: a grace deadline becomes
    ``now + grace`` (a key retired by a rotation keeps a whole grace from now, I2), a key's age
    starts now, a pending lease runs one lease from now, a last audit is taken as never made (the
    next run that may audit does). Non-finite times count as absurd."""
    said: list[str] = []

    def age_from_now(key: Key, what: str) -> Key:
        if not _absurd(key.created_at, now + CLAMP_AHEAD):
            return key
        said.append(f"{what} {key.masked} created_at {_ahead(key.created_at, now)}: its age starts now")
        return replace(key, created_at=now)

    current = age_from_now(state.current, "current key") if state.current is not None else None
    horizon = now + max(policy.grace, RECHECK_WITHOUT_SIGNER) + CLAMP_AHEAD
    retiring = []
    for entry in state.retiring:
        if _absurd(entry.revoke_after, horizon):
            # A key retired with a grace keeps a whole one from now; one due at once stays due.
            graced = entry.reason in ("rotated", "recovered")
            until = now + policy.grace if graced else now
            said.append(
                f"retiring key {entry.key.masked} revoke_after {_ahead(entry.revoke_after, now)}: "
                + ("revoked after grace from now" if graced else "revoked now")
            )
            entry = replace(entry, revoke_after=until)
        retiring.append(entry)
    pending = state.pending
    if pending is not None:
        if _absurd(pending.started_at, now + CLAMP_AHEAD):
            # When the intent was really recorded is unknown; it was after the current key was made
            # (it replaces that key). That lower bound keeps a key the intent's own create made from
            # looking older than the intent (made_before_intent), which would walk past it.
            floor = current.created_at if current is not None else 0.0
            said.append(
                f"pending nonce {pending.nonce} started_at {_ahead(pending.started_at, now)}: "
                "taken as the current key's creation"
            )
            pending = replace(pending, started_at=min(floor, now))
        if _absurd(pending.lease_until, now + policy.lease + CLAMP_AHEAD):
            said.append(
                f"pending nonce {pending.nonce} lease_until {_ahead(pending.lease_until, now)}: "
                "one lease from now"
            )
            pending = replace(pending, lease_until=now + policy.lease)
        if pending.key is not None:
            pending = replace(pending, key=age_from_now(pending.key, "pending key"))
    audit = state.audit
    if audit is not None and _absurd(audit.at, now + CLAMP_AHEAD):
        # "Last audited in the future" would hold every later audit off until then.
        said.append(f"last audit at {_ahead(audit.at, now)}: taken as never made")
        audit = replace(audit, at=0.0)
    if not said:
        return state, said
    return replace(state, current=current, retiring=tuple(retiring), pending=pending, audit=audit), said


def _ahead(at: float, now: float) -> str:
    if not math.isfinite(at):
        return f"is {at}"
    ahead = at - now
    return f"{ahead / 86400:.0f} days ahead" if ahead >= 2 * 86400 else f"{_age(ahead)} ahead"


def made_before_intent(key: Key, pending: Pending, current: Key | None) -> bool:
    """Whether ``key``, found at the intent's nonce, provably existed before the intent was recorded,
    so that no create of the intent made it (someone else did, and holds its secret). Proven by its id
    alone: it is older than the current key's id, and the current key existed before any intent to
    replace it (the CLOB's clock against itself); or it is more than :data:`KEY_CLOCK_SLACK` older
    than the intent's ``started_at`` (the CLOB's clock as the worker that recorded the intent read
    it). An id that is no UUIDv7 proves nothing: the key is taken as the intent's (DESIGN step 4b)."""
    if current is not None and key.api_key == current.api_key:
        # A resumed revival (issue 24): its intent sits at the current key's own nonce, and the
        # create there brings that very key back. It is ours: the state holds it as current.
        return False
    made = minted_at(key.api_key)
    if made is None:
        return False
    if made < pending.started_at - KEY_CLOCK_SLACK:
        return True
    anchor = minted_at(current.api_key) if current is not None else None
    return anchor is not None and made < anchor - KEY_ID_SLACK


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
        "_ops",
        "_step",
        "_timer",
        "acks",
        "history_limit",
        "invalidated",
        "live_after",
        "policy",
        "reached",
        "reason",
        "ref",
        "revoked",
        "revoked_keys",
        "signer",
        "state",
        "step_started",
        "version",
        "via_key",
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
        self.revoked_keys: list[str] = []  # "nonce 6 key=01a24daa-6b2e-7fa2…" per key revoked
        self.invalidated = 0
        self.history_limit = HISTORY_LIMIT
        self.acks: list[Ack] | None = None  # this pass's read of the acknowledgements, if it made one
        self.reached = False  # the CLOB accepted a key in this pass (its edge let the pass through)
        self.policy: Policy | None = None
        # Seconds the new key was refused after its creation, as verified in this pass (recorded in
        # the state's key model with the promotion).
        self.live_after: float | None = None
        self.reason: str | None = None  # why this pass rotates (None: resuming, or not rotating)
        self._ops: KeyOps | None = None  # the kind's key operations, bound once the state is read
        self.via_key: Key | None = None  # the via credential's current key, read once per pass
        self._timer = timer
        self._step: Step = "read"
        self.step_started = timer()

    @property
    def step(self) -> Step:
        return self._step

    @property
    def ops(self) -> KeyOps:
        """The key operations of the credential's kind (:meth:`Rotator.bind`)."""
        assert self._ops is not None, "key operations are bound once the state is read"
        return self._ops

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
        clock_measured: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.clob = clob
        self.metrics = metrics or Metrics()
        self.clock = clock
        # Whether ``clock`` is a measurement of the CLOB's (else a guess on this host's clock, by
        # which recorded deadlines are not judged absurd: see _clamp).
        self.clock_measured = clock_measured
        self.sleep = sleep
        self.owner = owner or this_owner()
        #: What the history names as the worker: the pod (or host) name, from the owner id.
        self.worker = owner_host(self.owner)
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

    def wallet_siblings(
        self, ref: CredentialRef, address: str, kind: str | None = None
    ) -> tuple[set[str], bool]:
        """The keys every other state in the store (configured or removed from the config) manages on
        the wallet ``address``, and whether one of them has a rotation in flight on it (whose key may
        exist unrecorded). Credentials may share a wallet at nonces far apart (``start_nonce``): each
        one's keys are the other's managed keys, never unmanaged ones. Reads every state: ask only
        when a key is found that this state does not manage. ``kind``: only rotations of states of
        that kind count as in flight (a trading rotation makes no read-only key)."""
        wallet = address.lower()
        ids: set[str] = set()
        busy = False
        for name in self.store_call("list", self.store.names):
            if name == ref.name:
                continue
            state = self.store_call("load", partial(self.store.load, CredentialRef(name, ""))).state
            keys = [r.key for r in state.retiring]
            if state.current is not None:
                keys.append(state.current)
            if state.pending is not None and state.pending.key is not None:
                keys.append(state.pending.key)
            ids |= {k.api_key for k in keys if k.address.lower() == wallet}
            pending_wallet = state.pending.wallet if state.pending is not None else None
            busy = busy or (
                state.pending is not None
                and (pending_wallet is None or pending_wallet.lower() == wallet)
                and (kind is None or state.kind == kind)
            )
        return ids, busy

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

    # -- the kind's key operations (issue 27) --------------------------------------------------------
    def bind(self, ctx: _Ctx, policy: Policy | None = None) -> None:
        """Give ``ctx`` the key operations of its credential's kind (rotator.kinds), once its state is
        read. With the credential's ``policy`` (a configured credential), a state written before holds
        the configured kind, or the pass fails here: its keys were made for another kind; a new state
        takes the configured kind and ``via``. Without (a removed credential), the state says."""
        if policy is not None:
            state = ctx.state
            if ctx.version is not None and state.kind != policy.kind:
                raise RotationError(
                    "read",
                    f"the state holds {state.kind} keys, but the config makes {ctx.ref.name} a {policy.kind} "
                    "credential: a credential's kind cannot change (give the new one its own name, and "
                    f"`rotator retire` this one once it is out of the config)",
                )
            if state.kind != policy.kind or state.via != policy.via:
                ctx.state = replace(state, kind=policy.kind, via=policy.via)  # saved with the next write
        ctx._ops = ops_for(ctx.state.kind, self.clob, ctx.signer, partial(self._via_key, ctx))

    def _via_key(self, ctx: _Ctx) -> Key:
        """The current key of the trading credential that manages this read-only or builder one, read
        from the store once per pass (its previous key stays valid for its grace if it rotates)."""
        if ctx.via_key is not None:
            return ctx.via_key
        name = ctx.state.via
        if name is None:
            raise RotationError("via", f"{ctx.state.kind} credential names no trading credential (via)")
        state = self.store_call("load", partial(self.store.load, CredentialRef(name, ""))).state
        if state.kind != "trading":
            raise RotationError("via", f"via {name} is a {state.kind} credential, not a trading one")
        if state.current is None:
            raise RotationError(
                "via", f"trading credential {name} has no key yet: its first pass issues one, then this one's"
            )
        ctx.via_key = state.current
        return state.current

    def _known(self, ctx: _Ctx) -> tuple[set[str], bool]:
        """The ids every state of the store holds on the credential's wallet (its own included), and
        whether another state of its kind there has a rotation in flight: what a key found by listing
        must not be, and whether a lone one may be a sibling's (rotator.kinds)."""
        theirs, busy = self.wallet_siblings(ctx.ref, ctx.ops.address(), kind=ctx.state.kind)
        return theirs | {k.api_key for k in ctx.state.held_keys()}, busy

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
        problem: str | None = None,
    ) -> PassResult:
        """One pass over one credential (DESIGN.md steps 1-7). Never raises a RotatorError.

        ``problem``: why this credential's signer cannot be used (its secret source is missing or
        unreadable). The pass then does only what needs no signer (publish the current key again,
        revoke retiring keys whose DELETE is confirmed by a probe) and fails at ``signer`` with
        that line; a dry run says ``would-fail``. Other credentials are not affected.
        """
        t0 = self.timer()
        self.metrics.set_policy(
            ref.name,
            policy.rotate_every,
            policy.grace,
            max_age=policy.hard_max_age if policy.schedule is not None else policy.rotate_every,
            interval=policy.schedule.longest_gap(self.clock()) if policy.schedule is not None else 0.0,
        )
        ctx = _Ctx(ref, CredentialState(), None, signer=None if problem else signer, timer=self.timer)
        ctx.policy = policy
        ctx.history_limit = policy.history_limit
        try:
            force_nonce = self._read(ctx, force or emergency)
            self.bind(ctx, policy)
            now = self.clock()
            self._clamp(ctx, policy, now, save=not dry_run)
            pending = ctx.state.pending
            if pending is not None and lease_blocked(pending, now, self.owner, self.alive):
                self._event(ctx, "read", "in-flight-elsewhere", t0, nonce=pending.nonce)
                return self._finish(ctx, "in-flight-elsewhere", t0, policy=policy)
            if dry_run:
                return self._dry_run(ctx, policy, now, force_nonce, emergency, t0, problem)
            self._reconcile_publish(ctx)
            self._revoke_due(ctx, policy, now, emergency)
            if problem is not None:
                raise SignerError(problem)
            reason: str | None = None
            if ctx.state.pending is not None:
                self._resume(ctx, signer, policy, emergency)
                self._recovered(ctx)  # a rotation a report started may end in a later pass
                rotated = True
            else:
                reason = self._rotate_if_due(ctx, signer, policy, now, force_nonce, emergency)
                rotated = reason is not None
        except _Conflict:
            self._event(ctx, ctx.step, "lost-race", ctx.step_started, pass_duration=self._since(t0))
            return self._finish(ctx, "lost-race", t0, policy=policy)
        except (_Stopped, Cancelled):
            # SIGTERM, or a replica that lost the leader lease: not a failure. What was done is
            # recorded; a rotation cut short stays pending and the next pass (or replica) resumes it.
            self._event(ctx, ctx.step, "stopped", ctx.step_started, pass_duration=self._since(t0))
            return self._finish(ctx, "stopped", t0, policy=policy)
        except RotatorError as exc:
            return self._failed(ctx, exc, t0, policy)
        if rotated:
            self.metrics.rotations.labels(credential=ref.name, result="success").inc()
            return self._finish(ctx, "rotated", t0, policy=policy, reason=reason)
        return self._finish(ctx, "revoked" if ctx.revoked else "nothing-due", t0, policy=policy)

    def _read(self, ctx: _Ctx, forced: bool) -> int | None:
        """Step 1: the state and its version. Returns the nonce of the key a forced (or emergency)
        pass replaces: the one current at this read, by identity (DESIGN.md step 4)."""
        ctx.begin("read")
        snap = self.store_call("load", lambda: self.store.load(ctx.ref))
        ctx.state, ctx.version = snap.state, snap.version
        current = snap.state.current
        return current.nonce if forced and current is not None else None

    def _clamp(self, ctx: _Ctx, policy: Policy, now: float, save: bool) -> None:
        """Heal a state a wrong clock wrote (issue 22): recorded times absurdly far ahead are
        brought back (:func:`clamp_deadlines`), said, and saved. Only on a measured CLOB clock: on
        a guess, a recorded time may look far ahead because this host's clock is behind."""
        if not self.clock_measured():
            return
        state, said = clamp_deadlines(ctx.state, now, policy)
        if not said:
            return
        t = self.timer()
        log.warning(
            "%s: recorded times absurdly far ahead of the CLOB's clock (a wrong clock wrote them), "
            "clamped%s: %s",
            ctx.ref.name,
            "" if save else " (dry run: not saved)",
            "; ".join(said),
        )
        if not save:
            ctx.state = state
            return
        self._save(ctx, state)
        self._event(ctx, "read", "clamped", t, clamped=said)

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
    ) -> str | None:
        """Steps 4-7 when a new key is due (by age or schedule, forced, or the current key is
        rejected). Returns the reason it rotated for, or None."""
        reason = rotation_reason(ctx.state, now, policy, force_nonce, emergency=emergency)
        trigger = "operator" if reason in ("forced", "emergency") else "schedule"
        reports = self._refusal_reported(ctx, policy) if reason is None else []
        if not reports:
            self._recovering.pop(ctx.ref.name, None)  # this rotation, if any, is not a report's
        if reports:
            ctx.begin("probe")
            reason, trigger = self._probe_reported(ctx, reports), "consumer-report"
        elif reason is None and self._probe_due(ctx, policy):
            ctx.begin("probe")
            reason, trigger = self._probe_current(ctx), "probe"
        if reason is None:
            return None
        due = first_due(ctx.state, policy) if reason in AGE_REASONS else None
        if due is not None and now >= due + policy.grace:
            # Overdue by more than a grace: it may have been replaced and revoked already, by a
            # worker whose state this is not (a state restored from a backup taken before that
            # rotation). One probe (off /auth/*) tells; a key rotated on time costs none.
            ctx.begin("probe")
            if self._probe_current(ctx) == "rejected":
                reason, trigger = "rejected", "probe"
        # A refused key that derive still finds at its nonce may have lapsed: brought back by a
        # create there, it needs no rotation (issue 24). One that is gone may have been replaced by a
        # worker whose state this is not: a restored backup (issue 23).
        if reason == "rejected" and (revival := self._revive(ctx, signer, policy)) is not None:
            return "rejected" if revival == "replaced" else None
        if reason == "rejected" and self._restored(ctx, signer, policy):
            reason, trigger = "restored", "store"
        self._say_paused(ctx, now, reason)
        ctx.begin("issue")
        started = self.timer()
        reason = self._issue(ctx, signer, policy, reason, trigger)
        self._complete(ctx, signer, policy, emergency, resumed=False)
        self.metrics.rotation_duration.labels(credential=ctx.ref.name).observe(self.timer() - started)
        self._recovered(ctx)
        return reason

    def _say_paused(self, ctx: _Ctx, now: float, reason: str) -> None:
        """A paused credential rotates only when it must (rejected, forced, emergency): say so."""
        pause = ctx.state.paused(now)
        if pause is None:
            return
        until = "until resumed" if pause.until is None else f"for {_age(pause.until - now)} more"
        log.warning(
            "%s: paused by %s (%s), %s; rotating anyway: %s",
            ctx.ref.name,
            pause.by,
            pause.reason or "no reason given",
            until,
            _WHY_PAUSE_YIELDS.get(reason, reason),
        )

    def _restored(self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy) -> bool:
        """The current key is refused: is the state older than the wallet's keys (restored from a
        backup taken before a rotation)? The CLOB then holds a key at the nonce the state would
        issue next, which only a later rotation makes, and the current key is gone at its nonce.

        If so, that is said (a warning, ``recover restored``), the current key goes to the history
        as ``gone-before-restore`` (not as invalidated by the server: its revocation was confirmed
        before the backup was put back), and the keys at the nonces past it that no other state
        of the wallet holds retire with grace (bots may hold one: it was published before the
        restore). The rotation that follows (reason ``restored``) issues past them: nothing is
        left unaccounted for (I3). Costs two ``derive`` calls, only for a refused key."""
        cur = ctx.state.current
        if cur is None:
            return False
        t = self.timer()
        nonce = max(ctx.state.next_nonce, policy.start_nonce)
        beyond = ctx.ops.at_nonce(nonce)  # None for kinds without nonces: nothing to tell by
        if beyond is None:
            return False
        at_current = ctx.ops.at_nonce(cur.nonce)
        if at_current is not None and at_current.api_key == cur.api_key:
            return False  # the key exists: refused for another reason than being gone
        theirs, _busy = self.wallet_siblings(ctx.ref, ctx.ops.address())
        found = [beyond]
        while len(found) < RESTORE_WALK:
            more = ctx.ops.at_nonce(nonce + len(found))
            if more is None:
                break
            found.append(more)
        ours = [k for k in found if k.api_key not in theirs]
        now = self.clock()
        state = ctx.state
        for k in ours:
            # Issued after the backup: when, by whom and why is not known here (the audit logs say).
            adopted = replace(k, created_at=0.0)
            state = state.with_issued(adopted, reason="unrecorded", trigger="store", worker=None)
            state = state.with_retired(adopted, now, "restored")
        retiring = (
            *state.retiring,
            *(Retiring(replace(k, created_at=0.0), now, now + policy.grace, "restored") for k in ours),
        )
        state = replace(state, current=None, retiring=retiring, next_nonce=nonce + len(found))
        state = state.with_gone(cur, "gone-before-restore", now, worker=self.worker, limit=ctx.history_limit)
        self._save(ctx, state)
        nonces = [k.nonce for k in found]
        log.warning(
            "%s: the state is older than the wallet's keys (restored from a backup?): the current key "
            "%s at nonce %d is gone, and the CLOB holds keys at nonces %s that the state never recorded; "
            "%d of them retire with grace, and a new key is issued past them",
            ctx.ref.name,
            cur.masked,
            cur.nonce,
            nonces,
            len(ours),
        )
        self._event(
            ctx,
            "recover",
            "restored",
            t,
            level=logging.WARNING,
            nonce=cur.nonce,
            key=cur.masked,
            found=nonces,
            retiring=[k.masked for k in ours],
        )
        return True

    def _failed(self, ctx: _Ctx, exc: RotatorError, t0: float, policy: Policy) -> PassResult:
        self.metrics.rotations.labels(credential=ctx.ref.name, result="failure").inc()
        if isinstance(exc, Blocked) or isinstance(exc.__cause__, Blocked):
            self.metrics.clob_blocked.labels(credential=ctx.ref.name).set(1)
        # A signer that cannot be used (known at start, or a remote source refusing when first
        # asked) is the credential's own problem, whatever step asked for it.
        step: Step = (
            exc.step
            if isinstance(exc, RotationError)
            else "signer"
            if isinstance(exc, SignerError)
            else ctx.step
        )
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
        # Not ready: a signer that cannot be used, or a state this worker cannot read or may not
        # (a newer format, garbage, denied). A store that is down for a while says nothing about it.
        unreadable = step == "read" and isinstance(exc, (Corrupt, AccessDenied))
        ready = False if step == "signer" or unreadable else (None if step == "read" else True)
        return self._finish(ctx, "failed", t0, error=str(exc), failed_step=step, policy=policy, ready=ready)

    def _finish(
        self,
        ctx: _Ctx,
        outcome: Outcome,
        t0: float,
        error: str | None = None,
        failed_step: Step | None = None,
        plan: tuple[str, ...] = (),
        *,
        policy: Policy | None = None,
        reason: str | None = None,
        ready: bool | None = True,
    ) -> PassResult:
        name = ctx.ref.name
        state = ctx.state
        now = self.clock()
        # A pass that could not read the state knows nothing about it: keep the last known gauges.
        known = None if failed_step == "read" else state
        self.metrics.observe_pass(
            name,
            failed=outcome == "failed",
            now=now,
            state=known,
            next_rotation=next_rotation(state, now, policy) if known is not None and policy else None,
            next_window=_next_window(policy, now),
            ready=ready,
        )
        if outcome in ("rotated", "revoked") or ctx.reached:
            self.metrics.clob_blocked.labels(credential=name).set(0)
        if failed_step != "read" and ctx.policy is not None:
            self.metrics.observe_key_model(name, key_model(state, ctx.policy))
        pause = state.paused(now)
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
            revoked_keys=tuple(ctx.revoked_keys),
            paused=pause is not None and known is not None,
            reason=reason,
        )

    def _dry_run(
        self,
        ctx: _Ctx,
        policy: Policy,
        now: float,
        force_nonce: int | None,
        emergency: bool,
        t0: float,
        problem: str | None = None,
    ) -> PassResult:
        """What this pass would do, why, and at which nonce. Changes nothing and asks the CLOB
        nothing (so a rejected current key goes unnoticed); reads the consumers' acknowledgements
        as the real pass does, so it revokes early where the real pass would. A credential whose
        signer cannot be used says ``would-fail`` and why, first (the real pass would stop there),
        then what it would do with one."""
        state = ctx.state
        plan: list[tuple[Outcome, str]] = []
        if problem is not None:
            plan.append(("would-fail", f"would-fail: {problem}"))
        if state.pending is not None:
            plan.append(("would-resume", f"would-resume nonce {state.pending.nonce}"))
        elif (reason := rotation_reason(state, now, policy, force_nonce, emergency=emergency)) is not None:
            if reason in ("due", "schedule", "max-age") and state.current is not None:
                reason = f"{reason}, age {_age(now - state.current.created_at)}"
            nonce = max(state.next_nonce, policy.start_nonce)
            plan.append(("would-rotate", f"would-rotate ({reason}) nonce {nonce}"))
        pause = state.paused(now)
        if pause is not None:
            until = "until resumed" if pause.until is None else f"for {_age(pause.until - now)} more"
            plan.append(("nothing-due", f"paused by {pause.by} {until}"))
        due = (
            list(state.retiring)
            if emergency
            else due_revocations(state, now, self._acks(ctx, now, policy), policy)
        )
        plan += [("would-revoke", would_revoke(entry, now, emergency)) for entry in due]
        outcome: Outcome = next((kind for kind, _ in plan if kind != "nothing-due"), "nothing-due")
        return self._finish(
            ctx, outcome, t0, plan=tuple(text for _, text in plan), policy=policy, ready=problem is None
        )

    # -- steps ------------------------------------------------------------------------------------
    def _reconcile_publish(self, ctx: _Ctx) -> None:
        """Consumers must see ``current`` where the config says: finish a promotion whose publish was
        interrupted, and publish it again at once where the credential's path moved. The old path
        is left as it is (a store may hold other things there, and the worker deletes nothing): its
        key works until it is revoked, at the end of grace after the next rotation."""
        cur = ctx.state.current
        if cur is None:
            return
        path, recorded = ctx.ref.path, ctx.state.published_path
        t = self.timer()
        if ctx.state.published_nonce == cur.nonce:
            if recorded == path:
                return
            if recorded is None:
                # A state from before the path was recorded: look once at what the path holds.
                published = self.store_call("read_published", lambda: self.store.read_published(ctx.ref))
                if published is not None and published.api_key == cur.api_key:
                    self._save(ctx, replace(ctx.state, published_path=path))
                    return
        self._publish(ctx, cur)
        moved = recorded if recorded is not None and recorded != path else None
        self._event(
            ctx, "publish", "republished", t, nonce=cur.nonce, key=cur.masked, path=path, moved_from=moved
        )
        if moved is not None:
            log.warning(
                "%s: the configured path moved from %s to %s: the current key %s is published at %s "
                "now; %s is left as it is (its key works until it is revoked, at the end of grace after "
                "the next rotation): point consumers at %s and remove it",
                ctx.ref.name,
                moved,
                path,
                cur.masked,
                path,
                moved,
                path,
            )

    def _publish(self, ctx: _Ctx, key: Key) -> None:
        """Publish ``key`` and record that it is published, and where."""
        self._store_publish(ctx, key)
        state = ctx.state.with_published(key, self.clock())
        self._save(ctx, replace(state, published_nonce=key.nonce, published_path=ctx.ref.path))

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
            ctx.ops.delete(entry.key)
            how: Event = "deleted"
            if not ctx.ops.confirm_deleted(entry.key):
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
                at_nonce = ctx.ops.lookup(entry.key) if ctx.ops.authority else entry.key
                gone = at_nonce is None
                if not gone and self._revived_to_delete(ctx, entry, at_nonce):
                    return
            except Cancelled:
                raise  # the worker is stopping: never taken for an answer about a key
            except ClobError:
                gone = False
            if not gone:
                # Without a signer nothing new can be learnt soon: ask again rarely (it costs /auth/*).
                self._recheck_later(
                    ctx, entry, RECHECK_LIVE_KEY if ctx.ops.authority else RECHECK_WITHOUT_SIGNER
                )
                self._event(
                    ctx, "revoke", "not-yet-revocable", t, nonce=entry.key.nonce, key=entry.key.masked
                )
                return
            how = "already-gone"
        except Unrevocable as exc:
            # Nothing this worker holds can sign its DELETE (a builder key whose secret was lost): an
            # operator revokes it by hand, and the authority's listing says when it is gone.
            if not self._gone_at_nonce(ctx, entry.key):
                self._recheck_later(ctx, entry, RECHECK_WITHOUT_SIGNER)
                self._event(
                    ctx,
                    "revoke",
                    "unrevocable",
                    t,
                    nonce=entry.key.nonce,
                    key=entry.key.masked,
                    error=str(exc),
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
        revoked = ctx.state.with_revoked(
            entry, how, self.clock(), worker=self.worker, limit=ctx.history_limit
        )
        self._save(ctx, revoked)
        self.metrics.revocations.labels(credential=name, result=how).inc()
        ctx.revoked += 1
        ctx.revoked_keys.append(f"nonce {entry.key.nonce} key={entry.key.masked}")
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
            who = ", ".join(f"{a.consumer_id} (holds {masked_prefix(a.key_prefix)})" for a in lagging)
            log.warning("%s: revoked key %s at the end of grace; lagging: %s", name, entry.key.masked, who)
            self._event(
                ctx, "revoke", "forced", t, key=entry.key.masked, lagging=[a.consumer_id for a in lagging]
            )

    def _revived_to_delete(self, ctx: _Ctx, entry: Retiring, at_nonce: Key | None) -> bool:
        """A retiring key that lapsed on a wallet known to revive keys (py-clob-client-v2 #40) refuses
        its own DELETE, and derive still finds it: bring it back with a create at its nonce, then
        revoke it. True when that was done (and recorded)."""
        model = ctx.state.key_model
        if (
            ctx.signer is None
            or model is None
            or model.revives is not True
            or at_nonce is None
            or at_nonce.api_key != entry.key.api_key
        ):
            return False
        try:
            back = self.clob.create_key(ctx.signer(), entry.key.nonce)
        except Rejected:
            return False  # live after all (propagating): the recheck tries again
        if back.api_key != entry.key.api_key:
            # Not the lapsed key but a new one at its nonce: recorded in its place, then revoked.
            back = replace(back, created_at=self.clock())
            moved = replace(entry, key=back)
            retiring = tuple(moved if r == entry else r for r in ctx.state.retiring)
            self._save(ctx, replace(ctx.state, retiring=retiring))
            entry = moved
        self.metrics.keys_revived.labels(credential=ctx.ref.name).inc()
        self._event(ctx, "revoke", "revived", self.timer(), nonce=entry.key.nonce, key=entry.key.masked)
        self._revoke(ctx, entry)
        return True

    def _may_start(self, ctx: _Ctx, step: Step) -> None:
        """Before a step that starts work on the CLOB: stop here when the worker got SIGTERM or a
        daemon replica lost the leader lease. Nothing is left half-done: a stopped pass changed
        nothing after its last completed step, and the next pass (or replica) takes it from there."""
        if self.stopping():
            ctx.begin(step)
            raise _Stopped()

    def _gone_at_nonce(self, ctx: _Ctx, key: Key) -> bool:
        """Whether the authority (``derive`` at its nonce, L1; a listing for the kinds without nonces)
        finds no ``key`` any more. No authority, or an answer that cannot tell, confirms nothing."""
        if not ctx.ops.authority:
            return False
        try:
            live = ctx.ops.lookup(key)
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError:
            return False
        return live is None or live.api_key != key.api_key

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
        ctx.reached = True
        self._checked[ctx.ref.name] = (key.api_key, self.clock())

    def _probe_current(self, ctx: _Ctx) -> str | None:
        cur = ctx.state.current
        assert cur is not None
        t = self.timer()
        try:
            ctx.ops.verify(cur)
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
            ctx.ops.verify(cur)
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

    def _issue(
        self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy, reason: str, trigger: str
    ) -> str:
        """Step 4a: find the nonce and durably record the intent before any key exists. Returns the
        reason the intent records (a bootstrap may turn out to recover or adopt a key)."""
        self._may_start(ctx, "issue")
        t = self.timer()
        bootstrap = ctx.state.current is None and not ctx.state.history and not ctx.state.retiring
        if bootstrap and self._recover_published(ctx, policy):
            reason = "recovered"  # a lost state: the published key is ours, adopted (it retires now)
        nonce = max(ctx.state.next_nonce, policy.start_nonce)
        if bootstrap:
            nonce = self._bootstrap_nonce(ctx, policy, nonce)
            if ctx.state.current is not None and reason != "recovered":
                reason = "adopted"
        if reason in ("recovered", "adopted"):
            trigger = "store"
        # Kinds without nonces list their keys first: a lost answer is found again by elimination.
        listed = ctx.ops.snapshot()
        now = self.clock()
        pending = Pending(
            nonce=nonce,
            started_at=now,
            owner=self.owner,
            lease_until=now + policy.lease,
            address=ctx.ops.address(),  # only this wallet can find a key made at this nonce again
            reason=reason,
            trigger=trigger,
            listed=listed,
        )
        self._save(ctx, replace(ctx.state, pending=pending, next_nonce=max(ctx.state.next_nonce, nonce + 1)))
        ctx.reason = reason
        self._event(ctx, "intent", "recorded", t, nonce=nonce, reason=reason, trigger=trigger)
        return reason

    def _recover_published(self, ctx: _Ctx, policy: Policy) -> bool:
        """A bootstrap over a published key: the state was lost (deleted by hand, a fresh store
        over an old published path), not never written. Returns True when the key was adopted.

        The published key is ours when this wallet's own L1 derive finds that very key at its
        nonce: then it becomes ``current`` (and this pass retires it with its grace, as consumers
        hold it). Keys still live up to :data:`RECOVER_BELOW` nonces below it were probably retiring
        when the state was lost, but a key made by hand is live at such a nonce too. One is provably
        ours when the store itself published it at this path before (``Store.ever_published``): it
        retires with reason ``recovered`` and its grace. A key another state in the store manages (a
        shared wallet) is left to it. Any other is retired only under ``adopt_existing`` (keys found
        on the wallet are ours), and otherwise left alone and reported unmanaged at once, each in a
        warning: never walked past in silence.
        """
        t = self.timer()
        published = self.store_call("read_published", lambda: self.store.read_published(ctx.ref))
        if published is None or published.kind != ctx.ops.kind:
            return False
        wallet = ctx.ops.address()
        if published.address.lower() != wallet.lower():
            log.warning(
                "%s: no state, and the published key %s is for wallet %s, not the configured %s: "
                "leaving it alone (revoke it by hand if it is no longer used)",
                ctx.ref.name,
                published.masked,
                published.address,
                wallet,
            )
            self._event(ctx, "recover", "other-wallet", t, nonce=published.nonce, key=published.masked)
            return False
        live = ctx.ops.lookup(published)
        if live is None or live.api_key != published.api_key:
            self._event(ctx, "recover", "published-not-live", t, nonce=published.nonce, key=published.masked)
            return False
        below = range(max(policy.start_nonce, live.nonce - RECOVER_BELOW), live.nonce)
        found = [k for k in (ctx.ops.at_nonce(n) for n in below) if k is not None]
        claimed, busy = self.wallet_siblings(ctx.ref, wallet) if found else (set(), False)
        found = [k for k in found if k.api_key not in claimed]
        proven = (
            self.store_call("read_published", lambda: self.store.ever_published(ctx.ref, found))
            if found
            else set()
        )
        # A sibling's rotation in flight may hold an unrecorded key at one of these nonces.
        adopted_too = policy.adopt_existing and not busy
        retire = [k for k in found if k.api_key in proven or adopted_too]
        left = [k for k in found if k not in retire]
        now = self.clock()
        entries = tuple(
            Retiring(replace(k, created_at=0.0), now, now + policy.grace, "recovered") for k in retire
        )
        # Already published as it is: record it (age unknown, so due now) without publishing again.
        adopted = replace(live, created_at=0.0)
        state = ctx.state.with_issued(adopted, reason="recovered", trigger="store", worker=self.worker)
        for entry in entries:
            state = state.with_issued(entry.key, reason="recovered", trigger="store", worker=self.worker)
            state = state.with_retired(entry.key, now, "recovered")
        state = replace(
            state,
            current=adopted,
            next_nonce=live.nonce + 1,
            published_nonce=live.nonce,
            published_path=ctx.ref.path,
            retiring=(*state.retiring, *entries),
        )
        self._save(ctx, self._noting_unmanaged(ctx, state, left, claimed))
        self._event(ctx, "recover", "adopted-published", t, nonce=live.nonce, key=live.masked)
        for k in retire:
            why = "published-before" if k.api_key in proven else "adopt-existing"
            self._event(ctx, "recover", "retiring", t, nonce=k.nonce, key=k.masked, proof=why)
        for k in left:
            log.warning(
                "%s: state lost; key %s at nonce %d below the published one is live, but this store never "
                "published it (as far as it remembers), so it is not provably rotator's: left alone and "
                "reported unmanaged (set adopt_existing to retire such keys, or revoke it by hand)",
                ctx.ref.name,
                k.masked,
                k.nonce,
            )
            self._event(ctx, "recover", "unproven-key-left", t, nonce=k.nonce, key=k.masked)
        return True

    def _bootstrap_nonce(self, ctx: _Ctx, policy: Policy, nonce: int) -> int:
        """No key of ours yet: nonces that already hold a key were made by hand, not by us. Each one
        walked past is reported unmanaged (with ``adopt_existing``, the first is adopted instead).
        Kinds without nonces have none to walk (``at_nonce`` finds nothing)."""
        walked: list[Key] = []
        for _ in range(MAX_NONCE_WALK):
            existing = ctx.ops.at_nonce(nonce)
            if existing is None:
                if walked:
                    self._save(ctx, self._noting_unmanaged(ctx, ctx.state, walked))
                return nonce
            if policy.adopt_existing and ctx.state.current is None:
                self._adopt(ctx, existing)
            else:
                log.warning(
                    "%s: nonce %d of this wallet already holds key %s that rotator has no record of: "
                    "left alone and reported unmanaged (set adopt_existing to adopt and retire it, or "
                    "revoke it by hand)",
                    ctx.ref.name,
                    nonce,
                    existing.masked,
                )
                self._event(ctx, "bootstrap", "nonce-taken", self.timer(), nonce=nonce, key=existing.masked)
                walked.append(existing)
            nonce += 1
        raise RotationError("issue", f"no free nonce in {MAX_NONCE_WALK} tries from {policy.start_nonce}")

    def _adopt(self, ctx: _Ctx, key: Key) -> None:
        t = self.timer()
        if key.api_key not in self.clob.list_keys(key):
            raise RotationError("adopt", f"existing key {key.masked} at nonce {key.nonce} does not verify")
        # Unknown age: created_at 0 makes it due, so this same pass retires it with a grace window.
        adopted = replace(key, created_at=0.0)
        state = ctx.state.with_issued(adopted, reason="adopted", trigger="store", worker=self.worker)
        self._save(ctx, replace(state, current=adopted, next_nonce=key.nonce + 1))
        self._publish(ctx, adopted)
        self._event(ctx, "adopt", "adopted", t, nonce=key.nonce, key=key.masked)

    def _complete(
        self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy, emergency: bool, resumed: bool = True
    ) -> None:
        """Steps 4b-7 for the pending rotation. ``resumed``: the intent was found, not just recorded."""
        pending = ctx.state.pending
        assert pending is not None
        self._check_wallet(pending, ctx.ops)
        # The strategy is data (the key model): on a wallet that keeps one key the create killed the
        # published key, so the new one is published in the same step, and verified after it.
        at_once = keeps_one_key(ctx.state, policy)
        if pending.key is None:
            key = self._obtain(ctx, policy, fresh=pending.owner == self.owner and not resumed)
            assert ctx.state.pending is not None
            pending = replace(ctx.state.pending, key=key)  # at the nonce the key is at (a walk moves it)
            issued = ctx.state.with_issued(
                key,
                reason=pending.reason or "unrecorded",
                trigger=pending.trigger or "schedule",
                worker=self.worker,
                at=key.created_at,
            )
            if at_once:
                ctx.state = replace(issued, pending=pending)  # saved by the promotion, next
            else:
                self._save(ctx, replace(issued, pending=pending))
        assert pending.key is not None
        if at_once:
            old = self._promote(ctx, pending.key, policy, emergency)
            self._verify(ctx, pending.key, policy, published=True)
        else:
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
    def _check_wallet(pending: Pending, ops: KeyOps) -> None:
        """A rotation in flight belongs to the wallet that started it. Deriving with another wallet
        would find nothing and create a key there, orphaning the one the crash may have left at
        (old wallet, nonce); promoting a recorded key would publish the old wallet's key."""
        recorded = pending.wallet
        if recorded is None:  # a schema-1 intent: it never said, so nothing to check against
            return
        configured = ops.address()
        if configured.lower() != recorded.lower():
            raise RotationError(
                "resume",
                f"the rotation in flight (nonce {pending.nonce}) was started with wallet {recorded}, "
                f"but the configured signer is wallet {configured}: configure that wallet's signer "
                "again until a pass completes it, then change wallets",
            )

    def _obtain(self, ctx: _Ctx, policy: Policy, fresh: bool) -> Key:
        """Step 4b: the key for the recorded intent, stamped on the pass's clock (the CLOB's): its
        ``created_at`` is the start of the key's age, which every worker compares with its own now."""
        key = self._obtain_key(ctx, policy, fresh)
        return replace(key, created_at=self.clock())

    def _obtain_key(self, ctx: _Ctx, policy: Policy, fresh: bool) -> Key:
        """The key of the intent in ``ctx.state.pending``, made or found again by the kind's strategy
        (:meth:`rotator.kinds.KeyOps.obtain`). ``fresh``: this pass has just recorded the intent, so
        no create of it has reached the CLOB yet.

        A key at the intent's nonce that no create of the intent made is someone else's (made by
        hand, or by another tool on the wallet), who holds its secret: it is never published. That
        is the case when the first create of a fresh intent answers 400 (the nonce was taken before
        it), or when the key's id (a UUIDv7) predates the intent (:func:`made_before_intent`). The
        intent then walks past it to the next nonce, as a bootstrap does, and the key is reported
        unmanaged. Any other key found there is the intent's own (DESIGN step 4b). A key found by
        listing that is the intent's but unusable (``lost-secret``), or keys of which none can be
        told to be the intent's (``ambiguous``), are set aside the same way (:meth:`_set_aside`).
        """
        ctx.begin("create")
        for _ in range(MAX_NONCE_WALK):
            pending = ctx.state.pending
            assert pending is not None
            t = self.timer()
            got = ctx.ops.obtain(pending, fresh, partial(self._known, ctx), policy.create_window)
            fresh = True  # whatever is set aside or walked past, the next intent has sent no create
            if got.key is None or got.how == "lost-secret":
                self._set_aside(ctx, policy, got, t)
                continue
            key = got.key
            if got.how != "nonce-taken" and not made_before_intent(key, pending, ctx.state.current):
                self._event(ctx, "create", got.how, t, nonce=pending.nonce, key=key.masked)
                return key
            self._walk_past(ctx, policy, key, t)
        raise RotationError("create", f"no free nonce in {MAX_NONCE_WALK} tries")

    def _set_aside(self, ctx: _Ctx, policy: Policy, got: Obtained, started: float) -> None:
        """A key found by listing for the intent that cannot become current, in one compare-and-set
        before any new create: the intent's own builder key whose secret was lost with its create's
        answer retires at once (reason ``lost-secret``: held, reported, revoked by an operator), and
        keys of which none is provably the intent's are reported unmanaged. The intent moves to the
        next serial with a new snapshot, which lists them."""
        pending = ctx.state.pending
        assert pending is not None
        now = self.clock()
        state = ctx.state
        if got.how == "lost-secret":
            assert got.key is not None
            lost = got.key
            state = state.with_issued(
                lost,
                reason=pending.reason or "unrecorded",
                trigger=pending.trigger or "schedule",
                worker=self.worker,
            )
            state = state.with_retired(lost, now, "lost-secret")
            state = replace(state, retiring=(*state.retiring, Retiring(lost, now, now, "lost-secret")))
            keys = [lost]
        else:
            keys = list(got.others)
            state = self._noting_unmanaged(ctx, state, keys, claimed=set())
        moved = self._next_intent(ctx, policy, pending, now)
        self._save(ctx, replace(state, pending=moved, next_nonce=max(state.next_nonce, moved.nonce + 1)))
        shown = ", ".join(k.masked for k in keys)
        if got.how == "lost-secret":
            log.warning(
                "%s: builder key %s was made by this rotation's create, whose answer was lost: its secret "
                "is gone, so it can be neither published nor revoked by rotator (its DELETE is signed with "
                "its own secret). It is kept as retiring (lost-secret): revoke it in Polymarket's web UI "
                "(settings, builder keys); rotator confirms it gone. Creating another.",
                ctx.ref.name,
                shown,
            )
        else:
            log.warning(
                "%s: keys %s were made while this rotation's create was in flight and none of them can be "
                "told to be its own (docs/kinds.md): none is taken; each is reported unmanaged (`rotator "
                "reap` revokes read-only ones). Creating another.",
                ctx.ref.name,
                shown,
            )
        self._event(
            ctx,
            "create",
            got.how,
            started,
            level=logging.WARNING,
            nonce=pending.nonce,
            keys=[k.masked for k in keys],
        )
        self._may_start(ctx, "create")

    @staticmethod
    def _next_intent(ctx: _Ctx, policy: Policy, pending: Pending, now: float) -> Pending:
        """The intent moved on to a fresh create: the next serial or nonce, a new start, a new lease
        and, for a kind without nonces, a new snapshot of its listed keys."""
        return replace(
            pending,
            nonce=pending.nonce + 1,
            started_at=now,
            lease_until=now + policy.lease,
            listed=ctx.ops.snapshot(),
        )

    def _walk_past(self, ctx: _Ctx, policy: Policy, key: Key, started: float) -> None:
        """Move the intent from ``key``'s nonce, which someone else's key holds, to the next one, and
        report that key unmanaged: one compare-and-set, before any create at the next nonce."""
        pending = ctx.state.pending
        assert pending is not None
        now = self.clock()
        moved = self._next_intent(ctx, policy, pending, now)
        state = self._noting_unmanaged(ctx, ctx.state, [key])
        self._save(ctx, replace(state, pending=moved, next_nonce=max(state.next_nonce, moved.nonce + 1)))
        log.warning(
            "%s: nonce %d of this wallet already holds key %s, which this rotation did not make (made "
            "by hand, by another tool or for another credential; whoever made it holds its secret): "
            "never published here, left alone (reported unmanaged unless another credential of this "
            "store manages it); trying nonce %d",
            ctx.ref.name,
            key.nonce,
            key.masked,
            moved.nonce,
        )
        self._event(ctx, "create", "nonce-taken", started, nonce=key.nonce, key=key.masked, next=moved.nonce)
        self._may_start(ctx, "create")

    def _noting_unmanaged(
        self, ctx: _Ctx, state: CredentialState, keys: Sequence[Key], claimed: set[str] | None = None
    ) -> CredentialState:
        """``state`` with ``keys`` (live on this credential's wallet, not its own: found by a walk past
        a taken nonce or by a lost state's recovery) in its audit record as unmanaged, so the gauge
        and ``status`` say so at once rather than at the next audit, which still reports them as new.
        Keys another state in the store manages (``claimed``, read when not given) are left out.
        Before any audit the record's ``at`` is 0: the first audit stays due."""
        if keys and claimed is None:
            claimed, _busy = self.wallet_siblings(ctx.ref, keys[0].address)
        found = [k for k in keys if k.api_key not in (claimed or set())]
        if not found:
            return state
        now = self.clock()
        record = state.audit or AuditRecord(0.0)
        nonces = {k.masked: k.clob_nonce for k in found}
        kept = tuple(replace(u, nonce=nonces.get(u.key_prefix, u.nonce)) for u in record.unmanaged)
        seen = {u.key_prefix for u in kept}
        added = tuple(
            UnmanagedKey(k.masked, k.clob_nonce, now, k.kind) for k in found if k.masked not in seen
        )
        return replace(state, audit=replace(record, unmanaged=(*kept, *added)))

    def _verify(self, ctx: _Ctx, key: Key, policy: Policy, *, published: bool = False) -> None:
        """Step 5: the new key must work (L2) before anyone sees it. Retries through propagation delay,
        until ``verify_timeout`` after its creation. ``published``: a wallet that keeps one key, whose
        new key was published at its creation (:func:`keeps_one_key`): one that never verifies stays
        (the old one is dead too), and the next pass's probe replaces it."""
        ctx.begin("verify")
        t = self.timer()
        deadline = max(key.created_at + policy.verify_timeout, self.clock() + policy.verify_backoff)
        delay = policy.verify_backoff
        attempts = 0
        refused = False
        while True:
            attempts += 1
            try:
                ctx.ops.verify(key)
                self._checked_ok(ctx, key)
                # How long the CLOB refused the new key (clob-client #311): what an operator sizes
                # verify_timeout by. Measured only when it refused at first (else 0).
                live_after = round(max(0.0, self.clock() - key.created_at), 1) if refused else 0.0
                self.metrics.key_propagation.labels(credential=ctx.ref.name).set(live_after)
                ctx.live_after = live_after
                self._event(
                    ctx,
                    "verify",
                    "verified",
                    t,
                    nonce=key.nonce,
                    key=key.masked,
                    attempts=attempts,
                    live_after=live_after,
                )
                return
            except Unauthorized as exc:
                refused, problem = True, str(exc)  # not live yet: worth waiting out
            except (Transient, RateLimited) as exc:
                problem = str(exc)  # the CLOB hiccuped: worth waiting out
            if self.clock() + delay > deadline:
                break
            self.sleep(delay)
            delay = min(delay * 2, policy.verify_backoff_cap)
        if published:
            raise RotationError(
                "verify",
                f"new key {key.masked}, published at once (the wallet keeps one key), did not verify within "
                f"{policy.verify_timeout:g}s ({problem}); the next pass probes it and replaces it if refused",
            )
        self._abandon(ctx, key)
        raise RotationError(
            "verify", f"new key {key.masked} did not verify within {policy.verify_timeout:g}s ({problem})"
        )

    def _abandon(self, ctx: _Ctx, key: Key) -> None:
        """A key that never verified is never published; it is revoked like any other (I3, I5)."""
        t = self.timer()
        now = self.clock()
        entry = Retiring(key=key, retired_at=now, revoke_after=now, reason="unverified")
        state = ctx.state.with_retired(key, now, "unverified")
        self._save(ctx, replace(state, pending=None, retiring=(*state.retiring, entry)))
        self._event(ctx, "verify", "abandoned", t, nonce=key.nonce, key=key.masked)
        self._revoke(ctx, entry)

    def _promote(self, ctx: _Ctx, key: Key, policy: Policy, emergency: bool) -> Key | None:
        """Step 6: the verified key becomes current; the old one retires with its grace deadline."""
        ctx.begin("promote")
        t = self.timer()
        now = self.clock()
        old = ctx.state.current
        state = ctx.state
        if old is not None and old.api_key == key.api_key:
            old = None  # a lapsed key brought back at its own nonce (a resumed revival): not retired
        elif old is not None and old.nonce == key.nonce:
            # A new key at the old one's nonce (a resumed revival made one): a nonce holds one key,
            # so the old one is gone; revoking it would wait for a derive that never comes empty.
            state = state.with_revoked(Retiring(old, now, now), "invalidated-by-server", now)
            old = None
        retiring = state.retiring
        if old is not None:
            revoke_after = now if emergency else now + policy.grace
            why = "emergency" if emergency else "rotated"
            retiring = (*retiring, Retiring(old, now, revoke_after, why))
            state = state.with_retired(old, now, why)
        self._save(
            ctx,
            replace(
                state,
                current=key,
                pending=None,
                retiring=retiring,
                rotations=state.rotations + 1,
                key_model=self._observed(ctx),
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
        """Step 7: does the server keep one key per wallet? An old key the CLOB already refuses is
        recorded as invalidated by the server once ``derive`` finds no such key left at its nonce, as
        a revocation's 401 is confirmed: one 401 may be a hiccup of the CLOB, and a key taken for dead
        while it lives would be tracked by nothing (I3). Unconfirmed, it stays retiring and is
        revoked at the end of its grace like any other."""
        ctx.begin("probe-old")
        t = self.timer()
        try:
            ctx.ops.verify(old)
        except Unauthorized:
            if not self._gone_at_nonce(ctx, old):
                self._event(
                    ctx,
                    "probe-old",
                    "unknown",
                    t,
                    nonce=old.nonce,
                    key=old.masked,
                    error="refused (401), but derive does not confirm it gone: it stays retiring",
                )
                return
            entry = next((r for r in ctx.state.retiring if r.key.api_key == old.api_key), None)
            if entry is not None:
                now = self.clock()
                gone = ctx.state.with_revoked(
                    entry, "invalidated-by-server", now, worker=self.worker, limit=ctx.history_limit
                )
                self._save(ctx, gone)
            self.metrics.old_key_invalidated.labels(credential=ctx.ref.name).inc()
            ctx.invalidated += 1
            self._event(ctx, "probe-old", "invalidated-by-server", t, nonce=old.nonce, key=old.masked)
            if ctx.reason not in (None, "rejected"):  # it worked before this rotation's create
                self._learn_keys(ctx, "one")
            return
        except Cancelled:
            raise  # the worker is stopping: never taken for an answer about a key
        except ClobError as exc:
            self._event(ctx, "probe-old", "unknown", t, nonce=old.nonce, key=old.masked, error=str(exc))
            return
        self._event(ctx, "probe-old", "still-valid", t, nonce=old.nonce, key=old.masked)
        self._learn_keys(ctx, "several")

    # -- what the worker learns about the wallet (issue 24) --------------------------------------------
    def _observed(self, ctx: _Ctx) -> KeyModel | None:
        """The state's key model with this pass's measurement of the new key's propagation folded in
        (written with the promotion, no write of its own)."""
        model = ctx.state.key_model
        seen = ctx.live_after
        known = model.propagation if model is not None else None
        if seen is None or (not seen and not known):
            return model  # nothing measured, or live at once as before: no field to add
        return replace(model or KeyModel(), propagation=seen)

    def _learn_keys(self, ctx: _Ctx, keys: str, by: str = "rotation") -> None:
        """Step 7's finding (the old key alive, or dead at once) is the wallet's key model from now
        on. Said once, when it changes; the rotation strategy follows it (:func:`keeps_one_key`). Only
        trading keys teach it: read-only and builder keys are several by design."""
        if not ctx.ops.learns_model:
            return
        model = ctx.state.key_model or KeyModel()
        if model.keys == keys:
            return
        t = self.timer()
        self._save(ctx, replace(ctx.state, key_model=replace(model, keys=keys, by=by, at=self.clock())))
        if keys == "one":
            log.warning(
                "%s: the wallet keeps one key (creating a key invalidated the previous one): its rotations "
                "publish each new key at once, without overlap (docs/real-clob.md)",
                ctx.ref.name,
            )
        self._event(ctx, ctx.step, "learned", t, keys=keys, previous=model.keys)

    def _revive(self, ctx: _Ctx, signer: Callable[[], Signer], policy: Policy) -> str | None:
        """The current key is refused. If derive still finds it at its nonce, it may have lapsed (401
        after minutes, py-clob-client-v2 #40), and a create at that nonce may bring back the identical
        key, which every bot already holds: no switch at all. Returns ``revived`` when it did,
        ``replaced`` when the create made a new key there (now current), None when the pass should
        rotate as usual.

        The create is an intent like any other (recorded first, I3): a new key made at the lapsed
        key's nonce becomes current through the ordinary steps, and a crash is resumed by the next
        pass. A wallet that does not revive (a new key, or the nonce refused) is not asked again.
        """
        cur = ctx.state.current
        model = ctx.state.key_model
        if cur is None or (model is not None and model.revives is False):
            return None
        self._may_start(ctx, "revive")
        ctx.begin("revive")
        t = self.timer()
        wallet = ctx.ops.address()
        if cur.address.lower() != wallet.lower():
            return None
        # Kinds without nonces have nothing at one (a lapse there is not known to come back).
        at_nonce = ctx.ops.at_nonce(cur.nonce)
        if at_nonce is None or at_nonce.api_key != cur.api_key:
            return None  # gone (deleted, expired) or replaced: nothing to revive; rotate
        now = self.clock()
        pending = Pending(cur.nonce, now, self.owner, now + policy.lease, address=wallet)
        self._save(ctx, replace(ctx.state, pending=pending))
        self._event(ctx, "intent", "recorded", t, nonce=cur.nonce, reason="revive")
        try:
            key = self.clob.create_key(signer(), cur.nonce)
        except Rejected:
            # The key is live at its nonce and only refuses reads for now (propagation, a passing
            # 401, py-clob-client #175): not a lapse. Rotate as for any refused key.
            self._save(ctx, replace(ctx.state, pending=None))
            self._event(ctx, "revive", "not-revived", t, nonce=cur.nonce, key=cur.masked)
            return None
        if key.api_key != cur.api_key:
            # A new key at the lapsed key's nonce, which therefore holds no other: the lapsed key is
            # gone for good. The new one is published at once (nothing else works) and verified after.
            key = replace(key, created_at=self.clock())
            self._save(
                ctx,
                replace(
                    ctx.state.with_revoked(Retiring(cur, now, now), "invalidated-by-server", self.clock()),
                    current=key,
                    pending=None,
                    rotations=ctx.state.rotations + 1,
                    key_model=self._revives(ctx, False),
                ),
            )
            self._publish(ctx, key)
            self._event(ctx, "revive", "not-revived", t, nonce=cur.nonce, key=key.masked, previous=cur.masked)
            self._verify(ctx, key, policy, published=True)
            return "replaced"
        first = model is None or model.revives is not True
        self._save(ctx, replace(ctx.state, pending=None, key_model=self._revives(ctx, True)))
        self.metrics.keys_revived.labels(credential=ctx.ref.name).inc()
        if first:
            log.warning(
                "%s: key %s at nonce %d lapsed (401, nothing at its nonce) and came back, identical, on a "
                "create at its nonce: this wallet's keys lapse (py-clob-client-v2 #40); rotator revives "
                "them (docs/real-clob.md)",
                ctx.ref.name,
                cur.masked,
                cur.nonce,
            )
        self._event(
            ctx,
            "revive",
            "revived",
            t,
            level=logging.WARNING if first else logging.INFO,
            nonce=cur.nonce,
            key=cur.masked,
        )
        # Verified from now: a revived key may be refused for a while as a new one is.
        self._verify(ctx, replace(cur, created_at=self.clock()), policy, published=True)
        return "revived"

    def _revives(self, ctx: _Ctx, revives: bool) -> KeyModel:
        model = ctx.state.key_model or KeyModel()
        return replace(model, revives=revives, revived_at=self.clock() if revives else model.revived_at)
