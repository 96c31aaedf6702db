"""Issue 18 acceptance: a key refused in production is replaced within a tick, without probing for it.

Everything is real: the daemon (``rotator run``, a subprocess, ``probe_every`` 10 minutes), the
sandbox CLOB over HTTP, bots made of ``rotator.consumer`` over py-clob-client, and the stores (the
file store here; Vault with the shipped consumer policy and AWS on moto below). The daemon's probes
are the only requests to the probe endpoint (``GET /balance-allowance``): the bots call others.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from rotator.config import AwsStoreSettings, VaultSettings
from rotator.consumer import CredentialSource, RotatingClient
from rotator.errors import AccessDenied
from rotator.model import CredentialRef, Key, Secret, ack_prefix
from rotator.sandbox import Sandbox
from rotator.stores.aws import AwsStore, make_client
from rotator.stores.vault import build_vault_store
from tests.harness import OUTPUTS, Worker, log_events, wait_for
from tests.integration.test_vault_store import DEPLOY, POLICY_CREDENTIAL, make_token

pytestmark = pytest.mark.timeout(120)

PROBE = ("GET", "/balance-allowance")
TICK = 5.0  # the daemon's default


def daemon_worker(tmp_path: Path, sb: Sandbox, wallet: tuple[str, str]) -> Worker:
    return Worker(
        tmp_path,
        sb.url,
        *wallet,
        rotate_every="24h",
        grace="1h",
        extra={"daemon": {"tick": f"{TICK:g}s", "jitter": "0.2s", "probe_every": "10m"}},
    )


def consumer(w: Worker, consumer_id: str, **options: Any) -> CredentialSource:
    store = {"backend": "file", "file": {"path": str(w.tmp / "keys.enc"), "key_env": "TEST_FILE_KEY"}}
    return CredentialSource.from_settings(
        store,
        credential=w.name,
        path=w.ref.path,
        env={"TEST_FILE_KEY": w.file_key},
        consumer_id=consumer_id,
        **{"refresh_every": 1.0, "wait_for_new": 1.0, **options},
    )


class Bot:
    """A request every 100 ms through ``RotatingClient`` on its own thread; when each one failed."""

    def __init__(self, source: CredentialSource, url: str, private_key: str) -> None:
        self.source = source.start()
        self.client = RotatingClient.connect(url, source, private_key=private_key)
        self.ok: list[float] = []
        self.failed: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.client.get_orders()
                self.ok.append(time.monotonic())
            except Exception:  # noqa: BLE001 - every failure is counted for the assertion
                self.failed.append(time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.source.close()


def probes(sb: Sandbox, status: int) -> int:
    return sb.request_counts()[(*PROBE, status)]


def finish(w: Worker, proc: Any) -> str:
    proc.terminate()
    code, out, err = w.finish(proc)
    assert code == 0, err[-2000:]
    return out + err


@pytest.mark.slow
def test_a_key_deleted_behind_the_workers_back_is_replaced_within_a_tick_on_a_bots_report(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = fresh_sandbox
    w = daemon_worker(tmp_path, sb, wallet)
    proc = w.start("run")
    bot = None
    try:
        wait_for(lambda: w.published() is not None, timeout=30)
        first = w.published()
        assert first is not None
        bot = Bot(consumer(w, "bot-1"), sb.url, wallet[0])
        wait_for(lambda: len(bot.ok) >= 20, timeout=20)
        sb.reset_counts()
        killed_at = time.monotonic()
        sb.invalidate(first.api_key)  # behind the worker's back
        wait_for(lambda: (p := w.published()) is not None and p.api_key != first.api_key, timeout=30)
        wait_for(lambda: bot.ok[-1] > killed_at + 0.5, timeout=15)
        # The bot's requests fail from the deletion until the new key: under a tick plus one rotation.
        # The bot saw its key refused (and reported it). A request whose one retry found the new key
        # already published does not fail at all, so the bot may have no failure to show.
        assert sb.request_counts()[("GET", "/data/orders", 401)] >= 1, "the bot never saw its key refused"
        failing = [t for t in bot.failed if t >= killed_at]
        recovered = next(t for t in bot.ok if t > (failing[-1] if failing else killed_at))
        assert recovered - killed_at < TICK + 5.0, recovered - killed_at
        # The worker spent no scheduled probe on the dead key: one probe on the report (401), and the
        # rotation's own two (the new key's verification, the old key's check after promotion).
        assert probes(sb, 401) == 2, sb.request_counts()
        assert bot.source.reports >= 1
    finally:
        if bot is not None:
            bot.close()
        out = finish(w, proc)
    assert len(log_events(out, step="probe", outcome="rejected", trigger="consumer-report")) == 1
    assert [e["reason"] for e in log_events(out, step="intent")] == ["bootstrap", "rejected"]
    assert w.state().rotations == 2


@pytest.mark.slow
def test_a_bot_whose_own_clock_is_off_gets_one_probe_and_no_rotation(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = fresh_sandbox
    # The CLOB's clock is 5 minutes ahead of this machine's: the worker signs with server time
    # (clob.clock_skew.mode correct), py-clob-client signs with the local clock, so every request the
    # bot makes is refused for its timestamp while the key itself is fine.
    sb.configure(clock_offset=300.0)
    w = daemon_worker(tmp_path, sb, wallet)
    proc = w.start("run")
    bot = None
    try:
        wait_for(lambda: w.published() is not None, timeout=30)
        key = w.published()
        assert key is not None
        sb.reset_counts()
        bot = Bot(consumer(w, "bot-skewed", report_every=2.0), sb.url, wallet[0])
        wait_for(lambda: bot.source.reports >= 3, timeout=30)  # reports after the worker's answer
        time.sleep(TICK + 1)  # at least one more pass over those later reports
        assert bot.ok == [] and bot.failed
        assert probes(sb, 200) == 1 and probes(sb, 401) == 0, sb.request_counts()
        assert w.published() == key
    finally:
        if bot is not None:
            bot.close()
        out = finish(w, proc)
    assert out.count("but the CLOB accepts it") == 1  # the same refusal, counted on: no news
    assert w.state().rotations == 1


@pytest.mark.slow
def test_a_faulty_bot_neither_switches_recovery_off_nor_makes_the_worker_probe_in_a_loop(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    """Issue 22 item 11. A bot reports a working key refused, over and over, each time as a new
    refusal: the worker probes it once per REPORT_PROBE_EVERY, never more, and rotates nothing. Then
    the key really dies and another bot reports it: that report earns a probe, and the key is replaced
    (it used to be ignored for good: recovery was off for that key, for every bot)."""
    from rotator.rotation import REPORT_PROBE_EVERY

    sb = fresh_sandbox
    w = daemon_worker(tmp_path, sb, wallet)
    w.extra["daemon"]["tick"] = "1s"
    w.write_config()
    proc = w.start("run")
    store = w.store()
    try:
        wait_for(lambda: w.published() is not None, timeout=30)
        key = w.published()
        assert key is not None
        prefix = ack_prefix(key.api_key)
        sb.reset_counts()
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < REPORT_PROBE_EVERY + 10:  # over one interval and a third
            n += 1
            now = time.time()
            store.report_refusal(w.ref, "bot-faulty", prefix, now, now - 0.5, n)  # a new refusal each time
            time.sleep(0.5)
        spent = probes(sb, 200)
        assert 1 <= spent <= 2, sb.request_counts()  # one at the first report, one an interval later
        assert w.published() == key and sb.request_counts()[("POST", "/auth/api-key", 200)] == 0

        sb.invalidate(key.api_key)  # now it really dies, and a bot that worked until now says so
        store.report_refusal(w.ref, "bot-healthy", prefix, time.time(), time.time() - 0.2, 1)
        wait_for(lambda: (p := w.published()) is not None and p.api_key != key.api_key, timeout=60)
    finally:
        out = finish(w, proc)
    rejected = log_events(out, step="probe", outcome="rejected", trigger="consumer-report")
    assert len(rejected) == 1
    assert [e["reason"] for e in log_events(out, step="intent")] == ["bootstrap", "rejected"]


@pytest.mark.slow
def test_a_key_refused_right_after_a_cold_start_is_replaced_within_seconds(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    """Issue 22 item 12. Daemon and bot start together: the daemon's first passes read no consumer
    (the bot has not acknowledged yet). A key killed then is replaced within a tick or two of the bot's
    report (it took about a minute: a credential without consumers had its reports read once a minute
    from the first pass on)."""
    sb = fresh_sandbox
    w = daemon_worker(tmp_path, sb, wallet)
    w.extra["daemon"]["probe_every"] = "24h"  # no scheduled check of the key gets there first
    w.write_config()
    proc = w.start("run")
    bot = None
    try:
        wait_for(lambda: w.published() is not None, timeout=30)  # the daemon's first pass bootstraps
        first = w.published()
        assert first is not None
        # Its second pass reads the acknowledgements, and there are none yet: the bot starts after it.
        time.sleep(TICK + 2)
        bot = Bot(consumer(w, "bot-1"), sb.url, wallet[0])
        wait_for(lambda: len(bot.ok) >= 5, timeout=20)
        killed_at = time.monotonic()
        sb.invalidate(first.api_key)
        wait_for(lambda: (p := w.published()) is not None and p.api_key != first.api_key, timeout=45)
        replaced = time.monotonic() - killed_at
        wait_for(lambda: bot.ok[-1] > killed_at + replaced, timeout=15)
    finally:
        if bot is not None:
            bot.close()
        out = finish(w, proc)
    print(f"cold start: key killed {killed_at:.1f}, replaced after {replaced:.1f} s (daemon.tick {TICK:g} s)")
    assert len(log_events(out, step="probe", outcome="rejected", trigger="consumer-report")) == 1


@pytest.mark.slow
def test_two_hundred_bots_reporting_the_same_dead_key_cost_one_probe_and_one_rotation(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = fresh_sandbox
    w = daemon_worker(tmp_path, sb, wallet)
    proc = w.start("run")
    try:
        wait_for(lambda: w.published() is not None, timeout=30)
        dead = w.published()
        assert dead is not None
        store = w.store()
        store.ack(w.ref, "bot-0", ack_prefix(dead.api_key), time.time())  # a live consumer
        sb.reset_counts()
        sb.invalidate(dead.api_key)
        # 200 bots (200 sources on the same store) refused within a second: each reports once.
        sources = [consumer(w, f"bot-{i}", wait_for_new=0.0) for i in range(200)]
        barrier = threading.Barrier(len(sources))
        started = time.monotonic()

        def refused(source: CredentialSource) -> None:
            barrier.wait(10)
            source.refresh(different_from=dead.api_key)

        threads = [threading.Thread(target=refused, args=(s,)) for s in sources]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(s.reports for s in sources) == 200
        assert time.monotonic() - started < 10
        wait_for(lambda: (p := w.published()) is not None and p.api_key != dead.api_key, timeout=30)
        time.sleep(TICK + 1)  # another pass: the 200 stale reports start nothing more
        for s in sources:
            s.close()
        # One probe on the reports; the rotation's check of the old key is the other 401.
        assert probes(sb, 401) == 2, sb.request_counts()
        assert sb.request_counts()[("POST", "/auth/api-key", 200)] == 1
    finally:
        out = finish(w, proc)
    assert len(log_events(out, step="probe", trigger="consumer-report")) == 1
    assert w.state().rotations == 2
    OUTPUTS.append(out)


# -- the consumer's permissions on each backend ----------------------------------------------------


def test_the_shipped_vault_consumer_policy_lets_a_bot_report_as_it_acknowledges(openbao: Any) -> None:
    # The shipped policy, for a credential of this test's own (the session's OpenBao is shared).
    name = f"mm-{uuid.uuid4().hex[:10]}"
    policy = (DEPLOY / "consumer-policy.hcl").read_text().replace(POLICY_CREDENTIAL, name)
    openbao.client().sys.create_or_update_policy(f"consumer-{name}", policy)
    token = make_token(openbao, f"consumer-{name}")
    ref = CredentialRef(name, f"polymarket/{name}")
    worker = build_vault_store(
        VaultSettings(url=openbao.url, auth={"token_env": "T"}), {"T": openbao.root_token}
    )
    bot = build_vault_store(VaultSettings(url=openbao.url, auth={"token_env": "T"}), {"T": token})
    try:
        key = make_key()
        worker.publish(ref, key)
        prefix = ack_prefix(key.api_key)
        bot.ack(ref, "bot-1", prefix, 100.0)
        bot.report_refusal(ref, "bot-1", prefix, 105.0, 104.5, 7)
        (report,) = worker.acks(ref)
        assert (report.consumer_id, report.key_prefix, report.refused_at, report.refusals) == (
            "bot-1",
            prefix,
            104.5,
            7,
        )
        with pytest.raises(AccessDenied):
            bot.report_refusal(ref, "bot-2", prefix, 105.0, 104.5, 7)  # another bot's name
    finally:
        bot.close()
        worker.close()


def test_aws_reports_are_tags_the_consumer_iam_policy_allows(moto_server: str) -> None:
    root = Path(__file__).resolve().parents[2] / "deploy" / "aws"
    consumer_policy = json.loads((root / "consumer-iam-policy.json").read_text())
    (tagging,) = [s for s in consumer_policy["Statement"] if s["Action"] == ["secretsmanager:TagResource"]]
    allowed = tagging["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"]
    name = f"mm-{uuid.uuid4().hex[:10]}"
    ref = CredentialRef(name, f"bots/{name}")
    store = AwsStore(make_client(AwsStoreSettings(endpoint_url=moto_server, region="us-east-1")))
    try:
        key = make_key()
        store.publish(ref, key)
        prefix = ack_prefix(key.api_key)
        store.ack(ref, "bot-1", prefix, 100.0)
        store.report_refusal(ref, "bot-1", prefix, 1_764_547_173.25, 1_764_547_172.5, 12)
        sm = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")
        tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=ref.path)["Tags"]}
        ours = {k: v for k, v in tags.items() if k.startswith("rotator-ack")}
        assert len(ours) == 2 and all(fnmatch.fnmatchcase(k, allowed) for k in ours)
        # Secrets Manager's tag charset (letters, digits, spaces, _ . : / = + - @), at most 256.
        assert all(re.fullmatch(r"[\w .:/=+\-@]{0,256}", v) for v in ours.values()), ours
        (report,) = store.acks(ref)
        assert (report.refused_at, report.refusals, report.at) == (1_764_547_172.5, 12, 1_764_547_173.25)
    finally:
        store.close()


def make_key() -> Key:
    return Key(str(uuid.uuid4()), Secret("c2VjcmV0"), Secret(uuid.uuid4().hex), "0x" + "cd" * 20, 0, 1.0)


@pytest.mark.slow
def test_a_cronjob_run_reads_the_reports_and_replaces_a_reported_key(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = fresh_sandbox
    w = Worker(tmp_path, sb.url, *wallet, rotate_every="24h", grace="1h")
    w.rotate()
    dead = w.published()
    assert dead is not None
    sb.invalidate(dead.api_key)
    w.store().report_refusal(w.ref, "bot-1", ack_prefix(dead.api_key), time.time(), time.time() - 1, 4)
    sb.reset_counts()
    proc = w.rotate()
    out = proc.stdout + proc.stderr
    assert len(log_events(out, step="probe", outcome="rejected", trigger="consumer-report")) == 1
    assert [e["reason"] for e in log_events(out, step="intent")] == ["rejected"]
    # The report's probe replaces the run's own check of the key: one probe, then the rotation's
    # (the old key's check, and the proof that the probe route refuses a wrong signature, issue 22).
    assert probes(sb, 401) == 3, sb.request_counts()
    published = w.published()
    assert published is not None and published.api_key != dead.api_key
