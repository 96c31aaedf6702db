"""Plain data of the rotation: keys, per-credential state, pass results. No I/O here.

Secret values are held in :class:`Secret`, whose ``repr``/``str`` are masked, from the moment
they are read to the moment they are sent, so a stray log line or traceback cannot leak them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

PUBLISHED_FIELDS = ("api_key", "api_secret", "api_passphrase", "address", "nonce", "created_at")

#: The kinds of credential a wallet holds at the CLOB (issue 27): ``trading`` (the L2 triplet, made
#: with the wallet's L1 signature at a nonce), ``readonly`` (an id alone, made and deleted with a
#: trading key's L2 headers; readers send it with the wallet's address) and ``builder`` (a triplet
#: of the builder program, made with a trading key's L2 headers, revoked by its own HMAC headers).
#: Neither of the last two has a nonce or a derive: see :mod:`rotator.kinds`.
KINDS = ("trading", "readonly", "builder")
#: The published secret's fields per kind (DESIGN.md, the consumer contract; docs/kinds.md).
PUBLISHED_BY_KIND = {
    "trading": PUBLISHED_FIELDS,
    "readonly": ("api_key", "address", "created_at", "nonce"),
    "builder": ("key", "secret", "passphrase", "address", "created_at"),
}


class Secret:
    """A string that never shows itself by accident. ``reveal()`` is the one way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # pickling would be a quiet way out: refuse it
        raise TypeError("Secret values are not picklable")


class MalformedError(ValueError):
    """Our own validation message: names the field, never quotes the value."""


#: How many characters of a key id :func:`mask` shows from its start and from its end. Key ids are
#: UUIDv7: the first 13 characters (``01a24daa-6b2e``) are its whole millisecond timestamp, a prefix
#: of what consumers' acknowledgements carry (:func:`ack_prefix`), so one grep finds a key in the
#: worker's logs, ``status``, consumers' logs and bots' summaries alike; the last 4 are random bits
#: that tell apart keys made in the same millisecond.
MASK_HEAD, MASK_TAIL = 13, 4
#: How many characters of a key id consumer acknowledgements carry (a wire format: consumers of
#: every version write it, so it never changes).
ACK_PREFIX_CHARS = 18


#: How far the CLOB's clock as a worker reads it (or its own, while ``/time`` never answered) may be
#: from the clock the CLOB stamps key ids with, for a key's id to prove the key older than an intent.
KEY_CLOCK_SLACK = 300.0


def minted_at(key_id: str) -> float | None:
    """When the CLOB made the key ``key_id``, read from the id: real key ids are UUIDv7 (clob-auth.md
    4.1), whose first 48 bits are the unix time in milliseconds. None for an id of another kind."""
    try:
        value = uuid.UUID(key_id)
    except ValueError:
        return None
    if value.version != 7 or value.variant != uuid.RFC_4122:
        return None
    return (value.int >> 80) / 1000.0


def mask(key_id: str) -> str:
    """The one form of a key id that logs, status output, consumers and stores' tags may show:
    ``01a24daa-6b2e…b948``, its first :data:`MASK_HEAD` and last :data:`MASK_TAIL` characters.

    An id already masked (by this or an earlier version: ``01a22d6a…9f3c``), or too short to hide
    anything, is shown as it is.
    """
    if "…" in key_id or len(key_id) <= MASK_HEAD + MASK_TAIL + 1:
        return key_id
    return f"{key_id[:MASK_HEAD]}…{key_id[-MASK_TAIL:]}"


def ack_prefix(key_id: str) -> str:
    """The part of a key id that consumer acknowledgements carry: enough to tell keys apart (the
    whole millisecond timestamp of a UUIDv7 and 12 random bits), and most of the id left out."""
    return key_id[:ACK_PREFIX_CHARS]


def masked_prefix(prefix: str) -> str:
    """How an acknowledgement's :func:`ack_prefix` is shown when its key is not at hand: the part of
    :func:`mask` it holds (``01a24daa-6b2e…``), so a grep for a mask's head finds it too."""
    return prefix if "…" in prefix or len(prefix) <= MASK_HEAD else prefix[:MASK_HEAD] + "…"


@dataclass(frozen=True, slots=True)
class Key:
    """One issued key and where it came from.

    ``kind`` (:data:`KINDS`): a ``trading`` key is the L2 triplet at its CLOB ``nonce``. A
    ``readonly`` key is its id alone (``api_secret`` and ``api_passphrase`` are empty): the id *is*
    the credential, so it is shown masked like a secret's neighbour, never in full. A ``builder``
    key is a triplet whose secret is empty only when the create's answer was lost (:attr:`lost`).
    Neither has a CLOB nonce: their ``nonce`` is the credential's own serial number of the key
    (its ``next_nonce`` when the key was issued), which orders keys and names them in logs.
    """

    api_key: str
    api_secret: Secret
    api_passphrase: Secret
    address: str
    nonce: int
    created_at: float
    kind: str = "trading"

    @property
    def masked(self) -> str:
        return mask(self.api_key)

    @property
    def clob_nonce(self) -> int | None:
        """The key's nonce at the CLOB: a trading key's; None for the kinds without nonces."""
        return self.nonce if self.kind == "trading" else None

    @property
    def lost(self) -> bool:
        """A builder key whose secret never reached the state (its create's answer was lost): it can
        neither be published nor sign its own revocation."""
        return self.kind == "builder" and not self.api_secret.reveal()

    def to_dict(self) -> dict[str, Any]:
        """The key as the state keeps it. Reveals secrets. For a trading or read-only key it is also
        the published secret (:meth:`published`)."""
        if self.kind == "builder":
            lost = self.lost
            return {
                "key": self.api_key,
                "secret": None if lost else self.api_secret.reveal(),
                "passphrase": None if lost else self.api_passphrase.reveal(),
                "address": self.address,
                "created_at": self.created_at,
                "nonce": self.nonce,
            }
        if self.kind == "readonly":
            return {
                "api_key": self.api_key,
                "address": self.address,
                "created_at": self.created_at,
                "nonce": self.nonce,
            }
        return {
            "api_key": self.api_key,
            "api_secret": self.api_secret.reveal(),
            "api_passphrase": self.api_passphrase.reveal(),
            "address": self.address,
            "nonce": self.nonce,
            "created_at": self.created_at,
        }

    def published(self) -> dict[str, Any]:
        """The published-secret JSON object (DESIGN.md, "the consumer contract"; per kind,
        :data:`PUBLISHED_BY_KIND`). Reveals secrets."""
        data = self.to_dict()
        return {name: data[name] for name in PUBLISHED_BY_KIND[self.kind]}

    @classmethod
    def from_dict(cls, data: Any, kind: str | None = None) -> Key:
        """Parse a key as the state keeps it or as it is published. ``kind``: the kind it must be;
        None: told by its fields (a builder key has ``key``, a trading key ``api_secret``, a
        read-only key ``api_key`` alone). :raises ValueError: naming the bad field."""
        if not isinstance(data, dict):
            raise MalformedError("a key must be a JSON object")
        if kind is None:
            # A read-only key only when it has a read-only key's fields and no secret: anything else
            # is judged (and its error named) as the trading key it most likely is.
            readonly = {"api_key", "address", "created_at"} <= data.keys() and not _TRADING_ONLY & data.keys()
            kind = "builder" if "key" in data else "readonly" if readonly else "trading"
        if kind not in KINDS:
            raise MalformedError("key kind must be trading, readonly or builder")
        required = [f for f in PUBLISHED_BY_KIND[kind] if f != "nonce" or kind == "trading"]
        missing = [f for f in required if f not in data]
        if missing:
            what = "key" if kind == "trading" else f"{kind} key"
            raise MalformedError(f"{what} is missing field(s): {', '.join(missing)}")
        id_field = "key" if kind == "builder" else "api_key"
        for name in (id_field, "address", *(("api_secret", "api_passphrase") if kind == "trading" else ())):
            if not isinstance(data[name], str) or not data[name]:
                raise MalformedError(f"key field {name} must be a non-empty string")
        secret, passphrase = "", ""
        if kind == "trading":
            secret, passphrase = data["api_secret"], data["api_passphrase"]
        elif kind == "builder":
            secret, passphrase = data["secret"], data["passphrase"]
            # null: a lost key's (its create's answer never arrived), in the state only
            lost = secret is None and passphrase is None
            if not lost:
                for name in ("secret", "passphrase"):
                    if not isinstance(data[name], str) or not data[name]:
                        raise MalformedError(f"key field {name} must be a non-empty string")
            secret, passphrase = secret or "", passphrase or ""
        nonce = data.get("nonce", 0)
        if not isinstance(nonce, int) or isinstance(nonce, bool) or nonce < 0:
            raise MalformedError("key field nonce must be a non-negative integer")
        if not isinstance(data["created_at"], (int, float)) or isinstance(data["created_at"], bool):
            raise MalformedError("key field created_at must be a number")
        return cls(
            api_key=data[id_field],
            api_secret=Secret(secret),
            api_passphrase=Secret(passphrase),
            address=data["address"],
            nonce=nonce,
            created_at=float(data["created_at"]),
            kind=kind,
        )


#: Fields only a trading key's published form has (how :meth:`Key.from_dict` tells kinds apart).
_TRADING_ONLY = frozenset({"api_secret", "api_passphrase"})


@dataclass(frozen=True, slots=True)
class Pending:
    """A rotation in flight.

    ``key is None`` means only the intent is recorded: a create for ``nonce`` may or may not have
    reached the CLOB, so recovery derives before it creates. ``owner``/``lease_until`` make the
    intent a lease: another worker takes over only when the lease ran out or its owner is dead.
    """

    nonce: int
    started_at: float
    owner: str
    lease_until: float
    key: Key | None = None
    # The wallet the intent is for: a key may exist at (address, nonce) after a crash, and only
    # that wallet can find it again. None only in states written before schema 2.
    address: str | None = None
    # Why the rotation started and what set it off (:data:`Reason`, :data:`Trigger`): the key's
    # history records them, also when another worker completes the rotation after a crash.
    # None in intents recorded before state format 4.
    reason: str | None = None
    trigger: str | None = None
    # Issue 27: for a kind without nonces (read-only, builder), digests (:func:`listed_digest`) of
    # the wallet's keys of that kind listed just before this intent was recorded. After a crash or a
    # lost answer, a listed key that is neither in this snapshot nor held by any state is the
    # intent's (rotator.kinds). None for trading keys, which derive recovers.
    listed: tuple[str, ...] | None = None

    @property
    def wallet(self) -> str | None:
        """The intent's wallet: recorded, or else the recorded key's."""
        return self.address or (self.key.address if self.key else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "started_at": self.started_at,
            "owner": self.owner,
            "lease_until": self.lease_until,
            "key": self.key.to_dict() if self.key else None,
            "address": self.address,
            **_present(
                reason=self.reason,
                trigger=self.trigger,
                listed=None if self.listed is None else list(self.listed),
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], kind: str = "trading") -> Pending:
        address = data.get("address")
        if address is not None and (not isinstance(address, str) or not address):
            raise MalformedError("pending field address must be a non-empty string")
        listed = data.get("listed")
        if listed is not None and (
            not isinstance(listed, list) or not all(isinstance(d, str) and d for d in listed)
        ):
            raise MalformedError("pending field listed must be a list of digests")
        return cls(
            nonce=int(data["nonce"]),
            started_at=float(data["started_at"]),
            owner=str(data["owner"]),
            lease_until=float(data["lease_until"]),
            key=Key.from_dict(data["key"], kind) if data.get("key") else None,
            address=address,
            reason=_opt_str(data.get("reason")),
            trigger=_opt_str(data.get("trigger")),
            listed=None if listed is None else tuple(listed),
        )


def listed_digest(key_id: str) -> str:
    """How an intent's snapshot of listed keys names one (:attr:`Pending.listed`): a short digest, so
    the state never holds the ids of keys that are not the worker's (a read-only key's id is its
    whole credential). 96 bits: no two keys of a wallet share one."""
    return hashlib.sha256(key_id.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Retiring:
    """A key that is no longer current and is revoked once ``revoke_after`` has passed."""

    key: Key
    retired_at: float
    revoke_after: float
    # rotated | unverified | emergency | recovered | restored | retired | lost-secret (issue 27: a
    # builder key whose create's answer was lost: nothing the worker holds can revoke it)
    reason: str = "rotated"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.to_dict(),
            "retired_at": self.retired_at,
            "revoke_after": self.revoke_after,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], kind: str = "trading") -> Retiring:
        return cls(
            key=Key.from_dict(data["key"], kind),
            retired_at=float(data["retired_at"]),
            revoke_after=float(data["revoke_after"]),
            reason=str(data.get("reason", "rotated")),
        )


#: Why a key was issued (its history's ``reason``): ``bootstrap`` (no key yet), ``due`` (its age
#: reached ``rotate_every``), ``schedule`` (a scheduled window, before it would reach ``rotate_every``),
#: ``max-age`` (past ``max_age`` outside every window), ``forced`` (``rotate --force``), ``emergency``
#: (``revoke --emergency``), ``rejected`` (the CLOB refused the current key), ``recovered`` (a lost
#: state's published key), ``adopted`` (a key found on the wallet), ``restored`` (a state restored
#: from a backup, older than the CLOB's keys), ``unrecorded`` (issued before history was kept).
Reason = Literal[
    "bootstrap",
    "due",
    "schedule",
    "max-age",
    "forced",
    "emergency",
    "rejected",
    "recovered",
    "adopted",
    "restored",
    "unrecorded",
]
#: What set a rotation off (its history's ``trigger``): ``schedule`` (a pass found the key due:
#: the daemon's tick or a CronJob run), ``operator`` (a person: ``--force``, ``--emergency``),
#: ``probe`` (the worker's own check of the key got a 401), ``consumer-report`` (a bot reported the
#: key refused, and a probe confirmed it), ``store`` (what the pass found in the store: a lost or
#: restored state, a key to adopt).
Trigger = Literal["schedule", "operator", "probe", "consumer-report", "store"]


def _present(**values: Any) -> dict[str, Any]:
    """The fields that have a value: optional fields are left out of the stored JSON, so a state
    stays small (AWS allows 64 KiB) and an older reader sees only what it knows."""
    return {k: v for k, v in values.items() if v is not None}


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key's life in the credential's history: masked id and nonce, never a secret.

    In ``CredentialState.history`` (keys gone) ``revoked_at`` and ``how`` are always set: readers of
    state format 3 (rotator 0.1) parse those four fields and ignore the others. In
    ``CredentialState.provenance`` (keys still held: current, retiring, pending) they are None.
    Records written before format 4 have the first four fields only.
    """

    key_prefix: str  # mask(api_key)
    nonce: int
    revoked_at: float | None = None
    how: str | None = None  # deleted | already-gone | invalidated-by-server | gone-before-restore
    issued_at: float | None = None  # None: adopted or recovered, its age unknown
    reason: str | None = None  # Reason
    trigger: str | None = None  # Trigger
    worker: str | None = None  # pod or host name of the worker that issued it
    published_at: float | None = None
    retired_at: float | None = None
    retired_why: str | None = None  # Retiring.reason: rotated | emergency | unverified | recovered | retired
    revoked_by: str | None = None  # pod or host name of the worker that confirmed it gone

    def names(self, key: Key) -> bool:
        return self.nonce == key.nonce and self.key_prefix in (key.masked, _legacy_mask(key.api_key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_prefix": self.key_prefix,
            "nonce": self.nonce,
            **_present(
                revoked_at=self.revoked_at,
                how=self.how,
                issued_at=self.issued_at,
                reason=self.reason,
                trigger=self.trigger,
                worker=self.worker,
                published_at=self.published_at,
                retired_at=self.retired_at,
                retired_why=self.retired_why,
                revoked_by=self.revoked_by,
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        return cls(
            str(data["key_prefix"]),
            int(data["nonce"]),
            _opt_float(data.get("revoked_at")),
            _opt_str(data.get("how")),
            issued_at=_opt_float(data.get("issued_at")),
            reason=_opt_str(data.get("reason")),
            trigger=_opt_str(data.get("trigger")),
            worker=_opt_str(data.get("worker")),
            published_at=_opt_float(data.get("published_at")),
            retired_at=_opt_float(data.get("retired_at")),
            retired_why=_opt_str(data.get("retired_why")),
            revoked_by=_opt_str(data.get("revoked_by")),
        )


#: The name earlier versions gave a history record (then only a revocation).
Revoked = KeyRecord


def _legacy_mask(key_id: str) -> str:
    """The mask of rotator 0.1 (``01a22d6a…9f3c``), which records written by it carry."""
    return key_id if len(key_id) <= 13 else f"{key_id[:8]}…{key_id[-4:]}"


@dataclass(frozen=True, slots=True)
class Pause:
    """An operator's pause of scheduled rotation (``rotator pause``): who, when, until when (None: until
    ``rotator resume``), why. Times are on the CLOB's clock, as every deadline in the state."""

    at: float
    by: str
    until: float | None = None
    reason: str | None = None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "by": self.by, "until": self.until, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pause:
        return cls(
            float(data["at"]), str(data["by"]), _opt_float(data.get("until")), _opt_str(data.get("reason"))
        )


#: How many gone keys a credential's history keeps by default (``credentials[].history_limit``).
HISTORY_LIMIT = 100

#: The rotation state's format, as this rotator writes and reads it. 1: no ``schema`` field (before
#: issue 13). 2: ``schema`` and the pending intent's wallet ``address``. 3: ``audit``, what the last
#: unmanaged-key audit found (issue 16). 4 (issue 23): ``format``, ``pause``, ``provenance``, history
#: records with issue, publish and retire times, reason, trigger and worker, the intent's reason and
#: trigger, and unknown top-level fields kept on save. 5 (issue 27): ``kind`` and ``via`` of a read-only
#: or builder credential, its intent's ``listed`` snapshot, the kind of an unmanaged key.
STATE_FORMAT = 5
#: What a state's ``schema`` field says: the oldest format whose readers read this state correctly
#: (the "readable by" marker; a reader refuses a state whose ``schema`` is above its own format).
#: Additive fields that an older reader may ignore do not raise it, so the previous minor version
#: reads what this one writes (docs/upgrading.md). Formats 4 and 5 of a trading credential are read
#: correctly by format 3 (rotator 0.1), which drops the new fields when it saves.
STATE_SCHEMA = 3
#: The ``schema`` of a read-only or builder credential's state: an older reader would take its keys
#: for trading keys (and DELETE them with L2 headers they do not have), so it must refuse the state.
KIND_SCHEMA = 5
#: The top-level fields of format 4. Any other is a newer version's additive field: kept as it was.
_KNOWN_FIELDS = frozenset(
    {
        "schema",
        "format",
        "current",
        "pending",
        "retiring",
        "next_nonce",
        "published_nonce",
        "rotations",
        "history",
        "provenance",
        "audit",
        "pause",
        "key_model",
        "published_path",
        "kind",
        "via",
    }
)


@dataclass(frozen=True, slots=True)
class UnmanagedKey:
    """A key the wallet holds at the CLOB that the state does not manage (issue 16): masked id only.

    ``nonce``: known once a reap found the key with ``derive``; None while it is only listed.
    """

    key_prefix: str
    nonce: int | None
    first_seen: float
    kind: str = "trading"  # issue 27: which list it was found in (written when not trading)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key_prefix": self.key_prefix,
            "nonce": self.nonce,
            "first_seen": self.first_seen,
        }
        if self.kind != "trading":
            out["kind"] = self.kind
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnmanagedKey:
        nonce = data.get("nonce")
        kind = str(data.get("kind") or "trading")
        if kind not in KINDS:
            raise MalformedError("an unmanaged key's kind must be trading, readonly or builder")
        return cls(
            str(data["key_prefix"]), None if nonce is None else int(nonce), float(data["first_seen"]), kind
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the last audit of the wallet found: its unmanaged keys and the account's closed-only flag
    (None: not known). Kept in the state so ``status`` and the next audit (which reports only keys
    it had not seen before) can read it."""

    at: float
    unmanaged: tuple[UnmanagedKey, ...] = ()
    closed_only: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "unmanaged": [u.to_dict() for u in self.unmanaged],
            "closed_only": self.closed_only,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditRecord:
        closed = data.get("closed_only")
        if closed is not None and not isinstance(closed, bool):
            raise MalformedError("closed_only must be true, false or null")
        unmanaged = tuple(UnmanagedKey.from_dict(u) for u in data.get("unmanaged") or ())
        return cls(float(data["at"]), unmanaged, closed)


#: How a wallet keeps keys at the CLOB: ``several`` (a new key leaves the others alive, rotations
#: overlap them for ``grace``) or ``one`` (creating a key invalidates the others: rotations publish the
#: new key at once, without overlap). clob-auth.md 12.1: the docs and the API disagree.
KEY_COUNTS = ("several", "one")


@dataclass(frozen=True, slots=True)
class KeyModel:
    """What the worker learned about how the CLOB keeps this wallet's keys (issue 24), for ``status``,
    the metrics and the rotation's strategy. An optional field of the state, not a schema change: a
    rotator that does not know it drops it on its next save, and the next rotation learns it again.

    ``keys``: ``several``, ``one`` or None (not known yet), learned ``by`` ``doctor`` (``rotator doctor
    --probe-key-model``) or ``rotation`` (step 7 found the old key alive, or dead), ``at``.
    ``propagation``: seconds the newest key answered 401 after its creation (clob-client #311).
    ``revives``: a lapsed key came back on a create at its nonce (True, last at ``revived_at``), or
    such a create made a new key or was refused (False); None: never tried.
    """

    keys: str | None = None
    by: str | None = None
    at: float | None = None
    propagation: float | None = None
    revives: bool | None = None
    revived_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "by": self.by,
            "at": self.at,
            "propagation": self.propagation,
            "revives": self.revives,
            "revived_at": self.revived_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> KeyModel:
        if not isinstance(data, dict):
            raise MalformedError("key_model must be a JSON object")
        keys, by, revives = data.get("keys"), data.get("by"), data.get("revives")
        if keys is not None and keys not in KEY_COUNTS:
            raise MalformedError("key_model.keys must be several, one or null")
        if by is not None and not isinstance(by, str):
            raise MalformedError("key_model.by must be a string")
        if revives is not None and not isinstance(revives, bool):
            raise MalformedError("key_model.revives must be true, false or null")

        def seconds(name: str) -> float | None:
            value = data.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MalformedError(f"key_model.{name} must be a number")
            return float(value)

        return cls(keys, by, seconds("at"), seconds("propagation"), revives, seconds("revived_at"))


class NewerSchema(MalformedError):
    """The state was written by a newer rotator: reading it would lose what this one does not know."""


@dataclass(frozen=True, slots=True)
class CredentialState:
    """Everything the worker knows about one credential. Lives in the store, nowhere else."""

    current: Key | None = None
    pending: Pending | None = None
    retiring: tuple[Retiring, ...] = ()
    next_nonce: int = 0
    published_nonce: int | None = None  # nonce of the key known to be at the published path
    rotations: int = 0
    #: Keys gone, oldest first, at most the credential's ``history_limit``.
    history: tuple[KeyRecord, ...] = field(default=())
    audit: AuditRecord | None = None  # schema 3: the last unmanaged-key audit (None: never audited)
    key_model: KeyModel | None = None  # optional (issue 24): how the wallet keeps keys, as learned
    # Where ``published_nonce``'s key was published (issue 22): a credential whose configured path
    # moved is published at the new one. None: not recorded (a state written before it was).
    published_path: str | None = None
    #: Format 4: the records of the keys still held (current, retiring, pending), which move to
    #: ``history`` when the key is confirmed gone.
    provenance: tuple[KeyRecord, ...] = ()
    pause: Pause | None = None  # format 4: an operator's pause of scheduled rotation
    #: Top-level fields written by a newer rotator (additive, readable by this one): kept as they
    #: were, as (name, JSON text) pairs, so an older worker's save loses nothing of a newer one's.
    extra: tuple[tuple[str, str], ...] = ()
    #: Issue 27: which kind of key the credential holds (:data:`KINDS`), fixed by its first save;
    #: ``via``: for a read-only or builder credential, the trading credential whose key authenticates
    #: its management calls (the last one configured; kept so a removed credential can still revoke).
    kind: str = "trading"
    via: str | None = None

    def paused(self, now: float) -> Pause | None:
        """The pause in force at ``now``, if any (one whose ``until`` passed has ended by itself)."""
        return self.pause if self.pause is not None and self.pause.active(now) else None

    # -- the history: written where keys change hands, in the same compare-and-set --------------
    def record_of(self, key: Key) -> KeyRecord | None:
        return next((r for r in (*self.provenance, *self.history) if r.names(key)), None)

    def with_issued(
        self, key: Key, *, reason: str, trigger: str, worker: str | None, at: float | None = None
    ) -> CredentialState:
        """This state with a record of ``key`` being issued (or adopted): ``at`` its issue time
        (None: unknown, an adopted or recovered key)."""
        if self.record_of(key) is not None:
            return self
        record = KeyRecord(key.masked, key.nonce, issued_at=at, reason=reason, trigger=trigger, worker=worker)
        return replace(self, provenance=(*self.provenance, record))

    def with_published(self, key: Key, at: float) -> CredentialState:
        """This state with ``key`` recorded as published at ``at`` (its first publication only)."""
        return self._updated(key, lambda r: r if r.published_at is not None else replace(r, published_at=at))

    def with_retired(self, key: Key, at: float, why: str) -> CredentialState:
        """This state with ``key`` recorded as retired (no longer current) at ``at``."""
        return self._updated(key, lambda r: replace(r, retired_at=at, retired_why=why))

    def with_revoked(
        self,
        entry: Retiring,
        how: str,
        now: float,
        *,
        worker: str | None = None,
        limit: int = HISTORY_LIMIT,
    ) -> CredentialState:
        """This state with ``entry`` moved from ``retiring`` to the history."""
        rest = tuple(r for r in self.retiring if r.key.api_key != entry.key.api_key)
        state = replace(self, retiring=rest)
        if state.record_of(entry.key) is None:
            state = state.with_retired(entry.key, entry.retired_at, entry.reason)
        return state.with_gone(entry.key, how, now, worker=worker, limit=limit, retired_why=entry.reason)

    def with_gone(
        self,
        key: Key,
        how: str,
        now: float,
        *,
        worker: str | None = None,
        limit: int = HISTORY_LIMIT,
        retired_why: str | None = None,
    ) -> CredentialState:
        """This state with ``key``'s record moved to the history as gone (``how``) at ``now``, the
        oldest records beyond ``limit`` dropped. The caller has taken the key out of
        current/retiring/pending."""
        record = next((r for r in self.provenance if r.names(key)), None)
        if record is None:  # issued before history was kept
            issued = key.created_at or None
            record = KeyRecord(key.masked, key.nonce, issued_at=issued, reason="unrecorded")
        if record.retired_at is None:
            record = replace(record, retired_at=now, retired_why=retired_why)
        record = replace(record, revoked_at=now, how=how, revoked_by=worker)
        provenance = tuple(r for r in self.provenance if not r.names(key))
        history = (*self.history, record)[-max(1, limit) :]
        return replace(self, provenance=provenance, history=history)

    def _updated(self, key: Key, change: Callable[[KeyRecord], KeyRecord]) -> CredentialState:
        provenance = list(self.provenance)
        for i, r in enumerate(provenance):
            if r.names(key):
                provenance[i] = change(r)
                return replace(self, provenance=tuple(provenance))
        # A key issued before history was kept: start its record here, its age from the key.
        start = KeyRecord(key.masked, key.nonce, issued_at=key.created_at or None, reason="unrecorded")
        return replace(self, provenance=(*self.provenance, change(start)))

    def held_keys(self) -> list[Key]:
        keys = [r.key for r in self.retiring]
        if self.current is not None:
            keys.append(self.current)
        if self.pending is not None and self.pending.key is not None:
            keys.append(self.pending.key)
        return keys

    def to_dict(self) -> dict[str, Any]:
        held = self.held_keys()
        # Records of keys no longer held (a save by an older worker moved them without knowing)
        # are not carried on: the history keeps what was confirmed.
        provenance = [r.to_dict() for r in self.provenance if any(r.names(k) for k in held)]
        out: dict[str, Any] = {name: json.loads(text) for name, text in self.extra}
        out |= {
            "schema": STATE_SCHEMA if self.kind == "trading" else KIND_SCHEMA,
            "format": STATE_FORMAT,
            "current": self.current.to_dict() if self.current else None,
            "pending": self.pending.to_dict() if self.pending else None,
            "retiring": [r.to_dict() for r in self.retiring],
            "next_nonce": self.next_nonce,
            "published_nonce": self.published_nonce,
            "rotations": self.rotations,
            "history": [h.to_dict() for h in self.history],
            "audit": self.audit.to_dict() if self.audit else None,
            "provenance": provenance,
            "pause": self.pause.to_dict() if self.pause else None,
        }
        # Optional fields (issues 22 and 24): absent means unknown, so older readers lose nothing
        # they need.
        if self.key_model is not None:
            out["key_model"] = self.key_model.to_dict()
        if self.published_path is not None:
            out["published_path"] = self.published_path
        if self.kind != "trading":
            out["kind"] = self.kind
            out["via"] = self.via
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CredentialState:
        """:raises ValueError: when ``data`` is not a state this code can read."""
        if not isinstance(data, dict):
            raise MalformedError("rotation state must be a JSON object")
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise MalformedError("rotation state is malformed (field schema)")
        if schema > STATE_FORMAT:
            raise NewerSchema(
                f"rotation state has schema {schema}, newer than this rotator reads ({STATE_FORMAT}); "
                "refusing it rather than dropping what it does not know: upgrade rotator"
            )
        published = data.get("published_nonce")
        if published is not None and (not isinstance(published, int) or isinstance(published, bool)):
            raise MalformedError("rotation state is malformed (field published_nonce)")
        kind = data.get("kind") or "trading"
        if kind not in KINDS:
            raise MalformedError("rotation state is malformed (field kind)")
        via = data.get("via")
        if via is not None and (not isinstance(via, str) or not via):
            raise MalformedError("rotation state is malformed (field via)")
        parsers: dict[str, Any] = {
            "current": lambda v: Key.from_dict(v, kind) if v else None,
            "pending": lambda v: Pending.from_dict(v, kind) if v else None,
            "retiring": lambda v: tuple(Retiring.from_dict(r, kind) for r in v or ()),
            "next_nonce": lambda v: int(v or 0),
            "rotations": lambda v: int(v or 0),
            "history": lambda v: tuple(_gone(KeyRecord.from_dict(h)) for h in v or ()),
            "audit": lambda v: AuditRecord.from_dict(v) if v else None,
            "key_model": lambda v: KeyModel.from_dict(v) if v else None,
            "provenance": lambda v: tuple(KeyRecord.from_dict(r) for r in v or ()),
            "pause": lambda v: Pause.from_dict(v) if v else None,
        }
        path = data.get("published_path")
        if path is not None and (not isinstance(path, str) or not path):
            raise MalformedError("rotation state is malformed (field published_path)")
        fields: dict[str, Any] = {
            "published_nonce": published,
            "published_path": path,
            "kind": kind,
            "via": via,
        }
        for name, parse in parsers.items():
            try:
                fields[name] = parse(data.get(name))
            except MalformedError as exc:
                raise MalformedError(f"rotation state is malformed (field {name}: {exc})") from None
            except (KeyError, TypeError, ValueError, AttributeError):
                # The library's message could quote a value: name the field only.
                raise MalformedError(f"rotation state is malformed (field {name})") from None
        fields["extra"] = tuple(
            (name, json.dumps(value, sort_keys=True))
            for name, value in sorted(data.items())
            if name not in _KNOWN_FIELDS
        )
        return cls(**fields)


def _gone(record: KeyRecord) -> KeyRecord:
    if record.revoked_at is None or record.how is None:
        raise MalformedError("a history record needs revoked_at and how")
    return record


#: What a consumer id may look like: safe as a Vault path segment and inside an AWS tag key.
CONSUMER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Ack:
    """A consumer's word that it has loaded the key whose :func:`ack_prefix` is ``key_prefix``, at ``at``.

    Written by consumers (``rotator.consumer``), read by the worker to revoke a retiring key as soon
    as every live consumer has moved on. Holds nothing secret: the masked id is what logs show.

    A refusal report (issue 18) is the same record with ``refused_at`` set: the CLOB refused that key
    ``refusals`` times since ``refused_at`` (the consumer's clock), while it was still the published
    one. The worker then probes that key at once instead of waiting for ``probe_every``. Records
    written before reports existed have neither field and read as plain acknowledgements.
    """

    consumer_id: str
    key_prefix: str
    at: float
    refused_at: float | None = None
    refusals: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"consumer_id": self.consumer_id, "key_prefix": self.key_prefix, "at": self.at}
        if self.refused_at is not None:
            out["refused_at"] = self.refused_at
            out["refusals"] = self.refusals
        return out

    @property
    def reported(self) -> bool:
        """Whether this record reports that the CLOB refused ``key_prefix``."""
        return self.refused_at is not None

    @classmethod
    def from_dict(cls, data: Any) -> Ack:
        """:raises ValueError: naming the bad field. A malformed refusal is dropped, not the
        acknowledgement: revocations must not depend on the optional half of the record."""
        if not isinstance(data, dict):
            raise MalformedError("an acknowledgement must be a JSON object")
        consumer, prefix, at = data.get("consumer_id"), data.get("key_prefix"), data.get("at")
        if not isinstance(consumer, str) or not CONSUMER_ID.match(consumer):
            raise MalformedError("acknowledgement field consumer_id is not a consumer id")
        if not isinstance(prefix, str) or not prefix:
            raise MalformedError("acknowledgement field key_prefix must be a non-empty string")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise MalformedError("acknowledgement field at must be a number")
        refused_at, refusals = data.get("refused_at"), data.get("refusals")
        if (
            isinstance(refused_at, (int, float))
            and not isinstance(refused_at, bool)
            and math.isfinite(refused_at)
            and isinstance(refusals, int)
            and not isinstance(refusals, bool)
            and refusals > 0
        ):
            return cls(consumer, prefix, float(at), float(refused_at), refusals)
        return cls(consumer, prefix, float(at))


@dataclass(frozen=True, slots=True)
class CredentialRef:
    """How a store addresses one credential: its name (state) and its publish path."""

    name: str
    path: str


#: How a pass over a credential ended: the CLI's report, the audit log's last event and the
#: ``failure`` metrics all say one of these. ``would-*`` are dry runs.
Outcome = Literal[
    "rotated",
    "revoked",
    "nothing-due",
    "in-flight-elsewhere",
    "lost-race",
    "stopped",
    "failed",
    "would-rotate",
    "would-resume",
    "would-revoke",
    "would-fail",
]

#: The protocol steps (DESIGN.md 1-7) as the audit log's ``step`` and a failed pass's ``failed_step``
#: name them; ``retire`` and ``derive`` are ``rotator retire``'s.
Step = Literal[
    "read",
    "publish",
    "revoke",
    "resume",
    "probe",
    "issue",
    "intent",
    "recover",
    "bootstrap",
    "adopt",
    "create",
    "verify",
    "promote",
    "probe-old",
    "retire",
    "derive",
    # issue 16: the wallet audit and `rotator reap`
    "audit",
    "reap",
    # issue 24: a lapsed key brought back by a create at its nonce; `rotator doctor`'s key probe
    "revive",
    "doctor",
    # issue 23: a credential whose signer cannot be used; `rotator pause` and `resume`
    "signer",
    "pause",
    # issue 27: a read-only or builder credential's trading credential (its key authenticates the calls)
    "via",
]


#: What one step's audit event (``outcome``) says happened. A pass's own end is an :data:`Outcome`.
Event = Literal[
    # the pass ended there
    "in-flight-elsewhere",
    "lost-race",
    "stopped",
    "failed",
    # step by step
    "clamped",  # recorded times absurdly far ahead, brought back (issue 22)
    "republished",
    "repaired-stale",
    "deleted",
    "already-gone",
    "not-yet-revocable",
    "still-live-after-delete",
    "forced",
    "took-over",
    "rejected",
    "unknown",
    "recorded",
    "adopted",
    "adopted-published",
    "other-wallet",
    "published-not-live",
    "retiring",
    "unproven-key-left",
    "nonce-taken",
    "created",
    "recovered",
    "recovered-lost-answer",
    "verified",
    "abandoned",
    "published",
    "invalidated-by-server",
    "still-valid",
    # rotator retire
    "keys-retiring",
    "retired",
    "incomplete",
    # issue 16: the wallet audit and `rotator reap`
    "audited",
    "unmanaged-key",
    "closed-only",
    "reaped",
    "unreachable",
    # issue 24
    "revived",
    "not-revived",
    "learned",
    "key-model",
    # issue 23: a state restored from a backup; `rotator pause` and `resume`
    "restored",
    "paused",
    "resumed",
    # issue 27: keys without nonces, found again by listing
    "lost-secret",  # a builder key made by a create whose answer was lost: ours, but unusable
    "ambiguous",  # several keys could be the intent's: none is taken, each reported unmanaged
    "unrevocable",  # nothing the worker holds can authenticate this key's revocation
]


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass over one credential did. ``plan``: a dry run's steps, each with why and at which
    nonce (``would-rotate (due, age 24h3m) nonce 7``), the one that names ``outcome`` first."""

    credential: str
    outcome: Outcome
    rotated: bool = False
    revoked: int = 0
    invalidated: int = 0
    error: str | None = None
    failed_step: Step | None = None
    duration: float = 0.0
    key_prefix: str | None = None
    plan: tuple[str, ...] = ()
    #: When the state as this pass left it says the wallet was last audited (None: never; unknown
    #: when the pass could not read the state), so a one-shot run picks its audits without reading
    #: every state again.
    audited_at: float | None = None
    #: The keys this pass revoked: ``nonce 6 key=01a24daa-6b2e-7fa2…`` each.
    revoked_keys: tuple[str, ...] = ()
    #: Whether an operator's pause held the credential (a rotation then happened only because it had to).
    paused: bool = False
    #: Why it rotated (a :data:`Reason`), when it did.
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome not in ("failed", "would-fail")
