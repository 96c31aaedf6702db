"""Issue 13 item 4: a credential removed from the config (here: renamed) while its old key is retiring.

Its state stays in the store and keeps being served: ``rotate --all`` and the daemon revoke its
retiring keys on schedule, ``status`` lists it as orphaned, ``revoke`` points at ``retire``, and
``rotator retire`` revokes every key it still holds, then archives it. Through the real CLI, against
the sandbox CLOB, on the file store, OpenBao and moto.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rotator.config import load_settings
from rotator.model import CredentialRef, CredentialState
from rotator.sandbox import Sandbox
from rotator.stores.base import Store
from rotator.stores.factory import build_store
from tests.harness import SECRETS, Worker, wait_for


@dataclass
class StoreWorker(Worker):
    """A :class:`Worker` whose ``store`` section and environment the test chooses."""

    store_section: dict[str, Any] | None = None
    store_env: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.store_section is not None:
            cfg["store"] = self.store_section
        return cfg

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.store_env}

    def open_store(self) -> Store:
        """The store this config names, built as the worker builds it (inspection only)."""
        return build_store(load_settings(str(self.config_path)), self.env())

    def load(self, name: str) -> CredentialState:
        store = self.open_store()
        try:
            return store.load(CredentialRef(name, "")).state
        finally:
            store.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _file(request: pytest.FixtureRequest) -> tuple[dict[str, Any] | None, dict[str, str]]:
    return None, {}


def _vault(request: pytest.FixtureRequest) -> tuple[dict[str, Any] | None, dict[str, str]]:
    bao = request.getfixturevalue("openbao")
    SECRETS.add(bao.root_token)
    vault: dict[str, Any] = {
        "url": bao.url,
        "auth": {"method": "token", "token_env": "VAULT_TOKEN"},
        "state_prefix": _unique("orphan-state"),  # the session's server is shared: a prefix of our own
    }
    if bao.ca_cert:
        vault["tls"] = {"ca_cert": bao.ca_cert}
    return {"backend": "vault", "vault": vault}, {"VAULT_TOKEN": bao.root_token}


def _aws_section(url: str) -> tuple[dict[str, Any], dict[str, str]]:
    aws = {"region": "us-east-1", "endpoint_url": url, "state_prefix": f"{_unique('orphan')}/state/"}
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return {"backend": "aws", "aws": aws}, env


def _aws(request: pytest.FixtureRequest) -> tuple[dict[str, Any] | None, dict[str, str]]:
    return _aws_section(request.getfixturevalue("moto_server"))


BACKENDS = {"file": _file, "vault": _vault, "aws": _aws}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> tuple[dict[str, Any] | None, dict[str, str]]:
    return BACKENDS[request.param](request)


def _lines(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{name}:")]


def _row(w: Worker, name: str) -> dict[str, Any]:
    proc = w.run("status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row] = [r for r in json.loads(proc.stdout) if r["credential"] == name]
    return row  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_renamed_credential_keeps_its_keys_served_until_retired(
    sandbox: Sandbox,
    tmp_path: Path,
    wallet: tuple[str, str],
    backend: tuple[dict[str, Any] | None, dict[str, str]],
) -> None:
    old, new = _unique("old"), _unique("new")
    section, env = backend
    w = StoreWorker(tmp_path, sandbox.url, *wallet, name=old, store_section=section, store_env=env)
    w.rotate()
    w.rotate("--force")
    before = w.load(old)
    assert before.current is not None and len(before.retiring) == 1
    k_cur, k_old = before.current, before.retiring[0].key
    for k in (k_cur, k_old):
        SECRETS.update((k.api_secret.reveal(), k.api_passphrase.reveal()))

    w.name = new  # the operator renames the credential; same wallet, same store
    w.write_config()

    row = _row(w, old)  # status no longer forgets it
    assert row["orphaned"] is True and row["archived"] is False
    assert row["key"] == k_cur.masked and [r["nonce"] for r in row["retiring"]] == [k_old.nonce]
    assert _row(w, new)["orphaned"] is False
    if section is None:  # the text form does not depend on the backend
        text = w.run("status").stdout
        assert "orphaned state" in text and old in text

    time.sleep(max(0.0, before.retiring[0].revoke_after - time.time()) + 0.1)
    proc = w.rotate()  # --all: the new name bootstraps, the old name's retiring key is revoked on schedule
    [line] = _lines(proc.stdout, old)
    assert "revoked" in line and "orphaned state" in line, proc.stdout
    live = set(sandbox.live_keys(wallet[1]))
    assert k_old.api_key not in live and k_cur.api_key in live  # its bots still have their key
    assert w.load(old).retiring == ()

    if section is None:  # usage errors, the same on every backend
        # revoke names the command that can act on it; retire refuses a configured name unless forced.
        proc = w.run("revoke", "--credential", old, "--emergency")
        assert proc.returncode == 2 and f"rotator retire --credential {old}" in proc.stderr, proc.stderr
        proc = w.run("retire", "--credential", new)
        assert (
            proc.returncode == 2 and "still in the config" in proc.stderr and "Traceback" not in proc.stderr
        )
        proc = w.run("retire", "--credential", "no-such-name")
        assert proc.returncode == 2 and "holds no state" in proc.stderr
        proc = w.run("retire", "--credential", "../x")
        assert proc.returncode == 2 and "not a credential name" in proc.stderr
        proc = w.run("retire", "--credential", new, "--force", "--dry-run")
        assert proc.returncode == 0 and f"{new}: would-retire" in proc.stdout, proc.stdout + proc.stderr
        # rotate takes a stored name the config lacks: its pass only revokes what is due.
        proc = w.run("rotate", "--credential", old, "--dry-run")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert _lines(proc.stdout, old) == [
            f"{old}: nothing-due (orphaned state: not in the config) key={k_cur.masked}"
        ]
        assert _lines(proc.stdout, new) == []

    proc = w.run("retire", "--credential", old, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{old}: would revoke current nonce={k_cur.nonce} key={k_cur.masked}" in proc.stdout
    assert k_cur.api_key in sandbox.live_keys(wallet[1])

    proc = w.run("retire", "--credential", old)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{old}: retired revoked=1" in proc.stdout
    assert k_cur.api_key not in sandbox.live_keys(wallet[1])
    archived = w.load(old)
    assert (archived.current, archived.pending, archived.retiring) == (None, None, ())
    assert sorted(h.nonce for h in archived.history) == sorted((k_old.nonce, k_cur.nonce))
    assert _row(w, old)["archived"] is True

    # I3: every key the sandbox holds for the wallet is one the remaining state accounts for.
    now = w.load(new)
    assert now.current is not None
    assert set(sandbox.live_keys(wallet[1])) == {now.current.api_key}
    out = w.run("rotate", "--all").stdout
    assert _lines(out, old) == [f"{old}: nothing-due (orphaned state: not in the config)"], out


@pytest.mark.slow
def test_the_daemon_revokes_a_removed_credentials_retiring_key_on_schedule(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = StoreWorker(tmp_path, sandbox.url, *wallet, name="gone", grace="1s")
    w.rotate()
    w.rotate("--force")
    state = w.load("gone")
    assert len(state.retiring) == 1
    k_old = state.retiring[0].key
    w.name = "kept"
    w.extra = {"daemon": {"tick": "1s", "jitter": "0s"}}
    w.write_config()
    proc = w.start("run")
    try:
        wait_for(lambda: w.load("gone").retiring == (), timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code, _out, err = w.finish(proc)
    assert code == 0, err
    assert k_old.api_key not in sandbox.live_keys(wallet[1])
    assert w.load("gone").current == state.current  # the key its bots read is left to `retire`
    events = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(e.get("credential") == "gone" and e.get("outcome") == "deleted" for e in events), err


def test_an_unreadable_orphaned_state_is_reported_and_hides_nothing(
    sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str], moto_server: str
) -> None:
    import boto3

    section, env = _aws_section(moto_server)
    prefix = section["aws"]["state_prefix"]
    sm = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")
    sm.create_secret(Name=f"{prefix}broken", SecretString="{not json")
    w = StoreWorker(tmp_path, sandbox.url, *wallet, name="live", store_section=section, store_env=env)
    proc = w.run("rotate", "--all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _lines(proc.stdout, "live")[0].startswith("live: rotated")
    [line] = _lines(proc.stdout, "broken")
    assert (
        line.startswith("broken: failed (orphaned state: not in the config)")
        and "not a rotation state" in line
    )
    proc = w.run("status", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["credential"]: r for r in json.loads(proc.stdout)}
    assert rows["live"]["orphaned"] is False and rows["live"]["key"]
    assert rows["broken"]["archived"] is None and "state unreadable" in rows["broken"]["consumers"]
