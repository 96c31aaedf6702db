"""Issue 27 over real processes: a read-only and a builder credential rotate beside their trading
credential on every store, their consumers never see a failed request, crashes between the steps
leave no orphan, and the wallet audit finds unmanaged keys of every kind.

The reader is what a dashboard does with a read-only key: ``GET /data/orders`` with the headers of
:func:`rotator.consumer.readonly_headers`, the key taken from a :class:`CredentialSource` of the
read-only credential. The builder client is py-clob-client's own ``ClobClient.get_builder_trades``
(builder headers signed by py-builder-signing-sdk), its ``builder_config`` kept on the published key
by :func:`rotator.consumer.follow_builder`; the relayer client is py-builder-relayer-client's
``RelayClient.execute`` (a Safe transaction to the sandbox's relayer routes), kept on it the same way.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator.consumer import CredentialSource, follow_builder, readonly_headers
from rotator.model import CredentialRef, CredentialState, Key
from rotator.model import mask as mask_of
from rotator.sandbox import Sandbox
from tests.harness import SECRETS, log_events, wait_for
from tests.integration.day2_support import BACKENDS, StoreWorker, store_worker

GRACE = "1s"


@dataclass
class KindsWorker(StoreWorker):
    """A trading credential and, on its wallet, a read-only and a builder credential (``via`` it)."""

    kinds_extra: dict[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = ("readonly", "builder")

    @property
    def ro(self) -> CredentialRef:
        return CredentialRef(f"{self.name}-ro", f"polymarket/{self.name}-ro")

    @property
    def builder(self) -> CredentialRef:
        return CredentialRef(f"{self.name}-b", f"polymarket/{self.name}-b")

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        for ref, kind in ((self.ro, "readonly"), (self.builder, "builder")):
            if kind not in self.kinds:
                continue
            cfg["credentials"].append(
                {
                    "name": ref.name,
                    "kind": kind,
                    "via": self.name,
                    "path": ref.path,
                    "rotate_every": "1h",
                    "grace": GRACE,
                    **self.kinds_extra,
                }
            )
        return cfg

    def load(self, ref: CredentialRef) -> CredentialState:
        store = self.store()
        try:
            return store.load(ref).state
        finally:
            store.close()

    def source(self, ref: CredentialRef, **kw: Any) -> CredentialSource:
        return CredentialSource(self.store(), credential=ref.name, path=ref.path, refresh_every=0.2, **kw)


def kinds_worker(
    request: pytest.FixtureRequest, backend: str, tmp: Path, sb: Sandbox, wallet: tuple[str, str], **kw: Any
) -> KindsWorker:
    kinds = {k: kw.pop(k) for k in ("kinds",) if k in kw}
    base = store_worker(request, backend, tmp, sb, wallet, grace=GRACE, **kw)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    from tests.harness import WORKERS

    WORKERS.remove(base)
    return KindsWorker(**fields, **kinds)


def _remember(key: Key) -> None:
    for secret in (key.api_secret.reveal(), key.api_passphrase.reveal()):
        if secret:
            SECRETS.add(secret)


CONSUMERS = ("readonly", "builder", "relayer")


@dataclass
class Consumers:
    """A reader of the read-only key, a builder client and a relayer client, each one request every
    100 ms."""

    sb: Sandbox
    w: KindsWorker
    failures: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONSUMERS, 0))
    used: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in CONSUMERS})
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.threads = [
            threading.Thread(target=self._reader, daemon=True),
            threading.Thread(target=self._builder, daemon=True),
            threading.Thread(target=self._relayer, daemon=True),
        ]

    def __enter__(self) -> Consumers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _reader(self) -> None:
        with (
            self.w.source(self.w.ro, acknowledge=False) as source,
            httpx.Client(base_url=self.sb.url) as http,
        ):
            source.start()
            while not self.stop.wait(0.1):
                key = source.get()
                self.used["readonly"].add(key.api_key)
                resp = http.get("/data/orders", headers=readonly_headers(key))
                self.requests["readonly"] += 1
                if resp.status_code != 200:
                    self.failures.append(f"reader: {resp.status_code} with {key.masked}")

    def _builder(self) -> None:
        from py_clob_client.client import ClobClient
        from py_clob_client.exceptions import PolyApiException

        with self.w.source(self.w.builder, acknowledge=False) as source:
            source.start()
            client = ClobClient(self.sb.url, chain_id=137)
            source.subscribe(_remember)
            follow_builder(client, source)
            while not self.stop.wait(0.1):
                self.used["builder"].add(client.builder_config.local_builder_creds.key)
                try:
                    client.get_builder_trades()
                except PolyApiException as exc:
                    self.failures.append(f"builder client: {exc.status_code}")
                self.requests["builder"] += 1

    def _relayer(self) -> None:
        """py-builder-relayer-client's RelayClient submitting a Safe transaction (signed by the
        wallet, authenticated by the builder key's headers), its BuilderConfig kept on the published
        builder key by follow_builder as the builder client's is."""
        from py_builder_relayer_client.client import RelayClient
        from py_builder_relayer_client.exceptions import RelayerApiException
        from py_builder_relayer_client.models import Transaction

        usdc = "0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174"
        with self.w.source(self.w.builder, acknowledge=False) as source:
            source.start()
            relay = RelayClient(self.sb.url, 137, self.w.private_key)
            follow_builder(relay, source)
            while not self.stop.wait(0.1):
                self.used["relayer"].add(relay.builder_config.local_builder_creds.key)
                try:
                    relay.execute([Transaction(to=usdc, data="0x", value="0")], "rotator test")
                except RelayerApiException as exc:
                    self.failures.append(f"relayer client: {exc.status_code}")
                self.requests["relayer"] += 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_readonly_and_builder_keys_rotate_beside_their_trading_key_and_no_request_fails(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], backend: str
) -> None:
    w = kinds_worker(request, backend, tmp_path, sandbox, wallet)
    first = w.rotate()  # one run bootstraps all three: the others wait for their via's pass
    for ref in (w.name, w.ro.name, w.builder.name):
        assert f"{ref}: rotated" in first.stdout, first.stdout
    address = wallet[1]
    with Consumers(sandbox, w) as consumers:
        for _ in range(5):
            time.sleep(1.1)  # the retiring keys' grace ends: this run revokes them
            w.rotate("--force")
        time.sleep(0.5)
    assert consumers.failures == []
    assert min(consumers.requests.values()) >= 40, consumers.requests
    # Every consumer followed the rotations (a key that never changed would prove nothing).
    assert all(len(consumers.used[c]) >= 5 for c in CONSUMERS), {c: len(k) for c, k in consumers.used.items()}
    # The relayer accepted the submissions under each of those builder keys (the session's sandbox
    # counts other tests' too: these keys only).
    relayed = {k: n for k, n in sandbox.relayed().items() if k in consumers.used["relayer"]}
    assert set(relayed) == consumers.used["relayer"] and sum(relayed.values()) >= 40, relayed

    for ref, live, kind in (
        (w.ro, sandbox.live_readonly(address), "readonly"),
        (w.builder, sandbox.live_builder(address), "builder"),
    ):
        state = w.load(ref)
        assert state.kind == kind and state.rotations == 6 and state.pending is None
        assert state.current is not None and state.current.kind == kind
        held = {state.current.api_key} | {r.key.api_key for r in state.retiring}
        assert len(state.retiring) <= 1  # the last run's retiring key, within its grace
        assert set(live) == held, (kind, live, held)
        published = w.store().read_published(ref)
        assert published is not None and published.api_key == state.current.api_key
        assert [h.reason for h in state.history][-1:] == ["forced"]
    # The builder keys were revoked with their own builder headers, as clob-client does.
    assert {r.revoked_by for r in sandbox.builder_keys(address) if not r.live} == {"delete"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["readonly", "builder"])
@pytest.mark.parametrize(
    "step",
    [
        ("POST", "/auth/{kind}", "before"),  # intent recorded, create not sent
        ("POST", "/auth/{kind}", "after"),  # create answered, answer not recorded (the lost answer)
        ("GET", "{verify}", "before"),  # key recorded in the intent, not verified
        ("GET", "{verify}", "after"),  # verified, not yet published
        ("DELETE", "/auth/{kind}", "before"),  # new key published, old one about to be revoked
        ("DELETE", "/auth/{kind}", "after"),  # old key revoked, not recorded
    ],
    ids=["before-create", "after-create", "before-verify", "after-verify", "before-revoke", "after-revoke"],
)
def test_a_sigkill_between_any_two_steps_leaves_no_orphan(
    request: pytest.FixtureRequest,
    fresh_sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
    kind: str,
    step: tuple[str, str, str],
) -> None:
    sb = fresh_sandbox
    w = kinds_worker(request, "file", tmp_path, sb, wallet, kinds=(kind,))
    ref = w.ro if kind == "readonly" else w.builder
    w.rotate()
    forced = w.run("rotate", "--credential", ref.name, "--force")  # a retiring key, due after grace
    assert forced.returncode == 0, forced.stdout + forced.stderr
    time.sleep(1.1)
    route = {"readonly": "readonly-api-key", "builder": "builder-api-key"}[kind]
    verify = {"readonly": "/data/orders", "builder": "/builder/trades"}[kind]
    method, path, phase = step
    path = path.format(kind=route, verify=verify)
    if phase == "after" and method == "POST":
        # A key of the same kind made by hand moments before the intent: listed beside the lost
        # answer's key, inside its time window. The intent's snapshot is what tells them apart.
        trading = w.load(CredentialRef(w.name, "")).current
        assert trading is not None
        w.foreign.add(_by_hand(sb, wallet[0], trading, kind))
    hold = sb.hold(method, path, phase)  # type: ignore[arg-type]
    proc = w.start("rotate", "--credential", ref.name, "--force")
    assert hold.reached.wait(30), f"the pass never reached {method} {path}"
    w.kill(proc)
    hold.release()

    code, out, err = w.finish(w.start("rotate", "--credential", ref.name))
    assert code == 0, out + err
    state = w.load(ref)
    assert state.pending is None and state.current is not None
    live = set(sb.live_readonly(wallet[1]) if kind == "readonly" else sb.live_builder(wallet[1]))
    held = {state.current.api_key} | {r.key.api_key for r in state.retiring}
    assert live - w.foreign <= held, f"orphans: {live - held - w.foreign}"
    assert not w.foreign & held  # the hand-made key was never taken for the intent's
    published = w.store().read_published(ref)
    assert published is not None and published.api_key == state.current.api_key
    assert state.current.api_key in live
    if phase == "after" and method == "POST":
        # The lost answer's key is found again by listing, never made twice blind. A read-only key
        # is whole in the listing: it is published. A builder key's secret went with the answer: it
        # is kept retiring as lost-secret (reported, for a person to revoke in the web UI) and
        # another is made.
        [found] = log_events(err, step="create", outcome="recovered" if kind == "readonly" else "lost-secret")
        if kind == "builder":
            [lost] = [r for r in state.retiring if r.key.lost]
            assert lost.key.api_key in live and mask_of(lost.key.api_key) in found["keys"]
            assert state.current.api_key != lost.key.api_key


def test_unmanaged_keys_of_every_kind_are_audited_and_readonly_ones_reaped(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = kinds_worker(request, "file", tmp_path, sandbox, wallet)
    w.rotate()
    trading = w.load(CredentialRef(w.name, ""))
    assert trading.current is not None
    by_hand_ro = _by_hand(sandbox, wallet[0], trading.current, "readonly")
    by_hand_b = _by_hand(sandbox, wallet[0], trading.current, "builder")
    w.foreign.add(by_hand_b)  # the test's own: the worker reports it, it cannot revoke it

    dry = w.run("reap", "--credential", w.name)  # audits the wallet (every kind's list), revokes nothing
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert by_hand_ro in sandbox.live_readonly(wallet[1])
    status = w.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    [row] = [r for r in json.loads(status.stdout) if r["credential"] == w.name]
    kinds = {u["key"]: u["kind"] for u in row["audit"]["unmanaged"]}
    assert kinds == {mask_of(by_hand_ro): "readonly", mask_of(by_hand_b): "builder"}
    text = w.run("status").stdout
    assert "kind=readonly" in text and "kind=builder" in text, text
    assert f"readonly key, managed with the key of trading credential {w.name}" in text, text
    rows = {r["credential"]: r for r in json.loads(status.stdout)}
    assert (rows[w.ro.name]["kind"], rows[w.ro.name]["via"]) == ("readonly", w.name)
    assert (rows[w.builder.name]["kind"], rows[w.name]["kind"], rows[w.name]["via"]) == (
        "builder",
        "trading",
        None,
    )

    done = w.run("reap", "--credential", w.name, "--execute")
    assert done.returncode == 0, done.stdout + done.stderr
    assert by_hand_ro not in sandbox.live_readonly(wallet[1])
    assert by_hand_b in sandbox.live_builder(wallet[1])  # reported, never revoked by reap
    assert "unreachable=1" in done.stdout, done.stdout
    assert "a builder key is revoked only with its own secret" in done.stdout, done.stdout
    wrong = w.run("reap", "--credential", w.ro.name)
    assert wrong.returncode == 2 and f"reap --credential {w.name}" in wrong.stderr, wrong.stderr
    # the managed keys of every kind are untouched
    for ref in (w.ro, w.builder):
        cur = w.load(ref).current
        assert cur is not None
        assert cur.api_key in sandbox.live_readonly(wallet[1]) + sandbox.live_builder(wallet[1])


def _by_hand(sb: Sandbox, private_key: str, trading: Key, kind: str) -> str:
    """A key of ``kind`` made on the wallet by hand with py-clob-client-v2, as a person would."""
    from py_clob_client_v2.client import ClobClient
    from py_clob_client_v2.clob_types import ApiCreds

    creds = ApiCreds(trading.api_key, trading.api_secret.reveal(), trading.api_passphrase.reveal())
    client = ClobClient(sb.url, chain_id=137, key=private_key, creds=creds)
    if kind == "readonly":
        return str(client.create_readonly_api_key()["apiKey"])
    made = client.create_builder_api_key()
    SECRETS.update((made["secret"], made["passphrase"]))
    return str(made["key"])


def test_the_daemon_starts_readonly_and_builder_credentials_after_their_via(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    # A first start on an empty store: the trading credential's first pass issues the key the other
    # two are made with, and theirs follow it instead of failing on "no key yet".
    w = kinds_worker(request, "file", tmp_path, sandbox, wallet)
    w.daemon = {"tick": "1s", "jitter": "0s"}
    w.write_config()
    proc = w.start("run")
    try:
        wait_for(lambda: all(w.load(r).current is not None for r in (w.ro, w.builder)), timeout=30)
    finally:
        proc.terminate()
        code, _out, err = w.finish(proc)
    assert code == 0, err[-3000:]
    assert not log_events(err, step="via"), err[-3000:]
    assert len(sandbox.live_readonly(wallet[1])) == 1 and len(sandbox.live_builder(wallet[1])) == 1


def test_a_readonly_key_left_on_a_wallet_its_via_moved_from_is_never_taken_for_gone(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    # The trading credential moves to another wallet (its signer changed). The read-only key left on
    # the old wallet cannot be revoked with the new wallet's key, and its absence from the new
    # wallet's list proves nothing: it stays retiring, live, reported, never recorded as revoked.
    from eth_account import Account

    w = kinds_worker(request, "file", tmp_path, sandbox, wallet, kinds=("readonly",))
    w.rotate()
    forced = w.run("rotate", "--credential", w.ro.name, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    old = w.load(w.ro)
    [left] = old.retiring
    other = Account.create()
    SECRETS.update((other.key.hex(), other.key.hex().removeprefix("0x")))
    w.private_key, w.address = other.key.hex(), other.address
    w.foreign.update(sandbox.live_keys(wallet[1]))  # the old wallet's trading keys: not judged here
    moved = w.run("rotate", "--credential", w.name, "--force")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    time.sleep(max(0.0, left.revoke_after - time.time()) + 0.1)
    proc = w.run("rotate", "--credential", w.ro.name)
    state = w.load(w.ro)
    assert left.key.api_key in {r.key.api_key for r in state.retiring}, proc.stdout + proc.stderr
    assert left.key.api_key in sandbox.live_readonly(wallet[1])
    assert not log_events(proc.stderr, step="revoke", outcome="already-gone"), proc.stderr
    assert left.key.api_key not in {h.key_id for h in state.history if hasattr(h, "key_id")}
    w.foreign.update(sandbox.live_readonly(wallet[1]))  # the old wallet's: left for a person


def test_retiring_a_via_before_the_credentials_it_manages_is_refused(
    request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = kinds_worker(request, "file", tmp_path, sandbox, wallet)
    w.rotate()
    # All three leave the config (a placeholder stays: a config lists at least one credential).
    cfg = w.config()
    cfg["credentials"] = [dict(cfg["credentials"][0], name="placeholder", path="polymarket/placeholder")]
    w.config_path.write_text(yaml.safe_dump(cfg))
    refused = w.run("retire", "--credential", w.name)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"its key manages {w.ro.name}, {w.builder.name}" in refused.stderr or (
        f"its key manages {w.builder.name}, {w.ro.name}" in refused.stderr
    ), refused.stderr
    assert w.load(CredentialRef(w.name, "")).current is not None  # nothing was revoked
    for ref in (w.ro, w.builder, CredentialRef(w.name, "")):  # the right order
        done = w.run("retire", "--credential", ref.name)
        assert done.returncode == 0, done.stdout + done.stderr
    assert sandbox.live_readonly(wallet[1]) == [] and sandbox.live_builder(wallet[1]) == []
    assert sandbox.live_keys(wallet[1]) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("deadline", "late", "found"),
    # Either side of the default window (130 s), past the clocks' slack (KEY_CLOCK_SLACK, 300 s).
    [("300s", 500.0, True), ("20s", 400.0, False)],
    ids=["inside-a-long-deadline", "outside-a-short-deadline"],
)
def test_retire_finds_an_intents_key_within_the_configured_create_window_only(
    request: pytest.FixtureRequest,
    fresh_sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
    deadline: str,
    late: float,
    found: bool,
) -> None:
    """``retire`` looks for a crashed intent's read-only key among the keys made within the config's
    create window (clob.retry.deadline + clob.timeout) of the intent, as a rotation pass does: one
    made later than a create could have been answered is somebody else's and is left alone; one made
    within a deadline longer than the default is the intent's and is revoked."""
    sb = fresh_sandbox
    w = kinds_worker(request, "file", tmp_path, sb, wallet, kinds=("readonly",))
    cfg = w.config()
    cfg["clob"]["retry"]["deadline"] = deadline  # clob.timeout stays 10 s
    w.config_path.write_text(yaml.safe_dump(cfg))
    w.rotate()
    hold = sb.hold("POST", "/auth/readonly-api-key", "after")
    proc = w.start("rotate", "--credential", w.ro.name, "--force")
    assert hold.reached.wait(30), "the pass never reached its create"
    w.kill(proc)  # the create was answered; the answer is lost with the process
    hold.release()
    store = w.store()
    try:
        snap = store.load(w.ro)
        pending = snap.state.pending
        assert pending is not None and pending.key is None
        [made] = set(sb.live_readonly(wallet[1])) - {snap.state.current.api_key if snap.state.current else ""}
        # The intent was recorded ``late`` seconds before its key was made.
        earlier = replace(pending, started_at=pending.started_at - late)
        store.save(w.ro, replace(snap.state, pending=earlier), snap.version)
    finally:
        store.close()

    done = w.run("retire", "--credential", w.ro.name, "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    live = sb.live_readonly(wallet[1])
    if found:
        assert live == [], live  # the current key and the intent's, both revoked
        assert f"pending nonce={pending.nonce} key={mask_of(made)}" in done.stdout, done.stdout
    else:
        # Not the intent's as far as the clocks can tell: left for the audit.
        assert live == [made], (live, done.stdout)
        assert "pending" not in done.stdout, done.stdout
        w.foreign.add(made)
