"""Changing the file store's key (``ROTATOR_FILE_KEY`` rotation) with ``rotator rekey``, through the CLI.

The switch, as the README describes it: every process gets the new key in ``key_env`` and the old one
in the variable ``store.file.previous_key_env`` names; ``rotator rekey`` re-seals the file; then the
old key and the setting go. Nothing is lost, no rotation is needed, no signer is asked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from rotator.config import load_settings
from rotator.errors import ConfigError, Corrupt
from rotator.model import CredentialRef
from rotator.sandbox import Sandbox
from rotator.stores.file import FileStore, generate_file_key, parse_file_key
from tests.harness import OUTPUTS, SECRETS, Worker, sdk_works

PREVIOUS = "TEST_FILE_KEY_PREVIOUS"


def file_section(w: Worker, **extra: Any) -> dict[str, Any]:
    return {"backend": "file", "file": {"path": str(w.tmp / "keys.enc"), "key_env": "TEST_FILE_KEY", **extra}}


def run(w: Worker, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        w.argv(*args), env={**w.env(), **(env or {})}, capture_output=True, text=True, timeout=60
    )
    OUTPUTS.extend((proc.stdout, proc.stderr))
    return proc


def opens_with(path: Path, key: str) -> bool:
    try:
        store = FileStore(path, parse_file_key(key, source="test"))
        for name in store.names():  # every state decrypts and parses
            store.load(CredentialRef(name, ""))
    except Corrupt:
        return False
    return True


def test_rekey_moves_the_store_to_a_new_key_without_losing_or_rotating_anything(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    path = tmp_path / "keys.enc"
    published, state = w.published(), w.state()
    assert published is not None
    old, new = w.file_key, generate_file_key()
    SECRETS.update((old, new))

    # The switch: the new key in key_env, the old one in previous_key_env. Every command reads the file.
    w.file_key = new
    w.extra = {"store": file_section(w, previous_key_env=PREVIOUS)}
    w.write_config()
    switching = {PREVIOUS: old}
    status = run(w, "status", env=switching)
    assert status.returncode == 0 and w.name in status.stdout, status.stderr
    assert opens_with(path, old) and not opens_with(path, new)  # reading re-seals nothing

    # rekey needs no signer: the wallet's key is not in its environment.
    no_signer = {**switching, "TEST_WALLET_KEY": ""}
    proc = run(w, "rekey", env=no_signer)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"{path}: re-encrypted under store.file.key_env (TEST_FILE_KEY); "
        f"the previous key ({PREVIOUS}) is no longer needed"
    )
    assert opens_with(path, new) and not opens_with(path, old)
    again = run(w, "rekey", env=no_signer)
    assert again.returncode == 0 and "already encrypted under store.file.key_env" in again.stdout

    # The old key and the setting go; the worker carries on with the same state and published key.
    w.extra = {}
    w.write_config()
    out = w.rotate()
    assert f"{w.name}: nothing-due" in out.stdout, out.stdout
    assert w.published() == published and w.state().current == state.current
    assert sdk_works(sandbox.url, wallet[0], published)
    assert old not in "".join(OUTPUTS) and new not in "".join(OUTPUTS)


def test_rekey_errors_are_one_line_and_name_what_to_do(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = Worker(tmp_path, sandbox.url, *wallet)
    w.rotate()
    before = (tmp_path / "keys.enc").read_bytes()

    # A new key without the old one: exit 1, nothing rewritten, and the way out named.
    w.file_key = generate_file_key()
    proc = run(w, "rekey")
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot decrypt" in lines[0] and "store.file.previous_key_env" in lines[0]
    assert (tmp_path / "keys.enc").read_bytes() == before

    # Named but not set: the old key is missing, and that is what the error says.
    w.extra = {"store": file_section(w, previous_key_env=PREVIOUS)}
    w.write_config()
    proc = run(w, "rekey")
    assert proc.returncode == 2 and f"{PREVIOUS} is not set" in proc.stderr, proc.stderr

    # Another backend: nothing of rotator's to re-encrypt.
    w.extra = {"store": {"backend": "aws", "aws": {"region": "us-east-1"}}}
    w.write_config()
    proc = run(w, "rekey")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "rekey re-encrypts the file store" in proc.stderr and "Traceback" not in proc.stderr


def test_previous_key_env_goes_with_key_env_only() -> None:
    with pytest.raises(ConfigError, match="previous_key_env"):
        load_settings(None, data={"store": {"file": {"kms_key_id": "alias/x", "previous_key_env": "OLD"}}})
    with pytest.raises(ConfigError, match="previous_key_env"):
        load_settings(None, data={"store": {"file": {"key_env": "K", "previous_key_env": "K"}}})
    with pytest.raises(ConfigError, match="previous_key_env"):
        load_settings(None, data={"store": {"file": {"previous_key_env": "not a name"}}})
    ok = load_settings(None, data={"store": {"file": {"previous_key_env": "OLD_FILE_KEY"}}})
    assert ok.store.file.previous_key_env == "OLD_FILE_KEY"
