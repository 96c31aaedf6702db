"""A fault-injecting HTTP hop in front of moto, for the AWS tests (store, signers, envelope).

Failures AWS produces but moto does not (AccessDenied under a least-privilege role, throttling) are
answered here with the error body AWS sends; every other call is forwarded untouched. Rules match the
JSON-protocol operation (``X-Amz-Target``), so Secrets Manager and KMS calls alike can be failed.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Rule:
    """Answer ``operation`` (e.g. ``PutSecretValue``) with AWS error ``code`` when the request matches."""

    operation: str
    code: str
    status: int = 400
    secret: str | None = None  # SecretId must be this
    stage: str | None = None  # VersionStage (UpdateSecretVersionStage) must be this
    skip: int = 0  # let this many matching calls through first
    times: int | None = None  # answer at most this many calls (None: all of them)
    #: Forward the call to moto first, run ``then`` (if any), and only then answer with the error:
    #: a call that took effect but whose answer was lost, as botocore retries it.
    lose_answer: bool = False
    then: Callable[[], None] | None = None
    hits: int = 0
    passed: int = 0

    def matches(self, operation: str, body: dict[str, Any]) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and operation == self.operation
            and (self.secret is None or body.get("SecretId") == self.secret)
            and (self.stage is None or body.get("VersionStage") == self.stage)
        )


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.rules: list[Rule] = []
        self.calls: collections.Counter[str] = collections.Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                proxy.calls[operation] += 1
                fields = json.loads(body or b"{}")
                rule = next((r for r in proxy.rules if r.matches(operation, fields)), None)
                if rule is not None and rule.passed < rule.skip:
                    rule.passed += 1
                    rule = None
                if rule is not None and not rule.lose_answer:
                    rule.hits += 1
                    self._answer(rule.status, {"__type": rule.code, "message": f"injected {rule.code}"})
                    return
                conn = HTTPConnection(proxy.upstream, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request("POST", self.path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if rule is not None:
                    rule.hits += 1
                    if rule.then is not None:
                        rule.then()
                    self._answer(rule.status, {"__type": rule.code, "message": f"injected {rule.code}"})
                    return
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/x-amz-json-1.1"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, status: int, payload: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-ErrorType", payload["__type"])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, operation: str, code: str, **kw: Any) -> Rule:
        rule = Rule(operation, code, **kw)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
