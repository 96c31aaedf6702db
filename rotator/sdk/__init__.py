"""The seam between ``rotator.consumer`` and the bots' CLOB SDKs: one adapter per SDK.

An adapter knows how to build a client for a published key, how a new key reaches a live client
(``swap`` for the two ``ClobClient`` SDKs, a new client for the unified one), which key a client
holds, and what a refused key looks like. Pick one by name (:data:`SDKS`) or by the client a bot
already has (:func:`adapter_for`); :func:`connect` builds the rotating client for it. The default
for new code is the unified SDK (``polymarket-client``, extra ``polymarket-rotator[unified]``).

* ``v1``: py-clob-client 0.34.6. Authentication only: V1-signed orders are refused on production
  since CLOB V2 (2026-04-28).
* ``v2``: py-clob-client-v2 (extra ``polymarket-rotator[v2]``), deprecated by Polymarket but still common.
* ``unified`` / ``unified-async``: polymarket-client's ``SecureClient`` / ``AsyncSecureClient``
  (extra ``polymarket-rotator[unified]``), wrapped by :mod:`rotator.sdk.unified`.

No SDK is imported until an adapter builds or recognises a client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from rotator.consumer import CredentialSource, RotatingClient, is_invalid_key, py_clob_creds
from rotator.errors import ConfigError
from rotator.model import Key

if TYPE_CHECKING:
    from rotator.sdk.unified import AsyncRotatingSecureClient, RotatingSecureClient

#: The SDK names :func:`connect` and :func:`adapter_for` take.
SDKS: Final = ("unified", "unified-async", "v2", "v1")
DEFAULT_SDK: Final = "unified"


class SdkAdapter:
    """What the consumer needs of one SDK. ``rebuilds``: a new key means a new client (no swap)."""

    name: str = ""
    rebuilds: bool = False

    def build(self, host: str, *, private_key: str, chain_id: int, **options: Any) -> Any:
        """A client with no key loaded yet (``swap`` loads one). Only for SDKs that swap."""
        raise NotImplementedError

    def creds(self, key: Key) -> Any:
        """What ``set_api_creds`` takes, for SDKs that swap."""
        raise NotImplementedError

    def swap(self, client: Any, key: Key) -> None:
        client.set_api_creds(self.creds(key))

    def held_key(self, client: Any) -> str | None:
        """The API key id the client authenticates with, if any."""
        creds = getattr(client, "creds", None)
        return getattr(creds, "api_key", None)

    def is_unauthorized(self, exc: BaseException) -> bool:
        return is_invalid_key(exc)


class V1Adapter(SdkAdapter):
    """py-clob-client 0.34.6 (auth-only since 2026-04-28)."""

    name = "v1"

    def build(self, host: str, *, private_key: str, chain_id: int, **options: Any) -> Any:
        from py_clob_client.client import ClobClient

        return ClobClient(host, chain_id=chain_id, key=private_key, **options)

    def creds(self, key: Key) -> Any:
        return py_clob_creds(key)


class V2Adapter(SdkAdapter):
    """py-clob-client-v2 (the ``v2`` extra's range): ``set_api_creds`` swaps a live client's key
    (clob-auth.md 7a)."""

    name = "v2"

    def build(self, host: str, *, private_key: str, chain_id: int, **options: Any) -> Any:
        from py_clob_client_v2 import ClobClient

        return ClobClient(host, chain_id=chain_id, key=private_key, **options)

    def creds(self, key: Key) -> Any:
        from py_clob_client_v2 import ApiCreds

        return py_clob_creds(key, ApiCreds)  # the same three fields as V1's


class UnifiedAdapter(SdkAdapter):
    """polymarket-client's ``SecureClient``: credentials fixed for life, so a new key is a new client."""

    name = "unified"
    rebuilds = True

    def held_key(self, client: Any) -> str | None:
        creds = getattr(client, "credentials", None)
        return getattr(creds, "key", None)

    def is_unauthorized(self, exc: BaseException) -> bool:
        return getattr(exc, "status", None) == 401 or is_invalid_key(exc)


class AsyncUnifiedAdapter(UnifiedAdapter):
    """polymarket-client's ``AsyncSecureClient``."""

    name = "unified-async"


_ADAPTERS: Final[dict[str, Callable[[], SdkAdapter]]] = {
    "v1": V1Adapter,
    "v2": V2Adapter,
    "unified": UnifiedAdapter,
    "unified-async": AsyncUnifiedAdapter,
}


def adapter_for(sdk: object) -> SdkAdapter:
    """The adapter for an SDK name, or for a client object (or class) of one of the SDKs.

    :raises ConfigError: an unknown name or an object of no supported SDK.
    """
    if isinstance(sdk, str):
        make = _ADAPTERS.get(sdk)
        if make is None:
            raise ConfigError(f"sdk {sdk[:40]!r}: use one of {', '.join(SDKS)}")
        return make()
    cls = sdk if isinstance(sdk, type) else type(sdk)
    module = cls.__module__
    if module == "py_clob_client_v2" or module.startswith("py_clob_client_v2."):
        return V2Adapter()
    if module.startswith("py_clob_client."):
        return V1Adapter()
    if module.startswith("polymarket."):
        return AsyncUnifiedAdapter() if cls.__name__.startswith("Async") else UnifiedAdapter()
    raise ConfigError(f"{cls.__name__}: not a client of a supported SDK ({', '.join(SDKS)})")


def wrap(client: Any, source: CredentialSource) -> RotatingClient:
    """A bot's own ``ClobClient`` (py-clob-client or py-clob-client-v2), wrapped: see :func:`connect`.

    A unified ``SecureClient`` cannot be wrapped (its key is fixed): :func:`connect` builds them.

    :raises ConfigError: the client is not a ``ClobClient`` of either SDK.
    """
    adapter = adapter_for(client)
    if adapter.rebuilds:
        raise ConfigError(
            f"{type(client).__name__} holds its key for life: use rotator.consumer.connect(sdk='unified')"
        )
    return RotatingClient(client, source, creds_factory=adapter.creds)


def connect(
    source: CredentialSource,
    host: str,
    *,
    private_key: str,
    sdk: object = DEFAULT_SDK,
    chain_id: int = 137,
    **options: Any,
) -> RotatingClient | RotatingSecureClient | AsyncRotatingSecureClient:
    """A CLOB client on ``host`` whose key follows ``source``, for the SDK named (or of the client given).

    * ``v1``/``v2``: a :class:`~rotator.consumer.RotatingClient` over a new ``ClobClient``
      (``options`` go to its constructor).
    * ``unified``: a :class:`~rotator.sdk.unified.RotatingSecureClient`; ``unified-async``: an
      :class:`~rotator.sdk.unified.AsyncRotatingSecureClient` (``options``: ``wallet``,
      ``environment``, ``logger``, ``on_rate_limit_update``; ``host`` picks the environment unless
      ``environment`` is given).

    :raises ConfigError: unknown SDK.
    """
    adapter = adapter_for(sdk)
    if adapter.rebuilds:
        from rotator.sdk import unified

        cls = (
            unified.AsyncRotatingSecureClient
            if adapter.name == "unified-async"
            else unified.RotatingSecureClient
        )
        return cls(source, host=host, private_key=private_key, chain_id=chain_id, **options)
    client = adapter.build(host, private_key=private_key, chain_id=chain_id, **options)
    return RotatingClient(client, source, creds_factory=adapter.creds)


__all__ = [
    "DEFAULT_SDK",
    "SDKS",
    "AsyncUnifiedAdapter",
    "SdkAdapter",
    "UnifiedAdapter",
    "V1Adapter",
    "V2Adapter",
    "adapter_for",
    "connect",
    "wrap",
]
