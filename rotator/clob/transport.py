"""The CLOB's HTTP transport: a whole-request deadline, a cancel switch and a cap on answers.

httpx's timeouts are per socket operation: a server dripping one byte per second never trips
them, and a response body is read whole into memory. Here every socket read and write of a
request is bounded by that request's own deadline and checks a cancel event (set on SIGTERM)
at least every :data:`POLL` seconds, by wrapping httpcore's network streams (httpcore's public
``NetworkBackend`` interface). Bodies are streamed and refused past :data:`MAX_BODY`.

Only ``rotator/clob/`` imports this, and lazily: httpx and httpcore stay out of a process that
never talks to the CLOB.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

#: The CLOB's auth answers are a few hundred bytes; anything past this is not an answer.
MAX_BODY = 1 << 20
#: How often a blocked read looks at the cancel switch.
POLL = 0.25


class CancelledIO(Exception):
    """Raised out of a socket operation when the cancel switch is set (the adapter translates it)."""


class RequestGuard:
    """The deadline of the request running on this thread, and the process's cancel switch."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self._local = threading.local()

    @contextlib.contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Bound every socket operation of this thread by ``at`` (monotonic) inside the block."""
        self._local.at = at
        try:
            yield
        finally:
            self._local.at = None

    def remaining(self, what: type[Exception]) -> float:
        """Seconds left; raises ``what`` when none are, :class:`CancelledIO` when cancelled."""
        if self.cancel.is_set():
            raise CancelledIO()
        at: float | None = getattr(self._local, "at", None)
        if at is None:
            return float("inf")
        left = at - time.monotonic()
        if left <= 0:
            raise what("the whole-request deadline passed")
        return left


def _bounded(
    guard: RequestGuard,
    opening: Callable[[], httpcore.NetworkStream],
    on_abandon: Callable[[], None] | None = None,
) -> httpcore.NetworkStream:
    """Run ``opening`` (a connect, a TLS handshake) on a helper thread and wait for it only while
    the request's deadline and the cancel switch allow. An abandoned opening closes the stream it
    opens once it returns; ``on_abandon`` may hurry it along."""
    lock = threading.Lock()
    done = threading.Event()
    result: list[httpcore.NetworkStream | BaseException] = []
    abandoned = False

    def run() -> None:
        try:
            got: httpcore.NetworkStream | BaseException = opening()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            got = exc
        with lock:
            result.append(got)
            if abandoned and isinstance(got, httpcore.NetworkStream):
                got.close()
        done.set()

    threading.Thread(target=run, name="clob-connect", daemon=True).start()
    while not done.wait(POLL):
        try:
            guard.remaining(httpcore.ConnectTimeout)
        except BaseException:
            with lock:
                abandoned = True
                if result and isinstance(result[0], httpcore.NetworkStream):
                    result[0].close()
            if on_abandon is not None:
                on_abandon()
            raise
    got = result[0]
    if isinstance(got, BaseException):
        raise got
    return got


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, guard: RequestGuard) -> None:
        self._inner = inner
        self._guard = guard

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # Short slices so a cancel is seen; a plain recv that timed out consumed nothing (TLS too:
        # the ssl module retries SSL_read), so the next slice carries on where this one stopped.
        while True:
            left = self._guard.remaining(httpcore.ReadTimeout)
            try:
                return self._inner.read(max_bytes, min(left, POLL))
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Not sliced: a timed-out sendall loses count of what it sent. Requests are tiny.
        left = self._guard.remaining(httpcore.WriteTimeout)
        self._inner.write(buffer, left if timeout is None else min(timeout, left))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        # The handshake's timeout is per socket operation, as httpx's is: bounded like a connect.
        left = self._guard.remaining(httpcore.ConnectTimeout)
        limit = left if timeout is None else min(timeout, left)
        inner = _bounded(
            self._guard,
            lambda: self._inner.start_tls(ssl_context, server_hostname, limit),
            on_abandon=self._inner.close,
        )
        return _Stream(inner, self._guard)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, guard: RequestGuard, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._guard = guard

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Name resolution (getaddrinfo) takes no timeout and cannot be interrupted: see
        :func:`_bounded`."""
        left = self._guard.remaining(httpcore.ConnectTimeout)
        limit = left if timeout is None else min(timeout, left)
        stream = _bounded(
            self._guard, lambda: self._inner.connect_tcp(host, port, limit, local_address, socket_options)
        )
        return _Stream(stream, self._guard)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = self._guard.remaining(httpcore.ConnectTimeout)
        limit = left if timeout is None else min(timeout, left)
        return _Stream(self._inner.connect_unix_socket(path, limit, socket_options), self._guard)

    def sleep(self, seconds: float) -> None:
        self._guard.cancel.wait(seconds)


class _Transport(httpx.HTTPTransport):
    """httpx's own transport over a pool whose sockets go through the guard.

    httpx does not take a network backend, so the pool it built is swapped for an identical one
    that has ours (httpx 0.28; tests/integration/test_clob_transport.py fails if that changes).
    """

    def __init__(self, guard: RequestGuard, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(guard),
        )


def build_client(host: str, guard: RequestGuard) -> httpx.Client:
    """The adapter's client. Proxy variables are ignored (as for Vault): the config decides."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    return httpx.Client(
        base_url=host,
        transport=_Transport(guard, limits),
        trust_env=False,
        # identity: a compressed answer could inflate far past the cap inside one decoded chunk.
        headers={"User-Agent": "rotator", "Accept": "*/*", "Accept-Encoding": "identity"},
    )


def read_capped(resp: httpx.Response, limit: int = MAX_BODY) -> bytes | None:
    """The raw body, or ``None`` as soon as it is longer than ``limit`` (the rest is never read)."""
    declared = resp.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_raw():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def connect_cause(exc: BaseException) -> str:
    """Why a connection failed, in words: "connection refused", "cannot resolve clob.x (...)"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return f"cannot resolve the host name ({seen.strerror or seen})"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "resolution" in text:
        return f"cannot resolve the host name ({text.split('] ')[-1]})"
    if "Connection refused" in text:
        return "connection refused"
    return text.split("] ")[-1].lower() or type(exc).__name__
