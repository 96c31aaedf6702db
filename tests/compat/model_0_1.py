"""rotator 0.1's rotator/model.py (git 7a2ab67), verbatim but this docstring: the previous minor
version's state reader.

tests/unit/test_state_compat.py reads what this version writes with it, as an operator who rolls
back would. Never edit it: when a release changes the state, the copy of the release before it
replaces this one (docs/upgrading.md, "Version policy").
"""

from __future__ import annotations

import hmac
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

PUBLISHED_FIELDS = ("api_key", "api_secret", "api_passphrase", "address", "nonce", "created_at")


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


#: How many characters of a key id :func:`mask` shows from its start and from its end.
MASK_HEAD, MASK_TAIL = 8, 4


def mask(key_id: str) -> str:
    """The form of a key id that logs, status output and stores' tags may show: ``01a22d6a…9f3c``.

    Key ids are UUIDv7: the first 8 characters are the top of a millisecond timestamp and repeat
    for about a minute, so the last 4 (random bits) are what tell keys made together apart. An id
    already masked, or too short to hide anything, is shown as it is.
    """
    if len(key_id) <= MASK_HEAD + MASK_TAIL + 1:
        return key_id
    return f"{key_id[:MASK_HEAD]}…{key_id[-MASK_TAIL:]}"


def ack_prefix(key_id: str) -> str:
    """The part of a key id that consumer acknowledgements carry: enough to tell keys apart.

    Real key ids are UUIDv7, whose first 8 characters are the top of a millisecond timestamp and
    repeat for about a minute; 18 characters add the rest of the timestamp and 12 random bits, and
    still leave most of the id out.
    """
    return key_id[:18]


@dataclass(frozen=True, slots=True)
class Key:
    """One issued L2 triplet and where it came from."""

    api_key: str
    api_secret: Secret
    api_passphrase: Secret
    address: str
    nonce: int
    created_at: float

    @property
    def masked(self) -> str:
        return mask(self.api_key)

    def to_dict(self) -> dict[str, Any]:
        """The published-secret JSON object (DESIGN.md, "the consumer contract"). Reveals secrets."""
        return {
            "api_key": self.api_key,
            "api_secret": self.api_secret.reveal(),
            "api_passphrase": self.api_passphrase.reveal(),
            "address": self.address,
            "nonce": self.nonce,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Key:
        """Parse the published-secret object. :raises ValueError: naming the bad field."""
        if not isinstance(data, dict):
            raise MalformedError("a key must be a JSON object")
        missing = [f for f in PUBLISHED_FIELDS if f not in data]
        if missing:
            raise MalformedError(f"key is missing field(s): {', '.join(missing)}")
        for name in ("api_key", "api_secret", "api_passphrase", "address"):
            if not isinstance(data[name], str) or not data[name]:
                raise MalformedError(f"key field {name} must be a non-empty string")
        if not isinstance(data["nonce"], int) or isinstance(data["nonce"], bool) or data["nonce"] < 0:
            raise MalformedError("key field nonce must be a non-negative integer")
        if not isinstance(data["created_at"], (int, float)) or isinstance(data["created_at"], bool):
            raise MalformedError("key field created_at must be a number")
        return cls(
            api_key=data["api_key"],
            api_secret=Secret(data["api_secret"]),
            api_passphrase=Secret(data["api_passphrase"]),
            address=data["address"],
            nonce=data["nonce"],
            created_at=float(data["created_at"]),
        )


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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pending:
        address = data.get("address")
        if address is not None and (not isinstance(address, str) or not address):
            raise MalformedError("pending field address must be a non-empty string")
        return cls(
            nonce=int(data["nonce"]),
            started_at=float(data["started_at"]),
            owner=str(data["owner"]),
            lease_until=float(data["lease_until"]),
            key=Key.from_dict(data["key"]) if data.get("key") else None,
            address=address,
        )


@dataclass(frozen=True, slots=True)
class Retiring:
    """A key that is no longer current and is revoked once ``revoke_after`` has passed."""

    key: Key
    retired_at: float
    revoke_after: float
    reason: str = "rotated"  # rotated | unverified | emergency

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key.to_dict(),
            "retired_at": self.retired_at,
            "revoke_after": self.revoke_after,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Retiring:
        return cls(
            key=Key.from_dict(data["key"]),
            retired_at=float(data["retired_at"]),
            revoke_after=float(data["revoke_after"]),
            reason=str(data.get("reason", "rotated")),
        )


@dataclass(frozen=True, slots=True)
class Revoked:
    """A key that is gone, kept (masked, no secrets) so operators can see what happened."""

    key_prefix: str
    nonce: int
    revoked_at: float
    how: str  # deleted | already-gone | invalidated-by-server

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_prefix": self.key_prefix,
            "nonce": self.nonce,
            "revoked_at": self.revoked_at,
            "how": self.how,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Revoked:
        return cls(str(data["key_prefix"]), int(data["nonce"]), float(data["revoked_at"]), str(data["how"]))


HISTORY_LIMIT = 20

#: The rotation state's format. 1: no ``schema`` field (before issue 13). 2: ``schema`` and the
#: pending intent's wallet ``address``. 3: ``audit``, what the last unmanaged-key audit found (issue
#: 16). A reader refuses a newer state instead of dropping what it does not know on its next save;
#: it reads every older one.
STATE_SCHEMA = 3


@dataclass(frozen=True, slots=True)
class UnmanagedKey:
    """A key the wallet holds at the CLOB that the state does not manage (issue 16): masked id only.

    ``nonce``: known once a reap found the key with ``derive``; None while it is only listed.
    """

    key_prefix: str
    nonce: int | None
    first_seen: float

    def to_dict(self) -> dict[str, Any]:
        return {"key_prefix": self.key_prefix, "nonce": self.nonce, "first_seen": self.first_seen}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnmanagedKey:
        nonce = data.get("nonce")
        return cls(str(data["key_prefix"]), None if nonce is None else int(nonce), float(data["first_seen"]))


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
    history: tuple[Revoked, ...] = field(default=())
    audit: AuditRecord | None = None  # schema 3: the last unmanaged-key audit (None: never audited)

    def with_revoked(self, entry: Retiring, how: str, now: float) -> CredentialState:
        """This state with ``entry`` moved from ``retiring`` to the history."""
        rest = tuple(r for r in self.retiring if r.key.api_key != entry.key.api_key)
        record = Revoked(entry.key.masked, entry.key.nonce, now, how)
        return replace(self, retiring=rest, history=(*self.history, record)[-HISTORY_LIMIT:])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "current": self.current.to_dict() if self.current else None,
            "pending": self.pending.to_dict() if self.pending else None,
            "retiring": [r.to_dict() for r in self.retiring],
            "next_nonce": self.next_nonce,
            "published_nonce": self.published_nonce,
            "rotations": self.rotations,
            "history": [h.to_dict() for h in self.history],
            "audit": self.audit.to_dict() if self.audit else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CredentialState:
        """:raises ValueError: when ``data`` is not a state this code wrote."""
        if not isinstance(data, dict):
            raise MalformedError("rotation state must be a JSON object")
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise MalformedError("rotation state is malformed (field schema)")
        if schema > STATE_SCHEMA:
            raise NewerSchema(
                f"rotation state has schema {schema}, newer than this rotator reads ({STATE_SCHEMA}); "
                "refusing it rather than dropping what it does not know: upgrade rotator"
            )
        published = data.get("published_nonce")
        if published is not None and (not isinstance(published, int) or isinstance(published, bool)):
            raise MalformedError("rotation state is malformed (field published_nonce)")
        parsers: dict[str, Any] = {
            "current": lambda v: Key.from_dict(v) if v else None,
            "pending": lambda v: Pending.from_dict(v) if v else None,
            "retiring": lambda v: tuple(Retiring.from_dict(r) for r in v or ()),
            "next_nonce": lambda v: int(v or 0),
            "rotations": lambda v: int(v or 0),
            "history": lambda v: tuple(Revoked.from_dict(h) for h in v or ()),
            "audit": lambda v: AuditRecord.from_dict(v) if v else None,
        }
        fields: dict[str, Any] = {"published_nonce": published}
        for name, parse in parsers.items():
            try:
                fields[name] = parse(data.get(name))
            except MalformedError as exc:
                raise MalformedError(f"rotation state is malformed (field {name}: {exc})") from None
            except (KeyError, TypeError, ValueError, AttributeError):
                # The library's message could quote a value: name the field only.
                raise MalformedError(f"rotation state is malformed (field {name})") from None
        return cls(**fields)


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
]


#: What one step's audit event (``outcome``) says happened. A pass's own end is an :data:`Outcome`.
Event = Literal[
    # the pass ended there
    "in-flight-elsewhere",
    "lost-race",
    "stopped",
    "failed",
    # step by step
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

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"
