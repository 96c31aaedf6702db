"""Server-side state of the sandbox: its settings, the API keys it has issued, and the /auth/* rate limiter.

Kept apart from the HTTP layer so the key semantics (clob-auth.md §4: keys per (address, nonce), duplicate
nonces, single active key, propagation delay, TTL) read in one place. Every class here is thread-safe.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import ipaddress
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DuplicateNonce = Literal["error", "same"]
EdgePage = Literal["block", "challenge"]

#: The documented per-10 s limits of the L2 reads outside /auth/* (clob-auth.md section 6).
READ_LIMITS: Mapping[str, int] = {"/balance-allowance": 200, "/notifications": 125, "/data/orders": 500}
RevokedBy = Literal["delete", "single_key", "invalidate", "ttl"]
#: How a read-only or builder key went (issue 27): ``delete`` (its DELETE, for a builder key signed
#: with its own builder headers), ``delete-l2`` (a builder DELETE with the user's L2 headers only, as
#: py-clob-client-v2 sends it: every builder key of the wallet), ``invalidate`` (a test, or a person
#: in the web UI).
OtherRevokedBy = Literal["delete", "delete-l2", "invalidate"]


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """How the sandbox behaves where the real server's behaviour is unknown or disputed (clob-auth.md §4.2).

    chain_id: EIP-712 domain chainId that L1 signatures must use (137 Polygon, 80002 Amoy).
    single_key: creating a key revokes the wallet's other live keys (what the docs claim).
    propagation_delay: seconds after creation during which a key answers L2 401 (clob-client #311).
    duplicate_nonce: create for a nonce with a live key -> "error" (400, the usual report) or "same" (200, the
        stored creds, py-clob-client-v2 #40).
    timestamp_window: accepted |POLY_TIMESTAMP - server time| in seconds, for L1 and L2.
    auth_limit / auth_window: sliding-window limit on /auth/* (docs: 100 per 10 s); auth_limit=0 disables it.
    clock_offset: seconds added to the local clock to get server time (simulates client clock skew).
    key_ttl: seconds after creation at which a key stops authenticating (py-clob-client-v2 #40); None = never.
    read_limits: per-route sliding-window limits (requests per ``auth_window`` seconds) of the L2 reads
        outside /auth/*, as documented (clob-auth.md section 6); a route missing here is unlimited.
    unserved: routes answered 404, as a server without that endpoint would (e.g. the probe endpoint).
    closed_only: wallets (lower-cased addresses) in closed-only mode, as
        ``GET /auth/ban-status/closed-only`` reports it (issue 16; ``Sandbox.set_closed_only``).
    rate_limit_tier / rate_limit_warning: when set, every answer carries ``Poly-RateLimit-Tier: <tier>``
        / ``Poly-RateLimit-Warning: true``, as the CLOB's order endpoints do (issue 16); off by default.
    edge_block: client address ranges (CIDR) that the edge in front of the CLOB refuses with a
        Cloudflare 403 page (clob-auth.md 12.3), before the CLOB sees the request (issue 24).
    edge_page: that page: ``block`` ("Attention Required!", HTML 403) or ``challenge`` (the managed
        challenge, ``cf-mitigated: challenge``).
    edge_paths: path prefixes the edge refuses (empty: every path); the reports name /auth/api-key.
    revive: a key that lapsed (``key_ttl``) still exists: L2 requests signed with it (its own DELETE
        too) answer 401, derive finds it, and a create at its nonce brings it back, identical
        (py-clob-client-v2 #40).
    """

    chain_id: int = 137
    single_key: bool = False
    propagation_delay: float = 0.0
    duplicate_nonce: DuplicateNonce = "error"
    timestamp_window: float = 120.0
    auth_limit: int = 100
    auth_window: float = 10.0
    clock_offset: float = 0.0
    key_ttl: float | None = None
    read_limits: Mapping[str, int] = field(default_factory=lambda: dict(READ_LIMITS))
    unserved: frozenset[str] = frozenset()
    closed_only: frozenset[str] = frozenset()
    rate_limit_tier: str | None = None
    rate_limit_warning: bool = False
    edge_block: tuple[str, ...] = ()
    edge_page: EdgePage = "block"
    edge_paths: tuple[str, ...] = ()
    revive: bool = False

    def __post_init__(self) -> None:
        for network in self.edge_block:
            ipaddress.ip_network(network, strict=False)  # raises ValueError naming it
        if self.edge_page not in ("block", "challenge"):
            raise ValueError(f"edge_page must be 'block' or 'challenge', not {self.edge_page!r}")
        if self.duplicate_nonce not in ("error", "same"):
            raise ValueError(f"duplicate_nonce must be 'error' or 'same', not {self.duplicate_nonce!r}")
        if self.propagation_delay < 0 or self.timestamp_window < 0 or self.auth_limit < 0:
            raise ValueError("propagation_delay, timestamp_window and auth_limit must not be negative")
        if self.auth_window <= 0:
            raise ValueError("auth_window must be positive")
        if self.key_ttl is not None and self.key_ttl <= 0:
            raise ValueError("key_ttl must be positive or None")

    def edge_refuses(self, client: str, path: str) -> bool:
        """Whether the edge refuses a request from ``client`` (an IP address) to ``path``."""
        if not self.edge_block:
            return False
        if self.edge_paths and not any(path.startswith(p) for p in self.edge_paths):
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(n, strict=False) for n in self.edge_block)

    def server_time(self) -> float:
        """Unix seconds as the emulated server sees them."""
        return time.time() + self.clock_offset


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One issued API key as tests see it; secret and passphrase deliberately left out.

    created_at/revoked_at are local wall-clock unix seconds (not shifted by clock_offset).
    revoked_by: "delete" (DELETE /auth/api-key), "single_key", "invalidate" (Sandbox.invalidate) or "ttl".
    """

    api_key: str
    nonce: int
    created_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None
    revivals: int = 0  # times a create at its nonce brought it back after it lapsed (``revive``)


@dataclass(frozen=True, slots=True)
class OtherKeyRecord:
    """A read-only or builder key as tests see it (issue 27): no secret. Times are local wall-clock
    seconds; ``kind`` is ``readonly`` or ``builder``."""

    key: str
    kind: str
    created_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


@dataclass(slots=True)
class _OtherKey:
    kind: str
    key: str
    address: str  # lower-cased
    created_at: float
    minted_at: float  # on the emulated server's clock (what its id and createdAt say)
    secret: str = ""  # builder keys only
    passphrase: str = ""
    revoked_at: float | None = None
    revoked_by: OtherRevokedBy | None = None

    def record(self) -> OtherKeyRecord:
        return OtherKeyRecord(self.key, self.kind, self.created_at, self.revoked_at, self.revoked_by)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What create/derive return on the wire. Secrets are kept out of repr so they never reach a log."""

    api_key: str
    secret: str = field(repr=False)
    passphrase: str = field(repr=False)

    def to_json(self) -> dict[str, str]:
        return {"apiKey": self.api_key, "secret": self.secret, "passphrase": self.passphrase}


@dataclass(slots=True)
class _StoredKey:
    creds: Credentials
    address: str  # lower-cased
    nonce: int
    created_at: float
    revoked_at: float | None = None
    revoked_by: RevokedBy | None = None
    revived_at: float | None = None
    revivals: int = 0

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def record(self) -> KeyRecord:
        return KeyRecord(
            self.creds.api_key, self.nonce, self.created_at, self.revoked_at, self.revoked_by, self.revivals
        )


def uuid7(at: float | None = None) -> str:
    """A UUIDv7 string, like real CLOB key ids (clob-auth.md §4.1); Python 3.11 has no uuid.uuid7().

    ``at``: the unix time its leading 48 bits carry (default: now). The server stamps a key's id with
    its own clock, so a sandbox with a ``clock_offset`` stamps ids with the time it answers on /time.
    """
    unix_ms = time.time_ns() // 1_000_000 if at is None else int(at * 1000)
    rand_a = secrets.randbits(12)
    rand_b = secrets.randbits(62)
    value = (unix_ms & (2**48 - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def new_credentials(at: float | None = None) -> Credentials:
    """Fresh creds in the real formats: UUIDv7 key (stamped ``at``, default now), 32-byte padded
    base64url secret, 64-hex passphrase."""
    return Credentials(
        api_key=uuid7(at),
        secret=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"),
        passphrase=secrets.token_hex(32),
    )


class KeyRegistry:
    """Every key ever issued, indexed by id and by (lower-cased) address, in creation order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, _StoredKey] = {}
        self._by_address: dict[str, list[_StoredKey]] = collections.defaultdict(list)
        # Issue 27: read-only and builder keys, by id, in creation order.
        self._others: dict[str, _OtherKey] = {}

    def create(self, address: str, nonce: int, settings: SandboxSettings) -> Credentials | None:
        """Issue creds for (address, nonce); None when the nonce has a live key and duplicates are errors."""
        now = time.time()
        with self._lock:
            self._expire(settings, now)
            existing = self._live_for_nonce(address.lower(), nonce)
            if existing is not None:
                return existing.creds if settings.duplicate_nonce == "same" else None
            lapsed = self._lapsed_for_nonce(address.lower(), nonce) if settings.revive else None
            if lapsed is not None:
                lapsed.revoked_at, lapsed.revoked_by, lapsed.revived_at = None, None, now
                lapsed.revivals += 1
                self._invalidate_others(lapsed, settings, now)
                return lapsed.creds
            stored = _StoredKey(new_credentials(settings.server_time()), address.lower(), nonce, now)
            self._invalidate_others(stored, settings, now)
            self._by_id[stored.creds.api_key] = stored
            self._by_address[stored.address].append(stored)
            return stored.creds

    def derive(self, address: str, nonce: int, settings: SandboxSettings) -> Credentials | None:
        """The live creds for (address, nonce), or None."""
        with self._lock:
            self._expire(settings, time.time())
            existing = self._live_for_nonce(address.lower(), nonce)
            if existing is None and settings.revive:
                # A lapsed key of a reviving server still exists there: derive finds it, L2 refuses it.
                existing = self._lapsed_for_nonce(address.lower(), nonce)
            return existing.creds if existing is not None else None

    def l2_secret(self, api_key: str, address: str, passphrase: str, settings: SandboxSettings) -> str | None:
        """The HMAC secret of a live, propagated key that belongs to ``address`` and has ``passphrase``.

        None for any mismatch: the server answers every one of them with the same 401, so callers need not
        know which check failed.
        """
        now = time.time()
        with self._lock:
            self._expire(settings, now)
            stored = self._by_id.get(api_key)
            if stored is None or not stored.live or stored.address != address.lower():
                return None
            if now - stored.created_at < settings.propagation_delay:
                return None
            if not secrets.compare_digest(stored.creds.passphrase.encode(), passphrase.encode()):
                return None
            return stored.creds.secret

    def revoke(self, api_key: str, reason: RevokedBy) -> bool:
        """Revoke a key; False if it was already revoked. :raises KeyError: unknown key id."""
        with self._lock:
            stored = self._by_id[api_key]
            if not stored.live:
                return False
            stored.revoked_at, stored.revoked_by = time.time(), reason
            return True

    def records(self, address: str, settings: SandboxSettings) -> list[KeyRecord]:
        with self._lock:
            self._expire(settings, time.time())
            return [stored.record() for stored in self._by_address.get(address.lower(), [])]

    def issued_secrets(self) -> list[str]:
        """Every secret and passphrase issued, and every read-only key's id (the id is its credential)."""
        with self._lock:
            out = [v for s in self._by_id.values() for v in (s.creds.secret, s.creds.passphrase)]
            out += [o.key for o in self._others.values() if o.kind == "readonly"]
            out += [v for o in self._others.values() if o.kind == "builder" for v in (o.secret, o.passphrase)]
            return out

    # -- read-only and builder keys (issue 27) -------------------------------------------------------------
    def create_other(self, kind: str, address: str, settings: SandboxSettings) -> _OtherKey:
        """A new read-only (an id) or builder (id, secret, passphrase) key for ``address``."""
        minted = settings.server_time()
        creds = new_credentials(minted)
        other = _OtherKey(kind, creds.api_key, address.lower(), time.time(), minted)
        if kind == "builder":
            other.secret, other.passphrase = creds.secret, creds.passphrase
        with self._lock:
            self._others[other.key] = other
        return other

    def others(self, kind: str, address: str) -> list[_OtherKey]:
        """``address``'s keys of ``kind``, revoked ones included, oldest first (copies)."""
        with self._lock:
            return [
                dataclasses.replace(o)
                for o in self._others.values()
                if o.kind == kind and o.address == address.lower()
            ]

    def other_records(self, kind: str, address: str) -> list[OtherKeyRecord]:
        return [o.record() for o in self.others(kind, address)]

    def revoke_other(
        self, key: str, reason: OtherRevokedBy, kind: str | None = None, address: str | None = None
    ) -> bool:
        """Revoke a read-only or builder key (of ``kind`` on ``address`` when given); False when it is
        unknown there or already gone."""
        with self._lock:
            other = self._others.get(key)
            if other is None or (kind is not None and other.kind != kind):
                return False
            if address is not None and other.address != address.lower():
                return False
            if other.revoked_at is not None:
                return False
            other.revoked_at, other.revoked_by = time.time(), reason
            return True

    def usable_other(
        self, kind: str, key: str, address: str | None, settings: SandboxSettings
    ) -> _OtherKey | None:
        """A live, propagated key of ``kind`` with id ``key`` (on ``address`` when given), or None: every
        mismatch looks the same outside."""
        with self._lock:
            other = self._others.get(key)
            if other is None or other.kind != kind or other.revoked_at is not None:
                return None
            if address is not None and other.address != address.lower():
                return None
            if time.time() - other.created_at < settings.propagation_delay:
                return None
            return dataclasses.replace(other)

    def live_ids(self, address: str, settings: SandboxSettings) -> list[str]:
        with self._lock:
            self._expire(settings, time.time())
            return [s.creds.api_key for s in self._by_address.get(address.lower(), []) if s.live]

    def _invalidate_others(self, made: _StoredKey, settings: SandboxSettings, now: float) -> None:
        if settings.single_key:
            for other in self._by_address[made.address]:
                if other.live and other is not made:
                    other.revoked_at, other.revoked_by = now, "single_key"

    def _lapsed_for_nonce(self, address: str, nonce: int) -> _StoredKey | None:
        # The latest key made at this nonce, if it lapsed: one deleted after it is gone for good.
        for stored in reversed(self._by_address.get(address, [])):
            if stored.nonce == nonce:
                return stored if stored.revoked_by == "ttl" else None
        return None

    def _live_for_nonce(self, address: str, nonce: int) -> _StoredKey | None:
        for stored in self._by_address.get(address, []):
            if stored.live and stored.nonce == nonce:
                return stored
        return None

    def _expire(self, settings: SandboxSettings, now: float) -> None:
        # Lazy: TTL expiry is applied whenever state is read, dated to the moment the key actually lapsed,
        # so KeyRecord shows the same history a background reaper would have produced.
        if settings.key_ttl is None:
            return
        for stored in self._by_id.values():
            since = stored.revived_at if stored.revived_at is not None else stored.created_at
            if stored.live and now >= since + settings.key_ttl:
                stored.revoked_at, stored.revoked_by = since + settings.key_ttl, "ttl"


class SlidingWindowLimiter:
    """At most ``limit`` admissions in any ``window`` seconds; rejected attempts take no slot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted: collections.deque[float] = collections.deque()

    def acquire(self, limit: int, window: float) -> float | None:
        """Admit one request (None) or return the seconds until a slot frees; ``limit`` 0 admits all."""
        if limit <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            while self._admitted and self._admitted[0] <= now - window:
                self._admitted.popleft()
            if len(self._admitted) >= limit:
                # Limit lowered at run time may leave more than `limit` entries; the slot frees when enough
                # of the oldest ones age out.
                return self._admitted[len(self._admitted) - limit] + window - now
            self._admitted.append(now)
            return None
