"""The shared /auth/* budget: what the worker spends of the 100 requests per 10 s the CLOB allows an IP.

The bots behind the same egress IP spend that budget when they start, so every request the worker
makes there is one a bot cannot. Everything is counted by the sandbox CLOB (in a child process),
which enforces the real limit; nothing is timed.

* A rotation cycle: ``rotator rotate --force`` on a credential with a published key, then, once its
  grace has passed, ``rotator rotate`` (the revocation pass). Baseline: the least a cycle can take,
  create and delete (the verification, the check of the old key and the confirmation of the delete
  are L2 reads outside /auth/*).
* An idle daemon: ``rotator run`` over a fleet whose keys are all fresh (nothing due), on the file
  store, for ``IDLE`` seconds after its first pass over every credential. Baseline: the IP's
  budget, 10 requests a second. The daemon checks each key once per ``daemon.probe_every`` (here the
  default 5 minutes) on the probe endpoint, outside /auth/*.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    ROTATOR,
    Row,
    Section,
    auth_counts,
    child_env,
    credentials,
    main,
    sandbox,
    wallets,
    write_yaml,
)

#: The CLOB's /auth/* budget per IP, per second.
IP_BUDGET = 100 / 10.0


def _config(path: Path, url: str, tmp: str, creds: list[dict[str, Any]], **extra: Any) -> Path:
    return write_yaml(
        path,
        {
            "clob": {"host": url, "verify_timeout": "30s"},
            "store": {"backend": "file", "file": {"path": f"{tmp}/keys.enc", "key_env": "BENCH_FILE_KEY"}},
            "credentials": creds,
            "metrics": {"port": 0},
            "log": {"format": "json", "level": "info"},
            **extra,
        },
    )


def _run(cfg: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [ROTATOR, args[0], "-c", str(cfg), *args[1:]], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"auth_budget: rotator {' '.join(args)}: exit {proc.returncode}: {proc.stderr[-300:]}"
        )
    return proc.stdout


def cycle(sb: Any, tmp: str) -> tuple[int, int, dict[tuple[str, str, int], int]]:
    """(/auth/* requests, 429s, every count) of one rotation cycle of one credential."""
    from rotator.stores.file import generate_file_key

    creds, keys = credentials(wallets(1), "cycle", rotate_every="1h", grace="1s")
    env = child_env({**keys, "BENCH_FILE_KEY": generate_file_key()})
    cfg = _config(Path(tmp) / "cycle.yaml", sb.url, tmp, creds)
    _run(cfg, env, "rotate", "--all")  # bootstrap, not counted
    sb.reset()
    _run(cfg, env, "rotate", "--all", "--force")
    time.sleep(1.5)
    if "revoked=1" not in _run(cfg, env, "rotate", "--all"):
        raise RuntimeError("auth_budget: the revocation pass revoked nothing")
    counts = sb.counts()
    spent, limited = auth_counts(counts)
    return spent, limited, counts


def idle(sb: Any, tmp: str, n: int, seconds: float) -> tuple[int, int, int, float]:
    """(/auth/* requests, 429s, probe-endpoint requests, seconds) of an idle daemon over ``n`` credentials."""
    from rotator.stores.file import generate_file_key

    creds, keys = credentials(wallets(n), "idle", rotate_every="1d", grace="1h")
    env = child_env({**keys, "BENCH_FILE_KEY": generate_file_key()})
    setup = _config(
        Path(tmp) / "setup.yaml",
        sb.url,
        tmp,
        creds,
        clob={"host": sb.url, "rate_limits": {"auth": {"requests": 0}}},
    )
    sb.configure(auth_limit=0)
    _run(setup, env, "rotate", "--all")  # bootstrap, unlimited and not counted
    sb.configure(auth_limit=100)
    cfg = _config(Path(tmp) / "idle.yaml", sb.url, tmp, creds, daemon={"tick": "5s", "jitter": "2s"})
    log = (Path(tmp) / "idle.log").open("w")
    daemon = subprocess.Popen([ROTATOR, "run", "-c", str(cfg)], env=env, stdout=log, stderr=log)
    try:
        time.sleep(15)  # the first pass over every credential (each key checked once)
        sb.reset()
        t = time.perf_counter()
        time.sleep(seconds)
        counts = sb.counts()
        took = time.perf_counter() - t
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
    spent, limited = auth_counts(counts)
    probes = sum(v for (_, p, _), v in counts.items() if p == "/balance-allowance")
    return spent, limited, probes, took


def run(quick: bool) -> Section:
    n, seconds = (100, 20.0) if quick else (1000, 60.0)
    section = Section("The shared /auth/* budget")
    with sandbox(auth_limit=100, auth_window=10.0) as sb, tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cycle").mkdir()
        (Path(tmp) / "idle").mkdir()
        spent, limited, counts = cycle(sb, f"{tmp}/cycle")
        idle_spent, idle_limited, probes, took = idle(sb, f"{tmp}/idle", n, seconds)
    per_route = ", ".join(f"{m} {p} {c} x{v}" for (m, p, c), v in sorted(counts.items()))
    rate = idle_spent / took
    section.rows += [
        Row(
            "/auth/* requests per rotation cycle",
            f"{spent}, {limited} x 429",
            "2 (create + delete, the least a cycle takes)",
            spent / 2,
            "<= 1.0x",
            spent <= 2 and limited == 0,
        ),
        Row(
            f"/auth/* requests per second, idle daemon, {n} credentials",
            f"{rate:.2f}/s, {idle_limited} x 429",
            f"{IP_BUDGET:g}/s (the IP's whole budget)",
            rate / IP_BUDGET,
            "0",
            idle_spent == 0 and idle_limited == 0,
        ),
    ]
    section.details += [
        f"Rotation cycle (forced rotation, then the revocation pass after a 1 s grace), every CLOB "
        f"request: {per_route}. Before issue 12 the same cycle spent 5 /auth/* requests (the "
        "verification, the old-key check and the revocation pass's key check were GET /auth/api-keys).",
        f"Idle daemon: {n} fresh credentials, daemon.tick 5 s, counted for {took:.0f} s after a 15 s "
        f"warm-up: {idle_spent} /auth/* requests, {probes} key checks on GET /balance-allowance "
        f"({probes / took:.2f}/s). Before issue 12 an idle daemon with 50 credentials spent 4-5 /auth/* "
        "requests a second.",
    ]
    return section


if __name__ == "__main__":
    main(run)
