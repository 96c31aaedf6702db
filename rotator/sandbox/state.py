"""Server-side state of the sandbox: its settings, the API keys it has issued, and the /auth/* rate limiter.

Kept apart from the HTTP layer so the key semantics (clob-auth.md §4: keys per (address, nonce), duplicate
nonces, single active key, propagation delay, TTL) read in one place. Every class here is thread-safe.
"""

from __future__ import annotations

import base64
import collections
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DuplicateNonce = Literal["error", "same"]

#: The documented per-10 s limits of the L2 reads outside /auth/* (clob-auth.md section 6).
READ_LIMITS: Mapping[str, int] = {"/balance-allowance": 200, "/notifications": 125, "/data/orders": 500}
RevokedBy = Literal["delete", "single_key", "invalidate", "ttl"]


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

    def __post_init__(self) -> None:
        if self.duplicate_nonce not in ("error", "same"):
            raise ValueError(f"duplicate_nonce must be 'error' or 'same', not {self.duplicate_nonce!r}")
        if self.propagation_delay < 0 or self.timestamp_window < 0 or self.auth_limit < 0:
            raise ValueError("propagation_delay, timestamp_window and auth_limit must not be negative")
        if self.auth_window <= 0:
            raise ValueError("auth_window must be positive")
        if self.key_ttl is not None and self.key_ttl <= 0:
            raise ValueError("key_ttl must be positive or None")

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

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def record(self) -> KeyRecord:
        return KeyRecord(self.creds.api_key, self.nonce, self.created_at, self.revoked_at, self.revoked_by)


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

    def create(self, address: str, nonce: int, settings: SandboxSettings) -> Credentials | None:
        """Issue creds for (address, nonce); None when the nonce has a live key and duplicates are errors."""
        now = time.time()
        with self._lock:
            self._expire(settings, now)
            existing = self._live_for_nonce(address.lower(), nonce)
            if existing is not None:
                return existing.creds if settings.duplicate_nonce == "same" else None
            stored = _StoredKey(new_credentials(settings.server_time()), address.lower(), nonce, now)
            if settings.single_key:
                for other in self._by_address[stored.address]:
                    if other.live:
                        other.revoked_at, other.revoked_by = now, "single_key"
            self._by_id[stored.creds.api_key] = stored
            self._by_address[stored.address].append(stored)
            return stored.creds

    def derive(self, address: str, nonce: int, settings: SandboxSettings) -> Credentials | None:
        """The live creds for (address, nonce), or None."""
        with self._lock:
            self._expire(settings, time.time())
            existing = self._live_for_nonce(address.lower(), nonce)
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
        with self._lock:
            return [v for s in self._by_id.values() for v in (s.creds.secret, s.creds.passphrase)]

    def live_ids(self, address: str, settings: SandboxSettings) -> list[str]:
        with self._lock:
            self._expire(settings, time.time())
            return [s.creds.api_key for s in self._by_address.get(address.lower(), []) if s.live]

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
            if stored.live and now >= stored.created_at + settings.key_ttl:
                stored.revoked_at, stored.revoked_by = stored.created_at + settings.key_ttl, "ttl"


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
