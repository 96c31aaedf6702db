"""The CLOB's HTTP transport: a whole-request deadline, a cancel switch and a cap on answers.

httpx's timeouts are per socket operation: a server dripping one byte per second never trips
them, and a response body is read whole into memory. Here every socket read and write of a
request is bounded by that request's own deadline and checks a cancel event (set on SIGTERM)
at least every :data:`POLL` seconds, by wrapping httpcore's network streams (httpcore's public
``NetworkBackend`` interface). Bodies are streamed and refused past :data:`MAX_BODY`.

An egress proxy (``clob.proxy``) lives at the same layer: the backend opens each connection to the
proxy and tunnels it to the CLOB (HTTP ``CONNECT`` or SOCKS5, the CLOB's host name resolved by the
proxy) before httpcore sees it, so the handshake is under the same deadline and cancel switch, and
the pool stays ours. httpx's own ``proxy=`` would build another pool without the guard. Every
request tunnels, ``http://`` hosts too: a proxy never gets a request to forward, headers and all.

Only ``rotator/clob/`` imports this, and lazily: httpx and httpcore stay out of a process that
never talks to the CLOB.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpcore
import httpx

#: The CLOB's auth answers are a few hundred bytes; anything past this is not an answer.
MAX_BODY = 1 << 20
#: How often a blocked read looks at the cancel switch.
POLL = 0.25
#: A proxy's answer to CONNECT is a status line and a few headers.
MAX_PROXY_ANSWER = 16 * 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """The egress proxy every CLOB connection goes through (``clob.proxy``).

    ``password`` is asked for each time a connection opens (the pool keeps connections, so that is
    rare): a password file mounted from a Kubernetes Secret may change under a running worker.
    """

    scheme: Literal["http", "socks5"]
    host: str
    port: int
    username: str | None = None
    password: Callable[[], str] | None = None

    @property
    def shown(self) -> str:
        """How messages name it: scheme, user, host and port; never the password."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"


class ProxyFailed(Exception):
    """The proxy could not be used: not reachable, refused the credentials or the tunnel. The
    message names the proxy's answer, never the password (the adapter adds which proxy)."""


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
    def __init__(
        self, guard: RequestGuard, inner: httpcore.NetworkBackend | None = None, proxy: Proxy | None = None
    ) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._guard = guard
        self._proxy = proxy

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
        proxy = self._proxy
        if proxy is None:
            stream = _bounded(
                self._guard, lambda: self._inner.connect_tcp(host, port, limit, local_address, socket_options)
            )
            return _Stream(stream, self._guard)
        try:
            raw = _bounded(
                self._guard,
                lambda: self._inner.connect_tcp(proxy.host, proxy.port, limit, local_address, socket_options),
            )
        except httpcore.ConnectError as exc:
            raise ProxyFailed(f"cannot connect to the proxy: {connect_cause(exc)}") from exc
        tunnel = _Stream(raw, self._guard)
        try:
            if proxy.scheme == "socks5":
                _socks5(tunnel, host, port, proxy)
            else:
                _http_connect(tunnel, host, port, proxy)
        except BaseException:
            tunnel.close()
            raise
        return tunnel

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = self._guard.remaining(httpcore.ConnectTimeout)
        limit = left if timeout is None else min(timeout, left)
        return _Stream(self._inner.connect_unix_socket(path, limit, socket_options), self._guard)

    def sleep(self, seconds: float) -> None:
        self._guard.cancel.wait(seconds)


def _read_exact(stream: httpcore.NetworkStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise ProxyFailed("the proxy closed the connection in the middle of its handshake")
        data += chunk
    return data


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _printable(text: str, limit: int = 60) -> str:
    return "".join(ch for ch in text if ch.isprintable())[:limit]


def _http_connect(stream: httpcore.NetworkStream, host: str, port: int, proxy: Proxy) -> None:
    """An HTTP ``CONNECT`` tunnel to ``host:port`` (RFC 9110 9.3.6), with Basic credentials if any."""
    lines = [f"CONNECT {_authority(host, port)} HTTP/1.1", f"Host: {_authority(host, port)}"]
    if proxy.username is not None:
        secret = proxy.password() if proxy.password is not None else ""
        token = base64.b64encode(f"{proxy.username}:{secret}".encode()).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {token}")
    stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        if len(answer) > MAX_PROXY_ANSWER:
            raise ProxyFailed("the proxy's answer to CONNECT is not HTTP")
        chunk = stream.read(4096)
        if not chunk:
            raise ProxyFailed("the proxy closed the connection without answering CONNECT")
        answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyFailed("the proxy's answer to CONNECT is not HTTP")
    status, reason = int(parts[1]), _printable(parts[2] if len(parts) > 2 else "")
    if status in (401, 407):  # 407 by the book; tinyproxy answers a CONNECT with 401
        if proxy.username is None:
            raise ProxyFailed(
                f"the proxy asks for credentials ({status}): set clob.proxy.username and password_env "
                "or password_file"
            )
        raise ProxyFailed(f"the proxy refused the credentials of user {proxy.username!r} ({status} {reason})")
    if not 200 <= status < 300:
        raise ProxyFailed(f"the proxy refused the tunnel to {_authority(host, port)} ({status} {reason})")
    if rest:
        # The tunnel is the server's from here: a proxy that talks past its answer is not one.
        raise ProxyFailed("the proxy sent data past its answer to CONNECT")


#: RFC 1928 reply codes.
_SOCKS_REPLIES = {
    1: "general failure",
    2: "connection not allowed by its rules",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def _socks5(stream: httpcore.NetworkStream, host: str, port: int, proxy: Proxy) -> None:
    """A SOCKS5 ``CONNECT`` to ``host:port`` (RFC 1928), with username/password auth (RFC 1929) when
    configured. A host name is sent as a name: the proxy resolves it (socks5h), as it must when the
    pod's own DNS does not reach the internet."""
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    stream.write(b"\x05" + bytes([len(methods)]) + methods)
    version, method = _read_exact(stream, 2)
    if version != 5:
        raise ProxyFailed("the proxy does not speak SOCKS5")
    if method == 0xFF:
        if proxy.username is None:
            raise ProxyFailed(
                "the proxy asks for credentials: set clob.proxy.username and password_env or password_file"
            )
        raise ProxyFailed("the proxy accepts none of the authentication methods offered (none, password)")
    if method == 2:
        if proxy.username is None:
            raise ProxyFailed("the proxy asks for credentials: set clob.proxy.username and password_env")
        user = proxy.username.encode("utf-8")
        secret = (proxy.password() if proxy.password is not None else "").encode("utf-8")
        stream.write(b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret)
        _, status = _read_exact(stream, 2)
        if status != 0:
            raise ProxyFailed(f"the proxy refused the credentials of user {proxy.username!r}")
    elif method != 0:
        raise ProxyFailed(f"the proxy chose an authentication method rotator does not have ({method})")
    try:
        ip = ipaddress.ip_address(host)
        address = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        name = host.encode("idna")
        address = b"\x03" + bytes([len(name)]) + name
    stream.write(b"\x05\x01\x00" + address + port.to_bytes(2, "big"))
    version, reply, _, kind = _read_exact(stream, 4)
    if version != 5:
        raise ProxyFailed("the proxy does not speak SOCKS5")
    if reply != 0:
        why = _SOCKS_REPLIES.get(reply, f"reply {reply}")
        raise ProxyFailed(f"the proxy could not open {_authority(host, port)} ({why})")
    bound = {1: 4, 4: 16}.get(kind)
    if bound is None:
        if kind != 3:
            raise ProxyFailed("the proxy's SOCKS5 reply is malformed")
        bound = _read_exact(stream, 1)[0]
    _read_exact(stream, bound + 2)


class _Transport(httpx.HTTPTransport):
    """httpx's own transport over a pool whose sockets go through the guard.

    httpx does not take a network backend, so the pool it built is swapped for an identical one
    that has ours (httpx 0.28; tests/integration/test_clob_transport.py fails if that changes).
    """

    def __init__(
        self, guard: RequestGuard, limits: httpx.Limits, proxy: Proxy | None = None, *, tls: bool = True
    ) -> None:
        # One TLS context for both pools (loading the CA bundle costs 50 ms of CPU each time). A plain
        # http:// host (a sandbox, a test server) never shakes hands: its context loads no CA at all,
        # so a TLS connection through it would fail verification, never pass unchecked.
        context = httpx.create_ssl_context() if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        super().__init__(verify=context, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(guard, proxy=proxy),
        )


def build_client(host: str, guard: RequestGuard, proxy: Proxy | None = None) -> httpx.Client:
    """The adapter's client. Proxy variables are ignored (as for Vault): ``clob.proxy`` decides."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    return httpx.Client(
        base_url=host,
        transport=_Transport(guard, limits, proxy, tls=not host.lower().startswith("http://")),
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


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses ``host`` resolves to, asked on a helper thread (getaddrinfo takes no timeout).

    :raises OSError: it does not resolve, or not within ``timeout`` (``TimeoutError``).
    """
    done = threading.Event()
    out: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            out.append(list(dict.fromkeys(str(info[4][0]) for info in infos)))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            out.append(exc)
        done.set()

    threading.Thread(target=run, name="resolve", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"no answer within {timeout:g}s")
    got = out[0]
    if isinstance(got, BaseException):
        raise got
    return got


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
