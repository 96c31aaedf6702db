"""hvac for every Vault client rotator makes: the one factory, the logins, and the one error translator.

The Vault store and the ``vault`` signer source both talk to Vault through a :class:`VaultSession`
built by :func:`make_session`, so hvac (and the requests session under it) is imported here only, and
lazily (DESIGN.md, Layout). A session holds one hvac client and one :class:`Login` (one class per auth
method), and runs every call through :meth:`VaultSession.call`: log in on first use, renew, one
re-login after a 403, and :func:`translate` for every hvac/requests exception:

=================================================  ===========================================
403/401 (permission denied, token expired)         ``AccessDenied`` (after one re-login, see below)
400 "check-and-set parameter did not match"        ``VersionConflict``
400 "check-and-set parameter required"             ``StoreError`` (a write without cas: a bug)
503 (sealed, standby), 429, 5xx, connection/TLS    ``Unavailable``
404 with no error text (the secret does not exist) an empty read (:class:`KvRead`)
404 naming a route, other 400s, a KV v1 mount      ``StoreError`` (misconfiguration: mount, path)
=================================================  ===========================================

Tokens: ``token`` auth uses the given token and renews it (``renew-self``) when it is renewable;
``approle`` and ``kubernetes`` log in on first use and again when two thirds of the token's TTL
have passed. A 403 triggers one re-login (or a re-read of ``token_file``) and one retry, since Vault
answers an expired token with the same 403 as a missing policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rotator.errors import (
    AccessDenied,
    ConfigError,
    Corrupt,
    RotatorError,
    StoreError,
    Unavailable,
    VersionConflict,
)
from rotator.model import Secret

if TYPE_CHECKING:
    from rotator.config import VaultSettings

log = logging.getLogger("rotator.clients.vault")

T = TypeVar("T")

#: Fraction of a token's TTL after which it is renewed (or a new one obtained), as Vault Agent does.
RENEW_AT = 2 / 3
#: Seconds before a failed renewal is tried again (the current token may well still be valid).
RENEW_RETRY = 15.0


# -- the narrow slice of hvac rotator uses ---------------------------------------------------------
class _KvV2(Protocol):
    def read_secret_version(
        self,
        path: str,
        version: int | None = ...,
        mount_point: str = ...,
        raise_on_deleted_version: bool = ...,
    ) -> Any: ...

    def create_or_update_secret(
        self, path: str, secret: dict[str, Any], cas: int | None = ..., mount_point: str = ...
    ) -> Any: ...

    def list_secrets(self, path: str, mount_point: str = ...) -> Any: ...


class _Kv(Protocol):
    @property
    def v2(self) -> _KvV2: ...


class _Secrets(Protocol):
    @property
    def kv(self) -> _Kv: ...


class _AppRole(Protocol):
    def login(
        self, role_id: str, secret_id: str | None = ..., use_token: bool = ..., mount_point: str = ...
    ) -> Any: ...


class _Kubernetes(Protocol):
    def login(self, role: str, jwt: str, use_token: bool = ..., mount_point: str = ...) -> Any: ...


class _Token(Protocol):
    def lookup_self(self) -> Any: ...

    def renew_self(self) -> Any: ...

    def revoke_self(self) -> Any: ...


class _AuthMethods(Protocol):
    @property
    def approle(self) -> _AppRole: ...

    @property
    def kubernetes(self) -> _Kubernetes: ...

    @property
    def token(self) -> _Token: ...


class _Adapter(Protocol):
    def close(self) -> None: ...


class _Sys(Protocol):
    def get_capabilities(self, paths: list[str]) -> Any: ...


class VaultClient(Protocol):
    """What rotator needs of ``hvac.Client``."""

    token: str

    @property
    def sys(self) -> _Sys: ...

    @property
    def secrets(self) -> _Secrets: ...

    @property
    def auth(self) -> _AuthMethods: ...

    @property
    def adapter(self) -> _Adapter: ...


# -- exception translation: the one place --------------------------------------------------------------
def _vault_errors(exc: BaseException) -> str:
    # Vault's error strings name the problem ("permission denied", "Vault is sealed"), never a value.
    errors = getattr(exc, "errors", None) or []
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    return " ".join(text.split())[:200]


def translate(
    exc: BaseException, doing: str, url: str, *, login: str | None = None, needs: str | None = None
) -> StoreError:
    """The rotator error for an hvac or requests exception raised while ``doing`` something.

    ``login`` names the auth method when the exception came from logging in on the way. ``needs``
    is what a policy must grant for the call, on the API path (``read on secret/data/wallets/x``:
    KV v2 policies name ``<mount>/data/...`` and ``<mount>/metadata/...``, never the path as the
    CLI shows it), and a permission error names it.
    """
    import requests
    from hvac import exceptions as hv

    said = _vault_errors(exc)
    if login and isinstance(exc, (hv.InvalidRequest, hv.Unauthorized, hv.Forbidden)):
        # "invalid role or secret ID" is a 400: any refusal of a login is a denial of access.
        return AccessDenied(f"vault: {login} login refused: {said or type(exc).__name__}")
    if isinstance(exc, hv.InvalidRequest) and "check-and-set parameter required" in said:
        # Every write here sends cas; reaching this is our bug, and retrying would not help.
        return StoreError(f"vault: {doing}: the mount requires check-and-set and the write sent none")
    if isinstance(exc, hv.InvalidRequest) and "check-and-set" in said:
        return VersionConflict(f"vault: {doing}: another writer got there first ({said})")
    if isinstance(exc, (hv.Forbidden, hv.Unauthorized)):
        grant = needs or "this path"
        return AccessDenied(
            f"vault: {doing}: {said or 'permission denied'} (token expired or revoked, or its policy "
            f"does not grant {grant})"
        )
    if isinstance(exc, hv.VaultDown):
        state = "sealed" if "sealed" in said.lower() else "unavailable"
        detail = "" if state == "sealed" else f" ({said or '503'})"
        return Unavailable(f"vault at {url} is {state}: {doing} failed{detail}")
    if isinstance(
        exc,
        (
            hv.RateLimitExceeded,
            hv.InternalServerError,
            hv.BadGateway,
            hv.VaultNotInitialized,
            hv.UnexpectedError,
        ),
    ):
        return Unavailable(f"vault at {url}: {doing} failed ({type(exc).__name__}: {said or 'no detail'})")
    if isinstance(exc, hv.VaultError):
        return StoreError(f"vault: {doing}: {said or type(exc).__name__}")
    if isinstance(exc, requests.exceptions.ProxyError):
        return Unavailable(
            f"vault at {url}: its proxy (store.vault.proxy) {_proxy_reason(exc)}: {doing} failed"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return Unavailable(f"vault at {url}: TLS handshake failed; check store.vault.tls ({_reason(exc)})")
    if isinstance(exc, requests.exceptions.Timeout):
        return Unavailable(f"vault at {url} did not answer in time: {doing} failed")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unavailable(f"vault at {url} is unreachable ({_reason(exc)}): {doing} failed")
    if isinstance(exc, (requests.exceptions.RequestException, ValueError)):
        return Unavailable(f"vault at {url}: {doing} failed ({type(exc).__name__})")
    return StoreError(f"vault: {doing} failed ({type(exc).__name__})")


def _proxy_reason(exc: BaseException) -> str:
    """What the proxy said: the status of its answer to CONNECT (407, 403, 502...), or that it could
    not be reached. Never the credentials: requests has them in a header, not in the URL."""
    from rotator.clients.proxy import tunnel_refusal

    said = tunnel_refusal(str(exc))
    return f"refused the tunnel ({said})" if said else f"cannot be reached ({_reason(exc)})"


def _reason(exc: BaseException) -> str:
    # requests' messages nest urllib3 reprs several levels deep; keep the recognisable part.
    text = str(exc)
    for clue in (
        "Connection refused",
        "Name or service not known",
        "No route to host",
        "CERTIFICATE_VERIFY_FAILED",
        "certificate required",
        "Connection reset",
        "timed out",
    ):
        if clue.lower() in text.lower():
            return clue.lower()
    return type(exc).__name__


# -- where secrets come from -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SecretSource:
    """A secret's text from an environment variable or a file, read when needed (files get rotated).

    ``setting`` names the config field in messages; the value never appears in one.
    """

    setting: str
    env: Mapping[str, str]
    env_name: str | None = None
    file: str | None = None

    def read(self) -> Secret:
        """:raises ConfigError: naming the variable or file, never the value."""
        if self.env_name is not None:
            from rotator.config import env_problem

            value = self.env.get(self.env_name, "").strip()
            if not value:
                problem = env_problem(self.env, self.env_name)
                raise ConfigError(f"{self.setting}: environment variable {self.env_name} {problem}")
            return Secret(value)
        assert self.file is not None
        try:
            value = Path(self.file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"{self.setting}: cannot read {self.file} ({reason})") from None
        if not value:
            raise ConfigError(f"{self.setting}: {self.file} is empty")
        return Secret(value)


@dataclass(frozen=True, slots=True)
class _Lease:
    """A token's lifetime as Vault reported it. ``ttl`` 0 means it does not expire."""

    ttl: float
    renewable: bool


class Login(Protocol):
    """An auth method: puts a token on the client and says how long it lives.

    Methods raise hvac/requests errors (the session translates them) or :class:`ConfigError`.
    """

    method: str

    def login(self, client: VaultClient) -> _Lease:
        """Authenticate and set ``client.token``."""
        ...

    def refresh(self, client: VaultClient, lease: _Lease) -> _Lease:
        """Keep the client authenticated as the token nears the end of ``lease``."""
        ...

    def after_denied(self, client: VaultClient) -> _Lease | None:
        """After a 403: a fresh token if there is a way to get one, else None (do not retry)."""
        ...

    def logout(self, client: VaultClient) -> None:
        """Give up a token this login created (best effort, never raises)."""
        ...


def _lease(response: Any) -> _Lease:
    auth = response.get("auth") if isinstance(response, dict) else None
    if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
        raise StoreError("vault: the login answer carries no token")
    return _Lease(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))


class TokenLogin:
    """``token``: a given token (env or file). Renewed with renew-self when renewable."""

    method = "token"

    def __init__(self, source: SecretSource) -> None:
        self._source = source
        self._current: Secret | None = None

    def login(self, client: VaultClient) -> _Lease:
        from hvac import exceptions as hv

        self._current = self._source.read()
        client.token = self._current.reveal()
        try:
            data = client.auth.token.lookup_self().get("data") or {}
        except hv.Forbidden:
            # A token without lookup-self, or a dead one: the real call will say which.
            return _Lease(0.0, False)
        return _Lease(float(data.get("ttl") or 0), bool(data.get("renewable")))

    def refresh(self, client: VaultClient, lease: _Lease) -> _Lease:
        if lease.renewable:
            return _lease(client.auth.token.renew_self())
        if self._source.file is not None:  # an agent may have written a new token
            return self.login(client)
        return _Lease(0.0, False)  # it will expire; the 403 will then say so

    def after_denied(self, client: VaultClient) -> _Lease | None:
        if self._source.file is None:
            return None
        before = self._current
        lease = self.login(client)
        return lease if self._current != before else None

    def logout(self, client: VaultClient) -> None:
        """The token is not ours to revoke."""


class _LoginMethod:
    """Shared by the methods that trade a credential for a token of their own."""

    method = ""

    def _call(self, client: VaultClient) -> Any:
        raise NotImplementedError

    def login(self, client: VaultClient) -> _Lease:
        client.token = ""  # login endpoints are unauthenticated; a dead token must not ride along
        response = self._call(client)
        lease = _lease(response)
        client.token = response["auth"]["client_token"]
        return lease

    def refresh(self, client: VaultClient, lease: _Lease) -> _Lease:
        # A new login rather than renew-self: renewals stop at the role's max TTL, logins do not.
        # The old token is left to expire: revoking it could cut a request in flight on another thread.
        return self.login(client)

    def after_denied(self, client: VaultClient) -> _Lease | None:
        return self.login(client)

    def logout(self, client: VaultClient) -> None:
        # A one-shot run's tokens would otherwise pile up until their TTL; failing here is harmless.
        if not client.token:
            return
        try:
            client.auth.token.revoke_self()
        except Exception as exc:  # noqa: BLE001 - best effort by design; the token expires anyway
            log.debug("vault: could not revoke the token at close (%s)", type(exc).__name__)


class AppRoleLogin(_LoginMethod):
    method = "approle"

    def __init__(self, mount: str, role_id: SecretSource | str, secret_id: SecretSource) -> None:
        self._mount = mount
        self._role_id = role_id
        self._secret_id = secret_id

    def _call(self, client: VaultClient) -> Any:
        role_id = self._role_id if isinstance(self._role_id, str) else self._role_id.read().reveal()
        return client.auth.approle.login(
            role_id=role_id,
            secret_id=self._secret_id.read().reveal(),
            use_token=False,
            mount_point=self._mount,
        )


class KubernetesLogin(_LoginMethod):
    method = "kubernetes"

    def __init__(self, mount: str, role: str, jwt: SecretSource) -> None:
        self._mount = mount
        self._role = role
        self._jwt = jwt

    def _call(self, client: VaultClient) -> Any:
        # Re-read every time: kubelet rotates projected service-account tokens.
        return client.auth.kubernetes.login(
            role=self._role, jwt=self._jwt.read().reveal(), use_token=False, mount_point=self._mount
        )


@dataclass(frozen=True, slots=True)
class KvRead:
    """One KV v2 read: the latest version's data, and that version."""

    data: dict[str, Any] | None  # None: never written, or the latest version is deleted/destroyed
    version: int | None  # the latest version (deleted or not), None if never written


class VaultSession:
    """One hvac client and its login, shared by whoever reads or writes through it.

    Thread-safe: requests share one connection pool; logins are serialised, and a thread that sees a
    403 re-logs in only if no other thread already did since its call started.
    """

    def __init__(
        self, client: VaultClient, login: Login, *, url: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self._login = login
        self.url = url
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._renew_at: float | None = None  # None: never (or not yet logged in)
        self._generation = 0  # bumped by every (re-)login
        self._closed = False

    @property
    def method(self) -> str:
        """The auth method (``token``, ``approle``, ``kubernetes``)."""
        return self._login.method

    def __repr__(self) -> str:
        return f"VaultSession({self.url!r}, auth={self._login.method!r})"

    def close(self) -> None:
        """Give up a token this session's login created, and the connection pool. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._lease is not None:
                self._login.logout(self.client)
        self.client.adapter.close()

    # -- KV v2 ------------------------------------------------------------------------------------

    def list(self, mount: str, path: str, doing: str) -> list[str]:
        """The entries of the folder ``path`` (sub-folders end with ``/``); [] if it holds nothing."""

        def get() -> Any:
            from hvac import exceptions as hv

            try:
                return self.client.secrets.kv.v2.list_secrets(path=path, mount_point=mount)
            except hv.InvalidPath as exc:
                if _vault_errors(exc):
                    raise  # "no handler for route": the mount is wrong, not the folder empty
                return None

        response = self.call(doing, get, needs=f"list on {mount}/metadata/{path}")
        body = response.get("data") if isinstance(response, dict) else None
        keys = body.get("keys") if isinstance(body, dict) else None
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def read(self, mount: str, path: str, doing: str, version: int | None = None) -> KvRead:
        """The latest version of ``<mount>/<path>`` (KV v2), or ``version``: none (``KvRead(None,
        None)``) when it was pruned by ``max_versions``. :raises StoreError: (translated)"""

        def get() -> Any:
            from hvac import exceptions as hv

            try:
                return self.client.secrets.kv.v2.read_secret_version(
                    path=path, version=version, mount_point=mount, raise_on_deleted_version=False
                )
            except hv.InvalidPath as exc:
                if _vault_errors(exc):
                    raise  # "no handler for route": the mount is wrong, not the secret missing
                return None

        response = self.call(doing, get, needs=f"read on {mount}/data/{path}")
        if response is None:
            return KvRead(None, None)
        body = response.get("data") if isinstance(response, dict) else None
        metadata = body.get("metadata") if isinstance(body, dict) else None
        version = metadata.get("version") if isinstance(metadata, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise StoreError(f"vault: {doing}: the answer has no KV v2 version (is {mount!r} KV v2?)")
        data = body.get("data") if isinstance(body, dict) else None
        if data is not None and not isinstance(data, dict):
            raise Corrupt(f"vault: {doing}: the stored value is not a JSON object")
        return KvRead(data, version)

    def write(self, mount: str, path: str, data: dict[str, Any], cas: int, doing: str) -> int:
        """Write ``data`` with check-and-set ``cas``; the new version. :raises StoreError: (translated)"""

        response = self.call(
            doing,
            lambda: self.client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=mount
            ),
            needs=f"create and update on {mount}/data/{path}",
        )
        body = response.get("data") if isinstance(response, dict) else None
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            # A KV v1 mount accepts the write with 204 and no version: there is no cas there at all.
            raise StoreError(f"vault: {doing}: no KV v2 version in the answer (is {mount!r} KV v2?)")
        return version

    # -- tokens -------------------------------------------------------------------------------------

    def call(self, doing: str, fn: Callable[[], T], *, needs: str | None = None) -> T:
        """``fn()`` authenticated, retried once after a re-login on 403, its errors translated
        (``needs``: the capability and API path a permission error names, see :func:`translate`)."""

        generation = self._authenticate(doing)
        try:
            return fn()
        except RotatorError:
            raise
        except Exception as exc:  # every hvac/requests error goes through translate
            error = translate(exc, doing, self.url, needs=needs)
            if not isinstance(error, AccessDenied) or not self._relogin(generation, doing):
                raise error from exc
        try:
            return fn()
        except RotatorError:
            raise
        except Exception as exc:  # as above
            raise translate(exc, doing, self.url, needs=needs) from exc

    def _authenticate(self, doing: str) -> int:
        """Log in on first use; renew once the token is in the last third of its life."""
        with self._lock:
            if self._closed:
                raise StoreError(f"vault: {doing}: the client is closed")
            if self._lease is None:
                try:
                    what = "token in use" if self._login.method == "token" else "logged in"
                    self._set_lease(self._login.login(self.client), what)
                except RotatorError:
                    raise
                except Exception as exc:  # translated below
                    raise translate(exc, doing, self.url, login=self._login.method) from exc
            elif self._renew_at is not None and self._clock() >= self._renew_at:
                try:
                    self._set_lease(self._login.refresh(self.client, self._lease), "renewed the token")
                except Exception as exc:  # noqa: BLE001 - the call below still has the old token's chance
                    # Not fatal: the token may still be valid, and a 403 on the call itself re-logs in.
                    self._renew_at = self._clock() + RENEW_RETRY
                    log.warning(
                        "vault: token renewal failed (%s); continuing with the current token",
                        translate(exc, "renew", self.url) if not isinstance(exc, RotatorError) else exc,
                    )
            return self._generation

    def _relogin(self, seen: int, doing: str) -> bool:
        """After a 403 seen by a call that started at generation ``seen``: True if worth one retry."""
        with self._lock:
            if self._generation != seen:
                return True  # another thread already fetched a new token
            try:
                lease = self._login.after_denied(self.client)
            except RotatorError:
                raise
            except Exception as exc:  # translated below
                raise translate(exc, doing, self.url, login=self._login.method) from exc
            if lease is None:
                return False
            self._set_lease(lease, "logged in again after a 403")
            return True

    def _set_lease(self, lease: _Lease, what: str) -> None:
        self._lease = lease
        self._renew_at = self._clock() + lease.ttl * RENEW_AT if lease.ttl > 0 else None
        self._generation += 1
        log.info("vault: %s (%s, ttl %gs)", what, self._login.method, lease.ttl)


# -- the factory ------------------------------------------------------------------------------------
def _source(setting: str, env: Mapping[str, str], env_name: str | None, file: str | None) -> SecretSource:
    source = SecretSource(setting, env, env_name=env_name, file=file)
    source.read()  # fail at start-up (exit 2), not at the first rotation
    return source


def build_login(settings: VaultSettings, env: Mapping[str, str]) -> Login:
    """The auth method of ``settings``, its secrets checked now. :raises ConfigError:"""
    auth = settings.auth
    if auth.method == "token":
        where = "store.vault.auth.token_file" if auth.token_file else "store.vault.auth.token_env"
        return TokenLogin(_source(where, env, auth.env_name, auth.token_file))
    if auth.method == "approle":
        role_id: SecretSource | str
        if auth.role_id is not None:
            role_id = auth.role_id
        else:
            setting = "store.vault.auth.role_id_env" if auth.role_id_env else "store.vault.auth.role_id_file"
            role_id = _source(setting, env, auth.role_id_env, auth.role_id_file)
        setting = (
            "store.vault.auth.secret_id_env" if auth.secret_id_env else "store.vault.auth.secret_id_file"
        )
        secret_id = _source(setting, env, auth.secret_id_env, auth.secret_id_file)
        return AppRoleLogin(auth.mount, role_id, secret_id)
    jwt = _source("store.vault.auth.jwt_file", env, None, auth.jwt_file)
    return KubernetesLogin(auth.mount, auth.role, jwt)


def _proxy_auth(username: str, password: Callable[[], str]) -> Any:
    """A requests adapter that gives the proxy Basic credentials (``Proxy-Authorization``, sent with
    CONNECT), from the config's source. The class is made here: requests is imported lazily."""
    import base64

    import requests.adapters

    class ProxyAuth(requests.adapters.HTTPAdapter):
        def proxy_headers(self, proxy: str) -> dict[str, str]:
            token = base64.b64encode(f"{username}:{password()}".encode()).decode("ascii")
            return {"Proxy-Authorization": f"Basic {token}"}

    return ProxyAuth()


def make_session(
    settings: VaultSettings, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
) -> VaultSession:
    """The one place an hvac client is made. Reads the environment only through ``env``.

    ``clock`` (monotonic seconds) times token renewal; tests pass their own.

    :raises ConfigError: a missing token/role/secret source or TLS file.
    """
    import hvac
    import requests

    login = build_login(settings, env)
    tls = settings.tls
    for name in ("ca_cert", "client_cert", "client_key"):
        value = getattr(tls, name)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"store.vault.tls.{name}: {value} is not a readable file")
    verify: bool | str = False if tls.skip_verify else (tls.ca_cert or True)
    cert = (tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None
    session = requests.Session()
    # Settings, not ambient VAULT_*/REQUESTS_* variables or proxies, decide where and how we connect.
    session.trust_env = False
    session.verify = verify
    session.cert = cert
    proxy = settings.proxy
    if proxy is not None:
        read = proxy.password_reader(env, "store.vault.proxy")
        host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
        session.proxies = {"http": f"http://{host}:{proxy.port}", "https": f"http://{host}:{proxy.port}"}
        if proxy.username is not None and read is not None:
            # The credentials go in a header, never in the proxy's URL (which requests shows in errors).
            auth = _proxy_auth(proxy.username, read)
            session.mount("http://", auth)
            session.mount("https://", auth)
    client = hvac.Client(
        url=settings.url,
        token="",  # not None: hvac would read VAULT_TOKEN / ~/.vault-token
        cert=cert or (),  # not None: hvac would read VAULT_CLIENT_CERT
        verify=verify,
        timeout=settings.timeout,
        session=session,
        namespace=settings.namespace,
    )
    return VaultSession(client, login, url=settings.url, clock=clock)
