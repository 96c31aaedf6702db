"""Credentials whose state the store holds but the config no longer names (DESIGN.md "State").

Removing a credential from the config (or renaming it) must not forget its keys: its retiring keys
are still revoked on schedule (:func:`serve`, run by ``rotate --all`` and the daemon), ``status``
lists its state as orphaned, and ``rotator retire`` (:func:`retire`) revokes every key it holds and
then archives the state.

An orphan has no signer and no publish path any more. What needs neither still works: a retiring key
is revoked with a DELETE signed by its own L2 credentials. What needs the signer (``derive``, to tell
"already gone" from "still propagating" after a 401) degrades safely: the key stays retiring and is
tried again later, never recorded as revoked on a guess (I3).

This module drives the revocation step of :mod:`rotator.rotation` (``Rotator._revoke`` and its pass
context) rather than copying it, so a revocation here is confirmed exactly as in a rotation pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial

from rotator.errors import RotatorError
from rotator.model import CredentialRef, CredentialState, Event, Key, PassResult, Pending, Retiring
from rotator.rotation import (
    CREATE_WINDOW,
    Policy,
    Rotator,
    _Conflict,
    _Ctx,
    due_revocations,
    lease_blocked,
    would_revoke,
)
from rotator.signers.base import Signer

log = logging.getLogger("rotator.orphans")

#: ``Retiring.reason`` of the keys ``retire`` revokes.
RETIRED = "retired"
#: What clamping an orphan's state takes for its policy (rotation.clamp_deadlines, issue 22): its own
#: left with its config. A retiring key whose deadline a wrong clock wrote absurdly far ahead keeps a
#: day from now, longer than the graces in use, and is revoked then rather than never; a pending
#: lease runs one default lease.
ORPHAN_CLAMP = Policy(
    rotate_every=86_400.0, grace=86_400.0, verify_timeout=180.0, min_grace=0.0, consumer_ttl=0.0
)


def orphan_ref(name: str) -> CredentialRef:
    """How a store addresses an orphan: by name. The publish path is unknown (it was in the config),
    so nothing here publishes, reads the published key or reads acknowledgements (AWS keeps those
    on the published secret): the grace timer alone decides when a retiring key goes."""
    return CredentialRef(name, "")


def orphan_names(rot: Rotator, configured: Iterable[str]) -> list[str]:
    """Names of the states in the store that ``configured`` does not name, sorted.

    :raises StoreError: the store cannot be listed.
    """
    names = rot.store_call("list", rot.store.names)
    known = set(configured)
    return [n for n in names if n not in known]


def holds_keys(state: CredentialState) -> bool:
    """Does ``state`` still account for a key (or an intent that may have made one)?"""
    return state.current is not None or state.pending is not None or bool(state.retiring)


def serve(rot: Rotator, name: str, *, dry_run: bool = False) -> PassResult:
    """One pass over an orphan: revoke its retiring keys whose grace has passed. Never raises a
    RotatorError. The current key, the one its bots may still read, is left to :func:`retire`."""
    t0 = time.monotonic()
    ctx = _Ctx(orphan_ref(name), CredentialState(), None, signer=None)
    try:
        snap = rot.store_call("load", lambda: rot.store.load(ctx.ref))
        ctx.state, ctx.version = snap.state, snap.version
        rot.bind(ctx)
        now = rot.clock()
        if snap.version is not None:
            rot._clamp(ctx, ORPHAN_CLAMP, now, save=not dry_run)
        due = due_revocations(ctx.state, now)
        if dry_run:
            plan = tuple(would_revoke(entry, now) for entry in due)
            return rot._finish(ctx, "would-revoke" if due else "nothing-due", t0, plan=plan)
        ctx.begin("revoke")
        for entry in due:
            rot._revoke(ctx, entry)
    except _Conflict:
        rot._event(ctx, ctx.step, "lost-race", t0)
        return rot._finish(ctx, "lost-race", t0)
    except RotatorError as exc:
        log.error("%s (orphaned state): pass failed at %s: %s", name, ctx.step, exc)
        return rot._finish(ctx, "failed", t0, error=str(exc), failed_step=ctx.step)
    return rot._finish(ctx, "revoked" if ctx.revoked else "nothing-due", t0)


@dataclass(frozen=True, slots=True)
class Held:
    """A key (or an unresolved intent) that a state holds, as ``retire`` shows it: no secrets."""

    role: str  # current | retiring | pending | pending-intent
    nonce: int
    key: str | None  # masked id; None for an intent whose key cannot be known

    def __str__(self) -> str:
        return f"{self.role} nonce={self.nonce} key={self.key or '?'}"


@dataclass(slots=True)
class RetireResult:
    """What :func:`retire` did. ``outcome``: retired | would-retire | incomplete | nothing-stored |
    in-flight-elsewhere | lost-race | failed."""

    credential: str
    outcome: str
    held: list[Held] = field(default_factory=list)
    revoked: int = 0
    left: list[Held] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("retired", "would-retire")


def retire(
    rot: Rotator,
    name: str,
    signer: Callable[[], Signer] | None,
    *,
    dry_run: bool = False,
    create_window: float = CREATE_WINDOW,
) -> RetireResult:
    """Revoke every key the state of ``name`` holds (current, retiring, pending), each confirmed gone,
    then archive the state: it keeps its history and ``next_nonce`` (a credential added back under
    the name goes on from there) and holds no key, so nothing serves or lists it as orphaned.

    ``signer``: the credential's signer when the config still has it (``--force``), else None; it is
    what confirms a key answering 401 is gone and what finds the key of an intent recorded before a
    crash. Without it such keys stay in the state (retiring: the daemon keeps trying) and the result
    is ``incomplete``. ``create_window``: how long after an intent its create may have been answered
    (the config's ``clob.retry.deadline`` plus ``clob.timeout``): a listed key made later is not the
    intent's. The keys are first moved to ``retiring`` with a deadline of now in one write,
    so a crash part-way leaves them where every later pass revokes them (I3). Never raises a
    RotatorError.
    """
    ctx = _Ctx(orphan_ref(name), CredentialState(), None, signer=signer)
    result = RetireResult(name, "retired")
    try:
        snap = rot.store.load(ctx.ref)
        ctx.state, ctx.version = snap.state, snap.version
        rot.bind(ctx)
        if snap.version is None:
            result.outcome = "nothing-stored"
            return result
        state, now = ctx.state, rot.clock()
        pending = state.pending
        if pending is not None and lease_blocked(pending, now, rot.owner, rot.alive):
            result.outcome = "in-flight-elsewhere"
            result.error = f"a rotation by {pending.owner} holds the state until its lease ends"
            return result
        keys: list[tuple[str, Key]] = []
        if state.current is not None:
            keys.append(("current", state.current))
        keys += [("retiring", r.key) for r in state.retiring]
        intent: Held | None = None
        if pending is not None and pending.key is not None:
            keys.append(("pending", pending.key))
        elif pending is not None:
            ctx.begin("derive")
            found = _find(rot, ctx, pending, create_window)
            if found is not None:
                keys.append(("pending", found))
            elif not ctx.ops.authority:
                intent = Held("pending-intent", pending.nonce, None)
        result.held = [Held(role, k.nonce, k.masked) for role, k in keys] + ([intent] if intent else [])
        if dry_run:
            result.outcome = "would-retire"
            return result
        if not keys and pending is None:
            return result  # already retired (archived): nothing to write
        ctx.begin("retire")
        t = time.monotonic()
        before = {r.key.api_key for r in state.retiring}
        retiring = tuple(replace(r, revoke_after=now, reason=RETIRED) for r in state.retiring) + tuple(
            Retiring(k, now, now, RETIRED) for role, k in keys if k.api_key not in before
        )
        rot._save(
            ctx,
            replace(state, current=None, pending=pending if intent else None, retiring=retiring),
        )
        rot._event(ctx, "retire", "keys-retiring", t, keys=len(retiring))
        ctx.begin("revoke")
        for entry in ctx.state.retiring:
            rot._revoke(ctx, entry)
        result.revoked = ctx.revoked
        result.left = [Held("retiring", r.key.nonce, r.key.masked) for r in ctx.state.retiring]
        result.left += [intent] if intent else []
        done: Event = "incomplete" if result.left else "retired"
        result.outcome = done
        rot._event(ctx, "retire", done, t, revoked=ctx.revoked, left=len(result.left))
    except _Conflict:
        result.outcome = "lost-race"
        result.error = "another worker changed the state meanwhile; run retire again"
    except RotatorError as exc:
        result.outcome = "failed"
        result.error = f"({ctx.step}) {exc}"
    return result


def _find(rot: Rotator, ctx: _Ctx, pending: Pending, window: float) -> Key | None:
    """The key the intent ``pending`` may have made before a crash, when the state's kind can find
    it (derive with the signer at hand; the listing for read-only and builder keys) and it is there.
    Keys of which none is provably the intent's are left to the audit (reported unmanaged)."""
    if not ctx.ops.authority:
        return None
    found = ctx.ops.find(pending, partial(rot._known, ctx), window)
    return found.key if found is not None else None
