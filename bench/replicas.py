"""Replicas: what two and three daemons on one store spend on the CLOB, against one daemon.

``deployment.replicas: 2`` used to double the worker's spend on the CLOB's shared budgets (every
replica probed and rotated), and two replicas drew 429s. Replicas now elect one active worker
through a leader lease kept in the store; standbys run no passes.

Each run starts ``k`` ``rotator run`` daemons on one file store over the same ``N`` credentials,
whose keys come due every ``ROTATE`` seconds (so there is real work: rotations, revocations, key
checks), against the sandbox CLOB enforcing the real /auth/* limit (100 per 10 s), for ``SECONDS``
seconds. The sandbox counts every request. Baseline: one daemon, measured in the same run; the ratio
is the combined requests of ``k`` daemons over one daemon's.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROTATOR, Row, Section, child_env, credentials, main, sandbox, wallets, write_yaml

TARGET = 1.25
#: The leader lease of the runs: short, so a run is short too.
LEADER = {"lease": "6s", "renew": "2s"}


def _spend(sb: Any, tmp: Path, k: int, n: int, seconds: float) -> tuple[int, int, int]:
    """(CLOB requests, /auth/* requests, 429s) of ``k`` daemons over ``n`` credentials for ``seconds``."""
    from rotator.stores.file import generate_file_key

    creds, keys = credentials(wallets(n), f"r{k}", rotate_every="20s", grace="10s")
    env = child_env({**keys, "BENCH_FILE_KEY": generate_file_key()})
    base: dict[str, Any] = {
        "clob": {"host": sb.url, "verify_timeout": "30s"},
        "store": {"backend": "file", "file": {"path": f"{tmp}/keys.enc", "key_env": "BENCH_FILE_KEY"}},
        "credentials": creds,
        "metrics": {"port": 0},
        "log": {"format": "json", "level": "info"},
    }
    boot = write_yaml(tmp / "boot.yaml", base)
    proc = subprocess.run(
        [ROTATOR, "rotate", "-c", str(boot), "--all"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"replicas: bootstrap failed: {proc.stderr[-300:]}")
    cfg = write_yaml(tmp / "run.yaml", {**base, "daemon": {"tick": "1s", "jitter": "0.5s", "leader": LEADER}})
    time.sleep(10.5)  # the bootstrap's /auth/* requests leave the server's window
    sb.reset()
    logs = [(tmp / f"d{i}.log").open("w") for i in range(k)]
    daemons = [
        subprocess.Popen([ROTATOR, "run", "-c", str(cfg)], env=env, stdout=log, stderr=log) for log in logs
    ]
    try:
        time.sleep(seconds)
        counts = sb.counts()
    finally:
        for d in daemons:
            d.send_signal(signal.SIGTERM)
        for d in daemons:
            try:
                d.wait(60)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
        for log in logs:
            log.close()
    total = sum(counts.values())
    auth = sum(v for (_, p, _), v in counts.items() if p.startswith("/auth/"))
    limited = sum(v for (_, _, c), v in counts.items() if c == 429)
    return total, auth, limited


def run(quick: bool) -> Section:
    n, seconds = (10, 30.0) if quick else (30, 60.0)
    section = Section("Replicas")
    spent: dict[int, tuple[int, int, int]] = {}
    with sandbox(auth_limit=100, auth_window=10.0) as sb:
        for k in (1, 2, 3):
            with tempfile.TemporaryDirectory() as tmp:
                spent[k] = _spend(sb, Path(tmp), k, n, seconds)
    one = spent[1][0]
    for k in (2, 3):
        total, auth, limited = spent[k]
        ratio = total / one if one else float("inf")
        section.rows.append(
            Row(
                f"{k} daemons on one store, combined CLOB requests",
                f"{total} ({auth} on /auth/*), {limited} x 429",
                f"{one} ({spent[1][1]} on /auth/*): one daemon",
                ratio,
                f"<= {TARGET}x, no 429",
                ratio <= TARGET and limited == 0,
            )
        )
    section.details.append(
        f"{n} credentials due every 20 s (grace 10 s) on one file store, daemon.tick 1 s, leader lease "
        f"{LEADER['lease']} renewed every {LEADER['renew']}; each run counted for {seconds:.0f} s "
        "by the sandbox at the real /auth/* limit (100 per 10 s). Requests by number of daemons: "
        + ", ".join(f"{k}: {v[0]} ({v[1]} /auth/*, {v[2]} x 429)" for k, v in spent.items())
        + "."
    )
    return section


if __name__ == "__main__":
    main(run)
