"""The ``vault`` signer source: the wallet key in a field of a KV v2 secret, read with the store's settings.

It reads through :class:`rotator.stores.vault.VaultStore` (built by the store's own factory on the
signer's mount), so the url, namespace, TLS and auth method (token, AppRole, Kubernetes, with renewal and
re-login) are exactly the store's, and hvac stays imported in ``stores/vault.py`` only (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rotator.errors import SignerError, StoreError, Unavailable
from rotator.model import Secret

if TYPE_CHECKING:
    from rotator.config import VaultSettings
    from rotator.stores.vault import VaultStore


class VaultKeySource:
    """Reads ``field`` of the latest version of ``<mount>/<path>``; called for every signature."""

    def __init__(self, store: VaultStore, mount: str, path: str, field: str, *, source: str) -> None:
        self._store = store
        self._mount = mount
        self._path = path
        self._field = field
        self._source = source

    def __call__(self) -> Secret:
        try:
            # VaultStore's KV v2 read: login, renewal, one re-login on 403, and its error table. It is
            # the store's internal read (no public generic read exists); tests/integration cover it.
            read = self._store._read(self._path, f"read {self._mount}/{self._path}")
        except Unavailable as exc:
            raise Unavailable(f"{self._source}: {exc}") from exc
        except StoreError as exc:  # denied, wrong mount, KV v1: retrying will not help
            raise SignerError(f"{self._source}: {exc}") from exc
        if read.data is None:
            raise SignerError(
                f"{self._source}: no secret at {self._mount}/{self._path} (or its latest version is deleted)"
            )
        value = read.data.get(self._field)
        if not isinstance(value, str):
            raise SignerError(f"{self._source}: the secret has no text field {self._field!r}")
        return Secret(value)

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"VaultKeySource({self._mount}/{self._path}#{self._field})"


def build_vault_source(
    settings: VaultSettings, env: Mapping[str, str], *, mount: str | None, path: str, field: str, source: str
) -> VaultKeySource:
    """:raises ConfigError: the store's auth secrets or TLS files are missing (names the setting)."""
    from rotator.stores.vault import build_vault_store

    mount = mount or settings.mount
    store = build_vault_store(settings.model_copy(update={"mount": mount}), env)
    return VaultKeySource(store, mount, path, field, source=source)
