"""A misbehaving HTTP server over a real socket, for the CLOB transport's failure modes.

The sandbox is a faithful CLOB; this is the opposite: a server that answers HTML or garbage,
leaves fields out, streams an endless body, drips bytes (slowloris) or never answers at all. It
speaks just enough HTTP/1.1 to be read, and every answer closes its connection.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from typing import Literal

Mode = Literal["html", "non-json", "missing-fields", "giant", "slowloris", "slow-headers", "hang"]

HTML = b"<html><head><title>Just a moment...</title></head><body>Cloudflare</body></html>"


class BadServer:
    """``with BadServer("giant") as bad: bad.url``. ``mode`` decides every answer."""

    def __init__(self, mode: Mode, *, drip_every: float = 0.5, giant_bytes: int = 200 * 2**20) -> None:
        self.mode = mode
        self.drip_every = drip_every
        self.giant_bytes = giant_bytes
        self.requests: list[str] = []
        self._stop = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> BadServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, sock: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.requests.append(line)
        path = line.split(" ")[1].split("?")[0] if " " in line else "/"
        with contextlib.suppress(OSError):  # the client gave up: that is the point of most modes
            self._answer(sock, path)

    def _send(self, sock: socket.socket, ctype: str, body: bytes) -> None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )

    def _answer(self, sock: socket.socket, path: str) -> None:
        mode = self.mode
        if mode == "html":
            self._send(sock, "text/html", HTML)
        elif mode == "non-json":
            self._send(sock, "text/plain", b"OK")
        elif mode == "missing-fields":
            body = str(int(time.time())).encode() if path == "/time" else b'{"status": "ok"}'
            self._send(sock, "application/json", body)
        elif mode == "giant":
            # No length: the body ends when the connection does, so only a cap stops the reader.
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
            block = b" " * 2**20
            sent = 0
            while sent < self.giant_bytes and not self._stop.is_set():
                sock.sendall(block)
                sent += len(block)
        elif mode in ("slowloris", "slow-headers"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            if mode == "slowloris":
                sock.sendall(head)
                head = b"1" * 100000
            for i in range(len(head)):
                if self._stop.wait(self.drip_every):
                    return
                sock.sendall(head[i : i + 1])
        elif mode == "hang":
            self._stop.wait()
