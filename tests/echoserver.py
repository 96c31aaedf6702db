"""A CLOB that echoes what it was sent: a proxy in front of the sandbox answering every other request
on each route with an error whose body repeats the request's headers (``POLY_PASSPHRASE``,
``POLY_SIGNATURE``, ``POLY_API_KEY`` ...), as a server that reflects its input in error messages
would. The other requests reach the sandbox, so every command gets far enough to call every route.

Which answer a request gets is fixed by its route's count: the 1st, 3rd, 5th ... are echoes, their
status cycling through ``statuses`` and their body through a JSON ``error`` naming the headers, a
JSON ``error`` that is the passphrase alone, and plain text; the 2nd, 4th ... are the sandbox's.

Alternation reaches a route deep in a chain of calls (the audit's fourth list, reached only when the
three calls before it pass) a few times a run, too few for every status. ``focus(routes)`` turns it
into a schedule that cannot miss: from then on those routes answer every request with an echo of a
status they have not yet echoed until they have echoed them all, and every other request reaches
the sandbox.
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
        self._focus: set[tuple[str, str]] | None = None
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

    def missing(self, routes: set[tuple[str, str]]) -> set[tuple[str, str, int]]:
        """Which of ``routes`` have not yet echoed which status."""
        with self._lock:
            return {(m, p, s) for (m, p) in routes for s in self.statuses if not self.echoed[(m, p, s)]}

    def focus(self, routes: set[tuple[str, str]]) -> None:
        """From now on: echo on ``routes`` only, each request with a status the route still lacks."""
        with self._lock:
            self._focus = set(routes)

    def _answer(self, method: str, path: str) -> tuple[int, str] | None:
        """The (status, style) of an echo for this request, or None to let it reach the sandbox."""
        with self._lock:
            n = self._seen[(method, path)]
            self._seen[(method, path)] += 1
            if self._focus is None:
                if n % 2:
                    return None
                return self.statuses[(n // 2) % len(self.statuses)], STYLES[(n // 2) % len(STYLES)]
            if (method, path) not in self._focus:
                return None
            lacking = [s for s in self.statuses if not self.echoed[(method, path, s)]]
            return (lacking[0], STYLES[n % len(STYLES)]) if lacking else None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        method, path = handler.command, urlsplit(handler.path).path
        echo = self._answer(method, path)
        if echo is not None:
            self._echo(handler, method, path, *echo)
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
