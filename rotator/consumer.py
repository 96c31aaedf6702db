"""What bots import: the published key, kept fresh, and a CLOB client that survives every rotation.

* :class:`CredentialSource` reads the key the worker published (file store, Vault KV v2, AWS Secrets
  Manager ``AWSCURRENT``), caches it, re-reads it every ``refresh_every`` (in a background thread once
  started, so a slow or unreachable store never delays a request), and acknowledges the key it holds,
  which lets the worker revoke the previous key as soon as every consumer has moved on.
* :class:`RotatingClient` wraps a py-clob-client ``ClobClient``: new keys are loaded the moment the
  source sees them, and a 401 "Unauthorized/Invalid api key" triggers one refresh, ``set_api_creds``
  and one retry of the same call, never a loop.

Importing this module loads none of the worker's dependencies (hvac, boto3, pydantic,
py-clob-client, prometheus): each is imported when the object that needs it is built.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rotator.errors import ConfigError, NotFound, RotatorError
from rotator.model import CONSUMER_ID, CredentialRef, Key, ack_prefix, mask

if TYPE_CHECKING:
    from rotator.config import StoreSettings

log = logging.getLogger("rotator.consumer")

T = TypeVar("T")


class KeyStore(Protocol):
    """The part of a rotator store a consumer uses; every ``rotator.stores`` backend has it."""

    def read_published(self, ref: CredentialRef) -> Key | None: ...

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None: ...

    def report_refusal(
        self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float, refused_at: float, count: int
    ) -> None: ...

    def close(self) -> None: ...


def default_consumer_id() -> str:
    """The host name (a pod's name in Kubernetes), made safe for store paths and tags.

    Stable across restarts of the same pod, so a restarted bot replaces its own acknowledgement
    instead of leaving a stale one that delays revocations until ``consumer_ttl`` forgets it. Two
    bots on one host must pass distinct ids.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.@-]+", "-", socket.gethostname()).strip("-._@")[:64]
    return cleaned if CONSUMER_ID.match(cleaned) else "consumer"


class _Wait:
    """One thread's wait for a key other than ``refused``; threads refused meanwhile share its end."""

    __slots__ = ("done", "error", "key", "refused")

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.done = threading.Event()
        self.key: Key | None = None
        self.error: BaseException | None = None


class _Refusal:
    """What this consumer tells the worker about one key the CLOB refused while it was published."""

    __slots__ = ("count", "first_at", "key_id", "pending", "sent", "sent_at")

    def __init__(self, key_id: str, first_at: float) -> None:
        self.key_id = key_id
        self.first_at = first_at  # wall clock: the worker compares it with its own
        self.count = 0  # refusals seen
        self.sent = 0  # refusals the last report sent counted
        self.sent_at: float | None = None  # monotonic time of the last report written
        self.pending = False  # a report is due


class CredentialSource:
    """The published key of one credential, cached, refreshed, acknowledged. Thread-safe.

    :param store: where the worker publishes (see :meth:`from_settings` to build one from settings).
    :param credential: the credential's name in the worker's config (acknowledgements are filed under it).
    :param path: the credential's publish ``path`` in the worker's config.
    :param consumer_id: this bot's name in acknowledgements and in ``rotator status``.
    :param refresh_every: seconds between reads of the store. Must be shorter than the worker's
        ``grace`` (state it in the worker's config as ``consumer_refresh``; ``rotator check`` warns).
    :param ack_every: an unchanged key is acknowledged again after this long, so that the worker
        keeps counting this bot as live: keep it well under the worker's ``consumer_ttl``.
    :param acknowledge: False for read-only consumers; the worker then falls back to ``grace``.
    :param wait_for_new: after the CLOB refused the cached key, how long :meth:`refresh` waits for a
        different key to be published (a CLOB that keeps one key per wallet invalidates the old key
        when the worker creates the new one, moments before the worker publishes it).
    :param report_every: when the CLOB refuses the key that is still published, the source reports
        it through the store beside its acknowledgement (which key, since when, how many refusals),
        so the worker checks that key at once instead of at its next scheduled probe. At most one
        report per key per ``report_every`` seconds, however many requests are refused. Reports are
        written by the background thread once started (never on a request's path) and never make a
        request fail. Read-only consumers (``acknowledge=False``) do not report.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        credential: str,
        path: str,
        consumer_id: str | None = None,
        refresh_every: float = 30.0,
        ack_every: float = 60.0,
        acknowledge: bool = True,
        wait_for_new: float = 5.0,
        poll_every: float = 0.05,
        report_every: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        consumer_id = consumer_id if consumer_id is not None else default_consumer_id()
        if not CONSUMER_ID.match(consumer_id):
            raise ConfigError(
                f"consumer_id {consumer_id[:70]!r}: use 1-64 of A-Z a-z 0-9 _ . @ -, starting alphanumeric"
            )
        for name, value in (
            ("refresh_every", refresh_every),
            ("ack_every", ack_every),
            ("report_every", report_every),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be positive")
        if wait_for_new < 0 or poll_every <= 0:
            raise ConfigError("wait_for_new must not be negative and poll_every must be positive")
        self._store = store
        self._ref = CredentialRef(credential, path)
        self._consumer_id = consumer_id
        self._refresh_every = refresh_every
        self._ack_every = ack_every
        self._acknowledge = acknowledge
        self._wait_for_new = wait_for_new
        self._poll_every = poll_every
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self._lock = threading.RLock()  # one store read at a time; readers of _key need no lock
        self._reads_begun = 0  # under _lock
        self._last_read: tuple[int, Key] | None = None  # (read number, key) of the last good read
        self._waits = threading.Lock()  # guards _waiting
        self._waiting: _Wait | None = None  # the one wait for a new key after a 401, if any
        self._key: Key | None = None
        self._read_at: float | None = None
        self._acked: tuple[str, float] | None = None  # (key id, monotonic time) of the last ack
        self._ack_failing = False
        self._ack_lock = threading.Lock()
        self._report_every = report_every
        self._refusal: _Refusal | None = None  # the last key refused; its fields under _refusal_lock
        self._refusal_lock = threading.Lock()  # never held across a store call: requests take it
        self._report_failing = False
        self._listeners: list[Callable[[Key], None]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Store reads, and reads that failed: for a bot's own metrics.
        self.reads = 0
        self.read_errors = 0
        #: Refusal reports written, and reports the store refused.
        self.reports = 0
        self.report_errors = 0

    @classmethod
    def from_settings(
        cls,
        store: StoreSettings | Mapping[str, Any],
        *,
        credential: str,
        path: str,
        env: Mapping[str, str],
        **options: Any,
    ) -> CredentialSource:
        """A source over the store described like the worker's ``store:`` section.

        ``env`` supplies what the settings name by variable (``store.file.key_env``, a Vault token,
        AWS credentials come from boto3's standard chain). The bot's identity needs read access to
        the published key and, to acknowledge, write access to its acknowledgement (docs/consumers.md).

        :raises ConfigError: the settings are invalid or a secret they name is missing.
        """
        from pydantic import ValidationError

        from rotator.config import Settings, StoreSettings
        from rotator.stores.factory import build_store

        if not isinstance(store, StoreSettings):
            try:
                store = StoreSettings.model_validate(dict(store))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err.get("loc", ())) or "store"
                raise ConfigError(f"store.{where}: {err.get('msg', 'invalid')}") from None
        # model_construct: only .store is read, and a bot's environment must not be parsed as ROTATOR_*.
        settings = Settings.model_construct(store=store)
        return cls(build_store(settings, env), credential=credential, path=path, **options)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def ref(self) -> CredentialRef:
        return self._ref

    @property
    def consumer_id(self) -> str:
        return self._consumer_id

    def current(self) -> Key | None:
        """The cached key, without touching the store."""
        return self._key

    def get(self) -> Key:
        """The key to use now.

        Served from the cache; read from the store when nothing is cached yet or, when no background
        thread refreshes it, when the cache is older than ``refresh_every``. If that read fails and a
        key is cached, the cached key is returned (the store may be down; the key may still be good).

        :raises NotFound: nothing is published yet. :raises StoreError: the first read failed.
        """
        key, read_at = self._key, self._read_at
        if key is not None and (self.running or (read_at is not None and self._fresh(read_at))):
            return key
        try:
            return self.refresh()
        except RotatorError as exc:
            if key is None:
                raise
            log.warning("%s: refresh failed, keeping key %s: %s", self._ref.name, key.masked, exc)
            return key

    def refresh(self, *, different_from: str | None = None) -> Key:
        """Read the published key now, load it (listeners) and acknowledge it.

        ``different_from``: the id of a key the CLOB just refused. Then, if another thread has
        already moved past it, the cached key is returned at once; otherwise the store is read until
        it publishes a different key, for up to ``wait_for_new`` seconds, and whatever is published
        then is returned (the caller retries once with it, whatever it is). One thread at a time
        waits; threads refused meanwhile share its answer (or its error), so a storm of 401s costs
        one waiter's reads and each thread at most ``wait_for_new`` (plus one read).

        Without ``different_from``, a read that began after this call and has ended is shared too.

        :raises NotFound: nothing is published. :raises StoreError: the store failed.
        """
        if different_from is None:
            key = self._read_and_install(self._reads_begun)
        else:
            self._count_refusal(different_from)
            key = self._await_new(different_from)
        # Outside the locks: a slow acknowledgement must not hold up a request thread's refresh.
        if self._ack_due(key):
            if self.running and threading.current_thread() is not self._thread:
                self._wake.set()  # the background thread acknowledges: no store write on the request path
            else:
                self._ack(key)
        return key

    def _read_and_install(self, begun_before: int | None) -> Key:
        """Read the store and load what it says. ``begun_before``: the number of reads begun when the
        caller was called; a successful read begun since then is answer enough (None: always read)."""
        # One read at a time, and each installed before the next begins: an older answer can never
        # replace a newer key. The lock is never held across a sleep.
        with self._lock:
            shared = self._last_read
            if begun_before is not None and shared is not None and shared[0] > begun_before:
                return shared[1]
            self._reads_begun += 1
            seq = self._reads_begun
            self._last_read = None
            key = self._read()
            self._install(key)
            self._last_read = (seq, key)
            return key

    def _await_new(self, refused: str) -> Key:
        while True:
            with self._waits:
                cached = self._key
                if cached is not None and cached.api_key != refused:
                    return cached  # another thread already moved past the refused key
                wait = self._waiting
                if wait is None:
                    wait = self._waiting = _Wait(refused)
                    break  # this thread waits for everyone refused meanwhile
            wait.done.wait()  # the waiter ends within wait_for_new (plus one read)
            if wait.refused == refused and wait.error is not None:
                raise wait.error
            if wait.refused == refused and wait.key is not None:
                return wait.key
            # It waited on another refusal (its answer may be the key we were refused), or it was
            # interrupted: look again.
        try:
            deadline = self._monotonic() + self._wait_for_new
            first = True
            while True:
                key = self._read_and_install(None)
                if key.api_key == refused and first:
                    self._report_refused(refused)  # still published: tell the worker now, not after the wait
                first = False
                if key.api_key != refused or self._monotonic() + self._poll_every > deadline:
                    break
                self._sleep(self._poll_every)
            wait.key = key
            return key
        except Exception as exc:  # shared with the threads that waited on it, then raised here too
            wait.error = exc
            raise
        finally:
            with self._waits:
                self._waiting = None
            wait.done.set()

    def subscribe(self, listener: Callable[[Key], None]) -> None:
        """Call ``listener(key)`` whenever a different key is loaded, before it is acknowledged.

        Listeners run on the thread that read the key and must be quick; their errors are logged.
        """
        with self._lock:
            self._listeners.append(listener)

    def _fresh(self, read_at: float) -> bool:
        return self._monotonic() - read_at < self._refresh_every

    def _read(self) -> Key:
        self.reads += 1
        try:
            key = self._store.read_published(self._ref)
        except RotatorError:
            self.read_errors += 1
            raise
        if key is None:
            self.read_errors += 1
            raise NotFound(f"{self._ref.name}: no key is published at {self._ref.path!r} yet")
        return key

    def _install(self, key: Key) -> None:
        """Called with ``_lock`` held."""
        previous = self._key
        self._read_at = self._monotonic()
        if previous is None or previous.api_key != key.api_key:
            self._key = key
            log.info(
                "%s: loaded key %s (nonce %d, was %s)",
                self._ref.name,
                key.masked,
                key.nonce,
                previous.masked if previous else "none",
            )
            for listener in list(self._listeners):
                try:
                    listener(key)
                except Exception as exc:  # noqa: BLE001 - a bot's callback must not stop the refresh
                    log.error("%s: key listener failed (%s)", self._ref.name, type(exc).__name__)

    # -- acknowledging ---------------------------------------------------------------------------

    def _ack_due(self, key: Key) -> bool:
        if not self._acknowledge:
            return False
        last = self._acked
        return last is None or last[0] != key.api_key or self._monotonic() - last[1] >= self._ack_every

    def _ack(self, key: Key) -> None:
        with self._ack_lock:
            if not self._ack_due(key):
                return  # another thread just did
            refusal = self._refusal
            if refusal is not None and refusal.key_id == key.api_key and refusal.sent_at is not None:
                # A plain acknowledgement would replace the report the worker has not acted on yet.
                self._send_report(refusal)
                return
            try:
                self._store.ack(self._ref, self._consumer_id, ack_prefix(key.api_key), self._clock())
            except RotatorError as exc:
                # Not fatal: without our acknowledgement the worker waits for grace, which is safe.
                if not self._ack_failing:
                    log.warning("%s: could not acknowledge key %s: %s", self._ref.name, key.masked, exc)
                self._ack_failing = True
                return
            if self._ack_failing:
                log.info("%s: acknowledging again", self._ref.name)
            self._ack_failing = False
            self._acked = (key.api_key, self._monotonic())

    # -- reporting refused keys ------------------------------------------------------------------

    def _count_refusal(self, key_id: str) -> None:
        with self._refusal_lock:
            refusal = self._refusal
            if refusal is None or refusal.key_id != key_id:
                refusal = self._refusal = _Refusal(key_id, self._clock())
            refusal.count += 1

    def _report_refused(self, key_id: str) -> None:
        """The CLOB refused ``key_id`` and the store still publishes it: report it (rate-limited)."""
        if not self._acknowledge:
            return
        with self._refusal_lock:
            refusal = self._refusal
            if refusal is None or refusal.key_id != key_id:
                return
            last = refusal.sent_at
            if refusal.pending or (last is not None and self._monotonic() - last < self._report_every):
                return
            refusal.pending = True
        if self.running and threading.current_thread() is not self._thread:
            self._wake.set()  # the background thread writes it: no store write on the request path
        else:
            self._flush_report()

    def _flush_report(self) -> None:
        """Write the pending refusal report, if any. Never raises: a report is advice to the worker."""
        refusal = self._refusal
        if refusal is None or not refusal.pending:
            return
        try:
            with self._ack_lock:  # one store write at a time, acknowledgements included
                if refusal.pending:
                    self._send_report(refusal)
        except Exception as exc:  # noqa: BLE001 - a report must never break a request or the refresher
            # A store without report_refusal (a bot's own KeyStore), or a bug: try again next window.
            self.report_errors += 1
            with self._refusal_lock:
                refusal.pending, refusal.sent_at = False, self._monotonic()
            log.error("%s: refusal report failed unexpectedly (%s)", self._ref.name, type(exc).__name__)

    def _send_report(self, refusal: _Refusal) -> None:
        """Called with ``_ack_lock`` held: write the report (it acknowledges the key as well)."""
        prefix = ack_prefix(refusal.key_id)
        with self._refusal_lock:
            count, first_at = max(refusal.count, 1), refusal.first_at
        try:
            self._store.report_refusal(self._ref, self._consumer_id, prefix, self._clock(), first_at, count)
        except RotatorError as exc:
            self.report_errors += 1
            with self._refusal_lock:
                refusal.pending = False  # the next refusal after report_every tries again
                refusal.sent_at = self._monotonic()
            if not self._report_failing:
                log.warning(
                    "%s: could not report refused key %s: %s", self._ref.name, mask(refusal.key_id), exc
                )
            self._report_failing = True
            return
        self.reports += 1
        self._report_failing = False
        with self._refusal_lock:
            refusal.pending = False
            refusal.sent, refusal.sent_at = count, self._monotonic()
        self._acked = (refusal.key_id, self._monotonic())
        log.warning(
            "%s: the CLOB refused the published key %s (%d time(s)): reported to the worker",
            self._ref.name,
            mask(refusal.key_id),
            count,
        )

    # -- the background refresher ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> CredentialSource:
        """Refresh (and acknowledge) in a daemon thread from now on: the first read happens at once."""
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"rotator-consumer-{self._ref.name}", daemon=True
                )
                self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._flush_report()  # first: a report woke us, and the worker should hear it at once
            try:
                self.refresh()  # acknowledges too, when due (also when a request thread woke us for it)
            except RotatorError as exc:
                log.warning(
                    "%s: refresh failed (%s); retrying in %gs", self._ref.name, exc, self._refresh_every
                )
            except Exception as exc:  # noqa: BLE001 - the thread must outlive a surprise; say what it was
                log.error("%s: unexpected %s in the refresh thread", self._ref.name, type(exc).__name__)
            self._wake.wait(self._refresh_every)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the background thread (the cached key stays usable). Idempotent."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def close(self) -> None:
        """Stop the background thread and release the store. Idempotent."""
        self.stop()
        self._store.close()

    def __enter__(self) -> CredentialSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_reread_failed(credential: str, exc: BaseException) -> None:
    """The line every rotating client logs when a 401's re-read of the store failed."""
    log.warning("%s: 401, and the key could not be re-read: %s", credential, exc)


def log_retry(credential: str, used: str | None, fresh: Key) -> None:
    """The line every rotating client logs before its one retry after a 401 (masked ids only)."""
    log.info(
        "%s: 401 with key %s, retrying once with key %s",
        credential,
        mask(used) if used else "none",
        fresh.masked,
    )


def is_invalid_key(exc: BaseException) -> bool:
    """True for the CLOB's 401 (py-clob-client's ``PolyApiException``, py-clob-client-v2, httpx, rotator)."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(exc, "status", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status == 401


def py_clob_creds(key: Key, creds_class: Any = None) -> Any:
    """py-clob-client's ``ApiCreds`` for ``key`` (the published fields need no renaming), or
    ``creds_class``'s, which takes the same three fields (py-clob-client-v2's ``ApiCreds``)."""
    if creds_class is None:
        from py_clob_client.clob_types import ApiCreds

        creds_class = ApiCreds
    return creds_class(
        api_key=key.api_key, api_secret=key.api_secret.reveal(), api_passphrase=key.api_passphrase.reveal()
    )


def readonly_headers(key: Key) -> dict[str, str]:
    """The headers a reader sends with a published read-only key (``GET /data/orders`` and the other
    reads it opens): ``POLY_READONLY_API_KEY`` and ``POLY_ADDRESS``. Merge them into any HTTP
    client's request; take ``key`` from a :class:`CredentialSource` of the read-only credential, so
    each request carries the key published now (the id is the whole credential: never log them)."""
    if key.kind != "readonly":
        raise ValueError(f"readonly_headers needs a read-only key; {key.masked} is a {key.kind} key")
    return {"POLY_READONLY_API_KEY": key.api_key, "POLY_ADDRESS": key.address}


def builder_config(key: Key, config_class: Any = None, creds_class: Any = None) -> Any:
    """py-builder-signing-sdk's ``BuilderConfig`` for a published builder key: what py-clob-client's
    ``ClobClient(builder_config=...)`` and the relayer client take to sign ``POLY_BUILDER_*``
    headers locally. ``config_class``/``creds_class``: another SDK's pair taking the same fields."""
    if key.kind != "builder" or key.lost:
        raise ValueError(f"builder_config needs a builder key with its secret; {key.masked} is not one")
    if config_class is None or creds_class is None:
        from py_builder_signing_sdk.config import BuilderConfig
        from py_builder_signing_sdk.sdk_types import BuilderApiKeyCreds

        config_class, creds_class = config_class or BuilderConfig, creds_class or BuilderApiKeyCreds
    creds = creds_class(
        key=key.api_key, secret=key.api_secret.reveal(), passphrase=key.api_passphrase.reveal()
    )
    return config_class(local_builder_creds=creds)


def follow_builder(client: Any, source: CredentialSource, attribute: str = "builder_config") -> None:
    """Keep ``client``'s builder configuration on the builder key ``source`` holds: set now, and set
    again the moment the source sees a new key (before the worker revokes the old one, which stays
    valid for its grace). py-clob-client keeps it in ``builder_config``."""
    setattr(client, attribute, builder_config(source.get()))
    source.subscribe(lambda key: setattr(client, attribute, builder_config(key)))


#: Client attributes passed through untouched: they make no authenticated request.
_PASSTHROUGH = frozenset({"set_api_creds", "get_address", "assert_level_1_auth", "assert_level_2_auth"})


class RotatingClient:
    """A CLOB client whose API key follows a :class:`CredentialSource`. Thread-safe.

    Every method of the wrapped client is available on this object. A new key is loaded with
    ``set_api_creds`` as soon as the source reads it (before the source acknowledges it, so the
    worker never revokes a key this client still uses). A call refused with 401 is retried exactly
    once, after the source was re-read (waiting briefly for a new key if the refused one is still
    published); the retry's result or error is the caller's.

    ``creds_factory`` turns a key into what ``set_api_creds`` takes: py-clob-client's ``ApiCreds`` by
    default; py-clob-client-v2 and polymarket-client take the same three fields.
    """

    def __init__(
        self, client: Any, source: CredentialSource, *, creds_factory: Callable[[Key], Any] | None = None
    ) -> None:
        self._client = client
        self._source = source
        self._creds = creds_factory or py_clob_creds
        self._lock = threading.Lock()
        self._stats = threading.Lock()
        self._loaded: str | None = None
        #: Calls made, calls retried once after a 401, calls that raised to the caller.
        self.calls = 0
        self.retried = 0
        self.failed = 0
        source.subscribe(self._load)
        cached = source.current()
        if cached is not None:
            self._load(cached)

    @classmethod
    def connect(
        cls, host: str, source: CredentialSource, *, private_key: str, chain_id: int = 137, **kwargs: Any
    ) -> RotatingClient:
        """A py-clob-client ``ClobClient`` for ``host`` and the wallet's ``private_key``, wrapped."""
        from py_clob_client.client import ClobClient

        return cls(ClobClient(host, chain_id=chain_id, key=private_key, **kwargs), source)

    @property
    def client(self) -> Any:
        """The wrapped client (calls made on it directly are not retried)."""
        return self._client

    @property
    def key_prefix(self) -> str | None:
        """The masked id of the key loaded into the client."""
        return mask(self._loaded) if self._loaded else None

    def _load(self, key: Key) -> None:
        with self._lock:
            if key.api_key != self._loaded:
                self._client.set_api_creds(self._creds(key))
                self._loaded = key.api_key

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or name in _PASSTHROUGH or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(attr, *args, **kwargs)

        return call

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a method of the wrapped client) with the 401 handling above."""
        key = self._source.get()
        if key.api_key != self._loaded:
            self._load(key)
        used = self._loaded
        with self._stats:
            self.calls += 1
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_invalid_key(exc):
                self._count_failure()
                raise
            refused = exc
        with self._stats:
            self.retried += 1
        try:
            fresh = self._source.refresh(different_from=used)
        except RotatorError as exc:
            self._count_failure()
            log_reread_failed(self._source.ref.name, exc)
            raise refused from None
        self._load(fresh)
        log_retry(self._source.ref.name, used, fresh)
        try:
            return fn(*args, **kwargs)
        except Exception:
            self._count_failure()
            raise

    def _count_failure(self) -> None:
        with self._stats:
            self.failed += 1


# -- the other SDKs (rotator.sdk), loaded on first use ------------------------------------------------

#: Names re-exported from rotator.sdk (the adapters, connect, wrap) and rotator.sdk.unified (the
#: polymarket-client wrappers): importing this module loads neither, nor any SDK.
_SDK_NAMES = frozenset({"SDKS", "DEFAULT_SDK", "adapter_for", "connect", "wrap"})
_UNIFIED_NAMES = frozenset(
    {"RotatingSecureClient", "AsyncRotatingSecureClient", "FallbackRefused", "local_environment"}
)


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from rotator import sdk

        return getattr(sdk, name)
    if name in _UNIFIED_NAMES:
        from rotator.sdk import unified

        return getattr(unified, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
