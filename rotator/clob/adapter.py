"""The CLOB auth adapter: L1/L2 signing, transport, retries, budgets and the clock-skew guard.

Nothing here imports py-clob-client: its import alone takes 0.7-0.8 s, most of a one-shot run.
L1 signs the EIP-712 ``ClobAuth`` digest of :mod:`rotator.clob.eip712` with any
:class:`rotator.signers.base.Signer` (KMS included); ``tests/unit/test_eip712.py`` proves the digest
byte-identical to the SDK's ``sign_clob_auth_message`` and to eth_account's typed data. L2 HMAC is
the 6-line construction of clob-auth.md §2.2; ``tests/unit/test_clob_signing.py`` proves it
byte-identical to the SDK's ``build_hmac_signature``. Transport is our own httpx client rather than
the SDK's module-level one: the SDK fixes a 5 s timeout, drops the ``Retry-After`` header and only
knows the local clock; ``transport.py`` bounds each request as a whole, caps answers and makes it
cancellable.

Edge blocks (clob-auth.md 12.3): Cloudflare in front of the CLOB answers many datacenter addresses
with a 403 HTML page. Such an answer is retried like a 429 (the request never reached the CLOB),
and once :data:`EDGE_BLOCK_AFTER` identical ones came in a row it is :class:`Blocked`: the call
fails with one line naming the egress and the remedy, and for a while (:data:`BLOCK_RECHECK`,
doubling) every call fails the same way without a request, so a blocked fleet sends no storm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rotator.clob.base import ListedKey
from rotator.clob.budget import SlidingWindowBudget
from rotator.clob.clock import TimeCheck
from rotator.clob.probe import ProbeRoute, Unusable, answer_shape
from rotator.errors import (
    Blocked,
    Cancelled,
    ClobError,
    ConfigError,
    RateLimited,
    Rejected,
    Transient,
    Unauthorized,
    Unreachable,
    Unrevocable,
)
from rotator.logs import REDACTED
from rotator.model import Key, Secret
from rotator.signers.base import Signer

if TYPE_CHECKING:
    import httpx

    from rotator.clob.transport import Proxy, RequestGuard
    from rotator.metrics import Metrics

log = logging.getLogger("rotator.clob")

L1_ENDPOINTS = frozenset({"/auth/api-key", "/auth/derive-api-key"})
CLOSED_ONLY = "/auth/ban-status/closed-only"
#: Issue 27: the read-only keys' routes (create and delete share one path) and the builder keys' one.
READONLY_KEY = "/auth/readonly-api-key"
READONLY_KEYS = "/auth/readonly-api-keys"
BUILDER_KEY = "/auth/builder-api-key"
#: After a failed clock check, signing fails at once for this long instead of asking /time again.
CLOCK_RECHECK_AFTER_FAILURE = 5.0
#: Identical edge-block answers in a row that make a block (one may be a passing challenge).
EDGE_BLOCK_AFTER = 3
#: Once blocked, calls fail without a request for this long, doubling up to BLOCK_RECHECK_CAP.
BLOCK_RECHECK = 30.0
BLOCK_RECHECK_CAP = 600.0
#: Answer headers an observer (``rotator doctor``) is shown: rate limits and the edge's own.
OBSERVED_HEADERS = (
    "poly-ratelimit-tier",
    "poly-ratelimit-remaining",
    "poly-ratelimit-reset",
    "poly-ratelimit-warning",
    "retry-after",
    "server",
    "cf-ray",
    "cf-mitigated",
    "content-type",
)
#: What a Cloudflare challenge page says (the managed challenge and the older JS one).
_CHALLENGE_MARKERS = (b"challenge-platform", b"cf_chl_", b"Just a moment...", b"cf-browser-verification")
#: What a Cloudflare block page says ("Attention Required!", error 1020 and kin).
_BLOCK_MARKERS = (b"Attention Required! | Cloudflare", b"Sorry, you have been blocked", b"cf-error-details")


@dataclass(frozen=True, slots=True)
class EdgeAnswer:
    """An answer from the CLOB's edge, not the CLOB: ``kind`` is ``challenge`` or ``block``."""

    status: int
    kind: str
    ray: str | None

    @property
    def text(self) -> str:
        page = "challenge page" if self.kind == "challenge" else "block page"
        ray = f", ray {self.ray}" if self.ray else ""
        return f"{self.status} Cloudflare {page}{ray}"


def edge_answer(status: int, headers: Any, body: bytes | None) -> EdgeAnswer | None:
    """Whether an answer is the edge's refusal: a challenge (``cf-mitigated: challenge``, or its
    page's markers) or an HTML 403. The CLOB's own errors are JSON; a 429 is never one."""
    if status < 400 or status == 429:
        return None
    page = body or b""
    ray = headers.get("cf-ray")
    ray = ray if ray is not None and len(ray) <= 64 and ray.isprintable() else None
    if headers.get("cf-mitigated", "").strip().lower() == "challenge" or any(
        m in page for m in _CHALLENGE_MARKERS
    ):
        return EdgeAnswer(status, "challenge", ray)
    html = "html" in headers.get("content-type", "")
    if status == 403 and (html or any(m in page for m in _BLOCK_MARKERS)):
        return EdgeAnswer(status, "block", ray)
    return None


class _EdgeRefused(Transient):
    """Internal: the edge refused this request, not yet often enough to call it a block."""

    def __init__(self, message: str, edge: EdgeAnswer, endpoint: str) -> None:
        super().__init__(message, status=edge.status, endpoint=endpoint)
        self.edge = edge


@dataclass(frozen=True, slots=True)
class Answer:
    """What an observer of the adapter sees of one answer (``rotator doctor``): no body, no secret.

    ``tls``: the protocol version, ``None`` over plain HTTP. ``cert_expires``: the server
    certificate's notAfter (unix seconds); ``cert_issuer``: its issuer's organisation or CN.
    """

    method: str
    path: str
    status: int
    headers: dict[str, str]
    http_version: str
    tls: str | None
    cert_expires: float | None
    cert_issuer: str | None
    seconds: float
    edge: EdgeAnswer | None


def l2_signature(secret: Secret, timestamp: str, method: str, path: str, body: str = "") -> str:
    """urlsafe_b64(HMAC_SHA256(urlsafe_b64decode(secret), ts + METHOD + path [+ body])), padding kept."""
    message = timestamp + method + path + body
    digest = hmac.new(
        base64.urlsafe_b64decode(secret.reveal()), message.encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, within a deadline per call."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    deadline: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        jitter = random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 - jitter, not crypto
        return max(jitter, retry_after) if retry_after is not None else jitter


@dataclass(frozen=True, slots=True)
class ProbeEndpoint:
    """The L2 read that tells whether a key works, outside ``/auth/*`` (DESIGN.md, the shared budget).

    ``GET /balance-allowance?asset_type=COLLATERAL`` by default: small, read-only, 200 per 10 s per IP,
    and it checks the same five L2 headers as every other L2 endpoint. The HMAC covers ``path`` only.
    """

    path: str = "/balance-allowance"
    query: str = "?asset_type=COLLATERAL"

    @classmethod
    def parse(cls, endpoint: str) -> ProbeEndpoint:
        path, sep, query = endpoint.partition("?")
        return cls(path, sep + query)


@dataclass(frozen=True, slots=True)
class SkewPolicy:
    """Local clock off from the CLOB's: ``correct`` (sign with server time) or ``refuse``."""

    max_skew: float = 10.0
    mode: str = "correct"
    recheck_every: float = 600.0


class ClobAdapter:
    """Implements :class:`rotator.clob.base.ClobAuth` over HTTP."""

    def __init__(
        self,
        host: str,
        chain_id: int,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        skew: SkewPolicy | None = None,
        auth_budget: SlidingWindowBudget | None = None,
        read_budget: SlidingWindowBudget | None = None,
        probe: ProbeEndpoint | None = None,
        probe_budget: SlidingWindowBudget | None = None,
        metrics: Metrics | None = None,
        sleep: Callable[[float], object] | None = None,
        cancel: threading.Event | None = None,
        proxy: Proxy | None = None,
        observer: Callable[[Answer], None] | None = None,
    ) -> None:
        """``timeout``: one whole request, connect to last byte. ``cancel``: once set (SIGTERM), waits
        end, the request in flight is abandoned within a fraction of a second, and every call
        raises :class:`Cancelled`; see :meth:`cancel`. ``proxy``: the egress proxy every
        connection tunnels through (``clob.proxy``). ``observer`` hears of every answer."""
        self.host = host.rstrip("/")
        self.chain_id = chain_id
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.skew = skew or SkewPolicy()
        self.auth_budget = auth_budget or SlidingWindowBudget(100, 10.0)
        self.read_budget = read_budget or SlidingWindowBudget(9000, 10.0)
        self.probe = probe or ProbeEndpoint()
        # The probe endpoint's own documented limit (200 per 10 s for /balance-allowance).
        self.probe_budget = probe_budget or SlidingWindowBudget(200, 10.0)
        # Whether the probe endpoint's 200s can be taken for "the CLOB accepts this key" (probe.py).
        self.probe_route = ProbeRoute()
        self.metrics = metrics
        self._cancel = cancel if cancel is not None else threading.Event()
        self._sleep = sleep if sleep is not None else self._cancel.wait
        self._guard: RequestGuard | None = None
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        self._offset: float | None = None  # server clock - local clock
        self._offset_checked = 0.0
        self._clock_failed: tuple[float, str] | None = None  # (monotonic until, why)
        self.proxy = proxy
        self._observer = observer
        # Edge blocks, by path (an edge may refuse /auth/* and let the probe endpoint through):
        # the last run of identical edge answers; while blocked, until when (monotonic) calls fail
        # without a request, and why; the next wait.
        self._edge_run: dict[str, tuple[tuple[int, str], int]] = {}
        self._blocked: dict[str, tuple[float, str]] = {}
        self._block_wait: dict[str, float] = {}
        self.time_check = TimeCheck()  # which /time answers are the CLOB's clock (issue 22)
        self._answers = threading.local()  # this thread's last /time Date header, TimeCheck's witness

    # -- shutdown ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        """The worker is stopping: cut retry and budget waits short, abandon requests in flight.
        Irreversible; every call from now on raises :class:`Cancelled`."""
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def pause(self, seconds: float) -> None:
        """Sleep that :meth:`cancel` ends early (for the rotation's verify backoff)."""
        self._cancel.wait(seconds)

    def _check_cancel(self, method: str, path: str) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"{self._where(method, path)}: abandoned, the worker is stopping", endpoint=path)

    # -- transport ------------------------------------------------------------------------------
    def _where(self, method: str, path: str) -> str:
        """How errors name a request: method and URL, so the host is always in the one line."""
        return f"{method} {self.host}{path}"

    def _client(self) -> tuple[httpx.Client, RequestGuard]:
        with self._lock:
            if self._http is None or self._guard is None:
                # lazy: keeps `rotator --help` and nothing-due passes light
                from rotator.clob.transport import RequestGuard, build_client

                self._guard = RequestGuard(self._cancel)
                self._http = build_client(self.host, self._guard, self.proxy)
            return self._http, self._guard

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None
                self._guard = None

    def _count(self, path: str, code: int) -> None:
        if self.metrics is not None:
            self.metrics.clob_requests.labels(endpoint=path, code=str(code)).inc()

    def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        deadline: float,
        query: str = "",
        content: str = "",
    ) -> Any:
        """One request, done by ``deadline`` (monotonic) and never past ``timeout`` from now, with
        its answer capped at ``MAX_BODY``. Translates every failure into the ClobError tree."""
        import httpx

        from rotator.clob.transport import MAX_BODY, CancelledIO, ProxyFailed, connect_cause, read_capped

        where = self._where(method, path)
        via = f" via proxy {self.proxy.shown}" if self.proxy is not None else ""
        client, guard = self._client()
        budget = self._budget(path)
        slot = budget.acquire(deadline, self._cancel)
        if slot is None:
            self._check_cancel(method, path)
            raise Transient(f"{where}: no request budget left before the pass deadline", endpoint=path)
        limit = min(time.monotonic() + self.timeout, deadline)
        started = time.monotonic()
        try:
            # The guard bounds every socket operation; httpx's own timeout only needs to be no
            # shorter (it would otherwise cut the guard's slices).
            timeout = max(limit - time.monotonic(), 0.001)
            with (
                guard.deadline(limit),
                client.stream(
                    method, path + query, headers=headers, timeout=timeout, content=content.encode() or None
                ) as resp,
            ):
                status, resp_headers = resp.status_code, resp.headers
                body = read_capped(resp)
                tls = _tls_of(resp) if self._observer is not None else None
        except CancelledIO as exc:
            self._count(path, 0)
            raise Cancelled(f"{where}: abandoned, the worker is stopping", endpoint=path) from exc
        except ProxyFailed as exc:
            # Not retried within the call, like a refused connection: a wrong password or a proxy
            # that refuses the CLOB does not change in seconds.
            self._count(path, 0)
            raise Unreachable(f"{where}: via proxy {self.proxy_shown}: {exc}", endpoint=path) from exc
        except httpx.ConnectTimeout as exc:
            self._count(path, 0)
            raise Unreachable(
                f"{where}: cannot connect{via} (no answer within {self.timeout:g}s)", endpoint=path
            ) from exc
        except httpx.TimeoutException as exc:
            self._count(path, 0)
            raise Transient(
                f"{where}: timed out (whole request limited to {self.timeout:g}s)", endpoint=path
            ) from exc
        except httpx.ConnectError as exc:
            self._count(path, 0)
            raise Unreachable(f"{where}: cannot connect{via}: {connect_cause(exc)}", endpoint=path) from exc
        except httpx.HTTPError as exc:
            self._count(path, 0)
            raise Transient(f"{where}: {type(exc).__name__}: {connect_cause(exc)}", endpoint=path) from exc
        finally:
            budget.complete(slot)
        self._count(path, status)
        self._rate_limit_headers(path, resp_headers)
        edge = edge_answer(status, resp_headers, body)
        if self._observer is not None:
            self._observer(
                Answer(
                    method,
                    path,
                    status,
                    {h: resp_headers[h] for h in OBSERVED_HEADERS if h in resp_headers},
                    tls[0] if tls else "",
                    tls[1] if tls else None,
                    tls[2] if tls else None,
                    tls[3] if tls else None,
                    time.monotonic() - started,
                    edge,
                )
            )
        self._edge_seen(edge, where, path)
        if path == "/time":
            self._answers.date = resp_headers.get("date")
        if body is None:
            raise Transient(
                f"{where}: answer larger than {MAX_BODY // 1024} KiB, not read", status=status, endpoint=path
            )
        if status == 200:
            try:
                return json.loads(body)
            except ValueError:
                return body.decode("utf-8", "replace")
        raise self._error(method, path, status, resp_headers, body, sent=headers)

    def _rate_limit_headers(self, path: str, headers: httpx.Headers) -> None:
        """``Poly-RateLimit-Tier`` / ``Poly-RateLimit-Warning`` (polymarket-client reads the same
        headers): the last tier seen and a count of warnings. Absent headers change nothing."""
        if self.metrics is None:
            return
        tier = headers.get("poly-ratelimit-tier")
        if tier is not None and tier.strip():
            self.metrics.observe_rate_limit_tier(tier.strip())
        warning = headers.get("poly-ratelimit-warning")
        if warning is not None and warning.strip().lower() == "true":
            self.metrics.rate_limit_warnings.labels(endpoint=path).inc()

    def _budget(self, path: str) -> SlidingWindowBudget:
        """Which client-side budget a request to ``path`` spends: each mirrors one server-side limit."""
        if path.startswith("/auth/"):
            return self.auth_budget
        if path == self.probe.path:
            return self.probe_budget
        return self.read_budget

    def _error(
        self,
        method: str,
        path: str,
        status: int,
        headers: httpx.Headers,
        raw: bytes,
        sent: Mapping[str, str] | None = None,
    ) -> ClobError:
        """The error for a non-200 answer. ``sent``: the request's headers, which the body may repeat."""
        ctype = headers.get("content-type", "")
        body: Any = None
        if "json" in ctype:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        reason = error_reason(body, sent or {})
        where = self._where(method, path)
        if status == 429:
            retry_after = _retry_after(headers.get("retry-after"), body)
            if retry_after is not None:
                self._budget(path).penalise(retry_after)
            return RateLimited(f"{where}: rate limited (429)", retry_after=retry_after, endpoint=path)
        if status == 401:
            return Unauthorized(f"{where}: 401 {reason or 'Unauthorized'}", status=401, endpoint=path)
        if status == 425 or status >= 500:
            return Transient(f"{where}: {status} {reason or 'server error'}", status=status, endpoint=path)
        return Rejected(f"{where}: {status} {reason or 'rejected'}", status=status, endpoint=path)

    def _call(
        self,
        method: str,
        path: str,
        headers_fn: Callable[[], dict[str, str]],
        *,
        idempotent: bool,
        query: str = "",
        content: str = "",
    ) -> Any:
        """Send with retries: 429 always (nothing happened), transient failures only if idempotent,
        never an unreachable host (refused, unresolvable: retrying within seconds does not help).
        The whole call, retries included, ends by ``retry.deadline``."""
        deadline = time.monotonic() + self.retry.deadline
        attempt = 0
        while True:
            self._check_cancel(method, path)
            self._check_blocked(method, path)
            # Outside the retry: the headers' clock check is a call of its own, already retried.
            headers = headers_fn()
            try:
                return self._send(method, path, headers, deadline, query, content)
            except _EdgeRefused as exc:
                # Retried whatever the method: the edge answered, so the CLOB never saw the request.
                attempt += 1
                delay = self.retry.delay(attempt, None)
                if time.monotonic() + delay > deadline:
                    what = f"{exc} ({attempt} in a row before the call's deadline)"
                    raise self._block(what, path) from None
                log.debug("retrying %s %s in %.2fs after: %s", method, path, delay, exc)
                self._sleep(delay)
            except (RateLimited, Transient) as exc:
                attempt += 1
                retryable = (isinstance(exc, RateLimited) or idempotent) and not isinstance(exc, Unreachable)
                retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
                delay = self.retry.delay(attempt, retry_after)
                if not retryable or attempt >= self.retry.attempts or time.monotonic() + delay > deadline:
                    raise
                log.debug("retrying %s %s in %.2fs after: %s", method, path, delay, exc)
                self._sleep(delay)

    # -- edge blocks ------------------------------------------------------------------------------
    @property
    def proxy_shown(self) -> str:
        return self.proxy.shown if self.proxy is not None else "none"

    def _edge_seen(self, edge: EdgeAnswer | None, where: str, path: str) -> None:
        """Count an answer into the run of identical edge answers (any other answer ends the run
        and lifts a block); raise :class:`_EdgeRefused`, or :class:`Blocked` once the run is long
        enough."""
        with self._lock:
            if edge is None:
                if path in self._edge_run:
                    del self._edge_run[path]
                    self._blocked.pop(path, None)
                    self._block_wait.pop(path, None)
                return
            same = (edge.status, edge.kind)
            last = self._edge_run.get(path)
            run = last[1] + 1 if last is not None and last[0] == same else 1
            self._edge_run[path] = (same, run)
            # While the edge blocks another path, its first refusal here is the same block, not a
            # passing challenge: no three more requests per path.
            now = time.monotonic()
            elsewhere = any(p != path and now < until for p, (until, _) in self._blocked.items())
        if run >= EDGE_BLOCK_AFTER or elsewhere:
            raise self._block(f"{where}: {edge.text} ({run} identical answers in a row)", path)
        raise _EdgeRefused(f"{where}: {edge.text}", edge, path)

    def _block(self, what: str, path: str) -> Blocked:
        """The :class:`Blocked` for ``what`` (the request and the edge's answer); from now on, calls
        fail the same way without a request until the recheck time."""
        if self.proxy is None:
            remedy = (
                "this worker's egress address is refused; send the worker's CLOB traffic through an "
                "egress proxy whose address the CLOB accepts (clob.proxy, see docs/real-clob.md)"
            )
        else:
            remedy = (
                f"the egress address of proxy {self.proxy.shown} is refused; use a proxy whose "
                "address the CLOB accepts (clob.proxy, see docs/real-clob.md)"
            )
        message = f"blocked by the CLOB's edge: {what}: {remedy}"
        with self._lock:
            wait = self._block_wait.get(path, BLOCK_RECHECK)
            self._blocked[path] = (time.monotonic() + wait, message)
            self._block_wait[path] = min(wait * 2, BLOCK_RECHECK_CAP)
            # A call that gave up before the run was long enough blocks all the same.
            last = self._edge_run.get(path)
            if last is not None:
                self._edge_run[path] = (last[0], max(last[1], EDGE_BLOCK_AFTER))
        log.error("%s; not asking the CLOB again for %.0fs", message, wait)
        return Blocked(message, endpoint=path)

    def _check_blocked(self, method: str, path: str) -> None:
        with self._lock:
            blocked = self._blocked.get(path)
        if blocked is not None and time.monotonic() < blocked[0]:
            left = blocked[0] - time.monotonic()
            raise Blocked(f"{blocked[1]} (asked again in {left:.0f}s)", endpoint=path)

    def blocked(self) -> str | None:
        """Why some calls fail without a request right now (the edge blocks this egress), or None."""
        now = time.monotonic()
        with self._lock:
            return next((why for until, why in self._blocked.values() if now < until), None)

    # -- clock ------------------------------------------------------------------------------------
    def server_time(self) -> float:
        local_before = time.time()
        self._answers.date = None
        value = self._call("GET", "/time", dict, idempotent=True)
        local_after = time.time()
        if isinstance(value, dict):  # some deployments answer {"time": ...}
            value = value.get("time", value.get("timestamp"))
        local = (local_before + local_after) / 2
        try:
            seconds = self.time_check.accept(value, local=local, date=self._answers.date)
        except ValueError as exc:
            # A failed measurement, never a clock: nothing is signed or scheduled on it.
            raise Transient(f"{self._where('GET', '/time')}: {exc}", endpoint="/time") from None
        offset = seconds - local
        with self._lock:
            self._offset = offset
            self._offset_checked = time.monotonic()
        if self.metrics is not None:
            self.metrics.clock_skew.set(offset)
        return seconds

    def clock_offset(self) -> float:
        """Seconds to add to the local clock for signing; checks the server's clock when stale."""
        with self._lock:
            fresh = (
                self._offset is not None and time.monotonic() - self._offset_checked < self.skew.recheck_every
            )
            offset = self._offset
        if not fresh:
            self._check_clock()
            with self._lock:
                offset = self._offset
        assert offset is not None
        if abs(offset) <= self.skew.max_skew:
            return 0.0
        if self.skew.mode == "refuse":
            raise ConfigError(
                f"clock skew: local clock is {offset:+.1f}s off the CLOB's (clob.clock_skew.max is "
                f"{self.skew.max_skew:g}s, mode refuse); fix NTP or set clob.clock_skew.mode: correct"
            )
        log.warning("local clock is %+.1fs off the CLOB's: signing with server time", offset)
        return offset

    def _check_clock(self) -> None:
        """:meth:`server_time`, except right after it failed: a create whose clock check used up its
        retry deadline is followed at once by the lost-answer recovery (a derive), which would
        otherwise wait the same deadline again on the same dead server."""
        with self._lock:
            failed = self._clock_failed
        if failed is not None and time.monotonic() < failed[0]:
            raise Transient(failed[1], endpoint="/time")
        try:
            self.server_time()
        except Cancelled:
            raise
        except ClobError as exc:
            with self._lock:
                self._clock_failed = (time.monotonic() + CLOCK_RECHECK_AFTER_FAILURE, str(exc))
            raise
        with self._lock:
            self._clock_failed = None

    def _timestamp(self) -> str:
        return str(int(time.time() + self.clock_offset()))

    # -- L1 ---------------------------------------------------------------------------------------
    def _l1_headers(self, signer: Signer, nonce: int) -> dict[str, str]:
        from rotator.clob.eip712 import clob_auth_digest

        ts = self._timestamp()
        digest = clob_auth_digest(signer.address, int(ts), nonce, self.chain_id)
        return {
            "POLY_ADDRESS": signer.address,
            "POLY_SIGNATURE": "0x" + signer.sign_digest(digest).hex(),
            "POLY_TIMESTAMP": ts,
            "POLY_NONCE": str(nonce),
        }

    def _key_from(self, raw: Any, signer: Signer, nonce: int, what: str) -> Key:
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(f), str) for f in ("apiKey", "secret", "passphrase")
        ):
            raise Transient(f"{self.host}{what}: answer lacks apiKey/secret/passphrase", endpoint=what)
        return Key(
            api_key=raw["apiKey"],
            api_secret=Secret(raw["secret"]),
            api_passphrase=Secret(raw["passphrase"]),
            address=signer.address,
            nonce=nonce,
            created_at=time.time(),
        )

    def create_key(self, signer: Signer, nonce: int) -> Key:
        raw = self._call("POST", "/auth/api-key", lambda: self._l1_headers(signer, nonce), idempotent=False)
        return self._key_from(raw, signer, nonce, "/auth/api-key")

    def derive_key(self, signer: Signer, nonce: int) -> Key | None:
        try:
            raw = self._call(
                "GET", "/auth/derive-api-key", lambda: self._l1_headers(signer, nonce), idempotent=True
            )
        except Rejected as exc:
            if exc.status == 400:  # "Could not derive api key!": no live key at this nonce
                return None
            raise
        return self._key_from(raw, signer, nonce, "/auth/derive-api-key")

    # -- L2 ---------------------------------------------------------------------------------------
    def _l2_headers(self, key: Key, method: str, path: str, secret: Secret | None = None) -> dict[str, str]:
        """``secret``: sign with this instead of the key's own (a deliberately wrong signature)."""
        ts = self._timestamp()
        return {
            "POLY_ADDRESS": key.address,
            "POLY_SIGNATURE": l2_signature(key.api_secret if secret is None else secret, ts, method, path),
            "POLY_TIMESTAMP": ts,
            "POLY_API_KEY": key.api_key,
            "POLY_PASSPHRASE": key.api_passphrase.reveal(),
        }

    def list_keys(self, key: Key) -> list[str]:
        raw = self._call(
            "GET", "/auth/api-keys", lambda: self._l2_headers(key, "GET", "/auth/api-keys"), idempotent=True
        )
        ids = raw.get("apiKeys") if isinstance(raw, dict) else None
        if not isinstance(ids, list):
            raise Transient(
                f"{self._where('GET', '/auth/api-keys')}: answer lacks apiKeys", endpoint="/auth/api-keys"
            )
        # Some SDK typings say a list of creds objects: accept both shapes.
        return [i if isinstance(i, str) else str(i.get("apiKey", i.get("key", ""))) for i in ids]

    def probe_key(self, key: Key) -> None:
        """One L2 read signed with ``key`` on the probe endpoint, outside ``/auth/*``.

        Its 200 counts only from a route shown to refuse a wrong signature (:mod:`rotator.clob.probe`).
        A route that is missing (404/405) or checks no auth is left for a back-off, the check going
        through ``GET /auth/api-keys`` meanwhile (said in the log): a probe never fails a pass for that.

        :raises Unauthorized: the server refuses ``key``.
        """
        route = self.probe_route
        if route.usable():
            path, query = self.probe.path, self.probe.query
            try:
                answer = self._call(
                    "GET", path, lambda: self._l2_headers(key, "GET", path), idempotent=True, query=query
                )
            except Rejected as exc:
                if exc.status not in (404, 405):
                    route.changed()
                    raise
                self._leave_route("unserved", f"does not serve the probe endpoint GET {path} ({exc.status})")
            else:
                if self._route_vouches(key, answer_shape(answer)):
                    return
        self.list_keys(key)

    def _route_vouches(self, key: Key, shape: str) -> bool:
        """Whether the probe route's 200 (of ``shape``) says the CLOB accepts ``key``: it does once the
        route has answered 401 to the same request signed with a random secret.

        :raises Transient, RateLimited: the proof could not tell (the caller's check is unknown).
        """
        route = self.probe_route
        if route.vouches(shape):
            return True
        with route.proving:
            if route.vouches(shape):  # another pass proved it meanwhile
                return True
            path, query = self.probe.path, self.probe.query
            wrong = Secret(base64.urlsafe_b64encode(os.urandom(32)).decode("ascii"))
            try:
                self._call(
                    "GET",
                    path,
                    lambda: self._l2_headers(key, "GET", path, wrong),
                    idempotent=True,
                    query=query,
                )
            except Unauthorized:
                if route.proven(shape):
                    log.info("the probe endpoint GET %s checks L2 auth again: probing keys on it", path)
                return True
            except Rejected as exc:
                route.changed()
                if exc.status in (404, 405):
                    self._leave_route(
                        "unserved", f"does not serve the probe endpoint GET {path} ({exc.status})"
                    )
                    return False
                # It turned the wrong signature away, but not as the CLOB refuses bad L2 auth.
                self._leave_route("unauthenticated", f"answered {exc.status}, not 401, to a wrong signature")
                return False
            self._leave_route(
                "unauthenticated", f"GET {path} answered 200 to a wrong signature: it does not check L2 auth"
            )
            return False

    def _leave_route(self, why: Unusable, what: str) -> None:
        news, after = self.probe_route.leave(why)
        if news:
            log.warning(
                "%s: checking keys with GET /auth/api-keys instead, which spends the shared /auth/* "
                "budget, and trying the probe endpoint again in %.0fs (then less and less often); set "
                "clob.probe.endpoint to an authenticated L2 read this server serves",
                what,
                after,
            )

    def probe_endpoint_status(self, key: Key | None) -> int:
        """What the probe endpoint answers (``rotator doctor``): 200 signed with a key it accepts, 401
        unsigned or refused (so it is served), 404 or 405 when this server does not serve it."""
        path, query = self.probe.path, self.probe.query
        headers: Callable[[], dict[str, str]] = (
            (lambda: self._l2_headers(key, "GET", path)) if key is not None else dict
        )
        try:
            self._call("GET", path, headers, idempotent=True, query=query)
        except Unauthorized:
            return 401
        except Rejected as exc:
            return exc.status or 400
        return 200

    def closed_only(self, key: Key) -> bool:
        raw = self._call(
            "GET", CLOSED_ONLY, lambda: self._l2_headers(key, "GET", CLOSED_ONLY), idempotent=True
        )
        # {"closed_only": bool}, as py-clob-client-v2's BanStatus and polymarket-client parse it.
        flag = raw.get("closed_only") if isinstance(raw, dict) else None
        if not isinstance(flag, bool):
            raise Transient(
                f"{self._where('GET', CLOSED_ONLY)}: answer lacks closed_only", endpoint=CLOSED_ONLY
            )
        return flag

    def delete_key(self, key: Key) -> None:
        self._call(
            "DELETE",
            "/auth/api-key",
            lambda: self._l2_headers(key, "DELETE", "/auth/api-key"),
            idempotent=True,
        )

    # -- read-only keys (issue 27, clob-auth.md 12.4) -----------------------------------------------
    def _l2_body_headers(self, key: Key, method: str, path: str, body: str) -> dict[str, str]:
        """L2 headers whose HMAC covers ``body`` too, exactly the bytes sent (py-clob-client's
        ``delete_readonly_api_key``: compact JSON, signed and sent as one string)."""
        ts = self._timestamp()
        return {
            "POLY_ADDRESS": key.address,
            "POLY_SIGNATURE": l2_signature(key.api_secret, ts, method, path, body),
            "POLY_TIMESTAMP": ts,
            "POLY_API_KEY": key.api_key,
            "POLY_PASSPHRASE": key.api_passphrase.reveal(),
            "Content-Type": "application/json",
        }

    def create_readonly_key(self, via: Key) -> str:
        path = READONLY_KEY
        raw = self._call("POST", path, lambda: self._l2_headers(via, "POST", path), idempotent=False)
        key_id = raw.get("apiKey") if isinstance(raw, dict) else None
        if not isinstance(key_id, str) or not key_id:
            raise Transient(f"{self._where('POST', path)}: answer lacks apiKey", endpoint=path)
        return key_id

    def list_readonly_keys(self, via: Key) -> list[str]:
        path = READONLY_KEYS
        raw = self._call("GET", path, lambda: self._l2_headers(via, "GET", path), idempotent=True)
        if isinstance(raw, dict):  # a listing shaped like /auth/api-keys' is taken too
            raw = raw.get("apiKeys", raw.get("keys"))
        if not isinstance(raw, list):
            raise Transient(f"{self._where('GET', path)}: answer is not a list of keys", endpoint=path)
        return [i if isinstance(i, str) else str(i.get("apiKey", i.get("key", ""))) for i in raw if i]

    def delete_readonly_key(self, via: Key, key_id: str) -> None:
        path = READONLY_KEY
        body = json.dumps({"key": key_id}, separators=(",", ":"), ensure_ascii=False)
        self._call(
            "DELETE",
            path,
            lambda: self._l2_body_headers(via, "DELETE", path, body),
            idempotent=True,
            content=body,
        )

    def probe_readonly_key(self, key: Key) -> None:
        from urllib.parse import quote

        path = "/data/orders"
        headers = {"POLY_READONLY_API_KEY": key.api_key, "POLY_ADDRESS": key.address}
        self._call(
            "GET", path, lambda: dict(headers), idempotent=True, query=f"?maker_address={quote(key.address)}"
        )

    # -- builder keys (issue 27, clob-auth.md 12.5) -------------------------------------------------
    def _builder_headers(self, key: Key, method: str, path: str, body: str = "") -> dict[str, str]:
        """``POLY_BUILDER_*``: the builder key's own HMAC, the L2 construction over ts + METHOD + path
        (+ body) with its secret (py_builder_signing_sdk ``BuilderSigner``, polymarket-client
        ``build_builder_key_headers``). No ``POLY_ADDRESS``: the key names its owner."""
        if key.lost:
            raise Unrevocable(
                f"builder key {key.masked}: its secret was lost with its create's answer; nothing can sign "
                "for it (revoke it in the Polymarket web UI, settings > builder)",
                endpoint=path,
            )
        ts = self._timestamp()
        return {
            "POLY_BUILDER_API_KEY": key.api_key,
            "POLY_BUILDER_PASSPHRASE": key.api_passphrase.reveal(),
            "POLY_BUILDER_SIGNATURE": l2_signature(key.api_secret, ts, method, path, body),
            "POLY_BUILDER_TIMESTAMP": ts,
        }

    def create_builder_key(self, via: Key) -> Key:
        path = BUILDER_KEY
        raw = self._call("POST", path, lambda: self._l2_headers(via, "POST", path), idempotent=False)
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(f), str) and raw.get(f) for f in ("key", "secret", "passphrase")
        ):
            raise Transient(f"{self._where('POST', path)}: answer lacks key/secret/passphrase", endpoint=path)
        return Key(
            api_key=raw["key"],
            api_secret=Secret(raw["secret"]),
            api_passphrase=Secret(raw["passphrase"]),
            address=via.address,
            nonce=0,
            created_at=time.time(),
            kind="builder",
        )

    def list_builder_keys(self, via: Key) -> list[ListedKey]:
        path = BUILDER_KEY
        raw = self._call("GET", path, lambda: self._l2_headers(via, "GET", path), idempotent=True)
        if not isinstance(raw, list):
            raise Transient(f"{self._where('GET', path)}: answer is not a list of keys", endpoint=path)
        out: list[ListedKey] = []
        for item in raw:
            # polymarket-client takes a bare id as a key never revoked
            entry = {"key": item} if isinstance(item, str) else item
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
                raise Transient(f"{self._where('GET', path)}: a listed key has no id", endpoint=path)
            out.append(ListedKey(entry["key"], _when(entry.get("createdAt")), _when(entry.get("revokedAt"))))
        return out

    def revoke_builder_key(self, key: Key) -> None:
        path = BUILDER_KEY
        self._call("DELETE", path, lambda: self._builder_headers(key, "DELETE", path), idempotent=True)

    def probe_builder_key(self, key: Key) -> None:
        path = "/builder/trades"
        self._call("GET", path, lambda: self._builder_headers(key, "GET", path), idempotent=True)


#: What key material looks like in a server's words: hex runs (passphrases, L1 signatures, private
#: keys, addresses) and base64 runs (API secrets, L2 signatures; key ids, dashes included).
_KEYISH = re.compile(r"(?:0x)?[0-9a-fA-F]{16,}|[A-Za-z0-9+/_-]{32,}={0,2}")
#: Request headers whose values may be repeated in an error line: the others are cut wherever they appear.
_NOT_SECRET = frozenset({"POLY_TIMESTAMP", "POLY_NONCE"})
#: An error line quotes at most this much of what the server said.
MAX_REASON = 200


def error_reason(body: Any, sent: Mapping[str, str]) -> str | None:
    """The server's own words in an error body (``{"error": "..."}``), fit for an error line: every
    value the request sent (its headers: passphrase, signature, key, address) and anything shaped like
    key material cut out, control characters dropped, at most :data:`MAX_REASON` characters. The one
    place every CLOB error body on every route passes through (I6): a server that repeats its input
    in its errors must not put a passphrase into a log line or a pass's result."""
    reason = body.get("error") if isinstance(body, dict) else None
    if not isinstance(reason, str):
        return None
    said = (v for k, v in sent.items() if k.upper() not in _NOT_SECRET and len(v) >= 8)
    for value in sorted(said, key=len, reverse=True):
        reason = reason.replace(value, REDACTED)
    reason = _KEYISH.sub(REDACTED, reason)
    reason = "".join(ch if ch.isprintable() else " " for ch in reason).strip()
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON] + "..."
    return reason or None


def _tls_of(resp: Any) -> tuple[str, str | None, float | None, str | None] | None:
    """(HTTP version, TLS version, certificate notAfter, issuer) of the connection ``resp`` came on."""
    import ssl

    http = str(resp.http_version)
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("ssl_object") if stream is not None else None
    if sock is None:
        return (http, None, None, None)
    cert = sock.getpeercert() or {}
    expires = ssl.cert_time_to_seconds(cert["notAfter"]) if "notAfter" in cert else None
    issuer = dict(item for rdn in cert.get("issuer", ()) for item in rdn)
    return (http, sock.version(), expires, issuer.get("organizationName") or issuer.get("commonName"))


def _retry_after(header: str | None, body: Any) -> float | None:
    for value in (header, body.get("retry_after_seconds") if isinstance(body, dict) else None):
        if value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return min(seconds, 600.0)
    return None


def _when(value: Any) -> float | None:
    """A listed builder key's ``createdAt`` / ``revokedAt``: epoch milliseconds or seconds, or an ISO
    8601 string (polymarket-client accepts both), as unix seconds; None when absent or unreadable."""
    import datetime

    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            return parsed.timestamp()
    if not isinstance(value, (int, float)) or value != value:  # NaN
        return None
    return float(value) / 1000.0 if value > 1e11 else float(value)
