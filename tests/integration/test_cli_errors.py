"""Operator errors at the command line (issue 13 items 12, 14, 23, 24): exit 2 and one line naming what
is wrong, never a traceback; commands that do not sign need no signer; ``check --offline`` touches
nothing but the config and the environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.sandbox import Sandbox
from tests.harness import OUTPUTS, Worker


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    OUTPUTS.extend((proc.stdout, proc.stderr))
    return proc


def _one_line(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port something else already listens on; ``accept`` tells whether anyone connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


# -- item 23: status never signs ----------------------------------------------------------------------------
def test_commands_that_do_not_sign_need_no_signer(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    env = w.env()
    del env["TEST_WALLET_KEY"]
    proc = subprocess.run(w.argv("status"), env=env, capture_output=True, text=True, timeout=30, check=False)
    OUTPUTS.extend((proc.stdout, proc.stderr))
    assert proc.returncode == 0 and "\nmm1  " in proc.stdout, (proc.stdout, proc.stderr)
    # A dry run runs without it, plans, and names what a real run here would fail on (issue 23).
    proc = subprocess.run(
        w.argv("rotate", "--all", "--dry-run"),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    OUTPUTS.extend((proc.stdout, proc.stderr))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("mm1: would-fail: signer env TEST_WALLET_KEY is not set key="), proc.stdout
    # a command that signs still says which key is missing: that credential's pass fails (issue 23)
    proc = subprocess.run(
        w.argv("rotate", "--all"), env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stdout.strip().endswith("error=(signer) signer env TEST_WALLET_KEY is not set"), proc.stdout


# -- item 24: check --offline -------------------------------------------------------------------------------
def test_check_offline_touches_no_store_no_clob_no_signer(tmp_path: Path, listener: socket.socket) -> None:
    # The "CLOB" records whether anyone connected; the store file does not exist and its key is not
    # set; neither is the wallet key.
    w = Worker(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}", "0x" + "11" * 32, "0x0")
    proc = _cli("check", "--offline", "-c", str(w.config_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout and "mm1" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "keys.enc").exists()
    assert not _connected(listener)


def test_check_offline_refuses_bad_config_and_bad_env(tmp_path: Path) -> None:
    w = Worker(tmp_path, "http://127.0.0.1:9", "0x" + "11" * 32, "0x0")
    cfg = str(w.config_path)
    _one_line(
        _cli("check", "--offline", "-c", cfg, env={"ROTATOR_STORE__BACKEND": "fiel"}),
        "ROTATOR_STORE__BACKEND",
    )
    _one_line(
        _cli("check", "--offline", "-c", cfg, env={"ROTATOR_STROE__BACKEND": "file"}),
        "ROTATOR_STROE__BACKEND",
    )
    w.grace = ".nan"
    w.write_config()
    _one_line(_cli("check", "--offline", "-c", cfg), "credentials[mm1].grace")


def test_check_offline_warns_when_grace_outlasts_the_cadence(tmp_path: Path) -> None:
    w = Worker(tmp_path, "http://127.0.0.1:9", "0x" + "11" * 32, "0x0", rotate_every="1h", grace="2h")
    proc = _cli("check", "--offline", "-c", str(w.config_path))
    assert proc.returncode == 0 and "grace 7200s is longer than rotate_every 3600s" in proc.stdout, (
        proc.stdout
    )


def test_a_run_warns_when_grace_outlasts_the_cadence(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet, rotate_every="1h", grace="2h")
    proc = w.run("rotate", "--all", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "grace 7200s is longer than rotate_every 3600s" in proc.stderr, proc.stderr


# -- item 14 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", ["0", "-1", "x"])
def test_demo_rotations_must_be_positive(n: str) -> None:
    _one_line(_cli("demo", "--rotations", n), "--rotations")


def test_an_empty_variable_is_not_reported_as_unset(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    env = {**w.env(), "TEST_WALLET_KEY": ""}
    proc = subprocess.run(
        w.argv("rotate", "--all"), env=env, capture_output=True, text=True, timeout=30, check=False
    )
    # That credential's pass fails alone, in one line (issue 23: not exit 2 for every credential).
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("mm1:")]
    assert line == "mm1: failed error=(signer) signer env TEST_WALLET_KEY is set but empty", line
    env = {**w.env(), "TEST_FILE_KEY": " "}
    proc = subprocess.run(w.argv("status"), env=env, capture_output=True, text=True, timeout=30, check=False)
    _one_line(proc, "TEST_FILE_KEY is set but empty")


# -- item 12: listening sockets and pipes -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "99999"], "--port"),
        (["--port", "-1"], "--port"),
        (["--host", "1.2.3.4", "--port", "0"], "1.2.3.4"),
    ],
)
def test_sandbox_bad_address(args: list[str], expected: str) -> None:
    proc = _cli("sandbox", *args)
    _one_line(proc, expected)
    assert "sandbox CLOB on" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--propagation-delay", "nan"], "--propagation-delay"),
        (["--propagation-delay", "-1"], "--propagation-delay"),
        (["--propagation-delay", "1e400"], "--propagation-delay"),
        (["--auth-limit", "-1"], "--auth-limit"),
        (["--chain-id", "0"], "--chain-id"),
    ],
)
def test_sandbox_bad_numbers(args: list[str], expected: str) -> None:
    _one_line(_cli("sandbox", "--port", "0", *args), expected)


KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def test_usage_errors_do_not_echo_key_material(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    for argv in (
        [KEY],
        ["0x" + KEY, "-c", str(w.config_path)],
        ["rotate", "-c", str(w.config_path), "--all", "--" + KEY],
        ["sandbox", "--port", KEY],
        ["demo", "--rotations", KEY],
    ):
        proc = _cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert KEY[:12] not in proc.stderr + proc.stdout and KEY[-12:] not in proc.stderr, proc.stderr
    proc = subprocess.run(
        w.argv("rotate", "--credential", KEY),
        env=w.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _one_line(proc, "--credential")
    assert KEY[:12] not in proc.stderr and KEY[-12:] not in proc.stderr, proc.stderr


def test_sandbox_port_taken(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    proc = _cli("sandbox", "--port", str(port))
    _one_line(proc, f"127.0.0.1:{port}")
    assert "in use" in proc.stderr and "sandbox CLOB on" not in proc.stderr


def test_run_with_the_metrics_port_taken(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    w = Worker(tmp_path, sandbox.url, *wallet, extra={"metrics": {"port": port, "host": "127.0.0.1"}})
    proc = w.run("run", timeout=30)
    _one_line(proc, "metrics.port")
    assert str(port) in proc.stderr


def test_status_into_a_closed_pipe(sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    for args in (("status",), ("status", "--json"), ("rotate", "--all")):
        read, write = os.pipe()
        os.close(read)  # `rotator status | head -0`: the reader is gone before the first line
        proc = subprocess.run(
            w.argv(*args),
            env=w.env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
        os.close(write)
        OUTPUTS.append(proc.stderr)
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == "", proc.stderr
        assert proc.returncode == 141, (args, proc.returncode)
