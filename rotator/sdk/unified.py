"""Rotating wrappers for polymarket-client (the unified SDK): ``SecureClient`` and ``AsyncSecureClient``.

A unified client holds its credentials for life, so a new key means a new client. The wrappers
build every client from a key just read from the store, build the next one while the current one
keeps serving, and close a client only once it is out of service and no call is using it
(reference counting): a call never finds no client, nor a closed one.

The silent fallback (clob-auth.md 7a): ``SecureClient.create(credentials=...)`` checks the key with
``GET /auth/api-keys`` and, on a 401, quietly creates or derives a nonce-0 key and returns a client on
it: a key the worker does not manage. The wrappers prevent it (they build with the SDK's credential
check off, ``_create(validate_credentials=False)``, so the SDK never mints a key; a dead published
key shows up as a 401 on the first call, which re-reads the store and retries once), and still
check every client they get: one whose ``credentials.key`` is not the key asked for is closed,
logged (masked id), counted in ``fallbacks_refused`` and never used.

The private names used here (:data:`PRIVATE_NAMES`: ``_create`` and its ``validate_credentials``,
``_ensure_wallet_ready``, ``environments._create_environment``, ``Environment._config``) are checked
before the first client is built (:func:`check_sdk`): a polymarket-client release that renamed one
fails there, naming it, instead of minting a key. :data:`SUPPORTED` is the range the SDK matrix
proves (tests/integration/test_sdk_matrix.py: its oldest and newest version).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from rotator.consumer import CredentialSource, is_invalid_key, log_reread_failed, log_retry
from rotator.errors import ConfigError, RotatorError
from rotator.model import Key, mask

if TYPE_CHECKING:
    from polymarket import ApiKeyCreds, AsyncSecureClient, Environment, SecureClient

log = logging.getLogger("rotator.consumer")

T = TypeVar("T")

#: The polymarket-client versions this module is tested with (pyproject's ``unified`` extra).
SUPPORTED: Final = ">=0.14,<1"
PRODUCTION_CLOB: Final = "https://clob.polymarket.com"
#: (module, object, attribute) of every private SDK name used here; ``Environment._config`` is a
#: dataclass field, read on instances.
PRIVATE_NAMES: Final = (
    ("polymarket.environments", None, "_create_environment"),
    ("polymarket.environments", "Environment", "_config"),
    ("polymarket", "SecureClient", "_create"),
    ("polymarket", "SecureClient", "_ensure_wallet_ready"),
    ("polymarket", "AsyncSecureClient", "_create"),
    ("polymarket", "AsyncSecureClient", "_ensure_wallet_ready"),
)
#: ``_create``'s switch that turns the credential check, and so the SDK's nonce-0 fallback, off.
_NO_VALIDATION: Final = "validate_credentials"
_checked: list[str] = []  # the SDK version that passed check_sdk, once it did


def missing_private_names() -> list[str]:
    """The names of :data:`PRIVATE_NAMES` the installed polymarket-client lacks (empty: none)."""
    import dataclasses
    import sys

    from polymarket import environments  # noqa: F401 - loads the module checked below

    missing = []
    for module, owner, attr in PRIVATE_NAMES:
        target: Any = sys.modules[module]
        where = module if owner is None else f"{module}.{owner}"
        if owner is not None:
            target = getattr(target, owner, None)
        if target is None:
            missing.append(where)
            continue
        fields = {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
        if not hasattr(target, attr) and attr not in fields:
            missing.append(f"{where}.{attr}")
        elif attr == "_create" and _NO_VALIDATION not in inspect.signature(target._create).parameters:
            missing.append(f"{where}._create({_NO_VALIDATION}=...)")
    return missing


def check_sdk() -> str:
    """The installed polymarket-client's version, once its private names are all there.

    :raises ConfigError: one is missing (a release renamed it): naming each, the installed version
        and the supported range. The wrappers call this before building any client.
    """
    from polymarket.version import __version__

    if _checked == [__version__]:
        return __version__
    missing = missing_private_names()
    if missing:
        raise ConfigError(
            f"polymarket-client {__version__} lacks what the rotating wrapper uses: {', '.join(missing)} "
            f"(proven on {SUPPORTED}): pip install 'polymarket-rotator[unified]'"
        )
    _checked[:] = [__version__]
    return __version__


class FallbackRefused(RotatorError):
    """The SDK returned a client on another key than the one asked for; it was closed unused."""

    status = 401  # handled like the CLOB refusing the key: re-read the store, retry once


def local_environment(clob_url: str) -> Environment:
    """polymarket-client's production environment with its CLOB at ``clob_url`` (``rotator sandbox``).

    Uses the SDK's private ``_create_environment`` and ``Environment._config`` (clob-auth.md 7a).

    :raises ConfigError: the installed polymarket-client lacks them (:func:`check_sdk`).
    """
    import dataclasses

    from polymarket import environments

    check_sdk()
    config = dataclasses.replace(environments.PRODUCTION._config, clob_url=clob_url.rstrip("/"))
    return environments._create_environment(name="local", config=config)


def environment_for(host: str) -> Environment:
    """PRODUCTION for the production CLOB, else :func:`local_environment`."""
    from polymarket import PRODUCTION

    return PRODUCTION if host.rstrip("/") == PRODUCTION_CLOB else local_environment(host)


def unified_creds(key: Key) -> ApiKeyCreds:
    """polymarket-client's ``ApiKeyCreds`` (``key``/``secret``/``passphrase``) for a published key."""
    from polymarket import ApiKeyCreds

    return ApiKeyCreds(
        key=key.api_key, secret=key.api_secret.reveal(), passphrase=key.api_passphrase.reveal()
    )


def is_unauthorized(exc: BaseException) -> bool:
    """polymarket-client's 401 (``RequestRejectedError.status``), or a refused fallback."""
    return getattr(exc, "status", None) == 401 or is_invalid_key(exc)


class _Slot:
    """One client in service (or retiring), the key it was built for, and the calls using it."""

    __slots__ = ("client", "closed", "key_id", "retired", "users")

    def __init__(self, client: Any, key_id: str) -> None:
        self.client = client
        self.key_id = key_id
        self.users = 0
        self.retired = False
        self.closed = False


class _Base:
    """What the sync and async wrappers share: options, counters, the fallback check."""

    def __init__(
        self,
        source: CredentialSource,
        *,
        host: str = PRODUCTION_CLOB,
        private_key: str,
        wallet: str | None = None,
        environment: Environment | None = None,
        chain_id: int | None = None,
        **create_options: Any,
    ) -> None:
        if not private_key:
            raise ConfigError("private_key is required")
        check_sdk()
        from eth_account import Account

        self._source = source
        self._private_key = private_key
        # The signer's address: an EOA wallet, so create() asks no relayer and deploys nothing.
        self._wallet = wallet or Account.from_key(private_key).address
        self._environment = environment if environment is not None else environment_for(host)
        env_chain = self._environment._config.chain_id
        if chain_id is not None and chain_id != env_chain:
            raise ConfigError(f"chain_id {chain_id} does not match the environment's {env_chain}")
        self._options = create_options
        self._stats = threading.Lock()
        self._slot: _Slot | None = None
        #: Calls made, calls retried once after a 401, calls that raised to the caller.
        self.calls = 0
        self.retried = 0
        self.failed = 0
        #: Clients built, clients closed, and clients refused because the SDK put them on another key.
        self.built = 0
        self.closed = 0
        self.fallbacks_refused = 0

    @property
    def key_prefix(self) -> str | None:
        """The masked id of the key the client in service holds."""
        slot = self._slot
        return mask(slot.key_id) if slot is not None else None

    @property
    def client(self) -> Any:
        """The client in service (calls made on it directly are not retried nor counted)."""
        slot = self._slot
        return slot.client if slot is not None else None

    def _kwargs(self, cls: type[Any], key: Key) -> dict[str, Any]:
        return {
            "private_key": self._private_key,
            "wallet": self._wallet,
            "environment": self._environment,
            "credentials": unified_creds(key),
            **self._options,
            _NO_VALIDATION: False,  # the SDK never mints a key (check_sdk made sure it has the switch)
        }

    def _refused(self, key: Key, got: str | None) -> FallbackRefused:
        with self._stats:
            self.fallbacks_refused += 1
        log.error(
            "%s: the SDK returned a client on key %s instead of %s; closed it unused",
            self._source.ref.name,
            mask(got) if got else "none",
            key.masked,
        )
        return FallbackRefused(f"{self._source.ref.name}: the SDK fell back from key {key.masked}")

    def _count(self, name: str) -> None:
        with self._stats:
            setattr(self, name, getattr(self, name) + 1)


class RotatingSecureClient(_Base):
    """A polymarket-client ``SecureClient`` whose key follows a :class:`CredentialSource`. Thread-safe.

    Every method of ``SecureClient`` is available on this object and runs on the client in service;
    ``call(lambda client: ...)`` does the same for several steps on one client. A call refused with
    401 is retried exactly once, after ``source.refresh(different_from=<the refused key>)``.
    """

    def __init__(self, source: CredentialSource, **options: Any) -> None:
        super().__init__(source, **options)
        self._lock = threading.Lock()  # guards _slot and every slot's users/retired/closed
        self._building = threading.Lock()  # one client built at a time
        source.subscribe(self._on_key)

    def _on_key(self, key: Key) -> None:
        # The source read a new key: build its client now, while the current one keeps serving.
        self._ensure(key, wait=True)

    def _build(self, key: Key) -> SecureClient:
        from polymarket import SecureClient

        create = getattr(SecureClient, "_create")  # noqa: B009 - private: see the module's docstring
        client: SecureClient = create(**self._kwargs(SecureClient, key))
        try:
            client = client._ensure_wallet_ready()  # what create() does after _create(); EOA: nothing
        except BaseException:
            client.close()
            raise
        got = client.credentials.key
        if got != key.api_key:
            client.close()
            raise self._refused(key, got)
        self._count("built")
        return client

    def _ensure(self, key: Key, *, wait: bool) -> None:
        """Put a client for ``key`` in service unless there is one. ``wait=False``: if another thread
        is building and a client is in service, return at once (the current client serves)."""
        if not self._building.acquire(blocking=wait or self._slot is None):
            return
        try:
            slot = self._slot
            if slot is not None and slot.key_id == key.api_key:
                return
            fresh = _Slot(self._build(key), key.api_key)
            with self._lock:
                old, self._slot = self._slot, fresh
                close = old is not None and self._retire(old)
            if close and old is not None:
                self._close(old)
        finally:
            self._building.release()

    @staticmethod
    def _retire(slot: _Slot) -> bool:
        """Called with ``_lock`` held: True if the caller must close it now."""
        slot.retired = True
        if slot.users == 0 and not slot.closed:
            slot.closed = True
            return True
        return False

    def _close(self, slot: _Slot) -> None:
        try:
            slot.client.close()
        except Exception as exc:  # noqa: BLE001 - closing an old client must not fail a call
            log.warning("%s: closing a client failed (%s)", self._source.ref.name, type(exc).__name__)
        self._count("closed")

    def _acquire(self, key: Key) -> _Slot:
        slot = self._slot
        if slot is None or slot.key_id != key.api_key:
            self._ensure(key, wait=False)
        with self._lock:
            slot = self._slot
            assert slot is not None  # _ensure returned: a client is in service
            slot.users += 1
            return slot

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.users -= 1
            close = slot.retired and slot.users == 0 and not slot.closed
            if close:
                slot.closed = True
        if close:
            self._close(slot)

    def call(self, fn: Callable[[SecureClient], T]) -> T:
        """``fn(client)`` on the client in service, with the 401 handling above."""
        self._count("calls")
        used: str | None = None
        try:
            key = self._source.get()
            used = key.api_key  # refused while building (a fallback): the key asked for
            slot = self._acquire(key)
            used = slot.key_id
            try:
                return fn(slot.client)
            finally:
                self._release(slot)
        except Exception as exc:
            if not is_unauthorized(exc):
                self._count("failed")
                raise
            refused = exc
        self._count("retried")
        try:
            fresh = self._source.refresh(different_from=used)
        except RotatorError as exc:
            self._count("failed")
            log_reread_failed(self._source.ref.name, exc)
            raise refused from None
        log_retry(self._source.ref.name, used, fresh)
        try:
            self._ensure(fresh, wait=True)
            slot = self._acquire(fresh)
            try:
                return fn(slot.client)
            finally:
                self._release(slot)
        except Exception:
            self._count("failed")
            raise

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from polymarket import SecureClient

        attr = getattr(SecureClient, name)  # AttributeError for what a SecureClient does not have
        if isinstance(attr, property):  # credentials, wallet, ...: of the client in service, no request
            slot = self._acquire(self._source.get())
            try:
                return getattr(slot.client, name)
            finally:
                self._release(slot)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self.call(lambda client: getattr(client, name)(*args, **kwargs))

        method.__name__ = name
        return method

    def close(self) -> None:
        """Close the client in service once no call uses it. Idempotent; the source is the bot's."""
        with self._lock:
            slot, self._slot = self._slot, None
            close = slot is not None and self._retire(slot)
        if close and slot is not None:
            self._close(slot)

    def __enter__(self) -> RotatingSecureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRotatingSecureClient(_Base):
    """The same for ``AsyncSecureClient``: ``await wrapper.call(lambda client: client.method(...))``,
    or ``await wrapper.method(...)``. Use it from one event loop.

    The store is read by the source's background thread (start it); a new key's client is built in a
    task while the current client keeps serving.
    """

    #: How long the source's thread waits for the event loop to put a new key's client in service
    #: before it acknowledges the key anyway (a loop that long blocked serves nothing either).
    SERVE_TIMEOUT: Final = 30.0

    def __init__(self, source: CredentialSource, **options: Any) -> None:
        super().__init__(source, **options)
        self._build_task: asyncio.Task[None] | None = None
        self._build_key: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop calls come from
        source.subscribe(self._on_key)

    def _on_key(self, key: Key) -> None:
        """On the thread that read a new key (listeners run before the source acknowledges it): have
        the event loop build its client and wait until it is in service, so the worker, which
        revokes the old key once every consumer acknowledged the new one, never revokes a key this
        client still serves. Before the first call there is no client and nothing to wait for."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                self._ensure(key)  # on the loop itself: waiting here would block the build
                return
        future = asyncio.run_coroutine_threadsafe(self._serve(key), loop)
        try:
            future.result(self.SERVE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the next call builds (and raises) anyway
            future.cancel()
            log.warning(
                "%s: no client for key %s yet (%s); acknowledging it anyway",
                self._source.ref.name,
                key.masked,
                type(exc).__name__,
            )

    async def _serve(self, key: Key) -> None:
        task = self._ensure(key)
        if task is not None:
            await asyncio.shield(task)

    async def _build(self, key: Key) -> AsyncSecureClient:
        from polymarket import AsyncSecureClient

        create = getattr(AsyncSecureClient, "_create")  # noqa: B009 - private: see the module's docstring
        client: AsyncSecureClient = await create(**self._kwargs(AsyncSecureClient, key))
        try:
            client = await client._ensure_wallet_ready()
        except BaseException:
            await client.close()
            raise
        got = client.credentials.key
        if got != key.api_key:
            await client.close()
            raise self._refused(key, got)
        self._count("built")
        return client

    async def _install(self, key: Key) -> None:
        fresh = _Slot(await self._build(key), key.api_key)
        old, self._slot = self._slot, fresh
        if old is not None:
            old.retired = True
            await self._close_if_idle(old)

    async def _close_if_idle(self, slot: _Slot) -> None:
        if slot.retired and slot.users == 0 and not slot.closed:
            slot.closed = True
            try:
                await slot.client.close()
            except Exception as exc:  # noqa: BLE001 - closing an old client must not fail a call
                log.warning("%s: closing a client failed (%s)", self._source.ref.name, type(exc).__name__)
            self._count("closed")

    def _ensure(self, key: Key) -> asyncio.Task[None] | None:
        """Start building a client for ``key`` unless one is in service or being built: the task."""
        slot = self._slot
        if slot is not None and slot.key_id == key.api_key:
            return None
        task = self._build_task
        if task is not None and not task.done() and self._build_key == key.api_key:
            return task
        task = asyncio.ensure_future(self._install(key))
        self._build_task, self._build_key = task, key.api_key
        return task

    async def _key(self, *, different_from: str | None = None) -> Key:
        source = self._source
        if different_from is not None:
            return await asyncio.to_thread(source.refresh, different_from=different_from)
        cached = source.current()
        if source.running and cached is not None:
            return cached
        return await asyncio.to_thread(source.get)

    async def _acquire(self, key: Key, *, wait: bool) -> _Slot:
        task = self._ensure(key)
        if task is not None and (wait or self._slot is None):
            await asyncio.shield(task)
        elif task is not None and task.done():
            task.result()  # a failed build: its error is this call's
        slot = self._slot
        assert slot is not None  # no task: a client for the key is in service; else it was awaited
        slot.users += 1
        return slot

    async def _release(self, slot: _Slot) -> None:
        slot.users -= 1
        await self._close_if_idle(slot)

    async def call(self, fn: Callable[[AsyncSecureClient], Awaitable[T]]) -> T:
        """``await fn(client)`` on the client in service, with one retry after a 401."""
        self._loop = asyncio.get_running_loop()
        self._count("calls")
        used: str | None = None
        try:
            key = await self._key()
            used = key.api_key  # refused while building (a fallback): the key asked for
            slot = await self._acquire(key, wait=False)
            used = slot.key_id
            try:
                return await fn(slot.client)
            finally:
                await self._release(slot)
        except Exception as exc:
            if not is_unauthorized(exc):
                self._count("failed")
                raise
            refused = exc
        self._count("retried")
        try:
            fresh = await self._key(different_from=used)
        except RotatorError as exc:
            self._count("failed")
            log_reread_failed(self._source.ref.name, exc)
            raise refused from None
        log_retry(self._source.ref.name, used, fresh)
        try:
            slot = await self._acquire(fresh, wait=True)
            try:
                return await fn(slot.client)
            finally:
                await self._release(slot)
        except Exception:
            self._count("failed")
            raise

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from polymarket import AsyncSecureClient

        getattr(AsyncSecureClient, name)  # AttributeError for what an AsyncSecureClient does not have

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await self.call(lambda client: getattr(client, name)(*args, **kwargs))

        method.__name__ = name
        return method

    async def aclose(self) -> None:
        """Close the client in service once no call uses it (and any client being built). Idempotent."""
        task = self._build_task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):  # its error was a call's; here we only close
                await task
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.retired = True
            await self._close_if_idle(slot)

    async def __aenter__(self) -> AsyncRotatingSecureClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
