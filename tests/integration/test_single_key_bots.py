"""Issue 24 item 4: a wallet that keeps one key, the example bots on all three SDKs, ten rotations.

The sandbox in single-key mode (creating a key invalidates the wallet's others). ``rotator doctor
--probe-key-model`` teaches the worker the key model first; from then on each rotation publishes the
new key in the step that creates it. Each example bot (examples/bot.py with --heartbeat on
py-clob-client, bot_v2.py, bot_unified.py) sends a request every 100 ms, as subprocesses, while the
CLI rotates ten times. Per bot: at most one failed request per rotation, the heartbeat chain never
pauses 10 s (the CLOB cancels a bot's orders then), and no key is left behind (I3, checked after).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rotator.model import ack_prefix
from rotator.sandbox import Sandbox, SandboxSettings
from tests.harness import OUTPUTS, SECRETS, Worker

ROOT = Path(__file__).resolve().parents[2]
ROTATIONS = 10
HEARTBEAT_WINDOW = 10.0  # the CLOB cancels a bot's open orders after this long without a heartbeat
EXAMPLES = (("bot.py", ["--heartbeat"]), ("bot_v2.py", []), ("bot_unified.py", []))

pytestmark = pytest.mark.timeout(280)


@pytest.mark.slow
def test_example_bots_ride_ten_rotations_of_a_wallet_that_keeps_one_key(
    tmp_path: Path, wallet: tuple[str, str]
) -> None:
    sb = Sandbox(SandboxSettings(auth_limit=0, single_key=True))
    sb.start()
    bots: dict[str, subprocess.Popen[str]] = {}
    outputs: dict[str, tuple[str, str]] = {}
    try:
        w = Worker(tmp_path, sb.url, *wallet, rotate_every="1h", grace="3s", cred_extra={"min_grace": "0.5s"})
        w.rotate()
        learned = w.run("doctor", "--probe-key-model")
        assert "keys per wallet: one" in learned.stdout, learned.stdout + learned.stderr
        state = w.state()
        assert state.key_model is not None and state.key_model.keys == "one"
        env = {**w.env(), "BOT_WALLET_KEY": w.private_key, "SSL_CERT_DIR": str(tmp_path)}
        env.pop("SSL_CERT_FILE", None)  # plain HTTP: spare polymarket-client its CA bundle parsing
        for example, extra in EXAMPLES:
            args = ["-c", str(w.config_path), "--credential", w.name, "--every", "0.1", "--refresh", "0.2"]
            bots[example] = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "examples" / example),
                    *args,
                    *extra,
                    "--consumer-id",
                    example[:-3],
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
        _wait_for_acks(w, bots)
        started = time.monotonic()
        for _ in range(ROTATIONS):
            out = w.rotate("--force").stdout
            assert "mm1: rotated" in out, out
            _wait_for_acks(w, bots)
            time.sleep(0.3)  # a few requests on the new key
        took = time.monotonic() - started
    finally:
        for example, bot in bots.items():
            bot.send_signal(signal.SIGTERM)
            outputs[example] = bot.communicate(timeout=30)
            OUTPUTS.extend(outputs[example])
        SECRETS.update(sb.issued_secrets())
        live = sb.live_keys(wallet[1])
        sb.stop()
    state = w.state()
    assert state.current is not None and live == [state.current.api_key]  # 0 orphans
    assert state.rotations >= ROTATIONS + 1
    for example, _ in EXAMPLES:
        out, err = outputs[example]
        assert bots[example].returncode in (0, 1), err[-2000:]
        summary = json.loads(out.strip().splitlines()[-1])
        print(  # shown with -rP: the numbers the report quotes
            f"{example}: {summary['requests']} requests in {took:.0f}s of rotations, "
            f"{summary['retried']} retried, {summary['failed']} failed, "
            f"longest gap between successful requests {summary['longest_gap']:.3f}s"
        )
        assert summary["failed"] <= ROTATIONS, (example, summary)  # at most one per rotation
        assert summary["longest_gap"] < HEARTBEAT_WINDOW, (example, summary)
        assert len(summary["keys"]) >= ROTATIONS + 1, (example, summary)
        assert summary.get("fallbacks_refused", 0) == 0


def _wait_for_acks(w: Worker, bots: dict[str, subprocess.Popen[str]]) -> None:
    """Every bot acknowledged the current key (it serves it)."""
    current = w.state().current
    assert current is not None
    want = ack_prefix(current.api_key)
    deadline = time.monotonic() + 60
    while True:
        acked = {a.consumer_id for a in w.store().acks(w.ref) if a.key_prefix == want}
        if all(name[:-3] in acked for name in bots):
            return
        dead = [name for name, bot in bots.items() if bot.poll() is not None]
        assert not dead, f"bots exited: {dead}"
        assert time.monotonic() < deadline, f"not every bot took key {want}: {acked}"
        time.sleep(0.1)
