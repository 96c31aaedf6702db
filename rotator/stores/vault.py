"""The HashiCorp Vault (or OpenBao) store: KV v2, where every write of a key or a state is a check-and-set.

Consumers read the published key (exactly the consumer-contract fields) at ``<mount>/data/<ref.path>``.
Rotation state lives at ``<mount>/data/<state_prefix>/<ref.name>``, a path consumer policies do not
grant. The store :data:`~rotator.stores.base.Version` is the KV v2 version of the state secret, and
``save`` writes with ``cas=<expected>`` (``cas=0``: only if absent), so Vault itself is the lock
between workers (DESIGN.md I4). ``publish`` and ``ack`` write with ``cas`` too (re-reading when they
lose): every write carries it, so a mount with ``cas_required=true`` works.
Consumers' acknowledgements live at ``<state_prefix>/<ref.name>/acks/<consumer id>``, one path per
consumer, each written only by its consumer (see ``deploy/vault/consumer-policy.hcl``).

Every call goes through a :class:`~rotator.clients.vault.VaultSession` (the one importer of hvac):
login, renewal, one re-login after a 403, and the translation of hvac/requests errors are there. A
secret that does not exist is an empty state / no published key; stored JSON that is not a state or
a key is ``Corrupt``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rotator.clients.vault import KvRead, VaultSession, make_session
from rotator.errors import AccessDenied, Corrupt, StoreError, Unavailable, VersionConflict
from rotator.model import Ack, CredentialRef, CredentialState, Key, NewerSchema
from rotator.stores.base import (
    PUBLISHED_MEMORY,
    CheckResult,
    LeaseRecord,
    Snapshot,
    Version,
    is_credential_name,
    read_check,
    same_key,
)

if TYPE_CHECKING:
    from rotator.config import VaultSettings

#: How often ``publish`` re-reads and retries when another writer moved the published path meanwhile.
PUBLISH_ATTEMPTS = 5


class VaultStore:
    """The :class:`~rotator.stores.base.Store` on a Vault KV v2 mount.

    Thread-safe as its :class:`~rotator.clients.vault.VaultSession` is.
    """

    backend = "vault"

    def __init__(
        self,
        session: VaultSession,
        *,
        mount: str = "secret",
        state_prefix: str = "rotator-state",
    ) -> None:
        self._session = session
        self._mount = mount
        self._state_prefix = state_prefix
        self._lock = threading.Lock()
        self._ack_versions: dict[str, int] = {}  # acknowledgement path -> the version we last wrote

    def __repr__(self) -> str:
        return f"VaultStore({self._session.url!r}, mount={self._mount!r}, auth={self._session.method!r})"

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
        data = key.published()
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

    def ever_published(self, ref: CredentialRef, keys: Sequence[Key]) -> set[str]:
        wanted = {k.api_key for k in keys}
        found: set[str] = set()
        doing = f"read the earlier versions at {self._where(ref.path)}"
        latest = self._read(ref.path, doing).version if wanted else None
        # Newest first: a lost state's keys are the last ones published. Pruned (max_versions) and
        # deleted versions read as nothing.
        for version in range(latest or 0, max(0, (latest or 0) - PUBLISHED_MEMORY), -1):
            read = self._session.read(self._mount, ref.path, doing, version=version)
            try:
                key = Key.from_dict(read.data) if read.data is not None else None
            except ValueError:
                continue  # not a key we wrote (written by hand): it proves nothing
            if key is not None and any(same_key(key, k) for k in keys):
                found.add(key.api_key)
                if len(found) == len(wanted):
                    break
        return found

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        self._write_ack(ref, Ack(consumer_id, key_prefix, at))

    def report_refusal(
        self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float, refused_at: float, count: int
    ) -> None:
        # The report is the acknowledgement with two more fields: the consumer policy's one path.
        self._write_ack(ref, Ack(consumer_id, key_prefix, at, refused_at, count))

    def _write_ack(self, ref: CredentialRef, ack: Ack) -> None:
        path = f"{self._acks_path(ref)}/{ack.consumer_id}"
        data = ack.to_dict()
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
        self._session.close()

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
        return self._session.list(self._mount, path, doing)

    def _read(self, path: str, doing: str) -> KvRead:
        return self._session.read(self._mount, path, doing)

    def _write(self, path: str, data: dict[str, Any], cas: int, doing: str) -> int:
        return self._session.write(self._mount, path, data, cas, doing)

    # -- check ------------------------------------------------------------------------------------

    def check(self, ref: CredentialRef) -> CheckResult:
        # Reads and the listing are done; writes are asked of sys/capabilities-self, which changes
        # nothing and answers for this token (namespace included) what a write would meet.
        failed = read_check(self, ref)
        if failed is not None:
            return failed
        paths = [f"{self._mount}/data/{self._state_path(ref)}", f"{self._mount}/data/{ref.path}"]
        try:
            answer = self._session.call(
                "ask for its capabilities", lambda: self._session.client.sys.get_capabilities(paths=paths)
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
            return CheckResult(
                "error", f"vault at {self._session.url}: permission denied: {'; '.join(missing)}"
            )
        return CheckResult(
            "ready", f"vault at {self._session.url}: state and published key readable and writable"
        )


# -- the factory ------------------------------------------------------------------------------------
def build_vault_store(
    settings: VaultSettings, env: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic
) -> VaultStore:
    """The store on ``settings``' mount, over the session :func:`~rotator.clients.vault.make_session`
    builds (``clock`` times token renewal).

    :raises ConfigError: a missing token/role/secret source or TLS file.
    """
    session = make_session(settings, env, clock=clock)
    return VaultStore(session, mount=settings.mount, state_prefix=settings.state_prefix)
