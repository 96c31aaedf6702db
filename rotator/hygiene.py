"""Wallet hygiene (issue 16): which keys does the wallet hold that rotator does not manage, and what
state is the account in.

:func:`audit` lists the wallet's keys of every kind, each signed with a trading credential's current
key: its L2 keys (``GET /auth/api-keys``), read-only keys (``GET /auth/readonly-api-keys``) and
builder keys (``GET /auth/builder-api-key``, the unrevoked ones), and asks whether the account is
closed-only (``GET /auth/ban-status/closed-only``): four ``/auth/*`` requests, paced by the adapter's
shared budget. A read-only or builder credential is not audited on its own: the audit of a trading
credential on its wallet covers it (issue 27). Keys that no state of the store holds are unmanaged:
counted in ``rotator_unmanaged_keys`` (and by kind in ``rotator_unmanaged_keys_by_kind``), logged
once each when first seen (masked id), and recorded in the state's ``audit`` so ``status`` shows them
and the next audit knows which are new.

:func:`reap` revokes the unmanaged keys the worker can reach: a key made at a nonce the wallet's
signer can ``derive`` (nonce 0, the SDKs' default, and every nonce from the credential's own
``start_nonce`` below ``next_nonce`` that holds no key of ours; never the nonces between, where a
team sharing the wallet through another store keeps its keys) is recovered and revoked with its own
DELETE, each confirmed gone as the rotation confirms its own revocations. A key at any other nonce
can be found (listed) but not revoked without its secret: it is reported as unreachable. Current,
retiring and pending keys are never touched, and nothing secret of a reaped key is kept or logged:
only its masked id and nonce. An unmanaged read-only key is always reachable (its DELETE names its id
and is signed with the trading key); an unmanaged builder key never is (its DELETE is signed with its
own secret, which only its maker holds): it is reported, to be revoked in Polymarket's web UI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from rotator.errors import Cancelled, ClobError, Rejected, RotatorError, Unauthorized
from rotator.kinds import KeyOps, ReadonlyOps, readonly_key
from rotator.model import AuditRecord, CredentialRef, CredentialState, Key, UnmanagedKey, mask
from rotator.rotation import Rotator, _Conflict, _Ctx
from rotator.signers.base import Signer

log = logging.getLogger("rotator.hygiene")


def managed_ids(state: CredentialState) -> set[str]:
    """Ids of the keys the state manages: current, retiring, and a pending key already recorded."""
    ids = {r.key.api_key for r in state.retiring}
    if state.current is not None:
        ids.add(state.current.api_key)
    if state.pending is not None and state.pending.key is not None:
        ids.add(state.pending.key.api_key)
    return ids


def managed_nonces(state: CredentialState) -> set[int]:
    """Nonces of the keys the state manages, a pending intent's included (its key may exist unrecorded)."""
    nonces = {r.key.nonce for r in state.retiring}
    if state.current is not None:
        nonces.add(state.current.nonce)
    if state.pending is not None:
        nonces.add(state.pending.nonce)
    return nonces


@dataclass(slots=True)
class AuditResult:
    """What :func:`audit` found. ``outcome``: audited | no-key (nothing to sign the list with) |
    in-flight (a rotation is pending: its key could be mistaken for an unmanaged one) | covered (a
    read-only or builder credential: its trading credential's audit covers the wallet) | failed.

    ``unmanaged_ids`` are the full ids, for :func:`reap` in the same process, and ``kinds`` the kind
    of each; they are never printed or stored (the record and every line show
    :func:`rotator.model.mask` forms)."""

    credential: str
    outcome: str
    record: AuditRecord | None = None
    new: list[str] = field(default_factory=list)
    unmanaged_ids: list[str] = field(default_factory=list)
    error: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


def audit(rot: Rotator, ref: CredentialRef, *, closed_only: bool = True) -> AuditResult:
    """Audit one credential's wallet and record what was found in its state. Never raises a
    RotatorError (a failure is the result's ``failed`` outcome, counted in ``rotator_audits_total``)."""
    name = ref.name
    ctx = _Ctx(ref, CredentialState(), None, timer=rot.timer)
    t = rot.timer()
    result = AuditResult(name, "audited")
    try:
        ctx.begin("audit")
        snap = rot.store_call("load", lambda: rot.store.load(ref))
        ctx.state, ctx.version = snap.state, snap.version
        if ctx.state.kind != "trading":
            result.outcome = "covered"
            result.error = f"the wallet audit of its trading credential {ctx.state.via} lists its keys"
            return result
        cur = ctx.state.current
        if cur is None:
            result.outcome = "no-key"
            return result
        if ctx.state.pending is not None:
            result.outcome = "in-flight"
            return result
        # The flag first: one request that never fails the audit, asked even when one of the key
        # lists below fails it (there are three of them since issue 27).
        flag = _closed_only(rot, cur, closed_only)
        listed = _listing(rot, cur)
        # Read again: a rotation that finished meanwhile (another worker) must not make its new key
        # look unmanaged. Anything either read manages is managed.
        again = rot.store_call("load", lambda: rot.store.load(ref))
        managed = managed_ids(ctx.state) | managed_ids(again.state)
        ctx.state, ctx.version = again.state, again.version
        if again.state.pending is not None:
            # A rotation started meanwhile: its key may be live and not yet recorded.
            result.outcome = "in-flight"
            return result
        ids = [i for i in dict.fromkeys(listed) if i and i not in managed]
        if ids:
            # The wallet may be shared (credentials at nonces far apart, start_nonce; read-only and
            # builder credentials on it): another credential's keys are managed too, and one
            # mid-rotation may hold a key not yet recorded.
            siblings, busy = rot.wallet_siblings(ref, cur.address)
            if busy:
                result.outcome = "in-flight"
                return result
            ids = [i for i in ids if i not in siblings]
        now = rot.clock()
        result.kinds = {i: listed[i] for i in ids}
        record = _record(ctx.state.audit, result.kinds, now, flag)
        result.new = [mask(i) for i in ids if mask(i) not in _reported(ctx.state.audit)]
        result.unmanaged_ids = ids
        result.record = record
        _save_record(rot, ctx, record)
    except _Conflict:
        result.error = "another worker changed the state meanwhile; the next audit records it"
        log.info("%s: audit not recorded: %s", name, result.error)
    except Cancelled:
        result.outcome, result.error = "failed", "the worker is stopping"
        return result
    except RotatorError as exc:
        rot.metrics.audits.labels(credential=name, result="failure").inc()
        result.outcome, result.error = "failed", str(exc)
        rot._event(ctx, "audit", "failed", t, level=logging.WARNING, error=str(exc))
        return result
    if result.record is not None:
        _observe(rot, name, result.record)
        rot.metrics.audits.labels(credential=name, result="success").inc()
        kinds = {mask(i): k for i, k in result.kinds.items()}
        for prefix in result.new:
            rot._event(
                ctx, "audit", "unmanaged-key", t, level=logging.WARNING, key=prefix, kind=kinds.get(prefix)
            )
        if result.record.closed_only:
            rot._event(ctx, "audit", "closed-only", t, level=logging.WARNING)
        rot._event(
            ctx,
            "audit",
            "audited",
            t,
            unmanaged=len(result.record.unmanaged),
            new=len(result.new),
            closed_only=result.record.closed_only,
        )
    return result


#: The listings of the kinds without nonces (issue 27), each signed with the trading key: a CLOB that
#: does not serve one (404, 405) has no such keys to list, said once per process.
_UNSERVED: set[str] = set()


def _listing(rot: Rotator, cur: Key) -> dict[str, str]:
    """Every key of the wallet that ``cur`` (a trading key) can list, id -> kind, in listing order:
    its trading keys, its read-only keys and its builder keys not revoked."""
    out = dict.fromkeys(rot.clob.list_keys(cur), "trading")

    def builder() -> list[str]:
        return [k.key for k in rot.clob.list_builder_keys(cur) if k.revoked_at is None]

    extra: tuple[tuple[str, str, Callable[[], list[str]]], ...] = (
        ("readonly", "GET /auth/readonly-api-keys", partial(rot.clob.list_readonly_keys, cur)),
        ("builder", "GET /auth/builder-api-key", builder),
    )
    for kind, route, lister in extra:
        if route in _UNSERVED:
            continue
        try:
            ids = lister()
        except Rejected as exc:
            if exc.status not in (404, 405):
                raise
            _UNSERVED.add(route)
            log.warning("the CLOB does not serve %s (%s): %s keys are not audited", route, exc.status, kind)
            continue
        out |= {i: kind for i in ids if i and i not in out}
    return out


def _reported(previous: AuditRecord | None) -> set[str]:
    """The unmanaged keys an audit has reported: those recorded by an audit. A key a pass recorded
    after it (walked past at a taken nonce, found by a lost state's recovery, first seen later than
    the record's ``at``) is still new to the audit: it warns of it, and ``reap_unmanaged`` reaps it."""
    if previous is None:
        return set()
    return {u.key_prefix for u in previous.unmanaged if u.first_seen <= previous.at}


def _closed_only(rot: Rotator, key: Key, wanted: bool) -> bool | None:
    """The account's closed-only flag; None when not asked or the CLOB could not tell (the key audit
    goes on: one answer missing must not hide the other)."""
    if not wanted:
        return None
    try:
        return rot.clob.closed_only(key)
    except Cancelled:
        raise
    except ClobError as exc:
        log.warning("closed-only status unknown (wallet %s): %s", key.address, exc)
        return None


def _record(previous: AuditRecord | None, ids: dict[str, str], now: float, flag: bool | None) -> AuditRecord:
    """The new record of the unmanaged ``ids`` (id -> kind): each keeps when it was first seen and its
    nonce once known."""
    before = {u.key_prefix: u for u in previous.unmanaged} if previous else {}
    unmanaged = tuple(
        before.get(mask(i)) or UnmanagedKey(mask(i), None, now, kind) for i, kind in ids.items()
    )
    if flag is None and previous is not None:
        flag = previous.closed_only  # unknown this time: the last known answer stands
    return AuditRecord(now, unmanaged, flag)


def _save_record(rot: Rotator, ctx: _Ctx, record: AuditRecord) -> None:
    rot._save(ctx, replace(ctx.state, audit=record))


def _observe(rot: Rotator, name: str, record: AuditRecord) -> None:
    rot.metrics.observe_unmanaged(name, record)
    if record.closed_only is not None:
        rot.metrics.closed_only.labels(credential=name).set(1 if record.closed_only else 0)


def audit_due(record: AuditRecord | None, now: float, every: float) -> bool:
    """Whether a credential whose last audit is ``record`` is due for one (``every`` 0: never)."""
    return every > 0 and (record is None or now - record.at >= every)


# -- reap ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Found:
    """An unmanaged key as a reap reports it: masked id, and its nonce when derive reached it (a
    trading key), or its kind (a read-only or builder key, which has no nonce)."""

    key: str
    nonce: int | None
    kind: str = "trading"

    def __str__(self) -> str:
        if self.kind != "trading":
            return f"key={self.key} kind={self.kind}"
        return f"key={self.key} nonce={'?' if self.nonce is None else self.nonce}"


@dataclass(slots=True)
class ReapResult:
    """What :func:`reap` did. ``outcome``: reaped | would-reap | nothing-to-reap | no-key | in-flight |
    incomplete (a reachable key was not confirmed gone) | lost-race | failed.

    ``reaped``: revoked and confirmed gone (``would-reap``: would be). ``unreachable``: listed, but
    at no nonce the signer reaches (or a builder key, revoked only with its own secret), so it
    cannot be revoked without its secret. ``left``: reached but not confirmed gone (tried again by
    the next reap)."""

    credential: str
    outcome: str
    reaped: list[Found] = field(default_factory=list)
    unreachable: list[Found] = field(default_factory=list)
    left: list[Found] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("reaped", "would-reap", "nothing-to-reap", "no-key")


def reap(
    rot: Rotator,
    ref: CredentialRef,
    signer: Callable[[], Signer],
    *,
    execute: bool,
    start_nonce: int,
) -> ReapResult:
    """Audit, then revoke every unmanaged key the signer can reach (``execute``), or say which it
    would (``execute=False``: derives, so it spends ``/auth/*``, but revokes nothing). Never raises a
    RotatorError. A second reap finds nothing to reap.

    ``start_nonce``: the credential's own; reap reaches nonce 0 and the nonces from there up, never
    those between (where a team sharing the wallet through another store, which no audit can see,
    keeps its keys)."""
    name = ref.name
    found = audit(rot, ref)
    result = ReapResult(name, "nothing-to-reap")
    if found.outcome in ("no-key", "in-flight", "failed", "covered"):
        result.outcome, result.error = found.outcome, found.error
        return result
    if not found.unmanaged_ids:
        return result
    ctx = _Ctx(ref, CredentialState(), None, signer=signer, timer=rot.timer)
    try:
        ctx.begin("reap")
        snap = rot.store_call("load", lambda: rot.store.load(ref))
        ctx.state, ctx.version = snap.state, snap.version
        rot.bind(ctx)
        cur = ctx.state.current
        wanted = set(found.unmanaged_ids) - managed_ids(ctx.state)
        kind_of = found.kinds
        trading = {i for i in wanted if kind_of.get(i, "trading") == "trading"}
        reached: dict[str, tuple[KeyOps, Key]] = {
            i: (ctx.ops, k) for i, k in _reach(rot, ctx, signer, trading, start_nonce).items()
        }
        if cur is not None:
            # Read-only keys are reached by id: their DELETE names them, signed with the trading key.
            readonly = ReadonlyOps(rot.clob, None, lambda: cur)
            for i in sorted(i for i in wanted if kind_of.get(i) == "readonly"):
                reached[i] = (readonly, readonly_key(i, cur.address, 0, 0.0))
        result.unreachable = [
            Found(mask(i), None, kind_of.get(i, "trading"))
            for i in found.unmanaged_ids
            if i in wanted - reached.keys()
        ]
        result.outcome = ("reaped" if execute else "would-reap") if reached else "nothing-to-reap"
        gone: dict[str, int | None] = {}
        for api_key, (ops, key) in reached.items():
            entry = Found(key.masked, key.clob_nonce, key.kind)
            if not execute:
                result.reaped.append(entry)
                continue
            if _revoke(rot, ctx, ops, key):
                gone[api_key] = key.clob_nonce
                result.reaped.append(entry)
            else:
                result.left.append(entry)
        if result.left:
            result.outcome = "incomplete"
        _update_record(rot, ctx, gone, {i: k.clob_nonce for i, (_ops, k) in reached.items()})
        for u in result.unreachable:
            rot._event(ctx, "reap", "unreachable", ctx.step_started, key=u.key, kind=u.kind)
    except _Conflict:
        result.outcome = "lost-race"
        result.error = "another worker changed the state meanwhile; run reap again"
    except RotatorError as exc:
        result.outcome, result.error = "failed", f"({ctx.step}) {exc}"
    return result


def _reach(
    rot: Rotator, ctx: _Ctx, signer: Callable[[], Signer], wanted: set[str], start_nonce: int
) -> dict[str, Key]:
    """The unmanaged keys ``derive`` reaches, by id: nonce 0 first (the SDKs' default), then every
    nonce from ``start_nonce`` below ``next_nonce`` that holds no key of ours, stopping once every
    wanted key is found. Each derive is one paced ``/auth/*`` request; a nonce that holds no key gets
    none made. A derived key that is not one of ``wanted`` (a sibling credential's, one made since
    the audit) is never touched."""
    ours = managed_nonces(ctx.state)
    reached: dict[str, Key] = {}
    for nonce in (0, *range(max(1, start_nonce), ctx.state.next_nonce)):
        if len(reached) == len(wanted):
            break
        if nonce in ours:
            continue
        key = rot.clob.derive_key(signer(), nonce)
        if key is not None and key.api_key in wanted:
            reached[key.api_key] = key
    return reached


def _revoke(rot: Rotator, ctx: _Ctx, ops: KeyOps, key: Key) -> bool:
    """Revoke ``key`` as its kind's strategy does (a trading key with its own credentials, a read-only
    key by id with the trading key); True once it is confirmed gone (a 200 by the kind's check, a
    401 by the authority finding it no more), as the rotation confirms its own revocations."""
    t = rot.timer()
    try:
        ops.delete(key)
        gone = ops.confirm_deleted(key)
    except Unauthorized:
        try:
            gone = ops.authority and ops.lookup(key) is None
        except Cancelled:
            raise
        except ClobError:
            gone = False
    except Cancelled:
        raise
    except ClobError as exc:
        rot._event(
            ctx,
            "reap",
            "failed",
            t,
            level=logging.WARNING,
            nonce=key.clob_nonce,
            key=key.masked,
            error=str(exc),
        )
        return False
    if gone:
        rot.metrics.reaped.labels(credential=ctx.ref.name).inc()
        rot._event(
            ctx,
            "reap",
            "reaped",
            t,
            level=logging.WARNING,
            nonce=key.clob_nonce,
            key=key.masked,
            kind=key.kind,
        )
    else:
        rot._event(ctx, "reap", "still-live-after-delete", t, nonce=key.clob_nonce, key=key.masked)
    return gone


def _update_record(
    rot: Rotator, ctx: _Ctx, gone: dict[str, int | None], nonces: dict[str, int | None]
) -> None:
    """Drop the reaped keys from the audit record and note the nonce of each key derive reached."""
    record = ctx.state.audit
    if record is None:
        return
    gone_masked = {mask(i) for i in gone}
    known = {mask(i): n for i, n in nonces.items()}
    unmanaged = tuple(
        replace(u, nonce=known.get(u.key_prefix, u.nonce))
        for u in record.unmanaged
        if u.key_prefix not in gone_masked
    )
    updated = replace(record, unmanaged=unmanaged)
    if updated != record:
        _save_record(rot, ctx, updated)
        _observe(rot, ctx.ref.name, updated)


def reap_after(
    rot: Rotator, ref: CredentialRef, signer: Callable[[], Signer], found: AuditResult, *, start_nonce: int
) -> None:
    """``reap_unmanaged``: after an audit that found new unmanaged keys, reap them. Keys found before
    (unreachable ones among them) are not walked for again on every audit."""
    if found.outcome != "audited" or not found.new:
        return
    # Issue 23: an operator's pause holds what the worker starts on its own, this reap included.
    pause = rot.store_call("load", lambda: rot.store.load(ref)).state.paused(rot.clock())
    if pause is not None:
        log.warning(
            "%s: reap after audit: not while paused by %s; `rotator reap` reaps by hand", ref.name, pause.by
        )
        return
    result = reap(rot, ref, signer, execute=True, start_nonce=start_nonce)
    level = logging.INFO if result.ok else logging.WARNING
    log.log(
        level,
        "%s: reap after audit: %s reaped=%d unreachable=%d%s",
        ref.name,
        result.outcome,
        len(result.reaped),
        len(result.unreachable),
        f" error={result.error}" if result.error else "",
    )
