"""The Vault store end to end, against a real OpenBao on loopback and the sandbox CLOB.

Rotations run through the real CLI (a subprocess per pass, as the CronJob runs it) with the policies
shipped in deploy/vault/; failures (unreachable, sealed mid-rotation, expired token) must fail the pass
with exit 1 and one clear line, leave the published key as it was, and let the next pass pick up.
Token renewal, Kubernetes login, TLS and namespaces are exercised for real too.
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac.exceptions import Forbidden

from rotator.config import VaultSettings, load_settings
from rotator.consumer import CredentialSource
from rotator.errors import AccessDenied, Corrupt, StoreError, Unavailable
from rotator.model import PUBLISHED_FIELDS, CredentialRef, CredentialState, Key, ack_prefix
from rotator.rotation import Rotator
from rotator.runtime import Runtime
from rotator.sandbox import Sandbox
from rotator.stores.base import Snapshot
from rotator.stores.vault import VaultStore, build_vault_store
from tests.harness import OUTPUTS, SECRETS, Worker, find_leaks, sdk_works
from tests.servers import OpenBao, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "vault"
# The names the shipped policies are written for (deploy/vault/*.hcl): only one test uses them.
POLICY_CREDENTIAL = "market-maker-1"


# -- helpers -----------------------------------------------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class VaultWorker(Worker):
    """A :class:`Worker` whose store is Vault: ``vault`` is the ``store.vault`` section minus url."""

    vault_url: str = ""
    vault: dict[str, Any] = field(default_factory=dict)
    vault_env: dict[str, str] = field(default_factory=dict)
    root_token: str = ""
    ca_cert: str | None = None

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["store"] = {"backend": "vault", "vault": {"url": self.vault_url, **self.vault}}
        return cfg

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith(("VAULT_", "BAO_"))}
        env.pop("TEST_FILE_KEY", None)
        env.update(self.vault_env)
        return env

    def store(self) -> VaultStore:  # type: ignore[override]
        """The same mount and prefix, seen with the root token (inspection only)."""
        section = {k: v for k, v in self.vault.items() if k in ("mount", "state_prefix", "namespace")}
        settings = VaultSettings(
            url=self.vault_url,
            auth={"method": "token", "token_env": "ROOT"},
            tls={"ca_cert": self.ca_cert} if self.ca_cert else {},
            **section,
        )
        return build_vault_store(settings, {"ROOT": self.root_token})


def vault_worker(
    bao: OpenBao, tmp: Path, clob_url: str, wallet: tuple[str, str], token: str | None = None, **kw: Any
) -> VaultWorker:
    token = token or bao.root_token
    SECRETS.add(token)
    kw.setdefault("name", _unique("vw"))
    kw.setdefault("vault", {"auth": {"method": "token", "token_env": "VAULT_TOKEN"}})
    kw.setdefault("vault_env", {"VAULT_TOKEN": token})
    kw.setdefault("cred_extra", {"verify_timeout": "10s"})
    return VaultWorker(
        tmp, clob_url, *wallet, vault_url=bao.url, root_token=bao.root_token, ca_cert=bao.ca_cert, **kw
    )


def failure_line(name: str, code: int, out: str, err: str) -> str:
    """The CLI's report line for a failed pass: exit 1, exactly one line naming the credential."""
    assert code == 1, (out, err)
    lines = [line for line in out.splitlines() if line.startswith(f"{name}:")]
    assert len(lines) == 1 and " failed " in lines[0], out
    assert "Traceback" not in out + err
    return lines[0]


def one_line_failure(proc: subprocess.CompletedProcess[str], name: str) -> str:
    return failure_line(name, proc.returncode, proc.stdout, proc.stderr)


def write_policies(bao: OpenBao) -> tuple[str, str]:
    root = bao.client()
    rotator, consumer = _unique("rotator"), _unique("consumer")
    root.sys.create_or_update_policy(rotator, (DEPLOY / "rotator-policy.hcl").read_text())
    root.sys.create_or_update_policy(consumer, (DEPLOY / "consumer-policy.hcl").read_text())
    return rotator, consumer


def make_token(bao: OpenBao, policy: str, ttl: str = "10m", **kw: Any) -> str:
    # no_default_policy: the shipped policy alone must be enough.
    made = bao.client().auth.token.create(policies=[policy], no_default_policy=True, ttl=ttl, **kw)
    token = str(made["auth"]["client_token"])
    SECRETS.add(token)
    return token


def published_versions(bao: OpenBao, path: str, mount: str = "secret") -> list[dict[str, Any]]:
    """Every version ever written at ``path``: what any consumer could have read at any time."""
    kv = bao.client().secrets.kv.v2
    current = kv.read_secret_metadata(path=path, mount_point=mount)["data"]["current_version"]
    return [
        kv.read_secret_version(path=path, version=v, mount_point=mount, raise_on_deleted_version=True)[
            "data"
        ]["data"]
        for v in range(1, current + 1)
    ]


def assert_no_leaks(*texts: str) -> None:
    assert find_leaks(list(texts), SECRETS) == []


@pytest.fixture
def short_bao(openbao_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A server of the test's own, for tests that seal it."""
    server = OpenBao(openbao_binary, tmp_path_factory.mktemp("bao-short"))
    yield server
    server.stop()


# -- rotation through the CLI, with the shipped policies ------------------------------------------------


@pytest.mark.slow
def test_cli_rotates_with_the_rotator_policy_and_consumers_only_read_the_published_key(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    rotator_policy, consumer_policy = write_policies(openbao)
    rotator_token = make_token(openbao, rotator_policy)
    consumer_token = make_token(openbao, consumer_policy)
    w = vault_worker(openbao, tmp_path, sandbox.url, wallet, rotator_token, name=POLICY_CREDENTIAL)
    consumer = openbao.client(consumer_token).secrets.kv.v2

    def consumer_reads() -> Key:
        raw = consumer.read_secret_version(
            path=w.ref.path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        assert sorted(raw) == sorted(PUBLISHED_FIELDS)  # exactly the consumer contract, nothing more
        return Key.from_dict(raw)

    # Bootstrap.
    out = w.rotate()
    assert f"{w.name}: rotated" in out.stdout
    k1 = consumer_reads()
    assert k1 == w.state().current
    assert sdk_works(sandbox.url, w.private_key, k1)

    # Forced rotation: the new key is published, the old one stays valid for the grace.
    w.rotate("--force")
    k2 = consumer_reads()
    assert k2.nonce == k1.nonce + 1 and k2.api_key != k1.api_key
    assert k1.api_key in sandbox.live_keys(w.address) and sdk_works(sandbox.url, w.private_key, k2)
    assert [r.key.api_key for r in w.state().retiring] == [k1.api_key]

    # After the grace: revoked at the CLOB, gone from the state, consumers still on k2.
    time.sleep(2.1)
    out = w.rotate()
    assert "revoked=1" in out.stdout
    assert "acknowledgements unreadable" not in out.stderr  # the policy lets the worker list them
    assert sandbox.live_keys(w.address) == [k2.api_key]
    assert w.state().retiring == () and consumer_reads() == k2

    # The consumer policy: the published key, and its own acknowledgement (bot-1), nothing else.
    as_consumer = build_vault_store(
        VaultSettings(url=openbao.url, auth={"token_env": "T"}), {"T": consumer_token}
    )
    assert as_consumer.read_published(w.ref) == k2
    as_consumer.ack(w.ref, "bot-1", k2.masked, time.time())
    with pytest.raises(AccessDenied, match="permission denied"):
        as_consumer.ack(w.ref, "bot-2", k2.masked, time.time())  # another bot's name
    with pytest.raises(AccessDenied, match="permission denied"):
        as_consumer.load(w.ref)
    with pytest.raises(AccessDenied, match="permission denied"):
        as_consumer.acks(w.ref)
    state_path = f"rotator-state/{w.name}"
    with pytest.raises(Forbidden):
        consumer.read_secret_version(path=state_path, mount_point="secret", raise_on_deleted_version=True)
    for path in (w.ref.path, state_path, f"{state_path}/other", "polymarket/other"):
        with pytest.raises(Forbidden):
            consumer.create_or_update_secret(path=path, secret={"api_key": "x"}, mount_point="secret")
    with pytest.raises(Forbidden):
        consumer.read_secret_metadata(path=w.ref.path, mount_point="secret")
    with pytest.raises(Forbidden):
        consumer.delete_latest_version_of_secret(path=w.ref.path, mount_point="secret")
    as_consumer.close()
    # ... which the worker, with its policy, can list and read.
    as_rotator = build_vault_store(
        VaultSettings(url=openbao.url, auth={"token_env": "T"}), {"T": rotator_token}
    )
    assert [(a.consumer_id, a.key_prefix) for a in as_rotator.acks(w.ref)] == [("bot-1", k2.masked)]
    as_rotator.close()

    # The rotator policy: its paths only.
    mine = openbao.client(rotator_token)
    with pytest.raises(Forbidden):
        mine.secrets.kv.v2.read_secret_version(
            path="other/thing", mount_point="secret", raise_on_deleted_version=True
        )
    with pytest.raises(Forbidden):
        mine.secrets.kv.v2.delete_latest_version_of_secret(path=w.ref.path, mount_point="secret")
    with pytest.raises(Forbidden):
        mine.sys.list_policies()

    # Every version a consumer could ever have read was a verified key, and no output leaked.
    assert [v["api_key"] for v in published_versions(openbao, w.ref.path)] == [k1.api_key, k2.api_key]
    assert_no_leaks(*OUTPUTS)


@pytest.mark.slow
def test_a_key_that_never_verifies_is_never_published(
    openbao: OpenBao, fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = vault_worker(
        openbao, tmp_path, fresh_sandbox.url, wallet, cred_extra={"verify_timeout": "1s"}, grace="1h"
    )
    w.rotate()
    k1 = w.published()
    assert k1 is not None

    fresh_sandbox.configure(propagation_delay=60.0)  # new keys answer 401 for a minute
    line = one_line_failure(w.run("rotate", "--all", "--force"), w.name)
    assert "error=(verify)" in line and "did not verify" in line
    assert w.published() == k1
    # I3: the unverified key still exists (it refuses its own DELETE while propagating, and derive
    # still finds it), so it stays retiring, due now; a key recorded as revoked while live would be
    # tracked by nothing.
    state = w.state()
    unverified = [r.key for r in state.retiring if r.reason == "unverified"]
    assert [k.nonce for k in unverified] == [k1.nonce + 1], state.retiring
    bad = unverified[0]
    assert bad.api_key in fresh_sandbox.live_keys(w.address)
    assert not [h for h in state.history if h.nonce == bad.nonce], state.history

    fresh_sandbox.configure(propagation_delay=0.0)
    w.rotate("--force")
    k3 = w.published()
    assert k3 is not None and k3.nonce > k1.nonce + 1
    # Its revocation is tried again 15 s (on the CLOB's clock) after the refused one: revoked then,
    # confirmed gone, and only then in the history.
    fresh_sandbox.configure(clock_offset=20.0)
    assert "revoked=1" in w.rotate().stdout
    assert bad.api_key not in fresh_sandbox.live_keys(w.address)
    assert [h.how for h in w.state().history if h.nonce == bad.nonce] == ["deleted"]
    assert all(r.key.api_key != bad.api_key for r in w.state().retiring)
    # Every version ever at the published path is k1 or k3: the unverified key never got there.
    assert [v["api_key"] for v in published_versions(openbao, w.ref.path)] == [k1.api_key, k3.api_key]


class _PausedAfterLoad:
    """The real store, except that ``load`` waits for ``go`` before returning: a worker held mid-pass."""

    def __init__(self, store: VaultStore) -> None:
        self._store = store
        self.backend = store.backend
        self.loaded = threading.Event()
        self.go = threading.Event()

    def load(self, ref: CredentialRef) -> Any:
        snap = self._store.load(ref)
        self.loaded.set()
        assert self.go.wait(30)
        return snap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_two_workers_racing_one_loses_cleanly_and_nothing_is_orphaned(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = vault_worker(openbao, tmp_path, sandbox.url, wallet)
    w.rotate()
    k1 = w.published()
    assert k1 is not None
    settings = load_settings(w.config_path)
    cred = settings.credentials[0]
    slow_rt, fast_rt = Runtime(settings, w.env()), Runtime(settings, w.env())
    paused = _PausedAfterLoad(build_vault_store(settings.store.vault, w.env()))  # type: ignore[arg-type]
    slow = Rotator(paused, slow_rt.clob, owner="worker-slow:1:1", alive=lambda _: True)  # type: ignore[arg-type]
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(
            slow.run_pass(slow_rt.ref(cred), slow_rt.signer(cred), slow_rt.policy(cred), force=True)
        )
    )
    thread.start()
    try:
        assert paused.loaded.wait(30)
        fast = fast_rt.rotator.run_pass(
            fast_rt.ref(cred), fast_rt.signer(cred), fast_rt.policy(cred), force=True
        )
        assert fast.outcome == "rotated"
    finally:
        paused.go.set()
        thread.join(30)
    assert results and results[0].outcome == "lost-race" and results[0].ok  # not a failure, not a retry storm
    k2 = w.published()
    assert k2 is not None and k2.nonce == k1.nonce + 1
    assert set(sandbox.live_keys(w.address)) == {k1.api_key, k2.api_key} == w.known_keys()
    for rt in (slow_rt, fast_rt):
        rt.close()
    paused.close()


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unreachable_vault_fails_the_pass_and_the_next_pass_picks_up(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = vault_worker(openbao, tmp_path, sandbox.url, wallet)
    w.rotate()
    k1 = w.published()

    w.vault_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    w.write_config()
    line = one_line_failure(w.run("rotate", "--all", "--force"), w.name)
    assert f"vault at {w.vault_url} is unreachable (connection refused)" in line

    w.vault_url = openbao.url
    w.write_config()
    assert w.published() == k1
    w.rotate("--force")
    k2 = w.published()
    assert k2 is not None and k1 is not None and k2.nonce == k1.nonce + 1


@pytest.mark.slow
def test_vault_sealed_mid_rotation_leaves_the_published_key_and_the_next_pass_finishes(
    short_bao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = vault_worker(short_bao, tmp_path, sandbox.url, wallet)
    w.rotate()
    k1 = w.published()
    assert k1 is not None

    # The CLOB creates the new key; before the worker can record it, Vault is sealed.
    hold = sandbox.hold("POST", "/auth/api-key", phase="after")
    proc = w.start("rotate", "--all", "--force")
    try:
        assert hold.reached.wait(30), "the worker never created a key"
        short_bao.seal()
    finally:
        hold.release()
    line = failure_line(w.name, *w.finish(proc))
    assert "is sealed" in line

    # Still sealed: the next pass fails at once, just as cleanly.
    line = one_line_failure(w.run("rotate", "--all"), w.name)
    assert f"vault at {short_bao.url} is sealed" in line

    short_bao.unseal()
    assert w.published() == k1
    out_ok = w.rotate()  # no --force: the recorded intent is resumed, the created key recovered
    assert f"{w.name}: rotated" in out_ok.stdout
    k2 = w.published()
    assert k2 is not None and k2.nonce == k1.nonce + 1
    assert set(sandbox.live_keys(w.address)) == {k1.api_key, k2.api_key} == w.known_keys()  # no orphan


@pytest.mark.slow
def test_an_expired_token_fails_the_pass_cleanly_and_a_fresh_one_picks_up(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    rotator_policy, _ = write_policies(openbao)
    w = vault_worker(openbao, tmp_path, sandbox.url, wallet, make_token(openbao, rotator_policy))
    w.rotate()
    k1 = w.published()

    w.vault_env["VAULT_TOKEN"] = make_token(openbao, rotator_policy, ttl="1s", explicit_max_ttl="1s")
    time.sleep(1.5)
    line = one_line_failure(w.run("rotate", "--all", "--force"), w.name)
    assert "permission denied" in line and "token expired or revoked" in line
    assert w.published() == k1

    w.vault_env["VAULT_TOKEN"] = make_token(openbao, rotator_policy)
    w.rotate("--force")
    k2 = w.published()
    assert k2 is not None and k1 is not None and k2.nonce == k1.nonce + 1


# -- auth methods -----------------------------------------------------------------------------------


def _approle(bao: OpenBao, policy: str, ttl: str) -> tuple[str, str, str]:
    root = bao.client()
    mount = _unique("approle")
    root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle(
        "rotator", token_ttl=ttl, token_max_ttl=ttl, token_policies=[policy], mount_point=mount
    )
    role_id = root.auth.approle.read_role_id("rotator", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("rotator", mount_point=mount)["data"]["secret_id"]
    SECRETS.add(secret_id)
    return mount, role_id, secret_id


def _approle_tokens(bao: OpenBao, mount: str) -> list[str]:
    try:
        return list(bao.client().sys.list_leases(prefix=f"auth/{mount}/login")["data"]["keys"])
    except hvac.exceptions.InvalidPath:
        return []


@pytest.mark.slow
def test_approle_token_expiring_between_passes_is_replaced(
    openbao: OpenBao,
    sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rotator_policy, _ = write_policies(openbao)
    mount, role_id, secret_id = _approle(openbao, rotator_policy, ttl="3s")
    (tmp_path / "secret-id").write_text(secret_id + "\n")
    auth = {
        "method": "approle",
        "mount": mount,
        "role_id_env": "ROLE_ID",
        "secret_id_file": str(tmp_path / "secret-id"),
    }
    w = vault_worker(
        openbao, tmp_path, sandbox.url, wallet, vault={"auth": auth}, vault_env={"ROLE_ID": role_id}
    )

    # One-shot, through the CLI: logs in, rotates, and gives its token back at exit.
    w.rotate()
    assert _approle_tokens(openbao, mount) == []

    # Daemon-like: one store across passes, the token expiring in between.
    settings = load_settings(w.config_path)
    rt = Runtime(settings, w.env())
    rt.validate()
    cred = settings.credentials[0]
    caplog.set_level(logging.INFO, logger="rotator.clients.vault")
    try:
        assert rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred), force=True).rotated
        time.sleep(3.2)  # the token is dead now
        assert rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred), force=True).rotated
        assert any("renewed the token (approle" in r.getMessage() for r in caplog.records)

        # Revoked behind the worker's back (an operator, a Vault restore): one re-login, no failure.
        openbao.client().sys.revoke_prefix(prefix=f"auth/{mount}/login")
        assert rt.store.load(rt.ref(cred)).state.current == w.published()
        assert any("logged in again after a 403" in r.getMessage() for r in caplog.records)
    finally:
        rt.close()
    assert _approle_tokens(openbao, mount) == []
    assert_no_leaks(*OUTPUTS, *(r.getMessage() for r in caplog.records), caplog.text)


def test_approle_with_a_wrong_secret_id_fails_the_pass_with_access_denied(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    rotator_policy, _ = write_policies(openbao)
    mount, role_id, _ = _approle(openbao, rotator_policy, ttl="1m")
    auth = {"method": "approle", "mount": mount, "role_id": role_id, "secret_id_env": "SECRET_ID"}
    wrong = str(uuid.uuid4())
    w = vault_worker(
        openbao, tmp_path, sandbox.url, wallet, vault={"auth": auth}, vault_env={"SECRET_ID": wrong}
    )
    line = one_line_failure(w.run("rotate", "--all"), w.name)
    assert "approle login refused" in line and wrong not in line


class _TokenReview(BaseHTTPRequestHandler):
    """The one Kubernetes API call Vault's kubernetes auth makes: POST a TokenReview."""

    known: dict[str, str] = {}  # noqa: RUF012 - set per test, read by handler threads
    seen: list[str] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        token = body["spec"]["token"]
        self.seen.append(token)
        user = self.known.get(token)
        status: dict[str, Any] = {"authenticated": user is not None}
        if user is not None:
            status["user"] = {"username": user, "uid": "uid-rotator", "groups": []}
        payload = json.dumps(
            {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status}
        )
        data = payload.encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _pki(directory: Path) -> dict[str, str]:
    """A throwaway CA with a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def issue(cn: str, key: Any, *, ca: bool = False, extensions: tuple[Any, ...] = ()) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for ext in extensions:
            builder = builder.add_extension(ext, critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def key_pem(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca": issue("test-ca", ca_key, ca=True),
        "server": issue(
            "vault",
            server_key,
            extensions=(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            ),
        ),
        "server_key": key_pem(server_key),
        "client": issue(
            "rotator", client_key, extensions=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),)
        ),
        "client_key": key_pem(client_key),
    }
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = str(path)
    return paths


def _service_account_jwt(namespace: str, name: str) -> str:
    import base64

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        "kubernetes.io/serviceaccount/service-account.uid": "uid-rotator",
    }
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{uuid.uuid4().hex}"


def test_kubernetes_login_with_the_service_account_token_file(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    rotator_policy, _ = write_policies(openbao)
    jwt = _service_account_jwt("bots", "rotator")
    SECRETS.add(jwt)
    _TokenReview.known = {jwt: "system:serviceaccount:bots:rotator"}
    _TokenReview.seen = []
    kube = ThreadingHTTPServer(("127.0.0.1", 0), _TokenReview)
    threading.Thread(target=kube.serve_forever, daemon=True).start()
    try:
        root = openbao.client()
        mount = _unique("kubernetes")
        root.sys.enable_auth_method("kubernetes", path=mount)
        root.write_data(
            f"auth/{mount}/config",
            data={
                "kubernetes_host": f"http://127.0.0.1:{kube.server_address[1]}",
                "kubernetes_ca_cert": Path(_pki(tmp_path / "kube-pki")["ca"]).read_text(),
                "disable_local_ca_jwt": True,
            },
        )
        root.write_data(
            f"auth/{mount}/role/rotator",
            data={
                "bound_service_account_names": ["rotator"],
                "bound_service_account_namespaces": ["bots"],
                "token_policies": [rotator_policy],
                "token_ttl": "1m",
            },
        )
        (tmp_path / "sa-token").write_text(jwt)
        auth = {
            "method": "kubernetes",
            "mount": mount,
            "role": "rotator",
            "jwt_file": str(tmp_path / "sa-token"),
        }
        w = vault_worker(openbao, tmp_path, sandbox.url, wallet, vault={"auth": auth}, vault_env={})
        assert f"{w.name}: rotated" in w.rotate().stdout
        assert _TokenReview.seen == [jwt]  # Vault asked the API server about exactly our token

        # A service account Vault does not know of: the pass fails, nothing changes.
        k1 = w.published()
        (tmp_path / "sa-token").write_text(_service_account_jwt("bots", "intruder"))
        line = one_line_failure(w.run("rotate", "--all", "--force"), w.name)
        assert "kubernetes login refused" in line
        assert w.published() == k1
    finally:
        kube.shutdown()
        kube.server_close()


# -- TLS, namespaces, misconfiguration (store level) ----------------------------------------------------


REF = CredentialRef("tls-check", "polymarket/tls-check")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # skip_verify, on purpose
def test_tls_with_a_ca_bundle(openbao_binary: str, tmp_path: Path) -> None:
    bao = OpenBao(openbao_binary, tmp_path, tls=True)
    try:
        assert bao.url.startswith("https://") and bao.ca_cert is not None
        env = {"T": bao.root_token}
        good = VaultSettings(url=bao.url, auth={"token_env": "T"}, tls={"ca_cert": bao.ca_cert})
        store = build_vault_store(good, env)
        version = store.save(REF, CredentialState(next_nonce=3), None)
        assert store.load(REF).version == version
        store.close()

        untrusted = build_vault_store(VaultSettings(url=bao.url, auth={"token_env": "T"}), env)
        with pytest.raises(Unavailable, match=r"TLS handshake failed.*certificate_verify_failed"):
            untrusted.load(REF)
        skip = VaultSettings(url=bao.url, auth={"token_env": "T"}, tls={"skip_verify": True})
        assert build_vault_store(skip, env).load(REF).version == version
    finally:
        bao.stop()


def test_tls_with_a_client_certificate(openbao_binary: str, tmp_path: Path) -> None:
    pki = _pki(tmp_path / "pki")
    port = free_port()
    listener = f"""
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_cert_file = "{pki["server"]}"
  tls_key_file = "{pki["server_key"]}"
  tls_client_ca_file = "{pki["ca"]}"
  tls_require_and_verify_client_cert = true
}}
"""
    bao = OpenBao(openbao_binary, tmp_path, extra_config=listener)
    try:
        url, env = f"https://127.0.0.1:{port}", {"T": bao.root_token}
        tls = {"ca_cert": pki["ca"], "client_cert": pki["client"], "client_key": pki["client_key"]}
        store = build_vault_store(VaultSettings(url=url, auth={"token_env": "T"}, tls=tls), env)
        version = store.save(REF, CredentialState(next_nonce=5), None)
        assert store.load(REF) == Snapshot(CredentialState(next_nonce=5), version)
        store.close()

        no_cert = build_vault_store(
            VaultSettings(url=url, auth={"token_env": "T"}, tls={"ca_cert": pki["ca"]}), env
        )
        with pytest.raises(Unavailable, match=r"TLS handshake failed; check store\.vault\.tls"):
            no_cert.load(REF)
    finally:
        bao.stop()


def test_namespace_keeps_keys_inside_it(openbao: OpenBao) -> None:
    namespace = _unique("team")
    root = openbao.client()
    root.sys.create_namespace(namespace)
    inside = hvac.Client(url=openbao.url, token=openbao.root_token, namespace=namespace)
    inside.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    settings = VaultSettings(url=openbao.url, namespace=namespace, auth={"token_env": "T"})
    store = build_vault_store(settings, {"T": openbao.root_token})
    ref = CredentialRef(_unique("ns"), "polymarket/ns-check")
    store.save(ref, CredentialState(next_nonce=7), None)
    assert store.load(ref).state.next_nonce == 7
    assert (
        inside.secrets.kv.v2.read_secret_version(
            path=f"rotator-state/{ref.name}", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["next_nonce"]
        == 7
    )
    with pytest.raises(hvac.exceptions.InvalidPath):  # not in the root namespace
        root.secrets.kv.v2.read_secret_version(
            path=f"rotator-state/{ref.name}", mount_point="secret", raise_on_deleted_version=True
        )


def _store(bao: OpenBao, **settings: Any) -> VaultStore:
    return build_vault_store(
        VaultSettings(url=bao.url, auth={"token_env": "T"}, **settings), {"T": bao.root_token}
    )


def test_a_missing_mount_is_an_error_not_an_empty_state(openbao: OpenBao) -> None:
    store = _store(openbao, mount=_unique("nosuch"))
    with pytest.raises(StoreError, match="no handler for route"):
        store.load(REF)


@pytest.mark.slow
def test_a_cas_required_mount_takes_every_write_and_acknowledgements_still_release_old_keys(
    openbao: OpenBao, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    # A mount whose every write must carry check-and-set, with the shipped policies moved onto it.
    root = openbao.client()
    mount = _unique("cas")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    root.secrets.kv.v2.configure(cas_required=True, mount_point=mount)
    policies = {}
    for name in ("rotator", "consumer"):
        policies[name] = _unique(name)
        text = (DEPLOY / f"{name}-policy.hcl").read_text().replace('path "secret/', f'path "{mount}/')
        root.sys.create_or_update_policy(policies[name], text)
    rotator_token = make_token(openbao, policies["rotator"])
    consumer_token = make_token(openbao, policies["consumer"])
    w = vault_worker(
        openbao,
        tmp_path,
        sandbox.url,
        wallet,
        rotator_token,
        name=POLICY_CREDENTIAL,
        grace="1h",
        vault={"mount": mount, "auth": {"method": "token", "token_env": "VAULT_TOKEN"}},
        cred_extra={"verify_timeout": "10s", "min_grace": "0.5s"},
    )
    w.write_config()

    def bot() -> CredentialSource:
        """bot-1 of the consumer policy, as a freshly started process would be."""
        return CredentialSource.from_settings(
            {"backend": "vault", "vault": {"url": openbao.url, "mount": mount, "auth": {"token_env": "T"}}},
            credential=w.name,
            path=w.ref.path,
            env={"T": consumer_token},
            consumer_id="bot-1",
        )

    def acks() -> list[tuple[str, str]]:
        return [(a.consumer_id, a.key_prefix) for a in w.store().acks(w.ref)]

    assert "rotated" in w.rotate().stdout  # the state and the published key: check-and-set already
    k1 = w.published()
    assert k1 is not None
    with bot() as source:
        assert source.refresh() == k1
    assert acks() == [("bot-1", ack_prefix(k1.api_key))]  # created with cas=0
    with bot() as source:  # a restarted bot: its acknowledgement exists, at a version it must learn
        source.refresh()
        assert source.refresh() == k1
    assert len(published_versions(openbao, f"rotator-state/{w.name}/acks/bot-1", mount)) == 2

    # Consumer-confirmed revocation works on this mount: the bot moves to k2, k1 goes long before grace.
    assert "rotated" in w.rotate("--force").stdout
    k2 = w.published()
    assert k2 is not None and k2 != k1
    with bot() as source:
        assert source.refresh() == k2
    assert acks() == [("bot-1", ack_prefix(k2.api_key))]
    time.sleep(0.6)
    out = w.rotate()
    assert "revoked=1" in out.stdout, (out.stdout, out.stderr)
    assert sandbox.live_keys(w.address) == [k2.api_key]

    # A policy from before (no read on the acknowledgement): the error says what to grant.
    old_policy = _unique("consumer-old")
    root.sys.create_or_update_policy(
        old_policy,
        f'path "{mount}/data/rotator-state/{w.name}/acks/bot-1" {{ capabilities = ["create", "update"] }}',
    )
    as_old = build_vault_store(
        VaultSettings(url=openbao.url, mount=mount, auth={"token_env": "T"}),
        {"T": make_token(openbao, old_policy)},
    )
    with pytest.raises(AccessDenied, match=r"needs read as well as create and update .*consumer-policy\.hcl"):
        as_old.ack(w.ref, "bot-1", ack_prefix(k2.api_key), time.time())
    as_old.close()
    assert_no_leaks(*OUTPUTS)


def test_a_kv_version_1_mount_is_refused(openbao: OpenBao) -> None:
    mount = _unique("kv1")
    openbao.client().sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    store = _store(openbao, mount=mount)
    with pytest.raises(StoreError, match="KV v2"):
        store.save(REF, CredentialState(), None)


def test_deleted_or_malformed_state_is_corrupt_never_reset(openbao: OpenBao) -> None:
    prefix = _unique("state")
    store = _store(openbao, state_prefix=prefix)
    kv = openbao.client().secrets.kv.v2
    store.save(REF, CredentialState(next_nonce=4), None)
    kv.delete_latest_version_of_secret(path=f"{prefix}/{REF.name}", mount_point="secret")
    with pytest.raises(Corrupt, match="deleted; undelete it"):
        store.load(REF)
    kv.undelete_secret_versions(path=f"{prefix}/{REF.name}", versions=[1], mount_point="secret")
    assert store.load(REF).state.next_nonce == 4

    kv.create_or_update_secret(path=f"{prefix}/{REF.name}", secret={"current": "zzz"}, mount_point="secret")
    with pytest.raises(Corrupt, match="malformed"):
        store.load(REF)
    kv.create_or_update_secret(path=REF.path + "-bad", secret={"api_key": "k"}, mount_point="secret")
    with pytest.raises(Corrupt, match="missing field"):
        store.read_published(CredentialRef(REF.name, REF.path + "-bad"))


def test_close_gives_back_nothing_it_does_not_own_and_refuses_further_use(openbao: OpenBao) -> None:
    store = _store(openbao)
    store.load(REF)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load(REF)
    assert openbao.client().auth.token.lookup_self()["data"]["ttl"] == 0  # the root token survived


def test_the_renewal_timer_replaces_a_token_before_it_expires(openbao: OpenBao) -> None:
    """A renewable token is renewed (renew-self) once two thirds of its TTL have passed."""
    policy, _ = write_policies(openbao)
    token = make_token(openbao, policy, ttl="1m")
    now = [0.0]
    settings = VaultSettings(url=openbao.url, auth={"token_env": "T"})
    store = build_vault_store(settings, {"T": token}, clock=lambda: now[0])  # no minute-long wait
    ref = CredentialRef(_unique("renew"), "polymarket/renew-check")
    store.load(ref)
    before = openbao.client().auth.token.lookup(token)["data"]["expire_time"]
    time.sleep(1.1)  # expire_time has one-second resolution
    now[0] = 41.0  # past 2/3 of 60 s
    store.load(ref)
    after = openbao.client().auth.token.lookup(token)["data"]["expire_time"]
    assert after > before
