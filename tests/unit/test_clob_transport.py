"""The CLOB transport's pieces: the answer cap, the per-request guard, and how a failed connection
is put in words (issue 13, items 16-18). The end-to-end behaviour is in
tests/integration/test_clob_transport.py."""

from __future__ import annotations

import socket
import threading
import time

import httpcore
import httpx
import pytest

from rotator.clob.transport import CancelledIO, RequestGuard, connect_cause, read_capped


def response(chunks: list[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    class Stream(httpx.SyncByteStream):
        def __init__(self) -> None:
            self.served = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            for chunk in chunks:
                self.served += 1
                yield chunk

    return httpx.Response(200, headers=headers, stream=Stream())


def test_an_answer_within_the_cap_is_read_whole() -> None:
    assert read_capped(response([b'{"a":', b"1}"]), limit=16) == b'{"a":1}'


def test_a_longer_answer_is_dropped_as_soon_as_it_passes_the_cap() -> None:
    resp = response([b"x" * 10] * 1000)
    assert read_capped(resp, limit=25) is None
    assert resp.stream.served == 3  # type: ignore[attr-defined]  # the rest was never read


def test_a_declared_length_past_the_cap_is_refused_unread() -> None:
    resp = response([b"x"], headers={"Content-Length": str(2**30)})
    assert read_capped(resp, limit=2**20) is None
    assert resp.stream.served == 0  # type: ignore[attr-defined]


def test_the_guard_bounds_only_its_own_thread_and_sees_cancel() -> None:
    cancel = threading.Event()
    guard = RequestGuard(cancel)
    assert guard.remaining(httpcore.ReadTimeout) == float("inf")
    with guard.deadline(time.monotonic() + 5):
        assert 4 < guard.remaining(httpcore.ReadTimeout) <= 5
        other: list[float] = []
        t = threading.Thread(target=lambda: other.append(guard.remaining(httpcore.ReadTimeout)))
        t.start()
        t.join()
        assert other == [float("inf")]
    with guard.deadline(time.monotonic() - 1), pytest.raises(httpcore.ReadTimeout):
        guard.remaining(httpcore.ReadTimeout)
    cancel.set()
    with pytest.raises(CancelledIO):
        guard.remaining(httpcore.ReadTimeout)


def _chained(inner: OSError) -> httpx.ConnectError:
    """As httpcore and httpx raise it: each layer's error caused by the one below."""
    core = httpcore.ConnectError(str(inner))
    core.__cause__ = inner
    err = httpx.ConnectError(str(core))
    err.__cause__ = core
    return err


@pytest.mark.parametrize(
    ("inner", "words"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve the host name"),
        (OSError(113, "No route to host"), "no route to host"),
    ],
)
def test_a_failed_connection_is_named_by_its_cause(inner: OSError, words: str) -> None:
    assert words in connect_cause(_chained(inner))


class _SlowResolver(httpcore.NetworkBackend):
    """A backend whose connect hangs the way getaddrinfo does on a dead resolver."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.opened: list[_Closable] = []

    def connect_tcp(self, host: str, port: int, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        time.sleep(self.seconds)
        stream = _Closable()
        self.opened.append(stream)
        return stream


class _Closable(httpcore.NetworkStream):
    closed = False

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_hanging_connect_is_abandoned_at_the_deadline_or_on_cancel(how: str) -> None:
    from rotator.clob.transport import _Backend

    cancel = threading.Event()
    guard = RequestGuard(cancel)
    slow = _SlowResolver(1.5)
    backend = _Backend(guard, slow)
    started = time.monotonic()
    if how == "cancel":
        threading.Timer(0.3, cancel.set).start()
    expected = httpcore.ConnectTimeout if how == "deadline" else CancelledIO
    with guard.deadline(started + (0.3 if how == "deadline" else 30)), pytest.raises(expected):
        backend.connect_tcp("clob.example", 443)
    assert time.monotonic() - started < 0.9
    time.sleep(1.6)
    assert [s.closed for s in slow.opened] == [True]  # what the abandoned connect opened is closed


class _SlowHandshake(httpcore.NetworkStream):
    """A plain stream whose TLS handshake drips (a slowloris on the handshake)."""

    closed = False

    def start_tls(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        time.sleep(1.5)
        return _Closable()

    def close(self) -> None:
        self.closed = True


def test_a_dripping_tls_handshake_is_abandoned_at_the_deadline() -> None:
    from rotator.clob.transport import _Stream

    guard = RequestGuard(threading.Event())
    plain = _SlowHandshake()
    started = time.monotonic()
    with guard.deadline(started + 0.3), pytest.raises(httpcore.ConnectTimeout):
        _Stream(plain, guard).start_tls(None, "clob.example")
    assert time.monotonic() - started < 0.9 and plain.closed


@pytest.mark.parametrize("host", ["https://clob.polymarket.com", "http://127.0.0.1:9"])
def test_the_client_verifies_tls_and_loads_the_ca_bundle_only_for_https(host: str) -> None:
    """One TLS context serves both of the transport's pools. An https:// CLOB gets the CA bundle and
    checks the certificate and the host name. A plain http:// one (a sandbox) loads no CA, and still
    requires a certificate: a TLS connection through it fails, never passes unchecked."""
    import ssl

    from rotator.clob.transport import build_client

    client = build_client(host, RequestGuard(threading.Event()))
    try:
        transport = client._transport
        context = transport._pool._ssl_context  # type: ignore[attr-defined]
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert (context.cert_store_stats()["x509_ca"] > 0) == host.startswith("https://")
    finally:
        client.close()
