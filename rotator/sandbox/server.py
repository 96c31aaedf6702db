"""A local stand-in for the Polymarket CLOB auth endpoints, for the demo and the tests.

It verifies L1/L2 headers exactly as the real server does (clob-auth.md §1, §2) and answers with the real
status codes and bodies (§5), so the official SDK can be pointed at it unchanged. On top of that it can be
told to misbehave the ways production does: run-time settings, injected faults, and holds that freeze a
request mid-flight so crash tests can kill the client at a chosen instant.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import math
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from rotator.sandbox.state import (
    KeyRecord,
    KeyRegistry,
    OtherKeyRecord,
    SandboxSettings,
    SlidingWindowLimiter,
    _OtherKey,
    uuid7,
)
from rotator.sandbox.verify import (
    parse_nonce,
    parse_timestamp,
    timestamp_in_window,
    verify_l1_signature,
    verify_l2_signature,
)

logger = logging.getLogger(__name__)

HoldPhase = Literal["before", "after"]

# Error bodies, byte-for-byte what users report from the real server (clob-auth.md §5).
L1_UNAUTHORIZED = {"error": "Invalid L1 Request headers"}
L2_UNAUTHORIZED = {"error": "Unauthorized/Invalid api key"}
CREATE_FAILED = {"error": "Could not create api key"}
DERIVE_FAILED = {"error": "Could not derive api key!"}
NOT_FOUND = {"error": "not found"}

# A held request waits at most this long, so a test that forgets to release cannot wedge a thread forever.
HOLD_CAP_SECONDS = 60.0

# What Cloudflare in front of the CLOB answers a refused address (py-clob-client #91; the managed
# challenge's page and its cf-mitigated header): the markers a client can recognise, not the whole page.
EDGE_BLOCK_PAGE = b"""<!DOCTYPE html>
<html lang="en-US"><head><title>Attention Required! | Cloudflare</title></head>
<body><div id="cf-wrapper"><div id="cf-error-details">
<h1>Sorry, you have been blocked</h1>
<h2>You are unable to access clob.polymarket.com</h2>
</div></div></body></html>
"""
EDGE_CHALLENGE_PAGE = b"""<!DOCTYPE html>
<html lang="en-US"><head><title>Just a moment...</title></head>
<body><noscript>Enable JavaScript and cookies to continue</noscript>
<script>window._cf_chl_opt={cType:'managed'};</script>
<script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1"></script>
</body></html>
"""


class Hold:
    """A trap for the next request to one route: it blocks until released (at most 60 s).

    ``reached`` is set when the request gets there: on arrival for phase "before", after its effect is applied
    (key created, key deleted, ...) but before the response is written for phase "after".
    """

    def __init__(self, method: str, path: str, phase: HoldPhase, skip: int = 0) -> None:
        self.method = method
        self.path = path
        self.phase: HoldPhase = phase
        self.skip = skip  # matching requests let through before the trap closes
        self.reached = threading.Event()
        self.released = threading.Event()

    def release(self) -> None:
        """Let the held request continue (idempotent; also fine before it is reached)."""
        self.released.set()

    def __repr__(self) -> str:
        state = "released" if self.released.is_set() else "reached" if self.reached.is_set() else "armed"
        return f"Hold({self.method} {self.path}, {self.phase}, {state})"


@dataclass(slots=True)
class _Fault:
    method: str
    path: str
    status: int
    body: bytes
    headers: dict[str, str]
    remaining: int
    delay: float
    after: bool


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str  # without query string: that is what the HMAC covers
    headers: Message
    body: bytes
    client: str = ""  # the peer's IP address
    query: str = ""  # the URL's query string (the relayer's GET /nonce?address=...)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Response:
    # int(): HTTPStatus members would otherwise leak into request_counts() keys and their reprs.
    return _Response(int(status), json.dumps(payload, separators=(",", ":")).encode(), headers or {})


_Route = Callable[["Sandbox", _Request, SandboxSettings], _Response]


class Sandbox:
    """The emulated CLOB: key state, settings, fault injection and the HTTP server thread.

    Every public method is thread-safe and may be called while requests are in flight.
    """

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self._settings = settings if settings is not None else SandboxSettings()
        self._lock = threading.Lock()
        self._registry = KeyRegistry()
        self._limiter = SlidingWindowLimiter()
        self._read_limiters: collections.defaultdict[str, SlidingWindowLimiter] = collections.defaultdict(
            SlidingWindowLimiter
        )
        self._counts: collections.Counter[tuple[str, str, int]] = collections.Counter()
        # The relayer's transactions accepted, by the builder key that authenticated each (issue 27).
        self._relayed: collections.Counter[str] = collections.Counter()
        self._relay_nonces: collections.Counter[str] = collections.Counter()
        self._edge_refused = 0
        self._faults: list[_Fault] = []
        self._holds: list[Hold] = []  # armed, not yet claimed by a request
        self._claimed: list[Hold] = []  # claimed; released on stop so no handler thread outlives the server
        self._host = ""
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL. Port 0 picks a free port.

        :raises RuntimeError: already started.
        :raises OSError: the address cannot be bound.
        """
        with self._lock:
            if self._server is not None:
                raise RuntimeError("sandbox already started")
            server = _HTTPServer((host, port), self)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"rotator-sandbox-{server.server_address[1]}",
                daemon=True,
            )
            self._host, self._server, self._thread = host, server, thread
        thread.start()
        logger.debug("sandbox started on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving and cut open connections, so pooled keep-alive clients see it go. Idempotent.

        Keys and counts survive, so a stopped sandbox can be started again to simulate a server restart.
        """
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            holds = self._holds + self._claimed
            self._holds, self._claimed = [], []
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        for hold in holds:
            hold.release()
        if thread is not None:
            thread.join(timeout=5)
        logger.debug("sandbox stopped")

    def __enter__(self) -> Sandbox:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """:raises RuntimeError: not started."""
        server = self._server
        if server is None:
            raise RuntimeError("sandbox not started")
        return int(server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``. :raises RuntimeError: not started."""
        port = self.port
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{port}"

    # -- settings and state ----------------------------------------------------------------------------------

    @property
    def settings(self) -> SandboxSettings:
        return self._settings

    def configure(self, **changes: Any) -> SandboxSettings:
        """Replace settings at run time (``dataclasses.replace``); applies to the next request.

        :raises TypeError: unknown setting. :raises ValueError: invalid value.
        """
        with self._lock:
            self._settings = dataclasses.replace(self._settings, **changes)
            return self._settings

    def keys(self, address: str) -> list[KeyRecord]:
        """Every key ever created for ``address`` (any case), oldest first, revoked ones included."""
        return self._registry.records(address, self._settings)

    def live_keys(self, address: str) -> list[str]:
        """Ids of ``address``'s keys that currently exist (propagating ones included)."""
        return self._registry.live_ids(address, self._settings)

    def issued_secrets(self) -> list[str]:
        """Every secret and passphrase this sandbox ever issued: tests search outputs for them."""
        return self._registry.issued_secrets()

    def set_closed_only(self, address: str, on: bool = True) -> None:
        """Put a wallet in closed-only mode (or take it out): ``GET /auth/ban-status/closed-only``
        answers ``{"closed_only": true}`` for it from the next request on."""
        with self._lock:
            wallets = set(self._settings.closed_only)
            (wallets.add if on else wallets.discard)(address.lower())
            self._settings = dataclasses.replace(self._settings, closed_only=frozenset(wallets))

    def block_clients(self, *networks: str, page: str = "block", paths: tuple[str, ...] = ()) -> None:
        """Have the edge refuse clients in ``networks`` (CIDR; none: lift the block) with a Cloudflare
        403 ``page`` (``block`` or ``challenge``) on ``paths`` (prefixes; none: every path)."""
        self.configure(edge_block=tuple(networks), edge_page=page, edge_paths=tuple(paths))

    def edge_refusals(self) -> int:
        """How many requests the edge refused so far."""
        with self._lock:
            return self._edge_refused

    def invalidate(self, api_key: str) -> None:
        """Revoke a key behind its owner's back. Idempotent. :raises KeyError: the key was never issued."""
        self._registry.revoke(api_key, "invalidate")

    # -- read-only and builder keys (issue 27) ---------------------------------------------------------------

    def readonly_keys(self, address: str) -> list[OtherKeyRecord]:
        """Every read-only key ever created for ``address``, oldest first, deleted ones included."""
        return self._registry.other_records("readonly", address)

    def builder_keys(self, address: str) -> list[OtherKeyRecord]:
        """Every builder key ever created for ``address``, oldest first, revoked ones included."""
        return self._registry.other_records("builder", address)

    def live_readonly(self, address: str) -> list[str]:
        return [r.key for r in self.readonly_keys(address) if r.live]

    def live_builder(self, address: str) -> list[str]:
        return [r.key for r in self.builder_keys(address) if r.live]

    def relayed(self) -> dict[str, int]:
        """Transactions the relayer's ``POST /submit`` accepted, by the builder key that signed each."""
        with self._lock:
            return dict(self._relayed)

    def revoke_by_hand(self, key: str) -> bool:
        """Revoke a read-only or builder key as a person does in Polymarket's web UI; False when it is
        unknown or already gone."""
        return self._registry.revoke_other(key, "invalidate")

    def request_counts(self) -> collections.Counter[tuple[str, str, int]]:
        """A copy of answered requests counted by (method, path without query, status)."""
        with self._lock:
            return collections.Counter(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    # -- fault injection -------------------------------------------------------------------------------------

    def inject(
        self,
        method: str,
        path: str,
        status: int,
        body: str | bytes,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
        after: bool = False,
    ) -> None:
        """Answer the next ``times`` requests to (method, path) with this raw response instead.

        ``body`` is sent as given; Content-Type is application/json unless ``headers`` sets it. ``delay``
        sleeps before answering. ``after=True`` first processes the request normally (the key really gets
        created, the rate limiter counts it) and only replaces the answer: a lost response. Plain injected
        answers bypass the rate limiter. Faults match in the order they were injected.
        """
        if times < 1 or delay < 0 or not 100 <= status <= 599:
            raise ValueError("inject needs times >= 1, delay >= 0 and a 1xx-5xx status")
        raw = body.encode() if isinstance(body, str) else bytes(body)
        fault = _Fault(method.upper(), path, status, raw, dict(headers or {}), times, delay, after)
        with self._lock:
            self._faults.append(fault)

    def hold(self, method: str, path: str, phase: HoldPhase = "before", skip: int = 0) -> Hold:
        """Arm a :class:`Hold` for the next request to (method, path), after ``skip`` matching ones."""
        if phase not in ("before", "after"):
            raise ValueError(f"phase must be 'before' or 'after', not {phase!r}")
        hold = Hold(method.upper(), path, phase, skip)
        with self._lock:
            self._holds.append(hold)
        return hold

    def clear_faults(self) -> None:
        """Drop pending injected faults and release every hold."""
        with self._lock:
            holds = self._holds + self._claimed
            self._faults, self._holds, self._claimed = [], [], []
        for hold in holds:
            hold.release()

    # -- request pipeline ------------------------------------------------------------------------------------

    def _handle(self, request: _Request) -> _Response:
        """Edge -> hold(before) -> injected fault or [rate limit -> route -> after-fault] -> hold(after)
        -> count. The edge's refusal comes first: the CLOB behind it never sees the request."""
        if self._settings.edge_refuses(request.client, request.path):
            response = self._edge_response()
            with self._lock:
                self._counts[(request.method, request.path, response.status)] += 1
                self._edge_refused += 1
            return response
        self._wait_hold(request, "before")
        fault = self._claim_fault(request)
        if fault is not None and not fault.after:
            response = self._fault_response(fault)
        else:
            response = self._process(request)
            if fault is not None:
                response = self._fault_response(fault)
        response = self._rate_limit_headers(response)
        self._wait_hold(request, "after")
        # Counted before the bytes are written so a client that has its answer always sees it counted.
        with self._lock:
            self._counts[(request.method, request.path, response.status)] += 1
        return response

    def _edge_response(self) -> _Response:
        challenge = self._settings.edge_page == "challenge"
        headers = {
            "Content-Type": "text/html; charset=UTF-8",
            "Server": "cloudflare",
            "CF-RAY": f"{secrets.token_hex(8)}-AMS",
            "Cache-Control": "private, max-age=0, no-store, no-cache, must-revalidate",
        }
        if challenge:
            headers["cf-mitigated"] = "challenge"
        return _Response(403, EDGE_CHALLENGE_PAGE if challenge else EDGE_BLOCK_PAGE, headers)

    def _rate_limit_headers(self, response: _Response) -> _Response:
        settings = self._settings
        extra: dict[str, str] = {}
        if settings.rate_limit_tier is not None:
            extra["Poly-RateLimit-Tier"] = settings.rate_limit_tier
        if settings.rate_limit_warning:
            extra["Poly-RateLimit-Warning"] = "true"
        if not extra:
            return response
        return dataclasses.replace(response, headers={**response.headers, **extra})

    def _process(self, request: _Request) -> _Response:
        settings = self._settings
        wait: float | None = None
        if request.path.startswith("/auth/"):
            wait = self._limiter.acquire(settings.auth_limit, settings.auth_window)
        elif request.path in settings.read_limits:
            with self._lock:
                limiter = self._read_limiters[request.path]
            wait = limiter.acquire(settings.read_limits[request.path], settings.auth_window)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            return _json(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": "Too Many Requests", "retry_after_seconds": seconds},
                {"Retry-After": str(seconds)},
            )
        route = _ROUTES.get((request.method, request.path))
        if route is None or request.path in settings.unserved:
            return _json(HTTPStatus.NOT_FOUND, NOT_FOUND)
        return route(self, request, settings)

    def _claim_fault(self, request: _Request) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == request.method and fault.path == request.path:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> _Response:
        if fault.delay:
            time.sleep(fault.delay)
        return _Response(fault.status, fault.body, fault.headers)

    def _wait_hold(self, request: _Request, phase: HoldPhase) -> None:
        with self._lock:
            hold = next(
                (
                    h
                    for h in self._holds
                    if (h.method, h.path, h.phase) == (request.method, request.path, phase)
                ),
                None,
            )
            if hold is None:
                return
            if hold.skip > 0:
                hold.skip -= 1
                return
            self._holds.remove(hold)
            self._claimed.append(hold)
        hold.reached.set()
        if not hold.released.wait(HOLD_CAP_SECONDS):
            logger.warning(
                "hold on %s %s (%s) not released after %.0f s",
                hold.method,
                hold.path,
                phase,
                HOLD_CAP_SECONDS,
            )
        with self._lock:
            if hold in self._claimed:
                self._claimed.remove(hold)

    # -- authentication --------------------------------------------------------------------------------------

    def _l1_identity(self, request: _Request, settings: SandboxSettings) -> tuple[str, int] | None:
        """(address, nonce) of a valid L1 header set, else None."""
        headers = request.headers
        address, signature = headers.get("POLY_ADDRESS"), headers.get("POLY_SIGNATURE")
        raw_timestamp = headers.get("POLY_TIMESTAMP")
        timestamp = parse_timestamp(raw_timestamp)
        nonce = parse_nonce(headers.get("POLY_NONCE"))
        if (
            address is None
            or signature is None
            or raw_timestamp is None
            or timestamp is None
            or nonce is None
        ):
            return None
        if not timestamp_in_window(timestamp, settings.server_time(), settings.timestamp_window):
            return None
        if not verify_l1_signature(address, raw_timestamp, nonce, settings.chain_id, signature):
            return None
        return address, nonce

    def _l2_identity(self, request: _Request, settings: SandboxSettings) -> tuple[str, str] | None:
        """(api_key, address) of a valid L2 header set, else None; every failure looks the same outside."""
        headers = request.headers
        address, signature = headers.get("POLY_ADDRESS"), headers.get("POLY_SIGNATURE")
        api_key, passphrase = headers.get("POLY_API_KEY"), headers.get("POLY_PASSPHRASE")
        raw_timestamp = headers.get("POLY_TIMESTAMP")
        timestamp = parse_timestamp(raw_timestamp)
        if address is None or signature is None or api_key is None or passphrase is None:
            return None
        if raw_timestamp is None or timestamp is None:
            return None
        if not timestamp_in_window(timestamp, settings.server_time(), settings.timestamp_window):
            return None
        secret = self._registry.l2_secret(api_key, address, passphrase, settings)
        if secret is None:
            return None
        if not verify_l2_signature(
            secret, raw_timestamp, request.method, request.path, request.body, signature
        ):
            return None
        return api_key, address

    def _readonly_identity(self, request: _Request, settings: SandboxSettings) -> str | None:
        """The wallet of a valid read-only header pair (``POLY_READONLY_API_KEY``, ``POLY_ADDRESS``):
        a live key of that wallet. No HMAC: the id is the credential (clob-auth.md 12.4)."""
        key, address = request.headers.get("POLY_READONLY_API_KEY"), request.headers.get("POLY_ADDRESS")
        if key is None or address is None:
            return None
        other = self._registry.usable_other("readonly", key, address, settings)
        return other.address if other is not None else None

    def _builder_identity(self, request: _Request, settings: SandboxSettings) -> _OtherKey | None:
        """The builder key of a valid ``POLY_BUILDER_*`` header set (builder-signing-sdk: the L2 HMAC
        over ts + METHOD + path + body, keyed by the builder secret), else None."""
        headers = request.headers
        api_key, passphrase = headers.get("POLY_BUILDER_API_KEY"), headers.get("POLY_BUILDER_PASSPHRASE")
        signature, raw_timestamp = (
            headers.get("POLY_BUILDER_SIGNATURE"),
            headers.get("POLY_BUILDER_TIMESTAMP"),
        )
        timestamp = parse_timestamp(raw_timestamp)
        if api_key is None or passphrase is None or signature is None or raw_timestamp is None:
            return None
        if timestamp is None or not timestamp_in_window(
            timestamp, settings.server_time(), settings.timestamp_window
        ):
            return None
        other = self._registry.usable_other("builder", api_key, None, settings)
        if other is None or not secrets.compare_digest(other.passphrase.encode(), passphrase.encode()):
            return None
        if not verify_l2_signature(
            other.secret, raw_timestamp, request.method, request.path, request.body, signature
        ):
            return None
        return other

    # -- routes ----------------------------------------------------------------------------------------------

    def _route_ok(self, request: _Request, settings: SandboxSettings) -> _Response:
        return _json(HTTPStatus.OK, "OK")

    def _route_version(self, request: _Request, settings: SandboxSettings) -> _Response:
        # py-clob-client-v2 asks which order version to sign (``get_version``): the CLOB V2 exchange.
        return _json(HTTPStatus.OK, {"version": 2})

    def _route_time(self, request: _Request, settings: SandboxSettings) -> _Response:
        return _json(HTTPStatus.OK, int(settings.server_time()))

    def _route_create(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l1_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L1_UNAUTHORIZED)
        creds = self._registry.create(*identity, settings)
        if creds is None:
            return _json(HTTPStatus.BAD_REQUEST, CREATE_FAILED)
        return _json(HTTPStatus.OK, creds.to_json())

    def _route_derive(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l1_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L1_UNAUTHORIZED)
        creds = self._registry.derive(*identity, settings)
        if creds is None:
            return _json(HTTPStatus.BAD_REQUEST, DERIVE_FAILED)
        return _json(HTTPStatus.OK, creds.to_json())

    def _route_api_keys(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        return _json(HTTPStatus.OK, {"apiKeys": self._registry.live_ids(identity[1], settings)})

    def _route_delete(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        self._registry.revoke(identity[0], "delete")
        return _json(HTTPStatus.OK, "OK")

    def _route_closed_only(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        return _json(HTTPStatus.OK, {"closed_only": identity[1].lower() in settings.closed_only})

    def _route_orders(self, request: _Request, settings: SandboxSettings) -> _Response:
        # A reader's read-only key, or the user's L2 headers (issue 27, clob-auth.md 12.4).
        readonly = "POLY_READONLY_API_KEY" in request.headers
        if readonly and self._readonly_identity(request, settings) is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        if not readonly and self._l2_identity(request, settings) is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        # "LTE=" is base64 of "-1", the CLOB's end-of-pagination cursor: the SDK stops paging on it.
        return _json(HTTPStatus.OK, {"data": [], "next_cursor": "LTE=", "limit": 100, "count": 0})

    # -- read-only keys (issue 27): managed with the user's L2 headers ---------------------------------------

    def _route_readonly_create(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        return _json(
            HTTPStatus.OK, {"apiKey": self._registry.create_other("readonly", identity[1], settings).key}
        )

    def _route_readonly_list(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        keys = self._registry.others("readonly", identity[1])
        return _json(HTTPStatus.OK, [o.key for o in keys if o.revoked_at is None])

    def _route_readonly_delete(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)  # the body is in the HMAC
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        key = _body_text(request, "key")
        if key is None:
            return _json(HTTPStatus.BAD_REQUEST, {"error": "Invalid payload"})
        if not self._registry.revoke_other(key, "delete", "readonly", identity[1]):
            return _json(HTTPStatus.BAD_REQUEST, {"error": "Could not delete readonly api key"})
        return _json(HTTPStatus.OK, True)

    # -- builder keys (issue 27) -----------------------------------------------------------------------------

    def _route_builder_create(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        made = self._registry.create_other("builder", identity[1], settings)
        return _json(HTTPStatus.OK, {"key": made.key, "secret": made.secret, "passphrase": made.passphrase})

    def _route_builder_list(self, request: _Request, settings: SandboxSettings) -> _Response:
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        offset = settings.clock_offset
        listed = [
            {
                "key": o.key,
                "createdAt": _iso(o.minted_at),
                "revokedAt": None if o.revoked_at is None else _iso(o.revoked_at + offset),
            }
            for o in self._registry.others("builder", identity[1])
        ]
        return _json(HTTPStatus.OK, listed)

    def _route_builder_revoke(self, request: _Request, settings: SandboxSettings) -> _Response:
        """The SDKs disagree (clob-auth.md 12.5): clob-client and polymarket-client authenticate it with
        the builder key's own headers (it revokes that key); py-clob-client-v2 and clob-client-v2 with
        the user's L2 headers alone, which name no builder key: this sandbox then revokes every builder
        key of the wallet, the broadest reading (the real server's is not documented)."""
        if any(name.upper().startswith("POLY_BUILDER_") for name in request.headers):
            builder = self._builder_identity(request, settings)
            if builder is None:
                return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
            self._registry.revoke_other(builder.key, "delete", "builder")
            return _json(HTTPStatus.OK, "OK")
        identity = self._l2_identity(request, settings)
        if identity is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        for other in self._registry.others("builder", identity[1]):
            self._registry.revoke_other(other.key, "delete-l2", "builder")
        return _json(HTTPStatus.OK, "OK")

    def _route_builder_trades(self, request: _Request, settings: SandboxSettings) -> _Response:
        # py-clob-client 0.34.6 get_builder_trades and clob-client getBuilderTrades: builder headers only.
        if self._builder_identity(request, settings) is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        return _json(HTTPStatus.OK, {"data": [], "next_cursor": "LTE=", "limit": 100, "count": 0})

    # The relayer (gasless transactions; relayer-v2.polymarket.com in production, served here beside
    # the CLOB so py-builder-relayer-client's RelayClient runs against the builder keys it issues).
    # What it checks of a submission is what matters to a key rotation: the builder headers.

    def _route_relayer_deployed(self, request: _Request, settings: SandboxSettings) -> _Response:
        return _json(HTTPStatus.OK, {"deployed": True})

    def _route_relayer_nonce(self, request: _Request, settings: SandboxSettings) -> _Response:
        from urllib.parse import parse_qs

        address = (parse_qs(request.query).get("address") or [""])[0].lower()
        with self._lock:
            nonce = self._relay_nonces[address]
        return _json(HTTPStatus.OK, {"address": address, "nonce": str(nonce)})

    def _route_relayer_submit(self, request: _Request, settings: SandboxSettings) -> _Response:
        builder = self._builder_identity(request, settings)
        if builder is None:
            return _json(HTTPStatus.UNAUTHORIZED, {"error": "invalid authorization"})
        sender = _body_text(request, "from")
        if sender is None:
            return _json(HTTPStatus.BAD_REQUEST, {"error": "invalid transaction request"})
        with self._lock:
            self._relayed[builder.key] += 1
            self._relay_nonces[sender.lower()] += 1
        return _json(
            HTTPStatus.OK,
            {"transactionID": uuid7(), "transactionHash": "0x" + secrets.token_hex(32), "state": "STATE_NEW"},
        )

    def _route_balance_allowance(self, request: _Request, settings: SandboxSettings) -> _Response:
        if self._l2_identity(request, settings) is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        return _json(HTTPStatus.OK, {"balance": "0", "allowances": {}})

    def _route_notifications(self, request: _Request, settings: SandboxSettings) -> _Response:
        if self._l2_identity(request, settings) is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        return _json(HTTPStatus.OK, [])

    def _route_heartbeat(self, request: _Request, settings: SandboxSettings) -> _Response:
        if self._l2_identity(request, settings) is None:
            return _json(HTTPStatus.UNAUTHORIZED, L2_UNAUTHORIZED)
        try:
            payload = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            return _json(HTTPStatus.BAD_REQUEST, {"error": "Invalid payload"})
        heartbeat_id = payload.get("heartbeat_id")
        # The first heartbeat of a chain sends null and is given an id; later ones carry it forward.
        if not isinstance(heartbeat_id, str) or not heartbeat_id:
            heartbeat_id = uuid7()
        return _json(HTTPStatus.OK, {"heartbeat_id": heartbeat_id})


_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "/"): Sandbox._route_ok,
    ("GET", "/time"): Sandbox._route_time,
    ("POST", "/auth/api-key"): Sandbox._route_create,
    ("GET", "/auth/derive-api-key"): Sandbox._route_derive,
    ("GET", "/auth/api-keys"): Sandbox._route_api_keys,
    ("DELETE", "/auth/api-key"): Sandbox._route_delete,
    ("GET", "/auth/ban-status/closed-only"): Sandbox._route_closed_only,
    ("GET", "/data/orders"): Sandbox._route_orders,
    ("GET", "/balance-allowance"): Sandbox._route_balance_allowance,
    ("GET", "/notifications"): Sandbox._route_notifications,
    ("POST", "/v1/heartbeats"): Sandbox._route_heartbeat,
    # py-clob-client-v2's health check and order-version probe (get_ok, get_version).
    ("GET", "/ok"): Sandbox._route_ok,
    ("GET", "/version"): Sandbox._route_version,
    # Issue 27: read-only keys (clob-auth.md 12.4) and builder keys (12.5).
    ("POST", "/auth/readonly-api-key"): Sandbox._route_readonly_create,
    ("GET", "/auth/readonly-api-keys"): Sandbox._route_readonly_list,
    ("DELETE", "/auth/readonly-api-key"): Sandbox._route_readonly_delete,
    ("POST", "/auth/builder-api-key"): Sandbox._route_builder_create,
    ("GET", "/auth/builder-api-key"): Sandbox._route_builder_list,
    ("DELETE", "/auth/builder-api-key"): Sandbox._route_builder_revoke,
    ("GET", "/builder/trades"): Sandbox._route_builder_trades,
    # The relayer's routes that py-builder-relayer-client's RelayClient.execute calls.
    ("GET", "/deployed"): Sandbox._route_relayer_deployed,
    ("GET", "/nonce"): Sandbox._route_relayer_nonce,
    ("POST", "/submit"): Sandbox._route_relayer_submit,
}


def _body_text(request: _Request, field: str) -> str | None:
    """``field`` of the request's JSON object body when it is a non-empty string, else None."""
    try:
        payload = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    value = payload.get(field) if isinstance(payload, dict) else None
    return value if isinstance(value, str) and value else None


def _iso(seconds: float) -> str:
    """A listed builder key's time as the CLOB's JSON gives times: ISO 8601 in UTC, milliseconds."""
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _HTTPServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server that knows its sandbox and can cut its open keep-alive connections on stop."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a bot fleet connecting at once, and each
    # dropped SYN costs its client a 1 s retransmit: latency that belongs to no server under test.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        super().__init__(address, _Handler)
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # OSError: already closed by the peer or by its handler thread.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client vanishing mid-response (crash tests do exactly
        # that) is expected here, not an error worth a traceback.
        logger.debug("sandbox connection from %s ended abnormally", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, hands it to the sandbox, writes the JSON answer with a Content-Length."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pooled httpx client expects
    timeout = 300  # idle keep-alive connections eventually free their thread
    # Headers and body go out in separate writes: with Nagle on, a keep-alive client waits ~40 ms
    # for the delayed ACK on every request.
    disable_nagle_algorithm = True

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header comes from the emulated server's clock, as the real CLOB's front and its
        # /time share one (the worker takes /time only when a witness such as Date vouches for it).
        if timestamp is None:
            timestamp = cast(_HTTPServer, self.server).sandbox.settings.server_time()
        return super().date_time_string(timestamp)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request body")
            return
        server = cast(_HTTPServer, self.server)  # the only server this handler is built for
        url = urlsplit(self.path)
        request = _Request(
            self.command.upper(), url.path, self.headers, body, str(self.client_address[0]), url.query
        )
        self._write(server.sandbox._handle(request))

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        return self.rfile.read(size) if size > 0 else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(65537).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: nothing here needs them
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        names = {name.lower() for name in response.headers}
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        for name, value in response.headers.items():
            if name.lower() != "content-length":  # ours is the one that matches the body
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class answers protocol errors with an HTML page; keep "everything is JSON".
        self.close_connection = True
        body = json.dumps({"error": message or HTTPStatus(code).phrase}).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if (
            self.command != "HEAD"
            and code >= 200
            and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)
        ):
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path and status only: headers carry passphrases and signatures.
        logger.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox http: " + format, *args)


def serve(
    settings: SandboxSettings, host: str, port: int, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run a sandbox in the foreground until KeyboardInterrupt or SIGTERM (for ``rotator sandbox``).

    ``on_ready`` receives the base URL once the socket is listening (e.g. to print it).
    """
    sandbox = Sandbox(settings)
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # signal.signal only works on the main thread; elsewhere (tests) KeyboardInterrupt/stop are the exits.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        url = sandbox.start(host, port)
        logger.info("sandbox listening on %s", url)
        if on_ready is not None:
            on_ready(url)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
