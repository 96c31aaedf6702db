"""One-shot start-up (the CronJob case): whole processes, timed from fork to exit.

* ``rotator rotate --all -c cfg`` on the AWS store (moto on loopback) with one credential whose key
  is fresh, so the pass reads its state from Secrets Manager, checks the CLOB clock and probes the
  key (one L2 request) and changes nothing; versus ``python -c "import boto3"``.
* ``rotator --help`` versus ``python -c pass``.

Both commands of a pair run alternately, in the same venv interpreter, with bytecode caches warm.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from common import (
    PY,
    ROTATOR,
    Row,
    Section,
    alternate,
    child_env,
    credentials,
    main,
    median,
    moto,
    sandbox,
    spread,
    timed_run,
    wallets,
    write_yaml,
)

TARGET_ROTATE = 1.5
TARGET_HELP = 3.0


def _imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """Import time of one run (python -X importtime) by package, self times summed, as 'name N ms'."""
    proc = subprocess.run(
        [PY, "-X", "importtime", "-c", "import sys; from rotator.cli import main; sys.exit(main())", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    by_package: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)$", line)
        if m:
            name = m.group(2).split(".")[0]
            by_package[name] = by_package.get(name, 0) + int(m.group(1))
    total = sum(by_package.values())
    heavy = sorted(by_package.items(), key=lambda kv: -kv[1])[:10]
    return [f"{total / 1000:.0f} ms in all"] + [f"{n} {us / 1000:.0f} ms" for n, us in heavy]


def _phases(cfg: Path, env: dict[str, str], runs: int = 5) -> str:
    """Median milliseconds of each phase of a nothing-due pass (bench/startup_phases.py)."""
    import json
    import statistics

    script = str(Path(__file__).resolve().parent / "startup_phases.py")
    laps: list[dict[str, float]] = []
    for _ in range(runs):
        out = subprocess.run(
            [PY, script, str(cfg)], env=env, capture_output=True, text=True, check=True
        ).stdout
        laps.append(json.loads(out.strip().splitlines()[-1]))
    return "; ".join(f"{name} {statistics.median(lap[name] for lap in laps):.0f}" for name in laps[0])


def run(quick: bool) -> Section:
    runs = 5 if quick else 11
    section = Section("One-shot start-up")
    with moto() as endpoint, sandbox(auth_limit=0) as sb, tempfile.TemporaryDirectory() as tmp:
        creds, keys = credentials(wallets(1), "cron", rotate_every="1d", grace="1h")
        cfg = write_yaml(
            Path(tmp) / "rotator.yaml",
            {
                "clob": {"host": sb.url},
                "store": {"backend": "aws", "aws": {"region": "us-east-1", "endpoint_url": endpoint}},
                "credentials": creds,
                "metrics": {"port": 0},
                "log": {"format": "json", "level": "info"},
            },
        )
        env = child_env(keys)
        rotate = [ROTATOR, "rotate", "-c", str(cfg), "--all"]
        timed_run(rotate, env)  # bootstrap: the key exists and is fresh from here on
        timed_run(rotate, env)  # warm: bytecode caches written, moto's models loaded
        timed_run([PY, "-c", "import boto3"], env)
        xs, ys = alternate(
            lambda: timed_run(rotate, env), lambda: timed_run([PY, "-c", "import boto3"], env), runs
        )
        heavy = _imports(rotate[1:], env)
        phases = _phases(cfg, env)
        hs, ps = alternate(
            lambda: timed_run([ROTATOR, "--help"], env), lambda: timed_run([PY, "-c", "pass"], env), runs
        )
    r, b = median(xs), median(ys)
    h, p = median(hs), median(ps)
    section.rows += [
        Row(
            "rotate --all, nothing due (AWS store)",
            f"{r * 1000:.0f} ms",
            f'{b * 1000:.0f} ms (python -c "import boto3")',
            r / b,
            f"<= {TARGET_ROTATE}x",
            r / b <= TARGET_ROTATE,
        ),
        Row(
            "rotator --help",
            f"{h * 1000:.0f} ms",
            f"{p * 1000:.0f} ms (python -c pass)",
            h / p,
            f"<= {TARGET_HELP}x",
            h / p <= TARGET_HELP,
        ),
    ]
    section.details += [
        f"{runs} runs of each command, alternating; medians. rotate: {spread([x * 1000 for x in xs])} ms, "
        f"import boto3: {spread([y * 1000 for y in ys])} ms, --help: {spread([x * 1000 for x in hs])} ms, "
        f"pass: {spread([y * 1000 for y in ps])} ms.",
        "Where a nothing-due `rotate --all` spends its time after the interpreter started, in ms "
        "(bench/startup_phases.py, medians of 5): " + phases + ".",
        "Its imports by package, self time (one run, -X importtime): " + "; ".join(heavy) + ".",
    ]
    return section


if __name__ == "__main__":
    main(run)
