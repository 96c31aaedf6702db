"""Daemon footprint: ``rotator run`` with a fleet on the file store, memory read from /proc.

The fleet is bootstrapped first with ``rotator rotate --all`` (untimed, no rate limit). Then the
daemon runs with every key fresh, so each scheduler tick is one pass: read the state, check the key
(one L2 read outside /auth/*: ``daemon.probe_every`` is 0 here, where the default checks each key
every 5 minutes), nothing to do. ``daemon.tick`` is short and the budgets are off so the ticks
come fast (the passes are the same as at the default tick, only closer together); the metrics
exporter serves on a loopback port as in production, and logs go to a file at ``info``.

A tick is counted by the sandbox as the probe it sends. The first full cycle ends once every
credential's ``rotator_last_success_timestamp_seconds`` is past the daemon's start (read from its
own /metrics). Peak RSS is VmHWM at that moment; growth is VmRSS after ``TICKS`` more ticks minus
VmRSS at that moment.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import (
    ROTATOR,
    Row,
    Section,
    child_env,
    credentials,
    main,
    rss_kib,
    sandbox,
    wallets,
    write_yaml,
)

PEAK_TARGET_MB = 150.0
GROWTH_TARGET_MB = 5.0


def _probes(counts: dict[tuple[str, str, int], int]) -> int:
    return sum(n for (m, p, _), n in counts.items() if (m, p) == ("GET", "/balance-allowance"))


def _cycle_done(metrics_url: str, names: set[str], since: float) -> bool:
    """Every credential has finished a pass since ``since`` (by the daemon's own gauge)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(metrics_url, timeout=10).text
    done: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name == "rotator_last_success_timestamp_seconds":
            done |= {s.labels["credential"] for s in family.samples if s.value >= since}
    return names <= done


def run(quick: bool) -> Section:
    from rotator.stores.file import generate_file_key
    from tests.servers import free_port

    # The daemon starts at most 20 passes a second (scheduler.MAX_PASSES_PER_SECOND): 3,000 ticks
    # take about 150 s with 1,000 credentials.
    n, ticks = (100, 1000) if quick else (1000, 3_000)
    tick = 0.5 if quick else 3.0
    section = Section("Daemon footprint")
    # No server-side limits either: the probe endpoint's 200 per 10 s would pace the ticks, not the daemon.
    with sandbox(auth_limit=0, read_limits={}) as sb, tempfile.TemporaryDirectory() as tmp:
        creds, keys = credentials(wallets(n), "bot", rotate_every="1d", grace="1h")
        env = child_env({**keys, "BENCH_FILE_KEY": generate_file_key()})
        port = free_port()
        cfg = write_yaml(
            Path(tmp) / "rotator.yaml",
            {
                # Budgets off and a key check on every pass: each tick is a whole pass, counted at the
                # sandbox (the daemon's default checks each key every 5 minutes only).
                "clob": {"host": sb.url, "rate_limits": {"auth": {"requests": 0}}, "probe": {"requests": 0}},
                "store": {
                    "backend": "file",
                    "file": {"path": f"{tmp}/keys.enc", "key_env": "BENCH_FILE_KEY"},
                },
                "credentials": creds,
                "metrics": {"host": "127.0.0.1", "port": port},
                "log": {"format": "json", "level": "info"},
                "daemon": {"tick": tick, "jitter": 1.0, "probe_every": 0},
            },
        )
        t = time.perf_counter()
        boot = subprocess.run(
            [ROTATOR, "rotate", "-c", str(cfg), "--all"], env=env, capture_output=True, text=True, check=False
        )
        bootstrap = time.perf_counter() - t
        if boot.returncode != 0:
            raise RuntimeError(f"footprint: bootstrap failed: {boot.stderr.strip()[-300:]}")
        names = {c["name"] for c in creds}
        log = (Path(tmp) / "daemon.log").open("w")
        started = time.time()
        daemon = subprocess.Popen([ROTATOR, "run", "-c", str(cfg)], env=env, stdout=log, stderr=log)
        samples: list[int] = []
        try:
            base = _probes(sb.counts())
            deadline = time.monotonic() + 300
            while True:  # the first full cycle
                time.sleep(0.5)
                if daemon.poll() is not None:
                    raise RuntimeError(f"footprint: the daemon exited ({daemon.returncode})")
                samples.append(rss_kib(daemon.pid)[0])
                if _probes(sb.counts()) - base >= n and _cycle_done(
                    f"http://127.0.0.1:{port}/metrics", names, started
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("footprint: no full cycle within 300 s")
            cycle = time.time() - started
            rss1, peak1 = rss_kib(daemon.pid)
            at_cycle = _probes(sb.counts())
            t = time.perf_counter()
            while (done := _probes(sb.counts()) - at_cycle) < ticks:  # then TICKS more ticks
                time.sleep(0.5)
                if daemon.poll() is not None:
                    raise RuntimeError(f"footprint: the daemon exited ({daemon.returncode})")
                samples.append(rss_kib(daemon.pid)[0])
                if time.perf_counter() - t > 600:
                    raise RuntimeError(f"footprint: only {done} ticks in 600 s")
            ticked = time.perf_counter() - t
            rss2, peak2 = rss_kib(daemon.pid)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log.close()
        missed = (Path(tmp) / "daemon.log").read_text().count("was missed by")
    peak_mb = peak1 / 1024
    growth_mb = (rss2 - rss1) / 1024
    section.rows += [
        Row(
            f"peak RSS, {n} credentials, after one full cycle",
            f"{peak_mb:.1f} MB (VmHWM)",
            "-",
            None,
            f"< {PEAK_TARGET_MB:g} MB",
            peak_mb < PEAK_TARGET_MB,
        ),
        Row(
            f"RSS growth over {ticks} ticks",
            f"{growth_mb:+.1f} MB",
            f"{rss1 / 1024:.1f} MB after the first cycle",
            None,
            f"< {GROWTH_TARGET_MB:g} MB",
            growth_mb < GROWTH_TARGET_MB,
        ),
    ]
    section.details += [
        f"Bootstrap of {n} credentials on the file store (`rotate --all`, untimed): {bootstrap:.1f} s. "
        f"First full cycle {cycle:.1f} s after start; then {ticks} ticks in {ticked:.1f} s "
        f"({ticks / ticked:.0f} passes/s, daemon.tick {tick:g} s); {missed} runs missed by the scheduler.",
        f"VmRSS sampled every 0.5 s: {min(samples) / 1024:.1f}..{max(samples) / 1024:.1f} MB; "
        f"VmHWM at the end {peak2 / 1024:.1f} MB.",
    ]
    return section


if __name__ == "__main__":
    main(run)
