"""``rotate --all`` for a fleet: on a pipe, each credential's line as its pass finishes (a held
credential does not hold back the others' lines); on a terminal, a progress line on stderr redrawn in
place. Against the sandbox over HTTP; one pass per credential is held at the CLOB's create."""

from __future__ import annotations

import json
import os
import pty
import queue
import subprocess
import threading
import time
from pathlib import Path

import yaml

from rotator.progress import CLEAR
from rotator.sandbox import Sandbox
from tests.harness import OUTPUTS, Worker, find_leaks

N = 6


def _fleet(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> Worker:
    """N credentials on one wallet, nonces far apart (one wallet's nonce is one key)."""
    w = Worker(tmp_path, sandbox.url, *wallet)
    cfg = w.config()
    cfg["credentials"] = [
        {**cfg["credentials"][0], "name": f"mm{i}", "path": f"polymarket/mm{i}", "start_nonce": 1000 * i}
        for i in range(N)
    ]
    w.config_path.write_text(yaml.safe_dump(cfg))
    return w


def _secrets(sandbox: Sandbox, wallet: tuple[str, str]) -> set[str]:
    return {*sandbox.issued_secrets(), wallet[0], wallet[0].removeprefix("0x")}


def _issued(line: str) -> bool:
    return ": bootstrapped key=" in line or ": rotated key=" in line


def test_on_a_pipe_each_credential_prints_as_it_finishes(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = _fleet(fresh_sandbox, tmp_path, wallet)
    hold = fresh_sandbox.hold("POST", "/auth/api-key")  # the first create waits until released
    errfile = tmp_path / "stderr"
    with errfile.open("w") as errs:  # a file: a pipe nobody reads could fill up and stall the run
        proc = subprocess.Popen(
            w.argv("rotate", "--all"), env=w.env(), stdout=subprocess.PIPE, stderr=errs, text=True
        )
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        early = [lines.get(timeout=30) for _ in range(N - 1)]  # the others' lines, while one is held
        assert hold.reached.is_set() and proc.poll() is None, "the run must still be going"
        released = time.monotonic()
    finally:
        hold.release()
    code = proc.wait(timeout=60)
    reader.join(timeout=10)
    err = errfile.read_text()
    OUTPUTS.append(err)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert code == 0, err
    # After the passes, the one-shot run's wallet audits (issue 16) say their own lines.
    audits = [line for _, line in rest if line.startswith("audit ")]
    [(last_at, last)] = [(at, line) for at, line in rest if not line.startswith("audit ")]
    # As many as a quarter of one window of the /auth/* budget allows (rotator.clob.budget).
    assert rest[0][1] == last and len(audits) == min(N, 3), rest
    assert all(" unmanaged=0 " in line for line in audits), audits  # one wallet: all managed
    assert all(at < released <= last_at for at, _ in early) and _issued(last), last
    OUTPUTS.extend(line for _, line in [*early, *rest])
    names = [line.split(":", 1)[0] for _, line in [*early, (last_at, last)]]
    assert sorted(names) == sorted(f"mm{i}" for i in range(N)), (early, rest)  # each once
    assert all(_issued(line) for _, line in early), early
    assert find_leaks([*(line for _, line in [*early, *rest]), err], _secrets(fresh_sandbox, wallet)) == []


def test_on_a_terminal_a_progress_line_is_redrawn_on_stderr(
    fresh_sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = _fleet(fresh_sandbox, tmp_path, wallet)
    hold = fresh_sandbox.hold("POST", "/auth/api-key")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        w.argv("rotate", "--all"), env=w.env(), stdout=subprocess.PIPE, stderr=slave, text=True
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while f"{N - 1}/{N} done, 0 failed, " not in b"".join(chunks).decode(errors="replace"):
            assert time.monotonic() < deadline, b"".join(chunks)[-2000:]
            time.sleep(0.05)
        time.sleep(1.2)  # a tick redraws it while the last pass waits
    finally:
        hold.release()
    out, _ = proc.communicate(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    tty = b"".join(chunks).decode()
    OUTPUTS.extend((out, tty))
    assert proc.returncode == 0, tty[-2000:]

    screen = [line.split(CLEAR)[-1] for line in tty.replace("\r\n", "\n").split("\n") if line]
    progress = [line for line in screen if line.startswith("rotate --all: ")]
    assert progress[-1].startswith(f"rotate --all: {N}/{N} done, 0 failed, in "), progress
    for line in screen:  # log records start on a line of their own, never glued to the progress line
        assert line.startswith("rotate --all: ") or json.loads(line)["logger"].startswith("rotator"), line
    drawn = [part for part in tty.split(CLEAR) if part.startswith(f"rotate --all: {N - 1}/{N} done")]
    assert len(drawn) >= 2 and all(" left" in part[:60] for part in drawn), drawn  # redrawn, with time left
    # the result lines still go to stdout, one per credential (then the wallet audits' lines)
    assert len([line for line in out.splitlines() if not line.startswith("audit ")]) == N
    assert CLEAR not in out
    assert find_leaks([out, tty], _secrets(fresh_sandbox, wallet)) == []
