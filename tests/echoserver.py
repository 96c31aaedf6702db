"""A CLOB that echoes what it was sent: a proxy in front of the sandbox answering every other request
on each route with an error whose body repeats the request's headers (``POLY_PASSPHRASE``,
``POLY_SIGNATURE``, ``POLY_API_KEY`` ...), as a server that reflects its input in error messages
would. The other requests reach the sandbox, so every command gets far enough to call every route.

Which answer a request gets is fixed by its route's count: the 1st, 3rd, 5th ... are echoes, their
status cycling through ``statuses`` and their body through a JSON ``error`` naming the headers, a
JSON ``error`` that is the passphrase alone, and plain text; the 2nd, 4th ... are the sandbox's.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx

STYLES = ("json-error", "json-bare", "text")


class EchoProxy:
    def __init__(self, upstream: str, statuses: tuple[int, ...] = (400, 401, 500)) -> None:
        self.upstream = upstream.rstrip("/")
        self.statuses = statuses
        #: (method, path, status) of every echo sent.
        self.echoed: collections.Counter[tuple[str, str, int]] = collections.Counter()
        #: Every POLY_SIGNATURE and POLY_PASSPHRASE value an echo repeated.
        self.repeated: set[str] = set()
        self._seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=self.upstream, timeout=30.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._serve(self)

            do_POST = do_DELETE = do_PUT = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass  # request lines only, and the tests read nothing of them

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EchoProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        method, path = handler.command, urlsplit(handler.path).path
        with self._lock:
            n = self._seen[(method, path)]
            self._seen[(method, path)] += 1
        if n % 2 == 0:
            status = self.statuses[(n // 2) % len(self.statuses)]
            style = STYLES[(n // 2) % len(STYLES)]
            self._echo(handler, method, path, status, style)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        resp = self._client.request(method, handler.path, headers=headers, content=body)
        ctype = resp.headers.get("content-type", "application/json")
        self._write(handler, resp.status_code, ctype, resp.content)

    def _echo(self, handler: BaseHTTPRequestHandler, method: str, path: str, status: int, style: str) -> None:
        sent = {k: v for k, v in handler.headers.items() if k.upper().startswith("POLY")}
        with self._lock:
            self.echoed[(method, path, status)] += 1
            secret = ("POLY_SIGNATURE", "POLY_PASSPHRASE")
            self.repeated.update(v for k, v in sent.items() if k.upper() in secret)
        text = f"invalid request to {path}: headers {json.dumps(sent)}"
        if style == "json-error":
            ctype, payload = "application/json", json.dumps({"error": text}).encode()
        elif style == "json-bare":
            bare = sent.get("POLY_PASSPHRASE") or sent.get("POLY_SIGNATURE") or text
            ctype, payload = "application/json", json.dumps({"error": bare, "headers": sent}).encode()
        else:
            ctype, payload = "text/plain", text.encode()
        self._write(handler, status, ctype, payload)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, status: int, ctype: str, payload: bytes) -> None:
        with contextlib.suppress(OSError):  # the client gave up (a cancelled call)
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
