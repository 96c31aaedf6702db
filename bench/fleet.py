"""Fleet pacing: a fleet of credentials all due at once, the sandbox enforcing the CLOB's /auth/* limit.

``rotator rotate --all`` (the CronJob) rotates every credential of the fleet, each due because its key
is older than ``rotate_every``: per credential, one /auth/* request (create, L1); the verification of
the new key and the check of the old one are L2 reads outside /auth/* (``clob.probe``), plus the store
writes. The sandbox enforces the real limit, ``LIMIT`` requests per ``WINDOW`` s on /auth/* (100 per
10 s), and rotator is configured with the same budget (``clob.rate_limits.auth``; its default is half
of it, which leaves the rest to the bots and doubles these times by design). It paces with a 2%
safety margin on the window and counts a slot from its answer.

Earlier runs (when a rotation took three /auth/* requests) scaled the limit to 200 per 2 s to keep
the run short; with one request per rotation the real limit is affordable: N credentials span
N / 100 windows.

The minimum a limit allows for N requests is ``(ceil(N / LIMIT) - 1) * WINDOW`` seconds: the first
LIMIT go at once, each later LIMIT one window after. The sandbox also enforces the probe endpoint's
own limit (``GET /balance-allowance``, 200 per 10 s), which a rotation uses twice (the new key's
verification, the old key's check) and each process once more (the proof that the route checks L2
auth, issue 22 item 9): 2N + 1 requests, so for N a multiple of 100 that limit, not /auth/*'s, sets
the minimum. The minimum is the larger of the two, each computed from the requests the sandbox
counted; the ratio is rotator's wall time (the whole command, start-up included) over it. Before
the timed runs the fleet is bootstrapped with no limit, and each run starts after a full quiet
window, so the server's windows are empty.
"""

from __future__ import annotations

import math
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
    children_cpu,
    cpu_seconds,
    credentials,
    median,
    openbao,
    sandbox,
    spread,
    wallets,
    write_yaml,
)

TARGET = 1.15
#: The CLOB's own limit on /auth/* (clob-auth.md section 6).
LIMIT, WINDOW = 100, 10.0
#: The probe endpoint and its own limit per WINDOW (the sandbox enforces it as the CLOB documents it).
PROBE = "/balance-allowance"
PROBE_LIMIT = 200


def _config(
    path: Path, url: str, vault_url: str, creds: list[dict[str, Any]], limit: int, window: float
) -> Path:
    return write_yaml(
        path,
        {
            "clob": {
                "host": url,
                "verify_timeout": "30s",
                "rate_limits": {"auth": {"requests": limit, "per": window}},
            },
            "store": {"backend": "vault", "vault": {"url": vault_url}},
            "credentials": creds,
            "metrics": {"port": 0},
            "log": {"format": "json", "level": "info"},
        },
    )


def _rotate(cfg: Path, env: dict[str, str], n: int) -> float:
    t = time.perf_counter()
    proc = subprocess.run(
        [ROTATOR, "rotate", "-c", str(cfg), "--all"], env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - t
    rotated = sum(1 for line in proc.stdout.splitlines() if ": rotated" in line)
    if proc.returncode != 0 or rotated != n:
        tail = (proc.stderr.strip().splitlines() or ["-"])[-1][:300]
        raise RuntimeError(f"fleet: rotate --all exit {proc.returncode}, {rotated}/{n} rotated; {tail}")
    return took


def run(quick: bool, limit: int = LIMIT, window: float = WINDOW) -> Section:
    n, runs = (150, 2) if quick else (400, 3)
    section = Section("Fleet pacing")
    with (
        openbao() as bao,
        sandbox(auth_limit=0, auth_window=window) as sb,
        tempfile.TemporaryDirectory() as tmp,
    ):
        creds, keys = credentials(wallets(n), "fleet", rotate_every="1s", grace="1h")
        env = child_env({**keys, "VAULT_TOKEN": bao.root_token})
        setup = _config(Path(tmp) / "setup.yaml", sb.url, bao.url, creds, 0, window)
        t = time.perf_counter()
        _rotate(setup, env, n)  # bootstrap, unlimited
        bootstrap = time.perf_counter() - t
        cfg = _config(Path(tmp) / "fleet.yaml", sb.url, bao.url, creds, limit, window)
        sb.configure(auth_limit=limit, auth_window=window)
        walls: list[float] = []
        requests: list[int] = []
        probes: list[int] = []
        cpu = {"rotator": 0.0, "sandbox": 0.0, "OpenBao": 0.0}
        limited = 0
        for _ in range(runs):
            time.sleep(window * 1.1)  # the server's window empties: every run starts alike
            counts = sb.counts()
            before = auth_counts(counts)
            probed = sum(n for (m, path, _), n in counts.items() if (m, path) == ("GET", PROBE))
            c0 = (children_cpu(), cpu_seconds(sb.pid), cpu_seconds(bao.process.pid))
            walls.append(_rotate(cfg, env, n))
            c1 = (children_cpu(), cpu_seconds(sb.pid), cpu_seconds(bao.process.pid))
            for name, a, b in zip(cpu, c0, c1, strict=True):
                cpu[name] += (b - a) / runs
            counts = sb.counts()
            after = auth_counts(counts)
            requests.append(after[0] - before[0])
            limited += after[1] - before[1]
            probes.append(
                sum(n for (m, path, _), n in counts.items() if (m, path) == ("GET", PROBE)) - probed
            )
            limited += sum(n for (m, path, code), n in counts.items() if path == PROBE and code == 429)
    wall = median(walls)
    reqs = int(median([float(r) for r in requests]))
    checks = int(median([float(p) for p in probes]))
    auth_min = (math.ceil(reqs / limit) - 1) * window
    probe_min = (math.ceil(checks / PROBE_LIMIT) - 1) * window
    minimum = max(auth_min, probe_min)
    ratio = wall / minimum
    section.rows.append(
        Row(
            f"{n} credentials due at once",
            f"{wall:.1f} s, {limited} x 429",
            f"{minimum:.1f} s (minimum for {reqs} /auth/* requests at {limit}/{window:g} s: "
            f"{auth_min:.0f} s, and {checks} probes at {PROBE_LIMIT}/{window:g} s: {probe_min:.0f} s)",
            ratio,
            f"<= {TARGET}x, no 429",
            ratio <= TARGET and limited == 0,
        )
    )
    section.details += [
        f"{runs} runs of `rotator rotate --all` over {n} due credentials (Vault store, clob.concurrency 8), "
        f"each after a quiet window; wall times {spread(walls)} s; /auth/* requests per run: "
        f"{sorted(set(requests))}; probe requests per run: {sorted(set(probes))}; 429 answers in all runs: "
        f"{limited}. The untimed bootstrap of the "
        f"fleet (no limit, derive + create each) took {bootstrap:.1f} s, i.e. "
        f"{2 * n / bootstrap:.0f} /auth/* requests per second unpaced.",
        "CPU seconds per run: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()) + ".",
    ]
    return section


if __name__ == "__main__":
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    s = run("--quick" in sys.argv, *(int(args[0]), float(args[1])) if args else ())
    for row in s.rows:
        print(row)
    print("\n".join(s.details))
