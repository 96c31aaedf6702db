"""The ``vault`` signer source: the wallet key in a field of a KV v2 secret, read with the store's settings.

It reads through a :class:`rotator.clients.vault.VaultSession` made from ``store.vault`` (the same
factory the store uses), so the url, namespace, TLS and auth method (token, AppRole, Kubernetes, with
renewal and re-login) are exactly the store's, and hvac stays imported in ``clients/vault.py`` only
(DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rotator.errors import SignerError, StoreError, Unavailable
from rotator.model import Secret
from rotator.signers.base import text_field

if TYPE_CHECKING:
    from rotator.clients.vault import VaultSession
    from rotator.config import VaultSettings


class VaultKeySource:
    """Reads ``field`` of the latest version of ``<mount>/<path>``; called for every signature."""

    def __init__(self, session: VaultSession, mount: str, path: str, field: str, *, source: str) -> None:
        self._session = session
        self._mount = mount
        self._path = path
        self._field = field
        self._source = source

    def __call__(self) -> Secret:
        try:
            read = self._session.read(self._mount, self._path, f"read {self._mount}/{self._path}")
        except Unavailable as exc:
            raise Unavailable(f"{self._source}: {exc}") from exc
        except StoreError as exc:  # denied, wrong mount, KV v1: retrying will not help
            raise SignerError(f"{self._source}: {exc}") from exc
        if read.data is None:
            raise SignerError(
                f"{self._source}: no secret at {self._mount}/{self._path} (or its latest version is deleted)"
            )
        return text_field(read.data, self._field, self._source)

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"VaultKeySource({self._mount}/{self._path}#{self._field})"


def build_vault_source(
    settings: VaultSettings, env: Mapping[str, str], *, mount: str | None, path: str, field: str, source: str
) -> VaultKeySource:
    """:raises ConfigError: the store's auth secrets or TLS files are missing (names the setting)."""
    from rotator.clients.vault import make_session

    return VaultKeySource(make_session(settings, env), mount or settings.mount, path, field, source=source)
