"""Issue 23 item 5: the restore drill of docs/upgrading.md, on the file store, OpenBao and moto.

A backup of a credential's state and published secret is taken; a rotation follows and its old key
is revoked; then the backup is put back as the runbook says (the file copied over, Vault's KV
versions rolled back, AWS's AWSCURRENT stage moved back). The next one-shot run finds its key gone
and the CLOB holding a key the state never recorded: it says the state was restored (not that the
server invalidated a key), recovers with one rotation, retires the key made after the backup with
its grace (bots may hold it), and leaves no key unaccounted for (I3, checked after the test too).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rotator.sandbox import Sandbox
from tests.harness import sdk_works
from tests.integration.day2_support import BACKENDS, json_lines, store_worker

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_and_key_restored_from_before_a_rotation_recover_with_one_rotation(
    request: pytest.FixtureRequest, backend: str, sandbox: Sandbox, tmp_path: Path, wallet: tuple[str, str]
) -> None:
    w = store_worker(request, backend, tmp_path, sandbox, wallet, rotate_every="1h", grace="1s")
    w.rotate()
    k0 = w.published()
    assert k0 is not None
    backup = w.backup()
    w.rotate("--force")
    k1 = w.published()
    assert k1 is not None and k1.nonce == k0.nonce + 1
    time.sleep(1.2)
    assert "revoked=1" in w.rotate().stdout  # k0 is gone at the CLOB
    assert k0.api_key not in sandbox.live_keys(w.address)

    w.restore(backup)
    restored = w.published()
    assert restored is not None and restored.api_key == k0.api_key
    assert w.state().current is not None and w.state().current.api_key == k0.api_key  # type: ignore[union-attr]

    proc = w.rotate()
    out, events = proc.stdout + proc.stderr, json_lines(proc.stderr)
    assert f"{w.name}: rotated key=" in proc.stdout, out
    assert "invalidated-by-server" not in out and "invalidated" not in proc.stdout
    [said] = [e for e in events if e.get("step") == "recover" and e.get("outcome") == "restored"]
    assert said["level"] == "warning" and said["nonce"] == k0.nonce and said["found"] == [k1.nonce]
    assert any("restored from a backup?" in e.get("msg", "") for e in events)
    intents = [e for e in events if e.get("step") == "intent"]
    assert [(e["reason"], e["trigger"]) for e in intents] == [("restored", "store")]  # one rotation

    k2 = w.published()
    assert k2 is not None and k2.nonce == k1.nonce + 1 and sdk_works(sandbox.url, w.private_key, k2)
    state = w.state()
    assert state.current is not None and state.current.api_key == k2.api_key
    assert [(r.key.nonce, r.reason) for r in state.retiring] == [(k1.nonce, "restored")]
    gone = {r.nonce: r.how for r in state.history}
    assert gone[k0.nonce] == "gone-before-restore"
    time.sleep(1.2)
    assert "revoked=1" in w.rotate().stdout  # k1, after its grace
    assert set(sandbox.live_keys(w.address)) == {k2.api_key}
    history = json.loads(w.run("history", "--credential", w.name, "--json").stdout)
    assert [(r["nonce"], r["state"]) for r in history] == [
        (k0.nonce, "gone"),
        (k1.nonce, "gone"),
        (k2.nonce, "current"),
    ]
    assert history[-1]["reason"] == "restored"
