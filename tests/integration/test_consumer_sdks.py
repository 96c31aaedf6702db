"""Issue 15 acceptance: bots on py-clob-client-v2 and polymarket-client (sync and async) never notice a
rotation, and a unified bot never ends on a key the worker does not manage.

The real packages over real HTTP against the sandbox CLOB, the worker's passes over a real store (a
file, OpenBao, moto), each bot with its own store connection, as in tests/integration/test_consumer.py
(whose rotation driver and stores this reuses).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from rotator.consumer import CredentialSource, connect
from rotator.sandbox import Sandbox, SandboxSettings
from rotator.sdk.unified import RotatingSecureClient
from tests.harness import SECRETS
from tests.integration.test_consumer import (
    ROTATE_EVERY,
    ROTATIONS,
    TICK,
    Backend,
    Credential,
    backend,
    file_store,
    new_wallet,
    run_rotations,
    unique,
)

__all__ = ["backend"]  # the store fixture, parametrised over file, vault and aws

pytestmark = pytest.mark.timeout(120)

SDKS = ("v2", "unified", "unified-async")


@pytest.fixture(autouse=True)
def cheap_tls_contexts(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A polymarket-client client opens ten httpx pools, and each parses certifi's CA bundle: about
    0.1 s of CPU each here, 1.2 s per client, per key, per bot (README). The sandbox is plain HTTP, so
    the tests point httpx at an empty CA directory (loaded lazily) instead, as a bot can with its
    system's ``SSL_CERT_DIR``: four unified bots through ten rotations fit on two shared cores."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # httpx prefers it to SSL_CERT_DIR
    monkeypatch.setenv("SSL_CERT_DIR", str(ca_dir))


def source_for(c: Credential, consumer_id: str, **options: Any) -> CredentialSource:
    return CredentialSource.from_settings(
        c.backend.store,
        credential=c.name,
        path=c.path,
        env=c.consumer_env,
        consumer_id=consumer_id,
        refresh_every=0.2,
        **options,
    )


@dataclass
class Bot:
    """One bot on one SDK: an authenticated heartbeat every 100 ms on its own thread (its own event loop
    for the async client)."""

    sdk: str
    source: CredentialSource
    client: Any
    ok: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Bot:
        self.source.subscribe(lambda k: self.keys.append(k.api_key))
        self.source.start()
        target = self._run_async if self.sdk == "unified-async" else self._run
        self.thread = threading.Thread(target=target, name=f"bot-{self.sdk}", daemon=True)
        self.thread.start()
        return self

    def _tick(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
            self.ok.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - every failure is a finding, kept for the assertion
            self.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    def _run(self) -> None:
        beat = {"id": ""}

        def v2() -> None:
            beat["id"] = self.client.post_heartbeat(beat["id"])["heartbeat_id"]

        def unified() -> None:
            beat["id"] = self.client.send_order_heartbeat(heartbeat_id=beat["id"]).heartbeat_id

        while not self.stop.wait(TICK):
            self._tick(v2 if self.sdk == "v2" else unified)
        if self.sdk == "unified":
            self.client.close()

    def _run_async(self) -> None:
        async def main() -> None:
            beat = ""
            while not self.stop.is_set():
                await asyncio.sleep(TICK)
                try:
                    beat = (await self.client.send_order_heartbeat(heartbeat_id=beat)).heartbeat_id
                    self.ok.append(time.monotonic())
                except Exception as exc:  # noqa: BLE001 - kept for the assertion
                    self.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            await self.client.aclose()

        asyncio.run(main())

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.source.close()

    @property
    def max_gap(self) -> float:
        return max((b - a for a, b in itertools.pairwise(self.ok)), default=0.0)


def make_bot(c: Credential, sdk: str) -> Bot:
    source = source_for(c, unique(sdk))
    return Bot(sdk, source, connect(source, c.sandbox.url, private_key=c.private_key, sdk=sdk))


# -- every SDK through ten rotations, on every store ------------------------------------------------


@pytest.mark.slow
def test_bots_on_every_sdk_ride_through_ten_rotations(backend: Backend, sandbox: Sandbox) -> None:
    """Multi-key CLOB: not one failed or retried request. Single-key CLOB: at most one retry per rotation,
    none failed. For v2, unified and unified-async bots side by side on each credential."""
    single_sandbox = Sandbox(SandboxSettings(auth_limit=0, single_key=True))
    single_sandbox.start()
    creds: list[Credential] = []
    bots: list[list[Bot]] = []
    try:
        for sb in (sandbox, single_sandbox):
            name = unique("mm")
            creds.append(Credential(backend, sb, *new_wallet(), name=name, path=f"polymarket/{name}"))
        for c in creds:
            assert c.rotate_once().rotated
            bots.append([make_bot(c, sdk).start() for sdk in SDKS])
        time.sleep(1.0)  # every bot past its first client before the first rotation
        outcomes: list[dict[str, Any]] = [{}, {}]
        workers = [
            threading.Thread(target=run_rotations, args=(c, o)) for c, o in zip(creds, outcomes, strict=True)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join(90)
        for bot in itertools.chain.from_iterable(bots):
            bot.finish()
    finally:
        for c in creds:
            c.close()
        SECRETS.update(single_sandbox.issued_secrets())
        single_sandbox.stop()

    for mode, group, outcome in zip(("multi-key", "single-key"), bots, outcomes, strict=True):
        assert outcome["rotations"] == ROTATIONS
        for bot in group:
            cl = bot.client
            print(  # shown with -rP
                f"{mode} {bot.sdk}: {len(bot.ok)} ok, {cl.calls} calls, {cl.retried} retried, "
                f"{cl.failed} failed, longest pause {bot.max_gap:.3f}s"
            )
            assert bot.errors == [] and cl.failed == 0, (mode, bot.sdk, bot.errors[:3])
            assert len(set(bot.keys)) == ROTATIONS + 1, (mode, bot.sdk)
            assert len(bot.ok) > ROTATIONS * ROTATE_EVERY / TICK / 2, (mode, bot.sdk)
            assert cl.retried <= (0 if mode == "multi-key" else ROTATIONS), (mode, bot.sdk)
            if bot.sdk != "v2":
                # One client per key, each closed once out of service; the SDK never fell back.
                assert cl.fallbacks_refused == 0
                assert cl.built == ROTATIONS + 1 and cl.closed == cl.built, (mode, bot.sdk)


@pytest.mark.parametrize("sdk", ["unified", "unified-async"])
def test_a_new_key_is_in_service_before_the_source_acknowledges_it(
    sdk: str, sandbox: Sandbox, tmp_path: Any
) -> None:
    """The worker revokes the old key once every live consumer acknowledged the new one: a bot that
    acknowledged a key it does not serve yet would be left on a revoked key (a 401 and a retry on a
    CLOB that keeps both keys). Every acknowledgement is watched as it is written."""
    name = unique("mm")
    c = Credential(file_store(tmp_path), sandbox, *new_wallet(), name=name, path=f"polymarket/{name}")
    try:
        c.rotate_once()
        bot = make_bot(c, sdk)
        acked: list[tuple[str, str | None]] = []  # (acknowledged key, key of the client in service)
        store = bot.source._store
        real_ack = store.ack

        def watched(ref: Any, consumer_id: str, key_prefix: str, at: float) -> None:
            slot = bot.client._slot
            acked.append((key_prefix, slot.key_id if slot is not None else None))
            real_ack(ref, consumer_id, key_prefix, at)

        store.ack = watched  # type: ignore[method-assign]
        bot.start()
        time.sleep(1.0)  # the first key in service
        c.rotate_once(force=True)
        time.sleep(1.5)  # the new key read, built, acknowledged, and a few calls on it
        bot.finish()
    finally:
        c.close()
    from rotator.model import ack_prefix

    assert bot.errors == [] and len(bot.ok) > 10, bot.errors[:3]
    assert len({a for a, _ in acked}) == 2, acked
    later = [(a, s) for a, s in acked if s is not None]
    assert later and all(s is not None and ack_prefix(s) == a for a, s in later), acked


# -- the silent fallback ------------------------------------------------------------------------------


def test_a_unified_bot_started_on_a_revoked_key_ends_on_the_published_key_not_a_nonce_0_one(
    sandbox: Sandbox, tmp_path: Any
) -> None:
    name = unique("mm")
    c = Credential(file_store(tmp_path), sandbox, *new_wallet(), name=name, path=f"polymarket/{name}")
    try:
        c.rotate_once()
        published = c.rt.store.read_published(c.rt.ref(c.cred))
        assert published is not None
        sandbox.invalidate(published.api_key)  # the key the bot will start with is dead at the CLOB
        before = {r.api_key for r in sandbox.keys(c.address)}
        sandbox.reset_counts()

        source = source_for(c, "revoked-start", wait_for_new=5.0)
        client = connect(source, sandbox.url, private_key=c.private_key, sdk="unified")
        assert isinstance(client, RotatingSecureClient)
        rotation = threading.Timer(0.5, lambda: c.rotate_once(force=True))
        rotation.start()
        try:
            beat = client.send_order_heartbeat()  # 401 on the dead key, re-read, one retry on the new one
        finally:
            rotation.join(30)
        assert beat.heartbeat_id
        fresh = c.rt.store.read_published(c.rt.ref(c.cred))
        assert fresh is not None and fresh.api_key != published.api_key
        assert client.credentials.key == fresh.api_key  # on the published key
        assert (client.calls, client.retried, client.failed, client.fallbacks_refused) == (1, 1, 0, 0)
        # The only key made since is the worker's one: none created or derived by the bot.
        made = {r.api_key: r.nonce for r in sandbox.keys(c.address) if r.api_key not in before}
        assert made == {fresh.api_key: fresh.nonce}
        counts = sandbox.request_counts()
        assert sum(n for (m, p, _), n in counts.items() if (m, p) == ("POST", "/auth/api-key")) == 1
        # One derive, the worker's: its old key answered 401 after the promotion, and a 401 counts as
        # invalidated only once derive finds no key at its nonce (issue 22 item 4). The bot derives none.
        assert sum(n for (_, p, _), n in counts.items() if p == "/auth/derive-api-key") == 1
        assert not any(p == "/auth/api-keys" for _, p, _ in counts)  # not even the SDK's key check
        client.close()
        source.close()
    finally:
        c.close()


def test_the_sdk_alone_falls_back_to_a_nonce_0_key_which_is_why_the_wrapper_exists(
    fresh_sandbox: Sandbox,
) -> None:
    """The hazard the wrapper prevents, shown with the SDK's public create() on the same sandbox."""
    from polymarket import ApiKeyCreds, SecureClient
    from py_clob_client.client import ClobClient

    from rotator.consumer import local_environment

    private_key, address = new_wallet()
    SECRETS.update((private_key, private_key.removeprefix("0x")))
    creds = ClobClient(fresh_sandbox.url, chain_id=137, key=private_key).create_api_key(nonce=3)
    fresh_sandbox.invalidate(creds.api_key)
    with SecureClient.create(
        private_key=private_key,
        wallet=address,
        environment=local_environment(fresh_sandbox.url),
        credentials=ApiKeyCreds(key=creds.api_key, secret=creds.api_secret, passphrase=creds.api_passphrase),
    ) as client:
        assert client.credentials.key != creds.api_key
        minted = [r for r in fresh_sandbox.keys(address) if r.api_key == client.credentials.key]
        assert [r.nonce for r in minted] == [0]
    SECRETS.update(fresh_sandbox.issued_secrets())
    for r in fresh_sandbox.keys(address):  # no key of this test outlives it (I3 check)
        fresh_sandbox.invalidate(r.api_key)


# -- 16 threads on one wrapped client ------------------------------------------------------------------


class InstrumentedClient(RotatingSecureClient):
    """Records every client it closes: a call that starts or ends on a closed client is a violation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Closed clients by id, the clients themselves kept: an id is unique only while its object
        # lives, and a new client could otherwise be built where a closed one was freed.
        self.closed_clients: dict[int, Any] = {}
        self.violations: list[str] = []

    def _close(self, slot: Any) -> None:
        self.closed_clients[id(slot.client)] = slot.client
        super()._close(slot)

    def checked(self, fn: Callable[[Any], Any]) -> Any:
        def run(client: Any) -> Any:
            if id(client) in self.closed_clients:
                self.violations.append("started on a closed client")
            out = fn(client)
            if id(client) in self.closed_clients:
                self.violations.append("ended on a closed client")
            return out

        return self.call(run)


THREADS = 16


@pytest.mark.slow
def test_sixteen_threads_share_one_unified_client_through_rotations(tmp_path: Any) -> None:
    single = Sandbox(SandboxSettings(auth_limit=0, single_key=True))
    single.start()
    name = unique("mm")
    c = Credential(file_store(tmp_path), single, *new_wallet(), name=name, path=f"polymarket/{name}")
    source = source_for(c, "threads")
    try:
        c.rotate_once()
        client = InstrumentedClient(source, host=single.url, private_key=c.private_key)
        source.start()
        stop = threading.Event()
        errors: list[str] = []
        done = [0] * THREADS

        def work(i: int) -> None:
            while not stop.wait(TICK):
                try:
                    client.checked(lambda cl: cl.send_order_heartbeat())
                    done[i] += 1
                except Exception as exc:  # noqa: BLE001 - kept for the assertion
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
        for t in threads:
            t.start()
        outcome: dict[str, Any] = {}
        run_rotations(c, outcome)
        stop.set()
        for t in threads:
            t.join(10)
        client.close()
        print(f"{THREADS} threads: {sum(done)} ok, {client.retried} retried, {client.built} clients")
        assert outcome["rotations"] == ROTATIONS
        assert errors == [] and client.failed == 0, errors[:3]
        assert client.violations == []
        assert min(done) > 0
        assert client.built == ROTATIONS + 1 and client.closed == client.built
    finally:
        source.close()
        c.close()
        SECRETS.update(single.issued_secrets())
        single.stop()


# -- the example bots ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("example", ["bot_v2.py", "bot_unified.py"])
def test_the_example_bots_ride_through_cli_rotations(
    example: str, sandbox: Sandbox, tmp_path: Any, wallet: tuple[str, str]
) -> None:
    import json
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.harness import OUTPUTS, Worker

    root = Path(__file__).resolve().parents[2]
    w = Worker(
        tmp_path, sandbox.url, *wallet, rotate_every="1h", grace="3s", cred_extra={"min_grace": "0.5s"}
    )
    w.rotate()
    env = {**w.env(), "BOT_WALLET_KEY": w.private_key, "SSL_CERT_DIR": str(tmp_path)}
    env.pop("SSL_CERT_FILE", None)
    args = ["-c", str(w.config_path), "--credential", w.name, "--every", "0.1", "--refresh", "0.2"]
    bot = subprocess.Popen(
        [sys.executable, str(root / "examples" / example), *args, "--consumer-id", "example"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(a.consumer_id == "example" for a in w.store().acks(w.ref)):
            assert time.monotonic() < deadline and bot.poll() is None, "the bot never acknowledged"
            time.sleep(0.1)
        from rotator.model import ack_prefix

        for _ in range(3):
            w.rotate("--force")
            # Each new key in service (acknowledged) before the next: a loaded machine may take a
            # while to build a unified client, and a key skipped is not what this test is about.
            current = w.state().current
            assert current is not None
            deadline = time.monotonic() + 30
            while not any(
                a.consumer_id == "example" and a.key_prefix == ack_prefix(current.api_key)
                for a in w.store().acks(w.ref)
            ):
                assert time.monotonic() < deadline and bot.poll() is None, "the bot never took the new key"
                time.sleep(0.1)
            time.sleep(0.5)  # a few requests on it
    finally:
        bot.send_signal(signal.SIGTERM)
        out, err = bot.communicate(timeout=30)
        OUTPUTS.extend((out, err))
    assert bot.returncode == 0, (out, err)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["errors"] == [] and summary["requests"] > 20
    assert len(summary["keys"]) == 4, (summary, err[-3000:])
    assert summary.get("fallbacks_refused", 0) == 0
