"""A worker under test: a config file, an environment, and the real CLI run as a subprocess.

Everything a run prints is kept in ``OUTPUTS`` so the leak check (tests/integration/test_zz_leaks.py
and each test's own ``assert_no_leaks``) can search all of it for secret material.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rotator.model import CredentialRef, CredentialState, Key
from rotator.stores.file import FileStore, generate_file_key, parse_file_key

OUTPUTS: list[str] = []
SECRETS: set[str] = set()
#: Every Worker a test made, and every sandbox started (by URL): the I3 check after each
#: integration test (tests/conftest.py) looks at what they left at the CLOB.
WORKERS: list[Worker] = []
SANDBOXES: dict[str, Any] = {}


@dataclass
class Worker:
    """One credential on one wallet, file store in ``tmp``, CLOB at ``clob_url``."""

    tmp: Path
    clob_url: str
    private_key: str
    address: str
    name: str = "mm1"
    rotate_every: str = "1h"
    grace: str = "2s"
    extra: dict[str, Any] = field(default_factory=dict)
    cred_extra: dict[str, Any] = field(default_factory=dict)
    file_key: str = field(default_factory=generate_file_key)
    #: Keys the test made by hand on this wallet: not the worker's to account for.
    foreign: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        SECRETS.add(self.private_key)
        SECRETS.add(self.private_key.removeprefix("0x"))
        self.write_config()
        WORKERS.append(self)

    @property
    def config_path(self) -> Path:
        return self.tmp / "rotator.yaml"

    @property
    def ref(self) -> CredentialRef:
        return CredentialRef(self.name, f"polymarket/{self.name}")

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "clob": {
                "host": self.clob_url,
                "chain_id": 137,
                "verify_timeout": "10s",
                "retry": {"attempts": 6, "base": 0.05, "cap": 0.2, "deadline": "20s"},
            },
            "store": {
                "backend": "file",
                "file": {"path": str(self.tmp / "keys.enc"), "key_env": "TEST_FILE_KEY"},
            },
            "credentials": [
                {
                    "name": self.name,
                    "signer": {"source": "env", "env": "TEST_WALLET_KEY"},
                    "path": f"polymarket/{self.name}",
                    "rotate_every": self.rotate_every,
                    "grace": self.grace,
                    **self.cred_extra,
                }
            ],
            "metrics": {"port": 0},
            "log": {"format": "json", "level": "debug"},
        }
        cfg.update(self.extra)
        return cfg

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config()))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
        env.update(
            {"TEST_WALLET_KEY": self.private_key, "TEST_FILE_KEY": self.file_key, "PYTHONUNBUFFERED": "1"}
        )
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rotator.cli", *args[:1], "-c", str(self.config_path), *args[1:]]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        OUTPUTS.extend((proc.stdout, proc.stderr))
        return proc

    def rotate(self, *flags: str) -> subprocess.CompletedProcess[str]:
        proc = self.run("rotate", "--all", *flags)
        assert proc.returncode == 0, f"rotate {flags} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def kill(self, proc: subprocess.Popen[str]) -> None:
        """A real crash: SIGKILL, no cleanup, no exception handlers."""
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        OUTPUTS.extend((out, err))
        assert proc.returncode == -signal.SIGKILL

    def finish(self, proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
        out, err = proc.communicate(timeout=timeout)
        OUTPUTS.extend((out, err))
        return proc.returncode, out, err

    # -- looking at the store ---------------------------------------------------------------------
    def store(self) -> FileStore:
        return FileStore(self.tmp / "keys.enc", parse_file_key(self.file_key, source="test"))

    def state(self) -> CredentialState:
        state = self.store().load(self.ref).state
        _remember(state)
        return state

    def published(self) -> Key | None:
        key = self.store().read_published(self.ref)
        if key is not None:
            SECRETS.update((key.api_secret.reveal(), key.api_passphrase.reveal()))
        return key

    def known_keys(self) -> set[str]:
        """Ids of every key the worker's state accounts for (current, pending, retiring)."""
        st = self.state()
        ids = {r.key.api_key for r in st.retiring}
        if st.current:
            ids.add(st.current.api_key)
        if st.pending and st.pending.key:
            ids.add(st.pending.key.api_key)
        return ids


def unaccounted_keys(w: Worker, sb: Any) -> set[str]:
    """I3: the keys live at the sandbox for ``w``'s wallet that no state in ``w``'s store accounts for
    (as current, retiring, a pending triplet, or a pending intent naming this wallet and the key's
    nonce), the test's own hand-made keys (``w.foreign``) aside. Every credential's state counts:
    a renamed credential's keys are still the worker's."""
    from rotator.config import load_settings
    from rotator.errors import Corrupt
    from rotator.stores.factory import build_store

    store = build_store(load_settings(w.config_path, env=w.env()), w.env())  # whatever backend it names
    known: set[str] = set()
    intents: set[int] = set()
    #: Kinds without nonces (issue 27) with an intent open on this wallet whose key is not recorded:
    #: its create may have made any key of that kind, so those are not judged until it ends.
    listing: set[str] = set()
    try:
        for name in store.names():
            try:
                st = store.load(CredentialRef(name, "")).state
            except Corrupt:
                # A state made unreadable on purpose (garbage, a newer schema): what keys it holds
                # cannot be known here, so this worker is not judged (the test asserts what it needs).
                return set()
            _remember(st)
            known |= {r.key.api_key for r in st.retiring}
            if st.current is not None:
                known.add(st.current.api_key)
            if st.pending is not None:
                if st.pending.key is not None:
                    known.add(st.pending.key.api_key)
                elif (st.pending.address or w.address).lower() != w.address.lower():
                    pass
                elif st.kind == "trading":
                    intents.add(st.pending.nonce)
                else:
                    listing.add(st.kind)
    finally:
        store.close()
    known |= {r.api_key for r in sb.keys(w.address) if r.nonce in intents}
    live = set(sb.live_keys(w.address))
    # I3 holds for every kind: read-only and builder keys too.
    if "readonly" not in listing:
        live |= set(sb.live_readonly(w.address))
    if "builder" not in listing:
        live |= set(sb.live_builder(w.address))
    return live - known - w.foreign


def _remember(state: CredentialState) -> None:
    keys = [state.current, *(r.key for r in state.retiring), state.pending.key if state.pending else None]
    for key in keys:
        if key is not None:
            SECRETS.update(s for s in (key.api_secret.reveal(), key.api_passphrase.reveal()) if s)
            if key.kind == "readonly":
                SECRETS.add(key.api_key)  # a read-only key's id is its whole credential


def sdk_works(url: str, private_key: str, key: Key) -> bool:
    """Does the official SDK authenticate with ``key``? (An L2 call signed by py-clob-client itself.)"""
    from py_clob_client.client import ClobClient
    from py_clob_client.clob_types import ApiCreds
    from py_clob_client.exceptions import PolyApiException

    client = ClobClient(
        url,
        chain_id=137,
        key=private_key,
        creds=ApiCreds(key.api_key, key.api_secret.reveal(), key.api_passphrase.reveal()),
    )
    try:
        listed = client.get_api_keys()
    except PolyApiException as exc:
        if exc.status_code == 401:
            return False
        raise
    return key.api_key in listed["apiKeys"]


def log_events(out: str, **match: str) -> list[dict[str, Any]]:
    """The worker's JSON log lines (``log.format: json``) whose fields include ``match``."""
    found = []
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and all(record.get(k) == v for k, v in match.items()):
            found.append(record)
    return found


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def find_leaks(texts: list[str], secrets: set[str]) -> list[str]:
    """The (masked) secrets that appear in any of ``texts``."""
    found = []
    for secret in secrets:
        if len(secret) >= 16 and any(secret in t for t in texts):
            found.append(secret[:4] + "…")
    return found


FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
)


def faketime_env(shift: str) -> dict[str, str]:
    """Environment that runs a process on a wall clock shifted by ``shift`` (libfaketime syntax,
    ``+60s``, ``-1h``); its monotonic clock is left alone. Skips (fails in CI) without libfaketime."""
    from tests.conftest import require

    lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    require(lib is not None, "libfaketime (Debian package faketime)")
    assert lib is not None
    return {"LD_PRELOAD": lib, "FAKETIME": shift, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
