"""The one exception tree of rotator.

Every error the worker raises is a ``RotatorError``. Adapters (``stores/*``, ``signers/*``,
``clob/*``) translate their SDK's exceptions into this tree with ``raise ... from exc``; no hvac,
botocore or py-clob-client type escapes its adapter. Messages never contain secret material.

::

    RotatorError
    ├── ConfigError            bad configuration or usage: the CLI exits 2
    │   └── SignerError        a signer source cannot produce a usable wallet key (names the source)
    ├── StoreError             the store failed
    │   ├── NotFound           the thing asked for does not exist
    │   ├── Unavailable        unreachable, sealed, throttled: retryable
    │   ├── AccessDenied       the worker's identity may not do this
    │   ├── VersionConflict    compare-and-set lost: another worker wrote first
    │   └── Corrupt            the stored data cannot be read (wrong key, tampered, bad JSON)
    ├── ClobError              the CLOB answered badly or not at all
    │   ├── RateLimited        429; ``retry_after`` seconds when the server said
    │   ├── Unauthorized       401: the key (L2) or the wallet signature (L1) was refused
    │   ├── Rejected           a 4xx that retrying will not fix (400 "Could not create api key", ...)
    │   │   └── Unrevocable    nothing the worker holds can sign this key's revocation (no request sent)
    │   ├── Transient          timeouts, connection errors, 425, 5xx, Cloudflare pages: retryable
    │   │   └── Unreachable    connection refused, DNS failure: not retried within a call
    │   └── Cancelled          the worker is stopping (SIGTERM): the call was cut short, not retried
    ├── Blocked                the CLOB's edge refuses this egress (Cloudflare 403 page): no answer
    │                          about anything asked, so no handler of ClobError may swallow it
    └── RotationError          a protocol step failed; ``step`` names it, ``__cause__`` says why
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.model import Step


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""


class ConfigError(RotatorError):
    """The configuration or the command line is wrong. The message names the field."""


class SignerError(ConfigError):
    """A signer source is missing or malformed. The message names the source, never the value."""


class StoreError(RotatorError):
    """A store operation failed."""


class NotFound(StoreError):
    """The secret or path does not exist."""


class Unavailable(StoreError):
    """The store cannot be reached right now (network, sealed, throttled). Retry later."""


class AccessDenied(StoreError):
    """The worker's identity is not allowed to perform the operation."""


class VersionConflict(StoreError):
    """A compare-and-set write lost: the stored version moved since it was read."""


class Corrupt(StoreError):
    """Stored data could not be decrypted or parsed. Never silently reset."""


class ClobError(RotatorError):
    """The CLOB refused or failed a request.

    ``status`` is the HTTP status (``None`` for transport failures); ``endpoint`` the request path.
    """

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class RateLimited(ClobError):
    """HTTP 429. ``retry_after`` is the server's hint in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, endpoint: str = "") -> None:
        super().__init__(message, status=429, endpoint=endpoint)
        self.retry_after = retry_after


class Unauthorized(ClobError):
    """HTTP 401: an L2 key that is unknown, revoked, not yet live, or a refused L1 signature."""


class Rejected(ClobError):
    """A client error that retrying will not fix (e.g. 400 "Could not create api key")."""


class Unrevocable(Rejected):
    """The worker holds nothing that can authenticate this key's revocation: a builder key whose
    create's answer was lost (its DELETE is signed with its own secret), or a key of another wallet
    than the one its trading credential is on. No request was sent; asking again soon does not help."""


class Transient(ClobError):
    """A failure that may go away: timeout, connection error, 425, 5xx, a Cloudflare page."""


class Unreachable(Transient):
    """No connection at all (refused, unresolvable, connect timeout): retrying within seconds does
    not help, so the call fails at once; the next pass tries again."""


class Cancelled(ClobError):
    """The worker is stopping: the request in flight was abandoned or a wait was cut short.

    Not a :class:`Transient`: nothing retries it. The step it interrupted fails like any other
    failed step, and leaves the published key untouched (I5).
    """


class Blocked(RotatorError):
    """The CLOB's edge (Cloudflare, in front of it) refuses this worker's egress address: a 403 with an
    HTML block or challenge page, the same several times in a row (clob-auth.md 12.3).

    Not a :class:`ClobError` on purpose. Code that meets a ClobError where it cannot tell what
    happened to a key (a probe, a DELETE, a lost create answer) goes on and tries again later; an
    edge block is no answer about anything asked, and waiting does not lift it. So it passes every
    such handler and fails the pass at whatever step met it, in seconds, with one line that names
    the egress problem and the remedy (``clob.proxy``). ``endpoint`` is the request's path.
    """

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = 403) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class RotationError(RotatorError):
    """A protocol step failed. ``step`` is the step's name; the cause is chained."""

    def __init__(self, step: Step, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step: Step = step
