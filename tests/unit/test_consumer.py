"""The consumer side without a CLOB: consumer-confirmed revocation decisions, the credential source
over a real file store, and the 401 handling of the client wrapper (with a stand-in for
py-clob-client's ``ClobClient``; the real one, over real HTTP, is in tests/integration/test_consumer.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator.config import load_settings
from rotator.consumer import CredentialSource, RotatingClient, default_consumer_id, is_invalid_key
from rotator.errors import ConfigError, NotFound, Unauthorized, Unavailable
from rotator.model import CONSUMER_ID, Ack, CredentialRef, CredentialState, Key, Retiring, Secret, ack_prefix
from rotator.rotation import Policy, due_revocations, lagging_consumers
from rotator.stores.file import FileStore, generate_file_key

REF = CredentialRef("mm1", "polymarket/mm1")
FILE_KEY = b"rotator-consumer-test-key-32byte"


def key(nonce: int) -> Key:
    # UUIDv7-shaped like real CLOB ids: the same first 8 characters for keys made within a minute.
    return Key(
        api_key=f"019d4ec2-{nonce:04x}-7abc-8def-{nonce:012x}",
        api_secret=Secret(f"c2VjcmV0LXtest-{nonce}"),
        api_passphrase=Secret(f"passphrase-{nonce}"),
        address="0x" + "ab" * 20,
        nonce=nonce,
        created_at=1_700_000_000.0 + nonce,
    )


# -- consumer-confirmed revocation: the decision -------------------------------------------------

K0, K1, K2 = key(0), key(1), key(2)
P0, P1, P2 = ack_prefix(K0.api_key), ack_prefix(K1.api_key), ack_prefix(K2.api_key)
POLICY = Policy(rotate_every=100.0, grace=50.0, verify_timeout=5.0, min_grace=5.0, consumer_ttl=30.0)
# K2 is current; K1 retired at 100 by a rotation, so its grace ends at 150.
RETIRED = Retiring(K1, retired_at=100.0, revoke_after=150.0, reason="rotated")
STATE = CredentialState(current=K2, retiring=(RETIRED,))


def ack(consumer: str, prefix: str, at: float) -> Ack:
    return Ack(consumer, prefix, at)


@pytest.mark.parametrize(
    ("acks", "now", "due"),
    [
        (None, 120, False),  # acknowledgements unknown: the timer alone
        (None, 150, True),
        ([], 120, False),  # nobody acknowledges (Vault Agent, env vars): the timer alone
        ([], 150, True),
        ([ack("a", P2, 103)], 104.9, False),  # everyone moved, but min_grace has not passed
        ([ack("a", P2, 103)], 105, True),
        ([ack("a", P2, 103), ack("b", P2, 104)], 110, True),
        ([ack("a", P2, 103), ack("b", P1, 95)], 110, False),  # b still holds the retiring key
        ([ack("a", P2, 103), ack("b", P1, 95)], 150, True),  # ... until grace ends
        ([ack("a", P2, 103), ack("b", P0, 109)], 110, False),  # b holds an even older key
        ([ack("a", P2, 103), ack("b", P1, 70)], 110, True),  # b not seen within consumer_ttl: gone
        ([ack("a", P2, 70)], 110, False),  # only consumers not seen lately: nobody to confirm
        ([ack("a", P2, 115)], 110, True),  # a consumer clock ahead of ours still counts as seen
        ([ack("a", P2[:8], 103)], 110, False),  # an 8-character id cannot tell UUIDv7 keys apart
    ],
)
def test_a_retired_key_is_due_at_grace_or_once_every_live_consumer_moved(
    acks: list[Ack] | None, now: float, due: bool
) -> None:
    assert due_revocations(STATE, now, acks, POLICY) == ([RETIRED] if due else [])


def test_consumer_confirmation_releases_every_rotated_key_but_not_early_for_emergencies() -> None:
    older = Retiring(K0, retired_at=90.0, revoke_after=140.0, reason="rotated")
    unverified = Retiring(key(3), retired_at=100.0, revoke_after=100.0, reason="unverified")
    state = CredentialState(current=K2, retiring=(older, RETIRED, unverified))
    everyone = [ack("a", P2, 91), ack("b", P2, 92)]
    assert due_revocations(state, 95, everyone, POLICY) == [older]  # each after its own min_grace
    assert due_revocations(state, 105, everyone, POLICY) == [older, RETIRED, unverified]
    # Without a current key there is nothing consumers could have moved to.
    assert due_revocations(replace(state, current=None), 105, everyone, POLICY) == [unverified]
    assert due_revocations(state, 94.9, everyone, POLICY) == []
    # The old signature still means "the timer alone".
    assert due_revocations(state, 145) == [older, unverified]


def test_lagging_consumers_are_the_live_ones_on_another_key() -> None:
    acks = [ack("a", P2, 140), ack("b", P1, 141), ack("c", P1, 100), ack("d", P0, 149)]
    assert [a.consumer_id for a in lagging_consumers(STATE, 150, acks, POLICY)] == ["b", "d"]
    assert lagging_consumers(STATE, 150, None, POLICY) == []


def test_ack_prefix_tells_uuid7_keys_of_the_same_minute_apart() -> None:
    assert K1.api_key[:8] == K2.api_key[:8]  # why neither shows only the first 8 characters
    assert K1.masked != K2.masked
    assert P1 != P2 and K2.api_key.startswith(P2) and len(P2) < len(K2.api_key)


def test_an_ack_parses_only_what_a_consumer_may_write() -> None:
    assert Ack.from_dict(Ack("bot-1", P1, 5.0).to_dict()) == Ack("bot-1", P1, 5.0)
    for bad in (
        {"consumer_id": "../x", "key_prefix": P1, "at": 1},
        {"consumer_id": "a", "key_prefix": "", "at": 1},
        {"consumer_id": "a", "key_prefix": P1, "at": True},
        "garbage",
    ):
        with pytest.raises(ValueError):
            Ack.from_dict(bad)


def test_default_consumer_id_is_a_valid_id() -> None:
    assert CONSUMER_ID.match(default_consumer_id())


def test_consumer_settings_parse_and_default(tmp_path: Path) -> None:
    base = {
        "name": "mm1",
        "signer": {"source": "env", "env": "K"},
        "path": "polymarket/mm1",
        "rotate_every": "1h",
        "grace": "15m",
    }
    cred = load_settings(None, data={"credentials": [base]}).credentials[0]
    assert (cred.min_grace, cred.consumer_ttl, cred.consumer_refresh) == (60.0, 600.0, None)
    cred = load_settings(
        None,
        data={"credentials": [{**base, "min_grace": "30s", "consumer_ttl": "5m", "consumer_refresh": "1m"}]},
    ).credentials[0]
    assert (cred.min_grace, cred.consumer_ttl, cred.consumer_refresh) == (30.0, 300.0, 60.0)
    with pytest.raises(ConfigError, match=r"credentials\[mm1\].*consumer_ttl must be positive"):
        load_settings(None, data={"credentials": [{**base, "consumer_ttl": 0}]})


# -- the credential source, over a real file store ----------------------------------------------


class Clock:
    """Monotonic and wall time under the test's control; sleeping runs a hook (another writer)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: list[Any] = []
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        if self.on_sleep:
            self.on_sleep.pop(0)()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "keys.enc", FILE_KEY)


def source_over(store: FileStore, clock: Clock, **kw: Any) -> CredentialSource:
    options: dict[str, Any] = {
        "credential": REF.name,
        "path": REF.path,
        "consumer_id": "bot-1",
        "refresh_every": 10.0,
        "ack_every": 60.0,
        "wait_for_new": 1.0,
        "poll_every": 0.1,
        "clock": clock,
        "monotonic": clock,
        "sleep": clock.sleep,
    }
    return CredentialSource(store, **{**options, **kw})


def test_get_caches_for_refresh_every_then_loads_and_acknowledges_the_new_key(store: FileStore) -> None:
    clock = Clock()
    store.publish(REF, K1)
    src = source_over(store, clock)
    loaded: list[str] = []
    src.subscribe(lambda k: loaded.append(k.api_key))
    assert src.get() == K1 and src.reads == 1
    assert store.acks(REF) == [Ack("bot-1", P1, 1000.0)]
    store.publish(REF, K2)
    clock.now += 9.9
    assert src.get() == K1 and src.reads == 1  # cached
    clock.now += 0.1
    assert src.get() == K2 and src.reads == 2
    assert loaded == [K1.api_key, K2.api_key]
    assert store.acks(REF) == [Ack("bot-1", P2, 1010.0)]  # at once, not after ack_every


def test_an_unchanged_key_is_acknowledged_again_after_ack_every_only(store: FileStore) -> None:
    clock = Clock()
    store.publish(REF, K1)
    src = source_over(store, clock, refresh_every=1.0, ack_every=5.0)
    src.get()
    for _ in range(4):
        clock.now += 1.0
        src.get()
    assert store.acks(REF) == [Ack("bot-1", P1, 1000.0)]
    clock.now += 1.0
    src.get()
    assert store.acks(REF) == [Ack("bot-1", P1, 1005.0)]


def test_a_read_only_consumer_never_acknowledges(store: FileStore) -> None:
    store.publish(REF, K1)
    src = source_over(store, Clock(), acknowledge=False)
    assert src.refresh() == K1
    assert store.acks(REF) == []


def test_refresh_after_a_refusal_waits_for_a_new_key_then_stops_waiting(store: FileStore) -> None:
    clock = Clock()
    store.publish(REF, K1)
    src = source_over(store, clock, poll_every=0.25)
    src.get()
    # A single-key CLOB refused K1: the worker publishes K2 a moment later (during our 3rd sleep).
    clock.on_sleep = [lambda: None, lambda: None, lambda: store.publish(REF, K2)]
    assert src.refresh(different_from=K1.api_key) == K2
    assert clock.sleeps == 3
    # Nothing new is coming: give up after wait_for_new and hand back what is published.
    clock.sleeps, reads = 0, src.reads
    assert src.refresh(different_from=K2.api_key) == K2
    assert clock.sleeps == 4 and src.reads - reads == 5
    # Another thread already moved past the refused key: no read at all.
    reads = src.reads
    assert src.refresh(different_from=K1.api_key) == K2 and src.reads == reads


def test_get_keeps_the_cached_key_when_the_store_fails_and_raises_when_it_has_none(
    store: FileStore, tmp_path: Path
) -> None:
    clock = Clock()
    with pytest.raises(NotFound, match="no key is published at 'polymarket/mm1'"):
        source_over(store, clock).get()
    store.publish(REF, K1)
    src = source_over(store, clock)
    assert src.get() == K1
    (tmp_path / "keys.enc").write_text("not a store")
    clock.now += 10.0
    assert src.get() == K1 and src.read_errors == 1
    with pytest.raises(Exception, match="not a rotator file store"):
        source_over(FileStore(tmp_path / "keys.enc", FILE_KEY), clock).get()


class AckRefusingStore(FileStore):
    """A store whose acknowledgement path the consumer's policy does not grant."""

    def ack(self, ref: CredentialRef, consumer_id: str, key_prefix: str, at: float) -> None:
        raise Unavailable("vault: acknowledge at secret/rotator-state/mm1/acks/bot-1: permission denied")


def test_a_failing_acknowledgement_never_reaches_the_bot(tmp_path: Path, caplog: Any) -> None:
    store = AckRefusingStore(tmp_path / "keys.enc", FILE_KEY)
    store.publish(REF, K1)
    src = source_over(store, Clock())
    assert src.get() == K1
    assert src.refresh() == K1
    warnings = [r for r in caplog.records if "could not acknowledge" in r.getMessage()]
    assert len(warnings) == 1  # once per failure streak, not once per refresh


def test_the_background_thread_refreshes_and_acknowledges(store: FileStore) -> None:
    store.publish(REF, K1)
    with CredentialSource(
        store, credential=REF.name, path=REF.path, consumer_id="bg", refresh_every=0.02
    ) as src:
        src.start()
        deadline = time.monotonic() + 5
        while src.current() != K1 and time.monotonic() < deadline:
            time.sleep(0.01)
        store.publish(REF, K2)
        while src.current() != K2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert src.current() == K2 and src.running
        while [a.key_prefix for a in store.acks(REF)] != [P2] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(a.consumer_id, a.key_prefix) for a in store.acks(REF)] == [("bg", P2)]
    assert not src.running


def test_bad_options_are_config_errors(store: FileStore) -> None:
    for bad in ({"consumer_id": "bot/1"}, {"consumer_id": ""}, {"refresh_every": 0}, {"wait_for_new": -1}):
        with pytest.raises(ConfigError):
            CredentialSource(store, credential="mm1", path="p", **bad)


def test_from_settings_builds_the_store_the_worker_uses(tmp_path: Path) -> None:
    file_key = generate_file_key()
    settings = {"backend": "file", "file": {"path": str(tmp_path / "k.enc"), "key_env": "BOT_FILE_KEY"}}
    env = {"BOT_FILE_KEY": file_key}
    worker = load_settings(None, data={"store": settings})
    from rotator.stores.factory import build_store

    build_store(worker, env).publish(REF, K1)
    with CredentialSource.from_settings(settings, credential="mm1", path=REF.path, env=env) as src:
        assert src.get() == K1
    with pytest.raises(ConfigError, match="BOT_FILE_KEY is not set"):
        CredentialSource.from_settings(settings, credential="mm1", path=REF.path, env={})
    with pytest.raises(ConfigError, match=r"^store\.backend: "):
        CredentialSource.from_settings({"backend": "s3"}, credential="mm1", path=REF.path, env=env)


def test_importing_the_library_loads_none_of_the_worker_dependencies() -> None:
    heavy = ("hvac", "boto3", "botocore", "pydantic", "py_clob_client", "prometheus_client", "apscheduler")
    code = f"import sys, rotator.consumer\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the client wrapper --------------------------------------------------------------------------


class Refused(Exception):
    """What py-clob-client raises for a 401, as far as the wrapper looks at it."""

    status_code = 401


class StandInClob:
    """The slice of ``ClobClient`` the wrapper touches: ``set_api_creds`` and authenticated calls."""

    def __init__(self, dead: set[str]) -> None:
        self.dead = dead
        self.creds: Any = None
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def set_api_creds(self, creds: Any) -> None:
        self.creds = creds

    def get_orders(self) -> list[str]:
        used = self.creds.api_key
        with self.lock:
            self.calls.append(used)
        if used in self.dead:
            raise Refused()
        return [used]

    def get_trades(self) -> None:
        raise RuntimeError("500")


def creds(k: Key) -> Any:
    return k  # the stand-in takes the key itself


def test_a_401_refreshes_once_reloads_and_retries_once(store: FileStore) -> None:
    store.publish(REF, K1)
    src = source_over(store, Clock())
    clob = StandInClob(dead=set())
    client = RotatingClient(clob, src, creds_factory=creds)
    assert client.get_orders() == [K1.api_key]
    clob.dead.add(K1.api_key)  # revoked behind the cache's back; K2 is published
    store.publish(REF, K2)
    assert client.get_orders() == [K2.api_key]
    assert clob.calls == [K1.api_key, K1.api_key, K2.api_key]
    assert (client.calls, client.retried, client.failed) == (2, 1, 0)
    assert client.key_prefix == K2.masked


def test_a_401_that_persists_is_retried_once_never_in_a_loop(store: FileStore) -> None:
    store.publish(REF, K1)
    clock = Clock()
    src = source_over(store, clock)
    clob = StandInClob(dead={K1.api_key})
    client = RotatingClient(clob, src, creds_factory=creds)
    with pytest.raises(Refused):
        client.get_orders()
    assert clob.calls == [K1.api_key, K1.api_key]
    assert (client.calls, client.retried, client.failed) == (1, 1, 1)
    with pytest.raises(RuntimeError, match="500"):
        client.get_trades()  # not a 401: no refresh, no retry
    assert (client.retried, client.failed) == (1, 2)


def test_threads_refused_together_share_one_refresh(store: FileStore) -> None:
    store.publish(REF, K1)
    src = CredentialSource(store, credential=REF.name, path=REF.path, consumer_id="bot-1")
    clob = StandInClob(dead=set())
    client = RotatingClient(clob, src, creds_factory=creds)
    client.get_orders()
    clob.dead.add(K1.api_key)
    store.publish(REF, K2)
    reads = src.reads
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def work() -> None:
        barrier.wait(5)
        results.append(client.get_orders())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [[K2.api_key]] * 8
    assert client.failed == 0 and client.retried <= 8
    assert src.reads - reads == 1  # the first refused thread read the store; the others reused it


def test_a_key_the_source_reads_is_in_the_client_before_it_is_acknowledged(store: FileStore) -> None:
    store.publish(REF, K1)
    src = source_over(store, Clock())
    seen: list[tuple[str, list[Ack]]] = []
    clob = StandInClob(dead=set())

    def set_creds(c: Any) -> None:
        seen.append((c.api_key, store.acks(REF)))
        clob.creds = c

    clob.set_api_creds = set_creds  # type: ignore[method-assign,assignment]
    RotatingClient(clob, src, creds_factory=creds)
    src.get()
    store.publish(REF, K2)
    src.refresh()
    assert seen[-1] == (K2.api_key, [Ack("bot-1", P1, 1000.0)])  # loaded while K1 was still acknowledged
    assert store.acks(REF) == [Ack("bot-1", P2, 1000.0)]


def test_is_invalid_key_recognises_the_sdks_401s() -> None:
    from py_clob_client.exceptions import PolyApiException

    refused = httpx.Response(401, json={"error": "Unauthorized/Invalid api key"})
    assert is_invalid_key(PolyApiException(refused))
    assert not is_invalid_key(PolyApiException(httpx.Response(400, json={"error": "bad"})))
    assert not is_invalid_key(PolyApiException(error_msg="Request exception!"))
    assert is_invalid_key(Unauthorized("401", status=401))
    request = httpx.Request("GET", "http://clob/data/orders")
    assert is_invalid_key(httpx.HTTPStatusError("401", request=request, response=refused))
    assert not is_invalid_key(RuntimeError("boom"))


# -- refusal reports (issue 18) ------------------------------------------------------------------


def test_a_401_on_the_published_key_is_reported_at_the_first_reread_then_rate_limited(
    store: FileStore,
) -> None:
    store.publish(REF, K1)
    clock = Clock()
    src = source_over(store, clock, report_every=5.0)
    clob = StandInClob(dead={K1.api_key})
    client = RotatingClient(clob, src, creds_factory=creds)
    seen: list[list[Ack]] = []
    # The report is in the store before the source waits for a new key: at its first sleep.
    clock.on_sleep = [lambda: seen.append(store.acks(REF))]
    with pytest.raises(Refused):
        client.get_orders()
    assert seen == [[Ack("bot-1", P1, 1000.0, 1000.0, 1)]]
    # A storm of 401s inside report_every: counted, not written.
    for _ in range(3):
        with pytest.raises(Refused):
            client.get_orders()
    assert src.reports == 1 and store.acks(REF)[0].refusals == 1
    # The next window's 401 writes one more report with the count so far and the first refusal's time.
    clock.now += 5.0
    with pytest.raises(Refused):
        client.get_orders()
    (report,) = store.acks(REF)
    assert (report.key_prefix, report.refused_at, report.refusals) == (P1, 1000.0, 5)
    assert src.reports == 2


def test_no_report_when_a_new_key_is_published_or_for_read_only_consumers(
    store: FileStore, tmp_path: Path
) -> None:
    store.publish(REF, K1)
    src = source_over(store, Clock())
    clob = StandInClob(dead={K1.api_key})
    client = RotatingClient(clob, src, creds_factory=creds)
    store.publish(REF, K2)  # the worker already replaced it: the 401 is the rotation, not news
    assert client.get_orders() == [K2.api_key]
    assert src.reports == 0 and all(not a.reported for a in store.acks(REF))
    quiet = source_over(
        FileStore(tmp_path / "keys.enc", FILE_KEY), Clock(), acknowledge=False, consumer_id="bot-2"
    )
    with pytest.raises(Refused):
        RotatingClient(StandInClob(dead={K2.api_key}), quiet, creds_factory=creds).get_orders()
    assert quiet.reports == 0 and "bot-2" not in {a.consumer_id for a in store.acks(REF)}


class ReportRefusingStore(FileStore):
    def report_refusal(self, *args: Any) -> None:
        raise Unavailable("file: report refused for the test")


def test_a_failing_report_never_breaks_the_request_and_a_plain_ack_keeps_the_report(
    tmp_path: Path, caplog: Any
) -> None:
    failing = ReportRefusingStore(tmp_path / "keys.enc", FILE_KEY)
    failing.publish(REF, K1)
    clock = Clock()
    src = source_over(failing, clock)
    clob = StandInClob(dead={K1.api_key})
    client = RotatingClient(clob, src, creds_factory=creds)
    with pytest.raises(Refused):  # the CLOB's own 401, not the store's error
        client.get_orders()
    assert src.report_errors == 1 and "could not report refused key" in caplog.text
    # Over a working store: an acknowledgement due later for the same key carries the report.
    store = FileStore(tmp_path / "keys.enc", FILE_KEY)
    src = source_over(store, clock, ack_every=1.0)
    client = RotatingClient(StandInClob(dead={K1.api_key}), src, creds_factory=creds)
    with pytest.raises(Refused):
        client.get_orders()
    clock.now += 2.0
    src.refresh()  # the periodic acknowledgement
    (report,) = store.acks(REF)
    assert report.reported and report.at == clock.now


def test_the_background_thread_writes_the_report_off_the_request_path(store: FileStore) -> None:
    store.publish(REF, K1)
    src = CredentialSource(
        store, credential=REF.name, path=REF.path, consumer_id="bot-1", wait_for_new=0.3, refresh_every=60
    )
    src.start()
    try:
        assert src.get() == K1
        request_thread_reports: list[int] = []
        real = store.report_refusal

        def spy(*args: Any) -> None:
            request_thread_reports.append(int(threading.current_thread() is threading.main_thread()))
            real(*args)

        store.report_refusal = spy  # type: ignore[method-assign]
        client = RotatingClient(StandInClob(dead={K1.api_key}), src, creds_factory=creds)
        with pytest.raises(Refused):
            client.get_orders()
        deadline = time.monotonic() + 5
        while src.reports == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert request_thread_reports == [0]
        assert [a.refusals for a in store.acks(REF)] == [1]
    finally:
        src.stop()


# -- issue 27: read-only and builder consumers -----------------------------------------------------------
def test_readonly_headers_are_the_key_and_its_wallet_and_only_for_a_readonly_key() -> None:
    from rotator.consumer import readonly_headers

    address = "0x" + "cd" * 20
    ro = Key("ro-id", Secret(""), Secret(""), address, 1, 1.0, "readonly")
    assert readonly_headers(ro) == {"POLY_READONLY_API_KEY": "ro-id", "POLY_ADDRESS": address}
    with pytest.raises(ValueError, match="read-only key"):
        readonly_headers(Key("t-id", Secret("s"), Secret("p"), address, 1, 1.0))


def test_follow_builder_keeps_the_client_on_the_published_builder_key() -> None:
    from rotator.consumer import builder_config, follow_builder
    from tests.memory_store import MemoryStore

    store = MemoryStore()
    ref = CredentialRef("b1", "pub/b1")
    first = Key("b-one", Secret("c2VjcmV0MQ=="), Secret("pass1"), "0xa", 1, 1.0, "builder")
    second = Key("b-two", Secret("c2VjcmV0Mg=="), Secret("pass2"), "0xa", 2, 2.0, "builder")
    store.publish(ref, first)

    class Client:
        builder_config: Any = None

    client = Client()
    source = CredentialSource(store, credential="b1", path="pub/b1", refresh_every=0.01, acknowledge=False)
    follow_builder(client, source)
    assert client.builder_config.local_builder_creds.key == "b-one"
    headers = client.builder_config.generate_builder_headers("GET", "/builder/trades").to_dict()
    assert headers["POLY_BUILDER_API_KEY"] == "b-one" and headers["POLY_BUILDER_PASSPHRASE"] == "pass1"
    store.publish(ref, second)
    source.refresh()
    assert client.builder_config.local_builder_creds.key == "b-two"
    lost = Key("b-lost", Secret(""), Secret(""), "0xa", 3, 3.0, "builder")
    with pytest.raises(ValueError, match="builder key with its secret"):
        builder_config(lost)
