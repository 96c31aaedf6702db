"""The HashiCorp Vault (or OpenBao) store: KV v2, where every write of a key or a state is a check-and-set.

Consumers read the published key (exactly the consumer-contract fields) at ``<mount>/data/<ref.path>``.
Rotation state lives at ``<mount>/data/<state_prefix>/<ref.name>``, a path consumer policies do not
grant. The store :data:`~rotator.stores.base.Version` is the KV v2 version of the state secret, and
``save`` writes with ``cas=<expected>`` (``cas=0``: only if absent), so Vault itself is the lock
between workers (DESIGN.md I4). ``publish`` and ``ack`` write with ``cas`` too (re-reading when they
lose): every write carries it, so a mount with ``cas_required=true`` works.
Consumers' acknowledgements live at ``<state_prefix>/<ref.name>/acks/<consumer id>``, one path per
consumer, each written only by its consumer (see ``deploy/vault/consumer-policy.hcl``).

Only this module imports hvac, and only inside functions, so a run on another backend never loads it.
Every hvac/requests exception is translated in :func:`_translate`:

=================================================  ===========================================
403/401 (permission denied, token expired)         ``AccessDenied`` (after one re-login, see below)
400 "check-and-set parameter did not match"        ``VersionConflict``
400 "check-and-set parameter required"             ``StoreError`` (a write without cas: a bug)
503 (sealed, standby), 429, 5xx, connection/TLS    ``Unavailable``
404 with no error text (the secret does not exist) an empty state / no published key
404 naming a route, other 400s, a KV v1 mount      ``StoreError`` (misconfiguration: mount, path)
stored JSON that is not a state or a key           ``Corrupt``
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
from rotator.model import Ack, CredentialRef, CredentialState, Key, NewerSchema, Secret
from rotator.stores.base import CheckResult, LeaseRecord, Snapshot, Version, is_credential_name

if TYPE_CHECKING:
    from rotator.config import VaultSettings

log = logging.getLogger("rotator.stores.vault")

T = TypeVar("T")

#: Fraction of a token's TTL after which it is renewed (or a new one obtained), as Vault Agent does.
RENEW_AT = 2 / 3
#: Seconds before a failed renewal is tried again (the current token may well still be valid).
RENEW_RETRY = 15.0
#: How often ``publish`` re-reads and retries when another writer moved the published path meanwhile.
PUBLISH_ATTEMPTS = 5


# -- the narrow slice of hvac this store uses ---------------------------------------------------------
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
    """What the store needs of ``hvac.Client``."""

    token: str

    @property
    def secrets(self) -> _Secrets: ...

    @property
    def auth(self) -> _AuthMethods: ...

    @property
    def adapter(self) -> _Adapter: ...

    @property
    def sys(self) -> _Sys: ...


# -- exception translation: the one place --------------------------------------------------------------
def _vault_errors(exc: BaseException) -> str:
    # Vault's error strings name the problem ("permission denied", "Vault is sealed"), never a value.
    errors = getattr(exc, "errors", None) or []
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    return " ".join(text.split())[:200]


def _translate(exc: BaseException, doing: str, url: str, *, login: str | None = None) -> StoreError:
    """The rotator error for an hvac or requests exception raised while ``doing`` something.

    ``login`` names the auth method when the exception came from logging in on the way.
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
        return AccessDenied(
            f"vault: {doing}: {said or 'permission denied'} (token expired or revoked, or its policy "
            "does not grant this path)"
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
    if isinstance(exc, requests.exceptions.SSLError):
        return Unavailable(f"vault at {url}: TLS handshake failed; check store.vault.tls ({_reason(exc)})")
    if isinstance(exc, requests.exceptions.Timeout):
        return Unavailable(f"vault at {url} did not answer in time: {doing} failed")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unavailable(f"vault at {url} is unreachable ({_reason(exc)}): {doing} failed")
    if isinstance(exc, (requests.exceptions.RequestException, ValueError)):
        return Unavailable(f"vault at {url}: {doing} failed ({type(exc).__name__})")
    return StoreError(f"vault: {doing} failed ({type(exc).__name__})")


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

    Methods raise hvac/requests errors (the store translates them) or :class:`ConfigError`.
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


# -- the store --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Read:
    data: dict[str, Any] | None  # None: never written, or the latest version is deleted/destroyed
    version: int | None  # the latest version (deleted or not), None if never written


class VaultStore:
    """The :class:`~rotator.stores.base.Store` on a Vault KV v2 mount.

    Thread-safe: requests share one connection pool; logins are serialised, and a thread that sees a
    403 re-logs in only if no other thread already did since its call started.
    """

    backend = "vault"

    def __init__(
        self,
        client: VaultClient,
        login: Login,
        *,
        url: str,
        mount: str = "secret",
        state_prefix: str = "rotator-state",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._login = login
        self._url = url
        self._mount = mount
        self._state_prefix = state_prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._renew_at: float | None = None  # None: never (or not yet logged in)
        self._generation = 0  # bumped by every (re-)login
        self._ack_versions: dict[str, int] = {}  # acknowledgement path -> the version we last wrote
        self._closed = False

    def __repr__(self) -> str:
        return f"VaultStore({self._url!r}, mount={self._mount!r}, auth={self._login.method!r})"

    # -- the Store protocol ---------------------------------------------------------------------

    def load(self, ref: CredentialRef) -> Snapshot:
        where = self._where(self._state_path(ref))
        read = self._read(self._state_path(ref), f"read the state at {where}")
        if read.version is None:
            return Snapshot(CredentialState(), None)
        if read.data is None:
            # Never silently reset: starting over would forget retiring keys and orphan them (I3).
            raise Corrupt(
                f"vault: the latest version ({read.version}) of the state at {where} is deleted; "
                "undelete it to resume"
            )
        try:
            state = CredentialState.from_dict(read.data)
        except NewerSchema as exc:
            raise Corrupt(f"vault: the state at {where}: {exc}") from None
        except ValueError as exc:  # names the field, never a value
            raise Corrupt(f"vault: the state at {where} is malformed ({exc})") from None
        return Snapshot(state, read.version)

    def save(self, ref: CredentialRef, state: CredentialState, expected: Version | None) -> Version:
        where = self._where(self._state_path(ref))
        if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
            raise VersionConflict(f"vault: {where}: {expected!r} is not a version this store handed out")
        return self._write(
            self._state_path(ref), state.to_dict(), expected or 0, f"save the state at {where}"
        )

    def publish(self, ref: CredentialRef, key: Key) -> None:
        data = key.to_dict()
        doing = f"publish to {self._where(ref.path)}"
        for _ in range(PUBLISH_ATTEMPTS):
            read = self._read(ref.path, doing)
            if read.data == data:
                return  # idempotent: no new version, consumers see nothing change
            try:
                self._write(ref.path, data, read.version or 0, doing)
                return
            except VersionConflict:
                continue  # someone published in between: look again
        raise Unavailable(f"vault: {doing}: lost {PUBLISH_ATTEMPTS} check-and-set races in a row")

    def read_published(self, ref: CredentialRef) -> Key | None:
        where = self._where(ref.path)
        read = self._read(ref.path, f"read the published key at {where}")
        if read.data is None:
            return None
        try:
            return Key.from_dict(read.data)
        except ValueError as exc:
            raise Corrupt(f"vault: the published key at {where} is malformed ({exc})") from None

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        path = f"{self._acks_path(ref)}/{consumer_id}"
        data = Ack(consumer_id, key_prefix, at).to_dict()
        doing = f"acknowledge at {self._where(path)}"
        # Check-and-set like every other write: a mount with cas_required=true refuses writes without
        # it. The path is this consumer's alone, so the version this store last wrote there is the
        # current one; without it (a fresh process, or another process of the same consumer id) cas=0
        # creates the path, and if it exists its version is read back (the consumer policy grants
        # read on the consumer's own acknowledgement) and the write tried once more.
        with self._lock:
            expected = self._ack_versions.get(path, 0)
        try:
            version = self._write(path, data, expected, doing)
        except VersionConflict:
            try:
                version = self._write(path, data, self._ack_version(path, doing), doing)
            except VersionConflict as exc:
                # Only save and save_lease raise VersionConflict (stores/base.py): a consumer
                # names no version, so for it a race lost twice is "retry later".
                raise Unavailable(f"vault: {doing}: lost the check-and-set race twice") from exc
        with self._lock:
            self._ack_versions[path] = version

    def _ack_version(self, path: str, doing: str) -> int:
        try:
            read = self._read(path, f"{doing}: read its version")
        except AccessDenied as exc:
            raise AccessDenied(
                f"{exc}; a consumer's policy needs read as well as create and update on its own "
                "acknowledgement (deploy/vault/consumer-policy.hcl)"
            ) from exc
        return read.version or 0

    def acks(self, ref: CredentialRef) -> list[Ack]:
        base = self._acks_path(ref)
        out: list[Ack] = []
        for name in self._list(base, f"list the acknowledgements at {self._where(base)}"):
            if name.endswith("/"):
                continue
            read = self._read(f"{base}/{name}", f"read the acknowledgement at {self._where(base)}/{name}")
            try:
                # The path names the consumer (its policy grants that path alone), not what it wrote.
                out.append(Ack.from_dict({**(read.data or {}), "consumer_id": name}))
            except ValueError:
                continue  # written by a consumer: garbage must not stop revocations
        return out

    def names(self) -> list[str]:
        # A state is a secret directly under the prefix; "<name>/" is the folder of its acks, which a
        # consumer may create before any state exists, so only the secret itself counts.
        listed = self._list(self._state_prefix, f"list the states at {self._where(self._state_prefix)}")
        return sorted(n for n in listed if not n.endswith("/") and is_credential_name(n))

    def load_lease(self, name: str) -> LeaseRecord | None:
        path = f"{self._state_prefix}/{name}"
        read = self._read(path, f"read the lease at {self._where(path)}")
        if read.version is None:
            return None
        if read.data is None:
            return LeaseRecord("", 0.0, read.version)  # deleted by hand: vacant, but cas needs the version
        try:
            return LeaseRecord(str(read.data["holder"]), float(read.data["until"]), read.version)
        except (KeyError, TypeError, ValueError):
            raise Corrupt(f"vault: the lease at {self._where(path)} is malformed") from None

    def save_lease(self, name: str, holder: str, until: float, expected: LeaseRecord | None) -> LeaseRecord:
        path = f"{self._state_prefix}/{name}"
        cas = expected.version if expected is not None else 0
        if not isinstance(cas, int) or isinstance(cas, bool):
            raise VersionConflict(
                f"vault: {self._where(path)}: {cas!r} is not a version this store handed out"
            )
        # Every write, renewals included, is a check-and-set; KV v2's max_versions prunes the history.
        version = self._write(
            path, {"holder": holder, "until": until}, cas, f"write the lease at {self._where(path)}"
        )
        return LeaseRecord(holder, until, version)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._lease is not None:
                self._login.logout(self._client)
        self._client.adapter.close()

    # -- KV v2 ------------------------------------------------------------------------------------

    def _state_path(self, ref: CredentialRef) -> str:
        return f"{self._state_prefix}/{ref.name}"

    def _acks_path(self, ref: CredentialRef) -> str:
        # Under the state prefix (consumers read nothing there); each consumer's policy grants
        # create/update on <mount>/data/<state_prefix>/<name>/acks/<its id> only.
        return f"{self._state_prefix}/{ref.name}/acks"

    def _where(self, path: str) -> str:
        return f"{self._mount}/{path}"

    def _list(self, path: str, doing: str) -> list[str]:
        """The entries of the folder ``path`` (sub-folders end with ``/``); [] if it holds nothing."""

        def get() -> Any:
            from hvac import exceptions as hv

            try:
                return self._client.secrets.kv.v2.list_secrets(path=path, mount_point=self._mount)
            except hv.InvalidPath as exc:
                if _vault_errors(exc):
                    raise  # "no handler for route": the mount is wrong, not the folder empty
                return None

        response = self._call(doing, get)
        body = response.get("data") if isinstance(response, dict) else None
        keys = body.get("keys") if isinstance(body, dict) else None
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def _read(self, path: str, doing: str) -> _Read:
        def get() -> Any:
            from hvac import exceptions as hv

            try:
                return self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self._mount, raise_on_deleted_version=False
                )
            except hv.InvalidPath as exc:
                if _vault_errors(exc):
                    raise  # "no handler for route": the mount is wrong, not the secret missing
                return None

        response = self._call(doing, get)
        if response is None:
            return _Read(None, None)
        body = response.get("data") if isinstance(response, dict) else None
        metadata = body.get("metadata") if isinstance(body, dict) else None
        version = metadata.get("version") if isinstance(metadata, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            raise StoreError(f"vault: {doing}: the answer has no KV v2 version (is {self._mount!r} KV v2?)")
        data = body.get("data") if isinstance(body, dict) else None
        if data is not None and not isinstance(data, dict):
            raise Corrupt(f"vault: {doing}: the stored value is not a JSON object")
        return _Read(data, version)

    def _write(self, path: str, data: dict[str, Any], cas: int, doing: str) -> int:
        response = self._call(
            doing,
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=data, cas=cas, mount_point=self._mount
            ),
        )
        body = response.get("data") if isinstance(response, dict) else None
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            # A KV v1 mount accepts the write with 204 and no version: there is no cas there at all.
            raise StoreError(f"vault: {doing}: no KV v2 version in the answer (is {self._mount!r} KV v2?)")
        return version

    # -- tokens -------------------------------------------------------------------------------------

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        generation = self._authenticate(doing)
        try:
            return fn()
        except RotatorError:
            raise
        except Exception as exc:  # every hvac/requests error goes through _translate
            error = _translate(exc, doing, self._url)
            if not isinstance(error, AccessDenied) or not self._relogin(generation, doing):
                raise error from exc
        try:
            return fn()
        except RotatorError:
            raise
        except Exception as exc:  # as above
            raise _translate(exc, doing, self._url) from exc

    def _authenticate(self, doing: str) -> int:
        """Log in on first use; renew once the token is in the last third of its life."""
        with self._lock:
            if self._closed:
                raise StoreError(f"vault: {doing}: the store is closed")
            if self._lease is None:
                try:
                    what = "token in use" if self._login.method == "token" else "logged in"
                    self._set_lease(self._login.login(self._client), what)
                except RotatorError:
                    raise
                except Exception as exc:  # translated below
                    raise _translate(exc, doing, self._url, login=self._login.method) from exc
            elif self._renew_at is not None and self._clock() >= self._renew_at:
                try:
                    self._set_lease(self._login.refresh(self._client, self._lease), "renewed the token")
                except Exception as exc:  # noqa: BLE001 - the call below still has the old token's chance
                    # Not fatal: the token may still be valid, and a 403 on the call itself re-logs in.
                    self._renew_at = self._clock() + RENEW_RETRY
                    log.warning(
                        "vault: token renewal failed (%s); continuing with the current token",
                        _translate(exc, "renew", self._url) if not isinstance(exc, RotatorError) else exc,
                    )
            return self._generation

    def _relogin(self, seen: int, doing: str) -> bool:
        """After a 403 seen by a call that started at generation ``seen``: True if worth one retry."""
        with self._lock:
            if self._generation != seen:
                return True  # another thread already fetched a new token
            try:
                lease = self._login.after_denied(self._client)
            except RotatorError:
                raise
            except Exception as exc:  # translated below
                raise _translate(exc, doing, self._url, login=self._login.method) from exc
            if lease is None:
                return False
            self._set_lease(lease, "logged in again after a 403")
            return True

    def _set_lease(self, lease: _Lease, what: str) -> None:
        self._lease = lease
        self._renew_at = self._clock() + lease.ttl * RENEW_AT if lease.ttl > 0 else None
        self._generation += 1
        log.info("vault: %s (%s, ttl %gs)", what, self._login.method, lease.ttl)

    # -- check ------------------------------------------------------------------------------------

    def check(self, ref: CredentialRef) -> CheckResult:
        # Reads and the listing are done; writes are asked of sys/capabilities-self, which changes
        # nothing and answers for this token (namespace included) what a write would meet.
        try:
            self.load(ref)
            self.read_published(ref)
            self.names()
        except StoreError as exc:
            return CheckResult("error", str(exc))
        paths = [f"{self._mount}/data/{self._state_path(ref)}", f"{self._mount}/data/{ref.path}"]
        try:
            answer = self._call(
                "ask for its capabilities", lambda: self._client.sys.get_capabilities(paths=paths)
            )
        except StoreError as exc:
            return CheckResult("unknown", f"vault: reads and listing allowed; write permissions: {exc}")
        data = answer.get("data", answer) if isinstance(answer, dict) else {}
        missing = []
        for path in paths:
            held = set(data.get(path) or ())
            if "root" not in held and not {"create", "update"} <= held:
                missing.append(f"{path} needs create and update (has {', '.join(sorted(held)) or 'none'})")
        if missing:
            return CheckResult("error", f"vault at {self._url}: permission denied: {'; '.join(missing)}")
        return CheckResult("ready", f"vault at {self._url}: state and published key readable and writable")


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


def build_vault_store(
    settings: VaultSettings, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
) -> VaultStore:
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
    client = hvac.Client(
        url=settings.url,
        token="",  # not None: hvac would read VAULT_TOKEN / ~/.vault-token
        cert=cert or (),  # not None: hvac would read VAULT_CLIENT_CERT
        verify=verify,
        timeout=settings.timeout,
        session=session,
        namespace=settings.namespace,
    )
    return VaultStore(
        client, login, url=settings.url, mount=settings.mount, state_prefix=settings.state_prefix, clock=clock
    )
